//! Scenarios: the validated model both modes run, and the parser that builds it from JSON.
//!
//! Parse, don't validate. [`parse`] takes the bytes of a scenario file through four stages and
//! reports every problem of the first stage that finds any:
//!
//! 1. `json`: a strict JSON parser that keeps the line and column of every value;
//! 2. `check`: the document against the JSON Schema generated from `file`'s serde types;
//! 3. serde: the document into those plain types ([`file::ScenarioFile`]);
//! 4. `build`: everything that spans fields (names unique, references resolve, times inside
//!    `duration_s`, partition sides disjoint, pattern fields consistent, totals under the limits
//!    of [`crate::limits`]) while converting into [`Scenario`], which cannot hold an invalid
//!    scenario: references are indices, times are whole milliseconds.
//!
//! The checks of one task's values (names, counts, commands, URLs, headers, patterns) are
//! [`rules`], functions of the validated types that `build` applies and that a node applies
//! again to the plan it is sent, so both refuse the same values with the same messages.

mod build;
mod check;
mod diagnostic;
pub mod file;
pub mod json;
pub mod rules;
mod write;

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use diagnostic::{Diagnostic, Path, Segment};
pub use file::{AlertMetric, Allocation, ClogDirection, Distribution, HttpMethod, HttpVersion, TaskKind, WorkloadMode};
pub use write::{to_file, to_json};

use crate::limits::SCENARIO_BYTES_MAX;

/// Parses and validates the bytes of a scenario file. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Scenario, Vec<Diagnostic>> {
    if bytes.len() as u64 > SCENARIO_BYTES_MAX {
        return Err(vec![Diagnostic {
            pos: None,
            path: Path::root(),
            message: format!(
                "the file is {} bytes, above the limit of {SCENARIO_BYTES_MAX} (SCENARIO_BYTES_MAX)",
                bytes.len()
            ),
        }]);
    }
    let json = json::parse(bytes)
        .map_err(|e| vec![Diagnostic { pos: Some(e.pos), path: Path::root(), message: e.message }])?;
    let mut problems = check::check(schema(), &json);
    if !problems.is_empty() {
        problems.sort();
        return Err(problems);
    }
    let file: file::ScenarioFile = serde_json::from_value(json.to_serde()).map_err(|e| {
        // The schema check above accepts only what serde accepts; this is a bug if reached.
        vec![Diagnostic {
            pos: Some(json.pos),
            path: Path::root(),
            message: format!("{e} (the schema check missed this)"),
        }]
    })?;
    build::build(&file).map_err(|problems| {
        let mut diagnostics: Vec<Diagnostic> = problems
            .into_iter()
            .map(|(path, message)| Diagnostic { pos: Some(path.locate(&json)), path, message })
            .collect();
        diagnostics.sort();
        diagnostics
    })
}

/// The JSON Schema of the scenario format (draft 2020-12), generated from [`file::ScenarioFile`].
pub fn schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::Value::from(schemars::schema_for!(file::ScenarioFile)))
}

/// A validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What the scenario exercises.
    pub description: String,
    /// Length of the scenario.
    pub duration_ms: u64,
    /// Node groups, in file order. [`GroupId`] indexes this.
    pub groups: Vec<Group>,
    /// Placement strategies.
    pub strategy: Strategy,
    /// Targets, sorted by name. [`TargetId`] indexes this.
    pub targets: Vec<Target>,
    /// The tasks.
    pub workload: Workload,
    /// Capacity reservations.
    pub reservations: Vec<Reservation>,
    /// Faults, in file order.
    pub faults: Vec<Fault>,
    /// What must hold at the end.
    pub expect: Expect,
    /// Alert rules, in file order; empty when the file has none.
    pub alerts: Vec<AlertSpec>,
    /// Failure detector settings.
    pub failure_detector: FailureDetector,
    /// Retry policy.
    pub retry: Retry,
}

impl Scenario {
    /// Nodes over all groups.
    pub fn nodes_total(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }

    /// Task instances over all task entries.
    pub fn tasks_total(&self) -> u64 {
        self.workload.tasks.iter().map(|t| u64::from(t.count)).sum()
    }

