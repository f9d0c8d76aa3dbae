//! The reference server on a real Redis (started here on a free loopback port): every service
//! suite passes, including one oracle across the direct and service doors; N servers on one
//! Redis enforce one limit; the Redis store's fault switches are caught by the matching suites;
//! an emptied script cache is survived; the background sweep reclaims an abandoned slot with no
//! call to trigger it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::repo;
use futures::StreamExt;
use tk_conform::backend::Backend;
use tk_conform::backend::service::{ServiceBackend, ServiceTarget};
use tk_conform::backend::service_process::ServerProcess;
use tk_conform::infra::{RedisInstance, RedisOptions};
use tk_conform::proto;
use tk_conform::service_suites::{self, SuiteOutcome};

// Long enough that a loaded two-core machine finishes a lifecycle step inside one lease.
const LEASE_TTL: Duration = Duration::from_millis(1000);

/// A Redis for this test, or `None` (with the reason printed) where none can run.
async fn redis() -> Option<RedisInstance> {
    match RedisInstance::provision(&RedisOptions::default()).await {
        Ok(r) => Some(r),
        Err(e)
            if std::env::var_os("CI").is_some()
                || std::env::var("TK_CONFORM_REQUIRE_ALL").as_deref() == Ok("1") =>
        {
            panic!("CI must have a Redis: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no Redis here: {e}");
            None
        }
    }
}

fn target(redis_url: &str, faults: &[&str]) -> ServiceTarget {
    target_on(repo().join(service_suites::POLICY_FILE), redis_url, faults)
}

