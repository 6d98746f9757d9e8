//! The tools: the seed system's methods by their names, and the simulator's. Each has an input
//! schema (from the argument type, its doc comments as field docs), an object-rooted output
//! schema (from the answer type), and annotations. Every answer is `structuredContent` with a
//! JSON text copy; every failure a tool error (`isError`) whose message starts with the field
//! at fault, so an assistant can correct its call.

use std::sync::Arc;
use std::time::Duration;

use dtest_core::report::Report;
use dtest_core::scenario::{Distribution, Scenario};
use dtest_serve::model::{
    Allocate, Allocation, Broadcast, BroadcastResult, ClusterView, Delivery, ExecutionView, Metrics, NamedProfile,
    NodeView, RegisterNode, SendMessage, StartLoad, UtilizationView,
};
use dtest_serve::store::{STATE_PENDING, STATE_RUNNING};
use dtest_sim::SimOptions;
use dtest_sim::compare::StrategyRow;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::guard::Guard;
use crate::jobs::{Ended, Job, Jobs, RUNNING_MAX, Work};
use crate::resources;
use crate::upstream::Host;
use crate::wire::{
    Alerts, ById, CompareStrategies, Compared, ConfigureAlerts, ConfigureProfile, Connections, ExecutionStatus,
    FailingSeed, Format, GetReport, NodeHealth, Nodes, Nothing, Object, Profiles, Released, ReportAnswer,
    RunSimulation, ScenarioOnly, Simulated, Status, SubmitExecution, SweepSeeds, Swept, Validated,
};

/// The longest a tool waits for work before answering with its id, s: under the 60 s most
/// clients give a call.
const WAIT_MAX_S: u32 = 50;

/// Seeds one sweep may have.
const SEEDS_MAX: u64 = 1_000_000;

/// How long a simulation tool waits by default, s.
const WAIT_DEFAULT_S: u32 = 30;

/// How often a waiting tool looks at a simulation and reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How often a waiting tool asks the orchestrator about an execution (its live figures change
/// once a second).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Why a tool call failed; the message names the field at fault first.
#[derive(Clone, Debug)]
pub struct ToolError(String);

impl ToolError {
    /// The argument `field` is wrong.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ToolError {
        ToolError(format!("{field}: {message}"))
    }

    /// The orchestrator could not be asked.
    pub fn upstream(message: impl Into<String>) -> ToolError {
        ToolError(message.into())
    }

    /// The orchestrator refused, with HTTP `status`.
    pub fn refused(status: u16, message: String) -> ToolError {
        ToolError(format!("{message} (the orchestrator answered {status})"))
    }

    /// The same error, said to be about `field` (an orchestrator's "no execution `x`" about `id`).
    fn about(self, field: &str) -> ToolError {
        if self.0.starts_with(&format!("{field}:")) { self } else { ToolError::invalid(field, self.0) }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// What a tool answers: its structured content, and resource links to add.
struct Answer {
    value: Value,
    links: Vec<String>,
}

impl Answer {
    fn of(value: impl Serialize) -> Result<Answer, ToolError> {
        let value = serde_json::to_value(value).map_err(|e| ToolError(e.to_string()))?;
        Ok(Answer { value, links: Vec::new() })
    }

    fn with_report_link(mut self, id: &str) -> Answer {
        self.links.push(resources::report_uri(id));
        self
    }
}

// ---- the tool list --------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    /// Reads only.
    Read,
    /// Changes state; `destructive` if it ends or replaces something; `idempotent` if a repeat
    /// changes nothing more.
    Write { destructive: bool, idempotent: bool },
}

fn tool<I: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    kind: Kind,
) -> Tool {
    let annotations = match kind {
        Kind::Read => ToolAnnotations::new().read_only(true).destructive(false).idempotent(true),
        Kind::Write { destructive, idempotent } => {
            ToolAnnotations::new().read_only(false).destructive(destructive).idempotent(idempotent)
        }
    };
    Tool::new(name, description, Arc::new(Object::new()))
        .with_input_schema::<I>()
        .with_output_schema::<O>()
        .with_annotations(annotations)
}

