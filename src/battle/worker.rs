//! The hidden `worker` subcommand: one battle process.
//!
//! The runner writes a [`WorkerSpec`] file and starts this binary as `tk-conform worker --spec F`.
//! The worker opens its own connections, creates its ready-file, and blocks reading its stdin,
//! the read end of one pipe shared by every worker of the scenario. The runner writes the
//! go-file (the barrier's epoch time) and then closes the pipe's write end: every worker sees EOF
//! at once and starts. EOF without a go-file means the runner died, and the worker leaves without
//! a call. It then runs its plan, bounded in count and time, and records every call in its
//! JSON-lines history.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::barrier::{self, BarrierError};
use super::door::{CallError, Door, OpenError};
use super::door_redis::{DoorStore, RedisDoor};
use super::door_service::ServiceDoor;
use super::history::{Event, HistoryError, HistoryWriter, Op, Reply, now_us};
use super::scenario::MAX_DURATION_MS;
use super::spec::{DoorSpec, Operation, WorkerFault, WorkerSpec};
use crate::model::{LeaseConfig, LeaseSpender, SpendOutcome};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The spec file the runner wrote.
    #[arg(long)]
    pub spec: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot read worker spec {}", file.display())]
    Spec {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse worker spec {}", file.display())]
    SpecJson {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{label}: cannot open the {door} door")]
    Door {
        label: String,
        door: &'static str,
        #[source]
        source: Box<OpenError>,
    },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{label}: barrier: {source}")]
    Barrier {
        label: String,
        #[source]
        source: BarrierError,
    },
}

/// The `worker` subcommand's entry point.
pub fn main(args: WorkerArgs) -> ExitCode {
    barrier::process_main("worker", async { Ok(run(&args.spec).await?) })
}

pub use super::spec::REDIS_URL_ENV;

fn read_spec(file: &Path) -> Result<WorkerSpec, WorkerError> {
    let text = std::fs::read_to_string(file).map_err(|source| WorkerError::Spec {
        file: file.into(),
        source,
    })?;
    let mut spec: WorkerSpec =
        serde_json::from_str(&text).map_err(|source| WorkerError::SpecJson {
            file: file.into(),
            source,
        })?;
    if let (DoorSpec::Redis { url, .. }, Ok(real)) = (&mut spec.door, std::env::var(REDIS_URL_ENV))
    {
        *url = real;
    }
    Ok(spec)
}

/// Runs one worker; `Ok(false)` when the barrier never opened.
pub async fn run(spec_file: &Path) -> Result<bool, WorkerError> {
    let spec = read_spec(spec_file)?;
    let label = format!("{}[{}]", spec.group, spec.index);
    let timeout = Duration::from_millis(spec.call_timeout_ms.max(1));
    let door_error = |door, source| WorkerError::Door {
        label: label.clone(),
        door,
        source: Box::new(source),
    };
    let mut door: Box<dyn Door> = match &spec.door {
        DoorSpec::Redis {
            url,
            contract_dir,
            strategy,
            key,
            cluster,
            scripts_dir,
        } => Box::new(
            RedisDoor::connect_with(
                url,
                &DoorStore {
                    contract_dir: contract_dir.clone(),
                    scripts_dir: scripts_dir.clone(),
                    cluster: *cluster,
                },
                *strategy,
                key,
                timeout,
                spec.fault,
            )
            .await
            .map_err(|m| door_error("redis", m))?
            .with_clock(spec.clock.unwrap_or_default(), spec.now),
        ),
        DoorSpec::Service {
            servers,
            primary,
            policy,
            key,
        } => Box::new(
            ServiceDoor::new(servers, *primary, policy, key, &label, timeout)
                .map_err(|m| door_error("service", m))?
                .fail_over(spec.fault != Some(WorkerFault::NoFailover)),
        ),
        DoorSpec::FleetLease {
            servers,
            primary,
            policy,
            ..
        } => Box::new(
            ServiceDoor::new(servers, *primary, policy, "", &label, timeout)
                .map_err(|m| door_error("fleet-lease", m))?
                .fail_over(spec.fault != Some(WorkerFault::NoFailover)),
        ),
    };
    let mut recorder = HistoryRecorder {
        writer: HistoryWriter::create(&spec.history)?,
        seq: 0,
    };

    let Some(t0_us) = barrier::wait(&spec.ready_file, &spec.go_file)
        .await
        .map_err(|source| WorkerError::Barrier {
            label: label.clone(),
            source,
        })?
    else {
        return Ok(false);
    };
    recorder.writer.write(&Event::Start {
        group: spec.group.clone(),
        index: spec.index,
        pid: std::process::id(),
        t0_us,
    })?;
    let t0 = barrier::instant_of(t0_us);
    CallPlan::new(&spec, t0)
        .run(door.as_mut(), &mut recorder)
        .await?;
    recorder.writer.write(&Event::End { at_us: now_us() })?;
    Ok(true)
}

/// Numbers each call and writes its invoke and completion.
pub struct HistoryRecorder {
    writer: HistoryWriter,
    seq: u64,
}

impl HistoryRecorder {
    fn invoke(&mut self, op: Op, server: String) -> Result<u64, HistoryError> {
        self.seq += 1;
        self.writer.write(&Event::Invoke {
            seq: self.seq,
            at_us: now_us(),
            op,
            server,
        })?;
        Ok(self.seq)
    }

    fn complete(
        &mut self,
        seq: u64,
        result: Result<Reply, &CallError>,
    ) -> Result<(), HistoryError> {
        let at_us = now_us();
        self.writer.write(&match result {
            Ok(reply) => Event::Ok { seq, at_us, reply },
            Err(CallError::Definite(error)) => Event::Fail {
                seq,
                at_us,
                error: error.clone(),
            },
            Err(CallError::Indeterminate(error)) => Event::Indeterminate {
                seq,
                at_us,
                error: error.clone(),
            },
        })
    }
}

/// One worker's plan, with its bounds resolved against the barrier time.
struct CallPlan<'a> {
    spec: &'a WorkerSpec,
    start: Instant,
    end: Instant,
    rng: rand::rngs::StdRng,
}

