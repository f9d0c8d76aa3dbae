//! `tk-conform bench replay`: the golden vectors' rate-limit timelines replayed through the
//! contract's Lua scripts at scale, over one connection and over N concurrent pipelined
//! connections, next to `redis-benchmark` running the same scripts (EVALSHA) in the same mix with
//! the same connection count and pipelining on the same Redis.
//!
//! Every timeline is replayed on a fresh key, in order, so every reply can also be checked
//! against the vectors: the bench reports divergences (there should be none) besides ops/s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{median, redis_benchmark};
use crate::contract::vectors::{RateOp, Suite};
use crate::infra::{RedisInstance, RedisOptions, connect};
use crate::model::Strategy;
use crate::redis_scripts::{ScriptSet, decision_from_reply};
use crate::report::Progress;

#[derive(Debug, clap::Args)]
pub struct ReplayBenchArgs {
    /// The contract folder (golden-vectors.json, scripts/).
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// A vectors file instead of <contract>/golden-vectors.json.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Use this Redis instead of starting one (keys get a unique prefix; nothing is flushed).
    #[arg(long, env = "TK_CONFORM_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The redis-server (or valkey-server) binary to start.
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
    /// Script calls per configuration (at least this many: whole timelines are replayed).
    #[arg(long, default_value_t = 100_000)]
    pub calls: u64,
    /// Connections of the concurrent configuration.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Commands per pipeline in the concurrent configuration.
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// Alternating rounds of ours and redis-benchmark per configuration (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Skip the redis-benchmark comparison.
    #[arg(long)]
    pub no_redis_benchmark: bool,
    /// Distinct keys of each redis-benchmark run (its `-r`): what it may leave on a Redis
    /// the harness did not start before the run's own keys are deleted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub keys: u64,
    /// Bound on one redis-benchmark run, in seconds; it is killed after that.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub redis_benchmark_timeout: u64,
}

pub fn run(args: ReplayBenchArgs) -> ExitCode {
    crate::cli_edge::exit_code(
        "bench replay",
        execute(args).map(|()| crate::exit::TkExitCode::of(crate::exit::TkExitCode::PASSED)),
    )
}

/// One timeline: a strategy, and its ops with expectations.
pub(crate) struct Timeline {
    pub(crate) strategy: Strategy,
    pub(crate) ops: Vec<RateOp>,
}

/// One configuration's results over all rounds.
struct Row {
    connections: usize,
    pipeline: usize,
    calls: u64,
    ours: Vec<f64>,
    theirs: Vec<f64>,
    divergences: u64,
    first_divergence: Option<String>,
}

/// One measured configuration.
struct Measured {
    calls: u64,
    elapsed: Duration,
    divergences: u64,
    first_divergence: Option<String>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
}