/// Every tool.
fn tools() -> Vec<Tool> {
    let write = |destructive, idempotent| Kind::Write { destructive, idempotent };
    vec![
        tool::<ScenarioOnly, Validated>(
            "validate_scenario",
            "Check a scenario against the format and its limits; an invalid one is an error listing every problem by its field.",
            Kind::Read,
        ),
        tool::<RunSimulation, Simulated>(
            "run_simulation",
            "Simulate a scenario deterministically on one seed (nodes, faults, tasks, load, checkers) and return its report. Long simulations answer with an id after wait_s; poll get_execution_status. Progress: simulated ms.",
            Kind::Read,
        ),
        tool::<SweepSeeds, Swept>(
            "sweep_seeds",
            "Simulate a range of seeds (optionally each with its own fault mix: swarm) and return the failing seeds with the commands that replay them. Progress: seeds done.",
            Kind::Read,
        ),
        tool::<CompareStrategies, Compared>(
            "compare_strategies",
            "Simulate one seed under each distribution strategy and return one row per strategy (makespan, utilization, spread, reassignments, detection, p99).",
            Kind::Read,
        ),
        tool::<SubmitExecution, Status>(
            "submit_test_execution",
            "Run a scenario for real on the registered nodes; answers with the execution's id at once (or after wait_s).",
            write(false, false),
        ),
        tool::<ExecutionStatus, Status>(
            "get_execution_status",
            "Where an execution or simulation stands: state, progress, live load figures; can wait for its end with progress.",
            Kind::Read,
        ),
        tool::<ById, Status>(
            "cancel_execution",
            "Stop an execution everywhere it runs (what it measured is kept in its report), or a simulation (which then has no report).",
            write(true, true),
        ),
        tool::<GetReport, ReportAnswer>(
            "get_report",
            "The report of an ended execution or simulation, as JSON, HTML or JUnit, with a link to its resource.",
            Kind::Read,
        ),
        tool::<RegisterNode, NodeView>(
            "register_node",
            "Register a node daemon with the orchestrator by its URL; registering again updates it.",
            write(false, true),
        ),
        tool::<StartLoad, Status>(
            "start_load_test",
            "Send load at a URL from the nodes (a pattern or a stored profile), within this server's allowed targets and budgets; answers with the execution's id.",
            write(false, false),
        ),
        tool::<ById, Status>(
            "stop_load_test",
            "End a load test early; the measure so far is kept in its report.",
            write(true, true),
        ),
        tool::<ById, Metrics>(
            "get_metrics",
            "A load test's figures per second and in total, merged across nodes (HdrHistograms).",
            Kind::Read,
        ),
        tool::<ConfigureProfile, Profiles>(
            "configure_profile",
            "Store a named load pattern for start_load_test (replacing one of the same name).",
            write(true, true),
        ),
        tool::<NodeHealth, Nodes>(
            "get_node_health",
            "Nodes' state, health score and failure-detector view.",
            Kind::Read,
        ),
        tool::<Nothing, ClusterView>(
            "get_cluster_status",
            "The cluster's health score, nodes by state, and alerts firing.",
            Kind::Read,
        ),
        tool::<ConfigureAlerts, Alerts>(
            "configure_alerts",
            "Replace the alert rules and/or acknowledge an alert; answers with the rules, the firing alerts and the history.",
            write(true, true),
        ),
        tool::<Allocate, Allocation>(
            "allocate_resources",
            "Reserve CPU, memory and disk on a node (one named, or the best fit).",
            write(false, false),
        ),
        tool::<ById, Released>("deallocate_resources", "Release a reservation.", write(true, true)),
        tool::<Nothing, UtilizationView>(
            "get_utilization",
            "Per node: capacity, reserved and in use; every reservation.",
            Kind::Read,
        ),
        tool::<SendMessage, Delivery>(
            "send_message",
            "Deliver a JSON message to one node's running commands (at-most-once, at-least-once or exactly-once).",
            write(false, false),
        ),
        tool::<Broadcast, BroadcastResult>(
            "broadcast_message",
            "Deliver a JSON message to every node.",
            write(false, false),
        ),
        tool::<Nothing, Connections>(
            "get_connection_status",
            "Per node: circuit breaker, last heartbeat, round trip.",
            Kind::Read,
        ),
    ]
}

// ---- the server -----------------------------------------------------------------------------

/// The MCP server: one per session, all sharing the orchestrator and the jobs.
#[derive(Clone)]
pub struct Dtest {
    host: Arc<Host>,
    jobs: Arc<Jobs>,
    guard: Arc<Guard>,
    files: Arc<Files>,
    tools: Arc<Vec<Tool>>,
}

/// Whether a call started the work it waits on: then cancelling the call stops the work; a call
/// that only looks at it stops looking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owned {
    Yes,
    No,
}

/// How to stop an execution: cancel it, or end a load early (its measure so far is its report).
#[derive(Clone, Copy, Debug)]
enum Stop {
    Cancel,
    EndLoad,
}

/// Which scenario files a `path` argument may name.
#[derive(Debug)]
pub enum Files {
    /// Any the process can read: over stdio the client is the user who started it.
    Any,
    /// Only those under this directory (canonical): over HTTP a token holder must not read the
    /// machine's files through the parser's error messages.
    Under(std::path::PathBuf),
}

impl Files {
    fn resolve(&self, path: &str) -> Result<std::path::PathBuf, ToolError> {
        let file = match self {
            Files::Any => path.into(),
            Files::Under(root) => {
                // One message for "outside" and "missing" alike: an HTTP client learns nothing of
                // what exists beyond the directory.
                let refused = || {
                    let root = root.display();
                    ToolError::invalid(
                        "path",
                        format!("{path}: no such file under {root}, the directory read over HTTP"),
                    )
                };
                let full = root.join(path).canonicalize().map_err(|_| refused())?;
                if !full.starts_with(root) {
                    return Err(refused());
                }
                full
            }
        };
        // A FIFO or a device would block the read, or never end it.
        match std::fs::metadata(&file) {
            Ok(meta) if !meta.is_file() && !meta.is_dir() => {
                Err(ToolError::invalid("path", format!("{path}: not a regular file")))
            }
            _ => Ok(file),
        }
    }
}

impl Dtest {
    pub fn new(host: Arc<Host>, jobs: Arc<Jobs>, guard: Arc<Guard>, files: Files) -> Dtest {
        Dtest { host, jobs, guard, files: Arc::new(files), tools: Arc::new(tools()) }
    }

