//! Reading run folders back: `summary.json` and, for battles, each scenario's `result.json`
//! (where the store version is recorded). Anything that is not a run folder is an error naming
//! the path and what to pass instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::report::Summary;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "{dir} is not a run folder (no summary.json in it): pass folders that `tk-conform run` or \
         `tk-conform battle` wrote, e.g. logs/latest"
    )]
    NotARun { dir: PathBuf },
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{file}:{line}:{column}: not a tk-conform summary ({message}); was it written by this \
         tool, and not edited or truncated?"
    )]
    Malformed {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: written by {tool}, not tk-conform")]
    ForeignTool { file: PathBuf, tool: String },
}

/// One run, as the matrix sees it.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub summary: Summary,
    /// The engine judged: the backend's name, or the battle's server command.
    pub engine: String,
    /// The store each trial ran against (`redis 7.0.15`, `valkey 9.1.2`, `in-process`).
    pub stores: BTreeMap<String, String>,
}

/// At most this many bytes of `summary.json` are read (a real one is tens of kilobytes).
const MAX_SUMMARY: u64 = 64 << 20;

pub fn load(dir: &Path) -> Result<LoadedRun, LoadError> {
    let file = dir.join("summary.json");
    if !dir.is_dir() || !file.is_file() {
        return Err(LoadError::NotARun {
            dir: dir.to_path_buf(),
        });
    }
    let read_err = |source| LoadError::Read {
        file: file.clone(),
        source,
    };
    let len = std::fs::metadata(&file).map_err(read_err)?.len();
    if len > MAX_SUMMARY {
        return Err(LoadError::Malformed {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("{len} bytes, more than the {MAX_SUMMARY} a summary may have"),
        });
    }
    let text = std::fs::read_to_string(&file).map_err(read_err)?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| LoadError::Malformed {
        file: file.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    if summary.tool != "tk-conform" {
        return Err(LoadError::ForeignTool {
            file,
            tool: summary.tool.clone(),
        });
    }
    let engine = engine(&summary);
    let mut stores = BTreeMap::new();
    for t in &summary.trials {
        stores.insert(t.name.clone(), store(dir, &summary, &t.name));
    }
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        summary,
        engine,
        stores,
    })
}

fn backend_field<'a>(summary: &'a Summary, field: &str) -> Option<&'a str> {
    summary.backend.as_ref()?.get(field)?.as_str()
}

fn engine(summary: &Summary) -> String {
    if summary.command == "battle" {
        let cmd = summary
            .details
            .get("serverCmd")
            .and_then(|v| v.as_str())
            .unwrap_or("reference");
        return if cmd == "reference" {
            "tk-conform reference (contract Lua, reference server)".into()
        } else {
            format!("battle: {cmd}")
        };
    }
    let name = backend_field(summary, "name").unwrap_or("unknown engine");
    // `contract Lua scripts (contract/scripts/manifest.json)`: the path is where, not what.
    let name = match name.split_once(" (") {
        Some((short, _)) if backend_field(summary, "kind") == Some("redis") => short,
        _ => name,
    };
    match backend_field(summary, "version") {
        Some(v) if !v.is_empty() && backend_field(summary, "kind") != Some("redis") => {
            format!("{name} {v}")
        }
        _ => name.to_owned(),
    }
}

/// `redis 7.0.15 at redis://… (started …)` → `redis 7.0.15`.
fn short_store(text: &str) -> String {
    text.split(" at ").next().unwrap_or(text).trim().to_owned()
}

fn store(dir: &Path, summary: &Summary, trial: &str) -> String {
    if summary.command == "battle" {
        let result = dir.join("scenarios").join(trial).join("result.json");
        let redis = std::fs::read(&result)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("redis")?.as_str().map(short_store));
        return match redis {
            Some(r) if !r.is_empty() => r,
            _ => "unknown store".into(),
        };
    }
    match backend_field(summary, "kind") {
        Some("redis") => backend_field(summary, "server")
            .map(short_store)
            .unwrap_or_else(|| "unknown store".into()),
        Some("model") => "in-process".into(),
        _ => summary
            .details
            .get("redis")
            .and_then(|v| v.as_str())
            .map(short_store)
            .unwrap_or_else(|| "unknown store".into()),
    }
}
