//! A scenario's plots for `report.html`, from what the run left on disk: `result.json`'s
//! judgements and fault log, and the workers' histories. Nothing here judges; it only draws.

use std::path::Path;

use super::faults::FaultRecord;
use super::history::{self, CallOutcome, Op, Reply, WorkerHistory};
use super::runner::ScenarioResult;
use super::scenario::FaultAction;
use crate::report::html::{
    CallKind, CallSpan, FaultBand, Lane, ScenarioPlots, SlotsPlot, WindowCount, WindowPlot,
};

/// The section for one scenario; histories that cannot be read are left out of the plots.
pub fn scenario_plots(result: &ScenarioResult, dir: &Path) -> ScenarioPlots {
    let histories: Vec<WorkerHistory> = result
        .workers
        .iter()
        .filter_map(|w| w.get("history")?.as_str().map(|h| dir.join(h)))
        .filter_map(|path| history::read(&path).ok())
        .collect();
    let faults: Vec<FaultRecord> = result
        .faults
        .iter()
        .filter_map(|f| serde_json::from_value(f.clone()).ok())
        .collect();
    let verdict = if result.error.is_some() {
        "error".to_string()
    } else if result.skipped.is_some() {
        "skipped".to_string()
    } else {
        result.verdict.name().to_string()
    };
    let mut plots = ScenarioPlots {
        name: result.scenario.clone(),
        description: result.description.clone(),
        verdict,
        headline: result.headline(),
        judgements: result
            .judgements
            .iter()
            .map(|j| {
                (
                    j.assertion.clone(),
                    j.verdict.name().into(),
                    j.summary.clone(),
                )
            })
            .collect(),
        ..Default::default()
    };
    let Some(t0) = histories.iter().map(|h| h.t0_us).min() else {
        return plots;
    };
    let ms = |us: i64| (us - t0) as f64 / 1000.0;
    for (lane, h) in histories.iter().enumerate() {
        plots.lanes.push(Lane {
            label: h.label(),
            group: h.group.clone(),
        });
        for c in &h.calls {
            plots.calls.push(CallSpan {
                lane,
                start_ms: ms(c.invoke_us),
                end_ms: c.complete_us.map(ms),
                kind: kind(&c.outcome),
                admitted: c.decision().is_some_and(|d| d.allowed),
            });
        }
    }
    let last_call = plots
        .calls
        .iter()
        .map(|c| c.end_ms.unwrap_or(c.start_ms))
        .fold(0.0, f64::max);
    let last_fault = faults
        .iter()
        .filter_map(|f| f.done_us.or(f.at_us))
        .map(ms)
        .fold(0.0, f64::max);
    plots.span_ms = last_call.max(last_fault).max(1.0);
    plots.faults = bands(&faults, plots.span_ms, ms);
    plots.windows = result
        .judgements
        .iter()
        .filter_map(|j| window_plot(&j.assertion, &j.numbers))
        .collect();
    let ceiling = result
        .judgements
        .iter()
        .find(|j| j.assertion.starts_with("concurrency"))
        .and_then(|j| j.numbers.get("ceiling")?.as_f64());
    let held = slots_held(&histories);
    if !held.is_empty() {
        plots.slots = Some(SlotsPlot {
            held: held.into_iter().map(|(t, n)| (ms(t), n as f64)).collect(),
            ceiling,
        });
    }
    plots
}

/// Admits per window of a cap or budget judgement, with the bound each window is held to:
/// `limit + slack` for a cap; for a budget, the crossing debit may overshoot (`budget + largest
/// debit - 1`).
fn window_plot(assertion: &str, numbers: &serde_json::Value) -> Option<WindowPlot> {
    let per = numbers.get("perWindow")?.as_array()?;
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64());
    let budget = num(numbers, "budget");
    let limit = num(numbers, "limit").or(budget);
    let slack = num(numbers, "slack").unwrap_or(0.0);
    let windows = per
        .iter()
        .map(|w| {
            let admitted = num(w, "admitted")
                .or(num(w, "admittedTokens"))
                .unwrap_or(0.0);
            let possibly = num(w, "possiblyAdmitted").unwrap_or(admitted);
            let bound = match (budget, num(w, "largestDebit")) {
                (Some(b), Some(largest)) if largest > 0.0 => Some(b + largest - 1.0),
                _ => limit.map(|l| l + slack),
            };
            WindowCount {
                admitted,
                possibly,
                over: bound.is_some_and(|b| admitted > b),
            }
        })
        .collect();
    Some(WindowPlot {
        assertion: assertion.to_owned(),
        limit,
        bound: limit
            .filter(|_| budget.is_none() && slack > 0.0)
            .map(|l| l + slack),
        windows,
    })
}

