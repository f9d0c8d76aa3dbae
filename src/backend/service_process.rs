//! A gRPC server started and owned by the harness: spawned in its own process group, waited for
//! until it listens, stopped with SIGTERM (then SIGKILL), and killed with its group when dropped
//! or when the harness dies.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server's stderr kept for error messages.
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
    child: Child,
    pub addr: SocketAddr,
    command: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts `argv` and waits until it listens: on `listening on <addr>` in its stdout, or
    /// when `port` (if the command was given one) accepts a connection.
    pub async fn start(argv: &[String], port: Option<u16>) -> Result<ServerProcess, ProcessError> {
        let command = shell_words::join(argv);
        let (program, args) = argv.split_first().ok_or_else(|| ProcessError::Spawn {
            command: command.clone(),
            message: "empty command".into(),
        })?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe work (one prctl call) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| ProcessError::Spawn {
            command: command.clone(),
            message: e.to_string(),
        })?;

        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<SocketAddr>(1);
        if let Some(pipe) = child.stdout.take() {
            // Keeps draining stdout after readiness, so the server never blocks on a full pipe.
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = ready_tx.try_send(addr);
                    }
                }
            });
        }

        let mut process = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            command,
            stderr,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(addr) = ready_rx.try_recv() {
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
            if let Ok(Some(status)) = process.child.try_wait() {
                // Let the stderr reader catch the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
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

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, wait for the drain, then SIGKILL the group. Returns the exit status text.
    pub async fn stop(mut self) -> String {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => {
                self.signal(Signal::SIGKILL);
                let _ = self.child.wait().await;
                format!("did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed")
            }
        }
    }

    /// Sends `signal` to the server's whole process group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGKILL);
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
}
