//! Adapter protocol version 2 (`docs/adapter-protocol.md`): an adapter declares the *limiter
//! kinds* it serves (family, accepted parameters, clock, what a decision exposes, cost, denial
//! accounting, tolerance), and the harness configures limiters and asks for decisions.
//!
//! The schema checks shapes and bounds; [`HelloV2::validate`] checks what a schema cannot say
//! (the parameters a family needs, ranges that contain a value, names that are unique), and
//! [`LimiterKind::check_decision`] that a decision carries exactly the declared fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use super::connection::{Connection, unexpected};
use super::expect_ok;
use super::protocol::{AdapterInfo, Now, Reply, Request};
use crate::backend::BackendError;

/// The protocol version of this module's messages.
pub const PROTOCOL_V2: u32 = 2;

/// What a family of limiters promises (docs/adapter-protocol.md, "Families").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Family {
    FixedWindow,
    SlidingWindowLog,
    SlidingWindowCounter,
    TokenBucket,
    Gcra,
    Concurrency,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::FixedWindow => "fixedWindow",
            Family::SlidingWindowLog => "slidingWindowLog",
            Family::SlidingWindowCounter => "slidingWindowCounter",
            Family::TokenBucket => "tokenBucket",
            Family::Gcra => "gcra",
            Family::Concurrency => "concurrency",
        }
    }

    /// The parameters a kind of this family must accept, and those it may.
    pub fn parameters(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Family::FixedWindow | Family::SlidingWindowLog | Family::SlidingWindowCounter => {
                (&["limit", "windowMs"], &[])
            }
            Family::TokenBucket => (&["capacity", "refillPerSec"], &[]),
            Family::Gcra => (&["limit", "periodMs"], &["burst"]),
            Family::Concurrency => (&["limit"], &[]),
        }
    }

    /// Families whose windows start somewhere the harness must be told.
    pub fn needs_window_start(self) -> bool {
        matches!(self, Family::FixedWindow | Family::SlidingWindowCounter)
    }
}

/// Which clock a kind's decisions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Clock {
    /// The `now` in each `decide` (the adapter controls the engine's time).
    Explicit,
    /// The adapter process's own wall clock.
    Client,
    /// The store's clock or its key expiry.
    Store,
}

impl Clock {
    pub fn name(self) -> &'static str {
        match self {
            Clock::Explicit => "explicit",
            Clock::Client => "client",
            Clock::Store => "store",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WindowStart {
    /// Windows are `[k·windowMs, (k+1)·windowMs)` on the engine's clock.
    Epoch,
    /// A window starts with the first call after the previous one ended.
    FirstCall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Exposed {
    Remaining,
    ResetAt,
    RetryAfterMs,
}

impl Exposed {
    pub fn name(self) -> &'static str {
        match self {
            Exposed::Remaining => "remaining",
            Exposed::ResetAt => "resetAt",
            Exposed::RetryAfterMs => "retryAfterMs",
        }
    }
}

/// The values of one parameter an engine accepts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamRange {
    pub min: f64,
    pub max: f64,
    #[serde(default)]
    pub integer: bool,
    #[serde(default)]
    pub multiple_of: Option<f64>,
}

impl ParamRange {
    /// The accepted value nearest to `wanted`, if the range holds any.
    pub fn nearest(&self, wanted: f64) -> Option<f64> {
        let step = match (self.multiple_of, self.integer) {
            (Some(m), _) => Some(m),
            (None, true) => Some(1.0),
            (None, false) => None,
        };
        let clamped = wanted.clamp(self.min, self.max);
        let Some(step) = step else {
            return Some(clamped);
        };
        let lowest = (self.min / step).ceil() * step;
        let highest = (self.max / step).floor() * step;
        if lowest > highest {
            return None;
        }
        let snapped = ((clamped / step).round() * step).clamp(lowest, highest);
        Some(snapped)
    }

