//! Token bucket (spec 2, tokenBucket): `capacity` tokens refilled at `refillPerSec`.

use super::Decision;
use super::strategy::{CheckOutcome, RateState, TokenBucketOptions};

pub(super) fn check(
    o: &TokenBucketOptions,
    state: &mut Option<RateState>,
    now: f64,
    cost: f64,
) -> CheckOutcome {
    let capacity = o.capacity;
    let r = o.refill_per_sec / 1000.0;
    let (tokens, last) = match state {
        Some(RateState::TokenBucket { tokens, last }) => (*tokens, *last),
        _ => (capacity, now),
    };
    let elapsed = (now - last).max(0.0);
    let tokens = capacity.min(tokens + elapsed * r);
    if tokens >= cost {
        let left = tokens - cost;
        *state = Some(RateState::TokenBucket {
            tokens: left,
            last: now,
        });
        let reset_at = now + ((capacity - left) / r).ceil();
        return CheckOutcome {
            decision: Decision::from_f64(true, capacity, left.floor().max(0.0), reset_at, 0.0),
            expiry_ms: Some((capacity / r).ceil().max(1.0)),
        };
    }
    let reset_at = now + ((capacity - tokens) / r).ceil();
    let retry = ((cost - tokens) / r).ceil();
    CheckOutcome {
        decision: Decision::from_f64(false, capacity, tokens.floor().max(0.0), reset_at, retry),
        expiry_ms: None,
    }
}
