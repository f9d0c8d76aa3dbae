//! The vectors a run replays: loaded, version-checked, and shifted in time when they need it.
//!
//! Spec 5: vectors made by an in-process oracle may start at `now = 0`, but on the Redis wire 0
//! means "use the server clock". Such a suite is replayed with every `now` shifted by an offset
//! BASE that is a multiple of each of *its own* window and bucket widths, and with
//! `resetAt + BASE` expected; the other fields are unchanged. The offset is chosen per suite:
//! one offset for a whole file would be a multiple of its largest window (a tokenBudget's
//! 60000 ms, say), and a large `now` flips GCRA's rounding (spec 5).

use std::path::{Path, PathBuf};

use crate::contract::checksums::sha256_hex;
use crate::contract::layout::{self, LayoutError};
use crate::contract::vectors::{LeaseEvent, Suite, VectorsFile};
use crate::contract::verify::{self, VerifyError};
use crate::model::Strategy;

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Unreadable, malformed (with line and column) or of another contract version.
    #[error("{0} (pass --contract DIR or --vectors FILE)")]
    Layout(#[from] LayoutError),
    #[error(
        "{}: suite {suite} uses now = 0 and no clock offset up to {max} ms is a multiple of \
         its window and bucket widths; pass --clock-offset MS",
        path.display()
    )]
    NoOffset {
        path: PathBuf,
        suite: String,
        max: f64,
    },
    #[error(
        "--clock-offset must be a finite number of milliseconds from 0 to {MAX_CLOCK_OFFSET}, got {0}"
    )]
    BadOffset(f64),
    #[error(
        "{} does not load cleanly ({} problem(s)); fix the file:\n  {}",
        path.display(),
        problems.len(),
        listed(problems)
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error(
        "the contract in {} drifted from its manifest.sha256:\n  {}\n(run `tk-conform contract verify` for details){hint}",
        root.display(),
        findings.join("\n  ")
    )]
    Drift {
        root: PathBuf,
        findings: Vec<String>,
        /// What to do when the folder is plainly an author's own (no SOURCE), or empty.
        hint: String,
    },
}

fn listed(problems: &[String]) -> String {
    let max = super::vectors_check::MAX_LISTED;
    let mut text = problems[..problems.len().min(max)].join("\n  ");
    if problems.len() > max {
        text.push_str(&format!("\n  ... and {} more", problems.len() - max));
    }
    text
}

/// Reads and checks a golden vectors file: its version, its shape, and that it loads cleanly
/// (`vectors_check`: no unknown field, unique suite names, options and ops in bounds).
pub fn load_vectors(path: &Path) -> Result<VectorsFile, CorpusError> {
    let text = layout::read_text(path)?;
    let file: VectorsFile = layout::parse_versioned_json(&text, path)?;
    let raw: serde_json::Value = layout::parse_versioned_json(&text, path)?;
    let problems = super::vectors_check::problems(&file, &raw);
    if !problems.is_empty() {
        return Err(CorpusError::Invalid {
            path: path.to_owned(),
            problems,
        });
    }
    Ok(file)
}

/// sha256 of `<contract>/manifest.sha256`, after the drift gate passed; `None` when the contract
/// folder is not sealed (no manifest.sha256, e.g. an author's work in progress).
pub fn contract_digest(contract_dir: &Path) -> Result<Option<String>, CorpusError> {
    let manifest = contract_dir.join(layout::CHECKSUMS);
    if !manifest.exists() {
        return Ok(None);
    }
    let report = verify::verify(contract_dir)?;
    if !report.is_ok() {
        let hint = if contract_dir.join(layout::SOURCE).exists() {
            String::new()
        } else {
            format!(
                "\n{} has no SOURCE, so it is not a vendored contract. To judge your own \
                 scripts against the vendored vectors, pass them as `--scripts DIR` (a folder \
                 with manifest.json and the *.lua files; no SOURCE or manifest.sha256 needed); \
                 to re-pin a contract folder after an intended edit, run `tk-conform contract \
                 seal --contract {}`",
                contract_dir.display(),
                contract_dir.display()
            )
        };
        return Err(CorpusError::Drift {
            root: contract_dir.to_owned(),
            findings: report.findings.iter().map(ToString::to_string).collect(),
            hint,
        });
    }
    let text = layout::read_text(&manifest)?;
    Ok(Some(sha256_hex(text.as_bytes())))
}

/// Whether any op of the file uses the `now = 0` sentinel.
pub fn uses_zero_now(file: &VectorsFile) -> bool {
    file.suites.iter().any(suite_uses_zero_now)
}

/// Whether any op of one suite uses the `now = 0` sentinel.
pub fn suite_uses_zero_now(suite: &Suite) -> bool {
    match suite {
        Suite::RateLimit(s) => s.ops.iter().any(|op| op.now == 0.0),
        Suite::TokenBudget(s) => s.ops.iter().any(|op| op.now == 0.0),
        Suite::Lease(s) => s
            .events
            .iter()
            .any(|e| matches!(e, LeaseEvent::Spend { now, .. } if *now == 0.0)),
    }
}

