//! The worker side of the start barrier, shared by battle workers and `bench load` workers: say
//! ready (the ready-file), block reading stdin (the read end of one pipe every worker shares)
//! until the runner closes it, then read the barrier's epoch time from the go-file. EOF without
//! a go-file means the runner died before the start. The runner side is `spawn.rs`. Also the
//! processes' entry ([`process_main`]): exit codes for started, abandoned and failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How long a worker waits for the barrier before giving up.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("cannot write {}: {source}", path.display())]
    Ready {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no go within {}s", BARRIER_TIMEOUT.as_secs())]
    Timeout,
    #[error("reading stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("{} holds {text:?}, not an epoch µs", path.display())]
    GoFile { path: PathBuf, text: String },
}

/// Says ready, waits for EOF on stdin, then reads the barrier time. `None` when the runner died.
pub async fn wait(ready_file: &Path, go_file: &Path) -> Result<Option<i64>, BarrierError> {
    std::fs::write(ready_file, b"ready\n").map_err(|source| BarrierError::Ready {
        path: ready_file.into(),
        source,
    })?;
    let mut sink = Vec::new();
    let mut stdin = tokio::io::stdin();
    match tokio::time::timeout(BARRIER_TIMEOUT, stdin.read_to_end(&mut sink)).await {
        Err(_) => return Err(BarrierError::Timeout),
        Ok(Err(e)) => return Err(BarrierError::Stdin(e)),
        Ok(Ok(_)) => {}
    }
    match std::fs::read_to_string(go_file) {
        Err(_) => Ok(None),
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| BarrierError::GoFile {
                path: go_file.into(),
                text,
            }),
    }
}

/// A worker process's whole life on a runtime of its own: `body` says whether the barrier
/// opened. `Ok(false)` (the runner went away before the start, nothing was done) exits
/// `WORKER_ABANDONED`; an error is one error line and exit 2.
pub fn process_main(
    command: &str,
    body: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> std::process::ExitCode {
    use crate::exit::TkExitCode;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match runtime.block_on(body) {
        Ok(true) => TkExitCode::of(TkExitCode::PASSED),
        Ok(false) => TkExitCode::of(TkExitCode::WORKER_ABANDONED),
        Err(e) => {
            crate::cli_edge::error_line(command, &e);
            TkExitCode::of(TkExitCode::USAGE_OR_INFRA)
        }
    }
}

/// The barrier's epoch time (µs) on this process's monotonic clock.
pub fn instant_of(t0_us: i64) -> tokio::time::Instant {
    let behind = (super::history::now_us() - t0_us).max(0) as u64;
    tokio::time::Instant::now() - Duration::from_micros(behind)
}
