//! Golden vectors from timelines: every expectation is computed by the reference model.
//!
//! # The wall-clock rule
//! A Redis replay runs a timeline's ops in a few milliseconds of *wall* time, while the timeline
//! jumps through *logical* time (`now`). Redis expires keys in wall time, so a vector is only
//! portable when its expectation does not hinge on whether the key is still there:
//!
//! * For every rateLimit op the generator computes the decision against the stored state and
//!   with the key absent. When they differ, the op depends on the state written last, at logical
//!   time `t_w` with the expiry `E` the script set (`CheckOutcome::expiry_ms`); the timeline is
//!   rejected when `E < 1000` ms, because the key could expire in wall time during the replay.
//! * The generator also runs a second copy of the model that drops the key once it is logically
//!   expired (`now - t_w >= E`), as an engine with a logical clock would, while Redis still holds
//!   it. The timeline is rejected at the first op whose decision differs between the two copies.
//!   That covers "depends on a logically expired key" and also later ops that inherit a
//!   difference in the state left behind (harmless leftovers, like stale ring slots, pass).
//!
//! Token budgets and the lease spender keep no expiring store state, so the rule is theirs alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::CONTRACT_VERSION;
use super::timelines::{self, LeaseStep, LoadedTimelines, TimelineError};
use super::vectors::{
    DebitOp, LeaseEvent, LeaseSuite, RateLimitSuite, RateOp, SpendExpect, Suite, TokenBudgetSuite,
    VectorsFile,
};
use crate::model::{
    Decision, LeaseConfig, LeaseSpender, ModelError, RateState, SpendOutcome, TokenBudget,
};

/// Keys older than this could expire in wall time while a replay is still running.
pub const MIN_DEPENDENT_EXPIRY_MS: f64 = 1000.0;

/// Where timelines live and where the vectors go, relative to the repository root.
pub const DEFAULT_TIMELINES_DIR: &str = "suites/vectors";
pub const DEFAULT_OUTPUT: &str = "contract/golden-vectors.json";

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error("{}: suite `{suite}` op {op}: the model refused it: {source}", path.display())]
    Model {
        path: PathBuf,
        suite: String,
        op: usize,
        source: ModelError,
    },
    #[error(
        "{}: suite `{suite}` op {op} (now={now}) depends on the state written at now={written_at} \
         with expiry {expiry_ms} ms, but {reason}; move the op or change the options",
        path.display()
    )]
    WallClock {
        path: PathBuf,
        suite: String,
        op: usize,
        now: f64,
        written_at: f64,
        expiry_ms: f64,
        reason: &'static str,
    },
}

/// The text that names the generator inside the vectors file.
pub fn generated_from() -> String {
    format!(
        "tk-conform {} `contract vectors` from {DEFAULT_TIMELINES_DIR}/*.toml",
        env!("CARGO_PKG_VERSION")
    )
}

/// Loads every timeline in `dir` and generates the vectors file.
pub fn generate_dir(dir: &Path) -> Result<VectorsFile, GenerateError> {
    generate(&timelines::load_dir(dir)?)
}

pub fn generate(files: &[LoadedTimelines]) -> Result<VectorsFile, GenerateError> {
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut claim = |name: &str, path: &Path| match names.get(name) {
        Some(first) => Err(TimelineError::DuplicateName {
            name: name.to_owned(),
            first: first.clone(),
            second: path.to_owned(),
        }),
        None => {
            names.insert(name.to_owned(), path.to_owned());
            Ok(())
        }
    };
    let mut suites = Vec::new();
    for loaded in files {
        let path = &loaded.path;
        for t in &loaded.file.rate_limit {
            claim(&t.name, path)?;
            suites.push(Suite::RateLimit(rate_limit_suite(path, t)?));
        }
        for t in &loaded.file.token_budget {
            claim(&t.name, path)?;
            suites.push(Suite::TokenBudget(token_budget_suite(path, t)?));
        }
        for t in &loaded.file.lease {
            claim(&t.name, path)?;
            suites.push(Suite::Lease(lease_suite(path, t)?));
        }
    }
    Ok(VectorsFile {
        contract_version: CONTRACT_VERSION.to_owned(),
        generated_from: generated_from(),
        frozen: false,
        decision_fields: Decision::FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        suites,
    })
}

/// The bytes of `golden-vectors.json`: pretty JSON in struct order, one trailing newline.
pub fn render(vectors: &VectorsFile) -> String {
    let mut text = serde_json::to_string_pretty(vectors).expect("vectors always serialize");
    text.push('\n');
    text
}

