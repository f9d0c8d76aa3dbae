//! What the store saw of a run's script calls, for `cluster-keys`: MONITOR on every node from
//! before the first call, each EVAL/EVALSHA line with the commands its Lua ran (MONITOR shows
//! them as `[0 lua]` lines right after the call, scripts being atomic), the keys of each command
//! as Redis itself names them (`COMMAND INFO` key positions, `COMMAND GETKEYS` for commands
//! with movable keys), and a replay of one call of each script on a private `redis-server`
//! (not a cluster, so nothing is refused): a cluster stops a script at its first key on another
//! node, and only the replay then shows which key that was.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;

use super::checker::{KeyFinding, ScriptAudit};
use crate::infra::cluster::key_slot;
use crate::property::store::parse_monitor_line;

/// Most MONITOR lines kept per node (a short scenario makes a few thousand).
const MAX_LINES: usize = 400_000;
/// How long the end marker may take to come back through MONITOR.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Lines = tokio::task::JoinHandle<(Vec<String>, bool)>;

/// Why the audit could not watch or judge the store's script calls. `node` is redacted.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{node}: {step}")]
    Redis {
        node: String,
        step: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("{node}: MONITOR not accepted within 5 s")]
    MonitorTimeout { node: String },
    #[error("{node}: MONITOR did not show the end marker within {} s", DRAIN_TIMEOUT.as_secs())]
    NoEndMarker { node: String },
    #[error("{node}: the MONITOR reader stopped")]
    Reader {
        node: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("no redis-server on PATH for the replays")]
    NoRedisBinary,
    #[error("private redis-server for the replays")]
    PrivateRedis(#[source] crate::infra::RedisError),
    #[error("cannot connect")]
    Connect(#[source] crate::infra::RedisError),
}

impl AuditError {
    fn redis(node: &str, step: impl Into<String>) -> impl FnOnce(redis::RedisError) -> Self {
        let (node, step) = (node.to_string(), step.into());
        move |source| AuditError::Redis { node, step, source }
    }
}

/// A key a script call touched that a cluster would not let it: the key, the command (or
/// `KEYS[i]`) that touched it, and why.
struct StrayKey {
    key: String,
    command: String,
    why: String,
}

/// MONITOR running on every node.
pub struct Watch {
    nodes: Vec<NodeWatch>,
}

struct NodeWatch {
    url: String,
    con: MultiplexedConnection,
    marker: String,
    lines: Lines,
}

/// Starts MONITOR on each of `urls`; returns once every node has accepted it.
pub async fn watch(urls: &[String]) -> Result<Watch, AuditError> {
    let mut nodes = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let shown = crate::infra::redact_url(url);
        let client =
            redis::Client::open(url.as_str()).map_err(AuditError::redis(&shown, "bad URL"))?;
        let monitor = tokio::time::timeout(Duration::from_secs(5), client.get_async_monitor())
            .await
            .map_err(|_| AuditError::MonitorTimeout {
                node: shown.clone(),
            })?
            .map_err(AuditError::redis(&shown, "MONITOR"))?;
        let con = crate::infra::connect(url)
            .await
            .map_err(AuditError::Connect)?;
        let marker = format!("tk-conform-audit-end-{}-{i}", std::process::id());
        let end = marker.clone();
        let lines = tokio::spawn(async move {
            let mut stream = Box::pin(monitor.into_on_message::<String>());
            let mut lines = Vec::new();
            let mut truncated = false;
            while let Some(line) = stream.next().await {
                if line.contains(&end) {
                    break;
                }
                if lines.len() < MAX_LINES {
                    lines.push(line);
                } else {
                    truncated = true;
                }
            }
            (lines, truncated)
        });
        nodes.push(NodeWatch {
            url: url.clone(),
            con,
            marker,
            lines,
        });
    }
    Ok(Watch { nodes })
}

