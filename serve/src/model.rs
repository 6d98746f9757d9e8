//! The API's bodies: what `dtest serve` takes and answers, as JSON, with their OpenAPI schemas
//! derived from these very types.

use std::collections::BTreeMap;

use dtest_core::protocol::DeliveryMode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A JSON object, as the MCP tools' schemas say it (the OpenAPI document says `Object`).
pub type Object = serde_json::Map<String, Value>;

/// An error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `too_large`, `invalid`, `rate_limited`, `storage_full`, `storage_busy`, ...
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
}

/// A node announcing itself (what `dtest node --orchestrator URL` sends).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// The node's name, unique in the registry (1 to 128 of `A-Za-z0-9-_.:`).
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
    pub name: String,
    /// Where the service reaches it: `http://host:port`.
    pub url: String,
    /// What it is and offers (the node API's `GET /v1/info`); when left out, the service asks
    /// the node for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    #[schemars(with = "Option<Object>")]
    pub info: Option<dtest_node::api::NodeInfo>,
    /// Labels, `key: value`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A node as the service sees it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct NodeView {
    /// Its name.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// `healthy`, `degraded`, `unhealthy` or `dead`, from its phi and score.
    pub state: String,
    /// The phi-accrual suspicion level of its heartbeats (the service probes it every second).
    pub phi: f64,
    /// Its health score, 0 to 100.
    pub score: u8,
    /// Its scenario group, if it stands for one.
    pub group: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it has.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub resources: dtest_core::scenario::Resources,
    /// What allocations and executions hold on it.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub reserved: dtest_core::scenario::Resources,
    /// Whether it runs command tasks.
    pub allow_commands: bool,
    /// When it last registered (Unix milliseconds).
    pub registered_ms: u64,
    /// When it last answered a probe (Unix milliseconds).
    pub last_seen_ms: Option<u64>,
}

/// A test execution to run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitExecution {
    /// The scenario, as a scenario file holds it.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub scenario: Value,
    /// The seed of the orchestrator's own choices (default 1).
    #[serde(default)]
    pub seed: Option<u64>,
    /// The nodes to run on, by name or URL (default: every node that is not dead).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
}

/// A load test to start: one URL, one pattern, spread over nodes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartLoad {
    /// The URL to load.
    pub url: String,
    /// The load pattern, as a scenario's `load.pattern` (give this or `profile`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[schemars(with = "Option<Object>")]
    pub pattern: Option<Value>,
    /// A profile's name (see `PUT /v1/load/profiles/{name}`).
    #[serde(default)]
    pub profile: Option<String>,
    /// HTTP method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// Connections per node.
    #[serde(default)]
    pub connections: Option<u32>,
    /// A request's timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The nodes to load from, by name or URL (default: every node that is not dead).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
}

impl StartLoad {
    /// The scenario this load runs as, with `pattern` (this request's, or its profile's) on
    /// `nodes` nodes: one load task instance per node, each running the whole pattern.
    pub fn scenario(&self, pattern: Value, nodes: usize) -> Value {
        let mut load = serde_json::json!({ "target": "target", "pattern": pattern });
        if let Some(method) = &self.method {
            load["method"] = serde_json::json!(method);
        }
        if let Some(connections) = self.connections {
            load["connections"] = serde_json::json!(connections);
        }
        if let Some(timeout_ms) = self.timeout_ms {
            load["timeout_ms"] = serde_json::json!(timeout_ms);
        }
        serde_json::json!({
            "name": "load",
            "description": format!("load on {}", self.url),
            "duration_s": 3600,
            "cluster": { "groups": [ { "name": "load", "count": nodes } ] },
            "targets": { "target": { "url": self.url } },
            "workload": { "tasks": [ { "name": "load", "count": nodes, "kind": "load", "load": load } ] }
        })
    }
}

/// What a new execution is called.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Created {
    /// Its id.
    pub id: String,
}

