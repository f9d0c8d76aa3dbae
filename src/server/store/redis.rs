//! The Redis store: what N servers on one Redis share. Rate decisions run the contract's own
//! Lua (through the shared script set, on the same `<prefix>:<identity>` keys a direct-Redis
//! client uses: one oracle, two doors). Slots, fleet budgets and Reserve windows run the server's
//! own scripts under `src/server/lua/`, each one atomic.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManagerConfig;

use crate::infra::cluster::AnyConnection;
use redis::{Script, Value};

use crate::infra::sentinel::FollowingConnection;

use super::{Renewal, SlotGrant, Store, StoreError, StoreFaults, WindowGrant};
use crate::model::{Decision, Strategy, TokenBudgetOptions};
use crate::redis_scripts::{ScriptCallError, ScriptSet, decision_from_reply};

/// Every Redis call is bounded: a hung Redis is an error, never a hung server.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// The hash tag every slots key and the registry carry, so that a script given a slots key and
/// the registry as its KEYS touches one Redis Cluster slot (the `cluster-keys` check).
pub const SLOT_TAG: &str = "{tk-conform-slots}";
/// The set of every slots key, walked by the sweep (shared by every server on this Redis and
/// key prefix).
pub const SLOT_KEYS: &str = "{tk-conform-slots}tk-conform-server#slot-keys";

struct Scripts {
    acquire: Script,
    release: Script,
    renew: Script,
    sweep: Script,
    debit: Script,
    reserve: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            acquire: Script::new(include_str!("../lua/slots_acquire.lua")),
            release: Script::new(include_str!("../lua/slots_release.lua")),
            renew: Script::new(include_str!("../lua/slots_renew.lua")),
            sweep: Script::new(include_str!("../lua/slots_sweep.lua")),
            debit: Script::new(include_str!("../lua/budget_debit.lua")),
            reserve: Script::new(include_str!("../lua/reserve.lua")),
        }
    }
}

/// The server's own scripts by name and code (for `cluster-keys`, which names what it audits).
pub fn own_scripts() -> [(&'static str, &'static str); 6] {
    [
        (
            "slots_acquire.lua",
            include_str!("../lua/slots_acquire.lua"),
        ),
        (
            "slots_release.lua",
            include_str!("../lua/slots_release.lua"),
        ),
        ("slots_renew.lua", include_str!("../lua/slots_renew.lua")),
        ("slots_sweep.lua", include_str!("../lua/slots_sweep.lua")),
        ("budget_debit.lua", include_str!("../lua/budget_debit.lua")),
        ("reserve.lua", include_str!("../lua/reserve.lua")),
    ]
}

pub struct RedisStore {
    url: String,
    /// `--key-prefix`: every key this store touches is `<namespace>:<key>` (none when empty).
    namespace: String,
    /// One server's connection, or a cluster-aware one when `url` is a Redis Cluster node.
    con: AnyConnection,
    contract: ScriptSet,
    own: Scripts,
    faults: StoreFaults,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn script_error(e: ScriptCallError) -> StoreError {
    if e.is_unavailable() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Protocol(e.to_string())
    }
}

fn int(value: &Value, what: &str) -> Result<f64, StoreError> {
    match value {
        Value::Int(i) => Ok(*i as f64),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Protocol(format!("{what}: not a number: {value:?}"))),
        other => Err(StoreError::Protocol(format!(
            "{what}: not a number: {other:?}"
        ))),
    }
}

fn ints<const N: usize>(value: &Value, what: &str) -> Result<[f64; N], StoreError> {
    let Value::Array(items) = value else {
        return Err(StoreError::Protocol(format!(
            "{what}: expected an array, got {value:?}"
        )));
    };
    if items.len() != N {
        return Err(StoreError::Protocol(format!(
            "{what}: expected {N} items, got {value:?}"
        )));
    }
    let mut out = [0.0; N];
    for (slot, item) in out.iter_mut().zip(items) {
        *slot = int(item, what)?;
    }
    Ok(out)
}

