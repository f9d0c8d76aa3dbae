//! Property suites (`property::<family>::<name>::<kind>@<point>`): generated from a protocol-2
//! adapter's declaration, they check what each limiter kind's family promises — cap, liveness
//! (also from keys seeded without a TTL), honesty of what a decision exposes, cost, keys, denial
//! accounting, hygiene — at several parameter points.
//!
//! Explicit-clock kinds run deterministic timelines (`explicit`); client- and store-clock kinds
//! run short real-time timelines judged from recorded invoke and complete times (`realtime`),
//! whose verdict may be unknown when timing could not decide.

mod driver;
mod explicit;
pub mod family;
mod race;
mod realtime;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::backend::exec::ExecBackend;
use crate::backend::exec::v2::{Clock, Family, LimiterKind};
use crate::conformance::trial::{TrialResult, TrialSpec};
use driver::Driver;
pub use driver::wall_ms;
use family::{Point, Shape, sweep};

/// The properties, in the order trials are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    Cap,
    Liveness,
    LivenessSeeded,
    Honesty,
    Cost,
    Denials,
    Keys,
    Interleaved,
    Race,
    Hygiene,
}

impl Property {
    pub const ALL: [Property; 10] = [
        Property::Cap,
        Property::Liveness,
        Property::LivenessSeeded,
        Property::Honesty,
        Property::Cost,
        Property::Denials,
        Property::Keys,
        Property::Interleaved,
        Property::Race,
        Property::Hygiene,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Property::Cap => "cap",
            Property::Liveness => "liveness",
            Property::LivenessSeeded => "liveness-seeded",
            Property::Honesty => "honesty",
            Property::Cost => "cost",
            Property::Denials => "denials",
            Property::Keys => "keys",
            Property::Interleaved => "interleaved",
            Property::Race => "race",
            Property::Hygiene => "hygiene",
        }
    }

    /// Why this property says nothing about `kind`, when it does not apply (shown as the skip
    /// reason, so a table never reads such a check as passed).
    fn not_applicable(self, kind: &LimiterKind, has_store: bool) -> Option<String> {
        let concurrency = kind.family == Family::Concurrency;
        match self {
            Property::Honesty if kind.exposes.is_empty() => {
                Some("the kind exposes only `allowed` (declared `exposes: []`)".into())
            }
            Property::Honesty if concurrency => Some(
                "concurrency decisions expose no time to retry at; remaining is checked by cap"
                    .into(),
            ),
            Property::Cost if !kind.takes_cost => {
                Some("the kind takes no cost (declared `takesCost: false`)".into())
            }
            Property::Denials if kind.counts_denials => Some(
                "the kind declares `countsDenials: true`: a denied call may consume, so there is no promise to check".into(),
            ),
            Property::Denials if concurrency => {
                Some("a denied concurrency call holds no slot; cap covers it".into())
            }
            Property::Interleaved if kind.clock != Clock::Explicit => Some(format!(
                "out-of-order nows need the explicit clock; the kind follows the {} clock (battles skew real clocks instead)",
                kind.clock.name()
            )),
            Property::Race if concurrency => {
                Some("concurrency slots are raced by cap's acquisitions".into())
            }
            Property::LivenessSeeded | Property::Hygiene if !has_store => Some(
                "the run has no Redis to inspect (TK_CONFORM_REDIS_URL was not set)".into(),
            ),
            _ => None,
        }
    }
}

/// How a property came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// Real time could not decide (a call too slow to place in a window, ...).
    Unknown(String),
    /// The state the check needs cannot arise for this engine.
    NotApplicable(String),
}

/// Everything the suites need: the adapter, and the Redis it was given.
#[derive(Clone)]
pub struct PropertyTarget {
    pub backend: Arc<ExecBackend>,
    /// The Redis handed to the adapter, and whether the harness started it.
    pub redis: Option<(String, bool)>,
    /// Every namespace of the run starts with this.
    pub run_prefix: String,
    pub runtime: Handle,
    /// Bound on one trial.
    pub timeout: Duration,
    /// How to start more copies of the adapter, which race on one key (`race`).
    pub racers: crate::backend::exec::ExecConfig,
}

/// Real-time trials whose verdict is unknown are run again this many times in all.
const REALTIME_ATTEMPTS: usize = 3;

/// One trial per property, limiter kind and sweep point.
pub fn property_trials(target: &PropertyTarget) -> Vec<TrialSpec> {
    let Some(hello) = target.backend.hello_v2() else {
        return Vec::new();
    };
    let mut specs = Vec::new();
    for kind in &hello.limiters {
        for point in sweep(kind) {
            for property in Property::ALL {
                let name = format!(
                    "property::{}::{}::{}@{}",
                    kind.family.name(),
                    property.name(),
                    kind.name,
                    point.label()
                );
                if let Some(reason) = property.not_applicable(kind, target.redis.is_some()) {
                    specs.push(TrialSpec::skipped(name, "property", reason));
                    continue;
                }
                let target = target.clone();
                let kind = kind.clone();
                let point = point.clone();
                specs.push(TrialSpec::new(name, "property", move || {
                    run_trial(&target, &kind, &point, property)
                }));
            }
        }
    }
    specs
}

fn run_trial(
    target: &PropertyTarget,
    kind: &LimiterKind,
    point: &Point,
    property: Property,
) -> TrialResult {
    let attempts = if kind.clock == Clock::Explicit {
        1
    } else {
        REALTIME_ATTEMPTS
    };
    let mut unknown = Vec::new();
    for _ in 0..attempts {
        let verdict = target
            .runtime
            .block_on(check(target, kind, point, property));
        match verdict {
            Verdict::Pass(note) => return TrialResult::Passed(Some(note)),
            Verdict::Fail(m) => return TrialResult::Failed(format!("{}: {m}", kind.describe())),
            Verdict::NotApplicable(m) => {
                return TrialResult::Skipped(format!("not applicable: {m}"));
            }
            Verdict::Unknown(m) => unknown.push(m),
        }
    }
    TrialResult::Skipped(format!(
        "unknown after {attempts} real-time attempts: {}",
        unknown.join("; ")
    ))
}

async fn check(
    target: &PropertyTarget,
    kind: &LimiterKind,
    point: &Point,
    property: Property,
) -> Verdict {
    let shape = Shape::of(kind, point);
    let suite = format!("property::{}::{}", kind.family.name(), property.name());
    let mut driver = match Driver::open(target, kind, point, &suite).await {
        Ok(d) => d,
        Err(v) => return v,
    };
    // The bound starts once the session is open: trials queue for the one adapter, and waiting
    // for another trial to finish is no hang.
    let judged = tokio::time::timeout(target.timeout, async {
        let verdict = if property == Property::Race {
            race::run(target, &mut driver, point, &shape).await
        } else if kind.clock == Clock::Explicit {
            explicit::run(&mut driver, &shape, property).await
        } else {
            realtime::run(&mut driver, &shape, property).await
        };
        // Hygiene closes every suite: a check that passed on a store full of TTL-less keys did
        // not. (Not after seeding: the harness removed those TTLs; `hygiene` judges the engine.)
        match verdict {
            Verdict::Pass(note) if property == Property::LivenessSeeded => Verdict::Pass(note),
            Verdict::Pass(note) => match driver.hygiene(&shape).await {
                Ok(h) => Verdict::Pass(format!("{note}; {h}")),
                Err(v) => v,
            },
            other => other,
        }
    })
    .await;
    judged.unwrap_or_else(|_| {
        Verdict::Fail(format!(
            "the property did not finish within {:?} (a hung adapter or engine)",
            target.timeout
        ))
    })
}
