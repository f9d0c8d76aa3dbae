//! `report.html`: one self-contained page per run (inline CSS and SVG, no network, no external
//! script). The verdict summary, every trial with its field diff, and for battles one section of
//! plots per scenario ([`ScenarioPlots`]). The [`RunRecorder`](super::RunRecorder) rewrites it with
//! `summary.json`, so an interrupted or killed run still leaves a page of what finished.

mod plots;
mod svg;

use std::fmt::Write;

pub use plots::{
    CallKind, CallSpan, FaultBand, Lane, ScenarioPlots, SlotsPlot, WindowCount, WindowPlot,
};

use super::summary::{Summary, TrialOutcome};

/// The page: summary, trials, then the extra sections (battle scenarios) in order.
pub fn page(summary: &Summary, sections: &[String]) -> String {
    let mut s = String::with_capacity(16_384 + sections.iter().map(String::len).sum::<usize>());
    let backend = backend_kind(summary);
    let title = format!("tk-conform {} — {backend}", summary.command);
    s.push_str(&head(&title));
    let verdict = verdict(summary);
    let _ = write!(
        s,
        r#"<header><h1><span class="badge v-{verdict}" id="verdict">{verdict}</span> {}</h1>"#,
        escape(&title)
    );
    s.push_str(&verdict_bar(summary));
    s.push_str(&facts(summary));
    s.push_str("</header>");
    s.push_str(&trials(summary));
    for section in sections {
        s.push_str(section);
    }
    s.push_str(&foot(&format!(
        "Written by tk-conform {} at {}.",
        summary.tool_version,
        summary.finished_at.as_deref().unwrap_or("(still running)")
    )));
    s
}

/// The page's start: title, the error witness, the stylesheet, and the (empty) error list.
pub fn head(title: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title><script>{ERROR_TRAP}</script><style>{CSS}</style></head><body><ol id="console-errors" hidden></ol>"#,
        escape(title)
    )
}

/// The page's end, with a footer line.
pub fn foot(line: &str) -> String {
    format!("<footer>{}</footer></body></html>", escape(line))
}

/// `pass`, `fail`, `running`, `interrupted` or `error`: what the page's badge says.
pub fn verdict(summary: &Summary) -> &'static str {
    use super::RunStatus::*;
    match summary.status {
        Running => "running",
        Interrupted => "interrupted",
        Error => "error",
        Finished if summary.exit_code == Some(0) => "pass",
        Finished => "fail",
    }
}

/// Passed, failed and skipped trials as one stacked bar.
fn verdict_bar(summary: &Summary) -> String {
    let c = &summary.counts;
    let total = (c.passed + c.failed + c.skipped).max(1) as f64;
    let mut s = String::from(
        r#"<svg class="chart" data-plot="verdicts" viewBox="0 0 860 22" width="860" height="22" role="img" aria-label="trial outcomes">"#,
    );
    let mut x = 0.0;
    for (n, class, word) in [
        (c.passed, "k-ok", "passed"),
        (c.failed, "k-fail", "failed"),
        (c.skipped, "k-skip", "skipped"),
    ] {
        if n == 0 {
            continue;
        }
        let w = 860.0 * n as f64 / total;
        let _ = write!(
            s,
            r#"<rect class="{class}" x="{x:.1}" y="2" width="{w:.1}" height="18"><title>{n} {word}</title></rect>"#
        );
        if w > 70.0 {
            let _ = write!(
                s,
                r#"<text class="onbar" x="{:.1}" y="15">{n} {word}</text>"#,
                x + 6.0
            );
        }
        x += w;
    }
    s.push_str("</svg>");
    s
}

fn backend_kind(summary: &Summary) -> String {
    summary
        .backend
        .as_ref()
        .and_then(|b| b.get("kind"))
        .and_then(|k| k.as_str())
        .unwrap_or(if summary.command == "battle" {
            "fleet"
        } else {
            "unknown"
        })
        .to_owned()
}

