//! The property oracle: random explicit-clock timelines for a protocol-2 adapter's declared
//! limiter kinds, each decision judged by the family's invariants (`crate::property`'s shapes
//! and checks) instead of exact model values; the first violation is shrunk like
//! `fuzz::shrink` does (drop ops, then simplify what is left, keeping every step that still
//! violates the same property).

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::exec::v2::{Clock, Exposed, Family, LimiterKind};
use crate::property::PropertyTarget;
use crate::property::driver::{Call, Driver};
use crate::property::explicit::{check_stream, start_time};
use crate::property::family::{Point, Shape, sweep};
use crate::property::{Property, Verdict};

/// One call of a timeline: `at` is ms after the timeline's start (chosen near the wall clock
/// when it is judged, as engines may derive TTLs from `now`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    pub key: String,
    pub cost: f64,
    pub at: f64,
}

/// A timeline for one limiter kind at one parameter point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    pub kind: String,
    pub params: std::collections::BTreeMap<String, f64>,
    pub ops: Vec<Op>,
}

/// The first op whose decision broke an invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub op: usize,
    /// `cap`, `honesty`, `keys`, `cost`, or `protocol` (the adapter failed the call).
    pub property: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} violated at op {}: {}",
            self.property, self.op, self.message
        )
    }
}

/// The kinds the property oracle can fuzz: the explicit clock, and a family with windows or
/// refill (concurrency slots need releases, which its own suite covers).
pub fn fuzzable(kind: &LimiterKind) -> bool {
    kind.clock == Clock::Explicit && kind.family != Family::Concurrency
}

/// Timeline `index` of `seed`: depends on nothing else, so the same seed gives the same cases.
pub fn generate(
    kinds: &[LimiterKind],
    seed: u64,
    index: u64,
    max_ops: usize,
    max_keys: usize,
) -> Case {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let kind = kinds.choose(&mut rng).expect("at least one kind");
    let points = sweep(kind);
    let point = points.choose(&mut rng).expect("a sweep has a point");
    let shape = Shape::of(kind, point);
    let keys = rng.random_range(1..=max_keys);
    let n = rng.random_range(1..=max_ops * keys);
    let interval = (1.0 / shape.rate.max(1e-9)).round().max(1.0);
    let window = shape.window.round().max(1.0);
    let mut at = 0.0;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        at += match rng.random_range(0..10) {
            0..=3 => 0.0,
            4 => 1.0,
            5 | 6 => (interval * rng.random_range(0.25..1.5)).round(),
            7 => (window / 2.0).round(),
            8 => window + 1.0,
            _ => f64::from(rng.random_range(0..window as u32 + 1)),
        };
        let cost = if kind.takes_cost {
            match rng.random_range(0..12) {
                0..=7 => 1.0,
                8..=10 => f64::from(rng.random_range(2..=shape.limit().max(2.0) as u32)),
                _ => shape.limit() + 1.0,
            }
        } else {
            1.0
        };
        ops.push(Op {
            key: format!("k{}", rng.random_range(0..keys)),
            cost,
            at,
        });
    }
    Case {
        kind: kind.name.clone(),
        params: point.params.clone(),
        ops,
    }
}

/// Why a timeline could not be judged at all (the adapter would not open or configure).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Infra(pub String);

/// What one key has seen so far.
#[derive(Default)]
struct KeyState {
    calls: Vec<Call>,
    /// A denial's promise not yet superseded by an admit: (the instant, its cost).
    retry: Option<(f64, f64)>,
}

/// Replays `case` on a fresh namespace of the adapter: `Ok(ops)` if every decision kept the
/// family's promises, else the first violation.
pub async fn judge(
    target: &PropertyTarget,
    kind: &LimiterKind,
    case: &Case,
) -> Result<Result<usize, Violation>, Infra> {
    let point = Point {
        params: case.params.clone(),
    };
    let shape = Shape::of(kind, &point);
    let mut driver = match Driver::open(target, kind, &point, "fuzz::property").await {
        Ok(d) => d,
        Err(Verdict::Fail(m) | Verdict::Unknown(m) | Verdict::NotApplicable(m)) => {
            return Err(Infra(m));
        }
        Err(Verdict::Pass(m)) => return Err(Infra(m)),
    };
    let t0 = start_time(&shape);
    let mut keys: std::collections::BTreeMap<&str, KeyState> = Default::default();
    for (i, op) in case.ops.iter().enumerate() {
        let violation = |message: String| {
            let (property, message) = name_of(&message);
            Violation {
                op: i,
                property,
                message: format!(
                    "{message} [op {i}: key {}, cost {}, at t0+{} ms]",
                    op.key, op.cost, op.at
                ),
            }
        };
        // The checks every decision gets (remaining and retryAfterMs bounds) run inside.
        let call = match driver.decide(&op.key, op.cost, t0 + op.at).await {
            Ok(c) => c,
            Err(Verdict::Fail(m)) => return Ok(Err(violation(m))),
            Err(other) => return Err(Infra(format!("{other:?}"))),
        };
        let state = keys.entry(op.key.as_str()).or_default();
        if let Some(m) = judge_call(kind, &shape, state, &call) {
            return Ok(Err(violation(m)));
        }
        state.calls.push(call);
        if let Err(Verdict::Fail(m)) = check_stream(&shape, &state.calls, false) {
            return Ok(Err(violation(m)));
        }
    }
    Ok(Ok(case.ops.len()))
}

