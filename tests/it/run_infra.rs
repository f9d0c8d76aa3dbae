//! Provisioning and process ownership, end to end: unreachable servers, no server at all, the
//! harness killed or interrupted mid-run, and two runs sharing one external Redis.

use crate::util;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ContractCopy, bin, have_redis, latest_summary};

/// Waits for `child` to exit, killing it (and failing) if it takes longer than `limit`: a hang
/// is a defect, and the test must never hang itself.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tk-conform did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_run(contract: &Path, logs: &Path, extra: &[&str]) -> Child {
    bin()
        .arg("run")
        .arg("--contract")
        .arg(contract)
        .arg("--logs")
        .arg(logs)
        .args(extra)
        .env("CI", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
    text
}

/// A process is gone when it no longer exists or is a zombie waiting for its (new) parent.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The redis-server pid the run wrote into run.log, once it is there.
fn redis_pid_from_log(logs: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(log) = std::fs::read_to_string(logs.join("latest/run.log"))
            && let Some(line) = log
                .lines()
                .find(|l| l.contains("redis: ") && l.contains("pid "))
        {
            let pid = line.rsplit("pid ").next().unwrap().trim_end_matches(')');
            return pid.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no redis pid in {}", logs.join("latest/run.log").display());
}

#[test]
fn an_unreachable_redis_url_is_exit_2_with_one_line() {
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    // A port nobody listens on: refused at once.
    let port = tk_conform::infra::free_loopback_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let mut child = spawn_run(contract.path(), logs.path(), &["--redis-url", &url]);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&url), "{stderr}");
    assert_eq!(latest_summary(logs.path())["status"], "error");
}

#[test]
fn a_redis_url_that_never_answers_is_exit_2() {
    // Accepts the TCP connection (the kernel does, from the backlog) but never replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let mut child = spawn_run(contract.path(), logs.path(), &["--redis-url", &url]);
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    drop(silent);
}

#[test]
fn no_redis_anywhere_names_the_three_ways() {
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("run")
        .arg("--contract")
        .arg(contract.path())
        .arg("--logs")
        .arg(logs.path())
        .env("PATH", empty_path.path())
        .env(
            "DOCKER_HOST",
            "unix:///nonexistent/tk-conform-test/docker.sock",
        )
        .env_remove("TK_CONFORM_REDIS_URL")
        .env("CI", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for way in ["--redis-url", "redis-server", "Docker"] {
        assert!(stderr.contains(way), "missing {way}: {stderr}");
    }
}

#[test]
fn sigkill_of_the_harness_leaves_no_redis_server() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let mut child = spawn_run(
        contract.path(),
        logs.path(),
        &["--repeat", "100000", "--", "--test-threads", "1"],
    );
    let redis = redis_pid_from_log(logs.path());
    assert!(!gone(redis), "redis-server {redis} is not running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(
        wait_gone(redis),
        "redis-server {redis} survived the harness"
    );
    // The summary on disk is still valid JSON (status `running`: nobody could say otherwise).
    assert_eq!(latest_summary(logs.path())["status"], "running");
}

#[test]
fn ctrl_c_leaves_an_interrupted_summary_and_no_redis_server() {
    if !have_redis() {
        return;
    }
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let mut child = spawn_run(
        contract.path(),
        logs.path(),
        &["--repeat", "100000", "--", "--test-threads", "1"],
    );
    let redis = redis_pid_from_log(logs.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    assert!(wait_gone(redis), "redis-server {redis} survived Ctrl-C");
    let summary = latest_summary(logs.path());
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["exitCode"], 130);
}

#[test]
fn two_runs_share_one_redis_url_without_disturbing_each_other_or_its_data() {
    if !have_redis() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = rt
        .block_on(tk_conform::infra::RedisInstance::provision(
            &tk_conform::infra::RedisOptions::default(),
        ))
        .unwrap();
    let url = redis.url().to_owned();
    let mut con = rt.block_on(tk_conform::infra::connect(&url)).unwrap();
    let _: () = rt
        .block_on(
            redis::cmd("SET")
                .arg("someone-else:data")
                .arg("precious")
                .query_async(&mut con),
        )
        .unwrap();

    let contract = ContractCopy::new();
    let logs_a = tempfile::tempdir().unwrap();
    let logs_b = tempfile::tempdir().unwrap();
    let args = ["--redis-url", url.as_str(), "--repeat", "20"];
    let mut a = spawn_run(contract.path(), logs_a.path(), &args);
    let mut b = spawn_run(contract.path(), logs_b.path(), &args);
    let status_a = wait_bounded(&mut a, Duration::from_secs(120));
    let status_b = wait_bounded(&mut b, Duration::from_secs(120));
    assert_eq!(status_a.code(), Some(0), "{}", stderr_of(&mut a));
    assert_eq!(status_b.code(), Some(0), "{}", stderr_of(&mut b));
    for logs in [logs_a.path(), logs_b.path()] {
        assert_eq!(latest_summary(logs)["counts"]["failed"], 0);
    }
    let kept: String = rt
        .block_on(
            redis::cmd("GET")
                .arg("someone-else:data")
                .query_async(&mut con),
        )
        .unwrap();
    assert_eq!(kept, "precious");
    // Each run deleted its own keys and only those.
    let keys: Vec<String> = rt
        .block_on(redis::cmd("KEYS").arg("*").query_async(&mut con))
        .unwrap();
    assert_eq!(keys, ["someone-else:data"]);
}

#[test]
fn redis_restart_keeps_the_url_and_scripts_fall_back_to_eval() {
    if !have_redis() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut redis = tk_conform::infra::RedisInstance::provision(
            &tk_conform::infra::RedisOptions::default(),
        )
        .await
        .unwrap();
        let scripts =
            tk_conform::redis_scripts::ScriptSet::from_contract_dir(&util::repo().join("contract"))
                .unwrap();
        let strategy: tk_conform::model::Strategy = serde_json::from_str(
            r#"{"kind":"fixedWindow","options":{"limit":3,"windowMs":60000}}"#,
        )
        .unwrap();
        let mut con = tk_conform::infra::connect(redis.url()).await.unwrap();
        let first = scripts
            .check(&mut con, "k", &strategy, util::EPOCH, 1.0)
            .await
            .unwrap();
        assert_eq!(first.remaining, 2);
        let old_pid = redis.pid().unwrap();
        redis.restart().await.unwrap();
        assert_ne!(redis.pid().unwrap(), old_pid);
        assert!(wait_gone(old_pid));
        // A fresh server: empty data and an empty script cache, so EVALSHA answers NOSCRIPT.
        let mut con = tk_conform::infra::connect(redis.url()).await.unwrap();
        let again = scripts
            .check(&mut con, "k", &strategy, util::EPOCH, 1.0)
            .await
            .unwrap();
        assert_eq!(again.remaining, 2);
        let pid = redis.pid().unwrap();
        drop(redis);
        assert!(wait_gone(pid));
    });
}
