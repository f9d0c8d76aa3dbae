//! A Redis Cluster of our own: three primaries (`redis-server --cluster-enabled yes`) on
//! loopback ports, formed with `redis-cli --cluster create … --cluster-replicas 0`. Every node
//! is an [`OwnedChild`] (process group, pdeathsig), so no node outlives the harness, however
//! it ends; each node's folder (its `nodes.conf`) is a `TempFolder` an interrupt removes.
//!
//! [`LocalCluster::migrate_slot`] moves one key's slot to another primary while clients keep
//! calling (CLUSTER SETSLOT IMPORTING / MIGRATING, MIGRATE the keys, SETSLOT NODE on every
//! node), so the clients meet ASK while the slot is half moved and MOVED after.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;

use super::child::{ChildError, OwnedChild};
use super::cleanup::TempFolder;
use super::redis::{RedisError, connect, spawn_with};

/// Primaries in the cluster (the smallest Redis Cluster accepts).
pub const NODES: usize = 3;
/// The cluster bus listens on the node's port + 10000.
const BUS_OFFSET: u16 = 10000;
/// How long `redis-cli --cluster create` and the cluster reaching `cluster_state:ok` may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys moved per MIGRATE, and the most rounds a migration may take.
const MIGRATE_BATCH: usize = 100;
const MIGRATE_ROUNDS: usize = 1000;
/// MIGRATE's own timeout for one batch, in ms.
const MIGRATE_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no {0} on PATH (Debian: apt-get install redis-server redis-tools)")]
    NoBinary(&'static str),
    #[error("no two free loopback ports P and P+10000 (a node and its cluster bus) in 50 tries")]
    NoPorts,
    #[error("cluster node {index}")]
    Node {
        index: usize,
        #[source]
        source: RedisError,
    },
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("cannot create a folder for a cluster node: {0}")]
    TempDir(std::io::Error),
    #[error("`redis-cli --cluster create` {outcome}: {log}")]
    Create { outcome: String, log: String },
    #[error("the cluster did not reach cluster_state:ok within {seconds} s: {state}")]
    NotOk { seconds: u64, state: String },
    #[error("cluster node 127.0.0.1:{port}: {what}")]
    Command {
        port: u16,
        what: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cluster node 127.0.0.1:{port}: {what}")]
    Answer { port: u16, what: String },
}

/// A single server's auto-reconnecting connection, or a cluster-aware one (routing each
/// command by its key, following MOVED and ASK): what the direct door and the reference
/// server's store call scripts through.
#[derive(Clone)]
pub enum AnyConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// Whichever node the sentinel calls the primary (`redis = "replicated"`).
    Following(crate::infra::sentinel::FollowingConnection),
}

impl ConnectionLike for AnyConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AnyConnection::Single(c) => c.req_packed_command(cmd),
            AnyConnection::Cluster(c) => c.req_packed_command(cmd),
            AnyConnection::Following(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AnyConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConnection::Following(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConnection::Single(c) => c.get_db(),
            AnyConnection::Cluster(c) => c.get_db(),
            AnyConnection::Following(c) => c.get_db(),
        }
    }
}

impl AnyConnection {
    /// A cluster-aware connection from one seed node, with `timeout` on connects and replies.
    pub async fn cluster(url: &str, timeout: Duration) -> redis::RedisResult<AnyConnection> {
        let client = redis::cluster::ClusterClient::builder(vec![url])
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3)
            .build()?;
        Ok(AnyConnection::Cluster(client.get_async_connection().await?))
    }

    /// Whether the server at the other end has `cluster_enabled:1`.
    pub async fn is_cluster_node(&mut self) -> redis::RedisResult<bool> {
        let info: String = redis::cmd("INFO").arg("cluster").query_async(self).await?;
        Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
    }
}

/// One primary: its port, cluster id and process.
pub struct ClusterNode {
    pub port: u16,
    pub id: String,
    child: OwnedChild,
    dir: TempFolder,
}

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

