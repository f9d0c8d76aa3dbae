//! Exec-door checks: `family-cap` (admits per window as the configured kind's family bounds
//! them, for all groups together and for each group on its own clock, with each group's share)
//! and `admits-again` (after the family's quiet period the key admits again).
//!
//! A protocol-2 decision may expose nothing but `allowed`, so windows are placed from the
//! recorded invoke and complete times alone, as the property suites do: a call took effect at
//! some instant in `[invoke, complete]`, and only what those intervals prove is judged. A call
//! cut by a kill ends, at the latest, when the kill landed (the adapter dies with its worker).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{FaultRecord, Ruling, Verdict};
use crate::backend::exec::v2::{Clock, Family, LimiterKind, WindowStart};
use crate::battle::history::{CallOutcome, Op, Reply, WorkerHistory};
use crate::battle::scenario::FaultAction;
use crate::property::family::{Point, Shape};

/// How long after a kill its worker's adapter may still act (the kernel's pdeathsig is
/// immediate; this covers scheduling).
const KILL_MARGIN_MS: f64 = 50.0;
/// Added to a family's quiet period: the store's expiry and the machine's scheduling.
const QUIET_MARGIN_MS: f64 = 100.0;
/// A group starved this many windows (while it asked as often as the others) is reported.
const STARVED_WINDOWS: usize = 3;

/// What the runner knows of the engine a scenario ran against.
#[derive(Debug, Clone)]
pub struct ExecFacts {
    pub kind: LimiterKind,
    pub params: BTreeMap<String, f64>,
    /// Group → how far its adapters' clocks ran ahead (ms), when they ran under libfaketime.
    pub offsets: BTreeMap<String, i64>,
}

impl ExecFacts {
    pub fn shape(&self) -> Shape {
        Shape::of(
            &self.kind,
            &Point {
                params: self.params.clone(),
            },
        )
    }

    /// The offset the engine's clock had for `group`: only a client-clock kind reads it.
    fn offset(&self, group: &str) -> f64 {
        match self.kind.clock {
            Clock::Client => self.offsets.get(group).copied().unwrap_or(0) as f64,
            Clock::Explicit | Clock::Store => 0.0,
        }
    }

