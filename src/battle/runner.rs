//! Runs one scenario: provision Redis and the fleet, start the workers behind the barrier,
//! inject the faults on schedule, wait (bounded), tear everything down, and judge.
//!
//! Everything started here is an [`OwnedChild`]: its own process group, killed on drop and by
//! the kernel if the harness dies, so no process of a run outlives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::checker::{self, FaultRecord, Judgement, Verdict};
use super::faults::{FaultTarget, Schedule, carry_out};
use super::history::{self, now_us};
use super::network::{self, Network};
use super::policy::{self, PolicyFacts};
use super::scenario::{Door, FaultAction, MAX_DURATION_MS, Scenario, WorkerGroup};
use super::store_check;
use super::worker::{DoorSpec, WorkerFault, WorkerSpec};
use crate::infra::{OwnedChild, RedisInstance, RedisOptions, free_loopback_port};
use crate::report::write_atomic;

/// The reference server, as a `--server-cmd` template.
pub const REFERENCE_SERVER: &str = "{exe} serve --config {policy} --host 127.0.0.1 --port {port} \
                                    --redis {redis} --key-prefix {key_prefix} --contract {contract} \
                                    --lease-ttl-ms {lease_ttl_ms} --fail {fail}";

/// The `--server-cmd` placeholder a server must honour to be run on a shared Redis: every key it
/// writes goes under `<key_prefix>:`.
pub const KEY_PREFIX_PLACEHOLDER: &str = "{key_prefix}";

/// How long a server may take to accept connections.
const SERVER_START: Duration = Duration::from_secs(20);
/// How long workers may take to open their connections.
const WORKERS_READY: Duration = Duration::from_secs(30);
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
    /// Unique per run: each scenario's keys live under `<run_id>:<scenario>:`, so runs and
    /// scenarios never share state on an external Redis (and the run can delete its own keys).
    pub run_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("scenario {scenario}: {message}")]
    Setup { scenario: String, message: String },
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
    /// Network faults as windows (ms after the barrier) and the proxy's own log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fault_windows: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<crate::netfault::NetEvent>,
    pub workers: Vec<serde_json::Value>,
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
        worst
            .map(|j| format!("{}: {}", j.assertion, j.summary))
            .unwrap_or_default()
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
        fault_windows: Vec::new(),
        network: Vec::new(),
        workers: Vec::new(),
    };
    // On a Redis the harness did not start, the scenario's keys go however it ends (an
    // interrupt deletes them too, through the registration).
    let namespace = cfg
        .redis
        .url
        .as_deref()
        .map(|url| crate::infra::cleanup::Namespace::register(url, &result.key_prefix));
    match battle(scenario, cfg, dir, &mut result).await {
        Ok(()) => {}
        Err(RunError::Setup { message, .. }) => result.error = Some(message),
    }
    // Every process of the scenario is gone by now (dropped with `battle`'s locals).
    if let Some(namespace) = namespace
        && let Err(e) = namespace.delete().await
        && result.error.is_none()
    {
        result.error = Some(format!("cannot delete the scenario's keys: {e}"));
    }
    result.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(json) = serde_json::to_vec_pretty(&result) {
        let _ = write_atomic(&dir.join("result.json"), &json);
    }
    result
}

