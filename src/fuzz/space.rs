//! Random timelines over the contract's whole option space, in the `suites/vectors/*.toml` shape.
//!
//! Timeline `i` of seed `s` depends on `(s, i)` alone, so parallel workers can take timelines in
//! any order and the same seed always yields the same timelines. The space leans on the places
//! where engines go wrong: fractional periods and rates, the millisecond before, at and after a
//! window or bucket edge, epochs at or past 1.7e12, costs of 0, fractional, equal to the ceiling
//! and above it, idle gaps, lease grants interleaved with spends, and several keys at once.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::contract::timelines::{
    DebitStep, LeaseStep, LeaseTimeline, RateLimitTimeline, RateStep, TimelineFile,
    TokenBudgetTimeline,
};
use crate::model::{
    FixedWindowOptions, GcraOptions, SlidingWindowLogOptions, SlidingWindowOptions, Strategy,
    StrategyKind, TokenBucketOptions, TokenBudgetOptions,
};

/// What a timeline may exercise: a rate strategy, the token budget, or the lease spender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Rate(StrategyKind),
    TokenBudget,
    Lease,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Rate(StrategyKind::Gcra),
        Target::Rate(StrategyKind::TokenBucket),
        Target::Rate(StrategyKind::FixedWindow),
        Target::Rate(StrategyKind::SlidingWindow),
        Target::Rate(StrategyKind::SlidingWindowLog),
        Target::TokenBudget,
        Target::Lease,
    ];

    /// The name `--strategy` takes (the contract's own names).
    pub fn name(self) -> &'static str {
        match self {
            Target::Rate(kind) => kind.name(),
            Target::TokenBudget => "tokenBudget",
            Target::Lease => "lease",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The bounds of the space.
#[derive(Debug, Clone)]
pub struct Space {
    /// Never empty.
    pub targets: Vec<Target>,
    /// Ops (lease: events) per key, at least 1.
    pub max_ops: usize,
    /// Keys per timeline, at least 1.
    pub max_keys: usize,
}

/// The lowest epoch a fuzz timeline starts at (2023-11-14): real epochs, not toy clocks.
pub const MIN_EPOCH: f64 = 1_700_000_000_000.0;

/// Timeline `index` of `seed`.
pub fn timeline(space: &Space, seed: u64, index: u64) -> TimelineFile {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let keys = if space.max_keys > 1 && rng.random_bool(0.3) {
        rng.random_range(2..=space.max_keys)
    } else {
        1
    };
    let mut file = TimelineFile::default();
    for k in 0..keys {
        let name = format!("fuzz-{index}-k{k}");
        let target = *space
            .targets
            .choose(&mut rng)
            .expect("targets is never empty");
        let ops = rng.random_range(1..=space.max_ops);
        match target {
            Target::Rate(kind) => file
                .rate_limit
                .push(rate_timeline(&mut rng, name, kind, ops)),
            Target::TokenBudget => file.token_budget.push(budget_timeline(&mut rng, name, ops)),
            Target::Lease => file.lease.push(lease_timeline(&mut rng, name, ops)),
        }
    }
    file
}

fn pick<T: Copy>(rng: &mut StdRng, values: &[T]) -> T {
    *values.choose(rng).expect("a non-empty list")
}

fn strategy(rng: &mut StdRng, kind: StrategyKind) -> Strategy {
    match kind {
        StrategyKind::Gcra => {
            let limit: f64 = pick(rng, &[1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 2.5, 0.5]);
            let burst = match rng.random_range(0..4) {
                0 => limit.ceil(),
                1 => 1.0,
                2 => pick(rng, &[2.0, 3.0, 5.0, 10.0]),
                _ => pick(rng, &[1.5, 2.5, 0.5]),
            };
            Strategy::Gcra(GcraOptions {
                limit,
                period_ms: pick(
                    rng,
                    &[
                        1000.0,
                        2000.0,
                        3000.0,
                        10_000.0,
                        60_000.0,
                        1500.5,
                        2222.25,
                        3_600_000.0,
                    ],
                ),
                burst,
            })
        }
        StrategyKind::TokenBucket => Strategy::TokenBucket(TokenBucketOptions {
            capacity: pick(rng, &[1.0, 2.0, 3.0, 5.0, 10.0, 2.5, 100.0]),
            refill_per_sec: pick(rng, &[0.1, 0.5, 1.0, 2.0, 3.0, 0.25, 1.5]),
        }),
        StrategyKind::FixedWindow => Strategy::FixedWindow(FixedWindowOptions {
            limit: pick(rng, &[1.0, 2.0, 3.0, 5.0, 10.0, 2.5, 100.0]),
            window_ms: pick(
                rng,
                &[
                    1000.0,
                    1500.0,
                    2000.0,
                    5000.0,
                    60_000.0,
                    1000.5,
                    3333.25,
                    3_600_000.0,
                ],
            ),
        }),
        StrategyKind::SlidingWindow => Strategy::SlidingWindow(SlidingWindowOptions {
            limit: pick(rng, &[1.0, 2.0, 3.0, 5.0, 10.0, 2.5]),
            window_ms: pick(
                rng,
                &[1000.0, 2000.0, 3000.0, 6000.0, 60_000.0, 1000.5, 2500.0],
            ),
            buckets: pick(rng, &[1.0, 2.0, 3.0, 4.0, 6.0, 10.0]),
        }),
        StrategyKind::SlidingWindowLog => Strategy::SlidingWindowLog(SlidingWindowLogOptions {
            limit: pick(rng, &[1.0, 2.0, 3.0, 5.0, 10.0]),
            window_ms: pick(
                rng,
                &[1000.0, 1500.0, 2000.0, 5000.0, 60_000.0, 1000.5, 2500.25],
            ),
        }),
    }
}

/// The strategy's ceiling (what a cost is compared with) and the widths whose edges matter.
fn shape(strategy: &Strategy) -> (f64, Vec<f64>) {
    match strategy {
        Strategy::Gcra(o) => (o.burst, vec![o.period_ms / o.limit]),
        // The time one token takes to refill.
        Strategy::TokenBucket(o) => (o.capacity, vec![1000.0 / o.refill_per_sec]),
        Strategy::FixedWindow(o) => (o.limit, vec![o.window_ms]),
        Strategy::SlidingWindow(o) => (o.limit, vec![o.window_ms / o.buckets, o.window_ms]),
        Strategy::SlidingWindowLog(o) => (o.limit, vec![o.window_ms]),
    }
}

/// A start at a real epoch, often right at (or a ms off) a multiple of `width`.
fn start(rng: &mut StdRng, width: f64) -> f64 {
    let raw = MIN_EPOCH
        + f64::from(rng.random_range(0..50_000_000u32)) * 1000.0
        + f64::from(rng.random_range(0..1000u32));
    if rng.random_bool(0.5) {
        let aligned = (raw / width).floor() * width;
        (aligned + pick(rng, &[-1.0, 0.0, 1.0])).max(MIN_EPOCH)
    } else {
        raw
    }
}

/// The next op's time after `t`: an edge (± 1 ms) of one of `widths` counted from `origin` (and
/// from 0, for absolute windows), the same instant, the next ms, a short or an idle gap, or a
/// small step back in time (a skewed client clock).
fn next_time(rng: &mut StdRng, t: f64, origin: f64, widths: &[f64], start: f64) -> f64 {
    let width = pick(rng, widths);
    let next = match rng.random_range(0..100) {
        0..40 => {
            let base = if rng.random_bool(0.5) { 0.0 } else { origin };
            let steps = f64::from(rng.random_range(1..=3u32));
            let edge = base + (((t - base) / width).floor() + steps) * width;
            edge.round() + pick(rng, &[-1.0, 0.0, 1.0])
        }
        40..55 => t,
        55..68 => t + 1.0,
        68..85 => t + f64::from(rng.random_range(2..=(width.max(8.0) / 4.0) as u32)),
        85..95 => t + width * f64::from(rng.random_range(2..=20u32)),
        _ => t - f64::from(rng.random_range(1..=50u32)),
    };
    let next = if rng.random_bool(0.05) {
        next + 0.5
    } else {
        next
    };
    next.max(start)
}

fn cost(rng: &mut StdRng, ceiling: f64, whole: bool) -> f64 {
    let c = match rng.random_range(0..100) {
        0..45 => 1.0,
        45..53 => 0.0,
        53..68 => pick(rng, &[0.5, 0.25, 1.5, 0.1, 2.7]),
        68..78 => ceiling,
        78..85 => ceiling.floor() + 1.0,
        85..95 => pick(rng, &[2.0, 3.0]),
        _ => ceiling * 2.0,
    };
    if whole { c.round() } else { c }
}

fn rate_timeline(
    rng: &mut StdRng,
    name: String,
    kind: StrategyKind,
    ops: usize,
) -> RateLimitTimeline {
    let strategy = strategy(rng, kind);
    let (ceiling, widths) = shape(&strategy);
    let start = start(rng, widths[widths.len() - 1]);
    let whole = kind == StrategyKind::SlidingWindowLog;
    let mut t = start + f64::from(rng.random_range(0..3u32));
    let origin = t;
    let mut steps = Vec::with_capacity(ops);
    for i in 0..ops {
        if i > 0 {
            t = next_time(rng, t, origin, &widths, start);
        }
        steps.push(RateStep {
            at: t - start,
            cost: cost(rng, ceiling, whole),
            repeat: 1,
            every: 0.0,
        });
    }
    RateLimitTimeline {
        name,
        key: None,
        start,
        strategy,
        ops: steps,
    }
}

fn budget_timeline(rng: &mut StdRng, name: String, ops: usize) -> TokenBudgetTimeline {
    let options = TokenBudgetOptions {
        budget: pick(rng, &[1.0, 5.0, 10.0, 100.0, 2.5]),
        window_ms: pick(rng, &[1000.0, 60_000.0, 1500.5, 3_600_000.0]),
    };
    let start = start(rng, options.window_ms);
    let mut t = start;
    let mut steps = Vec::with_capacity(ops);
    for i in 0..ops {
        if i > 0 {
            t = next_time(rng, t, start, &[options.window_ms], start);
        }
        steps.push(DebitStep {
            at: t - start,
            tokens: cost(rng, options.budget, false),
            repeat: 1,
            every: 0.0,
        });
    }
    TokenBudgetTimeline {
        name,
        start,
        options,
        ops: steps,
    }
}

fn lease_timeline(rng: &mut StdRng, name: String, events: usize) -> LeaseTimeline {
    let limit = pick(rng, &[1.0, 5.0, 10.0, 2.5]);
    let ttl_ms = pick(rng, &[1000.0, 5000.0, 60_000.0]);
    let start = start(rng, 1000.0);
    let mut t = start;
    let mut expires_at = start + ttl_ms;
    let mut steps = Vec::with_capacity(events);
    for i in 0..events {
        // A timeline usually opens with a grant; later ones are interleaved with the spends.
        if (i == 0 && rng.random_bool(0.8)) || (i > 0 && rng.random_bool(0.25)) {
            expires_at =
                t + pick(rng, &[0.0, 1.0, 500.0, 1000.0, ttl_ms]) + pick(rng, &[-1.0, 0.0, 1.0]);
            steps.push(LeaseStep::Grant {
                capacity: pick(rng, &[0.0, 1.0, 2.0, 5.0, 0.5, 2.5]),
                expires_at: (expires_at - start).max(0.0),
            });
            continue;
        }
        if i > 0 {
            t = match rng.random_range(0..3) {
                0 => expires_at + pick(rng, &[-1.0, 0.0, 1.0]),
                _ => next_time(rng, t, start, &[ttl_ms], start),
            }
            .max(start);
        }
        steps.push(LeaseStep::Spend {
            at: t - start,
            cost: pick(rng, &[1.0, 1.0, 0.5, 2.0, 1.5, 3.0]),
            repeat: 1,
            every: 0.0,
        });
    }
    LeaseTimeline {
        name,
        start,
        limit,
        ttl_ms,
        window_coupled: rng.random_bool(0.5),
        events: steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space {
            targets: Target::ALL.to_vec(),
            max_ops: 12,
            max_keys: 3,
        }
    }

    #[test]
    fn the_same_seed_and_index_give_the_same_timeline() {
        let a = format!("{:?}", timeline(&space(), 7, 3));
        let b = format!("{:?}", timeline(&space(), 7, 3));
        assert_eq!(a, b);
        assert_ne!(a, format!("{:?}", timeline(&space(), 7, 4)));
        assert_ne!(a, format!("{:?}", timeline(&space(), 8, 3)));
    }

    #[test]
    fn timelines_stay_inside_the_bounds_and_at_real_epochs() {
        for i in 0..500 {
            let file = timeline(&space(), 1, i);
            let keys = file.rate_limit.len() + file.token_budget.len() + file.lease.len();
            assert!((1..=3).contains(&keys), "{keys} keys");
            for t in &file.rate_limit {
                assert!(t.start >= MIN_EPOCH && (1..=12).contains(&t.ops.len()));
                assert!(t.ops.iter().all(|o| o.at >= 0.0 && o.cost >= 0.0));
                if t.strategy.kind() == StrategyKind::SlidingWindowLog {
                    assert!(t.ops.iter().all(|o| o.cost.fract() == 0.0));
                }
                t.strategy.validate().unwrap();
            }
            for t in &file.lease {
                assert!(t.start >= MIN_EPOCH && (1..=12).contains(&t.events.len()));
            }
        }
    }

    #[test]
    fn a_target_list_restricts_the_space() {
        let only = Space {
            targets: vec![Target::Rate(StrategyKind::Gcra)],
            ..space()
        };
        for i in 0..50 {
            let file = timeline(&only, 2, i);
            assert!(file.token_budget.is_empty() && file.lease.is_empty());
            assert!(
                file.rate_limit
                    .iter()
                    .all(|t| t.strategy.kind() == StrategyKind::Gcra)
            );
        }
    }
}