    pub fn contains(&self, value: f64) -> bool {
        self.nearest(value) == Some(value)
    }
}

/// One kind of limiter a v2 adapter serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimiterKind {
    pub name: String,
    pub family: Family,
    pub parameters: BTreeMap<String, ParamRange>,
    pub clock: Clock,
    #[serde(default)]
    pub window_start: Option<WindowStart>,
    pub exposes: BTreeSet<Exposed>,
    pub takes_cost: bool,
    pub counts_denials: bool,
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A protocol-2 handshake.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloV2 {
    pub protocol_version: u32,
    pub adapter: AdapterInfo,
    pub limiters: Vec<LimiterKind>,
}

/// A decision as a v2 adapter reports it: only `allowed` is always there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionV2 {
    pub allowed: bool,
    #[serde(default)]
    pub remaining: Option<i64>,
    #[serde(default)]
    pub reset_at: Option<i64>,
    #[serde(default)]
    pub retry_after_ms: Option<i64>,
}

/// A `helloReplyV2` the schema accepts but that cannot be served as declared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HelloError {
    #[error("limiters: the name `{0}` is declared twice; give each kind its own name")]
    DuplicateName(String),
    #[error("limiters: kind `{name}`: {source}")]
    Kind {
        name: String,
        #[source]
        source: KindError,
    },
}

/// One limiter kind that contradicts its family; the text says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KindError {
    #[error("a {family} kind must declare the parameter `{name}` (it declares {declared:?})")]
    MissingParameter {
        family: &'static str,
        name: &'static str,
        declared: Vec<String>,
    },
    #[error(
        "`{name}` is not a parameter of the {family} family (it has {required:?}, optionally {optional:?})"
    )]
    UnknownParameter {
        name: String,
        family: &'static str,
        required: &'static [&'static str],
        optional: &'static [&'static str],
    },
    #[error("parameter `{name}`: min {min} must not exceed max {max}")]
    EmptyRange { name: String, min: f64, max: f64 },
    #[error(
        "parameter `{name}`: no value in [{min}, {max}] is a multiple of {multiple_of:?}{integer}"
    )]
    NoValue {
        name: String,
        min: f64,
        max: f64,
        multiple_of: Option<f64>,
        /// `" and an integer"` or empty.
        integer: &'static str,
    },
    #[error(
        "a {0} kind must say where its windows start: \"windowStart\": \"epoch\" or \"firstCall\""
    )]
    NoWindowStart(&'static str),
    #[error("`windowStart` means nothing for the {0} family; remove it")]
    WindowStartMeaningless(&'static str),
    #[error(
        "a slidingWindowCounter kind approximates, so it must declare its `tolerance` (0..1, the fraction of the limit a trailing window may exceed)"
    )]
    NoTolerance,
    #[error("the {0} family is exact; `tolerance` is only for slidingWindowCounter")]
    ExactWithTolerance(&'static str),
}

