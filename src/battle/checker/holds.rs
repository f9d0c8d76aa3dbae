//! Concurrency slots, reconstructed from admit / heartbeat / release intervals.
//!
//! A granted hold is *definitely* held from the admit's completion until the earlier of its
//! release's invoke and the moment its renewals stop proving it: each renewal (the admit, then
//! every heartbeat) takes effect somewhere inside its call, so the server may reclaim no earlier
//! than `invoke + ttl` of the last renewal that was surely in time. The TTL is the policy's, or
//! the server's own when its admit states a shorter lease (`lease_expires_at` less the admit's
//! completion: spec 8 has a judge read the TTL from the replies); a longer one, which a skewed
//! server clock can state, is not trusted beyond the policy's. Every heartbeat renews by that
//! TTL: a server that answers "live" without moving the deadline has failed to renew. Pushing
//! admits late and releases early this way gives the least overlap any linearization allows, so
//! more definite holds than the ceiling at one instant is a violation no ordering can explain.

use serde_json::json;

use super::{Ruling, Verdict, at, ms_between};
use crate::battle::faults::FaultRecord;
use crate::battle::history::{CallOutcome, Op, Reply, WorkerHistory};

/// Timer granularity between the server's clock reads and ours (both whole ms).
const SLACK_US: i64 = 10_000;

#[derive(Debug)]
struct Hold<'a> {
    worker: &'a WorkerHistory,
    admit_seq: u64,
    lease_id: String,
    granted_us: i64,
    /// The invoke of this hold's release, if one was sent.
    release_us: Option<i64>,
    /// The TTL this hold is judged by (see [`hold_ttl_us`]).
    ttl_us: i64,
    /// Until when the last renewal that surely took effect in time keeps the hold.
    lapse_us: i64,
    /// True when some renewal came too late (or never came before the hold's end).
    chain_broken: bool,
    /// The first in-time heartbeat that said the lease was gone: `(seq, completed at)`.
    wrongly_reclaimed: Option<(u64, i64)>,
    /// Heartbeats about this lease that completed after `granted_us`.
    heartbeats: Vec<Heartbeat>,
}

/// One heartbeat call about a hold's lease.
#[derive(Debug)]
struct Heartbeat {
    seq: u64,
    invoke_us: i64,
    complete_us: i64,
    /// The server said the lease was still live.
    live: bool,
}

impl Hold<'_> {
    /// End of the definite hold.
    fn definite_end_us(&self) -> i64 {
        self.release_us
            .map_or(self.lapse_us, |r| r.min(self.lapse_us))
    }

    fn label(&self) -> String {
        format!(
            "{} lease {}",
            at(self.worker, self.admit_seq),
            self.lease_id
        )
    }
}

/// The TTL a hold is judged by: the policy's, or the lease the server stated on the admit
/// (`expires_at_ms`, epoch ms, 0 = none) if shorter. The server read its clock before the admit
/// completed, so `expires_at − completion` is at most the TTL it applied.
fn hold_ttl_us(policy_ttl_us: i64, expires_at_ms: i64, complete_us: i64) -> i64 {
    if expires_at_ms <= 0 {
        return policy_ttl_us;
    }
    policy_ttl_us.min((expires_at_ms.saturating_mul(1000) - complete_us).max(0))
}

