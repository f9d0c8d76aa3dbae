//! Reads the store as a run left it (directly, never through the fault proxy) into the
//! checker's [`StoreSnapshot`]: each group's key and fixedWindow count, every key's PTTL, the
//! slot sets' leases, and the TTL and key-count bounds the scenario's policies imply.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::checker::{GroupKey, StoreSnapshot, StoredKey};
use super::policy::PolicyFacts;
use super::scenario::{Scenario, WorkerGroup};
use crate::model::Strategy;
use crate::server::policy::{PolicyKind, PolicySet};

/// The servers' set of every slots key.
use crate::server::store::redis::SLOT_KEYS;
/// Most keys a snapshot reads (a run leaves a handful).
const MAX_KEYS: usize = 10_000;
/// Slack on top of every policy's own TTL: slot sets and Reserve windows outlive their last
/// lease or window by one second on purpose.
const TTL_SLACK_MS: f64 = 1000.0;

/// The longest TTL a key of `kind` may carry, in ms.
fn ttl_ms(kind: &PolicyKind, lease_ttl_ms: u64, max_cost: f64) -> f64 {
    let lease = lease_ttl_ms as f64;
    match kind {
        PolicyKind::Rate { strategy, .. } => strategy_ttl(strategy, max_cost),
        PolicyKind::Budget { options, .. } => options.window_ms,
        PolicyKind::Concurrency(_) => lease,
        PolicyKind::Unified { strategy, .. } => strategy_ttl(strategy, max_cost).max(lease),
    }
}

fn strategy_ttl(strategy: &Strategy, max_cost: f64) -> f64 {
    match strategy {
        // newTat − now ≤ tau + T·cost.
        Strategy::Gcra(o) => o.period_ms / o.limit * (o.burst + max_cost),
        // Time to refill from empty.
        Strategy::TokenBucket(o) => (o.capacity / (o.refill_per_sec / 1000.0)).ceil(),
        Strategy::FixedWindow(o) => o.window_ms,
        Strategy::SlidingWindow(o) => o.window_ms + o.window_ms / o.buckets,
        Strategy::SlidingWindowLog(o) => o.window_ms,
    }
}

/// Keys one identity of `kind` may leave.
fn keys_per_identity(kind: &PolicyKind) -> u64 {
    match kind {
        PolicyKind::Rate {
            federated,
            two_tier,
            ..
        } => 1 + u64::from(federated.is_some() || two_tier.is_some()),
        PolicyKind::Budget { .. } | PolicyKind::Concurrency(_) => 1,
        PolicyKind::Unified { .. } => 2,
    }
}

/// The longest lease the servers granted (the checker reads it the same way for reclaims).
pub use super::checker::granted_lease_ms;

/// What the store read needs of the run, given by the runner (so this module does not import
/// it): the key each group works on and the scenario's namespace.
pub struct StoreScope<'a> {
    pub key_of: &'a dyn Fn(&WorkerGroup, &PolicyFacts) -> String,
    /// Always set on a Redis the harness did not start (`battle --redis-url` refuses a
    /// `--server-cmd` without `{key_prefix}`), so the read never strays into others' keys.
    pub namespace: Option<String>,
    /// The longest lease the servers granted (`granted_lease_ms`), which bounds slot keys' TTL.
    pub granted_lease_ms: u64,
}

pub async fn snapshot(
    scenario: &Scenario,
    scope: &StoreScope<'_>,
    policies: &BTreeMap<String, PolicyFacts>,
    urls: &[String],
    fleet: usize,
) -> StoreSnapshot {
    let mut snap = StoreSnapshot::default();
    let set = match scenario.policy_yaml() {
        Ok(yaml) => PolicySet::parse(&scenario.file.display().to_string(), &yaml),
        Err(e) => {
            snap.error = Some(e.to_string());
            return snap;
        }
    };
    let set = match set {
        Ok(s) => s,
        Err(e) => {
            snap.error = Some(e.to_string());
            return snap;
        }
    };
    let lease = scenario
        .plan
        .topology
        .lease_ttl_ms
        .max(scope.granted_lease_ms);
    let max_cost = scenario
        .plan
        .workers
        .iter()
        .map(|g| g.cost)
        .max()
        .unwrap_or(1) as f64;
    let mut ttl = 0.0f64;
    let mut per_identity = 0u64;
    let mut identities = BTreeMap::new();
    for g in &scenario.plan.workers {
        let Some(policy) = set.policies.get(&g.policy) else {
            continue;
        };
        ttl = ttl.max(ttl_ms(&policy.kind, lease, max_cost));
        identities.insert(
            (g.policy.clone(), g.key.clone()),
            keys_per_identity(&policy.kind),
        );
        if let Some(facts) = policies.get(&g.policy) {
            snap.groups.insert(
                g.group.clone(),
                GroupKey {
                    key: (scope.key_of)(g, facts),
                    strategy: facts.strategy,
                    window: None,
                },
            );
        }
    }
    per_identity += identities.values().sum::<u64>();
    snap.ttl_bound_ms = (ttl + TTL_SLACK_MS).ceil() as i64;
    snap.ttl_formula = "the longest TTL the policies give a key (gcra: T·(burst + cost); \
                        window strategies and budgets: the window; slots: the lease TTL) + 1000 ms"
        .into();
    let registry = u64::from(fleet > 0);
    snap.key_bound = per_identity + registry;
    snap.key_formula = format!(
        "Σ over the groups' (policy, key) of keys per identity ({per_identity}) + {registry} slot registry"
    );
    // A cluster's keys are spread over its nodes: each node is read for the keys it holds.
    for url in urls {
        if let Err(e) = read(&mut snap, scope.namespace.as_deref(), url).await {
            snap.error = Some(e.to_string());
            break;
        }
    }
    snap
}

