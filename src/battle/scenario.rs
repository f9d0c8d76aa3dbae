//! The battle plan: one readable TOML file per scenario under `scenarios/`.
//!
//! A scenario says what to start (Redis, a server fleet), which policy the fleet serves, which
//! worker processes run which operations through which door, which faults the runner injects
//! when, and which assertions the checker judges the recorded histories against. Parsing is
//! strict (unknown keys are errors) and every error names the file and the key.

use super::link;
pub use super::spec::Operation;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Hard bounds so that a typo cannot start an unbounded load loop.
pub const MAX_WORKERS: u32 = 64;
pub const MAX_REQUESTS: u64 = 100_000;
pub const MAX_DURATION_MS: u64 = 30_000;
pub const MAX_FLEET: usize = 9;
/// The longest a failover's replica may be cut off before it (`unreplicated_ms`).
pub const MAX_UNREPLICATED_MS: u64 = 800;
/// Bounds on a delay rule, so a typo cannot stall a run for minutes.
pub const MAX_DELAY_MS: u64 = 10_000;
pub const MAX_CALL_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("no scenario called `{name}` in {dir} (list them with `tk-conform battle --list`)")]
    Unknown { name: String, dir: PathBuf },
}

/// One parsed, validated scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    /// The file stem, e.g. `cap-direct-fixed-window`.
    pub name: String,
    pub file: PathBuf,
    #[serde(flatten)]
    pub plan: ScenarioPlan,
}

/// The file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ScenarioPlan {
    pub description: String,
    #[serde(default = "Topology::none")]
    pub topology: Topology,
    /// Contract doors only; an exec scenario names no policy (its limiter is `[exec]`).
    #[serde(default)]
    pub policy: PolicySource,
    /// `door = "exec"`: the limiter every group's adapter configures.
    #[serde(default)]
    pub exec: Option<ExecPlan>,
    pub workers: Vec<WorkerGroup>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    pub assertions: Vec<Assertion>,
    /// Network faults: route every connection through the harness's fault proxy.
    #[serde(default)]
    pub network: NetworkPlan,
}

/// `[network]`: the fault proxy and the call bound the workers use under it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NetworkPlan {
    /// Every worker→Redis, server→Redis and worker→server connection goes through the proxy.
    #[serde(default)]
    pub proxy: bool,
    /// Overrides `battle --call-timeout-ms` for this scenario (lost replies time out sooner).
    pub call_timeout_ms: Option<u64>,
    /// Redis runs in a network namespace of its own (root only), so `netns-partition` can cut
    /// it off with iptables: a real partition, TCP retransmits and all.
    #[serde(default)]
    pub netns: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Topology {
    /// Servers in the fleet (0 = none: direct-door scenarios). `--fleet N` overrides a non-zero value.
    #[serde(default)]
    pub fleet: usize,
    /// The servers' concurrency lease TTL (`serve --lease-ttl-ms`).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// What the reference servers do while Redis is unreachable (`serve --fail`).
    pub fail: Option<FailPolicy>,
    /// Server `i` runs under libfaketime with its wall clock this many ms ahead (negative:
    /// behind); 0 or missing: the real clock. (redis-server itself cannot run under it.)
    #[serde(default)]
    pub server_clock_offsets_ms: Vec<i64>,
    /// How often the servers sweep expired leases, in ms: how late after a lease's expiry a
    /// reclaim may land. It cannot be read from the wire, so it is declared (here, or by
    /// `battle --sweep-ms`); missing: [`DEFAULT_SWEEP_MS`].
    pub sweep_ms: Option<u64>,
    /// The store: one Redis, a primary and a replica behind `redis-sentinel`, or a cluster.
    #[serde(default)]
    pub redis: RedisTopology,
}

/// `[topology] redis`: what the store is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisTopology {
    #[default]
    Single,
    /// A primary, one replica and a sentinel; clients follow the primary through `failover`.
    Replicated,
    Cluster,
}

/// The sweep period assumed when neither the scenario nor `battle --sweep-ms` declares one:
/// ThrottleKit's 1 s (spec 8: "reclaim lands within TTL + one sweep"). The reference server
/// sweeps faster; its own choice is never the bound.
pub const DEFAULT_SWEEP_MS: u64 = 1000;
/// The longest sweep period a scenario or `--sweep-ms` may declare.
pub const MAX_SWEEP_MS: u64 = 60_000;

impl Topology {
    /// The declared sweep period, or [`DEFAULT_SWEEP_MS`].
    pub fn sweep_ms(&self) -> u64 {
        self.sweep_ms.unwrap_or(DEFAULT_SWEEP_MS)
    }
}

pub use crate::server::fail_mode::FailPolicy;

fn default_lease_ttl_ms() -> u64 {
    2000
}

impl Topology {
    fn none() -> Topology {
        Topology {
            fleet: 0,
            lease_ttl_ms: default_lease_ttl_ms(),
            fail: None,
            server_clock_offsets_ms: Vec::new(),
            sweep_ms: None,
            redis: RedisTopology::Single,
        }
    }
}

/// The policy file the fleet serves (and the direct door reads its strategy options from).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct PolicySource {
    /// Inline YAML.
    pub yaml: Option<String>,
    /// A path relative to the scenario's folder.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Door {
    /// The contract Lua scripts straight on Redis.
    Redis,
    /// gRPC `RateLimiter` calls to one server of the fleet, failing over to the next.
    Service,
    /// `Fleet.Reserve` leases spent client-side with the lease spender.
    FleetLease,
    /// A protocol-2 adapter (`battle --adapter`), one process per worker.
    Exec,
}

/// `[exec]`: the limiter an exec scenario aims at, in the family's own terms. The runner picks
/// the adapter's first declared kind of one of `families` (or `battle --kind`) and snaps each
/// parameter to the nearest value the kind accepts; the verdict names the values used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ExecPlan {
    /// limit (windows, gcra), capacity (token bucket).
    pub limit: u64,
    /// windowMs (windows), periodMs (gcra); a token bucket refills `limit` per `window_ms`.
    pub window_ms: u64,
    /// The families the scenario applies to (default: every rate family).
    #[serde(default = "rate_families")]
    pub families: Vec<Family>,
}

pub use crate::backend::exec::v2::Family;

fn rate_families() -> Vec<Family> {
    vec![
        Family::FixedWindow,
        Family::SlidingWindowLog,
        Family::SlidingWindowCounter,
        Family::TokenBucket,
        Family::Gcra,
    ]
}

/// Bounds of `[exec]`: short windows keep a scenario short; long ones would need long runs.
pub const EXEC_LIMIT: std::ops::RangeInclusive<u64> = 1..=10_000;
pub const EXEC_WINDOW_MS: std::ops::RangeInclusive<u64> = 200..=10_000;

/// A parameter a kind declares with no accepted value (`parameters` ranges that are empty).
#[derive(Debug, thiserror::Error)]
#[error("kind `{kind}` accepts no value of `{parameter}`")]
pub struct NoAcceptedValue {
    pub kind: String,
    pub parameter: String,
}

