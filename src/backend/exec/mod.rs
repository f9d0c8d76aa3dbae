//! The `exec` backend: an engine in any language, judged through a JSON-lines adapter.
//!
//! The harness starts the adapter program, says `hello`, and then replays each suite as
//! `reset` followed by `check` / `debit` / `lease.*` requests (`docs/adapter-protocol.md`).
//! Everything an adapter can do wrong is a result, not a harness failure: a crash, a hang, a
//! garbled or extra line each fail the trial at hand with a message naming the line, the adapter
//! is restarted (a crash or hang at most `max_restarts` times per run), and a run never hangs.

mod args;
mod process;
pub mod protocol;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Backend, BackendError, BackendInfo, Capabilities, SuiteSession};
use crate::model::{Decision, LeaseConfig, SpendOutcome, Strategy, TokenBudgetOptions};
pub use args::{ExecArgs, MissingAdapter, STDERR_LOG};
pub use process::split_command;
use process::{AdapterProcess, LaunchSpec, LineRead};
use protocol::{
    AdapterCapabilities, ErrorKind, HarnessInfo, Hello, PROTOCOL_VERSION, REDIS_URL_ENV, Reply,
    ReplyChecker, Request,
};

/// The least time an adapter gets to start and answer `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run and police one adapter.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// The adapter's command line, split like a shell would (no shell is run).
    pub command: String,
    pub working_dir: Option<PathBuf>,
    /// How long one request may take before the adapter is declared hung and killed.
    pub request_timeout: Duration,
    /// How many times a crashed or hung adapter is started again in one run.
    pub max_restarts: u32,
    /// Where the adapter's stderr goes (appended to across restarts).
    pub stderr_log: PathBuf,
    /// Handed to the adapter as `TK_CONFORM_REDIS_URL`.
    pub redis_url: Option<String>,
    /// Validate every reply against the published schema (unknown fields are violations).
    pub strict: bool,
    /// Prefix of every suite's key namespace; unique per run so runs never share keys.
    pub namespace_prefix: String,
}

impl ExecConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_RESTARTS: u32 = 3;

    pub fn new(command: impl Into<String>, stderr_log: impl Into<PathBuf>) -> Self {
        ExecConfig {
            command: command.into(),
            working_dir: None,
            request_timeout: Self::DEFAULT_TIMEOUT,
            max_restarts: Self::DEFAULT_MAX_RESTARTS,
            stderr_log: stderr_log.into(),
            redis_url: None,
            strict: true,
            namespace_prefix: format!("tkc-{}-{}", std::process::id(), unique_suffix()),
        }
    }
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Why the adapter could not be started at all (the run cannot begin).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot split the adapter command `{command}`: {reason}")]
    BadCommand { command: String, reason: String },
    #[error("cannot start the adapter `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("the adapter `{command}` failed its hello handshake: {source}")]
    Handshake {
        command: String,
        source: BackendError,
    },
}

pub struct ExecBackend {
    hello: Hello,
    capabilities: Capabilities,
    connection: Arc<Mutex<Connection>>,
    suites_opened: AtomicU64,
    namespace_prefix: String,
}

impl ExecBackend {
    /// Starts the adapter and performs the handshake.
    pub async fn start(config: ExecConfig) -> Result<Self, ExecError> {
        let argv = split_command(&config.command).map_err(|reason| ExecError::BadCommand {
            command: config.command.clone(),
            reason,
        })?;
        let mut connection = Connection {
            spec: launch_spec(&config, argv),
            checker: ReplyChecker::new(config.strict),
            timeout: config.request_timeout,
            max_restarts: config.max_restarts,
            command: config.command.clone(),
            process: None,
            next_id: 0,
            in_flight: false,
            crash_pending: false,
            restarts: 0,
            gave_up: None,
            hello: None,
        };
        let hello = connection.start().await.map_err(|source| match source {
            StartError::Spawn(source) => ExecError::Spawn {
                command: config.command.clone(),
                source,
            },
            StartError::Handshake(source) => ExecError::Handshake {
                command: config.command.clone(),
                source,
            },
        })?;
        let declared = &hello.capabilities;
        let capabilities = Capabilities {
            strategies: declared.strategies.clone(),
            token_budget: declared.token_budget,
            lease_spender: declared.lease_spender,
            explicit_clock: declared.explicit_clock,
            lifecycle: false,
            fleet_lease: false,
        };
        Ok(ExecBackend {
            hello,
            capabilities,
            connection: Arc::new(Mutex::new(connection)),
            suites_opened: AtomicU64::new(0),
            namespace_prefix: config.namespace_prefix,
        })
    }

    /// What the adapter said in its handshake.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The running adapter's process id (also its process group id), if one is running.
    pub async fn adapter_pid(&self) -> Option<i32> {
        self.connection
            .lock()
            .await
            .process
            .as_ref()
            .map(|p| p.pid())
    }

    /// How many times the adapter was restarted after a crash or hang so far.
    pub async fn restarts(&self) -> u32 {
        self.connection.lock().await.restarts
    }
}

fn launch_spec(config: &ExecConfig, argv: Vec<String>) -> LaunchSpec {
    let mut env = vec![(
        "TK_CONFORM_PROTOCOL_VERSION".into(),
        PROTOCOL_VERSION.to_string(),
    )];
    let mut env_remove = Vec::new();
    match &config.redis_url {
        Some(url) => env.push((REDIS_URL_ENV.into(), url.clone())),
        // A URL left in our own environment must not send the adapter to a store we did not pick.
        None => env_remove.push(REDIS_URL_ENV.into()),
    }
    LaunchSpec {
        argv,
        working_dir: config.working_dir.clone(),
        env,
        env_remove,
        stderr_log: config.stderr_log.clone(),
    }
}

