//! `tk-conform mutate`: how good are the vectors? The kill score of the catalogue's mutants.
//!
//! Exit codes: 0 the score is at least `--min-score`, 1 below it, 2 usage or infrastructure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use super::operators::{Mutant, Operator, mutants};
use super::runner::{Fate, JudgeConfig, judge};
use crate::contract::scripts::ScriptRole;
use crate::contract::vectors::Suite;
use crate::fuzz::cli::RedisTarget;
use crate::fuzz::render;
use crate::fuzz::shrink::op_count;
use crate::infra::{LocalRedis, find_redis_binary};
use crate::redis_scripts::ScriptSet;
use crate::report::{Progress, write_atomic};

#[derive(Debug, clap::Args)]
pub struct MutateArgs {
    /// The contract folder: its scripts are mutated, its golden vectors replayed.
    #[arg(long, conflicts_with = "scripts")]
    pub contract: Option<PathBuf>,
    /// A scripts folder (manifest.json + *.lua) to mutate instead; the vectors then come from
    /// --vectors (default contract/golden-vectors.json).
    #[arg(long, value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// The vectors to replay against each mutant.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Exit 1 when the kill score (percent, equivalent mutants left out) is below this.
    #[arg(long, default_value_t = 0.0, value_parser = parse_score)]
    pub min_score: f64,
    /// Comma-separated operators (default: the whole catalogue): flip-comparison, floor-ceil,
    /// off-by-one, drop-expiry, halve-expiry, swap-argv, delete-write, cost-one.
    #[arg(long, value_delimiter = ',', value_parser = parse_operator)]
    pub operator: Vec<Operator>,
    /// Comma-separated script names to mutate (e.g. gcra.check); default: every check script.
    #[arg(long, value_delimiter = ',')]
    pub script: Vec<String>,
    /// Mutants judged in parallel, each worker on its own connection.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections: u64,
    /// Fuzz timelines per survivor before calling it equivalent (0: skip that check).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub equivalence_sample: u64,
    /// Seed of the equivalence fuzzing (fixed by default, so the report is reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Candidates the shrinker may try per survivor witness.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub shrink_attempts: u64,
    /// Where the report (mutate.json) and the survivors' witness timelines go.
    #[arg(long, default_value = "logs/mutate")]
    pub out: PathBuf,
    /// The redis-server (or valkey-server) binary to start (mutants always run in a Redis this
    /// command starts and owns, never in yours).
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
}

/// A flag value `mutate` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("`{0}` is not a percentage")]
    NotAPercentage(String),
    #[error("`{0}`: a score is a percentage from 0 to 100")]
    ScoreRange(String),
    #[error("unknown operator `{0}`; one of: {all}", all = Operator::ALL.map(Operator::name).join(", "))]
    UnknownOperator(String),
}

fn parse_score(text: &str) -> Result<f64, FlagError> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| FlagError::NotAPercentage(text.into()))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(FlagError::ScoreRange(text.into()));
    }
    Ok(value)
}

fn parse_operator(text: &str) -> Result<Operator, FlagError> {
    Operator::from_name(text.trim()).ok_or_else(|| FlagError::UnknownOperator(text.into()))
}

pub fn run(args: MutateArgs) -> ExitCode {
    crate::cli_edge::exit_code("mutate", execute(args))
}

/// The catalogue applied to every check script of `set` (or those named in `only`).
pub fn catalogue(set: &ScriptSet, operators: &[Operator], only: &[String]) -> Vec<Mutant> {
    let mut out = Vec::new();
    for script in set.scripts() {
        if script.entry.role != ScriptRole::Check
            || (!only.is_empty() && !only.contains(&script.entry.name))
        {
            continue;
        }
        let cost = script
            .entry
            .argv
            .iter()
            .position(|a| a == "cost")
            .map(|i| i + 1);
        out.extend(mutants(
            &script.entry.name,
            &script.entry.file,
            &script.code,
            cost,
            operators,
        ));
    }
    out
}

