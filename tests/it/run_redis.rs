//! `tk-conform run` end to end against a real `redis-server` it starts itself, and against
//! contract copies broken on purpose.

use crate::util::{ContractCopy, bin, have_redis, latest_summary, text};
use tk_conform::contract::vectors::Suite;

fn run(contract: &std::path::Path, logs: &std::path::Path, extra: &[&str]) -> std::process::Output {
    bin()
        .arg("run")
        .arg("--contract")
        .arg(contract)
        .arg("--logs")
        .arg(logs)
        .args(extra)
        .env("CI", "1")
        .output()
        .unwrap()
}

fn counts(vectors: &tk_conform::contract::vectors::VectorsFile) -> (u64, u64) {
    let rate = vectors
        .suites
        .iter()
        .filter(|s| matches!(s, Suite::RateLimit(_)))
        .count() as u64;
    (rate, vectors.suites.len() as u64 - rate)
}

#[test]
fn the_contract_passes_on_redis_and_skips_what_has_no_script() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "redis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    let (rate, other) = counts(&contract.vectors());
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["exitCode"], 0);
    assert_eq!(summary["counts"]["passed"], rate, "{summary:#}");
    assert_eq!(summary["counts"]["failed"], 0);
    assert_eq!(summary["counts"]["skipped"], other);
    assert!(
        summary["backend"]["server"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    for trial in summary["trials"].as_array().unwrap() {
        if trial["outcome"] == "skipped" {
            let reason = trial["message"].as_str().unwrap();
            assert!(
                reason.contains("script") || reason.contains("client-side"),
                "{reason}"
            );
        }
    }
    let junit = std::fs::read_to_string(logs.path().join("latest/junit.xml")).unwrap();
    assert!(
        junit.contains(&format!("tests=\"{}\"", rate + other)),
        "{junit}"
    );
    let log = std::fs::read_to_string(logs.path().join("latest/run.log")).unwrap();
    assert!(log.contains("redis: redis") && log.contains("pid"), "{log}");
}

#[test]
fn the_model_passes_the_same_vectors() {
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "model"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(
        summary["counts"]["passed"],
        contract.vectors().suites.len() as u64
    );
    assert_eq!(summary["counts"]["skipped"], 0);
}

/// Runs a broken copy and returns the failure messages from summary.json.
fn failures_of(contract: &ContractCopy) -> Vec<String> {
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "redis"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = latest_summary(logs.path());
    assert_eq!(summary["exitCode"], 1);
    let failures: Vec<String> = summary["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "failed")
        .map(|t| t["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(!failures.is_empty());
    // libtest prints the same messages on stdout.
    assert!(
        stdout.contains(failures[0].lines().next().unwrap()),
        "{stdout}"
    );
    failures
}

#[test]
fn remaining_off_by_one_is_named() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    contract.edit_script("fixedWindow.check.lua", |lua| {
        lua.replace(
            "return { 1, limit, limit - (count + cost), resetAt, 0 }",
            "return { 1, limit, limit - (count + cost) + 1, resetAt, 0 }",
        )
    });
    let failures = failures_of(&contract);
    let first = &failures[0];
    assert!(first.starts_with("rateLimit::fixedWindow"), "{first}");
    assert!(first.contains("diverged at op "), "{first}");
    assert!(first.contains("now=") && first.contains("cost="), "{first}");
    assert!(first.contains("remaining: expected"), "{first}");
    assert!(first.contains("replay stopped"), "{first}");
    assert!(
        failures
            .iter()
            .all(|f| f.starts_with("rateLimit::fixedWindow"))
    );
}

#[test]
fn ignoring_cost_is_named() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    contract.edit_script("tokenBucket.check.lua", |lua| {
        lua.replace(
            "local cost = not_negative(4, 'cost')",
            "local cost = not_negative(4, 'cost')\ncost = 1",
        )
    });
    let failures = failures_of(&contract);
    assert!(
        failures
            .iter()
            .all(|f| f.starts_with("rateLimit::tokenBucket")),
        "{failures:#?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("remaining: expected") || f.contains("allowed: expected")),
        "{failures:#?}"
    );
}

#[test]
fn never_expiring_keys_are_named() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    contract.edit_script("gcra.check.lua", |lua| {
        lua.replace(
            "redis.call('SET', KEYS[1], string.format('%.17g', newTat), 'PX', string.format('%d', expiry))",
            "redis.call('SET', KEYS[1], string.format('%.17g', newTat))",
        )
    });
    let failures = failures_of(&contract);
    let first = &failures[0];
    assert!(first.starts_with("rateLimit::gcra"), "{first}");
    assert!(first.contains("diverged at op "), "{first}");
    assert!(
        first.contains("expiry") && first.contains("PTTL -1"),
        "{first}"
    );
}

#[test]
fn expiring_keys_too_early_is_named() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    contract.edit_script("fixedWindow.check.lua", |lua| {
        lua.replace(
            "math.max(1, math.ceil(resetAt - now))))",
            "math.max(1, math.floor((resetAt - now) / 2))))",
        )
    });
    let failures = failures_of(&contract);
    let first = &failures[0];
    assert!(first.starts_with("rateLimit::fixedWindow"), "{first}");
    assert!(
        first.contains("expiry") && first.contains("shorter than the contract's expiry"),
        "{first}"
    );
}