/// A decision whose fields differ from what its kind declared in `exposes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("the decision lacks `{field}`, which kind `{kind}` declares in `exposes`")]
    Lacks { field: &'static str, kind: String },
    #[error("the decision carries `{field}`, which kind `{kind}` does not declare in `exposes`")]
    Carries { field: &'static str, kind: String },
}

impl HelloV2 {
    /// What the schema cannot check; the error names the limiter kind and what to change.
    pub fn validate(&self) -> Result<(), HelloError> {
        let mut names = BTreeSet::new();
        for kind in &self.limiters {
            if !names.insert(kind.name.as_str()) {
                return Err(HelloError::DuplicateName(kind.name.clone()));
            }
            kind.validate().map_err(|source| HelloError::Kind {
                name: kind.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn kind(&self, name: &str) -> Option<&LimiterKind> {
        self.limiters.iter().find(|k| k.name == name)
    }
}

impl LimiterKind {
    fn validate(&self) -> Result<(), KindError> {
        let family = self.family.name();
        let (required, optional) = self.family.parameters();
        for name in required {
            if !self.parameters.contains_key(*name) {
                return Err(KindError::MissingParameter {
                    family,
                    name,
                    declared: self.parameters.keys().cloned().collect(),
                });
            }
        }
        for (name, range) in &self.parameters {
            if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
                return Err(KindError::UnknownParameter {
                    name: name.clone(),
                    family,
                    required,
                    optional,
                });
            }
            if !(range.min.is_finite() && range.max.is_finite()) || range.min > range.max {
                return Err(KindError::EmptyRange {
                    name: name.clone(),
                    min: range.min,
                    max: range.max,
                });
            }
            if range.nearest(range.min).is_none() {
                return Err(KindError::NoValue {
                    name: name.clone(),
                    min: range.min,
                    max: range.max,
                    multiple_of: range.multiple_of,
                    integer: if range.integer { " and an integer" } else { "" },
                });
            }
        }
        if self.family.needs_window_start() && self.window_start.is_none() {
            return Err(KindError::NoWindowStart(family));
        }
        if !self.family.needs_window_start() && self.window_start.is_some() {
            return Err(KindError::WindowStartMeaningless(family));
        }
        match (self.family, self.tolerance) {
            (Family::SlidingWindowCounter, None) => Err(KindError::NoTolerance),
            (Family::SlidingWindowCounter, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err(KindError::ExactWithTolerance(family)),
        }
    }

    /// A decision must carry exactly the fields this kind declared in `exposes`.
    pub fn check_decision(&self, decision: &DecisionV2) -> Result<(), DecisionError> {
        let present = [
            (Exposed::Remaining, decision.remaining.is_some()),
            (Exposed::ResetAt, decision.reset_at.is_some()),
            (Exposed::RetryAfterMs, decision.retry_after_ms.is_some()),
        ];
        for (field, there) in present {
            let declared = self.exposes.contains(&field);
            if declared && !there {
                return Err(DecisionError::Lacks {
                    field: field.name(),
                    kind: self.name.clone(),
                });
            }
            if there && !declared {
                return Err(DecisionError::Carries {
                    field: field.name(),
                    kind: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn exposes(&self, field: Exposed) -> bool {
        self.exposes.contains(&field)
    }

    /// "limits 5.8.0 fixedWindow, store clock" for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} clock)",
            self.name,
            self.family.name(),
            self.clock.name()
        )
    }
}

/// One property suite's turn on a v2 adapter: its namespace and the limiters it configured.
pub struct V2Session {
    connection: OwnedMutexGuard<Connection>,
    hello: HelloV2,
    namespace: String,
    /// Limiter id → the kind it was configured as.
    limiters: BTreeMap<String, LimiterKind>,
}

impl V2Session {
    pub(super) fn new(
        connection: OwnedMutexGuard<Connection>,
        hello: HelloV2,
        namespace: String,
    ) -> Self {
        V2Session {
            connection,
            hello,
            namespace,
            limiters: BTreeMap::new(),
        }
    }

    /// The key prefix the adapter was told to store everything under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Creates limiter `limiter` of kind `kind`. The harness only sends declared parameters
    /// with values inside their declared ranges.
    pub async fn configure(
        &mut self,
        limiter: &str,
        kind: &str,
        params: &BTreeMap<String, f64>,
    ) -> Result<(), BackendError> {
        let declared = self.hello.kind(kind).cloned().ok_or_else(|| {
            BackendError::Unsupported(format!("the adapter declares no limiter kind `{kind}`"))
        })?;
        for (name, value) in params {
            match declared.parameters.get(name) {
                Some(range) if range.contains(*value) => {}
                _ => {
                    return Err(BackendError::Invalid(format!(
                        "harness bug: parameter {name} = {value} is outside what kind `{kind}` declares"
                    )));
                }
            }
        }
        self.connection
            .call(&Request::Configure {
                limiter,
                kind,
                params,
            })
            .await
            .and_then(expect_ok)?;
        self.limiters.insert(limiter.to_owned(), declared);
        Ok(())
    }

    /// One decision. `now` goes out only for explicit-clock kinds; the reply must carry exactly
    /// the fields the kind exposes.
    pub async fn decide(
        &mut self,
        limiter: &str,
        key: &str,
        cost: f64,
        now: Option<f64>,
    ) -> Result<DecisionV2, BackendError> {
        let kind = self.limiters.get(limiter).ok_or_else(|| {
            BackendError::Invalid(format!(
                "harness bug: limiter `{limiter}` was not configured"
            ))
        })?;
        let now = match kind.clock {
            Clock::Explicit => Some(Now(now.ok_or_else(|| {
                BackendError::Invalid("harness bug: an explicit-clock decision needs a now".into())
            })?)),
            Clock::Client | Clock::Store => None,
        };
        let reply = self
            .connection
            .call(&Request::Decide {
                limiter,
                key,
                cost,
                now,
            })
            .await?;
        let decision = match reply {
            Reply::DecisionV2(d) => d,
            other => return Err(unexpected(other)),
        };
        kind.check_decision(&decision)
            .map_err(|e| BackendError::Protocol(format!("the reply to decide on `{key}`: {e}")))?;
        Ok(decision)
    }

    /// Frees one concurrency slot held on `key`.
    pub async fn release(&mut self, limiter: &str, key: &str) -> Result<(), BackendError> {
        self.connection
            .call(&Request::Release { limiter, key })
            .await
            .and_then(expect_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind parsed and validated; the error as the adapter's author reads it.
    fn kind(json: &str) -> anyhow::Result<LimiterKind> {
        let kind: LimiterKind = serde_json::from_str(json)?;
        kind.validate()?;
        Ok(kind)
    }

    const FIXED: &str = r#"{"name":"fw","family":"fixedWindow","clock":"store","windowStart":"firstCall",
        "parameters":{"limit":{"min":1,"max":100,"integer":true},"windowMs":{"min":1000,"max":60000,"multipleOf":1000}},
        "exposes":["remaining"],"takesCost":true,"countsDenials":false}"#;

    #[test]
    fn a_good_kind_is_accepted_and_ranges_snap() {
        let k = kind(FIXED).unwrap();
        let w = k.parameters["windowMs"];
        assert_eq!(w.nearest(200.0), Some(1000.0));
        assert_eq!(w.nearest(10_400.0), Some(10_000.0));
        assert!(!w.contains(1500.0));
        assert_eq!(k.parameters["limit"].nearest(150.0), Some(100.0));
    }

    #[test]
    fn bad_kinds_are_refused_with_what_to_change() {
        let cases = [
            (
                FIXED.replace(r#""windowStart":"firstCall","#, ""),
                "must say where its windows start",
            ),
            (
                FIXED.replace(r#""limit":{"min":1,"max":100,"integer":true},"#, ""),
                "must declare the parameter `limit`",
            ),
            (
                FIXED.replace(r#""windowMs""#, r#""periodMs""#),
                "must declare the parameter `windowMs`",
            ),
            (
                FIXED.replace(r#""min":1,"max":100"#, r#""min":100,"max":1"#),
                "must not exceed max",
            ),
            (
                FIXED.replace(r#""min":1000,"max":60000"#, r#""min":1100,"max":1900"#),
                "is a multiple of",
            ),
            (
                FIXED.replace(
                    r#""countsDenials":false"#,
                    r#""countsDenials":false,"tolerance":0.1"#,
                ),
                "only for slidingWindowCounter",
            ),
            (
                FIXED.replace("fixedWindow", "slidingWindowCounter"),
                "must declare its `tolerance`",
            ),
            (
                FIXED.replace(r#""takesCost":true"#, r#""takesCost":true,"burst":1"#),
                "unknown field `burst`",
            ),
        ];
        for (json, wanted) in cases {
            let err = kind(&json).unwrap_err().to_string();
            assert!(
                err.contains(wanted),
                "{json}: got `{err}`, wanted `{wanted}`"
            );
        }
    }

    #[test]
    fn decisions_carry_exactly_the_declared_fields() {
        let k = kind(FIXED).unwrap();
        let mut d = DecisionV2 {
            allowed: true,
            remaining: Some(3),
            reset_at: None,
            retry_after_ms: None,
        };
        assert!(k.check_decision(&d).is_ok());
        d.retry_after_ms = Some(5);
        assert!(
            k.check_decision(&d)
                .unwrap_err()
                .to_string()
                .contains("carries `retryAfterMs`, which kind `fw` does not declare")
        );
        d.retry_after_ms = None;
        d.remaining = None;
        assert!(
            k.check_decision(&d)
                .unwrap_err()
                .to_string()
                .contains("lacks `remaining`")
        );
    }
}
