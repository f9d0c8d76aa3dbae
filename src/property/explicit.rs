//! Deterministic timelines for explicit-clock kinds: the harness picks every `now`, so each
//! check is exact (from idle, exactly the limit; a call at `retryAfterMs` admitted and one
//! millisecond before it denied), and clients may interleave out of order.

use super::driver::{Call, Driver, wall_ms};
use super::family::Shape;
use super::{Property, Verdict};
use crate::backend::exec::v2::{Exposed, Family, WindowStart};

type Step = Result<String, Verdict>;

pub async fn run(d: &mut Driver, s: &Shape, property: Property) -> Verdict {
    let t0 = start_time(s);
    let result = match (s.family, property) {
        (Family::Concurrency, Property::Cap | Property::Liveness | Property::Keys) => {
            concurrency(d, s, t0).await
        }
        (_, Property::Cap) => cap(d, s, t0).await,
        (_, Property::Liveness) => liveness(d, s, t0).await,
        (_, Property::LivenessSeeded) => seeded(d, s, t0).await,
        (_, Property::Honesty) => honesty(d, s, t0).await,
        (_, Property::Cost) => cost(d, s, t0).await,
        (_, Property::Denials) => denials(d, s, t0).await,
        (_, Property::Keys) => keys(d, s, t0).await,
        (_, Property::Interleaved) => interleaved(d, s, t0).await,
        (_, Property::Race) => Err(Verdict::NotApplicable("run by the race module".into())),
        (_, Property::Hygiene) => hygiene(d, s, t0).await,
    };
    match result {
        Ok(note) => Verdict::Pass(note),
        Err(v) => v,
    }
}

/// Near the wall clock (engines may derive key TTLs from `now`), a quarter into an aligned
/// window, so a burst never straddles a boundary.
pub(crate) fn start_time(s: &Shape) -> f64 {
    let w = s.window.max(1.0).round();
    let aligned = (wall_ms() / w).ceil() * w;
    match s.window_start {
        Some(WindowStart::Epoch) => aligned + (w / 4.0).floor(),
        _ => aligned + 7.0,
    }
}

fn fail(message: String) -> Verdict {
    Verdict::Fail(message)
}

async fn burst(d: &mut Driver, key: &str, n: usize, now: f64) -> Result<Vec<Call>, Verdict> {
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        calls.push(d.decide(key, 1.0, now).await?);
    }
    Ok(calls)
}

fn admitted(calls: &[Call]) -> f64 {
    calls.iter().filter(|c| c.allowed()).map(|c| c.cost).sum()
}

fn drain_size(s: &Shape) -> usize {
    (2.0 * s.limit()).ceil() as usize + 2
}

/// From idle, exactly the limit at one instant; then a stream at three times the rate over
/// several windows never exceeds the family's cap.
async fn cap(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let calls = burst(d, "cap", drain_size(s), t0).await?;
    let got = admitted(&calls);
    if got != s.limit() {
        return Err(fail(format!(
            "cap: from idle, {} calls of cost 1 at now {t0} admitted {got}, expected exactly the limit {}",
            calls.len(),
            s.limit()
        )));
    }
    let w = s.window.round().max(1.0);
    let mut step = (w / (3.0 * s.limit())).floor().max(1.0);
    if w % step == 0.0 {
        // Windows that start at a call then never end exactly on another call.
        step += 1.0;
    }
    let n = ((3.0 * w / step) as usize).clamp(1, 450);
    let mut stream = Vec::with_capacity(n);
    for i in 0..n {
        stream.push(d.decide("stream", 1.0, t0 + i as f64 * step).await?);
    }
    check_stream(s, &stream, true)?;
    Ok(format!(
        "from idle exactly {got}; {n} calls every {step} ms stayed within the cap"
    ))
}

