//! `tk-conform fuzz --backend exec` against a protocol-2 adapter: the property oracle drives
//! `tests/fixtures/adapters/v2_fixture.py` (explicit-clock kinds) over a real Redis. The correct
//! fixture passes a bounded budget; each broken mode fails, is shrunk, and names the property.

use std::path::Path;
use std::process::{Output, Stdio};

use crate::util::{self, bin, text};

fn python() -> Option<String> {
    util::throttlekit_python().map(|p| p.to_string_lossy().into_owned())
}

/// Runs the fuzzer on the fixture with `args` (e.g. `--fault over-admit`), or `None` when a
/// tool is missing (a failure instead under TK_CONFORM_REQUIRE_ALL=1).
fn fuzz(args: &str, seed: &str, out: &Path, extra: &[&str]) -> Option<Output> {
    if !util::have_redis() {
        return None;
    }
    let python = python()?;
    let adapter = format!(
        "{python} {} {args}",
        util::quoted(&util::fixture("v2_fixture.py"))
    );
    Some(
        bin()
            .args(["fuzz", "--backend", "exec", "--adapter", &adapter])
            .args(["--seed", seed, "--timelines", "150", "--time", "120s"])
            .arg("--out")
            .arg(out)
            .args(extra)
            .env_remove("TK_CONFORM_REDIS_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    )
}

fn minimal(out: &Path, seed: &str) -> serde_json::Value {
    let path = out.join(format!("fuzz-{seed}.timeline.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn the_correct_v2_fixture_keeps_every_invariant() {
    let out = tempfile::tempdir().unwrap();
    let Some(run) = fuzz("--kinds fw,log,bucket", "1", out.path(), &[]) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(stdout.contains("oracle family invariants"), "{stdout}");
    assert!(
        stdout.contains("no violation in 150 timelines (seed 1)"),
        "{stdout}"
    );
}

#[test]
fn over_admission_fails_the_cap_shrunk_and_the_same_for_the_same_seed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some(first) = fuzz(
        "--kinds fw,log,bucket --fault over-admit",
        "1",
        a.path(),
        &[],
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(stdout.contains("cap violated at op "), "{stdout}");
    assert!(stdout.contains("admitted with now in"), "{stdout}");
    let case = minimal(a.path(), "1");
    assert_eq!(case["violated"], "cap");
    let ops = case["timeline"]["ops"].as_array().unwrap().len();
    let shrunk = stdout
        .lines()
        .find(|l| l.contains("shrunk from"))
        .unwrap()
        .to_owned();
    let before: usize = shrunk
        .split("shrunk from ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(ops < before, "not shrunk: {shrunk}");
    let second = fuzz(
        "--kinds fw,log,bucket --fault over-admit",
        "1",
        b.path(),
        &[],
    )
    .unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let again = minimal(b.path(), "1");
    assert_eq!(case["timeline"], again["timeline"]);
    assert_eq!(case["op"], again["op"]);
}

#[test]
fn a_lying_retry_after_fails_honesty() {
    let out = tempfile::tempdir().unwrap();
    let Some(run) = fuzz(
        "--kinds fw,log,bucket --fault lie-retry",
        "1",
        out.path(),
        &[],
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(stdout.contains("honesty violated at op "), "{stdout}");
    assert!(stdout.contains("said retryAfterMs"), "{stdout}");
    assert_eq!(minimal(out.path(), "1")["violated"], "honesty");
}

#[test]
fn a_wrong_remaining_fails_honesty_on_the_numbers() {
    let out = tempfile::tempdir().unwrap();
    let Some(run) = fuzz(
        "--kinds fw,log,bucket --fault bad-remaining",
        "1",
        out.path(),
        &[],
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(stdout.contains("exceeds the limit"), "{stdout}");
}

#[test]
fn a_v2_adapter_without_explicit_clock_kinds_or_with_strategy_is_a_usage_error() {
    let out = tempfile::tempdir().unwrap();
    let Some(run) = fuzz("--kinds ttl", "1", out.path(), &[]) else {
        return;
    };
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("no limiter kind with an explicit clock"),
        "{}",
        text(&run)
    );
    let run = fuzz("--kinds fw", "1", out.path(), &["--strategy", "gcra"]).unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("--strategy names the contract"),
        "{}",
        text(&run)
    );
}