/// Every granted hold of the given workers, with its renewal chain worked out.
fn holds<'a>(histories: &[&'a WorkerHistory], ttl_ms: u64) -> Vec<Hold<'a>> {
    let ttl_us = ttl_ms as i64 * 1000;
    let mut out = Vec::new();
    for h in histories {
        for (i, c) in h.calls.iter().enumerate() {
            let (
                Op::Admit { .. },
                CallOutcome::Ok(Reply::Admit {
                    decision,
                    lease_id,
                    lease_expires_at,
                }),
            ) = (&c.op, &c.outcome)
            else {
                continue;
            };
            if !decision.allowed || lease_id.is_empty() {
                continue;
            }
            let granted_us = c.end_us();
            let hold_ttl = hold_ttl_us(ttl_us, *lease_expires_at, granted_us);
            let mut hold = Hold {
                worker: h,
                admit_seq: c.seq,
                lease_id: lease_id.clone(),
                granted_us,
                release_us: None,
                ttl_us: hold_ttl,
                lapse_us: c.invoke_us + hold_ttl - SLACK_US,
                chain_broken: false,
                wrongly_reclaimed: None,
                heartbeats: Vec::new(),
            };
            for later in &h.calls[i + 1..] {
                match (&later.op, &later.outcome) {
                    (Op::Release { lease_id: id }, _) if *id == hold.lease_id => {
                        hold.release_us = Some(later.invoke_us);
                        break;
                    }
                    (
                        Op::Heartbeat { lease_ids },
                        CallOutcome::Ok(Reply::Heartbeat { live, .. }),
                    ) if lease_ids.contains(&hold.lease_id) => {
                        let done = later.end_us();
                        let is_live = live.contains(&hold.lease_id);
                        hold.heartbeats.push(Heartbeat {
                            seq: later.seq,
                            invoke_us: later.invoke_us,
                            complete_us: done,
                            live: is_live,
                        });
                        if hold.chain_broken {
                            continue;
                        }
                        if done < hold.lapse_us {
                            if !is_live && hold.wrongly_reclaimed.is_none() {
                                hold.wrongly_reclaimed = Some((later.seq, done));
                            }
                            hold.lapse_us = later.invoke_us + hold.ttl_us - SLACK_US;
                        } else {
                            hold.chain_broken = true;
                        }
                    }
                    _ => {}
                }
            }
            if hold.release_us.is_none_or(|end| end >= hold.lapse_us) {
                hold.chain_broken = true;
            }
            out.push(hold);
        }
    }
    out
}

pub fn judge_concurrency(
    histories: &[&WorkerHistory],
    ceiling: u64,
    ttl_ms: u64,
    min_admits: u64,
) -> Ruling {
    let all = holds(histories, ttl_ms);
    let (mut denied, mut indeterminate) = (0u64, 0u64);
    for h in histories {
        for c in &h.calls {
            if !matches!(c.op, Op::Admit { .. }) {
                continue;
            }
            match &c.outcome {
                CallOutcome::Ok(Reply::Admit { decision, .. }) if !decision.allowed => denied += 1,
                CallOutcome::Indeterminate { .. } => indeterminate += 1,
                _ => {}
            }
        }
    }
    // Sweep: ends before starts at the same instant (a release then an admit is no overlap).
    let mut events: Vec<(i64, i32, usize)> = Vec::new();
    for (i, h) in all.iter().enumerate() {
        let end = h.definite_end_us();
        if end > h.granted_us {
            events.push((h.granted_us, 1, i));
            events.push((end, -1, i));
        }
    }
    events.sort_by_key(|&(t, d, _)| (t, d));
    let (mut active, mut max_in_flight) = (Vec::<usize>::new(), 0usize);
    let mut first_violation: Option<(i64, Vec<usize>)> = None;
    let mut violating_instants = 0u64;
    for (t, d, i) in events {
        if d > 0 {
            active.push(i);
            max_in_flight = max_in_flight.max(active.len());
            if active.len() as u64 > ceiling {
                violating_instants += 1;
                if first_violation.is_none() {
                    first_violation = Some((t, active.clone()));
                }
            }
        } else {
            active.retain(|&x| x != i);
        }
    }
    let t0 = histories.first().map_or(0, |h| h.t0_us);
    let numbers = json!({
        "ceiling": ceiling,
        "ttlMs": ttl_ms,
        "maxInFlight": max_in_flight,
        "granted": all.len(),
        "denied": denied,
        "indeterminate": indeterminate,
        "violations": violating_instants,
    });
    if let Some((t, who)) = first_violation {
        let names: Vec<String> = who.iter().map(|&i| all[i].label()).collect();
        return Ruling::new(
            Verdict::Fail,
            format!(
                "{} slots held at once at +{} ms (ceiling {ceiling}): {}",
                who.len(),
                ms_between(t0, t),
                names.join(", ")
            ),
            numbers,
        );
    }
    if (all.len() as u64) < min_admits {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "only {} admits were granted; expected at least {min_admits} to exercise the \
                 ceiling: not exercised",
                all.len()
            ),
            numbers,
        );
    }
    Ruling::new(
        Verdict::Pass,
        format!(
            "at most {max_in_flight} of {ceiling} slots held at once over {} grants ({denied} denied, \
             {indeterminate} indeterminate)",
            all.len()
        ),
        numbers,
    )
}

