//! Budget: per window (by `resetAt`), a debit is admitted only while the meter is under budget
//! before it, so only the crossing debit may overshoot.
//!
//! From the histories alone: the admitted total minus the largest admitted debit must stay under
//! the budget (the best order puts the largest debit last); at most one admit may report
//! `remaining = 0` (the crossing one); `remaining` strictly falls, so two admits reporting the
//! same positive value are a lost update; and a window that denied must have reached the budget.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Ruling, Verdict, at};
use crate::battle::history::{CallOutcome, Op, Reply, WorkerHistory};

#[derive(Default)]
struct Window {
    admitted: u64,
    largest: u64,
    possible: u64,
    denied: u64,
    denied_with_room: Vec<String>,
    by_remaining: BTreeMap<i64, Vec<String>>,
}

pub fn judge(histories: &[&WorkerHistory], budget: u64, tolerance: u64) -> Ruling {
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    let mut lost: Vec<super::Lost> = Vec::new();
    let mut failed = 0u64;
    for h in histories {
        for c in &h.calls {
            let Op::Debit { tokens } = c.op else { continue };
            match &c.outcome {
                CallOutcome::Ok(Reply::Decision { decision: d }) => {
                    let w = windows.entry(d.reset_at).or_default();
                    if d.allowed {
                        w.admitted += tokens;
                        w.largest = w.largest.max(tokens);
                        w.by_remaining
                            .entry(d.remaining)
                            .or_default()
                            .push(at(h, c.seq));
                    } else {
                        w.denied += 1;
                        if d.remaining > 0 {
                            w.denied_with_room.push(format!(
                                "{} (remaining={})",
                                at(h, c.seq),
                                d.remaining
                            ));
                        }
                    }
                }
                CallOutcome::Ok(_) => {}
                CallOutcome::Fail { .. } => failed += 1,
                CallOutcome::Indeterminate { .. } => lost.push(super::Lost::of(c, tokens)),
            }
        }
    }
    let keys: Vec<i64> = windows.keys().copied().collect();
    for (i, key) in keys.iter().enumerate() {
        let prev_end = if i == 0 { i64::MIN } else { keys[i - 1] };
        let w = windows.get_mut(key).expect("key from the map");
        w.possible = super::possible_in_window(&lost, prev_end, *key);
    }

    let mut violations = Vec::new();
    let mut leaning = Vec::new();
    let mut overshoot = 0u64;
    for (key, w) in &windows {
        overshoot = overshoot.max(w.admitted.saturating_sub(budget));
        if w.admitted > 0 && w.admitted - w.largest >= budget {
            violations.push(format!(
                "window resetAt={key}: admitted {} tokens; even with the largest debit ({}) last, \
                 {} were admitted before it, not under budget {budget} (overshoot {})",
                w.admitted,
                w.largest,
                w.admitted - w.largest,
                w.admitted - budget
            ));
        }
        if let Some(zero) = w.by_remaining.get(&0)
            && zero.len() > 1
        {
            violations.push(format!(
                "window resetAt={key}: {} debits admitted at or past the budget (remaining=0: {}); \
                 only the crossing one may be",
                zero.len(),
                zero.join(", ")
            ));
        }
        for (remaining, who) in w.by_remaining.range(1..) {
            if who.len() > 1 {
                violations.push(format!(
                    "window resetAt={key}: lost update: remaining={remaining} reported by {} admits ({})",
                    who.len(),
                    who.join(", ")
                ));
            }
        }
        if !w.denied_with_room.is_empty() {
            violations.push(format!(
                "window resetAt={key}: denied with budget left: {}",
                w.denied_with_room.join(", ")
            ));
        }
        if w.denied > 0 {
            if w.admitted + w.possible < budget {
                violations.push(format!(
                    "window resetAt={key}: denied {} debits after admitting only {} of budget {budget}",
                    w.denied, w.admitted
                ));
            } else if w.admitted < budget {
                leaning.push(format!(
                    "window resetAt={key}: {} admitted, reaching {budget} only with indeterminate debits",
                    w.admitted
                ));
            }
        }
    }
    let indeterminate = lost.len() as u64;
    let numbers = json!({
        "budget": budget,
        "windows": windows.len(),
        "admittedTokens": windows.values().map(|w| w.admitted).sum::<u64>(),
        "denied": windows.values().map(|w| w.denied).sum::<u64>(),
        "failed": failed,
        "indeterminate": indeterminate,
        "overshoot": overshoot,
        "perWindow": windows.iter().map(|(k, w)| json!({
            "resetAt": k,
            "admittedTokens": w.admitted,
            "largestDebit": w.largest,
            "possiblyAdmitted": w.admitted + w.possible,
            "denied": w.denied,
        })).collect::<Vec<_>>(),
    });
    if !violations.is_empty() {
        return Ruling::new(
            Verdict::Fail,
            violations[..violations.len().min(3)].join("; "),
            numbers,
        );
    }
    if windows.values().all(|w| w.admitted == 0) {
        return Ruling::new(
            Verdict::Unknown,
            "no debit was admitted: the assertion was not exercised".into(),
            numbers,
        );
    }
    let totals = format!(
        "{} windows, overshoot {overshoot} (only crossing debits), {} denied, {failed} failed, \
         {indeterminate} indeterminate",
        windows.len(),
        numbers["denied"]
    );
    match leaning.first() {
        None => Ruling::new(Verdict::Pass, totals, numbers),
        Some(l) if indeterminate <= tolerance => Ruling::new(
            Verdict::Pass,
            format!("{totals}; consistent if the indeterminate calls went right ({l})"),
            numbers,
        ),
        Some(l) => Ruling::new(
            Verdict::Unknown,
            format!(
                "{totals}; too many indeterminate calls to decide ({indeterminate} > {tolerance}): {l}"
            ),
            numbers,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battle::checker::testkit::*;
    use crate::battle::history::{Call, Op};

    fn debit(seq: u64, tokens: u64, allowed: bool, remaining: i64) -> Call {
        call(
            seq,
            Op::Debit { tokens },
            seq as i64,
            Some(seq as i64 + 1),
            CallOutcome::Ok(Reply::Decision {
                decision: decision(allowed, 10, remaining, 1000),
            }),
        )
    }

    fn run(calls: Vec<Call>) -> Ruling {
        let h = history("debits", 0, calls);
        judge(&[&h], 10, 1)
    }

    #[test]
    fn crossing_debit_may_overshoot() {
        // used: 4, 8, 13 (crossing, admitted), then denied.
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(vec![
            debit(1, 4, true, 6),
            debit(2, 4, true, 2),
            debit(3, 5, true, 0),
            debit(4, 1, false, 0),
        ]);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["overshoot"], 3);
    }

    #[test]
    fn a_second_debit_past_the_budget_fails() {
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(vec![
            debit(1, 4, true, 6),
            debit(2, 4, true, 2),
            debit(3, 5, true, 0),
            debit(4, 5, true, 0),
        ]);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("admitted 18 tokens"), "{msg}");
        assert!(msg.contains("overshoot 8"), "{msg}");
        assert!(
            msg.contains("2 debits admitted at or past the budget"),
            "{msg}"
        );
    }

    #[test]
    fn lost_update_and_early_denial_fail() {
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(vec![
            debit(1, 4, true, 6),
            debit(2, 4, true, 6),
            debit(3, 1, false, 2),
        ]);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("lost update: remaining=6"), "{msg}");
        assert!(msg.contains("denied with budget left"), "{msg}");
    }

    #[test]
    fn denial_before_the_budget_is_used_fails_unless_a_lost_debit_explains_it() {
        let calls = vec![debit(1, 4, true, 6), debit(3, 1, false, 0)];
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(calls.clone());
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("denied 1 debits after admitting only 4 of budget 10"),
            "{msg}"
        );
        let mut with_lost = calls;
        with_lost.push(call(
            2,
            Op::Debit { tokens: 6 },
            2,
            Some(3),
            CallOutcome::Indeterminate {
                error: "timed out".into(),
            },
        ));
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(with_lost);
        assert_eq!(v, Verdict::Pass, "{msg}");
    }
}
