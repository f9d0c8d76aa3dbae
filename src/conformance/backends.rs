//! Which engine a run judges (`--backend`), and what it takes to get it ready.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;

use super::trial::TrialSpec;
use crate::backend::Backend;
use crate::backend::exec::{ExecArgs, ExecBackend};
use crate::backend::model::ModelBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::service::{ServerStore, ServiceArgs, ServiceBackend, ServiceTarget};
use crate::infra::{RedisInstance, RedisOptions};
use crate::redis_scripts::ScriptSet;
use crate::report::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The contract's Lua scripts in a real Redis (started here unless --redis-url is given).
    Redis,
    /// The in-process reference model (to check a vectors file itself).
    Model,
    /// An engine in any language behind a JSON-lines adapter (--adapter "<command line>";
    /// docs/adapter-protocol.md). Redis is provisioned as for `redis` and handed to the adapter.
    Exec,
    /// A gRPC server speaking the service door: `--endpoint`, `--server-cmd`, or by default the
    /// reference server (`tk-conform serve`) started here. Judged by the service suites.
    Service,
}

impl BackendKind {
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Redis => "redis",
            BackendKind::Model => "model",
            BackendKind::Exec => "exec",
            BackendKind::Service => "service",
        }
    }
}

/// A backend ready to judge, and what must stay alive while it does.
pub struct Provisioned {
    pub backend: Arc<dyn Backend>,
    /// Trials beyond the vector suites that this backend brings (e.g. service behaviours).
    pub extra_trials: Vec<TrialSpec>,
    /// Servers and children the backend needs; dropped (stopped) after the run.
    pub keep_alive: Vec<Box<dyn Any + Send>>,
    /// Lines for run.log (what was started, where).
    pub notes: Vec<String>,
    /// Whether the golden vectors apply (a protocol-2 adapter is judged by properties only).
    pub vectors: bool,
}

/// What provisioning needs from the command line.
pub struct ProvisionRequest<'a> {
    pub contract_dir: &'a Path,
    /// `--scripts DIR`: the scripts to judge instead of `<contract>/scripts`.
    pub scripts_dir: Option<&'a Path>,
    pub redis: RedisOptions,
    /// Namespaces every key of the run on a shared store.
    pub key_prefix: String,
    /// The run's log folder (an exec adapter's stderr goes there).
    pub log_dir: &'a Path,
    /// `--adapter` and friends, for `--backend exec`.
    pub exec: &'a ExecArgs,
    /// How to reach or start the server (`--backend service`).
    pub service: ServiceArgs,
    /// `--trial-timeout`: the bound on each trial a backend brings.
    pub trial_timeout: std::time::Duration,
}

pub async fn provision(
    kind: BackendKind,
    request: &ProvisionRequest<'_>,
    progress: &Progress,
) -> anyhow::Result<Provisioned> {
    match kind {
        BackendKind::Model => Ok(Provisioned {
            backend: Arc::new(ModelBackend),
            extra_trials: Vec::new(),
            keep_alive: Vec::new(),
            notes: Vec::new(),
            vectors: true,
        }),
        BackendKind::Redis => {
            let scripts = match request.scripts_dir {
                Some(dir) => ScriptSet::from_scripts_dir(dir)?,
                None => ScriptSet::from_contract_dir(request.contract_dir)?,
            };
            progress.phase(
                match &request.redis.url {
                    Some(url) => format!("connecting to {}", crate::infra::redact_url(url)),
                    None => "starting redis-server".into(),
                }
                .as_str(),
            );
            let instance = RedisInstance::provision(&request.redis).await?;
            let con = crate::infra::connect_with_timeout(
                instance.url(),
                crate::backend::redis::SCRIPT_CALL_BOUND,
            )
            .await?;
            let backend = RedisBackend::new(
                Arc::new(scripts),
                con,
                instance.url(),
                instance.version(),
                &request.key_prefix,
            )
            .delete_keys_on_shutdown(instance.is_external());
            let notes = vec![
                format!("redis: {}", instance.describe()),
                format!("key prefix: {}", request.key_prefix),
            ];
            Ok(Provisioned {
                backend: Arc::new(backend),
                extra_trials: Vec::new(),
                keep_alive: vec![Box::new(instance)],
                notes,
                vectors: true,
            })
        }
        BackendKind::Exec => provision_exec(request, progress).await,
        BackendKind::Service => provision_service(request, progress).await,
    }
}

