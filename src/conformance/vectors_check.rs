//! A vectors file must load cleanly before anything replays it: every field known, every suite
//! name unique, every option and op within what the model accepts. Otherwise the run stops with
//! exit 2 naming the suite and the op, instead of replaying a file that means something other
//! than its author thought (a misspelt field is silently dropped by serde; a negative `now` or a
//! limit of 0 only surfaces as a confusing divergence, or not at all).

use std::collections::HashMap;

use serde_json::Value;

use crate::contract::vectors::{LeaseEvent, Suite, VectorsFile};
use crate::model::{validate_cost, validate_now};

/// The most problems listed in one error; the rest are counted.
pub const MAX_LISTED: usize = 20;

/// Every problem of `file` (parsed from `raw`), one line each, naming the suite and op.
pub fn problems(file: &VectorsFile, raw: &Value) -> Vec<String> {
    let mut found = Vec::new();
    unknown_fields(file, raw, &mut found);
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, suite) in file.suites.iter().enumerate() {
        let prefix = format!("suite {} (suites[{i}])", suite.trial_name());
        let mut push = |what: String| found.push(format!("{prefix}: {what}"));
        if let Some(first) = first_seen.insert(suite.name(), i) {
            push(format!(
                "the name {:?} is also the name of suites[{first}]; suite names must be unique",
                suite.name()
            ));
            first_seen.insert(suite.name(), first);
        }
        match suite {
            Suite::RateLimit(s) => {
                if let Err(e) = s.strategy.validate() {
                    push(format!("strategy {}: {e}", s.strategy.kind()));
                }
                for (j, op) in s.ops.iter().enumerate() {
                    if let Err(e) = validate_now(op.now) {
                        push(format!("op {j}: {e}"));
                    }
                    if let Err(e) = validate_cost(op.cost) {
                        push(format!("op {j}: {e}"));
                    }
                }
            }
            Suite::TokenBudget(s) => {
                if let Err(e) = s.options.validate() {
                    push(format!("options: {e}"));
                }
                for (j, op) in s.ops.iter().enumerate() {
                    if let Err(e) = validate_now(op.now) {
                        push(format!("op {j}: {e}"));
                    }
                    if let Err(e) = validate_cost(op.tokens) {
                        push(format!("op {j}: {e}"));
                    }
                }
            }
            Suite::Lease(s) => {
                for (name, value) in [("limit", s.config.limit), ("ttlMs", s.config.ttl_ms)] {
                    if !(value.is_finite() && value > 0.0) {
                        push(format!(
                            "{name} must be a positive finite number, got {value}"
                        ));
                    }
                }
                for (j, event) in s.events.iter().enumerate() {
                    match event {
                        LeaseEvent::Grant {
                            capacity,
                            expires_at,
                        } => {
                            if let Err(e) = validate_cost(*capacity) {
                                push(format!("event {j} (grant): capacity: {e}"));
                            }
                            if let Err(e) = validate_now(*expires_at) {
                                push(format!("event {j} (grant): expiresAt: {e}"));
                            }
                        }
                        LeaseEvent::Spend { now, cost, .. } => {
                            if let Err(e) = validate_now(*now) {
                                push(format!("event {j}: {e}"));
                            }
                            // Spec 4: a spend's cost is positive; the spender errors otherwise.
                            if !(cost.is_finite() && *cost > 0.0) {
                                push(format!(
                                    "event {j} (spend): cost must be a positive finite number, \
                                     got {cost}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

/// Fields in `raw` that the vectors format does not have: they would be dropped without a word.
/// Found by comparing the file with what its parsed form writes back.
fn unknown_fields(file: &VectorsFile, raw: &Value, found: &mut Vec<String>) {
    let Ok(known) = serde_json::to_value(file) else {
        return;
    };
    let mut top = Vec::new();
    walk(raw, &known, String::new(), &mut top, true);
    found.extend(
        top.into_iter()
            .map(|p| format!("top level: unknown field {p}")),
    );
    let (Some(raw_suites), Some(known_suites)) = (
        raw.get("suites").and_then(Value::as_array),
        known.get("suites").and_then(Value::as_array),
    ) else {
        return;
    };
    for (i, (r, k)) in raw_suites.iter().zip(known_suites).enumerate() {
        let mut paths = Vec::new();
        walk(r, k, String::new(), &mut paths, false);
        let trial = file
            .suites
            .get(i)
            .map(Suite::trial_name)
            .unwrap_or_default();
        for path in paths {
            found.push(format!(
                "suite {trial} (suites[{i}]): unknown field {path} (check its spelling against \
                 the contract's spec 5)"
            ));
        }
    }
}

/// Collects the paths of object keys present in `raw` but not in `known`. At the top level
/// (`top`) the suites are left to the per-suite walk.
fn walk(raw: &Value, known: &Value, path: String, out: &mut Vec<String>, top: bool) {
    match (raw, known) {
        (Value::Object(r), Value::Object(k)) => {
            for (key, value) in r {
                let here = if path.is_empty() {
                    format!("`{key}`")
                } else {
                    format!("{}.{key}`", path.trim_end_matches('`'))
                };
                match k.get(key) {
                    None if value.is_null() => {}
                    None => out.push(here),
                    Some(_) if top && key == "suites" => {}
                    Some(kv) => walk(value, kv, here, out, false),
                }
            }
        }
        (Value::Array(r), Value::Array(k)) => {
            for (j, (rv, kv)) in r.iter().zip(k).enumerate() {
                let here = if path.is_empty() {
                    format!("`[{j}]`")
                } else {
                    format!("{}[{j}]`", path.trim_end_matches('`'))
                };
                walk(rv, kv, here, out, false);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"contractVersion":"1","generatedFrom":"t","frozen":false,
        "decisionFields":["allowed","limit","remaining","resetAt","retryAfterMs"],
        "suites":[{"primitive":"rateLimit","name":"fw","key":"k",
          "strategy":{"kind":"fixedWindow","options":{"limit":3,"windowMs":1000}},
          "ops":[{"now":5,"cost":1,"expect":{"allowed":true,"limit":3,"remaining":2,"resetAt":1000,"retryAfterMs":0}}]},
          {"primitive":"lease","name":"l","limit":10,"ttlMs":1000,"windowCoupled":true,
           "events":[{"op":"grant","capacity":5,"expiresAt":1000},
             {"op":"spend","now":5,"cost":1,"expect":{"needsRefresh":false,"decision":{"allowed":true,"limit":10,"remaining":4,"resetAt":1000,"retryAfterMs":0}}}]}]}"#;

    fn problems_of(text: &str) -> Vec<String> {
        let raw: Value = serde_json::from_str(text).unwrap();
        let file: VectorsFile = serde_json::from_value(raw.clone()).unwrap();
        problems(&file, &raw)
    }

    #[test]
    fn the_committed_vectors_are_clean() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contract/golden-vectors.json");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(problems_of(&text), Vec::<String>::new());
        assert_eq!(problems_of(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_problem_names_the_suite_and_op() {
        let cases = [
            (
                GOOD.replace(r#""cost":1,"expect""#, r#""cost":1,"note":"x","expect""#),
                "suite rateLimit::fw (suites[0]): unknown field `ops[0].note`",
            ),
            (
                GOOD.replace(r#""frozen":false"#, r#""frozen":false,"extra":1"#),
                "top level: unknown field `extra`",
            ),
            (
                GOOD.replace(r#""name":"l""#, r#""name":"fw""#),
                "suite lease::fw (suites[1]): the name \"fw\" is also the name of suites[0]",
            ),
            (
                GOOD.replace(
                    r#""now":5,"cost":1,"expect":{"allowed""#,
                    r#""now":5,"cost":-1,"expect":{"allowed""#,
                ),
                "suite rateLimit::fw (suites[0]): op 0: cost must be a finite number >= 0, got -1",
            ),
            (
                GOOD.replace(r#""limit":3,"windowMs""#, r#""limit":0,"windowMs""#),
                "suite rateLimit::fw (suites[0]): strategy fixedWindow: option `limit` must be a positive finite number, got 0",
            ),
            (
                GOOD.replace(
                    r#""now":5,"cost":1,"expect":{"allowed""#,
                    r#""now":-5,"cost":1,"expect":{"allowed""#,
                ),
                "suite rateLimit::fw (suites[0]): op 0: now must be a finite number of epoch milliseconds, got -5",
            ),
            (
                GOOD.replace(r#""op":"spend","now":5"#, r#""op":"spend","now":-1"#),
                "suite lease::l (suites[1]): event 1: now must be",
            ),
        ];
        for (text, want) in cases {
            let found = problems_of(&text);
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "want {want:?} in {found:#?}"
            );
        }
    }
}
