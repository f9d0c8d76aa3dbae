//! Mutation tests: do the committed golden vectors catch plausible bugs?
//!
//! This file holds a COPY of every algorithm of the reference model, with switches for plausible
//! mistakes. Replaying `contract/golden-vectors.json` through the unmutated copy must reproduce
//! every expectation (so the copy is faithful); replaying it through each mutant must diverge at
//! least once. The product code is never touched.

use std::collections::BTreeMap;
use std::path::Path;

use tk_conform::contract::layout;
use tk_conform::contract::vectors::{LeaseEvent, Suite, VectorsFile};
use tk_conform::model::{Decision, Strategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    None,
    // gcra
    GcraRemainingCeil,
    GcraRemainingFromOldTat,
    GcraDenyAtAllowAt,
    GcraRetryFloor,
    GcraResetFromOldTat,
    GcraNoTatClamp,
    // tokenBucket
    BucketNoCapacityCap,
    BucketRemainingCeil,
    BucketAllowStrict,
    BucketResetBeforeSpend,
    BucketRetryFromZero,
    // fixedWindow
    WindowStrictLess,
    WindowRemainingIgnoresCost,
    WindowDenyRemainingSubtractsCost,
    WindowNeverRolls,
    WindowStartCeil,
    // slidingWindow
    SlidingTruncatedModulo,
    SlidingNoIndexCheck,
    SlidingRingOfS,
    SlidingWeightInverted,
    SlidingRetryAlwaysNextBucket,
    SlidingDenyRemainingFromProjected,
    SlidingResetWithoutWindow,
    // slidingWindowLog
    LogPruneStrict,
    LogKthOffByOne,
    LogEmptyRetryOne,
    LogResetFromNow,
    // tokenBudget
    BudgetAdmitAtBudget,
    BudgetAllOrNothing,
    BudgetNeverRolls,
    // lease spender
    LeaseNoWindowDiscard,
    LeaseDiscardWhenNotCoupled,
    LeaseDiscardAfterExpiry,
    LeaseRemainingCeil,
    LeaseInventsDenial,
}

use Mutation as M;

const ALL: &[Mutation] = &[
    M::GcraRemainingCeil,
    M::GcraRemainingFromOldTat,
    M::GcraDenyAtAllowAt,
    M::GcraRetryFloor,
    M::GcraResetFromOldTat,
    M::GcraNoTatClamp,
    M::BucketNoCapacityCap,
    M::BucketRemainingCeil,
    M::BucketAllowStrict,
    M::BucketResetBeforeSpend,
    M::BucketRetryFromZero,
    M::WindowStrictLess,
    M::WindowRemainingIgnoresCost,
    M::WindowDenyRemainingSubtractsCost,
    M::WindowNeverRolls,
    M::WindowStartCeil,
    M::SlidingNoIndexCheck,
    M::SlidingRingOfS,
    M::SlidingWeightInverted,
    M::SlidingRetryAlwaysNextBucket,
    M::SlidingDenyRemainingFromProjected,
    M::SlidingResetWithoutWindow,
    M::LogPruneStrict,
    M::LogKthOffByOne,
    M::LogEmptyRetryOne,
    M::LogResetFromNow,
    M::BudgetAdmitAtBudget,
    M::BudgetAllOrNothing,
    M::BudgetNeverRolls,
    M::LeaseNoWindowDiscard,
    M::LeaseDiscardWhenNotCoupled,
    M::LeaseDiscardAfterExpiry,
    M::LeaseRemainingCeil,
    M::LeaseInventsDenial,
];

fn decision(allowed: bool, limit: f64, remaining: f64, reset_at: f64, retry: f64) -> Decision {
    Decision {
        allowed,
        limit: limit as i64,
        remaining: remaining as i64,
        reset_at: reset_at as i64,
        retry_after_ms: retry as i64,
    }
}

/// Everything one key may hold, for whichever strategy the suite uses.
#[derive(Default)]
struct KeyState {
    tat: Option<f64>,
    bucket: Option<(f64, f64)>,
    window: Option<(f64, f64)>,
    slots: BTreeMap<i64, (i64, f64)>,
    log: Vec<(f64, String)>,
}

