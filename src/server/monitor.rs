//! What `Monitor` reports (spec 8): per-policy counts of the decisions made in a rolling window,
//! the window's recent denials, and a live feed of denials as `DenialEvent`s.
//!
//! The counters restart with each window (`floor(now / window_ms)`), as ThrottleKit's do, so a
//! client compares two snapshots only when they name the same window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::json;
use tokio::sync::broadcast;

use crate::model::Decision;
use crate::proto;

/// How many denials a slow `Watch` subscriber may fall behind before it skips some.
const DENIAL_BACKLOG: usize = 1024;
/// The window the counters cover (ThrottleKit: 60 s).
pub const WINDOW_MS: i64 = 60_000;
/// Denials a snapshot lists in `recent_denials` (the latest ones of the window).
const RECENT_DENIALS: usize = 50;

/// What a snapshot says about a policy besides its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLabel {
    pub name: String,
    pub kind: String,
    pub strategy: String,
    pub limit: i64,
}

/// Who is reporting, for `MonitorMeta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorIdentity {
    pub mode: String,
    pub node_id: String,
}

pub struct Monitor {
    labels: Vec<PolicyLabel>,
    identity: MonitorIdentity,
    window: Mutex<Window>,
    denials: broadcast::Sender<proto::DenialEvent>,
    /// The `stale-snapshot` fault: denials are not counted.
    ignore_denials: bool,
}

#[derive(Debug, Default)]
struct Window {
    index: i64,
    counts: BTreeMap<String, Counts>,
    recent: VecDeque<proto::DenialEvent>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    allowed: i64,
    denied: i64,
}

impl Window {
    /// Restarts the counters when `now` is in a later window than the one counted.
    fn roll_to(&mut self, now_ms: f64) {
        let index = (now_ms / WINDOW_MS as f64).floor() as i64;
        if index != self.index {
            self.index = index;
            self.counts.clear();
            self.recent.clear();
        }
    }
}

impl Monitor {
    pub fn new(labels: Vec<PolicyLabel>, identity: MonitorIdentity, ignore_denials: bool) -> Self {
        Monitor {
            labels,
            identity,
            window: Mutex::default(),
            denials: broadcast::channel(DENIAL_BACKLOG).0,
            ignore_denials,
        }
    }

    /// Counts one decision; a denial (refused on `axis`) is also published to watchers.
    pub fn record(&self, policy: &str, key: &str, decision: &Decision, axis: &str, at: f64) {
        let event = (!decision.allowed).then(|| proto::DenialEvent {
            at: at as i64,
            policy: policy.to_owned(),
            key: key.to_owned(),
            axis: axis.to_owned(),
            limit: decision.limit,
            remaining: decision.remaining,
            retry_after_ms: decision.retry_after_ms,
        });
        {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            window.roll_to(at);
            let counts = window.counts.entry(policy.to_owned()).or_default();
            if decision.allowed {
                counts.allowed += 1;
            } else if !self.ignore_denials {
                counts.denied += 1;
            }
            if let Some(event) = &event {
                if window.recent.len() == RECENT_DENIALS {
                    window.recent.pop_front();
                }
                window.recent.push_back(event.clone());
            }
        }
        if let Some(event) = event {
            // No subscriber is not an error: nobody is watching.
            let _ = self.denials.send(event);
        }
    }

    pub fn snapshot(&self, now_ms: f64) -> proto::Snapshot {
        let (counts, recent) = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            window.roll_to(now_ms);
            (window.counts.clone(), window.recent.clone())
        };
        let meta = proto::MonitorMeta {
            generated_at: now_ms as i64,
            window_ms: WINDOW_MS,
            mode: self.identity.mode.clone(),
            lens_version: env!("CARGO_PKG_VERSION").into(),
            node_id: self.identity.node_id.clone(),
        };
        let policies: Vec<proto::PolicySummary> = self
            .labels
            .iter()
            .map(|label| {
                let c = counts.get(&label.name).copied().unwrap_or_default();
                proto::PolicySummary {
                    name: label.name.clone(),
                    kind: label.kind.clone(),
                    strategy: label.strategy.clone(),
                    allowed: c.allowed,
                    denied: c.denied,
                    limit: label.limit,
                    latency: None,
                    top_denied: Vec::new(),
                    top_requested: Vec::new(),
                }
            })
            .collect();
        let mut snapshot = proto::Snapshot {
            meta: Some(meta),
            policies,
            guards: Vec::new(),
            recent_denials: recent.into_iter().collect(),
            raw_json: String::new(),
        };
        snapshot.raw_json = raw_json(&snapshot).to_string();
        snapshot
    }

    pub fn subscribe(&self) -> broadcast::Receiver<proto::DenialEvent> {
        self.denials.subscribe()
    }
}

/// The snapshot as JSON, field names as in the proto.
fn raw_json(s: &proto::Snapshot) -> serde_json::Value {
    let meta = s.meta.clone().unwrap_or_default();
    json!({
        "meta": {
            "generated_at": meta.generated_at,
            "window_ms": meta.window_ms,
            "mode": meta.mode,
            "lens_version": meta.lens_version,
            "node_id": meta.node_id,
        },
        "policies": s.policies.iter().map(|p| json!({
            "name": p.name,
            "kind": p.kind,
            "strategy": p.strategy,
            "allowed": p.allowed,
            "denied": p.denied,
            "limit": p.limit,
        })).collect::<Vec<_>>(),
        "guards": [],
        "recent_denials": s.recent_denials.iter().map(denial_json).collect::<Vec<_>>(),
    })
}

fn denial_json(d: &proto::DenialEvent) -> serde_json::Value {
    json!({
        "at": d.at,
        "policy": d.policy,
        "key": d.key,
        "axis": d.axis,
        "limit": d.limit,
        "remaining": d.remaining,
        "retry_after_ms": d.retry_after_ms,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> Monitor {
        let label = PolicyLabel {
            name: "p".into(),
            kind: "rate limiter".into(),
            strategy: "gcra".into(),
            limit: 3,
        };
        Monitor::new(vec![label], MonitorIdentity::default(), false)
    }

    fn decision(allowed: bool) -> Decision {
        Decision {
            allowed,
            limit: 3,
            remaining: 0,
            reset_at: 0,
            retry_after_ms: if allowed { 0 } else { 5 },
        }
    }

    #[test]
    fn counts_restart_with_the_window_and_raw_json_is_the_snapshot() {
        let m = monitor();
        let t = 10.0 * WINDOW_MS as f64;
        m.record("p", "k", &decision(true), "", t + 1.0);
        m.record("p", "k", &decision(false), "rate", t + 2.0);
        let s = m.snapshot(t + 3.0);
        let meta = s.meta.clone().unwrap();
        assert_eq!(
            (meta.generated_at, meta.window_ms),
            (t as i64 + 3, WINDOW_MS)
        );
        assert_eq!((s.policies[0].allowed, s.policies[0].denied), (1, 1));
        assert_eq!(s.policies[0].limit, 3);
        assert_eq!(s.recent_denials.len(), 1);
        assert_eq!(s.recent_denials[0].axis, "rate");
        let raw: serde_json::Value = serde_json::from_str(&s.raw_json).unwrap();
        assert_eq!(raw["policies"][0]["denied"], 1);
        assert_eq!(raw["recent_denials"][0]["retry_after_ms"], 5);
        // The next window starts from zero.
        let next = m.snapshot(t + WINDOW_MS as f64);
        assert_eq!((next.policies[0].allowed, next.policies[0].denied), (0, 0));
        assert!(next.recent_denials.is_empty());
    }
}
