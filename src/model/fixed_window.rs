//! Fixed window (spec 2, fixedWindow): a count per aligned window of `windowMs`.

use super::Decision;
use super::strategy::{CheckOutcome, FixedWindowOptions, RateState};

pub(super) fn check(
    o: &FixedWindowOptions,
    state: &mut Option<RateState>,
    now: f64,
    cost: f64,
) -> CheckOutcome {
    let start = (now / o.window_ms).floor() * o.window_ms;
    let reset_at = start + o.window_ms;
    let count = match state {
        Some(RateState::FixedWindow { start: s, count }) if *s == start => *count,
        _ => 0.0,
    };
    if count + cost <= o.limit {
        *state = Some(RateState::FixedWindow {
            start,
            count: count + cost,
        });
        return CheckOutcome {
            decision: Decision::from_f64(true, o.limit, o.limit - (count + cost), reset_at, 0.0),
            expiry_ms: Some((reset_at - now).ceil().max(1.0)),
        };
    }
    let remaining = (o.limit - count).max(0.0);
    CheckOutcome {
        decision: Decision::from_f64(false, o.limit, remaining, reset_at, (reset_at - now).ceil()),
        expiry_ms: None,
    }
}
