//! Real-time timelines for client- and store-clock kinds: the harness cannot pick `now`, so it
//! records when each call was sent and answered and judges only what those times prove. A call
//! *surely* shares the first call's window when it was answered before that window could have
//! ended; a probe is sent only once the time it needs has surely passed (plus a margin). Where
//! timing cannot decide, the verdict is unknown, never a fail.

use super::driver::{Call, Driver, sleep_until_wall, wall_ms};
use super::explicit::{concurrency, judge_seeded, nothing_seeded};
use super::family::Shape;
use super::{Property, Verdict};
use crate::backend::exec::v2::{Exposed, Family, WindowStart};

type Step = Result<String, Verdict>;

/// Added after every instant a probe waits for: scheduling and the store's expiry cycle.
const MARGIN_MS: f64 = 40.0;

pub async fn run(d: &mut Driver, s: &Shape, property: Property) -> Verdict {
    let result = match (s.family, property) {
        (Family::Concurrency, Property::Cap | Property::Liveness | Property::Keys) => {
            concurrency(d, s, wall_ms()).await
        }
        (_, Property::Cap) => cap(d, s, "cap").await,
        (_, Property::Keys) => keys(d, s).await,
        (_, Property::Liveness) => liveness(d, s, false).await,
        (_, Property::LivenessSeeded) => liveness(d, s, true).await,
        (_, Property::Honesty) => honesty(d, s).await,
        (_, Property::Cost) => cost(d, s).await,
        (_, Property::Denials) => denials(d, s).await,
        (_, Property::Hygiene) => hygiene(d, s).await,
        (_, Property::Race) => Err(Verdict::NotApplicable("run by the race module".into())),
        (_, Property::Interleaved) => Err(Verdict::NotApplicable(
            "out-of-order nows need the explicit clock".into(),
        )),
    };
    match result {
        Ok(note) => Verdict::Pass(note),
        Err(v) => v,
    }
}

fn fail(message: String) -> Verdict {
    Verdict::Fail(message)
}

fn drain_size(s: &Shape) -> usize {
    (2.0 * s.limit()).ceil() as usize + 2
}

/// Sequential calls as fast as the adapter answers, stopping early after `stop_after_denials`
/// denials (0: never).
async fn burst(
    d: &mut Driver,
    key: &str,
    n: usize,
    stop_after_denials: usize,
) -> Result<Vec<Call>, Verdict> {
    let mut calls = Vec::with_capacity(n);
    let mut denied = 0;
    for _ in 0..n {
        let c = d.decide_now(key, 1.0).await?;
        denied += usize::from(!c.allowed());
        calls.push(c);
        if stop_after_denials > 0 && denied >= stop_after_denials {
            break;
        }
    }
    Ok(calls)
}

/// Whether `c` surely happened inside the same window as the first call `c0` (for the
/// families whose cap is per window; token buckets and GCRA use [`Shape::interval_cap`]).
pub(super) fn surely_with_first(s: &Shape, c0: &Call, c: &Call) -> bool {
    match (s.family, s.window_start) {
        (Family::FixedWindow | Family::SlidingWindowCounter, Some(WindowStart::Epoch)) => {
            s.epoch_window(c0.invoke) == s.epoch_window(c.complete)
        }
        (Family::FixedWindow | Family::SlidingWindowCounter, _) => {
            c.complete < c0.invoke + s.window
        }
        _ => c.complete < c0.invoke + s.window - 1.0,
    }
}

