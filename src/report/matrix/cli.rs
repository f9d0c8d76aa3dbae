//! `tk-conform report RUN_DIR… --out DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run folders written by `run` or `battle` (e.g. logs/latest).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write index.html, matrix.json, badges/ and checklist.md.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

pub fn run(args: ReportArgs) -> ExitCode {
    crate::cli_edge::exit_code("report", execute(args))
}

fn execute(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let runs = args
        .runs
        .iter()
        .map(|dir| super::load(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let matrix = super::build(&runs);
    super::write(&matrix, &args.out)
        .with_context(|| format!("cannot write the report under {}", args.out.display()))?;
    for e in &matrix.engines {
        println!(
            "{}: {}/{} on {} ({})",
            e.engine,
            e.passed,
            e.judged,
            e.stores.join(", "),
            args.out.join(&e.badge).display()
        );
    }
    println!(
        "report: {} (matrix.json, checklist.md)",
        args.out.join("index.html").display()
    );
    Ok(ExitCode::SUCCESS)
}
