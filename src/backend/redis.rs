//! The `redis` backend: the contract's Lua scripts in a real Redis, called through the script set.
//!
//! Every key lives under a per-run prefix plus a per-session namespace, so runs and suites never
//! see each other's state, even on a shared `--redis-url`. Beside each decision the session runs
//! the reference model on the same inputs; when the model says the script wrote, it checks the
//! key's PTTL is the model's PEXPIRE less the wall time elapsed since the call, so a script that
//! never expires keys, or expires them too late or too early, fails even when every decision is
//! right.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{Backend, BackendError, BackendInfo, Capabilities, Capability, SuiteSession};
use crate::model::{Decision, LeaseConfig, RateState, SpendOutcome, Strategy, TokenBudgetOptions};
use crate::redis_scripts::{ScriptCallError, ScriptSet};

/// The bound on one script call: the response timeout of the backend's connection. Longer than
/// Redis's default `busy-reply-threshold` (5 s), so a call queued behind another trial's runaway
/// script is answered BUSY (it did not run, and can be sent again) before it could time out.
pub const SCRIPT_CALL_BOUND: Duration = Duration::from_secs(10);

pub struct RedisBackend {
    scripts: Arc<ScriptSet>,
    con: MultiplexedConnection,
    /// For display only (redacted).
    url: String,
    /// For a second connection (`SCRIPT KILL`).
    connect_url: Arc<str>,
    server: String,
    prefix: String,
    sessions: AtomicU64,
    delete_on_shutdown: bool,
    /// Held while a SCRIPT KILL is under way; script calls wait for it first.
    kill_gate: Arc<tokio::sync::Mutex<()>>,
    /// Connections of sessions that ended cleanly, for the next sessions: a connection still
    /// serves one session at a time, without a connect per session (a fuzz timeline is one).
    idle: Arc<Mutex<Vec<MultiplexedConnection>>>,
}

/// Most idle session connections a backend keeps.
const MAX_IDLE: usize = 64;

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
            // Only ever shown (logs, summary.json): never with a password.
            url: crate::infra::redact_url(url),
            connect_url: url.into(),
            server: server.to_owned(),
            prefix: prefix.to_owned(),
            sessions: AtomicU64::new(0),
            delete_on_shutdown: false,
            kill_gate: Arc::default(),
            idle: Arc::default(),
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
        // A connection per session: a call pipelined on a shared connection behind another
        // suite's runaway script would wait for it unanswered; on its own connection it is
        // answered BUSY (and did not run), so it can wait for the kill and be sent again.
        let connect = || crate::infra::connect_with_timeout(&self.connect_url, SCRIPT_CALL_BOUND);
        let reused = self.idle.lock().expect("not poisoned").pop();
        let con = match reused {
            Some(con) => con,
            None => match connect().await {
                Ok(con) => con,
                // Redis may be stuck in another suite's runaway script: end it, try once more.
                Err(_) => {
                    kill_gated(&self.kill_gate, &self.connect_url).await;
                    connect()
                        .await
                        .map_err(|e| BackendError::Unavailable(e.to_string()))?
                }
            },
        };
        Ok(Box::new(RedisSession {
            scripts: Arc::clone(&self.scripts),
            con,
            connect_url: Arc::clone(&self.connect_url),
            kill_gate: Arc::clone(&self.kill_gate),
            idle: Arc::clone(&self.idle),
            clean: true,
            in_flight: false,
            namespace: format!("{}:{n}:{suite}", self.prefix),
            model: HashMap::new(),
        }))
    }
}

struct RedisSession {
    scripts: Arc<ScriptSet>,
    con: MultiplexedConnection,
    connect_url: Arc<str>,
    kill_gate: Arc<tokio::sync::Mutex<()>>,
    idle: Arc<Mutex<Vec<MultiplexedConnection>>>,
    /// No call of this session failed, so its connection is in step and may serve the next.
    clean: bool,
    /// A call is under way: if the session is dropped mid-call (the trial's own timeout), the
    /// script may still run in Redis, and is killed.
    in_flight: bool,
    namespace: String,
    /// The reference model's view of each key, to know when and how long the script must expire it.
    model: HashMap<String, Option<RateState>>,
}

impl RedisSession {
    /// One script call, guarded against runaway scripts: Redis runs one script at a time, so a
    /// script that never returns stalls every later call (of this run, and of anyone else on a
    /// shared server). A call that gets no answer within [`SCRIPT_CALL_BOUND`] sends `SCRIPT
    /// KILL` on a connection of its own and fails, naming the script and the bound; a call
    /// answered BUSY (it did not run: another call's script is running away) waits for that
    /// kill and is sent once more.
    ///
    /// With `pttl`, the key's PTTL comes back with the decision, in the same round trip.
    async fn call_script(
        &mut self,
        key: &str,
        strategy: &Strategy,
        now: f64,
        cost: f64,
        pttl: bool,
    ) -> Result<(Decision, Option<i64>), BackendError> {
        let result = self.call_script_once(key, strategy, now, cost, pttl).await;
        if result.is_err() {
            self.clean = false;
        }
        result
    }

