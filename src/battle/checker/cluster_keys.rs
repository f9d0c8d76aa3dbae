//! `cluster-keys`: every key a script touched is declared in its KEYS, and all of one call's
//! keys hash to one Redis Cluster slot. Judged from what the store itself saw (MONITOR on every
//! node, and a replay of each script on a private Redis: see `battle::script_audit`) and from
//! the calls the cluster refused, never from reading the scripts' text.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::{Ruling, Verdict};
use crate::battle::history::{CallOutcome, WorkerHistory};

/// What the store saw of the run's script calls.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptAudit {
    /// Why the calls could not be watched (the check is then `unknown`).
    pub error: Option<String>,
    /// Script calls seen, per script name.
    pub calls: BTreeMap<String, u64>,
    /// Keys a script touched against the rule, one entry per (script, key, reason).
    pub findings: Vec<KeyFinding>,
    /// MONITOR lines were dropped past the audit's bound (what was kept was judged).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFinding {
    pub script: String,
    pub key: String,
    /// The call's KEYS.
    pub declared: Vec<String>,
    pub why: String,
    /// The command that touched it, e.g. `INCR`.
    pub command: String,
    /// `on node 127.0.0.1:7001`, or `in a replay on a private redis-server`.
    pub seen: String,
    pub times: u64,
}

/// Error texts of a Redis Cluster refusing a call's keys.
const REFUSALS: [&str; 3] = ["non local key", "do not hash to the same slot", "CROSSSLOT"];

pub fn judge(audit: &ScriptAudit, histories: &[&WorkerHistory]) -> Ruling {
    let refused: Vec<String> = histories
        .iter()
        .flat_map(|h| &h.calls)
        .filter_map(|c| match &c.outcome {
            CallOutcome::Fail { error } | CallOutcome::Indeterminate { error }
                if REFUSALS.iter().any(|r| error.contains(r)) =>
            {
                Some(error.clone())
            }
            _ => None,
        })
        .collect();
    let numbers = json!({
        "calls": audit.calls,
        "findings": audit.findings,
        "refusedByCluster": refused.len(),
        "firstRefusal": refused.first(),
        "truncated": audit.truncated,
    });
    if let Some(e) = &audit.error {
        return Ruling::new(
            Verdict::Unknown,
            format!("the script calls could not be watched: {e}"),
            numbers,
        );
    }
    if !audit.findings.is_empty() {
        let shown: Vec<String> = audit
            .findings
            .iter()
            .take(3)
            .map(|f| {
                format!(
                    "{} touched `{}` with {} ({}; seen {}, {}×)",
                    f.script, f.key, f.command, f.why, f.seen, f.times
                )
            })
            .collect();
        let more = audit.findings.len().saturating_sub(3);
        let refusals = if refused.is_empty() {
            String::new()
        } else {
            format!("; the cluster refused {} calls", refused.len())
        };
        return Ruling::new(
            Verdict::Fail,
            format!(
                "{} key(s) outside the rule (every key in KEYS, one slot per call): {}{}{refusals}",
                audit.findings.len(),
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ),
            numbers,
        );
    }
    if let Some(first) = refused.first() {
        return Ruling::new(
            Verdict::Fail,
            format!(
                "the cluster refused {} calls for their keys: {first}",
                refused.len()
            ),
            numbers,
        );
    }
    let total: u64 = audit.calls.values().sum();
    if total == 0 {
        return Ruling::new(
            Verdict::Unknown,
            "no script call reached the store, so no key was put to the test".into(),
            numbers,
        );
    }
    let names: Vec<String> = audit
        .calls
        .iter()
        .map(|(n, c)| format!("{n} ×{c}"))
        .collect();
    Ruling::new(
        Verdict::Pass,
        format!(
            "{total} script calls ({}) touched only keys declared in KEYS, each call within one slot",
            names.join(", ")
        ),
        numbers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battle::checker::testkit::{call, history};
    use crate::battle::history::Op;

    fn finding() -> KeyFinding {
        KeyFinding {
            script: "fixedWindow.check".into(),
            key: "tk-conform-audit".into(),
            declared: vec!["ns:cap:k".into()],
            why: "not declared in KEYS".into(),
            command: "INCR".into(),
            seen: "on node 127.0.0.1:7001".into(),
            times: 3,
        }
    }

    #[test]
    fn a_finding_fails_naming_script_key_and_reason() {
        let audit = ScriptAudit {
            calls: [("fixedWindow.check".to_string(), 3)].into(),
            findings: vec![finding()],
            ..ScriptAudit::default()
        };
        let Ruling {
            verdict: v,
            summary,
            ..
        } = judge(&audit, &[]);
        assert_eq!(v, Verdict::Fail);
        for needle in [
            "fixedWindow.check",
            "`tk-conform-audit`",
            "not declared in KEYS",
            "INCR",
        ] {
            assert!(summary.contains(needle), "{summary}");
        }
    }

    #[test]
    fn a_refusal_by_the_cluster_fails_and_clean_calls_pass() {
        let refused = history(
            "g",
            0,
            vec![call(
                1,
                Op::Check { cost: 1 },
                0,
                Some(1),
                CallOutcome::Fail {
                    error: "ERR Script attempted to access a non local key in a cluster node"
                        .into(),
                },
            )],
        );
        let audit = ScriptAudit {
            calls: [("fixedWindow.check".to_string(), 1)].into(),
            ..ScriptAudit::default()
        };
        let Ruling {
            verdict: v,
            summary,
            ..
        } = judge(&audit, &[&refused]);
        assert_eq!(v, Verdict::Fail, "{summary}");
        assert!(summary.contains("non local key"), "{summary}");
        let clean = history("g", 0, Vec::new());
        let Ruling {
            verdict: v,
            summary,
            ..
        } = judge(&audit, &[&clean]);
        assert_eq!(v, Verdict::Pass, "{summary}");
        let Ruling { verdict: v, .. } = judge(&ScriptAudit::default(), &[&clean]);
        assert_eq!(v, Verdict::Unknown);
    }
}
