//! The exit codes of every `tk-conform` command, named in one place (the README's table).

use std::process::ExitCode;

/// The exit codes, as numbers (for `summary.json`) and as [`ExitCode`]s (for `main`).
pub struct TkExitCode;

impl TkExitCode {
    /// Every check passed (skips with their reasons are not failures).
    pub const PASSED: u8 = 0;
    /// A check failed, or nothing was checked at all.
    pub const CHECK_FAILED: u8 = 1;
    /// Usage or infrastructure error: bad flags or files, a service that cannot be reached.
    pub const USAGE_OR_INFRA: u8 = 2;
    /// The hidden `worker` only: its runner went away before the start barrier opened.
    pub const WORKER_ABANDONED: u8 = 3;
    /// Interrupted by Ctrl-C or SIGTERM (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;

    pub fn of(code: u8) -> ExitCode {
        ExitCode::from(code)
    }
}
