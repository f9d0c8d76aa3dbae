//! `docs/scenarios.md`, generated from the scenario files and the checks: each check (assertion
//! kind) with what it proves, its parameters and the numbers its verdict reports, then every
//! scenario with its fleet, workers, faults and assertions. `tk-conform battle --docs` rewrites
//! the file; a test fails when the committed one is stale.

use super::scenario::Scenario;

/// Where the generated page lives, relative to the project root.
pub const DOCS_FILE: &str = "docs/scenarios.md";

/// One assertion kind, for people.
pub struct CheckDoc {
    pub kind: &'static str,
    pub proves: &'static str,
    pub parameters: &'static [(&'static str, &'static str)],
    /// The keys of the verdict's `numbers` in `result.json`.
    pub numbers: &'static [&'static str],
}

const GROUPS: (&str, &str) = ("groups", "the worker groups judged (default: every group)");

/// Every assertion kind the checker judges (`battle::checker`), in the order of `Assertion`.
pub const CHECKS: &[CheckDoc] = &[
    CheckDoc {
        kind: "cap",
        proves: "admitted units per window (attributed by each decision's `resetAt`) or per run \
                 never exceed the limit; indeterminate calls widen the bound instead of failing it",
        parameters: &[
            GROUPS,
            ("limit", "the ceiling per window or per run"),
            ("per", "`window` (default) or `run`"),
            (
                "exact",
                "saturated windows must admit exactly `limit`, and one must saturate",
            ),
            (
                "slack",
                "tolerated overshoot (e.g. `fleet × (batch − 1)` for uncoupled leases)",
            ),
            (
                "min_windows",
                "at least this many windows admitted something (default 1)",
            ),
            (
                "distinct_remaining",
                "allowed decisions of a window each report a different `remaining`",
            ),
            (
                "window_ms",
                "the window grid for decisions whose `resetAt` had already passed",
            ),
            (
                "max_indeterminate",
                "most indeterminate calls a pass may lean on (default: one per worker)",
            ),
        ],
        numbers: &[
            "admitted",
            "denied",
            "failed",
            "indeterminate",
            "limit",
            "slack",
            "per",
            "windows",
            "windowsExercised",
            "maxWindowAdmitted",
            "overshoot",
            "lostUpdates",
            "staleDecisions",
            "perWindow[resetAt, admitted, denied, possiblyAdmitted]",
        ],
    },
    CheckDoc {
        kind: "budget",
        proves: "a token budget is overshot only by the debit that crosses it in each window",
        parameters: &[
            GROUPS,
            ("budget", "tokens per window"),
            (
                "max_indeterminate",
                "most indeterminate calls a pass may lean on",
            ),
        ],
        numbers: &[
            "admittedTokens",
            "budget",
            "denied",
            "failed",
            "indeterminate",
            "largestDebit",
            "overshoot",
            "windows",
            "perWindow[resetAt, possiblyAdmitted]",
        ],
    },
    CheckDoc {
        kind: "concurrency",
        proves: "slots held at once, rebuilt from admit/release intervals (a hold not renewed \
                 within the TTL may have been reclaimed), never exceed the ceiling",
        parameters: &[
            GROUPS,
            ("ceiling", "most slots held at once"),
            (
                "ttl_ms",
                "the policy's lease TTL: a hold not renewed within it may have been reclaimed \
                 (a server that states a shorter lease in `lease_expires_at` is judged by its own)",
            ),
            (
                "min_admits",
                "at least this many admits were granted (default 1)",
            ),
        ],
        numbers: &[
            "ceiling",
            "ttlMs",
            "granted",
            "denied",
            "indeterminate",
            "maxInFlight",
            "violations",
        ],
    },
    CheckDoc {
        kind: "reclaim",
        proves: "after a fault took holders away, other workers are granted the freed slots in time",
        parameters: &[
            ("fault", "the fault that took the holders away"),
            GROUPS,
            ("slots", "fresh admits expected"),
            (
                "margin_ms",
                "allowed beyond the lease the servers granted the faulted workers (read from \
                 `lease_expires_at` / `next_deadline`) and the sweep (`topology.sweep_ms` or \
                 `battle --sweep-ms`, default 1000): the contenders' retries and calls (default 500)",
            ),
        ],
        numbers: &[
            "fault",
            "slots",
            "withinMs",
            "grantedLeaseMs",
            "sweepMs",
            "marginMs",
            "grantedBeforeFault",
            "grantedAfterFault",
            "firstReclaimMs",
            "allReclaimedMs",
        ],
    },
    CheckDoc {
        kind: "renewed",
        proves: "a hold renewed by heartbeats is never reclaimed while renewed",
        parameters: &[
            GROUPS,
            (
                "ttl_ms",
                "the policy's lease TTL: each heartbeat within it renews the hold (a server that \
                 states a shorter lease in `lease_expires_at` is judged by its own)",
            ),
            (
                "min_hold_ms",
                "some renewed hold lasted at least this long (else unknown: nothing was shown)",
            ),
        ],
        numbers: &[
            "holds",
            "heartbeats",
            "longestRenewedHoldMs",
            "minHoldMs",
            "ttlMs",
        ],
    },
    CheckDoc {
        kind: "lost-after-pause",
        proves: "a holder paused past its granted lease + one sweep finds its lease gone when it \
                 wakes, and its late release frees nothing of the new holder's",
        parameters: &[
            ("fault", "the pause (`sigstop-workers`)"),
            ("group", "the paused group"),
        ],
        numbers: &[
            "fault",
            "pausedMs",
            "lastRenewalBeforePauseMs",
            "grantedLeaseMs",
            "sweepMs",
            "heartbeatsAfterResume",
            "lateReleaseAtMs",
        ],
    },
    CheckDoc {
        kind: "failover",
        proves: "service-door workers that used a killed server moved to another one and kept deciding",
        parameters: &[("fault", "the `sigkill-server` fault"), GROUPS],
        numbers: &[
            "fault",
            "server",
            "workersMoved",
            "workersStranded",
            "decisionsAfterKill",
            "indeterminateAtKill",
            "slowestFailoverMs",
        ],
    },
    CheckDoc {
        kind: "resumes",
        proves: "after a fault (e.g. a Redis restart), decisions resume in time through every door",
        parameters: &[
            ("fault", "the fault"),
            GROUPS,
            ("within_ms", "how soon the first decision comes"),
        ],
        numbers: &[
            "fault",
            "withinMs",
            "firstDecisionAfterMs",
            "decisionsAfter",
            "errorsAfter",
            "sampleError",
        ],
    },
    CheckDoc {
        kind: "cluster-keys",
        proves: "every key a script touched is declared in its KEYS and all of a call's keys \
                 hash to one Redis Cluster slot, as the store saw it (MONITOR on every node, a \
                 replay of each script on a private Redis, and the calls a cluster refused)",
        parameters: &[],
        numbers: &[
            "calls",
            "findings",
            "refusedByCluster",
            "firstRefusal",
            "truncated",
        ],
    },
];