    /// The group a [`GroupId`] names.
    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id.0 as usize]
    }

    /// Every node, group by group, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeRef> + '_ {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| (1..=group.count).map(move |index| NodeRef { group: GroupId(g as u32), index }))
    }

    /// A node's id as users write it: `<group>-<n>`.
    pub fn node_id(&self, node: NodeRef) -> String {
        format!("{}-{}", self.group(node.group).name, node.index)
    }
}

/// Index of a group in [`Scenario::groups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// Index of a target in [`Scenario::targets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId(pub u32);

/// Index of a task entry in [`Workload::tasks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskSpecId(pub u32);

/// One node: its group and its number in the group, from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    /// The node's group.
    pub group: GroupId,
    /// 1-based number within the group.
    pub index: u32,
}

/// A group of identical nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Name; node ids are `<name>-<n>`.
    pub name: String,
    /// Nodes in the group, at least 1.
    pub count: u32,
    /// Region, for locality.
    pub region: Option<String>,
    /// Zone, for locality.
    pub zone: Option<String>,
    /// Capacity of each node, when declared.
    pub resources: Option<Resources>,
    /// Capabilities, sorted and unique.
    pub capabilities: Vec<String>,
}

/// An amount of each resource. Also what a node daemon says it offers, on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    /// MiB.
    pub memory_mb: u64,
    /// MB.
    #[serde(default)]
    pub disk_mb: u64,
    /// Mbit/s.
    #[serde(default)]
    pub net_mbps: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u64,
    /// Named custom resources.
    #[serde(default)]
    pub custom: BTreeMap<String, u64>,
}

impl Resources {
    /// Whether `self` is at least `need` in every resource.
    pub fn covers(&self, need: &Resources) -> bool {
        self.cpu_millis >= need.cpu_millis
            && self.memory_mb >= need.memory_mb
            && self.disk_mb >= need.disk_mb
            && self.net_mbps >= need.net_mbps
            && self.gpus >= need.gpus
            && need.custom.iter().all(|(name, &units)| self.custom.get(name).copied().unwrap_or(0) >= units)
    }
}

/// Placement strategies.
#[derive(Clone, Debug, PartialEq)]
pub struct Strategy {
    /// Which node gets each task.
    pub distribution: Distribution,
    /// How resources are carved out.
    pub allocation: Allocation,
    /// Factor weights of `weighted` and `adaptive`.
    pub weights: Weights,
    /// Whether higher priority tasks may evict lower ones.
    pub preemption: bool,
}

/// Weights of the `weighted` distribution; non-negative, not all zero.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// Free resources.
    pub free_resources: f64,
    /// Health score.
    pub health: f64,
    /// Current load.
    pub load: f64,
    /// Locality match.
    pub locality: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { free_resources: 1.0, health: 1.0, load: 1.0, locality: 1.0 }
    }
}

/// A system under test.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Name.
    pub name: String,
    /// Where `dtest run` sends requests.
    pub url: Option<String>,
    /// How `dtest sim` simulates it.
    pub sim: Option<TargetSim>,
    /// How `dtest run` trusts it, when it speaks TLS.
    pub tls: TargetTls,
}

/// How to trust a TLS target: Mozilla's roots, plus `ca_file`'s certificates, or nothing
/// verified when `insecure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetTls {
    /// A PEM file of CA certificates, relative to the scenario file (read by `dtest run`).
    pub ca_file: Option<String>,
    /// Do not verify the certificate.
    pub insecure: bool,
}

/// A simulated target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSim {
    /// Median service latency.
    pub latency_p50_ms: f64,
    /// 99th percentile service latency, at least the median.
    pub latency_p99_ms: f64,
    /// Requests per second served before queueing, if bounded.
    pub capacity_rps: Option<f64>,
    /// Fraction of requests that fail.
    pub error_rate: f64,
}

/// The workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Parallel or sequential.
    pub mode: WorkloadMode,
    /// Task entries, in file order. [`TaskSpecId`] indexes this.
    pub tasks: Vec<TaskSpec>,
}

