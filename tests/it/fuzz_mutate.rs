//! `tk-conform fuzz` and `tk-conform mutate` end to end, against real Redis: a divergence
//! planted in a copy of a script is found from a fixed seed, shrunk, written out and replayed by
//! `run --vectors`; the same seed gives the same bytes; mutants are killed, survive, or loop
//! and are stopped; every flag is bounds-checked.

use std::path::Path;

use crate::util::{ContractCopy, have_redis, repo, tk_conform};
use tk_conform::contract::vectors::{Suite, VectorsFile};
use tk_conform::fuzz::cli::RedisTarget;
use tk_conform::infra::{LocalRedis, find_redis_binary};
use tk_conform::mutate::{Fate, JudgeConfig, Mutant, Operator, judge};
use tk_conform::redis_scripts::ScriptSet;

/// The planted bug: a denial's retry when exactly the oldest bucket's share frees enough
/// (`D <= oldest * weight`) takes the "next bucket" branch instead.
fn planted_copy() -> ContractCopy {
    let copy = ContractCopy::new();
    copy.edit_script("slidingWindow.check.lua", |lua| {
        lua.replace(
            "if oldest > 0 and D <= oldest * weight then",
            "if oldest > 0 and D < oldest * weight then",
        )
    });
    copy
}

fn fuzz_planted(copy: &ContractCopy, out: &Path) -> (i32, String, String) {
    tk_conform(&[
        "fuzz",
        "--backend",
        "redis",
        "--scripts",
        copy.path().join("scripts").to_str().unwrap(),
        "--strategy",
        "slidingWindow",
        "--seed",
        "1",
        "--timelines",
        "3000",
        "--time",
        "10m",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn fuzz_finds_a_planted_boundary_bug_shrinks_it_and_run_replays_it() {
    if !have_redis() {
        return;
    }
    let copy = planted_copy();
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = fuzz_planted(&copy, out.path());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("fuzz: seed 1"), "{stdout}");
    assert!(stdout.contains("retryAfterMs: expected"), "{stdout}");
    // Progress with ops/s goes to stderr.
    assert!(stderr.contains("ops/s"), "{stderr}");

    // The minimal case: a readable timeline of at most 3 ops, in the suites/vectors format ...
    let toml_path = out.path().join("fuzz-1.toml");
    let loaded = tk_conform::contract::timelines::load_file(&toml_path).unwrap();
    let ops: usize = loaded.file.rate_limit.iter().map(|t| t.ops.len()).sum();
    assert!(
        (1..=3).contains(&ops),
        "{ops} ops:\n{}",
        std::fs::read_to_string(&toml_path).unwrap()
    );
    assert_eq!(loaded.file.rate_limit.len(), 1, "one key");

    // ... that the unbroken scripts pass and the broken ones fail the same way through `run`.
    let vectors = out.path().join("fuzz-1.vectors.json");
    let logs = tempfile::tempdir().unwrap();
    let run = |contract: &Path| {
        tk_conform(&[
            "run",
            "--backend",
            "redis",
            "--contract",
            contract.to_str().unwrap(),
            "--vectors",
            vectors.to_str().unwrap(),
            "--logs",
            logs.path().to_str().unwrap(),
        ])
    };
    let (code, run_out, run_err) = run(copy.path());
    assert_eq!(code, 1, "{run_out}\n{run_err}");
    let diff_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("retryAfterMs: expected"))
        .unwrap()
        .trim();
    assert!(
        run_out.contains(diff_line),
        "`{diff_line}` not in:\n{run_out}"
    );
    let (code, run_out, run_err) = run(&repo().join("contract"));
    assert_eq!(
        code, 0,
        "the real scripts pass the fuzz case:\n{run_out}\n{run_err}"
    );
}

#[test]
fn the_same_seed_gives_the_same_output_byte_for_byte() {
    if !have_redis() {
        return;
    }
    let copy = planted_copy();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (code_a, out_a, _) = fuzz_planted(&copy, a.path());
    let (code_b, out_b, _) = fuzz_planted(&copy, b.path());
    assert_eq!((code_a, code_b), (1, 1));
    let strip = |text: &str, dir: &Path| text.replace(dir.to_str().unwrap(), "OUT");
    assert_eq!(strip(&out_a, a.path()), strip(&out_b, b.path()));
    for file in ["fuzz-1.toml", "fuzz-1.vectors.json"] {
        let read = |dir: &Path| std::fs::read(dir.join(file)).unwrap();
        assert_eq!(read(a.path()), read(b.path()), "{file} differs");
    }
}

#[test]
fn fuzz_of_the_real_scripts_and_of_the_model_finds_nothing() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = tk_conform(&[
        "fuzz",
        "--backend",
        "model",
        "--seed",
        "5",
        "--timelines",
        "300",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("no divergence in 300 timelines (seed 5)"),
        "{stdout}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("fuzz-5.json")).unwrap()).unwrap();
    assert_eq!(record["seed"], 5);
    assert!(record["found"].is_null());
    if !have_redis() {
        return;
    }
    let (code, stdout, stderr) = tk_conform(&[
        "fuzz",
        "--backend",
        "redis",
        "--seed",
        "5",
        "--timelines",
        "300",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
}

#[test]
fn fuzz_flags_are_bounded() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    for (args, needle) in [
        (vec!["--time", "0s"], "1s to 24h"),
        (vec!["--time", "25h"], "1s to 24h"),
        (vec!["--time", "ten"], "not a duration"),
        (vec!["--time", "3d"], "unknown unit"),
        (vec!["--connections", "0"], "--connections"),
        (vec!["--connections", "257"], "--connections"),
        (vec!["--max-ops", "0"], "--max-ops"),
        (vec!["--max-keys", "9"], "--max-keys"),
        (vec!["--timelines", "0"], "--timelines"),
        (vec!["--shrink-attempts", "0"], "--shrink-attempts"),
        (
            vec!["--strategy", "gcra,leaky"],
            "unknown primitive `leaky`",
        ),
        (vec!["--seed", "abc"], "--seed"),
        (vec!["--backend", "service"], "issue 10"),
        (
            vec!["--backend", "model", "--scripts", "x"],
            "--scripts applies to --backend redis",
        ),
    ] {
        let mut all = vec!["fuzz", "--out", out];
        all.extend(args.iter().copied());
        let (code, stdout, stderr) = tk_conform(&all);
        assert_eq!(code, 2, "{args:?}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: `{needle}` not in {stderr}"
        );
    }
    // A scripts folder that is not one names the file.
    let (code, _, stderr) = tk_conform(&["fuzz", "--scripts", "/nonexistent", "--out", out]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/manifest.json"), "{stderr}");
}

#[test]
fn mutate_scores_a_catalogue_subset_and_fails_below_min_score() {
    if !have_redis() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let args = |extra: &[&str]| {
        let mut all = vec![
            "mutate",
            "--script",
            "fixedWindow.check",
            "--operator",
            "flip-comparison,cost-one,delete-write",
            "--equivalence-sample",
            "200",
            "--out",
            out.path().to_str().unwrap(),
        ];
        all.extend(extra);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let owned = args(&["--min-score", "100"]);
    let (code, stdout, stderr) = tk_conform(&owned.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        code, 0,
        "the project's vectors kill every such mutant:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("score 100.0%"), "{stdout}");
    // The validation-only flips are reported as equivalent, never as survivors.
    assert!(stdout.contains("equivalent #"), "{stdout}");
    assert!(!stdout.contains("survived   #"), "{stdout}");

    // Vectors that only ever admit: the denial path's mutants survive, each with a witness.
    let mut weak: VectorsFile = serde_json::from_slice(
        &std::fs::read(repo().join("contract/golden-vectors.json")).unwrap(),
    )
    .unwrap();
    weak.suites
        .retain(|s| s.name() == "fixedWindow-fill-deny-reset");
    assert_eq!(weak.suites.len(), 1, "the suite this test leans on exists");
    if let Suite::RateLimit(r) = &mut weak.suites[0] {
        r.ops.truncate(1);
    }
    let weak_path = out.path().join("weak.json");
    std::fs::write(&weak_path, serde_json::to_vec(&weak).unwrap()).unwrap();
    let owned = args(&[
        "--min-score",
        "90",
        "--vectors",
        weak_path.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = tk_conform(&owned.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("is below --min-score 90%"), "{stdout}");
    let survivor = stdout
        .lines()
        .find(|l| l.starts_with("survived   #"))
        .unwrap_or_else(|| panic!("no survivor in {stdout}"));
    // One line: file:line operator: `before` → `after`, and a witness timeline.
    assert!(
        survivor.contains("fixedWindow.check.lua:") && survivor.contains("` → `"),
        "{survivor}"
    );
    let witness = survivor
        .rsplit("(witness: ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    tk_conform::contract::timelines::load_file(Path::new(witness)).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("mutate.json")).unwrap()).unwrap();
    assert!(record["score"].as_f64().unwrap() < 90.0);
}

#[test]
fn mutate_flags_are_bounded() {
    for (args, needle) in [
        (vec!["--min-score", "101"], "0 to 100"),
        (vec!["--min-score", "high"], "not a percentage"),
        (
            vec!["--operator", "flip-comparison,negate"],
            "unknown operator `negate`",
        ),
        (vec!["--connections", "0"], "--connections"),
        (
            vec!["--equivalence-sample", "2000000"],
            "--equivalence-sample",
        ),
        (
            vec!["--script", "gcra.read"],
            "no check script of that name",
        ),
        (
            vec!["--contract", "contract", "--scripts", "contract/scripts"],
            "cannot be used with",
        ),
        (
            vec!["--scripts", "/nonexistent"],
            "/nonexistent/manifest.json",
        ),
    ] {
        let mut all = vec!["mutate"];
        all.extend(args.iter().copied());
        let (code, stdout, stderr) = tk_conform(&all);
        assert_eq!(code, 2, "{args:?}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: `{needle}` not in {stderr}"
        );
    }
}

#[test]
fn a_looping_mutant_is_stopped_with_script_kill_and_counts_as_killed() {
    if !have_redis() {
        return;
    }
    let base = ScriptSet::from_contract_dir(&repo().join("contract")).unwrap();
    let code = base
        .scripts()
        .iter()
        .find(|s| s.entry.name == "fixedWindow.check")
        .unwrap()
        .code
        .clone();
    let mutant = |operator, after: &str, code: String| Mutant {
        script: "fixedWindow.check".into(),
        file: "fixedWindow.check.lua".into(),
        operator,
        line: 1,
        before: String::new(),
        after: after.into(),
        code,
    };
    let looping = mutant(
        Operator::DeleteWrite,
        "while true do end",
        code.replace("local start = ", "while true do end\nlocal start = "),
    );
    let unchanged = mutant(Operator::FlipComparison, "(none)", code.clone());
    let broken = mutant(
        Operator::FlipComparison,
        "count + cost < limit",
        code.replace(
            "if count + cost <= limit then",
            "if count + cost < limit then",
        ),
    );
    let vectors: VectorsFile = serde_json::from_slice(
        &std::fs::read(repo().join("contract/golden-vectors.json")).unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fates = runtime.block_on(async {
        let redis = LocalRedis::start(&find_redis_binary().unwrap())
            .await
            .unwrap();
        let url = redis.url();
        let target = RedisTarget {
            url: &url,
            version: "redis",
            external: false,
        };
        let config = JudgeConfig {
            connections: 3,
            equivalence_sample: 0,
            seed: 1,
            shrink_attempts: 10,
        };
        let fates = judge(
            &base,
            &[looping, unchanged, broken],
            &vectors.suites,
            &target,
            &config,
        )
        .await
        .unwrap();
        // The Redis still answers: nothing was left running.
        let mut con = tk_conform::infra::connect(&url).await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
        fates
    });
    assert!(matches!(fates[0], Fate::TimedOut), "{:?}", fates[0]);
    assert!(
        matches!(fates[1], Fate::Equivalent { .. }),
        "{:?}",
        fates[1]
    );
    match &fates[2] {
        Fate::Killed { by } => assert!(by.contains("fixed"), "{by}"),
        other => panic!("expected killed, got {other:?}"),
    }
}

#[test]
fn fuzz_drives_an_exec_adapter_through_every_primitive_it_claims() {
    let adapter = format!(
        "python3 {}",
        repo().join("tests/fixtures/adapters/faulty.py").display()
    );
    let out = tempfile::tempdir().unwrap();
    let fuzz = |adapter: &str, strategies: &str| {
        tk_conform(&[
            "fuzz",
            "--strategy",
            strategies,
            "--backend",
            "exec",
            "--adapter",
            adapter,
            "--seed",
            "2",
            "--timelines",
            "200",
            "--connections",
            "3",
            "--shrink-attempts",
            "200",
            "--out",
            out.path().to_str().unwrap(),
        ])
    };
    // A correct engine for fixedWindow, tokenBudget and the lease spender: nothing found, and
    // a lease timeline never waits for a second session on the one adapter.
    let (code, stdout, stderr) = fuzz(&adapter, "fixedWindow,tokenBudget,lease");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("fixedWindow, tokenBudget, lease"),
        "{stdout}"
    );
    // The same adapter answering one check (its 40th) with a wrong `remaining`.
    let (code, stdout, stderr) = fuzz(
        &format!("{adapter} --fault wrong-field --at 40"),
        "fixedWindow",
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("diverged at op"), "{stdout}");
}
