//! The reference model: the contract's decisions as pure functions.
//!
//! Every primitive of `contract-v1` (sections 1–4) lives here with no I/O, so the same code
//! generates the golden vectors, serves as the in-process `model` backend, backs the reference
//! server's memory store, and is the oracle for differential checks. Arithmetic is done in `f64`
//! in the exact order the spec (and a Lua 5.1 script) evaluates it, so results match bit for bit.

mod decision;
mod error;
mod fixed_window;
mod gcra;
mod lease;
pub mod num;
mod sliding_log;
mod sliding_window;
mod strategy;
mod token_bucket;
mod token_budget;

pub use decision::Decision;
pub use error::ModelError;
pub(crate) use error::{cost as validate_cost, now as validate_now};
pub use lease::{LeaseConfig, LeaseSpender, SpendOutcome};
pub use sliding_log::LogEntry;
pub use strategy::{
    CheckOutcome, FixedWindowOptions, GcraOptions, RateState, SlidingWindowLogOptions,
    SlidingWindowOptions, Strategy, StrategyKind, TokenBucketOptions,
};
pub use token_budget::{TokenBudget, TokenBudgetOptions, TokenBudgetState};

#[cfg(test)]
mod spot_checks;
