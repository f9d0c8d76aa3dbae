//! Shrinking a diverging timeline to one a person can read.
//!
//! Greedy and deterministic: try one simplification at a time (one key instead of several, the
//! ops after the divergence cut, one op fewer, a number that is smaller or rounder, a simpler
//! option) and keep every candidate that still diverges, until a whole pass keeps nothing or the
//! attempt budget is spent. A candidate that breaks the generator's wall-clock rule is not a
//! valid timeline and is never kept.

use std::future::Future;

use crate::conformance::replay::Divergence;
use crate::contract::timelines::{LeaseStep, TimelineFile};
use crate::model::Strategy;

/// The result: the smallest timeline found that still diverges, and its divergence.
#[derive(Debug)]
pub struct Shrunk {
    pub timeline: TimelineFile,
    pub divergence: Box<Divergence>,
    /// Candidates tried, and how many of them were kept.
    pub attempts: usize,
    pub kept: usize,
}

/// Ops (lease: events) over every key of a timeline.
pub fn op_count(file: &TimelineFile) -> usize {
    file.rate_limit.iter().map(|t| t.ops.len()).sum::<usize>()
        + file.token_budget.iter().map(|t| t.ops.len()).sum::<usize>()
        + file.lease.iter().map(|t| t.events.len()).sum::<usize>()
}

