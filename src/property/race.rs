//! `race`: eight more copies of the adapter, each its own process with its own connection to
//! the store, are released together on one fresh key and call as fast as they can. Three rounds.
//! From idle the family's cap must hold across all of them — what a read-then-write engine
//! breaks — judged from every call's invoke and complete times like the real-time suites (for
//! an explicit clock all racers decide at one `now`, so exactly the limit must be admitted).

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Barrier;

use super::driver::{Call, Driver, wall_ms};
use super::family::{Point, Shape};
use super::realtime::surely_with_first;
use super::{PropertyTarget, Verdict};
use crate::backend::exec::ExecBackend;
use crate::backend::exec::v2::{Clock, Family};
use crate::backend::{Backend, BackendError};

const RACERS: usize = 8;
const ROUNDS: usize = 3;

/// What stopped a racer. One slow to open or configure its session says nothing about the
/// engine; a decide that failed is the engine's (store unreachable, protocol).
#[derive(Debug, thiserror::Error)]
enum RacerError {
    #[error("opening a racer's session")]
    Open(#[source] BackendError),
    #[error("configuring a racer")]
    Configure(#[source] BackendError),
    #[error("a racer's decide")]
    Decide(#[source] BackendError),
}

impl RacerError {
    fn verdict(self, round: usize) -> Verdict {
        let slow = matches!(self, RacerError::Open(_) | RacerError::Configure(_));
        let text = format!("race: round {round}: {:#}", anyhow::Error::new(self));
        if slow {
            Verdict::Unknown(text)
        } else {
            Verdict::Fail(text)
        }
    }
}

pub async fn run(target: &PropertyTarget, d: &mut Driver, point: &Point, s: &Shape) -> Verdict {
    match race(target, d, point, s).await {
        Ok(note) => Verdict::Pass(note),
        Err(v) => v,
    }
}

async fn race(
    target: &PropertyTarget,
    d: &mut Driver,
    point: &Point,
    s: &Shape,
) -> Result<String, Verdict> {
    let starts = (0..RACERS).map(|_| ExecBackend::start(target.racers.clone()));
    // Eight interpreters starting at once on a busy machine may be slow: that says nothing
    // about the engine, so a racer that cannot get going makes the trial unknown, not failed.
    let mut racers = Vec::new();
    for started in join_all(starts).await {
        racers.push(
            started
                .map_err(|e| Verdict::Unknown(format!("race: starting a racing adapter: {e}")))?,
        );
    }
    let namespace = d.namespace().to_owned();
    let explicit = d.kind.clock == Clock::Explicit;
    let per_racer = (3.0 * s.limit() / RACERS as f64).ceil() as usize + 2;
    let mut notes = Vec::new();
    let mut outcome = Ok(());
    for round in 1..=ROUNDS {
        let key = format!("race-{round}");
        d.note_key(&key);
        let now = (wall_ms() / 1000.0).ceil() * 1000.0 + 7.0;
        let barrier = Arc::new(Barrier::new(RACERS));
        let runs = racers.iter().map(|racer| {
            let barrier = Arc::clone(&barrier);
            let (key, namespace, kind) = (key.clone(), namespace.clone(), d.kind.clone());
            async move {
                let setup = async {
                    let mut session = racer
                        .open_v2_in("property::race", &namespace)
                        .await
                        .map_err(RacerError::Open)?;
                    session
                        .configure("L", &kind.name, &point.params)
                        .await
                        .map_err(RacerError::Configure)?;
                    Ok::<_, RacerError>(session)
                }
                .await;
                // Every racer reaches the barrier, set up or not: one that failed must not
                // leave the others waiting for it until the trial's bound.
                barrier.wait().await;
                let mut session = setup?;
                let mut calls = Vec::with_capacity(per_racer);
                for _ in 0..per_racer {
                    let invoke = wall_ms();
                    let decision = session
                        .decide("L", &key, 1.0, explicit.then_some(now))
                        .await
                        .map_err(RacerError::Decide)?;
                    let complete = wall_ms();
                    calls.push(Call {
                        key: key.clone(),
                        cost: 1.0,
                        now: if explicit { now } else { invoke },
                        invoke,
                        complete,
                        decision,
                    });
                }
                Ok::<Vec<Call>, RacerError>(calls)
            }
        });
        let mut calls = Vec::new();
        let mut trouble = None;
        for result in join_all(runs).await {
            match result {
                Ok(c) => calls.extend(c),
                Err(e) => trouble = Some(e),
            }
        }
        if let Some(e) = trouble {
            outcome = Err(e.verdict(round));
            break;
        }
        outcome = judge(s, &calls, explicit, round).map(|n| notes.push(n));
        if outcome.is_err() {
            break;
        }
    }
    // Together: an adapter slow to exit costs its grace once, not once per racer.
    join_all(racers.iter().map(|racer| racer.shutdown())).await;
    outcome?;
    Ok(format!(
        "{RACERS} processes × {ROUNDS} rounds: {}",
        notes.join("; ")
    ))
}

fn judge(s: &Shape, calls: &[Call], explicit: bool, round: usize) -> Result<String, Verdict> {
    let admitted: f64 = calls.iter().filter(|c| c.allowed()).map(|c| c.cost).sum();
    if explicit {
        if admitted != s.limit() {
            return Err(Verdict::Fail(format!(
                "race: round {round}: {RACERS} processes made {} calls on one fresh key at one now: {admitted} admitted, expected exactly the limit {}",
                calls.len(),
                s.limit()
            )));
        }
        return Ok(format!("exactly {admitted}"));
    }
    let c0 = calls
        .iter()
        .min_by(|a, b| a.invoke.total_cmp(&b.invoke))
        .expect("racers made calls");
    if matches!(s.family, Family::TokenBucket | Family::Gcra) {
        let mut by_complete: Vec<&Call> = calls.iter().filter(|c| c.allowed()).collect();
        by_complete.sort_by(|a, b| a.complete.total_cmp(&b.complete));
        let mut sum = 0.0;
        for c in by_complete {
            sum += c.cost;
            let cap = s
                .interval_cap(c0.invoke, c.complete)
                .expect("buckets have a cap");
            if sum > cap {
                return Err(Verdict::Fail(format!(
                    "race: round {round}: {sum} admitted across {RACERS} processes between {:.1} and {:.1}, above the {} cap {cap:.2}",
                    c0.invoke,
                    c.complete,
                    s.family.name()
                )));
            }
        }
        return Ok(format!("{admitted} admitted within the refill cap"));
    }
    let sure: Vec<&Call> = calls
        .iter()
        .filter(|c| surely_with_first(s, c0, c))
        .collect();
    let got: f64 = sure.iter().filter(|c| c.allowed()).map(|c| c.cost).sum();
    let cap = if s.family == Family::SlidingWindowCounter {
        s.limit() * (1.0 + s.tolerance)
    } else {
        s.limit()
    };
    if got > cap {
        return Err(Verdict::Fail(format!(
            "race: round {round}: {got} admitted among {} calls from {RACERS} processes that all fell in one window of {} ms (first sent at {:.1}), limit {}",
            sure.len(),
            s.window,
            c0.invoke,
            s.limit()
        )));
    }
    if (sure.len() as f64) <= s.limit() {
        return Err(Verdict::Unknown(format!(
            "round {round}: only {} calls surely fell in the first window (limit {})",
            sure.len(),
            s.limit()
        )));
    }
    Ok(format!("{got} of {} in one window", sure.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_racer_slow_to_set_up_is_unknown_and_a_failed_decide_fails_with_its_cause() {
        let slow = RacerError::Open(BackendError::Unavailable("timed out after 10 s".into()));
        assert!(matches!(
            slow.verdict(2),
            Verdict::Unknown(t) if t == "race: round 2: opening a racer's session: unavailable: timed out after 10 s"
        ));
        let wrong = RacerError::Decide(BackendError::Protocol("no `allowed`".into()));
        assert!(matches!(
            wrong.verdict(1),
            Verdict::Fail(t) if t == "race: round 1: a racer's decide: protocol violation: no `allowed`"
        ));
    }
}