    fn params_text(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One decision as the checker sees it (ms since the epoch).
#[derive(Debug, Clone)]
struct Obs {
    group: String,
    who: String,
    a: f64,
    b: f64,
    /// `None`: indeterminate (it may have been admitted).
    allowed: Option<bool>,
}

fn observations(histories: &[&WorkerHistory], faults: &[FaultRecord]) -> Vec<Obs> {
    let mut out = Vec::new();
    for h in histories {
        let label = h.label();
        let kills: Vec<f64> = faults
            .iter()
            .filter(|f| f.action == FaultAction::SigkillWorkers && f.workers.contains(&label))
            .filter_map(|f| f.at_us)
            .map(|t| t as f64 / 1000.0)
            .collect();
        for c in &h.calls {
            if !matches!(c.op, Op::Check { .. }) {
                continue;
            }
            let mut a = c.invoke_us as f64 / 1000.0;
            let mut b = match c.complete_us {
                Some(t) => t as f64 / 1000.0,
                None => {
                    // The first kill after the call; a call sent just after the signal (which
                    // takes a moment to land on a busy machine) ended with that kill too.
                    let after = kills
                        .iter()
                        .copied()
                        .filter(|k| *k >= a)
                        .fold(f64::INFINITY, f64::min);
                    let end = if after.is_finite() || kills.is_empty() {
                        after
                    } else {
                        a
                    };
                    end + KILL_MARGIN_MS
                }
            };
            let allowed = match &c.outcome {
                CallOutcome::Ok(Reply::Decided { decision, now_us }) => {
                    // An explicit clock decided at the `now` it was sent, exactly.
                    if let Some(t) = now_us {
                        let now = *t as f64 / 1000.0;
                        (a, b) = (now, now);
                    }
                    Some(decision.allowed)
                }
                CallOutcome::Indeterminate { .. } => None,
                // A definite failure did not take effect.
                _ => continue,
            };
            out.push(Obs {
                group: h.group.clone(),
                who: format!("{label} call {}", c.seq),
                a,
                b,
                allowed,
            });
        }
    }
    out.sort_by(|x, y| x.a.total_cmp(&y.a));
    out
}

/// A window whose start lies in `[s_lo, s_hi]` and whose end in `[e_lo, e_hi]`.
#[derive(Debug, Clone, Copy)]
struct Win {
    s_lo: f64,
    s_hi: f64,
    e_lo: f64,
    e_hi: f64,
}

impl Win {
    fn surely_holds(&self, o: &Obs) -> bool {
        o.a >= self.s_hi && o.b < self.e_lo
    }
    fn may_hold(&self, o: &Obs) -> bool {
        o.b >= self.s_lo && o.a < self.e_hi
    }
}

/// Fixed windows on the engine's clock: epoch-aligned, or each starting with the first call
/// after the previous one ended (its expiry set during the starting call's round trip).
fn fixed_windows(obs: &[Obs], w: f64, start: Option<WindowStart>) -> Vec<Win> {
    if obs.is_empty() {
        return Vec::new();
    }
    if start == Some(WindowStart::Epoch) {
        let first = (obs[0].a / w).floor() as i64;
        let last = obs
            .iter()
            .map(|o| o.b)
            .filter(|b| b.is_finite())
            .fold(obs[0].a, f64::max);
        let last = (last / w).floor() as i64;
        return (first..=last)
            .map(|k| {
                let s = k as f64 * w;
                Win {
                    s_lo: s,
                    s_hi: s,
                    e_lo: s + w,
                    e_hi: s + w,
                }
            })
            .collect();
    }
    let mut wins = Vec::new();
    let mut s_lo = obs[0].a;
    let mut s_hi = obs.iter().map(|o| o.b).fold(f64::INFINITY, f64::min);
    while s_hi.is_finite() && wins.len() < 100_000 {
        // The starting call was in flight at the start; its reply bounds when the expiry was set.
        let set_hi = obs
            .iter()
            .filter(|o| o.a <= s_hi && o.b >= s_lo)
            .map(|o| o.b)
            .fold(s_hi, f64::max);
        wins.push(Win {
            s_lo,
            s_hi,
            e_lo: s_lo + w,
            e_hi: set_hi + w,
        });
        let next_lo = obs
            .iter()
            .filter(|o| o.b >= s_lo + w)
            .map(|o| o.a)
            .fold(f64::INFINITY, f64::min)
            .max(s_lo + w);
        let next_hi = obs
            .iter()
            .filter(|o| o.a >= set_hi + w)
            .map(|o| o.b)
            .fold(f64::INFINITY, f64::min);
        s_lo = next_lo;
        s_hi = next_hi;
    }
    wins
}

/// The outcome of one view (all groups, or one group on its own clock).
#[derive(Debug, Default)]
struct View {
    violations: Vec<String>,
    /// Windows (or window-length periods) in which a decision was denied.
    saturated: usize,
    windows: usize,
    max_in_window: f64,
    judged_admits: usize,
}

/// `t` as ms after the barrier `t0`, for messages.
fn label_ms(t: f64, t0: f64) -> String {
    format!("+{:.1} ms", t - t0)
}

/// Judges `obs` (times already on the view's clock) against the family's bound.
fn judge_view(obs: &[Obs], s: &Shape, exact_floor: bool, what: &str, t0: f64) -> View {
    let mut v = View::default();
    let admits: Vec<&Obs> = obs.iter().filter(|o| o.allowed == Some(true)).collect();
    let limit = s.limit();
    match s.family {
        Family::FixedWindow => {
            // Where window starts are known only to within a round trip, a second bound that
            // needs no start: an interval shorter than a window holds at most one boundary, so
            // at most twice the limit.
            if s.window_start != Some(WindowStart::Epoch)
                && let Some((n, t)) = densest(&admits, s.window - 1.0)
                && n as f64 > 2.0 * limit
            {
                v.violations.push(format!(
                    "{what}: {n} admitted within {} ms from {}, more than twice the limit {limit} (an interval shorter than a window spans at most two windows)",
                    s.window - 1.0,
                    label_ms(t, t0)
                ));
            }
            for win in fixed_windows(obs, s.window, s.window_start) {
                let sure: Vec<&&Obs> = admits.iter().filter(|o| win.surely_holds(o)).collect();
                let denied = obs
                    .iter()
                    .any(|o| o.allowed == Some(false) && win.surely_holds(o));
                let known = obs
                    .iter()
                    .filter(|o| o.allowed == Some(true) && win.may_hold(o))
                    .count();
                let lost = obs
                    .iter()
                    .filter(|o| o.allowed.is_none() && win.may_hold(o))
                    .count();
                let possible = known + lost;
                v.windows += 1;
                v.saturated += usize::from(denied);
                v.judged_admits += sure.len();
                v.max_in_window = v.max_in_window.max(sure.len() as f64);
                if sure.len() as f64 > limit {
                    v.violations.push(format!(
                        "{what}: window starting {}: {} admitted > limit {limit} (overshoot {}; e.g. {})",
                        label_ms(win.s_lo, t0),
                        sure.len(),
                        sure.len() as f64 - limit,
                        sure.last().map(|o| o.who.as_str()).unwrap_or_default()
                    ));
                }
                if exact_floor && denied && (possible as f64) < limit {
                    v.violations.push(format!(
                        "{what}: window starting {}: denied after admitting only {known} (+{lost} indeterminate) of the limit {limit}, counting every call that may have landed in it",
                        label_ms(win.s_lo, t0)
                    ));
                }
            }
        }
        Family::SlidingWindowLog | Family::SlidingWindowCounter => {
            let cap = if s.family == Family::SlidingWindowCounter {
                limit * (1.0 + s.tolerance)
            } else {
                limit
            };
            let worst = densest(&admits, s.window - 1.0);
            v.judged_admits = admits.len();
            if let Some((n, t)) = worst {
                v.max_in_window = n as f64;
                if n as f64 > cap {
                    v.violations.push(format!(
                        "{what}: {n} admitted within {} ms from {} (trailing window of {} ms), above the {} bound {cap}",
                        s.window - 1.0,
                        label_ms(t, t0),
                        s.window,
                        s.family.name()
                    ));
                }
            }
            count_periods(obs, s.window, &mut v);
        }
        Family::TokenBucket | Family::Gcra => {
            let mut worst: Option<(f64, f64, f64, f64)> = None;
            for (i, anchor) in admits.iter().enumerate() {
                let mut later: Vec<&&Obs> = admits[i..].iter().collect();
                later.sort_by(|x, y| x.b.total_cmp(&y.b));
                for (n, o) in later.iter().enumerate() {
                    let got = (n + 1) as f64;
                    let cap = s.burst + s.rate * (o.b - anchor.a) + 1e-9;
                    let excess = got - cap;
                    if worst.is_none_or(|(e, ..)| excess > e) {
                        worst = Some((excess, got, anchor.a, o.b));
                    }
                }
            }
            v.judged_admits = admits.len();
            if let Some((excess, got, from, to)) = worst
                && excess > 0.0
            {
                v.violations.push(format!(
                    "{what}: {got} admitted between {} and {} ({:.1} ms), above the {} bound {:.2} (burst {} plus the refill in that time)",
                    label_ms(from, t0),
                    label_ms(to, t0),
                    to - from,
                    s.family.name(),
                    got - excess,
                    s.burst
                ));
            }
            v.max_in_window = worst.map_or(0.0, |w| w.1);
            count_periods(obs, s.window, &mut v);
        }
        Family::Concurrency => {}
    }
    v
}

/// The most admits that surely took effect within `span` ms of one another (each anchored at
/// an admit's invoke), and where that interval starts.
fn densest(admits: &[&Obs], span: f64) -> Option<(usize, f64)> {
    let mut worst: Option<(usize, f64)> = None;
    for (i, anchor) in admits.iter().enumerate() {
        let n = admits[i..]
            .iter()
            .filter(|o| o.b <= anchor.a + span)
            .count();
        if worst.is_none_or(|(m, _)| n > m) {
            worst = Some((n, anchor.a));
        }
    }
    worst
}

/// Window-length periods on the view's clock, and those with a denial.
fn count_periods(obs: &[Obs], w: f64, v: &mut View) {
    let period = |t: f64| (t / w).floor() as i64;
    let all: BTreeSet<i64> = obs.iter().map(|o| period(o.a)).collect();
    let denied: BTreeSet<i64> = obs
        .iter()
        .filter(|o| o.allowed == Some(false))
        .map(|o| period(o.a))
        .collect();
    v.windows = all.len();
    v.saturated = denied.len();
}

/// `family-cap`.
pub fn judge_family_cap(
    histories: &[&WorkerHistory],
    faults: &[FaultRecord],
    facts: &ExecFacts,
    min_saturated: u64,
) -> Ruling {
    // The barrier's time (ms): messages say `+1234.5 ms` rather than an epoch instant.
    let t0 = histories.iter().map(|h| h.t0_us).min().unwrap_or(0) as f64 / 1000.0;
    let s = facts.shape();
    let all = observations(histories, faults);
    let groups: BTreeSet<String> = all.iter().map(|o| o.group.clone()).collect();
    let skewed = groups.iter().any(|g| facts.offset(g) != 0.0);
    // Together, on the machine's clock: the limit as a user of the key sees it.
    let together = judge_view(&all, &s, !skewed, "all groups", t0);
    let mut violations = together.violations.clone();
    // Each group alone, on its own (possibly skewed) clock: what the engine must hold whatever
    // the others did.
    let mut per_group = Vec::new();
    if groups.len() > 1 || skewed {
        for g in &groups {
            let off = facts.offset(g);
            let mine: Vec<Obs> = all
                .iter()
                .filter(|o| &o.group == g)
                .map(|o| Obs {
                    a: o.a + off,
                    b: o.b + off,
                    ..o.clone()
                })
                .collect();
            let view = judge_view(
                &mine,
                &s,
                false,
                &format!("group `{g}` on its own clock"),
                t0,
            );
            violations.extend(view.violations.iter().cloned());
            per_group.push((g.clone(), view.max_in_window));
        }
    }
    let shares = shares(&all, &groups, s.window);
    if let Some(starved) = starvation(&all, &groups, s.window) {
        violations.push(starved);
    }
    let admitted = all.iter().filter(|o| o.allowed == Some(true)).count();
    let denied = all.iter().filter(|o| o.allowed == Some(false)).count();
    let indeterminate = all.iter().filter(|o| o.allowed.is_none()).count();
    let numbers = json!({
        "kind": facts.kind.name,
        "family": facts.kind.family.name(),
        "clock": facts.kind.clock.name(),
        "params": facts.params,
        "limit": s.limit(),
        "tolerance": s.tolerance,
        "windows": together.windows,
        "saturatedWindows": together.saturated,
        "maxInWindow": together.max_in_window,
        "admitted": admitted,
        "judgedAdmits": together.judged_admits,
        "denied": denied,
        "indeterminate": indeterminate,
        "offsetsMs": facts.offsets,
        "perGroupMaxInWindow": per_group.iter().map(|(g, m)| json!({"group": g, "max": m})).collect::<Vec<_>>(),
        "shares": shares,
        "violations": violations.iter().take(20).collect::<Vec<_>>(),
    });
    let share_text = share_text(&numbers["shares"]);
    let bound = match s.family {
        Family::SlidingWindowCounter => format!("{} × (1 + tolerance {})", s.limit(), s.tolerance),
        Family::TokenBucket | Family::Gcra => {
            format!("burst {} + {:.3}/ms refill", s.burst, s.rate)
        }
        _ => format!("{}", s.limit()),
    };
    let head = format!(
        "{} `{}` ({}, {} clock, {})",
        facts.kind.family.name(),
        facts.kind.name,
        facts.params_text(),
        facts.kind.clock.name(),
        match (skewed, facts.offsets.is_empty()) {
            (true, _) => format!("adapter clocks offset {:?} ms", facts.offsets),
            (false, true) => "one clock".into(),
            (false, false) => format!(
                "adapter clocks offset {:?} ms, which a {} clock does not read",
                facts.offsets,
                facts.kind.clock.name()
            ),
        }
    );
    if !violations.is_empty() {
        let more = violations.len().saturating_sub(3);
        let mut text = violations[..violations.len().min(3)].join("; ");
        if more > 0 {
            text.push_str(&format!(" (+{more} more)"));
        }
        return Ruling::new(
            Verdict::Fail,
            format!("{head}: {text}; {share_text}"),
            numbers,
        );
    }
    if (together.saturated as u64) < min_saturated {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "{head}: only {} of {} windows denied anything (at least {min_saturated} needed), so the bound {bound} was not put to the test; {admitted} admitted, {denied} denied",
                together.saturated, together.windows
            ),
            numbers,
        );
    }
    Ruling::new(
        Verdict::Pass,
        format!(
            "{head}: at most {} admitted per window (bound {bound}) over {} windows, {} of them saturated; {admitted} admitted, {denied} denied, {indeterminate} indeterminate; {share_text}",
            together.max_in_window, together.windows, together.saturated
        ),
        numbers,
    )
}

