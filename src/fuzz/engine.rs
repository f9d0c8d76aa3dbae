//! The search: timelines from the space, replayed by parallel workers, each over its own
//! connection, as fast as the backend answers; then the first divergence, shrunk.
//!
//! Determinism: timeline `i` depends only on the seed and `i`, workers take indices in order,
//! and when divergences are found the one with the lowest index wins. Every index below it was
//! taken earlier and runs to its end, so the same seed gives the same case whatever the timing,
//! as long as the budget (`--timelines`) rather than the clock ends the search.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::oracle::{Oracle, Verdict};
use super::shrink::{self, Shrunk};
use super::space::{self, Space};
use crate::backend::Backend;
use crate::conformance::replay::Divergence;
use crate::contract::generate::GenerateError;
use crate::contract::timelines::TimelineFile;
use crate::contract::vectors::VectorsFile;

#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub seed: u64,
    pub space: Space,
    /// Parallel workers; worker `i` uses backend `i % backends.len()`.
    pub workers: usize,
    /// Stop after this long ...
    pub time: Duration,
    /// ... or after this many timelines, whichever comes first.
    pub max_timelines: Option<u64>,
    /// Candidates the shrinker may try.
    pub shrink_attempts: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// A diverging timeline: as generated, and shrunk.
#[derive(Debug)]
pub struct Found {
    pub index: u64,
    pub original: TimelineFile,
    pub shrunk: Shrunk,
}

#[derive(Debug)]
pub struct SearchOutcome {
    /// Timelines judged (after the wall-clock rule), and their ops.
    pub timelines: u64,
    pub ops: u64,
    /// Timelines the wall-clock rule cut short, and those it left nothing of.
    pub cut: u64,
    pub dropped: u64,
    /// Timelines the backend declined (e.g. a primitive it does not serve).
    pub unsupported: u64,
    pub elapsed: Duration,
    pub found: Option<Found>,
}

impl SearchOutcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The vectors of `timeline`, cutting each key's ops at the first op the wall-clock rule
/// rejects (the ops before it are still portable). `None` when nothing is left, or the model
/// refused an input (a bug in the space, reported by the caller as a dropped timeline).
pub fn prepare_cut(
    oracle: Oracle,
    mut timeline: TimelineFile,
) -> Option<(TimelineFile, VectorsFile, bool)> {
    let mut cut = false;
    // Each round removes at least one op, so this ends.
    loop {
        match oracle.prepare(&timeline) {
            Ok(vectors) => return Some((timeline, vectors, cut)),
            Err(GenerateError::WallClock { suite, op, .. }) => {
                cut = true;
                for t in &mut timeline.rate_limit {
                    if t.name == suite {
                        t.ops.truncate(op);
                    }
                }
                timeline.rate_limit.retain(|t| !t.ops.is_empty());
                if shrink::op_count(&timeline) == 0 {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

struct Shared {
    next: AtomicU64,
    /// The lowest index that diverged so far (u64::MAX: none); no index above it is started.
    stop_at: AtomicU64,
    out_of_time: AtomicBool,
    timelines: AtomicU64,
    ops: AtomicU64,
    cut: AtomicU64,
    dropped: AtomicU64,
    unsupported: AtomicU64,
    first: Mutex<Option<(u64, TimelineFile, Box<Divergence>)>>,
}

/// Searches for a divergence, then shrinks the first one against `backends[0]`.
pub async fn search(
    config: &SearchConfig,
    oracle: Oracle,
    backends: &[Arc<dyn Backend>],
) -> SearchOutcome {
    assert!(!backends.is_empty() && config.workers > 0);
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop_at: AtomicU64::new(u64::MAX),
        out_of_time: AtomicBool::new(false),
        timelines: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        cut: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        unsupported: AtomicU64::new(0),
        first: Mutex::new(None),
    });
    let started = Instant::now();
    let limit = config.max_timelines.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for w in 0..config.workers {
        let backend = Arc::clone(&backends[w % backends.len()]);
        let shared = Arc::clone(&shared);
        let space = config.space.clone();
        let seed = config.seed;
        tasks.push(tokio::spawn(async move {
            loop {
                if shared.out_of_time.load(Ordering::Relaxed) {
                    return;
                }
                let index = shared.next.fetch_add(1, Ordering::Relaxed);
                if index >= limit || index > shared.stop_at.load(Ordering::Relaxed) {
                    return;
                }
                let generated = space::timeline(&space, seed, index);
                let Some((timeline, vectors, cut)) = prepare_cut(oracle, generated) else {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if cut {
                    shared.cut.fetch_add(1, Ordering::Relaxed);
                }
                match oracle.judge(backend.as_ref(), &vectors).await {
                    Verdict::Agreed { ops } => {
                        shared.ops.fetch_add(ops, Ordering::Relaxed);
                        shared.timelines.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Unsupported(_) => {
                        shared.unsupported.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Diverged(d) => {
                        shared.ops.fetch_add(d.op as u64 + 1, Ordering::Relaxed);
                        shared.timelines.fetch_add(1, Ordering::Relaxed);
                        shared.stop_at.fetch_min(index, Ordering::Relaxed);
                        let mut first = shared.first.lock().expect("not poisoned");
                        if first.as_ref().is_none_or(|(i, _, _)| index < *i) {
                            *first = Some((index, timeline, d));
                        }
                    }
                }
            }
        }));
    }
    let ticker = {
        let shared = Arc::clone(&shared);
        let (time, progress) = (config.time, config.progress);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let elapsed = started.elapsed();
                if elapsed >= time {
                    shared.out_of_time.store(true, Ordering::Relaxed);
                }
                if progress {
                    let ops = shared.ops.load(Ordering::Relaxed);
                    eprintln!(
                        "fuzz: {} timelines, {ops} ops, {:.0} ops/s",
                        shared.timelines.load(Ordering::Relaxed),
                        ops as f64 / elapsed.as_secs_f64()
                    );
                }
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    ticker.abort();
    let elapsed = started.elapsed();
    let first = shared.first.lock().expect("not poisoned").take();
    let found = match first {
        None => None,
        Some((index, timeline, divergence)) => {
            let original = space::timeline(&config.space, config.seed, index);
            let backend = Arc::clone(&backends[0]);
            let shrunk =
                shrink::shrink(timeline, divergence, config.shrink_attempts, |candidate| {
                    let backend = Arc::clone(&backend);
                    async move {
                        let vectors = oracle.prepare(&candidate).ok()?;
                        match oracle.judge(backend.as_ref(), &vectors).await {
                            Verdict::Diverged(d) => Some(d),
                            _ => None,
                        }
                    }
                })
                .await;
            Some(Found {
                index,
                original,
                shrunk,
            })
        }
    };
    SearchOutcome {
        timelines: shared.timelines.load(Ordering::Relaxed),
        ops: shared.ops.load(Ordering::Relaxed),
        cut: shared.cut.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Relaxed),
        unsupported: shared.unsupported.load(Ordering::Relaxed),
        elapsed,
        found,
    }
}
