//! Redis behind Sentinel, for `[topology] redis = "replicated"`: a primary, one replica and one
//! `redis-sentinel`, all [`OwnedChild`]ren on loopback ports (gone with the run, however it
//! ends), the `failover` fault, and the connection clients use to follow the primary.
//!
//! Clients get the URL `redis+sentinel://127.0.0.1:<sentinel port>/<master name>` (the direct
//! door and `tk-conform serve --redis` both take it). A [`FollowingConnection`] asks the
//! sentinel for the primary (`SENTINEL get-master-addr-by-name`) every [`POLL`], switches its
//! connection as soon as the answer changes, and asks again after any error that says the node
//! is gone or no longer the primary (a timeout, a dropped or refused connection, `READONLY`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use serde::Serialize;
use tokio::sync::watch;

use super::child::{ChildError, OwnedChild};
use super::cleanup::TempFolder;
use super::port::free_loopback_port;
use super::redis::{LocalRedis, RedisError, connect};

/// The URL scheme of a store behind Sentinel.
pub const SCHEME: &str = "redis+sentinel://";
/// The name the harness's sentinel monitors its primary under.
pub const MASTER_NAME: &str = "tkc";
/// How often a following connection asks the sentinel who the primary is.
pub const POLL: Duration = Duration::from_millis(50);
/// The sentinel calls the primary down after this long without an answer (long enough that a
/// loaded machine's stall is not taken for a dead primary).
const DOWN_AFTER_MS: u64 = 1000;
/// Bounds on the harness's own waits: the replica syncing, the sentinel finding it, a failover.
const SYNC_BOUND: Duration = Duration::from_secs(15);
const FAILOVER_BOUND: Duration = Duration::from_secs(20);
/// How long the replica may take to read what the frozen primary had already sent it, and how
/// long its offset must stand still to count as settled.
const SETTLE_BOUND: Duration = Duration::from_secs(1);
const STILL: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("`{url}` is not {SCHEME}HOST:PORT/MASTER: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no redis-sentinel on PATH (Debian: apt-get install redis-sentinel)")]
    NoSentinelBinary,
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("cannot write the sentinel's files in {}: {source}", dir.display())]
    Files {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} on {url}: {source}")]
    Command {
        what: &'static str,
        url: String,
        source: redis::RedisError,
    },
    #[error("{what} within {seconds} s (last seen: {last})")]
    Timeout {
        what: &'static str,
        seconds: u64,
        last: String,
    },
    #[error("{replica} was not an in-sync replica of {primary} when the failover was due: {info}")]
    NotReplicating {
        replica: String,
        primary: String,
        info: String,
    },
    #[error("redis-sentinel exited ({status}); last log lines: {log}")]
    SentinelExited { status: String, log: String },
}

/// Where a `redis+sentinel://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `redis://HOST:PORT` of the sentinel.
    pub sentinel_url: String,
    pub master: String,
}

/// `Some` when `url` is a sentinel URL (then parsed), `None` for any other URL.
pub fn parse_url(url: &str) -> Option<Result<SentinelTarget, SentinelError>> {
    let rest = url.strip_prefix(SCHEME)?;
    let bad = |reason: &str| SentinelError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    Some(match rest.split_once('/') {
        Some((host, master))
            if !host.is_empty()
                && host
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !master.is_empty()
                && master
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            Ok(SentinelTarget {
                sentinel_url: format!("redis://{host}"),
                master: master.to_owned(),
            })
        }
        Some((_, "")) | None => Err(bad("the master name is missing")),
        _ => Err(bad(
            "HOST:PORT and a master name of letters, digits and `-`",
        )),
    })
}

/// The primary's `redis://HOST:PORT`, as the sentinel says now.
pub async fn master_url(
    sentinel: &mut MultiplexedConnection,
    master: &str,
) -> redis::RedisResult<String> {
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(sentinel)
        .await?;
    Ok(format!("redis://{host}:{port}"))
}

/// The primary the sentinel at `target` names now.
pub async fn ask_once(target: &SentinelTarget) -> Result<String, SentinelError> {
    let mut sentinel = connect(&target.sentinel_url).await?;
    master_url(&mut sentinel, &target.master)
        .await
        .map_err(command_error(
            "SENTINEL get-master-addr-by-name",
            &target.sentinel_url,
        ))
}

