//! `junit.xml` for CI systems, one test case per trial.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::summary::{Summary, TrialOutcome};

/// The JUnit XML of a summary: one suite named after the command and backend.
pub fn junit_xml(summary: &Summary) -> Result<String, quick_junit::SerializeError> {
    let backend = summary
        .backend
        .as_ref()
        .and_then(|b| b.get("kind"))
        .and_then(|k| k.as_str())
        .unwrap_or("unknown");
    let mut suite = TestSuite::new(format!("tk-conform {} ({backend})", summary.command));
    let mut total = Duration::ZERO;
    for trial in &summary.trials {
        let status = match trial.outcome {
            TrialOutcome::Passed => TestCaseStatus::success(),
            TrialOutcome::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                if let Some(message) = &trial.message {
                    s.set_description(message.as_str());
                    s.set_message(message.lines().next().unwrap_or_default());
                }
                s
            }
            TrialOutcome::Skipped => {
                let mut s = TestCaseStatus::skipped();
                if let Some(message) = &trial.message {
                    s.set_message(message.as_str());
                }
                s
            }
            // Not a failure: a CI system shows it as passed, with the finding beside it.
            TrialOutcome::Informational => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(trial.name.as_str(), status);
        if trial.outcome == TrialOutcome::Informational {
            let message = trial.message.as_deref().unwrap_or_default();
            case.set_system_out(format!("informational: {message}"));
            case.add_property(quick_junit::Property::new("outcome", "informational"));
        }
        case.set_classname(format!("{}.{}", summary.command, trial.kind));
        let time = Duration::from_secs_f64(trial.duration_ms.max(0.0) / 1000.0);
        case.set_time(time);
        total += time;
        suite.add_test_case(case);
    }
    suite.set_time(total);
    let mut report = Report::new("tk-conform");
    report.add_test_suite(suite);
    report.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TrialRecord;

    #[test]
    fn failures_and_skips_carry_their_messages() {
        let mut summary = Summary::new("run", "contract", 7);
        summary.backend = Some(serde_json::json!({"kind": "redis"}));
        for (name, outcome, message) in [
            ("rateLimit::a", TrialOutcome::Passed, None),
            (
                "rateLimit::b",
                TrialOutcome::Failed,
                Some("op 3: remaining expected 2, actual 3"),
            ),
            ("lease::c", TrialOutcome::Skipped, Some("client-side")),
            (
                "service::m",
                TrialOutcome::Informational,
                Some("served as 1 (ThrottleKit's reading)"),
            ),
        ] {
            summary.push(TrialRecord {
                name: name.into(),
                kind: "vectors".into(),
                outcome,
                duration_ms: 1.5,
                message: message.map(String::from),
            });
        }
        let xml = junit_xml(&summary).unwrap();
        assert!(xml.contains("tests=\"4\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("skipped=\"1\""), "{xml}");
        assert!(
            xml.contains("informational: served as 1 (ThrottleKit&apos;s reading)")
                || xml.contains("informational: served as 1 (ThrottleKit's reading)"),
            "{xml}"
        );
        assert_eq!(summary.counts.informational, 1);
        assert_eq!(summary.informational[0].trial, "service::m");
        assert!(xml.contains("remaining expected 2, actual 3"), "{xml}");
        assert!(xml.contains("client-side"), "{xml}");
    }
}