/// The family's cap over a recorded stream of calls (nows ascending). `dense`: calls came at
/// three times the rate throughout, so a fixed window the stream covers must fill up (random
/// timelines from the fuzzer are not dense).
pub(crate) fn check_stream(s: &Shape, calls: &[Call], dense: bool) -> Result<(), Verdict> {
    let admits: Vec<&Call> = calls.iter().filter(|c| c.allowed()).collect();
    match s.family {
        Family::FixedWindow | Family::SlidingWindowCounter => {
            for (start, end, count, complete) in windows(s, calls) {
                if count > s.limit() {
                    return Err(fail(format!(
                        "cap: {count} admitted with now in the window [{start}, {end}), limit {}",
                        s.limit()
                    )));
                }
                if dense && complete && s.family == Family::FixedWindow && count < s.limit() {
                    return Err(fail(format!(
                        "cap: only {count} admitted in the window [{start}, {end}) although calls came at three times the limit {} throughout it",
                        s.limit()
                    )));
                }
            }
        }
        _ => {}
    }
    for (j, last) in admits.iter().enumerate() {
        for first in &admits[..=j] {
            let Some(cap) = s.interval_cap(first.now, last.now) else {
                continue;
            };
            let sum: f64 = admits
                .iter()
                .filter(|c| c.now >= first.now && c.now <= last.now)
                .map(|c| c.cost)
                .sum();
            if sum > cap {
                return Err(fail(format!(
                    "cap: {sum} admitted with now in [{}, {}] ({} ms), the {} cap there is {cap}",
                    first.now,
                    last.now,
                    last.now - first.now,
                    s.family.name()
                )));
            }
        }
    }
    Ok(())
}

/// The windows of a stream: (start, end, admitted cost, whether the stream covered all of it).
fn windows(s: &Shape, calls: &[Call]) -> Vec<(f64, f64, f64, bool)> {
    let w = s.window;
    let (Some(first), Some(last)) = (calls.first(), calls.last()) else {
        return Vec::new();
    };
    let mut out: Vec<(f64, f64, f64, bool)> = Vec::new();
    for c in calls {
        let start = match s.window_start {
            Some(WindowStart::Epoch) => s.epoch_window(c.now),
            // A window starts with the first call at or after the previous one's end.
            _ => match out.last() {
                Some(&(start, end, ..)) if c.now < end => start,
                _ => c.now,
            },
        };
        if out.last().map(|x| x.0) != Some(start) {
            let complete = start >= first.now && start + w <= last.now;
            out.push((start, start + w, 0.0, complete));
        }
        if c.allowed() {
            out.last_mut().expect("pushed above").2 += c.cost;
        }
    }
    out
}

/// Drained, then a few denials, then quiet: one quiet window (or full refill) after the last
/// call, a call is admitted.
async fn liveness(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    burst(d, "live", drain_size(s), t0).await?;
    let t_last = t0 + (s.one_free / 2.0).floor();
    burst(d, "live", 3, t_last).await?;
    let probe_at = t_last + s.all_free.ceil() + 1.0;
    let probe = d.decide("live", 1.0, probe_at).await?;
    if !probe.allowed() {
        return Err(fail(format!(
            "liveness: drained at now {t0}, last call at {t_last}, then quiet for {} ms (a full {}): the call at now {probe_at} was denied ({})",
            probe_at - t_last,
            recovery_word(s),
            probe.describe()
        )));
    }
    Ok(format!(
        "admitted again {} ms after the last call",
        probe_at - t_last
    ))
}

fn recovery_word(s: &Shape) -> &'static str {
    match s.family {
        Family::TokenBucket | Family::Gcra => "refill",
        Family::SlidingWindowCounter => "two windows, as the counter weighs the previous one",
        _ => "window",
    }
}

/// The same, from the state a crash between two round trips leaves: the engine's keys without
/// a TTL. Judged only where the engine can reach that state (MONITOR saw a write split from
/// its expiry); an atomic engine that does not heal is reported as not applicable.
async fn seeded(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let watch = d.watch().await?;
    burst(d, "seeded", drain_size(s), t0).await?;
    let writes = d.writes(watch).await?;
    let seeded = d.seed_without_ttl().await?;
    if seeded.is_empty() {
        return Err(nothing_seeded(&writes));
    }
    let probe_at = t0 + s.all_free.ceil() + 1.0;
    let probe = d.decide("seeded", 1.0, probe_at).await?;
    judge_seeded(s, &probe, &seeded, &writes, probe_at - t0)
}

