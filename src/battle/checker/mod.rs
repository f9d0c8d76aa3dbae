//! The checker: judges a battle from the recorded histories and the fault log alone.
//!
//! Like Jepsen's checkers it never asks the system under test what happened. Counts per window
//! are attributed by the decision's `resetAt` (the store's window, not a worker's clock); a call
//! that ended indeterminate (timeout, lost connection, worker killed mid-call) may or may not
//! have taken effect, so it widens the bounds instead of being dropped. Each assertion yields
//! a verdict with the numbers behind it:
//! - `pass`: the assertion holds for every way the indeterminate calls could have gone, or for
//!   some way while leaning on no more indeterminate calls than the assertion tolerates;
//! - `fail`: it holds for none;
//! - `unknown`: only too many indeterminate calls (or a fault that did not happen) could save it.

mod budget;
mod cap;
pub mod cluster_keys;
mod failover;
mod family;
mod holds;
mod liveness;
mod skew;
pub mod store;

pub use cluster_keys::{KeyFinding, ScriptAudit};
pub use family::ExecFacts;
pub use holds::granted_lease_ms;
pub use store::{GroupKey, StoreSnapshot, StoredKey};

use serde::Serialize;

use super::faults::FaultRecord;
use super::history::WorkerHistory;
use super::scenario::{Assertion, FaultAction, ScenarioPlan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Pass,
    Unknown,
    Fail,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Unknown => "unknown",
            Verdict::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One assertion's verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    /// `cap#0`, `concurrency#2`: the assertion's kind and index in the scenario.
    pub assertion: String,
    pub verdict: Verdict,
    /// One line that says what was expected and what was seen.
    pub summary: String,
    pub numbers: serde_json::Value,
}

/// Judges every assertion of `plan`.
pub fn judge(
    plan: &ScenarioPlan,
    histories: &[WorkerHistory],
    faults: &[FaultRecord],
) -> Vec<Judgement> {
    judge_with_store(plan, histories, faults, None)
}

/// Judges every assertion of `plan`, with the store as the run left it; with a snapshot,
/// `hygiene` is judged too, after every scenario.
pub fn judge_with_store(
    plan: &ScenarioPlan,
    histories: &[WorkerHistory],
    faults: &[FaultRecord],
    store: Option<&StoreSnapshot>,
) -> Vec<Judgement> {
    judge_all(plan, histories, faults, store, None)
}

/// Every assertion of `plan`; `exec` is the engine an exec scenario ran against.
pub fn judge_all(
    plan: &ScenarioPlan,
    histories: &[WorkerHistory],
    faults: &[FaultRecord],
    store: Option<&StoreSnapshot>,
    exec: Option<&ExecFacts>,
) -> Vec<Judgement> {
    let mut judgements: Vec<Judgement> = plan
        .assertions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let label = format!("{}#{i}", a.kind());
            let Ruling {
                verdict,
                summary,
                numbers,
            } = judge_one(plan, a, histories, faults, store, exec);
            Judgement {
                assertion: label,
                verdict,
                summary,
                numbers,
            }
        })
        .collect();
    if let Some(snapshot) = store {
        let Ruling {
            verdict,
            summary,
            numbers,
        } = store::judge_hygiene(snapshot);
        judgements.push(Judgement {
            assertion: "hygiene".into(),
            verdict,
            summary,
            numbers,
        });
    }
    judgements
}

fn no_store() -> Ruling {
    Ruling::new(
        Verdict::Unknown,
        "this check reads the store after the run, and no snapshot was taken".into(),
        serde_json::json!({}),
    )
}

/// The scenario's verdict: the worst of its assertions.
pub fn overall(judgements: &[Judgement]) -> Verdict {
    judgements
        .iter()
        .map(|j| j.verdict)
        .max()
        .unwrap_or(Verdict::Unknown)
}

/// What one assertion concludes: its verdict, the one-line summary, and the numbers behind it.
#[derive(Debug, Clone)]
pub struct Ruling {
    pub verdict: Verdict,
    pub summary: String,
    pub numbers: serde_json::Value,
}

impl Ruling {
    fn new(verdict: Verdict, summary: String, numbers: serde_json::Value) -> Ruling {
        Ruling {
            verdict,
            summary,
            numbers,
        }
    }
}

