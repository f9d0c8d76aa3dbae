//! The adapter protocol's messages (`docs/adapter-protocol.md`) and the strict check of replies
//! against the published JSON Schema, which is embedded here and is the single source of truth.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::v2::{DecisionV2, HelloV2, PROTOCOL_V2};
use crate::model::{Decision, LeaseConfig, Strategy, StrategyKind, TokenBudgetOptions, num};

/// The first protocol version; `hello` carries it, and a v1 adapter answers with it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every version this harness speaks (the hello's `protocolVersions`).
pub const PROTOCOL_VERSIONS: [u32; 2] = [PROTOCOL_VERSION, PROTOCOL_V2];

/// The environment variable that hands the adapter the Redis URL the harness provisioned.
pub const REDIS_URL_ENV: &str = "TK_CONFORM_REDIS_URL";

/// The published schema, embedded so the harness and the document cannot drift apart.
pub const SCHEMA_JSON: &str = include_str!("../../../docs/adapter-protocol.schema.json");

/// One request line, without its `id` (the connection numbers requests).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request<'a> {
    #[serde(rename_all = "camelCase")]
    Hello {
        protocol_version: u32,
        protocol_versions: [u32; 2],
        harness: HarnessInfo,
    },
    Reset {
        suite: &'a str,
        namespace: &'a str,
    },
    Check {
        strategy: &'a Strategy,
        key: &'a str,
        #[serde(serialize_with = "num::serialize")]
        cost: f64,
        #[serde(serialize_with = "num::serialize")]
        now: f64,
    },
    Debit {
        options: &'a TokenBudgetOptions,
        key: &'a str,
        #[serde(serialize_with = "num::serialize")]
        tokens: f64,
        #[serde(serialize_with = "num::serialize")]
        now: f64,
    },
    #[serde(rename = "lease.grant", rename_all = "camelCase")]
    LeaseGrant {
        lease: &'a LeaseConfig,
        #[serde(serialize_with = "num::serialize")]
        capacity: f64,
        #[serde(serialize_with = "num::serialize")]
        expires_at: f64,
    },
    #[serde(rename = "lease.spend")]
    LeaseSpend {
        lease: &'a LeaseConfig,
        #[serde(serialize_with = "num::serialize")]
        now: f64,
        #[serde(serialize_with = "num::serialize")]
        cost: f64,
    },
    Shutdown,
    /// v2: create limiter `limiter` of the declared kind `kind` with these parameters.
    Configure {
        limiter: &'a str,
        kind: &'a str,
        #[serde(serialize_with = "serialize_params")]
        params: &'a BTreeMap<String, f64>,
    },
    /// v2: one decision; `now` only for explicit-clock kinds.
    Decide {
        limiter: &'a str,
        key: &'a str,
        #[serde(serialize_with = "num::serialize")]
        cost: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        now: Option<Now>,
    },
    /// v2: give back one concurrency slot.
    Release {
        limiter: &'a str,
        key: &'a str,
    },
}

/// Parameters are numbers like any other: integral values without a fraction.
fn serialize_params<S: serde::Serializer>(
    params: &&BTreeMap<String, f64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(params.len()))?;
    for (name, value) in params.iter() {
        map.serialize_entry(name, &Now(*value))?;
    }
    map.end()
}

/// An explicit-clock `now`, written like every other number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Now(#[serde(serialize_with = "num::serialize")] pub f64);

#[derive(Debug, Clone, Serialize)]
pub struct HarnessInfo {
    pub name: String,
    pub version: String,
}

