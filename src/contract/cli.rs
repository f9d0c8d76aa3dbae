//! `tk-conform contract ...`: verify, seal, sync and generate the vendored contract.
//!
//! Exit codes, as the README's table says: 0 ok; 2 drift, a refusal (seal, sync) or a usage or
//! infrastructure error (a drifted or invalid contract is not something a trial can judge);
//! 1 only for `vectors --check`, whose stale file is a failed check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::generate::{self, DEFAULT_OUTPUT, DEFAULT_TIMELINES_DIR};
use super::layout::{CHECKSUMS, DEFAULT_DIR};
use super::seal;
use super::sync::{self, ArchiveLimits, SyncOptions};
use super::verify;
use crate::cli_edge::error_line;
use crate::exit::TkExitCode;

/// Drift or a refusal: the contract cannot be trusted, which is exit 2 (README, exit codes).
const EXIT_DRIFT: u8 = TkExitCode::USAGE_OR_INFRA;

#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// Check every contract file against manifest.sha256 and the pinned contractVersion.
    Verify(VerifyArgs),
    /// Vendor the contract from an upstream directory or an http(s) URL of a .tar.gz.
    Sync(SyncArgs),
    /// Generate golden-vectors.json from the timelines under suites/vectors (or check it).
    Vectors(VectorsArgs),
    /// Rewrite manifest.sha256 from the files on disk, after an intended edit.
    Seal(SealArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The contract directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub contract: PathBuf,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The contract directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub contract: PathBuf,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// An upstream checkout or contract folder, or an http(s) URL of a .tar.gz of one.
    #[arg(long, value_name = "DIR|URL")]
    pub from: String,
    /// The contract directory to write.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub to: PathBuf,
    /// Largest archive to download, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ArchiveLimits::default().max_archive_bytes)]
    pub max_archive_bytes: u64,
    /// Largest total size of the unpacked archive, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ArchiveLimits::default().max_unpacked_bytes)]
    pub max_unpacked_bytes: u64,
}

#[derive(Debug, Args)]
pub struct VectorsArgs {
    /// Do not write: exit 1 when the committed file differs from what the timelines generate.
    #[arg(long)]
    pub check: bool,
    /// The folder of *.toml timelines.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TIMELINES_DIR)]
    pub timelines: PathBuf,
    /// The vectors file to write or check.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_OUTPUT)]
    pub out: PathBuf,
}

pub fn run(command: ContractCommand) -> ExitCode {
    TkExitCode::of(match command {
        ContractCommand::Verify(args) => match super::bundled::resolve(&args.contract) {
            Ok(dir) => run_verify(&dir),
            Err(e) => {
                error_line("contract verify", &e.into());
                TkExitCode::USAGE_OR_INFRA
            }
        },
        ContractCommand::Seal(args) => run_seal(&args.contract),
        ContractCommand::Sync(args) => run_sync(args),
        ContractCommand::Vectors(args) => run_vectors(&args),
    })
}

fn run_verify(dir: &Path) -> u8 {
    match verify::verify(dir) {
        Ok(report) if report.is_ok() => {
            println!(
                "{}: verified, {} files match {CHECKSUMS}",
                dir.display(),
                report.pinned
            );
            TkExitCode::PASSED
        }
        Ok(report) => {
            for finding in &report.findings {
                println!("{finding}");
            }
            eprintln!(
                "{}: verification failed with {} problem(s)",
                dir.display(),
                report.findings.len()
            );
            EXIT_DRIFT
        }
        Err(e) => {
            error_line("contract verify", &e.into());
            TkExitCode::USAGE_OR_INFRA
        }
    }
}

fn run_seal(dir: &Path) -> u8 {
    match seal::seal(dir) {
        Ok(report) => {
            for path in &report.changed {
                println!("pinned: {path}");
            }
            if report.wrote_source {
                println!("wrote {}/SOURCE", dir.display());
            }
            println!(
                "sealed {}: {CHECKSUMS} pins {} files ({} changed)",
                dir.display(),
                report.pinned.len(),
                report.changed.len()
            );
            TkExitCode::PASSED
        }
        Err(e) => {
            error_line("contract seal", &e.into());
            TkExitCode::USAGE_OR_INFRA
        }
    }
}

fn run_sync(args: SyncArgs) -> u8 {
    let options = SyncOptions {
        from: args.from,
        to: args.to,
        limits: ArchiveLimits {
            max_archive_bytes: args.max_archive_bytes,
            max_unpacked_bytes: args.max_unpacked_bytes,
            ..ArchiveLimits::default()
        },
    };
    let synced = crate::cli_edge::runtime()
        .and_then(|runtime| sync::sync(&options, &runtime).map_err(anyhow::Error::from));
    match synced {
        Ok(report) => {
            for (dest, origin) in &report.files {
                println!("{dest} <- {origin}");
            }
            println!(
                "synced {} ({} layout) into {}; {CHECKSUMS} and SOURCE rewritten",
                options.from,
                report.layout.name(),
                report.target.display()
            );
            TkExitCode::PASSED
        }
        Err(e) => {
            error_line("contract sync", &e);
            eprintln!(
                "the contract in {} was left as it was",
                options.to.display()
            );
            // A refused upstream is drift too: the same exit code as any other refusal.
            EXIT_DRIFT
        }
    }
}

fn run_vectors(args: &VectorsArgs) -> u8 {
    let vectors = match generate::generate_dir(&args.timelines) {
        Ok(v) => v,
        Err(e) => {
            error_line("contract vectors", &e.into());
            return TkExitCode::USAGE_OR_INFRA;
        }
    };
    let text = generate::render(&vectors);
    if args.check {
        return match std::fs::read(&args.out) {
            Ok(committed) if committed == text.as_bytes() => {
                println!(
                    "{} is up to date with {} ({} suites)",
                    args.out.display(),
                    args.timelines.display(),
                    vectors.suites.len()
                );
                TkExitCode::PASSED
            }
            Ok(committed) => {
                eprintln!(
                    "{} differs from what {} generates ({}); run `tk-conform contract vectors`, \
                     then `tk-conform contract seal`",
                    args.out.display(),
                    args.timelines.display(),
                    first_difference(&committed, text.as_bytes())
                );
                TkExitCode::CHECK_FAILED
            }
            Err(e) => {
                error_line(
                    "contract vectors",
                    &anyhow::Error::new(e).context(format!("cannot read {}", args.out.display())),
                );
                TkExitCode::USAGE_OR_INFRA
            }
        };
    }
    if let Err(e) = crate::report::write_atomic(&args.out, text.as_bytes()) {
        error_line(
            "contract vectors",
            &anyhow::Error::new(e).context(format!("cannot write {}", args.out.display())),
        );
        return TkExitCode::USAGE_OR_INFRA;
    }
    println!(
        "wrote {} ({} suites); run `tk-conform contract seal` to re-pin its checksum",
        args.out.display(),
        vectors.suites.len()
    );
    TkExitCode::PASSED
}

/// "first difference at line N" for a check failure message.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let line = a[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    format!("first difference at line {line}")
}
