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
            .contains("reclaimed within TTL + 1 s"),
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