fn shares(all: &[Obs], groups: &BTreeSet<String>, _w: f64) -> serde_json::Value {
    let admitted = all
        .iter()
        .filter(|o| o.allowed == Some(true))
        .count()
        .max(1) as f64;
    let calls = all.len().max(1) as f64;
    groups
        .iter()
        .map(|g| {
            let mine: Vec<&Obs> = all.iter().filter(|o| &o.group == g).collect();
            let a = mine.iter().filter(|o| o.allowed == Some(true)).count();
            json!({
                "group": g,
                "calls": mine.len(),
                "admitted": a,
                "shareOfAdmits": (a as f64 / admitted * 1000.0).round() / 10.0,
                "shareOfCalls": (mine.len() as f64 / calls * 1000.0).round() / 10.0,
            })
        })
        .collect()
}

fn share_text(shares: &serde_json::Value) -> String {
    let parts: Vec<String> = shares
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "`{}` {} admitted ({}% of admits from {}% of calls)",
                        s["group"].as_str().unwrap_or_default(),
                        s["admitted"],
                        s["shareOfAdmits"],
                        s["shareOfCalls"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("shares: {}", parts.join(", "))
}

/// A group that asked at least as often as the others on average, yet got nothing in several
/// windows in which the others were admitted.
fn starvation(all: &[Obs], groups: &BTreeSet<String>, w: f64) -> Option<String> {
    if groups.len() < 2 {
        return None;
    }
    let period = |t: f64| (t / w).floor() as i64;
    for g in groups {
        let mine = all.iter().filter(|o| &o.group == g).count() as f64;
        let others = (all.len() as f64 - mine) / (groups.len() - 1) as f64;
        if mine < others {
            continue;
        }
        let mut starved = Vec::new();
        let periods: BTreeSet<i64> = all
            .iter()
            .filter(|o| &o.group == g)
            .map(|o| period(o.a))
            .collect();
        for p in periods {
            let in_p = |o: &&Obs| period(o.a) == p;
            let mine_ok = all
                .iter()
                .filter(in_p)
                .any(|o| &o.group == g && o.allowed != Some(false));
            let others_ok = all
                .iter()
                .filter(in_p)
                .filter(|o| &o.group != g && o.allowed == Some(true))
                .count();
            if !mine_ok && others_ok > 0 {
                starved.push((p, others_ok));
            }
        }
        if starved.len() >= STARVED_WINDOWS {
            let taken: usize = starved.iter().map(|(_, n)| n).sum();
            return Some(format!(
                "group `{g}` was starved: it got no admit in {} windows of {w} ms in which the other groups got {taken}, while it made {mine} calls (the others {others:.0} each)",
                starved.len()
            ));
        }
    }
    None
}

/// `admits-again`.
pub fn judge_admits_again(
    histories: &[&WorkerHistory],
    group: &str,
    faults: &[FaultRecord],
    facts: &ExecFacts,
) -> Ruling {
    let s = facts.shape();
    let all = observations(histories, faults);
    let mut last = all
        .iter()
        .filter(|o| o.group != group)
        .map(|o| o.b)
        .fold(f64::NEG_INFINITY, f64::max);
    for f in faults {
        if f.action == FaultAction::SigkillWorkers
            && let Some(t) = f.at_us
        {
            last = last.max(t as f64 / 1000.0 + KILL_MARGIN_MS);
        }
    }
    let quiet = s.all_free + QUIET_MARGIN_MS;
    let first = histories
        .iter()
        .filter(|h| h.group == group)
        .flat_map(|h| h.calls.iter().map(move |c| (h, c)))
        .min_by_key(|(_, c)| c.invoke_us);
    let Some((h, probe)) = first else {
        return Ruling::new(
            Verdict::Unknown,
            format!("group `{group}` made no call"),
            json!({ "group": group }),
        );
    };
    let gap = probe.invoke_us as f64 / 1000.0 - last;
    let numbers = json!({
        "group": group,
        "quietPeriodMs": quiet,
        "gapMs": (gap * 10.0).round() / 10.0,
        "outcome": probe.outcome,
    });
    if !gap.is_finite() {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "a call of another group never completed and its worker was not killed, so when \
                 the key went quiet is not known; the probe {} call {} cannot show it admits again",
                h.label(),
                probe.seq
            ),
            numbers,
        );
    }
    if gap < quiet {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "the probe {} call {} came {gap:.0} ms after the last call or kill, before the family's quiet period of {quiet} ms; start it later",
                h.label(),
                probe.seq
            ),
            numbers,
        );
    }
    match &probe.outcome {
        CallOutcome::Ok(Reply::Decided { decision, .. }) if decision.allowed => Ruling::new(
            Verdict::Pass,
            format!(
                "admitted {gap:.0} ms after the last call or kill (quiet period {} ms + {QUIET_MARGIN_MS} ms)",
                s.all_free
            ),
            numbers,
        ),
        CallOutcome::Ok(Reply::Decided { decision, .. }) => Ruling::new(
            Verdict::Fail,
            format!(
                "the key still denies {gap:.0} ms after the last call or kill, beyond the {} quiet period of {} ms ({} {}: {})",
                s.family.name(),
                s.all_free,
                h.label(),
                probe.seq,
                crate::property::driver::describe_decision(decision)
            ),
            numbers,
        ),
        CallOutcome::Fail { error } | CallOutcome::Indeterminate { error } => Ruling::new(
            Verdict::Unknown,
            format!("the probe's call did not decide: {error}"),
            numbers,
        ),
        CallOutcome::Ok(other) => Ruling::new(
            Verdict::Unknown,
            format!("the probe's call answered {other:?}, not a decision"),
            numbers,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::v2::DecisionV2;
    use crate::battle::checker::testkit::{call, history};
    use crate::battle::history::Call;

    fn kind(json: &str) -> LimiterKind {
        serde_json::from_str(json).unwrap()
    }

    fn facts(kind_json: &str, params: &[(&str, f64)]) -> ExecFacts {
        ExecFacts {
            kind: kind(kind_json),
            params: params.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            offsets: BTreeMap::new(),
        }
    }

    const FW_EXPLICIT: &str = r#"{"name":"fw","family":"fixedWindow","clock":"explicit","windowStart":"epoch",
        "parameters":{"limit":{"min":1,"max":100},"windowMs":{"min":1,"max":10000}},"exposes":[],"takesCost":true,"countsDenials":false}"#;
    const FW_STORE: &str = r#"{"name":"ttl","family":"fixedWindow","clock":"store","windowStart":"firstCall",
        "parameters":{"limit":{"min":1,"max":100},"windowMs":{"min":1,"max":10000}},"exposes":[],"takesCost":true,"countsDenials":false}"#;
    const BUCKET: &str = r#"{"name":"b","family":"tokenBucket","clock":"store",
        "parameters":{"capacity":{"min":1,"max":100},"refillPerSec":{"min":1,"max":100}},"exposes":[],"takesCost":true,"countsDenials":false}"#;

    /// A decision made between `t0` and `t1` ms (an explicit `now` when given).
    fn decided(seq: u64, t0: i64, t1: i64, allowed: bool, now_ms: Option<i64>) -> Call {
        call(
            seq,
            Op::Check { cost: 1 },
            t0,
            Some(t1),
            CallOutcome::Ok(Reply::Decided {
                decision: DecisionV2 {
                    allowed,
                    remaining: None,
                    reset_at: None,
                    retry_after_ms: None,
                },
                now_us: now_ms.map(|t| t * 1000),
            }),
        )
    }

    /// `admits` then `denials` per window of 1000 ms, windows starting at 0, 1000, ….
    fn windows(admits: u64, denials: u64, windows: i64, explicit: bool) -> Vec<Call> {
        let mut calls = Vec::new();
        let mut seq = 0;
        for w in 0..windows {
            for i in 0..admits + denials {
                seq += 1;
                let t = w * 1000 + 10 + i as i64 * 5;
                calls.push(decided(
                    seq,
                    t,
                    t + 2,
                    i < admits,
                    explicit.then_some(t + 1),
                ));
            }
        }
        calls
    }

    fn judge(hs: &[WorkerHistory], f: &ExecFacts) -> (Verdict, String, serde_json::Value) {
        let refs: Vec<&WorkerHistory> = hs.iter().collect();
        let r = judge_family_cap(&refs, &[], f, 2);
        (r.verdict, r.summary, r.numbers)
    }

    #[test]
    fn a_call_sent_just_after_its_workers_kill_ends_with_it() {
        let kill = FaultRecord {
            name: "kill".into(),
            action: FaultAction::SigkillWorkers,
            planned_at_ms: 100,
            at_us: Some(100_000),
            done_us: None,
            server: None,
            workers: vec!["load[0]".into()],
            targets: vec![],
            error: None,
            failover: None,
        };
        let cut = |seq, t0| {
            call(
                seq,
                Op::Check { cost: 1 },
                t0,
                None,
                CallOutcome::Indeterminate {
                    error: "killed".into(),
                },
            )
        };
        // One call sent before the signal, one just after it (the kill had not landed yet).
        let killed = history("load", 0, vec![cut(1, 90), cut(2, 101)]);
        let spared = history("load", 1, vec![cut(1, 101)]);
        let obs = observations(&[&killed, &spared], std::slice::from_ref(&kill));
        assert_eq!(obs[0].b, 100.0 + KILL_MARGIN_MS);
        assert_eq!(obs[1].b, 101.0 + KILL_MARGIN_MS);
        // A worker no kill touched: its unfinished call has no known end.
        assert!(obs[2].b.is_infinite());
    }

    #[test]
    fn explicit_windows_are_exact_both_ways() {
        let f = facts(FW_EXPLICIT, &[("limit", 20.0), ("windowMs", 1000.0)]);
        let (v, msg, n) = judge(&[history("r", 0, windows(20, 5, 3, true))], &f);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["maxInWindow"], 20.0);
        let (v, msg, _) = judge(&[history("r", 0, windows(21, 5, 3, true))], &f);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("window starting +0.0 ms: 21 admitted > limit 20 (overshoot 1"),
            "{msg}"
        );
        let (v, msg, _) = judge(&[history("r", 0, windows(12, 5, 3, true))], &f);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("denied after admitting only 12 (+0 indeterminate) of the limit 20"),
            "{msg}"
        );
    }

    #[test]
    fn first_call_windows_are_placed_from_the_calls() {
        let f = facts(FW_STORE, &[("limit", 20.0), ("windowMs", 1000.0)]);
        // Windows start with the first call after the previous ended: at 10, 1010, 2010.
        let (v, msg, n) = judge(&[history("r", 0, windows(20, 5, 3, false))], &f);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["saturatedWindows"], 3);
        let (v, msg, _) = judge(&[history("r", 0, windows(30, 5, 3, false))], &f);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("admitted > limit 20"), "{msg}");
        let (v, msg, _) = judge(&[history("r", 0, windows(45, 5, 3, false))], &f);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("45 admitted within 999 ms from +10.0 ms, more than twice the limit 20"),
            "{msg}"
        );
        // No denial anywhere: the bound was never put to the test.
        let (v, msg, _) = judge(&[history("r", 0, windows(20, 0, 3, false))], &f);
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(msg.contains("only 0 of 3 windows denied anything"), "{msg}");
    }

    #[test]
    fn buckets_are_held_to_burst_plus_refill() {
        let f = facts(BUCKET, &[("capacity", 5.0), ("refillPerSec", 10.0)]);
        // 5 at once, then one per 100 ms: within the bound; one more at once is not.
        let mut calls: Vec<Call> = (0..5).map(|i| decided(i, 0, 1, true, None)).collect();
        calls.extend((0..10).map(|i| {
            decided(
                10 + i,
                100 * (i as i64 + 1),
                100 * (i as i64 + 1) + 1,
                true,
                None,
            )
        }));
        calls.push(decided(30, 1200, 1201, false, None));
        calls.push(decided(31, 1300, 1301, false, None));
        calls.push(decided(32, 2300, 2301, false, None));
        let (v, msg, _) = judge(&[history("b", 0, calls.clone())], &f);
        assert_eq!(v, Verdict::Pass, "{msg}");
        calls.push(decided(40, 0, 1, true, None));
        let (v, msg, _) = judge(&[history("b", 0, calls)], &f);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("6 admitted between +0.0 ms and +1.0 ms"),
            "{msg}"
        );
    }

    #[test]
    fn a_starved_group_is_reported_with_its_share() {
        let f = facts(FW_EXPLICIT, &[("limit", 20.0), ("windowMs", 1000.0)]);
        let ahead = history("ahead", 0, windows(20, 5, 4, true));
        let starved: Vec<Call> = (0..4)
            .flat_map(|w| (0..40).map(move |i| (w, i)))
            .map(|(w, i)| {
                let t = w * 1000 + 300 + i;
                decided((w * 100 + i) as u64, t, t + 1, false, Some(t))
            })
            .collect();
        let honest = history("honest", 0, starved);
        let (v, msg, n) = judge(&[ahead, honest], &f);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("group `honest` was starved: it got no admit in 4 windows"),
            "{msg}"
        );
        assert_eq!(n["shares"][1]["admitted"], 0, "{n:#}");
    }
}
