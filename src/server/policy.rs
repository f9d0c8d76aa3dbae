//! Policy files (spec 9): which limiters a server serves, read once at start.
//!
//! The YAML is first read into a plain value tree and then checked key by key, so that every
//! mistake names the file, the policy and the offending key instead of a serde path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::duration;
use crate::model::{
    FixedWindowOptions, GcraOptions, SlidingWindowLogOptions, SlidingWindowOptions, Strategy,
    StrategyKind, TokenBucketOptions, TokenBudgetOptions,
};

/// Every policy a server serves, by name.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// What loads here but leaves spec 9's subset, so another server may refuse it (the server
    /// prints these at start-up).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    /// Store keys are `<prefix>:<identity>`; defaults to the policy name.
    pub prefix: String,
    pub kind: PolicyKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyKind {
    /// A rate limiter: `Check`, `CheckMany`, `Peek`, `Forecast` (and `Fleet.Reserve` when federated).
    Rate {
        strategy: Strategy,
        federated: Option<Federated>,
        two_tier: Option<TwoTier>,
    },
    /// A per-instance (`shared == false`) or store-shared token meter, served by `Debit`.
    Budget {
        options: TokenBudgetOptions,
        shared: bool,
    },
    /// Concurrency slots, served by `Admit` / `Release` / `Heartbeat`.
    Concurrency(Concurrency),
    /// A rate strategy and a concurrency ceiling admitted together by `Admit`.
    Unified {
        strategy: Strategy,
        concurrency: Concurrency,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Concurrency {
    pub ceiling: u32,
    /// `distributedConcurrency`: one ceiling across every instance on the store.
    pub distributed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Federated {
    pub batch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwoTier {
    pub batch: u32,
    pub window_coupled: bool,
}

impl PolicyKind {
    /// The kind's name as errors and reports show it.
    pub fn label(&self) -> &'static str {
        match self {
            PolicyKind::Rate {
                two_tier: Some(_), ..
            } => "twoTier rate limiter",
            PolicyKind::Rate {
                federated: Some(_), ..
            } => "federated rate limiter",
            PolicyKind::Rate { .. } => "rate limiter",
            PolicyKind::Budget { shared: false, .. } => "tokenBudget",
            PolicyKind::Budget { shared: true, .. } => "fleetBudget",
            PolicyKind::Concurrency(c) if c.distributed => "distributedConcurrency",
            PolicyKind::Concurrency(_) => "concurrency",
            PolicyKind::Unified { .. } => "unified admitter",
        }
    }
}

impl PolicySet {
    pub fn get(&self, name: &str) -> Option<&Arc<Policy>> {
        self.policies.get(name)
    }

    pub fn load(path: &Path) -> Result<PolicySet, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            file: file.clone(),
            message: e.to_string(),
        })?;
        PolicySet::parse(&file, &text)
    }

    /// Parses a policy file's text; `file` is only used to name it in errors.
    pub fn parse(file: &str, text: &str) -> Result<PolicySet, PolicyError> {
        let root: Value = serde_saphyr::from_str(text).map_err(|e| PolicyError::Yaml {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        let at_file = |message: String| PolicyError::File {
            file: file.to_owned(),
            message,
        };
        let root = root.as_object().ok_or_else(|| {
            at_file("expected a mapping with `version: 1` and `limiters:`".into())
        })?;
        if let Some(key) = root
            .keys()
            .find(|k| !matches!(k.as_str(), "version" | "limiters"))
        {
            return Err(at_file(format!(
                "unknown top-level key `{key}` (expected `version` and `limiters`)"
            )));
        }
        match root.get("version") {
            Some(v) if v.as_u64() == Some(1) || v.as_str() == Some("1") => {}
            Some(v) => return Err(at_file(format!("`version` must be 1, got {v}"))),
            None => return Err(at_file("missing `version: 1`".into())),
        }
        let limiters = root
            .get("limiters")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                at_file("missing `limiters:` mapping of policy name to policy".into())
            })?;
        if limiters.is_empty() {
            return Err(at_file(
                "`limiters:` is empty: a server needs at least one policy".into(),
            ));
        }
        let mut policies = BTreeMap::new();
        let mut warnings = subset_warnings(file, text);
        for (name, body) in limiters {
            let reader = PolicyReader { file, policy: name };
            let policy = reader.read(body)?;
            if let Some(warning) = reader.budget_window_warning(body) {
                warnings.push(warning);
            }
            policies.insert(name.clone(), Arc::new(policy));
        }
        Ok(PolicySet { policies, warnings })
    }
}

