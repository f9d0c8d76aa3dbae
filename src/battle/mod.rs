//! `tk-conform battle`: multi-process workloads with faults against a Redis-backed fleet,
//! judged from recorded histories.
//!
//! The runner provisions Redis and a server fleet, re-executes this binary as `worker`
//! processes (released together by a start barrier), injects the scenario's faults, and hands
//! the JSON-lines histories to the checker, which judges them like Jepsen does: from the
//! histories alone.
//!
//! - [`scenario`]: the `scenarios/*.toml` format, parsed strictly.
//! - [`history`]: per-worker JSON-lines histories (invoke / ok / fail / indeterminate).
//! - [`checker`]: verdicts from histories and the fault log.
//! - [`spec`]: what a worker process is told (imports nothing from `battle`); [`spawn`]: starting
//!   worker processes and waiting for them (ready-files, the barrier, bounded exits).
//! - [`worker`]: the hidden `worker` subcommand; [`door`] and its three doors.
//! - [`faults`]: the fault schedule; [`runner`]: one scenario end to end; [`cli`]: the command.
//! - [`link`]: what `link = "FROM->TO"` selects (a leaf); [`network`]: the fault proxy's links
//!   and windows; [`clock`]: client clock faults.
//! - [`bench`]: `bench load`, decisions/s through the direct door next to redis-benchmark, with
//!   its own hidden `load-worker` processes; [`barrier`]: the workers' side of the start barrier.

pub mod barrier;
pub mod bench;
pub mod checker;
pub mod cli;
pub mod clock;
pub mod docs;
pub mod door;
pub mod door_exec;
pub mod door_redis;
pub mod door_service;
pub mod faults;
pub mod file_error;
pub mod history;
pub mod link;
pub mod network;
pub mod plots;
pub mod policy;
pub mod runner;
pub mod scenario;
pub mod script_audit;
pub mod spawn;
pub mod spec;
pub mod store_check;
pub mod window_edge;
pub mod worker;
