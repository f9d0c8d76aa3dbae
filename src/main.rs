//! The `tk-conform` command line: clap definitions and dispatch only; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tk_conform::contract::cli::ContractCommand;

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
    /// Verify, sync, seal the vendored contract, or generate its golden vectors.
    Contract {
        #[command(subcommand)]
        command: ContractCommand,
    },
    /// Replay the contract's golden vectors against a backend (Redis Lua scripts, the model, ...).
    Run(tk_conform::conformance::RunArgs),
    /// Throughput benchmarks.
    #[command(subcommand)]
    Bench(tk_conform::bench::BenchCommand),
    /// Battle-test a fleet: multi-process workloads with faults, judged from histories.
    Battle(tk_conform::battle::cli::BattleArgs),
    /// One battle worker process (started by `battle`, not by hand).
    #[command(hide = true)]
    Worker(tk_conform::battle::worker::WorkerArgs),
    /// One `bench load` worker process (started by `bench load`, not by hand).
    #[command(hide = true)]
    LoadWorker(tk_conform::battle::bench::LoadWorkerArgs),
    /// Differential fuzzing against the reference model, shrinking the first divergence.
    Fuzz(tk_conform::fuzz::cli::FuzzArgs),
    /// Mutation score of a contract's vectors: plausible bugs in its Lua scripts, replayed.
    Mutate(tk_conform::mutate::cli::MutateArgs),
    /// Judge every given redis-server / valkey-server binary; write docs/compatibility.md.
    Matrix(tk_conform::matrix::cli::MatrixArgs),
    /// Combine run folders into a matrix page, matrix.json, badges and a checklist.
    Report(tk_conform::report::matrix::cli::ReportArgs),
    /// Run the reference gRPC server (spec 8) over a memory or Redis store.
    Serve(tk_conform::server::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Contract { command } => tk_conform::contract::cli::run(command),
        Command::Run(args) => tk_conform::conformance::cli::run(args),
        Command::Bench(command) => tk_conform::bench::run(command),
        Command::Battle(args) => tk_conform::battle::cli::run(args),
        Command::Worker(args) => tk_conform::battle::worker::main(args),
        Command::LoadWorker(args) => tk_conform::battle::bench::load_worker_main(args),
        Command::Fuzz(args) => tk_conform::fuzz::cli::run(args),
        Command::Mutate(args) => tk_conform::mutate::cli::run(args),
        Command::Matrix(args) => tk_conform::matrix::cli::run(args),
        Command::Report(args) => tk_conform::report::matrix::cli::run(args),
        Command::Serve(args) => tk_conform::server::cli::main(args),
    }
}
