//! The external tools the tests drive: a throwaway Redis, the interpreters the adapters need,
//! and the fixture adapters' paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tk_conform::infra::LocalRedis;

use super::repo;

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/adapters").join(name)
}

/// A `redis-server` of our own on a free loopback port (`infra::LocalRedis`: own process
/// group, killed on drop). Callable from a plain test or from inside a tokio test.
pub struct Redis {
    local: LocalRedis,
}

impl Redis {
    pub fn start() -> Redis {
        let binary = tk_conform::infra::find_redis_binary()
            .expect("redis-server is on PATH (apt-get install redis-server)");
        // A thread of its own: `start` is async and the caller may already be on a runtime.
        let local = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(LocalRedis::start(&binary))
        })
        .join()
        .expect("the Redis start-up thread")
        .unwrap_or_else(|e| panic!("redis-server did not start: {e}"));
        Redis { local }
    }

    pub fn url(&self) -> String {
        self.local.url()
    }

    /// One command, synchronously (on a runtime of its own, like `start`).
    pub fn cmd<T: redis::FromRedisValue + Send + 'static>(&self, args: &[&str]) -> T {
        let url = self.url();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let what = args.join(" ");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut con = tk_conform::infra::connect(&url).await.unwrap();
                let mut cmd = redis::cmd(&args[0]);
                for a in &args[1..] {
                    cmd.arg(a);
                }
                cmd.query_async(&mut con).await
            })
        })
        .join()
        .expect("the Redis command thread")
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.cmd(&["KEYS", "*"]);
        keys.sort();
        keys
    }
}

/// The Python that has `throttlekit-py` and `redis` installed, from `TK_CONFORM_PYTHON`.
/// `None` (with the reason printed) when absent, unless `TK_CONFORM_REQUIRE_ALL=1`.
pub fn throttlekit_python() -> Option<PathBuf> {
    let found = std::env::var_os("TK_CONFORM_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = repo().join(".venv/bin/python");
            venv.exists().then_some(venv)
        });
    let usable = found.filter(|python| {
        Command::new(python)
            .args(["-c", "import throttlekit, redis"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if usable.is_none() {
        skip_or_fail(
            "no Python with throttlekit-py and redis: set TK_CONFORM_PYTHON to a venv's python \
             (python3 -m venv .venv && .venv/bin/pip install throttlekit-py redis)",
        );
    }
    usable
}

/// Node.js for the Node adapter.
pub fn node() -> Option<PathBuf> {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail("node is not on PATH");
        return None;
    }
    Some(PathBuf::from("node"))
}

pub fn skip_or_fail(reason: &str) {
    if std::env::var("TK_CONFORM_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("TK_CONFORM_REQUIRE_ALL=1 but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Quotes a path for an adapter command line (which is split like a shell would).
pub fn quoted(path: &Path) -> String {
    shell_words::quote(&path.to_string_lossy()).into_owned()
}