/// What a slot migration did, for the fault log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub key: String,
    pub slot: u16,
    pub from: String,
    pub to: String,
    /// Keys MIGRATEd (before and after the ASK window).
    pub keys_moved: u64,
    /// How long the slot stayed half moved (IMPORTING/MIGRATING: clients are sent ASK).
    pub ask_window_ms: u64,
    /// ASK replies the source sent meanwhile (its `INFO errorstats`), and ASKING commands the
    /// target took: the clients really were redirected.
    pub ask_replies: u64,
    pub asking: u64,
}

impl std::fmt::Display for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "slot {} (key {}) moved from {} to {}: {} keys migrated, {} ms half moved ({} ASK \
             replies, {} ASKING), then SETSLOT NODE on every node (MOVED from now on)",
            self.slot,
            self.key,
            self.from,
            self.to,
            self.keys_moved,
            self.ask_window_ms,
            self.ask_replies,
            self.asking
        )
    }
}

/// Three primaries we started, formed into one cluster.
pub struct LocalCluster {
    nodes: Vec<ClusterNode>,
}

impl LocalCluster {
    /// Starts three nodes with `binary`, forms the cluster with `redis-cli` (found next to it
    /// or on PATH) and waits until every node says `cluster_state:ok`.
    pub async fn start(binary: &Path) -> Result<LocalCluster, ClusterError> {
        let cli = redis_cli(binary).ok_or(ClusterError::NoBinary("redis-cli"))?;
        let mut nodes = Vec::new();
        for index in 0..NODES {
            nodes.push(start_node(binary, index).await?);
        }
        let mut cluster = LocalCluster { nodes };
        cluster.create(&cli).await?;
        cluster.wait_ok().await?;
        for i in 0..cluster.nodes.len() {
            let port = cluster.nodes[i].port;
            let mut con = cluster.con(i).await?;
            let id: String = query(
                &mut con,
                port,
                "CLUSTER MYID",
                redis::cmd("CLUSTER").arg("MYID"),
            )
            .await?;
            cluster.nodes[i].id = id;
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Every node's URL: the seeds a cluster client starts from.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterNode::url).collect()
    }

    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{} (pid {})", n.port, n.pid()))
            .collect();
        format!(
            "redis cluster of {} primaries: {}",
            self.nodes.len(),
            nodes.join(", ")
        )
    }

    async fn con(&self, index: usize) -> Result<MultiplexedConnection, ClusterError> {
        connect(&self.nodes[index].url())
            .await
            .map_err(|source| ClusterError::Node { index, source })
    }

    async fn create(&mut self, cli: &Path) -> Result<(), ClusterError> {
        let log = self.nodes[0].dir.path().join("cluster-create.log");
        let out = std::fs::File::create(&log).map_err(ClusterError::TempDir)?;
        let err = out.try_clone().map_err(ClusterError::TempDir)?;
        let mut command = Command::new(cli);
        command.args(["--cluster", "create"]);
        for n in &self.nodes {
            command.arg(format!("127.0.0.1:{}", n.port));
        }
        command
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = OwnedChild::spawn("redis-cli --cluster create", command)?;
        let text = || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            let t = strip_ansi(&t);
            let lines: Vec<&str> = t.lines().rev().take(4).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        match child.wait_exit(FORM_TIMEOUT).await {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(ClusterError::Create {
                outcome: format!("failed ({status})"),
                log: text(),
            }),
            None => Err(ClusterError::Create {
                outcome: format!("did not finish within {} s", FORM_TIMEOUT.as_secs()),
                log: text(),
            }),
        }
    }

