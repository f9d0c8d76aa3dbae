//! `ExecBackend` against fixture adapters that break on purpose: each fault must become the right
//! error for the trial at hand, with a message naming what went wrong, and never a hang or panic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util;
use tk_conform::backend::exec::{ExecBackend, ExecConfig, ExecError};
use tk_conform::backend::model::ModelBackend;
use tk_conform::backend::{Backend, BackendError, Capability};
use tk_conform::model::{
    Decision, FixedWindowOptions, GcraOptions, LeaseConfig, SpendOutcome, Strategy, StrategyKind,
    TokenBudgetOptions,
};

const EPOCH: f64 = 1_700_000_000_000.0;

struct Fixture {
    backend: ExecBackend,
    logs: tempfile::TempDir,
}

impl Fixture {
    fn stderr_log(&self) -> PathBuf {
        self.logs.path().join("adapter.stderr.log")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_log()).unwrap_or_default()
    }

    fn marker(&self) -> PathBuf {
        self.logs.path().join("fault-fired")
    }
}

fn config(args: &str, logs: &Path, tweak: impl FnOnce(&mut ExecConfig)) -> ExecConfig {
    let args = args.replace("{marker}", &util::quoted(&logs.join("fault-fired")));
    let mut config = ExecConfig::new(
        format!(
            "python3 {} {args}",
            util::quoted(&util::fixture("faulty.py"))
        ),
        logs.join("adapter.stderr.log"),
    );
    config.request_timeout = Duration::from_secs(10);
    tweak(&mut config);
    config
}

async fn fixture_with(args: &str, tweak: impl FnOnce(&mut ExecConfig)) -> Fixture {
    let logs = tempfile::tempdir().unwrap();
    let backend = ExecBackend::start(config(args, logs.path(), tweak))
        .await
        .expect("the fixture adapter starts");
    Fixture { backend, logs }
}

async fn fixture(args: &str) -> Fixture {
    fixture_with(args, |_| {}).await
}

fn fixed_window() -> Strategy {
    Strategy::FixedWindow(FixedWindowOptions {
        limit: 3.0,
        window_ms: 1000.0,
    })
}

/// Replays six fixedWindow checks through `backend` and the model; the first error or
/// disagreement is returned as text naming the op and the fields.
async fn replay(backend: &ExecBackend, suite: &str) -> Result<(), String> {
    let strategy = fixed_window();
    let mut theirs = backend.open_suite(suite).await.map_err(|e| e.to_string())?;
    let mut ours = ModelBackend.open_suite(suite).await.unwrap();
    for op in 0..6 {
        let now = EPOCH + 150.0 * op as f64;
        let expected = ours.check(&strategy, "k", now, 1.0).await.unwrap();
        let actual = theirs
            .check(&strategy, "k", now, 1.0)
            .await
            .map_err(|e| format!("op {op}: {e}"))?;
        let diff = expected.diff(&actual);
        if !diff.is_empty() {
            return Err(format!("op {op}: differs in {diff:?}"));
        }
    }
    Ok(())
}

