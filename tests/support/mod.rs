//! Test support for the exec-backend tests: a throwaway Redis on a Unix socket, the interpreters
//! the adapters need, and the fixtures' paths. Each integration test file includes this module.
#![allow(dead_code)]

pub mod differential;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/adapters").join(name)
}

/// A `redis-server` of our own, on a Unix socket in a temporary folder, killed on drop.
pub struct Redis {
    child: Child,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed at /usr/bin (apt-get install redis-server)");
        // Bounded wait for the socket to appear.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not open {socket:?} in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, dir }
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