fn kind(outcome: &CallOutcome) -> CallKind {
    match outcome {
        CallOutcome::Ok(Reply::Decision { decision } | Reply::Admit { decision, .. }) => {
            if decision.allowed {
                CallKind::Ok
            } else {
                CallKind::Denied
            }
        }
        CallOutcome::Ok(Reply::Grant { capacity, .. }) if *capacity <= 0 => CallKind::Denied,
        CallOutcome::Ok(Reply::NeedsRefresh) => CallKind::Denied,
        CallOutcome::Ok(_) => CallKind::Ok,
        CallOutcome::Fail { .. } => CallKind::Fail,
        CallOutcome::Indeterminate { .. } => CallKind::Indeterminate,
    }
}

/// When each fault was in force: a pause until its resume, a killed server until the end, a
/// Redis restart until Redis answered again, a failover until the old primary woke, a network fault until its heal, a killed worker
/// for an instant.
fn bands(faults: &[FaultRecord], span_ms: f64, ms: impl Fn(i64) -> f64) -> Vec<FaultBand> {
    let mut out = Vec::new();
    for f in faults {
        let Some(at) = f.at_us else { continue };
        let to = match f.action {
            FaultAction::SigcontWorkers => continue,
            FaultAction::SigstopWorkers => faults
                .iter()
                .filter(|r| r.action == FaultAction::SigcontWorkers)
                .filter_map(|r| r.at_us)
                .filter(|t| *t >= at)
                .min()
                .map_or(span_ms, &ms),
            FaultAction::SigkillServer => span_ms,
            // From the frozen primary to the stale one waking.
            FaultAction::Failover => f.failover.as_ref().map_or(ms(at), |r| ms(r.resumed_us)),
            FaultAction::RestartRedis | FaultAction::MigrateSlot => f.done_us.map_or(ms(at), &ms),
            FaultAction::SigkillWorkers => ms(at),
            // A heal ends its network fault's band; it is not a band of its own.
            FaultAction::Heal => continue,
            FaultAction::Delay
            | FaultAction::DropReplies
            | FaultAction::Blackhole
            | FaultAction::Reset
            | FaultAction::Partition
            | FaultAction::NetnsPartition => crate::battle::faults::window_of(faults, &f.name)
                .and_then(|(_, end)| end)
                .map_or(span_ms, &ms),
        };
        let what = if f.targets.is_empty() {
            String::new()
        } else {
            format!(": {}", f.targets.join(", "))
        };
        out.push(FaultBand {
            from_ms: ms(at),
            to_ms: to,
            label: format!("{} ({:?}){what}", f.name, f.action),
        });
    }
    out
}

/// Slots held over time as workers saw them: from a granted admit's completion to its release's
/// invoke (or the worker's last event). `(epoch µs, held)` at each change.
fn slots_held(histories: &[WorkerHistory]) -> Vec<(i64, i64)> {
    let mut events: Vec<(i64, i64)> = Vec::new();
    for h in histories {
        let last = h.calls.iter().map(|c| c.end_us()).max().unwrap_or(h.t0_us);
        for (i, c) in h.calls.iter().enumerate() {
            let CallOutcome::Ok(Reply::Admit {
                decision, lease_id, ..
            }) = &c.outcome
            else {
                continue;
            };
            if !decision.allowed || lease_id.is_empty() {
                continue;
            }
            let release = h.calls[i + 1..]
                .iter()
                .find(|l| matches!(&l.op, Op::Release { lease_id: id } if id == lease_id))
                .map_or(last, |l| l.invoke_us);
            events.push((c.end_us(), 1));
            events.push((release.max(c.end_us()), -1));
        }
    }
    events.sort_by_key(|&(t, d)| (t, d));
    let mut held = 0;
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (t, d) in events {
        held += d;
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = held,
            _ => out.push((t, held)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn red_windows_follow_the_checkers_bound_not_the_bare_limit() {
        // A budget: the one crossing debit may overshoot; a debit after the budget was full may not.
        let budget = json!({"budget": 200, "perWindow": [
            {"admittedTokens": 201, "largestDebit": 5, "possiblyAdmitted": 201},
            {"admittedTokens": 210, "largestDebit": 5, "possiblyAdmitted": 210},
        ]});
        let p = super::window_plot("budget#0", &budget).unwrap();
        assert_eq!(
            p.windows.iter().map(|w| w.over).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(p.bound, None);
        // A cap with slack: over only past limit + slack, and the bound is drawn.
        let cap = json!({"limit": 20, "slack": 12, "perWindow": [
            {"admitted": 23, "possiblyAdmitted": 23},
            {"admitted": 33, "possiblyAdmitted": 34},
        ]});
        let p = super::window_plot("cap#0", &cap).unwrap();
        assert_eq!(
            p.windows.iter().map(|w| w.over).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!((p.limit, p.bound), (Some(20.0), Some(32.0)));
        assert!(super::window_plot("renewed#0", &json!({"ttlMs": 5})).is_none());
    }
}
