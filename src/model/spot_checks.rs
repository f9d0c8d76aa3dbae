//! Hand-computed examples from the spec's formulas: an independent check of the arithmetic.

use super::*;

fn d(allowed: bool, limit: i64, remaining: i64, reset_at: i64, retry: i64) -> Decision {
    Decision {
        allowed,
        limit,
        remaining,
        reset_at,
        retry_after_ms: retry,
    }
}

fn run(strategy: Strategy, ops: &[(f64, f64)]) -> Vec<Decision> {
    let mut state = None;
    ops.iter()
        .map(|&(now, cost)| strategy.check(&mut state, now, cost).unwrap().decision)
        .collect()
}

#[test]
fn gcra_fractional_period() {
    // T = 1000/3, tau = 2T: two admits at once, the third waits one emission interval.
    let s = Strategy::Gcra(GcraOptions {
        limit: 3.0,
        period_ms: 1000.0,
        burst: 2.0,
    });
    let t: f64 = 1000.0 / 3.0;
    let got = run(s, &[(1000.0, 1.0), (1000.0, 1.0), (1000.0, 1.0)]);
    assert_eq!(got[0], d(true, 2, 1, (1000.0 + t).ceil() as i64, 0));
    assert_eq!(got[1], d(true, 2, 0, (1000.0 + t + t).ceil() as i64, 0));
    // tat = 1000 + 2T, allowAt = 1000 + 3T - 2T = 1000 + T.
    assert_eq!(
        got[2],
        d(false, 2, 0, (1000.0 + t + t).ceil() as i64, t.ceil() as i64)
    );
}

#[test]
fn token_bucket_refills_and_caps() {
    let s = Strategy::TokenBucket(TokenBucketOptions {
        capacity: 4.0,
        refill_per_sec: 2.0,
    });
    // r = 0.002/ms: one token per 500 ms.
    let got = run(
        s,
        &[
            (10_000.0, 4.0),
            (10_000.0, 1.0),
            (10_250.0, 1.0),
            (10_500.0, 1.0),
            (99_000.0, 4.0),
        ],
    );
    assert_eq!(got[0], d(true, 4, 0, 12_000, 0));
    assert_eq!(got[1], d(false, 4, 0, 12_000, 500));
    assert_eq!(got[2], d(false, 4, 0, 12_000, 250));
    assert_eq!(got[3], d(true, 4, 0, 12_500, 0));
    assert_eq!(got[4], d(true, 4, 0, 101_000, 0));
}

#[test]
fn fixed_window_boundary() {
    let s = Strategy::FixedWindow(FixedWindowOptions {
        limit: 2.0,
        window_ms: 1000.0,
    });
    let got = run(s, &[(5_000.0, 2.0), (5_999.0, 1.0), (6_000.0, 1.0)]);
    assert_eq!(got[0], d(true, 2, 0, 6_000, 0));
    assert_eq!(got[1], d(false, 2, 0, 6_000, 1));
    assert_eq!(got[2], d(true, 2, 1, 7_000, 0));
}

#[test]
fn sliding_window_weights_the_oldest_bucket() {
    // S = 2, w = 500. At 1000 bucket c = 2 gets 4; at 1750 (c = 3) bucket 2 is c-S+1 (full);
    // at 2250 (c = 4, elapsed 250, weight 0.5) bucket 2 is the oldest: estimate = 4 * 0.5 = 2.
    let s = Strategy::SlidingWindow(SlidingWindowOptions {
        limit: 4.0,
        window_ms: 1000.0,
        buckets: 2.0,
    });
    let got = run(
        s,
        &[(1000.0, 4.0), (1750.0, 1.0), (2250.0, 1.0), (2250.0, 2.0)],
    );
    assert_eq!(got[0], d(true, 4, 0, 2500, 0));
    assert_eq!(got[1], d(false, 4, 0, 3000, 250));
    assert_eq!(got[2], d(true, 4, 1, 3500, 0));
    // estimate = 1 + 4*0.5 = 3, projected 5, D = 1 <= 2: retry = ceil(1 * 500 / 4) = 125.
    assert_eq!(got[3], d(false, 4, 1, 3500, 125));
}

