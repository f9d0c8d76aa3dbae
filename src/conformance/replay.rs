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
        // "Unsupported" skips the trial only before anything was answered: an engine that
        // served part of a timeline and then declines has left it, and that is a failure.
        if op == 0
            && let Detail::Error(BackendError::Unsupported(reason)) = &detail
        {
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
                let actual = session.check(&s.strategy, &s.key, op.now, op.cost).await;
                judge(actual, op.expect).map_err(|d| {
                    let inputs = format!(
                        "now={}, cost={}",
                        num::to_argv(op.now),
                        num::to_argv(op.cost)
                    );
                    diverged(i, s.ops.len(), inputs, d)
                })?;
            }
            Ok(s.ops.len())
        }
        Suite::TokenBudget(s) => {
            for (i, op) in s.ops.iter().enumerate() {
                let actual = session.debit(&s.options, &s.name, op.now, op.tokens).await;
                judge(actual, op.expect).map_err(|d| {
                    let inputs = format!(
                        "now={}, tokens={}",
                        num::to_argv(op.now),
                        num::to_argv(op.tokens)
                    );
                    diverged(i, s.ops.len(), inputs, d)
                })?;
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

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::backend::model::ModelSession;
    use crate::contract::vectors::VectorsFile;
    use crate::model::{LeaseConfig, Strategy, TokenBudgetOptions};

    /// The reference model, broken on purpose: it declines every check from op `declines_at` on.
    struct DeclinesMidway {
        model: ModelSession,
        served: usize,
        declines_at: usize,
    }

    #[async_trait]
    impl SuiteSession for DeclinesMidway {
        async fn check(
            &mut self,
            strategy: &Strategy,
            key: &str,
            now: f64,
            cost: f64,
        ) -> Result<Decision, BackendError> {
            if self.served == self.declines_at {
                return Err(BackendError::Unsupported("not this one".into()));
            }
            self.served += 1;
            self.model.check(strategy, key, now, cost).await
        }
        async fn debit(
            &mut self,
            o: &TokenBudgetOptions,
            k: &str,
            now: f64,
            t: f64,
        ) -> Result<Decision, BackendError> {
            self.model.debit(o, k, now, t).await
        }
        async fn lease_grant(
            &mut self,
            c: &LeaseConfig,
            cap: f64,
            at: f64,
        ) -> Result<(), BackendError> {
            self.model.lease_grant(c, cap, at).await
        }
        async fn lease_spend(
            &mut self,
            c: &LeaseConfig,
            now: f64,
            cost: f64,
        ) -> Result<SpendOutcome, BackendError> {
            self.model.lease_spend(c, now, cost).await
        }
    }

    fn a_rate_suite() -> Suite {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contract/golden-vectors.json");
        let file: VectorsFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        file.suites
            .into_iter()
            .find(|s| matches!(s, Suite::RateLimit(r) if r.ops.len() >= 3))
            .expect("the contract has a rate suite of 3 ops or more")
    }

    fn replay_declining_at(declines_at: usize) -> Result<usize, ReplayFailure> {
        let mut session = DeclinesMidway {
            model: ModelSession::default(),
            served: 0,
            declines_at,
        };
        let suite = a_rate_suite();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(replay(&mut session, &suite))
    }

    #[test]
    fn declining_the_first_op_is_a_skip() {
        assert!(matches!(
            replay_declining_at(0),
            Err(ReplayFailure::Unsupported(_))
        ));
    }

    #[test]
    fn declining_after_answering_part_of_a_timeline_is_a_failure() {
        match replay_declining_at(2) {
            Err(ReplayFailure::Diverged(d)) => {
                assert_eq!(d.op, 2);
                let text = d.to_string();
                assert!(
                    text.contains("diverged at op 2") && text.contains("not this one"),
                    "{text}"
                );
            }
            other => panic!("expected a divergence at op 2, got {other:?}"),
        }
    }
}