/// The longest lease the servers granted in `histories`, in ms: `lease_expires_at` (or a
/// Heartbeat's `next_deadline`) less the moment the call was made, so at least the server's
/// TTL. A server keeps a TTL of its own (a fixed 2 s, say); spec 8 has a judge read it from the
/// replies, never assume the scenario's. 0 when no reply stated one.
pub fn granted_lease_ms<'a>(histories: impl IntoIterator<Item = &'a WorkerHistory>) -> u64 {
    let mut longest = 0i64;
    for h in histories {
        for c in &h.calls {
            let deadline = match &c.outcome {
                CallOutcome::Ok(Reply::Admit {
                    lease_expires_at, ..
                }) => *lease_expires_at,
                CallOutcome::Ok(Reply::Heartbeat { next_deadline, .. }) => *next_deadline,
                _ => continue,
            };
            if deadline > 0 {
                longest = longest.max(deadline - c.invoke_us / 1000);
            }
        }
    }
    longest.max(0) as u64
}

/// How long after a fault a reclaim may take: the lease the server granted the faulted
/// workers (every renewal of theirs was sent before the fault), one sweep, and a margin for
/// the contenders' retries and calls.
#[derive(Debug, Clone, Copy)]
pub struct ReclaimBound {
    pub lease_ms: u64,
    pub sweep_ms: u64,
    pub margin_ms: u64,
}

impl ReclaimBound {
    pub fn total_ms(&self) -> u64 {
        self.lease_ms + self.sweep_ms + self.margin_ms
    }

    fn explain(&self) -> String {
        format!(
            "{} ms = granted lease {} ms + sweep {} ms + margin {} ms",
            self.total_ms(),
            self.lease_ms,
            self.sweep_ms,
            self.margin_ms
        )
    }
}

/// Spec 8's reclaim, judged so that a slow machine is never read as a slow server: the
/// reclaim passes when every slot was re-granted by `fault + bound`, and fails only on a
/// witness that a slot was still taken after the bound, namely an Admit sent after it and
/// denied before enough re-grants could have been processed to fill every slot. Late
/// re-grants without such a witness (the contenders' own calls came late) are unknown.
pub fn judge_reclaim(
    contenders: &[&WorkerHistory],
    fault: &FaultRecord,
    fault_us: i64,
    slots: u64,
    bound: &ReclaimBound,
) -> Ruling {
    let within_ms = bound.total_ms();
    let bound_us = fault_us + within_ms as i64 * 1000;
    let mut before = 0u64;
    // Re-grants after the fault as (completed, invoked, call); denials sent after the bound.
    let mut after: Vec<(i64, i64, String)> = Vec::new();
    let mut late_denials: Vec<(i64, i64, String)> = Vec::new();
    let mut last_admit_us = i64::MIN;
    for h in contenders {
        if fault.workers.contains(&h.label()) {
            continue;
        }
        for c in &h.calls {
            if matches!(c.op, Op::Admit { .. }) {
                last_admit_us = last_admit_us.max(c.invoke_us);
            }
            let (Op::Admit { .. }, CallOutcome::Ok(Reply::Admit { decision, .. })) =
                (&c.op, &c.outcome)
            else {
                continue;
            };
            if !decision.allowed {
                if c.invoke_us >= bound_us {
                    late_denials.push((c.invoke_us, c.end_us(), at(h, c.seq)));
                }
            } else if c.end_us() < fault_us {
                before += 1;
            } else {
                after.push((c.end_us(), c.invoke_us, at(h, c.seq)));
            }
        }
    }
    after.sort();
    late_denials.sort();
    let latencies: Vec<f64> = after
        .iter()
        .map(|(t, _, _)| ms_between(fault_us, *t))
        .collect();
    let nth = latencies.get(slots as usize - 1).copied();
    // The first denial after the bound that came while fewer re-grants than slots had even
    // been sent: every slot was then neither re-granted nor free, so one was still held by
    // a faulted worker.
    let witness = late_denials.iter().find_map(|(invoke, end, call)| {
        let regranted = after.iter().filter(|(_, sent, _)| sent < end).count() as u64;
        (regranted < slots).then_some((*invoke, call.as_str(), regranted))
    });
    let numbers = json!({
        "fault": fault.name,
        "slots": slots,
        "withinMs": within_ms,
        "grantedLeaseMs": bound.lease_ms,
        "sweepMs": bound.sweep_ms,
        "marginMs": bound.margin_ms,
        "grantedBeforeFault": before,
        "grantedAfterFault": after.len(),
        "firstReclaimMs": latencies.first(),
        "allReclaimedMs": nth,
        "deniedAfterBound": late_denials.len(),
    });
    if bound.lease_ms == 0 {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "the workers taken away by `{}` were granted no lease with a `lease_expires_at` or \
                 `next_deadline`, so the reclaim cannot be timed (spec 8: a judge reads the TTL \
                 from them)",
                fault.name
            ),
            numbers,
        );
    }
    if before > 0 {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "the other workers were granted {before} slots before `{}`: the faulted holders \
                 did not hold every slot, so reclaim is not shown",
                fault.name
            ),
            numbers,
        );
    }
    if let Some(ms) = nth.filter(|ms| *ms <= within_ms as f64) {
        return Ruling::new(
            Verdict::Pass,
            format!(
                "{slots} slots re-admitted after `{}`: first after {} ms, all after {ms} ms \
                 (allowed {})",
                fault.name,
                latencies[0],
                bound.explain()
            ),
            numbers,
        );
    }
    let regranted = match nth {
        Some(ms) => format!("the {slots} slots were re-admitted only after {ms} ms"),
        None => format!("only {} of {slots} slots were re-admitted", after.len()),
    };
    if let Some((invoke, call, sent)) = witness {
        return Ruling::new(
            Verdict::Fail,
            format!(
                "after `{}` {regranted}: {call}, sent {} ms after the fault, past the bound of \
                 {}, was denied when only {sent} of {slots} re-admits had been sent, so a slot was \
                 still held by a worker the fault took away (spec 8: reclaim lands within TTL + one \
                 sweep)",
                fault.name,
                ms_between(fault_us, invoke),
                bound.explain()
            ),
            numbers,
        );
    }
    let why = if last_admit_us < bound_us {
        format!(
            "the last Admit was sent {} ms after the fault, before the bound of {}: the run ended \
             too soon to show it",
            ms_between(fault_us, last_admit_us.max(fault_us)),
            bound.explain()
        )
    } else {
        format!(
            "no Admit sent after the bound of {} was denied before the re-admits were sent: the \
             contenders' own calls came late (a busy machine), which shows nothing against the \
             server",
            bound.explain()
        )
    };
    Ruling::new(
        Verdict::Unknown,
        format!("after `{}` {regranted}, but {why}", fault.name),
        numbers,
    )
}