/// The widths a shift of one suite's `now` must preserve: the window of fixedWindow and
/// slidingWindow and the bucket width of slidingWindow. The other strategies only ever look at
/// differences of times, so any shift keeps their decisions (up to the rounding spec 5 warns of,
/// which is why the offset is kept small).
fn widths(suite: &Suite) -> Vec<f64> {
    match suite {
        Suite::RateLimit(s) => match &s.strategy {
            Strategy::FixedWindow(o) => vec![o.window_ms],
            Strategy::SlidingWindow(o) => vec![o.window_ms, o.window_ms / o.buckets],
            Strategy::SlidingWindowLog(_) | Strategy::Gcra(_) | Strategy::TokenBucket(_) => {
                Vec::new()
            }
        },
        Suite::TokenBudget(_) | Suite::Lease(_) => Vec::new(),
    }
}

/// The largest offset searched for; bigger ones lose GCRA precision (spec 5).
const MAX_OFFSET: f64 = 1e9;

/// The largest `--clock-offset` accepted: beyond it epoch-ms doubles lose whole milliseconds'
/// worth of precision in the window arithmetic, and the search would not end in useful time.
pub const MAX_CLOCK_OFFSET: f64 = 1e15;

/// The smallest positive multiple of 1000 ms that is a whole multiple of every window and bucket
/// width of `suite` (1000 when it has none: gcra, tokenBucket, slidingWindowLog).
pub fn suite_offset(suite: &Suite, path: &Path) -> Result<f64, CorpusError> {
    let widths = widths(suite);
    let fits = |base: f64| {
        widths.iter().all(|&w| {
            let k = (base / w).round();
            k >= 1.0 && ((k * w - base).abs() <= base * 1e-12)
        })
    };
    let mut base = 1000.0;
    while base <= MAX_OFFSET {
        if fits(base) {
            return Ok(base);
        }
        base += 1000.0;
    }
    Err(CorpusError::NoOffset {
        path: path.to_owned(),
        suite: suite.trial_name(),
        max: MAX_OFFSET,
    })
}

/// How far one suite's clock is moved, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteOffset {
    pub trial: String,
    pub offset_ms: f64,
    pub reason: &'static str,
}

/// The offset of every suite, in file order. An explicit `--clock-offset` applies to every
/// suite. Otherwise only a rate-limit suite that uses the `now = 0` sentinel (which only the
/// Lua scripts read as "the server's clock", spec 1) is moved, by its own smallest offset, so a
/// window elsewhere in the file cannot inflate it (spec 5: keep BASE small). tokenBudget and
/// lease suites never reach a script, so they replay at their own times.
pub fn offsets(
    file: &VectorsFile,
    path: &Path,
    explicit: Option<f64>,
) -> Result<Vec<SuiteOffset>, CorpusError> {
    file.suites
        .iter()
        .map(|suite| {
            let (offset_ms, reason) = match explicit {
                Some(offset) => (offset, "--clock-offset"),
                None if matches!(suite, Suite::RateLimit(_)) && suite_uses_zero_now(suite) => (
                    suite_offset(suite, path)?,
                    "uses the now = 0 sentinel; the smallest multiple of 1000 ms that keeps its \
                     windows",
                ),
                None => (0.0, "needs none"),
            };
            Ok(SuiteOffset {
                trial: suite.trial_name(),
                offset_ms,
                reason,
            })
        })
        .collect()
}

/// Checks a `--clock-offset`: finite, not negative, at most [`MAX_CLOCK_OFFSET`].
pub fn check_clock_offset(offset: f64) -> Result<f64, CorpusError> {
    if offset.is_finite() && (0.0..=MAX_CLOCK_OFFSET).contains(&offset) {
        Ok(offset)
    } else {
        Err(CorpusError::BadOffset(offset))
    }
}