fn execute(args: MutateArgs) -> anyhow::Result<ExitCode> {
    let contract = args
        .contract
        .clone()
        .unwrap_or_else(|| PathBuf::from("contract"));
    let (set, vectors_path) = match &args.scripts {
        Some(dir) => (
            ScriptSet::load(&dir.join("manifest.json"))?,
            args.vectors
                .clone()
                .unwrap_or_else(|| PathBuf::from("contract/golden-vectors.json")),
        ),
        None => {
            // The drift gate, as for `run`.
            crate::conformance::corpus::contract_digest(&contract)?;
            (
                ScriptSet::from_contract_dir(&contract)?,
                args.vectors
                    .clone()
                    .unwrap_or_else(|| contract.join("golden-vectors.json")),
            )
        }
    };
    let vectors = crate::conformance::corpus::load_vectors(&vectors_path)?;
    if crate::conformance::corpus::uses_zero_now(&vectors) {
        bail!(
            "{}: the vectors use now = 0 (the server clock); mutate needs explicit times",
            vectors_path.display()
        );
    }
    let suites: Vec<Suite> = vectors
        .suites
        .into_iter()
        .filter(|s| matches!(s, Suite::RateLimit(_)))
        .collect();
    for name in &args.script {
        if !set
            .scripts()
            .iter()
            .any(|s| &s.entry.name == name && s.entry.role == ScriptRole::Check)
        {
            bail!(
                "--script {name}: {} has no check script of that name",
                set.manifest_path().display()
            );
        }
    }
    let operators = if args.operator.is_empty() {
        Operator::ALL.to_vec()
    } else {
        args.operator.clone()
    };
    let mutants = catalogue(&set, &operators, &args.script);
    if mutants.is_empty() {
        bail!("the operators made no mutant of the chosen scripts: nothing to score");
    }
    let binary = match &args.redis_server {
        Some(b) => b.clone(),
        None => find_redis_binary().context(
            "mutate runs its mutants in a redis-server it starts: none on PATH (install \
             redis-server, or pass --redis-server BIN)",
        )?,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let runtime = crate::cli_edge::runtime()?;
    let progress = Progress::new();
    println!(
        "mutate: {} mutants of {} ({}), against {} rate-limit suites of {}",
        mutants.len(),
        set.manifest_path().display(),
        operators
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(", "),
        suites.len(),
        vectors_path.display()
    );
    let started = Instant::now();
    let fates = runtime.block_on(async {
        progress.phase("starting redis-server");
        let redis = LocalRedis::start(&binary).await?;
        let url = redis.url();
        progress.phase(&format!("judging {} mutants", mutants.len()));
        let config = JudgeConfig {
            connections: args.connections as usize,
            equivalence_sample: args.equivalence_sample,
            seed: args.seed,
            shrink_attempts: args.shrink_attempts as usize,
        };
        let target = RedisTarget {
            url: &url,
            version: "redis-server (mutate)",
            external: false,
        };
        let fates = judge(&set, &mutants, &suites, &target, &config).await?;
        drop(redis);
        anyhow::Ok(fates)
    })?;
    progress.clear();
    let elapsed = started.elapsed();
    report(&args, &mutants, &fates, elapsed.as_secs_f64())
}

fn report(
    args: &MutateArgs,
    mutants: &[Mutant],
    fates: &[Fate],
    seconds: f64,
) -> anyhow::Result<ExitCode> {
    let killed = fates.iter().filter(|f| f.is_killed()).count();
    let timed_out = fates.iter().filter(|f| matches!(f, Fate::TimedOut)).count();
    let survived = fates
        .iter()
        .filter(|f| matches!(f, Fate::Survived { .. }))
        .count();
    let equivalent = fates
        .iter()
        .filter(|f| matches!(f, Fate::Equivalent { .. }))
        .count();
    let judged = killed + survived;
    let score = if judged == 0 {
        100.0
    } else {
        100.0 * killed as f64 / judged as f64
    };
    let mut entries = Vec::new();
    for (i, (mutant, fate)) in mutants.iter().zip(fates).enumerate() {
        let mut entry = serde_json::json!({
            "id": i,
            "script": mutant.script,
            "line": mutant.line,
            "operator": mutant.operator.name(),
            "diff": mutant.diff(),
            "fate": fate.label(),
        });
        match fate {
            Fate::Killed { by } => entry["by"] = serde_json::json!(by),
            Fate::Equivalent { sample } => entry["fuzzTimelines"] = serde_json::json!(sample),
            Fate::Survived { witness } => {
                let path = args.out.join(format!("survivor-{i}.toml"));
                let shrunk = &witness.shrunk;
                let mut header = vec![
                    format!("tk-conform mutate: a timeline that kills mutant {i}"),
                    mutant.diff(),
                    format!(
                        "found by fuzz seed {} timeline {}, shrunk to {} op(s)",
                        args.seed,
                        witness.index,
                        op_count(&shrunk.timeline)
                    ),
                ];
                header.extend(shrunk.divergence.to_string().lines().map(str::to_owned));
                write_atomic(&path, render::toml(&shrunk.timeline, &header).as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                entry["witness"] = serde_json::json!(path.display().to_string());
            }
            Fate::TimedOut => {}
        }
        entries.push(entry);
    }
    println!(
        "mutate: killed {killed} ({timed_out} timed out), survived {survived}, equivalent {equivalent} \
         (not told apart by {} fuzz timelines each)",
        args.equivalence_sample
    );
    println!("mutate: score {score:.1}% ({killed} / {judged}; equivalent mutants left out)");
    for (i, (mutant, fate)) in mutants.iter().zip(fates).enumerate() {
        match fate {
            Fate::Survived { .. } => println!(
                "survived   #{i} {} (witness: {})",
                mutant.diff(),
                args.out.join(format!("survivor-{i}.toml")).display()
            ),
            Fate::Equivalent { .. } => println!("equivalent #{i} {}", mutant.diff()),
            _ => {}
        }
    }
    eprintln!("mutate: {} mutants in {seconds:.1} s", mutants.len());
    let record = serde_json::json!({
        "score": (score * 10.0).round() / 10.0,
        "minScore": args.min_score,
        "killed": killed,
        "timedOut": timed_out,
        "survived": survived,
        "equivalent": equivalent,
        "equivalenceSample": args.equivalence_sample,
        "seed": args.seed,
        "seconds": (seconds * 10.0).round() / 10.0,
        "mutants": entries,
    });
    write_record(&args.out.join("mutate.json"), &record)?;
    if score < args.min_score {
        println!(
            "mutate: score {score:.1}% is below --min-score {}%",
            args.min_score
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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
    fn scores_are_percentages() {
        assert_eq!(parse_score("90"), Ok(90.0));
        assert_eq!(parse_score("99.5%"), Ok(99.5));
        let err = |text: &str| parse_score(text).unwrap_err().to_string();
        assert!(err("101").contains("0 to 100"));
        assert!(err("-1").contains("0 to 100"));
        assert!(parse_score("NaN").is_err());
        assert!(err("lots").contains("not a percentage"));
        assert!(
            parse_operator("nope")
                .unwrap_err()
                .to_string()
                .contains("unknown operator `nope`; one of: ")
        );
    }

    #[test]
    fn the_catalogue_covers_every_operator_on_the_contract() {
        let set =
            ScriptSet::from_contract_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("contract"))
                .unwrap();
        let all = catalogue(&set, &Operator::ALL, &[]);
        for op in Operator::ALL {
            assert!(all.iter().any(|m| m.operator == op), "no {op} mutant");
        }
        assert!(all.iter().all(|m| m.script.ends_with(".check")));
        let gcra = catalogue(&set, &[Operator::FloorCeil], &["gcra.check".into()]);
        assert!(!gcra.is_empty() && gcra.iter().all(|m| m.script == "gcra.check"));
    }
}
