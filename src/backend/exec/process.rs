//! One running adapter: a child in its own process group whose stdin/stdout carry the protocol
//! and whose stderr goes straight to a log file.
//!
//! Kept small and on its own so it can move onto the shared process-owning code in `src/infra/`
//! later. The child dies with us however we end: its whole group is SIGKILLed on drop, and
//! `PR_SET_PDEATHSIG` kills it if the harness itself is SIGKILLed. PDEATHSIG fires when the
//! *thread* that forked exits, so every spawn happens on one long-lived [`Spawner`] thread
//! rather than on whichever short-lived test thread happens to need a restart.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

/// The longest reply line we accept; anything longer is a protocol violation, not a memory hog.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub argv: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub env_remove: Vec<String>,
    pub stderr_log: PathBuf,
}

type SpawnJob = (
    LaunchSpec,
    tokio::runtime::Handle,
    oneshot::Sender<io::Result<Child>>,
);

/// A thread that lives as long as the backend and forks every adapter (see the module docs).
pub struct Spawner {
    jobs: mpsc::Sender<SpawnJob>,
}

impl Spawner {
    pub fn new() -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("tk-conform-adapter-spawner".into())
            .spawn(move || {
                for (spec, runtime, reply) in rx {
                    let _entered = runtime.enter();
                    let _ = reply.send(spawn_now(&spec));
                }
            })?;
        Ok(Spawner { jobs })
    }

    pub async fn spawn(&self, spec: LaunchSpec) -> io::Result<AdapterProcess> {
        let (tx, rx) = oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        self.jobs
            .send((spec, runtime, tx))
            .map_err(|_| io::Error::other("the adapter spawner thread is gone"))?;
        let mut child = rx
            .await
            .map_err(|_| io::Error::other("the adapter spawner thread dropped the request"))??;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited at once"))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(AdapterProcess {
            child,
            group: Pid::from_raw(pid as i32),
            stdin,
            stdout: BufReader::new(stdout),
            lines_read: 0,
            reaped: false,
        })
    }
}

fn spawn_now(spec: &LaunchSpec) -> io::Result<Child> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty adapter command"))?;
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.stderr_log)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot open {} for the adapter's stderr: {e}",
                    spec.stderr_log.display()
                ),
            )
        })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    for name in &spec.env_remove {
        cmd.env_remove(name);
    }
    for (name, value) in &spec.env {
        cmd.env(name, value);
    }
    // SAFETY: the closure only makes one async-signal-safe syscall (prctl).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// How reading one line ended.
#[derive(Debug)]
pub enum LineRead {
    Line(String),
    /// stdout closed (the adapter exited or closed it); what it wrote of a last, unfinished line.
    Eof {
        partial: String,
    },
    TooLong,
}

pub struct AdapterProcess {
    child: Child,
    group: Pid,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    lines_read: u64,
    /// Once the leader is reaped its pid may be reused: never signal the group again.
    reaped: bool,
}

impl AdapterProcess {
    pub fn pid(&self) -> i32 {
        self.group.as_raw()
    }

    /// 1-based number of the last line read from stdout, for messages that name it.
    pub fn lines_read(&self) -> u64 {
        self.lines_read
    }

    pub async fn write_line(&mut self, line: &str) -> io::Result<()> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await
    }

    /// Reads one line (without its newline). Not cancel-safe: after a timeout, kill the process.
    pub async fn read_line(&mut self) -> io::Result<LineRead> {
        let mut bytes = Vec::new();
        let n = (&mut self.stdout)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut bytes)
            .await?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            self.lines_read += 1;
            return Ok(LineRead::Line(String::from_utf8_lossy(&bytes).into_owned()));
        }
        if n as u64 >= MAX_LINE_BYTES {
            return Ok(LineRead::TooLong);
        }
        Ok(LineRead::Eof {
            partial: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// True when the adapter has already written more than we asked for.
    pub fn has_buffered_output(&self) -> bool {
        !self.stdout.buffer().is_empty()
    }

    /// Waits up to `grace` for the adapter to exit on its own, then kills its group.
    /// Anything the adapter left running in its group is killed too.
    pub async fn finish(mut self, grace: Duration) -> Option<ExitStatus> {
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                self.kill_group();
                self.child.wait().await.ok()
            }
        };
        // Leftover members keep the group id alive, so this cannot hit a stranger.
        let _ = killpg(self.group, Signal::SIGKILL);
        self.reaped = true;
        status
    }

    fn kill_group(&mut self) {
        if self.reaped {
            return;
        }
        // The group may already be gone; that is the goal, not an error.
        let _ = killpg(self.group, Signal::SIGKILL);
        let _ = self.child.start_kill();
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Splits a command line like a POSIX shell would, without running a shell.
pub fn split_command(command: &str) -> Result<Vec<String>, String> {
    let argv = shell_words::split(command).map_err(|e| format!("{e}"))?;
    if argv.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(argv)
}

/// For messages: where to read what the adapter said on stderr.
pub fn stderr_hint(path: &Path) -> String {
    format!("its stderr is in {}", path.display())
}
