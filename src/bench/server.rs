//! `tk-conform bench server`: Check calls/s and p50/p99 latency of `tk-conform serve` at 1 and
//! 64 concurrent callers, memory store vs Redis store, plus the parts a call is made of (the
//! engine alone, in process; a bare Redis round trip) to show where the time goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::backend::service_process::ServerProcess;
use crate::infra::{RedisInstance, RedisOptions};
use crate::model::{GcraOptions, Strategy};
use crate::proto;
use crate::redis_scripts::ScriptSet;
use crate::server::engine::Engine;
use crate::server::fault::Faults;
use crate::server::policy::PolicySet;
use crate::server::store::memory::MemoryStore;
use crate::server::store::{Store, StoreFaults};
use crate::service_suites;

/// A policy that admits practically everything, so the bench measures the path, not denials.
const BENCH_POLICIES: &str = "version: 1\nlimiters:\n  bench: { strategy: gcra, limit: 100000000, period: 1s, burst: 100000000 }\n";
const KEYS: usize = 1000;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerBenchArgs {
    /// Check calls per measurement (split across the callers).
    #[arg(long, default_value_t = 20_000)]
    pub calls: usize,
    /// Concurrent callers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub callers: Vec<usize>,
    /// Measure the Redis store on this Redis (nothing is flushed; keys expire by themselves).
    /// Default: start a local redis-server, or skip the Redis rows when there is none.
    #[arg(long)]
    pub redis: Option<String>,
    /// The contract whose Lua the Redis store (and the direct-door rows) run.
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// Stop a measurement after this many seconds even if calls remain.
    #[arg(long, default_value_t = 30)]
    pub max_seconds: u64,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub what: String,
    pub callers: usize,
    pub calls: usize,
    pub calls_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn main(args: ServerBenchArgs) -> std::process::ExitCode {
    crate::cli_edge::block_on("bench server", run(args))
}

pub async fn run(args: ServerBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the tk-conform executable")?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bench-policies.yaml");
    std::fs::write(&config, BENCH_POLICIES)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; measure with `cargo run --release -- bench server`"
        );
    }
    let mut results = Vec::new();

    results.push(engine_alone(&config, args.calls).await?);
    let mut stores = vec![("memory".to_owned(), None)];
    let redis = RedisInstance::provision(&RedisOptions {
        url: args.redis.clone(),
        ..RedisOptions::default()
    })
    .await;
    match &redis {
        Ok(instance) => {
            stores.push(("redis".to_owned(), Some(instance.url().to_owned())));
            let scripts = ScriptSet::from_contract_dir(&args.contract)?;
            for &callers in &args.callers {
                let m = direct_door(
                    &scripts,
                    instance.url(),
                    callers,
                    args.calls,
                    Duration::from_secs(args.max_seconds),
                )
                .await?;
                results.push(m);
            }
            eprintln!("redis: {}", instance.describe());
        }
        Err(e) => eprintln!("note: no Redis, so no Redis rows: {e}"),
    }
    let contract = std::fs::canonicalize(&args.contract)
        .with_context(|| format!("contract folder {}", args.contract.display()))?;
    for (label, redis) in &stores {
        let mut argv = vec![
            exe.display().to_string(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
            "--port".into(),
            "0".into(),
        ];
        if let Some(url) = redis {
            argv.extend(["--redis".into(), url.clone()]);
            argv.extend(["--contract".into(), contract.display().to_string()]);
        }
        let server = ServerProcess::start(&argv, None).await?;
        for &callers in &args.callers {
            let m = grpc_checks(
                &server.addr.to_string(),
                callers,
                args.calls,
                Duration::from_secs(args.max_seconds),
            )
            .await
            .with_context(|| format!("bench of the {label} store at {callers} callers"))?;
            results.push(Measurement {
                what: format!("gRPC Check, {label} store"),
                ..m
            });
        }
        server.stop().await;
    }

    println!(
        "{:<44} {:>7} {:>8} {:>12} {:>10} {:>10}",
        "what", "callers", "calls", "calls/s", "p50 µs", "p99 µs"
    );
    for m in &results {
        println!(
            "{:<44} {:>7} {:>8} {:>12.0} {:>10.1} {:>10.1}",
            m.what, m.callers, m.calls, m.calls_per_sec, m.p50_us, m.p99_us
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The engine with the memory store, called in process: the floor under every gRPC number.
async fn engine_alone(config: &std::path::Path, calls: usize) -> anyhow::Result<Measurement> {
    let policies = PolicySet::load(config)?;
    let local = Arc::new(MemoryStore::new(StoreFaults::default()));
    let shared: Arc<dyn Store> = local.clone();
    let engine = Engine::new(
        policies,
        shared,
        local,
        Duration::from_secs(2),
        Faults::default(),
    );
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let mut latencies = Vec::with_capacity(calls);
    let started = Instant::now();
    for i in 0..calls {
        let t = Instant::now();
        engine.check("bench", &keys[i % KEYS], 1).await?;
        latencies.push(t.elapsed());
    }
    Ok(summarize(
        "engine alone (memory store, no gRPC)",
        1,
        started.elapsed(),
        latencies,
    ))
}

/// The contract's gcra.check straight on Redis (EVALSHA), no server: the store's share of a call.
async fn direct_door(
    scripts: &ScriptSet,
    url: &str,
    callers: usize,
    calls: usize,
    limit: Duration,
) -> anyhow::Result<Measurement> {
    let strategy = Strategy::Gcra(GcraOptions {
        limit: 1e8,
        period_ms: 1000.0,
        burst: 1e8,
    });
    let per_caller = calls.div_ceil(callers);
    let started = Instant::now();
    let deadline = started + limit;
    let tasks = (0..callers).map(|c| {
        let scripts = scripts.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            // One connection per caller, as the server's callers each have their own.
            let mut con = crate::infra::connect(&url).await?;
            let mut latencies = Vec::with_capacity(per_caller);
            for i in 0..per_caller {
                if Instant::now() >= deadline {
                    break;
                }
                let key = format!(
                    "tk-conform-bench:{}:k{}",
                    std::process::id(),
                    (c * per_caller + i) % KEYS
                );
                let t = Instant::now();
                scripts.check(&mut con, &key, &strategy, 0.0, 1.0).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        })
    });
    let mut latencies = Vec::with_capacity(calls);
    for task in futures::future::join_all(tasks).await {
        latencies.extend(task??);
    }
    Ok(summarize(
        "direct door: gcra.check EVALSHA, no server",
        callers,
        started.elapsed(),
        latencies,
    ))
}

async fn grpc_checks(
    endpoint: &str,
    callers: usize,
    calls: usize,
    limit: Duration,
) -> anyhow::Result<Measurement> {
    let per_caller = calls.div_ceil(callers);
    let mut clients = Vec::with_capacity(callers);
    for _ in 0..callers {
        // One connection per caller, as separate client processes would have.
        clients.push(service_suites::connect(endpoint, None, None).await?.rate());
    }
    // Warm up every connection.
    for client in &mut clients {
        for i in 0..20 {
            client.check(check(i)).await?;
        }
    }
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    let tasks = clients.into_iter().enumerate().map(|(c, mut client)| {
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_caller);
            for i in 0..per_caller {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                client.check(check(c * per_caller + i)).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        })
    });
    let mut latencies = Vec::with_capacity(calls);
    for task in futures::future::join_all(tasks).await {
        latencies.extend(task??);
    }
    Ok(summarize("", callers, started.elapsed(), latencies))
}

fn check(i: usize) -> proto::CheckRequest {
    proto::CheckRequest {
        policy: "bench".into(),
        key: format!("k{}", i % KEYS),
        cost: 1,
    }
}

fn summarize(
    what: &str,
    callers: usize,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
) -> Measurement {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Measurement {
        what: what.to_owned(),
        callers,
        calls: latencies.len(),
        calls_per_sec: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}