/// Starts Redis (an adapter that needs none just ignores it) and then the adapter. Without a
/// Redis the run goes on: the adapter is told nothing and declines what needs a store.
async fn provision_exec(
    request: &ProvisionRequest<'_>,
    progress: &Progress,
) -> anyhow::Result<Provisioned> {
    // Check the flags before starting anything.
    request.exec.config(request.log_dir, None)?;
    let mut notes = Vec::new();
    let mut keep_alive: Vec<Box<dyn Any + Send>> = Vec::new();
    progress.phase(
        match &request.redis.url {
            Some(url) => format!("connecting to {}", crate::infra::redact_url(url)),
            None => "starting redis-server".into(),
        }
        .as_str(),
    );
    let mut redis_owned = false;
    let redis_url = match RedisInstance::provision(&request.redis).await {
        Ok(instance) => {
            notes.push(format!("redis for the adapter: {}", instance.describe()));
            let url = instance.url().to_owned();
            redis_owned = !instance.is_external();
            keep_alive.push(Box::new(instance));
            Some(url)
        }
        Err(e) if request.redis.url.is_none() => {
            // Without Redis a Redis-backed adapter declines its strategies, so their suites
            // would only show as skipped: where nothing may skip (CI), that is an error.
            if std::env::var("TK_CONFORM_REQUIRE_ALL").as_deref() == Ok("1") {
                anyhow::bail!(
                    "no Redis for the exec adapter ({e}), and TK_CONFORM_REQUIRE_ALL=1 forbids \
                     running without one: install redis-server, or pass --redis-url / --redis-server"
                );
            }
            notes.push(format!(
                "no Redis for the adapter ({e}); TK_CONFORM_REDIS_URL is not set"
            ));
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut config = request.exec.config(request.log_dir, redis_url.clone())?;
    config.namespace_prefix = request.key_prefix.clone();
    progress.phase(&format!("starting the adapter: {}", config.command));
    let stderr_log = config.stderr_log.clone();
    // Racing adapters (the property suites' `race`) log beside the main one.
    let mut racers = config.clone();
    racers.stderr_log = request.log_dir.join("adapter.racers.stderr.log");
    let backend = ExecBackend::start(config).await?;
    let adapter = backend.hello().adapter();
    notes.push(format!(
        "adapter: {} {} ({}, {}, protocol {}); stderr in {}",
        adapter.name,
        adapter.version,
        adapter.language,
        adapter.homepage,
        backend.hello().version(),
        stderr_log.display()
    ));
    notes.push(format!("key namespace prefix: {}", request.key_prefix));
    let backend = Arc::new(backend);
    let v2 = backend.hello_v2().is_some();
    let extra_trials = if v2 {
        notes.push(
            "protocol 2: the adapter declares limiter kinds; judged by the property suites (the golden vectors need protocol 1)"
                .into(),
        );
        crate::property::property_trials(&crate::property::PropertyTarget {
            backend: Arc::clone(&backend),
            redis: redis_url.map(|url| (url, redis_owned)),
            run_prefix: request.key_prefix.clone(),
            runtime: tokio::runtime::Handle::current(),
            timeout: std::time::Duration::from_secs(120),
            racers,
        })
    } else {
        Vec::new()
    };
    Ok(Provisioned {
        backend,
        extra_trials,
        keep_alive,
        notes,
        vectors: !v2,
    })
}

/// Starts (or connects to) the server, with a Redis under it when `--server-store redis`.
async fn provision_service(
    request: &ProvisionRequest<'_>,
    progress: &Progress,
) -> anyhow::Result<Provisioned> {
    let args = &request.service;
    let mut keep_alive: Vec<Box<dyn Any + Send>> = Vec::new();
    let mut notes = Vec::new();
    let redis_url = match (&args.endpoint, args.server_store) {
        (None, ServerStore::Redis) => {
            progress.phase("starting redis-server for the reference server");
            let instance = RedisInstance::provision(&request.redis).await?;
            notes.push(format!("server store: {}", instance.describe()));
            let url = instance.url().to_owned();
            keep_alive.push(Box::new(instance));
            Some(url)
        }
        // An external server on a Redis the caller names: enables the one-oracle suite.
        (Some(_), _) => request.redis.url.clone(),
        (None, ServerStore::Memory) => None,
    };
    let mut target = ServiceTarget::from_args(args, redis_url)?;
    target.contract_dir = request.contract_dir.to_owned();
    target.key_prefix = Some(request.key_prefix.clone());
    progress.phase(
        match &target.endpoint {
            Some(endpoint) => format!("connecting to {endpoint}"),
            None => "starting the server".into(),
        }
        .as_str(),
    );
    let backend = Arc::new(ServiceBackend::start(target).await?);
    notes.push(format!("service endpoint: {}", backend.endpoint()));
    let extra_trials = super::service::service_trials(
        backend.suite_context(),
        tokio::runtime::Handle::current(),
        request.trial_timeout,
    );
    Ok(Provisioned {
        backend,
        extra_trials,
        keep_alive,
        notes,
        vectors: true,
    })
}