fn invalid(path: &Path, suite: &str, message: String) -> TimelineError {
    TimelineError::Invalid {
        path: path.to_owned(),
        suite: suite.to_owned(),
        message,
    }
}

fn rate_limit_suite(
    path: &Path,
    t: &timelines::RateLimitTimeline,
) -> Result<RateLimitSuite, GenerateError> {
    let name = &t.name;
    t.strategy
        .validate()
        .map_err(|e| invalid(path, name, format!("strategy: {e}")))?;
    let mut ops = Vec::new();
    // What Redis holds during a replay (nothing expires in a few ms of wall time) ...
    let mut state: Option<RateState> = None;
    // ... and what an engine that expires keys in logical time holds.
    let mut logical: Option<RateState> = None;
    // (logical time of the last write, the expiry it set), for each.
    let mut last_write: Option<(f64, f64)> = None;
    let mut logical_write: Option<(f64, f64)> = None;
    for step in &t.ops {
        let times = timelines::expand_times(t.start, step.at, step.repeat, step.every)
            .map_err(|m| invalid(path, name, m.to_string()))?;
        for now in times {
            let index = ops.len();
            let model_error = |source| GenerateError::Model {
                path: path.to_owned(),
                suite: name.clone(),
                op: index,
                source,
            };
            let mut stored = state.clone();
            let outcome = t
                .strategy
                .check(&mut stored, now, step.cost)
                .map_err(model_error)?;
            let absent = t
                .strategy
                .check(&mut None, now, step.cost)
                .map_err(model_error)?;
            if let Some((written_at, expiry_ms)) = logical_write
                && now - written_at >= expiry_ms
            {
                logical = None;
                logical_write = None;
            }
            let logical_outcome = t
                .strategy
                .check(&mut logical, now, step.cost)
                .map_err(model_error)?;
            let answers = Answers {
                stored: outcome.decision,
                absent: absent.decision,
                logical: logical_outcome.decision,
            };
            if let Some(reason) = answers.wall_clock_violation(last_write) {
                let (written_at, expiry_ms) = last_write.unwrap_or((now, 0.0));
                return Err(GenerateError::WallClock {
                    path: path.to_owned(),
                    suite: name.clone(),
                    op: index,
                    now,
                    written_at,
                    expiry_ms,
                    reason,
                });
            }
            if let Some(expiry) = outcome.expiry_ms {
                last_write = Some((now, expiry));
            }
            if let Some(expiry) = logical_outcome.expiry_ms {
                logical_write = Some((now, expiry));
            }
            state = stored;
            ops.push(RateOp {
                now,
                cost: step.cost,
                expect: outcome.decision,
            });
        }
    }
    if ops.is_empty() {
        return Err(invalid(path, name, "no ops".into()).into());
    }
    Ok(RateLimitSuite {
        name: name.clone(),
        strategy: t.strategy,
        key: t.key.clone().unwrap_or_else(|| name.clone()),
        ops,
    })
}

const SHORT_EXPIRY: &str =
    "that expiry is under 1000 ms, so the key could expire in wall time during replay";
const LOGICALLY_EXPIRED: &str = "the key is logically expired by then, yet Redis would still hold it \
     during replay, and the two give different decisions";

/// One op's decision three ways: against what Redis holds, with the key absent, and against
/// what an engine that expires keys in logical time holds.
struct Answers {
    stored: Decision,
    absent: Decision,
    logical: Decision,
}

impl Answers {
    /// Why the expectation would not survive a replay in wall time, if it would not.
    /// `last_write` is `(now, expiry)` of the key's last write, as Redis saw it.
    fn wall_clock_violation(&self, last_write: Option<(f64, f64)>) -> Option<&'static str> {
        if let Some((_, expiry_ms)) = last_write
            && self.stored != self.absent
            && expiry_ms < MIN_DEPENDENT_EXPIRY_MS
        {
            return Some(SHORT_EXPIRY);
        }
        if self.stored != self.logical {
            return Some(LOGICALLY_EXPIRED);
        }
        None
    }
}

fn token_budget_suite(
    path: &Path,
    t: &timelines::TokenBudgetTimeline,
) -> Result<TokenBudgetSuite, GenerateError> {
    let name = &t.name;
    let meter =
        TokenBudget::new(t.options).map_err(|e| invalid(path, name, format!("options: {e}")))?;
    let mut state = None;
    let mut ops = Vec::new();
    for step in &t.ops {
        let times = timelines::expand_times(t.start, step.at, step.repeat, step.every)
            .map_err(|m| invalid(path, name, m.to_string()))?;
        for now in times {
            let expect = meter
                .debit(&mut state, now, step.tokens)
                .map_err(|source| GenerateError::Model {
                    path: path.to_owned(),
                    suite: name.clone(),
                    op: ops.len(),
                    source,
                })?;
            ops.push(DebitOp {
                now,
                tokens: step.tokens,
                expect,
            });
        }
    }
    if ops.is_empty() {
        return Err(invalid(path, name, "no ops".into()).into());
    }
    Ok(TokenBudgetSuite {
        name: name.clone(),
        options: t.options,
        ops,
    })
}