async fn battle(
    scenario: &Scenario,
    cfg: &BattleConfig,
    dir: &Path,
    result: &mut ScenarioResult,
) -> Result<(), RunError> {
    let setup = |message: String| RunError::Setup {
        scenario: scenario.name.clone(),
        message,
    };
    for sub in ["histories", "workers", "servers"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| setup(format!("cannot create {}: {e}", dir.join(sub).display())))?;
    }
    let yaml = scenario.policy_yaml().map_err(|e| setup(e.to_string()))?;
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, &yaml)
        .map_err(|e| setup(format!("cannot write {}: {e}", policy_file.display())))?;
    let policies = policy::read(&scenario.file.display().to_string(), &yaml).map_err(setup)?;

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
        let binary = cfg
            .redis
            .server_binary
            .clone()
            .or_else(crate::infra::find_redis_binary)
            .ok_or_else(|| setup("no redis-server on PATH".into()))?;
        let ns = crate::netfault::netns::NetnsRedis::start(&binary)
            .await
            .map_err(|e| setup(e.to_string()))?;
        options.url = Some(ns.url().to_string());
        netns = Some(ns);
    }
    let redis = RedisInstance::provision(&options)
        .await
        .map_err(|e| setup(e.to_string()))?;
    result.redis = redis.describe();

    let mut net = scenario.plan.network.proxy.then(Network::new);
    let fleet_size = result.fleet;
    let template = cfg.server_cmd.as_deref().unwrap_or(REFERENCE_SERVER);
    let mut servers = Vec::new();
    for index in 0..fleet_size {
        let url = match &mut net {
            Some(n) => n
                .redis_for_server(index, redis.url())
                .await
                .map_err(setup)?,
            None => redis.url().to_string(),
        };
        servers.push(
            start_server(template, index, cfg, scenario, &policy_file, &url, dir)
                .await
                .map_err(setup)?,
        );
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();

    // The start barrier: one pipe, its read end every worker's stdin.
    let (barrier_read, barrier_write) =
        std::io::pipe().map_err(|e| setup(format!("cannot create the barrier pipe: {e}")))?;
    let go_file = dir.join("workers").join("go");
    let mut workers = Vec::new();
    for group in &scenario.plan.workers {
        let (group_redis, group_addrs) = match &mut net {
            Some(n) if group.door == Door::Redis => (
                n.redis_for_group(&group.group, redis.url())
                    .await
                    .map_err(setup)?,
                addrs.clone(),
            ),
            Some(n) => (
                redis.url().to_string(),
                n.servers_for_group(&group.group, &addrs)
                    .await
                    .map_err(setup)?,
            ),
            None => (redis.url().to_string(), addrs.clone()),
        };
        for index in 0..group.count {
            let spec = worker_spec(
                scenario,
                cfg,
                group,
                index,
                &policies,
                &group_addrs,
                &group_redis,
                dir,
                &go_file,
            )
            .map_err(setup)?;
            workers.push(spawn_worker(&cfg.exe, &spec, &barrier_read, dir).map_err(setup)?);
        }
    }
    drop(barrier_read);
    wait_ready(&mut workers).await.map_err(setup)?;

    let t0_us = now_us();
    let t0 = Instant::now();
    write_atomic(&go_file, t0_us.to_string().as_bytes())
        .map_err(|e| setup(format!("cannot write {}: {e}", go_file.display())))?;
    drop(barrier_write);

    let mut target = Target {
        workers,
        servers,
        redis,
        net,
        netns,
    };
    let deadline = t0 + plan_bound(scenario) + GRACE;
    let planned = network::with_heals(&scenario.plan.faults);
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
        s.child.kill();
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
            Some(Err(e)) => return Err(setup(e.to_string())),
            None if killed => {}
            None => {
                return Err(setup(format!(
                    "worker {} left no history (exit {}): {}",
                    w.label,
                    exit.map(describe_exit).unwrap_or_else(|| "none".into()),
                    tail(&w.stderr)
                )));
            }
        }
        if !killed && exit.is_some_and(|s| s.code() != Some(0)) && !timed_out {
            return Err(setup(format!(
                "worker {} failed ({}): {}",
                w.label,
                exit.map(describe_exit).unwrap_or_default(),
                tail(&w.stderr)
            )));
        }
    }
    if timed_out {
        return Err(setup(format!(
            "workers still running {} s after the plan's bound: killed",
            GRACE.as_secs()
        )));
    }
    result.faults = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["atMs"] = json!(r.at_us.map(|t| (t - t0_us) as f64 / 1000.0));
            v
        })
        .collect();
    result.fault_windows = network::windows(&records, t0_us);
    if let Some(n) = &target.net {
        result.network = n.log();
    }
    // The store as the run left it: read directly, never through the proxy.
    let granted = store_check::granted_lease_ms(&histories);
    let snapshot = store_check::snapshot(
        scenario,
        cfg,
        granted,
        &policies,
        target.redis.url(),
        fleet_size,
    )
    .await;
    result.judgements =
        checker::judge_with_store(&scenario.plan, &histories, &records, Some(&snapshot));
    result.verdict = checker::overall(&result.judgements);
    Ok(())
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
                .map(|f| f.at_ms + f.for_ms.unwrap_or(0)),
        )
        .max()
        .unwrap_or(0);
    Duration::from_millis(ms)
}

