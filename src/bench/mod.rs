//! `tk-conform bench ...`: measurements, never pass/fail (timed assertions do not belong in tests).

pub mod server;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Check calls/s and latency of the reference server, memory vs Redis store.
    Server(server::ServerBenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Server(args) => server::run(args).await,
    }
}
