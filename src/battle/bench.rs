//! `tk-conform bench load`: decisions per second through the direct door with a fixed number of
//! calls in flight spread over worker processes, next to `redis-benchmark` running the same
//! script with the same number of connections on the same Redis.
//!
//! Workers are processes of their own (the hidden `tk-conform load-worker`, told a
//! [`LoadWorkerSpec`]) behind the battle's start barrier: each opens its share of the
//! connections before the barrier, keeps one call in flight on each, counts instead of
//! recording a history, and writes its totals to a result file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::barrier;
use super::door::{CallError, Door};
use super::door_redis::RedisDoor;
use super::history::now_us;
use super::spawn::{spawn_load_worker, wait_exit, wait_ready};
use super::spec::{LoadWorkerSpec, REDIS_URL_ENV};
use crate::infra::{RedisInstance, RedisOptions};
use crate::model::{FixedWindowOptions, Strategy};
use crate::redis_scripts::ScriptSet;
use crate::report::write_atomic;

/// Generous: up to 2 million calls on a loaded 2-core machine.
const REDIS_BENCHMARK_BOUND: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub workers: u32,
    /// Calls in flight across all workers (one per connection), and redis-benchmark's `-c`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub in_flight: u32,
    /// How long the workers run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Distinct keys the calls spread over.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// The contract folder whose fixedWindow check script is measured.
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// Use this Redis instead of starting one (keys get a unique prefix).
    #[arg(long, env = "TK_CONFORM_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The redis-server binary to start, instead of the first on PATH.
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
    /// Skip the redis-benchmark comparison.
    #[arg(long)]
    pub no_redis_benchmark: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadTotals {
    decisions: u64,
    errors: u64,
    seconds: f64,
    first_error: Option<String>,
}

pub fn run(args: LoadArgs) -> ExitCode {
    crate::cli_edge::block_on("bench load", execute(args))
}

async fn execute(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 60.0,
        "--seconds must be in (0, 60]"
    );
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    let redis = RedisInstance::provision(&RedisOptions {
        url: args.redis_url.clone(),
        server_binary: args.redis_server.clone(),
        container_image: None,
    })
    .await?;
    let scripts = ScriptSet::from_contract_dir(&args.contract)?;
    let strategy = Strategy::FixedWindow(FixedWindowOptions {
        limit: 1e12,
        window_ms: 60_000.0,
    });
    let bound = scripts.bind(&strategy)?;
    let prefix = format!("tk-conform-bench-{:x}", now_us());
    let mut con = crate::infra::connect(redis.url()).await?;
    scripts.load_all(&mut con).await?;

    let work = tempfile::Builder::new()
        .prefix("tk-conform-load-")
        .tempdir()?;
    std::fs::create_dir_all(work.path().join("workers"))?;
    let exe = std::env::current_exe()?;
    let (barrier_read, barrier_write) = std::io::pipe()?;
    let go_file = work.path().join("go");
    let mut workers = Vec::new();
    for index in 0..args.workers {
        let share =
            args.in_flight / args.workers + u32::from(index < args.in_flight % args.workers);
        if share == 0 {
            continue;
        }
        let spec = LoadWorkerSpec {
            index,
            url: redis.url().into(),
            contract_dir: args.contract.clone(),
            strategy,
            key_prefix: prefix.clone(),
            keys: args.keys,
            connections: share,
            duration_ms: (args.seconds * 1000.0) as u64,
            call_timeout_ms: 5000,
            ready_file: work.path().join(format!("load-{index}.ready")),
            go_file: go_file.clone(),
            result_file: work.path().join(format!("load-{index}.json")),
        };
        workers.push(spawn_load_worker(&exe, &spec, &barrier_read, work.path())?);
    }
    drop(barrier_read);
    wait_ready(&mut workers).await?;
    write_atomic(&go_file, now_us().to_string().as_bytes())?;
    drop(barrier_write);
    let bound_time = Duration::from_secs_f64(args.seconds) + Duration::from_secs(20);
    wait_exit(&mut workers, bound_time).await?;

    let mut totals = LoadTotals::default();
    for index in 0..args.workers {
        let file = work.path().join(format!("load-{index}.json"));
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let t: LoadTotals =
            serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
        totals.decisions += t.decisions;
        totals.errors += t.errors;
        totals.seconds = totals.seconds.max(t.seconds);
        totals.first_error = totals.first_error.or(t.first_error);
    }
    if totals.decisions == 0 {
        bail!(
            "the workers made no decision ({} errors{})",
            totals.errors,
            totals
                .first_error
                .map(|e| format!(", e.g. {e}"))
                .unwrap_or_default()
        );
    }
    let ours = totals.decisions as f64 / totals.seconds;
    let theirs = if args.no_redis_benchmark {
        None
    } else {
        let argv = bound.argv(0.0, 1.0);
        redis_benchmark(
            redis.url(),
            &bound.script().sha1,
            &prefix,
            &argv,
            args.in_flight,
            (ours * args.seconds) as u64,
        )
        .await?
    };
    println!("redis: {}", redis.describe());
    println!(
        "script: {} (EVALSHA, now = server clock), {} keys, {} calls in flight over {} worker processes",
        bound.script().entry.name,
        args.keys,
        args.in_flight,
        workers.len()
    );
    println!("{:<34} {:>14}", "", "decisions/s");
    println!(
        "{:<34} {:>14.0}   ({} decisions, {} errors in {:.2} s)",
        "tk-conform direct door", ours, totals.decisions, totals.errors, totals.seconds
    );
    match theirs {
        Some(rate) => {
            println!(
                "{:<34} {:>14.0}",
                format!("redis-benchmark -c {}", args.in_flight),
                rate
            );
            let ratio = ours / rate;
            println!(
                "ratio {ratio:.2}x (goal >= 0.70x): {}",
                if ratio >= 0.7 { "met" } else { "not met" }
            );
        }
        None if args.no_redis_benchmark => {}
        None => println!("(redis-benchmark not found on PATH: no comparison)"),
    }
    // Leave an external Redis as it was.
    crate::infra::delete_prefixed(&mut con, &prefix).await?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LoadWorkerArgs {
    /// The spec file `bench load` wrote.
    #[arg(long)]
    pub spec: PathBuf,
}

