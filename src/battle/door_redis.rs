//! The direct door: the contract's Lua scripts straight on Redis, through the script set
//! (EVALSHA, EVAL after NOSCRIPT, ARGV by name) on an auto-reconnecting connection.
//!
//! Two deliberately broken variants exist for the fault-detection tests:
//! - `non-atomic`: the check's read and write are split into two calls (DUMP the key, run the
//!   contract script on a private copy, RESTORE the copy over the key), so racing processes
//!   lose each other's updates;
//! - `no-script-reload`: EVALSHA only, so after a Redis restart every call fails with NOSCRIPT;
//! - `cluster-unaware`: on a Redis Cluster, one plain connection to the node that served the
//!   key at the start, so a slot migration's ASK and MOVED replies come back as errors.
//!
//! On a cluster the door's connection is cluster-aware (`cluster-async`): it routes each
//! EVALSHA by its key, follows MOVED (and refreshes its slot map) and ASK (with ASKING).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::infra::sentinel::FollowingConnection;

use super::clock::{ClientClock, real_ms};
use super::door::{CallError, Door, OpenError};
use super::spec::{NowSource, WorkerFault};
use crate::infra::cluster::AnyConnection as Connection;
use crate::model::{Decision, Strategy};
use crate::redis_scripts::{ScriptCallError, ScriptSet, decision_from_reply};

/// Where the door's scripts come from and what kind of Redis `url` is.
#[derive(Debug, Clone, Default)]
pub struct DoorStore {
    pub contract_dir: PathBuf,
    /// An engine's own scripts folder (`battle --scripts DIR`) instead of the contract's.
    pub scripts_dir: Option<PathBuf>,
    /// `url` is one node of a Redis Cluster.
    pub cluster: bool,
}

pub struct RedisDoor {
    con: Connection,
    scripts: ScriptSet,
    strategy: Strategy,
    key: String,
    scratch: String,
    target: String,
    timeout: Duration,
    fault: Option<WorkerFault>,
    clock: ClientClock,
    now: NowSource,
    /// Where the clock's drift is counted from.
    origin_ms: i64,
}

/// The least time the door is given to open its connection.
const CONNECT_AT_LEAST: Duration = Duration::from_secs(5);

/// Attempts of a `blind-retry` door before it gives up on one call.
const BLIND_RETRIES: u32 = 20;

impl RedisDoor {
    pub async fn connect(
        url: &str,
        contract_dir: &Path,
        strategy: Strategy,
        key: &str,
        timeout: Duration,
        fault: Option<WorkerFault>,
    ) -> Result<RedisDoor, OpenError> {
        let store = DoorStore {
            contract_dir: contract_dir.to_path_buf(),
            ..DoorStore::default()
        };
        Self::connect_with(url, &store, strategy, key, timeout, fault).await
    }

    pub async fn connect_with(
        url: &str,
        store: &DoorStore,
        strategy: Strategy,
        key: &str,
        timeout: Duration,
        fault: Option<WorkerFault>,
    ) -> Result<RedisDoor, OpenError> {
        let scripts = match &store.scripts_dir {
            Some(dir) => ScriptSet::from_scripts_dir(dir)?,
            None => ScriptSet::from_contract_dir(&store.contract_dir)?,
        };
        scripts.bind(&strategy)?;
        // Open is not a call: a short call bound must not fail a start on a busy machine.
        let open = (timeout * 2).max(CONNECT_AT_LEAST);
        let sentinel =
            |e: crate::infra::sentinel::SentinelError| OpenError::Sentinel(e.to_string());
        let con = match crate::infra::sentinel::parse_url(url) {
            None if store.cluster && fault != Some(WorkerFault::ClusterUnaware) => {
                tokio::time::timeout(open, Connection::cluster(url, timeout))
                    .await
                    .map_err(|_| OpenError::Timeout {
                        url: crate::infra::redact_url(url),
                        ms: open.as_millis(),
                    })?
                    .map_err(|source| OpenError::Redis {
                        url: crate::infra::redact_url(url),
                        source,
                    })?
            }
            None => Connection::Single(Self::node(url, timeout, open).await?),
            Some(target) if fault == Some(WorkerFault::NoFollow) => {
                // A broken client: asks the sentinel once, then stays on that node.
                let target = target.map_err(sentinel)?;
                let node = crate::infra::sentinel::ask_once(&target)
                    .await
                    .map_err(sentinel)?;
                Connection::Single(Self::node(&node, timeout, open).await?)
            }
            Some(target) => {
                let target = target.map_err(sentinel)?;
                let con = tokio::time::timeout(open, FollowingConnection::open(&target, timeout))
                    .await
                    .map_err(|_| OpenError::Timeout {
                        url: crate::infra::redact_url(url),
                        ms: open.as_millis(),
                    })?
                    .map_err(sentinel)?;
                Connection::Following(con)
            }
        };
        let mut con = con;
        if fault == Some(WorkerFault::NoScriptReload) {
            // Loads once at start, like a client that never expects the cache to empty.
            scripts.load_all(&mut con).await?;
        }
        Ok(RedisDoor {
            con,
            scripts,
            strategy,
            key: key.into(),
            scratch: format!("{key}:non-atomic-copy:{}", std::process::id()),
            target: format!(
                "redis {}",
                crate::infra::redact_url(url).trim_start_matches("redis://")
            ),
            timeout,
            fault,
            clock: ClientClock::default(),
            now: NowSource::Server,
            origin_ms: real_ms(),
        })
    }

