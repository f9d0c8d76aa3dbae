//! The `exec` backend: an engine in any language, judged through a JSON-lines adapter.
//!
//! The harness starts the adapter program, says `hello`, and then replays each suite as
//! `reset` followed by `check` / `debit` / `lease.*` requests (`docs/adapter-protocol.md`).
//! Everything an adapter can do wrong is a result, not a harness failure: a crash, a hang, a
//! garbled or extra line each fail the trial at hand with a message naming the line, the adapter
//! is restarted (a crash or hang at most `max_restarts` times per run), and a run never hangs.

mod args;
mod connection;
pub mod process;
pub mod protocol;
pub mod v2;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Backend, BackendError, BackendInfo, Capabilities, Capability, SuiteSession};
use crate::model::{Decision, LeaseConfig, SpendOutcome, Strategy, TokenBudgetOptions};
pub use args::{ExecArgs, MissingAdapter, STDERR_LOG};
use connection::{Connection, StartError, unexpected};
use process::LaunchSpec;
pub use process::{CommandLineError, split_command};
use protocol::{
    AdapterCapabilities, Handshake, PROTOCOL_VERSION, REDIS_URL_ENV, Reply, ReplyChecker, Request,
};
pub use v2::V2Session;

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
    /// More environment for the adapter (battle: libfaketime for a skewed group).
    pub env: Vec<(String, String)>,
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
            env: Vec::new(),
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
    #[error("cannot split the adapter command `{command}`")]
    BadCommand {
        command: String,
        #[source]
        reason: process::CommandLineError,
    },
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
    hello: Handshake,
    /// The v1 capabilities (a v2 adapter claims none: it is judged by the property suites).
    declared: AdapterCapabilities,
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
        let mut connection = Connection::new(
            launch_spec(&config, argv),
            ReplyChecker::new(config.strict),
            config.request_timeout,
            config.max_restarts,
            config.command.clone(),
        );
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
        let declared = match &hello {
            Handshake::V1(h) => h.capabilities.clone(),
            Handshake::V2(_) => AdapterCapabilities::none(
                "a protocol-2 adapter declares limiter kinds; the property suites judge them",
            ),
        };
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
            declared,
            capabilities,
            connection: Arc::new(Mutex::new(connection)),
            suites_opened: AtomicU64::new(0),
            namespace_prefix: config.namespace_prefix,
        })
    }

    /// What the adapter said in its handshake.
    pub fn hello(&self) -> &Handshake {
        &self.hello
    }

    /// The adapter's protocol-2 declaration, when it speaks version 2.
    pub fn hello_v2(&self) -> Option<&v2::HelloV2> {
        match &self.hello {
            Handshake::V2(h) => Some(h),
            Handshake::V1(_) => None,
        }
    }

    /// A protocol-2 session over a fresh namespace (as `reset` gives every suite). Sessions take
    /// turns on the one adapter, like [`Backend::open_suite`]'s.
    pub async fn open_v2(&self, suite: &str) -> Result<V2Session, BackendError> {
        let n = self.suites_opened.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("{}:{n}", self.namespace_prefix);
        self.open_v2_in(suite, &namespace).await
    }

    /// A protocol-2 session in a namespace another session already uses: adapters racing on one
    /// key share it.
    pub async fn open_v2_in(
        &self,
        suite: &str,
        namespace: &str,
    ) -> Result<V2Session, BackendError> {
        let Some(hello) = self.hello_v2() else {
            return Err(BackendError::Unsupported(
                "the adapter speaks protocol version 1, which has no limiter kinds".into(),
            ));
        };
        let namespace = namespace.to_owned();
        let mut connection = self.connection.clone().lock_owned().await;
        connection
            .call(&Request::Reset {
                suite,
                namespace: &namespace,
            })
            .await
            .and_then(expect_ok)?;
        Ok(V2Session::new(connection, hello.clone(), namespace))
    }

    /// The running adapter's process id (also its process group id), if one is running.
    pub async fn adapter_pid(&self) -> Option<i32> {
        self.connection.lock().await.pid()
    }

    /// How many times the adapter was restarted after a crash or hang so far.
    pub async fn restarts(&self) -> u32 {
        self.connection.lock().await.restarts()
    }
}

fn launch_spec(config: &ExecConfig, argv: Vec<String>) -> LaunchSpec {
    let mut env = vec![(
        "TK_CONFORM_PROTOCOL_VERSION".into(),
        PROTOCOL_VERSION.to_string(),
    )];
    env.extend(config.env.iter().cloned());
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
        let a = self.hello.adapter();
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
        let namespace = format!("{}:{n}", self.namespace_prefix);
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
            declared: self.declared.clone(),
        }))
    }

    /// The adapter's own words from its handshake's `reasons`, when it gave any.
    fn unsupported_reason(&self, what: Capability) -> String {
        let capability = what.protocol_name();
        let adapter = &self.hello.adapter().name;
        match self.declared.unsupported_reason(capability) {
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

pub(crate) fn expect_ok(reply: Reply) -> Result<(), BackendError> {
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
