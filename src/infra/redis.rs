//! A Redis to run against, from one of three places, in this order of preference:
//! an external `--redis-url` (never flushed: callers namespace their keys), a `redis-server` or
//! `valkey-server` binary we start on a free loopback port, or a container when Docker answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::child::{ChildError, OwnedChild};
use super::container::{self, ContainerRedis};
use super::port::free_loopback_port;
use super::redact::{redact_text, redact_url};

/// How long a fresh server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Connect and response timeout of every connection this module opens; so also the bound on
/// one script call through such a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`kill_running_script`] keeps trying: Redis reads other clients only once a script
/// has run past its `busy-reply-threshold` (5 s by default).
const SCRIPT_KILL_BOUND: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("cannot reach Redis at {url}")]
    NoAnswer {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("{binary} did not answer PING on 127.0.0.1:{port} within {seconds} s: {reason}")]
    NotReady {
        binary: String,
        port: u16,
        seconds: u64,
        reason: String,
    },
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("cannot create a temporary directory for redis-server: {0}")]
    TempDir(std::io::Error),
    #[error(
        "no Redis to run against. Use one of: --redis-url redis://127.0.0.1:6379 (an existing \
         server; tk-conform never flushes it), a redis-server or valkey-server binary on PATH \
         (e.g. `apt-get install redis-server`, or --redis-server PATH), or a running Docker \
         engine (a redis container is started). Docker"
    )]
    NothingAvailable {
        #[source]
        docker: Box<container::ContainerError>,
    },
    #[error("cannot restart {0}: tk-conform does not own that server")]
    NotOwned(String),
}

/// Where the Redis of a run comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RedisOrigin {
    /// `--redis-url`: someone else's server.
    External { url: String },
    /// A binary we started.
    Local { binary: PathBuf, pid: u32 },
    /// A container we started.
    Container { image: String },
}

/// What the caller asked for.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// An external server; when set nothing is started.
    pub url: Option<String>,
    /// A specific server binary (e.g. another Redis version) instead of a PATH lookup.
    pub server_binary: Option<PathBuf>,
    /// The container image for the Docker fallback (default `redis:7`).
    pub container_image: Option<String>,
}

/// A Redis the run can use; owned ones stop when this is dropped.
pub struct RedisInstance {
    url: String,
    version: String,
    owned: Owned,
}

enum Owned {
    External,
    Local(LocalRedis),
    Container(Box<ContainerRedis>),
}