    /// An auto-reconnecting connection to one node.
    async fn node(
        url: &str,
        timeout: Duration,
        open: Duration,
    ) -> Result<ConnectionManager, OpenError> {
        let redis_error = |source| OpenError::Redis {
            url: crate::infra::redact_url(url),
            source,
        };
        let client = redis::Client::open(url).map_err(redis_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_millis(200));
        tokio::time::timeout(open, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| OpenError::Timeout {
                url: crate::infra::redact_url(url),
                ms: open.as_millis(),
            })?
            .map_err(redis_error)
    }

    /// Applies a client clock fault and says where `now` comes from.
    pub fn with_clock(mut self, clock: ClientClock, now: NowSource) -> Self {
        self.clock = clock;
        self.now = now;
        self
    }

    /// The `now` a check sends: 0 (Redis `TIME`) or this worker's skewed clock.
    fn now_arg(&self) -> f64 {
        let client = self.now == NowSource::Client || self.fault == Some(WorkerFault::SkewedNow);
        if client {
            self.clock.read(real_ms(), self.origin_ms) as f64
        } else {
            0.0
        }
    }

    /// Points the door at another key (the load benchmark spreads calls over many).
    pub fn set_key(&mut self, key: String) {
        self.scratch = format!("{key}:non-atomic-copy:{}", std::process::id());
        self.key = key;
    }

    async fn checked(&mut self, cost: u64) -> Result<Decision, ScriptCallError> {
        let bound = self.scripts.bind(&self.strategy)?;
        match self.fault {
            Some(WorkerFault::NoScriptReload) => {
                let reply: redis::Value = bound
                    .evalsha_cmd(&self.key, 0.0, cost as f64)
                    .query_async(&mut self.con)
                    .await
                    .map_err(|source| ScriptCallError::Redis {
                        script: bound.script().entry.name.clone(),
                        source,
                    })?;
                decision_from_reply(&reply).map_err(|problem| ScriptCallError::Reply {
                    script: bound.script().entry.name.clone(),
                    reply: format!("{reply:?}"),
                    problem,
                })
            }
            Some(WorkerFault::NonAtomic) => {
                let script = bound.script().entry.name.clone();
                let redis_error = |source| ScriptCallError::Redis {
                    script: script.clone(),
                    source,
                };
                // Call one: read.
                let (dump, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
                    .cmd("DUMP")
                    .arg(&self.key)
                    .cmd("PTTL")
                    .arg(&self.key)
                    .query_async(&mut self.con)
                    .await
                    .map_err(redis_error)?;
                // The contract script, on a private copy of what was read.
                let _: () = match &dump {
                    Some(bytes) => redis::cmd("RESTORE")
                        .arg(&self.scratch)
                        .arg(pttl.max(0))
                        .arg(bytes.as_slice())
                        .arg("REPLACE")
                        .query_async(&mut self.con)
                        .await
                        .map_err(redis_error)?,
                    None => redis::cmd("DEL")
                        .arg(&self.scratch)
                        .query_async::<i64>(&mut self.con)
                        .await
                        .map(|_| ())
                        .map_err(redis_error)?,
                };
                let decision = bound
                    .call(&mut self.con, &self.scratch, 0.0, cost as f64)
                    .await?;
                let (copy, copy_ttl): (Option<Vec<u8>>, i64) = redis::pipe()
                    .cmd("DUMP")
                    .arg(&self.scratch)
                    .cmd("PTTL")
                    .arg(&self.scratch)
                    .query_async(&mut self.con)
                    .await
                    .map_err(redis_error)?;
                // Call two: write back, whatever others wrote in between.
                if let Some(bytes) = copy {
                    let _: () = redis::cmd("RESTORE")
                        .arg(&self.key)
                        .arg(copy_ttl.max(0))
                        .arg(bytes.as_slice())
                        .arg("REPLACE")
                        .query_async(&mut self.con)
                        .await
                        .map_err(redis_error)?;
                }
                Ok(decision)
            }
            _ => {
                let now = self.now_arg();
                bound.call(&mut self.con, &self.key, now, cost as f64).await
            }
        }
    }
}

impl RedisDoor {
    async fn check_once(&mut self, cost: u64) -> Result<Decision, CallError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.checked(cost)).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(CallError::Indeterminate(format!(
                "no reply within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

fn classify(e: ScriptCallError) -> CallError {
    let text = e.to_string();
    match &e {
        ScriptCallError::Redis { source, .. } if source.is_connection_refusal() => {
            CallError::Definite(text)
        }
        ScriptCallError::Redis { source, .. }
            if source.is_io_error() || source.is_timeout() || source.is_connection_dropped() =>
        {
            CallError::Indeterminate(text)
        }
        // The script ran but answered nonsense: it may have written.
        ScriptCallError::Reply { .. } => CallError::Indeterminate(text),
        _ => CallError::Definite(text),
    }
}

#[async_trait]
impl Door for RedisDoor {
    fn target(&self) -> String {
        self.target.clone()
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&mut self, cost: u64) -> Result<Decision, CallError> {
        let mut attempts = 0;
        loop {
            let r = self.check_once(cost).await;
            attempts += 1;
            // A broken client: an indeterminate call is sent again as if it had never happened.
            match r {
                Err(CallError::Indeterminate(_))
                    if self.fault == Some(WorkerFault::BlindRetry) && attempts < BLIND_RETRIES => {}
                r => return r,
            }
        }
    }
}
