//! Differential fuzzing (`tk-conform fuzz`): random timelines over the contract's whole option
//! space, replayed against a backend and judged by an oracle; the first divergence is shrunk to
//! a timeline a person can read and commit.
//!
//! A protocol-2 adapter with explicit-clock kinds is fuzzed by `property` instead: random
//! timelines judged by the family's invariants, not exact values (`property_cli` runs it).
//!
//! `space` makes the timelines, `oracle` judges them (the exact model), `engine` runs
//! the parallel search, `shrink` minimises a divergence, `render` writes it as
//! `suites/vectors/*.toml` text, and `cli` is the command.

pub mod cli;
pub mod engine;
pub mod oracle;
pub mod property;
mod property_cli;
pub mod render;
pub mod shrink;
pub mod space;

pub use engine::{SearchConfig, SearchOutcome, search};
pub use oracle::{Oracle, Verdict};
pub use space::{Space, Target};
