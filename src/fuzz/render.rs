//! A timeline as the text of a `suites/vectors/*.toml` file, so a shrunk case can be read,
//! committed, and turned into golden vectors by `tk-conform contract vectors`.

use std::fmt::Write;

use crate::contract::timelines::{LeaseStep, TimelineFile};
use crate::model::Strategy;
use crate::model::num::to_argv;

/// `header` lines become `# ` comments at the top.
pub fn toml(file: &TimelineFile, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "# {line}");
    }
    for t in &file.rate_limit {
        let _ = writeln!(out, "\n[[rateLimit]]");
        let _ = writeln!(out, "name = {}", quote(&t.name));
        if let Some(key) = &t.key {
            let _ = writeln!(out, "key = {}", quote(key));
        }
        let _ = writeln!(out, "start = {}", to_argv(t.start));
        let _ = writeln!(out, "strategy = {}", strategy(&t.strategy));
        let _ = writeln!(out, "ops = [");
        for op in &t.ops {
            let _ = write!(
                out,
                "  {{ at = {}, cost = {}",
                to_argv(op.at),
                to_argv(op.cost)
            );
            repeat(&mut out, op.repeat, op.every);
            let _ = writeln!(out, " }},");
        }
        let _ = writeln!(out, "]");
    }
    for t in &file.token_budget {
        let _ = writeln!(out, "\n[[tokenBudget]]");
        let _ = writeln!(out, "name = {}", quote(&t.name));
        let _ = writeln!(out, "start = {}", to_argv(t.start));
        let _ = writeln!(
            out,
            "options = {{ budget = {}, windowMs = {} }}",
            to_argv(t.options.budget),
            to_argv(t.options.window_ms)
        );
        let _ = writeln!(out, "ops = [");
        for op in &t.ops {
            let _ = write!(
                out,
                "  {{ at = {}, tokens = {}",
                to_argv(op.at),
                to_argv(op.tokens)
            );
            repeat(&mut out, op.repeat, op.every);
            let _ = writeln!(out, " }},");
        }
        let _ = writeln!(out, "]");
    }
    for t in &file.lease {
        let _ = writeln!(out, "\n[[lease]]");
        let _ = writeln!(out, "name = {}", quote(&t.name));
        let _ = writeln!(out, "start = {}", to_argv(t.start));
        let _ = writeln!(out, "limit = {}", to_argv(t.limit));
        let _ = writeln!(out, "ttlMs = {}", to_argv(t.ttl_ms));
        let _ = writeln!(out, "windowCoupled = {}", t.window_coupled);
        let _ = writeln!(out, "events = [");
        for e in &t.events {
            match e {
                LeaseStep::Grant {
                    capacity,
                    expires_at,
                } => {
                    let _ = writeln!(
                        out,
                        "  {{ op = \"grant\", capacity = {}, expiresAt = {} }},",
                        to_argv(*capacity),
                        to_argv(*expires_at)
                    );
                }
                LeaseStep::Spend {
                    at,
                    cost,
                    repeat: r,
                    every,
                } => {
                    let _ = write!(
                        out,
                        "  {{ op = \"spend\", at = {}, cost = {}",
                        to_argv(*at),
                        to_argv(*cost)
                    );
                    repeat(&mut out, *r, *every);
                    let _ = writeln!(out, " }},");
                }
            }
        }
        let _ = writeln!(out, "]");
    }
    out
}

fn repeat(out: &mut String, repeat: u32, every: f64) {
    if repeat != 1 {
        let _ = write!(out, ", repeat = {repeat}, every = {}", to_argv(every));
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

fn strategy(s: &Strategy) -> String {
    let (kind, options): (&str, Vec<(&str, f64)>) = match s {
        Strategy::Gcra(o) => (
            "gcra",
            vec![
                ("limit", o.limit),
                ("periodMs", o.period_ms),
                ("burst", o.burst),
            ],
        ),
        Strategy::TokenBucket(o) => (
            "tokenBucket",
            vec![("capacity", o.capacity), ("refillPerSec", o.refill_per_sec)],
        ),
        Strategy::FixedWindow(o) => (
            "fixedWindow",
            vec![("limit", o.limit), ("windowMs", o.window_ms)],
        ),
        Strategy::SlidingWindow(o) => (
            "slidingWindow",
            vec![
                ("limit", o.limit),
                ("windowMs", o.window_ms),
                ("buckets", o.buckets),
            ],
        ),
        Strategy::SlidingWindowLog(o) => (
            "slidingWindowLog",
            vec![("limit", o.limit), ("windowMs", o.window_ms)],
        ),
    };
    let options: Vec<String> = options
        .into_iter()
        .map(|(name, v)| format!("{name} = {}", to_argv(v)))
        .collect();
    format!(
        "{{ kind = \"{kind}\", options = {{ {} }} }}",
        options.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::space::{Space, Target, timeline};

    #[test]
    fn rendered_timelines_read_back_as_the_same_timelines() {
        let space = Space {
            targets: Target::ALL.to_vec(),
            max_ops: 10,
            max_keys: 3,
        };
        for i in 0..200 {
            let file = timeline(&space, 11, i);
            let text = toml(&file, &["a header".into()]);
            let back: TimelineFile =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(format!("{file:?}"), format!("{back:?}"), "{text}");
        }
    }
}