    async fn call(
        &self,
        name: &str,
        arguments: Option<Object>,
        context: &RequestContext<RoleServer>,
    ) -> Result<Answer, ToolError> {
        let arguments = Value::Object(arguments.unwrap_or_default());
        match name {
            "validate_scenario" => self.validate(args(arguments)?).await,
            "run_simulation" => self.run_simulation(args(arguments)?, context).await,
            "sweep_seeds" => self.sweep_seeds(args(arguments)?, context).await,
            "compare_strategies" => self.compare_strategies(args(arguments)?, context).await,
            "submit_test_execution" => self.submit(args(arguments)?, context).await,
            "get_execution_status" => {
                let ExecutionStatus { id, wait_s } = args(arguments)?;
                self.status(&id, wait(wait_s, 0)?, Owned::No, context).await
            }
            "cancel_execution" => self.cancel(&args::<ById>(arguments)?.id, Stop::Cancel).await,
            "stop_load_test" => self.cancel(&args::<ById>(arguments)?.id, Stop::EndLoad).await,
            "get_report" => self.report(args(arguments)?).await,
            "register_node" => {
                let node: RegisterNode = args(arguments)?;
                self.guard.check_node_url(&node.url, "url")?;
                Answer::of(self.api().post("/v1/nodes", &to_value(&node)).await?)
            }
            "start_load_test" => self.start_load(args(arguments)?, context).await,
            "get_metrics" => {
                let id = args::<ById>(arguments)?.id;
                Answer::of(
                    self.api()
                        .get(&format!("/v1/executions/{}/metrics", segment(&id, "id")?))
                        .await
                        .map_err(|e| e.about("id"))?,
                )
            }
            "configure_profile" => self.configure_profile(args(arguments)?).await,
            "get_node_health" => {
                let NodeHealth { id } = args(arguments)?;
                let nodes = match id {
                    Some(id) => Value::Array(vec![
                        self.api()
                            .get(&format!("/v1/nodes/{}", segment(&id, "id")?))
                            .await
                            .map_err(|e| e.about("id"))?,
                    ]),
                    None => self.api().get("/v1/nodes").await?,
                };
                Answer::of(json!({ "nodes": nodes }))
            }
            "get_cluster_status" => {
                args::<Nothing>(arguments)?;
                Answer::of(self.api().get("/v1/cluster").await?)
            }
            "configure_alerts" => self.configure_alerts(args(arguments)?).await,
            "allocate_resources" => {
                let request: Allocate = args(arguments)?;
                Answer::of(self.api().post("/v1/allocations", &to_value(&request)).await?)
            }
            "deallocate_resources" => {
                let id = args::<ById>(arguments)?.id;
                self.api()
                    .delete(&format!("/v1/allocations/{}", segment(&id, "id")?))
                    .await
                    .map_err(|e| e.about("id"))?;
                Answer::of(Released { id, released: true })
            }
            "get_utilization" => {
                args::<Nothing>(arguments)?;
                Answer::of(self.api().get("/v1/utilization").await?)
            }
            "send_message" => {
                let message: SendMessage = args(arguments)?;
                Answer::of(self.api().post("/v1/messages", &to_value(&message)).await?)
            }
            "broadcast_message" => {
                let message: Broadcast = args(arguments)?;
                Answer::of(self.api().post("/v1/messages/broadcast", &to_value(&message)).await?)
            }
            "get_connection_status" => {
                args::<Nothing>(arguments)?;
                Answer::of(json!({ "connections": self.api().get("/v1/connections").await? }))
            }
            _ => Err(ToolError::invalid("name", format!("no tool `{name}`"))),
        }
    }

