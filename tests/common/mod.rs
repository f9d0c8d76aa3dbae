//! Shared helpers for the integration tests: the vectors to replay (the committed golden vectors
//! when they exist, else a development corpus generated here through the model), contract copies
//! to break on purpose, and the `tk-conform` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use sha2::{Digest, Sha256};
use tk_conform::contract::vectors::{
    DebitOp, LeaseEvent, LeaseSuite, RateLimitSuite, RateOp, SpendExpect, Suite, TokenBudgetSuite,
    VectorsFile,
};
use tk_conform::model::{
    LeaseConfig, LeaseSpender, SpendOutcome, Strategy, TokenBudget, TokenBudgetOptions,
};

pub mod fixtures;
#[allow(unused_imports)]
pub use fixtures::*;

pub const EPOCH: f64 = 1_700_000_000_000.0;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tk-conform"))
}

pub fn have_redis() -> bool {
    if tk_conform::infra::find_redis_binary().is_some() {
        return true;
    }
    eprintln!("skipped: no redis-server or valkey-server on PATH (.ci/run installs one)");
    false
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One rate-limit timeline: `(ms after EPOCH, cost)` per op.
fn rate(name: &str, strategy: serde_json::Value, ops: &[(f64, f64)]) -> Suite {
    let strategy: Strategy = serde_json::from_value(strategy).unwrap();
    let mut state = None;
    let mut written: Option<(f64, f64)> = None; // (logical time of the last write, its expiry)
    let ops = ops
        .iter()
        .enumerate()
        .map(|(i, &(at, cost))| {
            let now = EPOCH + at;
            // The wall-clock rule: an op whose decision depends on stored state must not rely on
            // a key that Redis could expire in wall time (expiry < 1 s) or that is logically
            // expired but still held by Redis.
            let with_state = strategy.check(&mut state.clone(), now, cost).unwrap();
            let without = strategy.check(&mut None, now, cost).unwrap();
            if with_state.decision != without.decision
                && let Some((t_w, e)) = written
            {
                assert!(
                    e >= 1000.0 && now - t_w < e,
                    "dev corpus {name} op {i}: depends on a key written at {t_w} with expiry {e}"
                );
            }
            let outcome = strategy.check(&mut state, now, cost).unwrap();
            if let Some(e) = outcome.expiry_ms {
                written = Some((now, e));
            }
            RateOp {
                now,
                cost,
                expect: outcome.decision,
            }
        })
        .collect();
    Suite::RateLimit(RateLimitSuite {
        name: name.into(),
        strategy,
        key: "k".into(),
        ops,
    })
}

/// A development corpus covering all five strategies with fractional rates and widths, costs
/// above 1 and above the limit, window and bucket boundaries, idle refill and real epochs; plus
/// tokenBudget and lease suites (which the redis backend must skip with a reason).
pub fn dev_vectors() -> VectorsFile {
    let many = |start: f64, step: f64, n: usize, cost: f64| -> Vec<(f64, f64)> {
        (0..n).map(|i| (start + step * i as f64, cost)).collect()
    };
    let mut suites = vec![
        rate(
            "gcra/third-ms-period",
            json!({"kind":"gcra","options":{"limit":3,"periodMs":10000,"burst":3}}),
            &[
                (0.0, 1.0),
                (1.0, 1.0),
                (2.0, 1.0),
                (3.0, 1.0),
                (3334.0, 1.0),
                (3335.0, 1.0),
                (20000.0, 2.0),
                (20001.0, 2.0),
            ],
        ),
        rate(
            "gcra/fractional-burst-cost",
            json!({"kind":"gcra","options":{"limit":2.5,"periodMs":60000,"burst":3.5}}),
            &[
                (0.0, 2.0),
                (10.0, 1.5),
                (20.0, 1.0),
                (24000.0, 1.0),
                (24001.0, 5.0),
                (90000.0, 0.5),
            ],
        ),
        rate(
            "tokenBucket/half-per-second",
            json!({"kind":"tokenBucket","options":{"capacity":5,"refillPerSec":0.5}}),
            &[
                (0.0, 2.0),
                (1.0, 2.0),
                (2.0, 2.0),
                (1999.0, 1.0),
                (2000.0, 1.0),
                (2001.0, 9.0),
                (30000.0, 5.0),
            ],
        ),
        rate(
            "tokenBucket/fractional-capacity",
            json!({"kind":"tokenBucket","options":{"capacity":2.5,"refillPerSec":0.3}}),
            &[
                (0.0, 1.0),
                (1.0, 1.0),
                (2.0, 1.0),
                (3333.0, 0.5),
                (3334.0, 1.0),
                (60000.0, 2.5),
            ],
        ),
        rate(
            "fixedWindow/boundaries",
            json!({"kind":"fixedWindow","options":{"limit":3,"windowMs":60000}}),
            &[
                (1000.0, 1.0),
                (1001.0, 2.0),
                (1002.0, 1.0),
                (59999.0, 1.0),
                (60000.0, 2.0),
                (60001.0, 1.0),
                (60002.0, 1.0),
                (60003.0, 4.0),
            ],
        ),
        rate(
            "fixedWindow/fractional-window",
            json!({"kind":"fixedWindow","options":{"limit":4.5,"windowMs":90000.5}}),
            &[(0.0, 2.0), (1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
        ),
        rate(
            "slidingWindow/three-buckets",
            json!({"kind":"slidingWindow","options":{"limit":5,"windowMs":60000,"buckets":3}}),
            &[
                (0.0, 2.0),
                (20000.0, 2.0),
                (20001.0, 2.0),
                (39999.0, 1.0),
                (40000.0, 1.0),
                (50000.0, 3.0),
                (60000.0, 1.0),
                (70000.0, 1.0),
            ],
        ),
        rate(
            "slidingWindow/third-width",
            json!({"kind":"slidingWindow","options":{"limit":6.5,"windowMs":10000,"buckets":3}}),
            &[
                (0.0, 3.0),
                (1.0, 3.0),
                (2.0, 1.0),
                (3333.0, 1.0),
                (3334.0, 0.5),
                (6667.0, 1.0),
                (9000.0, 2.0),
            ],
        ),
        rate(
            "slidingWindowLog/exact",
            json!({"kind":"slidingWindowLog","options":{"limit":3,"windowMs":60000}}),
            &[
                (0.0, 1.0),
                (100.0, 2.0),
                (200.0, 1.0),
                (300.0, 5.0),
                (60000.0, 1.0),
                (60001.0, 1.0),
                (60100.0, 1.0),
                (60101.0, 1.0),
            ],
        ),
        rate(
            "slidingWindowLog/fractional",
            json!({"kind":"slidingWindowLog","options":{"limit":4.5,"windowMs":1500.5}}),
            &[(0.0, 2.0), (1.0, 2.0), (2.0, 1.0), (3.0, 0.0)],
        ),
    ];
    suites.extend((0..6).map(|i| {
        rate(
            &format!("fixedWindow/burst-{i}"),
            json!({"kind":"fixedWindow","options":{"limit": 4 + i,"windowMs":30000}}),
            &many(i as f64 * 7.0, 3.0, 8, 1.0),
        )
    }));
    let budget = TokenBudget::new(TokenBudgetOptions {
        budget: 100.0,
        window_ms: 60000.0,
    })
    .unwrap();
    let mut state = None;
    let ops = [(0.0, 60.0), (1.0, 50.0), (2.0, 1.0), (60000.0, 10.0)]
        .iter()
        .map(|&(at, tokens)| DebitOp {
            now: EPOCH + at,
            tokens,
            expect: budget.debit(&mut state, EPOCH + at, tokens).unwrap(),
        })
        .collect();
    suites.push(Suite::TokenBudget(TokenBudgetSuite {
        name: "tokenBudget/crossing".into(),
        options: budget.options,
        ops,
    }));
    let config = LeaseConfig {
        limit: 10.0,
        ttl_ms: 1000.0,
        window_coupled: true,
    };
    let mut spender = LeaseSpender::new(config);
    let mut events = Vec::new();
    for (grant, at, cost) in [
        (Some(3.0), 0.0, 1.0),
        (None, 1.0, 2.0),
        (None, 2.0, 1.0),
        (Some(4.0), 3.0, 1.0),
        (None, 60000.0, 1.0),
    ] {
        if let Some(capacity) = grant {
            spender.grant(capacity, EPOCH + 60000.0);
            events.push(LeaseEvent::Grant {
                capacity,
                expires_at: EPOCH + 60000.0,
            });
        }
        let expect = match spender.spend(EPOCH + at, cost).unwrap() {
            SpendOutcome::Allowed(d) => SpendExpect {
                needs_refresh: false,
                decision: Some(d),
            },
            SpendOutcome::NeedsRefresh => SpendExpect {
                needs_refresh: true,
                decision: None,
            },
        };
        events.push(LeaseEvent::Spend {
            now: EPOCH + at,
            cost,
            expect,
        });
    }
    suites.push(Suite::Lease(LeaseSuite {
        name: "lease/window-coupled".into(),
        config,
        events,
    }));
    VectorsFile {
        contract_version: "1".into(),
        generated_from: "tk-conform tests/common (development corpus)".into(),
        frozen: false,
        decision_fields: tk_conform::model::Decision::FIELDS
            .map(String::from)
            .to_vec(),
        suites,
    }
}

/// A copy of the project's contract folder in a temp dir, with vectors (the committed golden
/// vectors if present, else the development corpus), unsealed (no manifest.sha256) so it can be
/// edited like an engine author's work in progress.
pub struct ContractCopy {
    pub dir: tempfile::TempDir,
}

impl ContractCopy {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = repo().join("contract");
        copy_tree(&src, dir.path());
        let _ = std::fs::remove_file(dir.path().join("manifest.sha256"));
        let vectors = dir.path().join("golden-vectors.json");
        if !vectors.exists() {
            std::fs::write(&vectors, serde_json::to_vec_pretty(&dev_vectors()).unwrap()).unwrap();
        }
        ContractCopy { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Edits one Lua script and updates its sha256 in scripts/manifest.json, as an engine author
    /// changing their scripts would.
    pub fn edit_script(&self, file: &str, edit: impl FnOnce(&str) -> String) {
        let path = self.path().join("scripts").join(file);
        let before = std::fs::read_to_string(&path).unwrap();
        let after = edit(&before);
        assert_ne!(before, after, "the edit of {file} changed nothing");
        std::fs::write(&path, &after).unwrap();
        let manifest_path = self.path().join("scripts/manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        for entry in manifest["scripts"].as_array_mut().unwrap() {
            if entry["file"] == file {
                entry["sha256"] = json!(hex::encode(Sha256::digest(after.as_bytes())));
            }
        }
        std::fs::write(
            &manifest_path,
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();
    }

    pub fn vectors(&self) -> VectorsFile {
        serde_json::from_slice(&std::fs::read(self.path().join("golden-vectors.json")).unwrap())
            .unwrap()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The parsed `summary.json` of the run folder `logs/latest` points at.
pub fn latest_summary(logs: &Path) -> serde_json::Value {
    let path = logs.join("latest").join("summary.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}
