//! The `redis` backend: the contract's Lua scripts in a real Redis, called through the script set.
//!
//! Every key lives under a per-run prefix plus a per-session namespace, so runs and suites never
//! see each other's state, even on a shared `--redis-url`. Beside each decision the session runs
//! the reference model on the same inputs; when the model says the script wrote, it checks the
//! key's PTTL is the model's PEXPIRE less the wall time elapsed since the call, so a script that
//! never expires keys, or expires them too late or too early, fails even when every decision is
//! right.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{Backend, BackendError, BackendInfo, Capabilities, Capability, SuiteSession};
use crate::model::{Decision, LeaseConfig, RateState, SpendOutcome, Strategy, TokenBudgetOptions};
use crate::redis_scripts::{ScriptCallError, ScriptSet};

pub struct RedisBackend {
    scripts: Arc<ScriptSet>,
    con: MultiplexedConnection,
    url: String,
    server: String,
    prefix: String,
    sessions: AtomicU64,
    delete_on_shutdown: bool,
}

impl RedisBackend {
    /// A backend over `con` (already connected to `url`, a server that says it is `server`,
    /// e.g. `redis 7.0.15`). `prefix` namespaces every key this backend touches; make it unique
    /// per run (letters, digits, `-`, `:` only, so it is also a safe SCAN pattern).
    pub fn new(
        scripts: Arc<ScriptSet>,
        con: MultiplexedConnection,
        url: &str,
        server: &str,
        prefix: &str,
    ) -> Self {
        RedisBackend {
            scripts,
            con,
            url: url.to_owned(),
            server: server.to_owned(),
            prefix: prefix.to_owned(),
            sessions: AtomicU64::new(0),
            delete_on_shutdown: false,
        }
    }

    /// On a shared (external) server, delete this run's keys at the end. Only keys under the
    /// run's prefix are touched; nothing is ever flushed.
    pub fn delete_keys_on_shutdown(mut self, delete: bool) -> Self {
        self.delete_on_shutdown = delete;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes the keys this backend created (everything under its prefix) and nothing else.
    pub async fn delete_own_keys(&self) -> Result<u64, BackendError> {
        crate::infra::delete_prefixed(&mut self.con.clone(), &self.prefix)
            .await
            .map_err(|e| BackendError::Unavailable(format!("deleting {}:*: {e}", self.prefix)))
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "redis".into(),
            name: format!(
                "contract Lua scripts ({})",
                self.scripts.manifest_path().display()
            ),
            version: self.scripts.manifest().contract_version.clone(),
            server: format!("{} at {}", self.server, self.url),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            strategies: self.scripts.strategies(),
            token_budget: false,
            lease_spender: false,
            explicit_clock: true,
            lifecycle: false,
            fleet_lease: false,
        }
    }

    fn unsupported_reason(&self, what: Capability) -> String {
        match what {
            Capability::TokenBudget => {
                "the contract has no Lua script for tokenBudget (it is served by the \
                              service door's Debit): not replayable on the redis backend"
                    .into()
            }
            Capability::LeaseSpender => {
                "the lease spender is client-side (spec 4), there is no Lua script to \
                        replay it on the redis backend"
                    .into()
            }
            strategy @ (Capability::Strategy(_) | Capability::ExplicitClock) => format!(
                "{} has no check script for {strategy}",
                self.scripts.manifest_path().display()
            ),
        }
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        if self.delete_on_shutdown {
            self.delete_own_keys().await?;
        }
        Ok(())
    }

    async fn open_suite(&self, suite: &str) -> Result<Box<dyn SuiteSession>, BackendError> {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(RedisSession {
            scripts: Arc::clone(&self.scripts),
            con: self.con.clone(),
            namespace: format!("{}:{n}:{suite}", self.prefix),
            model: HashMap::new(),
        }))
    }
}

struct RedisSession {
    scripts: Arc<ScriptSet>,
    con: MultiplexedConnection,
    namespace: String,
    /// The reference model's view of each key, to know when and how long the script must expire it.
    model: HashMap<String, Option<RateState>>,
}

fn call_error(e: ScriptCallError) -> BackendError {
    match e {
        ScriptCallError::Missing { .. } => BackendError::Unsupported(e.to_string()),
        ScriptCallError::Reply { .. } => BackendError::Protocol(e.to_string()),
        e if e.is_unavailable() => BackendError::Unavailable(e.to_string()),
        e => BackendError::Internal(e.to_string()),
    }
}