/// The cap over a burst from idle: never more than the family allows, and the first denial
/// only once the limit was admitted.
fn judge_burst(s: &Shape, calls: &[Call], what: &str) -> Step {
    let Some(c0) = calls.first() else {
        return Err(Verdict::Unknown("no calls".into()));
    };
    let first_denial = calls.iter().position(|c| !c.allowed());
    if let Some(at) = first_denial {
        let before: f64 = calls[..at].iter().map(|c| c.cost).sum();
        if before < s.limit() {
            return Err(fail(format!(
                "{what}: from idle the first denial came after only {before} admitted, below the limit {} ({})",
                s.limit(),
                calls[at].describe()
            )));
        }
    }
    match s.family {
        Family::TokenBucket | Family::Gcra => {
            let mut sum = 0.0;
            for c in calls {
                if !c.allowed() {
                    continue;
                }
                sum += c.cost;
                let cap = s
                    .interval_cap(c0.invoke, c.complete)
                    .expect("buckets have an interval cap");
                if sum > cap {
                    return Err(fail(format!(
                        "{what}: {sum} admitted between {:.1} and {:.1} ({:.1} ms), above the {} cap {cap:.2} (burst {} plus the refill in that time)",
                        c0.invoke,
                        c.complete,
                        c.complete - c0.invoke,
                        s.family.name(),
                        s.limit()
                    )));
                }
            }
            Ok(format!("{sum} admitted within the refill cap"))
        }
        _ => {
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
                return Err(fail(format!(
                    "{what}: {got} admitted among {} calls that all fell in one window of {} ms (first sent at {:.1}, last answered at {:.1}), limit {}",
                    sure.len(),
                    s.window,
                    c0.invoke,
                    sure.last().map(|c| c.complete).unwrap_or_default(),
                    s.limit()
                )));
            }
            if (sure.len() as f64) <= s.limit() {
                return Err(Verdict::Unknown(format!(
                    "only {} calls surely fell in the first {} ms window (limit {}): the adapter was too slow to saturate it",
                    sure.len(),
                    s.window,
                    s.limit()
                )));
            }
            Ok(format!(
                "{got} admitted of {} calls surely in one window",
                sure.len()
            ))
        }
    }
}

async fn cap(d: &mut Driver, s: &Shape, key: &str) -> Step {
    let calls = burst(d, key, drain_size(s), 0).await?;
    judge_burst(s, &calls, "cap")
}

async fn keys(d: &mut Driver, s: &Shape) -> Step {
    burst(d, "a", drain_size(s), 0).await?;
    let calls = burst(d, "b", drain_size(s), 0).await?;
    judge_burst(s, &calls, "keys (key b, after key a was drained)")
        .map(|note| format!("key b from idle: {note}"))
}

/// Drained, then quiet for a full window (refill) after the last call: admitted. Seeded: the
/// engine's keys lose their TTL first, the state a crash between round trips leaves.
async fn liveness(d: &mut Driver, s: &Shape, seed: bool) -> Step {
    let watch = if seed { Some(d.watch().await?) } else { None };
    let calls = burst(d, "live", drain_size(s), 3).await?;
    if calls.iter().all(Call::allowed) {
        return Err(Verdict::Unknown(format!(
            "the burst of {} calls was never denied, so the key was not drained",
            calls.len()
        )));
    }
    let last = calls.last().expect("a burst has calls").complete;
    let mut seeded = Vec::new();
    let mut writes = None;
    if let Some(watch) = watch {
        let written = d.writes(watch).await?;
        seeded = d.seed_without_ttl().await?;
        if seeded.is_empty() {
            return Err(nothing_seeded(&written));
        }
        writes = Some(written);
    }
    sleep_until_wall(last + s.all_free + MARGIN_MS).await;
    let probe = d.decide_now("live", 1.0).await?;
    if let Some(writes) = writes {
        return judge_seeded(s, &probe, &seeded, &writes, probe.invoke - last);
    }
    if !probe.allowed() {
        return Err(fail(format!(
            "liveness: drained, last call answered at {last:.1}, then quiet for {:.0} ms (more than a full {} of {} ms): denied ({})",
            probe.invoke - last,
            if matches!(s.family, Family::TokenBucket | Family::Gcra) {
                "refill"
            } else {
                "window"
            },
            s.all_free,
            probe.describe()
        )));
    }
    Ok(format!(
        "admitted again {:.0} ms after the last call",
        probe.invoke - last
    ))
}