/// Spec 9's YAML subset: a `{ ... }` flow map may not hold another flow map (ThrottleKit's
/// server refuses the file at start-up). One warning per offending line.
pub fn subset_warnings(file: &str, text: &str) -> Vec<String> {
    nested_flow_map_lines(text)
        .into_iter()
        .map(|line| {
            format!(
                "{file}:{line}: a flow map `{{ ... }}` inside a flow map; spec 9's YAML subset allows one \
                 level (ThrottleKit's server refuses this file at start-up): write the outer map in block style"
            )
        })
        .collect()
}

/// The 1-based lines where a `{` opens inside an open `{ ... }`, outside quotes and comments.
fn nested_flow_map_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    // Open flow collections: `{` or `[`.
    let mut open: Vec<char> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if previous.is_whitespace() => break,
                    '\'' | '"' => quote = Some(c),
                    '{' => {
                        if open.contains(&'{') && lines.last() != Some(&(n + 1)) {
                            lines.push(n + 1);
                        }
                        open.push('{');
                    }
                    '[' => open.push('['),
                    '}' | ']' => {
                        open.pop();
                    }
                    _ => {}
                },
            }
            previous = c;
        }
    }
    lines
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read the policy file: {message}")]
    Read { file: String, message: String },
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: policy `{policy}`: {message}")]
    Policy {
        file: String,
        policy: String,
        message: String,
    },
    #[error("{file}: policy `{policy}`: key `{key}`: {message}")]
    Key {
        file: String,
        policy: String,
        key: String,
        message: String,
    },
}

/// Reads one policy, naming the file and policy in every error.
struct PolicyReader<'a> {
    file: &'a str,
    policy: &'a str,
}

const KIND_KEYS: [&str; 5] = [
    "strategy",
    "tokenBudget",
    "fleetBudget",
    "concurrency",
    "distributedConcurrency",
];

