//! Where a server keeps its limiter state: in process (the reference model) or in Redis (the
//! contract's own Lua plus the server's scripts), behind one trait so the service logic does not
//! care which.
//!
//! Keys handed to a store are already namespaced (`<prefix>:<identity>` for rate and budget
//! state); times are epoch milliseconds as `f64`, the contract's number type.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::model::{Decision, Strategy, TokenBudgetOptions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store answered something unexpected: {0}")]
    Protocol(String),
    #[error("the reference model refused the input: {0}")]
    Model(#[from] crate::model::ModelError),
}

/// The answer to a slot acquisition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotGrant {
    pub allowed: bool,
    /// Slots held after the call (including the new one when allowed).
    pub held: u32,
    /// Allowed: the new lease's expiry. Denied: the earliest expiry among the holders.
    pub expires_at: f64,
    /// The store clock's reading the decision was made at.
    pub now: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Renewal {
    Live { expires_at: f64 },
    Reclaimed,
}

/// A chunk of a window's budget leased to one caller (Fleet.Reserve, twoTier).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowGrant {
    pub capacity: f64,
    pub window_end: f64,
    pub now: f64,
}

/// Faults a store itself must play (see `server::fault`): the lifecycle and grant promises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreFaults {
    pub never_reclaim: bool,
    pub ignore_heartbeat: bool,
    pub late_release_frees: bool,
    pub over_grant: bool,
    /// Behind Sentinel: ask for the primary once and stay on that node through a failover.
    pub no_follow: bool,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// For the readiness line and reports, e.g. `memory` or `redis 127.0.0.1:6379`.
    fn describe(&self) -> String;

    /// The store's clock, the one its decisions use.
    async fn now_ms(&self) -> Result<f64, StoreError>;

    /// One atomic rate check of `cost` at `now` (`None`: the store's clock).
    async fn check(
        &self,
        strategy: &Strategy,
        key: &str,
        now: Option<f64>,
        cost: f64,
    ) -> Result<Decision, StoreError>;

    /// The decision a check of `cost` would get now, without changing any state.
    async fn peek(&self, strategy: &Strategy, key: &str, cost: f64)
    -> Result<Decision, StoreError>;

    /// A token-budget debit (spec 3) on a meter kept in this store.
    async fn debit(
        &self,
        options: &TokenBudgetOptions,
        key: &str,
        tokens: f64,
    ) -> Result<Decision, StoreError>;

    /// Takes a slot under `slots_key` for `lease` when fewer than `ceiling` are held.
    async fn acquire_slot(
        &self,
        slots_key: &str,
        ceiling: u32,
        ttl_ms: f64,
        lease: &str,
    ) -> Result<SlotGrant, StoreError>;

    /// Frees `lease`'s slot; `false` when it was not held (released before, or reclaimed).
    async fn release_slot(&self, slots_key: &str, lease: &str) -> Result<bool, StoreError>;

    /// Extends a held lease by `ttl_ms` from now.
    async fn renew_slot(
        &self,
        slots_key: &str,
        lease: &str,
        ttl_ms: f64,
    ) -> Result<Renewal, StoreError>;

    /// Reclaims every expired slot and forgets expired state; returns how many slots it freed.
    async fn sweep(&self) -> Result<u64, StoreError>;

    /// Grants up to `wants` of a per-window `limit` (windows aligned to `window_ms`) under `key`.
    async fn reserve(
        &self,
        key: &str,
        limit: f64,
        window_ms: f64,
        wants: f64,
    ) -> Result<WindowGrant, StoreError>;
}

/// Connects the Redis store, running the Lua of the contract at `contract_dir`, with every key
/// under `<namespace>:` (none when `namespace` is empty).
pub async fn connect_redis(
    url: &str,
    contract_dir: &std::path::Path,
    namespace: &str,
    faults: StoreFaults,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(std::sync::Arc::new(
        redis::RedisStore::connect(url, contract_dir, namespace, faults).await?,
    ))
}
