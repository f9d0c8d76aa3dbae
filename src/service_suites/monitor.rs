//! Monitor: GetSnapshot counts decisions within one window; Watch streams denials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::client::ok;
use super::rate::check;
use super::{SuiteContext, SuiteFailure, SuiteResult, differ, expect_eq};
use crate::proto;

/// `snap` in the suites' policy file: GCRA burst 3 per hour.
pub(super) const SNAP_BURST: i64 = 3;
const WATCH_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for the event of one denial before causing another.
const EVENT_WAIT: Duration = Duration::from_millis(250);
/// Snapshot pairs tried before giving up on finding two in one counting window.
const SNAPSHOT_TRIES: usize = 3;

struct Counted {
    /// `generated_at / window_ms`: the counting window the snapshot is in.
    window: i64,
    allowed: i64,
    denied: i64,
}

async fn counts(ctx: &SuiteContext, step: &str) -> Result<Counted, SuiteFailure> {
    let (mut monitor, request) = ctx.clients.monitor(proto::GetSnapshotRequest {});
    let snapshot = ok(step, monitor.get_snapshot(request).await)?
        .snapshot
        .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no snapshot")))?;
    let meta = snapshot.meta.clone().unwrap_or_default();
    if meta.window_ms <= 0 {
        return Err(differ(
            step,
            "meta.window_ms (the counters' rolling window)",
            "> 0",
            meta.window_ms,
        ));
    }
    let snap = snapshot
        .policies
        .iter()
        .find(|p| p.name == "snap")
        .ok_or_else(|| {
            SuiteFailure(format!(
                "{step}: no PolicySummary named `snap` in {:?}",
                snapshot
                    .policies
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>()
            ))
        })?;
    Ok(Counted {
        window: meta.generated_at.div_euclid(meta.window_ms),
        allowed: snap.allowed,
        denied: snap.denied,
    })
}

pub(super) async fn snapshot_counts_decisions(ctx: Arc<SuiteContext>) -> SuiteResult {
    let denials = 2;
    for attempt in 0..SNAPSHOT_TRIES {
        let before = counts(&ctx, &format!("try {attempt}: GetSnapshot before")).await?;
        let key = ctx.key("snapshot", &format!("k{attempt}"));
        for i in 0..SNAP_BURST + denials {
            check(&ctx, &format!("Check {i} snap key={key}"), "snap", &key, 1).await?;
        }
        let after = counts(&ctx, &format!("try {attempt}: GetSnapshot after")).await?;
        if after.window != before.window {
            // The counters restarted in between: the two snapshots are not comparable.
            continue;
        }
        let step = format!(
            "try {attempt}: GetSnapshot after {SNAP_BURST} admits and {denials} denials on `snap` (same window)"
        );
        expect_eq(
            &step,
            "allowed (increase)",
            SNAP_BURST,
            after.allowed - before.allowed,
        )?;
        return expect_eq(
            &step,
            "denied (increase)",
            denials,
            after.denied - before.denied,
        );
    }
    Err(SuiteFailure(format!(
        "GetSnapshot: in {SNAPSHOT_TRIES} tries, the snapshots before and after never fell in one counting window \
         (generated_at / window_ms)"
    )))
}

/// Aborts the stream's reader when the suite ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why no (further) denial can come from a Watch stream.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("the stream failed with {:?}: {}", .0.code(), .0.message())]
    Failed(#[source] tonic::Status),
    #[error("the stream ended")]
    Ended,
    #[error("the stream's reader stopped")]
    ReaderStopped,
}

type Streamed = Result<proto::DenialEvent, StreamError>;

/// Opens Watch in a task of its own: a server may send no headers until the first event, so
/// waiting here for the stream to open before causing a denial could wait forever.
fn start_watch(ctx: &SuiteContext, policy: &str) -> (AbortOnDrop, mpsc::Receiver<Streamed>) {
    let (tx, rx) = mpsc::channel(64);
    let (mut monitor, request) = ctx.clients.monitor(proto::WatchRequest {
        policy: policy.into(),
    });
    let task = tokio::spawn(async move {
        let mut stream = match monitor.watch(request).await {
            Ok(response) => response.into_inner(),
            Err(s) => {
                let _ = tx.send(Err(StreamError::Failed(s))).await;
                return;
            }
        };
        // Bounded: a busy server's stream is not read forever.
        for _ in 0..10_000 {
            let item = match stream.message().await {
                Ok(Some(item)) => match item.denial {
                    Some(denial) => Ok(denial),
                    None => continue,
                },
                Ok(None) => Err(StreamError::Ended),
                Err(s) => Err(StreamError::Failed(s)),
            };
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    (AbortOnDrop(task), rx)
}

/// The next streamed denial of `key`; other keys' denials are passed over.
async fn next_of(rx: &mut mpsc::Receiver<Streamed>, key: &str) -> Streamed {
    loop {
        match rx.recv().await {
            Some(Ok(event)) if event.key == key => return Ok(event),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e),
            None => return Err(StreamError::ReaderStopped),
        }
    }
}

pub(super) async fn watch_streams_denials(ctx: Arc<SuiteContext>) -> SuiteResult {
    // Watch first, then the denials it waits for.
    let (_reader, mut events) = start_watch(&ctx, "watched");
    let key = ctx.key("watch", "k");
    check(&ctx, "Check 0 watched (admitted)", "watched", &key, 1).await?;
    let step = "Watch watched: a DenialEvent for the denials of Check 1, 2, ...";
    let started = Instant::now();
    let mut denied = 0;
    // The stream may not be open yet when a denial happens: deny again until one is streamed.
    while started.elapsed() < WATCH_WAIT {
        denied += 1;
        let d = check(
            &ctx,
            &format!("Check {denied} watched (denied)"),
            "watched",
            &key,
            1,
        )
        .await?;
        expect_eq(
            &format!("Check {denied} watched"),
            "allowed",
            false,
            d.allowed,
        )?;
        match tokio::time::timeout(EVENT_WAIT, next_of(&mut events, &key)).await {
            Ok(Ok(event)) => {
                return expect_eq(step, "DenialEvent.policy", "watched", event.policy.as_str());
            }
            Ok(Err(e)) => return Err(SuiteFailure(format!("{step}: {e}"))),
            Err(_) => continue,
        }
    }
    Err(SuiteFailure(format!(
        "{step}: expected a streamed denial for key {key}, but none came within {WATCH_WAIT:?} \
         ({denied} denials caused after Watch was started)"
    )))
}