impl ExecPlan {
    /// The `configure` parameters for `kind`, each the accepted value nearest the plan's; an
    /// error says which parameter the kind cannot take near it.
    pub fn params_for(
        &self,
        kind: &crate::backend::exec::v2::LimiterKind,
    ) -> Result<std::collections::BTreeMap<String, f64>, NoAcceptedValue> {
        let limit = self.limit as f64;
        let window = self.window_ms as f64;
        let mut params = std::collections::BTreeMap::new();
        for (name, range) in &kind.parameters {
            let wanted = match name.as_str() {
                "limit" | "capacity" | "burst" => limit,
                "windowMs" | "periodMs" => window,
                "refillPerSec" => limit * 1000.0 / window,
                _ => range.min,
            };
            let value = range.nearest(wanted).ok_or_else(|| NoAcceptedValue {
                kind: kind.name.clone(),
                parameter: name.clone(),
            })?;
            params.insert(name.clone(), value);
        }
        // gcra's burst is at most its limit, so one period refills it.
        if let (Some(l), Some(b)) = (params.get("limit").copied(), params.get("burst").copied())
            && b > l
            && let Some(v) = kind.parameters["burst"].nearest(l)
        {
            params.insert("burst".into(), v);
        }
        Ok(params)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct WorkerGroup {
    pub group: String,
    pub count: u32,
    pub door: Door,
    pub operation: Operation,
    /// The policy's name in the policy file (contract doors; not for `exec`).
    #[serde(default)]
    pub policy: String,
    /// The identity the group works on (the harness makes it unique per run).
    pub key: String,
    /// Units per check / admit / spend.
    #[serde(default = "one")]
    pub cost: u64,
    /// Debit sizes are drawn uniformly from `[min, max]` with the run's seed.
    pub tokens: Option<[u64; 2]>,
    /// Stop after this many operations (per worker)…
    pub requests: Option<u64>,
    /// …or after this long, whichever comes first; at least one must be given.
    pub duration_ms: Option<u64>,
    /// Pause between operations (0 = back to back).
    #[serde(default)]
    pub interval_ms: u64,
    /// Start this long after the barrier opens.
    #[serde(default)]
    pub start_after_ms: u64,
    /// Admit only: how long a granted slot is held before it is released.
    #[serde(default)]
    pub hold_ms: u64,
    /// Admit only: heartbeat period while holding (0 = never heartbeat).
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// Admit only: after one granted hold, stop (a holder) instead of churning.
    #[serde(default)]
    pub hold_once: bool,
    /// Fleet-lease only: units asked for per `Reserve`.
    #[serde(default)]
    pub batch: u64,
    /// Service doors: the server every worker of the group starts at (default: worker `i`
    /// starts at server `i mod fleet`, spreading the group).
    pub server: Option<usize>,
    /// Direct door: this group's clock, off the machine's by an offset and a drift. Exec door:
    /// the group's adapters run under libfaketime this far off (`offset_ms` only).
    pub clock: Option<super::clock::ClientClock>,
    /// Direct door: which clock the `now` of a check comes from (default: the server's).
    #[serde(default)]
    pub now: NowSource,
}

pub use super::spec::NowSource;

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultAction {
    SigkillWorkers,
    SigstopWorkers,
    SigcontWorkers,
    SigkillServer,
    RestartRedis,
    /// Network faults on the proxy's links (`[network] proxy = true`), healed after `for_ms`.
    Delay,
    DropReplies,
    Blackhole,
    Reset,
    Partition,
    /// iptables drops every packet into Redis's namespace (`[network] netns = true`).
    NetnsPartition,
    /// Written by the runner `for_ms` after a network fault: the links pass everything again.
    Heal,
    /// `redis = "replicated"`: the primary freezes, the sentinel promotes the replica, and the
    /// old primary wakes as a stale primary (see `infra::sentinel`).
    Failover,
    /// `[topology] redis = "cluster"`: the slot of `group`'s key moves to another primary.
    MigrateSlot,
}

impl FaultAction {
    /// Whether the fault acts on the proxy's links.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultAction::Delay
                | FaultAction::DropReplies
                | FaultAction::Blackhole
                | FaultAction::Reset
                | FaultAction::Partition
                | FaultAction::NetnsPartition
                | FaultAction::Heal
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Fault {
    pub name: String,
    /// Milliseconds after the barrier opens.
    pub at_ms: u64,
    /// Plus a random delay in `[0, random_within_ms]`, drawn from the run's seed.
    #[serde(default)]
    pub random_within_ms: Option<u64>,
    pub action: FaultAction,
    /// Worker faults: the group…
    pub group: Option<String>,
    /// …and optionally one worker of it (default: every worker of the group).
    pub index: Option<u32>,
    /// `sigkill-server`: which server of the fleet (0-based).
    pub server: Option<usize>,
    /// Network faults: the links hit, as `FROM->TO` (see `battle::link`).
    #[serde(default)]
    pub link: Option<String>,
    /// Network faults: how long until the links heal.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// `delay`: the fixed part and the uniform jitter on top, in ms.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    /// `delay` and `blackhole`: which direction (default both).
    #[serde(default)]
    pub direction: Option<crate::netfault::Direction>,
    /// `failover`: for this long before it, the replica is cut off (frozen, its link closed),
    /// so the primary acknowledges writes the replica never receives.
    #[serde(default)]
    pub unreplicated_ms: Option<u64>,
    /// `migrate-slot`: how long the slot stays half moved (clients get ASK) before it is
    /// handed over (clients get MOVED).
    #[serde(default)]
    pub ask_window_ms: Option<u64>,
}

/// The longest ASK window a `migrate-slot` may hold.
pub const MAX_ASK_WINDOW_MS: u64 = 5000;

/// What the checker judges. Every assertion reads only the histories and the fault log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Assertion {
    /// Admitted units per window (attributed by the decision's `resetAt`) or over the whole run.
    Cap {
        #[serde(default)]
        groups: Vec<String>,
        limit: u64,
        #[serde(default)]
        per: CapScope,
        /// Saturated windows (those with a denial) must admit exactly `limit`, and at least one
        /// window must saturate (else exactness was never put to the test).
        #[serde(default)]
        exact: bool,
        /// Tolerated overshoot above `limit` (e.g. `fleet * (batch - 1)` for uncoupled leases).
        #[serde(default)]
        slack: u64,
        /// At least this many windows must have admitted something.
        #[serde(default = "one")]
        min_windows: u64,
        /// Allowed decisions of a window must each report a different `remaining` (counter
        /// strategies: fixedWindow, slidingWindowLog); two equal ones are a lost update.
        #[serde(default)]
        distinct_remaining: bool,
        /// The window length: an allowed decision whose `resetAt` had already passed when the
        /// call was made (credits carried out of their window) counts in the window it was
        /// made in, on this grid, instead of the one it names.
        window_ms: Option<u64>,
        /// Most indeterminate calls a passing verdict may lean on (default: one per worker).
        max_indeterminate: Option<u64>,
    },
    /// Token budget: only the crossing debit of a window may overshoot.
    Budget {
        #[serde(default)]
        groups: Vec<String>,
        budget: u64,
        max_indeterminate: Option<u64>,
    },
    /// Slots held at once, reconstructed from admit/release intervals, never above `ceiling`.
    Concurrency {
        #[serde(default)]
        groups: Vec<String>,
        ceiling: u64,
        /// The lease TTL: a hold not renewed within it may have been reclaimed.
        ttl_ms: u64,
        /// At least this many admits must have been granted (so the check was exercised).
        #[serde(default = "one")]
        min_admits: u64,
    },
    /// After a fault took holders away, `slots` fresh admits by other workers within the
    /// lease the servers granted the faulted workers + the sweep (`topology.sweep_ms`) +
    /// `margin_ms`, counted from the fault.
    Reclaim {
        fault: String,
        #[serde(default)]
        groups: Vec<String>,
        slots: u64,
        /// Beyond lease and sweep: the contenders' retry interval and call latency.
        #[serde(default = "default_reclaim_margin_ms")]
        margin_ms: u64,
    },
    /// Holds renewed by heartbeats are never reclaimed while renewed, for at least `min_hold_ms`.
    Renewed {
        #[serde(default)]
        groups: Vec<String>,
        ttl_ms: u64,
        min_hold_ms: u64,
    },
    /// A holder paused by a fault finds its lease reclaimed when it wakes.
    LostAfterPause { fault: String, group: String },
    /// Service-door workers that used a killed server moved to another one and kept deciding.
    Failover {
        fault: String,
        #[serde(default)]
        groups: Vec<String>,
    },
    /// After a fault, admits resume within `within_ms` and no error was an admit.
    Resumes {
        fault: String,
        #[serde(default)]
        groups: Vec<String>,
        within_ms: u64,
    },
    /// The store's own count of each group's fixedWindow key, read back after the run, lies
    /// between the ok admits and the ok plus indeterminate admits (nothing counted twice).
    CountedOnce {
        #[serde(default)]
        groups: Vec<String>,
    },
    /// While the fault kept the store from the servers, their declared `topology.fail` held:
    /// `closed` admits nothing, `open` admits and the verdict reports how many.
    StoreDown {
        fault: String,
        #[serde(default)]
        groups: Vec<String>,
    },
    /// Admits over the run stay within the bound the strategy implies for a client clock skew
    /// of `skew_ms` between the groups (0: a door on the server's clock must stay exact).
    SkewBound {
        #[serde(default)]
        groups: Vec<String>,
        skew_ms: u64,
    },
    /// Exec door: per window, as the configured kind's family bounds it (exact families exactly,
    /// approximate ones within their declared tolerance), judged from invoke/complete times on
    /// the engine's clock, for all groups together and for each group on its own clock; with a
    /// group's share of the admits, so a client that starves the others is reported.
    FamilyCap {
        #[serde(default)]
        groups: Vec<String>,
        /// At least this many windows must have denied (so the bound was put to the test).
        #[serde(default = "one")]
        min_saturated: u64,
    },
    /// Exec door: the group's first call, made after the family's quiet period (a full window
    /// or refill) since every other call and kill, is admitted.
    AdmitsAgain { group: String },
    /// Across the `failover` fault, each fixedWindow key admits at most its limit plus the
    /// writes the primary had acknowledged and the replica had not received.
    FailoverBound {
        fault: String,
        #[serde(default)]
        groups: Vec<String>,
    },
    /// Every key a script touched during the run (seen by MONITOR on every node, and in a
    /// replay of each script on a private Redis) is declared in its KEYS, and all of a call's
    /// keys hash to one cluster slot.
    ClusterKeys {},
}

fn default_reclaim_margin_ms() -> u64 {
    500
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapScope {
    /// One count per distinct `resetAt` (window strategies, budgets, leases).
    #[default]
    Window,
    /// One count for the whole run (gcra / sliding log with a period far longer than the run).
    Run,
}

impl Assertion {
    pub fn kind(&self) -> &'static str {
        match self {
            Assertion::Cap { .. } => "cap",
            Assertion::Budget { .. } => "budget",
            Assertion::Concurrency { .. } => "concurrency",
            Assertion::Reclaim { .. } => "reclaim",
            Assertion::Renewed { .. } => "renewed",
            Assertion::LostAfterPause { .. } => "lost-after-pause",
            Assertion::Failover { .. } => "failover",
            Assertion::Resumes { .. } => "resumes",
            Assertion::CountedOnce { .. } => "counted-once",
            Assertion::StoreDown { .. } => "store-down",
            Assertion::SkewBound { .. } => "skew-bound",
            Assertion::FamilyCap { .. } => "family-cap",
            Assertion::AdmitsAgain { .. } => "admits-again",
            Assertion::FailoverBound { .. } => "failover-bound",
            Assertion::ClusterKeys { .. } => "cluster-keys",
        }
    }

    /// Groups named by the assertion (empty = every group).
    fn groups(&self) -> Vec<&str> {
        match self {
            Assertion::Cap { groups, .. }
            | Assertion::Budget { groups, .. }
            | Assertion::Concurrency { groups, .. }
            | Assertion::Reclaim { groups, .. }
            | Assertion::Renewed { groups, .. }
            | Assertion::Failover { groups, .. }
            | Assertion::Resumes { groups, .. }
            | Assertion::CountedOnce { groups }
            | Assertion::StoreDown { groups, .. }
            | Assertion::SkewBound { groups, .. }
            | Assertion::FamilyCap { groups, .. }
            | Assertion::FailoverBound { groups, .. } => {
                groups.iter().map(String::as_str).collect()
            }
            Assertion::LostAfterPause { group, .. } | Assertion::AdmitsAgain { group } => {
                vec![group.as_str()]
            }
            Assertion::ClusterKeys { .. } => Vec::new(),
        }
    }

    fn fault(&self) -> Option<&str> {
        match self {
            Assertion::Reclaim { fault, .. }
            | Assertion::LostAfterPause { fault, .. }
            | Assertion::Failover { fault, .. }
            | Assertion::Resumes { fault, .. }
            | Assertion::StoreDown { fault, .. }
            | Assertion::FailoverBound { fault, .. } => Some(fault),
            _ => None,
        }
    }
}

impl Scenario {
    /// Reads and validates one scenario file.
    pub fn load(file: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|source| ScenarioError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Scenario::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let plan: ScenarioPlan = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let scenario = Scenario {
            name,
            file: file.to_path_buf(),
            plan,
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// The scenario run `factor` times longer, for a soak (`battle --scale`): every group's
    /// `requests` and `duration_ms` grow by `factor`, so each group makes `factor` times the
    /// calls over `factor` times the time. Fault times, holds, start offsets and the policies'
    /// limits and windows stay as written: faults hit the same early moments, and each check's
    /// bound means what it meant, under more calls and (for windows shorter than the run) more
    /// windows.
    pub fn scaled(&self, factor: u64) -> Scenario {
        let mut s = self.clone();
        for g in &mut s.plan.workers {
            g.requests = g.requests.map(|r| r.saturating_mul(factor));
            g.duration_ms = g.duration_ms.map(|d| d.saturating_mul(factor));
        }
        s
    }

    /// The policy YAML text, inline or read from the file next to the scenario.
    pub fn policy_yaml(&self) -> Result<String, ScenarioError> {
        match (&self.plan.policy.yaml, &self.plan.policy.file) {
            (Some(yaml), None) => Ok(yaml.clone()),
            (None, Some(path)) => {
                let full = self.dir().join(path);
                std::fs::read_to_string(&full).map_err(|e| {
                    self.invalid(
                        "policy.file",
                        format!("cannot read {}: {e}", full.display()),
                    )
                })
            }
            _ => Err(self.invalid("policy", "give exactly one of `yaml` or `file`")),
        }
    }

    fn dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    pub fn group(&self, name: &str) -> Option<&WorkerGroup> {
        self.plan.workers.iter().find(|g| g.group == name)
    }

    /// Worker processes over every group; `None` when the sum does not fit (a hostile plan).
    pub fn total_workers(&self) -> Option<u32> {
        self.plan
            .workers
            .iter()
            .try_fold(0u32, |sum, g| sum.checked_add(g.count))
    }

    /// The fleet size this run uses: the scenario's, or `override_fleet` when it needs a fleet.
    pub fn fleet_size(&self, override_fleet: Option<usize>) -> usize {
        match (self.plan.topology.fleet, override_fleet) {
            (0, _) => 0,
            (_, Some(n)) => n,
            (n, None) => n,
        }
    }

    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks the `[network]` table and every network fault.
    fn validate_network(&self) -> Result<(), ScenarioError> {
        let s = self;
        let plan = &s.plan;
        if let Some(t) = plan.network.call_timeout_ms
            && (t == 0 || t > MAX_CALL_TIMEOUT_MS)
        {
            return Err(s.invalid(
                "network.call_timeout_ms",
                format!("must be 1..={MAX_CALL_TIMEOUT_MS}"),
            ));
        }
        let fleet = plan.topology.fleet;
        for (i, f) in plan.faults.iter().enumerate() {
            let key = |field: &str| format!("faults[{i}].{field}");
            if !f.action.is_network() {
                if f.link.is_some() || f.for_ms.is_some() || f.delay_ms.is_some() {
                    return Err(s.invalid(
                        &key("link"),
                        "`link`, `for_ms` and `delay_ms` belong to network faults only",
                    ));
                }
                continue;
            }
            if f.action == FaultAction::Heal {
                return Err(s.invalid(
                    &key("action"),
                    "`heal` is written by the runner: give the fault a `for_ms` instead",
                ));
            }
            if f.action == FaultAction::NetnsPartition {
                if !plan.network.netns {
                    return Err(s.invalid(
                        &key("action"),
                        "`netns-partition` needs Redis in a namespace: set `[network] netns = true`",
                    ));
                }
                if f.link.is_some() {
                    return Err(s.invalid(
                        &key("link"),
                        "`netns-partition` cuts Redis off from everyone: no `link`",
                    ));
                }
                match f.for_ms {
                    Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => continue,
                    _ => {
                        return Err(s.invalid(
                            &key("for_ms"),
                            format!("network faults need `for_ms` in 1..={MAX_DURATION_MS}"),
                        ));
                    }
                }
            }
            if !plan.network.proxy {
                return Err(s.invalid(
                    &key("action"),
                    "network faults need the fault proxy: set `[network] proxy = true`",
                ));
            }
            let Some(link) = &f.link else {
                return Err(s.invalid(&key("link"), "network faults need a `link = \"FROM->TO\"`"));
            };
            let sel = link::parse(link).map_err(|e| s.invalid(&key("link"), e.to_string()))?;
            if let link::From::Workers(Some(g)) = &sel.from
                && s.group(g).is_none()
            {
                return Err(s.invalid(&key("link"), format!("no worker group called `{g}`")));
            }
            for index in sel.server_indices() {
                if index >= fleet {
                    return Err(s.invalid(
                        &key("link"),
                        format!("the fleet has {fleet} servers (0-based index), not server{index}"),
                    ));
                }
            }
            match f.for_ms {
                Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => {}
                _ => {
                    return Err(s.invalid(
                        &key("for_ms"),
                        format!("network faults need `for_ms` in 1..={MAX_DURATION_MS}"),
                    ));
                }
            }
            if f.action == FaultAction::Delay {
                match f.delay_ms {
                    Some(ms) if (1..=MAX_DELAY_MS).contains(&ms) => {}
                    _ => {
                        return Err(s.invalid(
                            &key("delay_ms"),
                            format!("`delay` needs `delay_ms` in 1..={MAX_DELAY_MS}"),
                        ));
                    }
                }
            }
            if f.jitter_ms.is_some_and(|j| j > MAX_DELAY_MS) {
                return Err(s.invalid(&key("jitter_ms"), format!("must be <= {MAX_DELAY_MS}")));
            }
            if f.direction.is_some()
                && !matches!(f.action, FaultAction::Delay | FaultAction::Blackhole)
            {
                return Err(s.invalid(
                    &key("direction"),
                    "`direction` applies to `delay` and `blackhole` only",
                ));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let plan = &self.plan;
        if plan.topology.fleet > MAX_FLEET {
            return Err(self.invalid(
                "topology.fleet",
                format!("at most {MAX_FLEET} servers, got {}", plan.topology.fleet),
            ));
        }
        let offsets = &plan.topology.server_clock_offsets_ms;
        if offsets.len() > plan.topology.fleet {
            return Err(self.invalid(
                "topology.server_clock_offsets_ms",
                format!(
                    "one offset per server: the fleet has {}, got {}",
                    plan.topology.fleet,
                    offsets.len()
                ),
            ));
        }
        if let Some(o) = offsets
            .iter()
            .find(|o| o.abs() > super::clock::MAX_OFFSET_MS)
        {
            return Err(self.invalid(
                "topology.server_clock_offsets_ms",
                format!(
                    "offsets must be within ±{} ms, got {o}",
                    super::clock::MAX_OFFSET_MS
                ),
            ));
        }
        if let Some(sweep) = plan.topology.sweep_ms
            && !(1..=MAX_SWEEP_MS).contains(&sweep)
        {
            return Err(self.invalid(
                "topology.sweep_ms",
                format!(
                    "must be 1..={MAX_SWEEP_MS} (the servers' sweep period in ms), got {sweep}"
                ),
            ));
        }
        self.validate_store_topology()?;
        if plan.workers.is_empty() {
            return Err(self.invalid("workers", "at least one worker group is needed"));
        }
        if self.is_exec() {
            self.validate_exec()?;
        } else {
            match (&plan.policy.yaml, &plan.policy.file) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err(self.invalid("policy", "give exactly one of `yaml` or `file`")),
            }
        }
        let mut names = BTreeSet::new();
        for (i, g) in plan.workers.iter().enumerate() {
            self.validate_group(i, g)?;
            if !names.insert(g.group.as_str()) {
                return Err(self.invalid(
                    &format!("workers[{i}].group"),
                    format!("group `{}` is defined twice", g.group),
                ));
            }
        }
        match self.total_workers() {
            Some(n) if n <= MAX_WORKERS => {}
            total => {
                let got = total.map_or_else(|| "more than 2^32".to_string(), |n| n.to_string());
                return Err(self.invalid(
                    "workers",
                    format!("at most {MAX_WORKERS} worker processes over all groups, got {got}"),
                ));
            }
        }
        // A network fault's heal can be named too (`<fault>:heal`), e.g. by `resumes`.
        let heals: BTreeSet<String> = plan
            .faults
            .iter()
            .filter(|f| f.action.is_network())
            .map(|f| link::heal_name(&f.name))
            .collect();
        let mut fault_names = BTreeSet::new();
        for (i, f) in plan.faults.iter().enumerate() {
            self.validate_fault(i, f)?;
            if !fault_names.insert(f.name.as_str()) {
                return Err(self.invalid(
                    &format!("faults[{i}].name"),
                    format!("fault `{}` is defined twice", f.name),
                ));
            }
        }
        if plan.assertions.is_empty() {
            return Err(self.invalid("assertions", "at least one assertion is needed"));
        }
        self.validate_network()?;
        for (i, a) in plan.assertions.iter().enumerate() {
            if let Assertion::Reclaim { slots: 0, .. } = a {
                return Err(self.invalid(
                    &format!("assertions[{i}].slots"),
                    "a reclaim needs `slots` >= 1 (how many fresh admits prove the slots came back)",
                ));
            }
            if let Assertion::Reclaim { margin_ms, .. } = a
                && *margin_ms > MAX_DURATION_MS
            {
                return Err(self.invalid(
                    &format!("assertions[{i}].margin_ms"),
                    format!("must be <= {MAX_DURATION_MS}, got {margin_ms}"),
                ));
            }
            for g in a.groups() {
                if !names.contains(g) {
                    return Err(self.invalid(
                        &format!("assertions[{i}].groups"),
                        format!("no worker group called `{g}`"),
                    ));
                }
            }
            if let Some(f) = a.fault()
                && !fault_names.contains(f)
                && !heals.contains(f)
            {
                return Err(self.invalid(
                    &format!("assertions[{i}].fault"),
                    format!("no fault called `{f}`"),
                ));
            }
        }
        Ok(())
    }

    /// `[topology] redis` against what the plan asks of the store.
    fn validate_store_topology(&self) -> Result<(), ScenarioError> {
        let plan = &self.plan;
        let redis = plan.topology.redis;
        if redis == RedisTopology::Cluster && (plan.network.proxy || plan.network.netns) {
            return Err(self.invalid(
                "topology.redis",
                "a cluster sends clients to its nodes' own addresses (MOVED/ASK), past \
                 any proxy or namespace: no `[network] proxy` or `netns` with it",
            ));
        }
        for (i, f) in plan.faults.iter().enumerate() {
            let replicated = redis == RedisTopology::Replicated;
            match (f.action, f.unreplicated_ms) {
                (FaultAction::Failover, Some(ms)) if !(1..=MAX_UNREPLICATED_MS).contains(&ms) => {
                    return Err(self.invalid(
                        &format!("faults[{i}].unreplicated_ms"),
                        format!(
                            "must be 1..={MAX_UNREPLICATED_MS} (below the sentinel's 1 s \
                             down-after, so the cut-off replica still counts), got {ms}"
                        ),
                    ));
                }
                (FaultAction::Failover, _) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(self.invalid(
                        &format!("faults[{i}].unreplicated_ms"),
                        "`unreplicated_ms` belongs to `failover` only",
                    ));
                }
            }
            if f.action == FaultAction::Failover && !replicated {
                return Err(self.invalid(
                    &format!("faults[{i}].action"),
                    "`failover` needs a replica: set `[topology] redis = \"replicated\"`",
                ));
            }
            if f.action == FaultAction::RestartRedis && replicated {
                return Err(self.invalid(
                    &format!("faults[{i}].action"),
                    "`restart-redis` restarts a single Redis; a replicated store fails over \
                     (`action = \"failover\"`)",
                ));
            }
        }
        if redis == RedisTopology::Replicated && (plan.network.proxy || plan.network.netns) {
            return Err(self.invalid(
                "topology.redis",
                "a replicated store is not wired through the fault proxy or a network \
                 namespace: drop `[network] proxy`/`netns`",
            ));
        }
        for (i, a) in plan.assertions.iter().enumerate() {
            if let Assertion::FailoverBound { fault, .. } = a
                && !plan
                    .faults
                    .iter()
                    .any(|f| &f.name == fault && f.action == FaultAction::Failover)
            {
                return Err(self.invalid(
                    &format!("assertions[{i}].fault"),
                    format!(
                        "`failover-bound` needs a fault of `action = \"failover\"` called `{fault}`"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_group(&self, i: usize, g: &WorkerGroup) -> Result<(), ScenarioError> {
        let key = |field: &str| format!("workers[{i}].{field}");
        if g.group.is_empty() {
            return Err(self.invalid(&key("group"), "must not be empty"));
        }
        if g.count == 0 {
            return Err(self.invalid(&key("count"), "must be at least 1"));
        }
        if g.requests.is_none() && g.duration_ms.is_none() {
            return Err(self.invalid(
                &key("requests"),
                "give `requests` or `duration_ms` (or both) so the group stops by itself",
            ));
        }
        if g.requests.is_some_and(|r| r == 0 || r > MAX_REQUESTS) {
            return Err(self.invalid(&key("requests"), format!("must be 1..={MAX_REQUESTS}")));
        }
        if g.duration_ms.is_some_and(|d| d == 0 || d > MAX_DURATION_MS) {
            return Err(self.invalid(
                &key("duration_ms"),
                format!("must be 1..={MAX_DURATION_MS}"),
            ));
        }
        if g.cost == 0 {
            return Err(self.invalid(&key("cost"), "must be at least 1"));
        }
        // Every pause and offset within the plan's bound, so the runner's deadline covers it.
        for (field, value) in [
            ("start_after_ms", g.start_after_ms),
            ("interval_ms", g.interval_ms),
            ("hold_ms", g.hold_ms),
            ("heartbeat_ms", g.heartbeat_ms),
        ] {
            if value > MAX_DURATION_MS {
                return Err(self.invalid(
                    &key(field),
                    format!(
                        "must be <= {MAX_DURATION_MS} (the longest a plan may run), got {value}"
                    ),
                ));
            }
        }
        let served = match g.door {
            Door::Redis | Door::Exec => matches!(g.operation, Operation::Check),
            Door::Service => matches!(
                g.operation,
                Operation::Check | Operation::Debit | Operation::Admit
            ),
            Door::FleetLease => matches!(g.operation, Operation::Spend),
        };
        if !served {
            return Err(self.invalid(
                &key("operation"),
                format!(
                    "door `{}` does not serve `{}` (redis, exec: check; service: check, debit, \
                     admit; fleet-lease: spend)",
                    door_name(g.door),
                    operation_name(g.operation)
                ),
            ));
        }
        if matches!(g.door, Door::Service | Door::FleetLease) && self.plan.topology.fleet == 0 {
            return Err(self.invalid(
                &key("door"),
                "this door needs a server fleet: set `topology.fleet`",
            ));
        }
        if g.operation == Operation::Debit {
            match g.tokens {
                Some([lo, hi]) if lo >= 1 && lo <= hi => {}
                _ => {
                    return Err(self.invalid(
                        &key("tokens"),
                        "debits need `tokens = [min, max]` with 1 <= min <= max",
                    ));
                }
            }
        }
        if let Some(s) = g.server
            && s >= self.plan.topology.fleet
        {
            return Err(self.invalid(
                &key("server"),
                format!(
                    "the fleet has {} servers (0-based index)",
                    self.plan.topology.fleet
                ),
            ));
        }
        if g.operation == Operation::Spend && g.batch == 0 {
            return Err(self.invalid(&key("batch"), "fleet-lease spends need `batch` >= 1"));
        }
        if (g.clock.is_some() && !matches!(g.door, Door::Redis | Door::Exec))
            || (g.now == NowSource::Client && g.door != Door::Redis)
        {
            return Err(self.invalid(
                &key("clock"),
                "`clock` applies to the direct and exec doors, `now` to the direct door only",
            ));
        }
        if g.door == Door::Exec && g.clock.is_some_and(|c| c.drift_ppm != 0) {
            return Err(self.invalid(
                &key("clock"),
                "an exec group's clock is libfaketime's fixed offset: give `offset_ms` only",
            ));
        }
        if let Some(c) = &g.clock {
            c.validate()
                .map_err(|e| self.invalid(&key("clock"), e.to_string()))?;
        }
        if g.operation != Operation::Admit && (g.hold_ms > 0 || g.heartbeat_ms > 0 || g.hold_once) {
            return Err(self.invalid(
                &key("hold_ms"),
                "`hold_ms`, `heartbeat_ms` and `hold_once` apply to `admit` only",
            ));
        }
        Ok(())
    }

    fn validate_fault(&self, i: usize, f: &Fault) -> Result<(), ScenarioError> {
        let key = |field: &str| format!("faults[{i}].{field}");
        if f.ask_window_ms.is_some() && f.action != FaultAction::MigrateSlot {
            return Err(self.invalid(&key("ask_window_ms"), "belongs to `migrate-slot` only"));
        }
        if f.at_ms > MAX_DURATION_MS {
            return Err(self.invalid(&key("at_ms"), format!("must be <= {MAX_DURATION_MS}")));
        }
        if f.random_within_ms.is_some_and(|r| r > MAX_DURATION_MS) {
            return Err(self.invalid(
                &key("random_within_ms"),
                format!("must be <= {MAX_DURATION_MS}"),
            ));
        }
        match f.action {
            FaultAction::SigkillWorkers
            | FaultAction::SigstopWorkers
            | FaultAction::SigcontWorkers => {
                let Some(name) = &f.group else {
                    return Err(self.invalid(&key("group"), "worker faults need a `group`"));
                };
                let Some(g) = self.group(name) else {
                    return Err(
                        self.invalid(&key("group"), format!("no worker group called `{name}`"))
                    );
                };
                if f.index.is_some_and(|ix| ix >= g.count) {
                    return Err(self.invalid(
                        &key("index"),
                        format!("group `{name}` has {} workers (0-based index)", g.count),
                    ));
                }
            }
            FaultAction::SigkillServer => {
                let Some(s) = f.server else {
                    return Err(self.invalid(&key("server"), "`sigkill-server` needs `server`"));
                };
                if s >= self.plan.topology.fleet {
                    return Err(self.invalid(
                        &key("server"),
                        format!(
                            "the fleet has {} servers (0-based index)",
                            self.plan.topology.fleet
                        ),
                    ));
                }
            }
            FaultAction::RestartRedis if self.plan.topology.redis == RedisTopology::Cluster => {
                return Err(self.invalid(
                    &key("action"),
                    "`restart-redis` restarts one server; on a cluster use `migrate-slot`",
                ));
            }
            FaultAction::RestartRedis | FaultAction::Failover => {}
            FaultAction::MigrateSlot => {
                if self.plan.topology.redis != RedisTopology::Cluster {
                    return Err(self.invalid(
                        &key("action"),
                        "`migrate-slot` needs a cluster: set `[topology] redis = \"cluster\"`",
                    ));
                }
                let Some(name) = &f.group else {
                    return Err(self.invalid(
                        &key("group"),
                        "`migrate-slot` moves the slot of a group's key: give `group`",
                    ));
                };
                match self.group(name) {
                    Some(g) if g.door == Door::Redis => {}
                    Some(_) => {
                        return Err(self.invalid(
                            &key("group"),
                            format!(
                                "group `{name}` does not use the direct door (`door = \"redis\"`)"
                            ),
                        ));
                    }
                    None => {
                        return Err(
                            self.invalid(&key("group"), format!("no worker group called `{name}`"))
                        );
                    }
                }
                if f.ask_window_ms.is_some_and(|ms| ms > MAX_ASK_WINDOW_MS) {
                    return Err(self.invalid(
                        &key("ask_window_ms"),
                        format!("must be <= {MAX_ASK_WINDOW_MS}"),
                    ));
                }
            }
            _ => {
                // A network fault may name the server whose clients it cuts off (for `failover`).
                if let Some(s) = f.server
                    && s >= self.plan.topology.fleet
                {
                    return Err(self.invalid(
                        &key("server"),
                        format!(
                            "the fleet has {} servers (0-based index)",
                            self.plan.topology.fleet
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub fn door_name(door: Door) -> &'static str {
    match door {
        Door::Redis => "redis",
        Door::Service => "service",
        Door::FleetLease => "fleet-lease",
        Door::Exec => "exec",
    }
}

impl Scenario {
    /// Aimed at an engine through `battle --adapter` (every group's door is `exec`).
    pub fn is_exec(&self) -> bool {
        self.plan.workers.iter().any(|g| g.door == Door::Exec)
    }

    fn validate_exec(&self) -> Result<(), ScenarioError> {
        let plan = &self.plan;
        if let Some(i) = plan.workers.iter().position(|g| g.door != Door::Exec) {
            return Err(self.invalid(
                &format!("workers[{i}].door"),
                "an exec scenario's groups all go through `door = \"exec\"` (one engine per run)",
            ));
        }
        if plan.policy.yaml.is_some() || plan.policy.file.is_some() {
            return Err(self.invalid(
                "policy",
                "an exec scenario configures the adapter's limiter from `[exec]`; remove `policy`",
            ));
        }
        if plan.topology.fleet > 0 {
            return Err(self.invalid("topology.fleet", "an exec scenario starts no servers"));
        }
        let Some(exec) = &plan.exec else {
            return Err(self.invalid(
                "exec",
                "`door = \"exec\"` needs an `[exec]` table: limit, window_ms (and optionally families)",
            ));
        };
        if !EXEC_LIMIT.contains(&exec.limit) {
            return Err(self.invalid(
                "exec.limit",
                format!(
                    "must be {}..={}, got {}",
                    EXEC_LIMIT.start(),
                    EXEC_LIMIT.end(),
                    exec.limit
                ),
            ));
        }
        if !EXEC_WINDOW_MS.contains(&exec.window_ms) {
            return Err(self.invalid(
                "exec.window_ms",
                format!(
                    "must be {}..={}, got {}",
                    EXEC_WINDOW_MS.start(),
                    EXEC_WINDOW_MS.end(),
                    exec.window_ms
                ),
            ));
        }
        if exec.families.is_empty() || exec.families.contains(&Family::Concurrency) {
            return Err(self.invalid(
                "exec.families",
                "name one or more rate families (concurrency slots are not rate limits)",
            ));
        }
        for (i, a) in plan.assertions.iter().enumerate() {
            if !matches!(
                a,
                Assertion::FamilyCap { .. } | Assertion::AdmitsAgain { .. }
            ) {
                return Err(self.invalid(
                    &format!("assertions[{i}].kind"),
                    format!(
                        "`{}` reads contract decisions; an exec scenario is judged by `family-cap` and `admits-again`",
                        a.kind()
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Check => "check",
        Operation::Debit => "debit",
        Operation::Admit => "admit",
        Operation::Spend => "spend",
    }
}

/// Every `*.toml` under `dir`, sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files.iter().map(|f| Scenario::load(f)).collect()
}

/// The scenarios called `names` (all when empty), in the order given.
pub fn select(dir: &Path, names: &[String]) -> Result<Vec<Scenario>, ScenarioError> {
    let all = load_all(dir)?;
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|s| &s.name == n)
                .cloned()
                .ok_or_else(|| ScenarioError::Unknown {
                    name: n.clone(),
                    dir: dir.to_path_buf(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "eight racers"
[topology]
fleet = 0
[policy]
yaml = "version: 1\nlimiters:\n  cap: { strategy: fixedWindow, limit: 10, period: 1h }\n"
[[workers]]
group = "racers"
count = 8
door = "redis"
operation = "check"
policy = "cap"
key = "k"
requests = 5
[[assertions]]
kind = "cap"
limit = 10
exact = true
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("scenarios/x.toml"), text)
    }

    #[test]
    fn parses_a_good_scenario() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "x");
        assert_eq!(s.total_workers(), Some(8));
        assert!(matches!(
            s.plan.assertions[0],
            Assertion::Cap {
                limit: 10,
                exact: true,
                per: CapScope::Window,
                ..
            }
        ));
    }

    #[test]
    fn scaling_multiplies_the_load_and_nothing_else() {
        let text = format!(
            "{}\n[[faults]]\nname = \"stop\"\nat_ms = 10\naction = \"sigstop-workers\"\ngroup = \"racers\"\n",
            GOOD.replace(
                "requests = 5",
                "requests = 5\nduration_ms = 300\nstart_after_ms = 7"
            )
        );
        let s = parse(&text).unwrap().scaled(10);
        let g = &s.plan.workers[0];
        assert_eq!((g.requests, g.duration_ms), (Some(50), Some(3000)));
        assert_eq!((g.start_after_ms, s.plan.faults[0].at_ms), (7, 10));
        assert!(matches!(
            s.plan.assertions[0],
            Assertion::Cap { limit: 10, .. }
        ));
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = parse(&GOOD.replace("requests = 5", "requets = 5"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scenarios/x.toml"), "{err}");
        assert!(err.contains("requets"), "{err}");
    }

    #[test]
    fn unbounded_group_is_refused() {
        let err = parse(&GOOD.replace("requests = 5", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers[0].requests"), "{err}");
    }

    #[test]
    fn door_operation_mismatch_is_refused() {
        let err = parse(&GOOD.replace("operation = \"check\"", "operation = \"admit\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers[0].operation"), "{err}");
        assert!(err.contains("does not serve `admit`"), "{err}");
    }

    #[test]
    fn assertion_naming_a_missing_group_is_refused() {
        let err = parse(&GOOD.replace(
            "limit = 10\nexact",
            "groups = [\"nope\"]\nlimit = 10\nexact",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("assertions[0].groups"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn fault_on_missing_server_is_refused() {
        let text = format!(
            "{GOOD}\n[[faults]]\nname = \"kill\"\nat_ms = 10\naction = \"sigkill-server\"\nserver = 2\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("faults[0].server"), "{err}");
    }

    fn with_net_fault(fault: &str, network: &str) -> Result<Scenario, ScenarioError> {
        parse(&format!(
            "{GOOD}\n{network}\n[[faults]]\nname = \"f\"\nat_ms = 10\n{fault}\n"
        ))
    }

    #[test]
    fn network_faults_are_checked_field_by_field() {
        let proxy = "[network]\nproxy = true";
        let cases = [
            (
                "action = \"drop-replies\"\nlink = \"worker->redis\"\nfor_ms = 5",
                "",
                "faults[0].action",
                "[network] proxy = true",
            ),
            (
                "action = \"drop-replies\"\nfor_ms = 5",
                proxy,
                "faults[0].link",
                "FROM->TO",
            ),
            (
                "action = \"partition\"\nlink = \"worker->db\"\nfor_ms = 5",
                proxy,
                "faults[0].link",
                "TO must be",
            ),
            (
                "action = \"blackhole\"\nlink = \"nobody->redis\"\nfor_ms = 5",
                proxy,
                "faults[0].link",
                "no worker group called `nobody`",
            ),
            (
                "action = \"reset\"\nlink = \"server3->redis\"\nfor_ms = 5",
                proxy,
                "faults[0].link",
                "the fleet has 0 servers",
            ),
            (
                "action = \"reset\"\nlink = \"worker->redis\"",
                proxy,
                "faults[0].for_ms",
                "1..=30000",
            ),
            (
                "action = \"delay\"\nlink = \"worker->redis\"\nfor_ms = 5",
                proxy,
                "faults[0].delay_ms",
                "1..=10000",
            ),
            (
                "action = \"heal\"\nlink = \"worker->redis\"\nfor_ms = 5",
                proxy,
                "faults[0].action",
                "written by the runner",
            ),
            (
                "action = \"reset\"\nlink = \"worker->redis\"\nfor_ms = 5\ndirection = \"reply\"",
                proxy,
                "faults[0].direction",
                "`delay` and `blackhole` only",
            ),
            (
                "action = \"restart-redis\"\nfor_ms = 5",
                proxy,
                "faults[0].link",
                "network faults only",
            ),
            (
                "action = \"netns-partition\"\nfor_ms = 5",
                proxy,
                "faults[0].action",
                "[network] netns = true",
            ),
            (
                "action = \"netns-partition\"\nlink = \"worker->redis\"\nfor_ms = 5",
                "[network]\nnetns = true",
                "faults[0].link",
                "no `link`",
            ),
            (
                "action = \"reset\"\nlink = \"worker->redis\"\nfor_ms = 5",
                "[network]\nproxy = true\ncall_timeout_ms = 0",
                "network.call_timeout_ms",
                "1..=60000",
            ),
        ];
        for (fault, network, key, needle) in cases {
            let err = with_net_fault(fault, network).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(needle), "{fault}: {err}");
        }
        let ok = with_net_fault(
            "action = \"delay\"\nlink = \"racers->redis\"\nfor_ms = 5\ndelay_ms = 3\njitter_ms = 2",
            proxy,
        )
        .unwrap();
        assert!(ok.plan.network.proxy);
    }

    #[test]
    fn clocks_are_bounded_and_belong_to_the_direct_door() {
        let err = parse(&GOOD.replace(
            "requests = 5",
            "requests = 5\nclock = { offset_ms = 99999999 }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("workers[0].clock") && err.contains("offset_ms"),
            "{err}"
        );
        let err = parse(&GOOD.replace("requests = 5", "requests = 5\nclock = { skew = 1 }"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("skew"), "{err}");
        let ok = parse(&GOOD.replace(
            "requests = 5",
            "requests = 5\nclock = { offset_ms = -5000, drift_ppm = 10 }\nnow = \"client\"",
        ))
        .unwrap();
        assert_eq!(ok.plan.workers[0].now, NowSource::Client);
        let err = parse(&GOOD.replace(
            "[topology]\nfleet = 0",
            "[topology]\nfleet = 0\nserver_clock_offsets_ms = [5000]",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("topology.server_clock_offsets_ms"), "{err}");
    }

    #[test]
    fn store_topologies_are_checked_key_by_key() {
        let cluster = GOOD.replace("fleet = 0", "fleet = 0\nredis = \"cluster\"");
        let ok = parse(&cluster).unwrap();
        assert_eq!(ok.plan.topology.redis, RedisTopology::Cluster);
        let migrate = "[[faults]]\nname = \"m\"\nat_ms = 10\naction = \"migrate-slot\"";
        let cases = [
            (
                GOOD.replace("fleet = 0", "fleet = 0\nredis = \"replicated\"")
                    + "\n[network]\nproxy = true\n",
                "topology.redis",
                "not wired through the fault proxy",
            ),
            (
                GOOD.replace("fleet = 0", "fleet = 0\nredis = \"sharded\""),
                "redis",
                "unknown variant",
            ),
            (
                format!("{cluster}\n[network]\nproxy = true\n"),
                "topology.redis",
                "no `[network] proxy`",
            ),
            (
                format!("{GOOD}\n{migrate}\ngroup = \"racers\"\n"),
                "faults[0].action",
                "needs a cluster",
            ),
            (
                format!("{cluster}\n{migrate}\n"),
                "faults[0].group",
                "give `group`",
            ),
            (
                format!("{cluster}\n{migrate}\ngroup = \"nobody\"\n"),
                "faults[0].group",
                "no worker group called `nobody`",
            ),
            (
                format!("{cluster}\n{migrate}\ngroup = \"racers\"\nask_window_ms = 5001\n"),
                "faults[0].ask_window_ms",
                "<= 5000",
            ),
            (
                format!(
                    "{cluster}\n[[faults]]\nname = \"r\"\nat_ms = 10\naction = \"restart-redis\"\n"
                ),
                "faults[0].action",
                "on a cluster use `migrate-slot`",
            ),
            (
                format!(
                    "{GOOD}\n[[faults]]\nname = \"r\"\nat_ms = 10\naction = \"restart-redis\"\nask_window_ms = 5\n"
                ),
                "faults[0].ask_window_ms",
                "`migrate-slot` only",
            ),
        ];
        for (text, key, needle) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(needle), "{key}: {err}");
        }
        let ok = parse(&format!(
            "{cluster}\n{migrate}\ngroup = \"racers\"\nask_window_ms = 300\n[[assertions]]\nkind = \"cluster-keys\"\n"
        ))
        .unwrap();
        assert_eq!(ok.plan.faults[0].ask_window_ms, Some(300));
        assert_eq!(ok.plan.assertions[1].kind(), "cluster-keys");
    }

    #[test]
    fn worker_counts_that_wrap_are_refused() {
        // 2 * 2^31 wraps a u32 to 0, which would pass a plain `sum() > 64` check.
        let second = GOOD
            .split("[[assertions]]")
            .next()
            .unwrap()
            .split("[[workers]]")
            .nth(1)
            .unwrap()
            .replace("racers", "others");
        let text = GOOD.replace(
            "[[assertions]]",
            &format!("[[workers]]{second}[[assertions]]"),
        );
        let text = text.replace("count = 8", "count = 2147483648");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("`workers`"), "{err}");
        assert!(err.contains("more than 2^32"), "{err}");
    }

    #[test]
    fn start_after_beyond_the_plan_bound_is_refused() {
        let text = GOOD.replace("requests = 5", "requests = 5\nstart_after_ms = 1000000000");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("workers[0].start_after_ms"), "{err}");
        assert!(err.contains("1000000000"), "{err}");
    }

    #[test]
    fn reclaim_of_zero_slots_is_refused() {
        let text = format!(
            "{GOOD}\n[[faults]]\nname = \"kill\"\nat_ms = 10\naction = \"sigkill-workers\"\ngroup = \"racers\"\n\
             [[assertions]]\nkind = \"reclaim\"\nfault = \"kill\"\nslots = 0\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("assertions[1].slots"), "{err}");
    }

    #[test]
    fn a_sweep_or_reclaim_margin_out_of_bounds_is_refused() {
        for sweep in ["0", "60001"] {
            let text = GOOD.replace("[topology]", &format!("[topology]\nsweep_ms = {sweep}"));
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("topology.sweep_ms"), "{err}");
            assert!(err.contains(&format!("got {sweep}")), "{err}");
        }
        let reclaim = |extra: &str| {
            format!(
                "{GOOD}\n[[faults]]\nname = \"kill\"\nat_ms = 10\naction = \"sigkill-workers\"\n\
                 group = \"racers\"\n[[assertions]]\nkind = \"reclaim\"\nfault = \"kill\"\nslots = 1\n{extra}"
            )
        };
        let err = parse(&reclaim("margin_ms = 30001\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("assertions[1].margin_ms"), "{err}");
        // The old fixed bound is gone: the bound comes from the granted lease.
        let err = parse(&reclaim("within_ms = 2000\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("within_ms"), "{err}");
        parse(&reclaim("margin_ms = 200\n")).unwrap();
    }

    #[test]
    fn shipped_scenarios_all_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let all = load_all(&dir).unwrap();
        for s in all.iter().filter(|s| !s.is_exec()) {
            let yaml = s.policy_yaml().unwrap();
            // Spec 9's subset, which every server (ThrottleKit's too) reads.
            let set = crate::server::policy::PolicySet::parse(&s.file.display().to_string(), &yaml)
                .unwrap();
            assert!(set.warnings.is_empty(), "{:#?}", set.warnings);
        }
    }
}
