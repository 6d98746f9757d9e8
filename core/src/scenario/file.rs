//! The scenario file format exactly as users write it: plain serde structs, one per JSON object.
//!
//! These types are the single source of truth for the format's shape. `dtest schema` prints the
//! JSON Schema generated from them, and the parser checks every file against that same schema
//! before deserializing, so the schema and the parser cannot drift apart. Field-level bounds
//! (`maximum`, `maxItems`) come from [`crate::limits`]. Nothing here is trusted: `super::build`
//! turns a [`ScenarioFile`] into the validated [`super::Scenario`], checking everything that
//! spans fields (references, times inside `duration_s`, partition sides disjoint, ...).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::health::alerts::{Comparison, Severity};
use crate::limits::*;

/// A dtest scenario: a cluster, a workload, the faults to inject and what must hold.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dtest scenario")]
pub struct ScenarioFile {
    /// Where this document's schema lives; ignored by dtest, useful to editors.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Short name of the scenario, used in reports.
    pub name: String,
    /// What the scenario exercises, for the people reading its report.
    pub description: String,
    /// Length of the scenario in seconds; every fault and load time falls inside it.
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub duration_s: f64,
    /// The nodes, in groups of identical machines.
    pub cluster: ClusterFile,
    /// How tasks are distributed across nodes and packed into their resources.
    #[serde(default)]
    pub strategy: StrategyFile,
    /// Systems under test that load tasks send requests to, by name.
    #[serde(default)]
    #[schemars(extend("maxProperties" = TARGETS_MAX))]
    pub targets: BTreeMap<String, TargetFile>,
    /// The tasks to run.
    pub workload: WorkloadFile,
    /// Capacity held back on some nodes for one task during a time window.
    #[serde(default)]
    #[schemars(length(max = RESERVATIONS_MAX))]
    pub reservations: Vec<ReservationFile>,
    /// Faults injected at given times.
    #[serde(default)]
    #[schemars(length(max = FAULTS_MAX))]
    pub faults: Vec<FaultFile>,
    /// What must hold at the end; a failed expectation makes the run exit 1.
    #[serde(default)]
    pub expect: ExpectFile,
    /// Alert rules watched during the run; the report lists the alerts that fired and resolved.
    #[serde(default)]
    #[schemars(length(max = ALERTS_MAX))]
    pub alerts: Vec<AlertFile>,
    /// Settings of the phi accrual failure detector.
    #[serde(default)]
    pub failure_detector: FailureDetectorFile,
    /// How failed task attempts are retried.
    #[serde(default)]
    pub retry: RetryFile,
}

/// The cluster: groups of nodes. Node ids are `<group>-<n>`, n counting from 1.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Groups of identical nodes.
    #[schemars(length(min = 1, max = GROUPS_MAX))]
    pub groups: Vec<GroupFile>,
}

/// A group of identical nodes.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Group name; its nodes are `<name>-1` to `<name>-<count>`.
    pub name: String,
    /// Number of nodes in the group.
    #[schemars(range(min = 1, max = NODES_MAX))]
    pub count: u64,
    /// Region the nodes stand in, for locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone within the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Capacity of each node. `dtest sim` needs it; `dtest run` detects it when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesFile>,
    /// Capabilities every node of the group offers (`linux`, `gpu`, `http`, ...).
    #[serde(default)]
    #[schemars(length(max = LIST_ITEMS_MAX))]
    pub capabilities: Vec<String>,
}

