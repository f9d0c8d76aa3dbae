//! The `service` backend: any server speaking the contract's gRPC door, reached at an endpoint
//! or started (and owned) by the harness from a command template. It has no explicit clock, so
//! vector suites are skipped; the service suites (`crate::service_suites`) judge it instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::service_process::{Placeholders, ServerProcess, fill_template, wants_port};
use super::{Backend, BackendError, BackendInfo, Capabilities, Capability, SuiteSession};
use crate::service_suites::{self, ServiceClients, SuiteContext};

/// How the harness reaches the server under test (flatten into a command's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// An already running server, `host:port`.
    #[arg(long, conflicts_with = "server_cmd")]
    pub endpoint: Option<String>,
    /// Start the server from this template; `{port}`, `{policy}`, `{redis}`, `{index}`,
    /// `{contract}`, `{lease_ttl_ms}` and `{key_prefix}` (put every Redis key under
    /// `<key_prefix>:`) are filled in (`{config}` and `{redis_url}` are accepted too).
    /// Default: the reference server, `tk-conform serve`.
    #[arg(long)]
    pub server_cmd: Option<String>,
    /// The policy file the started server serves (the service suites expect this one).
    #[arg(long, default_value = service_suites::POLICY_FILE)]
    pub server_config: PathBuf,
    /// What the started reference server stores in (`redis` starts or uses the run's Redis,
    /// and adds the one-oracle suite).
    #[arg(long, value_enum, default_value = "memory")]
    pub server_store: ServerStore,
    /// The lease TTL the server runs with: short keeps the lifecycle suites quick, long enough
    /// that a loaded machine finishes each lifecycle step within one lease.
    #[arg(long, default_value_t = 1000)]
    pub lease_ttl_ms: u64,
    #[arg(long, env = "TK_FLEET_SECRET", hide_env_values = true)]
    pub fleet_secret: Option<String>,
    #[arg(long, env = "TK_MONITOR_SECRET", hide_env_values = true)]
    pub monitor_secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerStore {
    Memory,
    Redis,
}

/// Everything needed to reach or start a server, resolved.
#[derive(Debug, Clone)]
pub struct ServiceTarget {
    pub endpoint: Option<String>,
    pub server_cmd: Option<String>,
    pub config: PathBuf,
    /// The Redis the server stores in (filled into `{redis}`; enables the one-oracle suite).
    pub redis_url: Option<String>,
    pub lease_ttl: Duration,
    pub fleet_secret: Option<String>,
    pub monitor_secret: Option<String>,
    /// The `tk-conform` executable for the default command (tests pass the built binary).
    pub exe: PathBuf,
    /// The contract whose Lua a Redis-backed server and the direct door run.
    pub contract_dir: PathBuf,
    /// Every key a started server writes in Redis goes under `<key_prefix>:` (the reference
    /// server's `--key-prefix`, a template's `{key_prefix}`); the direct door uses it too.
    pub key_prefix: Option<String>,
}

impl ServiceTarget {
    pub fn from_args(
        args: &ServiceArgs,
        redis_url: Option<String>,
    ) -> Result<ServiceTarget, BackendError> {
        let exe = std::env::current_exe().map_err(|e| {
            BackendError::Unavailable(format!("cannot find the tk-conform executable: {e}"))
        })?;
        Ok(ServiceTarget {
            endpoint: args.endpoint.clone(),
            server_cmd: args.server_cmd.clone(),
            config: args.server_config.clone(),
            redis_url,
            lease_ttl: Duration::from_millis(args.lease_ttl_ms),
            fleet_secret: args.fleet_secret.clone(),
            monitor_secret: args.monitor_secret.clone(),
            exe,
            contract_dir: PathBuf::from("contract"),
            key_prefix: None,
        })
    }

    /// The reference server on `config`, started from `exe`.
    pub fn reference(
        exe: impl Into<PathBuf>,
        config: impl Into<PathBuf>,
        lease_ttl: Duration,
    ) -> ServiceTarget {
        ServiceTarget {
            endpoint: None,
            server_cmd: None,
            config: config.into(),
            redis_url: None,
            lease_ttl,
            fleet_secret: None,
            monitor_secret: None,
            exe: exe.into(),
            contract_dir: PathBuf::from("contract"),
            key_prefix: None,
        }
    }

