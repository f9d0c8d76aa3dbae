//! Every service suite against real `tk-conform serve` processes on 127.0.0.1: the reference
//! server and its ThrottleKit-like mode (`--compat throttlekit`, the other reading wherever
//! spec 8 allows two) both pass them all; each deliberately faulty server fails the matching
//! suite with a message that says what was expected and quotes the spec sentence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;

use tk_conform::backend::Backend;
use tk_conform::backend::service::{ServiceBackend, ServiceTarget};
use tk_conform::service_suites::{self, SuiteOutcome};

// Long enough that a loaded two-core machine finishes a lifecycle step inside one lease.
const LEASE_TTL: Duration = Duration::from_millis(1000);

fn target(faults: &[&str]) -> ServiceTarget {
    let exe = env!("CARGO_BIN_EXE_tk-conform");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(service_suites::POLICY_FILE);
    let mut target = ServiceTarget::reference(exe, config, LEASE_TTL);
    if !faults.is_empty() {
        let flags: Vec<String> = faults.iter().map(|f| format!("--fault {f}")).collect();
        target.server_cmd = Some(format!(
            "{exe} serve --config {{config}} --port {{port}} --lease-ttl-ms {{lease_ttl_ms}} {}",
            flags.join(" ")
        ));
    }
    target
}

/// The ThrottleKit-like mode, started as a foreign server is: from a template, with its own
/// fixed 2 s lease.
fn throttlekit_like() -> ServiceTarget {
    let exe = env!("CARGO_BIN_EXE_tk-conform");
    let mut target = target(&[]);
    target.server_cmd = Some(format!(
        "{exe} serve --compat throttlekit --config {{config}} --host 127.0.0.1 --port {{port}} --node-id tk-0"
    ));
    target
}

/// Every suite passed, or (where the spec allows several answers) reported which one.
fn assert_all_pass(outcomes: &BTreeMap<&'static str, SuiteOutcome>) {
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, SuiteOutcome::Passed | SuiteOutcome::Informational(_)))
        .filter(|(name, _)| {
            !service_suites::all()
                .iter()
                .any(|s| s.name == **name && s.needs_redis)
        })
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

fn informational<'a>(outcomes: &'a BTreeMap<&'static str, SuiteOutcome>, suite: &str) -> &'a str {
    match &outcomes[suite] {
        SuiteOutcome::Informational(finding) => finding,
        other => panic!("{suite}: wanted an informational finding, got {other:?}"),
    }
}

/// Starts a server, runs the named suites (all when `only` is empty) concurrently, stops it.
async fn run_suites(target: ServiceTarget, only: &[&str]) -> BTreeMap<&'static str, SuiteOutcome> {
    let backend = ServiceBackend::start(target).await.expect("server starts");
    let ctx = backend.suite_context();
    let suites: Vec<_> = service_suites::all()
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect();
    assert!(
        !suites.is_empty() && (only.is_empty() || suites.len() == only.len()),
        "unknown suite in {only:?}"
    );
    let outcomes = futures::future::join_all(suites.iter().map(|s| s.run(ctx.clone()))).await;
    backend.shutdown().await.unwrap();
    suites.iter().map(|s| s.name).zip(outcomes).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_every_service_suite() {
    let outcomes = run_suites(target(&[]), &[]).await;
    assert_all_pass(&outcomes);
    let finding = informational(&outcomes, "malformed_input");
    assert!(
        finding.contains("Check lenient cost=-1 (cold key): INVALID_ARGUMENT")
            && !finding.contains("served as 1"),
        "{finding}"
    );
}

/// The other reading of every choice spec 8 leaves to a server passes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttlekit_like_server_passes_every_service_suite() {
    let outcomes = run_suites(throttlekit_like(), &[]).await;
    assert_all_pass(&outcomes);
    let finding = informational(&outcomes, "malformed_input");
    assert!(
        finding.contains("Debit tokens tokens=-5 (fresh key): served as 1")
            && !finding.contains("INVALID_ARGUMENT"),
        "{finding}"
    );
}

/// A suite that fails half-way still releases its slots: the policy's whole ceiling is free
/// right after it, long before the (30 s) lease could lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lifecycle_suite_releases_its_holds() {
    let exe = env!("CARGO_BIN_EXE_tk-conform");
    let mut target = target(&[]);
    target.server_cmd = Some(format!(
        "{exe} serve --config {{config}} --port {{port}} --lease-ttl-ms 30000 --fault unified-binds-rate"
    ));
    let backend = ServiceBackend::start(target).await.expect("server starts");
    let ctx = backend.suite_context();
    let suite = service_suites::all()
        .into_iter()
        .find(|s| s.name == "unified_binds_tighter_axis")
        .unwrap();
    let outcome = suite.run(ctx.clone()).await;
    assert!(
        matches!(&outcome, SuiteOutcome::Failed(m) if m.contains("binding_axis")),
        "{outcome:?}"
    );
    // Two slots were held when it failed; both must be back.
    let mut rate = ctx.clients.rate();
    for i in 0..2 {
        let reply = rate
            .admit(tk_conform::proto::AdmitRequest {
                policy: "unified-cc".into(),
                key: format!("after-failure-{i}"),
                cost: 1,
                hold: 0,
                value: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            reply.decision.unwrap().allowed,
            "Admit {i} after the failed suite: a slot is still held"
        );
    }
    backend.shutdown().await.unwrap();
}

