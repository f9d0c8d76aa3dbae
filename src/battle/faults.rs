//! The fault schedule: at planned times after the barrier, the runner hits workers, servers or
//! Redis, and records exactly when it did (the checker's second input besides the histories).

use async_trait::async_trait;
use nix::sys::signal::Signal;
use std::time::Duration;

use super::checker::FaultRecord;
use super::history::now_us;
use super::scenario::{Fault, FaultAction};

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
    ) -> Result<(Vec<String>, Vec<String>), String>;

    /// SIGKILLs server `index` of the fleet.
    fn kill_server(&mut self, index: usize) -> Result<String, String>;

    /// Restarts Redis with its data but an empty script cache.
    async fn restart_redis(&mut self) -> Result<String, String>;

    /// Switches the fault proxy's links (`[network] proxy = true`); returns the links hit.
    fn network(&mut self, fault: &Fault) -> Result<Vec<String>, String> {
        let _ = fault;
        Err("this run has no fault proxy".into())
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
        _ => target.network(fault).map(|links| (Vec::new(), links)),
    };
    match result {
        Ok((workers, targets)) => {
            record.done_us = Some(now_us());
            record.workers = workers;
            record.targets = targets;
        }
        Err(e) => {
            record.at_us = None;
            record.error = Some(e);
        }
    }
    record
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
        ) -> Result<(Vec<String>, Vec<String>), String> {
            self.0.push(format!("{signal} {group} {index:?}"));
            Ok((vec![format!("{group}[0]")], vec!["pid 1".into()]))
        }

        fn kill_server(&mut self, index: usize) -> Result<String, String> {
            Err(format!("server {index} already gone"))
        }

        async fn restart_redis(&mut self) -> Result<String, String> {
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
        assert_eq!(records[2].error.as_deref(), Some("server 1 already gone"));
    }
}