impl Watch {
    /// Every line each node saw up to now, by node (`127.0.0.1:port`).
    async fn drain(self) -> Result<(Vec<(String, Vec<String>)>, bool), AuditError> {
        let mut out = Vec::new();
        let mut truncated = false;
        for mut n in self.nodes {
            let node = crate::infra::redact_url(&n.url)
                .trim_start_matches("redis://")
                .to_string();
            let _: String = redis::cmd("ECHO")
                .arg(&n.marker)
                .query_async(&mut n.con)
                .await
                .map_err(AuditError::redis(&node, "ECHO"))?;
            let (lines, cut) = tokio::time::timeout(DRAIN_TIMEOUT, n.lines)
                .await
                .map_err(|_| AuditError::NoEndMarker { node: node.clone() })?
                .map_err(|source| AuditError::Reader {
                    node: node.clone(),
                    source,
                })?;
            truncated |= cut;
            out.push((node, lines));
        }
        Ok((out, truncated))
    }
}

/// One script call as MONITOR showed it.
#[derive(Debug, Clone, PartialEq)]
struct ScriptCall {
    sha: String,
    /// EVAL's code (EVALSHA: looked up by its sha).
    code: Option<String>,
    keys: Vec<String>,
    argv: Vec<String>,
    /// The commands its Lua ran.
    commands: Vec<Vec<String>>,
}

/// Script calls in MONITOR lines: each EVAL/EVALSHA (or `_RO`) with the `lua` lines after it.
fn script_calls(lines: &[String]) -> Vec<ScriptCall> {
    let mut calls: Vec<ScriptCall> = Vec::new();
    let mut open = false;
    for line in lines {
        let Some((source, args)) = parse_monitor_line(line) else {
            continue;
        };
        if source.ends_with(" lua") {
            if open && let Some(c) = calls.last_mut() {
                c.commands.push(args);
            }
            continue;
        }
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        open = false;
        let eval = matches!(name.as_str(), "EVAL" | "EVAL_RO");
        if !(eval || matches!(name.as_str(), "EVALSHA" | "EVALSHA_RO")) || args.len() < 3 {
            continue;
        }
        let Ok(numkeys) = args[2].parse::<usize>() else {
            continue;
        };
        let keys_end = (3 + numkeys).min(args.len());
        let (sha, code) = if eval {
            (
                redis::Script::new(&args[1]).get_hash().to_string(),
                Some(args[1].clone()),
            )
        } else {
            (args[1].to_ascii_lowercase(), None)
        };
        calls.push(ScriptCall {
            sha,
            code,
            keys: args[3..keys_end].to_vec(),
            argv: args[keys_end..].to_vec(),
            commands: Vec::new(),
        });
        open = true;
    }
    calls
}

/// Where a command's keys are, as `COMMAND INFO` says.
#[derive(Debug, Clone)]
enum KeySpec {
    Positions {
        first: i64,
        last: i64,
        step: i64,
    },
    /// Movable keys or subcommands: ask `COMMAND GETKEYS` per call.
    Ask,
    None,
}

/// Redis's own account of which arguments of a command are keys.
struct KeyOracle {
    con: MultiplexedConnection,
    specs: HashMap<String, KeySpec>,
}

impl KeyOracle {
    async fn keys(&mut self, args: &[String]) -> Result<Vec<String>, AuditError> {
        let Some(name) = args.first().map(|a| a.to_ascii_uppercase()) else {
            return Ok(Vec::new());
        };
        if !self.specs.contains_key(&name) {
            let spec = self.spec(&name).await?;
            self.specs.insert(name.clone(), spec);
        }
        match self.specs[&name].clone() {
            KeySpec::None => Ok(Vec::new()),
            KeySpec::Positions { first, last, step } => {
                let len = args.len() as i64;
                let last = if last < 0 {
                    len + last
                } else {
                    last.min(len - 1)
                };
                let mut keys = Vec::new();
                let mut i = first;
                while i <= last && i < len && step > 0 {
                    keys.push(args[i as usize].clone());
                    i += step;
                }
                Ok(keys)
            }
            KeySpec::Ask => {
                let reply: Result<Vec<String>, _> = redis::cmd("COMMAND")
                    .arg("GETKEYS")
                    .arg(args)
                    .query_async(&mut self.con)
                    .await;
                Ok(reply.unwrap_or_default())
            }
        }
    }

