//! Replaying one vector suite against one backend session, op by op, stopping at the first op
//! whose answer differs: the rest of a timeline would run against a diverged state.

use std::fmt;

use crate::backend::{BackendError, SuiteSession};
use crate::contract::vectors::{LeaseEvent, SpendExpect, Suite};
use crate::model::{Decision, SpendOutcome, num};

/// Why a replay did not pass.
#[derive(Debug)]
pub enum ReplayFailure {
    /// The backend answered differently (or failed): the trial fails.
    Diverged(Box<Divergence>),
    /// The backend said mid-replay that it does not serve this: the trial is skipped.
    Unsupported(String),
}

/// The first op at which a backend left the golden timeline.
#[derive(Debug)]
pub struct Divergence {
    pub trial: String,
    /// 0-based index of the op (lease suites: of the event).
    pub op: usize,
    pub ops: usize,
    /// `now=..., cost=...` of the op, as sent.
    pub inputs: String,
    pub detail: Detail,
}

#[derive(Debug)]
pub enum Detail {
    Decision {
        expected: Decision,
        actual: Decision,
    },
    Spend {
        expected: SpendExpect,
        actual: SpendOutcome,
    },
    Error(BackendError),
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} diverged at op {} of {} ({})",
            self.trial, self.op, self.ops, self.inputs
        )?;
        match &self.detail {
            Detail::Decision { expected, actual } => {
                for (field, want, got) in expected.diff(actual) {
                    writeln!(f, "  {field}: expected {want}, actual {got}")?;
                }
                writeln!(f, "  expected {expected}")?;
                writeln!(f, "  actual   {actual}")?;
            }
            Detail::Spend { expected, actual } => {
                let want = match (&expected.needs_refresh, &expected.decision) {
                    (true, _) => "needsRefresh".to_owned(),
                    (false, Some(d)) => d.to_string(),
                    (false, None) => "a decision".to_owned(),
                };
                let got = match actual {
                    SpendOutcome::NeedsRefresh => "needsRefresh".to_owned(),
                    SpendOutcome::Allowed(d) => d.to_string(),
                };
                if let (Some(e), SpendOutcome::Allowed(a)) = (&expected.decision, actual) {
                    for (field, want, got) in e.diff(a) {
                        writeln!(f, "  {field}: expected {want}, actual {got}")?;
                    }
                } else {
                    writeln!(
                        f,
                        "  needsRefresh: expected {}, actual {}",
                        expected.needs_refresh,
                        matches!(actual, SpendOutcome::NeedsRefresh)
                    )?;
                }
                writeln!(f, "  expected {want}")?;
                writeln!(f, "  actual   {got}")?;
            }
            Detail::Error(e) => writeln!(f, "  {e}")?,
        }
        write!(
            f,
            "  (replay stopped: the rest of the timeline would run against a diverged state)"
        )
    }
}

/// Replays `suite` (already shifted by any clock offset) through `session`. Returns the number
/// of ops replayed.
pub async fn replay(session: &mut dyn SuiteSession, suite: &Suite) -> Result<usize, ReplayFailure> {
    let trial = suite.trial_name();
    let diverged = |op: usize, ops: usize, inputs: String, detail: Detail| {
        if let Detail::Error(BackendError::Unsupported(reason)) = &detail {
            return ReplayFailure::Unsupported(reason.clone());
        }
        ReplayFailure::Diverged(Box::new(Divergence {
            trial: trial.clone(),
            op,
            ops,
            inputs,
            detail,
        }))
    };
    match suite {
        Suite::RateLimit(s) => {
            for (i, op) in s.ops.iter().enumerate() {
                let inputs = format!(
                    "now={}, cost={}",
                    num::to_argv(op.now),
                    num::to_argv(op.cost)
                );
                let actual = session.check(&s.strategy, &s.key, op.now, op.cost).await;
                judge(actual, op.expect).map_err(|d| diverged(i, s.ops.len(), inputs, d))?;
            }
            Ok(s.ops.len())
        }
        Suite::TokenBudget(s) => {
            for (i, op) in s.ops.iter().enumerate() {
                let inputs = format!(
                    "now={}, tokens={}",
                    num::to_argv(op.now),
                    num::to_argv(op.tokens)
                );
                let actual = session.debit(&s.options, &s.name, op.now, op.tokens).await;
                judge(actual, op.expect).map_err(|d| diverged(i, s.ops.len(), inputs, d))?;
            }
            Ok(s.ops.len())
        }
        Suite::Lease(s) => {
            let n = s.events.len();
            for (i, event) in s.events.iter().enumerate() {
                match event {
                    LeaseEvent::Grant {
                        capacity,
                        expires_at,
                    } => {
                        let inputs = format!(
                            "grant capacity={}, expiresAt={}",
                            num::to_argv(*capacity),
                            num::to_argv(*expires_at)
                        );
                        session
                            .lease_grant(&s.config, *capacity, *expires_at)
                            .await
                            .map_err(|e| diverged(i, n, inputs, Detail::Error(e)))?;
                    }
                    LeaseEvent::Spend { now, cost, expect } => {
                        let inputs = format!(
                            "spend now={}, cost={}",
                            num::to_argv(*now),
                            num::to_argv(*cost)
                        );
                        let actual = session
                            .lease_spend(&s.config, *now, *cost)
                            .await
                            .map_err(|e| diverged(i, n, inputs.clone(), Detail::Error(e)))?;
                        let matches = match (&actual, expect.needs_refresh, &expect.decision) {
                            (SpendOutcome::NeedsRefresh, true, _) => true,
                            (SpendOutcome::Allowed(a), false, Some(e)) => a == e,
                            _ => false,
                        };
                        if !matches {
                            return Err(diverged(
                                i,
                                n,
                                inputs,
                                Detail::Spend {
                                    expected: expect.clone(),
                                    actual,
                                },
                            ));
                        }
                    }
                }
            }
            Ok(n)
        }
    }
}

/// One op's verdict: the backend's answer must be exactly the expected decision.
fn judge(actual: Result<Decision, BackendError>, expected: Decision) -> Result<(), Detail> {
    match actual {
        Ok(actual) if actual == expected => Ok(()),
        Ok(actual) => Err(Detail::Decision { expected, actual }),
        Err(e) => Err(Detail::Error(e)),
    }
}
