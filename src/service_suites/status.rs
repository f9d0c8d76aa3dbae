//! Status codes of spec 8: NOT_FOUND, UNIMPLEMENTED, and the two readings of malformed input
//! (INVALID_ARGUMENT, or served as 1). A denial is never an RPC error.

use std::sync::Arc;

use tonic::Code;

use super::client::{fails_with, fails_with_one_of};
use super::rate::{BURST5, decision_of};
use super::{SuiteContext, SuiteFailure, SuiteResult, expect_eq};
use crate::proto;

pub(super) async fn unknown_policy_not_found(ctx: Arc<SuiteContext>) -> SuiteResult {
    let policy = format!("no-such-policy-{}", ctx.run_tag);
    let key = ctx.key("status", "k");
    let mut rate = ctx.clients.rate();
    let check = proto::CheckRequest {
        policy: policy.clone(),
        key: key.clone(),
        cost: 1,
    };
    fails_with(
        &format!("Check policy={policy}"),
        Code::NotFound,
        rate.check(check).await,
    )?;
    let debit = proto::DebitRequest {
        policy: policy.clone(),
        key: key.clone(),
        tokens: 1,
    };
    fails_with(
        &format!("Debit policy={policy}"),
        Code::NotFound,
        rate.debit(debit).await,
    )?;
    let admit = proto::AdmitRequest {
        policy: policy.clone(),
        key,
        cost: 1,
        hold: 0,
        value: 0,
    };
    fails_with(
        &format!("Admit policy={policy}"),
        Code::NotFound,
        rate.admit(admit).await,
    )?;
    let (mut fleet, reserve) = ctx.clients.fleet(proto::ReserveRequest {
        policy: policy.clone(),
        wants: 1,
        ..Default::default()
    });
    fails_with(
        &format!("Reserve policy={policy}"),
        Code::NotFound,
        fleet.reserve(reserve).await,
    )?;
    let check = proto::CheckRequest {
        policy: String::new(),
        key: ctx.key("status", "empty"),
        cost: 1,
    };
    fails_with(
        "Check with an empty policy",
        Code::NotFound,
        rate.check(check).await,
    )
}

pub(super) async fn wrong_op_unimplemented(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("wrongop", "k");
    let mut rate = ctx.clients.rate();
    let admit = proto::AdmitRequest {
        policy: "burst5".into(),
        key: key.clone(),
        cost: 1,
        hold: 0,
        value: 0,
    };
    fails_with(
        "Admit on rate limiter burst5",
        Code::Unimplemented,
        rate.admit(admit).await,
    )?;
    let check = proto::CheckRequest {
        policy: "tokens".into(),
        key: key.clone(),
        cost: 1,
    };
    fails_with(
        "Check on tokenBudget tokens",
        Code::Unimplemented,
        rate.check(check).await,
    )?;
    let debit = proto::DebitRequest {
        policy: "idle-cc".into(),
        key: key.clone(),
        tokens: 1,
    };
    fails_with(
        "Debit on concurrency idle-cc",
        Code::Unimplemented,
        rate.debit(debit).await,
    )?;
    let check = proto::CheckRequest {
        policy: "idle-cc".into(),
        key,
        cost: 1,
    };
    fails_with(
        "Check on concurrency idle-cc",
        Code::Unimplemented,
        rate.check(check).await,
    )?;
    let (mut fleet, reserve) = ctx.clients.fleet(proto::ReserveRequest {
        policy: "burst5".into(),
        wants: 1,
        ..Default::default()
    });
    // Reserve's namespace is the federated policies: either answer is the spec's.
    fails_with_one_of(
        "Reserve on non-federated burst5",
        &[Code::NotFound, Code::Unimplemented],
        fleet.reserve(reserve).await,
    )
    .map(drop)
}

