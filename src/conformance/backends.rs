//! Which engine a run judges (`--backend`), and what it takes to get it ready.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;

use super::trial::TrialSpec;
use crate::backend::Backend;
use crate::backend::model::ModelBackend;
use crate::backend::redis::RedisBackend;
use crate::infra::{RedisInstance, RedisOptions, connect};
use crate::redis_scripts::ScriptSet;
use crate::report::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The contract's Lua scripts in a real Redis (started here unless --redis-url is given).
    Redis,
    /// The in-process reference model (to check a vectors file itself).
    Model,
}

impl BackendKind {
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Redis => "redis",
            BackendKind::Model => "model",
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
