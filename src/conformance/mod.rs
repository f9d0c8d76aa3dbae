//! The conformance runner: the contract's golden vectors (and any other trials a backend brings)
//! replayed against one backend, as libtest-mimic trials, recorded under `logs/`.
//!
//! - `corpus`: loading and checking the vectors; the spec-5 clock offset.
//! - `replay`: one suite against one session, stopping at the first divergence.
//! - `trial`: trials, skips with reasons, recording; the seam where other suites plug in.
//! - `backends`: `--backend` and provisioning (starting Redis, ...).
//! - `service`: the service suites as trials (`--backend service`).
//! - `cli`: the `run` command.

pub mod backends;
pub mod cli;
pub mod corpus;
pub mod replay;
pub mod service;
pub mod trial;
pub mod vectors_check;

pub use backends::{BackendKind, Provisioned};
pub use cli::RunArgs;
pub use replay::{Divergence, ReplayFailure, replay};
pub use trial::{TrialResult, TrialSpec, VectorReplay, run_trials, vector_trials};
