//! Concurrency slots: Admit, Release, Heartbeat, reclaim after the lease TTL.
//!
//! The TTL is the server's: read from `lease_expires_at` (and `next_deadline`), never assumed.
//! Every suite holds slots of its own policy (a ceiling is shared by all keys of a policy) and
//! releases what it holds however it ends, so a failed suite leaves no slot taken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::client::ok;
use super::rate::decision_of;
use super::{SuiteContext, SuiteFailure, SuiteResult, differ, expect_eq};
use crate::model::Decision;
use crate::proto;
use crate::proto::rate_limiter_client::RateLimiterClient;
use crate::server::clock;

/// How far past the lease's expiry a reclaim may land: one sweep of the server (ThrottleKit
/// sweeps every 1 s) ...
const SWEEP_ALLOWANCE: Duration = Duration::from_secs(1);
/// ... plus the calls' own latency on a loaded machine.
const CALL_MARGIN: Duration = Duration::from_millis(500);
/// A TTL read from the wire beyond this is taken as a broken `lease_expires_at`.
const MAX_TTL: Duration = Duration::from_secs(600);
const POLL_EVERY: Duration = Duration::from_millis(25);

struct Admitted {
    decision: Decision,
    lease_id: String,
    binding_axis: String,
    lease_expires_at: i64,
    /// When the reply arrived, for reading the TTL off `lease_expires_at`.
    received_at: (Instant, f64),
}

impl Admitted {
    /// The lease's TTL as the server states it, and the local instant it expires.
    fn ttl(&self, step: &str) -> Result<(Duration, Instant), SuiteFailure> {
        let (at, now_ms) = self.received_at;
        let left_ms = self.lease_expires_at as f64 - now_ms;
        if !(left_ms > 0.0 && left_ms <= MAX_TTL.as_millis() as f64) {
            return Err(differ(
                step,
                "lease_expires_at (epoch ms; the lease TTL is read from it)",
                format!("in the next {MAX_TTL:?} (now is {now_ms:.0})"),
                self.lease_expires_at,
            ));
        }
        let ttl = Duration::from_millis(left_ms.ceil() as u64);
        Ok((ttl, at + ttl))
    }
}

/// The leases a suite holds. Released by [`Holds::release_all`] on the suite's normal way out,
/// and on drop (a panic, a timeout) by a task of their own.
struct Holds {
    rate: RateLimiterClient<Channel>,
    ids: Vec<String>,
}

impl Holds {
    fn new(ctx: &SuiteContext) -> Holds {
        Holds {
            rate: ctx.clients.rate(),
            ids: Vec::new(),
        }
    }

    fn keep(&mut self, lease_id: &str) {
        self.ids.push(lease_id.to_owned());
    }

    fn forget(&mut self, lease_id: &str) {
        self.ids.retain(|id| id != lease_id);
    }

    /// Best effort: a failed Release here must not hide the suite's own outcome.
    async fn release_all(&mut self) {
        for lease_id in std::mem::take(&mut self.ids) {
            let request = proto::ReleaseRequest {
                lease_id,
                dropped: false,
            };
            let _ = self.rate.release(request).await;
        }
    }
}

impl Drop for Holds {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut rest = Holds {
            rate: self.rate.clone(),
            ids: std::mem::take(&mut self.ids),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { rest.release_all().await });
        }
    }
}

/// Runs a lifecycle suite's steps, then releases whatever they still hold, pass or fail.
macro_rules! holding {
    ($ctx:expr, $steps:expr) => {{
        let mut holds = Holds::new(&$ctx);
        let result = $steps(&$ctx, &mut holds).await;
        holds.release_all().await;
        result
    }};
}

async fn admit(
    ctx: &SuiteContext,
    holds: &mut Holds,
    step: &str,
    policy: &str,
    key: &str,
) -> Result<Admitted, SuiteFailure> {
    let request = proto::AdmitRequest {
        policy: policy.into(),
        key: key.into(),
        cost: 1,
        hold: 0,
        value: 0,
    };
    let reply = ok(step, ctx.clients.rate().admit(request).await)?;
    let received_at = (Instant::now(), clock::now_ms());
    let decision = decision_of(step, reply.decision)?;
    if decision.allowed {
        if reply.lease_id.is_empty() {
            return Err(differ(
                step,
                "lease_id",
                "non-empty (granted)",
                reply.lease_id,
            ));
        }
        holds.keep(&reply.lease_id);
    }
    // A grant, and a rate or concurrency denial, leave `policy_denied` false.
    let plain = decision.allowed || matches!(reply.binding_axis.as_str(), "rate" | "concurrency");
    if plain && reply.policy_denied {
        return Err(differ(
            step,
            &format!(
                "policy_denied (allowed = {}, binding_axis = {:?})",
                decision.allowed, reply.binding_axis
            ),
            false,
            true,
        ));
    }
    Ok(Admitted {
        decision,
        lease_id: reply.lease_id,
        binding_axis: reply.binding_axis,
        lease_expires_at: reply.lease_expires_at,
        received_at,
    })
}