/// How complicated a number reads: digits after the point, then significant digits, then size.
fn complexity(x: f64) -> (usize, usize, u64) {
    let text = crate::model::num::to_argv(x.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let significant = whole.trim_start_matches('0').trim_end_matches('0').len() + fraction.len();
    (fraction.len(), significant, x.abs() as u64)
}

fn simpler(candidate: f64, current: f64) -> bool {
    candidate.is_finite() && complexity(candidate) < complexity(current)
}

/// Smaller or rounder values to try for `x`, each simpler than it, most radical first.
fn candidates(x: f64, lowest: f64) -> Vec<f64> {
    let mut out = vec![lowest, 1.0, 2.0, x.trunc(), x.round(), (x / 2.0).round()];
    // `x` with fewer significant digits: 1700000123456 -> 1700000000000, 1700000120000, ...
    let mut scale = 10f64;
    while scale < x.abs() {
        out.push((x / scale).floor() * scale);
        out.push((x / scale).round() * scale);
        scale *= 10.0;
    }
    out.retain(|c| *c >= lowest && simpler(*c, x));
    out.sort_by_key(|c| complexity(*c));
    out.dedup();
    out
}

/// Writes one number into a timeline.
type Setter = Box<dyn Fn(&mut TimelineFile, f64)>;

/// Every one-step simplification of `file`, in the order they are tried.
fn neighbours(file: &TimelineFile, diverged_suite: &str, diverged_op: usize) -> Vec<TimelineFile> {
    let mut out = Vec::new();
    // One key: only the suite that diverged.
    let keys = file.rate_limit.len() + file.token_budget.len() + file.lease.len();
    if keys > 1 {
        let mut only = file.clone();
        only.rate_limit.retain(|t| t.name == diverged_suite);
        only.token_budget.retain(|t| t.name == diverged_suite);
        only.lease.retain(|t| t.name == diverged_suite);
        if op_count(&only) > 0 {
            out.push(only);
        }
        for i in 0..file.rate_limit.len() {
            let mut f = file.clone();
            f.rate_limit.remove(i);
            out.push(f);
        }
        for i in 0..file.token_budget.len() {
            let mut f = file.clone();
            f.token_budget.remove(i);
            out.push(f);
        }
        for i in 0..file.lease.len() {
            let mut f = file.clone();
            f.lease.remove(i);
            out.push(f);
        }
    }
    // Nothing after the diverging op matters.
    let mut cut = file.clone();
    for t in &mut cut.rate_limit {
        if t.name == diverged_suite {
            t.ops.truncate(diverged_op + 1);
        }
    }
    for t in &mut cut.token_budget {
        if t.name == diverged_suite {
            t.ops.truncate(diverged_op + 1);
        }
    }
    for t in &mut cut.lease {
        if t.name == diverged_suite {
            t.events.truncate(diverged_op + 1);
        }
    }
    if op_count(&cut) < op_count(file) {
        out.push(cut);
    }
    // One op fewer.
    for (s, t) in file.rate_limit.iter().enumerate() {
        for i in 0..t.ops.len() {
            if t.ops.len() > 1 {
                let mut f = file.clone();
                f.rate_limit[s].ops.remove(i);
                out.push(f);
            }
        }
    }
    for (s, t) in file.token_budget.iter().enumerate() {
        for i in 0..t.ops.len() {
            if t.ops.len() > 1 {
                let mut f = file.clone();
                f.token_budget[s].ops.remove(i);
                out.push(f);
            }
        }
    }
    for (s, t) in file.lease.iter().enumerate() {
        for i in 0..t.events.len() {
            if t.events.len() > 1 {
                let mut f = file.clone();
                f.lease[s].events.remove(i);
                out.push(f);
            }
        }
    }
    // Simpler numbers: options, then costs, then times (starting the first op at 0, then each
    // op closer to the one before it), then the start epoch.
    let mut numbers: Vec<(f64, f64, Setter)> = Vec::new();
    for (s, t) in file.rate_limit.iter().enumerate() {
        for (field, value) in strategy_numbers(&t.strategy) {
            let lowest = if field == 0 && matches!(t.strategy, Strategy::SlidingWindow(_)) {
                1.0
            } else {
                0.5
            };
            numbers.push((
                value,
                lowest,
                Box::new(move |f, v| set_strategy_number(&mut f.rate_limit[s].strategy, field, v)),
            ));
        }
        for (i, op) in t.ops.iter().enumerate() {
            numbers.push((
                op.cost,
                0.0,
                Box::new(move |f, v| f.rate_limit[s].ops[i].cost = v),
            ));
        }
    }
    for (s, t) in file.token_budget.iter().enumerate() {
        numbers.push((
            t.options.budget,
            0.5,
            Box::new(move |f, v| f.token_budget[s].options.budget = v),
        ));
        numbers.push((
            t.options.window_ms,
            1.0,
            Box::new(move |f, v| f.token_budget[s].options.window_ms = v),
        ));
        for (i, op) in t.ops.iter().enumerate() {
            numbers.push((
                op.tokens,
                0.0,
                Box::new(move |f, v| f.token_budget[s].ops[i].tokens = v),
            ));
        }
    }
    for (s, t) in file.lease.iter().enumerate() {
        numbers.push((t.limit, 1.0, Box::new(move |f, v| f.lease[s].limit = v)));
        numbers.push((t.ttl_ms, 1.0, Box::new(move |f, v| f.lease[s].ttl_ms = v)));
        for (i, e) in t.events.iter().enumerate() {
            match *e {
                LeaseStep::Grant { capacity, .. } => numbers.push((
                    capacity,
                    0.0,
                    Box::new(move |f, v| {
                        if let LeaseStep::Grant { capacity, .. } = &mut f.lease[s].events[i] {
                            *capacity = v;
                        }
                    }),
                )),
                LeaseStep::Spend { cost, .. } => numbers.push((
                    cost,
                    0.5,
                    Box::new(move |f, v| {
                        if let LeaseStep::Spend { cost, .. } = &mut f.lease[s].events[i] {
                            *cost = v;
                        }
                    }),
                )),
            }
        }
        if t.window_coupled {
            let mut f = file.clone();
            f.lease[s].window_coupled = false;
            out.push(f);
        }
    }
    for (value, lowest, set) in &numbers {
        for c in candidates(*value, *lowest) {
            let mut f = file.clone();
            set(&mut f, c);
            out.push(f);
        }
    }
    out.extend(time_neighbours(file));
    out
}

/// The smallest start the shrinker tries: small and round, yet a plausible epoch-ms clock
/// (like the committed timelines), never the `now = 0` sentinel.
const LOWEST_START: f64 = 1_000_000.0;

/// Simpler times: move a suite's start onto its first op (the same instants, read from 0), shift
/// a suite so its first op is at 0, move one op onto (or 1 ms after) the op before it, round one
/// op's offset, or round the start epoch.
fn time_neighbours(file: &TimelineFile) -> Vec<TimelineFile> {
    let mut out = Vec::new();
    let first_at = |ats: &[f64]| ats.iter().copied().reduce(f64::min).filter(|m| *m > 0.0);
    for (s, t) in file.rate_limit.iter().enumerate() {
        let ats: Vec<f64> = t.ops.iter().map(|o| o.at).collect();
        if let Some(min) = first_at(&ats) {
            let mut f = file.clone();
            f.rate_limit[s].start += min;
            f.rate_limit[s].ops.iter_mut().for_each(|o| o.at -= min);
            out.push(f);
        }
    }
    for (s, t) in file.token_budget.iter().enumerate() {
        let ats: Vec<f64> = t.ops.iter().map(|o| o.at).collect();
        if let Some(min) = first_at(&ats) {
            let mut f = file.clone();
            f.token_budget[s].start += min;
            f.token_budget[s].ops.iter_mut().for_each(|o| o.at -= min);
            out.push(f);
        }
    }
    let shifted = |ats: &[f64]| -> Vec<Vec<f64>> {
        let mut variants = Vec::new();
        if let Some(min) = ats.iter().copied().reduce(f64::min)
            && min > 0.0
        {
            variants.push(ats.iter().map(|a| a - min).collect());
        }
        for i in 1..ats.len() {
            for target in [ats[i - 1], ats[i - 1] + 1.0] {
                if simpler(target - ats[i - 1], ats[i] - ats[i - 1])
                    || (target < ats[i] && target != ats[i])
                {
                    let mut v = ats.to_vec();
                    v[i] = target;
                    variants.push(v);
                }
            }
        }
        for (i, a) in ats.iter().enumerate() {
            for c in candidates(*a, 0.0) {
                let mut v = ats.to_vec();
                v[i] = c;
                variants.push(v);
            }
        }
        variants
    };
    for (s, t) in file.rate_limit.iter().enumerate() {
        let ats: Vec<f64> = t.ops.iter().map(|o| o.at).collect();
        for v in shifted(&ats) {
            let mut f = file.clone();
            for (op, at) in f.rate_limit[s].ops.iter_mut().zip(v) {
                op.at = at;
            }
            out.push(f);
        }
        for c in candidates(t.start, LOWEST_START) {
            let mut f = file.clone();
            f.rate_limit[s].start = c;
            out.push(f);
        }
    }
    for (s, t) in file.token_budget.iter().enumerate() {
        let ats: Vec<f64> = t.ops.iter().map(|o| o.at).collect();
        for v in shifted(&ats) {
            let mut f = file.clone();
            for (op, at) in f.token_budget[s].ops.iter_mut().zip(v) {
                op.at = at;
            }
            out.push(f);
        }
        for c in candidates(t.start, LOWEST_START) {
            let mut f = file.clone();
            f.token_budget[s].start = c;
            out.push(f);
        }
    }
    for (s, t) in file.lease.iter().enumerate() {
        let ats: Vec<f64> = t.events.iter().map(lease_time).collect();
        for v in shifted(&ats) {
            let mut f = file.clone();
            for (e, at) in f.lease[s].events.iter_mut().zip(v) {
                match e {
                    LeaseStep::Grant { expires_at, .. } => *expires_at = at,
                    LeaseStep::Spend { at: a, .. } => *a = at,
                }
            }
            out.push(f);
        }
        for c in candidates(t.start, LOWEST_START) {
            let mut f = file.clone();
            f.lease[s].start = c;
            out.push(f);
        }
    }
    out
}

fn lease_time(e: &LeaseStep) -> f64 {
    match e {
        LeaseStep::Grant { expires_at, .. } => *expires_at,
        LeaseStep::Spend { at, .. } => *at,
    }
}

fn strategy_numbers(s: &Strategy) -> Vec<(usize, f64)> {
    match s {
        Strategy::Gcra(o) => vec![(0, o.limit), (1, o.period_ms), (2, o.burst)],
        Strategy::TokenBucket(o) => vec![(0, o.capacity), (1, o.refill_per_sec)],
        Strategy::FixedWindow(o) => vec![(0, o.limit), (1, o.window_ms)],
        // Buckets first: one bucket is the simplest sliding window.
        Strategy::SlidingWindow(o) => vec![(0, o.buckets), (1, o.limit), (2, o.window_ms)],
        Strategy::SlidingWindowLog(o) => vec![(0, o.limit), (1, o.window_ms)],
    }
}

fn set_strategy_number(s: &mut Strategy, field: usize, v: f64) {
    match (s, field) {
        (Strategy::Gcra(o), 0) => o.limit = v,
        (Strategy::Gcra(o), 1) => o.period_ms = v,
        (Strategy::Gcra(o), _) => o.burst = v,
        (Strategy::TokenBucket(o), 0) => o.capacity = v,
        (Strategy::TokenBucket(o), _) => o.refill_per_sec = v,
        (Strategy::FixedWindow(o), 0) => o.limit = v,
        (Strategy::FixedWindow(o), _) => o.window_ms = v,
        (Strategy::SlidingWindow(o), 0) => o.buckets = v,
        (Strategy::SlidingWindow(o), 1) => o.limit = v,
        (Strategy::SlidingWindow(o), _) => o.window_ms = v,
        (Strategy::SlidingWindowLog(o), 0) => o.limit = v,
        (Strategy::SlidingWindowLog(o), _) => o.window_ms = v,
    }
}

/// The suite name inside a trial name (`rateLimit::fuzz-3-k0` → `fuzz-3-k0`).
fn suite_of(d: &Divergence) -> &str {
    d.trial
        .split_once("::")
        .map_or(d.trial.as_str(), |(_, s)| s)
}

/// Shrinks `timeline` (which diverged as `divergence`) with at most `budget` candidates.
/// `diverges` judges one candidate: `Some` when it still diverges.
pub async fn shrink<F, Fut>(
    timeline: TimelineFile,
    divergence: Box<Divergence>,
    budget: usize,
    mut diverges: F,
) -> Shrunk
where
    F: FnMut(TimelineFile) -> Fut,
    Fut: Future<Output = Option<Box<Divergence>>>,
{
    let mut best = Shrunk {
        timeline,
        divergence,
        attempts: 0,
        kept: 0,
    };
    'passes: loop {
        let tried = neighbours(
            &best.timeline,
            suite_of(&best.divergence),
            best.divergence.op,
        );
        for candidate in tried {
            if best.attempts >= budget {
                break 'passes;
            }
            best.attempts += 1;
            if let Some(d) = diverges(candidate.clone()).await {
                best.timeline = candidate;
                best.divergence = d;
                best.kept += 1;
                // The neighbourhood of the new best is different: start a new pass from it.
                continue 'passes;
            }
        }
        // A whole pass kept nothing: a local minimum.
        break;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounder_and_smaller_numbers_are_simpler() {
        assert!(simpler(1.0, 2.5));
        assert!(simpler(1_700_000_000_000.0, 1_700_000_123_456.0));
        assert!(simpler(1000.0, 1000.5));
        assert!(!simpler(1000.5, 1000.0));
        assert!(!simpler(3.0, 3.0));
        let c = candidates(1_700_000_123_456.0, 1.0);
        assert!(c.contains(&1_700_000_000_000.0), "{c:?}");
        assert!(c.iter().all(|x| simpler(*x, 1_700_000_123_456.0)));
    }
}
