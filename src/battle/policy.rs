//! What the battle needs to know about a scenario's policies: the strategy and key prefix the
//! direct door uses (so it shares state with the fleet: one oracle, two doors), and whether a
//! policy is leasable through `Fleet.Reserve`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{
    FixedWindowOptions, GcraOptions, SlidingWindowLogOptions, SlidingWindowOptions, Strategy,
    TokenBucketOptions,
};

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFacts {
    /// Store keys are `<prefix>:<identity>`.
    pub prefix: String,
    /// The rate strategy, when the policy is a rate limiter.
    pub strategy: Option<Strategy>,
    /// Leasable through `Fleet.Reserve`.
    pub federated: bool,
    /// What kind of policy it is, for messages.
    pub label: String,
}

/// Reads the facts of every policy in a policy file's text; `file` names it in errors.
pub fn read(file: &str, yaml: &str) -> Result<BTreeMap<String, PolicyFacts>, String> {
    let root: Value =
        serde_saphyr::from_str(yaml).map_err(|e| format!("{file}: not valid YAML: {e}"))?;
    let limiters = root
        .get("limiters")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{file}: missing `limiters:`"))?;
    let mut out = BTreeMap::new();
    for (name, body) in limiters {
        let at = |m: String| format!("{file}: policy `{name}`: {m}");
        let prefix = body
            .get("prefix")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string();
        let strategy = match body.get("strategy").and_then(Value::as_str) {
            None => None,
            Some(kind) => Some(strategy(kind, body).map_err(at)?),
        };
        let label = match (&strategy, body.as_object()) {
            (Some(_), _) => "rate limiter".to_string(),
            (None, Some(map)) => map.keys().next().cloned().unwrap_or_default(),
            (None, None) => String::new(),
        };
        out.insert(
            name.clone(),
            PolicyFacts {
                prefix,
                strategy,
                federated: body.get("federated").is_some(),
                label,
            },
        );
    }
    Ok(out)
}

fn strategy(kind: &str, body: &Value) -> Result<Strategy, String> {
    let number = |key: &str| -> Result<f64, String> {
        body.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("`{key}` must be a number"))
    };
    let period = || -> Result<f64, String> {
        match body
            .get("period")
            .or_else(|| body.get("windowMs"))
            .or_else(|| body.get("periodMs"))
        {
            Some(Value::Number(n)) => n.as_f64().ok_or_else(|| "bad period".to_string()),
            Some(Value::String(s)) => duration_ms(s),
            _ => Err("missing `period`".into()),
        }
    };
    Ok(match kind {
        "gcra" => {
            let limit = number("limit")?;
            Strategy::Gcra(GcraOptions {
                limit,
                period_ms: period()?,
                burst: number("burst").unwrap_or(limit),
            })
        }
        "tokenBucket" => Strategy::TokenBucket(TokenBucketOptions {
            capacity: number("capacity")?,
            refill_per_sec: number("refillPerSec")?,
        }),
        "fixedWindow" => Strategy::FixedWindow(FixedWindowOptions {
            limit: number("limit")?,
            window_ms: period()?,
        }),
        "slidingWindow" => Strategy::SlidingWindow(SlidingWindowOptions {
            limit: number("limit")?,
            window_ms: period()?,
            buckets: number("buckets")?,
        }),
        "slidingWindowLog" => Strategy::SlidingWindowLog(SlidingWindowLogOptions {
            limit: number("limit")?,
            window_ms: period()?,
        }),
        other => return Err(format!("unknown strategy `{other}`")),
    })
}

/// `<n>ms|s|m|h` or bare milliseconds.
fn duration_ms(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (digits, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((t, ""), |i| t.split_at(i));
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("bad duration `{text}`"))?;
    let scale = match unit {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("bad duration unit in `{text}` (ms, s, m, h)")),
    };
    Ok(n * scale)
}
