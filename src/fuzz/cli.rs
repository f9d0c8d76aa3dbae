//! `tk-conform fuzz`: differential fuzzing of a backend against the reference model.
//!
//! Exit codes: 0 no divergence within the budget, 1 a divergence (written out, shrunk), 2 usage
//! or infrastructure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::engine::{SearchConfig, SearchOutcome, search};
use super::oracle::{self, Oracle};
use super::render;
use super::shrink::op_count;
use super::space::{Space, Target};
use crate::backend::Backend;
use crate::backend::exec::ExecArgs;
use crate::backend::redis::RedisBackend;
use crate::conformance::backends::{BackendKind, ProvisionRequest, provision};
use crate::contract::generate;
use crate::contract::timelines::TimelineFile;
use crate::infra::{RedisInstance, RedisOptions, connect};
use crate::redis_scripts::ScriptSet;
use crate::report::{Progress, write_atomic};

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// The engine to fuzz. `service` decides on its own clock and cannot be fuzzed; a
    /// protocol-2 `exec` adapter is judged by its family's invariants (`fuzz::property`).
    #[arg(long, value_enum, default_value = "redis")]
    pub backend: BackendKind,
    /// The contract folder (its scripts/ are the redis backend's scripts).
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// A scripts folder (manifest.json + *.lua) instead of <contract>/scripts.
    #[arg(long, value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// How long to search: `1500ms`, `60s`, `2m`, `1h` (1 s to 24 h).
    #[arg(long, default_value = "60s", value_parser = parse_time)]
    pub time: Duration,
    /// Stop after this many timelines (the same seed and count always give the same output).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub timelines: Option<u64>,
    /// Every random choice derives from it; random by default, always printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Comma-separated primitives to fuzz (gcra, tokenBucket, fixedWindow, slidingWindow,
    /// slidingWindowLog, tokenBudget, lease). Default: all the backend claims.
    #[arg(long, value_delimiter = ',', value_parser = parse_target)]
    pub strategy: Vec<Target>,
    /// Parallel workers, each on its own connection (redis) or session.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub connections: u64,
    /// Ops per key in one timeline, at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub max_ops: u64,
    /// Keys in one timeline, at most.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub max_keys: u64,
    /// Candidates the shrinker may try.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub shrink_attempts: u64,
    /// Where the minimal case goes (`fuzz-<seed>.toml`, `.vectors.json`, `.json`).
    #[arg(long, default_value = "logs/fuzz")]
    pub out: PathBuf,
    /// Use this Redis instead of starting one (keys get a unique prefix; nothing is flushed).
    #[arg(long, env = "TK_CONFORM_REDIS_URL")]
    pub redis_url: Option<String>,
    /// The redis-server (or valkey-server) binary to start.
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `60s`, `500ms`, `2m`, `1h`, or bare seconds; 1 s to 24 h.
/// A flag value `fuzz` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("`{0}` is not a duration like 500ms, 60s, 2m or 1h")]
    NotADuration(String),
    #[error("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is out of range: 1s to 24h")]
    TimeRange(String),
    #[error("unknown primitive `{0}`; one of: {all}", all = Target::ALL.map(Target::name).join(", "))]
    UnknownPrimitive(String),
}

pub fn parse_time(text: &str) -> Result<Duration, FlagError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| FlagError::NotADuration(text.into()))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => {
            return Err(FlagError::UnknownUnit {
                text: text.into(),
                unit: unit.into(),
            });
        }
    };
    if !(1000..=86_400_000).contains(&ms) {
        return Err(FlagError::TimeRange(text.into()));
    }
    Ok(Duration::from_millis(ms))
}

fn parse_target(text: &str) -> Result<Target, FlagError> {
    Target::from_name(text.trim()).ok_or_else(|| FlagError::UnknownPrimitive(text.into()))
}

pub fn run(args: FuzzArgs) -> ExitCode {
    crate::cli_edge::exit_code("fuzz", execute(args))
}

/// The key prefix of one fuzz run on a (possibly shared) Redis.
fn key_prefix(seed: u64) -> String {
    format!("tk-conform:fuzz:{seed:x}:{}", std::process::id())
}

/// The Redis a set of redis backends talks to.
pub struct RedisTarget<'a> {
    pub url: &'a str,
    /// e.g. `redis 7.0.15`.
    pub version: &'a str,
    /// Not ours: only our own keys are deleted at the end.
    pub external: bool,
}