    async fn spec(&mut self, name: &str) -> Result<KeySpec, AuditError> {
        let info: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query_async(&mut self.con)
            .await
            .map_err(AuditError::redis(
                "the private redis-server",
                format!("COMMAND INFO {name}"),
            ))?;
        let redis::Value::Array(entries) = info else {
            return Ok(KeySpec::Ask);
        };
        let Some(redis::Value::Array(entry)) = entries.first() else {
            return Ok(KeySpec::Ask);
        };
        let int = |i: usize| match entry.get(i) {
            Some(redis::Value::Int(v)) => *v,
            _ => 0,
        };
        let movable = match entry.get(2) {
            Some(redis::Value::Array(flags)) | Some(redis::Value::Set(flags)) => {
                flags.iter().any(|f| match f {
                    redis::Value::SimpleString(s) => s == "movablekeys",
                    redis::Value::BulkString(b) => b == b"movablekeys",
                    _ => false,
                })
            }
            _ => false,
        };
        let subcommands = matches!(entry.get(9), Some(redis::Value::Array(s)) if !s.is_empty());
        Ok(match (int(3), movable || subcommands) {
            (_, true) => KeySpec::Ask,
            (0, false) => KeySpec::None,
            (first, false) => KeySpec::Positions {
                first,
                last: int(4),
                step: int(5),
            },
        })
    }
}

/// Findings of one call: keys it touched outside KEYS, and keys in another slot than KEYS[1]'s.
async fn judge_call(
    call: &ScriptCall,
    oracle: &mut KeyOracle,
) -> Result<Vec<StrayKey>, AuditError> {
    let mut out = Vec::new();
    let anchor = call.keys.first().cloned();
    let anchor_slot = anchor.as_deref().map(|k| key_slot(k.as_bytes()));
    for (i, k) in call.keys.iter().enumerate().skip(1) {
        let slot = key_slot(k.as_bytes());
        if Some(slot) != anchor_slot {
            out.push(StrayKey {
                key: k.clone(),
                command: format!("KEYS[{}]", i + 1),
                why: format!(
                    "declared, but in slot {slot} while KEYS[1] `{}` is in slot {}",
                    anchor.as_deref().unwrap_or_default(),
                    anchor_slot.unwrap_or_default()
                ),
            });
        }
    }
    for command in &call.commands {
        let name = command
            .first()
            .cloned()
            .unwrap_or_default()
            .to_ascii_uppercase();
        for k in oracle.keys(command).await? {
            if call.keys.contains(&k) {
                continue;
            }
            let slot = key_slot(k.as_bytes());
            let why = match (&anchor, anchor_slot) {
                (Some(a), Some(s)) if s != slot => format!(
                    "not declared in KEYS, and in slot {slot} while KEYS[1] `{a}` is in slot {s}"
                ),
                (Some(_), _) => "not declared in KEYS (same slot as KEYS[1])".to_string(),
                (None, _) => "not declared in KEYS (the call declared none)".to_string(),
            };
            out.push(StrayKey {
                key: k,
                command: name.clone(),
                why,
            });
        }
    }
    Ok(out)
}

/// Ends the watch and judges every script call it saw. `known` names scripts by code.
pub async fn finish(watch: Watch, known: &[(String, String)]) -> ScriptAudit {
    let mut audit = ScriptAudit::default();
    if let Err(e) = audit_into(&mut audit, watch, known).await {
        audit.error = Some(format!("{:#}", anyhow::Error::new(e)));
    }
    audit
}