/// An amount of each resource. Absent fields are zero.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    /// CPU in thousandths of a core.
    #[serde(default)]
    #[schemars(range(max = CPU_MILLIS_MAX))]
    pub cpu_millis: u64,
    /// Memory in MiB.
    #[serde(default)]
    #[schemars(range(max = MEMORY_MB_MAX))]
    pub memory_mb: u64,
    /// Disk in MB.
    #[serde(default)]
    #[schemars(range(max = DISK_MB_MAX))]
    pub disk_mb: u64,
    /// Network bandwidth in Mbit/s.
    #[serde(default)]
    #[schemars(range(max = NET_MBPS_MAX))]
    pub net_mbps: u64,
    /// Whole GPUs.
    #[serde(default)]
    #[schemars(range(max = GPUS_MAX))]
    pub gpus: u64,
    /// Named custom resources (licenses, ports, ...) in whole units.
    #[serde(default)]
    #[schemars(extend("maxProperties" = CUSTOM_RESOURCES_MAX))]
    pub custom: BTreeMap<String, CustomUnits>,
}

/// Units of a named custom resource.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct CustomUnits(#[schemars(range(max = CUSTOM_UNITS_MAX))] pub u64);

/// How tasks are placed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyFile {
    /// Which node gets each task.
    #[serde(default)]
    pub distribution: Distribution,
    /// How a task's resources are carved out of the candidate nodes.
    #[serde(default)]
    pub allocation: Allocation,
    /// Factor weights of the `weighted` strategy (and of `adaptive` when it blends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsFile>,
    /// Whether a task may evict running tasks of lower priority; evicted tasks are requeued.
    #[serde(default)]
    pub preemption: bool,
}

/// Distribution strategies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Nodes in turn, skipping those that cannot take the task.
    RoundRobin,
    /// The fitting node whose busiest resource is the least used.
    #[default]
    LeastLoaded,
    /// A random fitting node, drawn from the run's seed.
    Random,
    /// The nodes with the fewest capabilities the task does not need; `allocation` picks among them.
    Capability,
    /// The task's zone, else its region, else (unless strict) anywhere; `allocation` picks within.
    Locality,
    /// The best weighted sum of free resources, health, fewer tasks and locality (`weights`).
    Weighted,
    /// Per task, from recent failures, load imbalance and queue length (see docs/scenarios.md).
    Adaptive,
}

impl Distribution {
    /// Every distribution strategy, in the order the documentation lists them.
    pub const ALL: [Distribution; 7] = [
        Distribution::RoundRobin,
        Distribution::LeastLoaded,
        Distribution::Random,
        Distribution::Capability,
        Distribution::Locality,
        Distribution::Weighted,
        Distribution::Adaptive,
    ];
}

/// Allocation strategies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// The lowest-numbered node that fits.
    FirstFit,
    /// The fitting node already most allocated, packing work onto few nodes.
    #[default]
    BestFit,
    /// The node whose resources end up most evenly used.
    Balanced,
    /// The lowest-numbered fitting node in the task's zone, else region, else anywhere.
    Locality,
}

impl Allocation {
    /// Every allocation strategy, in the order the documentation lists them.
    pub const ALL: [Allocation; 4] =
        [Allocation::FirstFit, Allocation::BestFit, Allocation::Balanced, Allocation::Locality];
}

/// Weights of the `weighted` distribution; each is non-negative and at least one is positive.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    /// Weight of the node's free resources.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub free_resources: f64,
    /// Weight of the node's health score.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub health: f64,
    /// Weight of the node's current task count (fewer is better).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub load: f64,
    /// Weight of matching the task's locality.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub locality: f64,
}

/// A system under test.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// Where `dtest run` sends requests: `http`, `https`, `ws` or `wss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How the target behaves in `dtest sim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<TargetSimFile>,
    /// How `dtest run` trusts an `https` or `wss` target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
}

/// How to trust a TLS target; by default, by Mozilla's root certificates.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// A PEM file of CA certificates to trust besides Mozilla's roots (a private CA's, or a
    /// self-signed target's own certificate), relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Do not verify the target's certificate at all.
    #[serde(default)]
    pub insecure: bool,
}

/// A simulated target.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSimFile {
    /// Service latency when the target is not saturated.
    pub latency_ms: LatencyFile,
    /// Requests per second the target serves before requests queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = RPS_MAX))]
    pub capacity_rps: Option<f64>,
    /// Fraction of requests that fail.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1))]
    pub error_rate: f64,
}