/// Why the store could not be read back (the snapshot then carries the message).
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{url}: no connection within 5 s")]
    ConnectTimeout { url: String },
    #[error(transparent)]
    Connect(#[from] crate::infra::RedisError),
    #[error(transparent)]
    Command(#[from] redis::RedisError),
}

/// Reads the scenario's keys back from one node: those under `namespace` when the scenario has
/// one (always on a Redis the harness did not start), every key of the Redis the run started
/// otherwise. A group's key is read on the node that holds it.
async fn read(
    snap: &mut StoreSnapshot,
    namespace: Option<&str>,
    url: &str,
) -> Result<(), ReadError> {
    let connect = crate::infra::connect(url);
    let mut con = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| ReadError::ConnectTimeout {
            url: crate::infra::redact_url(url),
        })??;
    let time: (String, String) = redis::cmd("TIME").query_async(&mut con).await?;
    let secs: i64 = time.0.parse().unwrap_or(0);
    let micros: i64 = time.1.parse().unwrap_or(0);
    snap.read_at_ms = secs * 1000 + micros / 1000;
    let pattern = match namespace {
        Some(ns) => format!("{ns}:*"),
        None => "*".to_string(),
    };
    let registry = match namespace {
        Some(ns) => format!("{ns}:{SLOT_KEYS}"),
        None => SLOT_KEYS.to_string(),
    };
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut con)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() >= MAX_KEYS {
            break;
        }
    }
    // On a cluster node that does not serve the registry these answer MOVED: nothing here.
    let slot_keys: Vec<String> = con.smembers(&registry).await.unwrap_or_default();
    if con.exists(&registry).await.unwrap_or(false) {
        keys.push(registry.clone());
    }
    keys.sort();
    keys.dedup();
    let here = keys.clone();
    for key in keys {
        let pttl: i64 = con.pttl(&key).await?;
        if pttl == -2 {
            continue;
        }
        let slots = if slot_keys.contains(&key) {
            let scores: Vec<(String, f64)> =
                con.zrange_withscores(&key, 0, -1).await.unwrap_or_default();
            let latest = scores.iter().map(|(_, s)| *s as i64).max().unwrap_or(0);
            let expired = scores
                .iter()
                .filter(|(_, s)| (*s as i64) < snap.read_at_ms)
                .count() as u64;
            Some((latest, expired))
        } else {
            None
        };
        snap.keys.push(StoredKey {
            key,
            pttl_ms: pttl,
            slots,
        });
    }
    for g in snap.groups.values_mut() {
        if !here.contains(&g.key) {
            continue;
        }
        if let Some(Strategy::FixedWindow(_)) = g.strategy {
            let state: (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&g.key)
                .arg("start")
                .arg("count")
                .query_async(&mut con)
                .await?;
            if let (Some(start), Some(count)) = state {
                let start: f64 = start.parse().unwrap_or(f64::NAN);
                let count: f64 = count.parse().unwrap_or(f64::NAN);
                if start.is_finite() && count.is_finite() {
                    g.window = Some((start as i64, count as u64));
                }
            }
        }
    }
    Ok(())
}

/// Keys one decision key of an exec-door engine may leave (counters keep two windows, some a
/// lock or a sequence), as the property suites' hygiene allows.
const EXEC_KEYS_PER_KEY: u64 = 4;
/// TTLs in whole seconds round up, and some engines keep a key a few intervals plus a second.
const EXEC_TTL_SLACK_MS: f64 = 5000.0;

/// The store after an exec scenario: the engine's keys (every key, on a Redis the run started,
/// each of which must carry `namespace`; those under `<namespace>:` otherwise), with the bounds the
/// kind's family implies (`ttl_bound_ms`: twice the window or full refill).
pub async fn exec_snapshot(
    url: &str,
    namespace: &str,
    owned: bool,
    ttl_bound_ms: f64,
    keys_used: u64,
    family: &str,
) -> StoreSnapshot {
    let mut snap = StoreSnapshot {
        ttl_bound_ms: (ttl_bound_ms + EXEC_TTL_SLACK_MS).ceil() as i64,
        ttl_formula: format!(
            "twice the {family} window or full refill ({ttl_bound_ms} ms) + {EXEC_TTL_SLACK_MS} ms for whole-second TTLs"
        ),
        key_bound: EXEC_KEYS_PER_KEY * keys_used + EXEC_KEYS_PER_KEY,
        key_formula: format!(
            "{EXEC_KEYS_PER_KEY} per key decided on ({keys_used}) + {EXEC_KEYS_PER_KEY}"
        ),
        namespace: owned.then(|| namespace.to_owned()),
        ..StoreSnapshot::default()
    };
    let external = (!owned).then_some(namespace);
    if let Err(e) = read(&mut snap, external, url).await {
        snap.error = Some(e.to_string());
    }
    snap
}
