//! `tk-conform battle`: multi-process workloads with faults against a Redis-backed fleet,
//! judged from recorded histories.
//!
//! The runner provisions Redis and a server fleet, re-executes this binary as `worker`
//! processes (released together by a start barrier), injects the scenario's faults, and hands
//! the JSON-lines histories to the checker, which judges them like Jepsen does: from the
//! histories alone.

pub mod checker;
pub mod door;
pub mod door_service;
pub mod faults;
pub mod history;
pub mod scenario;
pub mod worker;