/// remaining agrees with the admits in the first window; a call after retryAfterMs / resetAt
/// is admitted; a call well before it is denied.
async fn honesty(d: &mut Driver, s: &Shape) -> Step {
    let calls = burst(d, "h", drain_size(s), 1).await?;
    let c0 = calls.first().expect("a burst has calls").clone();
    let mut sum = 0.0;
    let exact = matches!(s.family, Family::FixedWindow | Family::SlidingWindowLog);
    for c in calls.iter().take_while(|c| c.allowed()) {
        sum += c.cost;
        let Some(r) = c.decision.remaining else {
            break;
        };
        let r = r as f64;
        let expected = s.limit() - sum;
        let wrong = if exact {
            surely_with_first(s, &c0, c) && r != expected
        } else if matches!(s.family, Family::TokenBucket | Family::Gcra) {
            // Refill only adds, by at most what the elapsed time brings.
            r < expected || r > expected + (s.rate * (c.complete - c0.invoke)).ceil() + 1.0
        } else {
            false
        };
        if wrong {
            return Err(fail(format!(
                "honesty: after {sum} admitted from idle, remaining was {r}, expected {expected} ({})",
                c.describe()
            )));
        }
    }
    let Some(denial) = calls.iter().find(|c| !c.allowed()).cloned() else {
        return Err(Verdict::Unknown(format!(
            "{} calls were all admitted: the key was not drained",
            calls.len()
        )));
    };
    let mut checked = vec![];
    if d.kind.exposes(Exposed::Remaining) {
        checked.push("remaining".to_owned());
    }
    if !s.sharp_retry() {
        checked.push("(retry instants not checked: the counter estimates them)".into());
        return Ok(format!("checked {}", checked.join(", ")));
    }
    // Each instant is probed on its own freshly drained key, so one probe cannot disturb the
    // next (an engine that counts denials would).
    let probes = [
        (Exposed::RetryAfterMs, denial.decision.retry_after_ms),
        (Exposed::ResetAt, denial.decision.reset_at),
    ];
    for (field, value) in probes {
        if value.is_none() {
            continue;
        }
        let key = format!("h-{}", field.name());
        let calls = burst(d, &key, drain_size(s), 1).await?;
        let Some(denied) = calls.iter().find(|c| !c.allowed()).cloned() else {
            return Err(Verdict::Unknown("a replayed burst was never denied".into()));
        };
        // The engine decided somewhere between invoke and complete: the latest reading.
        let latest = match field {
            Exposed::RetryAfterMs => {
                denied.complete + denied.decision.retry_after_ms.unwrap_or_default() as f64
            }
            _ => denied.decision.reset_at.unwrap_or_default() as f64,
        };
        sleep_until_wall(latest + MARGIN_MS).await;
        let probe = d.decide_now(&key, 1.0).await?;
        if !probe.allowed() {
            return Err(fail(format!(
                "honesty: a denial answered at {:.1} said {} {}, but a call sent at {:.1}, {:.0} ms after that instant, was denied ({})",
                denied.complete,
                field.name(),
                field_value(&denied, field),
                probe.invoke,
                probe.invoke - latest,
                probe.describe()
            )));
        }
        checked.push(field.name().to_owned());
        // Well before the instant, the engine must still deny: the wait was not overstated.
        let sharp_before = field == Exposed::RetryAfterMs || s.family == Family::FixedWindow;
        let lead = MARGIN_MS + 0.1 * s.window;
        if sharp_before {
            let key = format!("hb-{}", field.name());
            let calls = burst(d, &key, drain_size(s), 1).await?;
            let Some(denied) = calls.iter().find(|c| !c.allowed()).cloned() else {
                return Err(Verdict::Unknown("a replayed burst was never denied".into()));
            };
            let instant = match field {
                Exposed::RetryAfterMs => {
                    denied.invoke + denied.decision.retry_after_ms.unwrap_or_default() as f64
                }
                _ => denied.decision.reset_at.unwrap_or_default() as f64,
            };
            let at = instant - lead;
            if at <= denied.complete + MARGIN_MS {
                checked.push(format!(
                    "(not before {}: the wait was too short to probe early in real time)",
                    field.name()
                ));
                continue;
            }
            sleep_until_wall(at).await;
            let early = d.decide_now(&key, 1.0).await?;
            if early.allowed() && early.complete < instant - 1.0 {
                return Err(fail(format!(
                    "honesty: a denial answered at {:.1} said {} {} (the instant {instant:.1}), but a call answered at {:.1}, {:.0} ms before that instant, was admitted: the wait is overstated ({})",
                    denied.complete,
                    field.name(),
                    field_value(&denied, field),
                    early.complete,
                    instant - early.complete,
                    early.describe()
                )));
            }
            checked.push(format!("not before {}", field.name()));
        }
    }
    Ok(format!("checked {}", checked.join(", ")))
}

