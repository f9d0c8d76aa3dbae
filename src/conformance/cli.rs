//! `tk-conform run`: replay the contract's golden vectors against a backend, with logs, JUnit
//! and a CI-gate exit code (0 all passed, 1 a trial failed, 2 usage/contract/infrastructure).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::backends::{BackendKind, ProvisionRequest, Provisioned, provision};
use super::corpus;
use super::trial::{TrialSpec, VectorReplay, run_trials, vector_trials};
use crate::backend::exec::ExecArgs;
use crate::contract::vectors::Suite;
use crate::exit::TkExitCode;
use crate::infra::RedisOptions;
use crate::report::{Progress, RunDir, RunRecorder, RunStatus, Summary};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The engine to judge.
    #[arg(long, value_enum, default_value = "redis")]
    pub backend: BackendKind,
    /// The contract folder (golden-vectors.json, scripts/, manifest.sha256).
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// `--backend redis`: judge your own Lua scripts, a folder holding `manifest.json` (spec 6)
    /// and the `*.lua` files it names, against the vendored vectors. The drift gate guards the
    /// vendored contract, not the engine under test: DIR needs no SOURCE or manifest.sha256.
    #[arg(long, value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// A vectors file to replay instead of <contract>/golden-vectors.json.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Use this Redis instead of starting one. Never flushed: keys get a unique per-run prefix.
    #[arg(long, env = "TK_CONFORM_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The redis-server (or valkey-server) binary to start, instead of the first on PATH.
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
    /// Image for the Docker fallback when no binary is found.
    #[arg(long, default_value = "redis:7")]
    pub redis_image: String,
    /// Where run folders go (`<logs>/<UTC timestamp>-<backend>/`, `<logs>/latest`).
    #[arg(long, default_value = "logs")]
    pub logs: PathBuf,
    /// Replay every suite this many times, each time from empty state.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub repeat: u32,
    /// Milliseconds added to every `now` of every suite (spec 5), at most 1e15. Default: per
    /// suite, 0, or for a rate-limit suite that uses the `now = 0` sentinel the smallest
    /// multiple of 1000 that is also a multiple of its window and bucket widths.
    #[arg(long)]
    pub clock_offset: Option<f64>,
    /// Recorded in the logs; also part of the run's key prefix. Random by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Per-trial bound on one replay (vector suites and service suites), in seconds, 1 to 86400.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub trial_timeout: u64,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// `--backend service`: where the server is, or how to start it.
    #[command(flatten)]
    pub service: crate::backend::service::ServiceArgs,
    /// libtest flags after `--`: filters, --exact, --list, --test-threads, --format, --skip, ...
    #[arg(last = true)]
    pub libtest: Vec<String>,
}

/// Runs the command; every error is reported on one line and becomes exit code 2.
pub fn run(args: RunArgs) -> ExitCode {
    crate::cli_edge::exit_code("run", execute(args))
}

