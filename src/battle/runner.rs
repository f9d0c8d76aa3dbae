//! Runs one scenario: provision Redis and the fleet, start the workers behind the barrier,
//! inject the faults on schedule, wait (bounded), tear everything down, and judge.
//!
//! Everything started here is an [`OwnedChild`]: its own process group, killed on drop and by
//! the kernel if the harness dies, so no process of a run outlives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::checker::{self, ExecFacts, Judgement, Verdict};
use super::faults::{self, FaultError, FaultRecord, FaultTarget, Schedule, carry_out};
use super::file_error::FileError;
use super::history::{self, now_us};
use super::network::{self, Network};
use super::policy::{self, PolicyFacts};
use super::scenario::{
    Assertion, Door, FaultAction, MAX_DURATION_MS, RedisTopology, Scenario, WorkerGroup,
};
use super::script_audit;
use super::spawn::{SpawnError, Worker, describe_exit, spawn_worker, tail, wait_ready};
use super::spec::{DoorSpec, WorkerFault, WorkerSpec};
use super::store_check;
use crate::backend::exec::v2::{Clock, LimiterKind};
use crate::backend::service_process::{
    Placeholders, ProcessError, ServerProcess, TemplateError, fill_template,
};
use crate::infra::cluster::{ClusterError, LocalCluster};
use crate::infra::sentinel::ReplicatedRedis;
use crate::infra::{RedisInstance, RedisOptions, free_loopback_port};
use crate::model::Strategy;
use crate::report::write_atomic;

/// The reference server, as a `--server-cmd` template.
pub const REFERENCE_SERVER: &str = "{exe} serve --config {policy} --host 127.0.0.1 --port {port} \
                                    --redis {redis} --key-prefix {key_prefix} --contract {contract} \
                                    --lease-ttl-ms {lease_ttl_ms} --fail {fail}";

/// The `--server-cmd` placeholder a server must honour to be run on a shared Redis: every key it
/// writes goes under `<key_prefix>:`.
pub const KEY_PREFIX_PLACEHOLDER: &str = "{key_prefix}";

/// Beyond the scenario's own bounds, before the runner kills the workers itself.
const GRACE: Duration = Duration::from_secs(10);

/// What every scenario of one battle run shares.
#[derive(Debug, Clone)]
pub struct BattleConfig {
    pub exe: PathBuf,
    pub contract_dir: PathBuf,
    pub fleet: Option<usize>,
    /// `None`: the reference server ([`REFERENCE_SERVER`]).
    pub server_cmd: Option<String>,
    pub seed: u64,
    pub redis: RedisOptions,
    pub worker_fault: Option<WorkerFault>,
    pub call_timeout_ms: u64,
    /// `battle --scripts DIR`: the direct door runs these scripts instead of the contract's.
    pub scripts_dir: Option<PathBuf>,
    /// Unique per run: each scenario's keys live under `<run_id>:<scenario>:`, so runs and
    /// scenarios never share state on an external Redis (and the run can delete its own keys).
    pub run_id: String,
    /// `battle --adapter`: the engine exec scenarios aim at.
    pub exec: Option<ExecEngine>,
}

/// A protocol-2 adapter, as its `hello` declared it (the CLI asked once, before any scenario).
#[derive(Debug, Clone)]
pub struct ExecEngine {
    pub command: String,
    pub kinds: Vec<LimiterKind>,
    /// `battle --kind`: judge this kind only (else each scenario takes the first declared kind
    /// of one of its families).
    pub kind: Option<String>,
}

/// Why an exec scenario does not apply to the adapter given (the scenario is skipped, saying so).
#[derive(Debug, thiserror::Error)]
enum NotApplicable {
    #[error("aims at an engine: give `battle --adapter CMD` (a protocol-2 adapter)")]
    NoAdapter,
    #[error("the scenario has no [exec] table")]
    NoExecTable,
    #[error("n/a: kind `{kind}` is not of the families this scenario judges ({families})")]
    KindNotJudged { kind: String, families: String },
    #[error(
        "n/a: the adapter declares no kind of the families this scenario judges ({families}); it declares {declared}"
    )]
    NoKindJudged { families: String, declared: String },
    #[error("n/a")]
    Parameters(#[source] super::scenario::NoAcceptedValue),
    #[error(
        "n/a: kind `{kind}` follows the explicit clock: the harness sends each `now`, so a skewed adapter clock is never read"
    )]
    ExplicitClockSkew { kind: String },
}

