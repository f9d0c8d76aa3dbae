//! The matrix page: one table per engine, suites and scenarios down, store versions across.

use std::fmt::Write;

use super::Matrix;
use crate::report::TrialOutcome;
use crate::report::html::{escape, foot, head};

pub fn html(matrix: &Matrix) -> String {
    let mut s = head("tk-conform compatibility matrix");
    let _ = write!(
        s,
        "<header><h1>Compatibility matrix</h1><p class=\"desc\">contract v{} · {} engines · {} runs</p></header>",
        escape(&matrix.contract_version),
        matrix.engines.len(),
        matrix.runs.len()
    );
    for e in &matrix.engines {
        let _ = write!(
            s,
            r#"<section class="engine" data-engine="{name}"><h2>{name}</h2><p><img alt="contract v{v} {p}/{j}" src="{badge}"> {p} of {j} judged suites and scenarios pass on every store they ran on.</p><table class="matrix"><tr><th>suite / scenario</th>"#,
            name = escape(&e.engine),
            v = escape(&matrix.contract_version),
            p = e.passed,
            j = e.judged,
            badge = escape(&e.badge)
        );
        for store in &e.stores {
            let _ = write!(s, r#"<th class="cell">{}</th>"#, escape(store));
        }
        s.push_str("</tr>");
        for (row, cells) in &e.rows {
            let _ = write!(
                s,
                r#"<tr><td class="name"><code>{}</code></td>"#,
                escape(row)
            );
            for store in &e.stores {
                match cells.get(store) {
                    Some(c) => {
                        let (class, word) = match c.outcome {
                            TrialOutcome::Passed => ("pass", "pass"),
                            TrialOutcome::Failed => ("fail", "fail"),
                            TrialOutcome::Skipped => ("skip", "skip"),
                            TrialOutcome::Informational => ("info", "info"),
                        };
                        let title = c.message.as_deref().unwrap_or("");
                        let _ = write!(
                            s,
                            r#"<td class="cell" data-outcome="{class}" title="{}"><span class="badge v-{class}">{word}</span></td>"#,
                            escape(title)
                        );
                    }
                    None => s.push_str(r#"<td class="cell">—</td>"#),
                }
            }
            s.push_str("</tr>");
        }
        s.push_str("</table></section>");
    }
    s.push_str("<section><h2>Runs</h2><ul>");
    for r in &matrix.runs {
        let _ = write!(s, "<li><code>{}</code></li>", escape(r));
    }
    s.push_str("</ul></section>");
    s.push_str(&foot(&format!(
        "Written by tk-conform {}.",
        matrix.tool_version
    )));
    s
}
