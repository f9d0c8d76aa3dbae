//! What every command does at its edge: an async runtime to run on, and one way to turn an
//! error into a single line on stderr and exit code 2 (usage or infrastructure error).

use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;

use crate::exit::TkExitCode;
use crate::infra::kill_all_owned;
use crate::report::{Recorder, RunStatus};

/// The multi-thread runtime a command's async work runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The one error-line format: `tk-conform <command>: error: <error>: <cause>: …`, the whole
/// chain of causes printed once, here at the edge.
pub fn error_line(command: &str, error: &anyhow::Error) {
    eprintln!("tk-conform {command}: error: {error:#}");
}

/// The command's exit code: its own on success; an error is reported on one line and becomes 2.
pub fn exit_code(command: &str, outcome: anyhow::Result<ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|e| {
        error_line(command, &e);
        TkExitCode::of(TkExitCode::USAGE_OR_INFRA)
    })
}

/// Runs an async command body to completion: success is exit code 0, an error exit code 2.
pub fn block_on(
    command: &str,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let outcome = runtime().and_then(|runtime| runtime.block_on(body));
    exit_code(
        command,
        outcome.map(|()| TkExitCode::of(TkExitCode::PASSED)),
    )
}

/// On Ctrl-C or SIGTERM: mark the run interrupted in its logs, kill every owned child, exit 130.
pub fn exit_on_interrupt(
    runtime: &tokio::runtime::Runtime,
    recorder: Arc<Recorder>,
    command: &'static str,
) {
    runtime.spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        recorder.log("interrupted");
        let _ = recorder.finish(RunStatus::Interrupted, TkExitCode::INTERRUPTED.into());
        kill_all_owned();
        eprintln!(
            "tk-conform {command}: interrupted; partial logs in {}",
            recorder.dir().path().display()
        );
        std::process::exit(TkExitCode::INTERRUPTED.into());
    });
}
