//! `docs/compatibility.md`: one column per server binary, a summary, what differs between
//! versions, and the command that regenerates the file. No timestamps, so a regenerated file
//! only changes when a verdict or a version does.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::Column;
use crate::report::TrialOutcome;

fn word(o: Option<&(TrialOutcome, Option<String>)>) -> &'static str {
    match o.map(|c| c.0) {
        Some(TrialOutcome::Passed) => "pass",
        Some(TrialOutcome::Failed) => "**fail**",
        Some(TrialOutcome::Skipped) => "skip",
        Some(TrialOutcome::Informational) => "info",
        None => "—",
    }
}

/// `| suite / scenario | redis 7.0.15 | … |` and its rule line.
fn table_head(columns: &[Column]) -> String {
    let mut s = String::from("| suite / scenario |");
    for c in columns {
        let _ = write!(s, " {} |", c.store);
    }
    s.push_str("\n|---|");
    for _ in columns {
        s.push_str("---|");
    }
    s.push('\n');
    s
}

/// The table. `command` is the command line that regenerates it.
pub fn compatibility_md(columns: &[Column], command: &str, scenarios: &[String]) -> String {
    let mut s = String::from("# Store compatibility\n\n");
    let _ = writeln!(
        s,
        "Which Redis-compatible servers the contract's Lua scripts (contract v{}) run correctly \
         on: every golden vector replayed through `run --backend redis`, and the battle's \
         direct-door cap scenarios ({}) with real worker processes racing on one key. Written by \
         tk-conform {}; regenerate with:\n\n```\n{command}\n```\n",
        crate::contract::CONTRACT_VERSION,
        scenarios
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
        env!("CARGO_PKG_VERSION"),
    );
    s.push_str("| server | binary | contract replay | direct-door battles | verdict |\n");
    s.push_str("|---|---|---|---|---|\n");
    for c in columns {
        let (rp, rj) = c.counts(false);
        let (bp, bj) = c.counts(true);
        let verdict = if c.compatible() {
            "compatible".to_string()
        } else {
            let steps: Vec<String> = c
                .exits
                .iter()
                .filter(|(_, code)| *code != 0)
                .map(|(what, code)| format!("{what} exit {code}"))
                .collect();
            format!("**not compatible** ({})", steps.join(", "))
        };
        let _ = writeln!(
            s,
            "| {} | `{}` | {rp}/{rj} | {bp}/{bj} | {verdict} |",
            c.store,
            c.binary.display()
        );
    }
    let cells: Vec<_> = columns.iter().map(Column::cells).collect();
    let rows: BTreeSet<&String> = cells.iter().flat_map(|c| c.keys()).collect();
    let differing: Vec<&&String> = rows
        .iter()
        .filter(|row| {
            let words: BTreeSet<&str> = cells.iter().map(|c| word(c.get(**row))).collect();
            words.len() > 1
        })
        .collect();
    s.push_str("\n## What differs between versions\n\n");
    if differing.is_empty() {
        let _ = writeln!(
            s,
            "Nothing: all {} suites and scenarios have the same outcome on every server.",
            rows.len()
        );
    } else {
        s.push_str(&table_head(columns));
        for row in &differing {
            let _ = write!(s, "| `{row}` |");
            for c in &cells {
                let cell = c.get(**row);
                let first = cell
                    .and_then(|(_, m)| m.as_deref())
                    .filter(|_| cell.is_some_and(|(o, _)| *o == TrialOutcome::Failed))
                    .and_then(|m| m.lines().next())
                    .map(|m| format!(": {}", m.replace('|', "\\|")))
                    .unwrap_or_default();
                let _ = write!(s, " {}{first} |", word(cell));
            }
            s.push('\n');
        }
    }
    let skipped: Vec<(&String, &str)> = rows
        .iter()
        .filter(|row| {
            cells.iter().all(|c| {
                c.get(**row)
                    .is_some_and(|(o, _)| *o == TrialOutcome::Skipped)
            })
        })
        .map(|row| {
            let why = cells[0]
                .get(*row)
                .and_then(|(_, m)| m.as_deref())
                .unwrap_or("no reason given");
            (*row, why)
        })
        .collect();
    if !skipped.is_empty() {
        let mut reasons: Vec<&str> = skipped.iter().map(|(_, why)| *why).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let _ = writeln!(
            s,
            "\n{} suites are skipped on every server (the direct door does not serve them): {}.",
            skipped.len(),
            reasons.join("; ")
        );
    }
    s.push_str("\n## Every suite and scenario\n\n");
    s.push_str(&table_head(columns));
    for row in &rows {
        let _ = write!(s, "| `{row}` |");
        for c in &cells {
            let _ = write!(s, " {} |", word(c.get(*row)));
        }
        s.push('\n');
    }
    s
}