/// An execution's state and figures.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ExecutionView {
    /// Its id.
    pub id: String,
    /// The scenario's name.
    pub name: String,
    /// `scenario` or `load`.
    pub kind: String,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub state: String,
    /// When it was submitted (Unix milliseconds).
    pub created_ms: u64,
    /// When its nodes got the plan.
    pub started_ms: Option<u64>,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// Its seed.
    pub seed: u64,
    /// While it runs: where it stands.
    pub progress: Option<ProgressView>,
    /// Once it ended: its task counts and outcome, from the report.
    #[schema(value_type = Option<Object>)]
    #[schemars(with = "Option<Object>")]
    pub summary: Option<Value>,
}

/// Where a running execution stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ProgressView {
    /// Run milliseconds.
    pub at_ms: u64,
    /// Tasks ended.
    pub tasks_ended: u64,
    /// Tasks.
    pub tasks: u64,
    /// Nodes up.
    pub nodes_up: u64,
    /// Nodes.
    pub nodes: u64,
    /// Its load's live figures.
    pub load: Option<LoadFigures>,
    /// Cancelled and winding down.
    pub cancelling: bool,
}

/// A running load's figures, merged across nodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct LoadFigures {
    /// Requests in the last full second.
    pub rps: u64,
    /// Their 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Requests so far.
    pub requests: u64,
    /// Errors so far.
    pub errors: u64,
    /// Arrivals dropped so far.
    pub dropped: u64,
}

/// An execution's load figures: per second and totals, merged across nodes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Metrics {
    /// The execution.
    pub id: String,
    /// Its state.
    pub state: String,
    /// While it runs: the live figures.
    pub live: Option<LoadFigures>,
    /// Once it ended: the report's load totals (`requests`, `errors`, `rps`, `latency_ms`, ...).
    #[schema(value_type = Option<Object>)]
    #[schemars(with = "Option<Object>")]
    pub totals: Option<Value>,
    /// Once it ended: one point per second.
    #[schema(value_type = Vec<Object>)]
    #[schemars(with = "Vec<Object>")]
    pub series: Vec<Value>,
}

/// A named load pattern.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The pattern, as a scenario's `load.pattern`.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub pattern: Value,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
}

/// A profile with its name.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct NamedProfile {
    /// Its name.
    pub name: String,
    /// The profile.
    pub profile: Profile,
}

/// The cluster at a glance.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ClusterView {
    /// The cluster's health score, 0 to 100 (the mean of its nodes').
    pub health: u8,
    /// Nodes by state.
    pub nodes: BTreeMap<String, u64>,
    /// Alerts firing.
    pub alerts_firing: Vec<AlertView>,
    /// Executions running.
    pub executions_running: u64,
}

/// An alert rule on the service's own metrics: per node `score`, `phi`, `round_trip_ms`;
/// for the cluster `health` and `nodes_dead`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleBody {
    /// Its name.
    pub name: String,
    /// The metric.
    pub metric: String,
    /// `>`, `>=`, `<` or `<=`.
    pub comparison: String,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold, in seconds.
    #[serde(default)]
    pub for_s: f64,
    /// `info`, `warning` or `critical` (default `warning`).
    #[serde(default)]
    pub severity: Option<String>,
}

/// The service's alert rules.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// The rules (at most 100).
    pub rules: Vec<AlertRuleBody>,
}

/// An alert event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct AlertView {
    /// The alert's id.
    pub id: u64,
    /// Its rule.
    pub rule: String,
    /// Whose metric.
    pub subject: String,
    /// Its severity.
    pub severity: String,
    /// `fired`, `resolved` or `acknowledged` (in the history); `firing` (in the list of firing).
    pub state: String,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// The value seen.
    pub value: f64,
    /// Whether someone acknowledged it.
    pub acknowledged: bool,
}

/// Alerts firing, and what happened lately.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct AlertsView {
    /// Firing now.
    pub firing: Vec<AlertView>,
    /// The last events, oldest first.
    pub history: Vec<AlertView>,
}

/// Resources to reserve.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Allocate {
    /// How much.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub resources: dtest_core::scenario::Resources,
    /// On this node (default: the node where it fits best).
    #[serde(default)]
    pub node: Option<String>,
    /// Who it is for, shown in utilization.
    #[serde(default)]
    pub holder: Option<String>,
}

