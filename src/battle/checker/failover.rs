//! `failover-bound`: across a failover of a replicated store, each fixedWindow key admits at
//! most its limit plus the units the old primary had acknowledged that never reached the
//! replica (they are gone from the new primary, so their budget is handed out again).
//!
//! The unreplicated units come from the fault record: at the moment of the failover the
//! primary's writes were paused, its `master_repl_offset` P and the key's count were read, it
//! was frozen, and the replica's offset S and count were read once it had taken in what was
//! sent. `P − S` bytes never reached the replica; the counts turn those bytes into units:
//! `U = primary count − replica count`. When `P = S` the two must agree (`U = 0`), else the
//! measurement is not trusted and the verdict is `unknown`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Ruling, StoreSnapshot, Verdict};
use crate::battle::faults::FaultRecord;
use crate::battle::history::WorkerHistory;
use crate::model::Strategy;

/// Units of ok admits of `histories` in the window `[start, start + window)`, and whether any
/// call that completed after `after_us` was denied in it (the limit was reached again).
fn admits(histories: &[&WorkerHistory], reset_at: i64, after_us: i64) -> (u64, u64, bool) {
    let (mut before, mut after, mut denied) = (0u64, 0u64, false);
    for h in histories {
        for c in &h.calls {
            let Some(d) = c.decision() else { continue };
            if d.reset_at != reset_at {
                continue;
            }
            let cost = match c.op {
                crate::battle::history::Op::Check { cost }
                | crate::battle::history::Op::Admit { cost } => cost,
                _ => continue,
            };
            let late = c.end_us() > after_us;
            match (d.allowed, late) {
                (true, false) => before += cost,
                (true, true) => after += cost,
                (false, true) => denied = true,
                (false, false) => {}
            }
        }
    }
    (before, after, denied)
}

