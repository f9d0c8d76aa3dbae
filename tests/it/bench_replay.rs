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

/// redis-benchmark is an owned child with a time bound, and `-r` comes from `--keys`: a
/// redis-benchmark that hangs is killed (the whole process gone) and the bench exits 2.
#[test]
fn redis_benchmark_is_time_bounded_and_takes_its_keys_from_the_flag() {
    if !have_redis() {
        return;
    }
    let fake = tempfile::tempdir().unwrap();
    let argv_file = fake.path().join("argv");
    let pid_file = fake.path().join("pid");
    let script = fake.path().join("redis-benchmark");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\necho $$ > {}\nexec sleep 600\n",
            argv_file.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let contract = ContractCopy::new();
    let started = std::time::Instant::now();
    let out = bin()
        .args([
            "bench",
            "replay",
            "--calls",
            "500",
            "--connections",
            "2",
            "--rounds",
            "1",
        ])
        .args([
            "--keys",
            "77",
            "--redis-benchmark-timeout",
            "1",
            "--contract",
        ])
        .arg(contract.path())
        .env("PATH", path)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redis-benchmark did not finish within 1 s: killed"),
        "{stderr}"
    );
    let argv = std::fs::read_to_string(&argv_file).unwrap();
    assert!(argv.contains("-r 77 "), "{argv}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the fake redis-benchmark still runs: {stat}"
    );
}