fn execute(args: ReplayBenchArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.pipeline == 0 || args.calls == 0 {
        bail!("--calls, --connections and --pipeline must be at least 1");
    }
    let vectors_path = args
        .vectors
        .clone()
        .unwrap_or_else(|| args.contract.join("golden-vectors.json"));
    let vectors = crate::conformance::corpus::load_vectors(&vectors_path)?;
    if crate::conformance::corpus::uses_zero_now(&vectors) {
        bail!(
            "{}: the vectors use now = 0; bench replay needs explicit times",
            vectors_path.display()
        );
    }
    let timelines: Arc<Vec<Timeline>> = Arc::new(
        vectors
            .suites
            .iter()
            .filter_map(|s| match s {
                Suite::RateLimit(r) if !r.ops.is_empty() => Some(Timeline {
                    strategy: r.strategy,
                    ops: r.ops.clone(),
                }),
                _ => None,
            })
            .collect(),
    );
    if timelines.is_empty() {
        bail!("{}: no rate-limit suites to replay", vectors_path.display());
    }
    let scripts = Arc::new(ScriptSet::from_contract_dir(&args.contract)?);
    let progress = Progress::new();
    let runtime = crate::cli_edge::runtime()?;
    runtime.block_on(async {
        progress.phase("starting redis");
        let redis = RedisInstance::provision(&RedisOptions {
            url: args.redis_url.clone(),
            server_binary: args.redis_server.clone(),
            container_image: None,
        })
        .await?;
        progress.line(&format!("redis: {}", redis.describe()));
        let mut con = connect(redis.url()).await?;
        scripts.load_all(&mut con).await?;
        let prefix = format!(
            "tk-conform-bench:{}:{:x}",
            std::process::id(),
            rand::random::<u32>()
        );

        let configs = [(1usize, 1usize), (args.connections, args.pipeline)];
        // Measured in a block of its own, so a failure still leaves a shared Redis clean.
        let measured = async {
        let mut rows = Vec::new();
        for (i, &(connections, pipeline)) in configs.iter().enumerate() {
            // Alternate ours and theirs for several rounds and keep the medians: the machine may
            // be shared, and alternating spreads any noise over both sides.
            let mut row = Row {
                connections,
                pipeline,
                calls: 0,
                ours: Vec::new(),
                theirs: Vec::new(),
                divergences: 0,
                first_divergence: None,
            };
            for round in 0..args.rounds {
                progress.phase(&format!(
                    "round {}/{}: replaying {} calls over {connections} connection(s), pipeline {pipeline}",
                    round + 1,
                    args.rounds,
                    args.calls
                ));
                let ours = replay_at_scale(
                    &scripts,
                    &timelines,
                    redis.url(),
                    &format!("{prefix}:{i}:{round}"),
                    args.calls,
                    connections,
                    pipeline,
                )
                .await?;
                row.calls = ours.calls;
                row.ours.push(ours.rate());
                row.divergences += ours.divergences;
                row.first_divergence = row.first_divergence.or(ours.first_divergence);
                if !args.no_redis_benchmark {
                    progress.phase(&format!(
                        "round {}/{}: redis-benchmark, same scripts and mix, -c {connections} -P {pipeline}",
                        round + 1,
                        args.rounds
                    ));
                    if let Some(rate) = redis_benchmark(
                        &scripts,
                        &timelines,
                        redis.url(),
                        &format!("{prefix}:rb"),
                        &BenchmarkLoad {
                            calls: args.calls,
                            keys: args.keys,
                            bound: Duration::from_secs(args.redis_benchmark_timeout),
                        },
                        connections,
                        pipeline,
                    )
                    .await?
                    {
                        row.theirs.push(rate);
                    }
                }
            }
            rows.push(row);
        }
        anyhow::Ok(rows)
        }
        .await;
        progress.clear();
        if redis.is_external() {
            crate::infra::delete_prefixed(&mut con, &prefix).await?;
        }
        let rows = measured?;

        println!(
            "bench replay: {} rate-limit timelines from {}",
            timelines.len(),
            vectors_path.display()
        );
        println!("redis: {}", redis.describe());
        println!(
            "{:<14} {:>9} {:>16} {:>22} {:>7} {:>12}",
            "config", "calls", "tk-conform ops/s", "redis-benchmark ops/s", "ratio", "divergences"
        );
        for row in &rows {
            let ours = median(&row.ours);
            let (bench, ratio) = match row.theirs.is_empty() {
                false => {
                    let theirs = median(&row.theirs);
                    (format!("{theirs:.0}"), format!("{:.2}", ours / theirs))
                }
                true => ("-".into(), "-".into()),
            };
            println!(
                "{:<14} {:>9} {:>16.0} {:>22} {:>7} {:>12}",
                format!("c={} P={}", row.connections, row.pipeline),
                row.calls,
                ours,
                bench,
                ratio,
                row.divergences
            );
            if let Some(first) = &row.first_divergence {
                println!("  first divergence: {first}");
            }
        }
        println!(
            "(medians of {} alternating rounds; calls per round per side)",
            args.rounds
        );
        if !args.no_redis_benchmark && rows.iter().any(|r| r.theirs.is_empty()) {
            println!("(redis-benchmark not found on PATH: no comparison)");
        }
        anyhow::Ok(())
    })
}

