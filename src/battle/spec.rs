//! What the runner hands each worker process: its spec file's types (a battle worker's
//! [`WorkerSpec`], a `bench load` worker's [`LoadWorkerSpec`]). This module imports nothing
//! from the rest of `battle` but `clock` (a leaf), so the runner, the worker, the doors and
//! `bench load` can all depend on it without depending on each other.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::Strategy;

/// The environment variable that carries a redis door's real URL to a worker: the spec file
/// on disk holds it redacted (`infra::redact_url`), so no password is written to the run folder.
pub const REDIS_URL_ENV: &str = "TK_CONFORM_WORKER_REDIS_URL";

/// Everything one worker needs, written by the runner as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    pub scenario: String,
    pub group: String,
    pub index: u32,
    #[serde(with = "crate::report::seed_text")]
    pub seed: u64,
    pub door: DoorSpec,
    pub operation: Operation,
    pub cost: u64,
    pub tokens: Option<[u64; 2]>,
    pub requests: Option<u64>,
    pub duration_ms: Option<u64>,
    pub interval_ms: u64,
    pub start_after_ms: u64,
    pub hold_ms: u64,
    pub heartbeat_ms: u64,
    pub hold_once: bool,
    pub batch: u64,
    pub call_timeout_ms: u64,
    pub history: PathBuf,
    /// Created once the worker's connections are open.
    pub ready_file: PathBuf,
    /// Written by the runner (epoch µs of the barrier) just before it closes the pipe.
    pub go_file: PathBuf,
    /// Test only: make this worker a faulty client on purpose.
    pub fault: Option<WorkerFault>,
    /// Direct door: the group's clock fault and where `now` comes from.
    #[serde(default)]
    pub clock: Option<super::clock::ClientClock>,
    #[serde(default)]
    pub now: NowSource,
}

/// Where a direct-door check's `now` comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NowSource {
    /// `now = 0`: the script reads Redis `TIME`; a client clock cannot skew it.
    #[default]
    Server,
    /// The worker's own clock (with the group's `clock` applied).
    Client,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "door", rename_all = "kebab-case")]
pub enum DoorSpec {
    #[serde(rename_all = "camelCase")]
    Redis {
        url: String,
        contract_dir: PathBuf,
        strategy: Strategy,
        /// The full Redis key (`<prefix>:<identity>`).
        key: String,
        /// `url` is one node of a Redis Cluster (the one serving `key` when the run began).
        #[serde(default)]
        cluster: bool,
        /// `battle --scripts DIR`: an engine's own scripts folder instead of the contract's.
        #[serde(default)]
        scripts_dir: Option<PathBuf>,
    },
    #[serde(rename_all = "camelCase")]
    Service {
        servers: Vec<String>,
        primary: usize,
        policy: String,
        key: String,
    },
    #[serde(rename_all = "camelCase")]
    FleetLease {
        servers: Vec<String>,
        primary: usize,
        policy: String,
        /// The policy's per-window limit (the spender reports it as `limit`).
        limit: u64,
    },
}

/// Deliberately broken clients, so tests can show the checker catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerFault {
    /// The direct door reads the key and writes it back in two calls (no atomicity).
    NonAtomic,
    /// The lease spender carries leftover credits across windows.
    CarryCredits,
    /// The direct door sends EVALSHA only and never reloads a script after NOSCRIPT.
    NoScriptReload,
    /// The service door stays on its first server even after it stops answering.
    NoFailover,
    /// The direct door retries a call that timed out, blindly, and records one call.
    BlindRetry,
    /// The direct door sends its own (skewed) clock as `now` even where the group promises
    /// the server's clock.
    SkewedNow,
    /// The direct door asks the sentinel for the primary once, then stays on that node through
    /// a failover (a stale primary after it wakes: split brain).
    NoFollow,
    /// On a Redis Cluster the direct door keeps one plain connection to the node that served
    /// its key at the start, so MOVED and ASK come back as errors.
    ClusterUnaware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Rate-limit check (the strategy's script, or `RateLimiter.Check`).
    Check,
    /// `RateLimiter.Debit` of a token budget.
    Debit,
    /// `Admit` a concurrency slot, hold it (heartbeating), then `Release` it.
    Admit,
    /// Spend one unit of a fleet lease locally, reserving more when it runs dry.
    Spend,
}

/// What one `bench load` worker process is told (`tk-conform load-worker --spec F`): a direct
/// door per connection, one call in flight on each, totals instead of a history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadWorkerSpec {
    pub index: u32,
    /// Redacted on disk; the real URL comes in [`REDIS_URL_ENV`].
    pub url: String,
    pub contract_dir: PathBuf,
    pub strategy: Strategy,
    /// The calls go to `<key_prefix>:<n>`, `n` uniform in `0..keys`.
    pub key_prefix: String,
    pub keys: u64,
    pub connections: u32,
    pub duration_ms: u64,
    pub call_timeout_ms: u64,
    pub ready_file: PathBuf,
    pub go_file: PathBuf,
    /// Where the worker writes its totals (JSON).
    pub result_file: PathBuf,
}
