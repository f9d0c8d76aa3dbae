//! `tk-conform matrix --redis-server BIN…`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{Column, check_binaries, child_run, compatibility_md, direct_cap_scenarios, store_of};
use crate::report::matrix::load;

#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// A redis-server or valkey-server binary to judge; give one per version.
    #[arg(long = "redis-server", required = true, value_name = "BIN")]
    pub servers: Vec<PathBuf>,
    /// The compatibility table to write.
    #[arg(long, default_value = "docs/compatibility.md")]
    pub out: PathBuf,
    /// Where the child runs and the combined report go (`<logs>/matrix-<UTC timestamp>/`).
    #[arg(long, default_value = "logs")]
    pub logs: PathBuf,
    /// The contract folder.
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// The folder of battle scenarios.
    #[arg(long, default_value = "scenarios")]
    pub scenarios_dir: PathBuf,
    /// Seed for the battles (recorded in their logs).
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

pub fn run(args: MatrixArgs) -> ExitCode {
    crate::cli_edge::exit_code("matrix", execute(args))
}

fn execute(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    check_binaries(&args.servers)?;
    anyhow::ensure!(
        args.servers.len() <= 16,
        "--redis-server is given {} times; at most 16 servers per matrix",
        args.servers.len()
    );
    let all = crate::battle::scenario::select(&args.scenarios_dir, &[])?;
    let scenarios = direct_cap_scenarios(&all);
    anyhow::ensure!(
        !scenarios.is_empty(),
        "no direct-door cap scenarios in {}",
        args.scenarios_dir.display()
    );
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let root = args.logs.join(format!("matrix-{stamp}"));
    let contract = args.contract.display().to_string();
    let mut columns = Vec::new();
    let mut infra_error = false;
    for (k, binary) in args.servers.iter().enumerate() {
        // Children start the server from their own temp folders: hand them an absolute path.
        let bin = std::path::absolute(binary)
            .unwrap_or_else(|_| binary.clone())
            .display()
            .to_string();
        let dir = root.join(format!("server-{k}"));
        let mut runs = Vec::new();
        let mut exits = Vec::new();
        let replay: Vec<String> = ["run", "--backend", "redis", "--contract", &contract]
            .iter()
            .map(|s| s.to_string())
            .chain(["--redis-server".into(), bin.clone()])
            .collect();
        let mut battle: Vec<String> = vec!["battle".into()];
        battle.extend(scenarios.iter().cloned());
        battle.extend([
            "--contract".into(),
            contract.clone(),
            "--scenarios-dir".into(),
            args.scenarios_dir.display().to_string(),
            "--seed".into(),
            args.seed.to_string(),
            "--redis-server".into(),
            bin.clone(),
        ]);
        for (what, argv, sub) in [("replay", replay, "replay"), ("battle", battle, "battle")] {
            eprintln!("tk-conform matrix: {bin}: {what} …");
            let (code, run) = child_run(&exe, &format!("{what} on {bin}"), &argv, &dir.join(sub))?;
            eprintln!(
                "tk-conform matrix: {bin}: {what} exit {code} ({})",
                run.display()
            );
            if code != 0 && code != 1 {
                infra_error = true;
                eprintln!(
                    "tk-conform matrix: {bin}: {what} could not run: {}",
                    super::tail(&dir.join(sub).join("output.txt"))
                );
            }
            exits.push((what.to_string(), code));
            if let Ok(loaded) = load(&run) {
                runs.push(loaded);
            }
        }
        columns.push(Column {
            store: store_of(&runs, binary),
            binary: binary.clone(),
            exits,
            runs,
        });
    }
    let command = regenerate_command(&args);
    let md = compatibility_md(&columns, &command, &scenarios);
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    crate::report::write_atomic(&args.out, md.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let runs: Vec<_> = columns.iter().flat_map(|c| c.runs.clone()).collect();
    let matrix = crate::report::matrix::build(&runs);
    crate::report::matrix::write(&matrix, &root.join("report"))
        .with_context(|| format!("cannot write {}", root.join("report").display()))?;
    for c in &columns {
        let (rp, rj) = c.counts(false);
        let (bp, bj) = c.counts(true);
        println!(
            "{:<16} replay {rp}/{rj}, battles {bp}/{bj}: {}  ({})",
            c.store,
            if c.compatible() {
                "compatible"
            } else {
                "NOT compatible"
            },
            c.binary.display()
        );
    }
    println!(
        "wrote {}; runs and report in {}",
        args.out.display(),
        root.display()
    );
    Ok(if infra_error {
        ExitCode::from(2)
    } else if columns.iter().all(Column::compatible) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The command line that regenerates the table (defaults left out).
fn regenerate_command(args: &MatrixArgs) -> String {
    let mut words = vec!["tk-conform".to_string(), "matrix".to_string()];
    for s in &args.servers {
        words.push("--redis-server".into());
        words.push(s.display().to_string());
    }
    if args.out != std::path::Path::new("docs/compatibility.md") {
        words.push("--out".into());
        words.push(args.out.display().to_string());
    }
    if args.seed != 2026 {
        words.push("--seed".into());
        words.push(args.seed.to_string());
    }
    shell_words::join(words)
}