fn field_value(c: &Call, field: Exposed) -> i64 {
    match field {
        Exposed::RetryAfterMs => c.decision.retry_after_ms,
        Exposed::ResetAt => c.decision.reset_at,
        Exposed::Remaining => c.decision.remaining,
    }
    .unwrap_or_default()
}

async fn cost(d: &mut Driver, s: &Shape) -> Step {
    let big = s.limit() + 1.0;
    let c = d.decide_now("c1", big).await?;
    if c.allowed() {
        return Err(fail(format!(
            "cost: from idle, a call of cost {big} (above the limit {}) was admitted ({})",
            s.limit(),
            c.describe()
        )));
    }
    if d.kind.counts_denials {
        return Ok(format!(
            "cost {big} denied (countsDenials: true, so what it consumed is not judged)"
        ));
    }
    let calls = burst(d, "c1", drain_size(s), 1).await?;
    judge_burst(s, &calls, "cost (after a denied call of cost limit + 1)")
        .map(|n| format!("cost {big} denied without consuming; then {n}"))
}

async fn denials(d: &mut Driver, s: &Shape) -> Step {
    let calls = burst(d, "d", drain_size(s), 1).await?;
    let Some(last_admit) = calls.iter().rfind(|c| c.allowed()).cloned() else {
        return Err(fail("denials: from idle the first call was denied".into()));
    };
    let c0 = calls[0].clone();
    let stop = c0.invoke + s.one_free / 2.0;
    let mut denied = 0usize;
    let mut last = c0.complete;
    while (wall_ms() < stop || denied < s.limit() as usize) && denied < 3 * s.limit() as usize {
        let c = d.decide_now("d", 1.0).await?;
        last = c.complete;
        if c.allowed() {
            return Err(Verdict::Unknown(
                "a call meant to be denied was admitted (the window moved on while denying)".into(),
            ));
        }
        denied += 1;
    }
    let probe_at = (last_admit.complete + s.one_free + MARGIN_MS).max(last + MARGIN_MS);
    sleep_until_wall(probe_at).await;
    let probe = d.decide_now("d", 1.0).await?;
    if !probe.allowed() {
        return Err(fail(format!(
            "denials: the last admit was answered at {:.1}; then {denied} denied calls until {last:.1}; counting admits only, a unit is free by {:.1} (+{MARGIN_MS} ms), but a call sent at {:.1} was denied: denied calls consumed, while the kind declares countsDenials: false ({})",
            last_admit.complete,
            last_admit.complete + s.one_free,
            probe.invoke,
            probe.describe()
        )));
    }
    Ok(format!("{denied} denials consumed nothing"))
}

async fn hygiene(d: &mut Driver, s: &Shape) -> Step {
    for key in ["g1", "g2", "g3"] {
        burst(d, key, s.limit() as usize + 2, 0).await?;
    }
    Ok("3 keys".into())
}