pub fn judge_renewed(histories: &[&WorkerHistory], ttl_ms: u64, min_hold_ms: u64) -> Ruling {
    let all = holds(histories, ttl_ms);
    let t0 = histories.first().map_or(0, |h| h.t0_us);
    let mut longest_us = 0i64;
    let mut heartbeats = 0usize;
    for h in &all {
        heartbeats += h.heartbeats.len();
        if !h.chain_broken {
            longest_us = longest_us.max(h.definite_end_us() - h.granted_us);
        }
    }
    let numbers = json!({
        "ttlMs": ttl_ms,
        "holds": all.len(),
        "heartbeats": heartbeats,
        "longestRenewedHoldMs": longest_us as f64 / 1000.0,
        "minHoldMs": min_hold_ms,
    });
    if let Some(h) = all.iter().find(|h| h.wrongly_reclaimed.is_some()) {
        let (seq, done) = h.wrongly_reclaimed.expect("found above");
        return Ruling::new(
            Verdict::Fail,
            format!(
                "{}: heartbeat call {seq} at +{} ms said the lease was gone although every renewal \
                 came within the TTL ({ttl_ms} ms, or the shorter lease the server stated)",
                h.label(),
                ms_between(t0, done)
            ),
            numbers,
        );
    }
    if longest_us < min_hold_ms as i64 * 1000 {
        // Nothing wrong was seen, only too little: the holder's renewals came late (a busy
        // machine stalls the client as well as the server) or its hold was short.
        let late = all.iter().filter(|h| h.chain_broken).count();
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "no hold was renewed in time for {min_hold_ms} ms (longest {} ms over {} holds, \
                 {late} with a renewal that came later than the TTL allows): not exercised",
                longest_us / 1000,
                all.len()
            ),
            numbers,
        );
    }
    Ruling::new(
        Verdict::Pass,
        format!(
            "a hold renewed by {heartbeats} heartbeats for {} ms (TTL {ttl_ms} ms) was never reclaimed",
            longest_us / 1000
        ),
        numbers,
    )
}

