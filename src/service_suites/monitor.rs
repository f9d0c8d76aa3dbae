//! Monitor: GetSnapshot counts decisions; Watch streams denials.

use std::sync::Arc;
use std::time::Duration;

use super::client::ok;
use super::rate::check;
use super::{SuiteContext, SuiteFailure, SuiteResult, expect_eq};
use crate::proto;

/// `snap` in the suites' policy file: GCRA burst 3 per hour.
pub(super) const SNAP_BURST: i64 = 3;
const WATCH_WAIT: Duration = Duration::from_secs(5);

async fn counts(ctx: &SuiteContext, step: &str) -> Result<(i64, i64), SuiteFailure> {
    let (mut monitor, request) = ctx.clients.monitor(proto::GetSnapshotRequest {});
    let snapshot = ok(step, monitor.get_snapshot(request).await)?
        .snapshot
        .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no snapshot")))?;
    let snap = snapshot
        .policies
        .iter()
        .find(|p| p.policy == "snap")
        .ok_or_else(|| {
            SuiteFailure(format!(
                "{step}: no counters for policy `snap` in {:?}",
                snapshot.policies
            ))
        })?;
    Ok((snap.allowed, snap.denied))
}

pub(super) async fn snapshot_counts_decisions(ctx: Arc<SuiteContext>) -> SuiteResult {
    let (allowed_before, denied_before) = counts(&ctx, "GetSnapshot before").await?;
    let key = ctx.key("snapshot", "k");
    let denials = 2;
    for i in 0..SNAP_BURST + denials {
        check(&ctx, &format!("Check {i} snap key={key}"), "snap", &key, 1).await?;
    }
    let (allowed_after, denied_after) = counts(&ctx, "GetSnapshot after").await?;
    let step = format!("GetSnapshot after {SNAP_BURST} admits and {denials} denials on `snap`");
    expect_eq(
        &step,
        "allowed (increase)",
        SNAP_BURST,
        allowed_after - allowed_before,
    )?;
    expect_eq(
        &step,
        "denied (increase)",
        denials,
        denied_after - denied_before,
    )
}

pub(super) async fn watch_streams_denials(ctx: Arc<SuiteContext>) -> SuiteResult {
    let (mut monitor, request) = ctx.clients.monitor(proto::WatchRequest {
        policy: "watched".into(),
    });
    let mut stream = ok("Watch watched", monitor.watch(request).await)?;
    let key = ctx.key("watch", "k");
    check(&ctx, "Check 0 watched (admitted)", "watched", &key, 1).await?;
    let denied = check(&ctx, "Check 1 watched (denied)", "watched", &key, 1).await?;
    expect_eq("Check 1 watched", "allowed", false, denied.allowed)?;
    let step = "Watch watched: the denial of Check 1";
    // Denials of other runs' keys may arrive too: read until ours, bounded in count and time.
    let read = async {
        for _ in 0..1000 {
            match stream.message().await {
                Ok(Some(item)) => {
                    if let Some(d) = item.denial
                        && d.key == key
                    {
                        return Ok(d);
                    }
                }
                Ok(None) => {
                    return Err(SuiteFailure(format!("{step}: the stream ended without it")));
                }
                Err(s) => {
                    return Err(SuiteFailure(format!(
                        "{step}: the stream failed with {:?}: {}",
                        s.code(),
                        s.message()
                    )));
                }
            }
        }
        Err(SuiteFailure(format!(
            "{step}: not among 1000 streamed denials"
        )))
    };
    let denial = tokio::time::timeout(WATCH_WAIT, read).await.map_err(|_| {
        SuiteFailure(format!(
            "{step}: expected a streamed denial for key {key}, but none came within {WATCH_WAIT:?}"
        ))
    })??;
    expect_eq(step, "policy", "watched", denial.policy.as_str())?;
    let decision = denial.decision.unwrap_or_default();
    expect_eq(step, "decision.allowed", false, decision.allowed)?;
    expect_eq(
        step,
        "decision.retryAfterMs",
        denied.retry_after_ms,
        decision.retry_after_ms,
    )
}