/// Errors after which the node may be gone or no longer the primary.
fn says_moved(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

/// A connection to whichever node the sentinel calls the primary (cheap to clone: every clone
/// shares the connection and the sentinel poll).
#[derive(Clone)]
pub struct FollowingConnection {
    inner: Arc<Following>,
}

struct Following {
    master: watch::Receiver<Option<String>>,
    current: tokio::sync::Mutex<Option<(String, MultiplexedConnection)>>,
    config: AsyncConnectionConfig,
}

impl FollowingConnection {
    /// Asks the sentinel for the primary and connects to it; `timeout` bounds every connect and
    /// every reply.
    pub async fn open(
        target: &SentinelTarget,
        timeout: Duration,
    ) -> Result<FollowingConnection, SentinelError> {
        let first = ask_once(target).await?;
        let sentinel = connect(&target.sentinel_url).await?;
        let (tx, rx) = watch::channel(Some(first));
        tokio::spawn(poll(tx, target.clone(), sentinel));
        let con = FollowingConnection {
            inner: Arc::new(Following {
                master: rx,
                current: tokio::sync::Mutex::new(None),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout)),
            }),
        };
        con.connection()
            .await
            .map_err(|source| SentinelError::Command {
                what: "connect to the primary",
                url: target.sentinel_url.clone(),
                source,
            })?;
        Ok(con)
    }

    /// The connection to the primary the sentinel names now (a new one when it changed).
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let want = self.inner.master.borrow().clone();
        let mut current = self.inner.current.lock().await;
        if let Some((addr, con)) = &*current
            && want.as_ref().is_none_or(|w| w == addr)
        {
            return Ok(con.clone());
        }
        let Some(url) = want else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the sentinel has not named a primary",
            )));
        };
        let client = redis::Client::open(url.as_str())?;
        let con = client
            .get_multiplexed_async_connection_with_config(&self.inner.config)
            .await?;
        *current = Some((url, con.clone()));
        Ok(con)
    }

    /// After an error that says the node may have moved, the next call connects afresh.
    async fn forget(&self, e: &redis::RedisError) {
        if says_moved(e) {
            *self.inner.current.lock().await = None;
        }
    }
}

/// Keeps `tx` on the sentinel's answer until every connection sharing it is gone.
async fn poll(
    tx: watch::Sender<Option<String>>,
    target: SentinelTarget,
    mut sentinel: MultiplexedConnection,
) {
    while !tx.is_closed() {
        tokio::time::sleep(POLL).await;
        match master_url(&mut sentinel, &target.master).await {
            Ok(url) => {
                tx.send_if_modified(|now| {
                    let changed = now.as_deref() != Some(url.as_str());
                    *now = Some(url);
                    changed
                });
            }
            Err(_) => {
                if let Ok(fresh) = connect(&target.sentinel_url).await {
                    sentinel = fresh;
                }
            }
        }
    }
}

impl ConnectionLike for FollowingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut con = self.connection().await?;
            let reply = con.req_packed_command(cmd).await;
            if let Err(e) = &reply {
                self.forget(e).await;
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut con = self.connection().await?;
            let reply = con.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &reply {
                self.forget(e).await;
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The replication offsets and the watched keys' counts at the moment of a failover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    pub old_primary: String,
    pub new_primary: String,
    /// The primary's `master_repl_offset` once its writes were paused: every byte of every
    /// write it had acknowledged.
    pub primary_offset: i64,
    /// The replica's own `slave_repl_offset` once it had read what the frozen primary sent.
    pub replica_offset: i64,
    /// `unreplicated_ms`: how long the replica had been cut off before the failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_cut_ms: Option<u64>,
    /// Each watched fixedWindow key on both nodes at that moment.
    pub keys: Vec<KeyAtFailover>,
    /// Epoch µs: the primary's writes paused (the moment of the failover), the sentinel
    /// switched to the replica, the old primary was let run again (a stale primary).
    pub paused_us: i64,
    pub switched_us: i64,
    pub resumed_us: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyAtFailover {
    pub key: String,
    /// `(window start, count)` of the fixedWindow hash; `None` when the key did not exist.
    pub primary: Option<(i64, u64)>,
    pub replica: Option<(i64, u64)>,
}

/// A primary, its replica and a sentinel watching them, all owned by the run.
pub struct ReplicatedRedis {
    primary: LocalRedis,
    replica: LocalRedis,
    sentinel: OwnedChild,
    sentinel_port: u16,
    /// The sentinel's config (it rewrites it) and log.
    dir: TempFolder,
    version: String,
}

/// `redis-sentinel` on PATH.
pub fn find_sentinel_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-sentinel"))
        .find(|p| p.is_file())
}

fn command_error(what: &'static str, url: &str) -> impl FnOnce(redis::RedisError) -> SentinelError {
    let url = url.to_owned();
    move |source| SentinelError::Command { what, url, source }
}

/// One field of an INFO section.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

async fn info_replication(url: &str) -> Result<String, SentinelError> {
    let mut con = connect(url).await?;
    redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut con)
        .await
        .map_err(command_error("INFO replication", url))
}

