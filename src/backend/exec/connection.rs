//! The connection to one adapter process: requests out, checked replies in, under a timeout,
//! and the restart policy (a crash or hang counts against the budget, a protocol violation
//! restarts without counting, and a cancelled caller leaves nothing out of step).

use std::time::Duration;

use super::process::{self, AdapterProcess, LaunchSpec, LineRead};
use super::protocol::{ErrorKind, Handshake, PROTOCOL_VERSIONS, Reply, ReplyChecker, Request};
use crate::backend::BackendError;

/// The least time an adapter gets to start and answer `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The checker only lets through the shapes a request may get, so this is a harness bug.
pub(super) fn unexpected(reply: Reply) -> BackendError {
    BackendError::Protocol(format!("reply of an unexpected shape: {reply:?}"))
}

pub(super) enum StartError {
    Spawn(std::io::Error),
    Handshake(BackendError),
}

/// The adapter process and everything needed to talk to it, restart it, or give up on it.
pub(super) struct Connection {
    spec: LaunchSpec,
    checker: ReplyChecker,
    timeout: Duration,
    max_restarts: u32,
    command: String,
    process: Option<AdapterProcess>,
    next_id: u64,
    /// A request was written but its reply never read (its caller was cancelled).
    in_flight: bool,
    /// The last process crashed or hung: the next start counts as a restart.
    crash_pending: bool,
    restarts: u32,
    gave_up: Option<String>,
    /// The first handshake; a restarted adapter must say the same.
    hello: Option<Handshake>,
}

/// How one exchange went wrong, before it becomes a `BackendError`.
enum Failure {
    /// The adapter crashed or hung: counts against the restart budget.
    Crash(String),
    /// The adapter broke the protocol: it is restarted, but that is not a crash.
    Violation(String),
}