/// A latency distribution given by two percentiles.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyFile {
    /// Median latency in milliseconds.
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub p50: f64,
    /// 99th percentile latency in milliseconds; at least `p50`.
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub p99: f64,
}

/// The workload.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    /// Whether tasks all start together or one entry after the other.
    #[serde(default)]
    pub mode: WorkloadMode,
    /// Task entries; each stands for `count` identical task instances.
    #[schemars(length(min = 1, max = TASK_SPECS_MAX))]
    pub tasks: Vec<TaskFile>,
}

/// Workload modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadMode {
    /// Every task is queued at the start.
    #[default]
    Parallel,
    /// Task entries run in file order, each when the previous has finished; load lengths add up.
    Sequential,
}

/// One task entry of the workload.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// Task name; instances are `<name>#<index>`, index from 1.
    pub name: String,
    /// Number of identical instances; `{index}` and `{count}` in `argv` tell them apart.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = TASK_COUNT_MAX))]
    pub count: u64,
    /// What the task does.
    pub kind: TaskKind,
    /// Higher runs first; with `strategy.preemption` it may evict lower.
    #[serde(default)]
    #[schemars(range(max = PRIORITY_MAX))]
    pub priority: u64,
    /// Resources each instance holds while it runs.
    #[serde(default)]
    pub requires: ResourcesFile,
    /// Capabilities the node must offer.
    #[serde(default)]
    #[schemars(length(max = LIST_ITEMS_MAX))]
    pub capabilities: Vec<String>,
    /// Where the task prefers (or must) run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityFile>,
    /// The command a `command` task runs in `dtest run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandFile>,
    /// The load a `load` task generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadFile>,
    /// How a `command` task behaves in `dtest sim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<TaskSimFile>,
    /// Attempts per instance before it counts as failed; defaults to `retry.max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = ATTEMPTS_MAX))]
    pub max_attempts: Option<u64>,
}

fn one() -> u64 {
    1
}

/// Kinds of task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Runs a command (a test shard, a script) and passes when it exits 0.
    Command,
    /// Generates load against a target following a pattern.
    Load,
}

/// A locality preference.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalityFile {
    /// Preferred region; must be the region of some group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Preferred zone; must be the zone of some group (in `region`, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// When true the task never runs outside its region and zone; otherwise it falls back.
    #[serde(default)]
    pub strict: bool,
}

/// A command to run.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandFile {
    /// Program and arguments, run without a shell. `{index}` and `{count}` are substituted.
    #[schemars(length(min = 1, max = ARGV_MAX))]
    pub argv: Vec<String>,
    /// Seconds before the command is killed and the attempt fails.
    #[serde(default = "command_timeout_s")]
    #[schemars(range(min = 0, max = COMMAND_TIMEOUT_S_MAX))]
    pub timeout_s: f64,
    /// Extra environment variables.
    #[serde(default)]
    #[schemars(extend("maxProperties" = ENV_MAX))]
    pub env: BTreeMap<String, String>,
    /// Working directory on the node; the node's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

fn command_timeout_s() -> f64 {
    600.0
}

/// Load generated against a target.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadFile {
    /// Name of a target in `targets`.
    pub target: String,
    /// How the request rate changes over time; the rate is split across the task's instances.
    pub pattern: PatternFile,
    /// Seconds after the scenario starts before the load begins.
    #[serde(default)]
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub start_s: f64,
    /// Per-request timeout in milliseconds.
    #[serde(default = "load_timeout_ms")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub timeout_ms: f64,
    /// Open connections per instance.
    #[serde(default = "connections")]
    #[schemars(range(min = 1, max = CONNECTIONS_MAX))]
    pub connections: u64,
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers.
    #[serde(default)]
    #[schemars(extend("maxProperties" = HEADERS_MAX))]
    pub headers: BTreeMap<String, String>,
    /// Request body (or the message sent to a WebSocket target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// HTTP version for `http://` targets: `"1.1"` (keep-alive) or `"2"` (HTTP/2 with prior
    /// knowledge, many requests in flight per connection).
    #[serde(default)]
    pub http_version: HttpVersion,
}

