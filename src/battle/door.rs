//! The doors a worker goes through, behind one trait so the worker loop is the same for all.
//!
//! Every call ends one of three ways, which is exactly what a history records: a reply, a
//! definite failure (it cannot have taken effect: refused connection, an error answer), or an
//! indeterminate one (timeout, connection lost mid-call: it may have taken effect).

use async_trait::async_trait;

use crate::model::Decision;

/// Why a door could not be opened (the worker then leaves before the barrier).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Scripts(#[from] crate::redis_scripts::ScriptSetError),
    #[error(transparent)]
    Script(#[from] crate::redis_scripts::ScriptCallError),
    #[error("{url}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("{0}")]
    Sentinel(String),
    #[error("{url}: no connection within {ms} ms")]
    Timeout { url: String, ms: u128 },
    #[error("bad server address {addr}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the service door needs at least one server")]
    NoServer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Cannot have taken effect.
    Definite(String),
    /// May have taken effect.
    Indeterminate(String),
}

impl CallError {
    pub fn message(&self) -> &str {
        match self {
            CallError::Definite(m) | CallError::Indeterminate(m) => m,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitReply {
    pub decision: Decision,
    pub lease_id: String,
    pub lease_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub live: Vec<String>,
    pub reclaimed: Vec<String>,
    pub next_deadline: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub capacity: i64,
    pub expiry_ms: i64,
    pub retry_after_ms: i64,
    pub limit: i64,
}

fn unsupported(door: &str, op: &str) -> CallError {
    CallError::Definite(format!("the {door} door does not serve {op}"))
}

/// One worker's way to the limiter. Calls are made one at a time.
#[async_trait]
pub trait Door: Send {
    /// Where the next call goes, as the history records it.
    fn target(&self) -> String;

    fn name(&self) -> &'static str;

    async fn check(&mut self, cost: u64) -> Result<Decision, CallError> {
        let _ = cost;
        Err(unsupported(self.name(), "check"))
    }

    async fn debit(&mut self, tokens: u64) -> Result<Decision, CallError> {
        let _ = tokens;
        Err(unsupported(self.name(), "debit"))
    }

    async fn admit(&mut self, cost: u64) -> Result<AdmitReply, CallError> {
        let _ = cost;
        Err(unsupported(self.name(), "admit"))
    }

    async fn heartbeat(&mut self, lease_ids: &[String]) -> Result<HeartbeatReply, CallError> {
        let _ = lease_ids;
        Err(unsupported(self.name(), "heartbeat"))
    }

    async fn release(&mut self, lease_id: &str) -> Result<(), CallError> {
        let _ = lease_id;
        Err(unsupported(self.name(), "release"))
    }

    async fn reserve(&mut self, wants: u64, has: u64) -> Result<Grant, CallError> {
        let _ = (wants, has);
        Err(unsupported(self.name(), "reserve"))
    }
}
