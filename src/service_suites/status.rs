//! Status codes of spec 8: NOT_FOUND, UNIMPLEMENTED, INVALID_ARGUMENT. A denial is never one.

use std::sync::Arc;

use tonic::Code;

use super::client::fails_with;
use super::{SuiteContext, SuiteResult};
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
        hold: true,
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
    )
}

pub(super) async fn wrong_op_unimplemented(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("wrongop", "k");
    let mut rate = ctx.clients.rate();
    let admit = proto::AdmitRequest {
        policy: "burst5".into(),
        key: key.clone(),
        cost: 1,
        hold: true,
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
        policy: "cc2".into(),
        key: key.clone(),
        tokens: 1,
    };
    fails_with(
        "Debit on concurrency cc2",
        Code::Unimplemented,
        rate.debit(debit).await,
    )?;
    let check = proto::CheckRequest {
        policy: "cc2".into(),
        key,
        cost: 1,
    };
    fails_with(
        "Check on concurrency cc2",
        Code::Unimplemented,
        rate.check(check).await,
    )?;
    let (mut fleet, reserve) = ctx.clients.fleet(proto::ReserveRequest {
        policy: "burst5".into(),
        wants: 1,
        ..Default::default()
    });
    fails_with(
        "Reserve on non-federated burst5",
        Code::Unimplemented,
        fleet.reserve(reserve).await,
    )
}

pub(super) async fn malformed_input_invalid(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("malformed", "k");
    let mut rate = ctx.clients.rate();
    let check = proto::CheckRequest {
        policy: "burst5".into(),
        key: key.clone(),
        cost: -1,
    };
    fails_with(
        "Check burst5 cost=-1",
        Code::InvalidArgument,
        rate.check(check).await,
    )?;
    let debit = proto::DebitRequest {
        policy: "tokens".into(),
        key: key.clone(),
        tokens: -5,
    };
    fails_with(
        "Debit tokens tokens=-5",
        Code::InvalidArgument,
        rate.debit(debit).await,
    )?;
    let forecast = proto::ForecastRequest {
        policy: "burst5".into(),
        key: key.clone(),
        cost: -2,
    };
    fails_with(
        "Forecast burst5 cost=-2",
        Code::InvalidArgument,
        rate.forecast(forecast).await,
    )?;
    let check = proto::CheckRequest {
        policy: String::new(),
        key,
        cost: 1,
    };
    fails_with(
        "Check with an empty policy",
        Code::InvalidArgument,
        rate.check(check).await,
    )
}
