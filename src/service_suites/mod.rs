//! Service suites: clock-independent checks of the service door (spec 8) over real gRPC.
//!
//! A server decides on its own clock, so these suites assert what must hold whatever the clock
//! says (counts, order, status codes, lifecycles) rather than exact reply tuples. Each suite is
//! an `async fn` over a [`SuiteContext`]; [`all`] lists them for the runner, which shows each as
//! one trial. The server must serve `suites/service-policies.yaml`; the constants used below are
//! checked against that file by a unit test.
//!
//! A suite asserts only what the spec states: where spec 8 allows several answers it accepts
//! each, and a suite that only finds out which one a server chose reports it as
//! *informational*. Every failure message ends with the spec sentence the suite enforces.

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

pub use client::{ServiceClients, connect};

/// The policy file the suites expect the server to serve.
pub const POLICY_FILE: &str = "suites/service-policies.yaml";

/// What a suite needs: clients to one server, a unique tag for its keys, and (for the
/// one-oracle suite) the Redis it stores in. The lease TTL is not here: suites read it from the
/// server's replies.
#[derive(Clone)]
pub struct SuiteContext {
    pub clients: ServiceClients,
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
/// `Ok(Some(finding))`: which reading of the spec the server took (informational).
type SuiteFuture = Pin<Box<dyn Future<Output = Result<Option<String>, SuiteFailure>> + Send>>;

/// One named suite.
pub struct ServiceSuite {
    pub name: &'static str,
    /// The promise it checks, in one line.
    pub checks: &'static str,
    /// The spec sentence it enforces, quoted in its failure messages.
    pub enforces: &'static str,
    /// Needs the server's Redis (`SuiteContext::redis_url`).
    pub needs_redis: bool,
    run: fn(Arc<SuiteContext>) -> SuiteFuture,
}

/// What running a suite came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuiteOutcome {
    Passed,
    Failed(String),
    Skipped(String),
    /// Neither a pass nor a failure: which of the answers the spec allows the server gave.
    Informational(String),
}

impl ServiceSuite {
    /// The trial name the runner shows.
    pub fn trial_name(&self) -> String {
        format!("service::{}", self.name)
    }

    pub async fn run(&self, ctx: Arc<SuiteContext>) -> SuiteOutcome {
        if self.needs_redis && ctx.redis_url.is_none() {
            return SuiteOutcome::Skipped(
                "needs the Redis the server stores in (`run --backend service --server-store redis`, or --endpoint with --redis-url)"
                    .into(),
            );
        }
        match (self.run)(ctx).await {
            Ok(None) => SuiteOutcome::Passed,
            Ok(Some(finding)) => {
                SuiteOutcome::Informational(format!("suite {}: {finding}", self.name))
            }
            Err(SuiteFailure(message)) => SuiteOutcome::Failed(format!(
                "suite {}: {message} [spec: {}]",
                self.name, self.enforces
            )),
        }
    }
}