/// True when no live process has this id (a zombie awaiting its reaper counts as gone).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Bounded wait for a killed process to disappear (the kernel needs a moment, not the test).
async fn wait_gone(pid: i32) -> bool {
    for _ in 0..200 {
        if gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_healthy_adapter_agrees_with_the_model_on_every_primitive() {
    let f = fixture("").await;
    replay(&f.backend, "rateLimit::fixed").await.unwrap();

    let mut session = f.backend.open_suite("tokenBudget::b").await.unwrap();
    let mut model = ModelBackend.open_suite("tokenBudget::b").await.unwrap();
    let options = TokenBudgetOptions {
        budget: 5.0,
        window_ms: 1000.0,
    };
    for (now, tokens) in [
        (EPOCH, 3.0),
        (EPOCH + 1.0, 4.0),
        (EPOCH + 2.0, 1.0),
        (EPOCH + 1000.0, 2.0),
    ] {
        assert_eq!(
            session.debit(&options, "k", now, tokens).await.unwrap(),
            model.debit(&options, "k", now, tokens).await.unwrap()
        );
    }
    drop(session);

    let lease = LeaseConfig {
        limit: 10.0,
        ttl_ms: 1000.0,
        window_coupled: true,
    };
    let mut session = f.backend.open_suite("lease::l").await.unwrap();
    let mut model = ModelBackend.open_suite("lease::l").await.unwrap();
    assert_eq!(
        session.lease_spend(&lease, EPOCH, 1.0).await.unwrap(),
        SpendOutcome::NeedsRefresh
    );
    session
        .lease_grant(&lease, 3.0, EPOCH + 1000.0)
        .await
        .unwrap();
    model
        .lease_grant(&lease, 3.0, EPOCH + 1000.0)
        .await
        .unwrap();
    for (now, cost) in [(EPOCH, 1.0), (EPOCH + 10.0, 1.0), (EPOCH + 1000.0, 1.0)] {
        assert_eq!(
            session.lease_spend(&lease, now, cost).await.unwrap(),
            model.lease_spend(&lease, now, cost).await.unwrap()
        );
    }
    assert!(matches!(
        session.lease_spend(&lease, EPOCH, -1.0).await,
        Err(BackendError::Invalid(m)) if m.contains("positive")
    ));
    drop(session);

    // A strategy the adapter declined is skipped with its reason, never sent to it.
    let gcra = Strategy::Gcra(GcraOptions {
        limit: 1.0,
        period_ms: 1000.0,
        burst: 1.0,
    });
    assert!(!f.backend.capabilities().strategies.contains(&gcra.kind()));
    assert_eq!(
        f.backend
            .unsupported_reason(Capability::Strategy(StrategyKind::Gcra)),
        "faulty-fixture: faulty fixture: only fixedWindow"
    );
    assert_eq!(
        f.backend
            .unsupported_reason(Capability::Strategy(StrategyKind::TokenBucket)),
        "the exec adapter faulty-fixture does not claim tokenBucket (it gave no reason)"
    );
    let mut session = f.backend.open_suite("rateLimit::gcra").await.unwrap();
    match session.check(&gcra, "k", EPOCH, 1.0).await {
        Err(BackendError::Unsupported(reason)) => {
            assert_eq!(reason, "faulty fixture: only fixedWindow")
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
    drop(session);

    let info = f.backend.info();
    assert_eq!(
        (info.kind.as_str(), info.name.as_str()),
        ("exec", "faulty-fixture")
    );
    let pid = f.backend.adapter_pid().await.unwrap();
    f.backend.shutdown().await.unwrap();
    assert!(wait_gone(pid).await, "the adapter {pid} outlived shutdown");
}

#[tokio::test]
async fn a_declined_capability_is_unsupported_with_the_adapters_reason() {
    let f = fixture("--decline-budget").await;
    assert!(!f.backend.capabilities().token_budget);
    let mut session = f.backend.open_suite("tokenBudget::b").await.unwrap();
    let options = TokenBudgetOptions {
        budget: 5.0,
        window_ms: 1000.0,
    };
    match session.debit(&options, "k", EPOCH, 1.0).await {
        Err(BackendError::Unsupported(reason)) => {
            assert_eq!(reason, "faulty fixture: budgets declined on request")
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn a_crash_fails_the_trial_and_the_next_suite_runs_on_a_restarted_adapter() {
    let f = fixture("--fault crash --at 3 --once {marker}").await;
    let err = replay(&f.backend, "first").await.unwrap_err();
    assert!(err.starts_with("op 2: unavailable:"), "{err}");
    assert!(
        err.contains("closed stdout while answering request"),
        "{err}"
    );
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains(&f.stderr_log().display().to_string()), "{err}");
    assert!(
        f.stderr().contains("faulty: crash at request"),
        "{}",
        f.stderr()
    );
    replay(&f.backend, "second").await.unwrap();
    assert_eq!(f.backend.restarts().await, 1);
    assert!(f.marker().exists());
}

#[tokio::test]
async fn an_adapter_that_keeps_crashing_is_given_up_after_the_restart_budget() {
    let f = fixture_with("--fault crash --at 1", |c| c.max_restarts = 2).await;
    for suite in ["s1", "s2", "s3"] {
        let err = replay(&f.backend, suite).await.unwrap_err();
        assert!(err.contains("closed stdout"), "{suite}: {err}");
    }
    assert_eq!(f.backend.restarts().await, 2);
    for suite in ["s4", "s5"] {
        let err = replay(&f.backend, suite).await.unwrap_err();
        assert!(err.contains("adapter unavailable"), "{suite}: {err}");
        assert!(err.contains("crashed or hung 3 times"), "{suite}: {err}");
        assert!(err.contains("at most 2 times per run"), "{suite}: {err}");
    }
    // Giving up is final and starts nothing new.
    assert_eq!(f.backend.restarts().await, 2);
    assert_eq!(f.backend.adapter_pid().await, None);
    f.backend.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hung_adapter_is_killed_after_the_request_timeout() {
    let f = fixture_with("--fault hang --at 2 --once {marker}", |c| {
        c.request_timeout = Duration::from_secs(2)
    })
    .await;
    let pid = f.backend.adapter_pid().await.unwrap();
    let err = replay(&f.backend, "first").await.unwrap_err();
    assert!(err.starts_with("op 1: unavailable:"), "{err}");
    assert!(err.contains("did not answer request"), "{err}");
    assert!(err.contains("(check) within 2s; it was killed"), "{err}");
    assert!(
        wait_gone(pid).await,
        "the hung adapter {pid} is still running"
    );
    replay(&f.backend, "second").await.unwrap();
    assert_eq!(f.backend.restarts().await, 1);
}

#[tokio::test]
async fn a_cancelled_request_does_not_leave_the_stream_out_of_step() {
    let f = fixture("--fault hang --at 1 --once {marker}").await;
    let pid = f.backend.adapter_pid().await.unwrap();
    {
        let mut session = f.backend.open_suite("cancelled").await.unwrap();
        let cancelled = tokio::time::timeout(
            Duration::from_millis(300),
            session.check(&fixed_window(), "k", EPOCH, 1.0),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "the hung request was answered: {cancelled:?}"
        );
    }
    replay(&f.backend, "after").await.unwrap();
    assert!(
        wait_gone(pid).await,
        "the abandoned adapter {pid} is still running"
    );
    assert_eq!(f.backend.restarts().await, 0);
}

/// One protocol violation: the trial fails naming the offending line, and the next suite runs
/// on a fresh adapter without using up the crash budget.
async fn violation(fault: &str, expected: &[&str]) {
    let f = fixture(&format!("--fault {fault} --at 2 --once {{marker}}")).await;
    let err = replay(&f.backend, "first").await.unwrap_err();
    assert!(
        err.starts_with("op 1: protocol violation:"),
        "{fault}: {err}"
    );
    for part in expected {
        assert!(err.contains(part), "{fault}: `{err}` lacks `{part}`");
    }
    replay(&f.backend, "second").await.unwrap();
    assert_eq!(f.backend.restarts().await, 0, "{fault}");
    f.backend.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_json_is_a_violation_naming_the_line() {
    // hello and reset are stdout lines 1 and 2; the checks are 3 and 4.
    violation(
        "bad-json",
        &[
            "stdout line 4",
            "the reply to request 3 (check)",
            "not valid JSON",
            r#"`{"id": 3, "decision": {"allowed": tru`"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_id_is_a_violation() {
    violation(
        "wrong-id",
        &[
            "stdout line 4",
            "echoed id 1003, expected 3",
            r#""id": 1003"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn a_missing_field_is_a_violation() {
    violation(
        "missing-field",
        &["decisionReply", "\"resetAt\" is a required property"],
    )
    .await;
}

#[tokio::test]
async fn an_extra_line_is_a_violation() {
    violation(
        "extra-line",
        &[
            "extra output: after its reply to request 3 (check)",
            "stdout line 5",
            r#"{"id": 3, "ok": true}"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_field_is_a_violation_only_in_strict_mode() {
    violation(
        "extra-field",
        &["Additional properties are not allowed", "'debug'"],
    )
    .await;
    let lenient = fixture_with("--fault extra-field --at 2", |c| c.strict = false).await;
    replay(&lenient.backend, "lenient").await.unwrap();
}

#[tokio::test]
async fn one_wrong_field_shows_as_that_field_differing() {
    let f = fixture("--fault wrong-field --at 2").await;
    let err = replay(&f.backend, "first").await.unwrap_err();
    assert_eq!(err, r#"op 1: differs in [("remaining", 1, 2)]"#);
}

#[tokio::test]
async fn an_internal_error_fails_the_trial_with_the_adapters_message() {
    let f = fixture("--fault internal --at 2").await;
    let err = replay(&f.backend, "first").await.unwrap_err();
    assert_eq!(err, "op 1: engine internal error: faulty: engine exploded");
}

#[tokio::test]
async fn a_failed_handshake_stops_the_run_before_it_starts() {
    let logs = tempfile::tempdir().unwrap();
    let crash = ExecBackend::start(config("--fault hello-crash", logs.path(), |_| {})).await;
    let Err(err @ ExecError::Handshake { .. }) = crash else {
        panic!("expected a handshake error");
    };
    let text = err.to_string();
    assert!(text.contains("failed its hello handshake"), "{text}");
    assert!(text.contains("exit status: 4"), "{text}");

    let version = ExecBackend::start(config("--fault hello-version", logs.path(), |_| {})).await;
    let text = version
        .err()
        .expect("a version mismatch is refused")
        .to_string();
    assert!(
        text.contains("speaks protocol version 99, this harness speaks versions 1 and 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_command_line_is_a_clear_error() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("stderr.log");
    let missing = ExecBackend::start(ExecConfig::new("/nonexistent/adapter --x", &log)).await;
    let text = missing.err().expect("no such program").to_string();
    assert!(
        text.contains("cannot start the adapter `/nonexistent/adapter --x`"),
        "{text}"
    );

    let unbalanced = ExecBackend::start(ExecConfig::new("python3 'adapter.py", &log)).await;
    let text = unbalanced.err().expect("unbalanced quote").to_string();
    assert!(text.contains("cannot split the adapter command"), "{text}");
}

#[test]
fn a_decision_diff_names_fields() {
    let a = Decision {
        allowed: true,
        limit: 3,
        remaining: 1,
        reset_at: 10,
        retry_after_ms: 0,
    };
    let b = Decision { remaining: 2, ..a };
    assert_eq!(a.diff(&b), vec![("remaining", 1, 2)]);
}

/// The model, but `remaining` is one too high on every fifth check: the differential replay used
/// against throttlekit-py and the Node adapter must notice, naming the op and both decisions.
struct OffByOne;

struct OffByOneSession {
    inner: Box<dyn tk_conform::backend::SuiteSession>,
    checks: u32,
}

#[async_trait::async_trait]
impl Backend for OffByOne {
    fn info(&self) -> tk_conform::backend::BackendInfo {
        ModelBackend.info()
    }
    fn capabilities(&self) -> tk_conform::backend::Capabilities {
        ModelBackend.capabilities()
    }
    async fn open_suite(
        &self,
        suite: &str,
    ) -> Result<Box<dyn tk_conform::backend::SuiteSession>, BackendError> {
        Ok(Box::new(OffByOneSession {
            inner: ModelBackend.open_suite(suite).await?,
            checks: 0,
        }))
    }
}

#[async_trait::async_trait]
impl tk_conform::backend::SuiteSession for OffByOneSession {
    async fn check(
        &mut self,
        strategy: &Strategy,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<Decision, BackendError> {
        self.checks += 1;
        let mut d = self.inner.check(strategy, key, now, cost).await?;
        if self.checks.is_multiple_of(5) {
            d.remaining += 1;
        }
        Ok(d)
    }
    async fn debit(
        &mut self,
        options: &TokenBudgetOptions,
        key: &str,
        now: f64,
        tokens: f64,
    ) -> Result<Decision, BackendError> {
        self.inner.debit(options, key, now, tokens).await
    }
    async fn lease_grant(
        &mut self,
        config: &LeaseConfig,
        capacity: f64,
        expires_at: f64,
    ) -> Result<(), BackendError> {
        self.inner.lease_grant(config, capacity, expires_at).await
    }
    async fn lease_spend(
        &mut self,
        config: &LeaseConfig,
        now: f64,
        cost: f64,
    ) -> Result<SpendOutcome, BackendError> {
        self.inner.lease_spend(config, now, cost).await
    }
}

#[tokio::test]
async fn the_differential_replay_catches_a_broken_engine() {
    use crate::util::differential;
    assert!(
        differential::random_rate_timelines(&ModelBackend, "model", 1, 1)
            .await
            .is_empty()
    );
    let found = differential::random_rate_timelines(&OffByOne, "off-by-one", 1, 1).await;
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(found[0].contains("op 4: model (allowed="), "{}", found[0]);
    assert!(found[0].contains("off-by-one (allowed="), "{}", found[0]);
    assert!(found[0].contains("timeline (now="), "{}", found[0]);
}
