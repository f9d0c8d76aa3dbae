//! `tk-conform run --backend service` end to end: the reference server passes (exit 0), a faulty
//! server fails the matching trial (exit 1, named in summary.json), `--list` shows the suites.

use std::process::Command;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tk-conform")
}

fn run(logs: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(exe())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--backend", "service", "--logs"])
        .arg(logs)
        .args(extra)
        .output()
        .unwrap();
    let summary =
        std::fs::read_to_string(logs.join("latest").join("summary.json")).unwrap_or_default();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&summary).unwrap_or_default(),
        text,
    )
}

fn trial<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["trials"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no trial {name} in {summary}"))
}

#[test]
fn the_reference_server_passes_and_vector_suites_are_skipped_with_a_reason() {
    let logs = tempfile::tempdir().unwrap();
    let (code, summary, text) = run(logs.path(), &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        trial(&summary, "service::late_release_frees_nothing")["outcome"],
        "passed"
    );
    let oracle = trial(&summary, "service::one_oracle_shared_budget");
    assert_eq!(oracle["outcome"], "skipped");
    assert!(
        oracle["message"]
            .as_str()
            .unwrap()
            .contains("--server-store redis")
    );
    let skipped_vectors = summary["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "vectors")
        .all(|t| {
            t["outcome"] == "skipped" && t["message"].as_str().unwrap().contains("explicit clock")
        });
    assert!(skipped_vectors, "{summary}");
    let malformed = trial(&summary, "service::malformed_input");
    assert_eq!(malformed["outcome"], "informational", "{summary}");
}

/// A run whose only finding is informational (which reading of malformed input the server
/// takes) exits 0; summary.json lists the finding and junit.xml shows it beside a passed case.
#[test]
fn an_informational_finding_is_listed_and_exits_zero() {
    let logs = tempfile::tempdir().unwrap();
    let template = format!(
        "{} serve --compat throttlekit --config {{config}} --host 127.0.0.1 --port {{port}}",
        exe()
    );
    let (code, summary, text) = run(
        logs.path(),
        &["--server-cmd", &template, "--", "service::malformed_input"],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(summary["counts"]["informational"], 1, "{summary}");
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");
    let finding = &summary["informational"][0];
    assert_eq!(finding["trial"], "service::malformed_input", "{summary}");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("Check lenient cost=-1 (cold key): served as 1"),
        "{summary}"
    );
    let junit = std::fs::read_to_string(logs.path().join("latest/junit.xml")).unwrap();
    assert!(
        junit.contains("informational: suite malformed_input:") && junit.contains("failures=\"0\""),
        "{junit}"
    );
    assert!(
        text.contains("informational: suite malformed_input"),
        "{text}"
    );
    assert!(
        text.contains("0 failed, 0 skipped, 1 informational"),
        "{text}"
    );
}

#[test]
fn a_faulty_server_fails_the_matching_trial_with_exit_code_1() {
    let logs = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} serve --config {{config}} --port {{port}} --lease-ttl-ms {{lease_ttl_ms}} --fault never-reclaim",
        exe()
    );
    let (code, summary, text) = run(
        logs.path(),
        &[
            "--server-cmd",
            &cmd,
            "--",
            "service::abandoned_hold_reclaimed",
        ],
    );
    assert_eq!(code, 1, "{text}");
    let failed = trial(&summary, "service::abandoned_hold_reclaimed");
    assert_eq!(failed["outcome"], "failed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("reclaimed within TTL + one sweep"),
        "{failed}"
    );
}

#[test]
fn list_shows_the_service_suites() {
    let out = Command::new(exe())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--backend", "service", "--", "--list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("service::heartbeat_keeps_hold"), "{text}");
}

/// `--trial-timeout` bounds the service suites too: heartbeat_keeps_hold waits about 3 s.
#[test]
fn service_suites_honour_the_trial_timeout() {
    let logs = tempfile::tempdir().unwrap();
    let (code, summary, text) = run(
        logs.path(),
        &[
            "--trial-timeout",
            "1",
            "--",
            "service::heartbeat_keeps_hold",
        ],
    );
    assert_eq!(code, 1, "{text}");
    let hold = trial(&summary, "service::heartbeat_keeps_hold");
    assert_eq!(hold["outcome"], "failed", "{hold}");
    let message = hold["message"].as_str().unwrap();
    assert!(
        message.contains("heartbeat_keeps_hold did not finish within 1 s"),
        "{message}"
    );
}