/// The hidden `load-worker` subcommand: one `bench load` worker process.
pub fn load_worker_main(args: LoadWorkerArgs) -> ExitCode {
    barrier::process_main("load-worker", load_worker(&args.spec))
}

/// Opens `connections` doors, waits for the barrier, keeps one call in flight on each door
/// until the time is up, and writes the totals; `Ok(false)` when the barrier never opened.
async fn load_worker(spec_file: &Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(spec_file)
        .with_context(|| format!("cannot read load worker spec {}", spec_file.display()))?;
    let mut spec: LoadWorkerSpec = serde_json::from_str(&text)
        .with_context(|| format!("cannot parse load worker spec {}", spec_file.display()))?;
    if let Ok(real) = std::env::var(REDIS_URL_ENV) {
        spec.url = real;
    }
    let label = format!("load[{}]", spec.index);
    let timeout = Duration::from_millis(spec.call_timeout_ms.max(1));
    let mut doors = Vec::new();
    for _ in 0..spec.connections {
        doors.push(
            RedisDoor::connect(
                &spec.url,
                &spec.contract_dir,
                spec.strategy,
                &spec.key_prefix,
                timeout,
                None,
            )
            .await
            .with_context(|| format!("{label}: cannot open the redis door"))?,
        );
    }
    let Some(t0_us) = barrier::wait(&spec.ready_file, &spec.go_file)
        .await
        .with_context(|| format!("{label}: barrier"))?
    else {
        return Ok(false);
    };
    let t0 = barrier::instant_of(t0_us);
    let end = t0 + Duration::from_millis(spec.duration_ms);
    let mut tasks = Vec::new();
    for (i, mut door) in doors.into_iter().enumerate() {
        let prefix = spec.key_prefix.clone();
        let keys = spec.keys;
        let seed = (u64::from(spec.index) << 32) ^ i as u64;
        tasks.push(tokio::spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
            let mut t = LoadTotals::default();
            while Instant::now() < end {
                door.set_key(format!("{prefix}:{}", rng.random_range(0..keys)));
                match door.check(1).await {
                    Ok(_) => t.decisions += 1,
                    Err(CallError::Definite(e) | CallError::Indeterminate(e)) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                    }
                }
            }
            t
        }));
    }
    let mut totals = LoadTotals::default();
    for task in tasks {
        let t = task.await.unwrap_or_default();
        totals.decisions += t.decisions;
        totals.errors += t.errors;
        totals.first_error = totals.first_error.or(t.first_error);
    }
    totals.seconds = t0.elapsed().as_secs_f64();
    let json = serde_json::to_vec(&totals)?;
    write_atomic(&spec.result_file, &json)
        .with_context(|| format!("{label}: cannot write the load result"))?;
    Ok(true)
}

async fn redis_benchmark(
    url: &str,
    sha: &str,
    prefix: &str,
    argv: &[String],
    connections: u32,
    calls: u64,
) -> anyhow::Result<Option<f64>> {
    let Some(binary) = crate::bench::redis_benchmark::binary() else {
        return Ok(None);
    };
    let run = crate::bench::redis_benchmark::Run {
        url,
        sha,
        key_prefix: prefix,
        argv,
        connections: connections.into(),
        pipeline: 1,
        requests: calls.clamp(10_000, 2_000_000),
        keys: 10_000,
        bound: REDIS_BENCHMARK_BOUND,
    };
    Ok(Some(
        crate::bench::redis_benchmark::rate(&binary, &run).await?,
    ))
}
