//! Checks that read the store as the run left it, next to the histories and the fault log:
//! `counted-once`, `store-down` and `hygiene`.
//!
//! The runner reads the store directly (never through the fault proxy) once every worker and
//! server is gone, into a [`StoreSnapshot`]; these checks never ask the system under test.

use std::collections::BTreeMap;

use serde_json::json;

use super::{FaultRecord, Outcome, Verdict, at};
use crate::battle::history::{Call, Op, Outcome as CallOutcome, WorkerHistory, server_index};
use crate::battle::network::window_of;
use crate::battle::scenario::FailPolicy;
use crate::model::Strategy;

/// The store after the run, and what the scenario's policies allow of it.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    /// Why the store could not be read (every store check is then `unknown`).
    pub error: Option<String>,
    /// Each group's store key and rate strategy.
    pub groups: BTreeMap<String, GroupKey>,
    /// Every key the run left, with its PTTL in ms (-1: no expiry).
    pub keys: Vec<StoredKey>,
    /// The longest TTL any key of these policies may carry, and why.
    pub ttl_bound_ms: i64,
    pub ttl_formula: String,
    /// The most keys the run may leave, and the formula.
    pub key_bound: u64,
    pub key_formula: String,
    /// When the store was read (epoch ms, the store's clock).
    pub read_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupKey {
    pub key: String,
    pub strategy: Option<Strategy>,
    /// fixedWindow: the stored `(start, count)`; `None` when the key is gone.
    pub window: Option<(i64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key: String,
    pub pttl_ms: i64,
    /// Concurrency slot sets: the latest lease expiry held (epoch ms) and how many leases had
    /// expired when the store was read.
    pub slots: Option<(i64, u64)>,
}

fn units(c: &Call) -> Option<u64> {
    match c.op {
        Op::Check { cost } | Op::Admit { cost } => Some(cost),
        _ => None,
    }
}

/// `counted-once`: per store key, ok admits ≤ the store's count ≤ ok + indeterminate admits.
pub fn judge_counted_once(histories: &[&WorkerHistory], snapshot: &StoreSnapshot) -> Outcome {
    if let Some(e) = &snapshot.error {
        return (
            Verdict::Unknown,
            format!("the store could not be read: {e}"),
            json!({}),
        );
    }
    let mut by_key: BTreeMap<&str, Vec<&WorkerHistory>> = BTreeMap::new();
    for h in histories {
        if let Some(g) = snapshot.groups.get(&h.group) {
            by_key.entry(g.key.as_str()).or_default().push(h);
        }
    }
    let mut verdict = Verdict::Pass;
    let mut lines = Vec::new();
    let mut numbers = Vec::new();
    for (key, hs) in &by_key {
        let g = snapshot
            .groups
            .values()
            .find(|g| g.key == *key)
            .expect("grouped by a known key");
        let Some(Strategy::FixedWindow(o)) = g.strategy else {
            verdict = verdict.max(Verdict::Unknown);
            lines.push(format!(
                "{key}: counted-once reads fixedWindow counters only"
            ));
            continue;
        };
        let Some((start, count)) = g.window else {
            verdict = verdict.max(Verdict::Unknown);
            lines.push(format!(
                "{key}: the key had expired before it was read back"
            ));
            continue;
        };
        let reset_at = start + o.window_ms as i64;
        let (mut ok, mut lost, mut lost_calls) = (0u64, 0u64, Vec::new());
        for h in hs {
            for c in &h.calls {
                let Some(n) = units(c) else { continue };
                match (&c.outcome, c.decision()) {
                    (_, Some(d)) if d.allowed && d.reset_at == reset_at => ok += n,
                    (CallOutcome::Indeterminate { .. }, _)
                        if c.invoke_us.div_euclid(1000) < reset_at
                            && c.end_us().div_euclid(1000) >= start
                            || c.complete_us.is_none() =>
                    {
                        lost += n;
                        lost_calls.push(at(h, c.seq));
                    }
                    _ => {}
                }
            }
        }
        let line = format!(
            "{key}: the store counted {count} in window [{start}, {reset_at}); the histories say {ok} ok admits and {lost} indeterminate units"
        );
        numbers.push(json!({
            "key": key, "windowStart": start, "storeCount": count, "okAdmits": ok,
            "indeterminate": lost, "indeterminateCalls": lost_calls.iter().take(10).collect::<Vec<_>>(),
        }));
        if count < ok {
            verdict = Verdict::Fail;
            lines.push(format!(
                "{line}: {} acknowledged admits are missing from the store",
                ok - count
            ));
        } else if count > ok + lost {
            verdict = Verdict::Fail;
            lines.push(format!(
                "{line}: {} units were counted more than once (a retried call?)",
                count - ok - lost
            ));
        } else {
            lines.push(line);
        }
    }
    if by_key.is_empty() {
        return (
            Verdict::Unknown,
            "no group's key to read back".into(),
            json!({}),
        );
    }
    (verdict, lines.join("; "), json!({ "keys": numbers }))
}

/// `store-down`: admits by the servers the fault cut from the store, while it lasted.
pub fn judge_store_down(
    histories: &[&WorkerHistory],
    faults: &[FaultRecord],
    fault: &FaultRecord,
    policy: FailPolicy,
) -> Outcome {
    let Some((start, end)) = window_of(faults, &fault.name) else {
        return (
            Verdict::Unknown,
            format!("fault `{}` has no window", fault.name),
            json!({}),
        );
    };
    // The window opens once the links are switched, and closes when the heal begins.
    let start = fault.done_us.unwrap_or(start);
    let end = end.unwrap_or(i64::MAX);
    let cut: Vec<usize> = fault
        .targets
        .iter()
        .filter_map(|t| {
            let name = t.split(' ').next()?;
            let from = name.strip_suffix("->redis")?;
            from.strip_prefix("server")?.parse().ok()
        })
        .collect();
    if cut.is_empty() {
        return (
            Verdict::Unknown,
            format!(
                "fault `{}` cut no server from the store (links: {})",
                fault.name,
                fault.targets.join(", ")
            ),
            json!({}),
        );
    }
    let (mut inside, mut admitted, mut examples) = (0u64, 0u64, Vec::new());
    for h in histories {
        for c in &h.calls {
            let (Some(n), Some(done)) = (units(c), c.complete_us) else {
                continue;
            };
            if c.invoke_us < start || done > end {
                continue;
            }
            if !server_index(&c.server).is_some_and(|i| cut.contains(&i)) {
                continue;
            }
            inside += 1;
            if c.decision().is_some_and(|d| d.allowed) {
                admitted += n;
                if examples.len() < 5 {
                    examples.push(at(h, c.seq));
                }
            }
        }
    }
    let window_ms = if end == i64::MAX {
        "until the end".to_string()
    } else {
        format!("{:.1} ms", (end - start) as f64 / 1000.0)
    };
    let numbers = json!({
        "fault": fault.name, "policy": policy.name(), "servers": cut,
        "callsInWindow": inside, "admittedInWindow": admitted, "examples": examples,
        "windowMs": if end == i64::MAX { None } else { Some((end - start) as f64 / 1000.0) },
    });
    match policy {
        FailPolicy::Closed if admitted > 0 => (
            Verdict::Fail,
            format!(
                "declared fail-closed, but {admitted} units were admitted by server(s) {cut:?} while the store was cut off ({window_ms}; e.g. {})",
                examples.join(", ")
            ),
            numbers,
        ),
        FailPolicy::Closed if inside == 0 => (
            Verdict::Unknown,
            format!("no call went to server(s) {cut:?} while the store was cut off ({window_ms})"),
            numbers,
        ),
        FailPolicy::Closed => (
            Verdict::Pass,
            format!(
                "fail-closed held: 0 of {inside} calls to server(s) {cut:?} admitted while the store was cut off ({window_ms})"
            ),
            numbers,
        ),
        FailPolicy::Open => (
            Verdict::Pass,
            format!(
                "fail-open: {admitted} units admitted in {inside} calls to server(s) {cut:?} while the store was cut off ({window_ms})"
            ),
            numbers,
        ),
    }
}

/// `hygiene`: every key left has a TTL within the policies' bound, the key count is under the
/// stated formula, and no slot set keeps an expired lease past its own expiry.
pub fn judge_hygiene(snapshot: &StoreSnapshot) -> Outcome {
    if let Some(e) = &snapshot.error {
        return (
            Verdict::Unknown,
            format!("the store could not be read: {e}"),
            json!({}),
        );
    }
    let mut problems = Vec::new();
    for k in &snapshot.keys {
        if k.pttl_ms == -1 {
            problems.push(format!("{} has no TTL", k.key));
        } else if k.pttl_ms > snapshot.ttl_bound_ms {
            problems.push(format!(
                "{} has a TTL of {} ms, above the bound of {} ms",
                k.key, k.pttl_ms, snapshot.ttl_bound_ms
            ));
        }
        if let Some((latest, expired)) = k.slots
            && expired > 0
            && k.pttl_ms >= 0
            && snapshot.read_at_ms + k.pttl_ms > latest.max(snapshot.read_at_ms) + 1000 + 50
        {
            problems.push(format!(
                "{} holds {expired} expired leases and outlives its latest lease by {} ms",
                k.key,
                snapshot.read_at_ms + k.pttl_ms - latest
            ));
        }
    }
    let count = snapshot.keys.len() as u64;
    if count > snapshot.key_bound {
        problems.push(format!(
            "{count} keys left, above {} = {}",
            snapshot.key_bound, snapshot.key_formula
        ));
    }
    let numbers = json!({
        "keys": count, "keyBound": snapshot.key_bound, "keyFormula": snapshot.key_formula,
        "ttlBoundMs": snapshot.ttl_bound_ms, "ttlFormula": snapshot.ttl_formula,
        "problems": problems.iter().take(20).collect::<Vec<_>>(),
        "longestTtlMs": snapshot.keys.iter().map(|k| k.pttl_ms).max(),
    });
    if problems.is_empty() {
        (
            Verdict::Pass,
            format!(
                "{count} keys left (bound {} = {}), every TTL within {} ms ({})",
                snapshot.key_bound,
                snapshot.key_formula,
                snapshot.ttl_bound_ms,
                snapshot.ttl_formula
            ),
            numbers,
        )
    } else {
        let more = problems.len().saturating_sub(3);
        let mut text = problems
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        (Verdict::Fail, text, numbers)
    }
}