impl<'a> CallPlan<'a> {
    fn new(spec: &'a WorkerSpec, t0: Instant) -> CallPlan<'a> {
        let start = t0 + Duration::from_millis(spec.start_after_ms);
        let end = start + Duration::from_millis(spec.duration_ms.unwrap_or(MAX_DURATION_MS));
        // Each worker its own stream, reproducible from the run's seed.
        let seed = spec.seed ^ (u64::from(spec.index) << 32) ^ fnv(&spec.group);
        CallPlan {
            spec,
            start,
            end,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    async fn run(
        &mut self,
        door: &mut dyn Door,
        rec: &mut HistoryRecorder,
    ) -> Result<(), HistoryError> {
        tokio::time::sleep_until(self.start).await;
        let spec = self.spec;
        let limit = spec.requests.unwrap_or(u64::MAX);
        let mut spender = match &spec.door {
            DoorSpec::FleetLease { limit, .. } => Some(LeaseSpender::new(LeaseConfig {
                limit: *limit as f64,
                ttl_ms: 1000.0,
                window_coupled: spec.fault != Some(WorkerFault::CarryCredits),
            })),
            _ => None,
        };
        let mut done = 0u64;
        while done < limit && Instant::now() < self.end {
            done += 1;
            match spec.operation {
                Operation::Check => {
                    let seq = rec.invoke(Op::Check { cost: spec.cost }, door.target())?;
                    let r = door.check(spec.cost).await;
                    rec.complete(seq, r.as_ref().map(|d| Reply::Decision { decision: *d }))?;
                }
                Operation::Debit => {
                    let [lo, hi] = spec.tokens.unwrap_or([1, 1]);
                    let tokens = self.rng.random_range(lo..=hi);
                    let seq = rec.invoke(Op::Debit { tokens }, door.target())?;
                    let r = door.debit(tokens).await;
                    rec.complete(seq, r.as_ref().map(|d| Reply::Decision { decision: *d }))?;
                }
                Operation::Admit => {
                    let held = self.admit_and_hold(door, rec).await?;
                    if held && spec.hold_once {
                        break;
                    }
                }
                Operation::Spend => {
                    let spender = spender
                        .as_mut()
                        .expect("spend runs on the fleet-lease door");
                    self.spend(spender, door, rec).await?;
                }
            }
            if spec.interval_ms > 0 {
                self.pause(Duration::from_millis(spec.interval_ms)).await;
            }
        }
        Ok(())
    }

    /// Sleeps, but never past the plan's end.
    async fn pause(&self, d: Duration) {
        tokio::time::sleep_until((Instant::now() + d).min(self.end)).await;
    }

    /// Admits; when granted, holds the slot for `hold_ms` (heartbeating every `heartbeat_ms`),
    /// then releases it. A heartbeat that finds the lease gone ends the hold early, and the
    /// release is still sent (late, on purpose: it must free nothing).
    async fn admit_and_hold(
        &mut self,
        door: &mut dyn Door,
        rec: &mut HistoryRecorder,
    ) -> Result<bool, HistoryError> {
        let spec = self.spec;
        let seq = rec.invoke(Op::Admit { cost: spec.cost }, door.target())?;
        let r = door.admit(spec.cost).await;
        rec.complete(
            seq,
            r.as_ref().map(|a| Reply::Admit {
                decision: a.decision,
                lease_id: a.lease_id.clone(),
                lease_expires_at: a.lease_expires_at,
            }),
        )?;
        let lease_id = match r {
            Ok(a) if a.decision.allowed && !a.lease_id.is_empty() => a.lease_id,
            _ => return Ok(false),
        };
        let hold_end = Instant::now() + Duration::from_millis(spec.hold_ms);
        loop {
            let next = if spec.heartbeat_ms > 0 {
                (Instant::now() + Duration::from_millis(spec.heartbeat_ms)).min(hold_end)
            } else {
                hold_end
            };
            tokio::time::sleep_until(next).await;
            if Instant::now() >= hold_end {
                break;
            }
            let ids = vec![lease_id.clone()];
            let seq = rec.invoke(
                Op::Heartbeat {
                    lease_ids: ids.clone(),
                },
                door.target(),
            )?;
            let r = door.heartbeat(&ids).await;
            rec.complete(
                seq,
                r.as_ref().map(|h| Reply::Heartbeat {
                    live: h.live.clone(),
                    reclaimed: h.reclaimed.clone(),
                    next_deadline: h.next_deadline,
                }),
            )?;
            if matches!(&r, Ok(h) if !h.live.contains(&lease_id)) {
                break;
            }
        }
        let seq = rec.invoke(
            Op::Release {
                lease_id: lease_id.clone(),
            },
            door.target(),
        )?;
        let r = door.release(&lease_id).await;
        rec.complete(seq, r.as_ref().map(|_| Reply::Released))?;
        Ok(true)
    }

    /// Spends one unit locally; when the spender needs a refresh, reserves a batch.
    async fn spend(
        &mut self,
        spender: &mut LeaseSpender,
        door: &mut dyn Door,
        rec: &mut HistoryRecorder,
    ) -> Result<(), HistoryError> {
        let spec = self.spec;
        let seq = rec.invoke(Op::Spend { cost: spec.cost }, "local".into())?;
        let now_ms = (now_us() / 1000) as f64;
        let outcome = spender
            .spend(now_ms, spec.cost as f64)
            .expect("cost is a positive whole number");
        match outcome {
            SpendOutcome::Allowed(decision) => {
                return rec.complete(seq, Ok(Reply::Decision { decision }));
            }
            SpendOutcome::NeedsRefresh => rec.complete(seq, Ok(Reply::NeedsRefresh))?,
        }
        let has = spender.credits.max(0.0) as u64;
        let seq = rec.invoke(
            Op::Reserve {
                wants: spec.batch,
                has,
            },
            door.target(),
        )?;
        let r = door.reserve(spec.batch, has).await;
        rec.complete(
            seq,
            r.as_ref().map(|g| Reply::Grant {
                capacity: g.capacity,
                expiry_ms: g.expiry_ms,
                retry_after_ms: g.retry_after_ms,
                limit: g.limit,
            }),
        )?;
        match r {
            Ok(g) if g.capacity > 0 => spender.grant(g.capacity as f64, g.expiry_ms as f64),
            Ok(g) => {
                let wait = g.retry_after_ms.clamp(1, 250) as u64;
                self.pause(Duration::from_millis(wait)).await;
            }
            Err(_) => self.pause(Duration::from_millis(20)).await,
        }
        Ok(())
    }
}

/// A stable hash of the group name, to decorrelate the groups' random streams.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