impl Connection {
    /// The running adapter's pid, if one is running.
    pub(super) fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(AdapterProcess::pid)
    }

    /// Restarts after a crash or hang so far.
    pub(super) fn restarts(&self) -> u32 {
        self.restarts
    }

    pub(super) fn new(
        spec: LaunchSpec,
        checker: ReplyChecker,
        timeout: Duration,
        max_restarts: u32,
        command: String,
    ) -> Self {
        Connection {
            spec,
            checker,
            timeout,
            max_restarts,
            command,
            process: None,
            next_id: 0,
            in_flight: false,
            crash_pending: false,
            restarts: 0,
            gave_up: None,
            hello: None,
        }
    }

    /// Spawns the adapter and says hello.
    pub(super) async fn start(&mut self) -> Result<Handshake, StartError> {
        let process = AdapterProcess::spawn(&self.spec).map_err(StartError::Spawn)?;
        self.process = Some(process);
        let request = Request::hello();
        let hello = match self.exchange(&request).await {
            Ok(Reply::Hello(hello)) => hello,
            Ok(Reply::Error { message, .. }) => {
                self.discard();
                return Err(StartError::Handshake(BackendError::Protocol(format!(
                    "the adapter answered hello with an error: {message}"
                ))));
            }
            Ok(other) => {
                self.discard();
                return Err(StartError::Handshake(unexpected(other)));
            }
            Err(failure) => {
                let crashed = matches!(failure, Failure::Crash(_));
                let error = self.fail(failure);
                self.crash_pending = crashed;
                return Err(StartError::Handshake(error));
            }
        };
        if !PROTOCOL_VERSIONS.contains(&hello.version()) {
            self.discard();
            return Err(StartError::Handshake(BackendError::Protocol(format!(
                "the adapter speaks protocol version {}, this harness speaks versions 1 and 2",
                hello.version()
            ))));
        }
        if let Some(first) = self.hello.clone()
            && first != hello
        {
            self.discard();
            return Err(StartError::Handshake(BackendError::Protocol(format!(
                "the restarted adapter's hello differs from its first one: {hello:?} vs {first:?}"
            ))));
        }
        self.hello = Some(hello.clone());
        Ok(hello)
    }

    /// One request and its checked reply, starting (or restarting) the adapter as needed.
    /// The bound on each later request (a session's setup may take longer than its calls).
    pub(super) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub(super) async fn call(&mut self, request: &Request<'_>) -> Result<Reply, BackendError> {
        if let Some(reason) = &self.gave_up {
            return Err(BackendError::Unavailable(reason.clone()));
        }
        if self.in_flight {
            // A cancelled caller left a reply unread: the stream is out of step.
            self.discard();
            self.in_flight = false;
        }
        if self.process.is_none() {
            if self.crash_pending {
                if self.restarts >= self.max_restarts {
                    let reason = format!(
                        "adapter unavailable: `{}` crashed or hung {} times, and is restarted at most {} times per run; {}",
                        self.command,
                        self.restarts + 1,
                        self.max_restarts,
                        process::stderr_hint(&self.spec.stderr_log),
                    );
                    self.gave_up = Some(reason.clone());
                    return Err(BackendError::Unavailable(reason));
                }
                self.restarts += 1;
                self.crash_pending = false;
            }
            match self.start().await {
                Ok(_) => {}
                Err(StartError::Spawn(e)) => {
                    self.crash_pending = true;
                    return Err(BackendError::Unavailable(format!(
                        "cannot restart the adapter `{}`: {e}",
                        self.command
                    )));
                }
                Err(StartError::Handshake(e)) => return Err(e),
            }
        }
        match self.exchange(request).await {
            Ok(Reply::Error { kind, message }) => Err(match kind {
                ErrorKind::Unsupported => BackendError::Unsupported(message),
                ErrorKind::Invalid => BackendError::Invalid(message),
                ErrorKind::Internal => BackendError::Internal(message),
                ErrorKind::Unavailable => BackendError::StoreUnreachable(message),
            }),
            Ok(reply) => Ok(reply),
            Err(failure) => Err(self.fail(failure)),
        }
    }

    /// Turns a failure into the trial's error and drops the process it happened on.
    fn fail(&mut self, failure: Failure) -> BackendError {
        self.discard();
        match failure {
            Failure::Crash(message) => {
                self.crash_pending = true;
                BackendError::Unavailable(message)
            }
            Failure::Violation(message) => BackendError::Protocol(message),
        }
    }

    fn discard(&mut self) {
        // Dropping kills the whole process group.
        self.process = None;
    }

    /// Writes one request and reads its reply, under the per-request timeout.
    async fn exchange(&mut self, request: &Request<'_>) -> Result<Reply, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let op = request.op();
        let timeout = match request {
            // Starting an interpreter and importing an engine can take a while on a busy
            // machine; only a hang in a *request* is what the per-request timeout polices.
            Request::Hello { .. } => self.timeout.max(HELLO_TIMEOUT),
            _ => self.timeout,
        };
        let hint = process::stderr_hint(&self.spec.stderr_log);
        let process = self
            .process
            .as_mut()
            .expect("exchange needs a running adapter");
        if process.has_buffered_output() {
            let line = read_unasked(process, timeout).await;
            return Err(Failure::Violation(format!(
                "extra output: the adapter wrote stdout line {} before request {id} ({op}) was sent: `{}`",
                process.lines_read(),
                clip(&line)
            )));
        }
        self.in_flight = true;
        let mut line = request.to_line(id);
        line.push('\n');
        let answer = tokio::time::timeout(timeout, async {
            process.write_line(&line).await?;
            process.read_line().await
        })
        .await;
        self.in_flight = false;
        let read = match answer {
            Err(_) => {
                return Err(Failure::Crash(format!(
                    "the adapter did not answer request {id} ({op}) within {timeout:?}; it was killed; {hint}"
                )));
            }
            Ok(Err(e)) => {
                return Err(Failure::Crash(format!(
                    "lost the adapter while sending request {id} ({op}): {e}; {}; {hint}",
                    exit_note(self.process.take()).await
                )));
            }
            Ok(Ok(read)) => read,
        };
        let reply_line = match read {
            LineRead::Line(line) => line,
            LineRead::TooLong => {
                return Err(Failure::Violation(format!(
                    "the reply to request {id} ({op}) is longer than {} bytes",
                    process::MAX_LINE_BYTES
                )));
            }
            LineRead::Eof { partial } => {
                let partial = if partial.is_empty() {
                    String::new()
                } else {
                    format!(" after writing an unfinished line `{}`", clip(&partial))
                };
                return Err(Failure::Crash(format!(
                    "the adapter closed stdout while answering request {id} ({op}){partial}; {}; {hint}",
                    exit_note(self.process.take()).await
                )));
            }
        };
        let line_no = process.lines_read();
        let reply = self
            .checker
            .check(request, id, &reply_line)
            .map_err(|violation| {
                Failure::Violation(format!(
                    "stdout line {line_no}, the reply to request {id} ({op}), {violation}: `{}`",
                    clip(&reply_line)
                ))
            })?;
        if process.has_buffered_output() {
            let extra = read_unasked(process, timeout).await;
            return Err(Failure::Violation(format!(
                "extra output: after its reply to request {id} ({op}) the adapter wrote stdout line {}: `{}`",
                process.lines_read(),
                clip(&extra)
            )));
        }
        Ok(reply)
    }

    pub(super) async fn shutdown(&mut self) -> Result<(), BackendError> {
        if self.process.is_none() || self.in_flight {
            self.discard();
            return Ok(());
        }
        let result = self.exchange(&Request::Shutdown).await;
        let timeout = self.timeout;
        if let Some(process) = self.process.take() {
            process.finish(timeout).await;
        }
        match result {
            Ok(Reply::Ok) => Ok(()),
            Ok(Reply::Error { message, .. }) => Err(BackendError::Internal(format!(
                "the adapter refused to shut down: {message}"
            ))),
            Ok(other) => Err(unexpected(other)),
            Err(Failure::Crash(m) | Failure::Violation(m)) => Err(BackendError::Protocol(m)),
        }
    }
}

/// Reads a line nobody asked for, for the message that reports it.
async fn read_unasked(process: &mut AdapterProcess, timeout: Duration) -> String {
    match tokio::time::timeout(timeout, process.read_line()).await {
        Ok(Ok(LineRead::Line(line))) => line,
        Ok(Ok(LineRead::Eof { partial })) => partial,
        _ => "<unreadable>".into(),
    }
}

/// "exited with exit status: 3", read without waiting long for a process that may still be dying.
async fn exit_note(process: Option<AdapterProcess>) -> String {
    let Some(process) = process else {
        return "exit status unknown".into();
    };
    match process.finish(Duration::from_secs(1)).await {
        Some(status) => format!("it exited with {status}"),
        None => "exit status unknown".into(),
    }
}

/// Long lines are cut in messages; the whole line is not needed to see what went wrong.
fn clip(line: &str) -> String {
    const MAX: usize = 300;
    if line.len() <= MAX {
        return line.to_owned();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}
