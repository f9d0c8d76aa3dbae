//! `tk-conform battle` end to end: real Redis, real server fleets, real worker processes, real
//! signals. A green subset of the suite, then every scenario against a faulty target (it must
//! fail, with the numbers that show why), then the harness itself SIGKILLed mid-battle (no
//! process of the run may survive).
//!
//! Battles run one at a time (a shared lock): they are timing-bound and the machine is small.

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{have_redis, repo};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const EXE: &str = env!("CARGO_BIN_EXE_tk-conform");

/// The reference server on a per-instance memory store: a fleet that shares nothing.
const UNSHARED_FLEET: &str = "{exe} serve --config {policy} --host 127.0.0.1 --port {port} \
                              --contract {contract} --lease-ttl-ms {lease_ttl_ms}";

fn faulty_server(fault: &str) -> String {
    format!(
        "{{exe}} serve --config {{policy}} --host 127.0.0.1 --port {{port}} --redis {{redis}} \
         --contract {{contract}} --lease-ttl-ms {{lease_ttl_ms}} --fault {fault}"
    )
}

struct Battle {
    output: Output,
    logs: tempfile::TempDir,
}

impl Battle {
    fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn result(&self, scenario: &str) -> Value {
        let path = self
            .logs
            .path()
            .join("latest/scenarios")
            .join(scenario)
            .join("result.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.describe()));
        serde_json::from_str(&text).unwrap()
    }

    /// The judgement of `assertion` (e.g. `cap#0`) in `scenario`.
    fn judgement(&self, scenario: &str, assertion: &str) -> Value {
        let result = self.result(scenario);
        result["judgements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["assertion"] == assertion)
            .cloned()
            .unwrap_or_else(|| panic!("no {assertion} in {result:#}"))
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status.code(),
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

fn battle(scenarios: &[&str], extra: &[&str]) -> Battle {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let logs = tempfile::tempdir().unwrap();
    let output = Command::new(EXE)
        .arg("battle")
        .args(scenarios)
        .arg("--scenarios-dir")
        .arg(repo().join("scenarios"))
        .arg("--contract")
        .arg(repo().join("contract"))
        .arg("--logs")
        .arg(logs.path())
        .args(["--seed", "7"])
        .args(extra)
        .env("CI", "1")
        .output()
        .unwrap();
    Battle { output, logs }
}

/// Runs one scenario against a faulty target and returns the failed judgement's numbers.
fn must_fail(scenario: &str, extra: &[&str], assertion: &str) -> (Battle, Value) {
    let b = battle(&[scenario], extra);
    assert_eq!(b.code(), 1, "{scenario} should fail: {}", b.describe());
    let j = b.judgement(scenario, assertion);
    assert_eq!(j["verdict"], "fail", "{scenario} {assertion}: {j:#}");
    (b, j)
}

#[test]
fn list_names_every_scenario() {
    let out = Command::new(EXE)
        .args(["battle", "--list", "--scenarios-dir"])
        .arg(repo().join("scenarios"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "cap-direct-fixed-window",
        "crash-reclaim",
        "redis-restart",
        "pause",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn unknown_scenario_is_a_usage_error() {
    let out = Command::new(EXE)
        .args(["battle", "no-such-scenario", "--scenarios-dir"])
        .arg(repo().join("scenarios"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no scenario called `no-such-scenario`"),
        "{err}"
    );
}

#[test]
fn green_subset_against_the_reference_fleet() {
    if !have_redis() {
        return;
    }
    let names = [
        "cap-direct-fixed-window",
        "two-doors-one-oracle",
        "distributed-concurrency",
        "heartbeat",
    ];
    let b = battle(&names, &[]);
    assert_eq!(b.code(), 0, "{}", b.describe());
    assert!(
        b.stdout().contains("4/4 scenarios passed"),
        "{}",
        b.describe()
    );
    let cap = b.judgement("cap-direct-fixed-window", "cap#0");
    assert_eq!(cap["numbers"]["admitted"], 60);
    assert_eq!(cap["numbers"]["overshoot"], 0);
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(b.logs.path().join("latest/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["counts"]["passed"], 4);
    assert!(b.logs.path().join("latest/junit.xml").exists());
    let history = b
        .logs
        .path()
        .join("latest/scenarios/heartbeat/histories/holder-0.jsonl");
    assert!(
        std::fs::read_to_string(history)
            .unwrap()
            .contains("\"heartbeat\"")
    );
}

#[test]
fn non_atomic_lua_overshoots_the_direct_caps() {
    if !have_redis() {
        return;
    }
    for scenario in [
        "cap-direct-fixed-window",
        "cap-direct-sliding-log",
        "cap-direct-gcra",
    ] {
        let (_, j) = must_fail(scenario, &["--worker-fault", "non-atomic"], "cap#0");
        let n = &j["numbers"];
        assert!(n["overshoot"].as_u64().unwrap() > 0, "{scenario}: {j:#}");
        assert!(
            j["summary"].as_str().unwrap().contains("> limit 60"),
            "{scenario}: {j:#}"
        );
    }
}

#[test]
fn unshared_servers_overshoot_the_service_caps() {
    if !have_redis() {
        return;
    }
    for scenario in [
        "cap-service-fixed-window",
        "cap-service-gcra",
        "cap-service-sliding-log",
    ] {
        let (_, j) = must_fail(scenario, &["--server-cmd", UNSHARED_FLEET], "cap#0");
        // Three servers, each with its own 60: up to 126 of the 126 calls pass.
        assert!(
            j["numbers"]["admitted"].as_u64().unwrap() > 60,
            "{scenario}: {j:#}"
        );
    }
}

#[test]
fn a_private_prefix_splits_the_oracle() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail(
        "two-doors-one-oracle",
        &["--server-cmd", &faulty_server("private-prefix")],
        "cap#0",
    );
    // Each door gets the whole budget of 80 to itself.
    assert_eq!(j["numbers"]["admitted"], 160, "{j:#}");
    assert_eq!(j["numbers"]["overshoot"], 80, "{j:#}");
}

#[test]
fn a_spender_that_carries_credits_overshoots_its_windows() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail("fleet-lease", &["--worker-fault", "carry-credits"], "cap#0");
    assert!(
        j["numbers"]["staleDecisions"].as_u64().unwrap() > 0,
        "{j:#}"
    );
    assert!(j["numbers"]["overshoot"].as_u64().unwrap() > 0, "{j:#}");
}

#[test]
fn unshared_leases_overshoot_both_two_tier_bounds() {
    if !have_redis() {
        return;
    }
    for scenario in ["twotier-coupled", "twotier-uncoupled"] {
        let (_, j) = must_fail(scenario, &["--server-cmd", UNSHARED_FLEET], "cap#0");
        // Each server leases a whole window's limit of 20 from its own store.
        assert!(
            j["numbers"]["maxWindowAdmitted"].as_u64().unwrap() > 32,
            "{scenario}: {j:#}"
        );
    }
}

#[test]
fn over_granting_reserve_overshoots_the_fleet_lease() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail(
        "fleet-lease",
        &["--server-cmd", &faulty_server("over-grant-reserve")],
        "cap#0",
    );
    assert!(j["numbers"]["overshoot"].as_u64().unwrap() > 0, "{j:#}");
}

#[test]
fn unshared_budgets_overshoot_past_the_crossing_debit() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail(
        "fleet-budget",
        &["--server-cmd", UNSHARED_FLEET],
        "budget#0",
    );
    assert!(j["numbers"]["overshoot"].as_u64().unwrap() > 9, "{j:#}");
}

#[test]
fn unshared_slots_exceed_the_ceiling() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail(
        "distributed-concurrency",
        &["--server-cmd", UNSHARED_FLEET],
        "concurrency#0",
    );
    assert!(j["numbers"]["maxInFlight"].as_u64().unwrap() > 3, "{j:#}");
}

#[test]
fn a_server_that_never_reclaims_fails_crash_reclaim_and_pause() {
    if !have_redis() {
        return;
    }
    let never = faulty_server("never-reclaim");
    let (_, j) = must_fail("crash-reclaim", &["--server-cmd", &never], "reclaim#0");
    assert_eq!(j["numbers"]["grantedAfterFault"], 0, "{j:#}");
    let (b, j) = must_fail("pause", &["--server-cmd", &never], "reclaim#0");
    assert_eq!(j["numbers"]["grantedAfterFault"], 0, "{j:#}");
    // The woken holder still finds its lease live: it never lost the slot.
    let lost = b.judgement("pause", "lost-after-pause#1");
    assert_eq!(lost["verdict"], "fail", "{lost:#}");
    assert!(
        lost["summary"]
            .as_str()
            .unwrap()
            .contains("still found the lease live"),
        "{lost:#}"
    );
}

#[test]
fn a_server_that_ignores_heartbeats_loses_the_renewed_hold() {
    if !have_redis() {
        return;
    }
    let (b, renewed) = must_fail(
        "heartbeat",
        &["--server-cmd", &faulty_server("ignore-heartbeat")],
        "renewed#0",
    );
    // Whoever touches the expired lease first (a contender's admit or the holder's next
    // heartbeat), the holder's in-time heartbeat is told its lease is gone.
    assert!(
        renewed["summary"]
            .as_str()
            .unwrap()
            .contains("said the lease was gone"),
        "{renewed:#}"
    );
    // When a contender got in first, it held the slot beside the still-renewing holder. When
    // the holder's heartbeat got there first, the holder gave up and no overlap happened: a
    // race on the machine's timing, so only the first case is checked in detail.
    let j = b.judgement("heartbeat", "concurrency#1");
    if j["verdict"] == "fail" {
        assert_eq!(j["numbers"]["maxInFlight"], 2, "{j:#}");
        assert!(
            j["summary"].as_str().unwrap().contains("holder[0]"),
            "{j:#}"
        );
    } else {
        assert_eq!(j["numbers"]["maxInFlight"], 1, "{j:#}");
    }
}

#[test]
fn a_late_release_that_frees_the_new_holders_slot_is_caught() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail(
        "pause",
        &["--server-cmd", &faulty_server("late-release-frees")],
        "concurrency#2",
    );
    assert_eq!(j["numbers"]["maxInFlight"], 2, "{j:#}");
}

#[test]
fn unshared_servers_break_the_cap_through_a_server_crash() {
    if !have_redis() {
        return;
    }
    let (b, j) = must_fail("server-crash", &["--server-cmd", UNSHARED_FLEET], "cap#0");
    assert!(j["numbers"]["admitted"].as_u64().unwrap() > 150, "{j:#}");
    // Fail-over itself still works: it is the cap that broke.
    assert_eq!(b.judgement("server-crash", "failover#1")["verdict"], "pass");
}

#[test]
fn a_client_that_never_fails_over_is_stranded_by_a_server_crash() {
    if !have_redis() {
        return;
    }
    let b = battle(&["server-crash"], &["--worker-fault", "no-failover"]);
    assert_eq!(b.code(), 1, "server-crash should fail: {}", b.describe());
    let j = b.judgement("server-crash", "failover#1");
    assert_eq!(j["verdict"], "fail", "{j:#}");
    // The clients of server 1 (every third one, by primary) are named.
    let stranded = j["numbers"]["workersStranded"].as_array().unwrap();
    assert!(!stranded.is_empty(), "{j:#}");
    assert!(
        j["summary"]
            .as_str()
            .unwrap()
            .contains("never decided again through another server"),
        "{j:#}"
    );
    assert_eq!(j["numbers"]["workersMoved"], 0, "{j:#}");
}

#[test]
fn a_door_that_never_reloads_scripts_stops_deciding_after_a_restart() {
    if !have_redis() {
        return;
    }
    let (_, j) = must_fail(
        "redis-restart",
        &["--worker-fault", "no-script-reload"],
        "resumes#1",
    );
    assert!(
        j["numbers"]["sampleError"]
            .as_str()
            .unwrap()
            .contains("No matching script"),
        "{j:#}"
    );
    assert_eq!(j["numbers"]["decisionsAfter"], 0, "{j:#}");
}

/// Pids of every process whose parent chain reaches `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let after = &stat[stat.rfind(')').unwrap_or(0) + 1..];
        if let Some(ppid) = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn alive(pid: u32) -> bool {
    // A zombie is dead; /proc/<pid>/stat says Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap_or(0) + 1..]
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn sigkilling_the_harness_leaves_no_process_of_the_run() {
    if !have_redis() {
        return;
    }
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let logs = tempfile::tempdir().unwrap();
    let mut harness = Command::new(EXE)
        .args(["battle", "crash-reclaim", "--scenarios-dir"])
        .arg(repo().join("scenarios"))
        .arg("--contract")
        .arg(repo().join("contract"))
        .arg("--logs")
        .arg(logs.path())
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the battle is in full swing: Redis, 3 servers and 6 workers.
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        seen = descendants(harness.id());
        let histories = logs.path().join("latest/scenarios/crash-reclaim/histories");
        let running = std::fs::read_dir(&histories)
            .map(|d| d.count())
            .unwrap_or(0);
        if seen.len() >= 10 && running >= 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen.len() >= 10, "the battle never got going: {seen:?}");
    harness.kill().unwrap(); // SIGKILL: no destructor, no handler runs.
    harness.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut survivors: Vec<u32> = seen.clone();
    while Instant::now() < deadline {
        survivors.retain(|p| alive(*p));
        if survivors.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        survivors.is_empty(),
        "survived the harness: {survivors:?} of {seen:?}"
    );
    // Also any process started after the snapshot: workers and servers name files of the run.
    let run_dir = logs.path().to_string_lossy().into_owned();
    let strays = naming(&run_dir);
    assert!(
        strays.is_empty(),
        "processes naming {run_dir} survived the harness: {strays:?}"
    );
}

/// Live processes whose command line mentions `needle`.
fn naming(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

#[test]
fn unshared_servers_break_the_cap_across_a_redis_restart() {
    if !have_redis() {
        return;
    }
    let (b, j) = must_fail(
        "redis-restart-fleet",
        &["--server-cmd", UNSHARED_FLEET],
        "cap#0",
    );
    assert!(j["numbers"]["admitted"].as_u64().unwrap() > 1000, "{j:#}");
    // Both doors still decided after the restart: only the shared budget broke.
    assert_eq!(
        b.judgement("redis-restart-fleet", "resumes#1")["verdict"],
        "pass"
    );
}

#[test]
fn bench_load_measures_the_direct_door() {
    if !have_redis() {
        return;
    }
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(EXE)
        .args([
            "bench",
            "load",
            "--seconds",
            "0.3",
            "--workers",
            "2",
            "--in-flight",
            "4",
        ])
        .args(["--no-redis-benchmark", "--contract"])
        .arg(repo().join("contract"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("tk-conform direct door"), "{text}");
    assert!(text.contains(", 0 errors"), "{text}");
}

/// `docs/scenarios.md` is what the scenario files and the checks generate; a page made from
/// other scenarios differs, so a stale committed file fails here.
#[test]
fn the_committed_scenario_docs_are_current() {
    use tk_conform::battle::{docs, scenario};
    let scenarios = scenario::select(&repo().join("scenarios"), &[]).unwrap();
    let committed = std::fs::read_to_string(repo().join(docs::DOCS_FILE)).unwrap();
    assert!(
        docs::render(&scenarios) == committed,
        "{} is stale: run `tk-conform battle --docs`",
        docs::DOCS_FILE
    );
    assert_ne!(docs::render(&scenarios[1..]), committed);
}