impl Request<'_> {
    /// The harness's `hello`: every protocol version it speaks.
    pub fn hello() -> Self {
        Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            protocol_versions: PROTOCOL_VERSIONS,
            harness: HarnessInfo {
                name: "tk-conform".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Reset { .. } => "reset",
            Request::Check { .. } => "check",
            Request::Debit { .. } => "debit",
            Request::LeaseGrant { .. } => "lease.grant",
            Request::LeaseSpend { .. } => "lease.spend",
            Request::Shutdown => "shutdown",
            Request::Configure { .. } => "configure",
            Request::Decide { .. } => "decide",
            Request::Release { .. } => "release",
        }
    }

    /// The request as one line of JSON (no newline), with its `id` first.
    pub fn to_line(&self, id: u64) -> String {
        #[derive(Serialize)]
        struct Envelope<'r, 'a> {
            id: u64,
            #[serde(flatten)]
            request: &'r Request<'a>,
        }
        serde_json::to_string(&Envelope { id, request: self })
            .expect("requests are plain data and always serialize")
    }

    /// The reply shapes this request may be answered with, besides an error.
    fn expected_reply(&self) -> ReplyShape {
        match self {
            Request::Hello { .. } => ReplyShape::Hello,
            Request::Reset { .. }
            | Request::LeaseGrant { .. }
            | Request::Shutdown
            | Request::Configure { .. }
            | Request::Release { .. } => ReplyShape::Ok,
            Request::Decide { .. } => ReplyShape::DecisionV2,
            Request::Check { .. } | Request::Debit { .. } => ReplyShape::Decision,
            Request::LeaseSpend { .. } => ReplyShape::Spend,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyShape {
    Hello,
    Ok,
    Decision,
    Spend,
    DecisionV2,
}

/// What a handshake said: a v1 adapter's capabilities or a v2 adapter's limiter kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Handshake {
    V1(Hello),
    V2(HelloV2),
}

impl Handshake {
    pub fn adapter(&self) -> &AdapterInfo {
        match self {
            Handshake::V1(h) => &h.adapter,
            Handshake::V2(h) => &h.adapter,
        }
    }

    pub fn version(&self) -> u32 {
        match self {
            Handshake::V1(h) => h.protocol_version,
            Handshake::V2(h) => h.protocol_version,
        }
    }
}

/// What the adapter says about itself in its `hello` reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub protocol_version: u32,
    pub adapter: AdapterInfo,
    pub capabilities: AdapterCapabilities,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub version: String,
    pub language: String,
    pub homepage: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterCapabilities {
    pub strategies: BTreeSet<StrategyKind>,
    pub token_budget: bool,
    pub lease_spender: bool,
    pub explicit_clock: bool,
    /// Why a capability is not claimed, keyed by its name (`tokenBudget`, `gcra`, ...).
    #[serde(default)]
    pub reasons: BTreeMap<String, String>,
}

impl AdapterCapabilities {
    /// Claims nothing, with the same reason for everything.
    pub fn none(reason: &str) -> Self {
        let names = StrategyKind::ALL.iter().map(|k| k.name()).chain([
            "tokenBudget",
            "leaseSpender",
            "explicitClock",
        ]);
        AdapterCapabilities {
            strategies: BTreeSet::new(),
            token_budget: false,
            lease_spender: false,
            explicit_clock: false,
            reasons: names.map(|n| (n.to_owned(), reason.to_owned())).collect(),
        }
    }

    /// Whether the hello claims `capability` (`tokenBudget`, `leaseSpender`, `explicitClock`, or a
    /// strategy name).
    pub fn claims(&self, capability: &str) -> bool {
        match capability {
            "tokenBudget" => self.token_budget,
            "leaseSpender" => self.lease_spender,
            "explicitClock" => self.explicit_clock,
            name => StrategyKind::from_name(name).is_some_and(|k| self.strategies.contains(&k)),
        }
    }

    /// The adapter's reason for not serving `capability`, when it does not claim it.
    pub fn unsupported_reason(&self, capability: &str) -> Option<&str> {
        if self.claims(capability) {
            return None;
        }
        self.reasons.get(capability).map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    Unsupported,
    Invalid,
    Internal,
    /// The engine's store could not be reached: never a denial.
    Unavailable,
}

/// A reply line, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Hello(Handshake),
    Ok,
    Decision(Decision),
    DecisionV2(DecisionV2),
    NeedsRefresh,
    Error { kind: ErrorKind, message: String },
}

/// Why a reply line broke the protocol; the caller adds which line it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("not valid JSON ({0})")]
    InvalidJson(String),
    #[error("echoed id {actual}, expected {expected}")]
    WrongId { expected: u64, actual: String },
    #[error("the adapter speaks protocol version {0}, this harness speaks versions 1 and 2")]
    Version(String),
    #[error("does not match the schema's `{def}`: {problems}")]
    Schema { def: &'static str, problems: String },
}

/// Checks reply lines against the embedded schema, one compiled validator per reply shape.
pub struct ReplyChecker {
    strict: bool,
    validators: Vec<(&'static str, jsonschema::Validator)>,
}

const REPLY_DEFS: [&str; 7] = [
    "helloReply",
    "okReply",
    "decisionReply",
    "needsRefreshReply",
    "errorReply",
    "helloReplyV2",
    "decisionReplyV2",
];

impl ReplyChecker {
    /// `strict` validates every reply against the schema (unknown fields, types, ranges);
    /// lenient only requires the fields the harness reads.
    pub fn new(strict: bool) -> Self {
        let schema: Value =
            serde_json::from_str(SCHEMA_JSON).expect("the embedded schema is valid JSON");
        let validators = REPLY_DEFS
            .iter()
            .map(|def| (*def, compile_def(&schema, def)))
            .collect();
        ReplyChecker { strict, validators }
    }

    fn validator(&self, def: &str) -> &jsonschema::Validator {
        &self
            .validators
            .iter()
            .find(|(name, _)| *name == def)
            .expect("every reply def is compiled")
            .1
    }

    /// Parses and checks `line` as the reply to request `id`.
    pub fn check(&self, request: &Request<'_>, id: u64, line: &str) -> Result<Reply, Violation> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| Violation::InvalidJson(e.to_string()))?;
        match value.get("id") {
            Some(Value::Number(n)) if n.as_u64() == Some(id) => {}
            Some(other) => {
                return Err(Violation::WrongId {
                    expected: id,
                    actual: other.to_string(),
                });
            }
            None => {
                return Err(Violation::WrongId {
                    expected: id,
                    actual: "nothing (no `id` field)".into(),
                });
            }
        }
        let shape = request.expected_reply();
        // A version mismatch explains every other difference, so it is reported first.
        let v2_hello = shape == ReplyShape::Hello
            && value.get("protocolVersion").and_then(Value::as_u64) == Some(u64::from(PROTOCOL_V2));
        if shape == ReplyShape::Hello
            && let Some(version) = value.get("protocolVersion")
            && !PROTOCOL_VERSIONS
                .iter()
                .any(|v| version.as_u64() == Some(u64::from(*v)))
        {
            return Err(Violation::Version(version.to_string()));
        }
        let def = if value.get("error").is_some() {
            "errorReply"
        } else {
            match shape {
                ReplyShape::Hello if v2_hello => "helloReplyV2",
                ReplyShape::Hello => "helloReply",
                ReplyShape::Ok => "okReply",
                ReplyShape::DecisionV2 => "decisionReplyV2",
                ReplyShape::Decision => "decisionReply",
                ReplyShape::Spend if value.get("needsRefresh").is_some() => "needsRefreshReply",
                ReplyShape::Spend => "decisionReply",
            }
        };
        // `is_valid` is the fast path; the errors are collected only to explain a failure.
        if self.strict && !self.validator(def).is_valid(&value) {
            let problems: Vec<String> = self
                .validator(def)
                .iter_errors(&value)
                .map(|e| {
                    let path = e.instance_path().to_string();
                    let at = if path.is_empty() { "/".into() } else { path };
                    format!("at {at}: {e}")
                })
                .collect();
            if !problems.is_empty() {
                return Err(Violation::Schema {
                    def,
                    problems: problems.join("; "),
                });
            }
        }
        typed(def, value).map_err(|e| Violation::Schema {
            def,
            problems: e.to_string(),
        })
    }
}

/// A validator for one `$defs` entry: the whole schema with that entry as its root.
fn compile_def(schema: &Value, def: &str) -> jsonschema::Validator {
    let mut rooted = serde_json::Map::new();
    rooted.insert("$schema".into(), schema["$schema"].clone());
    rooted.insert("$defs".into(), schema["$defs"].clone());
    rooted.insert("$ref".into(), Value::String(format!("#/$defs/{def}")));
    jsonschema::validator_for(&Value::Object(rooted))
        .unwrap_or_else(|e| panic!("the embedded schema's `{def}` does not compile: {e}"))
}

fn typed(def: &str, value: Value) -> Result<Reply, serde_json::Error> {
    #[derive(Deserialize)]
    struct DecisionReply {
        decision: Decision,
    }
    #[derive(Deserialize)]
    struct DecisionV2Reply {
        decision: DecisionV2,
    }
    #[derive(Deserialize)]
    struct ErrorReply {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        kind: ErrorKind,
        message: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct NeedsRefreshReply {
        needs_refresh: bool,
    }
    #[derive(Deserialize)]
    struct OkReply {
        ok: bool,
    }
    let invalid = |what: &str| serde::de::Error::custom(what);
    Ok(match def {
        "helloReply" => Reply::Hello(Handshake::V1(serde_json::from_value(value)?)),
        "helloReplyV2" => {
            let hello: HelloV2 = serde_json::from_value(value)?;
            hello.validate().map_err(|e| invalid(&e.to_string()))?;
            Reply::Hello(Handshake::V2(hello))
        }
        "decisionReplyV2" => {
            Reply::DecisionV2(serde_json::from_value::<DecisionV2Reply>(value)?.decision)
        }
        "okReply" => {
            let r: OkReply = serde_json::from_value(value)?;
            if !r.ok {
                return Err(invalid("`ok` must be true"));
            }
            Reply::Ok
        }
        "decisionReply" => {
            Reply::Decision(serde_json::from_value::<DecisionReply>(value)?.decision)
        }
        "needsRefreshReply" => {
            let r: NeedsRefreshReply = serde_json::from_value(value)?;
            if !r.needs_refresh {
                return Err(invalid("`needsRefresh` must be true"));
            }
            Reply::NeedsRefresh
        }
        _ => {
            let r: ErrorReply = serde_json::from_value(value)?;
            Reply::Error {
                kind: r.error.kind,
                message: r.error.message,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FixedWindowOptions, GcraOptions};

    fn check_request() -> (Strategy, LeaseConfig, TokenBudgetOptions) {
        (
            Strategy::Gcra(GcraOptions {
                limit: 3.0,
                period_ms: 1000.0,
                burst: 3.0,
            }),
            LeaseConfig {
                limit: 10.0,
                ttl_ms: 1000.0,
                window_coupled: true,
            },
            TokenBudgetOptions {
                budget: 5.0,
                window_ms: 1000.0,
            },
        )
    }

    /// Every request the harness can send is valid under the published schema.
    #[test]
    fn every_request_matches_the_schema() {
        let schema: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
        let validator = compile_def(&schema, "request");
        let (strategy, lease, budget) = check_request();
        let fixed = Strategy::FixedWindow(FixedWindowOptions {
            limit: 2.5,
            window_ms: 1000.0,
        });
        let requests = [
            Request::Hello {
                protocol_version: PROTOCOL_VERSION,
                protocol_versions: PROTOCOL_VERSIONS,
                harness: HarnessInfo {
                    name: "tk-conform".into(),
                    version: "0.1.0".into(),
                },
            },
            Request::Reset {
                suite: "rateLimit::x",
                namespace: "tkc-1-2",
            },
            Request::Check {
                strategy: &strategy,
                key: "k",
                cost: 1.0,
                now: 1_700_000_000_000.0,
            },
            Request::Check {
                strategy: &fixed,
                key: "k",
                cost: 0.5,
                now: 1.0,
            },
            Request::Debit {
                options: &budget,
                key: "k",
                tokens: 2.0,
                now: 5.0,
            },
            Request::LeaseGrant {
                lease: &lease,
                capacity: 4.0,
                expires_at: 2000.0,
            },
            Request::LeaseSpend {
                lease: &lease,
                now: 1500.0,
                cost: 1.0,
            },
            Request::Shutdown,
        ];
        for (id, request) in requests.iter().enumerate() {
            let line = request.to_line(id as u64);
            let value: Value = serde_json::from_str(&line).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{line}: {errors:?}");
            assert_eq!(value["op"], request.op());
        }
    }

    #[test]
    fn a_good_decision_reply_is_accepted() {
        let (strategy, ..) = check_request();
        let request = Request::Check {
            strategy: &strategy,
            key: "k",
            cost: 1.0,
            now: 1.0,
        };
        let reply = ReplyChecker::new(true)
            .check(
                &request,
                7,
                r#"{"id":7,"decision":{"allowed":true,"limit":3,"remaining":2,"resetAt":334,"retryAfterMs":0}}"#,
            )
            .unwrap();
        assert_eq!(
            reply,
            Reply::Decision(Decision {
                allowed: true,
                limit: 3,
                remaining: 2,
                reset_at: 334,
                retry_after_ms: 0
            })
        );
    }

    #[test]
    fn broken_replies_are_named_precisely() {
        let (strategy, lease, _) = check_request();
        let check = Request::Check {
            strategy: &strategy,
            key: "k",
            cost: 1.0,
            now: 1.0,
        };
        let spend = Request::LeaseSpend {
            lease: &lease,
            now: 1.0,
            cost: 1.0,
        };
        let strict = ReplyChecker::new(true);
        let lenient = ReplyChecker::new(false);
        let cases: [(&Request, &str, &str); 7] = [
            (&check, "{not json", "not valid JSON"),
            (
                &check,
                r#"{"id":8,"decision":{"allowed":true,"limit":3,"remaining":2,"resetAt":334,"retryAfterMs":0}}"#,
                "echoed id 8, expected 7",
            ),
            (
                &check,
                r#"{"decision":{}}"#,
                "echoed id nothing (no `id` field), expected 7",
            ),
            (
                &check,
                r#"{"id":7,"decision":{"allowed":true,"limit":3,"resetAt":334,"retryAfterMs":0}}"#,
                "\"remaining\" is a required property",
            ),
            (
                &check,
                r#"{"id":7,"decision":{"allowed":true,"limit":3,"remaining":-1,"resetAt":334,"retryAfterMs":0}}"#,
                "at /decision/remaining",
            ),
            (
                &check,
                r#"{"id":7,"ok":true}"#,
                "does not match the schema's `decisionReply`",
            ),
            (
                &spend,
                r#"{"id":7,"needsRefresh":true,"why":"x"}"#,
                "Additional properties are not allowed",
            ),
        ];
        for (request, line, expected) in cases {
            let err = strict.check(request, 7, line).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{line}: got `{err}`, wanted `{expected}`"
            );
        }
        // Lenient mode still refuses what the harness cannot read, but lets extra fields pass.
        assert!(lenient.check(&check, 7, "{not json").is_err());
        assert_eq!(
            lenient
                .check(&spend, 7, r#"{"id":7,"needsRefresh":true,"why":"x"}"#)
                .unwrap(),
            Reply::NeedsRefresh
        );
    }

    #[test]
    fn error_replies_carry_their_kind() {
        let (_, _, budget) = check_request();
        let debit = Request::Debit {
            options: &budget,
            key: "k",
            tokens: 1.0,
            now: 1.0,
        };
        let reply = ReplyChecker::new(true)
            .check(
                &debit,
                3,
                r#"{"id":3,"error":{"kind":"unsupported","message":"no debit door"}}"#,
            )
            .unwrap();
        assert_eq!(
            reply,
            Reply::Error {
                kind: ErrorKind::Unsupported,
                message: "no debit door".into()
            }
        );
    }

    const V2_HELLO: &str = r#"{"id":0,"protocolVersion":2,"adapter":{"name":"e","version":"1","language":"py","homepage":""},"limiters":[{"name":"fw","family":"fixedWindow","clock":"store","windowStart":"firstCall","parameters":{"limit":{"min":1,"max":100},"windowMs":{"min":200,"max":1000}},"exposes":["remaining"],"takesCost":false,"countsDenials":false}]}"#;

    fn hello_request() -> Request<'static> {
        Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            protocol_versions: PROTOCOL_VERSIONS,
            harness: HarnessInfo {
                name: "tk-conform".into(),
                version: "0".into(),
            },
        }
    }

    #[test]
    fn a_v2_hello_is_read_and_hostile_ones_are_refused() {
        let checker = ReplyChecker::new(true);
        let hello = hello_request();
        match checker.check(&hello, 0, V2_HELLO).unwrap() {
            Reply::Hello(Handshake::V2(h)) => assert_eq!(h.limiters[0].name, "fw"),
            other => panic!("{other:?}"),
        }
        let cases = [
            (V2_HELLO.replace(r#""countsDenials":false}"#, r#""countsDenials":false,"x":1}"#), "Additional properties"),
            (V2_HELLO.replace(r#""max":100"#, r#""max":1e12"#), "at /limiters/0/parameters/limit/max"),
            (V2_HELLO.replace(r#""min":200"#, r#""min":0"#), "at /limiters/0/parameters/windowMs/min"),
            (V2_HELLO.replace(r#""name":"fw""#, r#""name":"no spaces allowed""#), "at /limiters/0/name"),
            (V2_HELLO.replace(r#""family":"fixedWindow""#, r#""family":"leakyBucket""#), "at /limiters/0/family"),
            (V2_HELLO.replace(r#""exposes":["remaining"]"#, r#""exposes":["remaining","remaining"]"#), "at /limiters/0/exposes"),
            (V2_HELLO.replace(r#""limiters":["#, r#""limiters":[{"name":"fw","family":"gcra","clock":"client","parameters":{"limit":{"min":1,"max":2},"periodMs":{"min":1,"max":2}},"exposes":[],"takesCost":true,"countsDenials":true},"#), "declared twice"),
            (V2_HELLO.replace(r#""protocolVersion":2"#, r#""protocolVersion":3"#), "speaks protocol version 3"),
        ];
        for (line, wanted) in cases {
            let err = checker.check(&hello, 0, &line).unwrap_err().to_string();
            assert!(
                err.contains(wanted),
                "{line}: got `{err}`, wanted `{wanted}`"
            );
        }
    }

    #[test]
    fn v2_requests_match_the_schema_and_decisions_are_bounded() {
        let schema: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
        let validator = compile_def(&schema, "request");
        let params: BTreeMap<String, f64> = [("limit".to_owned(), 5.0)].into();
        let requests = [
            Request::Configure {
                limiter: "L",
                kind: "fw",
                params: &params,
            },
            Request::Decide {
                limiter: "L",
                key: "k",
                cost: 1.0,
                now: Some(Now(1.5)),
            },
            Request::Decide {
                limiter: "L",
                key: "k",
                cost: 1.0,
                now: None,
            },
            Request::Release {
                limiter: "L",
                key: "k",
            },
        ];
        for request in &requests {
            let line = request.to_line(9);
            let value: Value = serde_json::from_str(&line).unwrap();
            assert!(validator.is_valid(&value), "{line}");
        }
        assert_eq!(
            requests[0].to_line(1),
            r#"{"id":1,"op":"configure","limiter":"L","kind":"fw","params":{"limit":5}}"#
        );
        assert!(!requests[2].to_line(1).contains("now"));
        let checker = ReplyChecker::new(true);
        let decide = &requests[1];
        assert!(matches!(
            checker.check(decide, 9, r#"{"id":9,"decision":{"allowed":false,"retryAfterMs":12}}"#).unwrap(),
            Reply::DecisionV2(d) if d.retry_after_ms == Some(12)
        ));
        for (line, wanted) in [
            (
                r#"{"id":9,"decision":{"allowed":true,"remaining":1e17}}"#,
                "at /decision/remaining",
            ),
            (
                r#"{"id":9,"decision":{"allowed":true,"remaining":1.5}}"#,
                "at /decision/remaining",
            ),
            (
                r#"{"id":9,"decision":{"allowed":true,"limit":3}}"#,
                "Additional properties",
            ),
            (
                r#"{"id":9,"error":{"kind":"down","message":"x"}}"#,
                "at /error/kind",
            ),
        ] {
            let err = checker.check(decide, 9, line).unwrap_err().to_string();
            assert!(
                err.contains(wanted),
                "{line}: got `{err}`, wanted `{wanted}`"
            );
        }
        assert_eq!(
            checker
                .check(
                    decide,
                    9,
                    r#"{"id":9,"error":{"kind":"unavailable","message":"down"}}"#
                )
                .unwrap(),
            Reply::Error {
                kind: ErrorKind::Unavailable,
                message: "down".into()
            }
        );
    }
}
