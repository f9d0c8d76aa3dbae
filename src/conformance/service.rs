//! The service suites (`crate::service_suites`) as runner trials, for `run --backend service`.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::trial::{TrialResult, TrialSpec};
use crate::service_suites::{self, SuiteContext, SuiteOutcome};

/// One trial per service suite, named `service::<suite>`, run on `runtime`, each bounded by
/// `timeout` (`run --trial-timeout`; its longest wait is a few lease TTLs or one 2 s Reserve
/// window).
pub fn service_trials(
    ctx: Arc<SuiteContext>,
    runtime: Handle,
    timeout: Duration,
) -> Vec<TrialSpec> {
    service_suites::all()
        .into_iter()
        .map(|suite| {
            let (ctx, runtime) = (ctx.clone(), runtime.clone());
            TrialSpec::new(suite.trial_name(), "service", move || {
                runtime.block_on(async {
                    match tokio::time::timeout(timeout, suite.run(ctx)).await {
                        Ok(SuiteOutcome::Passed) => {
                            TrialResult::Passed(Some(suite.checks.to_owned()))
                        }
                        Ok(SuiteOutcome::Failed(message)) => TrialResult::Failed(message),
                        Ok(SuiteOutcome::Skipped(reason)) => TrialResult::Skipped(reason),
                        Ok(SuiteOutcome::Informational(finding)) => {
                            TrialResult::Informational(finding)
                        }
                        Err(_) => TrialResult::Failed(format!(
                            "suite {} did not finish within {} s",
                            suite.name,
                            timeout.as_secs()
                        )),
                    }
                })
            })
        })
        .collect()
}

/// The trial names, for `--list` (which starts no backend).
pub fn service_trial_names() -> Vec<String> {
    service_suites::all()
        .iter()
        .map(|s| s.trial_name())
        .collect()
}
