//! `tk-conform bench exec`: what the exec door costs. The same adapter decides N times in its
//! own loop (`<adapter> --native-bench <kind> <N>`, printing decisions per second on stdout) and
//! N times through the harness (protocol 2 over pipes, every reply schema-checked); the ratio is
//! the harness's share. Both use one fresh Redis and the kind's largest parameters, so calls are
//! admitted and the engine does the same work either way.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::backend::Backend;
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
    /// Rounds; the best of each side is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
}

pub fn run(args: ExecBenchArgs) -> ExitCode {
    crate::cli_edge::exit_code("bench exec", execute(args))
}

fn execute(args: ExecBenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = crate::cli_edge::runtime()?;
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
        let mut through = 0.0f64;
        for round in 0..args.rounds {
            let mut session = backend.open_v2("bench::exec").await?;
            session.configure("B", &kind.name, &params).await?;
            let started = Instant::now();
            for i in 0..args.calls {
                let now = Some(crate::property::wall_ms() + i as f64);
                session.decide("B", "bench", 1.0, now).await?;
            }
            let rate = args.calls as f64 / started.elapsed().as_secs_f64();
            println!("round {}: through tk-conform {rate:.0} decisions/s", round + 1);
            through = through.max(rate);
        }
        backend.shutdown().await?;
        let mut native = 0.0f64;
        let mut argv = split_command(&args.adapter)?;
        argv.extend([
            "--native-bench".into(),
            kind.name.clone(),
            args.calls.to_string(),
        ]);
        for round in 0..args.rounds {
            let out = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env("TK_CONFORM_REDIS_URL", redis.url())
                .kill_on_drop(true)
                .output()
                .await
                .with_context(|| format!("running {argv:?}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let rate: f64 = text.trim().parse().with_context(|| {
                format!(
                    "`{}` printed `{}` instead of a decision rate: does the adapter serve --native-bench? {}",
                    argv.join(" "),
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
            println!("round {}: native loop {rate:.0} decisions/s", round + 1);
            native = native.max(rate);
        }
        let cost = 100.0 * (1.0 - through / native);
        println!(
            "{} `{}`: native {native:.0}/s, through tk-conform {through:.0}/s: the exec door costs {cost:.1}% (goal ≤ 10%)",
            hello.adapter.name, kind.name
        );
        Ok(ExitCode::SUCCESS)
    })
}
