//! Cap: admitted units per window (attributed by `resetAt`) or per run, never above the limit
//! (plus a stated slack), and with `exact`, never below it in a window that denied (and some
//! window must have denied).

use std::collections::BTreeMap;

use serde_json::json;

use super::{Ruling, Verdict, at};
use crate::battle::history::{Call, CallOutcome, Op, Reply, WorkerHistory};
use crate::battle::scenario::CapScope;

pub struct CapRule {
    pub limit: u64,
    pub per: CapScope,
    pub exact: bool,
    pub slack: u64,
    pub min_windows: u64,
    pub distinct_remaining: bool,
    pub window_ms: Option<u64>,
    pub max_indeterminate: u64,
}

#[derive(Default)]
struct Window {
    admitted: u64,
    possible: u64,
    denied: u64,
    /// The smallest cost among denials: a denial of cost `c` proves `count > limit - c`.
    min_denied_cost: Option<u64>,
    /// `remaining` → the admits that reported it.
    by_remaining: BTreeMap<i64, Vec<String>>,
}

/// Units a decision-carrying call asked for, or `None` for calls that carry none.
fn cost(call: &Call) -> Option<u64> {
    match call.op {
        Op::Check { cost } | Op::Admit { cost } | Op::Spend { cost } => Some(cost),
        _ => None,
    }
}