fn judge_one(
    plan: &ScenarioPlan,
    a: &Assertion,
    histories: &[WorkerHistory],
    faults: &[FaultRecord],
    store: Option<&StoreSnapshot>,
    exec: Option<&ExecFacts>,
) -> Ruling {
    let no_engine = || {
        Ruling::new(
            Verdict::Unknown,
            "this check judges an exec-door engine, and the run had none (battle --adapter)".into(),
            serde_json::json!({}),
        )
    };
    match a {
        Assertion::FamilyCap {
            groups,
            min_saturated,
        } => match exec {
            Some(facts) => {
                family::judge_family_cap(&select(histories, groups), faults, facts, *min_saturated)
            }
            None => no_engine(),
        },
        Assertion::AdmitsAgain { group } => match exec {
            Some(facts) => family::judge_admits_again(
                &histories.iter().collect::<Vec<_>>(),
                group,
                faults,
                facts,
            ),
            None => no_engine(),
        },
        Assertion::ClusterKeys {} => match store.and_then(|s| s.scripts.as_ref()) {
            Some(audit) => cluster_keys::judge(audit, &select(histories, &[])),
            None => Ruling::new(
                Verdict::Unknown,
                "this check watches the store's script calls, and nothing was watched".into(),
                serde_json::json!({}),
            ),
        },
        Assertion::CountedOnce { groups } => match store {
            Some(s) => store::judge_counted_once(&select(histories, groups), s),
            None => no_store(),
        },
        Assertion::StoreDown { fault, groups } => match find_fault(faults, fault) {
            Ok((f, _)) => store::judge_store_down(
                &select(histories, groups),
                faults,
                f,
                plan.topology.fail.unwrap_or_default(),
            ),
            Err(o) => o,
        },
        Assertion::FailoverBound { fault, groups } => match find_fault(faults, fault) {
            Ok((f, _)) => failover::judge(&select(histories, groups), f, store),
            Err(o) => o,
        },
        Assertion::SkewBound { groups, skew_ms } => {
            let selected = select(histories, groups);
            let strategy = store.and_then(|s| {
                selected
                    .iter()
                    .find_map(|h| s.groups.get(&h.group).and_then(|g| g.strategy.as_ref()))
            });
            skew::judge(&selected, strategy, *skew_ms)
        }
        Assertion::Cap {
            groups,
            limit,
            per,
            exact,
            slack,
            min_windows,
            distinct_remaining,
            window_ms,
            max_indeterminate,
        } => {
            let selected = select(histories, groups);
            let tolerance = max_indeterminate.unwrap_or(selected.len() as u64);
            cap::judge(
                &selected,
                &cap::CapRule {
                    limit: *limit,
                    per: *per,
                    exact: *exact,
                    slack: *slack,
                    min_windows: *min_windows,
                    distinct_remaining: *distinct_remaining,
                    window_ms: *window_ms,
                    max_indeterminate: tolerance,
                },
            )
        }
        Assertion::Budget {
            groups,
            budget,
            max_indeterminate,
        } => {
            let selected = select(histories, groups);
            let tolerance = max_indeterminate.unwrap_or(selected.len() as u64);
            budget::judge(&selected, *budget, tolerance)
        }
        Assertion::Concurrency {
            groups,
            ceiling,
            ttl_ms,
            min_admits,
        } => holds::judge_concurrency(&select(histories, groups), *ceiling, *ttl_ms, *min_admits),
        Assertion::Reclaim {
            fault,
            groups,
            slots,
            margin_ms,
        } => match find_fault(faults, fault) {
            Ok((f, at)) => {
                let bound = holds::ReclaimBound {
                    lease_ms: granted_lease_ms(
                        histories.iter().filter(|h| f.workers.contains(&h.label())),
                    ),
                    sweep_ms: plan.topology.sweep_ms(),
                    margin_ms: *margin_ms,
                };
                holds::judge_reclaim(&select(histories, groups), f, at, *slots, &bound)
            }
            Err(o) => o,
        },
        Assertion::Renewed {
            groups,
            ttl_ms,
            min_hold_ms,
        } => holds::judge_renewed(&select(histories, groups), *ttl_ms, *min_hold_ms),
        Assertion::LostAfterPause { fault, group } => match find_fault(faults, fault) {
            Ok((f, at)) => {
                let resumed = faults
                    .iter()
                    .filter(|r| r.action == FaultAction::SigcontWorkers)
                    .filter_map(|r| r.at_us)
                    .filter(|t| *t > at)
                    .min();
                holds::judge_lost_after_pause(
                    &select(histories, std::slice::from_ref(group)),
                    f,
                    at,
                    resumed,
                    plan.topology.sweep_ms(),
                )
            }
            Err(o) => o,
        },
        Assertion::Failover { fault, groups } => match find_fault(faults, fault) {
            Ok((f, at)) => liveness::judge_failover(&select(histories, groups), f, at),
            Err(o) => o,
        },
        Assertion::Resumes {
            fault,
            groups,
            within_ms,
        } => match find_fault(faults, fault) {
            Ok((f, at)) => liveness::judge_resumes(
                &select(histories, groups),
                f,
                f.done_us.unwrap_or(at),
                *within_ms,
            ),
            Err(o) => o,
        },
    }
}