fn facts(summary: &Summary) -> String {
    let c = &summary.counts;
    let mut rows: Vec<(&str, String)> = vec![
        (
            "trials",
            format!(
                "{} passed, {} failed, {} skipped",
                c.passed, c.failed, c.skipped
            ),
        ),
        (
            "status",
            format!(
                "{:?}{}",
                summary.status,
                summary
                    .exit_code
                    .map(|e| format!(", exit code {e}"))
                    .unwrap_or_default()
            ),
        ),
        ("started", summary.started_at.clone()),
        ("contract", summary.contract_dir.clone()),
        (
            "contract digest",
            summary
                .contract_digest
                .clone()
                .unwrap_or_else(|| "(not sealed)".into()),
        ),
        ("seed", summary.seed.to_string()),
    ];
    if summary.clock_offset_ms != 0.0 {
        rows.push(("clock offset", format!("{} ms", summary.clock_offset_ms)));
    }
    if let Some(b) = &summary.backend {
        rows.push(("backend", compact(b)));
    }
    for (k, v) in &summary.details {
        rows.push((k.as_str(), compact(v)));
    }
    if let Some(e) = &summary.error {
        rows.push(("error", e.clone()));
    }
    let mut s = String::from(r#"<table class="facts">"#);
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    s.push_str("</table>");
    s
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Every trial; a failed one opens its message, with the field diff as a table.
fn trials(summary: &Summary) -> String {
    let mut s = format!(
        r#"<section id="trials"><h2>Trials ({})</h2><table class="trials" data-trials="{}"><tr><th>outcome</th><th>trial</th><th>ms</th><th>detail</th></tr>"#,
        summary.trials.len(),
        summary.trials.len()
    );
    for t in &summary.trials {
        let (class, word) = match t.outcome {
            TrialOutcome::Passed => ("pass", "pass"),
            TrialOutcome::Failed => ("fail", "fail"),
            TrialOutcome::Skipped => ("skip", "skip"),
            TrialOutcome::Informational => ("info", "info"),
        };
        let detail = match (&t.message, t.outcome) {
            (Some(m), TrialOutcome::Failed) => failure(m),
            (Some(m), _) => escape(m),
            (None, _) => String::new(),
        };
        let _ = write!(
            s,
            r#"<tr class="t-{class}"><td><span class="badge v-{class}">{word}</span></td><td><code>{}</code></td><td class="num">{:.1}</td><td>{detail}</td></tr>"#,
            escape(&t.name),
            t.duration_ms
        );
    }
    s.push_str("</table></section>");
    s
}

/// A failure message: the first line, a table of `field: expected X, actual Y` lines, and the
/// rest as preformatted text.
fn failure(message: &str) -> String {
    let mut lines = message.lines();
    let head = lines.next().unwrap_or_default();
    let mut diffs = Vec::new();
    let mut rest = Vec::new();
    for line in lines {
        match parse_diff(line) {
            Some(d) => diffs.push(d),
            None => rest.push(line),
        }
    }
    let mut s = format!(r#"<div class="failure"><p>{}</p>"#, escape(head));
    if !diffs.is_empty() {
        s.push_str(
            r#"<table class="diff"><tr><th>field</th><th>expected</th><th>actual</th></tr>"#,
        );
        for (field, want, got) in diffs {
            let _ = write!(
                s,
                r#"<tr><td><code>{}</code></td><td class="want">{}</td><td class="got">{}</td></tr>"#,
                escape(field),
                escape(want),
                escape(got)
            );
        }
        s.push_str("</table>");
    }
    if !rest.is_empty() {
        let _ = write!(s, "<pre>{}</pre>", escape(&rest.join("\n")));
    }
    s.push_str("</div>");
    s
}

/// `  remaining: expected 2, actual 3` → `("remaining", "2", "3")`.
fn parse_diff(line: &str) -> Option<(&str, &str, &str)> {
    let (field, rest) = line.trim().split_once(": expected ")?;
    if field.contains(' ') {
        return None;
    }
    let (want, got) = rest.split_once(", actual ")?;
    Some((field, want, got))
}

/// Text for HTML and SVG (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Writes every script error and `console.error` into `#console-errors`, so a headless browser's
/// DOM dump shows them (the page needs no script of its own; this is only the witness).
const ERROR_TRAP: &str = "(function(){function note(m){var l=document.getElementById('console-errors');\
if(!l){(window.__early=window.__early||[]).push(m);return;}var i=document.createElement('li');\
i.textContent=String(m);l.appendChild(i);l.hidden=false;}\
window.addEventListener('error',function(e){note('error: '+(e.message||(e.target&&e.target.outerHTML)||e));},true);\
window.addEventListener('unhandledrejection',function(e){note('rejection: '+e.reason);});\
var ce=console.error;console.error=function(){note('console.error: '+Array.prototype.join.call(arguments,' '));\
return ce.apply(console,arguments);};\
document.addEventListener('DOMContentLoaded',function(){(window.__early||[]).forEach(note);});\
window.addEventListener('load',function(){var b=document.body;b.setAttribute('data-loaded','1');\
b.setAttribute('data-height',String(document.documentElement.scrollHeight));});})();";

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:900px;padding:16px;color:#1d2327;background:#fff}\
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 6px}code{font:12px ui-monospace,monospace}\
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff;background:#6b7280;vertical-align:middle}\
.v-pass{background:#15803d}.v-fail,.v-error{background:#b91c1c}.v-unknown,.v-interrupted,.v-running{background:#b45309}.v-skip,.v-skipped{background:#6b7280}.v-info,.v-informational{background:#2563eb}\
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #e5e7eb;vertical-align:top}\
.facts th{width:140px;color:#4b5563;font-weight:500}.num{text-align:right;font-variant-numeric:tabular-nums}\
.diff{width:auto}.diff .want{color:#15803d}.diff .got{color:#b91c1c;font-weight:600}\
.failure p{margin:0 0 4px}pre{white-space:pre-wrap;font-size:12px;background:#f9fafb;padding:6px;margin:4px 0}\
.desc{color:#4b5563;margin:2px 0 6px}.judgements{margin:4px 0 8px;padding-left:18px}\
#console-errors{color:#b91c1c;border:2px solid #b91c1c;padding:8px 24px}\
footer{margin-top:32px;color:#6b7280;font-size:12px}\
svg.chart{display:block;margin:8px 0;max-width:100%;height:auto;background:#fff}\
svg text{font:11px system-ui,sans-serif;fill:#374151}svg text.title{font-weight:600;font-size:12px}svg text.lane{font-size:10px}\
.axis,.tick{stroke:#6b7280;fill:none}svg text.tick{stroke:none;fill:#4b5563}\
.k-ok{fill:#22c55e}.k-skip{fill:#9ca3af}svg text.onbar{fill:#fff;font-weight:600}.k-denied{fill:#f59e0b}.k-fail{fill:#dc2626}.k-indet{fill:#7c3aed}\
.fault{fill:#ef4444;fill-opacity:.14}.admitted{fill:#3b82f6}.possibly{fill:#93c5fd}.over{fill:#dc2626}\
.limit{stroke:#111827;stroke-dasharray:5 3;stroke-width:1.3}.bound{stroke:#9ca3af;stroke-dasharray:2 3;stroke-width:1.3}.ref{font-size:10px}\
.q50,.q90,.q99,.qmax,.slots{fill:none;stroke-width:1.6}.q50{stroke:#2563eb}.q90{stroke:#0891b2}.q99{stroke:#d97706}.qmax{stroke:#9ca3af;stroke-dasharray:3 2}.slots{stroke:#7c3aed}\
rect.q50{fill:#2563eb}rect.q90{fill:#0891b2}rect.q99{fill:#d97706}rect.qmax{fill:#9ca3af}rect.slots{fill:#7c3aed}\
.cell{text-align:center}.matrix td.name{white-space:nowrap}.g0{fill:#3b82f6}.g1{fill:#f97316}.g2{fill:#10b981}.g3{fill:#a855f7}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{RunStatus, TrialRecord};

    #[test]
    fn a_failed_trial_shows_its_field_diff_escaped() {
        let mut summary = Summary::new("run", "contract", 3);
        summary.push(TrialRecord {
            name: "rateLimit::gcra-basic".into(),
            kind: "vectors".into(),
            outcome: TrialOutcome::Failed,
            duration_ms: 1.0,
            message: Some(
                "rateLimit::gcra-basic: op 2 of 5 (now 1000, cost 1) diverged\n  remaining: expected 2, actual 3\n  retryAfterMs: expected 0, actual <5>\n  expected allowed=true"
                    .into(),
            ),
        });
        summary.status = RunStatus::Finished;
        summary.exit_code = Some(1);
        let html = page(&summary, &[]);
        assert!(html.contains(r#"id="verdict">fail<"#), "{html}");
        assert!(
            html.contains(
                r#"<td><code>remaining</code></td><td class="want">2</td><td class="got">3</td>"#
            ),
            "{html}"
        );
        assert!(html.contains("&lt;5&gt;"), "{html}");
        assert!(
            html.contains("<pre>  expected allowed=true</pre>"),
            "{html}"
        );
        assert!(!html.contains("http"), "no network references: {html}");
    }
}