/// A task entry: `count` identical instances.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    /// Name.
    pub name: String,
    /// Instances, at least 1.
    pub count: u32,
    /// Priority; higher first.
    pub priority: u32,
    /// Resources each instance holds.
    pub requires: Resources,
    /// Capabilities a node must offer, sorted and unique.
    pub capabilities: Vec<String>,
    /// Locality preference.
    pub locality: Option<Locality>,
    /// What the task does.
    pub work: Work,
    /// Attempts per instance, the first included.
    pub max_attempts: u32,
}

/// What a task does.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// A command; at least one of the two is present.
    Command {
        /// What `dtest run` executes.
        command: Option<Command>,
        /// How `dtest sim` simulates it.
        sim: Option<TaskSim>,
    },
    /// Load against a target.
    Load(Load),
}

/// A locality preference.
#[derive(Clone, Debug, PartialEq)]
pub struct Locality {
    /// Region (some group's).
    pub region: Option<String>,
    /// Zone (some group's).
    pub zone: Option<String>,
    /// Never run elsewhere.
    pub strict: bool,
}

/// A command to execute.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// Program and arguments; `{index}` and `{count}` are the only placeholders.
    pub argv: Vec<String>,
    /// Kill after this long.
    pub timeout_ms: u64,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
}

/// A simulated command.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSim {
    /// Mean run time of an attempt.
    pub duration_mean_ms: f64,
    /// Standard deviation of the run time.
    pub duration_stddev_ms: f64,
    /// Probability an attempt fails.
    pub fail_rate: f64,
}

/// Load against a target.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    /// The target.
    pub target: TargetId,
    /// Rate over time.
    pub pattern: Pattern,
    /// When the load starts, from the scenario's start.
    pub start_ms: u64,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// Connections per instance.
    pub connections: u32,
    /// HTTP method.
    pub method: HttpMethod,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body (or WebSocket message).
    pub body: Option<String>,
    /// HTTP version for `http://` targets.
    pub http_version: HttpVersion,
}

/// A load pattern; rates in requests per second, times from the start of the load.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pattern {
    /// A steady rate.
    Constant {
        /// Rate.
        rps: f64,
        /// Length.
        duration_ms: u64,
    },
    /// A straight line between two rates.
    Ramp {
        /// Rate at the start.
        from_rps: f64,
        /// Rate at the end.
        to_rps: f64,
        /// Length.
        duration_ms: u64,
    },
    /// One spike on a base rate.
    Spike {
        /// Rate outside the spike.
        base_rps: f64,
        /// Rate in the spike.
        spike_rps: f64,
        /// Spike start.
        spike_at_ms: u64,
        /// Spike length.
        spike_duration_ms: u64,
        /// Length.
        duration_ms: u64,
    },
    /// A sine wave; `amplitude_rps <= base_rps`.
    Wave {
        /// Mean rate.
        base_rps: f64,
        /// Swing.
        amplitude_rps: f64,
        /// Period.
        period_ms: u64,
        /// Length.
        duration_ms: u64,
    },
    /// A seeded random rate, redrawn periodically.
    Random {
        /// Lowest rate.
        min_rps: f64,
        /// Highest rate.
        max_rps: f64,
        /// Time between redraws.
        change_every_ms: u64,
        /// Length.
        duration_ms: u64,
    },
    /// Periodic bursts on a base rate; `burst_duration_ms < burst_every_ms`.
    Burst {
        /// Rate between bursts.
        base_rps: f64,
        /// Rate in a burst.
        burst_rps: f64,
        /// Burst period.
        burst_every_ms: u64,
        /// Burst length.
        burst_duration_ms: u64,
        /// Length.
        duration_ms: u64,
    },
}

impl Pattern {
    /// The highest rate the pattern asks for, in requests per second.
    pub fn peak_rps(&self) -> f64 {
        match *self {
            Pattern::Constant { rps, .. } => rps,
            Pattern::Ramp { from_rps, to_rps, .. } => from_rps.max(to_rps),
            Pattern::Spike { base_rps, spike_rps, .. } => base_rps.max(spike_rps),
            Pattern::Wave { base_rps, amplitude_rps, .. } => base_rps + amplitude_rps,
            Pattern::Random { max_rps, .. } => max_rps,
            Pattern::Burst { base_rps, burst_rps, .. } => base_rps.max(burst_rps),
        }
    }

