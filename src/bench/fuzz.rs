//! `tk-conform bench fuzz`: fuzzing against the contract's Lua in Redis, next to
//! `redis-benchmark` running the same scripts (EVALSHA, in the fuzz sample's mix) at the same
//! number of connections, one call in flight per connection as each fuzz worker has.
//!
//! A fuzz op is one round trip: the EVALSHA and, after a write, the PTTL that checks the key's
//! expiry, pipelined; the rate counted is decisions (ops) per second, as `fuzz` reports it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::median;
use anyhow::bail;

use super::replay::{BenchmarkLoad, Timeline, redis_benchmark};
use crate::contract::vectors::Suite;
use crate::fuzz::cli::{RedisTarget, redis_backends};
use crate::fuzz::engine::prepare_cut;
use crate::fuzz::{Oracle, SearchConfig, Space, Target, search, space};
use crate::infra::{RedisInstance, RedisOptions, connect};
use crate::redis_scripts::ScriptSet;
use crate::report::Progress;

#[derive(Debug, clap::Args)]
pub struct FuzzBenchArgs {
    /// The contract folder whose scripts are fuzzed.
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// Fuzz workers, and redis-benchmark's -c.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub connections: u64,
    /// Timelines per fuzz round.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub timelines: u64,
    /// Alternating rounds of fuzz and redis-benchmark (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The redis-server (or valkey-server) binary to start.
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
}

pub fn run(args: FuzzBenchArgs) -> ExitCode {
    crate::cli_edge::exit_code("bench fuzz", execute(args).map(|()| ExitCode::SUCCESS))
}

fn execute(args: FuzzBenchArgs) -> anyhow::Result<()> {
    let scripts = Arc::new(ScriptSet::from_contract_dir(&args.contract)?);
    let connections = args.connections as usize;
    let space = Space {
        targets: scripts.strategies().into_iter().map(Target::Rate).collect(),
        max_ops: 16,
        max_keys: 3,
    };
    // redis-benchmark's mix: the scripts and arguments of a sample of the same timelines.
    let sample: Vec<Timeline> = (0..500)
        .filter_map(|i| prepare_cut(Oracle::ExactModel, space::timeline(&space, args.seed, i)))
        .flat_map(|(_, vectors, _)| vectors.suites)
        .filter_map(|s| match s {
            Suite::RateLimit(r) => Some(Timeline {
                strategy: r.strategy,
                ops: r.ops,
            }),
            _ => None,
        })
        .collect();
    let progress = Progress::new();
    let runtime = crate::cli_edge::runtime()?;
    runtime.block_on(async {
        progress.phase("starting redis");
        let redis = RedisInstance::provision(&RedisOptions {
            url: None,
            server_binary: args.redis_server.clone(),
            container_image: None,
        })
        .await?;
        let mut con = connect(redis.url()).await?;
        scripts.load_all(&mut con).await?;
        let target = RedisTarget {
            url: redis.url(),
            version: redis.version(),
            external: false,
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut ops = 0;
        for round in 0..args.rounds {
            progress.phase(&format!(
                "round {}/{}: fuzz, {} timelines over {connections} connections",
                round + 1,
                args.rounds,
                args.timelines
            ));
            let backends = redis_backends(
                Arc::clone(&scripts),
                &target,
                &format!("tk-conform-bench:fuzz:{round}"),
                connections,
            )
            .await?;
            let config = SearchConfig {
                seed: args.seed.wrapping_add(u64::from(round)),
                space: space.clone(),
                workers: connections,
                time: Duration::from_secs(600),
                max_timelines: Some(args.timelines),
                shrink_attempts: 1,
                progress: false,
            };
            let outcome = search(&config, Oracle::ExactModel, &backends).await;
            if let Some(found) = outcome.found {
                bail!(
                    "the contract's own scripts diverged from the model:\n{}",
                    found.shrunk.divergence
                );
            }
            ops = outcome.ops;
            ours.push(outcome.ops_per_sec());
            progress.phase(&format!(
                "round {}/{}: redis-benchmark -c {connections}, the same scripts and mix",
                round + 1,
                args.rounds
            ));
            if let Some(rate) = redis_benchmark(
                &scripts,
                &sample,
                redis.url(),
                &format!("tk-conform-bench:fuzz-rb:{round}"),
                &BenchmarkLoad {
                    calls: outcome.ops.max(10_000),
                    keys: 100_000_000,
                    bound: Duration::from_secs(300),
                },
                connections,
                1,
            )
            .await?
            {
                theirs.push(rate);
            }
        }
        progress.clear();
        let ours = median(&ours);
        println!(
            "bench fuzz: redis {}, {connections} connections",
            redis.version()
        );
        println!("fuzz:            {ours:.0} ops/s ({ops} ops per round)");
        if theirs.is_empty() {
            println!("redis-benchmark: not found on PATH, no comparison");
        } else {
            let theirs = median(&theirs);
            println!("redis-benchmark: {theirs:.0} EVALSHA/s (-c {connections} -P 1)");
            println!("ratio:           {:.2}", ours / theirs);
        }
        println!("(medians of {} alternating rounds)", args.rounds);
        anyhow::Ok(())
    })
}