impl ReplicatedRedis {
    /// Starts the primary and the replica from `redis_binary`, waits until the replica is in
    /// sync, then starts the sentinel and waits until it knows the replica.
    pub async fn start(
        redis_binary: &Path,
        sentinel_binary: &Path,
    ) -> Result<ReplicatedRedis, SentinelError> {
        let primary = LocalRedis::start(redis_binary).await?;
        let replica = LocalRedis::start(redis_binary).await?;
        // The first full sync at once, not after the default 5 s wait for more replicas.
        // (Both: the replica syncs the demoted old primary after a failover.)
        for url in [primary.url(), replica.url()] {
            let mut con = connect(&url).await?;
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("repl-diskless-sync-delay")
                .arg(0)
                .query_async(&mut con)
                .await
                .map_err(command_error("CONFIG SET", &url))?;
        }
        let mut con = connect(&replica.url()).await?;
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port())
            .query_async(&mut con)
            .await
            .map_err(command_error("REPLICAOF", &replica.url()))?;
        // In sync once the primary streams to it: after a diskless sync the primary holds the
        // stream back until the replica's first ACK (up to a second later). A PUBLISH is
        // propagated without writing a key, so the replica's offset catching up with it shows
        // the stream flows.
        let deadline = Deadline::new(SYNC_BOUND, "the replica did not sync");
        let mut primary_con = connect(&primary.url()).await?;
        loop {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("tk-conform:replication-probe")
                .arg(1)
                .query_async(&mut primary_con)
                .await
                .map_err(command_error("PUBLISH", &primary.url()))?;
            let sent = offset(
                &info_replication(&primary.url()).await?,
                "master_repl_offset",
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let info = info_replication(&replica.url()).await?;
            if sent > 0 && offset(&info, "slave_repl_offset") >= sent {
                break;
            }
            deadline.check(&info)?;
        }
        let version = super::redis::server_version(&mut connect(&primary.url()).await?)
            .await
            .map_err(command_error("INFO server", &primary.url()))?;

        let dir =
            TempFolder::new("tk-conform-sentinel-").map_err(|source| SentinelError::Files {
                dir: std::env::temp_dir(),
                source,
            })?;
        let files = |source| SentinelError::Files {
            dir: dir.path().to_path_buf(),
            source,
        };
        let sentinel_port = free_loopback_port().map_err(files)?;
        let conf = dir.path().join("sentinel.conf");
        let log = dir.path().join("sentinel.log");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode yes\n\
                 dir {dir}\nlogfile {log}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display(),
                log = log.display(),
                primary = primary.port(),
            ),
        )
        .map_err(files)?;
        let mut command = Command::new(sentinel_binary);
        command
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut sentinel = OwnedChild::spawn("redis-sentinel", command)?;
        let sentinel_url = format!("redis://127.0.0.1:{sentinel_port}");
        let replica_port = replica.port().to_string();
        let deadline = Deadline::new(SYNC_BOUND, "the sentinel did not find the replica");
        loop {
            if let Some(status) = sentinel.try_exit() {
                return Err(SentinelError::SentinelExited {
                    status: status.to_string(),
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            let mut last = "no answer yet".to_string();
            if let Ok(mut con) = connect(&sentinel_url).await {
                let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                    .arg("replicas")
                    .arg(MASTER_NAME)
                    .query_async(&mut con)
                    .await
                    .unwrap_or_default();
                let found = replicas.iter().any(|r| {
                    let field = |name: &str| {
                        r.iter()
                            .position(|f| f == name)
                            .and_then(|i| r.get(i + 1))
                            .map(String::as_str)
                    };
                    field("port") == Some(replica_port.as_str()) && field("flags") == Some("slave")
                });
                if found {
                    break;
                }
                last = format!("{replicas:?}");
            }
            deadline.check(&last)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ReplicatedRedis {
            primary,
            replica,
            sentinel,
            sentinel_port,
            dir,
            version,
        })
    }

    /// The URL clients follow the primary by.
    pub fn url(&self) -> String {
        format!("{SCHEME}127.0.0.1:{}/{MASTER_NAME}", self.sentinel_port)
    }

    /// The primary the sentinel names now (`redis://…`), for reading the store directly.
    pub async fn primary_url(&self) -> Result<String, SentinelError> {
        let sentinel_url = format!("redis://127.0.0.1:{}", self.sentinel_port);
        let mut con = connect(&sentinel_url).await?;
        master_url(&mut con, MASTER_NAME)
            .await
            .map_err(command_error(
                "SENTINEL get-master-addr-by-name",
                &sentinel_url,
            ))
    }

    /// The three logs (the sentinel's `+sdown`, `+switch-master`, …), by file name, for the
    /// run folder.
    pub fn logs(&self) -> [(&'static str, PathBuf); 3] {
        [
            ("sentinel.log", self.dir.path().join("sentinel.log")),
            ("redis-primary.log", self.primary.log_path()),
            ("redis-replica.log", self.replica.log_path()),
        ]
    }

    pub fn describe(&self) -> String {
        format!(
            "{} primary {} (pid {}), replica {} (pid {}), redis-sentinel 127.0.0.1:{} (pid {}, \
             master `{MASTER_NAME}`, files in {})",
            self.version,
            self.primary.url(),
            self.primary.pid(),
            self.replica.url(),
            self.replica.pid(),
            self.sentinel_port,
            self.sentinel.pid(),
            self.dir.path().display()
        )
    }

    /// The `failover` fault. The primary's writes are paused (`CLIENT PAUSE … WRITE`), so its
    /// `master_repl_offset` and the watched keys are what it had acknowledged; then it is frozen
    /// (SIGSTOP), the replica's offset and keys are read once it has taken in what was sent,
    /// the sentinel fails over to the replica (bounded), and `resume_after` later the old
    /// primary runs again, unpaused: a stale primary until the sentinel demotes it. Clients
    /// that still write to it then are the split brain the `failover-bound` check catches.
    pub async fn failover(
        &self,
        keys: &[String],
        resume_after: Duration,
        unreplicated: Option<Duration>,
    ) -> Result<FailoverRecord, SentinelError> {
        let old = self.primary_url().await?;
        let mut record = FailoverRecord {
            old_primary: old.clone(),
            ..FailoverRecord::default()
        };
        let (frozen, promoted) = if old == self.primary.url() {
            (&self.primary, &self.replica)
        } else {
            (&self.replica, &self.primary)
        };
        // A failover only means something from a replica in sync with the primary.
        let info = info_replication(&promoted.url()).await?;
        let old_port = old.rsplit(':').next().unwrap_or_default();
        if info_field(&info, "role").as_deref() != Some("slave")
            || info_field(&info, "master_port").as_deref() != Some(old_port)
            || info_field(&info, "master_link_status").as_deref() != Some("up")
        {
            return Err(SentinelError::NotReplicating {
                replica: promoted.url(),
                primary: old,
                info: info.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
        let mut con = connect(&old).await?;
        if let Some(gap) = unreplicated {
            // The replica, frozen, cannot reconnect: what the primary acknowledges from here on
            // stays in its backlog. (What was sent before waits in the replica's socket.)
            promoted.signal(Signal::SIGSTOP)?;
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("replica")
                .query_async(&mut con)
                .await
                .map_err(command_error("CLIENT KILL TYPE replica", &old))?;
            tokio::time::sleep(gap).await;
        }
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(FAILOVER_BOUND.as_millis() as u64 * 2)
            .arg("WRITE")
            .query_async(&mut con)
            .await
            .map_err(command_error("CLIENT PAUSE", &old))?;
        record.paused_us = now_us();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con)
            .await
            .map_err(command_error("INFO replication", &old))?;
        record.primary_offset = offset(&info, "master_repl_offset");
        let mut counts = Vec::new();
        for key in keys {
            counts.push(
                window_of(&mut con, key)
                    .await
                    .map_err(command_error("HMGET", &old))?,
            );
        }
        drop(con);
        frozen.signal(Signal::SIGSTOP)?;
        if unreplicated.is_some() {
            promoted.signal(Signal::SIGCONT)?;
        }

        // The replica has taken in what it will get once its offset reaches P, or stops moving.
        let replica_url = promoted.url();
        let target = record.primary_offset;
        let settle = Instant::now();
        let (mut last, mut moved) = (i64::MIN, Instant::now());
        loop {
            let info = info_replication(&replica_url).await?;
            record.replica_offset = offset(&info, "slave_repl_offset");
            if record.replica_offset != last {
                (last, moved) = (record.replica_offset, Instant::now());
            }
            if record.replica_offset >= target
                || moved.elapsed() > STILL
                || settle.elapsed() > SETTLE_BOUND
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        record.replica_cut_ms = unreplicated.map(|d| d.as_millis() as u64);
        let mut con = connect(&replica_url).await?;
        for (key, primary) in keys.iter().zip(counts) {
            record.keys.push(KeyAtFailover {
                key: key.clone(),
                primary,
                replica: window_of(&mut con, key)
                    .await
                    .map_err(command_error("HMGET", &replica_url))?,
            });
        }
        drop(con);

        let deadline = Deadline::new(FAILOVER_BOUND, "the sentinel did not fail over");
        let switched = loop {
            let now = self.primary_url().await;
            match now {
                Ok(url) if url == replica_url => break Ok(()),
                Ok(url) => {
                    if let Err(e) = deadline.check(&url) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        record.switched_us = now_us();
        record.new_primary = replica_url;
        tokio::time::sleep(resume_after).await;
        frozen.signal(Signal::SIGCONT)?;
        let mut con = connect(&old).await?;
        let _: () = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut con)
            .await
            .map_err(command_error("CLIENT UNPAUSE", &old))?;
        record.resumed_us = now_us();
        switched?;
        Ok(record)
    }
}

fn offset(info: &str, field: &str) -> i64 {
    info_field(info, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// A fixedWindow hash's `(start, count)`, `None` when absent.
async fn window_of(
    con: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<Option<(i64, u64)>> {
    let (start, count): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(key)
        .arg("start")
        .arg("count")
        .query_async(con)
        .await?;
    Ok(match (start, count) {
        (Some(s), Some(c)) => s
            .parse::<f64>()
            .ok()
            .zip(c.parse::<f64>().ok())
            .map(|(s, c)| (s as i64, c as u64)),
        _ => None,
    })
}

/// A bound on one of the harness's waits; the error carries the last thing seen.
struct Deadline {
    started: Instant,
    bound: Duration,
    what: &'static str,
}

impl Deadline {
    fn new(bound: Duration, what: &'static str) -> Deadline {
        Deadline {
            started: Instant::now(),
            bound,
            what,
        }
    }

    fn check(&self, last: &str) -> Result<(), SentinelError> {
        if self.started.elapsed() > self.bound {
            return Err(SentinelError::Timeout {
                what: self.what,
                seconds: self.bound.as_secs(),
                last: last.to_owned(),
            });
        }
        Ok(())
    }
}

/// Epoch microseconds now (the clock every history uses).
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_parsed_and_others_left_alone() {
        assert!(parse_url("redis://127.0.0.1:6379").is_none());
        let t = parse_url("redis+sentinel://127.0.0.1:26379/tkc")
            .unwrap()
            .unwrap();
        assert_eq!(t.sentinel_url, "redis://127.0.0.1:26379");
        assert_eq!(t.master, "tkc");
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1/tkc",
            "redis+sentinel://127.0.0.1:99999/tkc",
            "redis+sentinel://127.0.0.1:26379/t k",
        ] {
            let err = parse_url(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