/// HTTP versions a load task can speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum HttpVersion {
    /// HTTP/1.1 with keep-alive: one request in flight per connection.
    #[default]
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2 over plain TCP (prior knowledge): many streams per connection.
    #[serde(rename = "2")]
    Http2,
}

fn load_timeout_ms() -> f64 {
    10_000.0
}

fn connections() -> u64 {
    32
}

/// HTTP methods a load task can send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

/// A load pattern: the target rate as a function of time since the load started.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PatternFile {
    /// `rps` for `duration_s`.
    Constant {
        /// Requests per second.
        #[schemars(range(min = 0, max = RPS_MAX))]
        rps: f64,
        /// Seconds of load.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        duration_s: f64,
    },
    /// A straight line from `from_rps` to `to_rps` over `duration_s` (up or down).
    Ramp {
        /// Rate at the start.
        #[schemars(range(min = 0, max = RPS_MAX))]
        from_rps: f64,
        /// Rate at the end.
        #[schemars(range(min = 0, max = RPS_MAX))]
        to_rps: f64,
        /// Seconds of load.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        duration_s: f64,
    },
    /// `base_rps`, jumping to `spike_rps` from `spike_at_s` for `spike_duration_s`.
    Spike {
        /// Rate outside the spike.
        #[schemars(range(min = 0, max = RPS_MAX))]
        base_rps: f64,
        /// Rate during the spike.
        #[schemars(range(min = 0, max = RPS_MAX))]
        spike_rps: f64,
        /// Seconds after the load starts when the spike begins.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        spike_at_s: f64,
        /// Seconds the spike lasts.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        spike_duration_s: f64,
        /// Seconds of load.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        duration_s: f64,
    },
    /// A sine wave around `base_rps` with `amplitude_rps` and `period_s`.
    Wave {
        /// Mean rate.
        #[schemars(range(min = 0, max = RPS_MAX))]
        base_rps: f64,
        /// Swing above and below the mean; at most `base_rps`.
        #[schemars(range(min = 0, max = RPS_MAX))]
        amplitude_rps: f64,
        /// Seconds per full wave.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        period_s: f64,
        /// Seconds of load.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        duration_s: f64,
    },
    /// A rate drawn uniformly from `[min_rps, max_rps]` every `change_every_s`, from the seed.
    Random {
        /// Lowest rate.
        #[schemars(range(min = 0, max = RPS_MAX))]
        min_rps: f64,
        /// Highest rate.
        #[schemars(range(min = 0, max = RPS_MAX))]
        max_rps: f64,
        /// Seconds between changes of rate.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        change_every_s: f64,
        /// Seconds of load.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        duration_s: f64,
    },
    /// `base_rps`, with `burst_rps` for `burst_duration_s` at the start of every `burst_every_s`.
    Burst {
        /// Rate between bursts.
        #[schemars(range(min = 0, max = RPS_MAX))]
        base_rps: f64,
        /// Rate during a burst.
        #[schemars(range(min = 0, max = RPS_MAX))]
        burst_rps: f64,
        /// Seconds from the start of one burst to the next.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        burst_every_s: f64,
        /// Seconds each burst lasts; less than `burst_every_s`.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        burst_duration_s: f64,
        /// Seconds of load.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        duration_s: f64,
    },
}

/// How a command task behaves in simulation.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSimFile {
    /// Run time of one attempt, drawn from a normal distribution cut at zero.
    pub duration_ms: DurationDistFile,
    /// Probability that an attempt fails.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1))]
    pub fail_rate: f64,
}

/// A normal distribution of durations.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DurationDistFile {
    /// Mean in milliseconds.
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub mean: f64,
    /// Standard deviation in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub stddev: f64,
}

