//! Secrets stay secret: a Redis URL's password never reaches stderr, stdout or any file of a
//! run folder (run.log, summary.json, junit.xml, a battle's result.json, histories, worker
//! specs), and `--help` never shows the value of a secret's environment variable.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ContractCopy, bin, have_redis, latest_summary, text};
use tk_conform::infra::{OwnedChild, find_redis_binary, free_loopback_port};

const PASSWORD: &str = "Sup3r-s3cret-pw";

/// A redis-server that wants `PASSWORD`, owned by the test (killed on drop).
struct GuardedRedis {
    _child: OwnedChild,
    _dir: tempfile::TempDir,
    port: u16,
}

impl GuardedRedis {
    fn start() -> GuardedRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_loopback_port().unwrap();
        let mut command = Command::new(find_redis_binary().unwrap());
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                PASSWORD,
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = OwnedChild::spawn("redis-server", command).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        GuardedRedis {
            _child: child,
            _dir: dir,
            port,
        }
    }

    fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }
}

/// Every file under `dir` that holds the password, as (path, first line holding it).
fn files_holding_the_password(dir: &Path) -> Vec<(String, String)> {
    files_under(dir)
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let line = text.lines().find(|l| l.contains(PASSWORD))?.to_owned();
            Some((path, line))
        })
        .collect()
}

fn assert_no_password(what: &str, out: &Output, logs: &Path) {
    let all = text(out);
    assert!(
        !all.contains(PASSWORD),
        "{what}: the password was printed:\n{all}"
    );
    let files = files_holding_the_password(logs);
    assert!(
        files.is_empty(),
        "{what}: the password was written: {files:#?}"
    );
}

fn run_on(url: &str, contract: &Path, logs: &Path) -> Output {
    bin()
        .args(["run", "--backend", "redis", "--redis-url", url])
        .arg("--contract")
        .arg(contract)
        .arg("--logs")
        .arg(logs)
        .env("CI", "1")
        .output()
        .unwrap()
}

#[test]
fn a_run_never_prints_or_writes_the_redis_password() {
    if !have_redis() {
        return;
    }
    let redis = GuardedRedis::start();
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let out = run_on(&redis.url(), contract.path(), logs.path());
    // The password is used (the run passes against a server that requires it) but never shown.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_password("run", &out, logs.path());
    let summary = latest_summary(logs.path());
    let server = summary["backend"]["server"].as_str().unwrap();
    assert!(server.contains("redis://:***@127.0.0.1"), "{server}");

    // An error that quotes the URL: a port nobody listens on.
    let dead = format!(
        "redis://:{PASSWORD}@127.0.0.1:{}",
        free_loopback_port().unwrap()
    );
    let logs = tempfile::tempdir().unwrap();
    let out = run_on(&dead, contract.path(), logs.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":***@"),
        "{}",
        text(&out)
    );
    assert_no_password("unreachable", &out, logs.path());
}

#[test]
fn a_battle_never_writes_the_redis_password() {
    if !have_redis() {
        return;
    }
    let redis = GuardedRedis::start();
    let logs = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "battle",
            "cap-direct-fixed-window",
            "--redis-url",
            &redis.url(),
        ])
        .arg("--logs")
        .arg(logs.path())
        .current_dir(crate::util::repo())
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_password("battle", &out, logs.path());
    // The workers did reach the guarded Redis: their spec files hold the redacted URL only.
    let run = std::fs::canonicalize(logs.path().join("latest")).unwrap();
    let specs: Vec<String> = files_under(&run)
        .into_iter()
        .filter(|p| p.contains("/workers/") && p.ends_with(".json"))
        .collect();
    assert!(!specs.is_empty(), "no worker specs under {}", run.display());
    for spec in specs {
        let text = std::fs::read_to_string(&spec).unwrap();
        assert!(text.contains(":***@127.0.0.1"), "{spec}: {text}");
    }
}

/// Every file under `dir` (links not followed: `latest` points inside it).
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_symlink() {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let commands: &[&[&str]] = &[
        &["run"],
        &["serve"],
        &["battle"],
        &["bench", "replay"],
        &["bench", "load"],
        &["bench", "server"],
        &["contract", "verify"],
        &["contract", "sync"],
    ];
    for command in commands {
        let out = bin()
            .args(*command)
            .arg("--help")
            .env("TK_FLEET_SECRET", "fleet-Sup3r-s3cret")
            .env("TK_MONITOR_SECRET", "monitor-Sup3r-s3cret")
            .env("TK_CONFORM_REDIS_URL", format!("redis://:{PASSWORD}@h:1"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{command:?}: {}", text(&out));
        let all = text(&out);
        assert!(
            !all.contains("Sup3r-s3cret"),
            "{command:?} shows a secret:\n{all}"
        );
    }
}
