//! The `tk-conform` command line: clap definitions and dispatch only; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tk-conform",
    version,
    about = "Conformance harness and battle-test runner for distributed rate limiters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the reference gRPC server (spec 8) over a memory or Redis store.
    Serve(tk_conform::server::ServeArgs),
    /// Measure (never pass/fail): `bench server`.
    Bench(tk_conform::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => block_on(tk_conform::server::cli::run(args)),
        Command::Bench(args) => block_on(tk_conform::bench::run(args)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tk-conform: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
        .block_on(future)
}