impl RedisInstance {
    /// Finds or starts a Redis as `options` say (see the module docs for the order).
    pub async fn provision(options: &RedisOptions) -> Result<Self, RedisError> {
        if let Some(url) = &options.url {
            let mut con = connect(url).await?;
            let version =
                server_version(&mut con)
                    .await
                    .map_err(|source| RedisError::NoAnswer {
                        url: redact_url(url),
                        source,
                    })?;
            return Ok(RedisInstance {
                url: url.clone(),
                version,
                owned: Owned::External,
            });
        }
        let binary = match &options.server_binary {
            Some(path) => Some(path.clone()),
            None => find_redis_binary(),
        };
        if let Some(binary) = binary {
            let local = LocalRedis::start(&binary).await?;
            let url = local.url();
            let version = server_version(&mut connect(&url).await?)
                .await
                .map_err(|source| RedisError::NoAnswer {
                    url: url.clone(),
                    source,
                })?;
            return Ok(RedisInstance {
                url,
                version,
                owned: Owned::Local(local),
            });
        }
        let image = options.container_image.as_deref().unwrap_or("redis:7");
        match container::start(image).await {
            Ok(redis) => {
                let url = redis.url();
                let version =
                    server_version(&mut connect(&url).await?)
                        .await
                        .map_err(|source| RedisError::NoAnswer {
                            url: url.clone(),
                            source,
                        })?;
                Ok(RedisInstance {
                    url,
                    version,
                    owned: Owned::Container(Box::new(redis)),
                })
            }
            Err(docker) => Err(RedisError::NothingAvailable {
                docker: Box::new(docker),
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `redis 7.0.15` or `valkey 9.1.2`, as the server's INFO says.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// True when the server belongs to someone else (`--redis-url`).
    pub fn is_external(&self) -> bool {
        matches!(self.owned, Owned::External)
    }

    pub fn origin(&self) -> RedisOrigin {
        match &self.owned {
            Owned::External => RedisOrigin::External {
                url: redact_url(&self.url),
            },
            Owned::Local(local) => RedisOrigin::Local {
                binary: local.binary.clone(),
                pid: local.pid(),
            },
            Owned::Container(c) => RedisOrigin::Container {
                image: c.image().to_owned(),
            },
        }
    }

    /// One line for logs: `redis 7.0.15 at redis://127.0.0.1:40123 (started /usr/bin/redis-server, pid 123)`.
    pub fn describe(&self) -> String {
        let how = match self.origin() {
            RedisOrigin::External { .. } => "external, --redis-url".to_owned(),
            RedisOrigin::Local { binary, pid } => {
                format!("started {}, pid {pid}", binary.display())
            }
            RedisOrigin::Container { image } => format!("container {image}"),
        };
        format!("{} at {} ({how})", self.version, redact_url(&self.url))
    }

    /// The pid of the server process when we started it as a local child.
    pub fn pid(&self) -> Option<u32> {
        match &self.owned {
            Owned::Local(local) => Some(local.pid()),
            _ => None,
        }
    }

    /// Kills the server (SIGKILL, no save) and starts it again on the same port and URL, empty:
    /// persistence is off. For fault injection; an external server cannot be restarted.
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        match &mut self.owned {
            Owned::Local(local) => local.restart().await,
            Owned::Container(c) => Err(RedisError::NotOwned(format!(
                "the container {} (restart is only supported for a local binary)",
                c.image()
            ))),
            Owned::External => Err(RedisError::NotOwned(redact_url(&self.url))),
        }
    }

    /// Stops an owned server now (dropping the instance does the same).
    pub fn stop(&mut self) {
        if let Owned::Local(local) = &mut self.owned {
            local.child.kill();
        }
    }
}

/// The first of `redis-server`, `valkey-server` found on PATH.
pub fn find_redis_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["redis-server", "valkey-server"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

/// `name` on PATH, when it is there and executable.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A multiplexed connection with connect and response timeouts, so no call can hang a run.
pub async fn connect(url: &str) -> Result<MultiplexedConnection, RedisError> {
    connect_with_timeout(url, IO_TIMEOUT).await
}

/// [`connect`] with another response timeout: the bound on every call made through it.
pub async fn connect_with_timeout(
    url: &str,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let unreachable = |reason: String| RedisError::Unreachable {
        url: redact_url(url),
        reason: redact_text(&reason),
    };
    let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    // The config's timeout covers the TCP connect; this one also covers the handshake.
    match tokio::time::timeout(
        IO_TIMEOUT * 2,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(con)) => Ok(con),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            (IO_TIMEOUT * 2).as_secs()
        ))),
    }
}

/// Deletes every key under `<prefix>:` (SCAN + DEL) and nothing else, so a run can leave a Redis it
/// did not start as it found it. Returns how many keys went.
pub async fn delete_prefixed(
    con: &mut MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<u64> {
    // The prefix is matched literally: glob characters in it are escaped.
    let mut pattern = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(":*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL").arg(&keys).query_async::<u64>(con).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// What `SCRIPT KILL` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptKill {
    /// Redis stopped the script.
    Killed,
    /// No script was running any more (it ended on its own meanwhile).
    NotBusy,
    /// Redis refused: the script wrote before it ran away (only `SHUTDOWN NOSAVE` ends it).
    Unkillable(String),
    /// No answer within the bound, or another error.
    Failed(String),
}

impl std::fmt::Display for ScriptKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptKill::Killed => write!(f, "Redis killed it"),
            ScriptKill::NotBusy => write!(f, "no script was running any more"),
            ScriptKill::Unkillable(m) => write!(
                f,
                "Redis refused ({m}): the script wrote before it ran away, so the server stays \
                 BUSY until SHUTDOWN NOSAVE"
            ),
            ScriptKill::Failed(m) => write!(f, "it failed: {m}"),
        }
    }
}

