//! One property trial's hold on the adapter: a fresh namespace, one configured limiter, every
//! call recorded with its invoke and complete wall times, and the checks every decision gets
//! (remaining and retryAfterMs never negative, remaining never above the limit).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::family::{Point, Shape};
use super::store::{Store, Watch, Writes};
use super::{PropertyTarget, Verdict};
use crate::backend::BackendError;
use crate::backend::exec::V2Session;
use crate::backend::exec::v2::{Clock, DecisionV2, LimiterKind};

/// TTLs in whole seconds round up, and some engines keep a key a few intervals plus a second;
/// hygiene is after keys kept forever or far beyond their use, not after such rounding.
const TTL_SLACK_MS: f64 = 5000.0;

/// The limiter id every trial configures.
const LIMITER: &str = "L";

/// One recorded decision.
#[derive(Debug, Clone)]
pub struct Call {
    pub key: String,
    pub cost: f64,
    /// The explicit `now` sent, or the wall time the call was sent (real time).
    pub now: f64,
    pub invoke: f64,
    pub complete: f64,
    pub decision: DecisionV2,
}

impl Call {
    pub fn allowed(&self) -> bool {
        self.decision.allowed
    }

    /// `key k, cost 1, now 1700000000000` for messages.
    pub fn describe(&self) -> String {
        format!(
            "key {}, cost {}, {} → {}",
            self.key,
            self.cost,
            if self.now == self.invoke {
                format!(
                    "sent at {:.1}, answered at {:.1}",
                    self.invoke, self.complete
                )
            } else {
                format!("now {}", self.now)
            },
            describe_decision(&self.decision)
        )
    }
}

pub fn describe_decision(d: &DecisionV2) -> String {
    let mut parts = vec![if d.allowed { "allowed" } else { "denied" }.to_owned()];
    if let Some(r) = d.remaining {
        parts.push(format!("remaining {r}"));
    }
    if let Some(r) = d.reset_at {
        parts.push(format!("resetAt {r}"));
    }
    if let Some(r) = d.retry_after_ms {
        parts.push(format!("retryAfterMs {r}"));
    }
    parts.join(", ")
}

pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

pub struct Driver {
    session: V2Session,
    pub kind: LimiterKind,
    store: Option<Store>,
    keys_used: BTreeSet<String>,
    /// How far the explicit clock ran ahead of the wall (engines may set TTLs from it).
    ahead_ms: f64,
    limit: f64,
}

