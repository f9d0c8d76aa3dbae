//! How long one exec-protocol round trip takes: `cargo bench --bench exec_roundtrip`.
//!
//! Replays a bounded number of fixedWindow checks through (a) the in-memory fixture adapter,
//! which is pure protocol overhead (spawned Python, JSON both ways, schema validation), (b) the
//! throttlekit-py adapter against a local Redis, (c) the Node contract-Lua adapter, when they
//! are available. Prints requests per second and the mean latency.

#[path = "../tests/it/util/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::time::{Duration, Instant};

use tk_conform::backend::Backend;
use tk_conform::backend::exec::{ExecBackend, ExecConfig};
use tk_conform::model::{FixedWindowOptions, Strategy};

const CHECKS: u32 = 3000;

async fn measure(name: &str, command: String, redis_url: Option<String>, strict: bool) {
    let logs = tempfile::tempdir().unwrap();
    let mut config = ExecConfig::new(command, logs.path().join("adapter.stderr.log"));
    config.redis_url = redis_url;
    config.strict = strict;
    let backend = ExecBackend::start(config).await.expect("adapter starts");
    let strategy = Strategy::FixedWindow(FixedWindowOptions {
        limit: 1e9,
        window_ms: 60_000.0,
    });
    let mut session = backend.open_suite("bench").await.unwrap();
    let started = Instant::now();
    for i in 0..CHECKS {
        let now = 1_700_000_000_000.0 + f64::from(i);
        session.check(&strategy, "k", now, 1.0).await.unwrap();
    }
    let elapsed = started.elapsed();
    drop(session);
    backend.shutdown().await.unwrap();
    let mean = elapsed / CHECKS;
    println!(
        "{name:<42} {CHECKS} checks in {:>7.1} ms: {:>7.0} req/s, mean {:>6.1} µs",
        ms(elapsed),
        f64::from(CHECKS) / elapsed.as_secs_f64(),
        mean.as_secs_f64() * 1e6
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let fixture = support::quoted(&support::fixture("faulty.py"));
        measure(
            "fixture (python, in memory), strict",
            format!("python3 {fixture}"),
            None,
            true,
        )
        .await;
        measure(
            "fixture (python, in memory), lenient",
            format!("python3 {fixture}"),
            None,
            false,
        )
        .await;
        let redis = support::Redis::start();
        if let Some(python) = support::throttlekit_python() {
            let adapter =
                support::quoted(&support::repo().join("adapters/python/throttlekit_py.py"));
            let command = format!("{} {adapter}", support::quoted(&python));
            measure(
                "throttlekit-py (RedisBackend, Lua)",
                command,
                Some(redis.url()),
                true,
            )
            .await;
        }
        let scripts = std::env::var("TK_CONFORM_SCRIPTS_DIR").unwrap_or_else(|_| {
            support::repo()
                .join("contract/scripts")
                .display()
                .to_string()
        });
        if support::node().is_some()
            && std::path::Path::new(&scripts)
                .join("manifest.json")
                .exists()
        {
            let adapter = support::quoted(&support::repo().join("adapters/node/contract_lua.mjs"));
            let command = format!("node {adapter} --scripts {}", shell_words::quote(&scripts));
            measure(
                "node contract Lua (RESP over a socket)",
                command,
                Some(redis.url()),
                true,
            )
            .await;
        }
    });
}
