//! Service suites: clock-independent checks of the service door (spec 8) over real gRPC.
//!
//! A server decides on its own clock, so these suites assert what must hold whatever the clock
//! says (counts, order, status codes, lifecycles) rather than exact reply tuples. Each suite is
//! an `async fn` over a [`SuiteContext`]; [`all`] lists them for the runner, which shows each as
//! one trial. The server must serve `suites/service-policies.yaml`; the constants used below are
//! checked against that file by a unit test.

mod client;
mod fleet;
mod lifecycle;
mod monitor;
mod oracle;
mod rate;
mod status;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use client::{ServiceClients, connect};

/// The policy file the suites expect the server to serve.
pub const POLICY_FILE: &str = "suites/service-policies.yaml";

/// What a suite needs: clients to one server, the lease TTL it was started with, a unique tag
/// for its keys, and (for the one-oracle suite) the Redis it stores in.
#[derive(Clone)]
pub struct SuiteContext {
    pub clients: ServiceClients,
    pub lease_ttl: Duration,
    /// The server's Redis, for the one-oracle suite; `None` skips it.
    pub redis_url: Option<String>,
    /// Makes keys unique per run, so repeated runs against one server do not collide.
    pub run_tag: String,
    /// The contract whose Lua the direct door runs (the one-oracle suite).
    pub contract_dir: PathBuf,
    /// The server's `--key-prefix`: its Redis keys are `<store_prefix>:<policy prefix>:<id>`.
    pub store_prefix: Option<String>,
}

impl SuiteContext {
    /// A fresh identity for `suite`'s use of `name`.
    pub fn key(&self, suite: &str, name: &str) -> String {
        format!("{suite}.{}.{name}", self.run_tag)
    }
}

/// Why a suite failed: what differed, at which step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SuiteFailure(pub String);

pub type SuiteResult = Result<(), SuiteFailure>;
type SuiteFuture = Pin<Box<dyn Future<Output = SuiteResult> + Send>>;

/// One named suite.
pub struct ServiceSuite {
    pub name: &'static str,
    /// The promise it checks, in one line.
    pub checks: &'static str,
    /// Needs the server's Redis (`SuiteContext::redis_url`).
    pub needs_redis: bool,
    run: fn(Arc<SuiteContext>) -> SuiteFuture,
}

/// What running a suite came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

impl ServiceSuite {
    /// The trial name the runner shows.
    pub fn trial_name(&self) -> String {
        format!("service::{}", self.name)
    }

    pub async fn run(&self, ctx: Arc<SuiteContext>) -> Outcome {
        if self.needs_redis && ctx.redis_url.is_none() {
            return Outcome::Skipped(
                "needs the Redis the server stores in (`run --backend service --server-store redis`, or --endpoint with --redis-url)"
                    .into(),
            );
        }
        match (self.run)(ctx).await {
            Ok(()) => Outcome::Passed,
            Err(SuiteFailure(message)) => {
                Outcome::Failed(format!("suite {}: {message}", self.name))
            }
        }
    }
}

macro_rules! suite {
    ($name:literal, $f:path, $checks:literal) => {
        suite!($name, $f, $checks, false)
    };
    ($name:literal, $f:path, $checks:literal, $redis:expr) => {
        ServiceSuite {
            name: $name,
            checks: $checks,
            needs_redis: $redis,
            run: |ctx| Box::pin($f(ctx)),
        }
    };
}