fn unsupported(what: &str) -> BackendError {
    BackendError::Unsupported(format!("the redis backend has no script for {what}"))
}

#[async_trait]
impl SuiteSession for RedisSession {
    async fn check(
        &mut self,
        strategy: &Strategy,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<Decision, BackendError> {
        let full_key = format!("{}:{key}", self.namespace);
        let state = self.model.entry(key.to_owned()).or_default();
        let expected = strategy.check(state, now, cost).ok();
        let wrote = state.is_some();
        let started = Instant::now();
        let decision = self
            .scripts
            .check(&mut self.con, &full_key, strategy, now, cost)
            .await
            .map_err(call_error)?;
        // The expiry check only makes sense while script and model agree; a decision that
        // differs is reported by the runner field by field.
        if let Some(expected) = expected
            && expected.decision == decision
            && wrote
            && let Some(expiry) = expected.expiry_ms
        {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&full_key)
                .query_async(&mut self.con)
                .await
                .map_err(|e| BackendError::Unavailable(format!("PTTL {full_key}: {e}")))?;
            let waited_ms = started.elapsed().as_secs_f64() * 1000.0;
            check_expiry(pttl, expiry, waited_ms)?;
        }
        Ok(decision)
    }

    async fn debit(
        &mut self,
        _options: &TokenBudgetOptions,
        _key: &str,
        _now: f64,
        _tokens: f64,
    ) -> Result<Decision, BackendError> {
        Err(unsupported("tokenBudget"))
    }

    async fn lease_grant(
        &mut self,
        _config: &LeaseConfig,
        _capacity: f64,
        _expires_at: f64,
    ) -> Result<(), BackendError> {
        Err(unsupported("the lease spender"))
    }

    async fn lease_spend(
        &mut self,
        _config: &LeaseConfig,
        _now: f64,
        _cost: f64,
    ) -> Result<SpendOutcome, BackendError> {
        Err(unsupported("the lease spender"))
    }
}

/// The key's PTTL right after a write must be in [expiry - waited, expiry], where `waited` is
/// the wall time the call and the PTTL took (plus a ms of rounding each way): Redis counts the
/// expiry down in wall time, so a key whose expiry is shorter than that may already be gone.
fn check_expiry(pttl: i64, expiry_ms: f64, waited_ms: f64) -> Result<(), BackendError> {
    let lowest = expiry_ms - waited_ms.ceil() - 2.0;
    let fail = |what: String| {
        Err(BackendError::Protocol(format!(
            "expiry: {what}; the contract sets PEXPIRE {expiry_ms} ms on this write, so PTTL \
             must be in [{lowest}, {expiry_ms}] ({waited_ms:.1} ms after the write)"
        )))
    };
    match pttl {
        -1 => fail("the script left the key without an expiry (PTTL -1)".into()),
        p if p > 0 && (p as f64) <= expiry_ms && (p as f64) >= lowest => Ok(()),
        p if p > 0 && (p as f64) < lowest => fail(format!(
            "PTTL is {p} ms, shorter than the contract's expiry"
        )),
        p if p > 0 => fail(format!("PTTL is {p} ms, longer than the contract's expiry")),
        // Gone (-2) or about to go (0): fine only if the expiry could have elapsed meanwhile.
        _ if expiry_ms <= waited_ms.ceil() + 1.0 => Ok(()),
        p => fail(format!(
            "the key is gone (PTTL {p}) {waited_ms:.1} ms after the write"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_expiry;

    #[test]
    fn expiry_bounds() {
        assert!(check_expiry(500, 500.0, 0.2).is_ok());
        assert!(check_expiry(498, 500.0, 0.2).is_ok());
        assert!(check_expiry(400, 500.0, 100.0).is_ok());
        let short = check_expiry(250, 500.0, 0.2).unwrap_err().to_string();
        assert!(
            short.contains("shorter") && short.contains("PTTL is 250"),
            "{short}"
        );
        let never = check_expiry(-1, 500.0, 0.2).unwrap_err().to_string();
        assert!(
            never.contains("expiry") && never.contains("PTTL -1"),
            "{never}"
        );
        assert!(check_expiry(501, 500.0, 0.2).is_err());
        assert!(check_expiry(-2, 1.0, 0.2).is_ok());
        assert!(check_expiry(0, 1.0, 0.2).is_ok());
        assert!(check_expiry(-2, 500.0, 0.2).is_err());
    }
}
