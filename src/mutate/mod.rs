//! Mutation testing of a contract's vectors (`tk-conform mutate`): plausible one-line bugs in
//! the Lua check scripts, each replayed against the vectors in one Redis; the kill score says
//! how many the vectors catch, and every survivor is fuzzed for a witness (or reported as
//! equivalent when a large fuzz sample cannot tell it apart either).
//!
//! `lua` finds code outside strings and comments, `operators` is the catalogue, `runner`
//! judges the mutants, `cli` is the command.

pub mod cli;
pub mod lua;
pub mod operators;
pub mod runner;

pub use operators::{Mutant, Operator, mutants};
pub use runner::{Fate, JudgeConfig, judge};
