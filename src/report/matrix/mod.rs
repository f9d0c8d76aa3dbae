//! `tk-conform report RUN_DIR… --out DIR`: runs combined into one matrix of engine ×
//! suite/scenario × store version — `index.html`, `matrix.json`, a badge per engine and a
//! `checklist.md` for the engine's author.

mod badge;
mod checklist;
pub mod cli;
mod load;
mod page;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

pub use load::{LoadError, LoadedRun, load};

use super::{TrialOutcome, write_atomic};

/// One trial of one engine on one store.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cell {
    pub outcome: TrialOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The run folder it came from.
    pub run: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineMatrix {
    pub engine: String,
    pub stores: Vec<String>,
    /// Suite or scenario → store → cell (the last run wins when two runs cover the same cell).
    pub rows: BTreeMap<String, BTreeMap<String, Cell>>,
    /// Rows that passed on every store they ran on.
    pub passed: usize,
    /// Rows that ran (were not skipped) on at least one store.
    pub judged: usize,
    pub badge: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Matrix {
    pub tool: String,
    pub tool_version: String,
    pub contract_version: String,
    pub runs: Vec<String>,
    pub engines: Vec<EngineMatrix>,
}

impl EngineMatrix {
    /// Rows where some store failed.
    pub fn failing(&self) -> impl Iterator<Item = (&String, &String, &Cell)> {
        self.rows.iter().flat_map(|(row, cells)| {
            cells
                .iter()
                .filter(|(_, c)| c.outcome == TrialOutcome::Failed)
                .map(move |(store, c)| (row, store, c))
        })
    }
}

/// Battle scenarios are rows of their own (`battle::<scenario>`), beside the conformance trials.
fn row_name(run: &LoadedRun, trial: &str) -> String {
    if run.summary.command == "battle" {
        format!("battle::{trial}")
    } else {
        trial.to_owned()
    }
}

pub fn build(runs: &[LoadedRun]) -> Matrix {
    let mut engines: BTreeMap<String, EngineMatrix> = BTreeMap::new();
    for run in runs {
        let e = engines
            .entry(run.engine.clone())
            .or_insert_with(|| EngineMatrix {
                engine: run.engine.clone(),
                stores: Vec::new(),
                rows: BTreeMap::new(),
                passed: 0,
                judged: 0,
                badge: String::new(),
            });
        for t in &run.summary.trials {
            let store = run.stores.get(&t.name).cloned().unwrap_or_default();
            if !e.stores.contains(&store) {
                e.stores.push(store.clone());
            }
            e.rows.entry(row_name(run, &t.name)).or_default().insert(
                store,
                Cell {
                    outcome: t.outcome,
                    message: t.message.clone(),
                    run: run.dir.display().to_string(),
                },
            );
        }
    }
    let mut out: Vec<EngineMatrix> = engines.into_values().collect();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for e in out.iter_mut() {
        e.stores.sort();
        for cells in e.rows.values() {
            let ran: Vec<&Cell> = cells
                .values()
                .filter(|c| c.outcome != TrialOutcome::Skipped)
                .collect();
            if ran.is_empty() {
                continue;
            }
            e.judged += 1;
            if ran.iter().all(|c| {
                matches!(
                    c.outcome,
                    TrialOutcome::Passed | TrialOutcome::Informational
                )
            }) {
                e.passed += 1;
            }
        }
        // Stable names, so a README can point at one; two engines with one slug get `-2`.
        let base = slug(&e.engine);
        let mut name = base.clone();
        let mut n = 1;
        while !names.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
        e.badge = format!("badges/{name}.svg");
    }
    let mut run_dirs: BTreeSet<String> = BTreeSet::new();
    run_dirs.extend(runs.iter().map(|r| r.dir.display().to_string()));
    Matrix {
        tool: "tk-conform".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        contract_version: crate::contract::CONTRACT_VERSION.into(),
        runs: run_dirs.into_iter().collect(),
        engines: out,
    }
}

/// Writes `index.html`, `matrix.json`, `badges/*.svg` and `checklist.md` under `out`.
pub fn write(matrix: &Matrix, out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out.join("badges"))?;
    let json = serde_json::to_vec_pretty(matrix).map_err(std::io::Error::other)?;
    write_atomic(&out.join("matrix.json"), &json)?;
    for e in &matrix.engines {
        let svg = badge::svg(&matrix.contract_version, e.passed, e.judged);
        write_atomic(&out.join(&e.badge), svg.as_bytes())?;
    }
    write_atomic(&out.join("index.html"), page::html(matrix).as_bytes())?;
    write_atomic(
        &out.join("checklist.md"),
        checklist::markdown(matrix).as_bytes(),
    )?;
    Ok(())
}

/// A file-name-safe form of an engine name.
fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    s.chars().take(48).collect()
}