/// Replays whole timelines on fresh keys until at least `calls` script calls were made, over
/// `connections` connections each sending pipelines of `pipeline` EVALSHAs.
async fn replay_at_scale(
    scripts: &Arc<ScriptSet>,
    timelines: &Arc<Vec<Timeline>>,
    url: &str,
    prefix: &str,
    calls: u64,
    connections: usize,
    pipeline: usize,
) -> anyhow::Result<Measured> {
    let mut cons = Vec::with_capacity(connections);
    for _ in 0..connections {
        cons.push(connect(url).await?);
    }
    let next_job = Arc::new(AtomicUsize::new(0));
    let done_calls = Arc::new(AtomicU64::new(0));
    let divergences = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut con in cons {
        let (scripts, timelines) = (Arc::clone(scripts), Arc::clone(timelines));
        let (next_job, done_calls, divergences) = (
            Arc::clone(&next_job),
            Arc::clone(&done_calls),
            Arc::clone(&divergences),
        );
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut first_divergence = None;
            // Calls queued for the next pipeline, with what each must answer.
            let mut batch = redis::pipe();
            let mut expected = Vec::with_capacity(pipeline);
            loop {
                let job = next_job.fetch_add(1, Ordering::Relaxed);
                let more = done_calls.load(Ordering::Relaxed) < calls;
                if more {
                    let timeline = &timelines[job % timelines.len()];
                    let bound = scripts.bind(&timeline.strategy)?;
                    let key = format!("{prefix}:{job}");
                    for op in &timeline.ops {
                        batch.add_command(bound.evalsha_cmd(&key, op.now, op.cost));
                        expected.push(op.expect);
                        if expected.len() == pipeline {
                            flush(
                                &mut con,
                                &mut batch,
                                &mut expected,
                                &done_calls,
                                &divergences,
                                &mut first_divergence,
                            )
                            .await?;
                        }
                    }
                }
                if !more {
                    flush(
                        &mut con,
                        &mut batch,
                        &mut expected,
                        &done_calls,
                        &divergences,
                        &mut first_divergence,
                    )
                    .await?;
                    return anyhow::Ok(first_divergence);
                }
            }
        }));
    }
    let mut first_divergence = None;
    for task in tasks {
        let first = task.await.context("a bench task panicked")??;
        first_divergence = first_divergence.or(first);
    }
    Ok(Measured {
        calls: done_calls.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        divergences: divergences.load(Ordering::Relaxed),
        first_divergence,
    })
}

async fn flush(
    con: &mut redis::aio::MultiplexedConnection,
    batch: &mut redis::Pipeline,
    expected: &mut Vec<crate::model::Decision>,
    done_calls: &AtomicU64,
    divergences: &AtomicU64,
    first_divergence: &mut Option<String>,
) -> anyhow::Result<()> {
    if expected.is_empty() {
        return Ok(());
    }
    let replies: Vec<redis::Value> = batch
        .query_async(con)
        .await
        .context("a pipelined EVALSHA failed")?;
    for (reply, want) in replies.iter().zip(expected.iter()) {
        let got = decision_from_reply(reply);
        if got.as_ref() != Ok(want) {
            divergences.fetch_add(1, Ordering::Relaxed);
            if first_divergence.is_none() {
                *first_divergence = Some(format!("expected {want}, got {got:?}"));
            }
        }
    }
    done_calls.fetch_add(expected.len() as u64, Ordering::Relaxed);
    batch.clear();
    expected.clear();
    Ok(())
}

/// How much load `redis_benchmark` sends: calls in all, on how many random keys, and the
/// time bound of each redis-benchmark child.
pub(crate) struct BenchmarkLoad {
    pub calls: u64,
    pub keys: u64,
    pub bound: Duration,
}

/// redis-benchmark's combined rate over the same scripts, weighted like the corpus's mix:
/// each script runs with its share of the calls (with one representative op's arguments, on
/// `--keys` random keys), and the combined rate is total calls / total time.
pub(crate) async fn redis_benchmark(
    scripts: &ScriptSet,
    timelines: &[Timeline],
    url: &str,
    key_prefix: &str,
    load: &BenchmarkLoad,
    connections: usize,
    pipeline: usize,
) -> anyhow::Result<Option<f64>> {
    let Some(binary) = redis_benchmark::binary() else {
        return Ok(None);
    };
    // Calls per script in one pass over the corpus, and one representative op for each.
    // Keyed by script name; each script gets its own key space (a key holds one strategy's type).
    let mut mix: BTreeMap<String, (String, u64, Vec<String>)> = BTreeMap::new();
    for t in timelines {
        let bound = scripts.bind(&t.strategy)?;
        let entry = mix
            .entry(bound.script().entry.name.clone())
            .or_insert_with(|| {
                let argv = bound.argv(t.ops[0].now, t.ops[0].cost);
                (bound.script().sha1.clone(), 0, argv)
            });
        entry.1 += t.ops.len() as u64;
    }
    let pass: u64 = mix.values().map(|(_, n, _)| n).sum();
    let (mut total_calls, mut total_secs) = (0u64, 0f64);
    for (name, (sha, share, argv)) in &mix {
        let n = (load.calls * share / pass).max(10_000);
        let rps = redis_benchmark::rate(
            &binary,
            &redis_benchmark::Run {
                url,
                sha,
                key_prefix: &format!("{key_prefix}:{name}"),
                argv,
                connections: connections as u64,
                pipeline: pipeline as u64,
                requests: n,
                keys: load.keys,
                bound: load.bound,
            },
        )
        .await?;
        total_calls += n;
        total_secs += n as f64 / rps;
    }
    Ok(Some(total_calls as f64 / total_secs))
}