    /// [`scenario_of`] on a blocking thread: a file read, and up to 8 MiB parsed.
    async fn scenario(&self, scenario: Option<Object>, path: Option<String>) -> Result<(Scenario, Value), ToolError> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || scenario_of(scenario, path, &files))
            .await
            .map_err(|e| ToolError(format!("reading the scenario failed: {e}")))?
    }

    fn api(&self) -> &crate::upstream::Api {
        &self.host.api
    }

    async fn validate(&self, input: ScenarioOnly) -> Result<Answer, ToolError> {
        let (scenario, _) = self.scenario(input.scenario, input.path).await?;
        Answer::of(Validated {
            valid: true,
            name: scenario.name.clone(),
            nodes: scenario.nodes_total(),
            tasks: scenario.tasks_total(),
            faults: scenario.faults.len(),
            duration_s: scenario.duration_ms as f64 / 1e3,
        })
    }

    fn start_job(&self, scenario: Scenario, options: SimOptions, work: Work) -> Result<Arc<Job>, ToolError> {
        self.jobs.start(scenario, options, work).ok_or_else(|| {
            ToolError(format!(
                "{RUNNING_MAX} simulations are running, this server's most; wait for one (get_execution_status) or cancel one"
            ))
        })
    }

    async fn run_simulation(
        &self,
        input: RunSimulation,
        context: &RequestContext<RoleServer>,
    ) -> Result<Answer, ToolError> {
        let (scenario, _) = self.scenario(input.scenario, input.path).await?;
        let wait_s = wait(input.wait_s, WAIT_DEFAULT_S)?;
        let options = SimOptions {
            seed: input.seed.unwrap_or(42),
            distribution: input.strategy,
            swarm: input.swarm.unwrap_or(false),
            ..SimOptions::default()
        };
        simulable(&scenario)?;
        let job = self.start_job(scenario, options, Work::Simulation)?;
        self.wait_job(&job, wait_s, Owned::Yes, context).await;
        Ok(simulated(&job)?.with_report_link(&job.id))
    }

    async fn sweep_seeds(&self, input: SweepSeeds, context: &RequestContext<RoleServer>) -> Result<Answer, ToolError> {
        let label = input.path.as_deref().map_or_else(|| "SCENARIO.json".to_owned(), shell_word);
        let (scenario, _) = self.scenario(input.scenario, input.path).await?;
        let wait_s = wait(input.wait_s, WAIT_DEFAULT_S)?;
        let seeds = dtest_sim::sweep::parse_seeds(&input.seeds).ok_or_else(|| {
            ToolError::invalid("seeds", format!("expects A..B with A < B, like 0..1000; found {:?}", input.seeds))
        })?;
        if seeds.end - seeds.start > SEEDS_MAX {
            return Err(ToolError::invalid(
                "seeds",
                format!("{} seeds; one sweep has {SEEDS_MAX} at most", seeds.end - seeds.start),
            ));
        }
        let swarm = input.swarm.unwrap_or(false);
        let mut replay = format!("dtest sim {label}");
        if swarm {
            replay.push_str(" --swarm");
        }
        if let Some(strategy) = input.strategy {
            replay.push_str(&format!(" --strategy {}", to_value(&strategy).as_str().unwrap_or_default()));
        }
        let options = SimOptions { distribution: input.strategy, swarm, ..SimOptions::default() };
        simulable(&scenario)?;
        let job = self.start_job(scenario, options, Work::Sweep { seeds, replay })?;
        self.wait_job(&job, wait_s, Owned::Yes, context).await;
        Ok(swept(&job)?.with_report_link(&job.id))
    }

    async fn compare_strategies(
        &self,
        input: CompareStrategies,
        context: &RequestContext<RoleServer>,
    ) -> Result<Answer, ToolError> {
        let (scenario, _) = self.scenario(input.scenario, input.path).await?;
        let wait_s = wait(input.wait_s, WAIT_DEFAULT_S)?;
        let strategies = input.strategies.unwrap_or_else(|| Distribution::ALL.to_vec());
        if strategies.is_empty() {
            return Err(ToolError::invalid("strategies", "is empty; leave it out to compare all seven"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = strategies.iter().find(|s| !seen.insert(**s)) {
            return Err(ToolError::invalid("strategies", format!("names {} twice", to_value(twice))));
        }
        let options = SimOptions { seed: input.seed.unwrap_or(42), ..SimOptions::default() };
        simulable(&scenario)?;
        let job = self.start_job(scenario, options, Work::Comparison { strategies, seed: input.seed.unwrap_or(42) })?;
        self.wait_job(&job, wait_s, Owned::Yes, context).await;
        Ok(compared(&job)?.with_report_link(&job.id))
    }

    /// Waits up to `wait_s` for `job`, reporting progress; a cancelled call stops the job if it
    /// is `owned`.
    async fn wait_job(&self, job: &Job, wait_s: u32, owned: Owned, context: &RequestContext<RoleServer>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s.into());
        let mut last = None;
        loop {
            let progress = job.progress();
            if last != Some(progress) {
                last = Some(progress);
                let message = match job.work {
                    Work::Simulation => format!(
                        "{}: simulated {:.1} s of {:.1} s",
                        job.id,
                        progress as f64 / 1e3,
                        job.total() as f64 / 1e3
                    ),
                    Work::Sweep { .. } => format!("{}: {progress} of {} seeds done", job.id, job.total()),
                    Work::Comparison { .. } => format!("{}: {progress} of {} strategies done", job.id, job.total()),
                };
                notify(context, progress as f64, Some(job.total() as f64), message).await;
            }
            tokio::select! {
                () = job.finished() => return,
                () = context.ct.cancelled() => {
                    if owned == Owned::Yes {
                        job.watch.stop();
                    }
                    return;
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = tokio::time::sleep(PROGRESS_EVERY) => {}
            }
        }
    }

    async fn submit(&self, input: SubmitExecution, context: &RequestContext<RoleServer>) -> Result<Answer, ToolError> {
        let (scenario, json) = self.scenario(input.scenario, input.path).await?;
        let wait_s = wait(input.wait_s, 0)?;
        self.guard.check_scenario(&scenario, "scenario")?;
        if let Some(nodes) = &input.nodes {
            registered_names(nodes)?;
        }
        let body = json!({ "scenario": json, "seed": input.seed, "nodes": input.nodes });
        let created = self.api().post("/v1/executions", &body).await?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| ToolError::upstream("the orchestrator gave no execution id"))?
            .to_owned();
        self.status(&id, wait_s, Owned::Yes, context).await
    }

    /// Checks the load as it will run, then sends exactly that: the pattern itself (a profile
    /// read here could change before the service reads it again) on the very nodes counted.
    async fn start_load(&self, input: StartLoad, context: &RequestContext<RoleServer>) -> Result<Answer, ToolError> {
        self.guard.check_url(&input.url, "url")?;
        let (pattern, field) = match (&input.pattern, &input.profile) {
            (Some(pattern), None) => (pattern.clone(), "pattern"),
            (None, Some(name)) => {
                let profiles: Vec<NamedProfile> = from_value(self.api().get("/v1/load/profiles").await?)?;
                let profile = profiles
                    .into_iter()
                    .find(|p| &p.name == name)
                    .ok_or_else(|| ToolError::invalid("profile", format!("no load profile `{name}`")))?;
                (profile.profile.pattern, "profile")
            }
            _ => return Err(ToolError::invalid("pattern", "give `pattern` or `profile`, one of them")),
        };
        let nodes = match input.nodes.clone() {
            Some(nodes) => registered_names(&nodes).map(|()| nodes)?,
            None => {
                let nodes: Vec<NodeView> = from_value(self.api().get("/v1/nodes").await?)?;
                nodes.into_iter().filter(|n| n.state != "dead").map(|n| n.id).collect()
            }
        };
        let parsed = parse(&input.scenario(pattern.clone(), nodes.len().max(1)), field)?;
        for task in &parsed.workload.tasks {
            if let dtest_core::scenario::Work::Load(load) = &task.work {
                self.guard.check_pattern(&load.pattern, u64::from(task.count), field)?;
            }
        }
        let checked = StartLoad { pattern: Some(pattern), profile: None, nodes: Some(nodes), ..input };
        let created = self.api().post("/v1/load", &to_value(&checked)).await?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| ToolError::upstream("the orchestrator gave no execution id"))?
            .to_owned();
        self.status(&id, 0, Owned::Yes, context).await
    }

    async fn configure_profile(&self, input: ConfigureProfile) -> Result<Answer, ToolError> {
        let probe = StartLoad {
            url: "http://127.0.0.1/".to_owned(),
            pattern: None,
            profile: None,
            method: None,
            connections: None,
            timeout_ms: None,
            nodes: None,
        };
        let parsed = parse(&probe.scenario(Value::Object(input.pattern.clone()), 1), "pattern")?;
        for task in &parsed.workload.tasks {
            if let dtest_core::scenario::Work::Load(load) = &task.work {
                self.guard.check_pattern(&load.pattern, 1, "pattern")?;
            }
        }
        let body = json!({ "pattern": input.pattern, "description": input.description });
        self.api().put(&format!("/v1/load/profiles/{}", segment(&input.name, "name")?), &body).await?;
        Answer::of(Profiles { profiles: from_value(self.api().get("/v1/load/profiles").await?)? })
    }

    async fn configure_alerts(&self, input: ConfigureAlerts) -> Result<Answer, ToolError> {
        if let Some(rules) = input.rules {
            self.api().put("/v1/alerts/rules", &json!({ "rules": rules })).await?;
        }
        if let Some(id) = input.acknowledge {
            self.api().post(&format!("/v1/alerts/{id}/ack"), &json!({})).await?;
        }
        let rules = self.api().get("/v1/alerts/rules").await?;
        let alerts = self.api().get("/v1/alerts").await?;
        Answer::of(json!({ "rules": rules["rules"], "firing": alerts["firing"], "history": alerts["history"] }))
    }

    /// Where `id` stands, after waiting up to `wait_s` for its end with progress. With
    /// `owned`, the call started the execution, and a cancelled call cancels it.
    async fn status(
        &self,
        id: &str,
        wait_s: u32,
        owned: Owned,
        context: &RequestContext<RoleServer>,
    ) -> Result<Answer, ToolError> {
        if let Some(job) = self.jobs.get(id) {
            self.wait_job(&job, wait_s, owned, context).await;
            return Ok(Answer::of(job_status(&job))?.with_report_link(id));
        }
        let path = format!("/v1/executions/{}", segment(id, "id")?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s.into());
        let mut last_at_ms = None;
        loop {
            if context.ct.is_cancelled() {
                if owned == Owned::Yes {
                    let _ = self.api().post(&format!("{path}/cancel"), &json!({})).await;
                }
                return Err(ToolError(format!("{id}: the call was cancelled")));
            }
            let view: ExecutionView = from_value(self.api().get(&path).await.map_err(|e| e.about("id"))?)?;
            let ended = ![STATE_PENDING, STATE_RUNNING].contains(&view.state.as_str());
            if ended || tokio::time::Instant::now() >= deadline {
                return Ok(Answer::of(execution_status(view))?.with_report_link(id));
            }
            let progress = view.progress.unwrap_or_default();
            // Progress must rise with each notification: the run's own clock does, where tasks
            // ended may stand still for the whole of a load.
            if last_at_ms.is_none_or(|last| progress.at_ms > last) {
                last_at_ms = Some(progress.at_ms);
                let mut message =
                    format!("{id}: {}, {} of {} tasks ended", view.state, progress.tasks_ended, progress.tasks);
                if let Some(load) = &progress.load {
                    let p99 = load.p99_ms.map_or("-".to_owned(), |p| format!("{p:.1} ms"));
                    message.push_str(&format!("; {} rps, p99 {p99}, {} errors", load.rps, load.errors));
                }
                notify(context, progress.at_ms as f64 / 1e3, None, message).await;
            }
            tokio::select! {
                () = context.ct.cancelled() => {}
                () = tokio::time::sleep(STATUS_EVERY) => {}
            }
        }
    }

    async fn cancel(&self, id: &str, how: Stop) -> Result<Answer, ToolError> {
        if let Some(job) = self.jobs.get(id) {
            job.watch.stop();
            // A simulation stops at its next turn, within milliseconds.
            let _ = tokio::time::timeout(Duration::from_secs(5), job.finished()).await;
            return Ok(Answer::of(job_status(&job))?.with_report_link(id));
        }
        let path = match how {
            Stop::EndLoad => format!("/v1/load/{}/stop", segment(id, "id")?),
            Stop::Cancel => format!("/v1/executions/{}/cancel", segment(id, "id")?),
        };
        let view: ExecutionView = from_value(self.api().post(&path, &json!({})).await.map_err(|e| e.about("id"))?)?;
        Ok(Answer::of(execution_status(view))?.with_report_link(id))
    }

    async fn report(&self, input: GetReport) -> Result<Answer, ToolError> {
        let format = input.format.unwrap_or_default();
        let report = match self.jobs.get(&input.id) {
            Some(job) => job_report(&job, format)?,
            None => {
                let name = to_value(&format);
                let path = format!(
                    "/v1/executions/{}/report?format={}",
                    segment(&input.id, "id")?,
                    name.as_str().unwrap_or("json")
                );
                let text = self.api().get_text(&path).await.map_err(|e| e.about("id"))?;
                match format {
                    Format::Json => serde_json::from_str(&text).map_err(|e| ToolError::upstream(e.to_string()))?,
                    _ => Value::String(text),
                }
            }
        };
        Ok(Answer::of(ReportAnswer { id: input.id.clone(), format, report })?.with_report_link(&input.id))
    }

    /// The JSON report of `id`, for its resource.
    pub(crate) async fn report_json(&self, id: &str) -> Result<String, ToolError> {
        match self.jobs.get(id) {
            Some(job) => Ok(serde_json::to_string_pretty(&job_report(&job, Format::Json)?).unwrap_or_default()),
            None => self
                .api()
                .get_text(&format!("/v1/executions/{}/report?format=json", segment(id, "id")?))
                .await
                .map_err(|e| e.about("id")),
        }
    }
}

