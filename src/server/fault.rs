//! Deliberate faults (the hidden `serve --fault` switch): each breaks one promise of spec 8, so
//! tests and the battle runner can show that the matching check catches it.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Fault {
    /// Expired concurrency slots are never reclaimed.
    NeverReclaim,
    /// Heartbeats answer "live" but do not extend the lease.
    IgnoreHeartbeat,
    /// A Release of a lease that is no longer held frees another holder's slot.
    LateReleaseFrees,
    /// Fleet.Reserve grants whatever is asked, past the window's limit.
    OverGrantReserve,
    /// Fleet.Reserve ignores `caller.domain`: every domain draws from one window budget.
    ReserveIgnoresDomain,
    /// Release does nothing.
    ReleaseNoop,
    /// Peek consumes like a Check.
    PeekConsumes,
    /// The first denial of every key is turned into an admit.
    BurstPlusOne,
    /// Denials say `retryAfterMs = 0`.
    ZeroRetry,
    /// The key is ignored: every identity shares one budget.
    SharedKeys,
    /// Forecast promises one admit more than there is.
    ForecastOffByOne,
    /// CheckMany answers in reverse order.
    CheckmanyReversed,
    /// Every other CheckMany decides each key 1 ms after the one before (not one instant).
    CheckmanySplitInstant,
    /// Debit never refuses.
    DebitNeverRefuses,
    /// Wrong status codes: unknown policy is INTERNAL, a wrong op is served, a negative cost is 1.
    LaxStatus,
    /// Unified denials always name the "rate" axis.
    UnifiedBindsRate,
    /// Admit sets `policy_denied` on every denial (rate and concurrency ones too).
    PolicyDeniedOnDenial,
    /// A granted Admit reports `lease_expires_at = 0`, so its TTL cannot be read.
    NoLeaseExpiry,
    /// Heartbeat reports a `next_deadline` already past.
    PastDeadline,
    /// Monitor counters ignore denials.
    StaleSnapshot,
    /// Monitor.Watch never sends a denial.
    WatchSilent,
    /// The Redis store keys rate state under a private prefix, so the direct door does not share it.
    PrivatePrefix,
    /// Check takes an extra second (to show that SIGTERM drains in-flight calls).
    SlowCheck,
    /// Checks are admitted while the store is unreachable, whatever `--fail` says.
    FailsOpen,
    /// Checks send the server's own wall clock as `now` instead of letting Redis read its own.
    OwnClock,
    /// Behind Sentinel, the store asks for the primary once and never follows a failover.
    NoFollow,
}

/// The set of faults a server was started with (empty for the reference server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(BTreeSet<Fault>);

impl Faults {
    pub fn new(faults: impl IntoIterator<Item = Fault>) -> Self {
        Faults(faults.into_iter().collect())
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        use clap::ValueEnum;
        self.0
            .iter()
            .filter_map(|f| f.to_possible_value().map(|v| v.get_name().to_owned()))
            .collect()
    }
}