/// `honesty: remaining 6 ...` → (`honesty`, the whole message).
fn name_of(message: &str) -> (String, String) {
    let prefix = message.split(':').next().unwrap_or_default();
    let known = Property::ALL.iter().any(|p| p.name() == prefix);
    let name = if known { prefix } else { "protocol" };
    (name.to_owned(), message.to_owned())
}

/// The promises a single call answers for, beyond the cap over its key's stream.
fn judge_call(kind: &LimiterKind, s: &Shape, state: &mut KeyState, call: &Call) -> Option<String> {
    let d = &call.decision;
    if d.allowed && call.cost > s.limit() {
        return Some(format!(
            "cost: a call of cost {} above the limit {} was admitted ({})",
            call.cost,
            s.limit(),
            call.describe()
        ));
    }
    // Key separation: another key's traffic leaves a fresh key its whole burst.
    if state.calls.is_empty() && !d.allowed && call.cost <= s.limit() {
        return Some(format!(
            "keys: the first call on key {} (cost {} within the limit {}) was denied: another key's traffic reached it ({})",
            call.key,
            call.cost,
            s.limit(),
            call.describe()
        ));
    }
    // Retry honesty: with no admit since, the denial's instant admits a call no costlier.
    if let Some((when, cost)) = state.retry
        && call.now >= when
        && call.cost <= cost
        && !d.allowed
    {
        return Some(format!(
            "honesty: a denied call of cost {cost} said retryAfterMs ⇒ now {when}; with no admit since, a call of cost {} at now {} was denied ({})",
            call.cost,
            call.now,
            call.describe()
        ));
    }
    if d.allowed {
        state.retry = None;
    } else if let Some(r) = d.retry_after_ms
        && s.sharp_retry()
        && kind.exposes(Exposed::RetryAfterMs)
        && !kind.counts_denials
        && call.cost <= s.limit()
        && state.retry.is_none()
    {
        state.retry = Some((call.now + r as f64, call.cost));
    }
    None
}

/// A smaller case that still violates `property`, trying at most `attempts` candidates:
/// drop chunks of ops (halving the chunk), then lower costs and close time gaps.
pub async fn shrink(
    target: &PropertyTarget,
    kind: &LimiterKind,
    mut case: Case,
    mut found: Violation,
    attempts: usize,
) -> (Case, Violation, usize) {
    let mut tried = 0usize;
    let property = found.property.clone();
    let still = async |candidate: &Case, tried: &mut usize| -> Option<Violation> {
        *tried += 1;
        match judge(target, kind, candidate).await {
            Ok(Err(v)) if v.property == property => Some(v),
            _ => None,
        }
    };
    // Everything after the violating op is noise.
    case.ops.truncate(found.op + 1);
    let mut chunk = case.ops.len().div_ceil(2).max(1);
    while chunk >= 1 && tried < attempts {
        let mut start = 0;
        while start < case.ops.len() && tried < attempts {
            let mut candidate = case.clone();
            let end = (start + chunk).min(candidate.ops.len());
            candidate.ops.drain(start..end);
            if candidate.ops.is_empty() {
                start += chunk;
                continue;
            }
            match still(&candidate, &mut tried).await {
                Some(v) => {
                    candidate.ops.truncate(v.op + 1);
                    case = candidate;
                    found = v;
                }
                None => start += chunk,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    // Simplify what is left, pass after pass, until a pass changes nothing.
    let mut changed = true;
    while changed && tried < attempts {
        changed = false;
        for i in 0..case.ops.len() {
            let cost = case.ops[i].cost;
            for smaller in [1.0, (cost / 2.0).ceil()] {
                if smaller >= case.ops[i].cost || tried >= attempts {
                    continue;
                }
                let mut candidate = case.clone();
                candidate.ops[i].cost = smaller;
                if let Some(v) = still(&candidate, &mut tried).await {
                    case = candidate;
                    found = v;
                    changed = true;
                }
            }
            // Halve the gap to the previous op, shifting every later op with it.
            let gap = case.ops[i].at - if i == 0 { 0.0 } else { case.ops[i - 1].at };
            if gap > 0.0 && tried < attempts {
                let cut = (gap / 2.0).ceil();
                let mut candidate = case.clone();
                for op in &mut candidate.ops[i..] {
                    op.at -= cut;
                }
                if let Some(v) = still(&candidate, &mut tried).await {
                    case = candidate;
                    found = v;
                    changed = true;
                }
            }
        }
    }
    (case, found, tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind() -> LimiterKind {
        serde_json::from_value(serde_json::json!({
            "name": "fw", "family": "fixedWindow", "clock": "explicit", "windowStart": "epoch",
            "parameters": {"limit": {"min": 1, "max": 1000, "integer": true},
                           "windowMs": {"min": 10, "max": 100000, "integer": true}},
            "exposes": ["remaining"], "takesCost": true, "countsDenials": false
        }))
        .unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_timelines() {
        let kinds = [kind()];
        let a = generate(&kinds, 7, 3, 16, 3);
        assert_eq!(a, generate(&kinds, 7, 3, 16, 3));
        assert_ne!(a, generate(&kinds, 7, 4, 16, 3));
        assert!(a.ops.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(a.ops.len() <= 48);
    }
}
