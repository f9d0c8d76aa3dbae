//! Concurrency slots: Admit, Release, Heartbeat, reclaim after the lease TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::ok;
use super::rate::decision_of;
use super::{SuiteContext, SuiteFailure, SuiteResult, differ, expect_eq};
use crate::model::Decision;
use crate::proto;

/// How long past the lease TTL a reclaim may take (spec: within TTL + 1 s).
const RECLAIM_GRACE: Duration = Duration::from_secs(1);
const POLL_EVERY: Duration = Duration::from_millis(25);

struct Admitted {
    decision: Decision,
    lease_id: String,
    binding_axis: String,
}

async fn admit(
    ctx: &SuiteContext,
    step: &str,
    policy: &str,
    key: &str,
) -> Result<Admitted, SuiteFailure> {
    let request = proto::AdmitRequest {
        policy: policy.into(),
        key: key.into(),
        cost: 1,
        hold: true,
        value: 0,
    };
    let reply = ok(step, ctx.clients.rate().admit(request).await)?;
    let decision = decision_of(step, reply.decision)?;
    if decision.allowed == reply.lease_id.is_empty() {
        return Err(differ(
            step,
            "lease_id",
            if decision.allowed {
                "non-empty (granted)"
            } else {
                "empty (denied)"
            },
            reply.lease_id,
        ));
    }
    if reply.policy_denied == decision.allowed {
        return Err(differ(
            step,
            "policy_denied",
            !decision.allowed,
            reply.policy_denied,
        ));
    }
    Ok(Admitted {
        decision,
        lease_id: reply.lease_id,
        binding_axis: reply.binding_axis,
    })
}

async fn release(ctx: &SuiteContext, step: &str, lease_id: &str) -> SuiteResult {
    let request = proto::ReleaseRequest {
        lease_id: lease_id.into(),
        dropped: false,
    };
    ok(step, ctx.clients.rate().release(request).await).map(drop)
}

async fn heartbeat(
    ctx: &SuiteContext,
    step: &str,
    lease_id: &str,
) -> Result<proto::HeartbeatResponse, SuiteFailure> {
    let request = proto::HeartbeatRequest {
        lease_ids: vec![lease_id.into()],
    };
    ok(step, ctx.clients.rate().heartbeat(request).await)
}

fn expect_denied_on_concurrency(step: &str, a: &Admitted) -> SuiteResult {
    expect_eq(step, "allowed", false, a.decision.allowed)?;
    expect_eq(step, "binding_axis", "concurrency", a.binding_axis.as_str())?;
    if a.decision.retry_after_ms <= 0 {
        return Err(differ(
            step,
            "retryAfterMs",
            "> 0",
            a.decision.retry_after_ms,
        ));
    }
    Ok(())
}

pub(super) async fn admit_holds_until_release(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("hold", "k");
    let first = admit(&ctx, "op 0 (Admit cc2)", "cc2", &key).await?;
    expect_eq("op 0 (Admit cc2)", "allowed", true, first.decision.allowed)?;
    expect_eq("op 0 (Admit cc2)", "limit", 2, first.decision.limit)?;
    let second = admit(&ctx, "op 1 (Admit cc2)", "cc2", &key).await?;
    expect_eq("op 1 (Admit cc2)", "allowed", true, second.decision.allowed)?;
    if first.lease_id == second.lease_id {
        return Err(differ(
            "op 1 (Admit cc2)",
            "lease_id",
            "different from op 0's",
            &second.lease_id,
        ));
    }
    let third = admit(&ctx, "op 2 (Admit cc2 at the ceiling of 2)", "cc2", &key).await?;
    expect_denied_on_concurrency("op 2 (Admit cc2 at the ceiling of 2)", &third)?;
    release(&ctx, "op 3 (Release op 0's lease)", &first.lease_id).await?;
    // Release is idempotent.
    release(&ctx, "op 4 (Release op 0's lease again)", &first.lease_id).await?;
    let fourth = admit(&ctx, "op 5 (Admit cc2 after a Release)", "cc2", &key).await?;
    expect_eq(
        "op 5 (Admit cc2 after a Release)",
        "allowed",
        true,
        fourth.decision.allowed,
    )?;
    let fifth = admit(&ctx, "op 6 (Admit cc2 at the ceiling again)", "cc2", &key).await?;
    expect_denied_on_concurrency("op 6 (Admit cc2 at the ceiling again)", &fifth)?;
    for lease in [&second.lease_id, &fourth.lease_id] {
        release(&ctx, "cleanup Release", lease).await?;
    }
    Ok(())
}

pub(super) async fn unified_binds_tighter_axis(ctx: Arc<SuiteContext>) -> SuiteResult {
    // unified-cc: burst 5, ceiling 2 -> the third concurrent Admit is refused by concurrency.
    let key = ctx.key("unified", "cc");
    let mut held = Vec::new();
    for i in 0..2 {
        let step = format!("op {i} (Admit unified-cc)");
        let a = admit(&ctx, &step, "unified-cc", &key).await?;
        expect_eq(&step, "allowed", true, a.decision.allowed)?;
        held.push(a.lease_id);
    }
    let step = "op 2 (Admit unified-cc: 2 held of ceiling 2, rate has 3 left)";
    let a = admit(&ctx, step, "unified-cc", &key).await?;
    expect_denied_on_concurrency(step, &a)?;
    // unified-rate: burst 2, ceiling 5 -> with slots returned, the third Admit is refused by rate.
    let key = ctx.key("unified", "rate");
    for i in 0..2 {
        let step = format!("op {} (Admit unified-rate, then Release)", 3 + i);
        let a = admit(&ctx, &step, "unified-rate", &key).await?;
        expect_eq(&step, "allowed", true, a.decision.allowed)?;
        release(&ctx, &step, &a.lease_id).await?;
    }
    let step = "op 5 (Admit unified-rate: rate burst of 2 spent, no slot held)";
    let a = admit(&ctx, step, "unified-rate", &key).await?;
    expect_eq(step, "allowed", false, a.decision.allowed)?;
    expect_eq(step, "binding_axis", "rate", a.binding_axis.as_str())?;
    for lease in held {
        release(&ctx, "cleanup Release", &lease).await?;
    }
    Ok(())
}