    async fn wait_ok(&self) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            let mut state = String::new();
            let mut ok = true;
            for i in 0..self.nodes.len() {
                let port = self.nodes[i].port;
                let mut con = self.con(i).await?;
                let info: String = query(
                    &mut con,
                    port,
                    "CLUSTER INFO",
                    redis::cmd("CLUSTER").arg("INFO"),
                )
                .await?;
                let line = info
                    .lines()
                    .find(|l| l.starts_with("cluster_state:"))
                    .unwrap_or("cluster_state:?")
                    .trim()
                    .to_string();
                ok &= line == "cluster_state:ok";
                state.push_str(&format!("127.0.0.1:{port} {line}; "));
            }
            if ok {
                return Ok(());
            }
            if started.elapsed() > FORM_TIMEOUT {
                return Err(ClusterError::NotOk {
                    seconds: FORM_TIMEOUT.as_secs(),
                    state,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the node that serves `slot`, as node 0 sees the cluster.
    pub async fn owner(&self, slot: u16) -> Result<usize, ClusterError> {
        let port = self.nodes[0].port;
        let mut con = self.con(0).await?;
        let text: String = query(
            &mut con,
            port,
            "CLUSTER NODES",
            redis::cmd("CLUSTER").arg("NODES"),
        )
        .await?;
        let id = owner_in_nodes(&text, slot).ok_or_else(|| ClusterError::Answer {
            port,
            what: format!("CLUSTER NODES names no owner of slot {slot}"),
        })?;
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| ClusterError::Answer {
                port,
                what: format!("slot {slot} is served by {id}, which is not one of ours"),
            })
    }

    /// The URL of the node that serves `key` now.
    pub async fn url_for_key(&self, key: &str) -> Result<String, ClusterError> {
        let index = self.owner(key_slot(key.as_bytes())).await?;
        Ok(self.nodes[index].url())
    }

    /// Moves `key`'s slot to the next primary: IMPORTING on the target, MIGRATING on the
    /// source, MIGRATE every key of the slot, `ask_window` with the slot half moved (clients
    /// get ASK), MIGRATE what is left, then SETSLOT NODE on the target, the source and the rest
    /// (clients get MOVED).
    pub async fn migrate_slot(
        &self,
        key: &str,
        ask_window: Duration,
    ) -> Result<Migration, ClusterError> {
        let slot = key_slot(key.as_bytes());
        let from = self.owner(slot).await?;
        let to = (from + 1) % self.nodes.len();
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let mut src_con = self.con(from).await?;
        let mut dst_con = self.con(to).await?;
        let setslot = |state: &str, id: &str| {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(state).arg(id);
            c
        };
        let _: () = query(
            &mut dst_con,
            dst.port,
            "SETSLOT IMPORTING",
            &setslot("IMPORTING", &src.id),
        )
        .await?;
        let _: () = query(
            &mut src_con,
            src.port,
            "SETSLOT MIGRATING",
            &setslot("MIGRATING", &dst.id),
        )
        .await?;
        let asks_before =
            info_count(&mut src_con, src.port, "errorstats", "errorstat_ASK:count=").await?;
        let asking_before = info_count(
            &mut dst_con,
            dst.port,
            "commandstats",
            "cmdstat_asking:calls=",
        )
        .await?;
        let mut moved = migrate_keys(&mut src_con, src.port, dst.port, slot).await?;
        let window = Instant::now();
        tokio::time::sleep(ask_window).await;
        moved += migrate_keys(&mut src_con, src.port, dst.port, slot).await?;
        let ask_window_ms = window.elapsed().as_millis() as u64;
        let ask_replies = info_count(&mut src_con, src.port, "errorstats", "errorstat_ASK:count=")
            .await?
            - asks_before;
        let asking = info_count(
            &mut dst_con,
            dst.port,
            "commandstats",
            "cmdstat_asking:calls=",
        )
        .await?
            - asking_before;
        // The target first, so that the slot always has an owner that accepts it.
        let _: () = query(
            &mut dst_con,
            dst.port,
            "SETSLOT NODE",
            &setslot("NODE", &dst.id),
        )
        .await?;
        let _: () = query(
            &mut src_con,
            src.port,
            "SETSLOT NODE",
            &setslot("NODE", &dst.id),
        )
        .await?;
        for (i, n) in self.nodes.iter().enumerate() {
            if i != from && i != to {
                let mut con = self.con(i).await?;
                let _: () =
                    query(&mut con, n.port, "SETSLOT NODE", &setslot("NODE", &dst.id)).await?;
            }
        }
        Ok(Migration {
            key: key.to_string(),
            slot,
            from: format!("127.0.0.1:{} ({})", src.port, short(&src.id)),
            to: format!("127.0.0.1:{} ({})", dst.port, short(&dst.id)),
            keys_moved: moved,
            ask_window_ms,
            ask_replies,
            asking,
        })
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

async fn query<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    port: u16,
    what: &str,
    cmd: &redis::Cmd,
) -> Result<T, ClusterError> {
    cmd.query_async(con)
        .await
        .map_err(|source| ClusterError::Command {
            port,
            what: what.to_string(),
            source,
        })
}

/// The number after `field` in an `INFO section` reply (0 when the line is not there yet).
async fn info_count(
    con: &mut MultiplexedConnection,
    port: u16,
    section: &str,
    field: &str,
) -> Result<u64, ClusterError> {
    let text: String = query(con, port, "INFO", redis::cmd("INFO").arg(section)).await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// MIGRATEs every key of `slot` from the source to the target; returns how many.
async fn migrate_keys(
    src: &mut MultiplexedConnection,
    src_port: u16,
    dst_port: u16,
    slot: u16,
) -> Result<u64, ClusterError> {
    let mut moved = 0u64;
    for _ in 0..MIGRATE_ROUNDS {
        let keys: Vec<Vec<u8>> = query(
            src,
            src_port,
            "CLUSTER GETKEYSINSLOT",
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(MIGRATE_BATCH),
        )
        .await?;
        if keys.is_empty() {
            return Ok(moved);
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(dst_port)
            .arg("")
            .arg(0)
            .arg(MIGRATE_TIMEOUT_MS)
            .arg("KEYS")
            .arg(&keys);
        let _: redis::Value = query(src, src_port, "MIGRATE", &migrate).await?;
        moved += keys.len() as u64;
    }
    Err(ClusterError::Answer {
        port: src_port,
        what: format!("slot {slot} still had keys after {MIGRATE_ROUNDS} MIGRATE rounds"),
    })
}

/// The node id that serves `slot` in a `CLUSTER NODES` text (ranges `a-b` or single slots;
/// `[slot->-id]` / `[slot-<-id]` migration markers are not ownership).
pub fn owner_in_nodes(text: &str, slot: u16) -> Option<String> {
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        for range in &fields[8..] {
            if range.starts_with('[') {
                continue;
            }
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (a.parse::<u16>().ok(), b.parse::<u16>().ok()),
                None => (range.parse().ok(), range.parse().ok()),
            };
            if let (Some(lo), Some(hi)) = (lo, hi)
                && (lo..=hi).contains(&slot)
            {
                return Some(fields[0].to_string());
            }
        }
    }
    None
}

/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % 16384
}

/// The part of `key` a cluster hashes when it is not the whole key: between the first `{` and
/// the first `}` after it, if that is not empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    })
}

/// `key` + `suffix` (which holds no brace) in `key`'s slot. A key with a hash tag keeps it; any
/// other is hashed whole, so `:` and five hex digits chosen for the slot are appended. No brace
/// is added, so no tag appears, and the key keeps its prefix.
pub fn same_slot_key(key: &str, suffix: &str) -> String {
    debug_assert!(
        !suffix.contains(['{', '}']),
        "suffix {suffix:?} has a brace"
    );
    let base = format!("{key}{suffix}");
    if hash_tag(key.as_bytes()).is_some() {
        return base;
    }
    // CRC16 without a final xor is affine: crc(s, m) = crc(s, zeros) ^ crc(0, m) for |m| fixed,
    // so the digits for a slot come from one table over crc(0, m).
    let want = key_slot(key.as_bytes());
    let shift = crc16_from(crc16(base.as_bytes()), &[0; SLOT_DIGITS_LEN]);
    let digits = slot_digits()[usize::from((want ^ shift) % 16384)];
    base + std::str::from_utf8(&slot_digits_bytes(digits)).expect("hex digits are ASCII")
}

/// `:` and five hex digits: among the 2^20 of them, every slot is reached.
const SLOT_DIGITS_LEN: usize = 6;

fn slot_digits_bytes(n: u32) -> [u8; SLOT_DIGITS_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digit = |shift: u32| HEX[((n >> shift) & 15) as usize];
    [b':', digit(16), digit(12), digit(8), digit(4), digit(0)]
}

/// For each slot `s`, the first `n` with `crc16(":" + hex5(n)) % 16384 == s` (built once, on
/// the first peek of an untagged key).
fn slot_digits() -> &'static [u32] {
    static TABLE: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![u32::MAX; 16384];
        let mut left = table.len();
        for n in 0..1u32 << 20 {
            let slot = usize::from(crc16(&slot_digits_bytes(n)) % 16384);
            if table[slot] == u32::MAX {
                table[slot] = n;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        assert_eq!(left, 0, "five hex digits reach every slot");
        table
    })
}

