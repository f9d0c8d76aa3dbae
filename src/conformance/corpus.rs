//! The vectors a run replays: loaded, version-checked, and shifted in time when they need it.
//!
//! Spec 5: vectors made by an in-process oracle may start at `now = 0`, but on the Redis wire 0
//! means "use the server clock". Such a file is replayed with every `now` (and every lease
//! `expiresAt`) shifted by an offset BASE that is a multiple of every window and bucket width in
//! the file, and with `resetAt + BASE` expected; the other fields are unchanged.

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
        "{path}: the vectors start at now = 0 and no clock offset up to {max} ms is a multiple of \
         every window and bucket width in the file; pass --clock-offset MS"
    )]
    NoOffset { path: PathBuf, max: f64 },
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error(
        "the contract in {} drifted from its manifest.sha256:\n  {}\n(run `tk-conform contract verify` for details)",
        root.display(),
        findings.join("\n  ")
    )]
    Drift {
        root: PathBuf,
        findings: Vec<String>,
    },
}

/// Reads and checks a golden vectors file.
pub fn load_vectors(path: &Path) -> Result<VectorsFile, CorpusError> {
    Ok(layout::read_versioned_json(path)?)
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
        return Err(CorpusError::Drift {
            root: contract_dir.to_owned(),
            findings: report.findings.iter().map(ToString::to_string).collect(),
        });
    }
    let text = layout::read_text(&manifest)?;
    Ok(Some(sha256_hex(text.as_bytes())))
}

/// Whether any op of the file uses the `now = 0` sentinel.
pub fn uses_zero_now(file: &VectorsFile) -> bool {
    file.suites.iter().any(|suite| match suite {
        Suite::RateLimit(s) => s.ops.iter().any(|op| op.now == 0.0),
        Suite::TokenBudget(s) => s.ops.iter().any(|op| op.now == 0.0),
        Suite::Lease(s) => s
            .events
            .iter()
            .any(|e| matches!(e, LeaseEvent::Spend { now, .. } if *now == 0.0)),
    })
}

/// The widths every `now` shift must preserve: windows and bucket widths.
fn widths(file: &VectorsFile) -> Vec<f64> {
    let mut widths = Vec::new();
    for suite in &file.suites {
        match suite {
            Suite::RateLimit(s) => match &s.strategy {
                Strategy::FixedWindow(o) => widths.push(o.window_ms),
                Strategy::SlidingWindow(o) => {
                    widths.push(o.window_ms);
                    widths.push(o.window_ms / o.buckets);
                }
                Strategy::SlidingWindowLog(o) => widths.push(o.window_ms),
                Strategy::Gcra(_) | Strategy::TokenBucket(_) => {}
            },
            Suite::TokenBudget(s) => widths.push(s.options.window_ms),
            Suite::Lease(_) => {}
        }
    }
    widths
}

/// The largest offset searched for; bigger ones lose GCRA precision (spec 5).
const MAX_OFFSET: f64 = 1e9;

/// The smallest positive multiple of 1000 ms that is a whole multiple of every width in the file.
pub fn smallest_offset(file: &VectorsFile, path: &Path) -> Result<f64, CorpusError> {
    let widths = widths(file);
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
        max: MAX_OFFSET,
    })
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
        assert_eq!(smallest_offset(&f, Path::new("v.json")).unwrap(), 3000.0);
        let Suite::RateLimit(s) = shifted(&f.suites[0], 3000.0) else {
            unreachable!()
        };
        assert_eq!(s.ops[0].now, 3000.0);
        assert_eq!(s.ops[0].expect.reset_at, 6000);
        assert_eq!(s.ops[0].expect.remaining, 2);
    }

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