fn execute(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    args.contract = crate::contract::bundled::resolve(&args.contract)?;
    let libtest = match libtest_mimic::Arguments::try_parse_from(
        std::iter::once("tk-conform run --".to_owned()).chain(args.libtest.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and friends after `--`.
            let _ = e.print();
            return Ok(TkExitCode::of(TkExitCode::PASSED));
        }
        Err(e) => anyhow::bail!("bad libtest arguments after `--`: {}", e.kind()),
    };
    if args.scripts.is_some() && args.backend != BackendKind::Redis {
        anyhow::bail!(
            "--scripts DIR judges Lua scripts, which only --backend redis runs (got --backend {})",
            args.backend.label()
        );
    }
    let vectors_path = args
        .vectors
        .clone()
        .unwrap_or_else(|| args.contract.join("golden-vectors.json"));
    let vectors = corpus::load_vectors(&vectors_path)?;
    let explicit_offset = args
        .clock_offset
        .map(corpus::check_clock_offset)
        .transpose()?;
    let offsets = corpus::offsets(&vectors, &vectors_path, explicit_offset)?;
    let suites: Vec<Suite> = vectors
        .suites
        .iter()
        .zip(&offsets)
        .map(|(s, o)| corpus::shifted(s, o.offset_ms))
        .collect();
    // The summary's single number is the largest; each suite's own is logged and in `details`.
    let clock_offset = offsets.iter().map(|o| o.offset_ms).fold(0.0, f64::max);

    if libtest.list {
        // Listing needs no backend: every suite is a trial name.
        let mut names: Vec<String> = suites.iter().map(Suite::trial_name).collect();
        if args.backend == BackendKind::Service {
            names.extend(super::service::service_trial_names());
        }
        let specs = names
            .into_iter()
            .map(|name| TrialSpec::new(name, "vectors", || unreachable!("only listed")))
            .collect();
        let _ = run_trials(&libtest, specs, None);
        return Ok(TkExitCode::of(TkExitCode::PASSED));
    }

    let contract_digest = corpus::contract_digest(&args.contract)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let run_dir = RunDir::create(&args.logs, args.backend.label())
        .with_context(|| format!("cannot create a run folder under {}", args.logs.display()))?;
    let mut summary = Summary::new("run", &args.contract.display().to_string(), seed);
    summary.contract_digest = contract_digest.clone();
    summary.clock_offset_ms = clock_offset;
    summary.details.insert(
        "clockOffsets".into(),
        offsets
            .iter()
            .filter(|o| o.offset_ms != 0.0)
            .map(|o| (o.trial.clone(), serde_json::json!(o.offset_ms)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    summary
        .details
        .insert("repeat".into(), serde_json::json!(args.repeat));
    if let Some(dir) = &args.scripts {
        summary.details.insert(
            "scripts".into(),
            serde_json::json!(dir.display().to_string()),
        );
    }
    summary.details.insert(
        "vectors".into(),
        serde_json::json!(vectors_path.display().to_string()),
    );
    let recorder = Arc::new(
        RunRecorder::start(run_dir, summary)
            .with_context(|| format!("cannot write logs under {}", args.logs.display()))?,
    );
    let progress = Progress::new();
    progress.line(&format!("logs: {}", recorder.dir().path().display()));
    recorder.log(&format!(
        "tk-conform {} run --backend {}, seed {seed}, vectors {} ({} suites), contract digest {}",
        env!("CARGO_PKG_VERSION"),
        args.backend.label(),
        vectors_path.display(),
        suites.len(),
        contract_digest
            .as_deref()
            .unwrap_or("none (no manifest.sha256)")
    ));
    for o in offsets.iter().filter(|o| o.offset_ms != 0.0) {
        let line = format!(
            "clock offset: {} ms added to every now of {} ({}; expecting resetAt + {})",
            o.offset_ms, o.trial, o.reason, o.offset_ms
        );
        progress.line(&line);
        recorder.log(&line);
    }

    let runtime = crate::cli_edge::runtime()?;
    crate::cli_edge::exit_on_interrupt(&runtime, Arc::clone(&recorder), "run");

    let request = ProvisionRequest {
        contract_dir: &args.contract,
        scripts_dir: args.scripts.as_deref(),
        redis: RedisOptions {
            url: args.redis_url.clone(),
            server_binary: args.redis_server.clone(),
            container_image: Some(args.redis_image.clone()),
        },
        key_prefix: format!(
            "tk-conform:{}:{}:{seed:x}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        ),
        log_dir: recorder.dir().path(),
        exec: &args.exec,
        service: args.service.clone(),
        trial_timeout: Duration::from_secs(args.trial_timeout),
    };
    // On a Redis the harness did not start, the run's keys (every backend's, the started
    // server's, the adapter's) live under the key prefix and go at the end, or on an interrupt.
    let namespace = args
        .redis_url
        .as_deref()
        .map(|url| crate::infra::cleanup::Namespace::register(url, &request.key_prefix));
    let provisioned = match runtime.block_on(provision(args.backend, &request, &progress)) {
        Ok(p) => p,
        Err(e) => {
            let message = crate::cli_edge::render(&e);
            if let Some(namespace) = namespace {
                let _ = runtime.block_on(namespace.delete());
            }
            recorder.log(&format!("error: {message}"));
            let _ = recorder.update(|s| s.error = Some(message));
            let _ = recorder.finish(RunStatus::Error, 2);
            return Err(e);
        }
    };
    let info = provisioned.backend.info();
    for note in &provisioned.notes {
        recorder.log(note);
    }
    progress.line(&format!("backend: {} — {}", info.kind, info.server));
    recorder.update(|s| s.backend = serde_json::to_value(&info).ok())?;

    let replay = VectorReplay {
        backend: Arc::clone(&provisioned.backend),
        runtime: runtime.handle().clone(),
        repeat: args.repeat,
        timeout: Duration::from_secs(args.trial_timeout),
    };
    let Provisioned {
        backend,
        extra_trials,
        keep_alive,
        vectors,
        ..
    } = provisioned;
    let mut specs = if vectors {
        vector_trials(suites, &replay)
    } else {
        Vec::new()
    };
    specs.extend(extra_trials);
    progress.clear();

    let conclusion = run_trials(&libtest, specs, Some(Arc::clone(&recorder)));

    if let Err(e) = runtime.block_on(backend.shutdown()) {
        recorder.log(&format!("backend shutdown: {e}"));
    }
    drop(replay);
    drop(backend);
    drop(keep_alive);
    if let Some(namespace) = namespace {
        match runtime.block_on(namespace.delete()) {
            Ok(n) => recorder.log(&format!("deleted the run's {n} keys from --redis-url")),
            Err(e) => {
                recorder.log(&format!("error: {e}"));
                eprintln!("tk-conform run: {e}");
            }
        }
    }
    // A gate that checked nothing must not read as green: every trial skipped or filtered out
    // is a failed run, not a pass.
    let nothing_checked = conclusion.num_passed == 0 && conclusion.num_failed == 0;
    let code = if conclusion.has_failed() || nothing_checked {
        TkExitCode::CHECK_FAILED
    } else {
        TkExitCode::PASSED
    };
    if nothing_checked {
        let line = format!(
            "no trial was checked ({} skipped, {} filtered out): the run fails",
            conclusion.num_ignored, conclusion.num_filtered_out
        );
        recorder.log(&line);
        let _ = recorder.update(|s| s.error = Some(line.clone()));
        eprintln!("tk-conform: {line}");
    }
    recorder.finish(RunStatus::Finished, code.into())?;
    // libtest counts an informational trial as passed; the logs keep the third grade apart.
    let counts = recorder.snapshot().counts;
    eprintln!(
        "tk-conform: {} passed, {} failed, {} skipped, {} informational; logs in {}",
        counts.passed,
        counts.failed,
        counts.skipped,
        counts.informational,
        recorder.dir().path().display()
    );
    Ok(TkExitCode::of(code))
}
