//! What every command does at its edge: an async runtime to run on, and one way to turn an
//! error into a single line on stderr and exit code 2 (usage or infrastructure error).

use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;

use crate::infra::{kill_all_owned, redact_text};
use crate::report::{Recorder, RunStatus};

/// The multi-thread runtime a command's async work runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The command's exit code: its own on success; an error is reported on one line and becomes 2.
pub fn exit_code(command: &str, outcome: anyhow::Result<ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|e| {
        eprintln!("tk-conform {command}: error: {}", render(&e));
        ExitCode::from(2)
    })
}

/// An error and its causes on one line, `outer: cause: root`, each cause printed once: many
/// errors already quote their source in their own message (`cannot read X: <io error>`), and
/// `{:#}` would print it a second time. No store password survives (`infra::redact_text`).
pub fn render(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    redact_text(&line)
}

/// Runs an async command body to completion: success is exit code 0, an error exit code 2.
pub fn block_on(
    command: &str,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let outcome = runtime().and_then(|runtime| runtime.block_on(body));
    exit_code(command, outcome.map(|()| ExitCode::SUCCESS))
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
        let _ = recorder.finish(RunStatus::Interrupted, 130);
        kill_all_owned();
        eprintln!(
            "tk-conform {command}: interrupted; partial logs in {}",
            recorder.dir().path().display()
        );
        std::process::exit(130);
    });
}
