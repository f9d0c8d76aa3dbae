//! The service door: gRPC to one server of the fleet, failing over to the next one when the
//! connection fails. Also carries `Fleet.Reserve` for the fleet-lease door.

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::door::{AdmitReply, CallError, Door, Grant, HeartbeatReply, OpenError};
use super::history::server_label;
use crate::model::Decision;
use crate::proto;
use crate::proto::fleet_client::FleetClient;
use crate::proto::rate_limiter_client::RateLimiterClient;

pub struct ServiceDoor {
    servers: Vec<(String, Channel)>,
    current: usize,
    policy: String,
    key: String,
    client_id: String,
    timeout: Duration,
    /// Whether a connection failure moves calls to the next server (off only for the
    /// `no-failover` worker fault).
    fail_over: bool,
}

impl ServiceDoor {
    /// `servers` are `host:port` addresses; calls start at `primary` and move on after a
    /// connection failure. Channels connect lazily, so a dead server fails its call, not this.
    pub fn new(
        servers: &[String],
        primary: usize,
        policy: &str,
        key: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<ServiceDoor, OpenError> {
        let mut channels = Vec::new();
        for addr in servers {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|source| OpenError::Address {
                    addr: addr.clone(),
                    source,
                })?
                .connect_timeout(timeout)
                .timeout(timeout)
                .tcp_nodelay(true);
            channels.push((addr.clone(), endpoint.connect_lazy()));
        }
        if channels.is_empty() {
            return Err(OpenError::NoServer);
        }
        Ok(ServiceDoor {
            current: primary % channels.len(),
            servers: channels,
            policy: policy.into(),
            key: key.into(),
            client_id: client_id.into(),
            timeout,
            fail_over: true,
        })
    }

    /// Turns fail-over on or off (off makes the deliberately broken `no-failover` client).
    pub fn fail_over(mut self, on: bool) -> ServiceDoor {
        self.fail_over = on;
        self
    }

    fn channel(&self) -> Channel {
        self.servers[self.current].1.clone()
    }

    /// Classifies a failed call and fails over when the server could not be reached.
    fn failed(&mut self, status: Status) -> CallError {
        let text = format!("{}: {}", code_name(status.code()), status.message());
        let text = match status.source() {
            Some(source) => format!("{text} ({source})"),
            None => text,
        };
        let refused = connection_refused(&status);
        let transport = matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        );
        if (transport || refused) && self.fail_over {
            self.current = (self.current + 1) % self.servers.len();
        }
        if refused {
            CallError::Definite(text)
        } else if transport || matches!(status.code(), Code::Internal | Code::Aborted) {
            CallError::Indeterminate(text)
        } else {
            CallError::Definite(text)
        }
    }

    /// A whole-call deadline on top of tonic's, so a stopped server can never hang a worker.
    async fn bounded<T>(
        &mut self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout + Duration::from_millis(200), call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(self.failed(status)),
            Err(_) => Err(self.failed(Status::deadline_exceeded("no answer in time"))),
        }
    }
}

fn connection_refused(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

fn decision(d: Option<proto::Decision>) -> Result<Decision, CallError> {
    let d = d.ok_or_else(|| CallError::Definite("reply without a decision".into()))?;
    Ok(Decision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_at: d.reset_at,
        retry_after_ms: d.retry_after_ms,
    })
}

#[async_trait]
impl Door for ServiceDoor {
    fn target(&self) -> String {
        server_label(self.current, &self.servers[self.current].0)
    }

    fn name(&self) -> &'static str {
        "service"
    }

    async fn check(&mut self, cost: u64) -> Result<Decision, CallError> {
        let mut client = RateLimiterClient::new(self.channel());
        let request = proto::CheckRequest {
            policy: self.policy.clone(),
            key: self.key.clone(),
            cost: cost as i64,
        };
        let reply = self.bounded(client.check(request)).await?;
        decision(reply.decision)
    }

    async fn debit(&mut self, tokens: u64) -> Result<Decision, CallError> {
        let mut client = RateLimiterClient::new(self.channel());
        let request = proto::DebitRequest {
            policy: self.policy.clone(),
            key: self.key.clone(),
            tokens: tokens as i64,
        };
        let reply = self.bounded(client.debit(request)).await?;
        decision(reply.decision)
    }

    async fn admit(&mut self, cost: u64) -> Result<AdmitReply, CallError> {
        let mut client = RateLimiterClient::new(self.channel());
        let request = proto::AdmitRequest {
            policy: self.policy.clone(),
            key: self.key.clone(),
            cost: cost as i64,
            hold: 0,
            value: 0,
        };
        let reply = self.bounded(client.admit(request)).await?;
        Ok(AdmitReply {
            decision: decision(reply.decision)?,
            lease_id: reply.lease_id,
            lease_expires_at: reply.lease_expires_at,
        })
    }

    async fn heartbeat(&mut self, lease_ids: &[String]) -> Result<HeartbeatReply, CallError> {
        let mut client = RateLimiterClient::new(self.channel());
        let request = proto::HeartbeatRequest {
            lease_ids: lease_ids.to_vec(),
        };
        let reply = self.bounded(client.heartbeat(request)).await?;
        Ok(HeartbeatReply {
            live: reply.live_ids,
            reclaimed: reply.reclaimed_ids,
            next_deadline: reply.next_deadline,
        })
    }

    async fn release(&mut self, lease_id: &str) -> Result<(), CallError> {
        let mut client = RateLimiterClient::new(self.channel());
        let request = proto::ReleaseRequest {
            lease_id: lease_id.into(),
            dropped: false,
        };
        self.bounded(client.release(request)).await.map(|_| ())
    }

    async fn reserve(&mut self, wants: u64, has: u64) -> Result<Grant, CallError> {
        let mut client = FleetClient::new(self.channel());
        let request = proto::ReserveRequest {
            policy: self.policy.clone(),
            caller: Some(proto::Caller {
                domain: "tk-conform-battle".into(),
                client_id: self.client_id.clone(),
                region: String::new(),
                priority: 0,
            }),
            wants: wants as i64,
            has: has as i64,
            used: 0,
            axis: proto::Axis::Rate as i32,
        };
        let reply = self.bounded(client.reserve(request)).await?;
        let lease = reply
            .lease
            .ok_or_else(|| CallError::Definite("Reserve reply without a lease".into()))?;
        Ok(Grant {
            capacity: lease.capacity,
            expiry_ms: lease.expiry_ms,
            retry_after_ms: lease.retry_after_ms,
            limit: lease.limit,
        })
    }
}
