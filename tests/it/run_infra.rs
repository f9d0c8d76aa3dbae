//! Provisioning and process ownership, end to end: unreachable servers, no server at all, the
//! harness killed or interrupted mid-run, and two runs sharing one external Redis.

use crate::util;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{
    ContractCopy, UserRedis, bin, have_redis, latest_summary, spawn_run, stderr_of, wait_bounded,
};

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
    let user = UserRedis::start();
    let contract = ContractCopy::new();
    let logs_a = tempfile::tempdir().unwrap();
    let logs_b = tempfile::tempdir().unwrap();
    let args = ["--repeat", "20"];
    let mut a = user.spawn_run(contract.path(), logs_a.path(), &args);
    let mut b = user.spawn_run(contract.path(), logs_b.path(), &args);
    let status_a = wait_bounded(&mut a, Duration::from_secs(120));
    let status_b = wait_bounded(&mut b, Duration::from_secs(120));
    assert_eq!(status_a.code(), Some(0), "{}", stderr_of(&mut a));
    assert_eq!(status_b.code(), Some(0), "{}", stderr_of(&mut b));
    for logs in [logs_a.path(), logs_b.path()] {
        assert_eq!(latest_summary(logs)["counts"]["failed"], 0);
    }
    // Each run deleted its own keys and only those.
    user.assert_only_the_users_keys("two runs");
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

/// The check the `--redis-url` tests end with fails on a key left behind and on a user's key
/// changed, naming what it saw.
#[test]
fn the_users_redis_check_fails_on_a_key_left_behind_or_changed() {
    if !have_redis() {
        return;
    }
    let failure = |user: &UserRedis| {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            user.assert_only_the_users_keys("broken run")
        }))
        .expect_err("the check passed");
        caught.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let user = UserRedis::start();
    user.assert_only_the_users_keys("untouched");
    let () = user.cmd(&["SET", "tk-conform:run:left", "1"]);
    let message = failure(&user);
    assert!(
        message.contains("broken run: keys left behind") && message.contains("tk-conform:run:left"),
        "{message}"
    );
    let _: i64 = user.cmd(&["DEL", "tk-conform:run:left"]);
    let () = user.cmd(&["SET", "federated#reserve", "overwritten"]);
    let message = failure(&user);
    assert!(message.contains("overwritten"), "{message}");
}

#[test]
fn exec_and_service_runs_on_a_redis_url_leave_no_key_behind() {
    if !have_redis() {
        return;
    }
    let user = UserRedis::start();
    let contract = util::repo().join("contract");
    let node = format!(
        "node {}",
        util::repo()
            .join("adapters/node/contract_lua.mjs")
            .display()
    );
    for (what, extra) in [
        (
            "exec",
            vec!["--backend", "exec", "--adapter", node.as_str()],
        ),
        (
            "service --server-store redis",
            vec!["--backend", "service", "--server-store", "redis"],
        ),
    ] {
        let logs = tempfile::tempdir().unwrap();
        let mut child = user.spawn_run(&contract, logs.path(), &extra);
        let status = wait_bounded(&mut child, Duration::from_secs(300));
        assert_eq!(status.code(), Some(0), "{what}: {}", stderr_of(&mut child));
        let summary = latest_summary(logs.path());
        assert_eq!(summary["counts"]["failed"], 0, "{what}");
        if what.starts_with("service") {
            // The one-oracle trial ran: the direct door used the server's key prefix.
            let oracle = summary["trials"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"].as_str().unwrap().contains("oracle"))
                .cloned()
                .unwrap();
            assert_eq!(oracle["outcome"], "passed", "{oracle}");
        }
        user.assert_only_the_users_keys(what);
    }
}

#[test]
fn an_interrupted_run_on_a_redis_url_deletes_its_keys() {
    if !have_redis() {
        return;
    }
    let user = UserRedis::start();
    let contract = ContractCopy::new();
    let logs = tempfile::tempdir().unwrap();
    let mut child = user.spawn_run(contract.path(), logs.path(), &["--repeat", "100000"]);
    // Mid-run: the replays have written keys.
    let started = Instant::now();
    loop {
        let n: Vec<String> = user.cmd(&["KEYS", "tk-conform:*"]);
        if n.len() > 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no key written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    user.assert_only_the_users_keys("after SIGINT");
}

/// `.tmp-*` files anywhere under `dir` (a write cut short).
fn stray_temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                found.push(e.path());
            }
        }
    }
    found
}

#[test]
fn sigint_and_sigterm_leave_no_temp_folder_no_temp_file_and_every_finished_trial() {
    if !have_redis() {
        return;
    }
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let logs = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        // The reference server on a Redis of the run's own: both have temp folders.
        let mut child = bin()
            .arg("run")
            .arg("--contract")
            .arg(util::repo().join("contract"))
            .arg("--logs")
            .arg(logs.path())
            .args(["--backend", "service", "--server-store", "redis"])
            .env("CI", "1")
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Until some trials have finished and both folders exist.
        let started = Instant::now();
        loop {
            let folders = std::fs::read_dir(tmp.path()).unwrap().count();
            let finished = std::fs::read_to_string(logs.path().join("latest/run.log"))
                .map(|l| l.matches(" trial ").count())
                .unwrap_or(0);
            if folders >= 2 && finished >= 2 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{signal}: the run never got going ({folders} folders, {finished} trials)"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(30));
        assert_eq!(
            status.code(),
            Some(130),
            "{signal}: {}",
            stderr_of(&mut child)
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{signal}: temp folders left: {left:?}");
        let run = logs.path().join("latest");
        assert_eq!(stray_temp_files(&run), Vec::<std::path::PathBuf>::new());
        let summary = latest_summary(logs.path());
        assert_eq!(summary["status"], "interrupted", "{signal}");
        // Every trial run.log says finished is in the summary, and nothing else.
        let log = std::fs::read_to_string(run.join("run.log")).unwrap();
        let mut logged: Vec<String> = log
            .lines()
            .filter_map(|l| l.split(" trial ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap().to_owned())
            .collect();
        let mut recorded: Vec<String> = summary["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        logged.sort();
        recorded.sort();
        assert!(!recorded.is_empty(), "{signal}");
        assert_eq!(logged, recorded, "{signal}");
    }
}

#[test]
fn a_summary_left_by_sigkill_names_the_dead_process() {
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
    let _ = redis_pid_from_log(logs.path());
    let pid = child.id();
    let summary: tk_conform::report::Summary =
        serde_json::from_value(latest_summary(logs.path())).unwrap();
    assert_eq!(summary.pid, pid);
    assert_eq!(
        summary.pid_start_ticks,
        tk_conform::report::process_start_ticks(pid)
    );
    assert!(summary.still_running(), "the run is alive");
    child.kill().unwrap();
    let _ = child.wait();
    let summary: tk_conform::report::Summary =
        serde_json::from_value(latest_summary(logs.path())).unwrap();
    assert_eq!(summary.status, tk_conform::report::RunStatus::Running);
    assert!(
        !summary.still_running(),
        "a SIGKILLed run's summary must read as incomplete"
    );
}
