//! The contract's Lua scripts as a callable set: loaded from a contract's `scripts/manifest.json`,
//! each file checked against its sha256, ARGV marshalled by the names the manifest lists (never a
//! hard-coded order), called with EVALSHA and falling back to EVAL when Redis answers NOSCRIPT
//! (an empty script cache after a restart or failover).
//!
//! Independent of the runner: the reference server's Redis store and the battle workers use it too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redis::aio::ConnectionLike;
use sha2::{Digest, Sha256};

use crate::contract::CONTRACT_VERSION;
use crate::contract::scripts::{ScriptEntry, ScriptRole, ScriptsManifest};
use crate::model::{Decision, Strategy, StrategyKind, num};

/// Why a script set could not be loaded. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ScriptSetError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not a valid scripts manifest: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: contractVersion is {found:?}, this tk-conform judges contract {CONTRACT_VERSION:?}"
    )]
    Version { path: PathBuf, found: String },
    #[error(
        "{}: no scripts manifest there; a scripts folder holds manifest.json (spec 6) beside the \
         *.lua files it names",
        path.display()
    )]
    NoManifest { path: PathBuf },
    #[error(
        "{path}: sha256 is {actual} but {manifest} says {expected}; the script drifted from its \
         manifest (restore it, or update the manifest's sha256 if the edit is intended)"
    )]
    Checksum {
        path: PathBuf,
        manifest: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: script {script:?}: {problem}")]
    Entry {
        path: PathBuf,
        script: String,
        problem: String,
    },
}

/// Why one script call failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptCallError {
    #[error("the scripts manifest has no {role} script for {strategy}")]
    Missing { strategy: String, role: String },
    #[error("{script}: {source}")]
    Redis {
        script: String,
        source: redis::RedisError,
    },
    #[error("{script}: unexpected reply {reply}: {problem}")]
    Reply {
        script: String,
        reply: String,
        problem: ReplyError,
    },
}

/// What is wrong with a reply that should have been the 5-integer decision tuple.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("expected an array of 5 integers")]
    NotAnArray,
    #[error("expected 5 integers, got {0} items")]
    Length(usize),
    #[error("{field} (item {item}) is {value}, not an integer")]
    NotAnInteger {
        field: &'static str,
        item: usize,
        value: String,
    },
    #[error("allowed is {0}, not 0 or 1")]
    Allowed(i64),
}

impl ScriptCallError {
    /// True when the call got no answer in time (the connection's response timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ScriptCallError::Redis { source, .. } if source.is_timeout())
    }

    /// True when Redis answered BUSY: another script is running, this one did not run.
    pub fn is_busy(&self) -> bool {
        matches!(self, ScriptCallError::Redis { source, .. } if source.code() == Some("BUSY"))
    }

    /// True when this call's script was stopped by `SCRIPT KILL`.
    pub fn was_killed(&self) -> bool {
        matches!(self, ScriptCallError::Redis { source, .. }
            if source.to_string().contains("killed by user"))
    }

    /// The manifest name of the script that failed, when there was one.
    pub fn script(&self) -> Option<&str> {
        match self {
            ScriptCallError::Redis { script, .. } | ScriptCallError::Reply { script, .. } => {
                Some(script)
            }
            ScriptCallError::Missing { .. } => None,
        }
    }

    /// True when the failure is the connection (refused, dropped, timed out) rather than the script.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ScriptCallError::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
            }
            _ => false,
        }
    }
}

/// One script of the set, with its code and SHA-1 (the EVALSHA handle).
#[derive(Debug, Clone)]
pub struct LoadedScript {
    pub entry: ScriptEntry,
    pub kind: StrategyKind,
    pub code: String,
    pub sha1: String,
}

/// Every script a contract's `scripts/manifest.json` lists, verified.
#[derive(Debug, Clone)]
pub struct ScriptSet {
    manifest_path: PathBuf,
    manifest: ScriptsManifest,
    scripts: Vec<LoadedScript>,
}

/// Where one ARGV slot's value comes from, resolved once per strategy.
#[derive(Debug, Clone)]
enum Slot {
    Now,
    Cost,
    Fixed(String),
}

/// A check script bound to one strategy's options: only `now` and `cost` vary per call.
#[derive(Debug, Clone)]
pub struct BoundCheck<'a> {
    script: &'a LoadedScript,
    slots: Vec<Slot>,
}

