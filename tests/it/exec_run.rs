//! `tk-conform run --backend exec` end to end: the real binary, a real adapter process, the
//! contract's golden vectors, and the run folder it leaves. Every fault must give the right
//! failed/skipped trials, a readable message and a finished run with exit code 1.

use crate::util;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::{ContractCopy, bin, latest_summary, text};

/// Suites of the golden vectors the fixture adapter serves: fixedWindow, tokenBudget, lease.
fn served(contract: &Path) -> (u64, u64) {
    let vectors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(contract.join("golden-vectors.json")).unwrap())
            .unwrap();
    let suites = vectors["suites"].as_array().unwrap();
    let served = suites
        .iter()
        .filter(|s| s["primitive"] != "rateLimit" || s["strategy"]["kind"] == "fixedWindow")
        .count() as u64;
    (served, suites.len() as u64 - served)
}

fn exec_run(adapter: &str, logs: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("run")
        .arg("--contract")
        .arg(util::repo().join("contract"))
        .arg("--logs")
        .arg(logs)
        .args(["--backend", "exec", "--adapter", adapter])
        .args(extra)
        .env("CI", "1")
        .env_remove("TK_CONFORM_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn faulty(args: &str) -> String {
    format!(
        "python3 {} {args}",
        util::quoted(&util::fixture("faulty.py"))
    )
}

fn trials_with(summary: &serde_json::Value, outcome: &str) -> Vec<(String, String)> {
    summary["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == outcome)
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Pids of live processes whose command line mentions `marker` (a unique temp path).
fn processes_mentioning(marker: &Path) -> Vec<i32> {
    let marker = marker.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            });
            running && String::from_utf8_lossy(&cmdline).contains(&marker)
        })
        .collect()
}

#[test]
fn a_healthy_adapter_passes_what_it_serves_and_skips_the_rest_with_reasons() {
    let logs = tempfile::tempdir().unwrap();
    let out = exec_run(&faulty(""), logs.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    let (served, other) = served(&util::repo().join("contract"));
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["counts"]["passed"], served, "{summary:#}");
    assert_eq!(summary["counts"]["failed"], 0);
    assert_eq!(summary["counts"]["skipped"], other);
    assert_eq!(summary["backend"]["kind"], "exec");
    assert_eq!(summary["backend"]["name"], "faulty-fixture");
    for (name, reason) in trials_with(&summary, "skipped") {
        let expected = if name.starts_with("rateLimit::gcra") {
            "faulty-fixture: faulty fixture: only fixedWindow"
        } else {
            "the exec adapter faulty-fixture does not claim"
        };
        assert!(reason.starts_with(expected), "{name}: {reason}");
    }
    let log = std::fs::read_to_string(logs.path().join("latest/run.log")).unwrap();
    assert!(
        log.contains("adapter: faulty-fixture 0.0.1 (python"),
        "{log}"
    );
    assert!(logs.path().join("latest/adapter.stderr.log").exists());
}

