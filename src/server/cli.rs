//! `tk-conform serve`: load the policies, pick the store, listen, sweep, and drain on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::auth::Guard;
use super::engine::Engine;
use super::fault::{Fault, Faults};
use super::grpc::{FleetService, MonitorService, RateLimiterService};
use super::policy::PolicySet;
use super::store::memory::MemoryStore;
use super::store::{Store, StoreFaults};
use crate::proto;

/// How long a drain may take before the server stops waiting for in-flight calls.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Policy file (spec 9, YAML, `version: 1`).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port; the readiness line says which.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Keep shared state in this Redis (`redis://127.0.0.1:6379`); without it, in memory.
    #[arg(long)]
    pub redis: Option<String>,
    /// The contract whose Lua scripts the Redis store runs (`<dir>/scripts/manifest.json`).
    #[arg(long, default_value = "contract")]
    pub contract: PathBuf,
    /// A concurrency lease lives this long without a Heartbeat.
    #[arg(long, default_value_t = 2000)]
    pub lease_ttl_ms: u64,
    /// Require this secret from Fleet callers (otherwise: loopback peers only).
    #[arg(long, env = "TK_FLEET_SECRET")]
    pub fleet_secret: Option<String>,
    /// Require this secret from Monitor callers (otherwise: loopback peers only).
    #[arg(long, env = "TK_MONITOR_SECRET")]
    pub monitor_secret: Option<String>,
    /// A label for this server in a multi-region fleet (shown in the readiness line).
    #[arg(long)]
    pub region: Option<String>,
    /// Test only: break one promise on purpose (repeatable).
    #[arg(long = "fault", value_enum, hide = true)]
    pub faults: Vec<Fault>,
}

/// Runs the server until SIGTERM / Ctrl-C; a start-up error is one line and exit code 2.
pub fn main(args: ServeArgs) -> std::process::ExitCode {
    crate::cli_edge::block_on("serve", run(args))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.lease_ttl_ms > 0, "--lease-ttl-ms must be at least 1");
    let policies = PolicySet::load(&args.config)?;
    let faults = Faults::new(args.faults.iter().copied());
    let store_faults = StoreFaults {
        never_reclaim: faults.has(Fault::NeverReclaim),
        ignore_heartbeat: faults.has(Fault::IgnoreHeartbeat),
        late_release_frees: faults.has(Fault::LateReleaseFrees),
        over_grant: faults.has(Fault::OverGrantReserve),
    };
    let local = Arc::new(MemoryStore::new(store_faults));
    let shared: Arc<dyn Store> = match &args.redis {
        None => local.clone(),
        Some(url) => super::store::connect_redis(url, &args.contract, store_faults)
            .await
            .with_context(|| format!("cannot use --redis {url}"))?,
    };
    let lease_ttl = Duration::from_millis(args.lease_ttl_ms);
    let engine = Arc::new(Engine::new(
        policies,
        shared,
        local,
        lease_ttl,
        faults.clone(),
    ));

    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    println!(
        "tk-conform serve: listening on {addr} (store: {}, policies: {}{}{})",
        engine.store_description(),
        engine.policy_names().collect::<Vec<_>>().join(","),
        args.region
            .as_deref()
            .map(|r| format!(", region: {r}"))
            .unwrap_or_default(),
        if faults.is_empty() {
            String::new()
        } else {
            format!(", FAULTS: {}", faults.names().join(","))
        },
    );
    let access = Access {
        fleet_secret: args.fleet_secret.clone(),
        monitor_secret: args.monitor_secret.clone(),
    };
    serve_with(listener, engine, access, async {
        wait_for_stop_signal().await;
        eprintln!("tk-conform serve: stop signal: draining in-flight calls");
    })
    .await?;
    eprintln!("tk-conform serve: stopped");
    Ok(())
}

/// Who may call the Fleet and Monitor services (`None`: anyone).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub fleet_secret: Option<String>,
    pub monitor_secret: Option<String>,
}

/// Serves the whole service door (RateLimiter, Fleet, Monitor) on `listener`, sweeping expired
/// slots in the background, until `shutdown` completes; then drains in-flight calls (bounded by
/// `DRAIN_LIMIT`). No secrets: tests run a server in process with this.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, engine, Access::default(), shutdown).await
}

/// [`serve`] with the Fleet and Monitor secrets.
pub async fn serve_with(
    listener: TcpListener,
    engine: Arc<Engine>,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_forever(
        engine.clone(),
        engine.lease_ttl(),
        shutdown_rx.clone(),
    ));
    let fleet_guard = Guard::new("x-fleet-secret", access.fleet_secret);
    let monitor_guard = Guard::new("x-monitor-secret", access.monitor_secret);
    let rate_limiter = proto::rate_limiter_server::RateLimiterServer::new(RateLimiterService {
        engine: engine.clone(),
    });
    let fleet = proto::fleet_server::FleetServer::with_interceptor(
        FleetService {
            engine: engine.clone(),
        },
        move |r| fleet_guard.check(r),
    );
    let monitor = proto::monitor_server::MonitorServer::with_interceptor(
        MonitorService {
            engine: engine.clone(),
            shutdown: shutdown_rx.clone(),
        },
        move |r| monitor_guard.check(r),
    );

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut drain_started = shutdown_rx.clone();
    let serve = Server::builder()
        .add_service(rate_limiter)
        .add_service(fleet)
        .add_service(monitor)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = shutdown_tx.send(true);
        });
    let drain_limit = async move {
        let _ = drain_started.wait_for(|stop| *stop).await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    let outcome = tokio::select! {
        served = serve => served.context("the gRPC server failed"),
        () = drain_limit => {
            eprintln!("tk-conform serve: drain took over {DRAIN_LIMIT:?}; stopping anyway");
            Ok(())
        }
    };
    sweeper.abort();
    outcome
}

/// Reclaims expired slots on a timer, so a reclaim never waits for the next Admit.
async fn sweep_forever(
    engine: Arc<Engine>,
    lease_ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (lease_ttl / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(e) = engine.sweep().await {
                    eprintln!("tk-conform serve: sweep failed (will retry): {e}");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
