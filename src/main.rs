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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Contract { command } => tk_conform::contract::cli::run(command),
    }
}