async fn release(ctx: &SuiteContext, holds: &mut Holds, step: &str, lease_id: &str) -> SuiteResult {
    let request = proto::ReleaseRequest {
        lease_id: lease_id.into(),
        dropped: false,
    };
    ok(step, ctx.clients.rate().release(request).await)?;
    holds.forget(lease_id);
    Ok(())
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

/// A denial is `allowed = false`; `binding_axis` names the axis that denied.
fn expect_denied_on(step: &str, axis: &str, a: &Admitted) -> SuiteResult {
    expect_eq(step, "allowed", false, a.decision.allowed)?;
    expect_eq(step, "binding_axis", axis, a.binding_axis.as_str())
}

fn expect_granted(step: &str, a: &Admitted) -> SuiteResult {
    expect_eq(step, "allowed", true, a.decision.allowed)
}

pub(super) async fn admit_holds_until_release(ctx: Arc<SuiteContext>) -> SuiteResult {
    holding!(ctx, admit_holds_steps)
}

async fn admit_holds_steps(ctx: &SuiteContext, holds: &mut Holds) -> SuiteResult {
    let key = ctx.key("hold", "k");
    let first = admit(ctx, holds, "op 0 (Admit cc2)", "cc2", &key).await?;
    expect_granted("op 0 (Admit cc2)", &first)?;
    expect_eq("op 0 (Admit cc2)", "limit", 2, first.decision.limit)?;
    let second = admit(ctx, holds, "op 1 (Admit cc2)", "cc2", &key).await?;
    expect_granted("op 1 (Admit cc2)", &second)?;
    if first.lease_id == second.lease_id {
        return Err(differ(
            "op 1 (Admit cc2)",
            "lease_id",
            "different from op 0's",
            &second.lease_id,
        ));
    }
    let step = "op 2 (Admit cc2 at the ceiling of 2)";
    let third = admit(ctx, holds, step, "cc2", &key).await?;
    expect_denied_on(step, "concurrency", &third)?;
    release(ctx, holds, "op 3 (Release op 0's lease)", &first.lease_id).await?;
    // Release is idempotent.
    release(
        ctx,
        holds,
        "op 4 (Release op 0's lease again)",
        &first.lease_id,
    )
    .await?;
    let step = "op 5 (Admit cc2 after a Release)";
    let fourth = admit(ctx, holds, step, "cc2", &key).await?;
    expect_granted(step, &fourth)?;
    let step = "op 6 (Admit cc2 at the ceiling again)";
    let fifth = admit(ctx, holds, step, "cc2", &key).await?;
    expect_denied_on(step, "concurrency", &fifth)
}

pub(super) async fn unified_binds_tighter_axis(ctx: Arc<SuiteContext>) -> SuiteResult {
    holding!(ctx, unified_steps)
}

async fn unified_steps(ctx: &SuiteContext, holds: &mut Holds) -> SuiteResult {
    // unified-cc: burst 5, ceiling 2 -> the third concurrent Admit is refused by concurrency.
    let key = ctx.key("unified", "cc");
    for i in 0..2 {
        let step = format!("op {i} (Admit unified-cc)");
        let a = admit(ctx, holds, &step, "unified-cc", &key).await?;
        expect_granted(&step, &a)?;
    }
    let step = "op 2 (Admit unified-cc: 2 held of ceiling 2, rate has 3 left)";
    let a = admit(ctx, holds, step, "unified-cc", &key).await?;
    expect_denied_on(step, "concurrency", &a)?;
    // unified-rate: burst 2, ceiling 5 -> with slots returned, the third Admit is refused by rate.
    let key = ctx.key("unified", "rate");
    for i in 0..2 {
        let step = format!("op {} (Admit unified-rate, then Release)", 3 + i);
        let a = admit(ctx, holds, &step, "unified-rate", &key).await?;
        expect_granted(&step, &a)?;
        release(ctx, holds, &step, &a.lease_id).await?;
    }
    let step = "op 5 (Admit unified-rate: rate burst of 2 spent, no slot held)";
    let a = admit(ctx, holds, step, "unified-rate", &key).await?;
    expect_denied_on(step, "rate", &a)
}

pub(super) async fn heartbeat_keeps_hold(ctx: Arc<SuiteContext>) -> SuiteResult {
    holding!(ctx, heartbeat_steps)
}

async fn heartbeat_steps(ctx: &SuiteContext, holds: &mut Holds) -> SuiteResult {
    let key = ctx.key("heartbeat", "k");
    let held = admit(ctx, holds, "op 0 (Admit beat)", "beat", &key).await?;
    expect_granted("op 0 (Admit beat)", &held)?;
    let (ttl, _) = held.ttl("op 0 (Admit beat)")?;
    let started = Instant::now();
    // Four beats per TTL: a late beat still lands well inside the lease.
    let beat_every = ttl / 4;
    let mut beats = 0;
    while started.elapsed() < ttl * 3 {
        tokio::time::sleep(beat_every).await;
        beats += 1;
        let step = format!(
            "Heartbeat #{beats} at {:?} (TTL {ttl:?}, read from lease_expires_at)",
            started.elapsed()
        );
        let sent_ms = clock::now_ms();
        let reply = heartbeat(ctx, &step, &held.lease_id).await?;
        if !reply.live_ids.contains(&held.lease_id) {
            return Err(differ(&step, "live_ids", [&held.lease_id], reply.live_ids));
        }
        // A renewed lease runs until `next_deadline`, which is ahead of the beat.
        if (reply.next_deadline as f64) < sent_ms {
            return Err(differ(
                &step,
                "next_deadline (epoch ms)",
                format!(">= {sent_ms:.0}, the time of the beat"),
                reply.next_deadline,
            ));
        }
    }
    let step = format!(
        "Admit beat after {:?} of heartbeats (3x the TTL of {ttl:?}): the renewed hold must still block",
        started.elapsed()
    );
    let other = admit(ctx, holds, &step, "beat", &key).await?;
    expect_denied_on(&step, "concurrency", &other)
}

/// Admits `policy` until granted, bounded by `deadline`.
async fn admit_until_granted(
    ctx: &SuiteContext,
    holds: &mut Holds,
    policy: &str,
    key: &str,
    deadline: Instant,
) -> Result<Option<Admitted>, SuiteFailure> {
    let step = format!("Admit {policy} (waiting for the reclaim)");
    loop {
        let a = admit(ctx, holds, &step, policy, key).await?;
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
    holding!(ctx, abandoned_steps)
}

async fn abandoned_steps(ctx: &SuiteContext, holds: &mut Holds) -> SuiteResult {
    let key = ctx.key("abandon", "k");
    let step = "op 0 (Admit abandon, then abandon it)";
    let abandoned = admit(ctx, holds, step, "abandon", &key).await?;
    expect_granted(step, &abandoned)?;
    let (ttl, expires) = abandoned.ttl(step)?;
    let granted_at = abandoned.received_at.0;
    // Wait out the TTL without any call, so only a background sweep (or a lazy check) can reclaim.
    tokio::time::sleep_until(expires.into()).await;
    let deadline = expires + SWEEP_ALLOWANCE + CALL_MARGIN;
    if admit_until_granted(ctx, holds, "abandon", &key, deadline)
        .await?
        .is_some()
    {
        return Ok(());
    }
    Err(SuiteFailure(format!(
        "Admit abandon: expected the abandoned slot to be reclaimed within TTL + one sweep (the TTL of {ttl:?} read \
         from lease_expires_at, + {SWEEP_ALLOWANCE:?} for a sweep, + {CALL_MARGIN:?} for the calls), but every Admit \
         until {:?} after the grant was denied",
        granted_at.elapsed()
    )))
}

pub(super) async fn late_release_frees_nothing(ctx: Arc<SuiteContext>) -> SuiteResult {
    holding!(ctx, late_release_steps)
}

async fn late_release_steps(ctx: &SuiteContext, holds: &mut Holds) -> SuiteResult {
    let key = ctx.key("late", "k");
    let step = "op 0 (Admit late as A)";
    let first = admit(ctx, holds, step, "late", &key).await?;
    expect_granted(step, &first)?;
    let (_, expires) = first.ttl(step)?;
    tokio::time::sleep_until(expires.into()).await;
    let deadline = expires + SWEEP_ALLOWANCE + CALL_MARGIN;
    let Some(second) = admit_until_granted(ctx, holds, "late", &key, deadline).await? else {
        return Err(SuiteFailure(
            "setup: A's slot was never reclaimed, so B could not take it (see abandoned_hold_reclaimed)".into(),
        ));
    };
    // A's lease is gone: its late Release must not count as a release of B's slot.
    holds.forget(&first.lease_id);
    release(
        ctx,
        holds,
        "op 2 (late Release of A's reclaimed lease)",
        &first.lease_id,
    )
    .await?;
    let step = "op 3 (Admit late as C while B holds the only slot, after A's late Release)";
    let third = admit(ctx, holds, step, "late", &key).await?;
    expect_denied_on(step, "concurrency", &third)?;
    let reply = heartbeat(ctx, "op 4 (Heartbeat B)", &second.lease_id).await?;
    if !reply.live_ids.contains(&second.lease_id) {
        return Err(differ(
            "op 4 (Heartbeat B)",
            "live_ids",
            [&second.lease_id],
            reply.live_ids,
        ));
    }
    let reply = heartbeat(ctx, "op 5 (Heartbeat A, reclaimed)", &first.lease_id).await?;
    if !reply.reclaimed_ids.contains(&first.lease_id) {
        return Err(differ(
            "op 5 (Heartbeat A, reclaimed)",
            "reclaimed_ids",
            [&first.lease_id],
            reply.reclaimed_ids,
        ));
    }
    Ok(())
}
