//! The service logic of spec 8, free of gRPC: which policy kind serves which operation, the
//! `0 means 1` and validation rules, the binding axis, lease ids, and the monitor's counts.
//! `grpc.rs` only translates messages to and from these calls.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fail_mode::{FailPolicy, OpenReport};
use super::fault::{Fault, Faults};
use super::lease_id::LeaseId;
use super::monitor::{Monitor, MonitorIdentity, PolicyLabel};
use super::policy::{Concurrency, Policy, PolicyKind, PolicySet};
use super::store::memory::MemoryStore;
use super::store::{Renewal, Store, StoreError};
use super::two_tier::TwoTierSpenders;
use crate::model::{Decision, Strategy};

/// The longest `caller.domain` Reserve takes (it becomes part of a store key).
const MAX_DOMAIN_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown policy `{0}`")]
    NotFound(String),
    #[error("policy `{policy}` is a {kind}: it does not serve {op}")]
    Unimplemented {
        policy: String,
        kind: &'static str,
        op: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The axis `Fleet.Reserve` leases from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveAxis {
    Unspecified,
    Rate,
    Concurrency,
    TokenBudget,
}

/// Where the spec lets a server choose, which reading this one takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compat {
    /// The reference server's own choices: INVALID_ARGUMENT for malformed input, UNIMPLEMENTED
    /// for Reserve on a policy that is not federated, grants of at most `batch`.
    #[default]
    Reference,
    /// ThrottleKit's choices (as observed from outside): malformed input is served as 1,
    /// Reserve on a policy that is not federated is NOT_FOUND, grants go up to `wants`.
    Throttlekit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdmitAnswer {
    pub decision: Decision,
    pub lease_id: String,
    pub lease_expires_at: i64,
    pub binding_axis: &'static str,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeartbeatAnswer {
    pub live_ids: Vec<String>,
    pub reclaimed_ids: Vec<String>,
    pub next_deadline: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForecastAnswer {
    pub spendable_now: i64,
    pub next_replenish_at: i64,
    pub full_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReserveAnswer {
    pub capacity: i64,
    pub expiry_ms: i64,
    pub refresh_interval_ms: i64,
    pub safe_capacity: i64,
    pub retry_after_ms: i64,
    pub limit: i64,
}

pub struct Engine {
    policies: PolicySet,
    /// Shared across a fleet (Redis) when the server has one; otherwise the memory store.
    shared: Arc<dyn Store>,
    /// Per-instance state: `tokenBudget`, `concurrency`.
    local: Arc<MemoryStore>,
    two_tier: TwoTierSpenders,
    monitor: Monitor,
    faults: Faults,
    lease_ttl_ms: f64,
    compat: Compat,
    /// CheckMany calls so far (the `checkmany-split-instant` fault breaks every other one).
    calls: AtomicU64,
    /// Keys whose one extra admit the `burst-plus-one` fault has given away.
    bonus_given: Mutex<HashSet<String>>,
    fail: FailPolicy,
    open_report: OpenReport,
}

impl Engine {
    pub fn new(
        policies: PolicySet,
        shared: Arc<dyn Store>,
        local: Arc<MemoryStore>,
        lease_ttl: Duration,
        faults: Faults,
    ) -> Self {
        let monitor = Monitor::new(
            policy_labels(&policies),
            MonitorIdentity::default(),
            faults.has(Fault::StaleSnapshot),
        );
        Engine {
            policies,
            shared,
            local,
            two_tier: TwoTierSpenders::default(),
            monitor,
            faults,
            lease_ttl_ms: lease_ttl.as_millis() as f64,
            compat: Compat::Reference,
            calls: AtomicU64::new(0),
            bonus_given: Mutex::default(),
            fail: FailPolicy::Closed,
            open_report: OpenReport::default(),
        }
    }

    /// The lease TTL every slot and lease is granted for.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms as u64)
    }

    /// Takes `compat`'s readings where the spec allows a choice, and names this server (mode
    /// and node id) in Monitor snapshots.
    pub fn with_identity(mut self, compat: Compat, node_id: &str) -> Self {
        self.compat = compat;
        let mode = match compat {
            Compat::Reference => "tk-conform reference",
            Compat::Throttlekit => "tk-conform throttlekit-like",
        };
        self.monitor = Monitor::new(
            policy_labels(&self.policies),
            MonitorIdentity {
                mode: mode.into(),
                node_id: node_id.into(),
            },
            self.faults.has(Fault::StaleSnapshot),
        );
        self
    }

    pub fn compat(&self) -> Compat {
        self.compat
    }

    /// What Check does while the shared store is unreachable (`serve --fail`).
    pub fn with_fail_policy(mut self, fail: FailPolicy) -> Self {
        self.fail = fail;
        self
    }

    fn fails_open(&self) -> bool {
        self.fail == FailPolicy::Open || self.faults.has(Fault::FailsOpen)
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.policies.keys().map(String::as_str)
    }

    pub fn store_description(&self) -> String {
        self.shared.describe()
    }

    /// One pass of the background sweep: reclaims expired slots in both stores.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        Ok(self.shared.sweep().await? + self.local.sweep().await?)
    }

    pub async fn check(&self, policy: &str, key: &str, cost: i64) -> Result<Decision, EngineError> {
        let (policy, strategy) = self.rate_policy(policy, "Check", false)?;
        let cost = self.units("cost", cost)?;
        let key = self.identity(key)?;
        if self.faults.has(Fault::SlowCheck) {
            // Announced, so a test can send SIGTERM while this call is surely in flight.
            eprintln!("tk-conform serve: slow-check: holding a Check for 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let decision = match self.decide(&policy, &strategy, key, None, cost).await {
            Err(EngineError::Store(StoreError::Unavailable(why))) if self.fails_open() => {
                let limit = strategy.limit();
                return Ok(self.open_report.admit(limit, super::clock::now_ms(), &why));
            }
            r => r?,
        };
        self.record(&policy, key, &decision, "rate").await;
        Ok(decision)
    }

    pub async fn check_many(
        &self,
        policy: &str,
        keys: &[String],
        cost: i64,
    ) -> Result<Vec<Decision>, EngineError> {
        let (policy, strategy) = self.rate_policy(policy, "CheckMany", false)?;
        let cost = self.units("cost", cost)?;
        for key in keys {
            self.identity(key)?;
        }
        // One instant for the whole batch: read the store's clock once.
        let now = self.shared.now_ms().await?;
        let split = self.faults.has(Fault::CheckmanySplitInstant)
            && self.calls.fetch_add(1, Ordering::Relaxed) % 2 == 1;
        let mut decisions = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let at = if split { now + i as f64 } else { now };
            let decision = self.decide(&policy, &strategy, key, Some(at), cost).await?;
            self.record(&policy, key, &decision, "rate").await;
            decisions.push(decision);
        }
        if self.faults.has(Fault::CheckmanyReversed) {
            decisions.reverse();
        }
        Ok(decisions)
    }

    pub async fn peek(&self, policy: &str, key: &str) -> Result<Decision, EngineError> {
        let (policy, strategy) = self.rate_policy(policy, "Peek", true)?;
        let key = self.identity(key)?;
        self.peek_cost(&policy, &strategy, key, 1.0).await
    }

    pub async fn forecast(
        &self,
        policy: &str,
        key: &str,
        cost: i64,
    ) -> Result<ForecastAnswer, EngineError> {
        let (policy, strategy) = self.rate_policy(policy, "Forecast", true)?;
        let cost = self.units("cost", cost)?;
        let key = self.identity(key)?;
        let now = self.shared.now_ms().await?;
        let store_key = self.rate_key(&policy, key);
        // A twoTier policy can spend its local credits, then whatever the L2 would still lease.
        let local_credits = match &policy.kind {
            PolicyKind::Rate {
                two_tier: Some(_), ..
            } => self.two_tier.credits(&store_key),
            _ => 0.0,
        };
        let peek = self.shared.peek(&strategy, &store_key, cost).await?;
        // Each admit leaves `remaining` whole units, so the ones after the next number
        // floor(remaining / cost) (exact for every strategy; see the server docs).
        let from_store = if peek.allowed {
            1 + (peek.remaining as f64 / cost).floor() as i64
        } else {
            0
        };
        let mut spendable = (local_credits / cost).floor() as i64 + from_store;
        if self.faults.has(Fault::ForecastOffByOne) {
            spendable += 1;
        }
        Ok(ForecastAnswer {
            spendable_now: spendable,
            next_replenish_at: if spendable > 0 {
                now as i64
            } else {
                now as i64 + peek.retry_after_ms
            },
            full_at: peek.reset_at,
        })
    }

    pub async fn debit(
        &self,
        policy: &str,
        key: &str,
        tokens: i64,
    ) -> Result<Decision, EngineError> {
        let policy = self.policy(policy)?;
        let tokens = self.units("tokens", tokens)?;
        let key = self.identity(key)?;
        let PolicyKind::Budget { options, shared } = &policy.kind else {
            return Err(unimplemented(&policy, "Debit"));
        };
        let store: &dyn Store = if *shared {
            self.shared.as_ref()
        } else {
            self.local.as_ref()
        };
        let mut decision = store
            .debit(options, &self.rate_key(&policy, key), tokens)
            .await?;
        if self.faults.has(Fault::DebitNeverRefuses) && !decision.allowed {
            decision.allowed = true;
            decision.retry_after_ms = 0;
        }
        self.record(&policy, key, &decision, "cost").await;
        Ok(decision)
    }

    pub async fn admit(
        &self,
        policy: &str,
        key: &str,
        cost: i64,
    ) -> Result<AdmitAnswer, EngineError> {
        let policy = self.policy(policy)?;
        let cost = self.units("cost", cost)?;
        let key = self.identity(key)?;
        let (strategy, concurrency) = match &policy.kind {
            PolicyKind::Concurrency(c) => (None, *c),
            PolicyKind::Unified {
                strategy,
                concurrency,
            } => (Some(strategy), *concurrency),
            _ => return Err(unimplemented(&policy, "Admit")),
        };
        let lease = LeaseId::new(&policy.name, key);
        let lease_id = lease.encode();
        let slots = self.slot_store(concurrency);
        let slots_key = slots_key(&policy, key);
        let grant = slots
            .acquire_slot(
                &slots_key,
                concurrency.ceiling,
                self.lease_ttl_ms,
                &lease_id,
            )
            .await?;
        let ceiling = f64::from(concurrency.ceiling);
        let mut answer = if !grant.allowed {
            AdmitAnswer {
                decision: Decision {
                    allowed: false,
                    limit: concurrency.ceiling.into(),
                    remaining: 0,
                    reset_at: grant.expires_at.ceil() as i64,
                    retry_after_ms: ((grant.expires_at - grant.now).ceil() as i64).max(1),
                },
                lease_id: String::new(),
                lease_expires_at: 0,
                binding_axis: "concurrency",
            }
        } else {
            let slot_decision = Decision {
                allowed: true,
                limit: concurrency.ceiling.into(),
                remaining: (ceiling - f64::from(grant.held)).max(0.0) as i64,
                reset_at: grant.expires_at.ceil() as i64,
                retry_after_ms: 0,
            };
            let granted = AdmitAnswer {
                decision: slot_decision,
                lease_id: lease_id.clone(),
                lease_expires_at: grant.expires_at as i64,
                binding_axis: "concurrency",
            };
            match strategy {
                None => granted,
                Some(strategy) => {
                    let rate = self
                        .shared
                        .check(strategy, &self.rate_key(&policy, key), None, cost)
                        .await?;
                    if !rate.allowed {
                        // The rate axis refused: the slot taken for this call goes back.
                        slots.release_slot(&slots_key, &lease_id).await?;
                        AdmitAnswer {
                            decision: rate,
                            lease_id: String::new(),
                            lease_expires_at: 0,
                            binding_axis: "rate",
                        }
                    } else if rate.remaining < slot_decision.remaining {
                        AdmitAnswer {
                            decision: rate,
                            binding_axis: "rate",
                            ..granted
                        }
                    } else {
                        granted
                    }
                }
            }
        };
        if self.faults.has(Fault::UnifiedBindsRate) && strategy.is_some() {
            answer.binding_axis = "rate";
        }
        self.record(&policy, key, &answer.decision, answer.binding_axis)
            .await;
        Ok(answer)
    }

    /// Frees a lease's slot. Idempotent: an unknown, released or reclaimed lease is a no-op.
    pub async fn release(&self, lease_id: &str) -> Result<(), EngineError> {
        if lease_id.is_empty() {
            return Err(EngineError::Invalid("lease_id must not be empty".into()));
        }
        let lease = LeaseId::decode(lease_id).ok_or_else(|| {
            EngineError::Invalid(format!("`{lease_id}` is not a lease id this server issues"))
        })?;
        if self.faults.has(Fault::ReleaseNoop) {
            return Ok(());
        }
        let Some((policy, concurrency)) = self.lease_policy(&lease) else {
            return Ok(());
        };
        self.slot_store(concurrency)
            .release_slot(&slots_key(&policy, &lease.key), lease_id)
            .await?;
        Ok(())
    }

    pub async fn heartbeat(&self, lease_ids: &[String]) -> Result<HeartbeatAnswer, EngineError> {
        let mut answer = HeartbeatAnswer::default();
        let mut next_deadline = f64::INFINITY;
        for id in lease_ids {
            let renewal =
                match LeaseId::decode(id).and_then(|l| self.lease_policy(&l).map(|p| (l, p))) {
                    Some((lease, (policy, concurrency))) => {
                        self.slot_store(concurrency)
                            .renew_slot(&slots_key(&policy, &lease.key), id, self.lease_ttl_ms)
                            .await?
                    }
                    None => Renewal::Reclaimed,
                };
            match renewal {
                Renewal::Live { expires_at } => {
                    next_deadline = next_deadline.min(expires_at);
                    answer.live_ids.push(id.clone());
                }
                Renewal::Reclaimed => answer.reclaimed_ids.push(id.clone()),
            }
        }
        if next_deadline.is_finite() {
            answer.next_deadline = next_deadline as i64;
        }
        Ok(answer)
    }

    /// A grant from the window's budget of (`policy`, `domain`): spec 8 makes the budget per
    /// caller domain, `""` being the policy's whole budget.
    pub async fn reserve(
        &self,
        policy: &str,
        domain: &str,
        wants: i64,
        axis: ReserveAxis,
    ) -> Result<ReserveAnswer, EngineError> {
        let policy = self.policy(policy)?;
        if domain.len() > MAX_DOMAIN_BYTES {
            return Err(EngineError::Invalid(format!(
                "caller.domain must be at most {MAX_DOMAIN_BYTES} bytes, got {}",
                domain.len()
            )));
        }
        let wants = self.units("wants", wants)?;
        let federated = matches!(
            &policy.kind,
            PolicyKind::Rate {
                federated: Some(_),
                ..
            }
        );
        // Reserve's namespace is the federated policies: ThrottleKit answers NOT_FOUND for any
        // other, before it looks at the axis; spec 8 allows that or UNIMPLEMENTED.
        if !federated && self.compat == Compat::Throttlekit {
            return Err(EngineError::NotFound(policy.name.clone()));
        }
        if axis == ReserveAxis::Concurrency {
            return Err(unimplemented(&policy, "Reserve on the concurrency axis"));
        }
        // Only a federated window strategy is leasable: its per-window limit is policy-wide.
        // (A fleetBudget meters per identity through Debit; Reserve names no identity.)
        let (limit, window_ms, batch) = match (&policy.kind, axis) {
            (
                PolicyKind::Rate {
                    strategy,
                    federated: Some(f),
                    ..
                },
                ReserveAxis::Rate | ReserveAxis::Unspecified,
            ) => (strategy.limit(), window_of(strategy), f64::from(f.batch)),
            _ => return Err(unimplemented(&policy, "Reserve")),
        };
        let window_key = match domain {
            _ if self.faults.has(Fault::ReserveIgnoresDomain) => {
                format!("{}#reserve", self.prefix(&policy))
            }
            "" => format!("{}#reserve", self.prefix(&policy)),
            d => format!("{}#reserve:{d}", self.prefix(&policy)),
        };
        // Both are within spec 8 (at most `wants`, at most what is left of the window).
        let asked = match self.compat {
            Compat::Reference => wants.min(batch),
            Compat::Throttlekit => wants,
        };
        let grant = self
            .shared
            .reserve(&window_key, limit, window_ms, asked)
            .await?;
        let until_end = ((grant.window_end - grant.now).ceil() as i64).max(1);
        let capacity = grant.capacity as i64;
        let decision = Decision {
            allowed: capacity > 0,
            limit: limit as i64,
            remaining: 0,
            reset_at: grant.window_end as i64,
            retry_after_ms: if capacity > 0 { 0 } else { until_end },
        };
        self.record(&policy, "", &decision, "rate").await;
        Ok(ReserveAnswer {
            capacity,
            expiry_ms: grant.window_end as i64,
            refresh_interval_ms: (until_end / 2).max(1),
            safe_capacity: capacity,
            retry_after_ms: decision.retry_after_ms,
            limit: limit as i64,
        })
    }

    // ---- helpers ----

    fn policy(&self, name: &str) -> Result<Arc<Policy>, EngineError> {
        if name.is_empty() {
            // Spec 8: an empty policy name is an unknown policy.
            return Err(EngineError::NotFound(String::new()));
        }
        self.policies
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(name.to_owned()))
    }

    /// A policy with a rate axis; `read_only` operations also serve the rate axis of a unified one.
    fn rate_policy(
        &self,
        name: &str,
        op: &'static str,
        read_only: bool,
    ) -> Result<(Arc<Policy>, Strategy), EngineError> {
        let policy = self.policy(name)?;
        let strategy = match &policy.kind {
            PolicyKind::Rate { strategy, .. } => *strategy,
            PolicyKind::Unified { strategy, .. } if read_only => *strategy,
            _ => return Err(unimplemented(&policy, op)),
        };
        Ok((policy, strategy))
    }

    /// `cost`, `tokens`, `wants`: 0 means 1; negative is malformed, refused or (ThrottleKit's
    /// reading) served as 1. The `lax-status` fault serves it as its size, which neither allows.
    fn units(&self, field: &str, value: i64) -> Result<f64, EngineError> {
        match value {
            0 => Ok(1.0),
            v if v < 0 && self.faults.has(Fault::LaxStatus) => Ok(v.unsigned_abs() as f64),
            v if v < 0 && self.compat == Compat::Throttlekit => Ok(1.0),
            v if v < 0 => Err(EngineError::Invalid(format!(
                "{field} must be >= 0 (0 means 1), got {v}"
            ))),
            v => Ok(v as f64),
        }
    }

    fn identity<'k>(&self, key: &'k str) -> Result<&'k str, EngineError> {
        if key.is_empty() {
            return Err(EngineError::Invalid("key must not be empty".into()));
        }
        Ok(if self.faults.has(Fault::SharedKeys) {
            "*"
        } else {
            key
        })
    }

    fn prefix<'p>(&self, policy: &'p Policy) -> std::borrow::Cow<'p, str> {
        if self.faults.has(Fault::PrivatePrefix) {
            format!("{}-private", policy.prefix).into()
        } else {
            policy.prefix.as_str().into()
        }
    }

    /// The store key of identity `key`: `<prefix>:<key>`, shared with the direct-Redis door.
    fn rate_key(&self, policy: &Policy, key: &str) -> String {
        format!("{}:{key}", self.prefix(policy))
    }

    fn slot_store(&self, concurrency: Concurrency) -> &dyn Store {
        if concurrency.distributed {
            self.shared.as_ref()
        } else {
            self.local.as_ref()
        }
    }

    fn lease_policy(&self, lease: &LeaseId) -> Option<(Arc<Policy>, Concurrency)> {
        let policy = self.policies.get(&lease.policy)?.clone();
        let concurrency = match &policy.kind {
            PolicyKind::Concurrency(c) => *c,
            PolicyKind::Unified { concurrency, .. } => *concurrency,
            _ => return None,
        };
        Some((policy, concurrency))
    }

    async fn decide(
        &self,
        policy: &Policy,
        strategy: &Strategy,
        key: &str,
        now: Option<f64>,
        cost: f64,
    ) -> Result<Decision, EngineError> {
        let store_key = self.rate_key(policy, key);
        let mut decision = match &policy.kind {
            PolicyKind::Rate {
                two_tier: Some(tt), ..
            } => {
                self.two_tier
                    .check(self.shared.as_ref(), strategy, *tt, &store_key, cost)
                    .await?
            }
            _ => {
                // The broken variant trusts its own (possibly skewed) clock over the store's.
                let now = match now {
                    None if self.faults.has(Fault::OwnClock) => Some(super::clock::now_ms()),
                    n => n,
                };
                self.shared.check(strategy, &store_key, now, cost).await?
            }
        };
        if !decision.allowed && self.faults.has(Fault::BurstPlusOne) {
            let mut given = self.bonus_given.lock().unwrap_or_else(|p| p.into_inner());
            if given.insert(store_key) {
                decision.allowed = true;
                decision.retry_after_ms = 0;
            }
        }
        if !decision.allowed && self.faults.has(Fault::ZeroRetry) {
            decision.retry_after_ms = 0;
        }
        Ok(decision)
    }

    async fn peek_cost(
        &self,
        policy: &Policy,
        strategy: &Strategy,
        key: &str,
        cost: f64,
    ) -> Result<Decision, EngineError> {
        if self.faults.has(Fault::PeekConsumes) {
            return self.decide(policy, strategy, key, None, cost).await;
        }
        // The store previews the decision of a call of `cost`; spec 8's Peek reports what is
        // left before that call, so an admitted preview has `cost` more.
        let mut preview = self.store_peek(policy, strategy, key, cost).await?;
        if preview.allowed {
            preview.remaining += cost as i64;
        }
        Ok(preview)
    }

    async fn store_peek(
        &self,
        policy: &Policy,
        strategy: &Strategy,
        key: &str,
        cost: f64,
    ) -> Result<Decision, EngineError> {
        let store_key = self.rate_key(policy, key);
        if let PolicyKind::Rate {
            two_tier: Some(_), ..
        } = &policy.kind
            && let Some(local) = self.two_tier.peek(&store_key, cost)
        {
            return Ok(local);
        }
        Ok(self.shared.peek(strategy, &store_key, cost).await?)
    }

    async fn record(&self, policy: &Policy, key: &str, decision: &Decision, axis: &str) {
        self.monitor
            .record(&policy.name, key, decision, axis, super::clock::now_ms());
    }
}

