//! "A thing that can decide": one trait for every engine tk-conform judges, and its adapters.
//!
//! Capabilities are data, so a suite an engine does not claim is skipped with a reason instead
//! of failing. A `Backend` opens one `SuiteSession` per vector suite; the session owns a fresh,
//! isolated key namespace (and, for the lease spender, a fresh spender).

pub mod exec;
pub mod model;
pub mod redis;
pub mod service;
pub mod service_process;

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::{
    Decision, LeaseConfig, SpendOutcome, Strategy, StrategyKind, TokenBudgetOptions,
};

/// What a backend claims to serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub strategies: BTreeSet<StrategyKind>,
    pub token_budget: bool,
    pub lease_spender: bool,
    /// Decisions at a caller-given `now` (needed for golden-vector replay).
    pub explicit_clock: bool,
    /// Admit / Release / Heartbeat of concurrency slots.
    pub lifecycle: bool,
    /// Fleet.Reserve leasing.
    pub fleet_lease: bool,
}

/// One thing a backend may or may not serve, for the reason a skipped trial shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Strategy(StrategyKind),
    ExplicitClock,
    TokenBudget,
    LeaseSpender,
}

impl Capability {
    /// Its name in the adapter protocol's `capabilities` (`gcra`, `explicitClock`, ...).
    pub fn protocol_name(self) -> &'static str {
        match self {
            Capability::Strategy(kind) => kind.name(),
            Capability::ExplicitClock => "explicitClock",
            Capability::TokenBudget => "tokenBudget",
            Capability::LeaseSpender => "leaseSpender",
        }
    }
}

/// How a skip reason names it: `gcra`, `an explicit clock`, `tokenBudget`, `lease`.
impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::Strategy(kind) => kind.name(),
            Capability::ExplicitClock => "an explicit clock",
            Capability::TokenBudget => "tokenBudget",
            Capability::LeaseSpender => "lease",
        })
    }
}

impl Capabilities {
    pub fn everything() -> Self {
        Capabilities {
            strategies: StrategyKind::ALL.into_iter().collect(),
            token_budget: true,
            lease_spender: true,
            explicit_clock: true,
            lifecycle: false,
            fleet_lease: false,
        }
    }
}

/// Who the backend is, for logs and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendInfo {
    /// `redis`, `model`, `exec`, `service`.
    pub kind: String,
    /// The engine's own name and version, where it says.
    pub name: String,
    pub version: String,
    /// The store or server it talks to (e.g. `redis 7.0.15 at 127.0.0.1:40123`).
    pub server: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The engine does not serve this: the trial is skipped with this reason.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The engine rejected the input as invalid.
    #[error("engine said invalid input: {0}")]
    Invalid(String),
    /// The engine failed internally.
    #[error("engine internal error: {0}")]
    Internal(String),
    /// The engine broke the protocol (bad reply shape, wrong id, ...).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The engine or its store could not be reached, crashed, or timed out.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The engine says its store is unreachable (protocol 2's `unavailable` error): never a
    /// denial, and never a verdict about the engine's limits.
    #[error("store unreachable: {0}")]
    StoreUnreachable(String),
}

/// One engine under test.
#[async_trait]
pub trait Backend: Send + Sync {
    fn info(&self) -> BackendInfo;
    fn capabilities(&self) -> Capabilities;
    /// A fresh, isolated session for the suite called `suite`.
    async fn open_suite(&self, suite: &str) -> Result<Box<dyn SuiteSession>, BackendError>;
    /// Why this backend does not serve `what`, for the reason a skipped trial shows.
    fn unsupported_reason(&self, what: Capability) -> String {
        format!("the {} backend does not claim {what}", self.info().kind)
    }
    /// Releases what the backend holds (connections, children). Called once at the end of a run.
    async fn shutdown(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The operations one vector suite replays, against one isolated namespace.
#[async_trait]
pub trait SuiteSession: Send {
    async fn check(
        &mut self,
        strategy: &Strategy,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<Decision, BackendError>;

    async fn debit(
        &mut self,
        options: &TokenBudgetOptions,
        key: &str,
        now: f64,
        tokens: f64,
    ) -> Result<Decision, BackendError>;

    async fn lease_grant(
        &mut self,
        config: &LeaseConfig,
        capacity: f64,
        expires_at: f64,
    ) -> Result<(), BackendError>;

    async fn lease_spend(
        &mut self,
        config: &LeaseConfig,
        now: f64,
        cost: f64,
    ) -> Result<SpendOutcome, BackendError>;
}
