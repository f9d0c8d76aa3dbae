//! `tk-conform matrix --redis-server BIN…`: the contract replay (`run --backend redis`) and the
//! battle's direct-door cap scenarios against every given server binary, each as a child run of
//! this executable with its own logs; then one compatibility table (`docs/compatibility.md`)
//! with the command that regenerates it, and the combined `report` pages beside the runs.

pub mod cli;
mod markdown;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::battle::scenario::{Assertion, Door, Scenario};
use crate::infra::OwnedChild;
use crate::report::TrialOutcome;
use crate::report::matrix::LoadedRun;

/// Bound on each child run (a full replay takes seconds; the battles tens of seconds).
const CHILD_BOUND: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("--redis-server {0}: no such file")]
    Missing(PathBuf),
    #[error("--redis-server {0}: not an executable file (chmod +x it?)")]
    NotExecutable(PathBuf),
    #[error("--redis-server {0} is given twice")]
    Duplicate(PathBuf),
    #[error("cannot start {what}: {message}")]
    Spawn { what: String, message: String },
    #[error("{what} did not finish within {} s: killed", CHILD_BOUND.as_secs())]
    Timeout { what: String },
    #[error("{what} left no run folder under {}: {tail}", dir.display())]
    NoRun {
        what: String,
        dir: PathBuf,
        tail: String,
    },
    #[error(transparent)]
    Load(#[from] crate::report::matrix::LoadError),
    #[error("cannot create {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks each binary exists, is executable, and is given once.
pub fn check_binaries(binaries: &[PathBuf]) -> Result<(), MatrixError> {
    use std::os::unix::fs::PermissionsExt;
    for (i, b) in binaries.iter().enumerate() {
        let meta = std::fs::metadata(b).map_err(|_| MatrixError::Missing(b.clone()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(MatrixError::NotExecutable(b.clone()));
        }
        if binaries[..i].contains(b) {
            return Err(MatrixError::Duplicate(b.clone()));
        }
    }
    Ok(())
}

/// The battle scenarios the matrix runs: one server (not a cluster), every worker on the direct
/// door, a cap to judge, and no fault. (A scenario whose fault eats into its load, like `redis-restart`, may leave its
/// window unsaturated on a busy machine: an "unexercised" verdict that says nothing about the
/// server's version.)
pub fn direct_cap_scenarios(all: &[Scenario]) -> Vec<String> {
    all.iter()
        .filter(|s| s.plan.topology.fleet == 0 && s.plan.faults.is_empty())
        .filter(|s| s.plan.topology.redis == crate::battle::scenario::RedisTopology::Single)
        .filter(|s| s.plan.workers.iter().all(|g| g.door == Door::Redis))
        .filter(|s| {
            s.plan
                .assertions
                .iter()
                .any(|a| matches!(a, Assertion::Cap { .. }))
        })
        .map(|s| s.name.clone())
        .collect()
}

/// One server binary's column.
#[derive(Debug, Clone)]
pub struct Column {
    pub binary: PathBuf,
    /// The version the runs saw (`redis 6.2.14`), from the replay's backend info.
    pub store: String,
    /// Exit codes of the replay and the battle.
    pub exits: Vec<(String, i32)>,
    pub runs: Vec<LoadedRun>,
}

impl Column {
    /// Row → outcome; battle scenarios are `battle::<name>`.
    pub fn cells(&self) -> BTreeMap<String, (TrialOutcome, Option<String>)> {
        let mut out = BTreeMap::new();
        for run in &self.runs {
            let battle = run.summary.command == "battle";
            for t in &run.summary.trials {
                let row = if battle {
                    format!("battle::{}", t.name)
                } else {
                    t.name.clone()
                };
                out.insert(row, (t.outcome, t.message.clone()));
            }
        }
        out
    }

    pub fn counts(&self, battle: bool) -> (usize, usize) {
        let cells = self.cells();
        let mine = cells
            .iter()
            .filter(|(row, _)| row.starts_with("battle::") == battle)
            .filter(|(_, (o, _))| *o != TrialOutcome::Skipped);
        let (mut passed, mut judged) = (0, 0);
        for (_, (o, _)) in mine {
            judged += 1;
            if *o == TrialOutcome::Passed {
                passed += 1;
            }
        }
        (passed, judged)
    }

    /// Every step ran to a verdict (exit 0 or 1) and nothing failed.
    pub fn compatible(&self) -> bool {
        self.exits.iter().all(|(_, c)| *c == 0)
    }
}

/// Runs `exe args…` with its logs under `logs`; returns its exit code and the run folder.
pub fn child_run(
    exe: &Path,
    what: &str,
    args: &[String],
    logs: &Path,
) -> Result<(i32, PathBuf), MatrixError> {
    std::fs::create_dir_all(logs).map_err(|source| MatrixError::Io {
        path: logs.to_path_buf(),
        source,
    })?;
    let out_file = logs.join("output.txt");
    let out = std::fs::File::create(&out_file).map_err(|source| MatrixError::Io {
        path: out_file.clone(),
        source,
    })?;
    let err = out.try_clone().map_err(|source| MatrixError::Io {
        path: out_file.clone(),
        source,
    })?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .arg("--logs")
        .arg(logs)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Plain progress lines into output.txt, not a terminal's bars.
        .env("CI", "1");
    let mut child = OwnedChild::spawn(what, command).map_err(|e| MatrixError::Spawn {
        what: what.into(),
        message: e.to_string(),
    })?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_exit() {
            break status;
        }
        if started.elapsed() > CHILD_BOUND {
            child.kill();
            return Err(MatrixError::Timeout { what: what.into() });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let code = status.code().unwrap_or(2);
    let run = std::fs::read_link(logs.join("latest"))
        .map(|l| logs.join(l))
        .map_err(|_| MatrixError::NoRun {
            what: what.into(),
            dir: logs.to_path_buf(),
            tail: tail(&out_file),
        })?;
    Ok((code, run))
}

/// The last lines of a child's output, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(4).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// A column's store label from its runs: the replay's backend server, else the binary's name.
pub fn store_of(runs: &[LoadedRun], binary: &Path) -> String {
    runs.iter()
        .flat_map(|r| r.stores.values())
        .find(|s| *s != "unknown store")
        .cloned()
        .unwrap_or_else(|| binary.display().to_string())
}

pub use markdown::compatibility_md;
