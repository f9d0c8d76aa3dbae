//! Vector timelines: the readable source of `golden-vectors.json` (`suites/vectors/*.toml`).
//!
//! A timeline lists what happens (ops with a time and a cost) but never what should come out:
//! the reference model computes every expectation, so a vector can't be mistyped by hand.
//!
//! ```toml
//! [[rateLimit]]
//! name = "gcra-third-of-a-second"          # unique across every file; also the key by default
//! start = 1_700_000_000_000                # epoch ms; every other time is ms after it
//! strategy = { kind = "gcra", options = { limit = 3, periodMs = 1000, burst = 9 } }
//! ops = [
//!   { at = 0, cost = 3 },                  # cost defaults to 1
//!   { at = 10, repeat = 4, every = 5 },    # four ops, at 10, 15, 20, 25
//! ]
//!
//! [[tokenBudget]]
//! name = "budget-crossing-debit"
//! start = 1_700_000_000_000
//! options = { budget = 100, windowMs = 60000 }
//! ops = [ { at = 0, tokens = 60, repeat = 2 } ]
//!
//! [[lease]]
//! name = "lease-window-coupled"
//! start = 1_700_000_000_000
//! limit = 10
//! ttlMs = 1000
//! windowCoupled = true
//! events = [
//!   { op = "grant", capacity = 5, expiresAt = 1000 },
//!   { op = "spend", at = 0, cost = 1, repeat = 3 },
//! ]
//! ```
//! `start` must be non-zero: on the Redis wire `now = 0` means "use the server clock".
//! Output order is stable: files by name, and in each file its rateLimit suites, then its
//! tokenBudget suites, then its lease suites, each in the order written.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Strategy, TokenBudgetOptions};

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: suite `{suite}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        suite: String,
        message: String,
    },
    #[error(
        "suite name `{name}` is used twice ({} and {}); names must be unique across suites/vectors",
        first.display(), second.display()
    )]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: no *.toml timeline files found", dir.display())]
    Empty { dir: PathBuf },
}

/// One `*.toml` file; suites of each primitive are kept in file order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimelineFile {
    #[serde(default)]
    pub rate_limit: Vec<RateLimitTimeline>,
    #[serde(default)]
    pub token_budget: Vec<TokenBudgetTimeline>,
    #[serde(default)]
    pub lease: Vec<LeaseTimeline>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitTimeline {
    pub name: String,
    /// Defaults to the suite name.
    pub key: Option<String>,
    pub start: f64,
    pub strategy: Strategy,
    pub ops: Vec<RateStep>,
}

/// One or more checks: `repeat` of them, `every` ms apart, starting `at` ms after `start`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStep {
    pub at: f64,
    #[serde(default = "one")]
    pub cost: f64,
    #[serde(default = "one_u32")]
    pub repeat: u32,
    #[serde(default)]
    pub every: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBudgetTimeline {
    pub name: String,
    pub start: f64,
    pub options: TokenBudgetOptions,
    pub ops: Vec<DebitStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebitStep {
    pub at: f64,
    pub tokens: f64,
    #[serde(default = "one_u32")]
    pub repeat: u32,
    #[serde(default)]
    pub every: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseTimeline {
    pub name: String,
    pub start: f64,
    pub limit: f64,
    pub ttl_ms: f64,
    pub window_coupled: bool,
    pub events: Vec<LeaseStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum LeaseStep {
    #[serde(rename_all = "camelCase")]
    Grant { capacity: f64, expires_at: f64 },
    Spend {
        at: f64,
        #[serde(default = "one")]
        cost: f64,
        #[serde(default = "one_u32")]
        repeat: u32,
        #[serde(default)]
        every: f64,
    },
}

fn one() -> f64 {
    1.0
}

fn one_u32() -> u32 {
    1
}

/// A timeline file with where it came from, for error messages.
#[derive(Debug, Clone)]
pub struct LoadedTimelines {
    pub path: PathBuf,
    pub file: TimelineFile,
}

/// Reads every `*.toml` in `dir`, in file-name order (so the generated file is stable).
pub fn load_dir(dir: &Path) -> Result<Vec<LoadedTimelines>, TimelineError> {
    let io = |source| TimelineError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(TimelineError::Empty {
            dir: dir.to_owned(),
        });
    }
    paths.into_iter().map(|p| load_file(&p)).collect()
}

pub fn load_file(path: &Path) -> Result<LoadedTimelines, TimelineError> {
    let text = std::fs::read_to_string(path).map_err(|source| TimelineError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file: TimelineFile = toml::from_str(&text).map_err(|e| TimelineError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    Ok(LoadedTimelines {
        path: path.to_owned(),
        file,
    })
}

/// A step's times that are not positive finite epoch-ms values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimesError {
    #[error("start must be a positive epoch-ms value, got {0}")]
    Start(f64),
    #[error("`at` must be a finite offset >= 0, got {0}")]
    At(f64),
    #[error("`repeat` must be at least 1")]
    Repeat,
    #[error("`every` must be a finite number of ms >= 0, got {0}")]
    Every(f64),
}

/// Expands `repeat`/`every` into absolute times; checks that each time is a positive finite
/// epoch-ms value (never 0: the wire's server-clock sentinel).
pub fn expand_times(start: f64, at: f64, repeat: u32, every: f64) -> Result<Vec<f64>, TimesError> {
    if !(start.is_finite() && start > 0.0) {
        return Err(TimesError::Start(start));
    }
    if !(at.is_finite() && at >= 0.0) {
        return Err(TimesError::At(at));
    }
    if repeat == 0 {
        return Err(TimesError::Repeat);
    }
    if !(every.is_finite() && every >= 0.0) {
        return Err(TimesError::Every(every));
    }
    Ok((0..repeat)
        .map(|i| start + at + every * f64::from(i))
        .collect())
}
