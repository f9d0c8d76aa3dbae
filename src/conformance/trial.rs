//! Trials: named units of a run, each passed, failed or skipped with a reason, run by
//! libtest-mimic (so `--list`, filters, `--exact`, `--test-threads`, `--format` work as in
//! `cargo test`) and recorded into the run's logs as they finish.
//!
//! Vector suites are one source of trials; others (service suites, exec adapters) build
//! [`TrialSpec`]s the same way and hand them to [`run_trials`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};
use tokio::runtime::Handle;

use super::replay::{ReplayFailure, replay};
use crate::backend::{Backend, Capability};
use crate::contract::vectors::Suite;
use crate::report::{RunRecorder, TrialOutcome, TrialRecord};

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialResult {
    /// Passed, with an optional note for the logs.
    Passed(Option<String>),
    Failed(String),
    /// Not run: the backend does not claim what the trial needs.
    Skipped(String),
    /// Ran and found which of the readings the spec allows the engine takes: information, not
    /// a pass or a failure (exit code 0).
    Informational(String),
}

pub type TrialBody = Box<dyn FnOnce() -> TrialResult + Send + 'static>;

/// A trial before it runs.
pub struct TrialSpec {
    pub name: String,
    /// What produced it (`vectors`, `service`, ...), for the logs.
    pub kind: String,
    pub body: TrialBody,
}

impl TrialSpec {
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        body: impl FnOnce() -> TrialResult + Send + 'static,
    ) -> Self {
        TrialSpec {
            name: name.into(),
            kind: kind.into(),
            body: Box::new(body),
        }
    }

    /// A trial the backend cannot serve: reported as skipped with `reason`, never as a pass.
    pub fn skipped(name: impl Into<String>, kind: impl Into<String>, reason: String) -> Self {
        Self::new(name, kind, move || TrialResult::Skipped(reason))
    }
}

/// Runs the trials as libtest does, recording each outcome when a recorder is given.
pub fn run_trials(
    args: &Arguments,
    specs: Vec<TrialSpec>,
    recorder: Option<Arc<RunRecorder>>,
) -> Conclusion {
    let trials = specs
        .into_iter()
        .map(|spec| {
            let recorder = recorder.clone();
            let TrialSpec { name, kind, body } = spec;
            Trial::ignorable_test(name.clone(), move || {
                let started = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
                    let text = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic without a message".into());
                    TrialResult::Failed(format!("the trial panicked: {text}"))
                });
                let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                let (outcome, message) = match &result {
                    TrialResult::Passed(note) => (TrialOutcome::Passed, note.clone()),
                    TrialResult::Failed(m) => (TrialOutcome::Failed, Some(m.clone())),
                    TrialResult::Skipped(m) => (TrialOutcome::Skipped, Some(m.clone())),
                    TrialResult::Informational(m) => (TrialOutcome::Informational, Some(m.clone())),
                };
                if let Some(recorder) = &recorder {
                    // A summary that cannot be written is reported by the final write.
                    let _ = recorder.record(TrialRecord {
                        name,
                        kind,
                        outcome,
                        duration_ms,
                        message,
                    });
                }
                match result {
                    TrialResult::Passed(_) => Ok(Completion::Completed),
                    TrialResult::Failed(m) => Err(Failed::from(crate::infra::redact_text(&m))),
                    TrialResult::Skipped(reason) => Ok(Completion::ignored_with(reason)),
                    TrialResult::Informational(finding) => {
                        // libtest shows it as `ok`; the finding goes beside it and into the logs.
                        println!("informational: {finding}");
                        Ok(Completion::Completed)
                    }
                }
            })
        })
        .collect();
    libtest_mimic::run(args, trials)
}

/// How vector suites are replayed.
#[derive(Clone)]
pub struct VectorReplay {
    pub backend: Arc<dyn Backend>,
    pub runtime: Handle,
    /// Times each suite is replayed (each time in a fresh session).
    pub repeat: u32,
    /// Bound on one replay of one suite, so a hung engine cannot hang the run.
    pub timeout: Duration,
}

/// One trial per suite, named `<primitive>::<suite name>`. `suites` must already carry any clock
/// offset. Suites the backend does not claim are skipped with the backend's reason.
pub fn vector_trials(suites: Vec<Suite>, replay_with: &VectorReplay) -> Vec<TrialSpec> {
    let caps = replay_with.backend.capabilities();
    suites
        .into_iter()
        .map(|suite| {
            let name = suite.trial_name();
            let unsupported = match &suite {
                Suite::RateLimit(s) if !caps.strategies.contains(&s.strategy.kind()) => {
                    Some(Capability::Strategy(s.strategy.kind()))
                }
                Suite::RateLimit(_) if !caps.explicit_clock => Some(Capability::ExplicitClock),
                Suite::TokenBudget(_) if !caps.token_budget => Some(Capability::TokenBudget),
                Suite::Lease(_) if !caps.lease_spender => Some(Capability::LeaseSpender),
                _ => None,
            };
            if let Some(what) = unsupported {
                let reason = replay_with.backend.unsupported_reason(what);
                return TrialSpec::skipped(name, "vectors", reason);
            }
            let r = replay_with.clone();
            TrialSpec::new(name, "vectors", move || {
                r.runtime.clone().block_on(replay_repeatedly(&r, &suite))
            })
        })
        .collect()
}

async fn replay_repeatedly(r: &VectorReplay, suite: &Suite) -> TrialResult {
    let mut ops = 0;
    for round in 1..=r.repeat {
        let of_repeat = if r.repeat > 1 {
            format!(" (replay {round} of {})", r.repeat)
        } else {
            String::new()
        };
        let mut session = match r.backend.open_suite(suite.name()).await {
            Ok(session) => session,
            // Only a first refusal is a skip: a suite already replayed cannot become unsupported.
            Err(crate::backend::BackendError::Unsupported(reason)) if round == 1 => {
                return TrialResult::Skipped(reason);
            }
            Err(e) => return TrialResult::Failed(format!("cannot open a session{of_repeat}: {e}")),
        };
        match tokio::time::timeout(r.timeout, replay(session.as_mut(), suite)).await {
            Ok(Ok(n)) => ops += n,
            Ok(Err(ReplayFailure::Unsupported(reason))) if round == 1 => {
                return TrialResult::Skipped(reason);
            }
            Ok(Err(ReplayFailure::Unsupported(reason))) => {
                return TrialResult::Failed(format!(
                    "{} became unsupported after {} passing replay(s): {reason}",
                    suite.trial_name(),
                    round - 1
                ));
            }
            Ok(Err(ReplayFailure::Diverged(d))) => {
                return TrialResult::Failed(format!("{d}{of_repeat}"));
            }
            Err(_) => {
                return TrialResult::Failed(format!(
                    "{} did not finish within {} s{of_repeat}",
                    suite.trial_name(),
                    r.timeout.as_secs()
                ));
            }
        }
    }
    TrialResult::Passed(Some(format!("{ops} ops replayed in {} run(s)", r.repeat)))
}
