//! `tk-conform run` end to end against a real `redis-server` it starts itself, and against
//! contract copies broken on purpose.

use crate::util::{ContractCopy, UserRedis, bin, have_redis, latest_summary, run_command, text};
use tk_conform::contract::vectors::Suite;

fn run(contract: &std::path::Path, logs: &std::path::Path, extra: &[&str]) -> std::process::Output {
    run_command(contract, logs, extra).output().unwrap()
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
        tk_conform::conformance::corpus::suite_offset(s, std::path::Path::new("x"))
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

/// A file shaped like ThrottleKit's published vectors, made the way an in-process oracle makes
/// them: every timeline starts at now = 0, and a tokenBudget suite with a 60000 ms window sits
/// beside a gcra suite `{limit: 3, periodMs: 1000, burst: 3}`.
fn throttlekit_shaped_vectors() -> tk_conform::contract::vectors::VectorsFile {
    use tk_conform::contract::vectors::{DebitOp, RateLimitSuite, RateOp, TokenBudgetSuite};
    use tk_conform::model::{Strategy, TokenBudget, TokenBudgetOptions};
    let strategy: Strategy =
        serde_json::from_str(r#"{"kind":"gcra","options":{"limit":3,"periodMs":1000,"burst":3}}"#)
            .unwrap();
    let mut state = None;
    let ops = [
        (0.0, 1.0),
        (0.0, 1.0),
        (0.0, 1.0),
        (0.0, 1.0),
        (334.0, 1.0),
        (1000.0, 2.0),
    ]
    .into_iter()
    .map(|(now, cost)| RateOp {
        now,
        cost,
        expect: strategy.check(&mut state, now, cost).unwrap().decision,
    })
    .collect();
    let options = TokenBudgetOptions {
        budget: 10.0,
        window_ms: 60_000.0,
    };
    let meter = TokenBudget::new(options).unwrap();
    let mut used = None;
    let debits = [
        (0.0, 4.0),
        (30_000.0, 7.0),
        (59_999.0, 1.0),
        (60_000.0, 1.0),
    ]
    .into_iter()
    .map(|(now, tokens)| DebitOp {
        now,
        tokens,
        expect: meter.debit(&mut used, now, tokens).unwrap(),
    })
    .collect();
    let mut file = ContractCopy::new().vectors();
    file.generated_from = "an in-process oracle at now = 0 (ThrottleKit-shaped)".into();
    file.suites = vec![
        Suite::TokenBudget(TokenBudgetSuite {
            name: "budget-minute".into(),
            options,
            ops: debits,
        }),
        Suite::RateLimit(RateLimitSuite {
            name: "gcra-3-per-s".into(),
            strategy,
            key: "k".into(),
            ops,
        }),
    ];
    file
}

/// Spec 5 asks for the smallest offset: one offset for the whole file (60000, for the budget's
/// window) made gcra's first `remaining` 1 where 2 is right. Each suite gets its own, logged.
#[test]
fn throttlekit_shaped_vectors_replay_green_on_model_and_redis() {
    let vectors = throttlekit_shaped_vectors();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("throttlekit-shaped.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&vectors).unwrap()).unwrap();
    let contract = ContractCopy::new();
    let mut backends = vec!["model"];
    if have_redis() {
        backends.push("redis");
    }
    for backend in backends {
        let logs = tempfile::tempdir().unwrap();
        let out = run(
            contract.path(),
            logs.path(),
            &["--backend", backend, "--vectors", path.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));
        let summary = latest_summary(logs.path());
        assert_eq!(summary["counts"]["failed"], 0, "{backend}: {summary:#}");
        assert_eq!(
            summary["details"]["clockOffsets"],
            serde_json::json!({"rateLimit::gcra-3-per-s": 1000.0}),
            "{backend}"
        );
        let log = std::fs::read_to_string(logs.path().join("latest/run.log")).unwrap();
        assert!(
            log.contains("clock offset: 1000 ms added to every now of rateLimit::gcra-3-per-s"),
            "{log}"
        );
    }
}

/// Every vectors file loads cleanly or the run stops with exit 2, naming the suite and op.
#[test]
fn a_vectors_file_that_does_not_load_cleanly_is_exit_2_naming_suite_and_op() {
    let contract = ContractCopy::new();
    let good = contract.vectors();
    let first_rate = good
        .suites
        .iter()
        .position(|s| matches!(s, Suite::RateLimit(_)))
        .unwrap();
    let trial = good.suites[first_rate].trial_name();
    let second = good.suites[first_rate + 1].name().to_owned();
    let edit = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut raw: serde_json::Value = serde_json::to_value(&good).unwrap();
        change(&mut raw["suites"][first_rate]);
        raw
    };
    let cases: Vec<(&str, serde_json::Value, String)> = vec![
        (
            "unknown field",
            edit(&|s| s["ops"][1]["costt"] = 2.into()),
            format!("suite {trial} (suites[{first_rate}]): unknown field `ops[1].costt`"),
        ),
        (
            "duplicate name",
            edit(&|s| s["name"] = second.clone().into()),
            format!(
                "(suites[{}]): the name {second:?} is also the name of suites[{first_rate}]",
                first_rate + 1
            ),
        ),
        (
            "negative cost",
            edit(&|s| s["ops"][1]["cost"] = (-1).into()),
            "op 1: cost must be a finite number >= 0, got -1".to_owned(),
        ),
        (
            "limit 0",
            edit(&|s| s["strategy"]["options"]["limit"] = 0.into()),
            "option `limit` must be a positive finite number, got 0".to_owned(),
        ),
        (
            "negative now",
            edit(&|s| s["ops"][2]["now"] = (-1000).into()),
            "op 2: now must be a finite number of epoch milliseconds, got -1000".to_owned(),
        ),
    ];
    for (what, raw, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&raw).unwrap()).unwrap();
        let logs = tempfile::tempdir().unwrap();
        let out = run(
            contract.path(),
            logs.path(),
            &["--backend", "model", "--vectors", path.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("bad.json does not load cleanly") && stderr.contains(&want),
            "{what}: want {want:?} in {stderr}"
        );
    }
}

#[test]
fn clock_offsets_and_trial_timeouts_out_of_bounds_are_exit_2() {
    let contract = ContractCopy::new();
    for flags in [
        ["--clock-offset", "1e20"],
        ["--clock-offset", "NaN"],
        ["--clock-offset", "inf"],
        ["--clock-offset=-1", ""],
        ["--trial-timeout", "0"],
    ] {
        let logs = tempfile::tempdir().unwrap();
        let mut args = vec!["--backend", "model"];
        args.extend(flags.into_iter().filter(|f| !f.is_empty()));
        let out = run(contract.path(), logs.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let flag = flags[0].split('=').next().unwrap();
        assert!(stderr.contains(flag), "{flags:?}: {stderr}");
    }
}

/// An engine author's scripts folder: manifest.json and the *.lua files, nothing else.
fn scripts_dir_from(contract: &ContractCopy) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(contract.path().join("scripts")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn run_scripts(scripts: &std::path::Path, logs: &std::path::Path) -> std::process::Output {
    // The vendored, sealed contract supplies the vectors; --scripts supplies the engine.
    bin()
        .args(["run", "--backend", "redis", "--logs"])
        .arg(logs)
        .arg("--scripts")
        .arg(scripts)
        .current_dir(crate::util::repo())
        .env("CI", "1")
        .output()
        .unwrap()
}

#[test]
fn own_scripts_are_judged_against_the_vendored_vectors() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    // A copy of the contract's scripts, broken as an author might: remaining off by one.
    contract.edit_script("gcra.check.lua", |lua| {
        lua.replace(
            "math.max(0, math.floor((tau - (newTat - now)) / T))",
            "math.max(0, math.floor((tau - (newTat - now)) / T)) + 1",
        )
    });
    let broken = scripts_dir_from(&contract);
    assert!(!broken.path().join("SOURCE").exists());
    let logs = tempfile::tempdir().unwrap();
    let out = run_scripts(broken.path(), logs.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert!(summary["contractDigest"].is_string(), "{summary:#}");
    assert_eq!(
        summary["details"]["scripts"],
        broken.path().display().to_string()
    );
    let failed: Vec<&str> = summary["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "failed")
        .map(|t| t["message"].as_str().unwrap())
        .collect();
    assert!(!failed.is_empty());
    for message in &failed {
        assert!(
            message.starts_with("rateLimit::gcra")
                && message.contains("diverged at op ")
                && message.contains("remaining: expected"),
            "{message}"
        );
    }
    // The same folder unbroken passes.
    let fine = scripts_dir_from(&ContractCopy::new());
    let logs = tempfile::tempdir().unwrap();
    let out = run_scripts(fine.path(), logs.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_bad_scripts_dir_is_exit_2_saying_what_is_wrong() {
    let contract = ContractCopy::new();
    type Breaks = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Breaks, &str)> = vec![
        (
            "no manifest",
            Box::new(|d| std::fs::remove_file(d.join("manifest.json")).unwrap()),
            "no scripts manifest there; a scripts folder holds manifest.json",
        ),
        (
            "a script file missing",
            Box::new(|d| std::fs::remove_file(d.join("gcra.check.lua")).unwrap()),
            "script \"gcra.check\": cannot read its file",
        ),
        (
            "sha mismatch",
            Box::new(|d| {
                let lua = d.join("gcra.check.lua");
                let text = std::fs::read_to_string(&lua).unwrap() + "-- edited\n";
                std::fs::write(lua, text).unwrap();
            }),
            "gcra.check.lua: sha256 is",
        ),
        (
            "a file outside the folder",
            Box::new(|d| {
                let path = d.join("manifest.json");
                let text = std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("\"gcra.check.lua\"", "\"../gcra.check.lua\"");
                std::fs::write(path, text).unwrap();
            }),
            "not a plain relative path",
        ),
    ];
    for (what, breaks, want) in cases {
        let dir = scripts_dir_from(&contract);
        breaks(dir.path());
        let logs = tempfile::tempdir().unwrap();
        let out = run_scripts(dir.path(), logs.path());
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{what}: want {want:?} in {stderr}");
        let errors = stderr.lines().filter(|l| l.contains("error")).count();
        assert_eq!(errors, 1, "{what}: {stderr}");
    }
    // --scripts is for the redis backend.
    let dir = scripts_dir_from(&contract);
    let logs = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--backend", "model", "--scripts"])
        .arg(dir.path())
        .arg("--logs")
        .arg(logs.path())
        .current_dir(crate::util::repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_contract_dir_without_source_suggests_seal_or_scripts() {
    let contract = ContractCopy::new();
    // A sealed copy whose SOURCE is gone: the author's own folder passed as --contract.
    std::fs::copy(
        crate::util::repo().join("contract/manifest.sha256"),
        contract.path().join("manifest.sha256"),
    )
    .unwrap();
    std::fs::remove_file(contract.path().join("SOURCE")).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let out = run(contract.path(), logs.path(), &["--backend", "model"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no SOURCE")
            && stderr.contains("--scripts DIR")
            && stderr.contains("tk-conform contract seal --contract"),
        "{stderr}"
    );
}

/// Errors that quote their source in their own message must not have it printed again.
#[test]
fn a_cause_is_printed_once() {
    let logs = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "run",
            "--backend",
            "model",
            "--vectors",
            "/nonexistent/v.json",
            "--logs",
        ])
        .arg(logs.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("cannot read /nonexistent/v.json").count(),
        1,
        "{stderr}"
    );
}

/// A script that never returns wedges Redis (one script at a time): the harness sends SCRIPT
/// KILL on a second connection, fails only that trial naming the script and the bound, and
/// every later trial keeps passing. A Redis it did not start is not left answering BUSY.
#[test]
fn a_runaway_script_is_killed_and_only_its_trial_fails() {
    if !have_redis() {
        return;
    }
    let user = UserRedis::start();
    let contract = ContractCopy::new();
    let victim = "fixedWindow-boundary-ms";
    contract.edit_script("fixedWindow.check.lua", |lua| {
        format!("if string.find(KEYS[1], '{victim}', 1, true) then while true do end end\n{lua}")
    });
    let scripts = scripts_dir_from(&contract);
    // One trial at a time, and four at once: calls of other trials queued behind the runaway
    // are answered BUSY, wait for the kill and are sent again, so they pass too.
    // And with a trial timeout shorter than the call's bound: the abandoned call's script is
    // killed all the same.
    for (trial_timeout, threads) in [("60", "1"), ("60", "4"), ("2", "1")] {
        let logs = tempfile::tempdir().unwrap();
        let out = bin()
            .args(["run", "--backend", "redis", "--redis-url", &user.url()])
            .args(["--trial-timeout", trial_timeout, "--logs"])
            .arg(logs.path())
            .arg("--scripts")
            .arg(scripts.path())
            .args(["--", "--test-threads", threads])
            .current_dir(crate::util::repo())
            .env("CI", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{threads}: {}", text(&out));
        let summary = latest_summary(logs.path());
        let trials = summary["trials"].as_array().unwrap();
        let failed: Vec<&serde_json::Value> =
            trials.iter().filter(|t| t["outcome"] == "failed").collect();
        assert_eq!(failed.len(), 1, "{threads}: {summary:#}");
        assert_eq!(failed[0]["name"], format!("rateLimit::{victim}"));
        let message = failed[0]["message"].as_str().unwrap();
        assert!(
            message.contains("fixedWindow.check")
                && message.contains("SCRIPT KILL")
                && (message.contains("did not answer within 10 s (the bound on one script call)")
                    || message.contains("ran past Redis's busy-reply threshold"))
                || trial_timeout == "2" && message.contains("did not finish within 2 s"),
            "{threads}: {message}"
        );
        // Every other trial, the fixedWindow ones after it included, passed.
        let (rate, _) = counts(&contract.vectors());
        assert_eq!(
            summary["counts"]["passed"],
            rate - 1,
            "{threads}: {summary:#}"
        );
    }
    // The Redis the harness did not start answers, not BUSY, and holds the user's keys only.
    user.assert_only_the_users_keys("after the runaway scripts");
    let mut con = redis::Client::open(user.url())
        .unwrap()
        .get_connection_with_timeout(std::time::Duration::from_secs(3))
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}
