//! Differential checks of an engine against the reference model, shared by the adapter tests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tk_conform::backend::Backend;
use tk_conform::backend::model::ModelBackend;
use tk_conform::model::{
    FixedWindowOptions, GcraOptions, SlidingWindowLogOptions, SlidingWindowOptions, Strategy,
    TokenBucketOptions,
};

/// A real epoch: vectors we make start at a non-zero `now` and must replay without an offset.
pub const EPOCH: f64 = 1_700_000_000_000.0;

/// Options keep every key's TTL far above the wall time a replay takes: Redis expires keys on
/// its own clock, so a 1 ms GCRA period would lose state between two ops at the same `now`.
pub fn strategies(rng: &mut StdRng, rounds: usize) -> Vec<Strategy> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        let limit = rng.random_range(1..=5) as f64;
        out.push(Strategy::Gcra(GcraOptions {
            limit,
            period_ms: [1000.0, 700.0, 60_000.0, 3000.0][rng.random_range(0..4)],
            burst: rng.random_range(1..=6) as f64,
        }));
        out.push(Strategy::TokenBucket(TokenBucketOptions {
            capacity: rng.random_range(1..=6) as f64,
            refill_per_sec: [1.0, 3.0, 7.0, 0.3][rng.random_range(0..4)],
        }));
        out.push(Strategy::FixedWindow(FixedWindowOptions {
            limit,
            window_ms: [1000.0, 700.0][rng.random_range(0..2)],
        }));
        out.push(Strategy::SlidingWindow(SlidingWindowOptions {
            limit,
            window_ms: [1000.0, 700.0][rng.random_range(0..2)],
            buckets: rng.random_range(1..=6) as f64,
        }));
        out.push(Strategy::SlidingWindowLog(SlidingWindowLogOptions {
            limit,
            window_ms: [1000.0, 700.0][rng.random_range(0..2)],
        }));
    }
    out
}

/// Random timelines (fractional costs and instants included) through `engine` and the model;
/// one line per timeline where they first disagree, naming the op, both decisions and the timeline.
pub async fn random_rate_timelines(
    engine: &dyn Backend,
    who: &str,
    seed: u64,
    rounds: usize,
) -> Vec<String> {
    let model = ModelBackend;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut disagreements = Vec::new();
    for (n, strategy) in strategies(&mut rng, rounds).into_iter().enumerate() {
        let suite = format!("random-{n}-{}", strategy.kind());
        let mut theirs = engine.open_suite(&suite).await.unwrap();
        let mut ours = model.open_suite(&suite).await.unwrap();
        let mut now = EPOCH + rng.random_range(0..1000) as f64;
        let mut timeline = Vec::new();
        for op in 0..25 {
            now += [0.0, 1.0, 99.0, 250.0, 333.0, 700.0, 0.5, 3.25, 0.05, 0.125]
                [rng.random_range(0..10)];
            // Fractional costs and instants exercise how counts and names are stored as text.
            let cost = if matches!(strategy, Strategy::SlidingWindowLog(_)) {
                rng.random_range(0..=3) as f64
            } else {
                [0.0, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 0.3][rng.random_range(0..9)]
            };
            timeline.push(format!("(now={now}, cost={cost})"));
            let expected = ours.check(&strategy, "k", now, cost).await.unwrap();
            let actual = theirs.check(&strategy, "k", now, cost).await.unwrap();
            if expected != actual {
                disagreements.push(format!(
                    "{suite} {strategy:?} op {op}: model {expected}, {who} {actual}; timeline {}",
                    timeline.join(" ")
                ));
                break;
            }
        }
    }
    disagreements
}

/// The minimal timelines of the two places where Lua's 14-digit number text shows (a
/// slidingWindow count and a slidingWindowLog member name); disagreements as in
/// [`random_rate_timelines`].
pub async fn lua_text_timelines(engine: &dyn Backend) -> Vec<String> {
    let mut disagreements = Vec::new();
    let window = Strategy::SlidingWindow(SlidingWindowOptions {
        limit: 3.0,
        window_ms: 1000.0,
        buckets: 1.0,
    });
    let log = Strategy::SlidingWindowLog(SlidingWindowLogOptions {
        limit: 5.0,
        window_ms: 1000.0,
    });
    let timelines = [
        (
            window,
            vec![(EPOCH, 0.1), (EPOCH, 2.7), (EPOCH, 0.2), (EPOCH, 0.1)],
        ),
        (
            log,
            vec![
                (1_700_000_000_618.21, 1.0),
                (1_700_000_001_618.2, 1.0),
                (1_700_000_001_618.25, 1.0),
                (1_700_000_001_618.25, 3.0),
                (1_700_000_001_618.25, 1.0),
            ],
        ),
    ];
    for (n, (strategy, ops)) in timelines.into_iter().enumerate() {
        let mut theirs = engine.open_suite(&format!("lua-text-{n}")).await.unwrap();
        let mut ours = ModelBackend.open_suite("lua-text").await.unwrap();
        for (op, (now, cost)) in ops.into_iter().enumerate() {
            let expected = ours.check(&strategy, "k", now, cost).await.unwrap();
            let actual = theirs.check(&strategy, "k", now, cost).await.unwrap();
            if expected != actual {
                disagreements.push(format!(
                    "{strategy:?} op {op} (now={now}, cost={cost}): model {expected}, engine {actual}"
                ));
            }
        }
    }
    disagreements
}