/// The suites' policy file with every concurrency policy made `distributedConcurrency`, so
/// its slots live in Redis (the store's own Lua) instead of in each server's memory, where
/// plain `concurrency` keeps them.
fn distributed_slot_policies() -> tempfile::NamedTempFile {
    let shipped = std::fs::read_to_string(repo().join(service_suites::POLICY_FILE)).unwrap();
    let text = shipped.replace("    concurrency: {", "    distributedConcurrency: {");
    for name in ["cc2", "beat", "abandon", "late"] {
        let at = text
            .find(&format!("  {name}:\n    distributedConcurrency: {{"))
            .unwrap_or_else(|| {
                panic!("no block `{name}` concurrency policy in the suites' policy file")
            });
        assert!(at > 0);
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn target_on(config: PathBuf, redis_url: &str, faults: &[&str]) -> ServiceTarget {
    let exe = env!("CARGO_BIN_EXE_tk-conform");
    let mut target = ServiceTarget::reference(exe, config, LEASE_TTL);
    target.redis_url = Some(redis_url.to_owned());
    target.contract_dir = repo().join("contract");
    if !faults.is_empty() {
        let flags: Vec<String> = faults.iter().map(|f| format!("--fault {f}")).collect();
        target.server_cmd = Some(format!(
            "{exe} serve --config {{config}} --port {{port}} --lease-ttl-ms {{lease_ttl_ms}} --redis {{redis_url}} --contract {} {}",
            target.contract_dir.display(),
            flags.join(" ")
        ));
    }
    target
}

async fn run_suites(target: ServiceTarget, only: &[&str]) -> BTreeMap<&'static str, SuiteOutcome> {
    let backend = ServiceBackend::start(target).await.expect("server starts");
    let ctx = backend.suite_context();
    let suites: Vec<_> = service_suites::all()
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect();
    let outcomes = futures::future::join_all(suites.iter().map(|s| s.run(ctx.clone()))).await;
    backend.shutdown().await.unwrap();
    suites.iter().map(|s| s.name).zip(outcomes).collect()
}

fn assert_all_pass(outcomes: &BTreeMap<&'static str, SuiteOutcome>) {
    let not_passed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, SuiteOutcome::Passed | SuiteOutcome::Informational(_)))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
    assert!(outcomes.contains_key("one_oracle_shared_budget"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_on_redis_passes_every_service_suite() {
    let Some(redis) = redis().await else { return };
    let outcomes = run_suites(target(redis.url(), &[]), &[]).await;
    assert_all_pass(&outcomes);
}

/// The ThrottleKit-like mode on Redis, started from ThrottleKit's own flags, passes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttlekit_like_server_on_redis_passes_every_service_suite() {
    let Some(redis) = redis().await else { return };
    let exe = env!("CARGO_BIN_EXE_tk-conform");
    let mut target = target(redis.url(), &[]);
    target.server_cmd = Some(format!(
        "{exe} serve --compat throttlekit --config {{config}} --host 127.0.0.1 --port {{port}} \
         --redis {{redis_url}} --contract {} --node-id tk-0",
        target.contract_dir.display()
    ));
    let outcomes = run_suites(target, &[]).await;
    assert_all_pass(&outcomes);
}

const LIFECYCLE_SUITES: &[&str] = &[
    "admit_holds_until_release",
    "heartbeat_keeps_hold",
    "abandoned_hold_reclaimed",
    "late_release_frees_nothing",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_suites_pass_with_slots_in_redis() {
    let Some(redis) = redis().await else { return };
    let policies = distributed_slot_policies();
    let target = target_on(policies.path().to_owned(), redis.url(), &[]);
    let outcomes = run_suites(target, LIFECYCLE_SUITES).await;
    let not_passed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| **o != SuiteOutcome::Passed)
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
}

/// (fault, suite it must break, a fragment of the failure message): the Redis store's own Lua.
const FAULTS: &[(&str, &str, &str)] = &[
    (
        "private-prefix",
        "one_oracle_shared_budget",
        "(direct door: gcra.check on oracle:",
    ),
    (
        "never-reclaim",
        "abandoned_hold_reclaimed",
        "expected the abandoned slot to be reclaimed",
    ),
    (
        "ignore-heartbeat",
        "heartbeat_keeps_hold",
        "field `live_ids`: expected [",
    ),
    (
        "late-release-frees",
        "late_release_frees_nothing",
        "field `allowed`: expected false, actual true",
    ),
    (
        "over-grant-reserve",
        "reserve_within_window_budget",
        "capacity (at most wants and what is left of the window)",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_redis_backed_servers_fail_the_matching_suite() {
    if redis().await.is_none() {
        return;
    }
    // Slots in Redis: the lifecycle faults are the Redis store's Lua, not the memory store's.
    let policies = distributed_slot_policies();
    let runs = FAULTS.iter().map(|(fault, suite, fragment)| {
        let policies = policies.path().to_owned();
        async move {
            // A Redis per faulty server: the sweep is Redis-wide, so a healthy server's sweep
            // would reclaim the slots a `never-reclaim` server keeps.
            let redis = redis().await.expect("a Redis was provisioned before");
            let outcomes = run_suites(target_on(policies, redis.url(), &[fault]), &[suite]).await;
            (fault, suite, fragment, outcomes)
        }
    });
    let finished: Vec<_> = futures::stream::iter(runs)
        .buffer_unordered(3)
        .collect()
        .await;
    let mut problems = Vec::new();
    for (fault, suite, fragment, outcomes) in finished {
        match &outcomes[suite] {
            SuiteOutcome::Failed(m) if m.contains(fragment) => {
                println!("--fault {fault} (redis): {m}")
            }
            other => problems.push(format!(
                "--fault {fault}: {suite}: wanted `{fragment}`, got {other:?}"
            )),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

const FLEET_POLICIES: &str = r#"
version: 1
limiters:
  one-slot:
    distributedConcurrency: { minLimit: 1, maxLimit: 1 }
  local-slot:
    concurrency: { minLimit: 1, maxLimit: 1 }
  shared-meter:
    fleetBudget: { budget: 3, windowMs: 3600000 }
  coupled:
    strategy: fixedWindow
    limit: 10
    period: 1h
    twoTier: { mode: leased, batch: 4, windowCoupled: true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_redis_enforce_one_limit() {
    let Some(redis) = redis().await else { return };
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(FLEET_POLICIES.as_bytes()).unwrap();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let argv: Vec<String> = [
            env!("CARGO_BIN_EXE_tk-conform"),
            "serve",
            "--config",
            &file.path().display().to_string(),
            "--port",
            "0",
            "--redis",
            redis.url(),
            "--contract",
            &repo().join("contract").display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let server = ServerProcess::start(&argv, None)
            .await
            .expect("server starts");
        clients.push(
            service_suites::connect(&server.addr.to_string(), None, None)
                .await
                .unwrap()
                .rate(),
        );
        servers.push(server);
    }
    let tag = std::process::id();
    let admit = |policy: &str| proto::AdmitRequest {
        policy: policy.into(),
        key: format!("k{tag}"),
        cost: 1,
        hold: 0,
        value: 0,
    };

    // distributedConcurrency: one slot across the fleet; concurrency: one per server.
    let held = clients[0]
        .admit(admit("one-slot"))
        .await
        .unwrap()
        .into_inner();
    assert!(held.decision.unwrap().allowed);
    for c in &mut clients[1..] {
        let refused = c.admit(admit("one-slot")).await.unwrap().into_inner();
        assert_eq!(
            (
                refused.decision.unwrap().allowed,
                refused.binding_axis.as_str()
            ),
            (false, "concurrency")
        );
        assert!(
            c.admit(admit("local-slot"))
                .await
                .unwrap()
                .into_inner()
                .decision
                .unwrap()
                .allowed
        );
    }
    // Any server releases any lease.
    clients[2]
        .release(proto::ReleaseRequest {
            lease_id: held.lease_id,
            dropped: false,
        })
        .await
        .unwrap();
    assert!(
        clients[1]
            .admit(admit("one-slot"))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
            .allowed
    );

    // fleetBudget: one meter.
    let mut debits = Vec::new();
    for i in 0..6 {
        let d = clients[i % 3]
            .debit(proto::DebitRequest {
                policy: "shared-meter".into(),
                key: format!("k{tag}"),
                tokens: 1,
            })
            .await
            .unwrap()
            .into_inner();
        debits.push(d.decision.unwrap().allowed);
    }
    assert_eq!(debits, [true, true, true, false, false, false]);

    // twoTier, window-coupled: at most `limit` per window across the fleet.
    let mut admitted = 0;
    for i in 0..60 {
        let check = proto::CheckRequest {
            policy: "coupled".into(),
            key: format!("k{tag}"),
            cost: 1,
        };
        if clients[i % 3]
            .check(check)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
            .allowed
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    for server in servers {
        assert_eq!(server.stop().await, "exit status: 0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_script_cache_is_survived() {
    let Some(redis) = redis().await else { return };
    let backend = ServiceBackend::start(target(redis.url(), &[]))
        .await
        .unwrap();
    let ctx = backend.suite_context();
    let mut con = tk_conform::infra::connect(redis.url()).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    for suite in service_suites::all()
        .iter()
        .filter(|s| ["peek_does_not_consume", "admit_holds_until_release"].contains(&s.name))
    {
        assert_eq!(
            suite.run(ctx.clone()).await,
            SuiteOutcome::Passed,
            "{} after SCRIPT FLUSH",
            suite.name
        );
    }
    backend.shutdown().await.unwrap();
}

/// The set of every slots key the Redis store keeps (`src/server/store/redis.rs`).
use tk_conform::server::store::redis::SLOT_KEYS;

/// Admits one `abandon` slot (in Redis), abandons it, and then makes no call to the server at all:
/// returns whether the server's sweep reclaimed it before `TTL + 2 s`, or `None` where no Redis
/// can run.
async fn abandoned_slot_swept_without_a_call(faults: &[&str]) -> Option<bool> {
    let redis = redis().await?;
    let policies = distributed_slot_policies();
    let target = target_on(policies.path().to_owned(), redis.url(), faults);
    let backend = ServiceBackend::start(target).await.expect("server starts");
    let ctx = backend.suite_context();
    let key = ctx.key("sweep", "k");
    let granted = ctx
        .clients
        .rate()
        .admit(proto::AdmitRequest {
            policy: "abandon".into(),
            key: key.clone(),
            cost: 1,
            hold: 0,
            value: 0,
        })
        .await
        .expect("Admit abandon")
        .into_inner();
    assert!(
        granted.decision.unwrap().allowed,
        "a cold abandon slot is free"
    );
    let mut con = tk_conform::infra::connect(redis.url()).await.unwrap();
    let slot_keys: Vec<String> = redis::cmd("SMEMBERS")
        .arg(SLOT_KEYS)
        .query_async(&mut con)
        .await
        .unwrap();
    let slots_key = slot_keys
        .iter()
        .find(|k| k.ends_with(&key))
        .unwrap_or_else(|| panic!("no slots key for {key} in {SLOT_KEYS}: {slot_keys:?}"))
        .clone();
    // A generous bound (the sweep runs every TTL/4): this checks that it happens, not how fast.
    let deadline = tokio::time::Instant::now() + LEASE_TTL + Duration::from_secs(2);
    let swept = loop {
        // Only the sweep takes a key out of the set (a key's own expiry leaves it listed).
        let listed: bool = redis::cmd("SISMEMBER")
            .arg(SLOT_KEYS)
            .arg(&slots_key)
            .query_async(&mut con)
            .await
            .unwrap();
        if !listed {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    backend.shutdown().await.unwrap();
    Some(swept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reclaims_an_abandoned_slot_without_a_new_call() {
    let Some(swept) = abandoned_slot_swept_without_a_call(&[]).await else {
        return;
    };
    assert!(
        swept,
        "the abandoned slot was still in Redis {:?} after its TTL of {LEASE_TTL:?} with no call: no sweep ran",
        Duration::from_secs(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_sweeps_is_caught() {
    let Some(swept) = abandoned_slot_swept_without_a_call(&["never-reclaim"]).await else {
        return;
    };
    assert!(
        !swept,
        "--fault never-reclaim: the slot left Redis anyway, so the sweep check cannot fail"
    );
}
