//! One running adapter: an owned child (`crate::infra::OwnedChild`: its own process group,
//! killed with the run, `PR_SET_PDEATHSIG` if the harness is killed) whose stdin/stdout carry the
//! protocol and whose stderr goes straight to a log file.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};

use crate::infra::OwnedChild;

/// The longest reply line we accept; anything longer is a protocol violation, not a memory hog.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// The most bytes of an adapter's stderr kept in the run folder, over all its restarts; the
/// rest is read and discarded (so the adapter never blocks on a full pipe), after one note.
pub const MAX_STDERR_LOG_BYTES: u64 = 16 << 20;

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub argv: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub env_remove: Vec<String>,
    pub stderr_log: PathBuf,
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
    child: OwnedChild,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    lines_read: u64,
    /// Copies stderr into the log; ends when the pipe closes.
    stderr_copier: std::thread::JoinHandle<()>,
}

impl AdapterProcess {
    /// Starts the adapter. Must run inside a tokio runtime (the pipes join its reactor).
    pub fn spawn(spec: &LaunchSpec) -> io::Result<AdapterProcess> {
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty adapter command"))?;
        let log = OpenOptions::new()
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
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        for name in &spec.env_remove {
            command.env_remove(name);
        }
        for (name, value) in &spec.env {
            command.env(name, value);
        }
        let mut child = OwnedChild::spawn("adapter", command).map_err(|e| match e {
            crate::infra::ChildError::Spawn { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        let stderr = child.take_stderr().expect("stderr is piped");
        let log_path = spec.stderr_log.clone();
        // A plain thread: it blocks on the pipe until every holder of its write end is gone.
        let stderr_copier = std::thread::Builder::new()
            .name("adapter-stderr".into())
            .spawn(move || copy_capped(stderr, log, &log_path, MAX_STDERR_LOG_BYTES))?;
        let stdin = child.take_stdin().expect("stdin is piped");
        let stdout = child.take_stdout().expect("stdout is piped");
        Ok(AdapterProcess {
            child,
            stdin: ChildStdin::from_std(stdin)?,
            stdout: BufReader::new(ChildStdout::from_std(stdout)?),
            lines_read: 0,
            stderr_copier,
        })
    }

    /// The adapter's pid, which is also its process-group id.
    pub fn pid(&self) -> i32 {
        self.child.pid() as i32
    }

    /// 1-based number of the last line read from stdout, for messages that name it.
    pub fn lines_read(&self) -> u64 {
        self.lines_read
    }

    /// Writes `line`, which must end in its newline, in one write: a line and its newline
    /// written apart wake the adapter's reader twice per request.
    pub async fn write_line(&mut self, line: &str) -> io::Result<()> {
        debug_assert!(line.ends_with('\n'));
        self.stdin.write_all(line.as_bytes()).await?;
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
            // Valid UTF-8 (every well-behaved reply) is taken as it is, without a copy.
            let line = String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            return Ok(LineRead::Line(line));
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

    /// Waits up to `grace` for the adapter to exit on its own, then kills its whole group.
    pub async fn finish(mut self, grace: Duration) -> Option<ExitStatus> {
        let status = match self.child.wait_exit(grace).await {
            Some(status) => Some(status),
            None => self.child.kill(),
        };
        // Let the log catch up with what the adapter wrote last (bounded: a grandchild that
        // escaped the group may still hold the pipe).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while !self.stderr_copier.is_finished() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        status
    }
}

/// Copies `from` into `log` until `log` holds `cap` bytes, then writes one note and discards the
/// rest until `from` closes.
fn copy_capped(mut from: impl io::Read, mut log: std::fs::File, path: &Path, cap: u64) {
    use std::io::Write;
    let mut size = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut noted = size >= cap;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let room = cap.saturating_sub(size).min(n as u64) as usize;
        if room > 0 && log.write_all(&buf[..room]).is_ok() {
            size += room as u64;
        }
        if room < n && !noted {
            noted = true;
            let _ = writeln!(
                log,
                "\n[tk-conform: {} reached its cap of {} MiB; the rest of the adapter's stderr \
                 is discarded]",
                path.display(),
                cap >> 20
            );
        }
    }
}

/// Why a command line cannot be split into words.
#[derive(Debug, thiserror::Error)]
pub enum CommandLineError {
    #[error(transparent)]
    Quoting(#[from] shell_words::ParseError),
    #[error("the command is empty")]
    Empty,
}

/// Splits a command line like a POSIX shell would, without running a shell.
pub fn split_command(command: &str) -> Result<Vec<String>, CommandLineError> {
    let argv = shell_words::split(command)?;
    if argv.is_empty() {
        return Err(CommandLineError::Empty);
    }
    Ok(argv)
}

/// For messages: where to read what the adapter said on stderr.
pub fn stderr_hint(path: &Path) -> String {
    format!("its stderr is in {}", path.display())
}