macro_rules! suite {
    ($name:literal, $f:path, $checks:literal, $enforces:literal) => {
        suite!($name, $f, $checks, $enforces, false)
    };
    ($name:literal, $f:path, $checks:literal, $enforces:literal, $redis:expr) => {
        ServiceSuite {
            name: $name,
            checks: $checks,
            enforces: $enforces,
            needs_redis: $redis,
            run: |ctx| Box::pin(async move { $f(ctx).await.map(|()| None) }),
        }
    };
    (informational $name:literal, $f:path, $checks:literal, $enforces:literal) => {
        ServiceSuite {
            name: $name,
            checks: $checks,
            enforces: $enforces,
            needs_redis: false,
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
            "a cold key admits exactly `burst`, then denies with retryAfterMs > 0",
            "2 gcra: deny when now < allowAt, reply (0, burst, remaining, ceil(tat), ceil(allowAt - now)); 1: remaining is whole units left before the next denial"
        ),
        suite!(
            "independent_keys",
            rate::independent_keys,
            "two identities have independent budgets",
            "9: a policy's key for identity k is <prefix>:<k> (one Redis key each, spec 2)"
        ),
        suite!(
            "peek_does_not_consume",
            rate::peek_does_not_consume,
            "Peek consumes nothing; the admitted Check that follows reports Peek's remaining - 1",
            "8: Peek reports the state now without consuming: its remaining is what is left before the call it previews (a following Check of cost 1 that is admitted reports one less), and its allowed is remaining >= 1"
        ),
        suite!(
            "forecast_counts_admits",
            rate::forecast_counts_admits,
            "Forecast.spendable_now equals the admits that follow",
            "8: Forecast(policy, key, cost) -> spendable_now"
        ),
        suite!(
            "check_many_in_order",
            rate::check_many_in_order,
            "CheckMany answers in input order, at one instant (checked over 20 tries)",
            "8: CheckMany -> decisions in input order, evaluated at one instant"
        ),
        suite!(
            "debit_spends_then_refuses",
            rate::debit_spends_then_refuses,
            "Debit spends a budget (the crossing debit in full), then refuses",
            "3: a debit is admitted iff used < budget before it, and is then counted in full"
        ),
        suite!(
            "unknown_policy_not_found",
            status::unknown_policy_not_found,
            "an unknown policy, and an empty policy name, is NOT_FOUND",
            "8: Unknown policy (and an empty policy name) -> NOT_FOUND"
        ),
        suite!(
            "wrong_op_unimplemented",
            status::wrong_op_unimplemented,
            "an operation the policy kind does not serve is UNIMPLEMENTED",
            "8: an operation the policy's kind does not serve -> UNIMPLEMENTED; Reserve on a policy that is not federated may answer NOT_FOUND or UNIMPLEMENTED"
        ),
        suite!(
            informational "malformed_input",
            status::malformed_input,
            "a negative cost, tokens or wants is INVALID_ARGUMENT or served as 1 (which: informational)",
            "8: a server may refuse malformed input with INVALID_ARGUMENT or serve it as 1; a judge accepts either, and reports which"
        ),
        suite!(
            "admit_holds_until_release",
            lifecycle::admit_holds_until_release,
            "Admit holds a slot, denies at the ceiling on the concurrency axis, Release frees",
            "8: a granted Admit on a policy with a concurrency axis holds a slot and returns a non-empty lease_id; the slot is returned by Release; Release is idempotent; policy_denied is false on grants and on rate and concurrency denials"
        ),
        suite!(
            "unified_binds_tighter_axis",
            lifecycle::unified_binds_tighter_axis,
            "a unified policy's denial names the axis that denied",
            "8: on an Admit, binding_axis names the axis that denied (\"concurrency\", \"rate\" or \"cost\")"
        ),
        suite!(
            "heartbeat_keeps_hold",
            lifecycle::heartbeat_keeps_hold,
            "a Heartbeat-renewed hold survives 3x the lease TTL (read from lease_expires_at)",
            "8: the slot is reclaimed by the server once the lease TTL passes without a Heartbeat; a judge reads the TTL from lease_expires_at / next_deadline"
        ),
        suite!(
            "abandoned_hold_reclaimed",
            lifecycle::abandoned_hold_reclaimed,
            "an abandoned hold is reclaimed within the TTL (read from lease_expires_at) + one sweep",
            "8: the slot is reclaimed by the server once the lease TTL passes without a Heartbeat; reclaim lands within TTL + one sweep; a judge reads the TTL from lease_expires_at / next_deadline"
        ),
        suite!(
            "late_release_frees_nothing",
            lifecycle::late_release_frees_nothing,
            "a reclaimed lease's late Release frees no one else's slot",
            "8: Release is idempotent and accepts unknown ids; Heartbeat lists unknown ids in reclaimed_ids"
        ),
        suite!(
            "reserve_within_window_budget",
            fleet::reserve_within_window_budget,
            "Reserve grants <= wants and <= what is left of the window, refuses with retry_after_ms",
            "8: capacity is at most wants and at most what is left of the window's budget (not bounded by batch), 0 = refused with retry_after_ms; the grants in one window never sum past the policy's limit"
        ),
        suite!(
            "reserve_budget_per_domain",
            fleet::reserve_budget_per_domain,
            "Reserve's budget is per caller domain: a domain that spent its window leaves another's whole",
            "8: the budget is per (policy, caller.domain, \"\" = the policy's whole budget)"
        ),
        suite!(
            "reserve_concurrency_unimplemented",
            fleet::reserve_concurrency_unimplemented,
            "Reserve on the concurrency axis is UNIMPLEMENTED (or NOT_FOUND off the federated policies)",
            "8: Reserve with the concurrency axis on a federated policy -> UNIMPLEMENTED; Reserve on any other policy may answer NOT_FOUND or UNIMPLEMENTED"
        ),
        suite!(
            "snapshot_counts_decisions",
            monitor::snapshot_counts_decisions,
            "GetSnapshot counts the allowed and denied decisions just made (two snapshots of one window)",
            "8: PolicySummary {allowed=4, denied=5}; the counters cover a rolling window of window_ms, so a client compares two snapshots only within one window"
        ),
        suite!(
            "watch_streams_denials",
            monitor::watch_streams_denials,
            "Monitor.Watch, started before the denials, streams them as DenialEvents",
            "8: Watch(policy) -> {denial=1 DenialEvent}; a client starts the stream before causing the denials it waits for"
        ),
        suite!(
            "one_oracle_shared_budget",
            oracle::one_oracle_shared_budget,
            "the direct Redis door and the service door share one budget",
            "9: a direct-Redis client using that prefix and the same strategy options shares state with the service (one oracle, two doors)",
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
        assert_eq!(gcra_burst("lenient"), super::rate::BURST5);
        assert_eq!(gcra_burst("pair"), 2);
        assert_eq!(gcra_burst("snap"), super::monitor::SNAP_BURST);
        assert_eq!(gcra_burst("watched"), 1);
        assert_eq!(gcra_burst("oracle"), super::oracle::ORACLE_BURST);

        let names: Vec<&str> = set.policies.keys().map(String::as_str).collect();
        for needed in [
            "tokens",
            "cc2",
            "beat",
            "abandon",
            "late",
            "idle-cc",
            "unified-cc",
            "unified-rate",
            "federated",
        ] {
            assert!(names.contains(&needed), "{needed} missing from {names:?}");
        }
        assert!(set.warnings.is_empty(), "{:#?}", set.warnings);
        assert!(matches!(
            &set.get("federated").unwrap().kind,
            PolicyKind::Rate { federated: Some(f), strategy: Strategy::FixedWindow(o), .. }
                if i64::from(f.batch) == super::fleet::BATCH && o.limit as i64 == super::fleet::LIMIT
        ));
    }
}
