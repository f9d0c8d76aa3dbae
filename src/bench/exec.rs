//! `tk-conform bench exec`: what the exec door costs. The same adapter decides N times in its
//! own loop (`<adapter> --native-bench <kind> <N>`, printing decisions per second on stdout),
//! N times driven over its pipes by the plainest possible driver (the protocol's floor: what
//! any process boundary costs), and N times through the harness (protocol 2, every reply
//! parsed and schema-checked). The last two apart are the harness's own share. All use one
//! fresh Redis and the kind's largest parameters, so the engine does the same work each time.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use super::median;
use anyhow::{Context, bail};

use crate::backend::Backend;
use crate::backend::exec::protocol::{Now, Request};
use crate::backend::exec::v2::{Clock, LimiterKind};
use crate::backend::exec::{ExecBackend, ExecConfig, split_command};
use crate::infra::{RedisInstance, RedisOptions};

#[derive(Debug, clap::Args)]
pub struct ExecBenchArgs {
    /// The protocol-2 adapter, which must also accept `--native-bench <kind> <N>`.
    #[arg(long, value_name = "COMMAND LINE")]
    pub adapter: String,
    /// The limiter kind to time (default: the adapter's first).
    #[arg(long)]
    pub kind: Option<String>,
    /// Decisions per round.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub calls: u64,
    /// Rounds, each one native, one bare-driver and one through-door run in a rotating order;
    /// the median of each side is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
}

pub fn run(args: ExecBenchArgs) -> ExitCode {
    crate::cli_edge::exit_code("bench exec", execute(args))
}

fn execute(args: ExecBenchArgs) -> anyhow::Result<ExitCode> {
    // One thread polls the pipes and runs the door, as in a battle worker (whose door is the
    // busiest): a reply then wakes the thread that waits for it, with no hand-over between a
    // runtime worker and a blocked main thread (measured: about 9% of a 600 µs decision).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let redis = RedisInstance::provision(&RedisOptions::default()).await?;
        let logs = tempfile::tempdir()?;
        let mut config = ExecConfig::new(&args.adapter, logs.path().join("adapter.stderr.log"));
        config.redis_url = Some(redis.url().to_owned());
        let backend = ExecBackend::start(config).await?;
        let Some(hello) = backend.hello_v2().cloned() else {
            bail!("bench exec needs a protocol-2 adapter");
        };
        let kind = match &args.kind {
            Some(name) => hello
                .kind(name)
                .with_context(|| format!("the adapter declares no kind `{name}`"))?
                .clone(),
            None => hello.limiters[0].clone(),
        };
        let params: BTreeMap<String, f64> = kind
            .parameters
            .iter()
            .filter_map(|(n, r)| r.nearest(r.max).map(|v| (n.clone(), v)))
            .collect();
        let adapter_argv = split_command(&args.adapter)?;
        let mut native_argv = adapter_argv.clone();
        native_argv.extend([
            "--native-bench".into(),
            kind.name.clone(),
            args.calls.to_string(),
        ]);
        // The three sides take turns, in an order that rotates each round, so a change in the
        // machine's load falls on all of them alike.
        let mut rates: [Vec<f64>; 3] = Default::default();
        for round in 0..args.rounds {
            for turn in 0..3 {
                let side = (turn + round as usize) % 3;
                let rate = match side {
                    NATIVE => native_round(&native_argv, redis.url(), args.calls).await?,
                    BARE => {
                        bare_round(&adapter_argv, redis.url(), &kind, &params, args.calls).await?
                    }
                    _ => door_round(&backend, &kind, &params, args.calls).await?,
                };
                println!("round {}: {} {rate:.0} decisions/s", round + 1, SIDES[side]);
                rates[side].push(rate);
            }
        }
        backend.shutdown().await?;
        let [native, bare, through] = rates.map(|r| median(&r));
        println!(
            "{} `{}`: native {native:.0}/s, bare driver {bare:.0}/s, through tk-conform \
             {through:.0}/s (medians of {} rounds each)",
            hello.adapter.name, kind.name, args.rounds
        );
        println!(
            "the process boundary (bare driver vs native) costs {:.1}%; the exec door over the \
             bare driver costs {:.1}% (goal ≤ 10%); native to door: {:.1}%",
            100.0 * (1.0 - bare / native),
            100.0 * (1.0 - through / bare),
            100.0 * (1.0 - through / native)
        );
        Ok(ExitCode::SUCCESS)
    })
}

