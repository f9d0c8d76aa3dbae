//! What `Monitor` reports: per-policy counts of the decisions made, and a live feed of denials.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::model::Decision;
use crate::proto;

/// How many denials a slow `Watch` subscriber may fall behind before it skips some.
const DENIAL_BACKLOG: usize = 1024;

pub struct Monitor {
    counters: Mutex<BTreeMap<String, Counts>>,
    denials: broadcast::Sender<proto::Denial>,
    /// The `stale-snapshot` fault: denials are not counted.
    ignore_denials: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    allowed: i64,
    denied: i64,
}

impl Monitor {
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a str>, ignore_denials: bool) -> Self {
        let counters = policies
            .into_iter()
            .map(|p| (p.to_owned(), Counts::default()))
            .collect();
        Monitor {
            counters: Mutex::new(counters),
            denials: broadcast::channel(DENIAL_BACKLOG).0,
            ignore_denials,
        }
    }

    /// Counts one decision and publishes it to watchers when it is a denial.
    pub fn record(&self, policy: &str, key: &str, decision: &Decision, at: f64) {
        {
            let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let counts = counters.entry(policy.to_owned()).or_default();
            if decision.allowed {
                counts.allowed += 1;
            } else if !self.ignore_denials {
                counts.denied += 1;
            }
        }
        if !decision.allowed {
            // No subscriber is not an error: nobody is watching.
            let _ = self.denials.send(proto::Denial {
                policy: policy.to_owned(),
                key: key.to_owned(),
                at: at as i64,
                decision: Some(to_proto(decision)),
            });
        }
    }

    pub fn snapshot(&self, taken_at: f64) -> proto::Snapshot {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let policies: Vec<proto::PolicyCounters> = counters
            .iter()
            .map(|(policy, c)| proto::PolicyCounters {
                policy: policy.clone(),
                allowed: c.allowed,
                denied: c.denied,
            })
            .collect();
        proto::Snapshot {
            taken_at: taken_at as i64,
            allowed_total: policies.iter().map(|p| p.allowed).sum(),
            denied_total: policies.iter().map(|p| p.denied).sum(),
            policies,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<proto::Denial> {
        self.denials.subscribe()
    }
}

pub fn to_proto(d: &Decision) -> proto::Decision {
    proto::Decision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_at: d.reset_at,
        retry_after_ms: d.retry_after_ms,
    }
}

pub fn from_proto(d: &proto::Decision) -> Decision {
    Decision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_at: d.reset_at,
        retry_after_ms: d.retry_after_ms,
    }
}
