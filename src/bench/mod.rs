//! `tk-conform bench ...`: throughput measurements (never timed assertions in tests).

pub mod exec;
pub mod fuzz;
pub mod redis_benchmark;
pub mod replay;
pub mod server;

/// The `bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Replay the vector corpus through the contract's Lua scripts at scale, next to redis-benchmark.
    Replay(replay::ReplayBenchArgs),
    /// Decisions/s through the battle's direct door with N calls in flight across worker
    /// processes, next to redis-benchmark -c N with the same script.
    Load(crate::battle::bench::LoadArgs),
    /// Fuzz ops/s against the contract's Lua, next to redis-benchmark at the same connections.
    Fuzz(fuzz::FuzzBenchArgs),
    /// Check calls/s and p50/p99 latency of the reference server, memory vs Redis store.
    Server(server::ServerBenchArgs),
    /// A protocol-2 adapter's decisions/s in its own loop, from a bare pipe driver, and through
    /// the exec door.
    Exec(exec::ExecBenchArgs),
}

pub fn run(command: BenchCommand) -> std::process::ExitCode {
    match command {
        BenchCommand::Replay(args) => replay::run(args),
        BenchCommand::Load(args) => crate::battle::bench::run(args),
        BenchCommand::Server(args) => server::main(args),
        BenchCommand::Fuzz(args) => fuzz::run(args),
        BenchCommand::Exec(args) => exec::run(args),
    }
}

/// The middle value of a bench's rounds.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