/// `n` redis backends over `scripts`, each with its own connection.
pub async fn redis_backends(
    scripts: Arc<ScriptSet>,
    target: &RedisTarget<'_>,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<Arc<dyn Backend>>> {
    let mut backends: Vec<Arc<dyn Backend>> = Vec::with_capacity(n);
    for i in 0..n {
        let con = connect(target.url).await?;
        backends.push(Arc::new(
            RedisBackend::new(
                Arc::clone(&scripts),
                con,
                target.url,
                target.version,
                &format!("{prefix}:{i}"),
            )
            .delete_keys_on_shutdown(target.external),
        ));
    }
    Ok(backends)
}

fn execute(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    if args.backend == BackendKind::Service {
        bail!(
            "--backend service decides on the server's own clock, so its answers cannot be \
             compared with the exact model; to fuzz a foreign engine against its family's \
             invariants, wrap it in a protocol-2 adapter with an explicit clock and use \
             --backend exec --adapter CMD"
        );
    }
    if args.scripts.is_some() && args.backend != BackendKind::Redis {
        bail!("--scripts applies to --backend redis only");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let runtime = crate::cli_edge::runtime()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let progress = Progress::new();
    let workers = args.connections as usize;
    let redis = RedisOptions {
        url: args.redis_url.clone(),
        server_binary: args.redis_server.clone(),
        container_image: Some("redis:7".into()),
    };
    let mut keep_alive: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut property_target = None;
    let backends: Vec<Arc<dyn Backend>> = runtime.block_on(async {
        match args.backend {
            BackendKind::Redis => {
                let scripts = Arc::new(match &args.scripts {
                    Some(dir) => ScriptSet::load(&dir.join("manifest.json"))?,
                    None => ScriptSet::from_contract_dir(&args.contract)?,
                });
                progress.phase("starting redis");
                let instance = RedisInstance::provision(&redis).await?;
                let target = RedisTarget {
                    url: instance.url(),
                    version: instance.version(),
                    external: instance.is_external(),
                };
                let backends = redis_backends(scripts, &target, &key_prefix(seed), workers).await?;
                keep_alive.push(Box::new(instance));
                anyhow::Ok(backends)
            }
            kind => {
                let request = ProvisionRequest {
                    contract_dir: &args.contract,
                    scripts_dir: None,
                    redis: redis.clone(),
                    key_prefix: key_prefix(seed),
                    log_dir: &args.out,
                    exec: &args.exec,
                    // Never used: the service backend was refused above.
                    service: crate::backend::service::ServiceArgs {
                        endpoint: None,
                        server_cmd: None,
                        server_config: crate::service_suites::POLICY_FILE.into(),
                        server_store: crate::backend::service::ServerStore::Memory,
                        lease_ttl_ms: 1000,
                        fleet_secret: None,
                        monitor_secret: None,
                    },
                    trial_timeout: std::time::Duration::from_secs(60),
                };
                let provisioned = provision(kind, &request, &progress).await?;
                keep_alive.extend(provisioned.keep_alive);
                property_target = provisioned.property;
                Ok(vec![provisioned.backend])
            }
        }
    })?;
    progress.clear();
    if let Some(target) = property_target {
        let code = super::property_cli::run(&args, seed, &target, &runtime);
        let _ = runtime.block_on(backends[0].shutdown());
        drop(backends);
        drop(keep_alive);
        return code;
    }
    let caps = backends[0].capabilities();
    let wanted = if args.strategy.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.strategy.clone()
    };
    let (targets, declined): (Vec<Target>, Vec<Target>) =
        wanted.into_iter().partition(|t| oracle::claims(&caps, *t));
    if targets.is_empty() {
        bail!(
            "the {} backend claims none of {} with an explicit clock: nothing to fuzz",
            args.backend.label(),
            declined
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let config = SearchConfig {
        seed,
        space: Space {
            targets: targets.clone(),
            max_ops: args.max_ops as usize,
            max_keys: args.max_keys as usize,
        },
        workers,
        time: args.time,
        max_timelines: args.timelines,
        shrink_attempts: args.shrink_attempts as usize,
        progress: true,
    };
    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    println!(
        "fuzz: seed {seed}, backend {}, oracle {}, {workers} connection(s), {}",
        args.backend.label(),
        Oracle::ExactModel.name(),
        names.join(", ")
    );
    let outcome = runtime.block_on(search(&config, Oracle::ExactModel, &backends));
    for backend in &backends {
        let _ = runtime.block_on(backend.shutdown());
    }
    drop(backends);
    drop(keep_alive);
    eprintln!(
        "fuzz: {} timelines, {} ops in {:.1} s ({:.0} ops/s); the wall-clock rule cut {} and \
         left nothing of {}; {} declined",
        outcome.timelines,
        outcome.ops,
        outcome.elapsed.as_secs_f64(),
        outcome.ops_per_sec(),
        outcome.cut,
        outcome.dropped,
        outcome.unsupported
    );
    report(&args, seed, &names, &outcome)
}

/// Prints the outcome and writes the files; the exit code.
fn report(
    args: &FuzzArgs,
    seed: u64,
    names: &[&str],
    outcome: &SearchOutcome,
) -> anyhow::Result<ExitCode> {
    let stem = args.out.join(format!("fuzz-{seed}"));
    let with_ext = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
    let mut record = serde_json::json!({
        "seed": seed,
        "backend": args.backend.label(),
        "oracle": Oracle::ExactModel.name(),
        "primitives": names,
        "connections": args.connections,
        "timelines": outcome.timelines,
        "ops": outcome.ops,
        "elapsedMs": outcome.elapsed.as_millis() as u64,
        "opsPerSec": outcome.ops_per_sec().round(),
        "cutByWallClockRule": outcome.cut,
        "droppedByWallClockRule": outcome.dropped,
        "declined": outcome.unsupported,
        "found": null,
    });
    let Some(found) = &outcome.found else {
        println!(
            "fuzz: no divergence in {} timelines (seed {seed})",
            outcome.timelines
        );
        write_record(&with_ext("json"), &record)?;
        return Ok(ExitCode::SUCCESS);
    };
    let shrunk = &found.shrunk;
    let keys = |f: &TimelineFile| f.rate_limit.len() + f.token_budget.len() + f.lease.len();
    let summary = format!(
        "divergence in timeline {} (seed {seed}); shrunk from {} key(s) / {} op(s) to {} key(s) / \
         {} op(s) ({} candidates tried, {} kept)",
        found.index,
        keys(&found.original),
        op_count(&found.original),
        keys(&shrunk.timeline),
        op_count(&shrunk.timeline),
        shrunk.attempts,
        shrunk.kept
    );
    let diff = shrunk.divergence.to_string();
    println!("fuzz: {summary}");
    println!("{diff}");
    let mut header = vec![
        format!(
            "tk-conform fuzz --backend {} --seed {seed}: the minimal diverging timeline",
            args.backend.label()
        ),
        summary.clone(),
    ];
    header.extend(diff.lines().map(str::to_owned));
    let toml_path = with_ext("toml");
    write_atomic(
        &toml_path,
        render::toml(&shrunk.timeline, &header).as_bytes(),
    )
    .with_context(|| format!("cannot write {}", toml_path.display()))?;
    let mut vectors = Oracle::ExactModel
        .prepare(&shrunk.timeline)
        .context("the shrunk timeline no longer generates (a tk-conform bug)")?;
    vectors.generated_from = format!(
        "tk-conform {} fuzz --seed {seed} (timeline {}, shrunk)",
        env!("CARGO_PKG_VERSION"),
        found.index
    );
    let vectors_path = with_ext("vectors.json");
    write_atomic(&vectors_path, generate::render(&vectors).as_bytes())
        .with_context(|| format!("cannot write {}", vectors_path.display()))?;
    record["found"] = serde_json::json!({
        "timeline": found.index,
        "shrinkAttempts": shrunk.attempts,
        "ops": op_count(&shrunk.timeline),
        "divergence": diff,
        "timelineFile": toml_path.display().to_string(),
        "vectorsFile": vectors_path.display().to_string(),
    });
    write_record(&with_ext("json"), &record)?;
    println!(
        "fuzz: wrote {} (a suites/vectors timeline) and {} (replay it: tk-conform run --backend {} \
         --vectors {})",
        toml_path.display(),
        vectors_path.display(),
        args.backend.label(),
        vectors_path.display()
    );
    Ok(ExitCode::from(1))
}

fn write_record(path: &Path, record: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(record).expect("json always serializes");
    text.push('\n');
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_and_need_a_known_unit() {
        assert_eq!(parse_time("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_time("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_time("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_time("5").unwrap(), Duration::from_secs(5));
        let err = |text: &str| parse_time(text).unwrap_err().to_string();
        assert!(err("500ms").contains("1s to 24h"));
        assert!(err("25h").contains("1s to 24h"));
        assert!(err("10d").contains("unknown unit"));
        assert!(err("-1s").contains("not a duration"));
        assert!(parse_time("").is_err());
        assert!(parse_time("99999999999999999999h").is_err());
    }

    #[test]
    fn primitives_are_named_as_in_the_contract() {
        assert_eq!(
            parse_target("gcra"),
            Ok(Target::Rate(crate::model::StrategyKind::Gcra))
        );
        assert_eq!(parse_target("lease"), Ok(Target::Lease));
        assert!(
            parse_target("leaky")
                .unwrap_err()
                .to_string()
                .contains("slidingWindowLog")
        );
    }
}
