//! Protocol 2 end to end: the real binary drives `tests/fixtures/adapters/v2_fixture.py` over a
//! real Redis. The correct fixture passes every property suite; each deliberately broken one
//! fails exactly the property that covers its defect, with a message that says what differed.

use std::path::Path;
use std::process::{Output, Stdio};

use crate::util::{self, bin, latest_summary, text};

fn python() -> Option<String> {
    // The fixture needs only the `redis` package, which the throttlekit venv has.
    util::throttlekit_python().map(|p| p.to_string_lossy().into_owned())
}

fn run(python: &str, args: &str, logs: &Path, filters: &[&str]) -> Output {
    let adapter = format!(
        "{python} {} {args}",
        util::quoted(&util::fixture("v2_fixture.py"))
    );
    bin()
        .arg("run")
        .arg("--contract")
        .arg(util::repo().join("contract"))
        .arg("--logs")
        .arg(logs)
        .args(["--backend", "exec", "--adapter", &adapter])
        .arg("--")
        .args(filters)
        .env("CI", "1")
        .env_remove("TK_CONFORM_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn outcomes(logs: &Path) -> Vec<(String, String, String)> {
    latest_summary(logs)["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["outcome"].as_str().unwrap().to_owned(),
                t["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Runs a broken fixture and checks that `property` failed with `wanted` in its message, and
/// that no other property of the listed `clean` ones failed.
fn expect_failure(args: &str, filter: &str, property: &str, wanted: &str) {
    if !util::have_redis() {
        return;
    }
    let Some(python) = python() else { return };
    let logs = tempfile::tempdir().unwrap();
    let out = run(&python, args, logs.path(), &[filter]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let trials = outcomes(logs.path());
    let failed: Vec<_> = trials.iter().filter(|t| t.1 == "failed").collect();
    let hit = failed
        .iter()
        .find(|t| t.0.contains(&format!("::{property}::")))
        .unwrap_or_else(|| panic!("{property} did not fail for {args}: {trials:#?}"));
    assert!(
        hit.2.contains(wanted),
        "{}: got `{}`, wanted `{wanted}`",
        hit.0,
        hit.2
    );
}

#[test]
fn the_correct_fixture_passes_every_property() {
    if !util::have_redis() {
        return;
    }
    let Some(python) = python() else { return };
    let logs = tempfile::tempdir().unwrap();
    let out = run(&python, "", logs.path(), &["=5,"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let trials = outcomes(logs.path());
    assert!(trials.iter().any(|t| t.1 == "passed"));
    for (name, outcome, message) in &trials {
        match outcome.as_str() {
            "passed" => {}
            // The only skips: no out-of-order nows for a store clock, and no seeded state for
            // an engine that writes atomically.
            "skipped" => assert!(
                name.contains("::interleaved::ttl")
                    // Real time may not fit enough racing calls in one window on a busy machine.
                    || (name.contains("::race::ttl") && message.starts_with("unknown"))
                    || (name.contains("::liveness-seeded::ttl")
                        && message.contains("writes its keys atomically")),
                "{name}: {message}"
            ),
            other => panic!("{name} {other}: {message}"),
        }
    }
    // The families each got their own trials, at a swept point.
    for family in ["fixedWindow", "slidingWindowLog", "tokenBucket"] {
        assert!(
            trials
                .iter()
                .any(|t| t.0.starts_with(&format!("property::{family}::cap::"))),
            "{family}: {trials:#?}"
        );
    }
}

#[test]
fn over_admission_fails_cap_exact_and_real_time() {
    expect_failure(
        "--kinds fw --fault over-admit",
        "::cap::fw@limit=5,",
        "cap",
        "admitted 6, expected exactly the limit 5",
    );
    expect_failure(
        "--kinds ttl --fault over-admit",
        "::cap::ttl@limit=5,",
        "cap",
        "6 admitted among",
    );
}

#[test]
fn a_key_without_ttl_fails_hygiene() {
    expect_failure(
        "--kinds fw --fault no-ttl",
        "::hygiene::fw@limit=5,",
        "hygiene",
        "has no TTL (PTTL -1)",
    );
}

#[test]
fn a_lying_retry_after_fails_honesty() {
    expect_failure(
        "--kinds fw --fault lie-retry",
        "::honesty::fw@limit=5,",
        "honesty",
        "the denial said retryAfterMs",
    );
    expect_failure(
        "--kinds ttl --fault lie-retry",
        "::honesty::ttl@limit=5,",
        "honesty",
        "said retryAfterMs",
    );
}

#[test]
fn a_wrong_remaining_fails_honesty() {
    expect_failure(
        "--kinds log --fault bad-remaining",
        "::honesty::log@limit=5,",
        "honesty",
        "remaining was 5, expected 4",
    );
}

#[test]
fn undeclared_charging_of_denials_fails() {
    expect_failure(
        "--kinds bucket --fault charge-denials",
        "::denials::bucket@capacity=5,",
        "denials",
        "denied calls consumed, while the kind declares countsDenials: false",
    );
    expect_failure(
        "--kinds bucket --fault charge-denials",
        "::cost::bucket@capacity=5,",
        "cost",
        "a denied call of cost 6 consumed",
    );
}

#[test]
fn a_write_split_from_its_expiry_fails_seeded_liveness() {
    expect_failure(
        "--kinds ttl --fault split-write",
        "::liveness-seeded::ttl@limit=5,",
        "liveness-seeded",
        "in a separate round trip (`INCRBY",
    );
}

#[test]
fn store_unreachable_is_never_a_denial() {
    expect_failure(
        "--kinds fw --fault unreachable",
        "::cap::fw@limit=5,",
        "cap",
        "reported its store unreachable (connection refused (fixture))",
    );
}

#[test]
fn a_decision_with_an_undeclared_field_is_a_protocol_violation() {
    expect_failure(
        "--kinds log --fault undeclared-field",
        "::cap::log@limit=5,",
        "cap",
        "carries `resetAt`, which kind `log` does not declare in `exposes`",
    );
}

#[test]
fn a_get_then_set_engine_fails_the_race() {
    expect_failure(
        "--kinds ttl --fault get-then-set",
        "::race::ttl@limit=150,",
        "race",
        "from 8 processes that all fell in one window of 1000 ms",
    );
}

fn bench_exec(python: &str, args: &str) -> Output {
    bench_exec_calls(python, args, "200")
}

fn bench_exec_calls(python: &str, args: &str, calls: &str) -> Output {
    let adapter = format!(
        "{python} {} {args}",
        util::quoted(&util::fixture("v2_fixture.py"))
    );
    bin()
        .args(["bench", "exec", "--adapter", &adapter, "--kind", "ttl"])
        .args(["--calls", calls, "--rounds", "2"])
        .env_remove("TK_CONFORM_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn bench_exec_rotates_the_native_loop_the_bare_driver_and_the_door() {
    if !util::have_redis() {
        return;
    }
    let Some(python) = python() else { return };
    let out = bench_exec(&python, "--kinds ttl");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rounds: Vec<&str> = stdout.lines().filter(|l| l.starts_with("round")).collect();
    // Each side is timed once per round, the order rotating so no side always goes first.
    let expected = [
        "round 1: native loop",
        "round 1: bare driver",
        "round 1: through tk-conform",
        "round 2: bare driver",
        "round 2: through tk-conform",
        "round 2: native loop",
    ];
    assert_eq!(rounds.len(), expected.len(), "{stdout}");
    for (line, wanted) in rounds.iter().zip(expected) {
        assert!(line.starts_with(wanted), "{line} is not {wanted}: {stdout}");
        let rate: f64 = line
            .rsplit(' ')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no rate in {line}"));
        assert!(rate > 0.0, "{line}");
    }
    assert!(
        stdout.contains("v2-fixture `ttl`: native ")
            && stdout.contains("the exec door over the bare driver costs"),
        "{stdout}"
    );
}

#[test]
fn bench_exec_names_an_adapter_without_a_native_loop() {
    if !util::have_redis() {
        return;
    }
    let Some(python) = python() else { return };
    let out = bench_exec(&python, "--kinds ttl --fault no-native-bench");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--native-bench ttl 200")
            && stderr
                .contains("instead of a decision rate: does the adapter serve --native-bench?"),
        "{stderr}"
    );
}

#[test]
fn bench_exec_kills_an_adapter_that_hangs_on_its_pipes() {
    if !util::have_redis() {
        return;
    }
    let Some(python) = python() else { return };
    // Its native loop runs; over the pipes it never answers a decision.
    let started = std::time::Instant::now();
    let out = bench_exec_calls(&python, "--kinds ttl --fault hang-on-pipes", "20");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not finish 20 decisions from the bare driver within 10.2s: killed"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}
