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
            finished_at: None,
            exit_code: None,
            contract_dir: contract_dir.into(),
            contract_digest: None,
            backend: None,
            seed,
            clock_offset_ms: 0.0,
            counts: Counts::default(),
            trials: Vec::new(),
            error: None,
            details: BTreeMap::new(),
        }
    }

    pub(crate) fn push(&mut self, trial: TrialRecord) {
        match trial.outcome {
            TrialOutcome::Passed => self.counts.passed += 1,
            TrialOutcome::Failed => self.counts.failed += 1,
            TrialOutcome::Skipped => self.counts.skipped += 1,
        }
        self.trials.push(trial);
    }
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