/// An auto-reconnecting connection to the one node at `url`.
async fn node_connection(url: &str) -> Result<redis::aio::ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(|e| unavailable(format!("{url}: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT))
        .set_number_of_retries(2);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| unavailable(format!("cannot connect to {url}: {e}")))
}

impl RedisStore {
    /// Connects, loads the contract's scripts from `contract_dir`, and caches every script.
    pub async fn connect(
        url: &str,
        contract_dir: &Path,
        namespace: &str,
        faults: StoreFaults,
    ) -> Result<RedisStore, StoreError> {
        let contract = ScriptSet::from_contract_dir(contract_dir)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Behind Sentinel (`redis+sentinel://`), the store follows the primary through a failover.
        let mut con = match crate::infra::sentinel::parse_url(url) {
            Some(target) if faults.no_follow => {
                // A broken server: asks the sentinel once, then stays on that node.
                let target = target.map_err(unavailable)?;
                let node = crate::infra::sentinel::ask_once(&target)
                    .await
                    .map_err(unavailable)?;
                AnyConnection::Single(node_connection(&node).await?)
            }
            Some(target) => {
                let target = target.map_err(unavailable)?;
                AnyConnection::Following(
                    FollowingConnection::open(&target, IO_TIMEOUT)
                        .await
                        .map_err(|e| unavailable(format!("cannot follow {url}: {e}")))?,
                )
            }
            None => {
                let mut con = AnyConnection::Single(node_connection(url).await?);
                // A cluster node: every key is routed to its slot's node, MOVED and ASK
                // followed. (A server whose ACL refuses INFO is taken for a single one.)
                if con.is_cluster_node().await.unwrap_or(false) {
                    con = AnyConnection::cluster(url, IO_TIMEOUT)
                        .await
                        .map_err(|e| unavailable(format!("cannot connect to {url}: {e}")))?;
                }
                con
            }
        };
        contract.load_all(&mut con).await.map_err(script_error)?;
        Ok(RedisStore {
            url: url.to_owned(),
            namespace: namespace.to_owned(),
            con,
            contract,
            own: Scripts::new(),
            faults,
        })
    }

    /// The Redis key of a store key: under the namespace when there is one.
    fn key(&self, key: &str) -> String {
        if self.namespace.is_empty() {
            key.to_owned()
        } else {
            format!("{}:{key}", self.namespace)
        }
    }

    /// A slots key: under the namespace, with the slots' hash tag (one cluster slot with the
    /// registry that names it).
    fn slots_key(&self, key: &str) -> String {
        self.key(&format!("{SLOT_TAG}{key}"))
    }

    fn con(&self) -> AnyConnection {
        self.con.clone()
    }

    async fn run(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
        what: &str,
    ) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.con())
            .await
            .map_err(|e| unavailable(format!("{what} on {}: {e}", self.url)))
    }

    /// A check on a copy of `key`, in one transaction, so nothing the peek does is kept.
    async fn peek_once(
        &self,
        strategy: &Strategy,
        key: &str,
        cost: f64,
    ) -> Result<Result<Decision, bool>, StoreError> {
        let key = &self.key(key);
        let bound = self.contract.bind(strategy).map_err(script_error)?;
        // In the key's slot, as a MULTI on a cluster needs.
        let scratch = crate::infra::cluster::same_slot_key(
            key,
            &format!(
                "#peek:{}",
                crate::server::lease_id::LeaseId::new("", "").nonce
            ),
        );
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("COPY")
            .arg(key)
            .arg(&scratch)
            .arg("REPLACE")
            .ignore()
            .add_command(bound.evalsha_cmd(&scratch, 0.0, cost))
            .cmd("DEL")
            .arg(&scratch)
            .ignore();
        let reply: Result<Vec<Value>, redis::RedisError> = pipe.query_async(&mut self.con()).await;
        match reply {
            Ok(values) => {
                let first = values
                    .first()
                    .ok_or_else(|| StoreError::Protocol("peek: empty transaction reply".into()))?;
                decision_from_reply(first)
                    .map(Ok)
                    .map_err(|p| StoreError::Protocol(p.to_string()))
            }
            // The script cache was emptied (a restart): reload and let the caller retry.
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                    || e.to_string().contains("NOSCRIPT") =>
            {
                self.contract
                    .load_all(&mut self.con())
                    .await
                    .map_err(script_error)?;
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(&scratch)
                    .query_async(&mut self.con())
                    .await;
                Ok(Err(true))
            }
            Err(e) => Err(unavailable(format!("peek on {}: {e}", self.url))),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("redis {}", self.url)
        } else {
            format!("redis {}, keys under {}:", self.url, self.namespace)
        }
    }

    async fn now_ms(&self) -> Result<f64, StoreError> {
        let (seconds, micros): (u64, u64) =
            redis::cmd("TIME")
                .query_async(&mut self.con())
                .await
                .map_err(|e| unavailable(format!("TIME on {}: {e}", self.url)))?;
        // The contract's clock: seconds * 1000 + floor(microseconds / 1000).
        Ok((seconds * 1000 + micros / 1000) as f64)
    }

    async fn check(
        &self,
        strategy: &Strategy,
        key: &str,
        now: Option<f64>,
        cost: f64,
    ) -> Result<Decision, StoreError> {
        // now = 0 asks the script to read Redis's clock (spec 1).
        self.contract
            .check(
                &mut self.con(),
                &self.key(key),
                strategy,
                now.unwrap_or(0.0),
                cost,
            )
            .await
            .map_err(script_error)
    }

    async fn peek(
        &self,
        strategy: &Strategy,
        key: &str,
        cost: f64,
    ) -> Result<Decision, StoreError> {
        match self.peek_once(strategy, key, cost).await? {
            Ok(decision) => Ok(decision),
            Err(_reloaded) => self
                .peek_once(strategy, key, cost)
                .await?
                .map_err(|_| StoreError::Protocol("peek: the script cache keeps emptying".into())),
        }
    }

    async fn debit(
        &self,
        options: &TokenBudgetOptions,
        key: &str,
        tokens: f64,
    ) -> Result<Decision, StoreError> {
        let args = [options.budget, options.window_ms, tokens].map(crate::model::num::to_argv);
        let reply = self
            .run(
                &self.own.debit,
                &[&self.key(key)],
                &args,
                "fleetBudget debit",
            )
            .await?;
        decision_from_reply(&reply)
            .map_err(|p| StoreError::Protocol(format!("fleetBudget debit: {p}")))
    }

    async fn acquire_slot(
        &self,
        slots_key: &str,
        ceiling: u32,
        ttl_ms: f64,
        lease: &str,
    ) -> Result<SlotGrant, StoreError> {
        let args = [
            crate::model::num::to_argv(ttl_ms),
            ceiling.to_string(),
            lease.to_owned(),
            flag(self.faults.never_reclaim),
        ];
        let reply = self
            .run(
                &self.own.acquire,
                &[&self.slots_key(slots_key), &self.key(SLOT_KEYS)],
                &args,
                "slot acquire",
            )
            .await?;
        let [allowed, held, expires_at, now] = ints::<4>(&reply, "slot acquire")?;
        Ok(SlotGrant {
            allowed: allowed == 1.0,
            held: held as u32,
            expires_at,
            now,
        })
    }

    async fn release_slot(&self, slots_key: &str, lease: &str) -> Result<bool, StoreError> {
        let args = [lease.to_owned(), flag(self.faults.late_release_frees)];
        let reply = self
            .run(
                &self.own.release,
                &[&self.slots_key(slots_key)],
                &args,
                "slot release",
            )
            .await?;
        Ok(int(&reply, "slot release")? == 1.0)
    }

    async fn renew_slot(
        &self,
        slots_key: &str,
        lease: &str,
        ttl_ms: f64,
    ) -> Result<Renewal, StoreError> {
        let args = [
            lease.to_owned(),
            crate::model::num::to_argv(ttl_ms),
            flag(self.faults.never_reclaim),
            flag(self.faults.ignore_heartbeat),
        ];
        let reply = self
            .run(
                &self.own.renew,
                &[&self.slots_key(slots_key), &self.key(SLOT_KEYS)],
                &args,
                "slot renew",
            )
            .await?;
        let [live, expires_at] = ints::<2>(&reply, "slot renew")?;
        Ok(if live == 1.0 {
            Renewal::Live { expires_at }
        } else {
            Renewal::Reclaimed
        })
    }

    async fn sweep(&self) -> Result<u64, StoreError> {
        if self.faults.never_reclaim {
            return Ok(0);
        }
        // The registry is read here, and each slots key it names is swept by a script that
        // declares both (one slot), never by a script walking keys it was not given.
        let registry = self.key(SLOT_KEYS);
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&registry)
            .query_async(&mut self.con())
            .await
            .map_err(|e| unavailable(format!("slot sweep on {}: {e}", self.url)))?;
        let mut freed = 0;
        for key in members {
            let reply = self
                .run(&self.own.sweep, &[&key, &registry], &[], "slot sweep")
                .await?;
            freed += int(&reply, "slot sweep")? as u64;
        }
        Ok(freed)
    }

    async fn reserve(
        &self,
        key: &str,
        limit: f64,
        window_ms: f64,
        wants: f64,
    ) -> Result<WindowGrant, StoreError> {
        let mut args = [limit, window_ms, wants]
            .map(crate::model::num::to_argv)
            .to_vec();
        args.push(flag(self.faults.over_grant));
        let reply = self
            .run(&self.own.reserve, &[&self.key(key)], &args, "reserve")
            .await?;
        let [capacity, window_end, now] = ints::<3>(&reply, "reserve")?;
        Ok(WindowGrant {
            capacity,
            window_end,
            now,
        })
    }
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_owned()
}