/// A copy of `suite` with every `now` and lease `expiresAt` moved by `base` and every expected
/// `resetAt` moved with them.
pub fn shifted(suite: &Suite, base: f64) -> Suite {
    let mut suite = suite.clone();
    if base == 0.0 {
        return suite;
    }
    let shift = |reset_at: &mut i64| *reset_at += base as i64;
    match &mut suite {
        Suite::RateLimit(s) => {
            for op in &mut s.ops {
                op.now += base;
                shift(&mut op.expect.reset_at);
            }
        }
        Suite::TokenBudget(s) => {
            for op in &mut s.ops {
                op.now += base;
                shift(&mut op.expect.reset_at);
            }
        }
        Suite::Lease(s) => {
            for event in &mut s.events {
                match event {
                    LeaseEvent::Grant { expires_at, .. } => *expires_at += base,
                    LeaseEvent::Spend { now, expect, .. } => {
                        *now += base;
                        if let Some(d) = &mut expect.decision {
                            shift(&mut d.reset_at);
                        }
                    }
                }
            }
        }
    }
    suite
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> VectorsFile {
        serde_json::from_str(json).unwrap()
    }

    const ZERO_START: &str = r#"{"contractVersion":"1","generatedFrom":"t","frozen":false,
        "decisionFields":["allowed","limit","remaining","resetAt","retryAfterMs"],
        "suites":[{"primitive":"rateLimit","name":"fw","key":"k",
          "strategy":{"kind":"slidingWindow","options":{"limit":3,"windowMs":1500,"buckets":3}},
          "ops":[{"now":0,"cost":1,"expect":{"allowed":true,"limit":3,"remaining":2,"resetAt":3000,"retryAfterMs":0}}]}]}"#;

    #[test]
    fn offset_is_a_multiple_of_every_width() {
        let f = file(ZERO_START);
        assert!(uses_zero_now(&f));
        // widths 1500 and 500: the smallest multiple of 1000 that fits both is 3000.
        assert_eq!(
            suite_offset(&f.suites[0], Path::new("v.json")).unwrap(),
            3000.0
        );
        let Suite::RateLimit(s) = shifted(&f.suites[0], 3000.0) else {
            unreachable!()
        };
        assert_eq!(s.ops[0].now, 3000.0);
        assert_eq!(s.ops[0].expect.reset_at, 6000);
        assert_eq!(s.ops[0].expect.remaining, 2);
    }

    /// ThrottleKit's published file: a tokenBudget window of 60000 ms beside a gcra suite that
    /// starts at now = 0. One offset for the whole file was 60000, which flips gcra's first
    /// `remaining` (1 where 2 is right); each suite gets its own.
    #[test]
    fn offset_is_chosen_per_suite() {
        let f = file(THROTTLEKIT_SHAPED);
        let offsets = offsets(&f, Path::new("v.json"), None).unwrap();
        let by_trial: Vec<(&str, f64)> = offsets
            .iter()
            .map(|o| (o.trial.as_str(), o.offset_ms))
            .collect();
        assert_eq!(
            by_trial,
            [
                ("tokenBudget::budget-minute", 0.0),
                ("rateLimit::gcra-3-per-s", 1000.0)
            ]
        );
        let explicit = offsets_with(&f, 5000.0);
        assert!(explicit.iter().all(|o| o.offset_ms == 5000.0));
    }

    fn offsets_with(f: &VectorsFile, offset: f64) -> Vec<SuiteOffset> {
        offsets(f, Path::new("v.json"), Some(offset)).unwrap()
    }

    #[test]
    fn a_clock_offset_out_of_bounds_is_refused() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e20, MAX_CLOCK_OFFSET * 1.5] {
            let err = check_clock_offset(bad).unwrap_err().to_string();
            assert!(err.contains("--clock-offset"), "{err}");
        }
        assert_eq!(check_clock_offset(1e15).unwrap(), 1e15);
        assert_eq!(check_clock_offset(0.0).unwrap(), 0.0);
    }

    const THROTTLEKIT_SHAPED: &str = r#"{"contractVersion":"1","generatedFrom":"t","frozen":false,
        "decisionFields":["allowed","limit","remaining","resetAt","retryAfterMs"],
        "suites":[{"primitive":"tokenBudget","name":"budget-minute","options":{"budget":10,"windowMs":60000},
          "ops":[{"now":0,"tokens":4,"expect":{"allowed":true,"limit":10,"remaining":6,"resetAt":60000,"retryAfterMs":0}}]},
          {"primitive":"rateLimit","name":"gcra-3-per-s","key":"k",
          "strategy":{"kind":"gcra","options":{"limit":3,"periodMs":1000,"burst":3}},
          "ops":[{"now":0,"cost":1,"expect":{"allowed":true,"limit":3,"remaining":2,"resetAt":334,"retryAfterMs":0}}]}]}"#;

    #[test]
    fn a_wrong_version_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("golden-vectors.json");
        std::fs::write(
            &path,
            ZERO_START.replace("\"contractVersion\":\"1\"", "\"contractVersion\":\"2\""),
        )
        .unwrap();
        let err = load_vectors(&path).unwrap_err().to_string();
        assert!(
            err.contains("golden-vectors.json") && err.contains("\"2\""),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_file_gives_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("golden-vectors.json");
        std::fs::write(&path, "{\n \"contractVersion\": \"1\",\n \"suites\": [}\n").unwrap();
        let err = load_vectors(&path).unwrap_err().to_string();
        assert!(err.contains("golden-vectors.json:3:"), "{err}");
    }

    #[test]
    fn a_drifted_sealed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let contract = dir.path().join("contract");
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("contract");
        copy_tree(&real, &contract);
        assert!(contract_digest(&contract).unwrap().is_some());
        let lua = contract.join("scripts/gcra.check.lua");
        let mut bytes = std::fs::read(&lua).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&lua, bytes).unwrap();
        let err = contract_digest(&contract).unwrap_err().to_string();
        assert!(
            err.contains("scripts/gcra.check.lua") && err.contains("drifted"),
            "{err}"
        );
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}