// ---- answers of jobs ------------------------------------------------------------------------

fn job_status(job: &Job) -> Status {
    let kind = match job.work {
        Work::Simulation => "simulation",
        Work::Sweep { .. } => "sweep",
        Work::Comparison { .. } => "comparison",
    };
    let ended = job.ended();
    let mut progress = Object::new();
    progress.insert("done".to_owned(), json!(job.progress()));
    progress.insert("total".to_owned(), json!(job.total()));
    let summary = ended.as_ref().map(|(ended, _)| {
        let mut summary = Object::new();
        match &**ended {
            Ended::Report(report) => {
                summary.insert("passed".to_owned(), json!(report.passed()));
                summary.insert("tasks".to_owned(), json!(report.tasks));
                summary.insert("failure".to_owned(), json!(report.failure()));
            }
            Ended::Sweep(sweep) => {
                summary.insert("passed".to_owned(), json!(sweep.passed));
                summary.insert("failed".to_owned(), json!(sweep.failed));
            }
            Ended::Comparison(reports) => {
                summary.insert("strategies".to_owned(), json!(reports.len()));
                summary.insert("passed".to_owned(), json!(reports.iter().filter(|r| r.passed()).count()));
            }
            Ended::Cancelled => {
                summary.insert("cancelled".to_owned(), json!(true));
            }
            Ended::Error(e) => {
                summary.insert("error".to_owned(), json!(e));
            }
        }
        summary
    });
    Status {
        id: job.id.clone(),
        kind: kind.to_owned(),
        name: job.name.clone(),
        state: job.state().to_owned(),
        started_ms: Some(job.started_ms),
        finished_ms: ended.map(|(_, at)| at),
        progress: Some(progress),
        summary,
        report_uri: resources::report_uri(&job.id),
    }
}