impl ScriptSet {
    /// Loads `<contract_dir>/scripts/manifest.json` and the files it names.
    pub fn from_contract_dir(contract_dir: &Path) -> Result<Self, ScriptSetError> {
        Self::load(&contract_dir.join("scripts").join("manifest.json"))
    }

    /// Loads an engine author's scripts folder (`run --scripts DIR`): `DIR/manifest.json` and
    /// the files it names, each checked against its sha256 in that manifest.
    pub fn from_scripts_dir(dir: &Path) -> Result<Self, ScriptSetError> {
        let manifest = dir.join("manifest.json");
        if !manifest.is_file() {
            return Err(ScriptSetError::NoManifest {
                path: dir.to_owned(),
            });
        }
        Self::load(&manifest)
    }

    /// Loads a scripts manifest and every file it names, checking versions, checksums, and that
    /// every ARGV name is one the contract defines for that strategy.
    pub fn load(manifest_path: &Path) -> Result<Self, ScriptSetError> {
        let text =
            std::fs::read_to_string(manifest_path).map_err(|source| ScriptSetError::Read {
                path: manifest_path.to_owned(),
                source,
            })?;
        let manifest: ScriptsManifest =
            serde_json::from_str(&text).map_err(|e| ScriptSetError::Parse {
                path: manifest_path.to_owned(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        if manifest.contract_version != CONTRACT_VERSION {
            return Err(ScriptSetError::Version {
                path: manifest_path.to_owned(),
                found: manifest.contract_version.clone(),
            });
        }
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let mut scripts = Vec::new();
        for entry in &manifest.scripts {
            let problem = |problem: String| ScriptSetError::Entry {
                path: manifest_path.to_owned(),
                script: entry.name.clone(),
                problem,
            };
            let kind = StrategyKind::from_name(&entry.strategy)
                .ok_or_else(|| problem(format!("unknown strategy {:?}", entry.strategy)))?;
            if entry.keys.len() != 1 {
                return Err(problem(format!(
                    "takes {} keys; the contract's scripts take exactly one",
                    entry.keys.len()
                )));
            }
            if entry.role == ScriptRole::Check {
                for name in &entry.argv {
                    if !matches!(name.as_str(), "now" | "cost")
                        && option_names(kind).all(|n| n != name)
                    {
                        return Err(problem(format!(
                            "unknown ARGV name {name:?}; {} takes now, cost and {}",
                            kind,
                            option_names(kind).collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
            }
            if !crate::contract::layout::is_plain_relative(&entry.file) {
                return Err(problem(format!(
                    "names file {:?}, which is not a plain relative path inside {}",
                    entry.file,
                    dir.display()
                )));
            }
            let path = dir.join(&entry.file);
            let bytes = std::fs::read(&path).map_err(|e| {
                problem(format!(
                    "cannot read its file {}: {e} (every file the manifest names must be there)",
                    path.display()
                ))
            })?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if !actual.eq_ignore_ascii_case(&entry.sha256) {
                return Err(ScriptSetError::Checksum {
                    path,
                    manifest: manifest_path.to_owned(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            let code = String::from_utf8(bytes).map_err(|_| problem("is not UTF-8 text".into()))?;
            let sha1 = redis::Script::new(&code).get_hash().to_owned();
            scripts.push(LoadedScript {
                entry: entry.clone(),
                kind,
                code,
                sha1,
            });
        }
        Ok(ScriptSet {
            manifest_path: manifest_path.to_owned(),
            manifest,
            scripts,
        })
    }

    /// A copy of the set with script `name`'s code replaced (a mutant, for `tk-conform mutate`):
    /// the manifest's sha256 no longer applies to it, the EVALSHA handle is recomputed.
    /// `None` when the set has no script of that name.
    pub fn with_code(&self, name: &str, code: String) -> Option<ScriptSet> {
        let mut set = self.clone();
        let script = set.scripts.iter_mut().find(|s| s.entry.name == name)?;
        script.sha1 = redis::Script::new(&code).get_hash().to_owned();
        script.code = code;
        Some(set)
    }

    pub fn manifest(&self) -> &ScriptsManifest {
        &self.manifest
    }

    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    pub fn scripts(&self) -> &[LoadedScript] {
        &self.scripts
    }

    pub fn script(&self, kind: StrategyKind, role: ScriptRole) -> Option<&LoadedScript> {
        self.scripts
            .iter()
            .find(|s| s.kind == kind && s.entry.role == role)
    }

    /// The strategies that have a `check` script.
    pub fn strategies(&self) -> BTreeSet<StrategyKind> {
        self.scripts
            .iter()
            .filter(|s| s.entry.role == ScriptRole::Check)
            .map(|s| s.kind)
            .collect()
    }

    /// The check script for `strategy`, with its options marshalled into ARGV by name.
    pub fn bind(&self, strategy: &Strategy) -> Result<BoundCheck<'_>, ScriptCallError> {
        let kind = strategy.kind();
        let script =
            self.script(kind, ScriptRole::Check)
                .ok_or_else(|| ScriptCallError::Missing {
                    strategy: kind.to_string(),
                    role: "check".into(),
                })?;
        let slots = script
            .entry
            .argv
            .iter()
            .map(|name| match name.as_str() {
                "now" => Slot::Now,
                "cost" => Slot::Cost,
                option => Slot::Fixed(num::to_argv(
                    option_value(strategy, option).expect("names checked when loading"),
                )),
            })
            .collect();
        Ok(BoundCheck { script, slots })
    }

    /// One check: `strategy`'s script on `key` at `now` (0 = the server's clock) for `cost`.
    pub async fn check<C: ConnectionLike>(
        &self,
        con: &mut C,
        key: &str,
        strategy: &Strategy,
        now: f64,
        cost: f64,
    ) -> Result<Decision, ScriptCallError> {
        self.bind(strategy)?.call(con, key, now, cost).await
    }

    /// The raw state of `key` as the strategy's `read` script returns it (see the script's header).
    pub async fn read<C: ConnectionLike>(
        &self,
        con: &mut C,
        key: &str,
        kind: StrategyKind,
    ) -> Result<redis::Value, ScriptCallError> {
        let script =
            self.script(kind, ScriptRole::Read)
                .ok_or_else(|| ScriptCallError::Missing {
                    strategy: kind.to_string(),
                    role: "read".into(),
                })?;
        invoke(con, script, key, &[]).await
    }

    /// SCRIPT LOAD of every script, so that pipelined EVALSHAs (which cannot fall back) find them.
    pub async fn load_all<C: ConnectionLike>(&self, con: &mut C) -> Result<(), ScriptCallError> {
        for script in &self.scripts {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(&script.code)
                .query_async(con)
                .await
                .map_err(|source| ScriptCallError::Redis {
                    script: script.entry.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

impl BoundCheck<'_> {
    pub fn script(&self) -> &LoadedScript {
        self.script
    }

    /// The ARGV strings for one call, in the manifest's order.
    pub fn argv(&self, now: f64, cost: f64) -> Vec<String> {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Now => num::to_argv(now),
                Slot::Cost => num::to_argv(cost),
                Slot::Fixed(text) => text.clone(),
            })
            .collect()
    }

    /// `EVALSHA sha 1 key argv...`, for pipelines (after [`ScriptSet::load_all`]).
    pub fn evalsha_cmd(&self, key: &str, now: f64, cost: f64) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.script.sha1)
            .arg(1)
            .arg(key)
            .arg(self.argv(now, cost));
        cmd
    }

    /// Runs the check and decodes the reply tuple.
    pub async fn call<C: ConnectionLike>(
        &self,
        con: &mut C,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<Decision, ScriptCallError> {
        let reply = invoke(con, self.script, key, &self.argv(now, cost)).await?;
        self.decode(&reply)
    }
}

impl BoundCheck<'_> {
    /// The check and the key's PTTL in one round trip (EVALSHA and PTTL pipelined): the PTTL
    /// runs right after the script, so it sees what the script wrote. A pipeline cannot fall
    /// back when Redis answers NOSCRIPT, so that answer falls back to [`Self::call`] (EVAL)
    /// and a PTTL of its own.
    pub async fn call_with_pttl<C: ConnectionLike>(
        &self,
        con: &mut C,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<(Decision, i64), ScriptCallError> {
        let redis_error = |source| ScriptCallError::Redis {
            script: self.script.entry.name.clone(),
            source,
        };
        let mut pipe = redis::pipe();
        pipe.add_command(self.evalsha_cmd(key, now, cost))
            .cmd("PTTL")
            .arg(key);
        let answer = pipe
            .query_async::<(redis::Value, i64)>(con)
            .await
            .map_err(first_failure);
        match answer {
            Ok((reply, pttl)) => Ok((self.decode(&reply)?, pttl)),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let decision = self.call(con, key, now, cost).await?;
                let pttl = redis::cmd("PTTL")
                    .arg(key)
                    .query_async(con)
                    .await
                    .map_err(redis_error)?;
                Ok((decision, pttl))
            }
            Err(e) => Err(redis_error(e)),
        }
    }

    fn decode(&self, reply: &redis::Value) -> Result<Decision, ScriptCallError> {
        decision_from_reply(reply).map_err(|problem| ScriptCallError::Reply {
            script: self.script.entry.name.clone(),
            reply: format!("{reply:?}"),
            problem,
        })
    }
}

/// A pipeline's failure as the error of its first failing command, so it reads like that
/// command's own (redis-rs reports BUSY inside a pipeline without its code).
fn first_failure(e: redis::RedisError) -> redis::RedisError {
    match e.clone().into_server_errors() {
        Some(items) if !items.is_empty() => redis::RedisError::from(items[0].1.clone()),
        _ => e,
    }
}

/// EVALSHA, and EVAL when the server does not have the script cached.
async fn invoke<C: ConnectionLike>(
    con: &mut C,
    script: &LoadedScript,
    key: &str,
    argv: &[String],
) -> Result<redis::Value, ScriptCallError> {
    let redis_error = |source| ScriptCallError::Redis {
        script: script.entry.name.clone(),
        source,
    };
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(&script.sha1).arg(1).arg(key).arg(argv);
    match evalsha.query_async(con).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut eval = redis::cmd("EVAL");
            eval.arg(&script.code).arg(1).arg(key).arg(argv);
            eval.query_async(con).await.map_err(redis_error)
        }
        other => other.map_err(redis_error),
    }
}

/// Decodes the 5-integer reply tuple; anything else is a contract violation, described.
pub fn decision_from_reply(reply: &redis::Value) -> Result<Decision, ReplyError> {
    let redis::Value::Array(items) = reply else {
        return Err(ReplyError::NotAnArray);
    };
    if items.len() != 5 {
        return Err(ReplyError::Length(items.len()));
    }
    let mut values = [0i64; 5];
    for (i, (item, slot)) in items.iter().zip(values.iter_mut()).enumerate() {
        *slot = match item {
            redis::Value::Int(v) => *v,
            other => {
                return Err(ReplyError::NotAnInteger {
                    field: Decision::FIELDS[i],
                    item: i + 1,
                    value: format!("{other:?}"),
                });
            }
        };
    }
    let allowed = match values[0] {
        0 => false,
        1 => true,
        v => return Err(ReplyError::Allowed(v)),
    };
    Ok(Decision {
        allowed,
        limit: values[1],
        remaining: values[2],
        reset_at: values[3],
        retry_after_ms: values[4],
    })
}

/// The contract's option names for a strategy (spec 2, "Strategy option names").
fn option_names(kind: StrategyKind) -> impl Iterator<Item = &'static str> {
    let names: &'static [&'static str] = match kind {
        StrategyKind::Gcra => &["limit", "periodMs", "burst"],
        StrategyKind::TokenBucket => &["capacity", "refillPerSec"],
        StrategyKind::FixedWindow => &["limit", "windowMs"],
        StrategyKind::SlidingWindow => &["limit", "windowMs", "buckets"],
        StrategyKind::SlidingWindowLog => &["limit", "windowMs"],
    };
    names.iter().copied()
}

/// The value of the option called `name` (the contract's camelCase name).
fn option_value(strategy: &Strategy, name: &str) -> Option<f64> {
    match (strategy, name) {
        (Strategy::Gcra(o), "limit") => Some(o.limit),
        (Strategy::Gcra(o), "periodMs") => Some(o.period_ms),
        (Strategy::Gcra(o), "burst") => Some(o.burst),
        (Strategy::TokenBucket(o), "capacity") => Some(o.capacity),
        (Strategy::TokenBucket(o), "refillPerSec") => Some(o.refill_per_sec),
        (Strategy::FixedWindow(o), "limit") => Some(o.limit),
        (Strategy::FixedWindow(o), "windowMs") => Some(o.window_ms),
        (Strategy::SlidingWindow(o), "limit") => Some(o.limit),
        (Strategy::SlidingWindow(o), "windowMs") => Some(o.window_ms),
        (Strategy::SlidingWindow(o), "buckets") => Some(o.buckets),
        (Strategy::SlidingWindowLog(o), "limit") => Some(o.limit),
        (Strategy::SlidingWindowLog(o), "windowMs") => Some(o.window_ms),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract_scripts() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contract")
    }

    #[test]
    fn the_committed_scripts_load() {
        let set = ScriptSet::from_contract_dir(&contract_scripts()).unwrap();
        assert_eq!(set.strategies().len(), 5);
        assert_eq!(set.scripts().len(), 10);
    }

    #[test]
    fn every_option_name_has_a_value() {
        let strategies: Vec<Strategy> = serde_json::from_str(
            r#"[{"kind":"gcra","options":{"limit":3,"periodMs":1000,"burst":2}},
                {"kind":"tokenBucket","options":{"capacity":5,"refillPerSec":0.5}},
                {"kind":"fixedWindow","options":{"limit":3,"windowMs":1000}},
                {"kind":"slidingWindow","options":{"limit":3,"windowMs":1000,"buckets":4}},
                {"kind":"slidingWindowLog","options":{"limit":3,"windowMs":1000}}]"#,
        )
        .unwrap();
        for s in &strategies {
            for name in option_names(s.kind()) {
                assert!(option_value(s, name).is_some(), "{} {name}", s.kind());
            }
        }
    }

    #[test]
    fn argv_follows_the_manifest_order_not_ours() {
        let mut set = ScriptSet::from_contract_dir(&contract_scripts()).unwrap();
        let gcra = set
            .scripts
            .iter_mut()
            .find(|s| s.entry.name == "gcra.check")
            .unwrap();
        gcra.entry.argv = ["cost", "burst", "now", "limit", "periodMs"]
            .map(String::from)
            .to_vec();
        let strategy: Strategy = serde_json::from_str(
            r#"{"kind":"gcra","options":{"limit":3,"periodMs":1000,"burst":2}}"#,
        )
        .unwrap();
        let bound = set.bind(&strategy).unwrap();
        assert_eq!(
            bound.argv(1.7e12, 0.5),
            ["0.5", "2", "1700000000000", "3", "1000"]
        );
    }

    #[test]
    fn a_drifted_script_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        std::fs::create_dir(&scripts).unwrap();
        for entry in std::fs::read_dir(contract_scripts().join("scripts")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), scripts.join(entry.file_name())).unwrap();
        }
        let lua = scripts.join("fixedWindow.check.lua");
        let text = std::fs::read_to_string(&lua).unwrap() + "\n";
        std::fs::write(&lua, text).unwrap();
        let err = ScriptSet::from_contract_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fixedWindow.check.lua") && err.contains("sha256"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_manifest_gives_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        std::fs::write(&path, "{\n  \"contractVersion\": \"1\",\n  oops\n}").unwrap();
        let err = ScriptSet::load(&path).unwrap_err().to_string();
        assert!(err.contains("manifest.json:3:3"), "{err}");
    }

    #[test]
    fn replies_are_decoded_strictly() {
        use redis::Value::{Array, Int, SimpleString};
        let ok = Array(vec![Int(1), Int(5), Int(4), Int(1000), Int(0)]);
        assert!(decision_from_reply(&ok).unwrap().allowed);
        let short = Array(vec![Int(1), Int(5)]);
        assert!(
            decision_from_reply(&short)
                .unwrap_err()
                .to_string()
                .contains("5 integers")
        );
        let bad = Array(vec![Int(2), Int(5), Int(4), Int(1000), Int(0)]);
        assert!(
            decision_from_reply(&bad)
                .unwrap_err()
                .to_string()
                .contains("allowed")
        );
        let text = Array(vec![
            Int(1),
            Int(5),
            SimpleString("4".into()),
            Int(1),
            Int(0),
        ]);
        assert!(
            decision_from_reply(&text)
                .unwrap_err()
                .to_string()
                .contains("remaining")
        );
    }
}
