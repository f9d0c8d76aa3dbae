//! Properties of the reference model that must hold for every input (proptest).
//!
//! Each promise is checked only where the spec's formulas make it: the comments derive the
//! exceptions (e.g. a token budget's retry is `resetAt - now` without `ceil`, so it can be 0 at a
//! fractional `now`; a sliding window's retry is an estimate, so no admission is promised).

use proptest::prelude::*;
use proptest::strategy::Strategy as Generator;

use tk_conform::model::{
    Decision, FixedWindowOptions, GcraOptions, LeaseConfig, LeaseSpender, RateState,
    SlidingWindowLogOptions, SlidingWindowOptions, SpendOutcome, Strategy, TokenBucketOptions,
    TokenBudget, TokenBudgetOptions,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("TK_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

/// Every strategy with options in realistic ranges, periods and rates often fractional.
fn any_strategy() -> impl Generator<Value = Strategy> {
    prop_oneof![
        (1u32..=20, 1u32..=100_000, 1u32..=20).prop_map(|(limit, period, burst)| {
            Strategy::Gcra(GcraOptions {
                limit: limit.into(),
                period_ms: period.into(),
                burst: burst.into(),
            })
        }),
        (1u32..=50, 1u32..=10_000, 1u32..=100).prop_map(|(capacity, n, d)| {
            Strategy::TokenBucket(TokenBucketOptions {
                capacity: capacity.into(),
                refill_per_sec: f64::from(n) / f64::from(d),
            })
        }),
        (1u32..=50, 1u32..=100_000).prop_map(|(limit, window)| {
            Strategy::FixedWindow(FixedWindowOptions {
                limit: limit.into(),
                window_ms: window.into(),
            })
        }),
        (1u32..=50, 1u32..=100_000, 1u32..=10).prop_map(|(limit, window, buckets)| {
            Strategy::SlidingWindow(SlidingWindowOptions {
                limit: limit.into(),
                window_ms: window.into(),
                buckets: buckets.into(),
            })
        }),
        (1u32..=20, 2u32..=200_000).prop_map(|(limit, half_ms)| {
            Strategy::SlidingWindowLog(SlidingWindowLogOptions {
                limit: limit.into(),
                // Halves: windows like 2500.5 ms; at least 1 ms.
                window_ms: f64::from(half_ms) / 2.0,
            })
        }),
    ]
}

fn limit_of(s: &Strategy) -> f64 {
    s.limit()
}

/// A start (small or at epoch scale) and a run of (time step, cost) pairs.
fn timeline() -> impl Generator<Value = (f64, Vec<(f64, f64)>)> {
    (
        prop_oneof![1u64..=10_000_000, 1_700_000_000_000u64..=1_800_000_000_000],
        prop::collection::vec((0u32..=30_000, 1u32..=25), 1..25),
    )
        .prop_map(|(start, steps)| {
            let steps = steps
                .into_iter()
                .map(|(dt, cost)| (f64::from(dt), f64::from(cost)))
                .collect();
            (start as f64, steps)
        })
}

/// What a denial may change: the log's pruning of entries at or before `now - windowMs`, which
/// no later decision can see.
fn visible(s: &Strategy, state: &Option<RateState>, now: f64) -> Option<RateState> {
    match (s, state) {
        (Strategy::SlidingWindowLog(o), Some(RateState::SlidingWindowLog { entries })) => {
            let kept: Vec<_> = entries
                .iter()
                .filter(|e| e.score > now - o.window_ms)
                .cloned()
                .collect();
            (!kept.is_empty()).then_some(RateState::SlidingWindowLog { entries: kept })
        }
        _ => state.clone(),
    }
}

/// Whether a retry at `now + retryAfterMs` with the same cost is promised to be admitted.
fn retry_is_promised(s: &Strategy, cost: f64) -> bool {
    match s {
        // gcra: with inc < tau the clamp `tat = max(tat, now')` leaves allowAt < now'. Not with
        // cost == burst: then inc == tau and `(now' + inc) - tau` can round to just above now',
        // a denial with retry 1 that repeats at every retry (a golden vector pins this quirk).
        Strategy::Gcra(o) => cost < o.burst,
        // tokenBucket: the refill over retryAfterMs covers cost - tokens, if cost fits at all.
        Strategy::TokenBucket(o) => cost <= o.capacity,
        // fixedWindow: the retry lands in the next window, where the count is 0.
        Strategy::FixedWindow(o) => cost <= o.limit,
        // slidingWindow: the retry is an estimate (the next bucket brings its own weight).
        Strategy::SlidingWindow(_) => false,
        // slidingWindowLog: the k-th oldest entry leaves, with k = count + cost - limit <= count.
        Strategy::SlidingWindowLog(o) => cost <= o.limit,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rate_decisions_keep_their_invariants(s in any_strategy(), (start, steps) in timeline()) {
        let mut state = None;
        let mut now = start;
        for (i, (dt, cost)) in steps.into_iter().enumerate() {
            now += dt;
            let before = state.clone();
            let outcome = s.check(&mut state, now, cost).unwrap();
            let d: Decision = outcome.decision;
            prop_assert!(d.remaining >= 0, "op {i}: remaining {} < 0", d.remaining);
            prop_assert_eq!(d.limit, limit_of(&s) as i64);
            if d.allowed {
                prop_assert_eq!(d.retry_after_ms, 0, "op {}: allowed with a retry", i);
                prop_assert!(outcome.expiry_ms.is_some_and(|e| e >= 1.0), "op {i}: no expiry on a write");
            } else {
                prop_assert!(d.retry_after_ms >= 1, "op {i}: denied with retry {}", d.retry_after_ms);
                prop_assert!(outcome.expiry_ms.is_none(), "op {i}: a denial wrote");
                prop_assert_eq!(
                    visible(&s, &state, now),
                    visible(&s, &before, now),
                    "op {}: a denial changed the state", i
                );
                if retry_is_promised(&s, cost) {
                    let mut retry_state = state.clone();
                    let later = now + d.retry_after_ms as f64;
                    let retried = s.check(&mut retry_state, later, cost).unwrap().decision;
                    prop_assert!(
                        retried.allowed,
                        "op {i}: denied at {now} with retry {}, but denied again at {later}: {retried}",
                        d.retry_after_ms
                    );
                }
            }
        }
    }

    #[test]
    fn token_budget_keeps_its_invariants(
        budget in 1u32..=10_000,
        window in 1u32..=100_000,
        start in 1u64..=2_000_000_000_000,
        steps in prop::collection::vec((0u32..=50_000, 0u32..=5_000), 1..25),
    ) {
        let meter = TokenBudget::new(TokenBudgetOptions {
            budget: budget.into(),
            window_ms: window.into(),
        }).unwrap();
        let mut state = None;
        let mut now = start as f64;
        for (i, (dt, tokens)) in steps.into_iter().enumerate() {
            now += f64::from(dt);
            let before = state;
            let d = meter.debit(&mut state, now, tokens.into()).unwrap();
            prop_assert!(d.remaining >= 0);
            if d.allowed {
                prop_assert_eq!(d.retry_after_ms, 0);
            } else {
                // retry = resetAt - now, not ceiled: >= 1 because now and windowMs are integral
                // here (a fractional now could make it 0).
                prop_assert!(d.retry_after_ms >= 1, "op {i}: retry {}", d.retry_after_ms);
                prop_assert_eq!(state, before, "op {}: a denial changed the meter", i);
                // The retry lands in the next window: used restarts at 0, any debit fits.
                let mut retry_state = state;
                let later = now + d.retry_after_ms as f64;
                prop_assert!(meter.debit(&mut retry_state, later, tokens.into()).unwrap().allowed);
            }
        }
    }

    #[test]
    fn the_lease_spender_never_invents_a_denial(
        coupled in any::<bool>(),
        events in prop::collection::vec(
            prop_oneof![
                (0u32..=20, 0u32..=5_000).prop_map(|(c, e)| (true, f64::from(c), f64::from(e))),
                (1u32..=16, 0u32..=5_000).prop_map(|(c, t)| (false, f64::from(c) / 4.0, f64::from(t))),
            ],
            1..30,
        ),
    ) {
        let mut spender = LeaseSpender::new(LeaseConfig { limit: 10.0, ttl_ms: 1000.0, window_coupled: coupled });
        let base = 1_000_000.0;
        for (is_grant, amount, at) in events {
            if is_grant {
                spender.grant(amount, base + at);
                continue;
            }
            let now = base + at;
            let credits_before = spender.credits;
            let expired = spender.expires_at.is_some_and(|e| now >= e);
            // Window-coupled credits die at the window's end; others carry over.
            let usable = if coupled && expired { 0.0 } else { credits_before };
            match spender.spend(now, amount).unwrap() {
                SpendOutcome::Allowed(d) => {
                    prop_assert!(d.allowed, "the spender answered a denial: {d}");
                    prop_assert!(usable >= amount, "spent {amount} out of {usable} usable credits");
                    prop_assert_eq!(d.retry_after_ms, 0);
                    prop_assert_eq!(d.remaining, (usable - amount).floor() as i64);
                }
                SpendOutcome::NeedsRefresh => {
                    prop_assert!(usable < amount, "refresh asked with {usable} credits for {amount}");
                }
            }
        }
    }

    #[test]
    fn invalid_input_is_an_error_not_a_panic(
        s in any_strategy(),
        bad in prop_oneof![Just(0.0), Just(-1.0), Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), -1e9..0.0f64],
        which in 0usize..3,
    ) {
        let mut state = None;
        let result = match which {
            // an option: the first one of the strategy (limit / capacity)
            0 => {
                let broken = match s {
                    Strategy::Gcra(o) => Strategy::Gcra(GcraOptions { limit: bad, ..o }),
                    Strategy::TokenBucket(o) => Strategy::TokenBucket(TokenBucketOptions { capacity: bad, ..o }),
                    Strategy::FixedWindow(o) => Strategy::FixedWindow(FixedWindowOptions { limit: bad, ..o }),
                    Strategy::SlidingWindow(o) => Strategy::SlidingWindow(SlidingWindowOptions { limit: bad, ..o }),
                    Strategy::SlidingWindowLog(o) => Strategy::SlidingWindowLog(SlidingWindowLogOptions { limit: bad, ..o }),
                };
                broken.check(&mut state, 1000.0, 1.0)
            }
            // the cost (0 is a valid "ask without consuming")
            1 if bad == 0.0 => return Ok(()),
            1 => s.check(&mut state, 1000.0, bad),
            // now (0 is a valid instant for the model; only the wire treats it as a sentinel)
            _ if bad == 0.0 => return Ok(()),
            _ => s.check(&mut state, bad, 1.0),
        };
        prop_assert!(result.is_err(), "accepted {bad} as input {which}");
        prop_assert!(state.is_none(), "an invalid call wrote state");
    }
}

#[test]
fn invalid_budgets_and_lease_costs_are_errors() {
    for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        assert!(
            TokenBudget::new(TokenBudgetOptions {
                budget: bad,
                window_ms: 1000.0
            })
            .is_err()
        );
        assert!(
            TokenBudget::new(TokenBudgetOptions {
                budget: 10.0,
                window_ms: bad
            })
            .is_err()
        );
        let mut spender = LeaseSpender::new(LeaseConfig {
            limit: 10.0,
            ttl_ms: 1000.0,
            window_coupled: true,
        });
        spender.grant(5.0, 2000.0);
        assert!(spender.spend(1000.0, bad).is_err(), "lease cost {bad}");
        assert_eq!(spender.credits, 5.0, "an invalid spend consumed credits");
    }
    let meter = TokenBudget::new(TokenBudgetOptions {
        budget: 10.0,
        window_ms: 1000.0,
    })
    .unwrap();
    for bad in [-1.0, f64::NAN] {
        assert!(meter.debit(&mut None, 1000.0, bad).is_err());
        assert!(meter.debit(&mut None, bad, 1.0).is_err());
    }
    // buckets must be whole
    let s = Strategy::SlidingWindow(SlidingWindowOptions {
        limit: 5.0,
        window_ms: 1000.0,
        buckets: 2.5,
    });
    assert!(s.check(&mut None, 1000.0, 1.0).is_err());
    // the log stores one entry per unit: a fractional cost is refused
    let s = Strategy::SlidingWindowLog(SlidingWindowLogOptions {
        limit: 5.0,
        window_ms: 1000.0,
    });
    assert!(s.check(&mut None, 1000.0, 1.5).is_err());
}