/// The exec door's checks (`door = "exec"`, `battle --adapter`).
pub const EXEC_CHECKS: &[CheckDoc] = &[
    CheckDoc {
        kind: "family-cap",
        proves: "exec door: admits per window stay within the configured kind's family bound \
                 (fixedWindow and slidingWindowLog exactly the limit, slidingWindowCounter within \
                 its declared tolerance, tokenBucket and gcra burst plus refill), judged from \
                 invoke and complete times on the engine's clock (an explicit clock's `now` \
                 exactly; a window start known only to within a call's round trip counts only \
                 the admits surely inside it, and no interval shorter than a window may hold more \
                 than twice the limit), for all groups together and for each group on its \
                 own clock; a fixedWindow that denied must have admitted the limit; a group that \
                 asked as often as the others yet got nothing in three windows is starved; each \
                 group's share of the admits is reported",
        parameters: &[
            GROUPS,
            (
                "min_saturated",
                "at least this many windows must have denied, else `unknown` (default 1)",
            ),
        ],
        numbers: &[
            "kind",
            "family",
            "clock",
            "params",
            "limit",
            "tolerance",
            "windows",
            "saturatedWindows",
            "maxInWindow",
            "admitted",
            "judgedAdmits",
            "denied",
            "indeterminate",
            "offsetsMs",
            "perGroupMaxInWindow",
            "shares[group, calls, admitted, shareOfAdmits, shareOfCalls]",
            "violations",
        ],
    },
    CheckDoc {
        kind: "admits-again",
        proves: "exec door: the group's first call, made after the family's quiet period (a \
                 full window, two for a counter, or a full refill) plus 100 ms since every other \
                 call and kill, is admitted; sooner is `unknown`",
        parameters: &[(
            "group",
            "the probe group (one worker, one request, started late)",
        )],
        numbers: &["group", "quietPeriodMs", "gapMs", "outcome"],
    },
];