/// The histories of the named groups (every group when `groups` is empty).
fn select<'a>(histories: &'a [WorkerHistory], groups: &[String]) -> Vec<&'a WorkerHistory> {
    histories
        .iter()
        .filter(|h| groups.is_empty() || groups.contains(&h.group))
        .collect()
}

/// The fault called `name` and when it happened, or the `unknown` verdict saying why not.
fn find_fault<'a>(faults: &'a [FaultRecord], name: &str) -> Result<(&'a FaultRecord, i64), Ruling> {
    let Some(f) = faults.iter().find(|f| f.name == name) else {
        return Err(Ruling::new(
            Verdict::Unknown,
            format!("fault `{name}` was never carried out (the run ended before it?)"),
            serde_json::json!({ "fault": name }),
        ));
    };
    match f.at_us {
        Some(at) => Ok((f, at)),
        None => Err(Ruling::new(
            Verdict::Unknown,
            format!(
                "fault `{name}` could not be carried out: {}",
                f.error.as_deref().unwrap_or("no reason recorded")
            ),
            serde_json::json!({ "fault": name }),
        )),
    }
}

/// A call whose effect is unknown, and when it could have taken effect.
#[derive(Debug, Clone, Copy)]
struct Lost {
    invoke_ms: i64,
    /// `i64::MAX` when the call never completed (its worker was killed mid-call).
    complete_ms: i64,
    units: u64,
}

impl Lost {
    fn of(c: &super::history::Call, units: u64) -> Lost {
        Lost {
            invoke_ms: c.invoke_us / 1000,
            complete_ms: c.complete_us.map_or(i64::MAX, |t| t / 1000),
            units,
        }
    }
}

/// The units of indeterminate calls that may belong to the window ending at `end`: a call can
/// only have landed in a window it overlaps, i.e. one ending after its invoke whose predecessor
/// (ending at `prev_end`) ended before it completed.
fn possible_in_window(lost: &[Lost], prev_end: i64, end: i64) -> u64 {
    lost.iter()
        .filter(|l| l.invoke_ms < end && l.complete_ms >= prev_end)
        .map(|l| l.units)
        .sum()
}

/// Milliseconds from `from_us` to `to_us`, for messages.
fn ms_between(from_us: i64, to_us: i64) -> f64 {
    ((to_us - from_us) as f64 / 1000.0 * 10.0).round() / 10.0
}

/// A call's place in a history, for messages: `racers[3] call 17`.
fn at(h: &WorkerHistory, seq: u64) -> String {
    format!("{} call {seq}", h.label())
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Builders for synthetic histories.

    use crate::battle::history::{Call, CallOutcome, Op, Reply, WorkerHistory};
    use crate::model::Decision;

    pub fn history(group: &str, index: u32, calls: Vec<Call>) -> WorkerHistory {
        WorkerHistory {
            group: group.into(),
            index,
            pid: 1000 + index,
            t0_us: 0,
            calls,
            finished: true,
        }
    }

    pub fn decision(allowed: bool, limit: i64, remaining: i64, reset_at: i64) -> Decision {
        Decision {
            allowed,
            limit,
            remaining,
            reset_at,
            retry_after_ms: if allowed { 0 } else { 10 },
        }
    }

    /// A call from `t0` to `t1` ms.
    pub fn call(seq: u64, op: Op, t0_ms: i64, t1_ms: Option<i64>, outcome: CallOutcome) -> Call {
        Call {
            seq,
            op,
            server: "redis".into(),
            invoke_us: t0_ms * 1000,
            complete_us: t1_ms.map(|t| t * 1000),
            outcome,
        }
    }

    pub fn check_ok(seq: u64, t_ms: i64, d: Decision) -> Call {
        call(
            seq,
            Op::Check { cost: 1 },
            t_ms,
            Some(t_ms + 1),
            CallOutcome::Ok(Reply::Decision { decision: d }),
        )
    }

    pub fn check_lost(seq: u64, t_ms: i64) -> Call {
        call(
            seq,
            Op::Check { cost: 1 },
            t_ms,
            Some(t_ms + 1),
            CallOutcome::Indeterminate {
                error: "timed out".into(),
            },
        )
    }
}