#[async_trait]
impl Backend for ExecBackend {
    fn info(&self) -> BackendInfo {
        let a = &self.hello.adapter;
        BackendInfo {
            kind: "exec".into(),
            name: a.name.clone(),
            version: a.version.clone(),
            server: format!("{} adapter ({})", a.language, a.homepage),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    /// Sessions take turns: one adapter serves one suite at a time, so a session holds the
    /// connection until it is dropped. Do not hold two sessions on one task.
    async fn open_suite(&self, suite: &str) -> Result<Box<dyn SuiteSession>, BackendError> {
        let n = self.suites_opened.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("{}-{n}", self.namespace_prefix);
        let mut connection = self.connection.clone().lock_owned().await;
        connection
            .call(&Request::Reset {
                suite,
                namespace: &namespace,
            })
            .await
            .and_then(expect_ok)?;
        Ok(Box::new(ExecSession {
            connection,
            declared: self.hello.capabilities.clone(),
        }))
    }

    /// The adapter's own words from its handshake's `reasons`, when it gave any.
    fn unsupported_reason(&self, what: &str) -> String {
        let capability = match what {
            "lease" => "leaseSpender",
            "an explicit clock" => "explicitClock",
            other => other,
        };
        let adapter = &self.hello.adapter.name;
        match self.hello.capabilities.unsupported_reason(capability) {
            Some(reason) => format!("{adapter}: {reason}"),
            None => format!("the exec adapter {adapter} does not claim {what} (it gave no reason)"),
        }
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        self.connection.lock().await.shutdown().await
    }
}

struct ExecSession {
    connection: OwnedMutexGuard<Connection>,
    declared: AdapterCapabilities,
}

impl ExecSession {
    /// Requests for a capability the adapter did not claim are answered here, never sent to it.
    fn declined(&self, capability: &str) -> Result<(), BackendError> {
        if self.declared.claims(capability) {
            return Ok(());
        }
        Err(BackendError::Unsupported(
            match self.declared.unsupported_reason(capability) {
                Some(reason) => reason.to_owned(),
                None => format!("the adapter did not claim {capability} in its hello"),
            },
        ))
    }
}

#[async_trait]
impl SuiteSession for ExecSession {
    async fn check(
        &mut self,
        strategy: &Strategy,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<Decision, BackendError> {
        self.declined(strategy.kind().name())?;
        let request = Request::Check {
            strategy,
            key,
            cost,
            now,
        };
        self.connection
            .call(&request)
            .await
            .and_then(expect_decision)
    }

    async fn debit(
        &mut self,
        options: &TokenBudgetOptions,
        key: &str,
        now: f64,
        tokens: f64,
    ) -> Result<Decision, BackendError> {
        self.declined("tokenBudget")?;
        let request = Request::Debit {
            options,
            key,
            tokens,
            now,
        };
        self.connection
            .call(&request)
            .await
            .and_then(expect_decision)
    }

    async fn lease_grant(
        &mut self,
        config: &LeaseConfig,
        capacity: f64,
        expires_at: f64,
    ) -> Result<(), BackendError> {
        self.declined("leaseSpender")?;
        let request = Request::LeaseGrant {
            lease: config,
            capacity,
            expires_at,
        };
        self.connection.call(&request).await.and_then(expect_ok)
    }

    async fn lease_spend(
        &mut self,
        config: &LeaseConfig,
        now: f64,
        cost: f64,
    ) -> Result<SpendOutcome, BackendError> {
        self.declined("leaseSpender")?;
        let request = Request::LeaseSpend {
            lease: config,
            now,
            cost,
        };
        match self.connection.call(&request).await? {
            Reply::Decision(d) => Ok(SpendOutcome::Allowed(d)),
            Reply::NeedsRefresh => Ok(SpendOutcome::NeedsRefresh),
            other => Err(unexpected(other)),
        }
    }
}

fn expect_ok(reply: Reply) -> Result<(), BackendError> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn expect_decision(reply: Reply) -> Result<Decision, BackendError> {
    match reply {
        Reply::Decision(d) => Ok(d),
        other => Err(unexpected(other)),
    }
}

/// The checker only lets through the shapes a request may get, so this is a harness bug.
fn unexpected(reply: Reply) -> BackendError {
    BackendError::Protocol(format!("reply of an unexpected shape: {reply:?}"))
}

enum StartError {
    Spawn(std::io::Error),
    Handshake(BackendError),
}

/// The adapter process and everything needed to talk to it, restart it, or give up on it.
struct Connection {
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
    hello: Option<Hello>,
}

/// How one exchange went wrong, before it becomes a `BackendError`.
enum Failure {
    /// The adapter crashed or hung: counts against the restart budget.
    Crash(String),
    /// The adapter broke the protocol: it is restarted, but that is not a crash.
    Violation(String),
}

impl Connection {
    /// Spawns the adapter and says hello.
    async fn start(&mut self) -> Result<Hello, StartError> {
        let process = AdapterProcess::spawn(&self.spec).map_err(StartError::Spawn)?;
        self.process = Some(process);
        let request = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            harness: HarnessInfo {
                name: "tk-conform".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        };
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
        if hello.protocol_version != PROTOCOL_VERSION {
            self.discard();
            return Err(StartError::Handshake(BackendError::Protocol(format!(
                "the adapter speaks protocol version {}, this harness speaks {PROTOCOL_VERSION}",
                hello.protocol_version
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
    async fn call(&mut self, request: &Request<'_>) -> Result<Reply, BackendError> {
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
        let line = request.to_line(id);
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

    async fn shutdown(&mut self) -> Result<(), BackendError> {
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
