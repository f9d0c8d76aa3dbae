//! The server's own clock: whole epoch milliseconds, as the contract's `now`.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> f64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as f64
}