#[test]
fn sliding_window_negative_oldest_index_counts_nothing() {
    // c - S is negative near zero: that bucket maps to a slot holding another index, so it counts 0.
    let s = Strategy::SlidingWindow(SlidingWindowOptions {
        limit: 3.0,
        window_ms: 100.0,
        buckets: 10.0,
    });
    let got = run(s, &[(5.0, 1.0), (5.0, 3.0)]);
    assert_eq!(got[0], d(true, 3, 2, 110, 0));
    assert_eq!(got[1], d(false, 3, 2, 110, 5));
}

#[test]
fn sliding_log_retry_waits_for_the_kth_oldest() {
    let s = Strategy::SlidingWindowLog(SlidingWindowLogOptions {
        limit: 3.0,
        window_ms: 1000.0,
    });
    let got = run(
        s,
        &[(1000.0, 1.0), (1200.0, 2.0), (1300.0, 2.0), (2001.0, 1.0)],
    );
    assert_eq!(got[0], d(true, 3, 2, 2000, 0));
    assert_eq!(got[1], d(true, 3, 0, 2000, 0));
    // count 3, cost 2: k = 2, the 2nd oldest is at 1200: retry = 1200 + 1000 - 1300.
    assert_eq!(got[2], d(false, 3, 0, 2000, 900));
    // 1000 dropped (<= 1001): count 2, admits 1, oldest 1200.
    assert_eq!(got[3], d(true, 3, 0, 2200, 0));
}

#[test]
fn token_budget_crossing_debit_overshoots_once() {
    let meter = TokenBudget::new(TokenBudgetOptions {
        budget: 10.0,
        window_ms: 1000.0,
    })
    .unwrap();
    let mut state = None;
    let a = meter.debit(&mut state, 1100.0, 8.0).unwrap();
    let b = meter.debit(&mut state, 1200.0, 8.0).unwrap();
    let c = meter.debit(&mut state, 1300.0, 1.0).unwrap();
    let e = meter.debit(&mut state, 2000.0, 1.0).unwrap();
    assert_eq!(a, d(true, 10, 2, 2000, 0));
    assert_eq!(b, d(true, 10, 0, 2000, 0));
    assert_eq!(c, d(false, 10, 0, 2000, 700));
    assert_eq!(e, d(true, 10, 9, 3000, 0));
}

#[test]
fn lease_spender_discards_only_when_coupled() {
    for coupled in [true, false] {
        let mut spender = LeaseSpender::new(LeaseConfig {
            limit: 10.0,
            ttl_ms: 500.0,
            window_coupled: coupled,
        });
        assert_eq!(
            spender.spend(100.0, 1.0).unwrap(),
            SpendOutcome::NeedsRefresh
        );
        spender.grant(3.0, 1000.0);
        assert_eq!(
            spender.spend(200.0, 1.0).unwrap(),
            SpendOutcome::Allowed(d(true, 10, 2, 1000, 0))
        );
        let late = spender.spend(1000.0, 1.0).unwrap();
        if coupled {
            assert_eq!(late, SpendOutcome::NeedsRefresh);
        } else {
            assert_eq!(late, SpendOutcome::Allowed(d(true, 10, 1, 1000, 0)));
        }
    }
}

#[test]
fn invalid_input_is_an_error() {
    let s = Strategy::FixedWindow(FixedWindowOptions {
        limit: 0.0,
        window_ms: 1000.0,
    });
    assert!(s.check(&mut None, 1000.0, 1.0).is_err());
    let s = Strategy::FixedWindow(FixedWindowOptions {
        limit: 1.0,
        window_ms: 1000.0,
    });
    assert!(s.check(&mut None, 1000.0, -1.0).is_err());
    assert!(s.check(&mut None, f64::NAN, 1.0).is_err());
    let mut spender = LeaseSpender::new(LeaseConfig {
        limit: 1.0,
        ttl_ms: 1.0,
        window_coupled: true,
    });
    assert!(spender.spend(1.0, 0.0).is_err());
}