fn execution_status(view: ExecutionView) -> Status {
    let object = |value: Value| match value {
        Value::Object(object) => Some(object),
        _ => None,
    };
    Status {
        report_uri: resources::report_uri(&view.id),
        id: view.id,
        kind: view.kind,
        name: view.name,
        state: view.state,
        started_ms: view.started_ms,
        finished_ms: view.finished_ms,
        progress: view.progress.and_then(|p| object(to_value(&p))),
        summary: view.summary.and_then(object),
    }
}

/// How `job` ended, if it has.
fn ended(job: &Job) -> Option<Arc<Ended>> {
    job.ended().map(|(ended, _)| ended)
}

/// The tool error of a job that could not run: the scenario cannot be simulated.
fn failed(job: &Job) -> Result<(), ToolError> {
    match ended(job).as_deref() {
        Some(Ended::Error(e)) => Err(ToolError::invalid("scenario", e)),
        _ => Ok(()),
    }
}

fn simulated(job: &Job) -> Result<Answer, ToolError> {
    failed(job)?;
    let report = match ended(job).as_deref() {
        Some(Ended::Report(report)) => Some((**report).clone()),
        _ => None,
    };
    Answer::of(Simulated {
        id: job.id.clone(),
        state: job.state().to_owned(),
        passed: report.as_ref().map(Report::passed),
        report,
        report_uri: resources::report_uri(&job.id),
    })
}

fn swept(job: &Job) -> Result<Answer, ToolError> {
    failed(job)?;
    let Work::Sweep { seeds, replay } = &job.work else { return Err(ToolError(format!("{} is not a sweep", job.id))) };
    let ended = ended(job);
    let (passed, failed, failing, summary) = match ended.as_deref() {
        Some(Ended::Sweep(sweep)) => (sweep.passed, sweep.failed, sweep.failing.as_slice(), sweep.summary.clone()),
        _ => (0, 0, &[][..], String::new()),
    };
    let failing = failing
        .iter()
        .map(|o| FailingSeed {
            seed: o.seed,
            reason: o.reason.clone().unwrap_or_else(|| "failed".to_owned()),
            replay: format!("{replay} --seed {}", o.seed),
        })
        .collect();
    Answer::of(Swept {
        id: job.id.clone(),
        state: job.state().to_owned(),
        seeds: seeds.end - seeds.start,
        done: job.progress(),
        passed,
        failed,
        failing,
        summary,
    })
}

fn compared(job: &Job) -> Result<Answer, ToolError> {
    failed(job)?;
    let Work::Comparison { seed, .. } = job.work else {
        return Err(ToolError(format!("{} is not a comparison", job.id)));
    };
    let rows = match ended(job).as_deref() {
        Some(Ended::Comparison(reports)) => reports.iter().map(StrategyRow::of).collect(),
        _ => Vec::new(),
    };
    Answer::of(Compared { id: job.id.clone(), state: job.state().to_owned(), seed, rows })
}

