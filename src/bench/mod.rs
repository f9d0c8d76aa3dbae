//! `tk-conform bench ...`: throughput measurements (never timed assertions in tests).

pub mod replay;
pub mod server;

/// The `bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Replay the vector corpus through the contract's Lua scripts at scale, next to redis-benchmark.
    Replay(replay::ReplayBenchArgs),
    /// Check calls/s and p50/p99 latency of the reference server, memory vs Redis store.
    Server(server::ServerBenchArgs),
}

pub fn run(command: BenchCommand) -> std::process::ExitCode {
    match command {
        BenchCommand::Replay(args) => replay::run(args),
        BenchCommand::Server(args) => server::main(args),
    }
}
