//! Judging mutants: the contract's vectors replayed against each mutant in one Redis, mutants
//! in parallel over connections; then a fuzz sample for every survivor, to tell a real gap in
//! the vectors (the fuzzer finds a witness, shrunk) from a mutant no valid input can tell apart.
//!
//! A mutant that loops is stopped: the Redis is told to answer BUSY after a short script time,
//! a watchdog on its own connection sees the BUSY and sends SCRIPT KILL, and the mutant counts
//! as killed. Other mutants whose calls met the BUSY are replayed again from the start.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::operators::Mutant;
use crate::backend::redis::RedisBackend;
use crate::backend::{Backend, BackendError};
use crate::conformance::replay::{Detail, ReplayFailure, replay};
use crate::contract::vectors::Suite;
use crate::fuzz::cli::{RedisTarget, redis_backends};
use crate::fuzz::engine::Found;
use crate::fuzz::{Oracle, SearchConfig, Space, Target, search};
use crate::infra::connect;
use crate::redis_scripts::ScriptSet;

/// How long a script may run before Redis answers BUSY to everyone else.
pub const BUSY_THRESHOLD_MS: u64 = 100;

/// What became of one mutant.
#[derive(Debug)]
pub enum Fate {
    /// A vector told it apart: the first line of the divergence.
    Killed { by: String },
    /// It ran past the busy threshold and was stopped with SCRIPT KILL (counts as killed).
    TimedOut,
    /// The vectors missed it and the fuzzer found an input that tells it apart.
    Survived { witness: Box<Found> },
    /// Neither the vectors nor `sample` fuzz timelines told it apart.
    Equivalent { sample: u64 },
}

impl Fate {
    pub fn label(&self) -> &'static str {
        match self {
            Fate::Killed { .. } => "killed",
            Fate::TimedOut => "killed (timed out)",
            Fate::Survived { .. } => "survived",
            Fate::Equivalent { .. } => "equivalent",
        }
    }

    pub fn is_killed(&self) -> bool {
        matches!(self, Fate::Killed { .. } | Fate::TimedOut)
    }
}

#[derive(Debug, Clone)]
pub struct JudgeConfig {
    pub connections: usize,
    /// Fuzz timelines per survivor (0: no equivalence check; every survivor is reported as one).
    pub equivalence_sample: u64,
    pub seed: u64,
    pub shrink_attempts: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("cannot reach the mutation Redis at {url}: {reason}")]
    Redis { url: String, reason: String },
    #[error(
        "the unmutated scripts already fail the vectors, so no mutant can be judged:\n{0}\n\
         (fix the scripts or the vectors first: `tk-conform run --backend redis`)"
    )]
    Baseline(String),
    #[error(
        "a mutant ran past the busy threshold after it wrote, so SCRIPT KILL cannot stop it \
         (UNKILLABLE); the run stops here"
    )]
    Unkillable,
}

/// What one replay of the vectors against one script set found.
enum Replayed {
    Passed,
    Diverged(String),
    /// The call met a BUSY (another mutant was looping) or lost its connection: try again.
    Retry,
    /// This script was stopped by SCRIPT KILL.
    Killed,
}

async fn replay_all(backend: &RedisBackend, suites: &[&Suite]) -> Replayed {
    for suite in suites {
        let mut session = match backend.open_suite(suite.name()).await {
            Ok(s) => s,
            Err(_) => return Replayed::Retry,
        };
        match replay(session.as_mut(), suite).await {
            Ok(_) | Err(ReplayFailure::Unsupported(_)) => {}
            Err(ReplayFailure::Diverged(d)) => {
                if let Detail::Error(e) = &d.detail {
                    let text = e.to_string();
                    // BUSY first: its message also names SCRIPT KILL.
                    if text.contains("BUSY") || matches!(e, BackendError::Unavailable(_)) {
                        return Replayed::Retry;
                    }
                    if text.contains("Script killed") {
                        return Replayed::Killed;
                    }
                }
                let text = d.to_string();
                let first = text.lines().take(2).collect::<Vec<_>>().join(";");
                return Replayed::Diverged(first);
            }
        }
    }
    Replayed::Passed
}

/// Tells Redis to answer BUSY early, so a looping mutant is noticed within a fraction of a second.
async fn set_busy_threshold(con: &mut MultiplexedConnection) {
    for name in ["busy-reply-threshold", "lua-time-limit"] {
        let set: redis::RedisResult<()> = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(BUSY_THRESHOLD_MS)
            .query_async(con)
            .await;
        if set.is_ok() {
            return;
        }
    }
}

/// Sends SCRIPT KILL every 50 ms on its own connection. Redis only gets to it while a script
/// runs once that script passed the busy threshold (before, it waits and then answers NOTBUSY),
/// so this stops exactly the scripts that loop.
fn watchdog(
    mut con: MultiplexedConnection,
    stop: Arc<AtomicBool>,
    unkillable: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let kill: redis::RedisResult<()> =
                redis::cmd("SCRIPT").arg("KILL").query_async(&mut con).await;
            if let Err(e) = kill
                && e.code() == Some("UNKILLABLE")
            {
                unkillable.store(true, Ordering::Relaxed);
                return;
            }
        }
    })
}