/// A job's report: a simulation's own; for a sweep or comparison, its answer.
fn job_report(job: &Job, format: Format) -> Result<Value, ToolError> {
    let Some(ended) = ended(job) else {
        return Err(ToolError::invalid("id", format!("{} is still running: it has no report yet", job.id)));
    };
    let report = match &*ended {
        Ended::Report(report) => report,
        Ended::Cancelled => {
            return Err(ToolError::invalid("id", format!("{} was cancelled: it has no report", job.id)));
        }
        Ended::Error(e) => return Err(ToolError::invalid("id", format!("{} could not run: {e}", job.id))),
        Ended::Sweep(_) | Ended::Comparison(_) => {
            if !matches!(format, Format::Json) {
                return Err(ToolError::invalid("format", "a sweep or comparison has its report in JSON only"));
            }
            let answer = if matches!(job.work, Work::Sweep { .. }) { swept(job)? } else { compared(job)? };
            return Ok(answer.value);
        }
    };
    Ok(match format {
        Format::Json => to_value(&**report),
        Format::Html => Value::String(dtest_orchestrator::html::page(report)),
        Format::Junit => {
            return Err(ToolError::invalid("format", "a simulation's report is JSON or HTML; JUnit is for real runs"));
        }
    })
}

// ---- helpers --------------------------------------------------------------------------------

/// Deserializes arguments, naming the field of the first problem.
fn args<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde says "missing field `x`" and "unknown field `x`, expected ..." at the root; put
        // the field first, as every other message has it.
        let named = |prefix: &str| {
            let rest = inner.strip_prefix(prefix)?;
            let (field, after) = rest.split_once('`')?;
            Some(ToolError::invalid(field, format!("{}{}", prefix.trim_end_matches(" `"), after)))
        };
        match path.as_str() {
            "." => named("missing field `").or_else(|| named("unknown field `")).unwrap_or(ToolError(inner)),
            _ => ToolError::invalid(&path, inner),
        }
    })
}

fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ToolError> {
    serde_json::from_value(value)
        .map_err(|e| ToolError::upstream(format!("the orchestrator's answer is unexpected: {e}")))
}

fn wait(wait_s: Option<u32>, default: u32) -> Result<u32, ToolError> {
    match wait_s.unwrap_or(default) {
        s if s <= WAIT_MAX_S => Ok(s),
        s => Err(ToolError::invalid(
            "wait_s",
            format!("{s} is more than {WAIT_MAX_S}; poll get_execution_status instead"),
        )),
    }
}

/// `word` as one word of a shell command line, quoted if it must be.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./-=:,+@%".contains(&b));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

/// Checks that `nodes` names registered nodes: the service would also take a URL and send that
/// host the node token and the work.
fn registered_names(nodes: &[String]) -> Result<(), ToolError> {
    match nodes.iter().find(|n| n.contains("://")) {
        Some(url) => {
            Err(ToolError::invalid("nodes", format!("{url:?}: name a registered node (register_node registers one)")))
        }
        None => Ok(()),
    }
}

/// A path segment: an id as the orchestrator's routes take it, nothing that changes the path.
fn segment<'a>(id: &'a str, field: &str) -> Result<&'a str, ToolError> {
    let plain =
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if plain {
        Ok(id)
    } else {
        Err(ToolError::invalid(field, format!("{id:?} is not an id (letters, digits, `_.:-`)")))
    }
}

/// The scenario of a call: the object, or the file (read once, bounded); parsed and checked,
/// and as JSON.
fn scenario_of(scenario: Option<Object>, path: Option<String>, files: &Files) -> Result<(Scenario, Value), ToolError> {
    match (scenario, path) {
        (Some(object), None) => {
            let value = Value::Object(object);
            Ok((parse(&value, "scenario")?, value))
        }
        (None, Some(path)) => {
            let file = files.resolve(&path)?;
            let bytes = dtest_orchestrator::scenario_file::read_bounded(&file)
                .map_err(|e| ToolError::invalid("path", format!("{path}: {e}")))?;
            let scenario =
                dtest_core::scenario::parse(&bytes).map_err(|problems| problems_error("path", &path, &problems))?;
            let value = serde_json::from_slice(&bytes).map_err(|e| ToolError::invalid("path", e))?;
            Ok((scenario, value))
        }
        (Some(_), Some(_)) => Err(ToolError::invalid("path", "give `scenario` or `path`, not both")),
        (None, None) => {
            Err(ToolError::invalid("scenario", "missing: give `scenario` (the JSON object) or `path` (a file)"))
        }
    }
}

fn parse(value: &Value, field: &str) -> Result<Scenario, ToolError> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    dtest_core::scenario::parse(&bytes).map_err(|problems| problems_error(field, "", &problems))
}

/// Problems of a scenario, each by its field: `scenario.cluster.groups[0].count: ...`.
fn problems_error(field: &str, file: &str, problems: &[dtest_core::scenario::Diagnostic]) -> ToolError {
    const SHOWN: usize = 20;
    let mut lines: Vec<String> = problems
        .iter()
        .take(SHOWN)
        .map(|d| {
            let at = if d.path.is_root() { field.to_owned() } else { format!("{field}.{}", d.path) };
            match (file, d.pos) {
                ("", _) | (_, None) => format!("{at}: {}", d.message),
                (file, Some(pos)) => format!("{at}: {} ({file}:{pos})", d.message),
            }
        })
        .collect();
    if problems.len() > SHOWN {
        lines.push(format!("{} more problems", problems.len() - SHOWN));
    }
    ToolError(lines.join("\n"))
}

fn simulable(scenario: &Scenario) -> Result<(), ToolError> {
    dtest_sim::check_simulable(scenario).map_err(|e| ToolError::invalid("scenario", e))
}