/// Spec 8 lets a server refuse a negative cost, tokens or wants with INVALID_ARGUMENT or serve
/// it as 1. Either passes; which one is the finding. Anything else (another status, or served
/// as some other amount) fails.
pub(super) async fn malformed_input(
    ctx: Arc<SuiteContext>,
) -> Result<Option<String>, SuiteFailure> {
    let mut readings = Vec::new();
    let mut rate = ctx.clients.rate();

    // A cold key of `lenient` (burst 5): served as 1 leaves 4.
    let step = "Check lenient cost=-1 (cold key)";
    let check = proto::CheckRequest {
        policy: "lenient".into(),
        key: ctx.key("malformed", "check"),
        cost: -1,
    };
    readings.push(match refused_or(step, rate.check(check).await)? {
        None => format!("{step}: INVALID_ARGUMENT"),
        Some(reply) => {
            let d = decision_of(step, reply.decision)?;
            expect_eq(step, "allowed (served as 1)", true, d.allowed)?;
            expect_eq(step, "remaining (served as 1)", BURST5 - 1, d.remaining)?;
            format!("{step}: served as 1")
        }
    });

    // A fresh key of `tokens` (budget 5): served as 1 leaves 4.
    let step = "Debit tokens tokens=-5 (fresh key)";
    let debit = proto::DebitRequest {
        policy: "tokens".into(),
        key: ctx.key("malformed", "debit"),
        tokens: -5,
    };
    readings.push(match refused_or(step, rate.debit(debit).await)? {
        None => format!("{step}: INVALID_ARGUMENT"),
        Some(reply) => {
            let d = decision_of(step, reply.decision)?;
            expect_eq(step, "allowed (served as 1)", true, d.allowed)?;
            expect_eq(step, "remaining (served as 1)", 4, d.remaining)?;
            format!("{step}: served as 1")
        }
    });

    // A cold key of `lenient`: a forecast of cost 1 is the whole burst.
    let step = "Forecast lenient cost=-2 (cold key)";
    let forecast = proto::ForecastRequest {
        policy: "lenient".into(),
        key: ctx.key("malformed", "forecast"),
        cost: -2,
    };
    readings.push(match refused_or(step, rate.forecast(forecast).await)? {
        None => format!("{step}: INVALID_ARGUMENT"),
        Some(reply) => {
            let f = reply
                .forecast
                .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no forecast")))?;
            expect_eq(step, "spendable_now (served as 1)", BURST5, f.spendable_now)?;
            format!("{step}: served as 1")
        }
    });

    let step = "Reserve lenient-fleet wants=-3";
    let (mut fleet, reserve) = ctx.clients.fleet(proto::ReserveRequest {
        policy: "lenient-fleet".into(),
        caller: Some(proto::Caller {
            domain: format!("malformed-{}", ctx.run_tag),
            ..Default::default()
        }),
        wants: -3,
        ..Default::default()
    });
    readings.push(match refused_or(step, fleet.reserve(reserve).await)? {
        None => format!("{step}: INVALID_ARGUMENT"),
        Some(reply) => {
            let lease = reply
                .lease
                .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no lease")))?;
            if !(0..=1).contains(&lease.capacity) {
                return Err(super::differ(
                    step,
                    "capacity (served as 1: at most 1)",
                    "0..=1",
                    lease.capacity,
                ));
            }
            format!("{step}: served as 1")
        }
    });
    Ok(Some(readings.join("; ")))
}

/// `None` when refused with INVALID_ARGUMENT, the reply when served; any other status fails.
fn refused_or<T: std::fmt::Debug>(
    step: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<Option<T>, SuiteFailure> {
    match result {
        Ok(reply) => Ok(Some(reply.into_inner())),
        Err(status) if status.code() == Code::InvalidArgument => Ok(None),
        Err(status) => Err(SuiteFailure(format!(
            "{step}: status: expected InvalidArgument or OK (served as 1), actual {:?} ({})",
            status.code(),
            status.message()
        ))),
    }
}