pub(super) async fn heartbeat_keeps_hold(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("heartbeat", "k");
    let held = admit(&ctx, "op 0 (Admit solo)", "solo", &key).await?;
    expect_eq("op 0 (Admit solo)", "allowed", true, held.decision.allowed)?;
    let started = Instant::now();
    // Four beats per TTL: a late beat still lands well inside the lease.
    let beat_every = ctx.lease_ttl / 4;
    let mut beats = 0;
    while started.elapsed() < ctx.lease_ttl * 3 {
        tokio::time::sleep(beat_every).await;
        beats += 1;
        let step = format!(
            "Heartbeat #{beats} at {:?} (TTL {:?})",
            started.elapsed(),
            ctx.lease_ttl
        );
        let reply = heartbeat(&ctx, &step, &held.lease_id).await?;
        if !reply.live_ids.contains(&held.lease_id) {
            return Err(differ(&step, "live_ids", [&held.lease_id], reply.live_ids));
        }
    }
    let step = format!(
        "Admit solo after {:?} of heartbeats (3x TTL): the renewed hold must still block",
        started.elapsed()
    );
    let other = admit(&ctx, &step, "solo", &key).await?;
    expect_denied_on_concurrency(&step, &other)?;
    release(&ctx, "cleanup Release", &held.lease_id).await
}

/// Admits `solo` until granted, bounded by `deadline`; returns the grant and when it came.
async fn admit_until_granted(
    ctx: &SuiteContext,
    key: &str,
    deadline: Instant,
) -> Result<Option<Admitted>, SuiteFailure> {
    loop {
        let a = admit(ctx, "Admit solo (waiting for the reclaim)", "solo", key).await?;
        if a.decision.allowed {
            return Ok(Some(a));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

pub(super) async fn abandoned_hold_reclaimed(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("abandon", "k");
    let abandoned = admit(&ctx, "op 0 (Admit solo, then abandon it)", "solo", &key).await?;
    expect_eq(
        "op 0 (Admit solo, then abandon it)",
        "allowed",
        true,
        abandoned.decision.allowed,
    )?;
    let granted_at = Instant::now();
    // Wait out the TTL without any call, so only a background sweep (or a lazy check) can reclaim.
    tokio::time::sleep(ctx.lease_ttl).await;
    let deadline = granted_at + ctx.lease_ttl + RECLAIM_GRACE;
    match admit_until_granted(&ctx, &key, deadline).await? {
        Some(next) => release(&ctx, "cleanup Release", &next.lease_id).await,
        None => Err(SuiteFailure(format!(
            "Admit solo: expected the abandoned slot to be reclaimed within TTL + 1 s ({:?}), but every Admit until {:?} after the grant was denied",
            ctx.lease_ttl + RECLAIM_GRACE,
            granted_at.elapsed()
        ))),
    }
}

pub(super) async fn late_release_frees_nothing(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("late", "k");
    let first = admit(&ctx, "op 0 (Admit solo as A)", "solo", &key).await?;
    expect_eq(
        "op 0 (Admit solo as A)",
        "allowed",
        true,
        first.decision.allowed,
    )?;
    let granted_at = Instant::now();
    tokio::time::sleep(ctx.lease_ttl).await;
    let deadline = granted_at + ctx.lease_ttl + RECLAIM_GRACE;
    let Some(second) = admit_until_granted(&ctx, &key, deadline).await? else {
        return Err(SuiteFailure("setup: A's slot was never reclaimed, so B could not take it (see abandoned_hold_reclaimed)".into()));
    };
    release(
        &ctx,
        "op 2 (late Release of A's reclaimed lease)",
        &first.lease_id,
    )
    .await?;
    let step = "op 3 (Admit solo as C while B holds the only slot, after A's late Release)";
    let third = admit(&ctx, step, "solo", &key).await?;
    if third.decision.allowed {
        release(&ctx, "cleanup Release", &third.lease_id).await?;
    }
    expect_denied_on_concurrency(step, &third)?;
    let reply = heartbeat(&ctx, "op 4 (Heartbeat B)", &second.lease_id).await?;
    if !reply.live_ids.contains(&second.lease_id) {
        return Err(differ(
            "op 4 (Heartbeat B)",
            "live_ids",
            [&second.lease_id],
            reply.live_ids,
        ));
    }
    let reply = heartbeat(&ctx, "op 5 (Heartbeat A, reclaimed)", &first.lease_id).await?;
    if !reply.reclaimed_ids.contains(&first.lease_id) {
        return Err(differ(
            "op 5 (Heartbeat A, reclaimed)",
            "reclaimed_ids",
            [&first.lease_id],
            reply.reclaimed_ids,
        ));
    }
    release(&ctx, "cleanup Release", &second.lease_id).await
}
