//! Which engine a run judges (`--backend`), and what it takes to get it ready.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;

use super::trial::TrialSpec;
use crate::backend::Backend;
use crate::backend::model::ModelBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::service::{ServerStore, ServiceArgs, ServiceBackend, ServiceTarget};
use crate::infra::{RedisInstance, RedisOptions, connect};
use crate::redis_scripts::ScriptSet;
use crate::report::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The contract's Lua scripts in a real Redis (started here unless --redis-url is given).
    Redis,
    /// The in-process reference model (to check a vectors file itself).
    Model,
    /// A gRPC server speaking the service door: `--endpoint`, `--server-cmd`, or by default the
    /// reference server (`tk-conform serve`) started here. Judged by the service suites.
    Service,
}

impl BackendKind {
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Redis => "redis",
            BackendKind::Model => "model",
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
}

/// What provisioning needs from the command line.
pub struct ProvisionRequest<'a> {
    pub contract_dir: &'a Path,
    pub redis: RedisOptions,
    /// Namespaces every key of the run on a shared store.
    pub key_prefix: String,
    /// How to reach or start the server (`--backend service`).
    pub service: ServiceArgs,
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
        }),
        BackendKind::Service => provision_service(request, progress).await,
        BackendKind::Redis => {
            let scripts = ScriptSet::from_contract_dir(request.contract_dir)?;
            progress.phase(
                match &request.redis.url {
                    Some(url) => format!("connecting to {url}"),
                    None => "starting redis-server".into(),
                }
                .as_str(),
            );
            let instance = RedisInstance::provision(&request.redis).await?;
            let con = connect(instance.url()).await?;
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
            })
        }
    }
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
    progress.phase(
        match &target.endpoint {
            Some(endpoint) => format!("connecting to {endpoint}"),
            None => "starting the server".into(),
        }
        .as_str(),
    );
    let backend = Arc::new(ServiceBackend::start(target).await?);
    notes.push(format!("service endpoint: {}", backend.endpoint()));
    let extra_trials =
        super::service::service_trials(backend.suite_context(), tokio::runtime::Handle::current());
    Ok(Provisioned {
        backend,
        extra_trials,
        keep_alive,
        notes,
    })
}
