//! `checklist.md`: for an engine's author, what passed, what was skipped and why, what failed,
//! and what to do next.

use std::fmt::Write;

use super::{EngineMatrix, Matrix};
use crate::report::TrialOutcome;

pub fn markdown(matrix: &Matrix) -> String {
    let mut s = format!(
        "# tk-conform checklist\n\nContract v{} · tk-conform {} · {} run(s).\n",
        matrix.contract_version,
        matrix.tool_version,
        matrix.runs.len()
    );
    for e in &matrix.engines {
        engine(&mut s, e);
    }
    s
}

fn first_line(text: Option<&str>) -> &str {
    text.and_then(|m| m.lines().next())
        .unwrap_or("(no message)")
}

fn engine(s: &mut String, e: &EngineMatrix) {
    let _ = write!(
        s,
        "\n## {}\n\n- [{}] {} of {} judged suites and scenarios pass on every store they ran on \
         (stores: {}).\n",
        e.engine,
        if e.judged > 0 && e.passed == e.judged {
            "x"
        } else {
            " "
        },
        e.passed,
        e.judged,
        e.stores.join(", ")
    );
    let passed: Vec<&String> = e
        .rows
        .iter()
        .filter(|(_, cells)| {
            cells.values().any(|c| c.outcome == TrialOutcome::Passed)
                && cells.values().all(|c| c.outcome != TrialOutcome::Failed)
        })
        .map(|(row, _)| row)
        .collect();
    let _ = writeln!(s, "\n### Passed ({})\n", passed.len());
    if passed.is_empty() {
        s.push_str("Nothing passed yet.\n");
    } else {
        let names: Vec<String> = passed.iter().map(|r| format!("`{r}`")).collect();
        let _ = writeln!(s, "{}", names.join(", "));
    }
    let failing: Vec<_> = e.failing().collect();
    let _ = writeln!(s, "\n### Failed ({})\n", failing.len());
    if failing.is_empty() {
        s.push_str("None.\n");
    }
    for (row, store, cell) in &failing {
        let _ = writeln!(
            s,
            "- [ ] `{row}` on {store}: {} (run `{}`)",
            first_line(cell.message.as_deref()),
            cell.run
        );
    }
    let skipped: Vec<_> = e
        .rows
        .iter()
        .flat_map(|(row, cells)| {
            cells
                .iter()
                .filter(|(_, c)| c.outcome == TrialOutcome::Skipped)
                .map(move |(store, c)| (row, store, c))
        })
        .collect();
    let _ = writeln!(s, "\n### Skipped ({})\n", skipped.len());
    if skipped.is_empty() {
        s.push_str("None.\n");
    }
    for (row, store, cell) in &skipped {
        let _ = writeln!(
            s,
            "- `{row}` on {store}: {}",
            first_line(cell.message.as_deref())
        );
    }
    s.push_str("\n### Next\n\n");
    let mut next = Vec::new();
    if let Some((row, _, cell)) = failing.first() {
        let trial = row.strip_prefix("battle::");
        next.push(match trial {
            Some(scenario) => format!(
                "Fix `{scenario}` first: open `{}/report.html` (the timeline and the windows show \
                 where the cap broke), then re-run `tk-conform battle {scenario}`.",
                cell.run
            ),
            None => format!(
                "Fix `{row}` first: its field diff is in `{}/report.html`; re-run just it with \
                 `tk-conform run … -- {row} --exact`.",
                cell.run
            ),
        });
    }
    if !skipped.is_empty() {
        next.push(
            "Skipped suites are ones the engine does not claim: claim the capability in the \
             adapter's `hello` (docs/adapter-protocol.md) to have them judged, or leave them if \
             the engine really lacks it."
                .into(),
        );
    }
    if e.stores.len() < 2 {
        next.push(
            "Judge more than one store version: `tk-conform matrix --redis-server BIN…` (each \
             binary a different Redis or Valkey)."
                .into(),
        );
    }
    if !e.rows.keys().any(|r| r.starts_with("battle::")) {
        next.push(
            "Battle-test under faults: `tk-conform battle` (crashes, pauses, restarts).".into(),
        );
    }
    if next.is_empty() {
        next.push(
            "Nothing left: add the badge to your README and run the gate in CI (action.yml)."
                .into(),
        );
    }
    for n in next {
        let _ = writeln!(s, "- [ ] {n}");
    }
}
