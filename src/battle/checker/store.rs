//! Checks that read the store as the run left it, next to the histories and the fault log:
//! `counted-once`, `store-down` and `hygiene`.
//!
//! The runner reads the store directly (never through the fault proxy) once every worker and
//! server is gone, into a [`StoreSnapshot`]; these checks never ask the system under test.

use std::collections::BTreeMap;

use serde_json::json;

use super::{FaultRecord, Ruling, Verdict, at};
use crate::battle::faults::window_of;
use crate::battle::history::{Call, CallOutcome, Op, WorkerHistory, server_index};
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
    /// `cluster-keys`: the script calls the store saw during the run.
    pub scripts: Option<super::ScriptAudit>,
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
pub fn judge_counted_once(histories: &[&WorkerHistory], snapshot: &StoreSnapshot) -> Ruling {
    if let Some(e) = &snapshot.error {
        return Ruling::new(
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
        return Ruling::new(
            Verdict::Unknown,
            "no group's key to read back".into(),
            json!({}),
        );
    }
    Ruling::new(verdict, lines.join("; "), json!({ "keys": numbers }))
}

/// `store-down`: admits by the servers the fault cut from the store, while it lasted.
pub fn judge_store_down(
    histories: &[&WorkerHistory],
    faults: &[FaultRecord],
    fault: &FaultRecord,
    policy: FailPolicy,
) -> Ruling {
    let Some((start, end)) = window_of(faults, &fault.name) else {
        return Ruling::new(
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
        return Ruling::new(
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
        FailPolicy::Closed if admitted > 0 => Ruling::new(
            Verdict::Fail,
            format!(
                "declared fail-closed, but {admitted} units were admitted by server(s) {cut:?} while the store was cut off ({window_ms}; e.g. {})",
                examples.join(", ")
            ),
            numbers,
        ),
        FailPolicy::Closed if inside == 0 => Ruling::new(
            Verdict::Unknown,
            format!("no call went to server(s) {cut:?} while the store was cut off ({window_ms})"),
            numbers,
        ),
        FailPolicy::Closed => Ruling::new(
            Verdict::Pass,
            format!(
                "fail-closed held: 0 of {inside} calls to server(s) {cut:?} admitted while the store was cut off ({window_ms})"
            ),
            numbers,
        ),
        FailPolicy::Open => Ruling::new(
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
pub fn judge_hygiene(snapshot: &StoreSnapshot) -> Ruling {
    if let Some(e) = &snapshot.error {
        return Ruling::new(
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
        Ruling::new(
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
        Ruling::new(Verdict::Fail, text, numbers)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_lost, check_ok, decision, history};
    use super::*;
    use crate::battle::scenario::FaultAction;
    use crate::model::FixedWindowOptions;

    const WINDOW: i64 = 3_600_000;

    fn snapshot(count: u64) -> StoreSnapshot {
        let mut s = StoreSnapshot::default();
        s.groups.insert(
            "direct".into(),
            GroupKey {
                key: "cap:run-k".into(),
                strategy: Some(Strategy::FixedWindow(FixedWindowOptions {
                    limit: 100.0,
                    window_ms: WINDOW as f64,
                })),
                window: Some((0, count)),
            },
        );
        s
    }

    fn three_ok_one_lost() -> WorkerHistory {
        let d = |r| decision(true, 100, r, WINDOW);
        history(
            "direct",
            0,
            vec![
                check_ok(1, 10, d(99)),
                check_ok(2, 20, d(98)),
                check_lost(3, 30),
                check_ok(4, 40, d(96)),
            ],
        )
    }

    #[test]
    fn counted_once_passes_between_ok_and_ok_plus_indeterminate() {
        let h = three_ok_one_lost();
        for count in [3, 4] {
            let Ruling {
                verdict: v,
                summary,
                numbers: _,
            } = judge_counted_once(&[&h], &snapshot(count));
            assert_eq!(v, Verdict::Pass, "{summary}");
        }
    }

    #[test]
    fn counted_once_names_units_counted_twice_and_admits_lost() {
        let h = three_ok_one_lost();
        let Ruling {
            verdict: v,
            summary,
            numbers,
        } = judge_counted_once(&[&h], &snapshot(6));
        assert_eq!(v, Verdict::Fail);
        assert!(
            summary.contains("the store counted 6")
                && summary.contains("3 ok admits and 1 indeterminate")
                && summary.contains("2 units were counted more than once"),
            "{summary}"
        );
        assert_eq!(numbers["keys"][0]["storeCount"], 6);
        let Ruling {
            verdict: v,
            summary,
            numbers: _,
        } = judge_counted_once(&[&h], &snapshot(2));
        assert_eq!(v, Verdict::Fail);
        assert!(
            summary.contains("1 acknowledged admits are missing"),
            "{summary}"
        );
    }

    fn cut(name: &str, at_ms: i64, heal_ms: i64) -> Vec<FaultRecord> {
        let record = |name: String, action, at: i64, targets: Vec<String>| FaultRecord {
            name,
            action,
            planned_at_ms: 0,
            at_us: Some(at * 1000),
            done_us: Some(at * 1000),
            server: None,
            workers: Vec::new(),
            targets,
            error: None,
            failover: None,
        };
        vec![
            record(
                name.into(),
                FaultAction::Reset,
                at_ms,
                vec!["server0->redis (2 connections reset)".into()],
            ),
            record(
                crate::battle::link::heal_name(name),
                FaultAction::Heal,
                heal_ms,
                vec!["server0->redis".into()],
            ),
        ]
    }

    fn on_server(mut h: WorkerHistory, server: usize) -> WorkerHistory {
        for c in &mut h.calls {
            c.server = format!("server {server} 127.0.0.1:1");
        }
        h
    }

    #[test]
    fn store_down_fails_closed_servers_that_admit_while_cut_off() {
        let faults = cut("down", 15, 35);
        let h = on_server(three_ok_one_lost(), 0);
        let Ruling {
            verdict: v,
            summary,
            numbers,
        } = judge_store_down(&[&h], &faults, &faults[0], FailPolicy::Closed);
        assert_eq!(v, Verdict::Fail, "{summary}");
        assert!(
            summary.contains("declared fail-closed, but 1 units were admitted by server(s) [0]")
                && summary.contains("direct[0] call 2"),
            "{summary}"
        );
        assert_eq!(numbers["admittedInWindow"], 1);
        // Fail-open may admit: reported, not failed.
        let Ruling {
            verdict: v,
            summary,
            numbers: _,
        } = judge_store_down(&[&h], &faults, &faults[0], FailPolicy::Open);
        assert_eq!(v, Verdict::Pass);
        assert!(summary.contains("fail-open: 1 units admitted"), "{summary}");
        // Calls to a server the fault did not cut are not its business.
        let other = on_server(three_ok_one_lost(), 1);
        let Ruling {
            verdict: v,
            summary: _,
            numbers: _,
        } = judge_store_down(&[&other], &faults, &faults[0], FailPolicy::Closed);
        assert_eq!(v, Verdict::Unknown);
    }

    #[test]
    fn hygiene_names_keys_without_ttl_and_too_many_keys() {
        let mut s = StoreSnapshot {
            ttl_bound_ms: 2000,
            key_bound: 1,
            key_formula: "1 key".into(),
            read_at_ms: 10_000,
            ..StoreSnapshot::default()
        };
        s.keys = vec![StoredKey {
            key: "a".into(),
            pttl_ms: 500,
            slots: None,
        }];
        assert_eq!(judge_hygiene(&s).verdict, Verdict::Pass);
        s.keys.push(StoredKey {
            key: "registry".into(),
            pttl_ms: -1,
            slots: None,
        });
        s.keys.push(StoredKey {
            key: "slots".into(),
            pttl_ms: 5000,
            slots: Some((9_000, 2)),
        });
        let Ruling {
            verdict: v,
            summary,
            numbers: _,
        } = judge_hygiene(&s);
        assert_eq!(v, Verdict::Fail);
        assert!(summary.contains("registry has no TTL"), "{summary}");
        assert!(
            summary.contains("slots has a TTL of 5000 ms, above the bound of 2000 ms"),
            "{summary}"
        );
        assert!(
            summary.contains("slots holds 2 expired leases"),
            "{summary}"
        );
        assert!(summary.contains("and 1 more"), "{summary}");
    }
}