fn check(s: &Strategy, k: &mut KeyState, now: f64, cost: f64, m: Mutation) -> Decision {
    match s {
        Strategy::Gcra(o) => {
            let t = o.period_ms / o.limit;
            let tau = t * o.burst;
            let inc = t * cost;
            let stored = k.tat.unwrap_or(now);
            let tat = if stored < now && m != M::GcraNoTatClamp {
                now
            } else {
                stored
            };
            let new_tat = tat + inc;
            let allow_at = new_tat - tau;
            let round = |x: f64| {
                if m == M::GcraRemainingCeil {
                    x.ceil()
                } else {
                    x.floor()
                }
            };
            let denied = if m == M::GcraDenyAtAllowAt {
                now <= allow_at
            } else {
                now < allow_at
            };
            if denied {
                let retry = if m == M::GcraRetryFloor {
                    (allow_at - now).floor()
                } else {
                    (allow_at - now).ceil()
                };
                let remaining = round((tau - (tat - now)) / t).max(0.0);
                return decision(false, o.burst, remaining, tat.ceil(), retry);
            }
            let basis = if m == M::GcraRemainingFromOldTat {
                tat
            } else {
                new_tat
            };
            let remaining = round((tau - (basis - now)) / t).max(0.0);
            k.tat = Some(new_tat);
            let reset = if m == M::GcraResetFromOldTat {
                tat.ceil()
            } else {
                new_tat.ceil()
            };
            decision(true, o.burst, remaining, reset, 0.0)
        }
        Strategy::TokenBucket(o) => {
            let cap = o.capacity;
            let r = o.refill_per_sec / 1000.0;
            let (tokens, last) = k.bucket.unwrap_or((cap, now));
            let elapsed = (now - last).max(0.0);
            let tokens = if m == M::BucketNoCapacityCap {
                tokens + elapsed * r
            } else {
                cap.min(tokens + elapsed * r)
            };
            let round = |x: f64| {
                if m == M::BucketRemainingCeil {
                    x.ceil()
                } else {
                    x.floor()
                }
            };
            let allowed = if m == M::BucketAllowStrict {
                tokens > cost
            } else {
                tokens >= cost
            };
            if allowed {
                let left = tokens - cost;
                k.bucket = Some((left, now));
                let basis = if m == M::BucketResetBeforeSpend {
                    tokens
                } else {
                    left
                };
                let reset = now + ((cap - basis) / r).ceil();
                return decision(true, cap, round(left).max(0.0), reset, 0.0);
            }
            let reset = now + ((cap - tokens) / r).ceil();
            let retry = if m == M::BucketRetryFromZero {
                (cost / r).ceil()
            } else {
                ((cost - tokens) / r).ceil()
            };
            decision(false, cap, round(tokens).max(0.0), reset, retry)
        }
        Strategy::FixedWindow(o) => {
            let start = if m == M::WindowStartCeil {
                (now / o.window_ms).ceil() * o.window_ms
            } else {
                (now / o.window_ms).floor() * o.window_ms
            };
            let reset = start + o.window_ms;
            let count = match k.window {
                Some((s, c)) if s == start || m == M::WindowNeverRolls => c,
                _ => 0.0,
            };
            let allowed = if m == M::WindowStrictLess {
                count + cost < o.limit
            } else {
                count + cost <= o.limit
            };
            if allowed {
                k.window = Some((start, count + cost));
                let remaining = if m == M::WindowRemainingIgnoresCost {
                    o.limit - count
                } else {
                    o.limit - (count + cost)
                };
                return decision(true, o.limit, remaining, reset, 0.0);
            }
            let remaining = if m == M::WindowDenyRemainingSubtractsCost {
                (o.limit - count - cost).max(0.0)
            } else {
                (o.limit - count).max(0.0)
            };
            decision(false, o.limit, remaining, reset, (reset - now).ceil())
        }
        Strategy::SlidingWindow(o) => {
            let s = o.buckets;
            let ring = if m == M::SlidingRingOfS {
                s as i64
            } else {
                s as i64 + 1
            };
            let slot = |i: i64| {
                if m == M::SlidingTruncatedModulo {
                    i % ring
                } else {
                    i.rem_euclid(ring)
                }
            };
            let w = o.window_ms / s;
            let c = (now / w).floor();
            let elapsed = (now - c * w).max(0.0);
            let weight = if m == M::SlidingWeightInverted {
                (elapsed / w).clamp(0.0, 1.0)
            } else {
                ((w - elapsed) / w).clamp(0.0, 1.0)
            };
            let count_of = |slots: &BTreeMap<i64, (i64, f64)>, i: f64| {
                let i = i as i64;
                match slots.get(&slot(i)) {
                    Some((stored, n)) if *stored == i || m == M::SlidingNoIndexCheck => *n,
                    _ => 0.0,
                }
            };
            let mut full = 0.0;
            let mut i = c - s + 1.0;
            while i <= c {
                full += count_of(&k.slots, i);
                i += 1.0;
            }
            let oldest = count_of(&k.slots, c - s);
            let estimate = full + oldest * weight;
            let projected = estimate + cost;
            let reset = if m == M::SlidingResetWithoutWindow {
                ((c + 1.0) * w).ceil()
            } else {
                ((c + 1.0) * w + o.window_ms).ceil()
            };
            if projected <= o.limit {
                let current = count_of(&k.slots, c);
                k.slots.insert(slot(c as i64), (c as i64, current + cost));
                let remaining = (o.limit - projected).floor().max(0.0);
                return decision(true, o.limit, remaining, reset, 0.0);
            }
            let d = projected - o.limit;
            let weighted = oldest > 0.0 && d <= oldest * weight;
            let retry = if weighted && m != M::SlidingRetryAlwaysNextBucket {
                (d * w / oldest).ceil()
            } else {
                ((c + 1.0) * w - now).ceil()
            };
            let basis = if m == M::SlidingDenyRemainingFromProjected {
                projected
            } else {
                estimate
            };
            let remaining = (o.limit - basis).floor().max(0.0);
            decision(false, o.limit, remaining, reset, retry.max(1.0))
        }
        Strategy::SlidingWindowLog(o) => {
            let cutoff = now - o.window_ms;
            if m == M::LogPruneStrict {
                k.log.retain(|(score, _)| *score >= cutoff);
            } else {
                k.log.retain(|(score, _)| *score > cutoff);
            }
            let count = k.log.len() as f64;
            if count + cost <= o.limit {
                for i in 1..=(cost as u64) {
                    let member = format!("{}-{}", now as i64, count as u64 + i);
                    k.log.retain(|(_, name)| *name != member);
                    let at = k
                        .log
                        .iter()
                        .position(|(sc, name)| (*sc, name.as_str()) > (now, member.as_str()))
                        .unwrap_or(k.log.len());
                    k.log.insert(at, (now, member));
                }
                let oldest = k.log.first().map_or(now, |e| e.0);
                let reset = if m == M::LogResetFromNow {
                    (now + o.window_ms).ceil()
                } else {
                    (oldest + o.window_ms).ceil()
                };
                let remaining = (o.limit - (count + cost)).max(0.0);
                return decision(true, o.limit, remaining, reset, 0.0);
            }
            let retry = if count == 0.0 {
                if m == M::LogEmptyRetryOne {
                    1.0
                } else {
                    o.window_ms
                }
            } else {
                let kth = (count + cost - o.limit).clamp(1.0, count) as usize;
                let index = if m == M::LogKthOffByOne {
                    kth.min(k.log.len() - 1)
                } else {
                    kth - 1
                };
                (k.log[index].0 + o.window_ms - now).ceil().max(1.0)
            };
            let oldest = k.log.first().map_or(now, |e| e.0);
            let remaining = (o.limit - count).max(0.0);
            decision(
                false,
                o.limit,
                remaining,
                (oldest + o.window_ms).ceil(),
                retry,
            )
        }
    }
}