impl PolicyReader<'_> {
    fn policy_error(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::Policy {
            file: self.file.to_owned(),
            policy: self.policy.to_owned(),
            message: message.into(),
        }
    }

    fn key_error(&self, key: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::Key {
            file: self.file.to_owned(),
            policy: self.policy.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Spec 9 wants a budget's window as milliseconds (ThrottleKit loads `1h` there but then
    /// fails every Debit).
    fn budget_window_warning(&self, body: &Value) -> Option<String> {
        ["tokenBudget", "fleetBudget"].iter().find_map(|kind| {
            let budget = body.get(kind)?.as_object()?;
            let (key, value) = ["windowMs", "window"]
                .iter()
                .find_map(|k| budget.get(*k).map(|v| (*k, v)))?;
            value.is_string().then(|| {
                format!(
                    "{}: policy `{}`: key `{kind}.{key}`: {value} is a duration text; spec 9 wants a number \
                     of milliseconds there (ThrottleKit's server loads it but then fails every Debit)",
                    self.file, self.policy
                )
            })
        })
    }

    fn read(&self, body: &Value) -> Result<Policy, PolicyError> {
        if self.policy.is_empty() {
            return Err(self.policy_error("a policy name must not be empty"));
        }
        let map = body
            .as_object()
            .ok_or_else(|| self.policy_error("expected a mapping of options"))?;
        let prefix = match map.get("prefix") {
            None => self.policy.to_owned(),
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            Some(other) => {
                return Err(
                    self.key_error("prefix", format!("expected non-empty text, got {other}"))
                );
            }
        };
        let cc_key = ["concurrency", "distributedConcurrency"]
            .into_iter()
            .filter(|k| map.contains_key(*k))
            .collect::<Vec<_>>();
        if cc_key.len() > 1 {
            return Err(self
                .policy_error("has both `concurrency` and `distributedConcurrency`: choose one"));
        }
        let kind = if map.contains_key("strategy") {
            self.read_strategy_policy(map, cc_key.first().copied())?
        } else {
            let present: Vec<&str> = KIND_KEYS
                .iter()
                .copied()
                .filter(|k| map.contains_key(*k))
                .collect();
            match present.as_slice() {
                [] => {
                    return Err(self.policy_error(format!(
                        "no kind: a policy says what it limits with one of {}",
                        KIND_KEYS.map(|k| format!("`{k}`")).join(", ")
                    )));
                }
                [one] => self.read_plain_kind(map, one)?,
                many => {
                    return Err(self.policy_error(format!(
                        "has several kinds ({}): a policy has exactly one",
                        many.join(", ")
                    )));
                }
            }
        };
        Ok(Policy {
            name: self.policy.to_owned(),
            prefix,
            kind,
        })
    }

    fn read_plain_kind(
        &self,
        map: &Map<String, Value>,
        kind: &str,
    ) -> Result<PolicyKind, PolicyError> {
        self.only_keys(map, &[kind, "prefix"])?;
        let body = &map[kind];
        match kind {
            "tokenBudget" | "fleetBudget" => Ok(PolicyKind::Budget {
                options: self.read_budget(kind, body)?,
                shared: kind == "fleetBudget",
            }),
            _ => Ok(PolicyKind::Concurrency(self.read_concurrency(kind, body)?)),
        }
    }

    fn read_strategy_policy(
        &self,
        map: &Map<String, Value>,
        concurrency_key: Option<&str>,
    ) -> Result<PolicyKind, PolicyError> {
        let name = map["strategy"].as_str().unwrap_or_default();
        let kind = StrategyKind::from_name(name).ok_or_else(|| {
            self.key_error(
                "strategy",
                format!(
                    "unknown strategy {}; expected one of {}",
                    map["strategy"],
                    StrategyKind::ALL.map(|k| k.name()).join(", ")
                ),
            )
        })?;
        let option_keys: &[&str] = match kind {
            StrategyKind::Gcra => &["limit", "period", "periodMs", "burst"],
            StrategyKind::TokenBucket => &["capacity", "refillPerSec"],
            StrategyKind::FixedWindow | StrategyKind::SlidingWindowLog => {
                &["limit", "period", "windowMs"]
            }
            StrategyKind::SlidingWindow => &["limit", "period", "windowMs", "buckets"],
        };
        let mut allowed = vec!["strategy", "prefix", "federated", "twoTier"];
        allowed.extend_from_slice(option_keys);
        allowed.extend(concurrency_key);
        self.only_keys(map, &allowed)?;
        for other in ["tokenBudget", "fleetBudget"] {
            if map.contains_key(other) {
                return Err(self.key_error(other, "cannot be combined with `strategy`"));
            }
        }
        let strategy = self.read_strategy(kind, map)?;
        let federated = map
            .get("federated")
            .map(|v| self.read_federated(kind, v))
            .transpose()?;
        let two_tier = map
            .get("twoTier")
            .map(|v| self.read_two_tier(v))
            .transpose()?;
        if federated.is_some() && two_tier.is_some() {
            return Err(self.key_error("twoTier", "cannot be combined with `federated`"));
        }
        if let Some(cc_key) = concurrency_key {
            for extra in ["federated", "twoTier"] {
                if map.contains_key(extra) {
                    return Err(
                        self.key_error(extra, format!("cannot be combined with `{cc_key}`"))
                    );
                }
            }
            let concurrency = self.read_concurrency(cc_key, &map[cc_key])?;
            return Ok(PolicyKind::Unified {
                strategy,
                concurrency,
            });
        }
        Ok(PolicyKind::Rate {
            strategy,
            federated,
            two_tier,
        })
    }

    fn read_strategy(
        &self,
        kind: StrategyKind,
        map: &Map<String, Value>,
    ) -> Result<Strategy, PolicyError> {
        let strategy = match kind {
            StrategyKind::Gcra => {
                let limit = self.number(map, "limit")?;
                Strategy::Gcra(GcraOptions {
                    limit,
                    period_ms: self.duration_of(map, &["period", "periodMs"])?,
                    // A burst defaults to the limit: the whole period's quota at once.
                    burst: self.optional_number(map, "burst")?.unwrap_or(limit),
                })
            }
            StrategyKind::TokenBucket => Strategy::TokenBucket(TokenBucketOptions {
                capacity: self.number(map, "capacity")?,
                refill_per_sec: self.number(map, "refillPerSec")?,
            }),
            StrategyKind::FixedWindow => Strategy::FixedWindow(FixedWindowOptions {
                limit: self.number(map, "limit")?,
                window_ms: self.duration_of(map, &["period", "windowMs"])?,
            }),
            StrategyKind::SlidingWindow => Strategy::SlidingWindow(SlidingWindowOptions {
                limit: self.number(map, "limit")?,
                window_ms: self.duration_of(map, &["period", "windowMs"])?,
                buckets: self.number(map, "buckets")?,
            }),
            StrategyKind::SlidingWindowLog => Strategy::SlidingWindowLog(SlidingWindowLogOptions {
                limit: self.number(map, "limit")?,
                window_ms: self.duration_of(map, &["period", "windowMs"])?,
            }),
        };
        strategy
            .validate()
            .map_err(|e| self.policy_error(e.to_string()))?;
        Ok(strategy)
    }

    fn read_budget(&self, key: &str, body: &Value) -> Result<TokenBudgetOptions, PolicyError> {
        let map = body
            .as_object()
            .ok_or_else(|| self.key_error(key, "expected a mapping `{budget, windowMs}`"))?;
        self.only_nested_keys(key, map, &["budget", "windowMs", "window"])?;
        let options = TokenBudgetOptions {
            budget: self.nested_number(key, map, "budget")?,
            window_ms: self.nested_duration(key, map, &["windowMs", "window"])?,
        };
        Ok(options)
    }

    fn read_concurrency(&self, key: &str, body: &Value) -> Result<Concurrency, PolicyError> {
        let map = body
            .as_object()
            .ok_or_else(|| self.key_error(key, "expected a mapping `{minLimit, maxLimit}`"))?;
        self.only_nested_keys(key, map, &["minLimit", "maxLimit"])?;
        let min = self.nested_count(key, map, "minLimit")?;
        let max = self.nested_count(key, map, "maxLimit")?;
        if min != max {
            return Err(self.key_error(
                key,
                format!(
                    "minLimit {min} != maxLimit {max}: only pinned ceilings are served; set both to the ceiling"
                ),
            ));
        }
        Ok(Concurrency {
            ceiling: min,
            distributed: key == "distributedConcurrency",
        })
    }

    fn read_federated(&self, kind: StrategyKind, body: &Value) -> Result<Federated, PolicyError> {
        if !matches!(
            kind,
            StrategyKind::FixedWindow
                | StrategyKind::SlidingWindow
                | StrategyKind::SlidingWindowLog
        ) {
            return Err(self.key_error(
                "federated",
                format!("needs a window strategy (fixedWindow, slidingWindow, slidingWindowLog), not {kind}"),
            ));
        }
        let map = body
            .as_object()
            .ok_or_else(|| self.key_error("federated", "expected a mapping `{batch}`"))?;
        self.only_nested_keys("federated", map, &["batch"])?;
        Ok(Federated {
            batch: self.nested_count("federated", map, "batch")?,
        })
    }

    fn read_two_tier(&self, body: &Value) -> Result<TwoTier, PolicyError> {
        let key = "twoTier";
        let map = body.as_object().ok_or_else(|| {
            self.key_error(
                key,
                "expected a mapping `{mode: leased, batch, windowCoupled}`",
            )
        })?;
        self.only_nested_keys(key, map, &["mode", "batch", "windowCoupled"])?;
        match map.get("mode") {
            Some(Value::String(mode)) if mode == "leased" => {}
            Some(other) => {
                return Err(self.key_error(
                    "twoTier.mode",
                    format!("only `leased` is served, got {other}"),
                ));
            }
            None => return Err(self.key_error("twoTier.mode", "missing (write `mode: leased`)")),
        }
        let window_coupled = match map.get("windowCoupled") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(self.key_error(
                    "twoTier.windowCoupled",
                    format!("expected true or false, got {other}"),
                ));
            }
        };
        Ok(TwoTier {
            batch: self.nested_count(key, map, "batch")?,
            window_coupled,
        })
    }

    fn only_keys(&self, map: &Map<String, Value>, allowed: &[&str]) -> Result<(), PolicyError> {
        match map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(self.key_error(
                key,
                format!(
                    "not an option of this kind of policy (allowed: {})",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    fn only_nested_keys(
        &self,
        parent: &str,
        map: &Map<String, Value>,
        allowed: &[&str],
    ) -> Result<(), PolicyError> {
        match map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(self.key_error(
                &format!("{parent}.{key}"),
                format!("unknown option (allowed: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn number(&self, map: &Map<String, Value>, key: &str) -> Result<f64, PolicyError> {
        self.optional_number(map, key)?
            .ok_or_else(|| self.key_error(key, "missing (a positive number)"))
    }

    fn optional_number(
        &self,
        map: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<f64>, PolicyError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n.is_finite() && n > 0.0 => Ok(Some(n)),
                _ => Err(self.key_error(key, format!("expected a positive number, got {v}"))),
            },
        }
    }

    fn duration_of(&self, map: &Map<String, Value>, keys: &[&str]) -> Result<f64, PolicyError> {
        let present: Vec<&&str> = keys.iter().filter(|k| map.contains_key(**k)).collect();
        match present.as_slice() {
            [] => Err(self.key_error(
                keys[0],
                "missing (a duration like 500ms, 2s, 1m, 1h or bare milliseconds)",
            )),
            [key] => duration::parse_millis(&map[**key]).ok_or_else(|| {
                self.key_error(
                    key,
                    format!(
                        "expected a duration like 500ms, 2s, 1m, 1h or bare milliseconds, got {}",
                        map[**key]
                    ),
                )
            }),
            _ => Err(self.key_error(keys[1], format!("give only one of {}", keys.join(", ")))),
        }
    }

    fn nested_number(
        &self,
        parent: &str,
        map: &Map<String, Value>,
        key: &str,
    ) -> Result<f64, PolicyError> {
        match map.get(key) {
            None => Err(self.key_error(&format!("{parent}.{key}"), "missing (a positive number)")),
            Some(v) => match v.as_f64() {
                Some(n) if n.is_finite() && n > 0.0 => Ok(n),
                _ => Err(self.key_error(
                    &format!("{parent}.{key}"),
                    format!("expected a positive number, got {v}"),
                )),
            },
        }
    }

    fn nested_count(
        &self,
        parent: &str,
        map: &Map<String, Value>,
        key: &str,
    ) -> Result<u32, PolicyError> {
        let path = format!("{parent}.{key}");
        match map.get(key) {
            None => Err(self.key_error(&path, "missing (a whole number of at least 1)")),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(n as u32),
                _ => Err(self.key_error(
                    &path,
                    format!("expected a whole number of at least 1, got {v}"),
                )),
            },
        }
    }

    fn nested_duration(
        &self,
        parent: &str,
        map: &Map<String, Value>,
        keys: &[&str],
    ) -> Result<f64, PolicyError> {
        let key = keys.iter().find(|k| map.contains_key(**k)).ok_or_else(|| {
            self.key_error(
                &format!("{parent}.{}", keys[0]),
                "missing (a duration or milliseconds)",
            )
        })?;
        duration::parse_millis(&map[*key]).ok_or_else(|| {
            self.key_error(
                &format!("{parent}.{key}"),
                format!(
                    "expected a duration like 500ms, 2s, 1m, 1h or bare milliseconds, got {}",
                    map[*key]
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
version: 1
limiters:
  api: { strategy: gcra, limit: 5, period: 1h, burst: 5 }
  budget:
    tokenBudget: { budget: 5, windowMs: 3600000 }
  cc:
    concurrency: { minLimit: 3, maxLimit: 3 }
  unified:
    strategy: gcra
    limit: 5
    period: 1h
    burst: 5
    concurrency: { minLimit: 2, maxLimit: 2 }
  global:
    strategy: fixedWindow
    limit: 1000
    period: 1m
    federated: { batch: 16 }
"#;

    #[test]
    fn reads_the_spec_example() {
        let set = PolicySet::parse("p.yaml", SPEC_EXAMPLE).unwrap();
        assert_eq!(set.policies.len(), 5);
        assert_eq!(
            set.get("api").unwrap().kind,
            PolicyKind::Rate {
                strategy: Strategy::Gcra(GcraOptions {
                    limit: 5.0,
                    period_ms: 3_600_000.0,
                    burst: 5.0
                }),
                federated: None,
                two_tier: None,
            }
        );
        assert_eq!(
            set.get("budget").unwrap().kind,
            PolicyKind::Budget {
                options: TokenBudgetOptions {
                    budget: 5.0,
                    window_ms: 3_600_000.0
                },
                shared: false
            }
        );
        assert_eq!(
            set.get("cc").unwrap().kind,
            PolicyKind::Concurrency(Concurrency {
                ceiling: 3,
                distributed: false
            })
        );
        assert!(matches!(
            set.get("unified").unwrap().kind,
            PolicyKind::Unified {
                concurrency: Concurrency { ceiling: 2, .. },
                ..
            }
        ));
        assert!(matches!(
            set.get("global").unwrap().kind,
            PolicyKind::Rate {
                federated: Some(Federated { batch: 16 }),
                strategy: Strategy::FixedWindow(FixedWindowOptions {
                    window_ms: 60_000.0,
                    ..
                }),
                ..
            }
        ));
        assert_eq!(set.get("api").unwrap().prefix, "api");
    }

    #[test]
    fn reads_two_tier_fleet_budget_and_prefix() {
        let text = r#"
version: 1
limiters:
  tt:
    strategy: fixedWindow
    limit: 10
    windowMs: 2s
    prefix: shared
    twoTier: { mode: leased, batch: 4, windowCoupled: true }
  fb:
    fleetBudget: { budget: 100, window: 60000 }
  dc:
    distributedConcurrency: { minLimit: 1, maxLimit: 1 }
"#;
        let set = PolicySet::parse("p.yaml", text).unwrap();
        let tt = set.get("tt").unwrap();
        assert_eq!(tt.prefix, "shared");
        assert!(matches!(
            tt.kind,
            PolicyKind::Rate {
                two_tier: Some(TwoTier {
                    batch: 4,
                    window_coupled: true
                }),
                ..
            }
        ));
        assert!(matches!(
            set.get("fb").unwrap().kind,
            PolicyKind::Budget { shared: true, .. }
        ));
        assert!(matches!(
            set.get("dc").unwrap().kind,
            PolicyKind::Concurrency(Concurrency {
                distributed: true,
                ceiling: 1
            })
        ));
    }

    /// A file with one policy `p`; `body` is a flow map (`{ ... }`), written in block style
    /// one key per line, so nested maps stay within spec 9's subset.
    fn error_of(body: &str) -> String {
        let text = format!("version: 1\nlimiters:\n  p:\n{}", block(body));
        assert!(subset_warnings("pol.yaml", &text).is_empty(), "{text}");
        PolicySet::parse("pol.yaml", &text).unwrap_err().to_string()
    }

    /// `{ a: 1, b: { c: 2 } }` as block lines `    a: 1` / `    b: { c: 2 }`.
    fn block(flow: &str) -> String {
        let inner = flow.trim().trim_start_matches('{').trim_end_matches('}');
        let mut out = String::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push_str(&format!("    {}\n", inner[start..i].trim()));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push_str(&format!("    {}\n", inner[start..].trim()));
        out
    }

    #[test]
    fn bad_policies_name_file_policy_and_key() {
        let cases = [
            (
                "{ strategy: gcra, limit: 5, period: 1x }",
                "pol.yaml: policy `p`: key `period`: expected a duration",
            ),
            (
                "{ strategy: gcra, limit: -1, period: 1s }",
                "key `limit`: expected a positive number, got -1",
            ),
            (
                "{ strategy: leaky, limit: 5 }",
                "key `strategy`: unknown strategy \"leaky\"",
            ),
            (
                "{ strategy: gcra, limit: 5, period: 1s, colour: red }",
                "key `colour`: not an option",
            ),
            (
                "{ concurrency: { minLimit: 1, maxLimit: 4 } }",
                "key `concurrency`: minLimit 1 != maxLimit 4",
            ),
            (
                "{ concurrency: { minLimit: 0, maxLimit: 0 } }",
                "key `concurrency.minLimit`: expected a whole number",
            ),
            (
                "{ strategy: gcra, limit: 5, period: 1s, federated: { batch: 2 } }",
                "key `federated`: needs a window strategy",
            ),
            (
                "{ strategy: fixedWindow, limit: 5, period: 1s, twoTier: { mode: eager, batch: 2 } }",
                "key `twoTier.mode`: only `leased`",
            ),
            (
                "{ tokenBudget: { budget: 5 } }",
                "key `tokenBudget.windowMs`: missing",
            ),
            ("{ limit: 5 }", "policy `p`: no kind"),
            (
                "{ tokenBudget: { budget: 5, windowMs: 1 }, concurrency: { minLimit: 1, maxLimit: 1 } }",
                "several kinds",
            ),
            (
                "{ strategy: slidingWindow, limit: 5, period: 1s, buckets: 2.5 }",
                "buckets",
            ),
        ];
        for (body, expected) in cases {
            let message = error_of(body);
            assert!(
                message.contains(expected),
                "for {body}: got `{message}`, wanted `{expected}`"
            );
            assert!(message.starts_with("pol.yaml: "), "{message}");
        }
    }

    #[test]
    fn nested_flow_maps_and_budget_durations_are_warned_about() {
        let text = "version: 1\nlimiters:\n  a: { strategy: gcra, limit: 1, period: 1s }\n  \
                    b: { concurrency: { minLimit: 1, maxLimit: 1 } }\n  c:\n    \
                    tokenBudget: { budget: 5, windowMs: 1h }\n  # x: { y: { z: 1 } }\n";
        let set = PolicySet::parse("w.yaml", text).unwrap();
        assert_eq!(set.warnings.len(), 2, "{:#?}", set.warnings);
        assert!(
            set.warnings[0].starts_with("w.yaml:4: a flow map `{ ... }` inside a flow map"),
            "{}",
            set.warnings[0]
        );
        assert!(
            set.warnings[1].contains("policy `c`: key `tokenBudget.windowMs`: \"1h\""),
            "{}",
            set.warnings[1]
        );
        assert_eq!(
            nested_flow_map_lines("a: '{ {'\nb: { c: 1 }\n"),
            Vec::<usize>::new()
        );
        assert_eq!(nested_flow_map_lines("a: {\n  b: {c: 1}\n}\n"), vec![2]);
        assert!(
            PolicySet::parse("s.yaml", SPEC_EXAMPLE)
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn bad_files_are_named() {
        let e = PolicySet::parse(
            "x.yaml",
            "version: 2\nlimiters:\n  a: {strategy: gcra, limit: 1, period: 1s}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("x.yaml: `version` must be 1"), "{e}");
        let e = PolicySet::parse("x.yaml", "limiters: [").unwrap_err();
        assert!(e.to_string().starts_with("x.yaml: not valid YAML"), "{e}");
        let e = PolicySet::load(Path::new("/nonexistent/p.yaml")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/p.yaml: cannot read"),
            "{e}"
        );
    }
}