/// Judges every mutant against the vectors, then fuzzes the survivors. `fates[i]` is mutant i's.
pub async fn judge(
    base: &ScriptSet,
    mutants: &[Mutant],
    suites: &[Suite],
    redis: &RedisTarget<'_>,
    config: &JudgeConfig,
) -> Result<Vec<Fate>, JudgeError> {
    let unreachable = |e: &dyn std::fmt::Display| JudgeError::Redis {
        url: redis.url.to_owned(),
        reason: e.to_string(),
    };
    let mut control = connect(redis.url).await.map_err(|e| unreachable(&e))?;
    set_busy_threshold(&mut control).await;

    // The unmutated scripts must pass, or every mutant would look killed.
    let baseline = RedisBackend::new(
        Arc::new(base.clone()),
        control.clone(),
        redis.url,
        redis.version,
        "tk-conform:mutate:baseline",
    );
    let all: Vec<&Suite> = suites.iter().collect();
    if let Replayed::Diverged(d) = replay_all(&baseline, &all).await {
        return Err(JudgeError::Baseline(d));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let unkillable = Arc::new(AtomicBool::new(false));
    let dog = watchdog(
        connect(redis.url).await.map_err(|e| unreachable(&e))?,
        Arc::clone(&stop),
        Arc::clone(&unkillable),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Option<Replayed>>>> =
        Arc::new(Mutex::new((0..mutants.len()).map(|_| None).collect()));
    let mutants = Arc::new(mutants.to_vec());
    let suites = Arc::new(suites.to_vec());
    let base = Arc::new(base.clone());
    let mut workers = Vec::new();
    for _ in 0..config.connections.max(1) {
        let con = connect(redis.url).await.map_err(|e| unreachable(&e))?;
        let (next, results, mutants, suites, base) = (
            Arc::clone(&next),
            Arc::clone(&results),
            Arc::clone(&mutants),
            Arc::clone(&suites),
            Arc::clone(&base),
        );
        let (url, version) = (redis.url.to_owned(), redis.version.to_owned());
        let unkillable = Arc::clone(&unkillable);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= mutants.len() || unkillable.load(Ordering::Relaxed) {
                    return;
                }
                let mutant = &mutants[i];
                let Some(set) = base.with_code(&mutant.script, mutant.code.clone()) else {
                    continue;
                };
                let kind = set
                    .scripts()
                    .iter()
                    .find(|s| s.entry.name == mutant.script)
                    .map(|s| s.kind);
                let mine: Vec<&Suite> = suites
                    .iter()
                    .filter(|s| matches!(s, Suite::RateLimit(r) if Some(r.strategy.kind()) == kind))
                    .collect();
                let backend = RedisBackend::new(
                    Arc::new(set),
                    con.clone(),
                    &url,
                    &version,
                    &format!("tk-conform:mutate:{i}"),
                );
                // A replay that met another mutant's BUSY starts over; a few times at most.
                let mut outcome = Replayed::Retry;
                for _ in 0..5 {
                    outcome = replay_all(&backend, &mine).await;
                    if !matches!(outcome, Replayed::Retry) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(BUSY_THRESHOLD_MS)).await;
                }
                results.lock().expect("not poisoned")[i] = Some(outcome);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = dog.await;
    if unkillable.load(Ordering::Relaxed) {
        return Err(JudgeError::Unkillable);
    }
    let replayed: Vec<Option<Replayed>> =
        std::mem::take(&mut *results.lock().expect("not poisoned"));

    let mut fates = Vec::with_capacity(mutants.len());
    for (i, outcome) in replayed.into_iter().enumerate() {
        let fate = match outcome {
            Some(Replayed::Diverged(by)) => Fate::Killed { by },
            Some(Replayed::Killed) => Fate::TimedOut,
            Some(Replayed::Retry) | None => Fate::Killed {
                by: "the mutant's replay kept failing (BUSY or connection lost)".into(),
            },
            Some(Replayed::Passed) => survivor(&base, &mutants[i], redis, config, i).await?,
        };
        fates.push(fate);
    }
    Ok(fates)
}

/// A survivor of the vectors: fuzz it against the model for a witness.
async fn survivor(
    base: &ScriptSet,
    mutant: &Mutant,
    redis: &RedisTarget<'_>,
    config: &JudgeConfig,
    index: usize,
) -> Result<Fate, JudgeError> {
    if config.equivalence_sample == 0 {
        return Ok(Fate::Equivalent { sample: 0 });
    }
    let set = base
        .with_code(&mutant.script, mutant.code.clone())
        .expect("the mutant's script is in the set");
    let kind = set
        .scripts()
        .iter()
        .find(|s| s.entry.name == mutant.script)
        .map(|s| s.kind)
        .expect("the mutant's script is in the set");
    let backends = redis_backends(
        Arc::new(set),
        redis,
        &format!("tk-conform:mutate:fuzz:{index}"),
        config.connections.max(1),
    )
    .await
    .map_err(|e| JudgeError::Redis {
        url: redis.url.to_owned(),
        reason: format!("{e:#}"),
    })?;
    let search_config = SearchConfig {
        seed: config.seed,
        space: Space {
            targets: vec![Target::Rate(kind)],
            max_ops: 16,
            max_keys: 1,
        },
        workers: config.connections.max(1),
        time: Duration::from_secs(600),
        max_timelines: Some(config.equivalence_sample),
        shrink_attempts: config.shrink_attempts,
        progress: false,
    };
    let outcome = search(&search_config, Oracle::ExactModel, &backends).await;
    Ok(match outcome.found {
        Some(found) => Fate::Survived {
            witness: Box::new(found),
        },
        None => Fate::Equivalent {
            sample: outcome.timelines,
        },
    })
}
