//! The fault schedule: at planned times after the barrier, the runner hits workers, servers or
//! Redis, and records exactly when it did (the checker's second input besides the histories).

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::time::Duration;

use super::history::now_us;
use super::link::heal_name;
use super::network::NetworkError;
use super::scenario::{Fault, FaultAction};
use crate::netfault::netns::NetnsError;

/// What the runner did, and when: the checker's only other input besides the histories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRecord {
    pub name: String,
    pub action: FaultAction,
    pub planned_at_ms: u64,
    /// When it was carried out (epoch µs); `None` when it could not be.
    pub at_us: Option<i64>,
    /// When the action was complete (a restarted Redis answering again), epoch µs.
    #[serde(default)]
    pub done_us: Option<i64>,
    /// Server index for `sigkill-server`.
    pub server: Option<usize>,
    /// Worker labels (`group[i]`) it hit.
    pub workers: Vec<String>,
    /// What it hit, for people (`pid 123 holders[0]`, `server 1 127.0.0.1:4001`).
    pub targets: Vec<String>,
    pub error: Option<String>,
    /// `failover`: the replication offsets and the keys' counts at the moment it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::infra::sentinel::FailoverRecord>,
}

/// Why a fault could not be carried out (recorded; the checker then treats it as not done).
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("no live worker of group `{group}` to send {signal}")]
    NoLiveWorker { group: String, signal: Signal },
    #[error("no server {0}")]
    NoServer(usize),
    #[error("server {0} had already exited")]
    ServerGone(usize),
    #[error(transparent)]
    Signal(#[from] crate::infra::ChildError),
    #[error("cannot connect to Redis to shut it down")]
    RedisConnect(#[source] redis::RedisError),
    #[error("cannot connect to Redis to shut it down")]
    RedisConnectTimeout,
    #[error("cannot restart Redis")]
    RedisRestart(#[source] Box<crate::infra::RedisError>),
    #[error("this run's store has no replica (`[topology] redis = \"replicated\"`)")]
    NoReplica,
    #[error(transparent)]
    Failover(#[from] crate::infra::sentinel::SentinelError),
    #[error("this run has no fault proxy")]
    NoProxy,
    #[error("this run's store is not a Redis Cluster")]
    NoCluster,
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot migrate the slot")]
    Migrate(#[source] crate::infra::cluster::ClusterError),
    #[error("Redis is not in a network namespace (`[network] netns = true`)")]
    NoNamespace,
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// What the runner can do to the things it started. Each returns who was hit, for the record.
#[async_trait]
pub trait FaultTarget: Send {
    /// Signals the workers of `group` (all, or the one at `index`); returns their labels and
    /// `pid N label` descriptions.
    fn signal_workers(
        &mut self,
        group: &str,
        index: Option<u32>,
        signal: Signal,
    ) -> Result<(Vec<String>, Vec<String>), FaultError>;

    /// SIGKILLs server `index` of the fleet.
    fn kill_server(&mut self, index: usize) -> Result<String, FaultError>;

    /// Restarts Redis with its data but an empty script cache.
    async fn restart_redis(&mut self) -> Result<String, FaultError>;

    /// Fails the replicated store over to its replica; returns what was hit and the record.
    async fn failover(
        &mut self,
        unreplicated: Option<Duration>,
    ) -> Result<(Vec<String>, crate::infra::sentinel::FailoverRecord), FaultError> {
        let _ = unreplicated;
        Err(FaultError::NoReplica)
    }

    /// Moves the slot of `group`'s key to another cluster primary (`[topology] redis =
    /// "cluster"`), holding it half moved for `ask_window_ms`.
    async fn migrate_slot(&mut self, fault: &Fault) -> Result<String, FaultError> {
        let _ = fault;
        Err(FaultError::NoCluster)
    }

    /// Switches the fault proxy's links (`[network] proxy = true`); returns the links hit.
    fn network(&mut self, fault: &Fault) -> Result<Vec<String>, FaultError> {
        let _ = fault;
        Err(FaultError::NoProxy)
    }
}

/// The scenario's faults in time order, handed out as they fall due.
pub struct Schedule<'a> {
    /// Latest first, so the next one due is at the end.
    pending: Vec<&'a Fault>,
}

impl<'a> Schedule<'a> {
    pub fn new(faults: &'a [Fault]) -> Schedule<'a> {
        let mut pending: Vec<&Fault> = faults.iter().collect();
        pending.sort_by_key(|f| std::cmp::Reverse(f.at_ms));
        Schedule { pending }
    }

    /// The next fault whose time has come `elapsed` after the barrier, if any.
    pub fn due(&mut self, elapsed: Duration) -> Option<&'a Fault> {
        match self.pending.last() {
            Some(f) if Duration::from_millis(f.at_ms) <= elapsed => self.pending.pop(),
            _ => None,
        }
    }
}

/// Carries out one fault now and records when and on whom.
pub async fn carry_out(fault: &Fault, target: &mut dyn FaultTarget) -> FaultRecord {
    let at = now_us();
    let mut record = FaultRecord {
        name: fault.name.clone(),
        action: fault.action,
        planned_at_ms: fault.at_ms,
        at_us: Some(at),
        done_us: None,
        server: fault.server,
        workers: Vec::new(),
        targets: Vec::new(),
        error: None,
        failover: None,
    };
    let group = fault.group.as_deref().unwrap_or_default();
    let result = match fault.action {
        FaultAction::SigkillWorkers => target.signal_workers(group, fault.index, Signal::SIGKILL),
        FaultAction::SigstopWorkers => target.signal_workers(group, fault.index, Signal::SIGSTOP),
        FaultAction::SigcontWorkers => target.signal_workers(group, fault.index, Signal::SIGCONT),
        FaultAction::SigkillServer => target
            .kill_server(fault.server.unwrap_or_default())
            .map(|t| (Vec::new(), vec![t])),
        FaultAction::RestartRedis => target.restart_redis().await.map(|t| (Vec::new(), vec![t])),
        FaultAction::Failover => target
            .failover(fault.unreplicated_ms.map(Duration::from_millis))
            .await
            .map(|(targets, f)| {
                // The moment of the failover is when the primary stopped taking writes.
                record.at_us = Some(f.paused_us);
                record.failover = Some(f);
                (Vec::new(), targets)
            }),
        FaultAction::MigrateSlot => target
            .migrate_slot(fault)
            .await
            .map(|t| (Vec::new(), vec![t])),
        _ => target.network(fault).map(|links| (Vec::new(), links)),
    };
    match result {
        Ok((workers, targets)) => {
            // A failover is done once the sentinel names the new primary.
            record.done_us = Some(
                record
                    .failover
                    .as_ref()
                    .map_or_else(now_us, |f| f.switched_us),
            );
            record.workers = workers;
            record.targets = targets;
        }
        Err(e) => {
            record.at_us = None;
            record.error = Some(format!("{:#}", anyhow::Error::new(e)));
        }
    }
    record
}

/// `[from, to)` of every network fault, in ms after the barrier, for `result.json`.
pub fn windows(records: &[FaultRecord], t0_us: i64) -> Vec<serde_json::Value> {
    let ms = |us: i64| (us - t0_us) as f64 / 1000.0;
    records
        .iter()
        .filter(|r| r.action.is_network() && r.action != FaultAction::Heal)
        .map(|r| {
            let heal = records
                .iter()
                .find(|h| h.name == heal_name(&r.name))
                .and_then(|h| h.at_us);
            serde_json::json!({
                "fault": r.name,
                "action": r.action,
                "links": r.targets,
                "fromMs": r.at_us.map(ms),
                "toMs": heal.map(ms),
                "error": r.error,
            })
        })
        .collect()
}

/// The window `[start, end]` (epoch µs) of the network fault `name`, when it was carried out;
/// `end` is the heal, or `None` when the run ended first.
pub fn window_of(records: &[FaultRecord], name: &str) -> Option<(i64, Option<i64>)> {
    let start = records.iter().find(|r| r.name == name)?.at_us?;
    let end = records
        .iter()
        .find(|h| h.name == heal_name(name))
        .and_then(|h| h.at_us);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    #[async_trait]
    impl FaultTarget for Log {
        fn signal_workers(
            &mut self,
            group: &str,
            index: Option<u32>,
            signal: Signal,
        ) -> Result<(Vec<String>, Vec<String>), FaultError> {
            self.0.push(format!("{signal} {group} {index:?}"));
            Ok((vec![format!("{group}[0]")], vec!["pid 1".into()]))
        }

        fn kill_server(&mut self, index: usize) -> Result<String, FaultError> {
            Err(FaultError::ServerGone(index))
        }

        async fn restart_redis(&mut self) -> Result<String, FaultError> {
            self.0.push("restart".into());
            Ok("redis".into())
        }
    }

    fn fault(name: &str, at_ms: u64, action: FaultAction) -> Fault {
        Fault {
            name: name.into(),
            at_ms,
            action,
            group: Some("holders".into()),
            index: None,
            server: Some(1),
            link: None,
            for_ms: None,
            delay_ms: None,
            jitter_ms: None,
            direction: None,
            unreplicated_ms: None,
            ask_window_ms: None,
        }
    }

    #[tokio::test]
    async fn hands_faults_out_in_time_order_and_records_failures() {
        let faults = [
            fault("cont", 20, FaultAction::SigcontWorkers),
            fault("stop", 5, FaultAction::SigstopWorkers),
            fault("kill-server", 25, FaultAction::SigkillServer),
            fault("restart", 30, FaultAction::RestartRedis),
        ];
        let mut log = Log::default();
        let mut schedule = Schedule::new(&faults);
        assert!(schedule.due(Duration::from_millis(4)).is_none());
        let mut records = Vec::new();
        for ms in [5, 20, 30] {
            while let Some(f) = schedule.due(Duration::from_millis(ms)) {
                records.push(carry_out(f, &mut log).await);
            }
        }
        assert!(schedule.due(Duration::from_secs(1)).is_none());
        assert_eq!(
            log.0,
            ["SIGSTOP holders None", "SIGCONT holders None", "restart"]
        );
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["stop", "cont", "kill-server", "restart"]);
        assert_eq!(records[0].workers, ["holders[0]"]);
        assert!(records[1].at_us >= records[0].at_us);
        assert_eq!(records[2].at_us, None);
        assert_eq!(
            records[2].error.as_deref(),
            Some("server 1 had already exited")
        );
    }
}
