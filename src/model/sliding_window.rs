//! Sliding window, bucketed estimate (spec 2, slidingWindow).
//!
//! The window is cut into `S` buckets of width `w`; the oldest bucket counts in proportion to how
//! much of it still lies inside the window. Storage is a ring of `S + 1` slots, bucket `i` in slot
//! `i mod (S + 1)` with the floored modulo, and a slot only counts for the index it records: the
//! model keeps the slots literally so that an overwritten bucket is lost exactly as in Redis.

use std::collections::BTreeMap;

use super::strategy::{CheckOutcome, RateState, SlidingWindowOptions};
use super::{Decision, num};

pub(super) fn check(
    o: &SlidingWindowOptions,
    state: &mut Option<RateState>,
    now: f64,
    cost: f64,
) -> CheckOutcome {
    let s = o.buckets;
    let ring = s as i64 + 1;
    let w = o.window_ms / s;
    let c = (now / w).floor();
    let elapsed = (now - c * w).max(0.0);
    let weight = ((w - elapsed) / w).clamp(0.0, 1.0);

    let empty = BTreeMap::new();
    let slots = match state {
        Some(RateState::SlidingWindow { slots }) => &*slots,
        _ => &empty,
    };
    let count_of = |index: f64| -> f64 {
        let index = index as i64;
        match slots.get(&index.rem_euclid(ring)) {
            Some((stored, count)) if *stored == index => *count,
            _ => 0.0,
        }
    };
    let mut full = 0.0;
    let mut i = c - s + 1.0;
    while i <= c {
        full += count_of(i);
        i += 1.0;
    }
    let oldest = count_of(c - s);
    let estimate = full + oldest * weight;
    let projected = estimate + cost;
    let reset_at = ((c + 1.0) * w + o.window_ms).ceil();

    if projected <= o.limit {
        let current = count_of(c);
        let mut slots = slots.clone();
        let index = c as i64;
        // The script stores the count as the text `c .. ':' .. count`, and Lua writes a number
        // in text with 14 significant digits: a fractional count reads back rounded.
        let stored = num::through_lua_text(current + cost);
        slots.insert(index.rem_euclid(ring), (index, stored));
        *state = Some(RateState::SlidingWindow { slots });
        return CheckOutcome {
            decision: Decision::from_f64(
                true,
                o.limit,
                (o.limit - projected).floor().max(0.0),
                reset_at,
                0.0,
            ),
            expiry_ms: Some((o.window_ms + w).ceil()),
        };
    }
    let d = projected - o.limit;
    let retry = if oldest > 0.0 && d <= oldest * weight {
        (d * w / oldest).ceil()
    } else {
        ((c + 1.0) * w - now).ceil()
    };
    let remaining = (o.limit - estimate).floor().max(0.0);
    CheckOutcome {
        decision: Decision::from_f64(false, o.limit, remaining, reset_at, retry.max(1.0)),
        expiry_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_at(state: &mut Option<RateState>, cost: f64) -> Decision {
        let options = SlidingWindowOptions {
            limit: 3.0,
            window_ms: 1000.0,
            buckets: 1.0,
        };
        check(&options, state, 1_700_000_000_000.0, cost).decision
    }

    /// Found by replaying throttlekit-py's scripts: the count is stored as Lua text, so
    /// `0.1 + 2.7` is kept as `2.8`, and a further `0.2` fits the limit of 3 exactly.
    #[test]
    fn a_fractional_count_is_stored_as_lua_text() {
        let mut state = None;
        assert!(check_at(&mut state, 0.1).allowed);
        assert!(check_at(&mut state, 2.7).allowed);
        let third = check_at(&mut state, 0.2);
        assert!(
            third.allowed,
            "0.1 + 2.7 stored as 2.8, plus 0.2 is 3: {third}"
        );
        assert_eq!(third.remaining, 0);
    }
}
