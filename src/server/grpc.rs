//! The tonic services: translate proto messages to `Engine` calls and engine errors to the
//! status codes of spec 8. No decisions are made here.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

use super::clock;
use super::engine::{Compat, Engine, EngineError, ReserveAxis};
use super::fault::Fault;
use super::monitor::to_proto;
use crate::proto;

/// Maps an engine error to its status code; the `lax-status` fault deliberately gets it wrong.
fn status(engine: &Engine, error: EngineError) -> Status {
    let lax = engine.faults().has(Fault::LaxStatus);
    match error {
        EngineError::Invalid(m) => Status::invalid_argument(m),
        EngineError::NotFound(p) if lax => Status::internal(format!("no such policy {p}")),
        e @ EngineError::NotFound(_) => Status::not_found(e.to_string()),
        e @ EngineError::Unimplemented { .. } if lax => Status::unknown(e.to_string()),
        e @ EngineError::Unimplemented { .. } => Status::unimplemented(e.to_string()),
        EngineError::Store(e) => Status::unavailable(e.to_string()),
    }
}

#[derive(Clone)]
pub struct RateLimiterService {
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl proto::rate_limiter_server::RateLimiter for RateLimiterService {
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let r = request.into_inner();
        let decision = self
            .engine
            .check(&r.policy, &r.key, r.cost)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::CheckResponse {
            decision: Some(to_proto(&decision)),
        }))
    }

    async fn check_many(
        &self,
        request: Request<proto::CheckManyRequest>,
    ) -> Result<Response<proto::CheckManyResponse>, Status> {
        let r = request.into_inner();
        let decisions = self
            .engine
            .check_many(&r.policy, &r.keys, r.cost)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::CheckManyResponse {
            decisions: decisions.iter().map(to_proto).collect(),
        }))
    }

    async fn peek(
        &self,
        request: Request<proto::PeekRequest>,
    ) -> Result<Response<proto::PeekResponse>, Status> {
        let r = request.into_inner();
        let decision = self
            .engine
            .peek(&r.policy, &r.key)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::PeekResponse {
            decision: Some(to_proto(&decision)),
        }))
    }

    async fn forecast(
        &self,
        request: Request<proto::ForecastRequest>,
    ) -> Result<Response<proto::ForecastResponse>, Status> {
        let r = request.into_inner();
        let f = self
            .engine
            .forecast(&r.policy, &r.key, r.cost)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::ForecastResponse {
            forecast: Some(proto::Forecast {
                spendable_now: f.spendable_now,
                next_replenish_at: f.next_replenish_at,
                full_at: f.full_at,
            }),
        }))
    }

    async fn debit(
        &self,
        request: Request<proto::DebitRequest>,
    ) -> Result<Response<proto::DebitResponse>, Status> {
        let r = request.into_inner();
        let decision = self
            .engine
            .debit(&r.policy, &r.key, r.tokens)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::DebitResponse {
            decision: Some(to_proto(&decision)),
        }))
    }

    async fn admit(
        &self,
        request: Request<proto::AdmitRequest>,
    ) -> Result<Response<proto::AdmitResponse>, Status> {
        let r = request.into_inner();
        let a = self
            .engine
            .admit(&r.policy, &r.key, r.cost)
            .await
            .map_err(|e| status(&self.engine, e))?;
        let faults = self.engine.faults();
        Ok(Response::new(proto::AdmitResponse {
            // Only an experimental joint policy sets it (spec 8); this server serves none, and a
            // rate or concurrency denial leaves it false.
            policy_denied: faults.has(Fault::PolicyDeniedOnDenial) && !a.decision.allowed,
            decision: Some(to_proto(&a.decision)),
            lease_id: a.lease_id,
            lease_expires_at: if faults.has(Fault::NoLeaseExpiry) {
                0
            } else {
                a.lease_expires_at
            },
            binding_axis: a.binding_axis.to_owned(),
        }))
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        let r = request.into_inner();
        self.engine
            .release(&r.lease_id)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::ReleaseResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let h = self
            .engine
            .heartbeat(&r.lease_ids)
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::HeartbeatResponse {
            live_ids: h.live_ids,
            reclaimed_ids: h.reclaimed_ids,
            next_deadline: if self.engine.faults().has(Fault::PastDeadline) {
                clock::now_ms() as i64 - 1_000
            } else {
                h.next_deadline
            },
        }))
    }
}