const NATIVE: usize = 0;
const BARE: usize = 1;
const SIDES: [&str; 3] = ["native loop", "bare driver", "through tk-conform"];

/// `calls` decisions on one key through the door, in a fresh session (its own namespace, so
/// every round starts from an empty limiter).
async fn door_round(
    backend: &ExecBackend,
    kind: &LimiterKind,
    params: &BTreeMap<String, f64>,
    calls: u64,
) -> anyhow::Result<f64> {
    let mut session = backend.open_v2("bench::exec").await?;
    session.configure("B", &kind.name, params).await?;
    let started = Instant::now();
    for i in 0..calls {
        let now = Some(crate::property::wall_ms() + i as f64);
        session.decide("B", "bench", 1.0, now).await?;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// The protocol's floor: the same request lines over the same pipes to a fresh copy of the
/// adapter, from the plainest driver there can be (blocking reads, a reply read as a line and
/// never parsed or checked). The door's own share is what it costs beyond this.
async fn bare_round(
    argv: &[String],
    redis_url: &str,
    kind: &LimiterKind,
    params: &BTreeMap<String, f64>,
    calls: u64,
) -> anyhow::Result<f64> {
    use std::process::{Command, Stdio};
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("TK_CONFORM_REDIS_URL", redis_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {argv:?}"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (argv, kind, params) = (argv.to_vec(), kind.clone(), params.clone());
    let mut round =
        tokio::task::spawn_blocking(move || drive_bare(child, &argv, &kind, &params, calls));
    match tokio::time::timeout(round_bound(calls), &mut round).await {
        Ok(joined) => joined?,
        Err(_) => {
            // Its pipes close with it, so the blocked driver thread returns too.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = round.await;
            bail!(
                "the adapter did not finish {calls} decisions from the bare driver within {:?}: killed",
                round_bound(calls)
            )
        }
    }
}

/// How long one round may take: 10 s and 10 ms a decision (twenty times a slow engine's 500
/// µs), so no hang outlives it.
fn round_bound(calls: u64) -> std::time::Duration {
    std::time::Duration::from_secs(10) + std::time::Duration::from_millis(10 * calls)
}

fn drive_bare(
    mut child: std::process::Child,
    argv: &[String],
    kind: &LimiterKind,
    params: &BTreeMap<String, f64>,
    calls: u64,
) -> anyhow::Result<f64> {
    use std::io::{BufRead, BufReader, Write};
    /// Kills the adapter however the round ends.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (mut to, from) = (child.stdin.take(), child.stdout.take());
    let _reap = Reap(child);
    let (Some(to), Some(from)) = (to.as_mut(), from) else {
        bail!("the adapter's pipes were not opened");
    };
    let mut from = BufReader::new(from);
    let (mut id, mut line) = (0u64, String::new());
    let mut ask = |request: &Request| -> anyhow::Result<()> {
        id += 1;
        let mut out = request.to_line(id);
        out.push('\n');
        to.write_all(out.as_bytes())?;
        line.clear();
        if from.read_line(&mut line)? == 0 {
            bail!(
                "`{}` closed its stdout during the bare round",
                argv.join(" ")
            );
        }
        Ok(())
    };
    let namespace = format!("tk-conform-bench-bare:{}", crate::property::wall_ms());
    ask(&Request::hello())?;
    ask(&Request::Reset {
        suite: "bench::exec::bare",
        namespace: &namespace,
    })?;
    ask(&Request::Configure {
        limiter: "B",
        kind: &kind.name,
        params,
    })?;
    let started = Instant::now();
    for i in 0..calls {
        let now =
            (kind.clock == Clock::Explicit).then(|| Now(crate::property::wall_ms() + i as f64));
        ask(&Request::Decide {
            limiter: "B",
            key: "bench",
            cost: 1.0,
            now,
        })?;
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    let _ = ask(&Request::Shutdown);
    Ok(rate)
}

/// One run of the adapter's own loop, which prints its decisions per second.
async fn native_round(argv: &[String], redis_url: &str, calls: u64) -> anyhow::Result<f64> {
    let run = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("TK_CONFORM_REDIS_URL", redis_url)
        .kill_on_drop(true)
        .output();
    let Ok(out) = tokio::time::timeout(round_bound(calls), run).await else {
        bail!(
            "`{}` did not print its rate within {:?}: killed",
            argv.join(" "),
            round_bound(calls)
        );
    };
    let out = out.with_context(|| format!("running {argv:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().with_context(|| {
        format!(
            "`{}` printed `{}` instead of a decision rate: does the adapter serve --native-bench? {}",
            argv.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
