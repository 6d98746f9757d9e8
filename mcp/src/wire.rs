//! The tools' arguments and answers: their JSON Schemas are the tools' input and output
//! schemas, their doc comments the fields' descriptions.

use dtest_core::report::Report;
use dtest_core::scenario::Distribution;
use dtest_serve::model::{AlertRuleBody, AlertView, Connection, NamedProfile, NodeView};
use dtest_sim::compare::StrategyRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use dtest_serve::model::Object;

/// A scenario: the JSON object itself, or a file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioOnly {
    /// The scenario, as a JSON object (its format: the resource `dtest://schema/scenario`).
    pub(crate) scenario: Option<Object>,
    /// A scenario file on the server's machine, instead of `scenario`.
    pub(crate) path: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunSimulation {
    /// The scenario, as a JSON object (its format: the resource `dtest://schema/scenario`).
    pub(crate) scenario: Option<Object>,
    /// A scenario file on the server's machine, instead of `scenario`.
    pub(crate) path: Option<String>,
    /// The seed; the same seed gives the same report, byte for byte. Default 42.
    pub(crate) seed: Option<u64>,
    /// Overrides the scenario's distribution strategy.
    pub(crate) strategy: Option<Distribution>,
    /// Replace the scenario's faults with a mix drawn from the seed; the run is then judged by
    /// the invariants alone.
    pub(crate) swarm: Option<bool>,
    /// Seconds to wait for the end before answering with the id to poll (0 to 50, default 30).
    #[schemars(range(max = 50))]
    pub(crate) wait_s: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SweepSeeds {
    /// The scenario, as a JSON object (its format: the resource `dtest://schema/scenario`).
    pub(crate) scenario: Option<Object>,
    /// A scenario file on the server's machine, instead of `scenario`.
    pub(crate) path: Option<String>,
    /// Seeds `A..B`: A up to B-1, like `0..1000`; a million at most.
    pub(crate) seeds: String,
    /// Each seed draws its own fault mix (swarm testing), judged by the invariants alone.
    pub(crate) swarm: Option<bool>,
    /// Overrides the scenario's distribution strategy.
    pub(crate) strategy: Option<Distribution>,
    /// Seconds to wait for the end before answering with the id to poll (0 to 50, default 30).
    #[schemars(range(max = 50))]
    pub(crate) wait_s: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompareStrategies {
    /// The scenario, as a JSON object (its format: the resource `dtest://schema/scenario`).
    pub(crate) scenario: Option<Object>,
    /// A scenario file on the server's machine, instead of `scenario`.
    pub(crate) path: Option<String>,
    /// The seed every strategy runs on. Default 42.
    pub(crate) seed: Option<u64>,
    /// The strategies to compare; all seven when not given.
    pub(crate) strategies: Option<Vec<Distribution>>,
    /// Seconds to wait for the end before answering with the id to poll (0 to 50, default 30).
    #[schemars(range(max = 50))]
    pub(crate) wait_s: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitExecution {
    /// The scenario, as a JSON object (its format: the resource `dtest://schema/scenario`).
    pub(crate) scenario: Option<Object>,
    /// A scenario file on the server's machine, instead of `scenario`.
    pub(crate) path: Option<String>,
    /// Seed of the run's random choices (placement ties, `random` distribution).
    pub(crate) seed: Option<u64>,
    /// Run on these registered nodes only (by name); all of them by default.
    pub(crate) nodes: Option<Vec<String>>,
    /// Seconds to wait for the end, with progress, before answering (0 to 50, default 0). A
    /// cancelled call cancels the execution.
    #[schemars(range(max = 50))]
    pub(crate) wait_s: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecutionStatus {
    /// The execution: an id from `submit_test_execution`, `start_load_test`, or a simulation
    /// tool (`sim-N`).
    pub(crate) id: String,
    /// Seconds to wait for it to end, with progress (live rps and p99 for load), before
    /// answering (0 to 50, default 0). A cancelled call stops waiting, not the execution.
    #[schemars(range(max = 50))]
    pub(crate) wait_s: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ById {
    /// The id.
    pub(crate) id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetReport {
    /// The execution or simulation.
    pub(crate) id: String,
    /// `json` (default), `html` (one self-contained page) or `junit` (XML).
    pub(crate) format: Option<Format>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Json,
    Html,
    Junit,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigureProfile {
    /// The profile's name.
    pub(crate) name: String,
    /// The load pattern (`{"type": "constant", "rps": 50, "duration_s": 30}`; the scenario
    /// format's patterns).
    pub(crate) pattern: Object,
    /// What it is for.
    pub(crate) description: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeHealth {
    /// One node, by name; every node when not given.
    pub(crate) id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigureAlerts {
    /// The new rule set, replacing the current one; unchanged when not given.
    pub(crate) rules: Option<Vec<AlertRuleBody>>,
    /// Acknowledge this firing alert (by its id).
    pub(crate) acknowledge: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Some clients want `properties` even on a tool that takes nothing.
#[schemars(extend("properties" = {}))]
pub(crate) struct Nothing {}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Validated {
    /// Always true: an invalid scenario is a tool error listing its problems.
    pub(crate) valid: bool,
    /// The scenario's name.
    pub(crate) name: String,
    /// Nodes in all groups.
    pub(crate) nodes: u64,
    /// Task instances.
    pub(crate) tasks: u64,
    /// Faults scheduled.
    pub(crate) faults: usize,
    /// Length, seconds.
    pub(crate) duration_s: f64,
}

/// A simulation, an execution or a sweep: where it stands.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Status {
    /// Its id.
    pub(crate) id: String,
    /// `simulation`, `sweep`, `comparison`, `test` or `load`.
    pub(crate) kind: String,
    /// The scenario's name.
    pub(crate) name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub(crate) state: String,
    /// When it started, ms since the Unix epoch.
    pub(crate) started_ms: Option<u64>,
    /// When it ended.
    pub(crate) finished_ms: Option<u64>,
    /// How far it got (simulated ms or seeds done, and the total; tasks and live load for
    /// executions).
    pub(crate) progress: Option<Object>,
    /// Its outcome in brief, once it has one.
    pub(crate) summary: Option<Object>,
    /// The resource holding its report.
    pub(crate) report_uri: String,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Simulated {
    /// The simulation's id (`sim-N`), for the status and report tools.
    pub(crate) id: String,
    /// `running` if it outlasted `wait_s`; then `succeeded`, `failed` or `cancelled`.
    pub(crate) state: String,
    /// Whether every expectation and invariant held, once it ended.
    pub(crate) passed: Option<bool>,
    /// The report, once it ended (the format `dtest sim --json` prints).
    pub(crate) report: Option<Report>,
    /// The resource holding its report.
    pub(crate) report_uri: String,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Swept {
    /// The sweep's id (`sim-N`).
    pub(crate) id: String,
    /// `running` if it outlasted `wait_s`; then `succeeded` (every seed passed), `failed` or
    /// `cancelled`.
    pub(crate) state: String,
    /// Seeds in the sweep.
    pub(crate) seeds: u64,
    /// Seeds done.
    pub(crate) done: u64,
    /// Seeds that passed, once it ended.
    pub(crate) passed: u64,
    /// Seeds that failed, once it ended.
    pub(crate) failed: u64,
    /// Every failing seed, with why and the command that replays it.
    pub(crate) failing: Vec<FailingSeed>,
    /// All of it for people, as `dtest sim --seeds` prints it.
    pub(crate) summary: String,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct FailingSeed {
    /// The seed.
    pub(crate) seed: u64,
    /// The first violation or failed expectation.
    pub(crate) reason: String,
    /// The command line that replays it.
    pub(crate) replay: String,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Compared {
    /// The comparison's id (`sim-N`).
    pub(crate) id: String,
    /// `running` if it outlasted `wait_s`; then `succeeded` (every strategy passed), `failed`
    /// or `cancelled`.
    pub(crate) state: String,
    /// The seed every strategy ran on.
    pub(crate) seed: u64,
    /// One row per strategy, in the order asked, once it ended.
    pub(crate) rows: Vec<StrategyRow>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct ReportAnswer {
    /// The execution or simulation.
    pub(crate) id: String,
    /// The format.
    pub(crate) format: Format,
    /// The report: an object for `json`, the document's text otherwise.
    pub(crate) report: Value,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Nodes {
    /// The nodes, by name.
    pub(crate) nodes: Vec<NodeView>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Profiles {
    /// Every stored load profile.
    pub(crate) profiles: Vec<NamedProfile>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Alerts {
    /// The rules in force.
    pub(crate) rules: Vec<AlertRuleBody>,
    /// Alerts firing now.
    pub(crate) firing: Vec<AlertView>,
    /// Alerts that fired, newest last.
    pub(crate) history: Vec<AlertView>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Released {
    /// The allocation.
    pub(crate) id: String,
    /// Always true.
    pub(crate) released: bool,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Connections {
    /// Per node: its circuit breaker, last heartbeat and round trip.
    pub(crate) connections: Vec<Connection>,
}