/// A reservation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Allocation {
    /// Its id.
    pub id: String,
    /// The node it holds resources on.
    pub node: String,
    /// How much.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub resources: dtest_core::scenario::Resources,
    /// Who it is for.
    pub holder: Option<String>,
}

/// What each node has, holds and has free.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct UtilizationView {
    /// Per node.
    pub nodes: Vec<NodeUtilization>,
    /// Reservations: allocations and executions' shares.
    pub reservations: Vec<Allocation>,
}

/// One node's resources.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct NodeUtilization {
    /// The node.
    pub node: String,
    /// What it has.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub capacity: dtest_core::scenario::Resources,
    /// What is reserved.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub reserved: dtest_core::scenario::Resources,
    /// What is free.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub free: dtest_core::scenario::Resources,
    /// Reserved CPU over capacity, 0 to 1.
    pub cpu_share: f64,
}

/// A message for one node and the commands running there.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The node, by name.
    #[schema(min_length = 1, max_length = 128)]
    pub node: String,
    /// Any JSON (at most 64 KiB).
    pub body: Value,
    /// How it is delivered (default `exactly_once`).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The message id (default: a fresh one); resending with the same id under `exactly_once`
    /// delivers it once.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
    pub id: Option<String>,
}

/// A message for every node.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    /// Any JSON (at most 64 KiB).
    pub body: Value,
    /// How it is delivered (default `exactly_once`).
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// How a message is delivered: `fire_and_forget` (sent once), `at_least_once` (resent until the
/// node takes it), `exactly_once` (resent, and the node keeps ids so it appends it once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sent once.
    FireAndForget,
    /// Resent until taken; may be appended more than once.
    AtLeastOnce,
    /// Resent until taken; appended once.
    ExactlyOnce,
}

impl From<Mode> for DeliveryMode {
    fn from(mode: Mode) -> DeliveryMode {
        match mode {
            Mode::FireAndForget => DeliveryMode::FireAndForget,
            Mode::AtLeastOnce => DeliveryMode::AtLeastOnce,
            Mode::ExactlyOnce => DeliveryMode::ExactlyOnce,
        }
    }
}

/// What became of a message to one node.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Delivery {
    /// The message id.
    pub id: String,
    /// The node.
    pub node: String,
    /// Whether the node took it.
    pub delivered: bool,
    /// Whether the node had it already (exactly-once).
    pub duplicate: bool,
    /// Commands running on the node when it arrived.
    pub delivered_to: u32,
    /// Sends it took.
    pub attempts: u32,
    /// Why it was not delivered.
    pub error: Option<String>,
}

/// What became of a broadcast.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BroadcastResult {
    /// The message id.
    pub id: String,
    /// Per node.
    pub deliveries: Vec<Delivery>,
}

/// The service's link to one node.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Connection {
    /// The node.
    pub node: String,
    /// Its URL.
    pub url: String,
    /// `closed` (probes pass), `open` (failing: probes are spaced out) or `half_open`.
    pub breaker: String,
    /// When it last answered (Unix milliseconds).
    pub last_heartbeat_ms: Option<u64>,
    /// The last probe's round trip.
    pub round_trip_ms: Option<f64>,
    /// Probes failed in a row.
    pub failures: u32,
}

/// One live event, as `GET /v1/events` sends it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct EventView {
    /// Its sequence number: increasing, never reused, across restarts.
    pub seq: u64,
    /// When (Unix milliseconds).
    pub time: u64,
    /// `node_joined`, `node_suspected`, `node_dead`, `node_back`, `node_left`,
    /// `execution_started`, `execution_finished`, `task_assigned`, `attempt_ended`,
    /// `task_finished`, `task_reassigned`, `alert_fired`, `alert_resolved`, `load`, `backlog_truncated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The execution it belongs to.
    pub execution: Option<String>,
    /// The rest, by type.
    #[schema(value_type = Object)]
    #[schemars(with = "Object")]
    pub data: Value,
}
