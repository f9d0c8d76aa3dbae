//! Provisioning: the processes and stores a run needs, owned so that they are gone when the run
//! ends, however it ends (success, failure, panic, Ctrl-C, or the harness being SIGKILLed).
//!
//! - [`OwnedChild`]: any child process in its own process group, killed (group and all) on drop,
//!   and by the kernel (`PR_SET_PDEATHSIG`) if the harness dies first.
//! - [`sentinel`]: a primary, a replica and `redis-sentinel` (`redis = "replicated"`), and the
//!   connection clients follow the primary with.
//! - [`cluster::LocalCluster`]: three owned primaries formed into a Redis Cluster.
//! - [`RedisInstance`]: a Redis to run against: a local `redis-server` / `valkey-server` we start,
//!   a container (testcontainers), or an external `--redis-url` we never flush.

mod child;
pub mod cleanup;
pub mod cluster;
mod container;
mod port;
mod redact;
mod redis;
pub mod sentinel;

pub use child::{ChildError, OwnedChild, kill_all_owned, live_owned_pids};
pub use container::ContainerError;
pub use port::free_loopback_port;
pub use redact::{REDACTED, redact_text, redact_url};
pub use redis::{
    IO_TIMEOUT, LocalRedis, RedisError, RedisInstance, RedisOptions, RedisOrigin, ScriptKill,
    connect, connect_with_timeout, delete_prefixed, find_on_path, find_redis_binary,
    kill_running_script, server_version,
};