/// Capacity held on some nodes for one task entry between two times.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationFile {
    /// Reservation name.
    pub name: String,
    /// The task entry the capacity is held for; no other task may use it in the window.
    pub task: String,
    /// Node ids whose capacity is held.
    #[serde(default)]
    #[schemars(length(max = LIST_ITEMS_MAX))]
    pub nodes: Vec<String>,
    /// Groups whose nodes' capacity is held.
    #[serde(default)]
    #[schemars(length(max = LIST_ITEMS_MAX))]
    pub groups: Vec<String>,
    /// Capacity held on each of those nodes.
    pub resources: ResourcesFile,
    /// Start of the window, in seconds.
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub from_s: f64,
    /// End of the window, in seconds.
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub until_s: f64,
}

/// A fault injected at `at_s`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultFile {
    /// Links between the sides are cut. With one side, it is cut off from everything else.
    /// The orchestrator stands on the side that names `orchestrator`; else on the first side when
    /// there are several, and with the rest of the cluster when one side is cut off.
    Partition {
        /// Seconds into the scenario.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        at_s: f64,
        /// Sides as lists of group names.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(min = 1, max = LIST_ITEMS_MAX))]
        groups: Option<Vec<Vec<String>>>,
        /// Sides as lists of node ids.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(min = 1, max = LIST_ITEMS_MAX))]
        nodes: Option<Vec<Vec<String>>>,
        /// When true only traffic from the first side to the others is dropped.
        #[serde(default)]
        oneway: bool,
        /// Seconds into the scenario when the partition heals; never when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        heal_at_s: Option<f64>,
    },
    /// Nodes die (SIGKILL in `dtest run`), losing everything in memory.
    Kill {
        /// Seconds into the scenario.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        at_s: f64,
        /// Node ids.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        nodes: Vec<String>,
        /// Groups, every node of which dies.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        groups: Vec<String>,
        /// Seconds into the scenario when the nodes start again, as new incarnations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        restart_at_s: Option<f64>,
    },
    /// Messages are dropped with probability `rate` (on the given nodes' links, or everywhere).
    PacketLoss {
        /// Seconds into the scenario.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        at_s: f64,
        /// Probability that a message is dropped.
        #[schemars(range(min = 0, max = 1))]
        rate: f64,
        /// Node ids whose links lose messages; all when both lists are empty.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        nodes: Vec<String>,
        /// Groups whose links lose messages.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        groups: Vec<String>,
        /// Seconds into the scenario when the loss stops; never when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        until_s: Option<f64>,
    },
    /// Every message is delayed by a uniform draw from `[min_ms, max_ms]`.
    Latency {
        /// Seconds into the scenario.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        at_s: f64,
        /// Least added delay in milliseconds.
        #[schemars(range(min = 0, max = MILLIS_MAX))]
        min_ms: f64,
        /// Most added delay in milliseconds.
        #[schemars(range(min = 0, max = MILLIS_MAX))]
        max_ms: f64,
        /// Node ids whose links are slowed; all when both lists are empty.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        nodes: Vec<String>,
        /// Groups whose links are slowed.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        groups: Vec<String>,
        /// Seconds into the scenario when the delay stops; never when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        until_s: Option<f64>,
    },
    /// Every link of the given nodes drops all traffic (in one or both directions).
    Clog {
        /// Seconds into the scenario.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        at_s: f64,
        /// Node ids.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        nodes: Vec<String>,
        /// Groups.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        groups: Vec<String>,
        /// Which traffic is dropped.
        #[serde(default)]
        direction: ClogDirection,
        /// Seconds into the scenario when the links clear; never when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        until_s: Option<f64>,
    },
    /// Nodes stop executing (SIGSTOP in `dtest run`) and keep their memory.
    Pause {
        /// Seconds into the scenario.
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        at_s: f64,
        /// Node ids.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        nodes: Vec<String>,
        /// Groups.
        #[serde(default)]
        #[schemars(length(max = LIST_ITEMS_MAX))]
        groups: Vec<String>,
        /// Seconds into the scenario when the nodes resume; never when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = DURATION_S_MAX))]
        until_s: Option<f64>,
    },
}

