//! Worker processes, runner side: write the spec, start `tk-conform worker` with the barrier
//! pipe as its stdin, wait (bounded) until every worker is ready, and until every one exits.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::file_error::FileError;
use super::spec::{DoorSpec, LoadWorkerSpec, WorkerSpec};
use crate::infra::{ChildError, OwnedChild};

/// How long workers may take to open their connections.
const WORKERS_READY: Duration = Duration::from_secs(30);

/// One started worker process and where it keeps its files.
pub struct Worker {
    pub label: String,
    pub group: String,
    pub index: u32,
    pub child: OwnedChild,
    /// The history it writes (a `bench load` worker: its totals).
    pub history: PathBuf,
    pub ready_file: PathBuf,
    pub stderr: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot encode the worker spec")]
    Encode(#[source] serde_json::Error),
    #[error("barrier pipe")]
    Barrier(#[source] std::io::Error),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("worker {worker} exited before the start ({exit}): {tail}")]
    ExitedEarly {
        worker: String,
        exit: String,
        tail: String,
    },
    #[error("workers not ready within {seconds} s")]
    NotReady { seconds: u64 },
    #[error("workers still running after {seconds} s: killed")]
    StillRunning { seconds: u64 },
}

/// Writes `spec` beside the run's other worker files and starts its worker process.
pub fn spawn_worker(
    exe: &Path,
    spec: &WorkerSpec,
    barrier: &std::io::PipeReader,
    dir: &Path,
) -> Result<Worker, SpawnError> {
    // The file holds the URL without its password; the worker gets the real one in its
    // environment, which is not written anywhere.
    let mut on_disk = spec.clone();
    let mut real_url = None;
    if let DoorSpec::Redis { url, .. } | DoorSpec::Exec { url, .. } = &mut on_disk.door {
        real_url = Some(std::mem::replace(url, crate::infra::redact_url(url)));
    }
    let json = serde_json::to_vec_pretty(&on_disk).map_err(SpawnError::Encode)?;
    let process = Process {
        subcommand: "worker",
        group: &spec.group,
        index: spec.index,
        json,
        real_url,
    };
    let (label, child, stderr) = process.start(exe, barrier, dir)?;
    Ok(Worker {
        label,
        group: spec.group.clone(),
        index: spec.index,
        child,
        history: spec.history.clone(),
        ready_file: spec.ready_file.clone(),
        stderr,
    })
}

/// Starts one `bench load` worker (`tk-conform load-worker`); its "history" is its totals file.
pub fn spawn_load_worker(
    exe: &Path,
    spec: &LoadWorkerSpec,
    barrier: &std::io::PipeReader,
    dir: &Path,
) -> Result<Worker, SpawnError> {
    let on_disk = LoadWorkerSpec {
        url: crate::infra::redact_url(&spec.url),
        ..spec.clone()
    };
    let json = serde_json::to_vec_pretty(&on_disk).map_err(SpawnError::Encode)?;
    let process = Process {
        subcommand: "load-worker",
        group: "load",
        index: spec.index,
        json,
        real_url: Some(spec.url.clone()),
    };
    let (label, child, stderr) = process.start(exe, barrier, dir)?;
    Ok(Worker {
        label,
        group: "load".into(),
        index: spec.index,
        child,
        history: spec.result_file.clone(),
        ready_file: spec.ready_file.clone(),
        stderr,
    })
}

/// A worker process to start: `tk-conform <subcommand> --spec <dir>/workers/<group>-<index>.json`
/// with the barrier pipe as stdin and its stderr in a file beside the spec.
struct Process<'a> {
    subcommand: &'static str,
    group: &'a str,
    index: u32,
    json: Vec<u8>,
    /// The Redis URL with its password, passed in the environment only.
    real_url: Option<String>,
}

impl Process<'_> {
    /// Returns the worker's label, its process and its stderr file.
    fn start(
        self,
        exe: &Path,
        barrier: &std::io::PipeReader,
        dir: &Path,
    ) -> Result<(String, OwnedChild, PathBuf), SpawnError> {
        let name = format!("{}-{}", self.group, self.index);
        let spec_file = dir.join("workers").join(format!("{name}.json"));
        std::fs::write(&spec_file, &self.json).map_err(FileError::on("write", &spec_file))?;
        let stderr = dir.join("workers").join(format!("{name}.stderr"));
        let err = std::fs::File::create(&stderr).map_err(FileError::on("create", &stderr))?;
        let stdin = barrier.try_clone().map_err(SpawnError::Barrier)?;
        let mut command = Command::new(exe);
        command
            .arg(self.subcommand)
            .arg("--spec")
            .arg(&spec_file)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        if let Some(url) = self.real_url {
            command.env(super::spec::REDIS_URL_ENV, url);
        }
        let label = format!("{}[{}]", self.group, self.index);
        let child = OwnedChild::spawn(format!("worker {label}"), command)?;
        Ok((label, child, stderr))
    }
}

/// Waits until every worker has exited, or kills them all after `bound`.
pub async fn wait_exit(workers: &mut [Worker], bound: Duration) -> Result<(), SpawnError> {
    let deadline = Instant::now() + bound;
    while !workers.iter_mut().all(|w| w.child.try_exit().is_some()) {
        if Instant::now() >= deadline {
            for w in workers.iter_mut() {
                w.child.kill();
            }
            return Err(SpawnError::StillRunning {
                seconds: bound.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until every worker has opened its connections (its ready-file exists).
pub async fn wait_ready(workers: &mut [Worker]) -> Result<(), SpawnError> {
    let started = Instant::now();
    loop {
        let mut all = true;
        for w in workers.iter_mut() {
            if let Some(status) = w.child.try_exit() {
                return Err(SpawnError::ExitedEarly {
                    worker: w.label.clone(),
                    exit: describe_exit(status),
                    tail: tail(&w.stderr),
                });
            }
            all &= w.ready_file.exists();
        }
        if all {
            return Ok(());
        }
        if started.elapsed() > WORKERS_READY {
            return Err(SpawnError::NotReady {
                seconds: WORKERS_READY.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `exit code 1`, `killed by SIGKILL`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => Signal::try_from(sig)
            .map(|s| format!("killed by {s}"))
            .unwrap_or_else(|_| format!("killed by signal {sig}")),
        _ => status.to_string(),
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return format!("({} is empty)", path.display());
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