/// The whole page for `scenarios` (in the order given).
pub fn render(scenarios: &[Scenario]) -> String {
    let mut out = String::from(
        "# Battle scenarios and checks\n\n\
         Generated by `tk-conform battle --docs` from `scenarios/*.toml` and the checker \
         (`src/battle/docs.rs`); do not edit by hand. Each verdict is pass, fail or unknown, \
         with its numbers in `result.json`.\n\n## Checks\n",
    );
    for check in CHECKS.iter().chain(EXEC_CHECKS) {
        out.push_str(&format!(
            "\n### `{}`\n\n{}.\n\n",
            check.kind,
            capitalised(check.proves)
        ));
        out.push_str("| parameter | meaning |\n|---|---|\n");
        for (name, meaning) in check.parameters {
            out.push_str(&format!("| `{name}` | {meaning} |\n"));
        }
        out.push_str(&format!(
            "\nVerdict numbers: {}.\n",
            check
                .numbers
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("\n## Scenarios\n");
    for s in scenarios {
        out.push_str(&format!("\n### `{}`\n\n{}\n\n", s.name, s.plan.description));
        if let Some(exec) = &s.plan.exec {
            out.push_str(&format!(
                "- exec: limit {} per {} ms, families {} (`battle --adapter`; each worker starts its own adapter)\n",
                exec.limit,
                exec.window_ms,
                exec.families
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for g in &s.plan.workers {
                let clock = g
                    .clock
                    .map(|c| format!(", adapters under libfaketime {:+} ms", c.offset_ms))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "- workers `{}`: {} × exec door, {}{clock}\n",
                    g.group,
                    g.count,
                    word(&g.operation)
                ));
            }
        } else {
            out.push_str(&format!("- fleet: {} server(s)\n", s.fleet_size(None)));
            if s.plan.topology.redis != super::scenario::RedisTopology::Single {
                out.push_str(&format!("- store: {}\n", word(&s.plan.topology.redis)));
            }
        }
        for g in s.plan.workers.iter().filter(|_| s.plan.exec.is_none()) {
            out.push_str(&format!(
                "- workers `{}`: {} × {} door, {}, policy `{}`\n",
                g.group,
                g.count,
                word(&g.door),
                word(&g.operation),
                g.policy
            ));
        }
        for f in &s.plan.faults {
            let random = f
                .random_within_ms
                .map(|r| format!(" + a seeded random 0..{r} ms"))
                .unwrap_or_default();
            out.push_str(&format!(
                "- fault `{}` at {} ms{random}: {}\n",
                f.name,
                f.at_ms,
                word(&f.action)
            ));
        }
        for a in &s.plan.assertions {
            let mut fields = serde_json::to_value(a).unwrap_or_default();
            if let Some(map) = fields.as_object_mut() {
                map.remove("kind");
                map.retain(|_, v| !v.is_null());
            }
            out.push_str(&format!("- check `{}` {}\n", a.kind(), fields));
        }
    }
    out
}

/// A unit enum's serde name (`fleet-lease`, `sigkill-server`).
fn word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assertion kind the checker knows has a page section, in order.
    #[test]
    fn every_check_is_documented() {
        let kinds: Vec<&str> = CHECKS.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                "cap",
                "budget",
                "concurrency",
                "reclaim",
                "renewed",
                "lost-after-pause",
                "failover",
                "resumes",
                "cluster-keys"
            ]
        );
        let exec: Vec<&str> = EXEC_CHECKS.iter().map(|c| c.kind).collect();
        assert_eq!(exec, ["family-cap", "admits-again"]);
    }
}