#[test]
fn an_adapter_that_keeps_crashing_fails_the_run_and_is_given_up() {
    let logs = tempfile::tempdir().unwrap();
    let out = exec_run(
        &faulty("--fault crash --at 4"),
        logs.path(),
        &["--adapter-restarts", "2"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["exitCode"], 1);
    let failed = trials_with(&summary, "failed");
    let crashed: Vec<_> = failed
        .iter()
        .filter(|(_, m)| m.contains("closed stdout"))
        .collect();
    let given_up: Vec<_> = failed
        .iter()
        .filter(|(_, m)| m.contains("adapter unavailable"))
        .collect();
    assert_eq!(crashed.len(), 3, "{failed:#?}");
    assert!(crashed[0].1.contains("exit status: 3"), "{}", crashed[0].1);
    assert!(!given_up.is_empty(), "{failed:#?}");
    assert!(
        given_up[0].1.contains("crashed or hung 3 times"),
        "{}",
        given_up[0].1
    );
    let stderr = std::fs::read_to_string(logs.path().join("latest/adapter.stderr.log")).unwrap();
    assert_eq!(
        stderr.matches("faulty: crash at request").count(),
        3,
        "{stderr}"
    );
}

#[test]
fn a_hung_adapter_is_killed_and_the_run_finishes() {
    let logs = tempfile::tempdir().unwrap();
    let marker = logs.path().join("hang-marker");
    let adapter = faulty(&format!(
        "--fault hang --at 3 --once {}",
        util::quoted(&marker)
    ));
    let out = exec_run(&adapter, logs.path(), &["--adapter-timeout-ms", "2000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = latest_summary(logs.path());
    let failed = trials_with(&summary, "failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0].1.contains("did not answer request"),
        "{}",
        failed[0].1
    );
    assert!(
        failed[0].1.contains("within 2s; it was killed"),
        "{}",
        failed[0].1
    );
    let (served, _) = served(&util::repo().join("contract"));
    assert_eq!(summary["counts"]["passed"], served - 1);
    assert!(
        processes_mentioning(&marker).is_empty(),
        "an adapter outlived the run"
    );
}

/// One protocol fault, fired once: exactly one trial fails, with a message containing `expected`.
fn one_violation(fault: &str, expected: &[&str]) {
    let logs = tempfile::tempdir().unwrap();
    let marker = logs.path().join("fired");
    let adapter = faulty(&format!(
        "--fault {fault} --at 2 --once {}",
        util::quoted(&marker)
    ));
    let out = exec_run(&adapter, logs.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{fault}: {}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(summary["status"], "finished");
    let failed = trials_with(&summary, "failed");
    assert_eq!(failed.len(), 1, "{fault}: {failed:#?}");
    for part in expected {
        assert!(
            failed[0].1.contains(part),
            "{fault}: `{}` lacks `{part}`",
            failed[0].1
        );
    }
    let (served, _) = served(&util::repo().join("contract"));
    assert_eq!(summary["counts"]["passed"], served - 1, "{fault}");
}

#[test]
fn protocol_violations_fail_one_trial_each_naming_the_line() {
    one_violation(
        "bad-json",
        &[
            "protocol violation",
            "not valid JSON",
            "stdout line",
            "tru`",
        ],
    );
    one_violation("wrong-id", &["protocol violation", "expected"]);
    one_violation(
        "missing-field",
        &["protocol violation", "is a required property"],
    );
    one_violation("extra-line", &["extra output", r#""ok": true"#]);
}

#[test]
fn one_wrong_field_fails_its_trial_naming_the_field() {
    one_violation("wrong-field", &["remaining"]);
}

#[test]
fn a_bad_adapter_command_is_a_usage_error() {
    let logs = tempfile::tempdir().unwrap();
    let out = exec_run("/nonexistent/adapter", logs.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot start the adapter `/nonexistent/adapter`"),
        "{}",
        text(&out)
    );
    let out = bin()
        .args(["run", "--backend", "exec", "--logs"])
        .arg(logs.path())
        .arg("--contract")
        .arg(util::repo().join("contract"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--backend exec needs --adapter"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_adapter_dies_with_a_killed_harness() {
    let logs = tempfile::tempdir().unwrap();
    let marker = logs.path().join("kill-marker");
    let adapter = faulty(&format!(
        "--fault hang --at 1 --once {}",
        util::quoted(&marker)
    ));
    let mut harness = bin()
        .arg("run")
        .arg("--contract")
        .arg(util::repo().join("contract"))
        .arg("--logs")
        .arg(logs.path())
        .args([
            "--backend",
            "exec",
            "--adapter",
            &adapter,
            "--adapter-timeout-ms",
            "60000",
        ])
        .env("CI", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded wait (30 s on a busy machine) until the adapter has started hanging.
    let mut adapters = Vec::new();
    for _ in 0..3000 {
        adapters = processes_mentioning(&marker);
        if marker.exists() && !adapters.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!adapters.is_empty(), "the adapter never started");
    harness.kill().unwrap();
    harness.wait().unwrap();
    for _ in 0..500 {
        if processes_mentioning(&marker).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        processes_mentioning(&marker).is_empty(),
        "the adapter outlived the SIGKILLed harness"
    );
}

#[test]
fn throttlekit_py_passes_every_rate_and_lease_suite() {
    let Some(python) = util::throttlekit_python() else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let adapter = format!(
        "{} {}",
        util::quoted(&python),
        util::quoted(&util::repo().join("adapters/python/throttlekit_py.py"))
    );
    let out = exec_run(&adapter, logs.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = latest_summary(logs.path());
    assert_eq!(summary["counts"]["failed"], 0);
    for (name, reason) in trials_with(&summary, "skipped") {
        assert!(
            name.starts_with("tokenBudget::"),
            "{name} skipped: {reason}"
        );
        assert!(reason.contains("ServiceBackend.debit"), "{name}: {reason}");
    }
    assert!(!trials_with(&summary, "passed").is_empty());
}

#[test]
fn node_contract_lua_passes_and_a_broken_script_fails_its_suites() {
    if util::node().is_none() {
        return;
    }
    let adapter = |scripts: &Path| {
        format!(
            "node {} --scripts {}",
            util::quoted(&util::repo().join("adapters/node/contract_lua.mjs")),
            util::quoted(scripts)
        )
    };
    let logs = tempfile::tempdir().unwrap();
    let out = exec_run(
        &adapter(&util::repo().join("contract/scripts")),
        logs.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(latest_summary(logs.path())["counts"]["failed"], 0);

    // The same adapter on scripts whose fixedWindow allows one unit too many.
    let broken = ContractCopy::new();
    broken.edit_script("fixedWindow.check.lua", |lua| {
        let edited = lua.replace("<= limit", "<= limit + 1");
        assert_ne!(
            edited, lua,
            "the fixedWindow script has no `<= limit` to break"
        );
        edited
    });
    let logs = tempfile::tempdir().unwrap();
    let out = exec_run(&adapter(&broken.path().join("scripts")), logs.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = trials_with(&latest_summary(logs.path()), "failed");
    assert!(!failed.is_empty());
    for (name, message) in &failed {
        assert!(
            name.starts_with("rateLimit::fixedWindow"),
            "{name}: {message}"
        );
        assert!(message.contains("allowed"), "{name}: {message}");
    }
}

/// Without a Redis the adapter would decline its strategies and their suites only skip: where
/// nothing may skip (`TK_CONFORM_REQUIRE_ALL=1`, as in CI) the run refuses to start instead.
#[test]
fn no_redis_for_the_adapter_is_an_error_where_nothing_may_skip() {
    let logs = tempfile::tempdir().unwrap();
    let no_redis = ["--redis-server", "/nonexistent/redis-server"];
    let mut strict = bin();
    strict
        .arg("run")
        .arg("--contract")
        .arg(util::repo().join("contract"))
        .arg("--logs")
        .arg(logs.path())
        .args(["--backend", "exec", "--adapter", &faulty("")])
        .args(no_redis)
        .env("TK_CONFORM_REQUIRE_ALL", "1")
        .env_remove("TK_CONFORM_REDIS_URL")
        .stdin(Stdio::null());
    let out = strict.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no Redis for the exec adapter") && text(&out).contains("REQUIRE_ALL"),
        "{}",
        text(&out)
    );
    // Elsewhere the run goes on, and the run log says the adapter had no Redis.
    let mut lenient = bin();
    lenient
        .arg("run")
        .arg("--contract")
        .arg(util::repo().join("contract"))
        .arg("--logs")
        .arg(logs.path())
        .args(["--backend", "exec", "--adapter", &faulty("")])
        .args(no_redis)
        .env("TK_CONFORM_REQUIRE_ALL", "0")
        .env_remove("TK_CONFORM_REDIS_URL")
        .stdin(Stdio::null());
    let out = lenient.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = std::fs::read_to_string(logs.path().join("latest/run.log")).unwrap();
    assert!(log.contains("no Redis for the adapter"), "{log}");
}

/// An adapter that floods stderr (50 MB before it even says hello) cannot fill the disk: the
/// log stops at its cap with a note, and the adapter, whose pipe is still drained, is judged.
#[test]
fn an_adapter_flooding_stderr_is_capped_with_a_note() {
    let logs = tempfile::tempdir().unwrap();
    let adapter = format!(
        "sh -c {}",
        shell_words::quote(&format!(
            "head -c 50000000 /dev/zero >&2; exec {}",
            faulty("")
        ))
    );
    let out = exec_run(&adapter, logs.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = logs.path().join("latest/adapter.stderr.log");
    let size = std::fs::metadata(&log).unwrap().len();
    let cap = tk_conform::backend::exec::process::MAX_STDERR_LOG_BYTES;
    assert!(size > cap && size < cap + 1024, "{size} bytes");
    let bytes = std::fs::read(&log).unwrap();
    let tail = String::from_utf8_lossy(&bytes[bytes.len() - 300..]);
    assert!(tail.contains("reached its cap of 16 MiB"), "{tail}");
}

/// Live processes whose command line is exactly `cmdline` (zombies are dead).
fn processes_running(cmdline: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            String::from_utf8_lossy(&raw).replace('\0', " ").trim() == cmdline
                && !stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .collect()
}

#[test]
fn an_adapters_setsid_grandchild_dies_with_the_run() {
    // `setsid -f` forks a sleeper into a session of its own and its parent exits: it is in
    // neither the adapter's process group nor its parent chain.
    for interrupt in [false, true] {
        let logs = tempfile::tempdir().unwrap();
        let marker = logs.path().join("marker");
        let sleeper = format!(
            "sleep 86{}.{}",
            std::process::id() % 10_000,
            interrupt as u8
        );
        let fault = if interrupt {
            format!("--fault hang --at 1 --once {}", util::quoted(&marker))
        } else {
            String::new()
        };
        let adapter = format!(
            "sh -c {}",
            shell_words::quote(&format!("setsid -f {sleeper}; exec {}", faulty(&fault)))
        );
        let mut harness = bin()
            .arg("run")
            .arg("--contract")
            .arg(util::repo().join("contract"))
            .arg("--logs")
            .arg(logs.path())
            .args(["--backend", "exec", "--adapter", &adapter])
            .args(["--adapter-timeout-ms", "60000"])
            .env("CI", "1")
            .env_remove("TK_CONFORM_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = false;
        for _ in 0..3000 {
            seen |= !processes_running(&sleeper).is_empty();
            if seen && (!interrupt || marker.exists()) {
                break;
            }
            if !interrupt && harness.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if interrupt {
            assert!(seen && marker.exists(), "the adapter never started hanging");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(harness.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            )
            .unwrap();
        }
        let status = harness.wait().unwrap();
        assert_eq!(status.code(), Some(if interrupt { 130 } else { 0 }));
        for _ in 0..500 {
            if processes_running(&sleeper).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = processes_running(&sleeper);
        for pid in &left {
            // Do not leave it running whatever the outcome.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            left.is_empty(),
            "`{sleeper}` (setsid by the adapter) outlived the run (interrupted: {interrupt})"
        );
    }
}
