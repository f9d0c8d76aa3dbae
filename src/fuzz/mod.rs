//! Differential fuzzing (`tk-conform fuzz`): random timelines over the contract's whole option
//! space, replayed against a backend and judged by an oracle; the first divergence is shrunk to
//! a timeline a person can read and commit.
//!
//! `space` makes the timelines, `oracle` judges them (the exact model today), `engine` runs
//! the parallel search, `shrink` minimises a divergence, `render` writes it as
//! `suites/vectors/*.toml` text, and `cli` is the command.

pub mod cli;
pub mod engine;
pub mod oracle;
pub mod render;
pub mod shrink;
pub mod space;

pub use engine::{SearchConfig, SearchOutcome, search};
pub use oracle::{Oracle, Verdict};
pub use space::{Space, Target};