async fn notify(context: &RequestContext<RoleServer>, progress: f64, total: Option<f64>, message: String) {
    let Some(token) = context.meta.get_progress_token() else { return };
    let mut param = ProgressNotificationParam::new(token, progress).with_message(message);
    if let Some(total) = total {
        param = param.with_total(total);
    }
    // A client gone away is seen by the cancellation token, not here.
    let _ = context.peer.notify_progress(param).await;
}

// ---- the protocol ---------------------------------------------------------------------------

impl ServerHandler for Dtest {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().enable_prompts().build())
            .with_server_info(Implementation::new("dtest", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "dtest: deterministic simulation and real clusters from one scenario file. Write a scenario \
                 (resource dtest://schema/scenario, prompt write_scenario, examples dtest://scenarios/*), check it \
                 with validate_scenario, simulate it (run_simulation, sweep_seeds, compare_strategies), then run it \
                 on nodes (submit_test_execution, get_execution_status, get_report).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.get_tool(&request.name).is_none() {
            return Err(ErrorData::invalid_params(format!("no tool `{}`", request.name), None));
        }
        let result = match self.call(&request.name, request.arguments, &context).await {
            Ok(answer) => {
                let mut result = CallToolResult::structured(answer.value);
                for uri in answer.links {
                    result.content.push(ContentBlock::resource_link(resources::report_link(&uri)));
                }
                result
            }
            Err(error) => CallToolResult::error(vec![ContentBlock::text(error.0)]),
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(self, &request.uri).await.map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(resources::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        resources::prompt(&request).map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_s_tools_each_with_documented_inputs_an_object_output_and_annotations() {
        let mut names: Vec<String> = tools().iter().map(|t| t.name.to_string()).collect();
        names.sort();
        let mut contract = vec![
            "register_node",
            "submit_test_execution",
            "get_execution_status",
            "cancel_execution",
            "start_load_test",
            "stop_load_test",
            "get_metrics",
            "configure_profile",
            "get_node_health",
            "get_cluster_status",
            "configure_alerts",
            "allocate_resources",
            "deallocate_resources",
            "get_utilization",
            "send_message",
            "broadcast_message",
            "get_connection_status",
            "run_simulation",
            "sweep_seeds",
            "compare_strategies",
            "validate_scenario",
            "get_report",
        ];
        contract.sort_unstable();
        assert_eq!(names, contract);
        for tool in tools() {
            let name = &tool.name;
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{name} input");
            let output = tool.output_schema.as_ref().unwrap_or_else(|| panic!("{name} has an output schema"));
            assert_eq!(output.get("type"), Some(&json!("object")), "{name} output is object-rooted");
            let properties = tool.input_schema.get("properties").and_then(Value::as_object);
            for (field, schema) in properties.into_iter().flatten() {
                assert!(schema.get("description").is_some(), "{name}.{field} is documented: {schema}");
            }
            let annotations = tool.annotations.as_ref().unwrap_or_else(|| panic!("{name} has annotations"));
            assert!(annotations.read_only_hint.is_some() && annotations.destructive_hint.is_some(), "{name}");
            assert!(annotations.idempotent_hint.is_some(), "{name}");
        }
    }

    #[test]
    fn over_http_only_files_under_the_directory_are_read() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the repository");
        let files = Files::Under(root.clone());
        assert_eq!(files.resolve("scenarios/partition.json").expect("inside"), root.join("scenarios/partition.json"));
        for outside in ["/etc/passwd", "../../etc/passwd", "scenarios/../../etc/passwd", "no-such-file"] {
            let error = files.resolve(outside).expect_err(outside).0;
            assert!(error.starts_with("path: ") && error.contains("no such file under"), "{error}");
        }
        let fifo = Files::Any.resolve("/dev/null").expect_err("a device").0;
        assert!(fifo.contains("not a regular file"), "{fifo}");
        assert!(Files::Any.resolve("/etc/passwd").is_ok());
    }

    #[test]
    fn a_bad_argument_is_named_by_its_field() {
        let message = |value: Value| args::<RunSimulation>(value).map(|_| ()).expect_err("refused").0;
        assert!(message(json!({ "seed": "x" })).starts_with("seed: invalid type"));
        assert!(message(json!({ "wait_s": -1 })).starts_with("wait_s:"));
        assert!(
            message(json!({ "sed": 1 })).starts_with("sed: unknown field `sed`, expected one of"),
            "{}",
            message(json!({ "sed": 1 }))
        );
        assert_eq!(args::<ById>(json!({})).map(|_| ()).expect_err("no id").0, "id: missing field");
        assert!(message(json!({ "strategy": "fastest" })).starts_with("strategy: unknown variant `fastest`"));
        assert!(wait(Some(51), 0).expect_err("too long").0.starts_with("wait_s:"));
        let missing = scenario_of(None, None, &Files::Any).map(|_| ()).expect_err("no scenario").0;
        assert!(missing.starts_with("scenario: missing"), "{missing}");
        let bad = json!({ "name": "x", "cluster": { "groups": [{ "name": "a", "count": "three" }] } });
        let problems = scenario_of(bad.as_object().cloned(), None, &Files::Any).map(|_| ()).expect_err("invalid").0;
        assert!(problems.contains("scenario.cluster.groups[0].count: "), "{problems}");
        assert!(segment("../nodes", "id").is_err() && segment("sim-1", "id").is_ok());
        assert_eq!(shell_word("scenarios/partition.json"), "scenarios/partition.json");
        assert_eq!(shell_word("my scenario's.json"), "'my scenario'\\''s.json'");
    }
}