/// Every service suite, in the order a report lists them.
pub fn all() -> Vec<ServiceSuite> {
    vec![
        suite!(
            "cold_burst_then_deny",
            rate::cold_burst_then_deny,
            "a cold key admits exactly `burst`, then denies with retryAfterMs > 0"
        ),
        suite!(
            "independent_keys",
            rate::independent_keys,
            "two identities have independent budgets"
        ),
        suite!(
            "peek_does_not_consume",
            rate::peek_does_not_consume,
            "Peek consumes nothing and agrees with the next Check"
        ),
        suite!(
            "forecast_counts_admits",
            rate::forecast_counts_admits,
            "Forecast.spendable_now equals the admits that follow"
        ),
        suite!(
            "check_many_in_order",
            rate::check_many_in_order,
            "CheckMany answers in input order, at one instant"
        ),
        suite!(
            "debit_spends_then_refuses",
            rate::debit_spends_then_refuses,
            "Debit spends a budget (the crossing debit in full), then refuses"
        ),
        suite!(
            "unknown_policy_not_found",
            status::unknown_policy_not_found,
            "an unknown policy is NOT_FOUND"
        ),
        suite!(
            "wrong_op_unimplemented",
            status::wrong_op_unimplemented,
            "an operation the policy kind does not serve is UNIMPLEMENTED"
        ),
        suite!(
            "malformed_input_invalid",
            status::malformed_input_invalid,
            "a negative cost or an empty policy is INVALID_ARGUMENT"
        ),
        suite!(
            "admit_holds_until_release",
            lifecycle::admit_holds_until_release,
            "Admit holds a slot, denies at the ceiling on the concurrency axis, Release frees"
        ),
        suite!(
            "unified_binds_tighter_axis",
            lifecycle::unified_binds_tighter_axis,
            "a unified policy's denial names the tighter axis"
        ),
        suite!(
            "heartbeat_keeps_hold",
            lifecycle::heartbeat_keeps_hold,
            "a Heartbeat-renewed hold survives 3x the lease TTL"
        ),
        suite!(
            "abandoned_hold_reclaimed",
            lifecycle::abandoned_hold_reclaimed,
            "an abandoned hold is reclaimed within TTL + 1 s"
        ),
        suite!(
            "late_release_frees_nothing",
            lifecycle::late_release_frees_nothing,
            "a reclaimed lease's late Release frees no one else's slot"
        ),
        suite!(
            "reserve_within_window_budget",
            fleet::reserve_within_window_budget,
            "Reserve grants <= wants, never past the window's budget, refuses with retry_after_ms"
        ),
        suite!(
            "reserve_concurrency_unimplemented",
            fleet::reserve_concurrency_unimplemented,
            "Reserve on the concurrency axis is UNIMPLEMENTED"
        ),
        suite!(
            "snapshot_counts_decisions",
            monitor::snapshot_counts_decisions,
            "GetSnapshot counts the allowed and denied decisions just made"
        ),
        suite!(
            "watch_streams_denials",
            monitor::watch_streams_denials,
            "Monitor.Watch streams each denial"
        ),
        suite!(
            "one_oracle_shared_budget",
            oracle::one_oracle_shared_budget,
            "the direct Redis door and the service door share one budget",
            true
        ),
    ]
}

/// Builds a failure message: `step: field `f`: expected E, actual A`.
pub(crate) fn differ(
    step: &str,
    field: &str,
    expected: impl std::fmt::Debug,
    actual: impl std::fmt::Debug,
) -> SuiteFailure {
    SuiteFailure(format!(
        "{step}: field `{field}`: expected {expected:?}, actual {actual:?}"
    ))
}

/// `Ok` when equal, else a [`differ`] failure.
pub(crate) fn expect_eq<T: PartialEq + std::fmt::Debug>(
    step: &str,
    field: &str,
    expected: T,
    actual: T,
) -> SuiteResult {
    if expected == actual {
        Ok(())
    } else {
        Err(differ(step, field, expected, actual))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Strategy;
    use crate::server::policy::{PolicyKind, PolicySet};

    /// The constants the suites assume are the ones the shipped policy file says.
    #[test]
    fn suite_constants_match_the_policy_file() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(super::POLICY_FILE);
        let set = PolicySet::load(&path).unwrap();
        let gcra_burst = |name: &str| match &set.get(name).unwrap().kind {
            PolicyKind::Rate {
                strategy: Strategy::Gcra(o),
                ..
            } => o.burst as i64,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(gcra_burst("burst5"), super::rate::BURST5);
        assert_eq!(gcra_burst("pair"), 2);
        assert_eq!(gcra_burst("snap"), super::monitor::SNAP_BURST);
        assert_eq!(gcra_burst("watched"), 1);
        assert_eq!(gcra_burst("oracle"), super::oracle::ORACLE_BURST);

        let names: Vec<&str> = set.policies.keys().map(String::as_str).collect();
        for needed in [
            "tokens",
            "cc2",
            "solo",
            "unified-cc",
            "unified-rate",
            "federated",
        ] {
            assert!(names.contains(&needed), "{needed} missing from {names:?}");
        }
        assert!(matches!(
            &set.get("federated").unwrap().kind,
            PolicyKind::Rate { federated: Some(f), strategy: Strategy::FixedWindow(o), .. }
                if i64::from(f.batch) == super::fleet::BATCH && o.limit as i64 == super::fleet::LIMIT
        ));
    }
}
