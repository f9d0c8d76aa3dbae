//! `tk-conform bench ...`: throughput measurements (never timed assertions in tests).

pub mod replay;

/// The `bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Replay the vector corpus through the contract's Lua scripts at scale, next to redis-benchmark.
    Replay(replay::ReplayBenchArgs),
}

pub fn run(command: BenchCommand) -> std::process::ExitCode {
    match command {
        BenchCommand::Replay(args) => replay::run(args),
    }
}
