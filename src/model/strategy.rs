//! The five rate strategies as one enum, with the state each keeps under its one key.

use serde::{Deserialize, Serialize};

use super::error::{self, ModelError};
use super::sliding_log::LogEntry;
use super::{Decision, fixed_window, gcra, sliding_log, sliding_window, token_bucket};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcraOptions {
    #[serde(serialize_with = "super::num::serialize")]
    pub limit: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub period_ms: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub burst: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBucketOptions {
    #[serde(serialize_with = "super::num::serialize")]
    pub capacity: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub refill_per_sec: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixedWindowOptions {
    #[serde(serialize_with = "super::num::serialize")]
    pub limit: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub window_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlidingWindowOptions {
    #[serde(serialize_with = "super::num::serialize")]
    pub limit: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub window_ms: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub buckets: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlidingWindowLogOptions {
    #[serde(serialize_with = "super::num::serialize")]
    pub limit: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub window_ms: f64,
}

/// A strategy with its options, as vectors and policy files name it:
/// `{"kind": "gcra", "options": {"limit": 5, "periodMs": 1000, "burst": 5}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "options", rename_all = "camelCase")]
pub enum Strategy {
    Gcra(GcraOptions),
    TokenBucket(TokenBucketOptions),
    FixedWindow(FixedWindowOptions),
    SlidingWindow(SlidingWindowOptions),
    SlidingWindowLog(SlidingWindowLogOptions),
}

/// The strategy names without their options, for capabilities and script lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrategyKind {
    Gcra,
    TokenBucket,
    FixedWindow,
    SlidingWindow,
    SlidingWindowLog,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 5] = [
        StrategyKind::Gcra,
        StrategyKind::TokenBucket,
        StrategyKind::FixedWindow,
        StrategyKind::SlidingWindow,
        StrategyKind::SlidingWindowLog,
    ];

    /// The contract's name for the strategy (`gcra`, `tokenBucket`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Gcra => "gcra",
            StrategyKind::TokenBucket => "tokenBucket",
            StrategyKind::FixedWindow => "fixedWindow",
            StrategyKind::SlidingWindow => "slidingWindow",
            StrategyKind::SlidingWindowLog => "slidingWindowLog",
        }
    }

    pub fn from_name(name: &str) -> Option<StrategyKind> {
        StrategyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one strategy keeps under its key, mirroring what the Lua scripts store in Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum RateState {
    Gcra {
        tat: f64,
    },
    TokenBucket {
        tokens: f64,
        last: f64,
    },
    FixedWindow {
        start: f64,
        count: f64,
    },
    /// Slot `i mod (S+1)` → `(bucket index, count)`, as the script's hash fields hold them.
    SlidingWindow {
        slots: std::collections::BTreeMap<i64, (i64, f64)>,
    },
    /// The sorted set, in Redis order (score, then member).
    SlidingWindowLog {
        entries: Vec<LogEntry>,
    },
}

/// One check's result: the decision and, when the script wrote, the key's new expiry in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckOutcome {
    pub decision: Decision,
    pub expiry_ms: Option<f64>,
}

impl Strategy {
    pub fn kind(&self) -> StrategyKind {
        match self {
            Strategy::Gcra(_) => StrategyKind::Gcra,
            Strategy::TokenBucket(_) => StrategyKind::TokenBucket,
            Strategy::FixedWindow(_) => StrategyKind::FixedWindow,
            Strategy::SlidingWindow(_) => StrategyKind::SlidingWindow,
            Strategy::SlidingWindowLog(_) => StrategyKind::SlidingWindowLog,
        }
    }

    /// The ceiling its decisions report as `limit` (spec 1: "GCRA reports `burst`, the bucket
    /// `capacity`"), and what a lease of it may spend per window.
    pub fn limit(&self) -> f64 {
        match self {
            Strategy::Gcra(o) => o.burst,
            Strategy::TokenBucket(o) => o.capacity,
            Strategy::FixedWindow(o) => o.limit,
            Strategy::SlidingWindow(o) => o.limit,
            Strategy::SlidingWindowLog(o) => o.limit,
        }
    }

    /// Checks every option against what the strategy needs; a bad option is an error, never a panic.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Strategy::Gcra(o) => {
                error::positive("limit", o.limit)?;
                error::positive("periodMs", o.period_ms)?;
                error::positive("burst", o.burst)?;
            }
            Strategy::TokenBucket(o) => {
                error::positive("capacity", o.capacity)?;
                error::positive("refillPerSec", o.refill_per_sec)?;
            }
            Strategy::FixedWindow(o) => {
                error::positive("limit", o.limit)?;
                error::positive("windowMs", o.window_ms)?;
            }
            Strategy::SlidingWindow(o) => {
                error::positive("limit", o.limit)?;
                error::positive("windowMs", o.window_ms)?;
                error::positive_integer("buckets", o.buckets)?;
            }
            Strategy::SlidingWindowLog(o) => {
                error::positive("limit", o.limit)?;
                error::positive("windowMs", o.window_ms)?;
            }
        }
        Ok(())
    }

    /// One atomic `check` against the key's state. `state` is `None` when the key is absent and
    /// is updated in place exactly as the script would write it.
    pub fn check(
        &self,
        state: &mut Option<RateState>,
        now: f64,
        cost: f64,
    ) -> Result<CheckOutcome, ModelError> {
        self.validate()?;
        let now = error::now(now)?;
        let cost = error::cost(cost)?;
        Ok(match self {
            Strategy::Gcra(o) => gcra::check(o, state, now, cost),
            Strategy::TokenBucket(o) => token_bucket::check(o, state, now, cost),
            Strategy::FixedWindow(o) => fixed_window::check(o, state, now, cost),
            Strategy::SlidingWindow(o) => sliding_window::check(o, state, now, cost),
            Strategy::SlidingWindowLog(o) => {
                if cost.fract() != 0.0 {
                    return Err(ModelError::InvalidCost {
                        requirement: "a whole number (the log stores one entry per unit)",
                        value: cost,
                    });
                }
                sliding_log::check(o, state, now, cost)
            }
        })
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use crate::model::{
        FixedWindowOptions, GcraOptions, SlidingWindowLogOptions, SlidingWindowOptions,
        TokenBucketOptions,
    };

    /// `limit()` is what a decision reports as `limit`; GCRA's burst differs from its limit here,
    /// so a `limit()` that read GCRA's `limit` fails.
    #[test]
    fn limit_is_the_decisions_limit_field() {
        let strategies = [
            Strategy::Gcra(GcraOptions {
                limit: 3.0,
                period_ms: 1000.0,
                burst: 7.0,
            }),
            Strategy::TokenBucket(TokenBucketOptions {
                capacity: 4.0,
                refill_per_sec: 1.0,
            }),
            Strategy::FixedWindow(FixedWindowOptions {
                limit: 5.0,
                window_ms: 1000.0,
            }),
            Strategy::SlidingWindow(SlidingWindowOptions {
                limit: 6.0,
                window_ms: 1000.0,
                buckets: 2.0,
            }),
            Strategy::SlidingWindowLog(SlidingWindowLogOptions {
                limit: 2.0,
                window_ms: 1000.0,
            }),
        ];
        for strategy in strategies {
            let decision = strategy.check(&mut None, 1.7e12, 1.0).unwrap().decision;
            assert_eq!(decision.limit as f64, strategy.limit(), "{strategy:?}");
        }
    }
}