/// Why no key could be seeded: the engine kept none here, or the ones it wrote had expired
/// by then (a slow burst outlasted its window). Only the second can hide a split write.
pub(super) fn nothing_seeded(writes: &super::store::Writes) -> Verdict {
    if writes.seen == 0 {
        return Verdict::NotApplicable(
            "the engine keeps no keys in the harness's redis, so there is nothing to seed".into(),
        );
    }
    match writes.split.first() {
        None => Verdict::NotApplicable(format!(
            "the engine writes its keys atomically ({} commands seen, none split from its expiry), so no crash between round trips leaves a key without a TTL (and its keys had expired before they could be seeded)",
            writes.seen
        )),
        Some(split) => Verdict::Unknown(format!(
            "the engine writes a key without its expiry in a separate round trip (`{split}`), but its keys had expired before they could be seeded: not exercised"
        )),
    }
}

pub(super) fn judge_seeded(
    s: &Shape,
    probe: &Call,
    seeded: &[String],
    writes: &super::store::Writes,
    quiet: f64,
) -> Step {
    if probe.allowed() {
        return Ok(format!(
            "admitted {quiet:.0} ms after draining although its {} keys were left without a TTL",
            seeded.len()
        ));
    }
    if writes.split.is_empty() {
        return Err(Verdict::NotApplicable(format!(
            "the engine writes its keys atomically ({} commands seen, none split from its expiry), so no crash between round trips leaves a key without a TTL; it does not heal such a key (denied after {quiet:.0} ms)",
            writes.seen
        )));
    }
    Err(fail(format!(
        "liveness-seeded: the engine writes a key without its expiry in a separate round trip (`{}`), so a crash there leaves it without a TTL; seeded that way ({}), the key still denied {quiet:.0} ms (a full {}) after draining: {}",
        writes.split[0],
        seeded.join(", "),
        recovery_word(s),
        probe.describe()
    )))
}

/// remaining agrees with the admits; a call at retryAfterMs / resetAt is admitted, and (for
/// sharp families) one a millisecond before it is denied.
async fn honesty(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let calls = burst(d, "h", drain_size(s), t0).await?;
    let mut checked = Vec::new();
    let mut sum = 0.0;
    for c in &calls {
        if !c.allowed() {
            break;
        }
        sum += c.cost;
        if let Some(r) = c.decision.remaining
            && r as f64 != s.limit() - sum
        {
            return Err(fail(format!(
                "honesty: after {sum} admitted from idle at now {t0}, remaining was {r}, expected {} ({})",
                s.limit() - sum,
                c.describe()
            )));
        }
    }
    if d.kind.exposes(Exposed::Remaining) {
        checked.push("remaining");
    }
    let Some(at) = calls.iter().position(|c| !c.allowed()) else {
        return Err(fail(format!(
            "honesty: {} calls at one now were all admitted",
            calls.len()
        )));
    };
    let denial = calls[at].clone();
    if let Some(r) = denial.decision.remaining
        && r != 0
    {
        return Err(fail(format!(
            "honesty: a denied call said remaining {r} ({})",
            denial.describe()
        )));
    }
    let prefix = at + 1;
    let probes = [
        (
            Exposed::RetryAfterMs,
            denial.decision.retry_after_ms.map(|r| t0 + r as f64),
        ),
        (Exposed::ResetAt, denial.decision.reset_at.map(|r| r as f64)),
    ];
    for (field, when) in probes {
        let Some(when) = when else { continue };
        if !s.sharp_retry() {
            checked.push("(retry instants not checked: the counter estimates them)");
            break;
        }
        if when <= t0 {
            return Err(fail(format!(
                "honesty: a denied call at now {t0} named {} {when}, not later than itself ({})",
                field.name(),
                denial.describe()
            )));
        }
        let key = format!("h-{}", field.name());
        burst(d, &key, prefix, t0).await?;
        let probe = d.decide(&key, 1.0, when).await?;
        if !probe.allowed() {
            return Err(fail(format!(
                "honesty: after the same {prefix} calls at now {t0}, the denial said {} ⇒ {when}, but a call at now {when} was denied ({})",
                field.name(),
                probe.describe()
            )));
        }
        // Strictly before is denied where the instant is sharp: every window end, and the
        // retry wait of every exact family.
        let sharp_before = field == Exposed::RetryAfterMs || s.family == Family::FixedWindow;
        if sharp_before && when - 1.0 > t0 {
            let key = format!("hb-{}", field.name());
            burst(d, &key, prefix, t0).await?;
            let early = d.decide(&key, 1.0, when - 1.0).await?;
            if early.allowed() {
                return Err(fail(format!(
                    "honesty: after the same {prefix} calls at now {t0}, the denial said {} ⇒ {when}, but a call 1 ms earlier, at now {}, was admitted: the wait is overstated ({})",
                    field.name(),
                    when - 1.0,
                    early.describe()
                )));
            }
        }
        checked.push(field.name());
    }
    Ok(format!("checked {}", checked.join(", ")))
}