/// Directions of a clog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClogDirection {
    /// Incoming and outgoing.
    #[default]
    Both,
    /// Incoming only.
    In,
    /// Outgoing only.
    Out,
}

/// Expectations over the whole run.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    /// Every task instance ends completed (not failed, cancelled or lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_tasks_complete: Option<bool>,
    /// Most task instances that may end failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = TASKS_MAX))]
    pub max_failed_tasks: Option<u64>,
    /// Most reassignments of tasks from dead or suspected nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = TASKS_MAX))]
    pub max_reassignments: Option<u64>,
    /// Most live nodes wrongly declared dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = NODES_MAX))]
    pub max_false_suspicions: Option<u64>,
    /// Seconds within which every killed node is declared dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub failure_detected_within_s: Option<f64>,
    /// Seconds, after the last fault heals, within which the system converges: every task
    /// ended, every node that is not down alive in the orchestrator's eyes, every alert resolved
    /// (the liveness phase). By default, by the scenario's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub recovered_within_s: Option<f64>,
    /// Highest merged median latency, corrected for coordinated omission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub latency_p50_ms: Option<f64>,
    /// Highest merged 90th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub latency_p90_ms: Option<f64>,
    /// Highest merged 99th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub latency_p99_ms: Option<f64>,
    /// Highest fraction of requests that may fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub error_rate_max: Option<f64>,
    /// Highest merged latency of any request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub latency_max_ms: Option<f64>,
    /// Lowest achieved request rate over the load's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = RPS_MAX))]
    pub rps_min: Option<f64>,
    /// Most arrivals the load generators may drop (not sent within the request timeout of
    /// their due time because every connection was busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = REQUESTS_MAX))]
    pub dropped_max: Option<u64>,
}

/// An alert rule: fires once `metric` `op` `threshold` has held for `for_s`, resolves when it
/// stops holding.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertFile {
    /// Alert name, unique among the alerts; reports show it.
    pub name: String,
    /// What is watched: a node metric (on every node) or a cluster metric.
    pub metric: AlertMetric,
    /// How the metric is compared with `threshold`.
    pub op: Comparison,
    /// The threshold, within the metric's range: 0 to 100 for `health_score` and
    /// `cluster_health`, 0 to 1 for `cpu`, `memory`, `disk` and `task_error_rate`, 0 to 100 for
    /// `phi`, 0 to the scenario's node count for `nodes_down`.
    #[schemars(range(min = 0, max = NODES_MAX))]
    pub threshold: f64,
    /// Seconds the condition must hold before the alert fires; 0 fires at once.
    #[serde(default)]
    #[schemars(range(min = 0, max = DURATION_S_MAX))]
    pub for_s: f64,
    /// How bad it is when it fires.
    #[serde(default = "warning")]
    pub severity: Severity,
}

fn warning() -> Severity {
    Severity::Warning
}

/// What an alert watches. A node metric is watched on every node, each its own alert (the
/// subject is the node id); a cluster metric is watched once (the subject is `cluster`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// A node's health score, 0 to 100 (100 is perfectly healthy).
    HealthScore,
    /// The failure detector's suspicion of a node, 0 and up; the node is suspected at
    /// `failure_detector.phi_threshold` (8 by default).
    Phi,
    /// A node's CPU use from its heartbeats, 0 to 1.
    Cpu,
    /// A node's memory use from its heartbeats, 0 to 1.
    Memory,
    /// A node's disk use from its heartbeats, 0 to 1.
    Disk,
    /// The share of a node's recent task attempts that failed, 0 to 1.
    TaskErrorRate,
    /// Cluster: the number of nodes declared dead now.
    NodesDown,
    /// Cluster: the mean health score of the nodes not dead (0 when all are), 0 to 100.
    ClusterHealth,
}

