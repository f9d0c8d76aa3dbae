//! Fleet.Reserve: window-coupled grants that never sum past the window's limit.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::client::{fails_with, fails_with_one_of, ok};
use super::{SuiteContext, SuiteFailure, SuiteResult, differ, expect_eq};
use crate::proto;
use crate::server::clock;

/// `federated` in the suites' policy file: fixedWindow, 10 per 2 s window, batch 4.
pub(super) const LIMIT: i64 = 10;
pub(super) const BATCH: i64 = 4;
const WINDOW_MS: i64 = 2_000;

async fn reserve(
    ctx: &SuiteContext,
    step: &str,
    wants: i64,
    axis: proto::Axis,
) -> Result<proto::Lease, SuiteFailure> {
    reserve_as(ctx, step, "tk-conform", wants, axis).await
}

async fn reserve_as(
    ctx: &SuiteContext,
    step: &str,
    domain: &str,
    wants: i64,
    axis: proto::Axis,
) -> Result<proto::Lease, SuiteFailure> {
    let request = proto::ReserveRequest {
        policy: "federated".into(),
        caller: Some(proto::Caller {
            domain: domain.into(),
            client_id: ctx.run_tag.clone(),
            region: String::new(),
            priority: 0,
        }),
        wants,
        has: 0,
        used: 0,
        axis: axis as i32,
    };
    let (mut fleet, request) = ctx.clients.fleet(request);
    ok(step, fleet.reserve(request).await)?
        .lease
        .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no lease")))
}

pub(super) async fn reserve_within_window_budget(ctx: Arc<SuiteContext>) -> SuiteResult {
    // Start at a fresh window: the budget is per policy, shared with earlier runs.
    let probe = reserve(
        &ctx,
        "probe Reserve (learn the window)",
        1,
        proto::Axis::Rate,
    )
    .await?;
    let wait = (probe.expiry_ms as f64 - clock::now_ms()).clamp(0.0, WINDOW_MS as f64) as u64;
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;

    // Asks of 3, 100 (more than a batch and than the window), 0 (means 1), then 4s until
    // refused; bounded. A grant is at most `wants` and what is left of the window (spec 8);
    // `batch` is not a bound on it.
    let asks = [3, 100, 0]
        .into_iter()
        .chain(std::iter::repeat_n(BATCH, 17));
    let mut window = None;
    let mut granted = 0;
    for (i, wants) in asks.enumerate() {
        let step = format!(
            "op {i} (Reserve federated wants={wants}, {granted} granted before in this window)"
        );
        let lease = reserve(&ctx, &step, wants, proto::Axis::Rate).await?;
        if window != Some(lease.expiry_ms) {
            // A new window (only at a slow start): its first grant is this one; count afresh.
            window = Some(lease.expiry_ms);
            granted = 0;
        }
        let asked = wants.max(1);
        let bound = asked.min(LIMIT - granted);
        if !(0..=bound).contains(&lease.capacity) {
            return Err(differ(
                &step,
                "capacity (at most wants and what is left of the window)",
                format!("0..={bound}"),
                lease.capacity,
            ));
        }
        expect_eq(&step, "limit", LIMIT, lease.limit)?;
        // So the grants of one window never sum past the policy's limit.
        granted += lease.capacity;
        if lease.capacity == 0 {
            // 0 = refused, with retry_after_ms.
            if lease.retry_after_ms <= 0 {
                return Err(differ(
                    &step,
                    "retry_after_ms (refused)",
                    "> 0",
                    lease.retry_after_ms,
                ));
            }
            return Ok(());
        }
    }
    // Twenty asks of at least 1 cannot all be granted from a window of 10 without passing it.
    Err(SuiteFailure(format!(
        "Reserve: expected a refusal once {LIMIT} were granted in one window, but none came in 20 asks"
    )))
}

/// Tries at catching one window whole: a slow machine may cross a window's end mid-suite.
const DOMAIN_TRIES: usize = 3;

pub(super) async fn reserve_budget_per_domain(ctx: Arc<SuiteContext>) -> SuiteResult {
    // Domains of this run only, so no other run or suite draws from them.
    let spent = format!("spent-{}", ctx.run_tag);
    let other = format!("other-{}", ctx.run_tag);
    for attempt in 1..=DOMAIN_TRIES {
        // Exhaust `spent`'s window (bounded: 20 asks of at least 1 pass a window of 10).
        let mut window = None;
        let mut refused = false;
        for i in 0..20 {
            let step =
                format!("try {attempt} op {i} (Reserve federated as `{spent}` wants={LIMIT})");
            let lease = reserve_as(&ctx, &step, &spent, LIMIT, proto::Axis::Rate).await?;
            if window.is_some_and(|w| w != lease.expiry_ms) {
                break;
            }
            window = Some(lease.expiry_ms);
            if lease.capacity == 0 {
                refused = true;
                break;
            }
        }
        if !refused {
            // A window ended while spending (or the server never refuses, which
            // reserve_within_window_budget reports): try a fresh window.
            continue;
        }
        let step = format!(
            "try {attempt}: Reserve federated as `{other}` wants=1, in the window `{spent}` has spent"
        );
        let lease = reserve_as(&ctx, &step, &other, 1, proto::Axis::Rate).await?;
        if Some(lease.expiry_ms) != window {
            continue;
        }
        if lease.capacity < 1 {
            return Err(differ(
                &step,
                "capacity (another caller domain has a budget of its own)",
                ">= 1",
                lease.capacity,
            ));
        }
        return Ok(());
    }
    Err(SuiteFailure(format!(
        "Reserve: in {DOMAIN_TRIES} tries, no window both refused `{spent}` and answered `{other}` \
         (each window ended mid-try, or `{spent}` was never refused; see reserve_within_window_budget)"
    )))
}

pub(super) async fn reserve_concurrency_unimplemented(ctx: Arc<SuiteContext>) -> SuiteResult {
    let request = proto::ReserveRequest {
        policy: "federated".into(),
        wants: 1,
        axis: proto::Axis::Concurrency as i32,
        ..Default::default()
    };
    let (mut fleet, request) = ctx.clients.fleet(request);
    fails_with(
        "Reserve federated axis=AXIS_CONCURRENCY",
        Code::Unimplemented,
        fleet.reserve(request).await,
    )?;
    // `idle-cc` is not federated: outside Reserve's namespace, so NOT_FOUND is allowed too
    // (ThrottleKit looks at the namespace before the axis).
    let request = proto::ReserveRequest {
        policy: "idle-cc".into(),
        wants: 1,
        axis: proto::Axis::Concurrency as i32,
        ..Default::default()
    };
    let (mut fleet, request) = ctx.clients.fleet(request);
    fails_with_one_of(
        "Reserve idle-cc (not federated) axis=AXIS_CONCURRENCY",
        &[Code::NotFound, Code::Unimplemented],
        fleet.reserve(request).await,
    )
    .map(drop)
}