pub fn judge(histories: &[&WorkerHistory], rule: &CapRule) -> Ruling {
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    let mut lost: Vec<super::Lost> = Vec::new();
    let (mut failed, mut malformed, mut stale) = (0u64, Vec::new(), 0u64);
    for h in histories {
        for c in &h.calls {
            let Some(units) = cost(c) else { continue };
            match &c.outcome {
                CallOutcome::Ok(Reply::Decision { decision } | Reply::Admit { decision, .. }) => {
                    let invoke_ms = c.invoke_us.div_euclid(1000);
                    let key = match (rule.per, rule.window_ms) {
                        (CapScope::Run, _) => 0,
                        // Admitted after the window it names had ended: it counts where it ran.
                        (CapScope::Window, Some(w))
                            if decision.allowed && decision.reset_at <= invoke_ms =>
                        {
                            stale += 1;
                            let w = w.max(1) as i64;
                            (invoke_ms.div_euclid(w) + 1) * w
                        }
                        (CapScope::Window, _) => decision.reset_at,
                    };
                    let w = windows.entry(key).or_default();
                    if decision.allowed {
                        if decision.remaining < 0 || decision.retry_after_ms != 0 {
                            malformed.push(format!("{} {decision}", at(h, c.seq)));
                        }
                        w.admitted += units;
                        w.by_remaining
                            .entry(decision.remaining)
                            .or_default()
                            .push(at(h, c.seq));
                    } else {
                        w.denied += 1;
                        w.min_denied_cost = Some(w.min_denied_cost.map_or(units, |m| m.min(units)));
                    }
                }
                CallOutcome::Ok(_) => {}
                CallOutcome::Fail { .. } => failed += 1,
                CallOutcome::Indeterminate { .. } => lost.push(super::Lost::of(c, units)),
            }
        }
    }
    // An indeterminate call may belong to any window it overlaps: the one ending after its
    // invoke, back to the window before it that ended before it completed.
    let keys: Vec<i64> = windows.keys().copied().collect();
    for (i, key) in keys.iter().enumerate() {
        let prev_end = if i == 0 { i64::MIN } else { keys[i - 1] };
        let w = windows.get_mut(key).expect("key from the map");
        w.possible = match rule.per {
            // One budget for the whole run: every unknown call may have counted against it.
            CapScope::Run => super::possible_in_window(&lost, i64::MIN, i64::MAX),
            _ => super::possible_in_window(&lost, prev_end, *key),
        };
    }

    let ceiling = rule.limit + rule.slack;
    let mut violations = Vec::new();
    let mut leaning = Vec::new();
    for (key, w) in &windows {
        let name = match rule.per {
            CapScope::Window => format!("window resetAt={key}"),
            CapScope::Run => "the run".to_string(),
        };
        let hi = w.admitted + w.possible;
        if w.admitted > ceiling {
            violations.push(format!(
                "{name}: admitted {} > limit {}{} (overshoot {})",
                w.admitted,
                rule.limit,
                slack_text(rule.slack),
                w.admitted - rule.limit
            ));
        } else if hi > ceiling {
            leaning.push(format!(
                "{name}: {} admitted + {} indeterminate",
                w.admitted, w.possible
            ));
        }
        if rule.exact
            && let Some(c) = w.min_denied_cost
        {
            let required = (rule.limit + 1).saturating_sub(c);
            if hi < required {
                violations.push(format!(
                    "{name}: denied {} calls after admitting only {} (expected exactly {} once \
                     denying; {} indeterminate)",
                    w.denied, w.admitted, rule.limit, w.possible
                ));
            } else if w.admitted < required {
                leaning.push(format!(
                    "{name}: {} admitted, reaching {} only with indeterminate calls",
                    w.admitted, rule.limit
                ));
            }
        }
        if rule.distinct_remaining {
            for (remaining, who) in &w.by_remaining {
                if who.len() > 1 {
                    violations.push(format!(
                        "{name}: lost update: remaining={remaining} granted {} times ({})",
                        who.len(),
                        who.join(", ")
                    ));
                }
            }
        }
    }
    for m in malformed.iter().take(3) {
        violations.push(format!("an allowed decision is malformed: {m}"));
    }
    // Exactness is shown only by a window that reached its limit and denied; without one a
    // target that lost or failed half its calls would pass unseen. Too little shown is not a
    // violation, though (a starved machine makes too few calls too): it is unknown.
    let mut shortfalls = Vec::new();
    if rule.exact && windows.values().all(|w| w.min_denied_cost.is_none()) {
        shortfalls.push(format!(
            "no window denied anything, so exactness was never exercised ({} admitted, limit {}, \
             {failed} failed, {} indeterminate)",
            windows.values().map(|w| w.admitted).sum::<u64>(),
            rule.limit,
            lost.len()
        ));
    }
    let exercised = windows.values().filter(|w| w.admitted > 0).count() as u64;
    if exercised < rule.min_windows {
        shortfalls.push(format!(
            "only {exercised} windows admitted anything; expected at least {}",
            rule.min_windows
        ));
    }

    let indeterminate = lost.len() as u64;
    let max_window = windows.values().map(|w| w.admitted).max().unwrap_or(0);
    let numbers = json!({
        "limit": rule.limit,
        "slack": rule.slack,
        "per": rule.per,
        "windows": windows.len(),
        "windowsExercised": exercised,
        "admitted": windows.values().map(|w| w.admitted).sum::<u64>(),
        "denied": windows.values().map(|w| w.denied).sum::<u64>(),
        "failed": failed,
        "indeterminate": indeterminate,
        "maxWindowAdmitted": max_window,
        "overshoot": max_window.saturating_sub(rule.limit),
        "staleDecisions": stale,
        "lostUpdates": windows.values()
            .flat_map(|w| w.by_remaining.values())
            .filter(|v| v.len() > 1)
            .count(),
        "perWindow": windows.iter().map(|(k, w)| json!({
            "resetAt": k,
            "admitted": w.admitted,
            "possiblyAdmitted": w.admitted + w.possible,
            "denied": w.denied,
        })).collect::<Vec<_>>(),
    });

    if !violations.is_empty() {
        let more = if violations.len() > 3 {
            format!(" (+{} more)", violations.len() - 3)
        } else {
            String::new()
        };
        return Ruling::new(
            Verdict::Fail,
            format!("{}{more}", violations[..violations.len().min(3)].join("; ")),
            numbers,
        );
    }
    if !shortfalls.is_empty() {
        return Ruling::new(
            Verdict::Unknown,
            format!("{}: not exercised", shortfalls.join("; ")),
            numbers,
        );
    }
    let stale_text = if stale > 0 {
        format!(", {stale} admitted after their window ended")
    } else {
        String::new()
    };
    let totals = format!(
        "max {max_window} admitted per {} (limit {}{}) over {} windows{stale_text}; {} denied, \
         {} failed, {indeterminate} indeterminate",
        match rule.per {
            CapScope::Window => "window",
            CapScope::Run => "run",
        },
        rule.limit,
        slack_text(rule.slack),
        windows.len(),
        numbers["denied"],
        failed,
    );
    if leaning.is_empty() {
        return Ruling::new(Verdict::Pass, totals, numbers);
    }
    if indeterminate <= rule.max_indeterminate {
        Ruling::new(
            Verdict::Pass,
            format!(
                "{totals}; consistent if the indeterminate calls went right ({})",
                leaning[0]
            ),
            numbers,
        )
    } else {
        Ruling::new(
            Verdict::Unknown,
            format!(
                "{totals}; too many indeterminate calls to decide ({indeterminate} > {}): {}",
                rule.max_indeterminate, leaning[0]
            ),
            numbers,
        )
    }
}

