//! `contract vectors`: golden vectors generated from timelines, byte for byte.

use std::path::Path;

use crate::util::{repo, tk_conform, write};
use tk_conform::contract::generate::{self, GenerateError};
use tk_conform::contract::timelines::TimelineError;
use tk_conform::contract::vectors::Suite;
use tk_conform::model::StrategyKind;

fn committed() -> Vec<u8> {
    std::fs::read(repo().join("contract/golden-vectors.json")).unwrap()
}

#[test]
fn the_committed_vectors_are_what_the_timelines_generate() {
    let first = generate::render(&generate::generate_dir(&repo().join("suites/vectors")).unwrap());
    let second = generate::render(&generate::generate_dir(&repo().join("suites/vectors")).unwrap());
    assert_eq!(first, second, "generation is not deterministic");
    assert!(
        first.as_bytes() == committed().as_slice(),
        "contract/golden-vectors.json is stale: run `tk-conform contract vectors`"
    );
    let (code, stdout, stderr) = tk_conform(&["contract", "vectors", "--check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn check_fails_when_a_timeline_changes() {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("suites/vectors")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    let gcra = tmp.path().join("gcra.toml");
    let text = std::fs::read_to_string(&gcra).unwrap();
    std::fs::write(&gcra, text.replacen("{ at = 999 }", "{ at = 998 }", 1)).unwrap();
    let (code, _, stderr) = tk_conform(&[
        "contract",
        "vectors",
        "--check",
        "--timelines",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("contract/golden-vectors.json differs from what"),
        "{stderr}"
    );
    assert!(stderr.contains("first difference at line"), "{stderr}");

    // Without --check it writes, atomically, where it is told to.
    let out = tmp.path().join("out/vectors.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (code, stdout, _) = tk_conform(&[
        "contract",
        "vectors",
        "--timelines",
        tmp.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("run `tk-conform contract seal`"),
        "{stdout}"
    );
    assert_ne!(std::fs::read(&out).unwrap(), committed());
}

#[test]
fn the_suites_cover_what_the_contract_asks_for() {
    let vectors = generate::generate_dir(&repo().join("suites/vectors")).unwrap();
    assert!(
        vectors.suites.len() >= 40,
        "{} suites",
        vectors.suites.len()
    );
    assert!(!vectors.frozen);
    assert!(vectors.generated_from.starts_with("tk-conform "));
    let mut kinds = std::collections::BTreeSet::new();
    let mut epoch_suites = 0;
    for suite in &vectors.suites {
        match suite {
            Suite::RateLimit(s) => {
                kinds.insert(s.strategy.kind());
                assert!(s.ops.iter().all(|op| op.now > 0.0), "{}: now = 0", s.name);
                let denied = s.ops.iter().filter(|op| !op.expect.allowed).count();
                assert!(denied > 0, "{}: never denies", s.name);
                if s.ops[0].now >= 1.7e12 {
                    epoch_suites += 1;
                }
            }
            Suite::TokenBudget(s) => assert!(s.ops.iter().all(|op| op.now > 0.0)),
            Suite::Lease(s) => assert!(!s.events.is_empty()),
        }
    }
    assert_eq!(kinds.len(), StrategyKind::ALL.len(), "{kinds:?}");
    assert!(epoch_suites >= 5, "{epoch_suites} suites at epoch scale");
    for primitive in ["tokenBudget", "lease"] {
        assert!(
            vectors
                .suites
                .iter()
                .filter(|s| s.primitive() == primitive)
                .count()
                >= 4,
            "{primitive}"
        );
    }
}

fn generate_one(toml: &str) -> Result<usize, GenerateError> {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("t.toml"), toml);
    generate::generate_dir(tmp.path()).map(|v| v.suites.len())
}

#[test]
fn an_op_that_leans_on_a_short_lived_key_is_rejected_with_suite_and_op() {
    // capacity / r = 500 ms: the bucket's key could expire in wall time during a replay.
    let err = generate_one(
        r#"
[[rateLimit]]
name = "short-lived"
start = 1000000
strategy = { kind = "tokenBucket", options = { capacity = 5, refillPerSec = 10 } }
ops = [ { at = 0 }, { at = 50 } ]
"#,
    )
    .unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(err, GenerateError::WallClock { op: 1, .. }),
        "{shown}"
    );
    assert!(
        shown.contains("suite `short-lived` op 1 (now=1000050) depends on the state written at now=1000000 with expiry 500 ms"),
        "{shown}"
    );
    assert!(shown.contains("under 1000 ms"), "{shown}");

    // An op that does not depend on the key is fine, however short its expiry.
    let ok = generate_one(
        r#"
[[rateLimit]]
name = "independent"
start = 1000000
strategy = { kind = "tokenBucket", options = { capacity = 5, refillPerSec = 10 } }
ops = [ { at = 0 }, { at = 5000 } ]
"#,
    );
    assert_eq!(ok.unwrap(), 1);
}

#[test]
fn bad_timelines_are_named_by_file_and_suite() {
    let cases = [
        ("[[rateLimit]\nname = 1", "t.toml"),
        (
            "[[rateLimit]]\nname = \"x\"\nstart = 1000\nstrategy = { kind = \"gcra\", options = { limit = 1, periodMs = 1000, burst = 1 } }\nops = [ { at = 0, cots = 2 } ]\n",
            "unknown field `cots`",
        ),
        (
            "[[rateLimit]]\nname = \"x\"\nstart = 0\nstrategy = { kind = \"gcra\", options = { limit = 1, periodMs = 1000, burst = 1 } }\nops = [ { at = 0 } ]\n",
            "suite `x`: start must be a positive epoch-ms value",
        ),
        (
            "[[rateLimit]]\nname = \"x\"\nstart = 1000\nstrategy = { kind = \"gcra\", options = { limit = 0, periodMs = 1000, burst = 1 } }\nops = [ { at = 0 } ]\n",
            "suite `x`: strategy: option `limit` must be a positive finite number, got 0",
        ),
        (
            "[[rateLimit]]\nname = \"x\"\nstart = 1000\nstrategy = { kind = \"slidingWindowLog\", options = { limit = 1, windowMs = 1000 } }\nops = [ { at = 0, cost = 1.5 } ]\n",
            "suite `x` op 0: the model refused it: cost must be a whole number",
        ),
        (
            "[[tokenBudget]]\nname = \"x\"\nstart = 1000\noptions = { budget = 1, windowMs = 1000 }\nops = [ { at = 0, tokens = 1 } ]\n[[lease]]\nname = \"x\"\nstart = 1000\nlimit = 1\nttlMs = 1\nwindowCoupled = true\nevents = [ { op = \"spend\", at = 0 } ]\n",
            "suite name `x` is used twice",
        ),
    ];
    for (toml, expected) in cases {
        let err = generate_one(toml).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains(expected),
            "expected `{expected}` in: {shown}"
        );
        assert!(shown.contains("t.toml"), "no file in: {shown}");
    }
    let err = generate_one("[[rateLimit]]\nname = 1\n").unwrap_err();
    assert!(
        matches!(err, GenerateError::Timeline(TimelineError::Parse { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("line 2"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = generate::generate_dir(Path::new(empty.path())).unwrap_err();
    assert!(
        err.to_string().contains("no *.toml timeline files"),
        "{err}"
    );
}