struct Server {
    index: usize,
    addr: String,
    child: OwnedChild,
}

pub(crate) struct Worker {
    label: String,
    group: String,
    index: u32,
    child: OwnedChild,
    history: PathBuf,
    ready_file: PathBuf,
    stderr: PathBuf,
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
) -> Result<Server, String> {
    let port = free_loopback_port().map_err(|e| format!("no free port: {e}"))?;
    let words =
        shell_words::split(template).map_err(|e| format!("--server-cmd {template:?}: {e}"))?;
    let values: BTreeMap<&str, String> = [
        ("{exe}", cfg.exe.display().to_string()),
        ("{port}", port.to_string()),
        ("{redis}", redis_url.to_string()),
        ("{policy}", policy_file.display().to_string()),
        ("{index}", index.to_string()),
        (KEY_PREFIX_PLACEHOLDER, cfg.namespace(scenario)),
        (
            "{lease_ttl_ms}",
            scenario.plan.topology.lease_ttl_ms.to_string(),
        ),
        (
            "{contract}",
            absolute(&cfg.contract_dir).display().to_string(),
        ),
        (
            "{fail}",
            scenario
                .plan
                .topology
                .fail
                .unwrap_or_default()
                .name()
                .to_string(),
        ),
    ]
    .into();
    let words: Vec<String> = words
        .iter()
        .map(|w| {
            values
                .iter()
                .fold(w.clone(), |acc, (k, v)| acc.replace(k, v))
        })
        .collect();
    let offset = scenario
        .plan
        .topology
        .server_clock_offsets_ms
        .get(index)
        .copied()
        .unwrap_or(0);
    let Some((program, args)) = words.split_first() else {
        return Err("--server-cmd is empty".into());
    };
    let log = dir.join("servers").join(format!("server-{index}.log"));
    let out =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    if offset != 0 {
        // libfaketime preloaded into the server itself (not the `faketime` wrapper, whose
        // forked child would outlive a SIGKILLed harness): only its wall clock moves.
        let lib = faketime_library().ok_or_else(|| {
            "this scenario skews a server's clock with libfaketime, which is not installed \
             (Debian: apt-get install faketime)"
                .to_string()
        })?;
        command
            .env("LD_PRELOAD", lib)
            .env("FAKETIME", format!("{:+.3}s", offset as f64 / 1000.0));
    }
    let mut child =
        OwnedChild::spawn(format!("server {index}"), command).map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_exit() {
            return Err(format!(
                "server {index} ({}) exited before accepting connections ({}): {}",
                words.join(" "),
                describe_exit(status),
                tail(&log)
            ));
        }
        let connect = tokio::net::TcpStream::connect(&addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return Ok(Server { index, addr, child });
        }
        if started.elapsed() > SERVER_START {
            return Err(format!(
                "server {index} did not accept connections on {addr} within {} s: {}",
                SERVER_START.as_secs(),
                tail(&log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
) -> Result<WorkerSpec, String> {
    let policy = policies.get(&group.policy).ok_or_else(|| {
        format!(
            "group `{}` uses policy `{}`, which the policy file does not define",
            group.group, group.policy
        )
    })?;
    let identity = identity(cfg, group);
    let primary = group.server.unwrap_or(index as usize);
    let door = match group.door {
        Door::Redis => {
            let Some(strategy) = &policy.strategy else {
                return Err(format!(
                    "group `{}`: the redis door needs a rate policy, `{}` is a {}",
                    group.group, group.policy, policy.label
                ));
            };
            DoorSpec::Redis {
                url: redis_url.into(),
                contract_dir: cfg.contract_dir.clone(),
                strategy: *strategy,
                key: store_key(cfg, scenario, group, policy),
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
                return Err(format!(
                    "group `{}`: the fleet-lease door needs a federated policy, `{}` is a {}",
                    group.group, group.policy, policy.label
                ));
            };
            DoorSpec::FleetLease {
                servers: servers.to_vec(),
                primary,
                policy: group.policy.clone(),
                limit: strategy_limit(strategy),
            }
        }
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
        load: None,
        clock: group.clock,
        now: group.now,
    })
}

/// libfaketime's thread-safe preload library (the server is multi-threaded), where Debian
/// (any architecture) or a local build puts it.
fn faketime_library() -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/local/lib")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    dirs.into_iter()
        .map(|d| d.join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
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

fn strategy_limit(strategy: &crate::model::Strategy) -> u64 {
    use crate::model::Strategy::*;
    let limit = match strategy {
        Gcra(o) => o.limit,
        TokenBucket(o) => o.capacity,
        FixedWindow(o) => o.limit,
        SlidingWindow(o) => o.limit,
        SlidingWindowLog(o) => o.limit,
    };
    limit as u64
}

pub(crate) fn spawn_worker(
    exe: &Path,
    spec: &WorkerSpec,
    barrier: &std::io::PipeReader,
    dir: &Path,
) -> Result<Worker, String> {
    let name = format!("{}-{}", spec.group, spec.index);
    let spec_file = dir.join("workers").join(format!("{name}.json"));
    // The file holds the URL without its password; the worker gets the real one in its
    // environment, which is not written anywhere.
    let mut on_disk = spec.clone();
    let mut real_url = None;
    if let DoorSpec::Redis { url, .. } = &mut on_disk.door {
        real_url = Some(std::mem::replace(url, crate::infra::redact_url(url)));
    }
    let json = serde_json::to_vec_pretty(&on_disk).map_err(|e| e.to_string())?;
    std::fs::write(&spec_file, json)
        .map_err(|e| format!("cannot write {}: {e}", spec_file.display()))?;
    let stderr = dir.join("workers").join(format!("{name}.stderr"));
    let err = std::fs::File::create(&stderr)
        .map_err(|e| format!("cannot create {}: {e}", stderr.display()))?;
    let stdin = barrier
        .try_clone()
        .map_err(|e| format!("barrier pipe: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .arg("--spec")
        .arg(&spec_file)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    if let Some(url) = real_url {
        command.env(super::worker::REDIS_URL_ENV, url);
    }
    let label = format!("{}[{}]", spec.group, spec.index);
    let child = OwnedChild::spawn(format!("worker {label}"), command).map_err(|e| e.to_string())?;
    Ok(Worker {
        label,
        group: spec.group.clone(),
        index: spec.index,
        child,
        history: spec.history.clone(),
        ready_file: spec.ready_file.clone(),
        stderr,
    })
}

/// Waits until every worker has exited, or kills them all after `bound`.
pub(crate) async fn wait_exit(workers: &mut [Worker], bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    while !workers.iter_mut().all(|w| w.child.try_exit().is_some()) {
        if Instant::now() >= deadline {
            for w in workers.iter_mut() {
                w.child.kill();
            }
            return Err(format!(
                "workers still running after {} s: killed",
                bound.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until every worker has opened its connections (its ready-file exists).
pub(crate) async fn wait_ready(workers: &mut [Worker]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let mut all = true;
        for w in workers.iter_mut() {
            if let Some(status) = w.child.try_exit() {
                return Err(format!(
                    "worker {} exited before the start ({}): {}",
                    w.label,
                    describe_exit(status),
                    tail(&w.stderr)
                ));
            }
            all &= w.ready_file.exists();
        }
        if all {
            return Ok(());
        }
        if started.elapsed() > WORKERS_READY {
            return Err(format!(
                "workers not ready within {} s",
                WORKERS_READY.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => Signal::try_from(sig)
            .map(|s| format!("killed by {s}"))
            .unwrap_or_else(|_| format!("killed by signal {sig}")),
        _ => status.to_string(),
    }
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return format!("({} is empty)", path.display());
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// What the fault schedule acts on.
struct Target {
    workers: Vec<Worker>,
    servers: Vec<Server>,
    redis: RedisInstance,
    net: Option<Network>,
    netns: Option<crate::netfault::netns::NetnsRedis>,
}

#[async_trait]
impl FaultTarget for Target {
    fn signal_workers(
        &mut self,
        group: &str,
        index: Option<u32>,
        signal: Signal,
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let (mut labels, mut targets) = (Vec::new(), Vec::new());
        for w in &mut self.workers {
            if w.group != group || index.is_some_and(|i| i != w.index) {
                continue;
            }
            if w.child.try_exit().is_some() {
                continue;
            }
            w.child.signal(signal).map_err(|e| e.to_string())?;
            labels.push(w.label.clone());
            targets.push(format!("pid {} {}", w.child.pid(), w.label));
        }
        if labels.is_empty() {
            return Err(format!(
                "no live worker of group `{group}` to send {signal}"
            ));
        }
        Ok((labels, targets))
    }

    fn kill_server(&mut self, index: usize) -> Result<String, String> {
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.index == index)
            .ok_or_else(|| format!("no server {index}"))?;
        if server.child.try_exit().is_some() {
            return Err(format!("server {index} had already exited"));
        }
        let pid = server.child.pid();
        server
            .child
            .signal(Signal::SIGKILL)
            .map_err(|e| e.to_string())?;
        Ok(format!("server {index} {} (pid {pid})", server.addr))
    }

    fn network(&mut self, fault: &super::scenario::Fault) -> Result<Vec<String>, String> {
        let namespace = fault.action == FaultAction::NetnsPartition
            || (fault.action == FaultAction::Heal && fault.link.is_none());
        if namespace {
            let Some(ns) = &mut self.netns else {
                return Err(
                    "Redis is not in a network namespace (`[network] netns = true`)".into(),
                );
            };
            let name = ns.host().name().to_string();
            let done = if fault.action == FaultAction::Heal {
                ns.host().heal()
            } else {
                ns.host().partition()
            };
            done.map_err(|e| e.to_string())?;
            let rules = ns.host().rules().unwrap_or_default();
            return Ok(vec![format!(
                "namespace {name} (redis pid {}): iptables {}",
                ns.pid(),
                rules.split_whitespace().collect::<Vec<_>>().join(" ")
            )]);
        }
        match &self.net {
            Some(n) => n.apply(fault),
            None => Err("this run has no fault proxy (`[network] proxy = true`)".into()),
        }
    }

    async fn restart_redis(&mut self) -> Result<String, String> {
        let started = Instant::now();
        // SHUTDOWN SAVE keeps the data (reloaded at start) and loses the script cache.
        let client = redis::Client::open(self.redis.url()).map_err(|e| e.to_string())?;
        let mut con = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| "cannot connect to Redis to shut it down".to_string())?
        .map_err(|e| e.to_string())?;
        let _: Result<(), _> = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async(&mut con)
            .await;
        self.redis.restart().await.map_err(|e| e.to_string())?;
        Ok(format!(
            "{} restarted with its data and an empty script cache in {} ms",
            self.redis.describe(),
            started.elapsed().as_millis()
        ))
    }
}