#[derive(Clone)]
pub struct FleetService {
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl proto::fleet_server::Fleet for FleetService {
    async fn reserve(
        &self,
        request: Request<proto::ReserveRequest>,
    ) -> Result<Response<proto::ReserveResponse>, Status> {
        let r = request.into_inner();
        let axis = match proto::Axis::try_from(r.axis) {
            Ok(proto::Axis::Unspecified) => ReserveAxis::Unspecified,
            Ok(proto::Axis::Rate) => ReserveAxis::Rate,
            Ok(proto::Axis::Concurrency) => ReserveAxis::Concurrency,
            Ok(proto::Axis::TokenBudget) => ReserveAxis::TokenBudget,
            Err(_) => return Err(Status::invalid_argument(format!("unknown axis {}", r.axis))),
        };
        let a = self
            .engine
            .reserve(
                &r.policy,
                r.caller.as_ref().map_or("", |c| c.domain.as_str()),
                r.wants,
                axis,
            )
            .await
            .map_err(|e| status(&self.engine, e))?;
        Ok(Response::new(proto::ReserveResponse {
            lease: Some(proto::Lease {
                capacity: a.capacity,
                expiry_ms: a.expiry_ms,
                refresh_interval_ms: a.refresh_interval_ms,
                safe_capacity: a.safe_capacity,
                retry_after_ms: a.retry_after_ms,
                limit: a.limit,
            }),
        }))
    }
}

#[derive(Clone)]
pub struct MonitorService {
    pub engine: Arc<Engine>,
    /// Flips to `true` when the server drains: open `Watch` streams end so the drain can finish.
    pub shutdown: watch::Receiver<bool>,
}

type DenialStream = Pin<Box<dyn Stream<Item = Result<proto::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl proto::monitor_server::Monitor for MonitorService {
    async fn get_snapshot(
        &self,
        _request: Request<proto::GetSnapshotRequest>,
    ) -> Result<Response<proto::GetSnapshotResponse>, Status> {
        Ok(Response::new(proto::GetSnapshotResponse {
            snapshot: Some(self.engine.monitor().snapshot(clock::now_ms())),
        }))
    }

    type WatchStream = DenialStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let policy = request.into_inner().policy;
        if !policy.is_empty() && self.engine.policy_names().all(|p| p != policy) {
            return Err(Status::not_found(format!("unknown policy `{policy}`")));
        }
        let silent = self.engine.faults().has(Fault::WatchSilent);
        let mut denials = self.engine.monitor().subscribe();
        let mut shutdown = self.shutdown.clone();
        // ThrottleKit sends no response headers until the first event (spec 8 allows it): the
        // call itself waits for that event, and the stream starts with it.
        let first = if self.engine.compat() == Compat::Throttlekit {
            match next_denial(&mut denials, &mut shutdown, &policy, silent).await {
                Some(event) => Some(event),
                None => return Err(Status::unavailable("the server is draining")),
            }
        } else {
            None
        };
        let head = futures::stream::iter(first.map(|denial| {
            Ok(proto::WatchResponse {
                denial: Some(denial),
            })
        }));
        let rest =
            futures::stream::unfold((denials, shutdown), move |(mut denials, mut shutdown)| {
                let policy = policy.clone();
                async move {
                    let denial = next_denial(&mut denials, &mut shutdown, &policy, silent).await?;
                    let item = Ok(proto::WatchResponse {
                        denial: Some(denial),
                    });
                    Some((item, (denials, shutdown)))
                }
            });
        let stream = futures::StreamExt::chain(head, rest);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The next denial of `policy` ("" = all) a watcher gets; `None` when the stream must end.
async fn next_denial(
    denials: &mut broadcast::Receiver<proto::DenialEvent>,
    shutdown: &mut watch::Receiver<bool>,
    policy: &str,
    silent: bool,
) -> Option<proto::DenialEvent> {
    loop {
        if *shutdown.borrow() {
            return None;
        }
        tokio::select! {
            _ = shutdown.changed() => return None,
            next = denials.recv() => match next {
                Ok(denial) if !silent && (policy.is_empty() || denial.policy == policy) => {
                    return Some(denial);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        }
    }
}
