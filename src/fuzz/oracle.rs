//! What a fuzzed timeline is judged against.
//!
//! Today there is one oracle: the exact reference model, which computes every expected decision
//! (through the same generator as the golden vectors, so its wall-clock rule applies here too)
//! and compares each field. Engines that only claim a family's invariants (a v2 adapter with an
//! explicit clock, issue 10) will get a property oracle as a second variant: it replays the same
//! timelines and checks invariants instead of values.

use std::path::PathBuf;

use crate::backend::{Backend, Capabilities};
use crate::conformance::replay::{Divergence, ReplayFailure, replay};
use crate::contract::generate::{self, GenerateError};
use crate::contract::timelines::{LoadedTimelines, TimelineFile};
use crate::contract::vectors::{Suite, VectorsFile};

/// How a timeline is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oracle {
    /// Every decision must equal the reference model's, field by field.
    ExactModel,
}

/// One timeline's verdict.
#[derive(Debug)]
pub enum Verdict {
    /// The backend answered every op as the oracle expected.
    Agreed { ops: u64 },
    /// The first op whose answer differed, with the field diff.
    Diverged(Box<Divergence>),
    /// The backend declined the timeline before answering anything.
    Unsupported(String),
}

/// The pseudo path generator errors name for a fuzzed timeline.
pub fn fuzz_path() -> PathBuf {
    PathBuf::from("(fuzz timeline)")
}

impl Oracle {
    pub fn name(self) -> &'static str {
        match self {
            Oracle::ExactModel => "exact model",
        }
    }

    /// The vectors to replay for `timeline`: expectations from the model, or the generator's
    /// reason it cannot be judged (a timeline that depends on a key outliving wall time).
    pub fn prepare(self, timeline: &TimelineFile) -> Result<VectorsFile, GenerateError> {
        match self {
            Oracle::ExactModel => generate::generate(&[LoadedTimelines {
                path: fuzz_path(),
                file: timeline.clone(),
            }]),
        }
    }

    /// Replays prepared vectors against `backend`. Rate-limit and token-budget suites share one
    /// session (several keys in one namespace); then each lease suite gets its own spender. A
    /// worker holds one session at a time: an exec adapter serves one at a time.
    pub async fn judge(self, backend: &dyn Backend, vectors: &VectorsFile) -> Verdict {
        let (leases, keyed): (Vec<&Suite>, Vec<&Suite>) = vectors
            .suites
            .iter()
            .partition(|s| matches!(s, Suite::Lease(_)));
        let mut ops = 0u64;
        let mut groups: Vec<Vec<&Suite>> = Vec::new();
        if !keyed.is_empty() {
            groups.push(keyed);
        }
        groups.extend(leases.into_iter().map(|s| vec![s]));
        for group in groups {
            let mut session = match backend.open_suite(group[0].name()).await {
                Ok(s) => s,
                Err(e) => return Verdict::Unsupported(e.to_string()),
            };
            for suite in group {
                match replay(session.as_mut(), suite).await {
                    Ok(n) => ops += n as u64,
                    Err(ReplayFailure::Diverged(d)) => return Verdict::Diverged(d),
                    Err(ReplayFailure::Unsupported(reason)) => {
                        return Verdict::Unsupported(reason);
                    }
                }
            }
        }
        Verdict::Agreed { ops }
    }
}

/// Whether `caps` lets the exact oracle judge `target` at all.
pub fn claims(caps: &Capabilities, target: super::Target) -> bool {
    caps.explicit_clock
        && match target {
            super::Target::Rate(kind) => caps.strategies.contains(&kind),
            super::Target::TokenBudget => caps.token_budget,
            super::Target::Lease => caps.lease_spender,
        }
}
