//! `tk-conform bench replay` runs end to end (a smoke test: speed is reported, never asserted).

use crate::util::{ContractCopy, bin, have_redis, text};

#[test]
fn bench_replay_reports_rates_and_zero_divergences() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    let out = bin()
        .args(["bench", "replay", "--calls", "2000", "--connections", "4"])
        .args([
            "--pipeline",
            "8",
            "--rounds",
            "1",
            "--no-redis-benchmark",
            "--contract",
        ])
        .arg(contract.path())
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("c=")).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        let divergences = row.split_whitespace().last().unwrap();
        assert_eq!(divergences, "0", "{stdout}");
    }
}
