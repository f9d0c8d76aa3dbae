//! After a fault, the system keeps deciding: clients of a killed server fail over, and calls
//! resume after a Redis restart (scripts reloaded through NOSCRIPT) with no error taken as an admit.

use serde_json::json;

use super::{Ruling, Verdict, at, ms_between};
use crate::battle::faults::FaultRecord;
use crate::battle::history::{CallOutcome, WorkerHistory, server_index};

pub fn judge_failover(histories: &[&WorkerHistory], fault: &FaultRecord, fault_us: i64) -> Ruling {
    let Some(killed) = fault.server else {
        return Ruling::new(
            Verdict::Unknown,
            format!("fault `{}` names no server", fault.name),
            json!({ "fault": fault.name }),
        );
    };
    let (mut moved, mut stranded) = (Vec::new(), Vec::new());
    let (mut cut, mut decided_after) = (0u64, 0u64);
    for h in histories {
        let used_before = h
            .calls
            .iter()
            .any(|c| c.invoke_us < fault_us && server_index(&c.server) == Some(killed));
        if !used_before {
            continue;
        }
        let after: Vec<_> = h.calls.iter().filter(|c| c.end_us() >= fault_us).collect();
        cut += after
            .iter()
            .filter(|c| c.is_indeterminate() && server_index(&c.server) == Some(killed))
            .count() as u64;
        let first_elsewhere = after.iter().find(|c| {
            matches!(c.outcome, CallOutcome::Ok(_))
                && c.invoke_us >= fault_us
                && server_index(&c.server).is_some_and(|s| s != killed)
        });
        decided_after += after
            .iter()
            .filter(|c| matches!(c.outcome, CallOutcome::Ok(_)) && c.invoke_us >= fault_us)
            .count() as u64;
        match first_elsewhere {
            Some(c) => moved.push((h.label(), ms_between(fault_us, c.end_us()))),
            None if after.is_empty() => {}
            None => stranded.push(h.label()),
        }
    }
    let numbers = json!({
        "fault": fault.name,
        "server": killed,
        "workersMoved": moved.len(),
        "workersStranded": stranded,
        "indeterminateAtKill": cut,
        "decisionsAfterKill": decided_after,
        "slowestFailoverMs": moved.iter().map(|m| m.1).fold(0.0, f64::max),
    });
    if !stranded.is_empty() {
        return Ruling::new(
            Verdict::Fail,
            format!(
                "after `{}` killed server {killed}, {} never decided again through another server",
                fault.name,
                stranded.join(", ")
            ),
            numbers,
        );
    }
    if moved.is_empty() {
        return Ruling::new(
            Verdict::Unknown,
            format!(
                "no worker was using server {killed} when `{}` killed it",
                fault.name
            ),
            numbers,
        );
    }
    Ruling::new(
        Verdict::Pass,
        format!(
            "{} workers of server {killed} failed over (slowest after {} ms; {cut} calls cut \
             indeterminate)",
            moved.len(),
            numbers["slowestFailoverMs"]
        ),
        numbers,
    )
}

