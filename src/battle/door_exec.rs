//! The exec door: a worker starts its own protocol-2 adapter (a real child process, its own
//! connection to the store), gives it the scenario's namespace with `reset`, configures the
//! kind the runner picked, and asks for one decision per call. The adapter is an
//! `OwnedChild` of the worker, so a SIGKILLed worker takes its adapter with it (pdeathsig).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::door::{CallError, Door, OpenError};
use crate::backend::BackendError;
use crate::backend::exec::v2::{Clock, DecisionV2, LimiterKind};
use crate::backend::exec::{ExecBackend, ExecConfig, V2Session};

/// The limiter id every worker configures.
const LIMITER: &str = "L";
/// The bound on `reset` and `configure` (an engine connecting to its store).
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct ExecDoor {
    /// Kept alive for the session: dropping it ends the adapter.
    _backend: ExecBackend,
    session: V2Session,
    key: String,
    explicit: bool,
    target: String,
}

/// What a worker needs to start its adapter.
pub struct ExecOpen<'a> {
    pub command: &'a str,
    pub url: &'a str,
    pub namespace: &'a str,
    pub kind: &'a LimiterKind,
    pub params: &'a std::collections::BTreeMap<String, f64>,
    pub key: &'a str,
    pub clock_offset_ms: i64,
    pub stderr_log: PathBuf,
    pub timeout: Duration,
    pub label: &'a str,
}

impl ExecDoor {
    pub async fn open(o: ExecOpen<'_>) -> Result<ExecDoor, OpenError> {
        let mut config = ExecConfig::new(o.command, o.stderr_log);
        config.redis_url = Some(o.url.to_owned());
        // Nine interpreters importing an engine at once on a small machine are slow to connect
        // to their store; that is set-up, not a call. Calls get the battle's bound below.
        config.request_timeout = SETUP_TIMEOUT.max(o.timeout);
        // A hang is the call's result (indeterminate), not a reason to start a fresh adapter
        // that was never told its namespace.
        config.max_restarts = 0;
        config.namespace_prefix = o.namespace.to_owned();
        if o.clock_offset_ms != 0 {
            let lib = super::clock::faketime_library().ok_or_else(|| {
                OpenError::Exec("this group runs its adapter under libfaketime, which is not installed (Debian: apt-get install faketime)".into())
            })?;
            config.env = vec![
                ("LD_PRELOAD".into(), lib.display().to_string()),
                (
                    "FAKETIME".into(),
                    format!("{:+.3}s", o.clock_offset_ms as f64 / 1000.0),
                ),
                // Timeouts and sleeps keep the real pace; only the wall clock moves.
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
        }
        let backend = ExecBackend::start(config)
            .await
            .map_err(|e| OpenError::Exec(e.to_string()))?;
        // Before the session: it holds the connection's lock until the door is dropped.
        let pid = backend.adapter_pid().await.unwrap_or_default();
        let mut session = backend
            .open_v2_in(&format!("battle::{}", o.label), o.namespace)
            .await
            .map_err(|e| OpenError::Exec(format!("reset: {e}")))?;
        session
            .configure(LIMITER, &o.kind.name, o.params)
            .await
            .map_err(|e| OpenError::Exec(format!("configure {}: {e}", o.kind.name)))?;
        session.set_request_timeout(o.timeout);
        Ok(ExecDoor {
            _backend: backend,
            session,
            key: o.key.to_owned(),
            explicit: o.kind.clock == Clock::Explicit,
            target: format!("adapter pid {pid}"),
        })
    }
}

#[async_trait]
impl Door for ExecDoor {
    fn target(&self) -> String {
        self.target.clone()
    }

    fn name(&self) -> &'static str {
        "exec"
    }

    async fn decide(&mut self, cost: u64) -> Result<(DecisionV2, Option<i64>), CallError> {
        // An explicit-clock kind gets the worker's wall clock, read once the call is on its way.
        let now_us = self.explicit.then(super::history::now_us);
        self.session
            .decide(
                LIMITER,
                &self.key,
                cost as f64,
                now_us.map(|t| t as f64 / 1000.0),
            )
            .await
            .map(|d| (d, now_us))
            .map_err(|e| match e {
                // Refused before it reached the engine: it cannot have taken effect.
                BackendError::Invalid(m) | BackendError::Unsupported(m) => CallError::Definite(m),
                // A store the adapter could not reach, a hang, a crash: it may have.
                other => CallError::Indeterminate(other.to_string()),
            })
    }
}