impl Driver {
    pub async fn open(
        target: &PropertyTarget,
        kind: &LimiterKind,
        point: &Point,
        suite: &str,
    ) -> Result<Driver, Verdict> {
        let mut session = target
            .backend
            .open_v2(suite)
            .await
            .map_err(|e| Verdict::Fail(format!("cannot open the suite: {e}")))?;
        session
            .configure(LIMITER, &kind.name, &point.params)
            .await
            .map_err(|e| {
                Verdict::Fail(format!(
                    "configure {} with {} (inside its declared ranges) failed: {e}",
                    kind.name,
                    point.label()
                ))
            })?;
        let store = match &target.redis {
            Some((url, owned)) => Some(
                Store::connect(url, *owned, &target.run_prefix)
                    .await
                    .map_err(|e| Verdict::Fail(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Driver {
            session,
            kind: kind.clone(),
            store,
            keys_used: BTreeSet::new(),
            ahead_ms: 0.0,
            limit: Shape::of(kind, point).limit(),
        })
    }

    /// A key another process decided on in this namespace (for hygiene's key count).
    pub fn note_key(&mut self, key: &str) {
        self.keys_used.insert(key.to_owned());
    }

    pub fn namespace(&self) -> &str {
        self.session.namespace()
    }

    /// One decision at `now` (explicit clock) or at the wall's now (real time).
    pub async fn decide(&mut self, key: &str, cost: f64, now: f64) -> Result<Call, Verdict> {
        self.keys_used.insert(key.to_owned());
        let explicit = self.kind.clock == Clock::Explicit;
        if explicit {
            self.ahead_ms = self.ahead_ms.max(now - wall_ms());
        }
        let invoke = wall_ms();
        let result = self
            .session
            .decide(LIMITER, key, cost, explicit.then_some(now))
            .await;
        let complete = wall_ms();
        let decision = result.map_err(|e| match e {
            BackendError::StoreUnreachable(m) => Verdict::Fail(format!(
                "the adapter reported its store unreachable ({m}) while deciding on key {key}; that is no denial, and no verdict on the engine's limits"
            )),
            other => Verdict::Fail(format!("decide on key {key} (cost {cost}): {other}")),
        })?;
        let call = Call {
            key: key.to_owned(),
            cost,
            now: if explicit { now } else { invoke },
            invoke,
            complete,
            decision,
        };
        self.every_decision(&call)?;
        Ok(call)
    }

    /// Real time: one decision now.
    pub async fn decide_now(&mut self, key: &str, cost: f64) -> Result<Call, Verdict> {
        self.decide(key, cost, 0.0).await
    }

    fn every_decision(&self, call: &Call) -> Result<(), Verdict> {
        let d = &call.decision;
        if let Some(r) = d.remaining {
            if r < 0 {
                return Err(Verdict::Fail(format!(
                    "honesty: remaining {r} is negative ({})",
                    call.describe()
                )));
            }
            if r as f64 > self.limit {
                return Err(Verdict::Fail(format!(
                    "honesty: remaining {r} exceeds the limit {} ({})",
                    self.limit,
                    call.describe()
                )));
            }
        }
        if let Some(r) = d.retry_after_ms
            && r < 0
        {
            return Err(Verdict::Fail(format!(
                "honesty: retryAfterMs {r} is negative ({})",
                call.describe()
            )));
        }
        Ok(())
    }

    /// Frees one concurrency slot.
    pub async fn release(&mut self, key: &str) -> Result<(), Verdict> {
        self.session
            .release(LIMITER, key)
            .await
            .map_err(|e| Verdict::Fail(format!("release on key {key}: {e}")))
    }

    /// Removes the TTL of every key the engine wrote in this namespace.
    pub async fn seed_without_ttl(&mut self) -> Result<Vec<String>, Verdict> {
        let namespace = self.namespace().to_owned();
        let store = self.store.as_mut().ok_or_else(no_store)?;
        store
            .persist_all(&namespace)
            .await
            .map_err(|e| Verdict::Fail(format!("seeding: {e}")))
    }

    pub async fn watch(&mut self) -> Result<Watch, Verdict> {
        let store = self.store.as_ref().ok_or_else(no_store)?;
        store
            .watch()
            .await
            .map_err(|e| Verdict::Fail(format!("watching the store: {e}")))
    }

    pub async fn writes(&mut self, watch: Watch) -> Result<Writes, Verdict> {
        let namespace = self.namespace().to_owned();
        let store = self.store.as_mut().ok_or_else(no_store)?;
        store
            .writes(watch, &namespace)
            .await
            .map_err(|e| Verdict::Fail(format!("watching the store: {e}")))
    }

    /// The hygiene check that closes every suite.
    pub async fn hygiene(&mut self, shape: &Shape) -> Result<String, Verdict> {
        let namespace = self.namespace().to_owned();
        let keys = self.keys_used.len();
        let slack = TTL_SLACK_MS + self.ahead_ms.max(0.0);
        match self.store.as_mut() {
            None => Ok("no redis to inspect".into()),
            Some(store) => store
                .hygiene(&namespace, shape, keys, slack)
                .await
                .map_err(|e| Verdict::Fail(e.to_string())),
        }
    }
}

fn no_store() -> Verdict {
    Verdict::NotApplicable("the run has no Redis to inspect".into())
}

/// Sleeps until the wall clock reads `at` (ms since the epoch).
pub async fn sleep_until_wall(at: f64) {
    let wait = at - wall_ms();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    }
}