    async fn call_script_once(
        &mut self,
        key: &str,
        strategy: &Strategy,
        now: f64,
        cost: f64,
        pttl: bool,
    ) -> Result<(Decision, Option<i64>), BackendError> {
        let scripts = Arc::clone(&self.scripts);
        let bound = scripts.bind(strategy).map_err(call_error)?;
        let (mut busy_since, mut killed) = (None, false);
        loop {
            drop(self.kill_gate.lock().await);
            self.in_flight = true;
            let result = if pttl {
                bound
                    .call_with_pttl(&mut self.con, key, now, cost)
                    .await
                    .map(|(d, p)| (d, Some(p)))
            } else {
                bound
                    .call(&mut self.con, key, now, cost)
                    .await
                    .map(|d| (d, None))
            };
            match result {
                Ok(answer) => {
                    self.in_flight = false;
                    return Ok(answer);
                }
                Err(e) if e.is_timeout() => {
                    let script = e.script().unwrap_or("the script").to_owned();
                    let outcome = self.kill().await;
                    return Err(BackendError::Internal(format!(
                        "{script} did not answer within {} s (the bound on one script call): a \
                         runaway script? SCRIPT KILL sent on a separate connection: {outcome}",
                        SCRIPT_CALL_BOUND.as_secs()
                    )));
                }
                Err(e) if e.is_busy() && busy_within_grace(&mut busy_since) => {
                    self.kill_once(&mut killed).await;
                }
                Err(e) if e.was_killed() => {
                    self.in_flight = false;
                    return Err(BackendError::Internal(format!(
                        "{e} (it ran past Redis's busy-reply threshold, a runaway script, and was \
                         stopped with SCRIPT KILL)"
                    )));
                }
                Err(e) => {
                    self.in_flight = false;
                    return Err(call_error(e));
                }
            }
        }
    }

    /// On the first BUSY answer, SCRIPT KILL; on the later ones (Redis stays BUSY until the
    /// killed script reaches its next hook), a short pause before the next try.
    async fn kill_once(&mut self, killed: &mut bool) {
        if !*killed {
            *killed = true;
            self.kill().await;
        } else {
            tokio::time::sleep(BUSY_RETRY_PAUSE).await;
        }
    }

    async fn kill(&mut self) -> crate::infra::ScriptKill {
        let outcome = kill_gated(&self.kill_gate, &self.connect_url).await;
        self.in_flight = false;
        outcome
    }
}

/// Pause between tries of a call answered BUSY.
const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a call answered BUSY keeps trying after the first BUSY (and the kill).
const BUSY_GRACE: Duration = Duration::from_secs(3);

/// Marks the first BUSY answer; true while tries may go on.
fn busy_within_grace(busy_since: &mut Option<Instant>) -> bool {
    busy_since.get_or_insert_with(Instant::now).elapsed() < BUSY_GRACE
}

/// SCRIPT KILL in a task of its own that holds `gate`, so it completes (and later calls wait
/// for it) even if the trial that asked is abandoned meanwhile.
async fn kill_gated(
    gate: &Arc<tokio::sync::Mutex<()>>,
    url: &Arc<str>,
) -> crate::infra::ScriptKill {
    let gate = Arc::clone(gate).lock_owned().await;
    let url = Arc::clone(url);
    let task = tokio::spawn(async move {
        let _gate = gate;
        crate::infra::kill_running_script(&url).await
    });
    task.await
        .unwrap_or_else(|e| crate::infra::ScriptKill::Failed(e.to_string()))
}

impl Drop for RedisSession {
    fn drop(&mut self) {
        // Dropped mid-call: the trial's own timeout fired while a script ran.
        if !self.in_flight {
            if self.clean {
                let mut idle = self.idle.lock().expect("not poisoned");
                if idle.len() < MAX_IDLE {
                    idle.push(self.con.clone());
                }
            }
            return;
        }
        let (Ok(runtime), Ok(gate)) = (
            tokio::runtime::Handle::try_current(),
            Arc::clone(&self.kill_gate).try_lock_owned(),
        ) else {
            return;
        };
        let url = Arc::clone(&self.connect_url);
        runtime.spawn(async move {
            let _gate = gate;
            crate::infra::kill_running_script(&url).await
        });
    }
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
        if crate::infra::cleanup::stopping() {
            // The run is being interrupted and its keys deleted: write no more.
            return Err(BackendError::Unavailable("the run was interrupted".into()));
        }
        let full_key = format!("{}:{key}", self.namespace);
        // No key allocation per op: only a key's first op inserts it.
        if !self.model.contains_key(key) {
            self.model.insert(key.to_owned(), None);
        }
        let state = self.model.get_mut(key).expect("inserted above");
        let expected = strategy.check(state, now, cost).ok();
        // When the model says the script writes, the key's PTTL rides along with the call.
        let expiry = expected
            .as_ref()
            .filter(|_| state.is_some())
            .and_then(|e| e.expiry_ms);
        let started = Instant::now();
        let (decision, pttl) = self
            .call_script(&full_key, strategy, now, cost, expiry.is_some())
            .await?;
        // The expiry check only makes sense while script and model agree; a decision that
        // differs is reported by the runner field by field.
        if let (Some(expected), Some(expiry), Some(pttl)) = (expected, expiry, pttl)
            && expected.decision == decision
        {
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
