//! The vendored contract: golden vectors, the scripts manifest, the proto, and their checksums.

pub mod scripts;
pub mod vectors;

/// The contract version this build of tk-conform judges against.
pub const CONTRACT_VERSION: &str = "1";