pub fn judge_lost_after_pause(
    group: &[&WorkerHistory],
    fault: &FaultRecord,
    paused_us: i64,
    resumed_us: Option<i64>,
    sweep_ms: u64,
) -> Ruling {
    let unknown = |why: String| Ruling::new(Verdict::Unknown, why, json!({ "fault": fault.name }));
    let Some(resumed_us) = resumed_us else {
        return unknown(format!("no SIGCONT followed `{}`", fault.name));
    };
    let paused: Vec<&WorkerHistory> = group
        .iter()
        .copied()
        .filter(|h| fault.workers.contains(&h.label()))
        .collect();
    // Far longer than any TTL: only the pause itself matters here.
    let all = holds(&paused, 3_600_000);
    let Some(hold) = all
        .iter()
        .find(|h| h.granted_us < paused_us && h.release_us.is_none_or(|r| r > paused_us))
    else {
        return unknown(format!(
            "the workers paused by `{}` held nothing at the time",
            fault.name
        ));
    };
    let t0 = hold.worker.t0_us;
    let last_renewal = hold
        .heartbeats
        .iter()
        .map(|hb| hb.invoke_us)
        .filter(|t| *t < paused_us)
        .max()
        .unwrap_or(hold.granted_us);
    let after: Vec<&Heartbeat> = hold
        .heartbeats
        .iter()
        .filter(|hb| hb.invoke_us >= resumed_us)
        .collect();
    // The lease the server stated for this holder: until it and one sweep have passed since
    // the last renewal, the lease may rightly still be live.
    let lease_ms = granted_lease_ms(paused.iter().copied());
    let lapsed_us = last_renewal + (lease_ms + sweep_ms) as i64 * 1000;
    let numbers = json!({
        "fault": fault.name,
        "pausedMs": ms_between(paused_us, resumed_us),
        "lastRenewalBeforePauseMs": ms_between(t0, last_renewal),
        "grantedLeaseMs": lease_ms,
        "sweepMs": sweep_ms,
        "heartbeatsAfterResume": after.len(),
        "lateReleaseAtMs": hold.release_us.map(|r| ms_between(t0, r)),
    });
    if let Some(Heartbeat {
        seq,
        complete_us: done,
        ..
    }) = after.iter().find(|hb| hb.live).copied()
    {
        if lease_ms == 0 || resumed_us <= lapsed_us {
            return Ruling::new(
                Verdict::Unknown,
                format!(
                    "{}: heartbeat call {seq} after the pause found the lease live, but the pause \
                     ended {} ms after the last renewal, not past the granted lease ({lease_ms} ms, \
                     0 = not stated) + sweep ({sweep_ms} ms): the lease may rightly have been live",
                    hold.label(),
                    ms_between(last_renewal, resumed_us)
                ),
                numbers,
            );
        }
        return Ruling::new(
            Verdict::Fail,
            format!(
                "{}: after a pause of {} ms, heartbeat call {seq} at +{} ms still found the lease live, \
                 though the granted lease ({lease_ms} ms) + sweep ({sweep_ms} ms) ran out at +{} ms \
                 (spec 8: the slot is reclaimed once the TTL passes without a Heartbeat)",
                hold.label(),
                ms_between(paused_us, resumed_us),
                ms_between(t0, *done),
                ms_between(t0, lapsed_us)
            ),
            numbers,
        );
    }
    let Some(release) = hold.release_us.filter(|r| *r >= resumed_us) else {
        return Ruling::new(
            Verdict::Unknown,
            format!("{}: no late Release was sent after waking", hold.label()),
            numbers,
        );
    };
    Ruling::new(
        Verdict::Pass,
        format!(
            "{} lost its slot during a pause of {} ms; its late Release at +{} ms {}",
            hold.label(),
            ms_between(paused_us, resumed_us),
            ms_between(t0, release),
            if after.is_empty() {
                "came without a heartbeat"
            } else {
                "followed a heartbeat that found the lease reclaimed"
            }
        ),
        numbers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battle::checker::testkit::*;
    use crate::battle::history::Call;
    use crate::battle::scenario::FaultAction;

    fn admit(seq: u64, t0: i64, t1: i64, lease: Option<&str>) -> Call {
        call(
            seq,
            Op::Admit { cost: 1 },
            t0,
            Some(t1),
            CallOutcome::Ok(Reply::Admit {
                decision: decision(lease.is_some(), 1, 0, 0),
                lease_id: lease.unwrap_or_default().into(),
                // A 1000 ms lease from the reply (testkit times are ms since epoch 0).
                lease_expires_at: if lease.is_some() { t1 + 1000 } else { 0 },
            }),
        )
    }

    fn release(seq: u64, t0: i64, lease: &str) -> Call {
        call(
            seq,
            Op::Release {
                lease_id: lease.into(),
            },
            t0,
            Some(t0 + 1),
            CallOutcome::Ok(Reply::Released),
        )
    }

    fn heartbeat(seq: u64, t0: i64, lease: &str, live: bool) -> Call {
        let ids = vec![lease.to_string()];
        call(
            seq,
            Op::Heartbeat {
                lease_ids: ids.clone(),
            },
            t0,
            Some(t0 + 2),
            CallOutcome::Ok(Reply::Heartbeat {
                live: if live { ids.clone() } else { vec![] },
                reclaimed: if live { vec![] } else { ids },
                next_deadline: if live { t0 + 2 + 1000 } else { 0 },
            }),
        )
    }

    fn conc(hs: &[WorkerHistory], ceiling: u64) -> Ruling {
        let refs: Vec<&WorkerHistory> = hs.iter().collect();
        judge_concurrency(&refs, ceiling, 1000, 1)
    }

    #[test]
    fn back_to_back_holds_pass() {
        let hs = vec![
            history(
                "churn",
                0,
                vec![admit(1, 0, 2, Some("a")), release(2, 50, "a")],
            ),
            // Granted the instant after a's release was sent: the release may have come first.
            history(
                "churn",
                1,
                vec![admit(1, 40, 50, Some("b")), release(2, 90, "b")],
            ),
        ];
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = conc(&hs, 1);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["maxInFlight"], 1);
    }

    #[test]
    fn overlap_above_the_ceiling_fails_naming_the_holds() {
        let hs = vec![
            history(
                "churn",
                0,
                vec![admit(1, 0, 2, Some("a")), release(2, 50, "a")],
            ),
            history(
                "churn",
                1,
                vec![admit(1, 10, 20, Some("b")), release(2, 60, "b")],
            ),
            history(
                "churn",
                2,
                vec![admit(1, 10, 21, Some("c")), release(2, 60, "c")],
            ),
        ];
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = conc(&hs, 2);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("3 slots held at once at +21 ms (ceiling 2)"),
            "{msg}"
        );
        assert!(msg.contains("churn[0] call 1 lease a"), "{msg}");
        assert_eq!(n["maxInFlight"], 3);
    }

    #[test]
    fn an_unrenewed_hold_may_lapse_after_the_ttl() {
        // a never heartbeats and never releases (killed): after 1 s the slot may be reclaimed.
        let hs = vec![
            history("holder", 0, vec![admit(1, 0, 2, Some("a"))]),
            history(
                "other",
                0,
                vec![admit(1, 1200, 1201, Some("b")), release(2, 1300, "b")],
            ),
        ];
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = conc(&hs, 1);
        assert_eq!(v, Verdict::Pass, "{msg}");
    }

    fn admit_with_deadline(seq: u64, t0: i64, t1: i64, lease: &str, deadline: i64) -> Call {
        let mut c = admit(seq, t0, t1, Some(lease));
        if let CallOutcome::Ok(Reply::Admit {
            lease_expires_at, ..
        }) = &mut c.outcome
        {
            *lease_expires_at = deadline;
        }
        c
    }

    #[test]
    fn a_server_that_grants_a_shorter_lease_is_judged_by_the_lease_it_stated() {
        // The policy says 1000 ms; the server granted 300 ms and reclaimed after it: correct.
        let hs = vec![
            history("holder", 0, vec![admit_with_deadline(1, 0, 2, "a", 302)]),
            history(
                "other",
                0,
                vec![admit(1, 400, 401, Some("b")), release(2, 500, "b")],
            ),
        ];
        let ruling = conc(&hs, 1);
        assert_eq!(ruling.verdict, Verdict::Pass, "{}", ruling.summary);
        // Granted before the stated deadline, the second hold is still a violation.
        let hs = vec![
            history("holder", 0, vec![admit_with_deadline(1, 0, 2, "a", 302)]),
            history(
                "other",
                0,
                vec![admit(1, 150, 200, Some("b")), release(2, 500, "b")],
            ),
        ];
        assert_eq!(conc(&hs, 1).verdict, Verdict::Fail);
    }

    #[test]
    fn a_deadline_beyond_the_policys_ttl_is_not_trusted() {
        // A skewed server clock can state a far deadline; the hold still may lapse after 1000 ms.
        let hs = vec![
            history("holder", 0, vec![admit_with_deadline(1, 0, 2, "a", 60_000)]),
            history(
                "other",
                0,
                vec![admit(1, 1200, 1201, Some("b")), release(2, 1300, "b")],
            ),
        ];
        let ruling = conc(&hs, 1);
        assert_eq!(ruling.verdict, Verdict::Pass, "{}", ruling.summary);
    }

    #[test]
    fn a_heartbeat_after_the_stated_lease_does_not_prove_the_hold() {
        // Lease of 300 ms stated; the heartbeat at 500 ms comes after it, so its "gone" is no
        // wrong reclaim, and the renewal chain is broken.
        let holder = history(
            "holder",
            0,
            vec![
                admit_with_deadline(1, 0, 2, "a", 302),
                heartbeat(2, 500, "a", false),
            ],
        );
        let ruling = judge_renewed(&[&holder], 1000, 200);
        assert_eq!(ruling.verdict, Verdict::Unknown, "{}", ruling.summary);
    }

    #[test]
    fn a_renewed_hold_blocks_others_and_stealing_it_fails() {
        let holder = history(
            "holder",
            0,
            vec![
                admit(1, 0, 2, Some("a")),
                heartbeat(2, 400, "a", true),
                heartbeat(3, 800, "a", true),
                heartbeat(4, 1200, "a", true),
                release(5, 1500, "a"),
            ],
        );
        let thief = history(
            "other",
            0,
            vec![admit(1, 1100, 1101, Some("b")), release(2, 1150, "b")],
        );
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = conc(&[holder.clone(), thief], 1);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("holder[0] call 1 lease a"), "{msg}");
        // Renewed: passes with the heartbeats, unknown (not exercised) when the hold was short.
        let refs = [&holder];
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = judge_renewed(&refs, 1000, 1400);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["heartbeats"], 3);
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = judge_renewed(&refs, 1000, 2000);
        assert_eq!(v, Verdict::Unknown);
        assert!(msg.contains("not exercised"), "{msg}");
    }

    #[test]
    fn a_heartbeat_in_time_that_finds_the_lease_gone_fails_renewed() {
        let holder = history(
            "holder",
            0,
            vec![
                admit(1, 0, 2, Some("a")),
                heartbeat(2, 400, "a", true),
                heartbeat(3, 800, "a", false),
                release(4, 900, "a"),
            ],
        );
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = judge_renewed(&[&holder], 1000, 100);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("heartbeat call 3 at +802 ms said the lease was gone"),
            "{msg}"
        );
    }

    fn parts(r: Ruling) -> (Verdict, String, serde_json::Value) {
        (r.verdict, r.summary, r.numbers)
    }

    fn fault(name: &str, action: FaultAction, at_ms: i64, workers: &[&str]) -> FaultRecord {
        FaultRecord {
            name: name.into(),
            action,
            planned_at_ms: at_ms as u64,
            at_us: Some(at_ms * 1000),
            done_us: None,
            server: None,
            workers: workers.iter().map(|w| w.to_string()).collect(),
            targets: vec![],
            error: None,
            failover: None,
        }
    }

    #[test]
    fn reclaim_is_timed_by_the_granted_lease_and_the_sweep() {
        let kill = fault("kill", FaultAction::SigkillWorkers, 500, &["holders[0]"]);
        // The holder was granted a 1000 ms lease at +2 ms, renewed for 1000 ms at +400.
        let holder = history(
            "holders",
            0,
            vec![admit(1, 0, 2, Some("h")), heartbeat(2, 400, "h", true)],
        );
        assert_eq!(granted_lease_ms([&holder]), 1002);
        let contender = |i, t| {
            history(
                "contenders",
                i,
                vec![
                    admit(1, 100, 101, None),
                    admit(2, t - 10, t - 9, None),
                    admit(3, t, t + 1, Some("x")),
                ],
            )
        };
        let hs = [contender(0, 1400), contender(1, 1700)];
        let refs: Vec<&WorkerHistory> = hs.iter().collect();
        let bound = |lease_ms, sweep_ms| ReclaimBound {
            lease_ms,
            sweep_ms,
            margin_ms: 100,
        };
        let (v, msg, n) = parts(judge_reclaim(&refs, &kill, 500_000, 2, &bound(1002, 1000)));
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["firstReclaimMs"], 901.0);
        assert_eq!(n["allReclaimedMs"], 1201.0);
        assert_eq!(n["withinMs"], 2102);
        // A late reclaim: past the lease + sweep + margin.
        let (v, msg, _) = parts(judge_reclaim(&refs, &kill, 500_000, 2, &bound(600, 200)));
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains(
                "the 2 slots were re-admitted only after 1201 ms: contenders[1] call 2, sent 1190 \
                 ms after the fault, past the bound of 900 ms = granted lease 600 ms + sweep 200 \
                 ms + margin 100 ms, was denied when only 1 of 2 re-admits had been sent"
            ),
            "{msg}"
        );
        // A reclaim that never came, though the contenders kept asking past the bound.
        let (v, msg, _) = parts(judge_reclaim(&refs, &kill, 500_000, 3, &bound(600, 200)));
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains("only 2 of 3 slots were re-admitted: contenders[1] call 2, sent 1190 ms"),
            "{msg}"
        );
        // Late re-grants, but no denial after the bound to show a slot was still taken: the
        // contenders were slow (a starved machine), not the server.
        let slow = |i, t| {
            history(
                "contenders",
                i,
                vec![admit(1, 100, 101, None), admit(2, t, t + 1, Some("x"))],
            )
        };
        let hs = [slow(0, 1500), slow(1, 1600)];
        let slow_refs: Vec<&WorkerHistory> = hs.iter().collect();
        let (v, msg, _) = parts(judge_reclaim(
            &slow_refs,
            &kill,
            500_000,
            2,
            &bound(600, 200),
        ));
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(msg.contains("the contenders' own calls came late"), "{msg}");
        // ... but when they stopped before the bound, it is not shown either way.
        let (v, msg, _) = parts(judge_reclaim(&refs, &kill, 500_000, 3, &bound(2000, 1000)));
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(msg.contains("the run ended too soon"), "{msg}");
        // No lease stated: the reclaim cannot be timed.
        let (v, msg, _) = parts(judge_reclaim(&refs, &kill, 500_000, 2, &bound(0, 1000)));
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(msg.contains("cannot be timed"), "{msg}");
    }

    #[test]
    fn late_release_after_a_pause() {
        let stop = fault("stop", FaultAction::SigstopWorkers, 300, &["holder[0]"]);
        let good = history(
            "holder",
            0,
            vec![
                admit(1, 0, 2, Some("a")),
                heartbeat(2, 200, "a", true),
                heartbeat(3, 2600, "a", false),
                release(4, 2610, "a"),
            ],
        );
        let (v, msg, n) = parts(judge_lost_after_pause(
            &[&good],
            &stop,
            300_000,
            Some(2_500_000),
            1000,
        ));
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["lateReleaseAtMs"], 2610.0);
        let mut never = good.clone();
        never.calls[2] = heartbeat(3, 2600, "a", true);
        // Renewed at +200 for 1002 ms; + a 1000 ms sweep: gone by +2202, woken at +2500.
        let (v, msg, _) = parts(judge_lost_after_pause(
            &[&never],
            &stop,
            300_000,
            Some(2_500_000),
            1000,
        ));
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains(
                "still found the lease live, though the granted lease (1002 ms) + sweep (1000 ms) \
                 ran out at +2202 ms"
            ),
            "{msg}"
        );
        // With a 2 s sweep the lease may rightly still be live at +2500.
        let (v, msg, _) = parts(judge_lost_after_pause(
            &[&never],
            &stop,
            300_000,
            Some(2_500_000),
            2000,
        ));
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(msg.contains("may rightly have been live"), "{msg}");
    }

    #[test]
    fn the_late_release_freeing_a_new_holders_slot_shows_as_overlap() {
        // a paused from 300 to 2500; b took the slot at 1400; a's late release at 2610 freed
        // b's slot on a faulty server, so c got in while b still held it.
        let a = history(
            "holder",
            0,
            vec![
                admit(1, 0, 2, Some("a")),
                heartbeat(2, 200, "a", true),
                release(3, 2610, "a"),
            ],
        );
        let b = history(
            "contenders",
            0,
            vec![
                admit(1, 1400, 1401, Some("b")),
                heartbeat(2, 1700, "b", true),
                heartbeat(3, 2000, "b", true),
                heartbeat(4, 2300, "b", true),
                heartbeat(5, 2600, "b", true),
                release(6, 2900, "b"),
            ],
        );
        let c = history(
            "contenders",
            1,
            vec![admit(1, 2620, 2621, Some("c")), release(2, 2700, "c")],
        );
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = conc(&[a, b, c], 1);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("contenders[0] call 1 lease b"), "{msg}");
        assert!(msg.contains("contenders[1] call 1 lease c"), "{msg}");
    }
}