fn lease_suite(path: &Path, t: &timelines::LeaseTimeline) -> Result<LeaseSuite, GenerateError> {
    let name = &t.name;
    let config = LeaseConfig {
        limit: t.limit,
        ttl_ms: t.ttl_ms,
        window_coupled: t.window_coupled,
    };
    for (field, value) in [("limit", t.limit), ("ttlMs", t.ttl_ms)] {
        if !(value.is_finite() && value > 0.0) {
            return Err(
                invalid(path, name, format!("{field} must be positive, got {value}")).into(),
            );
        }
    }
    let mut spender = LeaseSpender::new(config);
    let mut events = Vec::new();
    for step in &t.events {
        match *step {
            LeaseStep::Grant {
                capacity,
                expires_at,
            } => {
                let expires_at = timelines::expand_times(t.start, expires_at, 1, 0.0)
                    .map_err(|m| invalid(path, name, format!("grant expiresAt: {m}")))?[0];
                if !(capacity.is_finite() && capacity >= 0.0) {
                    return Err(invalid(
                        path,
                        name,
                        format!("grant capacity must be a finite number >= 0, got {capacity}"),
                    )
                    .into());
                }
                spender.grant(capacity, expires_at);
                events.push(LeaseEvent::Grant {
                    capacity,
                    expires_at,
                });
            }
            LeaseStep::Spend {
                at,
                cost,
                repeat,
                every,
            } => {
                let times = timelines::expand_times(t.start, at, repeat, every)
                    .map_err(|m| invalid(path, name, m.to_string()))?;
                for now in times {
                    let outcome =
                        spender
                            .spend(now, cost)
                            .map_err(|source| GenerateError::Model {
                                path: path.to_owned(),
                                suite: name.clone(),
                                op: events.len(),
                                source,
                            })?;
                    let expect = match outcome {
                        SpendOutcome::Allowed(decision) => SpendExpect {
                            needs_refresh: false,
                            decision: Some(decision),
                        },
                        SpendOutcome::NeedsRefresh => SpendExpect {
                            needs_refresh: true,
                            decision: None,
                        },
                    };
                    events.push(LeaseEvent::Spend { now, cost, expect });
                }
            }
        }
    }
    if events.is_empty() {
        return Err(invalid(path, name, "no events".into()).into());
    }
    Ok(LeaseSuite {
        name: name.clone(),
        config,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(remaining: i64) -> Decision {
        Decision {
            allowed: true,
            limit: 5,
            remaining,
            reset_at: 2000,
            retry_after_ms: 0,
        }
    }

    #[test]
    fn an_op_that_does_not_depend_on_the_key_is_always_portable() {
        let same = Answers {
            stored: d(4),
            absent: d(4),
            logical: d(4),
        };
        assert_eq!(same.wall_clock_violation(Some((1000.0, 1.0))), None);
        assert_eq!(same.wall_clock_violation(None), None);
    }

    #[test]
    fn a_dependent_op_needs_a_write_that_lives_a_second() {
        let dependent = Answers {
            stored: d(3),
            absent: d(4),
            logical: d(3),
        };
        assert_eq!(
            dependent.wall_clock_violation(Some((1000.0, 999.0))),
            Some(SHORT_EXPIRY)
        );
        assert_eq!(dependent.wall_clock_violation(Some((1000.0, 1000.0))), None);
    }

    #[test]
    fn a_decision_that_differs_once_the_key_logically_expired_is_rejected() {
        let expired = Answers {
            stored: d(3),
            absent: d(4),
            logical: d(4),
        };
        assert_eq!(
            expired.wall_clock_violation(Some((1000.0, 5000.0))),
            Some(LOGICALLY_EXPIRED)
        );
        // Even when the key is absent now, a leftover difference inherited from an earlier
        // expiry counts.
        let inherited = Answers {
            stored: d(3),
            absent: d(3),
            logical: d(2),
        };
        assert_eq!(
            inherited.wall_clock_violation(Some((1000.0, 5000.0))),
            Some(LOGICALLY_EXPIRED)
        );
    }
}