pub fn judge(
    histories: &[&WorkerHistory],
    fault: &FaultRecord,
    snapshot: Option<&StoreSnapshot>,
) -> Ruling {
    let Some(record) = &fault.failover else {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "fault `{}` recorded no replication offsets (not a failover?)",
                fault.name
            ),
            json!({}),
        );
    };
    let Some(snapshot) = snapshot else {
        return super::no_store();
    };
    let mut by_key: BTreeMap<&str, (Vec<&WorkerHistory>, Option<&Strategy>)> = BTreeMap::new();
    for h in histories {
        if let Some(g) = snapshot.groups.get(&h.group) {
            let entry = by_key
                .entry(g.key.as_str())
                .or_insert((Vec::new(), g.strategy.as_ref()));
            entry.0.push(h);
        }
    }
    let lag_bytes = record.primary_offset - record.replica_offset;
    let mut verdict = Verdict::Pass;
    let mut lines = Vec::new();
    let mut numbers = Vec::new();
    for (key, (hs, strategy)) in &by_key {
        let Some(Strategy::FixedWindow(o)) = strategy else {
            verdict = verdict.max(Verdict::Unknown);
            lines.push(format!(
                "{key}: failover-bound reads fixedWindow counters only"
            ));
            continue;
        };
        let Some(at) = record.keys.iter().find(|k| k.key == *key) else {
            verdict = verdict.max(Verdict::Unknown);
            lines.push(format!("{key}: the failover did not record this key"));
            continue;
        };
        let limit = o.limit as u64;
        let window = o.window_ms as i64;
        // The window the failover fell in: the primary's (or, before any admit, the clock's).
        let start = at
            .primary
            .map(|(s, _)| s)
            .unwrap_or((record.paused_us / 1000).div_euclid(window) * window);
        let primary = at.primary.map_or(0, |(_, c)| c);
        let replica = match at.replica {
            Some((s, c)) if s == start => c,
            _ => 0,
        };
        let unreplicated = primary.saturating_sub(replica);
        let (before, after, denied) = admits(hs, start + window, record.paused_us);
        let admitted = before + after;
        let bound = limit + unreplicated;
        numbers.push(json!({
            "key": key, "windowStart": start, "limit": limit,
            "primaryOffset": record.primary_offset, "replicaOffset": record.replica_offset,
            "lagBytes": lag_bytes, "primaryCount": primary, "replicaCount": replica,
            "unreplicated": unreplicated, "bound": bound, "admitted": admitted,
            "admittedBefore": before, "admittedAfter": after, "limitReachedAfter": denied,
        }));
        let line = format!(
            "{key}: admitted {admitted} ({before} before the failover, {after} after), bound \
             {bound} = limit {limit} + {unreplicated} unreplicated (primary count {primary} at \
             offset {}, replica {replica} at offset {})",
            record.primary_offset, record.replica_offset
        );
        if lag_bytes <= 0 && primary != replica {
            verdict = verdict.max(Verdict::Unknown);
            lines.push(format!(
                "{line}: the offsets say the replica had everything, the counts disagree; \
                 the measurement is not trusted"
            ));
        } else if admitted > bound {
            verdict = Verdict::Fail;
            lines.push(format!(
                "{line}: {} admits beyond the bound (writes to a stale primary?)",
                admitted - bound
            ));
        } else if !denied {
            verdict = verdict.max(Verdict::Unknown);
            lines.push(format!(
                "{line}: the limit was never reached after the failover, so the bound was not \
                 put to the test"
            ));
        } else {
            lines.push(line);
        }
    }
    if by_key.is_empty() {
        return Ruling::new(
            Verdict::Unknown,
            "no group of this check has a key in the store snapshot".into(),
            json!({}),
        );
    }
    Ruling::new(verdict, lines.join("; "), json!({ "keys": numbers }))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_ok, decision, history};
    use super::*;
    use crate::battle::checker::GroupKey;
    use crate::battle::scenario::FaultAction;
    use crate::infra::sentinel::{FailoverRecord, KeyAtFailover};
    use crate::model::FixedWindowOptions;

    const WINDOW: i64 = 3_600_000;

    fn snapshot() -> StoreSnapshot {
        let mut s = StoreSnapshot::default();
        for g in ["direct", "service"] {
            s.groups.insert(
                g.into(),
                GroupKey {
                    key: "k".into(),
                    strategy: Some(Strategy::FixedWindow(FixedWindowOptions {
                        limit: 10.0,
                        window_ms: WINDOW as f64,
                    })),
                    window: None,
                },
            );
        }
        s
    }

    /// A failover at 100 ms where the primary had counted `primary` and the replica `replica`.
    fn fault(primary: u64, replica: u64, lag: i64) -> FaultRecord {
        FaultRecord {
            name: "failover".into(),
            action: FaultAction::Failover,
            planned_at_ms: 100,
            at_us: Some(100_000),
            done_us: Some(200_000),
            server: None,
            workers: vec![],
            targets: vec![],
            error: None,
            failover: Some(FailoverRecord {
                primary_offset: 1000 + lag,
                replica_offset: 1000,
                keys: vec![KeyAtFailover {
                    key: "k".into(),
                    primary: Some((0, primary)),
                    replica: Some((0, replica)),
                }],
                paused_us: 100_000,
                switched_us: 200_000,
                resumed_us: 300_000,
                ..FailoverRecord::default()
            }),
        }
    }

    /// `n` admits (and then one denial) by `group`, from `t_ms` on.
    fn admits_from(group: &str, n: i64, t_ms: i64, deny: bool) -> WorkerHistory {
        let mut calls: Vec<_> = (0..n)
            .map(|i| check_ok(i as u64, t_ms + i, decision(true, 10, 0, WINDOW)))
            .collect();
        if deny {
            calls.push(check_ok(n as u64, t_ms + n, decision(false, 10, 0, WINDOW)));
        }
        history(group, 0, calls)
    }

    #[test]
    fn the_limit_plus_the_unreplicated_units_passes_and_one_more_fails() {
        // 6 admitted before; the replica had 4 of them: 2 lost, handed out again after.
        let before = admits_from("direct", 6, 10, false);
        let after = admits_from("service", 6, 400, true);
        let Ruling {
            verdict: v,
            summary,
            numbers: n,
        } = judge(&[&before, &after], &fault(6, 4, 300), Some(&snapshot()));
        assert_eq!(v, Verdict::Pass, "{summary}");
        assert_eq!(n["keys"][0]["bound"], 12);
        let after = admits_from("service", 7, 400, true);
        let Ruling {
            verdict: v,
            summary,
            ..
        } = judge(&[&before, &after], &fault(6, 4, 300), Some(&snapshot()));
        assert_eq!(v, Verdict::Fail, "{summary}");
        assert!(
            summary.contains("admitted 13") && summary.contains("bound 12 = limit 10 + 2"),
            "{summary}"
        );
    }

    #[test]
    fn counts_that_disagree_without_lag_are_not_trusted() {
        let a = admits_from("direct", 6, 10, true);
        let Ruling {
            verdict: v,
            summary,
            ..
        } = judge(&[&a], &fault(6, 4, 0), Some(&snapshot()));
        assert_eq!(v, Verdict::Unknown, "{summary}");
        assert!(summary.contains("not trusted"), "{summary}");
    }

    #[test]
    fn a_limit_never_reached_again_is_unknown() {
        let a = admits_from("direct", 3, 10, false);
        let Ruling {
            verdict: v,
            summary,
            ..
        } = judge(&[&a], &fault(3, 3, 0), Some(&snapshot()));
        assert_eq!(v, Verdict::Unknown, "{summary}");
        assert!(summary.contains("never reached"), "{summary}");
    }
}