/// A cost above the limit is never admitted and (unless declared) does not consume.
async fn cost(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let big = s.limit() + 1.0;
    let c = d.decide("c1", big, t0).await?;
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
    let after = burst(d, "c1", s.limit() as usize, t0).await?;
    let got = admitted(&after);
    if got != s.limit() {
        return Err(fail(format!(
            "cost: a denied call of cost {big} consumed: {} calls of cost 1 at the same now {t0} then admitted only {got} of the limit {} (the kind declares countsDenials: false)",
            after.len(),
            s.limit()
        )));
    }
    if s.limit() >= 2.0 {
        burst(d, "c2", s.limit() as usize - 1, t0).await?;
        let two = d.decide("c2", 2.0, t0).await?;
        let one = d.decide("c2", 1.0, t0).await?;
        if two.allowed() || !one.allowed() {
            return Err(fail(format!(
                "cost: with one unit left, a cost-2 call was {} and the cost-1 call after it {} (expected denied, then admitted): {}; {}",
                if two.allowed() { "admitted" } else { "denied" },
                if one.allowed() { "admitted" } else { "denied" },
                two.describe(),
                one.describe()
            )));
        }
    }
    Ok(format!(
        "cost {big} denied without consuming; a partial cost denied cleanly"
    ))
}

/// Denied calls do not consume when the kind says so: from the last admit, the time one unit
/// takes to free up is enough although denials kept coming.
async fn denials(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let limit = s.limit() as usize;
    burst(d, "d", limit, t0).await?;
    let span = (s.one_free / 2.0).floor().max(1.0);
    let n = limit.max(3);
    let mut last = t0;
    for i in 0..n {
        last = t0 + 1.0 + (i as f64 * (span - 1.0) / n as f64).floor();
        d.decide("d", 1.0, last).await?;
    }
    let probe_at = match (s.family, s.window_start) {
        (Family::FixedWindow, Some(WindowStart::Epoch)) => s.epoch_window(t0) + s.window,
        (Family::SlidingWindowCounter, Some(WindowStart::Epoch)) => {
            s.epoch_window(t0) + 2.0 * s.window
        }
        _ => t0 + s.one_free.ceil() + 1.0,
    };
    let probe = d.decide("d", 1.0, probe_at).await?;
    if !probe.allowed() {
        return Err(fail(format!(
            "denials: {limit} admitted at now {t0}, then {n} denied calls up to now {last}; counting the admits only, a unit is free at now {probe_at}, but that call was denied: denied calls consumed, while the kind declares countsDenials: false ({})",
            probe.describe()
        )));
    }
    Ok(format!("{n} denials consumed nothing"))
}

/// A drained key does not touch another.
async fn keys(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    burst(d, "a", drain_size(s), t0).await?;
    let b = burst(d, "b", s.limit() as usize + 1, t0).await?;
    let got = admitted(&b);
    if got != s.limit() {
        return Err(fail(format!(
            "keys: with key a drained, key b from idle admitted {got} of {} calls at now {t0}, expected exactly the limit {}",
            b.len(),
            s.limit()
        )));
    }
    Ok("a drained key left another untouched".into())
}