#[test]
fn a_script_that_drifted_from_its_manifest_is_exit_2() {
    let contract = ContractCopy::new();
    let lua = contract.path().join("scripts/gcra.check.lua");
    let text_before = std::fs::read_to_string(&lua).unwrap();
    std::fs::write(&lua, text_before + "-- drift\n").unwrap();
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "redis"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gcra.check.lua") && stderr.contains("sha256"),
        "{stderr}"
    );
    let summary = latest_summary(logs.path());
    assert_eq!(summary["status"], "error");
}

#[test]
fn repeated_replays_show_zero_divergences() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run(
        contract.path(),
        logs.path(),
        &["--backend", "redis", "--repeat", "200"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(summary["counts"]["failed"], 0);
    assert_eq!(summary["details"]["repeat"], 200);
    let rate_trials: Vec<_> = summary["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "passed")
        .collect();
    assert!(!rate_trials.is_empty());
    for t in rate_trials {
        assert!(
            t["message"].as_str().unwrap().ends_with("in 200 run(s)"),
            "{t}"
        );
    }
}

#[test]
fn libtest_flags_pass_through() {
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run(
        contract.path(),
        logs.path(),
        &["--backend", "model", "--", "--list"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    for suite in &contract.vectors().suites {
        assert!(listed.contains(&suite.trial_name()), "{listed}");
    }
    let name = contract.vectors().suites[0].trial_name();
    let out = run(
        contract.path(),
        logs.path(),
        &["--backend", "model", "--", "--exact", &name],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(summary["trials"].as_array().unwrap().len(), 1);
    assert_eq!(summary["trials"][0]["name"], name.as_str());
    let out = run(
        contract.path(),
        logs.path(),
        &["--backend", "model", "--", "--no-such-flag"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn vectors_starting_at_zero_replay_with_a_logged_offset() {
    if !have_redis() {
        return;
    }
    // A foreign file made by an in-process oracle: timelines that start at now = 0.
    let contract = ContractCopy::new();
    let mut vectors = contract.vectors();
    let small_offset = |s: &Suite| {
        let mut one = contract.vectors();
        one.suites = vec![s.clone()];
        tk_conform::conformance::corpus::smallest_offset(&one, std::path::Path::new("x"))
            .is_ok_and(|base| base <= 60_000.0)
    };
    vectors.suites.retain(|s| {
        small_offset(s) && matches!(s, Suite::RateLimit(r) if matches!(r.strategy,
            tk_conform::model::Strategy::FixedWindow(_) | tk_conform::model::Strategy::SlidingWindow(_)))
    });
    let rebuilt: Vec<Suite> = vectors
        .suites
        .iter()
        .map(|s| {
            let Suite::RateLimit(r) = s else {
                unreachable!()
            };
            let first = r.ops[0].now;
            let mut state = None;
            let mut r = r.clone();
            for op in &mut r.ops {
                op.now -= first;
                op.expect = r
                    .strategy
                    .check(&mut state, op.now, op.cost)
                    .unwrap()
                    .decision;
            }
            Suite::RateLimit(r)
        })
        .collect();
    vectors.suites = rebuilt;
    std::fs::write(
        contract.path().join("golden-vectors.json"),
        serde_json::to_vec_pretty(&vectors).unwrap(),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "redis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    let offset = summary["clockOffsetMs"].as_f64().unwrap();
    assert!(offset >= 1000.0 && offset % 1000.0 == 0.0, "{offset}");
    let log = std::fs::read_to_string(logs.path().join("latest/run.log")).unwrap();
    assert!(log.contains("clock offset"), "{log}");
}

#[test]
fn the_model_fails_a_tampered_vectors_file_naming_the_field() {
    let contract = ContractCopy::new();
    let mut vectors = contract.vectors();
    let Suite::RateLimit(suite) = &mut vectors.suites[0] else {
        panic!("the first suite is a rate-limit suite")
    };
    let name = format!("rateLimit::{}", suite.name);
    suite.ops[1].expect.reset_at += 1;
    std::fs::write(
        contract.path().join("golden-vectors.json"),
        serde_json::to_vec_pretty(&vectors).unwrap(),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "model"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(summary["counts"]["failed"], 1);
    let failed = summary["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["outcome"] == "failed")
        .unwrap();
    assert_eq!(failed["name"], name.as_str());
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("diverged at op 1 of"), "{message}");
    assert!(message.contains("resetAt: expected"), "{message}");
}

#[test]
fn a_run_that_checked_nothing_is_not_green() {
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run(
        contract.path(),
        logs.path(),
        &["--backend", "model", "--", "no-trial-has-this-name"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no trial was checked"),
        "{}",
        text(&out)
    );
    let summary = latest_summary(logs.path());
    assert_eq!(summary["exitCode"], 1);
    assert!(
        summary["error"].as_str().unwrap().contains("filtered out"),
        "{summary:#}"
    );
}

#[test]
fn a_redis_run_where_every_trial_is_skipped_is_not_green() {
    if !have_redis() {
        return;
    }
    // The redis backend has no script for lease suites: all of them skip, so nothing is checked.
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run(
        contract.path(),
        logs.path(),
        &["--backend", "redis", "--", "lease::"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert!(summary["counts"]["skipped"].as_u64().unwrap() > 0);
    assert_eq!(summary["counts"]["passed"], 0);
}
