//! `summary.json`: what ran, against what, and how each trial ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunStatus {
    /// Trials are still running (or the run was killed without a chance to say so).
    Running,
    Finished,
    /// Stopped by Ctrl-C / SIGTERM; the trials listed are the ones that finished.
    Interrupted,
    /// Could not run: usage, contract or infrastructure error (see `error`).
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrialOutcome {
    Passed,
    Failed,
    /// Not run because the backend does not claim what the trial needs (`message` says why).
    Skipped,
    /// Ran, and found a choice the spec leaves to the engine (`message` says which reading):
    /// neither a pass nor a failure, and no reason for a non-zero exit code.
    Informational,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialRecord {
    pub name: String,
    /// What produced the trial: `vectors`, `service`, `battle`, ...
    pub kind: String,
    pub outcome: TrialOutcome,
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    #[serde(default)]
    pub informational: u64,
}

/// An informational finding, as `summary.json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub trial: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub tool: String,
    pub tool_version: String,
    /// The subcommand: `run`, `battle`, ...
    pub command: String,
    pub status: RunStatus,
    pub started_at: String,
    /// The process writing this run, and its start time in clock ticks after boot (field 22 of
    /// `/proc/<pid>/stat`): a `running` summary whose process is gone, or whose pid now belongs
    /// to a later process, was left by a killed run (see [`Summary::still_running`]).
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub pid_start_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The contract folder judged against.
    pub contract_dir: String,
    /// sha256 of the contract's `manifest.sha256` (`null` when the contract is not sealed).
    pub contract_digest: Option<String>,
    /// `BackendInfo` of the engine under test, once known.
    pub backend: Option<serde_json::Value>,
    #[serde(with = "super::seed_text")]
    pub seed: u64,
    /// Milliseconds added to every `now` of the replayed vectors (spec 5); 0 when none was needed.
    pub clock_offset_ms: f64,
    pub counts: Counts,
    pub trials: Vec<TrialRecord>,
    /// The informational findings among `trials`: which reading the engine took where the
    /// spec allows several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub informational: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Command-specific facts (e.g. `repeat`, battle parameters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

impl Summary {
    pub fn new(command: &str, contract_dir: &str, seed: u64) -> Self {
        Summary {
            tool: "tk-conform".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            command: command.into(),
            status: RunStatus::Running,
            started_at: now_rfc3339(),
            pid: std::process::id(),
            pid_start_ticks: process_start_ticks(std::process::id()),
            finished_at: None,
            exit_code: None,
            contract_dir: contract_dir.into(),
            contract_digest: None,
            backend: None,
            seed,
            clock_offset_ms: 0.0,
            counts: Counts::default(),
            trials: Vec::new(),
            informational: Vec::new(),
            error: None,
            details: BTreeMap::new(),
        }
    }

    /// True when the run is still going: `running`, and its process is alive and the same one
    /// (same start time). A `running` summary that is not still running is incomplete: the run
    /// was killed (SIGKILL, power loss) before it could say so.
    pub fn still_running(&self) -> bool {
        self.status == RunStatus::Running
            && self.pid_start_ticks.is_some()
            && process_start_ticks(self.pid) == self.pid_start_ticks
    }

    pub(crate) fn push(&mut self, trial: TrialRecord) {
        match trial.outcome {
            TrialOutcome::Passed => self.counts.passed += 1,
            TrialOutcome::Failed => self.counts.failed += 1,
            TrialOutcome::Skipped => self.counts.skipped += 1,
            TrialOutcome::Informational => {
                self.counts.informational += 1;
                self.informational.push(Finding {
                    trial: trial.name.clone(),
                    message: trial.message.clone().unwrap_or_default(),
                });
            }
        }
        self.trials.push(trial);
    }
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// When process `pid` started, in clock ticks after boot (`/proc/<pid>/stat` field 22); `None`
/// when there is no such live process (a zombie counts as gone).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // fields[0] is field 3 (state), so field 22 is fields[19].
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_summary_tells_a_live_run_from_a_dead_one() {
        let mut summary = Summary::new("run", "contract", 1);
        assert_eq!(summary.pid, std::process::id());
        assert!(summary.pid_start_ticks.is_some());
        assert!(summary.still_running());
        // The same pid started at another time is another process.
        summary.pid_start_ticks = summary.pid_start_ticks.map(|t| t + 1);
        assert!(!summary.still_running());
        summary.pid_start_ticks = process_start_ticks(std::process::id());
        summary.status = RunStatus::Finished;
        assert!(!summary.still_running());
    }
}