async fn audit_into(
    audit: &mut ScriptAudit,
    watch: Watch,
    known: &[(String, String)],
) -> Result<(), AuditError> {
    let (nodes, truncated) = watch.drain().await?;
    audit.truncated = truncated;
    let by_sha: BTreeMap<String, (&str, &str)> = known
        .iter()
        .map(|(n, c)| {
            (
                redis::Script::new(c).get_hash().to_string(),
                (n.as_str(), c.as_str()),
            )
        })
        .collect();
    let name_of = |sha: &str| {
        by_sha
            .get(sha)
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| format!("script {sha}"))
    };
    // A private Redis answers COMMAND INFO and runs the replays.
    let binary = crate::infra::find_redis_binary().ok_or(AuditError::NoRedisBinary)?;
    let private = crate::infra::LocalRedis::start(&binary)
        .await
        .map_err(AuditError::PrivateRedis)?;
    let con = crate::infra::connect(&private.url())
        .await
        .map_err(AuditError::Connect)?;
    let mut oracle = KeyOracle {
        con,
        specs: HashMap::new(),
    };
    let mut findings: BTreeMap<(String, String, String), KeyFinding> = BTreeMap::new();
    let mut first_call: BTreeMap<String, ScriptCall> = BTreeMap::new();
    for (node, lines) in &nodes {
        for call in script_calls(lines) {
            let script = name_of(&call.sha);
            *audit.calls.entry(script.clone()).or_default() += 1;
            for stray in judge_call(&call, &mut oracle).await? {
                note(
                    &mut findings,
                    &script,
                    &call,
                    stray,
                    format!("on node {node}"),
                );
            }
            first_call.entry(call.sha.clone()).or_insert(call);
        }
    }
    // One replay per script, with the arguments of its first call.
    for (sha, call) in &first_call {
        let Some(code) = call
            .code
            .clone()
            .or_else(|| by_sha.get(sha).map(|(_, c)| c.to_string()))
        else {
            continue;
        };
        let replay_watch = watch_one(&private.url()).await?;
        let mut con = crate::infra::connect(&private.url())
            .await
            .map_err(AuditError::Connect)?;
        let _: Result<redis::Value, _> = redis::cmd("EVAL")
            .arg(&code)
            .arg(call.keys.len())
            .arg(&call.keys)
            .arg(&call.argv)
            .query_async(&mut con)
            .await;
        let (lines, _) = replay_watch.drain().await?;
        let script = name_of(sha);
        for replayed in lines.iter().flat_map(|(_, l)| script_calls(l)) {
            for stray in judge_call(&replayed, &mut oracle).await? {
                note(
                    &mut findings,
                    &script,
                    &replayed,
                    stray,
                    "in a replay on a private redis-server".into(),
                );
            }
        }
    }
    audit.findings = findings.into_values().collect();
    Ok(())
}

async fn watch_one(url: &str) -> Result<Watch, AuditError> {
    watch(&[url.to_string()]).await
}

fn note(
    findings: &mut BTreeMap<(String, String, String), KeyFinding>,
    script: &str,
    call: &ScriptCall,
    StrayKey { key, command, why }: StrayKey,
    seen: String,
) {
    findings
        .entry((script.to_string(), key.clone(), why.clone()))
        .and_modify(|f| f.times += 1)
        .or_insert(KeyFinding {
            script: script.to_string(),
            key,
            declared: call.keys.clone(),
            why,
            command,
            seen,
            times: 1,
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_lines_belong_to_the_script_call_before_them() {
        let lines: Vec<String> = [
            r#"1.0 [0 127.0.0.1:5000] "EVALSHA" "ABC" "1" "k" "0" "1""#,
            r#"1.1 [0 lua] "TIME""#,
            r#"1.2 [0 lua] "HMGET" "k" "start""#,
            r#"1.3 [0 127.0.0.1:5001] "GET" "x""#,
            r#"1.4 [0 lua] "SET" "stray" "1""#,
            r#"1.5 [0 127.0.0.1:5002] "eval" "return redis.call('GET', \"a\")\n" "0""#,
            r#"1.6 [0 lua] "GET" "a""#,
        ]
        .map(String::from)
        .to_vec();
        let calls = script_calls(&lines);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].sha, "abc");
        assert_eq!(calls[0].keys, ["k"]);
        assert_eq!(calls[0].argv, ["0", "1"]);
        assert_eq!(calls[0].commands.len(), 2);
        assert_eq!(
            calls[1].code.as_deref(),
            Some("return redis.call('GET', \"a\")\n")
        );
        assert!(calls[1].keys.is_empty());
        assert_eq!(calls[1].commands, [vec!["GET".to_string(), "a".into()]]);
    }
}
