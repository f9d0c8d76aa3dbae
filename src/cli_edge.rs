//! What every command does at its edge: an async runtime to run on, and one way to turn an
//! error into a single line on stderr and exit code 2 (usage or infrastructure error).

use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::exit::TkExitCode;
use crate::infra::redact_text;
use crate::report::{RunRecorder, RunStatus};

/// The multi-thread runtime a command's async work runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The one error-line format: `tk-conform <command>: error: <error>: <cause>: …`, the whole
/// chain of causes printed once ([`render`]), here at the edge.
pub fn error_line(command: &str, error: &anyhow::Error) {
    eprintln!("tk-conform {command}: error: {}", render(error));
}

/// Set when an interrupt handler has begun: it, not the command, ends the process (with 130).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The command's exit code: its own on success; an error is reported on one line and becomes 2.
/// While an interrupt is being handled, the handler's exit (130) wins: this waits for it.
pub fn exit_code(command: &str, outcome: anyhow::Result<ExitCode>) -> ExitCode {
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
    outcome.unwrap_or_else(|e| {
        error_line(command, &e);
        TkExitCode::of(TkExitCode::USAGE_OR_INFRA)
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
    exit_code(
        command,
        outcome.map(|()| TkExitCode::of(TkExitCode::PASSED)),
    )
}

/// On Ctrl-C or SIGTERM: mark the run interrupted in its logs (trials that finish later are not
/// added), kill every owned child, delete the run's keys on an external Redis, remove the temp
/// folders of what it started, let in-flight log writes land (no stray `.tmp-*`), exit 130.
///
/// The handler has a thread and runtime of its own, so it outlives the command's runtime (a
/// command that returns early while the handler cleans up must not cancel it).
pub fn exit_on_interrupt(
    _runtime: &tokio::runtime::Runtime,
    recorder: Arc<RunRecorder>,
    command: &'static str,
) {
    let (registered_tx, registered_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("tk-conform-interrupt".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = registered_tx.send(());
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    let _ = registered_tx.send(());
                    return;
                };
                let _ = registered_tx.send(());
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                INTERRUPTED.store(true, Ordering::SeqCst);
                recorder.log("interrupted");
                let _ = recorder.finish(RunStatus::Interrupted, TkExitCode::INTERRUPTED.into());
                // Before anything is killed: what a dying trial would write must not land half-way.
                crate::report::stop_writes();
                for failure in crate::infra::cleanup::on_interrupt().await {
                    recorder.log(&format!("cleanup after the interrupt: {failure}"));
                    eprintln!("tk-conform {command}: cleanup after the interrupt: {failure}");
                }
                eprintln!(
                    "tk-conform {command}: interrupted; partial logs in {}",
                    recorder.dir().path().display()
                );
                std::process::exit(TkExitCode::INTERRUPTED.into());
            });
        });
    if spawned.is_ok() {
        // Signals are ours before the command starts anything.
        let _ = registered_rx.recv();
    }
}