/// What Monitor snapshots say about each policy besides its counts.
fn policy_labels(policies: &PolicySet) -> Vec<PolicyLabel> {
    policies
        .policies
        .values()
        .map(|p| {
            let (strategy, limit) = match &p.kind {
                PolicyKind::Rate { strategy, .. } | PolicyKind::Unified { strategy, .. } => {
                    (strategy.kind().name().to_owned(), strategy.limit() as i64)
                }
                PolicyKind::Budget { options, .. } => (String::new(), options.budget as i64),
                PolicyKind::Concurrency(c) => (String::new(), i64::from(c.ceiling)),
            };
            PolicyLabel {
                name: p.name.clone(),
                kind: p.kind.label().to_owned(),
                strategy,
                limit,
            }
        })
        .collect()
}

fn unimplemented(policy: &Policy, op: &'static str) -> EngineError {
    EngineError::Unimplemented {
        policy: policy.name.clone(),
        kind: policy.kind.label(),
        op,
    }
}

fn slots_key(policy: &Policy, key: &str) -> String {
    format!("{}#slots:{key}", policy.prefix)
}

/// The window a federated policy's per-window limit counts over.
fn window_of(strategy: &Strategy) -> f64 {
    match strategy {
        Strategy::FixedWindow(o) => o.window_ms,
        Strategy::SlidingWindow(o) => o.window_ms,
        Strategy::SlidingWindowLog(o) => o.window_ms,
        Strategy::Gcra(o) => o.period_ms,
        Strategy::TokenBucket(o) => o.capacity / o.refill_per_sec * 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
version: 1
limiters:
  coupled:
    strategy: fixedWindow
    limit: 10
    period: 1h
    twoTier: { mode: leased, batch: 4, windowCoupled: true }
  unified:
    strategy: gcra
    limit: 5
    period: 1h
    burst: 5
    concurrency: { minLimit: 2, maxLimit: 2 }
"#;

    /// `instances` engines over one shared store, as N servers on one Redis.
    fn fleet(instances: usize) -> Vec<Engine> {
        let policies = PolicySet::parse("test.yaml", POLICIES).unwrap();
        let shared: Arc<dyn Store> = Arc::new(MemoryStore::default());
        (0..instances)
            .map(|_| {
                Engine::new(
                    policies.clone(),
                    shared.clone(),
                    Arc::new(MemoryStore::default()),
                    Duration::from_secs(2),
                    Faults::default(),
                )
            })
            .collect()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn two_tier_window_coupled_admits_at_most_the_limit_across_instances() {
        block_on(async {
            let engines = fleet(3);
            let mut admitted = 0;
            // Round-robin until every instance is refused; bounded far above the limit.
            for i in 0..60 {
                if engines[i % 3]
                    .check("coupled", "k", 1)
                    .await
                    .unwrap()
                    .allowed
                {
                    admitted += 1;
                }
            }
            assert_eq!(admitted, 10);
            let refused = engines[0].check("coupled", "k", 1).await.unwrap();
            assert!(
                !refused.allowed && refused.retry_after_ms > 0,
                "{refused:?}"
            );
        });
    }

    #[test]
    fn unified_admit_reports_the_tighter_axis() {
        block_on(async {
            let engine = &fleet(1)[0];
            let first = engine.admit("unified", "k", 1).await.unwrap();
            // After one admit: rate has 4 left, concurrency 1 -> concurrency binds.
            assert_eq!(
                (first.decision.allowed, first.binding_axis),
                (true, "concurrency")
            );
            assert_eq!(first.decision.remaining, 1);
            let second = engine.admit("unified", "k", 1).await.unwrap();
            let third = engine.admit("unified", "k", 1).await.unwrap();
            assert_eq!(
                (third.decision.allowed, third.binding_axis),
                (false, "concurrency")
            );
            engine.release(&first.lease_id).await.unwrap();
            engine.release(&second.lease_id).await.unwrap();
            // The rate axis has 3 of 5 left: spend them, returning each slot, until rate binds.
            for _ in 0..3 {
                let a = engine.admit("unified", "k", 1).await.unwrap();
                assert!(a.decision.allowed);
                engine.release(&a.lease_id).await.unwrap();
            }
            let refused = engine.admit("unified", "k", 1).await.unwrap();
            assert_eq!(
                (refused.decision.allowed, refused.binding_axis),
                (false, "rate")
            );
            assert!(refused.lease_id.is_empty());
        });
    }

    #[test]
    fn operations_a_kind_does_not_serve_are_unimplemented() {
        block_on(async {
            let engine = &fleet(1)[0];
            assert!(matches!(
                engine.check("unified", "k", 1).await,
                Err(EngineError::Unimplemented { .. })
            ));
            assert!(matches!(
                engine.debit("coupled", "k", 1).await,
                Err(EngineError::Unimplemented { .. })
            ));
            assert!(matches!(
                engine.reserve("coupled", "", 1, ReserveAxis::Rate).await,
                Err(EngineError::Unimplemented { .. })
            ));
            assert!(matches!(
                engine.check("nope", "k", 1).await,
                Err(EngineError::NotFound(_))
            ));
            assert!(matches!(
                engine.check("coupled", "k", -1).await,
                Err(EngineError::Invalid(_))
            ));
            assert!(matches!(
                engine.check("coupled", "", 1).await,
                Err(EngineError::Invalid(_))
            ));
        });
    }
}