/// Decisions must come back within `within_ms` of `fault_us`, the moment the fault's action was
/// complete (for a restart: the new server answering), counting only calls made after it. A
/// late first decision fails only on a witness: a call sent after the bound that the system
/// answered with an error. Calls that were merely slow, or timed out, show nothing against it
/// on a busy machine, so without a witness a late resume is unknown.
pub fn judge_resumes(
    histories: &[&WorkerHistory],
    fault: &FaultRecord,
    fault_us: i64,
    within_ms: u64,
) -> Ruling {
    let bound_us = fault_us + within_ms as i64 * 1000;
    let mut first_ok: Option<i64> = None;
    let (mut ok_after, mut errors_after) = (0u64, 0u64);
    let mut sample_error: Option<String> = None;
    // The first call sent after the bound that came back as an error: (sent, call, error).
    let mut witness: Option<(i64, String, String)> = None;
    for h in histories {
        for c in h.calls.iter().filter(|c| c.invoke_us >= fault_us) {
            match &c.outcome {
                CallOutcome::Ok(_) => {
                    ok_after += 1;
                    let t = c.end_us();
                    first_ok = Some(first_ok.map_or(t, |f: i64| f.min(t)));
                }
                CallOutcome::Fail { error } | CallOutcome::Indeterminate { error } => {
                    errors_after += 1;
                    sample_error.get_or_insert_with(|| error.clone());
                    if matches!(c.outcome, CallOutcome::Fail { .. })
                        && c.invoke_us >= bound_us
                        && witness.as_ref().is_none_or(|(t, _, _)| c.invoke_us < *t)
                    {
                        witness = Some((c.invoke_us, at(h, c.seq), error.clone()));
                    }
                }
            }
        }
    }
    let latency = first_ok.map(|t| ms_between(fault_us, t));
    let numbers = json!({
        "fault": fault.name,
        "withinMs": within_ms,
        "firstDecisionAfterMs": latency,
        "decisionsAfter": ok_after,
        "errorsAfter": errors_after,
        "sampleError": sample_error,
    });
    if let Some(ms) = latency.filter(|ms| *ms <= within_ms as f64) {
        return Ruling::new(
            Verdict::Pass,
            format!(
                "decisions resumed {ms} ms after `{}` ({ok_after} after it; {errors_after} calls \
                 failed, recorded as failures, not admits)",
                fault.name
            ),
            numbers,
        );
    }
    let first = latency.map_or("never".to_string(), |ms| format!("{ms} ms"));
    match witness {
        Some((sent, call, error)) => Ruling::new(
            Verdict::Fail,
            format!(
                "no decision within {within_ms} ms after `{}` (first after: {first}; \
                 {errors_after} calls failed after it): {call}, sent {} ms after it, failed with \
                 {error}",
                fault.name,
                ms_between(fault_us, sent)
            ),
            numbers,
        ),
        None => Ruling::new(
            Verdict::Unknown,
            format!(
                "no decision within {within_ms} ms after `{}` (first after: {first}), but no call \
                 sent after the bound came back as an error ({errors_after} failed or timed out \
                 before it or without an answer): too slow to tell",
                fault.name
            ),
            numbers,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battle::checker::testkit::*;
    use crate::battle::history::{Call, Op, server_label};
    use crate::battle::scenario::FaultAction;

    fn via(mut c: Call, server: usize) -> Call {
        c.server = server_label(server, "127.0.0.1:1");
        c
    }

    fn kill(server: usize) -> FaultRecord {
        FaultRecord {
            name: "kill-server".into(),
            action: FaultAction::SigkillServer,
            planned_at_ms: 100,
            at_us: Some(100_000),
            done_us: None,
            server: Some(server),
            workers: vec![],
            targets: vec![],
            error: None,
            failover: None,
        }
    }

    #[test]
    fn failover_to_another_server_passes() {
        let d = decision(true, 10, 5, 1000);
        let h = history(
            "svc",
            0,
            vec![
                via(check_ok(1, 50, d), 1),
                via(check_lost(2, 99), 1),
                via(check_ok(3, 120, d), 2),
            ],
        );
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = judge_failover(&[&h], &kill(1), 100_000);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["indeterminateAtKill"], 1);
    }

    #[test]
    fn a_stranded_worker_fails() {
        let d = decision(true, 10, 5, 1000);
        let failed = call(
            3,
            Op::Check { cost: 1 },
            120,
            Some(121),
            CallOutcome::Fail {
                error: "connection refused".into(),
            },
        );
        let h = history("svc", 0, vec![via(check_ok(1, 50, d), 1), via(failed, 1)]);
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = judge_failover(&[&h], &kill(1), 100_000);
        assert_eq!(v, Verdict::Fail);
        assert!(msg.contains("svc[0] never decided again"), "{msg}");
    }

    #[test]
    fn resumes_within_the_bound_or_fails_with_the_error() {
        let restart = kill(0);
        let d = decision(true, 10, 5, 1000);
        let noscript = |seq, t| {
            call(
                seq,
                Op::Check { cost: 1 },
                t,
                Some(t + 1),
                CallOutcome::Fail {
                    error: "NOSCRIPT No matching script".into(),
                },
            )
        };
        let good = history("direct", 0, vec![noscript(1, 110), check_ok(2, 300, d)]);
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: n,
        } = judge_resumes(&[&good], &restart, 100_000, 1000);
        assert_eq!(v, Verdict::Pass, "{msg}");
        assert_eq!(n["firstDecisionAfterMs"], 201.0);
        let bad = history(
            "direct",
            0,
            vec![noscript(1, 110), noscript(2, 300), noscript(3, 1200)],
        );
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = judge_resumes(&[&bad], &restart, 100_000, 1000);
        assert_eq!(v, Verdict::Fail);
        assert!(
            msg.contains(
                "first after: never; 3 calls failed after it): direct[0] call 3, sent 1100 ms \
                 after it, failed with NOSCRIPT"
            ),
            "{msg}"
        );
        // Errors only before the bound and a late decision: the calls were slow, not shown.
        let slow = history("direct", 0, vec![noscript(1, 110), check_ok(2, 1300, d)]);
        let Ruling {
            verdict: v,
            summary: msg,
            numbers: _,
        } = judge_resumes(&[&slow], &restart, 100_000, 1000);
        assert_eq!(v, Verdict::Unknown, "{msg}");
        assert!(msg.contains("too slow to tell"), "{msg}");
    }
}
