//! `tk-conform matrix`: every given server binary judged by the contract replay and the
//! direct-door cap battles, into one compatibility table. A server that breaks the scripts
//! (EVALSHA renamed away) must show as not compatible, with the rows that differ.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{have_redis, repo};

const EXE: &str = env!("CARGO_BIN_EXE_tk-conform");

fn matrix(servers: &[&Path], tmp: &Path) -> (Output, String) {
    let out_file = tmp.join("compatibility.md");
    let mut cmd = Command::new(EXE);
    cmd.current_dir(repo()).arg("matrix");
    for s in servers {
        cmd.arg("--redis-server").arg(s);
    }
    let out = cmd
        .arg("--out")
        .arg(&out_file)
        .arg("--logs")
        .arg(tmp.join("logs"))
        .output()
        .unwrap();
    let md = std::fs::read_to_string(&out_file).unwrap_or_default();
    (out, md)
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_server_that_breaks_the_scripts_is_not_compatible_and_the_rows_that_differ_are_named() {
    if !have_redis() {
        return;
    }
    let _one = crate::battle::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let real = tk_conform::infra::find_redis_binary().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The real server with EVALSHA renamed away: the same version, but the scripts cannot run.
    let broken = script(
        tmp.path(),
        "no-evalsha-server",
        &format!(
            "exec {} \"$@\" --rename-command EVALSHA \"\"",
            real.display()
        ),
    );
    let (out, md) = matrix(&[&real, &broken], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}\n{md}");
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| redis ") || l.starts_with("| valkey "))
        .collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(rows[0].ends_with("| compatible |"), "{md}");
    assert!(
        rows[1].contains("**not compatible** (replay exit 1, battle exit 1)"),
        "{md}"
    );
    assert!(rows[1].contains("no-evalsha-server"), "{md}");
    let differs = md
        .split("## What differs between versions")
        .nth(1)
        .unwrap()
        .split("## Every suite")
        .next()
        .unwrap();
    // A replay row and a battle row, each with the broken side's reason.
    assert!(differs.contains("| `rateLimit::gcra-"), "{differs}");
    assert!(
        differs.contains("| `battle::cap-direct-gcra` | pass | **fail**: cap#0"),
        "{differs}"
    );
    assert!(
        md.contains("regenerate with:\n\n```\ntk-conform matrix --redis-server "),
        "{md}"
    );
    assert!(stdout.contains("NOT compatible"), "{stdout}");
    // The combined report pages sit beside the runs.
    let logs = tmp.path().join("logs");
    let root = std::fs::read_dir(&logs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(root.join("report/index.html").is_file());
    assert!(root.join("report/matrix.json").is_file());
}

#[test]
fn matrix_refuses_bad_server_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let expect_2 = |servers: &[&Path], needle: &str| {
        let (out, _) = matrix(servers, tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    };
    expect_2(&[&tmp.path().join("nope")], "nope: no such file");
    let plain = tmp.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    expect_2(&[&plain], "plain: not an executable file");
    let t = script(tmp.path(), "t", "exit 0");
    expect_2(&[&t, &t], "is given twice");
    // Something that runs but is no Redis: the runs cannot start it (exit 2, and why).
    let fake = script(tmp.path(), "fake-server", "echo not redis; exit 3");
    let (out, md) = matrix(&[&fake], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay could not run"), "{stderr}");
    assert!(
        md.contains("**not compatible** (replay exit 2, battle exit 2)"),
        "{md}"
    );
    // No server at all is a usage error.
    let out = Command::new(EXE).arg("matrix").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