/// Sends `SCRIPT KILL` on a connection of its own, for a script call that did not answer in
/// time: the connection the call went out on is stuck behind it. Retries until Redis answers
/// (it reads other clients only after its busy threshold), at most [`SCRIPT_KILL_BOUND`].
pub async fn kill_running_script(url: &str) -> ScriptKill {
    let deadline = Instant::now() + SCRIPT_KILL_BOUND;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match connect(url).await {
            Ok(mut con) => {
                let reply: redis::RedisResult<String> =
                    redis::cmd("SCRIPT").arg("KILL").query_async(&mut con).await;
                match reply {
                    Ok(_) => return ScriptKill::Killed,
                    Err(e) if e.code() == Some("NOTBUSY") => return ScriptKill::NotBusy,
                    Err(e) if e.code() == Some("UNKILLABLE") => {
                        return ScriptKill::Unkillable(redact_text(&e.to_string()));
                    }
                    Err(e) => last = redact_text(&e.to_string()),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ScriptKill::Failed(format!(
        "no answer within {} s (last: {last})",
        SCRIPT_KILL_BOUND.as_secs()
    ))
}

/// `redis 7.0.15` / `valkey 9.1.2` from `INFO server`.
pub async fn server_version(con: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(con).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    Ok(match (field("server_name"), field("valkey_version")) {
        (Some(name), Some(v)) if name == "valkey" => format!("valkey {v}"),
        (_, Some(v)) => format!("valkey {v}"),
        _ => format!(
            "redis {}",
            field("redis_version").unwrap_or_else(|| "unknown".into())
        ),
    })
}

/// A `redis-server` (or `valkey-server`) we started: loopback only, persistence off, in a
/// temporary directory that goes away with it.
pub struct LocalRedis {
    binary: PathBuf,
    port: u16,
    dir: super::cleanup::TempFolder,
    child: OwnedChild,
}

impl LocalRedis {
    /// Starts the binary on a free loopback port and waits until it answers PING.
    pub async fn start(binary: &Path) -> Result<Self, RedisError> {
        let dir =
            super::cleanup::TempFolder::new("tk-conform-redis-").map_err(RedisError::TempDir)?;
        // The port can be taken between our probe and the server's bind: retry with a new one.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_loopback_port().map_err(RedisError::TempDir)?;
            match spawn_and_wait(binary, port, dir.path()).await {
                Ok(child) => {
                    return Ok(LocalRedis {
                        binary: binary.to_owned(),
                        port,
                        dir,
                        child,
                    });
                }
                Err(e @ RedisError::Child(_)) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The server's own log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Sends `signal` to the server (a failover freezes a primary with SIGSTOP).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), ChildError> {
        self.child.signal(signal)
    }

    /// Kills the server and starts a fresh one on the same port.
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        self.child.kill();
        // The kernel may need a moment to release the port: a few attempts.
        let mut last_error = None;
        for _ in 0..20 {
            match spawn_and_wait(&self.binary, self.port, self.dir.path()).await {
                Ok(child) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e @ RedisError::Child(_)) => return Err(e),
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last_error.expect("at least one attempt"))
    }
}

async fn spawn_and_wait(binary: &Path, port: u16, dir: &Path) -> Result<OwnedChild, RedisError> {
    spawn_with(binary, port, dir, &[]).await
}

/// Starts `binary` on loopback `port` in `dir` with `extra` arguments (a cluster node's) and
/// waits until it answers PING.
pub(super) async fn spawn_with(
    binary: &Path,
    port: u16,
    dir: &Path,
    extra: &[&str],
) -> Result<OwnedChild, RedisError> {
    let log = dir.join("redis.log");
    let mut command = Command::new(binary);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .args(["--daemonize", "no", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "redis-server".into());
    let mut child = OwnedChild::spawn(name, command)?;
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let not_ready = |reason: String| RedisError::NotReady {
        binary: binary.display().to_string(),
        port,
        seconds: START_TIMEOUT.as_secs(),
        reason,
    };
    loop {
        if let Some(status) = child.try_exit() {
            return Err(not_ready(format!(
                "it exited ({status}); last log lines: {}",
                log_tail(&log)
            )));
        }
        if let Ok(Ok(mut con)) = tokio::time::timeout(
            Duration::from_millis(500),
            redis::Client::open(url.as_str())
                .expect("a valid loopback url")
                .get_multiplexed_async_connection(),
        )
        .await
        {
            // A server that accepts but does not answer yet must not stall the wait.
            let ping = redis::cmd("PING");
            let pong = tokio::time::timeout(
                Duration::from_millis(500),
                ping.query_async::<String>(&mut con),
            )
            .await;
            if matches!(pong, Ok(Ok(_))) {
                return Ok(child);
            }
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(not_ready(format!("last log lines: {}", log_tail(&log))));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    if lines.is_empty() {
        return "(empty)".into();
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