/// `server::serve` in this process, on a listener the test bound: the service suites pass as
/// they do against a `tk-conform serve` process, and the server drains when told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_server_passes_the_service_suites() {
    use std::sync::Arc;
    use tk_conform::server::engine::Engine;
    use tk_conform::server::fault::Faults;
    use tk_conform::server::policy::PolicySet;
    use tk_conform::server::store::StoreFaults;
    use tk_conform::server::store::memory::MemoryStore;

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(service_suites::POLICY_FILE);
    let local = Arc::new(MemoryStore::new(StoreFaults::default()));
    let engine = Arc::new(Engine::new(
        PolicySet::load(&config).unwrap(),
        local.clone(),
        local,
        LEASE_TTL,
        Faults::new([]),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tk_conform::server::serve(listener, engine, async {
        let _ = stopped.await;
    }));
    let mut target = target(&[]);
    target.endpoint = Some(addr.to_string());
    let outcomes = run_suites(target, &[]).await;
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, SuiteOutcome::Failed(_)))
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    assert!(
        outcomes
            .values()
            .filter(|o| **o == SuiteOutcome::Passed)
            .count()
            >= 5,
        "{outcomes:#?}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops within its drain bound")
        .unwrap()
        .unwrap();
}

/// (fault, suite it must break, a fragment of the failure message)
const FAULTS: &[(&str, &str, &str)] = &[
    (
        "never-reclaim",
        "abandoned_hold_reclaimed",
        "expected the abandoned slot to be reclaimed within TTL + one sweep (the TTL of",
    ),
    (
        "ignore-heartbeat",
        "heartbeat_keeps_hold",
        "field `live_ids`: expected [",
    ),
    (
        "late-release-frees",
        "late_release_frees_nothing",
        "after A's late Release): field `allowed`: expected false, actual true",
    ),
    (
        "over-grant-reserve",
        "reserve_within_window_budget",
        "field `capacity (at most wants and what is left of the window)`: expected \"0..=",
    ),
    (
        "reserve-ignores-domain",
        "reserve_budget_per_domain",
        "field `capacity (another caller domain has a budget of its own)`: expected \">= 1\", actual 0",
    ),
    (
        "release-noop",
        "admit_holds_until_release",
        "op 5 (Admit cc2 after a Release): field `allowed`: expected true, actual false",
    ),
    (
        "peek-consumes",
        "peek_does_not_consume",
        "field `remaining (Peek's remaining - 1)`: expected",
    ),
    (
        "burst-plus-one",
        "cold_burst_then_deny",
        "past the burst): field `allowed`: expected false, actual true",
    ),
    (
        "zero-retry",
        "cold_burst_then_deny",
        "field `retryAfterMs`: expected \"> 0\", actual 0",
    ),
    (
        "shared-keys",
        "independent_keys",
        "key b (after a was spent): op 0",
    ),
    (
        "forecast-off-by-one",
        "forecast_counts_admits",
        "field `spendable_now (vs admits that followed)`: expected",
    ),
    (
        "checkmany-reversed",
        "check_many_in_order",
        "CheckMany pair keys=[a, b, a, c, a, b]: decision",
    ),
    (
        "checkmany-split-instant",
        "check_many_in_order",
        "reported different resetAt (not one instant) in 10 of 20 tries",
    ),
    (
        "debit-never-refuses",
        "debit_spends_then_refuses",
        "op 2 (Debit tokens",
    ),
    (
        "lax-status",
        "unknown_policy_not_found",
        "status: expected NotFound, actual Internal",
    ),
    (
        "lax-status",
        "wrong_op_unimplemented",
        "status: expected Unimplemented, actual Unknown",
    ),
    (
        "lax-status",
        "malformed_input",
        "Debit tokens tokens=-5 (fresh key): field `remaining (served as 1)`: expected 4, actual 0",
    ),
    (
        "unified-binds-rate",
        "unified_binds_tighter_axis",
        "field `binding_axis`: expected \"concurrency\", actual \"rate\"",
    ),
    (
        "policy-denied-on-denial",
        "admit_holds_until_release",
        "op 2 (Admit cc2 at the ceiling of 2): field `policy_denied (allowed = false, binding_axis = \"concurrency\")`: expected false, actual true",
    ),
    (
        "no-lease-expiry",
        "abandoned_hold_reclaimed",
        "field `lease_expires_at (epoch ms; the lease TTL is read from it)`: expected \"in the next 600s",
    ),
    (
        "past-deadline",
        "heartbeat_keeps_hold",
        "field `next_deadline (epoch ms)`: expected \">=",
    ),
    (
        "stale-snapshot",
        "snapshot_counts_decisions",
        "field `denied (increase)`: expected 2, actual 0",
    ),
    (
        "watch-silent",
        "watch_streams_denials",
        "expected a streamed denial for key",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_faulty_server_fails_the_matching_suite() {
    let mut by_fault: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (fault, suite, fragment) in FAULTS {
        by_fault.entry(fault).or_default().push((suite, fragment));
    }
    let runs = by_fault.iter().map(|(fault, expectations)| async move {
        let suites: Vec<&str> = expectations.iter().map(|(s, _)| *s).collect();
        (
            *fault,
            expectations,
            run_suites(target(&[fault]), &suites).await,
        )
    });
    let mut problems = Vec::new();
    // A few servers at a time: the machine has two cores.
    let finished: Vec<_> = futures::stream::iter(runs)
        .buffer_unordered(4)
        .collect()
        .await;
    for (fault, expectations, outcomes) in finished {
        for (suite, fragment) in expectations.iter() {
            match &outcomes[suite] {
                // Every failure names the spec sentence it enforces.
                SuiteOutcome::Failed(message) if message.contains(fragment) && message.contains("[spec: ") => {
                    println!("--fault {fault}: {message}");
                }
                other => problems.push(format!("--fault {fault}: suite {suite}: wanted a failure containing `{fragment}`, got {other:?}")),
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