fn crc16(bytes: &[u8]) -> u16 {
    crc16_from(0, bytes)
}

/// CRC16-XMODEM continued from `crc` over `bytes`.
fn crc16_from(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn redis_cli(server: &Path) -> Option<PathBuf> {
    let beside = server.with_file_name("redis-cli");
    if beside.is_file() {
        return Some(beside);
    }
    super::redis::find_on_path("redis-cli")
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A port P with P + 10000 free too (the node's cluster bus).
fn node_ports() -> Result<u16, ClusterError> {
    for _ in 0..50 {
        let port = super::port::free_loopback_port().map_err(ClusterError::TempDir)?;
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return Ok(port);
        }
    }
    Err(ClusterError::NoPorts)
}

async fn start_node(binary: &Path, index: usize) -> Result<ClusterNode, ClusterError> {
    let dir = TempFolder::new("tk-conform-cluster-").map_err(ClusterError::TempDir)?;
    let extra = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "5000",
    ];
    let mut last = None;
    for _ in 0..5 {
        let port = node_ports()?;
        match spawn_with(binary, port, dir.path(), &extra).await {
            Ok(child) => {
                return Ok(ClusterNode {
                    port,
                    id: String::new(),
                    child,
                    dir,
                });
            }
            Err(e @ RedisError::Child(_)) => return Err(ClusterError::Node { index, source: e }),
            Err(e) => last = Some(e),
        }
    }
    let source = last.expect("at least one attempt");
    Err(ClusterError::Node { index, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on a Redis 7.0 cluster.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"x{foo}y"), 12182);
        // An empty tag hashes the whole key.
        assert_eq!(key_slot(b"{}foo"), crc16(b"{}foo") % 16384);
        // Untagged keys with braces (`CLUSTER KEYSLOT`, Redis 7.0.15).
        for (key, slot) in [
            ("ns:a}b", 13847),
            ("ns:{}{x}", 10877),
            ("ns:x}a{b", 13952),
            ("ns:a{b", 7345),
            ("plain", 7143),
            ("a{}b", 13694),
        ] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
    }

    #[test]
    fn a_same_slot_key_keeps_the_prefix_and_the_slot() {
        for key in [
            "ns:a}b", "ns:{}{x}", "ns:x}a{b", "ns:a{b", "plain", "a{}b", "a{t}b", "",
        ] {
            let copy = same_slot_key(key, "#peek:0f");
            assert!(copy.starts_with(&format!("{key}#peek:0f")), "{copy}");
            assert_eq!(
                key_slot(copy.as_bytes()),
                key_slot(key.as_bytes()),
                "{key} -> {copy}"
            );
        }
        // A tagged key needs no digits.
        assert_eq!(same_slot_key("a{t}b", "#x"), "a{t}b#x");
    }

    #[test]
    fn owner_is_read_from_cluster_nodes() {
        let text = "aaa 127.0.0.1:1@11 myself,master - 0 0 1 connected 0-5460\n\
                    bbb 127.0.0.1:2@12 master - 0 0 2 connected 5461-10922 [5462->-ccc]\n\
                    ccc 127.0.0.1:3@13 master - 0 0 3 connected 10923-16000 16383\n";
        assert_eq!(owner_in_nodes(text, 0).as_deref(), Some("aaa"));
        assert_eq!(owner_in_nodes(text, 5462).as_deref(), Some("bbb"));
        assert_eq!(owner_in_nodes(text, 16383).as_deref(), Some("ccc"));
        assert_eq!(owner_in_nodes(text, 16200), None);
        assert_eq!(owner_in_nodes("", 1), None);
    }
}
