//! The vendored contract: golden vectors, the scripts manifest, the proto, and their checksums.
//!
//! `layout` knows the files, `checksums` the `manifest.sha256` format, `verify` the drift gate,
//! `seal` re-pins after an intended edit, `sync` vendors an upstream, `timelines` + `generate`
//! turn readable suites into `golden-vectors.json`, `bundled` is the contract embedded in the
//! binary (used when there is no `./contract`), and `cli` is the `tk-conform contract` command.

pub mod bundled;
pub mod checksums;
pub mod cli;
pub mod generate;
pub mod layout;
pub mod scripts;
pub mod seal;
pub mod sync;
pub mod timelines;
pub mod tree;
pub mod vectors;
pub mod verify;

pub use layout::Contract;

/// The contract version this build of tk-conform judges against.
pub const CONTRACT_VERSION: &str = "1";