    /// How long the pattern runs.
    pub fn duration_ms(&self) -> u64 {
        match *self {
            Pattern::Constant { duration_ms, .. }
            | Pattern::Ramp { duration_ms, .. }
            | Pattern::Spike { duration_ms, .. }
            | Pattern::Wave { duration_ms, .. }
            | Pattern::Random { duration_ms, .. }
            | Pattern::Burst { duration_ms, .. } => duration_ms,
        }
    }
}

/// A set of nodes named by groups and node ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet {
    /// Whole groups, sorted and unique.
    pub groups: Vec<GroupId>,
    /// Single nodes not already covered by `groups`, sorted and unique.
    pub nodes: Vec<NodeRef>,
}

impl NodeSet {
    /// Whether the set holds `node`.
    pub fn contains(&self, node: NodeRef) -> bool {
        self.groups.binary_search(&node.group).is_ok() || self.nodes.binary_search(&node).is_ok()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.nodes.is_empty()
    }
}

/// Capacity held for one task entry on some nodes during a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    /// Name.
    pub name: String,
    /// The task entry the capacity is for.
    pub task: TaskSpecId,
    /// The nodes.
    pub nodes: NodeSet,
    /// Capacity held on each node.
    pub resources: Resources,
    /// Window start.
    pub from_ms: u64,
    /// Window end, after the start.
    pub until_ms: u64,
}

/// A fault at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When it starts.
    pub at_ms: u64,
    /// What happens.
    pub kind: FaultKind,
}

impl Fault {
    /// Its kind's name, as scenario files spell it (`partition`, `kill`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FaultKind::Partition { .. } => "partition",
            FaultKind::Kill { .. } => "kill",
            FaultKind::PacketLoss { .. } => "packet_loss",
            FaultKind::Latency { .. } => "latency",
            FaultKind::Clog { .. } => "clog",
            FaultKind::Pause { .. } => "pause",
        }
    }

    /// When the fault ends (heals, restarts, clears), or `None` if it lasts to the end.
    pub fn end_ms(&self) -> Option<u64> {
        match self.kind {
            FaultKind::Partition { heal_at_ms: end, .. }
            | FaultKind::Kill { restart_at_ms: end, .. }
            | FaultKind::PacketLoss { until_ms: end, .. }
            | FaultKind::Latency { until_ms: end, .. }
            | FaultKind::Clog { until_ms: end, .. }
            | FaultKind::Pause { until_ms: end, .. } => end,
        }
    }
}

/// Kinds of fault. Every end time is after the start and inside the scenario.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Links between disjoint sides are cut.
    Partition {
        /// At least one side; with one side, it is cut off from all others. The orchestrator is
        /// on at most one side, and on one when there are several.
        sides: Vec<Side>,
        /// Only traffic from the first side outwards is dropped.
        oneway: bool,
        /// When it heals.
        heal_at_ms: Option<u64>,
    },
    /// Nodes die.
    Kill {
        /// Which, not empty.
        nodes: NodeSet,
        /// When they start again as new incarnations.
        restart_at_ms: Option<u64>,
    },
    /// Messages are dropped at random.
    PacketLoss {
        /// Drop probability.
        rate: f64,
        /// Whose links; empty means everyone's.
        nodes: NodeSet,
        /// When it stops.
        until_ms: Option<u64>,
    },
    /// Messages are delayed.
    Latency {
        /// Least delay.
        min_ms: u64,
        /// Most delay, at least `min_ms`.
        max_ms: u64,
        /// Whose links; empty means everyone's.
        nodes: NodeSet,
        /// When it stops.
        until_ms: Option<u64>,
    },
    /// Nodes' links drop everything.
    Clog {
        /// Which, not empty.
        nodes: NodeSet,
        /// Which direction.
        direction: ClogDirection,
        /// When it clears.
        until_ms: Option<u64>,
    },
    /// Nodes stop executing.
    Pause {
        /// Which, not empty.
        nodes: NodeSet,
        /// When they resume.
        until_ms: Option<u64>,
    },
}

/// One side of a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// The nodes on this side.
    pub nodes: NodeSet,
    /// Whether the orchestrator stands here (on no side: with the rest of the cluster).
    pub orchestrator: bool,
}