/// Which kind an exec scenario judges, with what parameters, or why it does not apply.
fn exec_facts(scenario: &Scenario, cfg: &BattleConfig) -> Result<ExecFacts, NotApplicable> {
    let engine = cfg.exec.as_ref().ok_or(NotApplicable::NoAdapter)?;
    let plan = scenario
        .plan
        .exec
        .as_ref()
        .ok_or(NotApplicable::NoExecTable)?;
    let families = || {
        plan.families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = match &engine.kind {
        Some(name) => engine
            .kinds
            .iter()
            .find(|k| &k.name == name)
            .filter(|k| plan.families.contains(&k.family))
            .ok_or_else(|| NotApplicable::KindNotJudged {
                kind: name.clone(),
                families: families(),
            })?,
        None => engine
            .kinds
            .iter()
            .find(|k| plan.families.contains(&k.family))
            .ok_or_else(|| NotApplicable::NoKindJudged {
                families: families(),
                declared: engine
                    .kinds
                    .iter()
                    .map(|k| k.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    let params = plan.params_for(kind).map_err(NotApplicable::Parameters)?;
    let offsets: BTreeMap<String, i64> = scenario
        .plan
        .workers
        .iter()
        .filter_map(|g| g.clock.map(|c| (g.group.clone(), c.offset_ms)))
        .filter(|(_, o)| *o != 0)
        .collect();
    if !offsets.is_empty() && kind.clock == Clock::Explicit {
        return Err(NotApplicable::ExplicitClockSkew {
            kind: kind.name.clone(),
        });
    }
    Ok(ExecFacts {
        kind: kind.clone(),
        params,
        offsets,
    })
}

/// The faults with their random delays drawn (`random_within_ms`), from the run's seed.
fn with_random_delays(faults: &[super::scenario::Fault], seed: u64) -> Vec<super::scenario::Fault> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    faults
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if let Some(w) = f.random_within_ms.take() {
                f.at_ms += rng.random_range(0..=w);
            }
            f
        })
        .collect()
}

/// Why the harness could not run a scenario (the scenario's verdict is then `unknown`).
#[derive(Debug, thiserror::Error)]
#[error("scenario {scenario}")]
pub struct RunError {
    pub scenario: String,
    #[source]
    pub source: SetupError,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot create the barrier pipe")]
    Barrier(#[source] std::io::Error),
    #[error(transparent)]
    Scenario(#[from] super::scenario::ScenarioError),
    #[error(transparent)]
    Policy(#[from] crate::server::policy::PolicyError),
    #[error(transparent)]
    Redis(#[from] crate::infra::RedisError),
    #[error("cannot start the Redis Cluster")]
    Cluster(#[source] ClusterError),
    #[error("cannot watch the store's script calls (MONITOR)")]
    Audit(#[source] super::script_audit::AuditError),
    #[error(transparent)]
    Sentinel(#[from] crate::infra::sentinel::SentinelError),
    #[error(transparent)]
    Server(#[from] ServerStartError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("worker {worker} left no history (exit {exit}): {tail}")]
    NoHistory {
        worker: String,
        exit: String,
        tail: String,
    },
    #[error("worker {worker} failed ({exit}): {tail}")]
    WorkerFailed {
        worker: String,
        exit: String,
        tail: String,
    },
    #[error("workers still running {seconds} s after the plan's bound: killed")]
    TimedOut { seconds: u64 },
    #[error("no redis-server on PATH")]
    NoRedisBinary,
    #[error(transparent)]
    Netns(#[from] crate::netfault::netns::NetnsError),
    #[error(transparent)]
    Network(#[from] super::network::NetworkError),
}

/// A worker group that cannot be given the spec it asks for.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("group `{group}` uses policy `{policy}`, which the policy file does not define")]
    UnknownPolicy { group: String, policy: String },
    #[error("group `{group}`: the redis door needs a rate policy, `{policy}` is a {label}")]
    NotRate {
        group: String,
        policy: String,
        label: String,
    },
    #[error("group `{0}`: the exec door needs `battle --adapter`")]
    NoEngine(String),
    #[error(
        "group `{group}`: the fleet-lease door needs a federated policy, `{policy}` is a {label}"
    )]
    NotFederated {
        group: String,
        policy: String,
        label: String,
    },
}

/// A fleet server that did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ServerStartError {
    #[error("no free port")]
    Port(#[source] std::io::Error),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(
        "this scenario skews a server's clock with libfaketime, which is not installed \
         (Debian: apt-get install faketime)"
    )]
    NoFaketime,
    #[error("server {index}")]
    Process {
        index: usize,
        #[source]
        source: ProcessError,
    },
}

/// One scenario's outcome, written as `result.json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioResult {
    pub scenario: String,
    pub description: String,
    pub verdict: Verdict,
    /// Set when the harness itself could not run the scenario (the verdict is then `unknown`).
    pub error: Option<String>,
    pub skipped: Option<String>,
    #[serde(with = "crate::report::seed_text")]
    pub seed: u64,
    pub fleet: usize,
    pub server_cmd: String,
    pub redis: String,
    /// Every key of the scenario is under `<keyPrefix>:` (when the fleet honours it).
    pub key_prefix: String,
    pub duration_ms: f64,
    pub judgements: Vec<Judgement>,
    pub faults: Vec<serde_json::Value>,
    /// Exec door: the kind judged and its `configure` parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<serde_json::Value>,
    /// Network faults as windows (ms after the barrier) and the proxy's own log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fault_windows: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<crate::netfault::NetEvent>,
    pub workers: Vec<serde_json::Value>,
    /// The run waited this long for a fixed window's edge to pass (`window_edge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_wait_ms: Option<u64>,
    /// `battle --retry-unknown`: the headlines of the earlier attempts that were unknown, whose
    /// files are under `attempts/<n>/`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_attempts: Vec<String>,
}

impl ScenarioResult {
    /// The line the summary table and JUnit show.
    pub fn headline(&self) -> String {
        if let Some(e) = &self.error {
            return format!("harness error: {e}");
        }
        if let Some(s) = &self.skipped {
            return format!("skipped: {s}");
        }
        let worst = self
            .judgements
            .iter()
            .find(|j| j.verdict == self.verdict)
            .or(self.judgements.first());
        let line = worst
            .map(|j| format!("{}: {}", j.assertion, j.summary))
            .unwrap_or_default();
        match self.unknown_attempts.len() {
            0 => line,
            n => format!("{line} (attempt {}: the {n} before were unknown)", n + 1),
        }
    }
}

impl BattleConfig {
    /// The prefix every key of `scenario` lives under.
    pub fn namespace(&self, scenario: &Scenario) -> String {
        format!("{}:{}", self.run_id, scenario.name)
    }

    /// Whether the fleet puts its keys under the scenario's prefix (the reference server does; a
    /// `--server-cmd` does when it passes `{key_prefix}` on).
    fn fleet_namespaced(&self) -> bool {
        self.server_cmd
            .as_deref()
            .is_none_or(|t| t.contains(KEY_PREFIX_PLACEHOLDER))
    }

    /// The prefix the direct door puts before a policy's `<prefix>:<identity>` keys, so it shares
    /// state with the fleet (one oracle, two doors): the scenario's, when the fleet uses it too.
    pub(crate) fn direct_namespace(&self, scenario: &Scenario) -> Option<String> {
        (scenario.fleet_size(self.fleet) == 0 || self.fleet_namespaced())
            .then(|| self.namespace(scenario))
    }
}

/// Runs `scenario` with its files under `dir`; writes `dir/result.json`.
pub async fn run_scenario(scenario: &Scenario, cfg: &BattleConfig, dir: &Path) -> ScenarioResult {
    let started = Instant::now();
    let fleet = scenario.fleet_size(cfg.fleet);
    let mut result = ScenarioResult {
        scenario: scenario.name.clone(),
        description: scenario.plan.description.clone(),
        verdict: Verdict::Unknown,
        error: None,
        skipped: None,
        seed: cfg.seed,
        fleet,
        server_cmd: if fleet == 0 {
            String::new()
        } else {
            cfg.server_cmd
                .clone()
                .unwrap_or_else(|| REFERENCE_SERVER.into())
        },
        redis: String::new(),
        key_prefix: cfg.namespace(scenario),
        duration_ms: 0.0,
        judgements: Vec::new(),
        faults: Vec::new(),
        engine: None,
        fault_windows: Vec::new(),
        network: Vec::new(),
        workers: Vec::new(),
        edge_wait_ms: None,
        unknown_attempts: Vec::new(),
    };
    // On a Redis the harness did not start, the scenario's keys go however it ends (an
    // interrupt deletes them too, through the registration).
    let namespace = cfg
        .redis
        .url
        .as_deref()
        .map(|url| crate::infra::cleanup::Namespace::register(url, &result.key_prefix));
    if let Err(source) = battle(scenario, cfg, dir, &mut result).await {
        let error = RunError {
            scenario: scenario.name.clone(),
            source,
        };
        result.error = Some(crate::cli_edge::render(&anyhow::Error::new(error)));
    }
    // Every process of the scenario is gone by now (dropped with `battle`'s locals).
    if let Some(namespace) = namespace
        && let Err(e) = namespace.delete().await
        && result.error.is_none()
    {
        result.error = Some(format!("cannot delete the scenario's keys: {e}"));
    }
    result.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    write_result(&result, dir);
    result
}

/// Writes `dir/result.json` (atomically; a log that cannot be written loses only itself).
pub fn write_result(result: &ScenarioResult, dir: &Path) {
    if let Ok(json) = serde_json::to_vec_pretty(result) {
        let _ = write_atomic(&dir.join("result.json"), &json);
    }
}

async fn battle(
    scenario: &Scenario,
    cfg: &BattleConfig,
    dir: &Path,
    result: &mut ScenarioResult,
) -> Result<(), SetupError> {
    for sub in ["histories", "workers", "servers"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(FileError::on("create", &dir.join(sub)))?;
    }
    let exec = if scenario.is_exec() {
        match exec_facts(scenario, cfg) {
            Ok(facts) => Some(facts),
            Err(reason) => {
                result.skipped = Some(format!("{:#}", anyhow::Error::new(reason)));
                return Ok(());
            }
        }
    } else {
        None
    };
    if let Some(f) = &exec {
        result.engine = Some(json!({
            "command": cfg.exec.as_ref().map(|e| e.command.clone()),
            "kind": f.kind.name,
            "family": f.kind.family.name(),
            "clock": f.kind.clock.name(),
            "params": f.params,
        }));
    }
    let policy_file = dir.join("policy.yaml");
    let policies = if exec.is_some() {
        BTreeMap::new()
    } else {
        let yaml = scenario.policy_yaml()?;
        std::fs::write(&policy_file, &yaml).map_err(FileError::on("write", &policy_file))?;
        policy::read(&scenario.file.display().to_string(), &yaml)?
    };

    let restarts = scenario
        .plan
        .faults
        .iter()
        .any(|f| f.action == FaultAction::RestartRedis);
    if restarts && cfg.redis.url.is_some() {
        result.skipped =
            Some("restarts Redis, which an external --redis-url does not allow".into());
        return Ok(());
    }
    // A real partition needs Redis in a namespace; the run then uses it like an external one.
    let mut netns = None;
    let mut options = cfg.redis.clone();
    if scenario.plan.network.netns {
        if cfg.redis.url.is_some() {
            result.skipped = Some(
                "puts Redis in a network namespace, which an external --redis-url does not allow"
                    .into(),
            );
            return Ok(());
        }
        if let Err(e) = crate::netfault::netns::available() {
            result.skipped = Some(format!("puts Redis in a network namespace: {e}"));
            return Ok(());
        }
        let binary = redis_binary(cfg)?;
        let ns = crate::netfault::netns::NetnsRedis::start(&binary)
            .await
            .map_err(SetupError::Netns)?;
        options.url = Some(ns.url().to_string());
        netns = Some(ns);
    }
    let store = if scenario.plan.topology.redis == RedisTopology::Replicated {
        if cfg.redis.url.is_some() {
            result.skipped = Some(
                "needs a primary, a replica and a sentinel of its own, which an external \
                 --redis-url does not allow"
                    .into(),
            );
            return Ok(());
        }
        let Some(sentinel) = crate::infra::sentinel::find_sentinel_binary() else {
            result.skipped = Some(
                "needs redis-sentinel, which is not on PATH (Debian: apt-get install redis-sentinel)"
                    .into(),
            );
            return Ok(());
        };
        let binary = redis_binary(cfg)?;
        Store::Replicated(Box::new(ReplicatedRedis::start(&binary, &sentinel).await?))
    } else if scenario.plan.topology.redis == RedisTopology::Cluster {
        if cfg.redis.url.is_some() {
            result.skipped = Some(
                "starts a Redis Cluster of its own, which an external --redis-url cannot be".into(),
            );
            return Ok(());
        }
        let binary = redis_binary(cfg)?;
        Store::Cluster(
            LocalCluster::start(&binary)
                .await
                .map_err(SetupError::Cluster)?,
        )
    } else {
        Store::Single(RedisInstance::provision(&options).await?)
    };
    let redis = &store;
    result.redis = redis.describe();
    // `cluster-keys`: MONITOR on every node from before the first script call.
    let watch = if scenario
        .plan
        .assertions
        .iter()
        .any(|a| matches!(a, Assertion::ClusterKeys { .. }))
    {
        Some(
            script_audit::watch(&redis.urls().await)
                .await
                .map_err(SetupError::Audit)?,
        )
    } else {
        None
    };

    let mut net = scenario.plan.network.proxy.then(Network::new);
    let fleet_size = result.fleet;
    let template = cfg.server_cmd.as_deref().unwrap_or(REFERENCE_SERVER);
    let mut servers = Vec::new();
    for index in 0..fleet_size {
        let url = match &mut net {
            Some(n) => n
                .redis_for_server(index, &redis.url())
                .await
                .map_err(SetupError::Network)?,
            None => redis.url(),
        };
        servers.push(start_server(template, index, cfg, scenario, &policy_file, &url, dir).await?);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();

    // The start barrier: one pipe, its read end every worker's stdin.
    let (barrier_read, barrier_write) = std::io::pipe().map_err(SetupError::Barrier)?;
    let go_file = dir.join("workers").join("go");
    let mut workers = Vec::new();
    for group in &scenario.plan.workers {
        let (group_redis, group_addrs) = match &mut net {
            Some(n) if group.door == Door::Redis => (
                n.redis_for_group(&group.group, &redis.url())
                    .await
                    .map_err(SetupError::Network)?,
                addrs.clone(),
            ),
            Some(n) => (
                redis.url(),
                n.servers_for_group(&group.group, &addrs)
                    .await
                    .map_err(SetupError::Network)?,
            ),
            None => (redis.url(), addrs.clone()),
        };
        // On a cluster a group starts at the node serving its key (a cluster-aware door
        // finds the others itself; a cluster-unaware one stays there).
        let group_redis = match (redis, policies.get(&group.policy)) {
            (Store::Cluster(c), Some(facts)) => c
                .url_for_key(&store_key(cfg, scenario, group, facts))
                .await
                .map_err(SetupError::Cluster)?,
            _ => group_redis,
        };
        for index in 0..group.count {
            let mut spec = worker_spec(
                scenario,
                cfg,
                group,
                index,
                &policies,
                &group_addrs,
                &group_redis,
                dir,
                &go_file,
                exec.as_ref(),
            )?;
            if let DoorSpec::Redis { cluster, .. } = &mut spec.door {
                *cluster = matches!(redis, Store::Cluster(_));
            }
            workers.push(spawn_worker(&cfg.exe, &spec, &barrier_read, dir)?);
        }
    }
    drop(barrier_read);
    wait_ready(&mut workers).await?;
    result.edge_wait_ms = wait_clear_of_window_edges(scenario, &policies).await;

    let t0_us = now_us();
    let t0 = Instant::now();
    write_atomic(&go_file, t0_us.to_string().as_bytes())
        .map_err(FileError::on("write", &go_file))?;
    drop(barrier_write);

    let keys = scenario
        .plan
        .workers
        .iter()
        .filter_map(|g| {
            let facts = policies.get(&g.policy)?;
            Some((g.group.clone(), store_key(cfg, scenario, g, facts)))
        })
        .collect();
    let mut target = Target {
        workers,
        servers,
        redis: store,
        net,
        netns,
        watched_keys: watched_keys(scenario, cfg, &policies),
        resume_after: Duration::from_millis(
            scenario
                .plan
                .network
                .call_timeout_ms
                .unwrap_or(cfg.call_timeout_ms),
        ) + STALE_PRIMARY_MARGIN,
        keys,
    };
    let deadline = t0 + plan_bound(scenario) + GRACE;
    let delayed = with_random_delays(&scenario.plan.faults, cfg.seed);
    let planned = network::with_heals(&delayed);
    let mut schedule = Schedule::new(&planned);
    let mut records: Vec<FaultRecord> = Vec::new();
    let mut timed_out = false;
    loop {
        if target
            .workers
            .iter_mut()
            .all(|w| w.child.try_exit().is_some())
        {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        if let Some(f) = schedule.due(t0.elapsed()) {
            records.push(carry_out(f, &mut target).await);
            continue;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Teardown: a stopped worker must not keep a slot past the run; everything is killed.
    for w in &mut target.workers {
        w.child.kill();
    }
    for s in &mut target.servers {
        s.process.kill();
    }

    let mut histories = Vec::new();
    for w in &mut target.workers {
        let exit = w.child.try_exit();
        let killed = records
            .iter()
            .any(|r| r.workers.contains(&w.label) && r.action == FaultAction::SigkillWorkers);
        let read = match std::fs::metadata(&w.history) {
            Ok(m) if m.len() > 0 => Some(history::read(&w.history)),
            _ => None,
        };
        let calls = match &read {
            Some(Ok(h)) => h.calls.len(),
            _ => 0,
        };
        result.workers.push(json!({
            "worker": w.label,
            "pid": w.child.pid(),
            "exit": exit.map(describe_exit),
            "killedByFault": killed,
            "calls": calls,
            "history": w.history.strip_prefix(dir).unwrap_or(&w.history),
        }));
        match read {
            Some(Ok(h)) => histories.push(h),
            Some(Err(e)) => return Err(e.into()),
            None if killed => {}
            None => {
                return Err(SetupError::NoHistory {
                    worker: w.label.clone(),
                    exit: exit.map(describe_exit).unwrap_or_else(|| "none".into()),
                    tail: tail(&w.stderr),
                });
            }
        }
        if !killed && exit.is_some_and(|s| s.code() != Some(0)) && !timed_out {
            return Err(SetupError::WorkerFailed {
                worker: w.label.clone(),
                exit: exit.map(describe_exit).unwrap_or_default(),
                tail: tail(&w.stderr),
            });
        }
    }
    if timed_out {
        return Err(SetupError::TimedOut {
            seconds: GRACE.as_secs(),
        });
    }
    result.faults = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["atMs"] = json!(r.at_us.map(|t| (t - t0_us) as f64 / 1000.0));
            v
        })
        .collect();
    result.fault_windows = faults::windows(&records, t0_us);
    if let Some(n) = &target.net {
        result.network = n.log();
    }
    if let Some(facts) = &exec {
        let keys: std::collections::BTreeSet<&str> = scenario
            .plan
            .workers
            .iter()
            .map(|g| g.key.as_str())
            .collect();
        let snapshot = store_check::exec_snapshot(
            &target.redis.url(),
            &cfg.namespace(scenario),
            cfg.redis.url.is_none(),
            facts.shape().ttl_bound,
            keys.len() as u64,
            facts.kind.family.name(),
        )
        .await;
        result.judgements = checker::judge_all(
            &scenario.plan,
            &histories,
            &records,
            Some(&snapshot),
            Some(facts),
        );
        result.verdict = checker::overall(&result.judgements);
        return Ok(());
    }
    if let Store::Replicated(r) = &target.redis {
        for (name, log) in r.logs() {
            let _ = std::fs::copy(log, dir.join("servers").join(name));
        }
    }
    // The store as the run left it: read directly, never through the proxy (behind Sentinel,
    // on the primary it names now).
    let store_urls = target.redis.urls().await;
    let mut snapshot = store_check::snapshot(
        scenario,
        &store_check::StoreScope {
            key_of: &|g, facts| store_key(cfg, scenario, g, facts),
            namespace: cfg.direct_namespace(scenario),
            granted_lease_ms: store_check::granted_lease_ms(&histories),
        },
        &policies,
        &store_urls,
        fleet_size,
    )
    .await;
    if let Some(watch) = watch {
        snapshot.scripts = Some(script_audit::finish(watch, &known_scripts(cfg)).await);
    }
    result.judgements =
        checker::judge_with_store(&scenario.plan, &histories, &records, Some(&snapshot));
    result.verdict = checker::overall(&result.judgements);
    Ok(())
}

/// The redis-server the harness starts itself: `--redis-server`, or the first on PATH.
fn redis_binary(cfg: &BattleConfig) -> Result<PathBuf, SetupError> {
    cfg.redis
        .server_binary
        .clone()
        .or_else(crate::infra::find_redis_binary)
        .ok_or(SetupError::NoRedisBinary)
}

/// Sleeps until every clock the run uses (the machine's, each server's and each group's
/// offset) is far enough from a fixed window's edge to run the whole plan in one window
/// (`window_edge`); returns the wait, if there was one.
async fn wait_clear_of_window_edges(
    scenario: &Scenario,
    policies: &BTreeMap<String, PolicyFacts>,
) -> Option<u64> {
    let widths: Vec<u64> = policies
        .values()
        .filter_map(|p| match &p.strategy {
            // Widths are whole milliseconds in any policy file; a cast saturates otherwise.
            Some(Strategy::FixedWindow(o)) => Some(o.window_ms as u64),
            _ => None,
        })
        .collect();
    let topology = &scenario.plan.topology;
    let offsets: Vec<i64> = std::iter::once(0)
        .chain(topology.server_clock_offsets_ms.iter().copied())
        .chain(
            scenario
                .plan
                .workers
                .iter()
                .filter_map(|g| g.clock.as_ref().map(|c| c.offset_ms)),
        )
        .collect();
    let run_ms = plan_bound(scenario).as_millis() as u64;
    let now_ms = now_us().div_euclid(1000);
    let wait = super::window_edge::wait_ms(now_ms, &widths, &offsets, run_ms);
    if wait == 0 {
        return None;
    }
    tokio::time::sleep(Duration::from_millis(wait)).await;
    Some(wait)
}

/// The latest moment any group can still be working, from the scenario's own bounds.
pub fn plan_bound(scenario: &Scenario) -> Duration {
    let ms = scenario
        .plan
        .workers
        .iter()
        .map(|g| g.start_after_ms + g.duration_ms.unwrap_or(MAX_DURATION_MS) + g.hold_ms)
        .chain(
            scenario
                .plan
                .faults
                .iter()
                .map(|f| f.at_ms + f.random_within_ms.unwrap_or(0) + f.for_ms.unwrap_or(0)),
        )
        .max()
        .unwrap_or(0);
    Duration::from_millis(ms)
}

struct Server {
    index: usize,
    addr: String,
    process: ServerProcess,
}

/// Starts server `index` from the template and waits until it accepts connections.
async fn start_server(
    template: &str,
    index: usize,
    cfg: &BattleConfig,
    scenario: &Scenario,
    policy_file: &Path,
    redis_url: &str,
    dir: &Path,
) -> Result<Server, ServerStartError> {
    let port = free_loopback_port().map_err(ServerStartError::Port)?;
    let argv = fill_template(
        template,
        &Placeholders {
            exe: cfg.exe.display().to_string(),
            port: Some(port),
            policy: policy_file.display().to_string(),
            redis: Some(redis_url.to_string()),
            index,
            contract: absolute(&cfg.contract_dir).display().to_string(),
            lease_ttl_ms: scenario.plan.topology.lease_ttl_ms,
            key_prefix: cfg.namespace(scenario),
            fail: scenario
                .plan
                .topology
                .fail
                .unwrap_or_default()
                .name()
                .to_string(),
        },
    )?;
    let offset = scenario
        .plan
        .topology
        .server_clock_offsets_ms
        .get(index)
        .copied()
        .unwrap_or(0);
    let mut env = Vec::new();
    if offset != 0 {
        // libfaketime preloaded into the server itself (not the `faketime` wrapper, whose
        // forked child would outlive a SIGKILLed harness): only its wall clock moves.
        let lib = super::clock::faketime_library().ok_or(ServerStartError::NoFaketime)?;
        env.push(("LD_PRELOAD".to_string(), lib.display().to_string()));
        env.push((
            "FAKETIME".to_string(),
            format!("{:+.3}s", offset as f64 / 1000.0),
        ));
    }
    let log = dir.join("servers").join(format!("server-{index}.log"));
    let process = ServerProcess::start_with_env(&argv, Some(port), Some(log), &env)
        .await
        .map_err(|source| ServerStartError::Process { index, source })?;
    Ok(Server {
        index,
        addr: process.addr.to_string(),
        process,
    })
}

#[allow(clippy::too_many_arguments)]
fn worker_spec(
    scenario: &Scenario,
    cfg: &BattleConfig,
    group: &WorkerGroup,
    index: u32,
    policies: &BTreeMap<String, PolicyFacts>,
    servers: &[String],
    redis_url: &str,
    dir: &Path,
    go_file: &Path,
    exec: Option<&ExecFacts>,
) -> Result<WorkerSpec, SpecError> {
    let identity = identity(cfg, group);
    let primary = group.server.unwrap_or(index as usize);
    let door = match (group.door, exec, &cfg.exec) {
        (Door::Exec, Some(facts), Some(engine)) => DoorSpec::Exec {
            command: engine.command.clone(),
            url: redis_url.into(),
            namespace: cfg.namespace(scenario),
            kind: facts.kind.clone(),
            params: facts.params.clone(),
            key: group.key.clone(),
            clock_offset_ms: group.clock.map_or(0, |c| c.offset_ms),
        },
        (Door::Exec, ..) => return Err(SpecError::NoEngine(group.group.clone())),
        _ => contract_door(
            cfg, scenario, group, policies, servers, redis_url, &identity, primary,
        )?,
    };
    let name = format!("{}-{index}", group.group);
    Ok(WorkerSpec {
        scenario: scenario.name.clone(),
        group: group.group.clone(),
        index,
        seed: cfg.seed,
        door,
        operation: group.operation,
        cost: group.cost,
        tokens: group.tokens,
        requests: group.requests,
        duration_ms: group.duration_ms,
        interval_ms: group.interval_ms,
        start_after_ms: group.start_after_ms,
        hold_ms: group.hold_ms,
        heartbeat_ms: group.heartbeat_ms,
        hold_once: group.hold_once,
        batch: group.batch,
        call_timeout_ms: scenario
            .plan
            .network
            .call_timeout_ms
            .unwrap_or(cfg.call_timeout_ms),
        history: dir.join("histories").join(format!("{name}.jsonl")),
        ready_file: dir.join("workers").join(format!("{name}.ready")),
        go_file: go_file.to_path_buf(),
        fault: cfg.worker_fault,
        clock: group.clock,
        now: group.now,
    })
}

/// A contract door's spec: the policy's strategy straight on Redis, or the fleet's servers.
#[allow(clippy::too_many_arguments)]
fn contract_door(
    cfg: &BattleConfig,
    scenario: &Scenario,
    group: &WorkerGroup,
    policies: &BTreeMap<String, PolicyFacts>,
    servers: &[String],
    redis_url: &str,
    identity: &str,
    primary: usize,
) -> Result<DoorSpec, SpecError> {
    let policy = policies
        .get(&group.policy)
        .ok_or_else(|| SpecError::UnknownPolicy {
            group: group.group.clone(),
            policy: group.policy.clone(),
        })?;
    let identity = identity.to_owned();
    Ok(match group.door {
        Door::Redis | Door::Exec => {
            let Some(strategy) = &policy.strategy else {
                return Err(SpecError::NotRate {
                    group: group.group.clone(),
                    policy: group.policy.clone(),
                    label: policy.label.clone(),
                });
            };
            DoorSpec::Redis {
                url: redis_url.into(),
                contract_dir: cfg.contract_dir.clone(),
                strategy: *strategy,
                key: store_key(cfg, scenario, group, policy),
                cluster: false,
                scripts_dir: cfg.scripts_dir.clone(),
            }
        }
        Door::Service => DoorSpec::Service {
            servers: servers.to_vec(),
            primary,
            policy: group.policy.clone(),
            key: identity,
        },
        Door::FleetLease => {
            let (Some(strategy), true) = (&policy.strategy, policy.federated) else {
                return Err(SpecError::NotFederated {
                    group: group.group.clone(),
                    policy: group.policy.clone(),
                    label: policy.label.clone(),
                });
            };
            DoorSpec::FleetLease {
                servers: servers.to_vec(),
                primary,
                policy: group.policy.clone(),
                limit: strategy.limit() as u64,
            }
        }
    })
}

/// The identity a group works on: its key, made unique per run.
pub(crate) fn identity(cfg: &BattleConfig, group: &WorkerGroup) -> String {
    format!("{}-{}", cfg.run_id, group.key)
}

/// The store key a group's rate decisions live under, for both doors: spec 9's
/// `<prefix>:<identity>`, under the scenario's namespace when the fleet uses one too.
pub(crate) fn store_key(
    cfg: &BattleConfig,
    scenario: &Scenario,
    group: &WorkerGroup,
    policy: &PolicyFacts,
) -> String {
    let key = format!("{}:{}", policy.prefix, identity(cfg, group));
    match cfg.direct_namespace(scenario) {
        Some(ns) => format!("{ns}:{key}"),
        None => key,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The old primary stays frozen this long past the clients' call bound after the sentinel
/// switched, so no call a correct client sent it before the switch can still be answered.
const STALE_PRIMARY_MARGIN: Duration = Duration::from_millis(1000);

/// Every script whose calls `cluster-keys` may meet, by name and code: the direct door's
/// (the contract's, or `--scripts DIR`) and the reference server's own.
fn known_scripts(cfg: &BattleConfig) -> Vec<(String, String)> {
    let set = match &cfg.scripts_dir {
        Some(dir) => crate::redis_scripts::ScriptSet::from_scripts_dir(dir),
        None => crate::redis_scripts::ScriptSet::from_contract_dir(&cfg.contract_dir),
    };
    let mut all: Vec<(String, String)> = set
        .map(|s| {
            s.scripts()
                .iter()
                .map(|l| (l.entry.name.clone(), l.code.clone()))
                .collect()
        })
        .unwrap_or_default();
    all.extend(
        crate::server::store::redis::own_scripts()
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string())),
    );
    all
}

/// The scenario's store: one Redis, a primary and a replica behind a sentinel, or a cluster
/// of three primaries.
enum Store {
    Single(RedisInstance),
    Replicated(Box<ReplicatedRedis>),
    Cluster(LocalCluster),
}

impl Store {
    /// What workers and servers are given: a `redis://` URL, the sentinel's, or a cluster's
    /// first node.
    fn url(&self) -> String {
        match self {
            Store::Single(r) => r.url().to_string(),
            Store::Replicated(r) => r.url(),
            Store::Cluster(c) => c.urls().remove(0),
        }
    }

    /// Every node to watch or read directly (behind Sentinel, the primary it names now).
    async fn urls(&self) -> Vec<String> {
        match self {
            Store::Single(r) => vec![r.url().to_string()],
            Store::Replicated(r) => vec![r.primary_url().await.unwrap_or_else(|e| e.to_string())],
            Store::Cluster(c) => c.urls(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Store::Single(r) => r.describe(),
            Store::Replicated(r) => r.describe(),
            Store::Cluster(c) => c.describe(),
        }
    }
}

/// The fixedWindow keys the groups share, whose counts a failover records on both nodes.
fn watched_keys(
    scenario: &Scenario,
    cfg: &BattleConfig,
    policies: &BTreeMap<String, PolicyFacts>,
) -> Vec<String> {
    let mut keys: Vec<String> = scenario
        .plan
        .workers
        .iter()
        .filter(|g| matches!(g.door, Door::Redis | Door::Service))
        .filter_map(|g| {
            let facts = policies.get(&g.policy)?;
            matches!(facts.strategy, Some(crate::model::Strategy::FixedWindow(_)))
                .then(|| store_key(cfg, scenario, g, facts))
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What the fault schedule acts on.
struct Target {
    workers: Vec<Worker>,
    servers: Vec<Server>,
    redis: Store,
    net: Option<Network>,
    netns: Option<crate::netfault::netns::NetnsRedis>,
    watched_keys: Vec<String>,
    resume_after: Duration,
    /// Each group's store key (the one `migrate-slot` moves the slot of).
    keys: BTreeMap<String, String>,
}

#[async_trait]
impl FaultTarget for Target {
    fn signal_workers(
        &mut self,
        group: &str,
        index: Option<u32>,
        signal: Signal,
    ) -> Result<(Vec<String>, Vec<String>), FaultError> {
        let (mut labels, mut targets) = (Vec::new(), Vec::new());
        for w in &mut self.workers {
            if w.group != group || index.is_some_and(|i| i != w.index) {
                continue;
            }
            if w.child.try_exit().is_some() {
                continue;
            }
            w.child.signal(signal)?;
            labels.push(w.label.clone());
            targets.push(format!("pid {} {}", w.child.pid(), w.label));
        }
        if labels.is_empty() {
            return Err(FaultError::NoLiveWorker {
                group: group.to_owned(),
                signal,
            });
        }
        Ok((labels, targets))
    }

    fn kill_server(&mut self, index: usize) -> Result<String, FaultError> {
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.index == index)
            .ok_or(FaultError::NoServer(index))?;
        if server.process.try_exit().is_some() {
            return Err(FaultError::ServerGone(index));
        }
        let pid = server.process.pid();
        server.process.try_signal(Signal::SIGKILL)?;
        Ok(format!("server {index} {} (pid {pid})", server.addr))
    }

    fn network(&mut self, fault: &super::scenario::Fault) -> Result<Vec<String>, FaultError> {
        let namespace = fault.action == FaultAction::NetnsPartition
            || (fault.action == FaultAction::Heal && fault.link.is_none());
        if namespace {
            let Some(ns) = &mut self.netns else {
                return Err(FaultError::NoNamespace);
            };
            let name = ns.host().name().to_string();
            let done = if fault.action == FaultAction::Heal {
                ns.host().heal()
            } else {
                ns.host().partition()
            };
            done?;
            let rules = ns.host().rules().unwrap_or_default();
            return Ok(vec![format!(
                "namespace {name} (redis pid {}): iptables {}",
                ns.pid(),
                rules.split_whitespace().collect::<Vec<_>>().join(" ")
            )]);
        }
        match &self.net {
            Some(n) => Ok(n.apply(fault)?),
            None => Err(FaultError::NoProxy),
        }
    }

    async fn failover(
        &mut self,
        unreplicated: Option<Duration>,
    ) -> Result<(Vec<String>, crate::infra::sentinel::FailoverRecord), FaultError> {
        let Store::Replicated(r) = &self.redis else {
            return Err(FaultError::NoReplica);
        };
        let f = r
            .failover(&self.watched_keys, self.resume_after, unreplicated)
            .await?;
        let cut = unreplicated.map_or(String::new(), |d| {
            format!("replica cut off {} ms before; ", d.as_millis())
        });
        let target = format!(
            "{cut}primary {} frozen at offset {} (replica at {}), sentinel switched to {} after {} ms, \
             old primary resumed {} ms later",
            f.old_primary,
            f.primary_offset,
            f.replica_offset,
            f.new_primary,
            (f.switched_us - f.paused_us) / 1000,
            (f.resumed_us - f.switched_us) / 1000,
        );
        Ok((vec![target], f))
    }

    async fn migrate_slot(&mut self, fault: &super::scenario::Fault) -> Result<String, FaultError> {
        let Store::Cluster(cluster) = &self.redis else {
            return Err(FaultError::NoCluster);
        };
        let group = fault.group.as_deref().unwrap_or_default();
        let key = self
            .keys
            .get(group)
            .ok_or_else(|| FaultError::Unsupported(format!("group `{group}` has no store key")))?;
        let window = Duration::from_millis(fault.ask_window_ms.unwrap_or(0));
        let migration = cluster
            .migrate_slot(key, window)
            .await
            .map_err(FaultError::Migrate)?;
        Ok(migration.to_string())
    }

    async fn restart_redis(&mut self) -> Result<String, FaultError> {
        let Store::Single(redis) = &mut self.redis else {
            return Err(FaultError::Unsupported(
                "`restart-redis` restarts one server, not a cluster".into(),
            ));
        };
        let started = Instant::now();
        // SHUTDOWN SAVE keeps the data (reloaded at start) and loses the script cache.
        let client = redis::Client::open(redis.url()).map_err(FaultError::RedisConnect)?;
        let mut con = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| FaultError::RedisConnectTimeout)?
        .map_err(FaultError::RedisConnect)?;
        let _: Result<(), _> = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async(&mut con)
            .await;
        redis
            .restart()
            .await
            .map_err(|e| FaultError::RedisRestart(Box::new(e)))?;
        Ok(format!(
            "{} restarted with its data and an empty script cache in {} ms",
            redis.describe(),
            started.elapsed().as_millis()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_with_no_accepted_value_is_skipped_naming_kind_and_parameter() {
        let reason = NotApplicable::Parameters(super::super::scenario::NoAcceptedValue {
            kind: "fw".into(),
            parameter: "windowMs".into(),
        });
        assert_eq!(
            format!("{:#}", anyhow::Error::new(reason)),
            "n/a: kind `fw` accepts no value of `windowMs`"
        );
    }
}
