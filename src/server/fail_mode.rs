//! What a server does while its store cannot be reached (`serve --fail open|closed`), as
//! ThrottleKit's server lets its operator choose. Either way it says so: fail-closed answers
//! UNAVAILABLE, fail-open admits and logs that it did.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::model::Decision;

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum FailPolicy {
    /// Admit, and report it.
    Open,
    /// Admit nothing (UNAVAILABLE).
    #[default]
    Closed,
}

impl FailPolicy {
    pub fn name(self) -> &'static str {
        match self {
            FailPolicy::Open => "open",
            FailPolicy::Closed => "closed",
        }
    }
}

/// Counts fail-open admits and reports them at most once a second on stderr.
#[derive(Debug, Default)]
pub struct OpenReport {
    admits: AtomicU64,
    last_ms: AtomicI64,
}

impl OpenReport {
    /// The admit a fail-open server gives while the store is down, reported.
    pub fn admit(&self, limit: f64, now_ms: f64, why: &str) -> Decision {
        let total = self.admits.fetch_add(1, Ordering::SeqCst) + 1;
        let now = now_ms as i64;
        let last = self.last_ms.load(Ordering::SeqCst);
        if now - last >= 1000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            eprintln!(
                "tk-conform serve: store unavailable, failing open ({total} admits so far): {why}"
            );
        }
        Decision {
            allowed: true,
            limit: limit as i64,
            remaining: 0,
            reset_at: now,
            retry_after_ms: 0,
        }
    }

    pub fn admits(&self) -> u64 {
        self.admits.load(Ordering::SeqCst)
    }
}