/// Expectations; `None` means not checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expect {
    /// Every task instance completes.
    pub all_tasks_complete: Option<bool>,
    /// Most failed instances.
    pub max_failed_tasks: Option<u64>,
    /// Most reassignments.
    pub max_reassignments: Option<u64>,
    /// Most false suspicions.
    pub max_false_suspicions: Option<u64>,
    /// Killed nodes are declared dead within this.
    pub failure_detected_within_ms: Option<u64>,
    /// After the last fault heals, the system converges within this (the liveness phase's
    /// bound); by default, by the scenario's end.
    pub recovered_within_ms: Option<u64>,
    /// Highest merged median latency.
    pub latency_p50_ms: Option<f64>,
    /// Highest merged 90th percentile latency.
    pub latency_p90_ms: Option<f64>,
    /// Highest merged 99th percentile latency.
    pub latency_p99_ms: Option<f64>,
    /// Highest error rate.
    pub error_rate_max: Option<f64>,
    /// Highest merged latency of any request.
    pub latency_max_ms: Option<f64>,
    /// Lowest achieved rate.
    pub rps_min: Option<f64>,
    /// Most dropped arrivals.
    pub dropped_max: Option<u64>,
}

/// An alert rule: fires once `metric` compared with `threshold` has held for `for_ms`, and
/// resolves when it stops holding (see [`crate::health::alerts`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSpec {
    /// Name, unique among the scenario's alerts.
    pub name: String,
    /// What is watched.
    pub metric: AlertMetric,
    /// How the metric is compared with the threshold.
    pub comparison: crate::health::alerts::Comparison,
    /// The threshold, within the metric's range.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires, at most `duration_ms`.
    pub for_ms: u64,
    /// Severity when firing.
    pub severity: crate::health::alerts::Severity,
}

impl AlertSpec {
    /// The rule for [`crate::health::Alerts::add_rule`]; observe it under [`AlertMetric::name`].
    pub fn rule(&self) -> crate::health::alerts::AlertRule {
        crate::health::alerts::AlertRule {
            name: self.name.clone(),
            metric: self.metric.name().to_owned(),
            comparison: self.comparison,
            threshold: self.threshold,
            for_ms: self.for_ms,
            severity: self.severity,
        }
    }
}

/// Phi accrual failure detector settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureDetector {
    /// Heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Suspicion threshold.
    pub phi_threshold: f64,
    /// Samples kept.
    pub window: u32,
    /// Standard deviation floor.
    pub min_stddev_ms: f64,
    /// Tolerated extra silence.
    pub acceptable_pause_ms: f64,
}

/// Retry policy: exponential backoff with full jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// Attempts per instance, the first included.
    pub max_attempts: u32,
    /// First backoff.
    pub backoff_base_ms: f64,
    /// Longest backoff, at least the first.
    pub backoff_cap_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(sides: &str) -> Vec<Side> {
        let text = format!(
            r#"{{ "name": "p", "description": "d", "duration_s": 60,
               "cluster": {{ "groups": [ {{ "name": "a", "count": 2 }}, {{ "name": "b", "count": 2 }} ] }},
               "workload": {{ "tasks": [ {{ "name": "t", "kind": "command", "sim": {{ "duration_ms": {{ "mean": 1 }} }} }} ] }},
               "faults": [ {{ "at_s": 1, "type": "partition", "groups": {sides} }} ] }}"#
        );
        let scenario = parse(text.as_bytes()).expect("valid");
        match &scenario.faults[0].kind {
            FaultKind::Partition { sides, .. } => sides.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_orchestrator_stands_where_the_format_says() {
        let orchestrator = |sides: &[Side]| sides.iter().map(|s| s.orchestrator).collect::<Vec<_>>();
        assert_eq!(orchestrator(&partition(r#"[["a"], ["b"]]"#)), [true, false], "the first of several sides");
        assert_eq!(orchestrator(&partition(r#"[["a"], ["b", "orchestrator"]]"#)), [false, true], "where named");
        assert_eq!(orchestrator(&partition(r#"[["b"]]"#)), [false], "one side is cut off from the orchestrator");
        assert_eq!(orchestrator(&partition(r#"[["b", "orchestrator"]]"#)), [true], "unless it is named there");
    }
}