fn slack_text(slack: u64) -> String {
    if slack == 0 {
        String::new()
    } else {
        format!(" + slack {slack}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battle::checker::testkit::*;
    use crate::battle::history::Call;

    fn rule(limit: u64) -> CapRule {
        CapRule {
            limit,
            per: CapScope::Window,
            exact: true,
            slack: 0,
            min_windows: 1,
            distinct_remaining: true,
            window_ms: None,
            max_indeterminate: 2,
        }
    }

    /// Two workers race for a limit of `limit` in one window ending at 1000: `admits` grants
    /// (remaining counting down) and then denials.
    fn race(limit: i64, admits: i64, denials: i64) -> Vec<WorkerHistory> {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..admits {
            let call = check_ok(
                i as u64,
                10 + i,
                decision(true, limit, (limit - 1 - i).max(0), 1000),
            );
            if i % 2 == 0 {
                a.push(call)
            } else {
                b.push(call)
            }
        }
        for i in 0..denials {
            b.push(check_ok(
                100 + i as u64,
                100 + i,
                decision(false, limit, 0, 1000),
            ));
        }
        vec![history("racers", 0, a), history("racers", 1, b)]
    }

    fn run(hs: &[WorkerHistory], rule: &CapRule) -> Ruling {
        let refs: Vec<&WorkerHistory> = hs.iter().collect();
        judge(&refs, rule)
    }

    #[test]
    fn exact_cap_passes() {
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(&race(10, 10, 5), &rule(10));
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["admitted"], 10);
        assert_eq!(n["overshoot"], 0);
    }

    #[test]
    fn overshoot_fails_with_the_numbers() {
        let mut hs = race(10, 10, 5);
        // Two extra grants, the second reporting a remaining already seen (a lost update).
        hs[0]
            .calls
            .push(check_ok(50, 60, decision(true, 10, 0, 1000)));
        hs[1]
            .calls
            .push(check_ok(51, 61, decision(true, 10, 3, 1000)));
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("window resetAt=1000: admitted 12 > limit 10 (overshoot 2)"),
            "{msg}"
        );
        assert!(
            msg.contains("lost update: remaining=0 granted 2 times"),
            "{msg}"
        );
        assert!(msg.contains("racers[0] call 50"), "{msg}");
        assert_eq!(n["overshoot"], 2);
        assert_eq!(n["lostUpdates"], 2);
    }

    #[test]
    fn under_admission_in_a_saturated_window_fails() {
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&race(10, 7, 3), &rule(10));
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("denied 3 calls after admitting only 7"),
            "{msg}"
        );
    }

    #[test]
    fn unsaturated_window_is_not_held_to_exactness() {
        // Window 1000 saturates exactly; window 2000 admits 7 and never denies.
        let mut hs = race(10, 10, 2);
        for i in 0..7 {
            hs[0].calls.push(check_ok(
                200 + i,
                1500 + i as i64,
                decision(true, 10, 9 - i as i64, 2000),
            ));
        }
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Pass, "{msg}");
    }

    #[test]
    fn exactness_never_exercised_is_unknown() {
        // 7 admits and 3 failed calls, no denial: nothing shows the limit was reached (nor
        // that it was broken).
        let mut hs = race(10, 7, 0);
        for i in 0..3 {
            hs[1].calls.push(call(
                300 + i,
                Op::Check { cost: 1 },
                50,
                Some(51),
                CallOutcome::Fail {
                    error: "Internal: boom".into(),
                },
            ));
        }
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Unknown);
        assert!(
            msg.contains(
                "no window denied anything, so exactness was never exercised (7 admitted, \
                 limit 10, 3 failed, 0 indeterminate)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn indeterminate_calls_widen_the_lower_bound() {
        // 9 seen admits + 1 lost call that may have taken the 10th unit: consistent.
        let mut hs = race(10, 9, 3);
        hs[0].calls.push(check_lost(60, 50));
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert!(
            msg.contains("consistent if the indeterminate calls went right"),
            "{msg}"
        );
        assert_eq!(n["indeterminate"], 1);
        // The same with more lost calls than tolerated is undecidable.
        for i in 0..3 {
            hs[1].calls.push(check_lost(70 + i, 50));
        }
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(
            msg.contains("too many indeterminate calls to decide (4 > 2)"),
            "{msg}"
        );
    }

    #[test]
    fn a_lost_call_outside_the_window_does_not_count() {
        // Window one ends at 1000, window two at 2000; the lost call ran entirely in window two.
        let mut hs = race(10, 9, 3);
        hs[0]
            .calls
            .push(check_ok(80, 1500, decision(true, 10, 9, 2000)));
        hs[0].calls.push(check_lost(81, 1600));
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Fail, "{msg}");
        assert!(
            msg.contains("window resetAt=1000: denied 3 calls after admitting only 9"),
            "{msg}"
        );
    }

    #[test]
    fn a_call_cut_by_a_kill_may_belong_to_any_later_window() {
        let mut hs = race(10, 9, 3);
        // Invoked at 5 ms, never completed.
        hs[1].calls.push(call(
            90,
            Op::Check { cost: 1 },
            5,
            None,
            CallOutcome::Indeterminate {
                error: "died".into(),
            },
        ));
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &rule(10));
        assert_eq!(v, Verdict::Pass, "{msg}");
    }

    #[test]
    fn slack_and_min_windows() {
        let mut hs = Vec::new();
        for w in 0..5i64 {
            let calls = (0..12)
                .map(|i| {
                    check_ok(
                        (w * 100 + i) as u64,
                        w * 1000 + i,
                        decision(true, 10, 0, (w + 1) * 1000),
                    )
                })
                .collect();
            hs.push(history("leased", w as u32, calls));
        }
        let mut r = rule(10);
        r.exact = false;
        r.distinct_remaining = false;
        r.slack = 2;
        r.min_windows = 5;
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["overshoot"], 2);
        r.slack = 1;
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("admitted 12 > limit 10 + slack 1 (overshoot 2)"),
            "{msg}"
        );
        r.slack = 2;
        r.min_windows = 6;
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Unknown);
        assert!(
            msg.contains("only 5 windows admitted anything; expected at least 6"),
            "{msg}"
        );
    }

    #[test]
    fn credits_spent_after_their_window_count_where_they_ran() {
        // Window [0, 1000): 10 credits granted, 7 spent in it. Then the 3 left are spent at
        // 1100..1102 still naming resetAt 1000 (carried), next to 10 fresh ones of [1000, 2000).
        let mut calls: Vec<Call> = (0..7)
            .map(|i| check_ok(i, 10 + i as i64, decision(true, 10, 0, 1000)))
            .collect();
        calls
            .extend((0..3).map(|i| check_ok(20 + i, 1100 + i as i64, decision(true, 10, 0, 1000))));
        calls.extend(
            (0..10).map(|i| check_ok(40 + i, 1200 + i as i64, decision(true, 10, 0, 2000))),
        );
        let hs = vec![history("spenders", 0, calls)];
        let mut r = rule(10);
        r.exact = false;
        r.distinct_remaining = false;
        // By resetAt alone the carry is invisible…
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Pass, "{msg}");
        // …on the window grid it is an overshoot of the window it happened in.
        r.window_ms = Some(1000);
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("window resetAt=2000: admitted 13 > limit 10 (overshoot 3)"),
            "{msg}"
        );
        assert_eq!(n["staleDecisions"], 3);
    }

    #[test]
    fn per_run_scope_counts_everything_together() {
        // gcra-style: every resetAt differs, the run as a whole must admit exactly 4.
        let calls = (0..4)
            .map(|i| {
                check_ok(
                    i,
                    i as i64,
                    decision(true, 4, 3 - i as i64, 5000 + i as i64 * 7),
                )
            })
            .chain([check_ok(9, 20, decision(false, 4, 0, 5030))])
            .collect();
        let hs = vec![history("g", 0, calls)];
        let mut r = rule(4);
        r.per = CapScope::Run;
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["windows"], 1);
        r.limit = 3;
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = run(&hs, &r);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("the run: admitted 4 > limit 3"), "{msg}");
    }
}