/// Two clients whose clocks disagree by a quarter window interleave their calls, so the engine
/// sees `now`s go back and forth. Over the span, admits stay within the family's cap plus one
/// window of slack per client, and the key recovers afterwards.
async fn interleaved(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let w = s.window.round().max(1.0);
    let skew = (w / 4.0).floor();
    let step = (w / (6.0 * s.limit())).floor().max(1.0);
    let n = ((3.0 * w / step) as usize).clamp(2, 600);
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let t = t0 + skew + (i / 2) as f64 * step * 2.0;
        let now = if i % 2 == 0 { t } else { t - skew };
        calls.push(d.decide("i", 1.0, now).await?);
    }
    let lo = calls.iter().map(|c| c.now).fold(f64::INFINITY, f64::min);
    let hi = calls
        .iter()
        .map(|c| c.now)
        .fold(f64::NEG_INFINITY, f64::max);
    let got = admitted(&calls);
    let windows = ((hi - lo) / w).ceil();
    let cap = (windows + 2.0) * s.limit();
    if got > cap {
        return Err(fail(format!(
            "interleaved: two clients {skew} ms apart, {n} calls with nows in [{lo}, {hi}] ({windows} windows): {got} admitted, above {cap} (the limit {} for each window spanned, plus two windows of slack for the skew)",
            s.limit()
        )));
    }
    let probe_at = hi + s.all_free.ceil() + 1.0;
    let probe = d.decide("i", 1.0, probe_at).await?;
    if !probe.allowed() {
        return Err(fail(format!(
            "interleaved: after out-of-order nows up to {hi}, a call at now {probe_at} (a full {} later) was denied ({})",
            recovery_word(s),
            probe.describe()
        )));
    }
    Ok(format!(
        "{got} admitted of {n} out-of-order calls (cap {cap}); recovered"
    ))
}

/// Several keys drained and touched again; the closing hygiene check judges what is left.
async fn hygiene(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    for key in ["g1", "g2", "g3", "g4"] {
        burst(d, key, s.limit() as usize + 2, t0).await?;
        d.decide(key, 1.0, t0 + (s.one_free / 2.0).floor()).await?;
    }
    Ok("4 keys".into())
}

/// Concurrency: at most `limit` slots held; a release frees one; another key is independent.
pub(super) async fn concurrency(d: &mut Driver, s: &Shape, t0: f64) -> Step {
    let limit = s.limit() as usize;
    let held = burst(d, "slots", limit + 1, t0).await?;
    let got = admitted(&held);
    if got != s.limit() {
        return Err(fail(format!(
            "cap: {} acquisitions with none released admitted {got}, expected exactly the limit {}",
            held.len(),
            s.limit()
        )));
    }
    d.release("slots").await?;
    let again = d.decide("slots", 1.0, t0 + 1.0).await?;
    if !again.allowed() {
        return Err(fail(format!(
            "liveness: after a release, an acquisition was denied ({})",
            again.describe()
        )));
    }
    let other = d.decide("other", 1.0, t0 + 1.0).await?;
    if !other.allowed() {
        return Err(fail(format!(
            "keys: with key slots full, key other was denied ({})",
            other.describe()
        )));
    }
    for _ in 0..limit {
        d.release("slots").await?;
    }
    d.release("other").await?;
    Ok(format!("{got} slots, release frees one"))
}

#[cfg(test)]
mod tests {
    use super::super::store::Writes;
    use super::*;

    #[test]
    fn nothing_seeded_says_whether_the_engine_kept_no_key_or_its_keys_had_expired() {
        let none = Writes {
            split: vec![],
            seen: 0,
        };
        assert!(
            matches!(nothing_seeded(&none), Verdict::NotApplicable(t) if t.contains("keeps no keys"))
        );
        let atomic = Writes {
            split: vec![],
            seen: 33,
        };
        assert!(matches!(
            nothing_seeded(&atomic),
            Verdict::NotApplicable(t) if t.contains("atomically (33 commands seen") && t.contains("had expired")
        ));
        // A split write that could not be exercised is unknown, never a pass or n/a.
        let split = Writes {
            split: vec!["INCR k".into()],
            seen: 2,
        };
        assert!(matches!(
            nothing_seeded(&split),
            Verdict::Unknown(t) if t.contains("(`INCR k`)") && t.contains("not exercised")
        ));
    }
}