    /// The argv to start, and the port it was told to use (if the template has `{port}`).
    fn command(&self) -> Result<(Vec<String>, Option<u16>), BackendError> {
        let config = self.config.display().to_string();
        let ttl = self.lease_ttl.as_millis().to_string();
        let Some(template) = &self.server_cmd else {
            let mut argv = vec![
                self.exe.display().to_string(),
                "serve".into(),
                "--config".into(),
                config,
                "--port".into(),
                "0".into(),
                "--lease-ttl-ms".into(),
                ttl,
            ];
            if let Some(url) = &self.redis_url {
                argv.extend(["--redis".into(), url.clone()]);
                argv.extend(["--contract".into(), self.contract_dir.display().to_string()]);
                if let Some(prefix) = &self.key_prefix {
                    argv.extend(["--key-prefix".into(), prefix.clone()]);
                }
            }
            return Ok((argv, None));
        };
        let port = if wants_port(template) {
            Some(free_port()?)
        } else {
            None
        };
        let argv = fill_template(
            template,
            &Placeholders {
                exe: self.exe.display().to_string(),
                port,
                policy: config,
                redis: self.redis_url.clone(),
                index: 0,
                contract: self.contract_dir.display().to_string(),
                lease_ttl_ms: self.lease_ttl.as_millis() as u64,
                key_prefix: self.key_prefix.clone().unwrap_or_default(),
                fail: "closed".into(),
            },
        )
        .map_err(|e| BackendError::Unavailable(format!("{:#}", anyhow::Error::new(e))))?;
        Ok((argv, port))
    }
}

/// A free loopback port for a server that must be told one (a tiny race is accepted).
fn free_port() -> Result<u16, BackendError> {
    crate::infra::free_loopback_port()
        .map_err(|e| BackendError::Unavailable(format!("cannot find a free port: {e}")))
}

pub struct ServiceBackend {
    clients: ServiceClients,
    target: ServiceTarget,
    process: tokio::sync::Mutex<Option<ServerProcess>>,
}

impl ServiceBackend {
    /// Connects to the endpoint, or starts the server and waits until it listens.
    pub async fn start(target: ServiceTarget) -> Result<ServiceBackend, BackendError> {
        let (endpoint, process) = match &target.endpoint {
            Some(endpoint) => (endpoint.clone(), None),
            None => {
                let (argv, port) = target.command()?;
                let process = ServerProcess::start(&argv, port)
                    .await
                    .map_err(|e| BackendError::Unavailable(e.to_string()))?;
                (process.addr.to_string(), Some(process))
            }
        };
        let clients = service_suites::connect(
            &endpoint,
            target.fleet_secret.clone(),
            target.monitor_secret.clone(),
        )
        .await
        .map_err(|e| {
            BackendError::Unavailable(format!("cannot connect to the server at {endpoint}: {e}"))
        })?;
        Ok(ServiceBackend {
            clients,
            target,
            process: tokio::sync::Mutex::new(process),
        })
    }

    /// The prefix the server puts before every Redis key, when the harness told it one (an
    /// `--endpoint` server or a template without `{key_prefix}` keeps its own keys).
    fn store_prefix(&self) -> Option<String> {
        let told = match (&self.target.endpoint, &self.target.server_cmd) {
            (Some(_), _) => false,
            (None, Some(template)) => template.contains("{key_prefix}"),
            (None, None) => true,
        };
        self.target.key_prefix.clone().filter(|_| told)
    }

    pub fn endpoint(&self) -> &str {
        &self.clients.endpoint
    }

    /// The context the service suites run in, with keys unique to this run.
    pub fn suite_context(&self) -> Arc<SuiteContext> {
        Arc::new(SuiteContext {
            clients: self.clients.clone(),
            redis_url: self.target.redis_url.clone(),
            run_tag: run_tag(),
            contract_dir: self.target.contract_dir.clone(),
            store_prefix: self.store_prefix(),
        })
    }
}

/// A short tag unique to this run (time and pid), for key names.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{:x}", nanos % 0xffff_ffff_ffff, std::process::id())
}

#[async_trait]
impl Backend for ServiceBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "service".into(),
            name: match (&self.target.endpoint, &self.target.server_cmd) {
                (Some(_), _) => "external gRPC server".into(),
                (None, Some(cmd)) => cmd.clone(),
                (None, None) => "tk-conform serve (reference server)".into(),
            },
            version: String::new(),
            server: format!(
                "{}{}",
                self.clients.endpoint,
                self.target
                    .redis_url
                    .as_deref()
                    .map(|r| format!(" on {}", crate::infra::redact_url(r)))
                    .unwrap_or_default()
            ),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            explicit_clock: false,
            lifecycle: true,
            fleet_lease: true,
            ..Capabilities::everything()
        }
    }

    fn unsupported_reason(&self, what: Capability) -> String {
        format!(
            "vector replay needs {what}, but the service door decides on the server's own clock; \
             the service::* suites judge this backend"
        )
    }

    async fn open_suite(&self, _suite: &str) -> Result<Box<dyn SuiteSession>, BackendError> {
        Err(BackendError::Unsupported(
            "vector replay needs an explicit clock, but the service door decides on the server's own clock; \
             the service::* suites judge this backend"
                .into(),
        ))
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        if let Some(process) = self.process.lock().await.take() {
            process.stop().await;
        }
        Ok(())
    }
}