/// One op whose mutant answer differs from the golden expectation.
#[derive(Debug)]
struct Divergence {
    suite: String,
    op: usize,
    expected: String,
    actual: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "suite `{}` op {}: expected {}, got {}",
            self.suite, self.op, self.expected, self.actual
        )
    }
}

fn diff(expected: &Decision, actual: &Decision) -> Option<(String, String)> {
    let fields = expected.diff(actual);
    if fields.is_empty() {
        return None;
    }
    let show = |pick: fn(&(&str, i64, i64)) -> i64| {
        fields
            .iter()
            .map(|f| format!("{}={}", f.0, pick(f)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some((show(|f| f.1), show(|f| f.2)))
}

fn replay(vectors: &VectorsFile, m: Mutation) -> Vec<Divergence> {
    let mut out = Vec::new();
    for suite in &vectors.suites {
        let mut push = |op: usize, expected: String, actual: String| {
            out.push(Divergence {
                suite: suite.name().to_owned(),
                op,
                expected,
                actual,
            })
        };
        match suite {
            Suite::RateLimit(s) => {
                let mut key = KeyState::default();
                for (i, op) in s.ops.iter().enumerate() {
                    let got = check(&s.strategy, &mut key, op.now, op.cost, m);
                    if let Some((e, a)) = diff(&op.expect, &got) {
                        push(i, e, a);
                    }
                }
            }
            Suite::TokenBudget(s) => {
                let o = &s.options;
                let mut meter: Option<(f64, f64)> = None;
                for (i, op) in s.ops.iter().enumerate() {
                    let start = (op.now / o.window_ms).floor() * o.window_ms;
                    let reset = start + o.window_ms;
                    let used = match meter {
                        Some((ws, used)) if ws == start || m == M::BudgetNeverRolls => used,
                        _ => 0.0,
                    };
                    let admitted = match m {
                        M::BudgetAdmitAtBudget => used <= o.budget,
                        M::BudgetAllOrNothing => used + op.tokens <= o.budget,
                        _ => used < o.budget,
                    };
                    let got = if admitted {
                        let used = used + op.tokens;
                        meter = Some((start, used));
                        decision(true, o.budget, (o.budget - used).max(0.0), reset, 0.0)
                    } else {
                        let remaining = (o.budget - used).max(0.0);
                        decision(false, o.budget, remaining, reset, reset - op.now)
                    };
                    if let Some((e, a)) = diff(&op.expect, &got) {
                        push(i, e, a);
                    }
                }
            }
            Suite::Lease(s) => {
                let c = &s.config;
                let mut credits = 0.0_f64;
                let mut expires: Option<f64> = None;
                for (i, event) in s.events.iter().enumerate() {
                    match event {
                        LeaseEvent::Grant {
                            capacity,
                            expires_at,
                        } => {
                            credits += capacity;
                            expires = Some(*expires_at);
                        }
                        LeaseEvent::Spend { now, cost, expect } => {
                            let rolled = match m {
                                M::LeaseDiscardAfterExpiry => expires.is_some_and(|at| *now > at),
                                _ => expires.is_some_and(|at| *now >= at),
                            };
                            let coupled = match m {
                                M::LeaseNoWindowDiscard => false,
                                M::LeaseDiscardWhenNotCoupled => true,
                                _ => c.window_coupled,
                            };
                            if coupled && rolled && credits > 0.0 {
                                credits = 0.0;
                            }
                            let got = if credits >= *cost {
                                credits -= cost;
                                let remaining = if m == M::LeaseRemainingCeil {
                                    credits.ceil()
                                } else {
                                    credits.floor()
                                };
                                let reset = expires.unwrap_or(now + c.ttl_ms);
                                Some(decision(true, c.limit, remaining.max(0.0), reset, 0.0))
                            } else if m == M::LeaseInventsDenial {
                                Some(decision(false, c.limit, 0.0, now + c.ttl_ms, 1.0))
                            } else {
                                None
                            };
                            let expected = expect.decision;
                            if got != expected {
                                let show = |d: Option<Decision>| {
                                    d.map_or("needsRefresh".to_owned(), |d| d.to_string())
                                };
                                push(i, show(expected), show(got));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn golden() -> VectorsFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/golden-vectors.json");
    layout::read_versioned_json(&path).expect("the committed golden vectors load")
}

#[test]
fn the_unmutated_copy_reproduces_every_golden_vector() {
    let divergences = replay(&golden(), M::None);
    assert!(
        divergences.is_empty(),
        "the test's copy of the model is not faithful:\n{}",
        divergences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_mutation_is_caught_by_the_golden_vectors() {
    let vectors = golden();
    let mut survivors = Vec::new();
    for &m in ALL {
        let divergences = replay(&vectors, m);
        match divergences.first() {
            Some(first) => println!(
                "{m:?}: caught at {} op(s); first: {first}",
                divergences.len()
            ),
            None => survivors.push(m),
        }
    }
    assert!(
        survivors.is_empty(),
        "these mutations survive the golden vectors (add timelines that catch them): {survivors:?}"
    );
}

/// Written indices are never negative (now > 0), and a slot only counts for the index it stores,
/// so a truncated `%` can only send a read of a negative index to a slot that holds nothing:
/// against the reference slot semantics it is an equivalent mutant, which no vector with
/// `now > 0` can expose. This test pins that analysis down, so nobody counts it as covered.
#[test]
fn truncated_modulo_alone_is_an_equivalent_mutant() {
    assert!(replay(&golden(), M::SlidingTruncatedModulo).is_empty());
}
