//! `skew-bound`: admits over the run stay within what the strategy allows when the callers'
//! clocks disagree by up to `δ` ms (`docs/battle-faults.md` derives each bound).
//!
//! With `span` = last completion − first invoke of the selected calls (real time):
//! - gcra (`T = period / limit`): admitted units ≤ `burst + floor((span + δ) / T)`;
//! - slidingWindowLog (window `W`): admitted units ≤ `limit × (1 + floor((span + δ) / W))`.
//!
//! δ = 0 is the exactness a door on the store's clock promises. fixedWindow, slidingWindow and
//! tokenBucket have no bound in δ alone (alternating clocks reset or refill them on every
//! switch), so the check says `unknown` for them instead of guessing.

use serde_json::json;

use super::{Ruling, Verdict, at};
use crate::battle::history::{Op, WorkerHistory};
use crate::model::Strategy;

pub fn judge(histories: &[&WorkerHistory], strategy: Option<&Strategy>, skew_ms: u64) -> Ruling {
    let (mut admitted, mut first, mut last, mut lost) = (0u64, i64::MAX, i64::MIN, 0u64);
    let mut last_admit = String::new();
    for h in histories {
        for c in &h.calls {
            let Op::Check { cost } = c.op else { continue };
            first = first.min(c.invoke_us);
            last = last.max(c.end_us());
            if c.is_indeterminate() {
                lost += cost;
            }
            if c.decision().is_some_and(|d| d.allowed) {
                admitted += cost;
                last_admit = at(h, c.seq);
            }
        }
    }
    if first == i64::MAX {
        return Ruling::new(Verdict::Unknown, "no checks were made".into(), json!({}));
    }
    let span_ms = (last - first) as f64 / 1000.0;
    // Clock readings are whole ms (floored): one more ms of reach covers the rounding.
    let reach = span_ms + skew_ms as f64 + 1.0;
    let (bound, formula) = match strategy {
        Some(Strategy::Gcra(o)) => {
            let t = o.period_ms / o.limit;
            (
                o.burst + (reach / t).floor(),
                format!(
                    "burst {} + floor((span {span_ms:.1} + δ {skew_ms} + 1) / T {t:.3})",
                    o.burst
                ),
            )
        }
        Some(Strategy::SlidingWindowLog(o)) => (
            o.limit * (1.0 + (reach / o.window_ms).floor()),
            format!(
                "limit {} × (1 + floor((span {span_ms:.1} + δ {skew_ms} + 1) / window {}))",
                o.limit, o.window_ms
            ),
        ),
        other => {
            return Ruling::new(
                Verdict::Unknown,
                format!(
                    "no skew bound is derived for {}: alternating clocks reset or refill it on every switch",
                    other
                        .map(|s| s.kind().name())
                        .unwrap_or("a non-rate policy")
                ),
                json!({}),
            );
        }
    };
    let bound = bound as u64;
    let numbers = json!({
        "admitted": admitted, "bound": bound, "formula": formula, "skewMs": skew_ms,
        "spanMs": span_ms, "indeterminate": lost,
    });
    if admitted > bound {
        Ruling::new(
            Verdict::Fail,
            format!(
                "{admitted} units admitted, above the bound {bound} = {formula} (by {}; last admit {last_admit})",
                admitted - bound
            ),
            numbers,
        )
    } else {
        Ruling::new(
            Verdict::Pass,
            format!("{admitted} units admitted, within the bound {bound} = {formula}"),
            numbers,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_ok, decision, history};
    use super::*;
    use crate::model::{FixedWindowOptions, GcraOptions};

    fn gcra() -> Strategy {
        Strategy::Gcra(GcraOptions {
            limit: 10.0,
            period_ms: 1000.0,
            burst: 10.0,
        })
    }

    /// `n` admits, one per ms from t = 0.
    fn admits(n: u64) -> WorkerHistory {
        history(
            "g",
            0,
            (1..=n)
                .map(|i| check_ok(i, i as i64, decision(true, 10, 0, 0)))
                .collect(),
        )
    }

    #[test]
    fn gcra_bound_grows_with_the_skew() {
        // span = 1..=12 ms plus the last call's 1 ms: floor((12 + 0 + 1) / 100) = 0.
        let h = admits(12);
        let Ruling {
            verdict: v,
            summary,
            numbers,
        } = judge(&[&h], Some(&gcra()), 0);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(numbers["bound"], 10);
        assert!(
            summary.contains("12 units admitted, above the bound 10") && summary.contains("by 2"),
            "{summary}"
        );
        let Ruling {
            verdict: v,
            summary,
            numbers,
        } = judge(&[&h], Some(&gcra()), 250);
        assert_eq!(v, Verdict::Pass, "{summary}");
        assert_eq!(numbers["bound"], 12);
    }

    #[test]
    fn strategies_without_a_derived_bound_are_unknown_not_passed() {
        let fw = Strategy::FixedWindow(FixedWindowOptions {
            limit: 10.0,
            window_ms: 1000.0,
        });
        let Ruling {
            verdict: v,
            summary,
            numbers: _,
        } = judge(&[&admits(3)], Some(&fw), 5000);
        assert_eq!(v, Verdict::Unknown);
        assert!(summary.contains("fixedWindow"), "{summary}");
    }
}
