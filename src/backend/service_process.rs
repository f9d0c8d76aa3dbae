//! A gRPC server started and owned by the harness (an `infra::OwnedChild`: own process group,
//! killed with its group on drop, by the kernel if the harness dies, and by the runner's
//! interrupt handler). Its stdout and stderr go to files, which readiness is read from and
//! error messages quote.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::infra::{ChildError, OwnedChild};

/// How long a server may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server's stderr quoted in error messages.
const STDERR_TAIL: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start server `{command}`: {message}")]
    Spawn { command: String, message: String },
    #[error(
        "server `{command}` exited before it was ready ({status}); its stderr ends with:\n{stderr}"
    )]
    EarlyExit {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "server `{command}` was not listening after {timeout:?} (waited for `listening on <addr>` on stdout{port}); its stderr ends with:\n{stderr}"
    )]
    NotReady {
        command: String,
        timeout: Duration,
        port: String,
        stderr: String,
    },
}

pub struct ServerProcess {
    child: OwnedChild,
    pub addr: SocketAddr,
    command: String,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Holds the output files; removed with the process handle.
    _logs: crate::infra::cleanup::TempFolder,
}

impl ServerProcess {
    /// Starts `argv` and waits until it listens: on `listening on <addr>` in its stdout, or
    /// when `port` (if the command was given one) accepts a connection.
    pub async fn start(argv: &[String], port: Option<u16>) -> Result<ServerProcess, ProcessError> {
        // For messages only: a `--redis` URL in it keeps its password out of them.
        let command = crate::infra::redact_text(&shell_words::join(argv));
        let spawn_error = |message: String| ProcessError::Spawn {
            command: command.clone(),
            message,
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| spawn_error("empty command".into()))?;
        let logs = crate::infra::cleanup::TempFolder::new("tk-conform-server-")
            .map_err(|e| spawn_error(format!("cannot create a folder for its output: {e}")))?;
        let stdout = logs.path().join("stdout.log");
        let stderr = logs.path().join("stderr.log");
        let file = |path: &PathBuf| {
            std::fs::File::create(path)
                .map_err(|e| spawn_error(format!("cannot create {}: {e}", path.display())))
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?);
        let name = std::path::Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
        let child =
            OwnedChild::spawn(name, cmd).map_err(|e: ChildError| spawn_error(e.to_string()))?;

        let mut process = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            command,
            stdout,
            stderr,
            _logs: logs,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(addr) = std::fs::read_to_string(&process.stdout)
                .ok()
                .and_then(|text| text.lines().find_map(listening_addr))
            {
                process.addr = addr;
                return Ok(process);
            }
            if let Some(port) = port
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(process);
            }
            if let Some(status) = process.child.try_exit() {
                return Err(ProcessError::EarlyExit {
                    command: process.command.clone(),
                    status: status.to_string(),
                    stderr: process.stderr_tail(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    command: process.command.clone(),
                    timeout: READY_TIMEOUT,
                    port: port
                        .map(|p| format!(" or a connection to port {p}"))
                        .unwrap_or_default(),
                    stderr: process.stderr_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n")
    }

    /// Sends `signal` to the server's whole process group (SIGSTOP / SIGCONT / SIGTERM ...).
    pub fn signal(&self, signal: Signal) {
        // A server that already exited has nothing left to signal.
        let _ = self.child.signal(signal);
    }

    /// SIGTERM, wait for the drain, then SIGKILL the group. Returns the exit status text.
    pub async fn stop(mut self) -> String {
        self.signal(Signal::SIGTERM);
        match self.child.wait_exit(STOP_TIMEOUT).await {
            Some(status) => status.to_string(),
            None => {
                self.child.kill();
                format!("did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed")
            }
        }
    }
}

/// Finds `listening on <addr>` in a line of a server's stdout.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches([',', ')'])
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_readiness_line() {
        assert_eq!(
            listening_addr("tk-conform serve: listening on 127.0.0.1:4567 (store: memory)"),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on [::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(listening_addr("starting"), None);
    }

    #[tokio::test]
    async fn a_server_that_exits_early_is_reported_with_its_stderr() {
        let argv = ["sh", "-c", "echo 'bad config: policy `x`' >&2; exit 3"].map(String::from);
        let error = ServerProcess::start(&argv, None)
            .await
            .err()
            .expect("fails");
        let text = error.to_string();
        assert!(
            text.contains("exited before it was ready") && text.contains("bad config: policy `x`"),
            "{text}"
        );
    }
}