impl AlertMetric {
    /// Every metric, in the order the documentation lists them.
    pub const ALL: [AlertMetric; 8] = [
        AlertMetric::HealthScore,
        AlertMetric::Phi,
        AlertMetric::Cpu,
        AlertMetric::Memory,
        AlertMetric::Disk,
        AlertMetric::TaskErrorRate,
        AlertMetric::NodesDown,
        AlertMetric::ClusterHealth,
    ];

    /// The name scenario files use, which is also the metric name given to
    /// [`crate::health::Alerts::observe`].
    pub fn name(self) -> &'static str {
        match self {
            AlertMetric::HealthScore => "health_score",
            AlertMetric::Phi => "phi",
            AlertMetric::Cpu => "cpu",
            AlertMetric::Memory => "memory",
            AlertMetric::Disk => "disk",
            AlertMetric::TaskErrorRate => "task_error_rate",
            AlertMetric::NodesDown => "nodes_down",
            AlertMetric::ClusterHealth => "cluster_health",
        }
    }

    /// Whether the metric is the cluster's (subject `cluster`) rather than each node's.
    pub fn is_cluster(self) -> bool {
        matches!(self, AlertMetric::NodesDown | AlertMetric::ClusterHealth)
    }
}

/// Phi accrual failure detector settings (Akka's defaults).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureDetectorFile {
    /// Milliseconds between heartbeats from each node.
    #[serde(default = "heartbeat_interval_ms")]
    #[schemars(range(min = 10, max = 60_000))]
    pub heartbeat_interval_ms: u64,
    /// Phi at which a node is suspected (P(false suspicion) is about 10^-phi).
    #[serde(default = "phi_threshold")]
    #[schemars(range(min = 0, max = PHI_THRESHOLD_MAX))]
    pub phi_threshold: f64,
    /// Inter-arrival samples kept per node.
    #[serde(default = "detector_window")]
    #[schemars(range(min = 2, max = DETECTOR_WINDOW_MAX))]
    pub window: u64,
    /// Floor of the standard deviation, in milliseconds, so regular heartbeats do not make phi jumpy.
    #[serde(default = "min_stddev_ms")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub min_stddev_ms: f64,
    /// Extra silence, in milliseconds, tolerated before phi rises (GC pauses, hiccups).
    #[serde(default = "acceptable_pause_ms")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub acceptable_pause_ms: f64,
}

impl Default for FailureDetectorFile {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: heartbeat_interval_ms(),
            phi_threshold: phi_threshold(),
            window: detector_window(),
            min_stddev_ms: min_stddev_ms(),
            acceptable_pause_ms: acceptable_pause_ms(),
        }
    }
}

fn heartbeat_interval_ms() -> u64 {
    1_000
}
fn phi_threshold() -> f64 {
    8.0
}
fn detector_window() -> u64 {
    1_000
}
fn min_stddev_ms() -> f64 {
    100.0
}
fn acceptable_pause_ms() -> f64 {
    3_000.0
}

/// Retries of failed attempts: exponential backoff with full jitter.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts per task instance, the first included.
    #[serde(default = "max_attempts")]
    #[schemars(range(min = 1, max = ATTEMPTS_MAX))]
    pub max_attempts: u64,
    /// Backoff before the first retry, in milliseconds (before jitter).
    #[serde(default = "backoff_base_ms")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub backoff_base_ms: f64,
    /// Longest backoff, in milliseconds.
    #[serde(default = "backoff_cap_ms")]
    #[schemars(range(min = 0, max = MILLIS_MAX))]
    pub backoff_cap_ms: f64,
}

impl Default for RetryFile {
    fn default() -> Self {
        Self { max_attempts: max_attempts(), backoff_base_ms: backoff_base_ms(), backoff_cap_ms: backoff_cap_ms() }
    }
}

fn max_attempts() -> u64 {
    3
}
fn backoff_base_ms() -> f64 {
    100.0
}
fn backoff_cap_ms() -> f64 {
    10_000.0
}
