//! GCRA (spec 2, gcra): a theoretical arrival time `tat` advanced by `T * cost` per admit.

use super::Decision;
use super::strategy::{CheckOutcome, GcraOptions, RateState};

pub(super) fn check(
    o: &GcraOptions,
    state: &mut Option<RateState>,
    now: f64,
    cost: f64,
) -> CheckOutcome {
    let t = o.period_ms / o.limit;
    let tau = t * o.burst;
    let inc = t * cost;
    let stored = match state {
        Some(RateState::Gcra { tat }) => *tat,
        _ => now,
    };
    let tat = if stored < now { now } else { stored };
    let new_tat = tat + inc;
    let allow_at = new_tat - tau;
    if now < allow_at {
        let remaining = ((tau - (tat - now)) / t).floor().max(0.0);
        let decision = Decision::from_f64(
            false,
            o.burst,
            remaining,
            tat.ceil(),
            (allow_at - now).ceil(),
        );
        return CheckOutcome {
            decision,
            expiry_ms: None,
        };
    }
    let remaining = ((tau - (new_tat - now)) / t).floor().max(0.0);
    *state = Some(RateState::Gcra { tat: new_tat });
    CheckOutcome {
        decision: Decision::from_f64(true, o.burst, remaining, new_tat.ceil(), 0.0),
        expiry_ms: Some((new_tat - now).ceil().max(1.0)),
    }
}
