//! The service's state and what each route does: the node registry and its health, executions
//! (started, watched, finished, resumed after a crash), the resource ledger, alerts, profiles
//! and messages. The HTTP layer (`api`) only parses and answers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dtest_core::health::alerts::{AlertRule, Alerts, Comparison, Severity, Transition};
use dtest_core::health::{HealthConfig, HealthState, Metrics as NodeMetrics, NodeHealth, PhiConfig};
use dtest_core::placement::ledger::{Ledger, share_of_need};
use dtest_core::protocol::DeliveryMode;
use dtest_core::protocol::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use dtest_core::report::Report;
use dtest_core::run::RunEvent;
use dtest_core::scenario::{Resources, Scenario};
use dtest_node::api::NodeInfo;
use dtest_node::client::NodeClient;
use dtest_node::secret::Secret;
use dtest_node::secure::ClientTls;
use dtest_orchestrator::journal::{Entry, Journal, JournalHandle, Setup};
use dtest_orchestrator::{Canceller, NodeSource, Session, SessionConfig, SessionError, SessionEvent};
use serde_json::{Value, json};

use crate::events::Bus;
use crate::model::*;
use crate::store::{ExecutionHead, ExecutionKind, ExecutionRow, Store, StoreError};
use crate::unix_ms;

/// Nodes the registry holds.
pub const NODES_MAX: usize = 10_000;
/// Executions running at once.
pub const RUNNING_MAX: usize = 64;
/// Allocations held at once.
pub const ALLOCATIONS_MAX: usize = 10_000;
/// Load profiles kept.
pub const PROFILES_MAX: usize = 1_000;
/// Alert events kept in the history.
const ALERT_HISTORY_MAX: usize = 1_000;
/// How often the service probes each node.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);
/// Sends of a reliable message before it is given up.
const MESSAGE_ATTEMPTS: u32 = 5;

/// An error the API turns into a status and a JSON body.
#[derive(Debug)]
pub enum Failure {
    /// 400.
    BadRequest(String),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 422.
    Invalid(String),
    /// 503: the store failed.
    Storage(StoreError),
    /// 502: a node failed.
    Node(String),
}

impl Failure {
    /// What went wrong, for people.
    pub fn message(&self) -> String {
        match self {
            Failure::BadRequest(m)
            | Failure::NotFound(m)
            | Failure::Conflict(m)
            | Failure::Invalid(m)
            | Failure::Node(m) => m.clone(),
            Failure::Storage(e) => e.to_string(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Storage(e)
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// How the service reaches its nodes.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The token nodes accept.
    pub node_token: Secret,
    /// Whom to trust as the nodes (`https://` URLs), and the certificate to present to them.
    pub node_tls: ClientTls,
}

impl Inner {
    /// Adds an alert event to the history, forgetting the oldest beyond [`ALERT_HISTORY_MAX`].
    fn remember(&mut self, view: AlertView) {
        self.alert_history.push_back(view);
        if self.alert_history.len() > ALERT_HISTORY_MAX {
            self.alert_history.pop_front();
        }
    }
}

/// A registered node.
struct Node {
    url: String,
    info: NodeInfo,
    labels: BTreeMap<String, String>,
    registered_ms: u64,
    last_seen_ms: Option<u64>,
    round_trip_ms: Option<f64>,
    failures: u32,
    /// Probes answered and failed since it registered, for `GET /metrics`.
    probes: (u64, u64),
    health: NodeHealth,
    breaker: CircuitBreaker,
    client: NodeClient,
}

/// Reports waiting in memory for a store that failed to take them.
const UNSTORED_MAX: usize = 1_000;

/// How an execution ended, as the store keeps it.
#[derive(Clone, Debug)]
struct Ended {
    state: String,
    finished_ms: u64,
    report: Option<String>,
    summary: String,
}

/// Abandons its session when dropped with it (see [`Session::abandon`]).
struct Abandon(Option<Session>);

impl Abandon {
    async fn next_event(&mut self) -> Option<SessionEvent> {
        match self.0.as_mut() {
            Some(session) => session.next_event().await,
            None => None,
        }
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            session.abandon();
        }
    }
}

/// An execution running in this process.
struct Live {
    canceller: Canceller,
    progress: ProgressView,
    cancelled: bool,
}

/// The service.
pub struct Service {
    config: ServiceConfig,
    store: Arc<Store>,
    /// The event log and its listeners.
    pub bus: Arc<Bus>,
    origin: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<String, Node>,
    ledger: Ledger,
    running: BTreeMap<String, Live>,
    allocations: BTreeMap<String, Allocation>,
    alerts: Alerts,
    rules: AlertRules,
    alert_history: VecDeque<AlertView>,
    next_allocation: u64,
    /// Ended executions whose reports the store refused, by id.
    unstored: BTreeMap<String, Ended>,
    /// Executions being started (counted against [`RUNNING_MAX`] with the running ones).
    starting: usize,
    /// Executions ended since the service started, by state, for `GET /metrics`.
    ended: BTreeMap<String, u64>,
}

impl Service {
    /// The service on `store`, with the registry, allocations, rules and profiles it held.
    pub fn open(store: Arc<Store>, config: ServiceConfig) -> std::result::Result<Arc<Service>, StoreError> {
        let bus = Arc::new(Bus::new(store.clone()));
        let service =
            Arc::new(Service { config, store, bus, origin: Instant::now(), inner: Mutex::new(Inner::default()) });
        {
            let mut inner = service.inner();
            for row in service.store.nodes()? {
                let id = row.id;
                // A stored registration always holds its info: `register` fills it in first.
                if let Ok(registration) = serde_json::from_str::<RegisterNode>(&row.body)
                    && let Some(info) = registration.info.clone()
                {
                    let mut node = service.node_of(&registration, info, row.updated_ms);
                    // Known from before a restart: alive until its probes say otherwise.
                    node.health.heartbeat(0, NodeMetrics::default());
                    inner.ledger.set_capacity(&id, node.info.resources.clone());
                    inner.nodes.insert(id, node);
                }
            }
            for (id, body) in service.store.allocations()? {
                if let Ok(allocation) = serde_json::from_str::<Allocation>(&body) {
                    inner.ledger.restore(&id, &allocation.node, &allocation.resources);
                    inner.allocations.insert(id, allocation);
                }
            }
            inner.next_allocation = inner.allocations.len() as u64;
            if let Some(rules) = service.store.setting("alert_rules")?
                && let Ok(rules) = serde_json::from_str::<AlertRules>(&rules)
                && let Ok(alerts) = alerts_of(&rules)
            {
                inner.alerts = alerts;
                inner.rules = rules;
            }
        }
        Ok(service)
    }

    /// The service's state. Some holders write to the store meanwhile, so it is locked as the
    /// store's calls are: off the runtime while one waits for the database.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.store.lock_beside(&self.inner)
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn node_of(&self, registration: &RegisterNode, info: NodeInfo, registered_ms: u64) -> Node {
        let phi = PhiConfig::default();
        Node {
            url: registration.url.clone(),
            info,
            labels: registration.labels.clone(),
            registered_ms,
            last_seen_ms: None,
            round_trip_ms: None,
            failures: 0,
            probes: (0, 0),
            health: NodeHealth::new(phi, HealthConfig::default()),
            breaker: CircuitBreaker::new(BreakerConfig::default()),
            client: NodeClient::new(&registration.url, &self.config.node_token, &self.config.node_tls),
        }
    }

    // ---- nodes ------------------------------------------------------------------------------

    /// `POST /v1/nodes`: a node announces itself (again).
    pub async fn register(&self, mut registration: RegisterNode) -> Result<(NodeView, bool)> {
        check_name("name", &registration.name)?;
        if !(registration.url.starts_with("http://") || registration.url.starts_with("https://"))
            || registration.url.len() > 2048
        {
            return Err(Failure::Invalid("url: expected http://host:port".to_owned()));
        }
        // The node's own rules for its labels: one set of checks on both ends.
        dtest_node::api::validate_labels(&registration.labels).map_err(|e| Failure::Invalid(format!("labels: {e}")))?;
        let info = match registration.info.clone() {
            Some(info) => {
                info.check().map_err(|why| Failure::Invalid(format!("info.{why}")))?;
                info
            }
            None => NodeClient::new(&registration.url, &self.config.node_token, &self.config.node_tls)
                .info(PROBE_TIMEOUT)
                .await
                .map_err(|e| {
                    Failure::Invalid(format!(
                        "info: not given, and the node at {} did not give it: {e}",
                        registration.url
                    ))
                })?,
        };
        registration.info = Some(info.clone());
        let now_ms = unix_ms();
        let mut inner = self.inner();
        let id = registration.name.clone();
        let new = !inner.nodes.contains_key(&id);
        if new && inner.nodes.len() >= NODES_MAX {
            return Err(Failure::Conflict(format!("the registry holds {NODES_MAX} nodes already")));
        }
        self.store.put_node(&id, &serde_json::to_string(&registration).unwrap_or_default(), now_ms)?;
        inner.ledger.set_capacity(&id, info.resources.clone());
        match inner.nodes.get_mut(&id) {
            Some(node) if node.url == registration.url => {
                node.info = info;
                node.labels = registration.labels;
                node.registered_ms = now_ms;
            }
            _ => {
                let mut node = self.node_of(&registration, info, now_ms);
                // Registering is a sign of life: from here, probes that fail make it suspected,
                // then dead, as missed heartbeats do.
                node.health.heartbeat(self.now(), NodeMetrics::default());
                inner.nodes.insert(id.clone(), node);
            }
        }
        let view = view_of(&inner, &id, self.now()).ok_or_else(|| Failure::NotFound(id.clone()))?;
        drop(inner);
        if new {
            tracing::info!(node = %id, url = %view.url, "node registered");
            self.bus.publish("node_joined", None, json!({ "node": id, "url": view.url }));
        }
        Ok((view, new))
    }

    /// `GET /v1/nodes`.
    pub fn nodes(&self) -> Vec<NodeView> {
        let now = self.now();
        let inner = self.inner();
        inner.nodes.keys().filter_map(|id| view_of(&inner, id, now)).collect()
    }

    /// `GET /v1/nodes/{id}`.
    pub fn node(&self, id: &str) -> Result<NodeView> {
        view_of(&self.inner(), id, self.now()).ok_or_else(|| Failure::NotFound(format!("no node `{id}`")))
    }

    /// Probes every node once (`GET /v1/info`), feeds its phi detector and breaker, and
    /// publishes what changed: the service watches its nodes between executions too.
    pub async fn probe(&self) {
        let targets: Vec<(String, NodeClient)> = {
            let now = self.now();
            let mut inner = self.inner();
            inner
                .nodes
                .iter_mut()
                .filter_map(|(id, node)| node.breaker.try_acquire(now).then(|| (id.clone(), node.client.clone())))
                .collect()
        };
        let answers = futures::future::join_all(targets.into_iter().map(|(id, client)| async move {
            let sent = Instant::now();
            let answer = client.info(PROBE_TIMEOUT).await;
            (id, answer, sent.elapsed().as_secs_f64() * 1e3)
        }))
        .await;
        let now = self.now();
        let mut changes = Vec::new();
        let mut resized = Vec::new();
        let mut inner = self.inner();
        for (id, answer, round_trip_ms) in answers {
            let Some(node) = inner.nodes.get_mut(&id) else { continue };
            match answer {
                Ok(info) => {
                    node.breaker.record(now, false);
                    node.failures = 0;
                    node.probes.0 += 1;
                    node.last_seen_ms = Some(unix_ms());
                    node.round_trip_ms = Some(round_trip_ms);
                    node.health.heartbeat(now, NodeMetrics::default());
                    if node.info.resources != info.resources {
                        resized.push((id.clone(), info.resources.clone()));
                    }
                    node.info = info;
                }
                Err(_) => {
                    node.breaker.record(now, true);
                    node.failures += 1;
                    node.probes.1 += 1;
                }
            }
        }
        // A node that now says it has other resources: the ledger follows (what it promised stays).
        for (id, resources) in resized {
            inner.ledger.set_capacity(&id, resources);
        }
        let mut observations = Vec::new();
        for (id, node) in &mut inner.nodes {
            let before = node.health.state();
            let after = node.health.evaluate(now);
            if before != after {
                changes.push((id.clone(), before, after));
            }
            let phi = node.health.detector().phi(now);
            observations.push((id.clone(), "score", f64::from(node.health.score())));
            observations.push((id.clone(), "phi", if phi.is_finite() { phi } else { f64::MAX }));
            if let Some(rtt) = node.round_trip_ms {
                observations.push((id.clone(), "round_trip_ms", rtt));
            }
        }
        let (health, dead) = cluster_figures(&inner);
        observations.push(("cluster".to_owned(), "health", f64::from(health)));
        observations.push(("cluster".to_owned(), "nodes_dead", dead as f64));
        let mut alert_events = Vec::new();
        for (subject, metric, value) in observations {
            alert_events.extend(inner.alerts.observe(now, &subject, metric, value));
        }
        let mut fired = Vec::new();
        for event in alert_events {
            let view = alert_view(&event, unix_ms(), false);
            inner.remember(view.clone());
            fired.push(view);
        }
        drop(inner);
        for (id, before, after) in changes {
            let kind = match after {
                HealthState::Dead => "node_dead",
                HealthState::Unhealthy => "node_suspected",
                _ if before >= HealthState::Unhealthy => "node_back",
                _ => "node_health",
            };
            if after >= HealthState::Unhealthy {
                tracing::warn!(node = %id, state = state_name(after), "node health changed");
            } else {
                tracing::info!(node = %id, state = state_name(after), "node health changed");
            }
            self.bus.publish(kind, None, json!({ "node": id, "state": state_name(after) }));
        }
        for view in fired {
            let kind = if view.state == "fired" { "alert_fired" } else { "alert_resolved" };
            tracing::warn!(rule = %view.rule, subject = %view.subject, state = %view.state, "cluster alert");
            self.bus.publish(kind, None, serde_json::to_value(&view).unwrap_or(Value::Null));
        }
    }

    /// `GET /v1/connections`.
    pub fn connections(&self) -> Vec<Connection> {
        let now = self.now();
        let mut inner = self.inner();
        inner
            .nodes
            .iter_mut()
            .map(|(id, node)| Connection {
                node: id.clone(),
                url: node.url.clone(),
                breaker: match node.breaker.state(now) {
                    BreakerState::Closed => "closed",
                    BreakerState::Open { .. } => "open",
                    BreakerState::HalfOpen { .. } => "half_open",
                }
                .to_owned(),
                last_heartbeat_ms: node.last_seen_ms,
                round_trip_ms: node.round_trip_ms,
                failures: node.failures,
            })
            .collect()
    }

    /// `GET /v1/cluster`.
    pub fn cluster(&self) -> ClusterView {
        let inner = self.inner();
        let mut nodes: BTreeMap<String, u64> =
            ["healthy", "degraded", "unhealthy", "dead"].into_iter().map(|s| (s.to_owned(), 0)).collect();
        for node in inner.nodes.values() {
            *nodes.entry(state_name(node.health.state()).to_owned()).or_default() += 1;
        }
        let (health, _) = cluster_figures(&inner);
        ClusterView { health, nodes, alerts_firing: firing(&inner), executions_running: inner.running.len() as u64 }
    }

    /// `GET /metrics`: what the service knows now, for Prometheus.
    pub fn figures(&self) -> crate::metrics::ServeFigures {
        use crate::metrics::{NODE_SERIES_MAX, NODE_STATES, NodeFigures, ServeFigures, ended_states};
        let now = self.now();
        let inner = self.inner();
        let cancelling = inner.running.values().filter(|l| l.cancelled).count() as u64;
        let (tasks, tasks_ended) =
            inner.running.values().fold((0, 0), |(t, e), l| (t + l.progress.tasks, e + l.progress.tasks_ended));
        let mut nodes_by_state = [0; 4];
        for node in inner.nodes.values() {
            let state = state_name(node.health.state());
            if let Some(i) = NODE_STATES.iter().position(|s| *s == state) {
                nodes_by_state[i] += 1;
            }
        }
        let nodes = inner
            .nodes
            .iter()
            .take(NODE_SERIES_MAX)
            .map(|(name, node)| {
                // As in the API (infinity is `f64::MAX`), but never below 0 (`-0 + 0` is `0`).
                let phi = node.health.detector().phi(now);
                let phi = if phi.is_finite() { phi.max(0.0) + 0.0 } else { f64::MAX };
                NodeFigures {
                    name: name.clone(),
                    phi,
                    score: node.health.score(),
                    probes_ok: node.probes.0,
                    probes_failed: node.probes.1,
                    round_trip_s: node.round_trip_ms.map(|ms| ms / 1e3),
                }
            })
            .collect();
        let firing = inner.alerts.firing();
        let rules = inner
            .rules
            .rules
            .iter()
            .map(|rule| {
                let severity = rule.severity.clone().unwrap_or_else(|| Severity::Warning.name().to_owned());
                let count = firing.iter().filter(|f| f.1 == rule.name).count() as u64;
                (rule.name.clone(), severity, count)
            })
            .collect();
        ServeFigures {
            starting: inner.starting as u64,
            running: inner.running.len() as u64 - cancelling,
            cancelling,
            ended: ended_states(&inner.ended),
            tasks_ended,
            tasks_unfinished: tasks.saturating_sub(tasks_ended),
            nodes_by_state,
            cluster_health: cluster_figures(&inner).0,
            nodes,
            nodes_omitted: inner.nodes.len().saturating_sub(NODE_SERIES_MAX) as u64,
            rules,
        }
    }

    // ---- executions -------------------------------------------------------------------------

    /// `POST /v1/executions`: checks the scenario, picks the nodes, takes each one's share and
    /// starts the run; answers once the nodes have the plan.
    pub async fn submit(self: &Arc<Self>, request: SubmitExecution) -> Result<String> {
        // Checking a scenario of megabytes is work for a blocking thread, not for the runtime's.
        let json = request.scenario.clone();
        let parsed = tokio::task::spawn_blocking(move || scenario_of(&json)).await;
        let scenario = parsed.map_err(|e| Failure::Invalid(format!("scenario: {e}")))?.map_err(Failure::Invalid)?;
        let seed = request.seed.unwrap_or(1);
        let stored = json!({ "kind": "scenario", "scenario": request.scenario, "seed": seed });
        self.start(scenario, seed, ExecutionKind::Scenario, request.nodes.as_deref(), stored).await
    }

    /// `POST /v1/load`: a load test as an execution of a one-task scenario.
    pub async fn start_load(self: &Arc<Self>, request: StartLoad) -> Result<String> {
        let pattern = match (&request.pattern, &request.profile) {
            (Some(pattern), None) => pattern.clone(),
            (None, Some(name)) => {
                let body =
                    self.store.profile(name)?.ok_or_else(|| Failure::NotFound(format!("no load profile `{name}`")))?;
                serde_json::from_str::<Profile>(&body).map_err(|e| Failure::Invalid(e.to_string()))?.pattern
            }
            _ => return Err(Failure::Invalid("give `pattern` or `profile`, one of them".to_owned())),
        };
        let nodes = self.pick(request.nodes.as_deref())?;
        let scenario = request.scenario(pattern, nodes.len());
        let parsed = scenario_of(&scenario).map_err(Failure::Invalid)?;
        let stored = json!({ "kind": "load", "scenario": scenario, "seed": 1 });
        self.start(parsed, 1, ExecutionKind::Load, Some(&nodes), stored).await
    }

    /// The names of the nodes an execution asks for (by name or URL), or every node not dead.
    fn pick(&self, asked: Option<&[String]>) -> Result<Vec<String>> {
        let inner = self.inner();
        let nodes: Vec<String> = match asked {
            Some(asked) => asked
                .iter()
                .map(|a| {
                    let registered = inner.nodes.iter().find(|(id, node)| *id == a || node.url == *a);
                    match registered {
                        Some((id, _)) => Ok(id.clone()),
                        // A node named by URL need not be registered: it runs with all it has.
                        None if a.starts_with("http://") || a.starts_with("https://") => Ok(a.clone()),
                        None => {
                            Err(Failure::Invalid(format!("nodes: no registered node `{a}` (name one, or give a URL)")))
                        }
                    }
                })
                .collect::<Result<_>>()?,
            None => inner
                .nodes
                .iter()
                .filter(|(_, node)| node.health.state() != HealthState::Dead)
                .map(|(id, _)| id.clone())
                .collect(),
        };
        if nodes.is_empty() {
            return Err(Failure::Conflict(
                "no node to run on: register nodes with `dtest node --orchestrator URL`".to_owned(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = nodes.iter().find(|n| !seen.insert(*n)) {
            return Err(Failure::Invalid(format!("nodes: `{twice}` is named twice (by name or URL)")));
        }
        Ok(nodes)
    }

    async fn start(
        self: &Arc<Self>,
        scenario: Scenario,
        seed: u64,
        kind: ExecutionKind,
        asked: Option<&[String]>,
        stored: Value,
    ) -> Result<String> {
        let nodes = self.pick(asked)?;
        self.could_fit(&scenario, &nodes)?;
        {
            let mut inner = self.inner();
            if inner.running.len() + inner.starting >= RUNNING_MAX {
                return Err(Failure::Conflict(format!("{RUNNING_MAX} executions run already")));
            }
            inner.starting += 1;
        }
        let started = self.start_counted(scenario, seed, kind, &nodes, stored).await;
        self.inner().starting -= 1;
        started
    }

    async fn start_counted(
        self: &Arc<Self>,
        scenario: Scenario,
        seed: u64,
        kind: ExecutionKind,
        nodes: &[String],
        mut stored: Value,
    ) -> Result<String> {
        // The nodes as chosen, so that an execution started again after a restart runs there.
        stored["nodes"] = json!(nodes);
        let id = dtest_orchestrator::session::fresh_id(&scenario.name).map_err(Failure::Node)?;
        let row = ExecutionRow {
            id: id.clone(),
            name: scenario.name.clone(),
            kind,
            state: "pending".to_owned(),
            created_ms: unix_ms(),
            started_ms: None,
            finished_ms: None,
            seed,
            request: stored.to_string(),
            setup: None,
            report: None,
            summary: None,
        };
        self.store.insert_execution(&row)?;
        match self.launch(&id, scenario, seed, nodes).await {
            Ok(()) => Ok(id),
            Err(failure) => {
                let summary = json!({ "error": failure.message() }).to_string();
                self.ended(&id, Ended { state: "failed".to_owned(), finished_ms: unix_ms(), report: None, summary });
                Err(failure)
            }
        }
    }

    /// Refuses (422) a scenario with a task that no chosen registered node could ever run, even
    /// with nothing else on it.
    fn could_fit(&self, scenario: &Scenario, nodes: &[String]) -> Result<()> {
        if let Some(target) = scenario.targets.iter().find(|t| t.tls.ca_file.is_some()) {
            return Err(Failure::Invalid(format!(
                "targets.{}.tls.ca_file: the service reads no files named by a submitted scenario; \
                 trust the target's CA on the service's machine, or set `insecure` for a test target",
                target.name
            )));
        }
        let inner = self.inner();
        let capacities: Vec<_> = nodes.iter().filter_map(|n| inner.ledger.capacity(n)).collect();
        if capacities.len() < nodes.len() {
            return Ok(()); // Nodes named by URL: their daemons say what they have at start.
        }
        for task in &scenario.workload.tasks {
            if !capacities.iter().any(|c| c.covers(&task.requires)) {
                return Err(Failure::Invalid(format!(
                    "task `{}` needs more than any of its nodes has (cpu_millis {}, memory_mb {})",
                    task.name, task.requires.cpu_millis, task.requires.memory_mb
                )));
            }
        }
        Ok(())
    }

    /// Takes the nodes' shares and starts the session.
    async fn launch(self: &Arc<Self>, id: &str, scenario: Scenario, seed: u64, nodes: &[String]) -> Result<()> {
        let need = share_of_need(&scenario, nodes.len());
        let (urls, shares) = {
            let mut inner = self.inner();
            let mut urls = Vec::new();
            let mut shares = Vec::new();
            for node in nodes {
                match inner.nodes.get(node).map(|n| n.url.clone()) {
                    Some(url) => {
                        urls.push(url);
                        shares.push(Some(inner.ledger.share(&share_id(id, node), node, &need).unwrap_or_default()));
                    }
                    None => {
                        urls.push(node.clone());
                        shares.push(None);
                    }
                }
            }
            // Every task fits some node whole (checked first): what it lacks now is what other
            // executions and allocations hold.
            let unplaceable = scenario.workload.tasks.iter().find(|task| {
                !shares.iter().any(|share| share.as_ref().is_none_or(|s: &Resources| s.covers(&task.requires)))
            });
            if let Some(task) = unplaceable {
                inner.ledger.release_prefix(&share_prefix(id));
                return Err(Failure::Conflict(format!(
                    "task `{}` fits on none of the nodes' free resources now: other executions and allocations \
                     hold them (see GET /v1/utilization)",
                    task.name
                )));
            }
            (urls, shares)
        };
        let journal = JournalHandle(Arc::new(StoreJournal { store: self.store.clone(), id: id.to_owned() }));
        let mut config = SessionConfig::new(
            scenario.clone(),
            NodeSource::Remote { urls, token: self.config.node_token.clone(), tls: self.config.node_tls.clone() },
            seed,
        );
        config.tls = target_tls(&scenario);
        config.shares = shares;
        config.journal = Some(journal);
        config.id = Some(id.to_owned());
        match Session::start(config).await {
            Ok(session) => {
                self.watch(session, scenario, nodes.to_vec(), false);
                Ok(())
            }
            Err(e) => {
                self.inner().ledger.release_prefix(&share_prefix(id));
                Err(match e {
                    SessionError::Unreachable(_) | SessionError::Node { .. } => Failure::Conflict(e.to_string()),
                    SessionError::NotRunnable(_) | SessionError::Cluster(_) => Failure::Invalid(e.to_string()),
                    other => Failure::Node(other.to_string()),
                })
            }
        }
    }

    /// Follows a session to its end: its events to the bus, its progress to the status route,
    /// its report to the store.
    /// `nodes` are the registry's names (or URLs) of the session's nodes, by run index.
    fn watch(self: &Arc<Self>, session: Session, scenario: Scenario, nodes: Vec<String>, resumed: bool) {
        let id = session.id().to_owned();
        self.inner().running.insert(
            id.clone(),
            Live { canceller: session.canceller(), progress: ProgressView::default(), cancelled: false },
        );
        tracing::info!(execution = %id, name = %scenario.name, nodes = nodes.len(), resumed, "execution started");
        self.bus.publish(
            if resumed { "execution_resumed" } else { "execution_started" },
            Some(&id),
            json!({ "name": scenario.name, "nodes": nodes }),
        );
        let service = self.clone();
        tokio::spawn(async move {
            // Dropped unfinished (the service stops): the session is abandoned to its nodes, as
            // a crash would leave it, never cancelled; the next start resumes it.
            let mut guard = Abandon(Some(session));
            while let Some(event) = guard.next_event().await {
                service.on_event(&id, &nodes, event);
            }
            if let Some(session) = guard.0.take() {
                let report = session.finish().await;
                service.finished(&id, &scenario, report);
            }
        });
    }

    fn on_event(&self, id: &str, names: &[String], event: SessionEvent) {
        let name = |node: dtest_core::placement::NodeIdx| names.get(node.0 as usize).cloned().unwrap_or_default();
        match event {
            SessionEvent::Progress(progress) => {
                let view = ProgressView {
                    at_ms: progress.at_ms,
                    tasks_ended: progress.tasks_ended,
                    tasks: progress.tasks,
                    nodes_up: progress.nodes_up,
                    nodes: progress.nodes,
                    load: progress.load.map(|l| LoadFigures {
                        rps: l.rps,
                        p99_ms: l.p99_ms,
                        requests: l.requests,
                        errors: l.errors,
                        dropped: l.dropped,
                    }),
                    cancelling: progress.cancelling,
                };
                if let Some(load) = &view.load {
                    self.bus.publish("load", Some(id), serde_json::to_value(load).unwrap_or(Value::Null));
                }
                if let Some(live) = self.inner().running.get_mut(id) {
                    live.progress = view;
                }
            }
            SessionEvent::Warning(warning) => {
                tracing::warn!(execution = %id, "{warning}");
                self.bus.publish("warning", Some(id), json!({ "message": warning }));
            }
            SessionEvent::Run { at_ms, event } => {
                let (kind, data) = match event {
                    RunEvent::NodeJoined { node, incarnation } => {
                        ("node_joined", json!({ "node": name(node), "incarnation": incarnation.0 }))
                    }
                    RunEvent::NodeSuspected { node } => ("node_suspected", json!({ "node": name(node) })),
                    RunEvent::NodeDead { node } => ("node_dead", json!({ "node": name(node) })),
                    RunEvent::NodeBack { node } => ("node_back", json!({ "node": name(node) })),
                    RunEvent::NodeLeft { node } => ("node_left", json!({ "node": name(node) })),
                    RunEvent::TaskAssigned { task, attempt, node } => {
                        ("task_assigned", json!({ "task": task.0, "attempt": attempt.0, "node": name(node) }))
                    }
                    RunEvent::TaskFinished { task, outcome } => {
                        ("task_finished", json!({ "task": task.0, "outcome": format!("{outcome:?}").to_lowercase() }))
                    }
                    RunEvent::TaskReassigned { task, from } => {
                        ("task_reassigned", json!({ "task": task.0, "from": name(from) }))
                    }
                    RunEvent::AttemptEnded { task, attempt, node, end } => (
                        "attempt_ended",
                        json!({ "task": task.0, "attempt": attempt.0, "node": name(node), "end": end.name() }),
                    ),
                    RunEvent::AlertFired(record) => {
                        self.remember_alert(id, &record, "fired");
                        ("alert_fired", serde_json::to_value(&record).unwrap_or(Value::Null))
                    }
                    RunEvent::AlertResolved(record) => {
                        self.remember_alert(id, &record, "resolved");
                        ("alert_resolved", serde_json::to_value(&record).unwrap_or(Value::Null))
                    }
                    RunEvent::FaultStarted { fault } => ("fault_started", json!({ "fault": fault })),
                    RunEvent::FaultEnded { fault } => ("fault_ended", json!({ "fault": fault })),
                    // Live load goes out once a second with the progress.
                    RunEvent::Load(_) => return,
                };
                let mut data = data;
                data["at_ms"] = json!(at_ms);
                self.bus.publish(kind, Some(id), data);
            }
        }
    }

    /// An execution's scenario alert goes into the service's alert history too, its subject
    /// prefixed with the execution (`GET /v1/alerts` shows every alert, the service's and the
    /// executions').
    fn remember_alert(&self, execution: &str, record: &dtest_core::report::AlertRecord, state: &str) {
        let view = AlertView {
            id: record.id,
            rule: record.rule.clone(),
            subject: format!("{execution}/{}", record.subject),
            severity: record.severity.name().to_owned(),
            state: state.to_owned(),
            at_ms: unix_ms(),
            value: record.value,
            acknowledged: false,
        };
        self.inner().remember(view);
    }

    fn finished(&self, id: &str, scenario: &Scenario, report: std::result::Result<Report, SessionError>) {
        let cancelled = {
            let mut inner = self.inner();
            inner.ledger.release_prefix(&share_prefix(id));
            inner.running.remove(id).is_some_and(|live| live.cancelled)
        };
        let (state, report_json, summary) = match report {
            Ok(report) => {
                // A cancel that came after the run ended changed nothing: the report says.
                let state = if report.interrupted && cancelled {
                    "cancelled"
                } else if report.interrupted {
                    "interrupted"
                } else if report.passed() {
                    "succeeded"
                } else {
                    "failed"
                };
                let artifacts = json!({
                    "json": report.to_json(),
                    "html": dtest_orchestrator::html::page(&report),
                    "junit": dtest_orchestrator::junit::junit(scenario, &report),
                });
                (state, Some(artifacts.to_string()), summary_of(&report))
            }
            Err(e) => ("interrupted", None, json!({ "error": e.to_string() })),
        };
        let ended = Ended {
            state: state.to_owned(),
            finished_ms: unix_ms(),
            report: report_json,
            summary: summary.to_string(),
        };
        self.ended(id, ended);
        tracing::info!(execution = %id, state, "execution ended");
        self.bus.publish("execution_finished", Some(id), json!({ "state": state, "summary": summary }));
    }

    /// Records how an execution ended. What the store refuses is kept in memory, served from
    /// there, and stored as soon as the store takes it (its journal stays until then, so a restart
    /// meanwhile finishes it again).
    fn ended(&self, id: &str, ended: Ended) {
        *self.inner().ended.entry(ended.state.clone()).or_default() += 1;
        let stored =
            self.store.finish_execution(id, &ended.state, ended.finished_ms, ended.report.as_deref(), &ended.summary);
        if let Err(e) = stored {
            tracing::error!(execution = %id, state = %ended.state, "how the execution ended waits in memory until it can be stored: {e}");
            let mut inner = self.inner();
            if inner.unstored.len() >= UNSTORED_MAX
                && let Some(oldest) = inner.unstored.iter().min_by_key(|(_, e)| e.finished_ms).map(|(id, _)| id.clone())
            {
                tracing::error!(execution = %oldest, "how the execution ended is dropped: {UNSTORED_MAX} wait already");
                inner.unstored.remove(&oldest);
            }
            inner.unstored.insert(id.to_owned(), ended);
        }
    }

    /// Stores the reports that could not be stored when their executions ended.
    pub fn store_waiting_reports(&self) {
        let waiting: Vec<(String, Ended)> =
            self.inner().unstored.iter().map(|(id, ended)| (id.clone(), ended.clone())).collect();
        for (id, ended) in waiting {
            if self
                .store
                .finish_execution(&id, &ended.state, ended.finished_ms, ended.report.as_deref(), &ended.summary)
                .is_ok()
            {
                tracing::info!(execution = %id, "the execution's report is stored");
                self.inner().unstored.remove(&id);
            }
        }
    }

    /// Rebuilds every execution the store says was running when this service last stopped:
    /// from its journal when its nodes got the plan, from the start otherwise. One that cannot be
    /// rebuilt is marked interrupted, never left running.
    pub async fn resume_all(self: &Arc<Self>) -> std::result::Result<(), StoreError> {
        for row in self.store.unfinished_executions()? {
            if let Err(why) = self.resume(&row).await {
                tracing::error!(execution = %row.id, "could not resume after a restart: {why}");
                let summary = json!({ "error": format!("could not resume after a restart: {why}") });
                self.store.finish_execution(&row.id, "interrupted", unix_ms(), None, &summary.to_string())?;
                *self.inner().ended.entry("interrupted".to_owned()).or_default() += 1;
                self.bus.publish(
                    "execution_finished",
                    Some(&row.id),
                    json!({ "state": "interrupted", "summary": summary }),
                );
            }
        }
        Ok(())
    }

    async fn resume(self: &Arc<Self>, row: &ExecutionRow) -> std::result::Result<(), String> {
        let request: Value = serde_json::from_str(&row.request).map_err(|e| e.to_string())?;
        let scenario = scenario_of(&request["scenario"])?;
        let Some(setup) = &row.setup else {
            // The nodes never got the plan: nothing ran; start it now, on the nodes it chose.
            let chosen: Option<Vec<String>> = serde_json::from_value(request["nodes"].clone()).ok();
            let nodes = self.pick(chosen.as_deref()).map_err(|e| e.message())?;
            return self.launch(&row.id, scenario, row.seed, &nodes).await.map_err(|e| e.message());
        };
        let setup: Setup = serde_json::from_str(setup).map_err(|e| e.to_string())?;
        let entries: Vec<Entry> = self
            .store
            .journal(&row.id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, text)| serde_json::from_str(&text).map_err(|e| format!("journal: {e}")))
            .collect::<std::result::Result<_, _>>()?;
        let nodes: Vec<String> = {
            let mut inner = self.inner();
            let mut nodes = Vec::new();
            for node in &setup.nodes {
                let id = inner.nodes.iter().find(|(_, n)| n.url == node.url).map(|(id, _)| id.clone());
                match id {
                    Some(id) => {
                        // Only what was a share: a node named by URL ran with all it has.
                        if node.shared {
                            inner.ledger.restore(&share_id(&row.id, &id), &id, &node.resources);
                        }
                        nodes.push(id);
                    }
                    None => nodes.push(node.url.clone()),
                }
            }
            nodes
        };
        let journal = JournalHandle(Arc::new(StoreJournal { store: self.store.clone(), id: row.id.clone() }));
        let urls = setup.nodes.iter().map(|n| n.url.clone()).collect();
        let mut config = SessionConfig::new(
            scenario.clone(),
            NodeSource::Remote { urls, token: self.config.node_token.clone(), tls: self.config.node_tls.clone() },
            row.seed,
        );
        config.tls = target_tls(&scenario);
        config.journal = Some(journal);
        config.id = Some(row.id.clone());
        let cancelled = entries.iter().any(|e| matches!(e, Entry::Cancel { .. }));
        let session = match Session::resume(config, setup, entries).await {
            Ok(session) => session,
            Err(e) => {
                self.inner().ledger.release_prefix(&share_prefix(&row.id));
                return Err(e.to_string());
            }
        };
        self.watch(session, scenario, nodes, true);
        // A cancel before the crash is in the journal: the execution ends cancelled, as asked.
        if cancelled && let Some(live) = self.inner().running.get_mut(&row.id) {
            live.cancelled = true;
        }
        Ok(())
    }

    /// `GET /v1/executions`.
    pub fn executions(&self, limit: usize, offset: usize) -> Result<Vec<ExecutionView>> {
        let rows = self.store.executions(limit, offset)?;
        let inner = self.inner();
        Ok(rows.iter().map(|row| execution_view(row, inner.running.get(&row.id))).collect())
    }

    /// `GET /v1/executions/{id}`.
    pub fn execution(&self, id: &str) -> Result<ExecutionView> {
        let row = self.store.execution(id)?.ok_or_else(|| Failure::NotFound(format!("no execution `{id}`")))?;
        let mut head = row.head();
        let inner = self.inner();
        if let Some(ended) = inner.unstored.get(id) {
            head.state = ended.state.clone();
            head.finished_ms = Some(ended.finished_ms);
            head.summary = Some(ended.summary.clone());
        }
        Ok(execution_view(&head, inner.running.get(id)))
    }

    /// `POST /v1/executions/{id}/cancel` and `POST /v1/load/{id}/stop`.
    pub fn cancel(&self, id: &str) -> Result<ExecutionView> {
        {
            let mut inner = self.inner();
            match inner.running.get_mut(id) {
                Some(live) => {
                    live.cancelled = true;
                    live.canceller.cancel();
                }
                None => {
                    drop(inner);
                    let view = self.execution(id)?;
                    return Err(Failure::Conflict(format!("execution `{id}` is {} already", view.state)));
                }
            }
        }
        self.execution(id)
    }

    /// `GET /v1/executions/{id}/report`: the report in `format` (`json`, `html`, `junit`).
    pub fn report(&self, id: &str, format: &str) -> Result<String> {
        let row = self.store.execution(id)?.ok_or_else(|| Failure::NotFound(format!("no execution `{id}`")))?;
        let waiting = self.inner().unstored.get(id).and_then(|e| e.report.clone());
        let artifacts = waiting
            .or(self.store.report(id)?)
            .ok_or_else(|| Failure::Conflict(format!("execution `{id}` is {}: it has no report yet", row.state)))?;
        let artifacts: Value = serde_json::from_str(&artifacts).map_err(|e| Failure::Node(e.to_string()))?;
        artifacts[format]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::Invalid(format!("format: `{format}` is not json, html or junit")))
    }

    /// `GET /v1/executions/{id}/metrics`.
    pub fn metrics(&self, id: &str) -> Result<Metrics> {
        let view = self.execution(id)?;
        let live = view.progress.as_ref().and_then(|p| p.load.clone());
        let report = match self.store.report(id)? {
            Some(artifacts) => serde_json::from_str::<Value>(&artifacts)
                .ok()
                .and_then(|a| a["json"].as_str().and_then(|j| serde_json::from_str::<Value>(j).ok())),
            None => None,
        };
        let (totals, series) = match report {
            Some(report) => {
                let totals = json!({
                    "requests": report["requests"], "errors": report["errors"], "rps": report["rps"],
                    "duration_s": report["duration_s"], "latency_ms": report["latency_ms"],
                    "latency_uncorrected_ms": report["latency_uncorrected_ms"],
                });
                let series = report["series"].as_array().cloned().unwrap_or_default();
                (Some(totals), series)
            }
            None => (None, Vec::new()),
        };
        Ok(Metrics { id: id.to_owned(), state: view.state, live, totals, series })
    }

    // ---- profiles ---------------------------------------------------------------------------

    /// `PUT /v1/load/profiles/{name}`: the pattern is checked by the scenario parser's own rules.
    pub fn put_profile(&self, name: &str, profile: Profile) -> Result<()> {
        check_name("name", name)?;
        let probe = json!({
            "name": "profile", "description": "a profile's pattern, checked", "duration_s": 3600,
            "cluster": { "groups": [ { "name": "g", "count": 1 } ] },
            "targets": { "t": { "url": "http://127.0.0.1:1/" } },
            "workload": { "tasks": [ { "name": "load", "count": 1, "kind": "load",
                                       "load": { "target": "t", "pattern": profile.pattern } } ] }
        });
        scenario_of(&probe).map_err(|e| Failure::Invalid(e.replace("workload.tasks[0].load.pattern", "pattern")))?;
        if self.store.profile(name)?.is_none() && self.store.profiles()?.len() >= PROFILES_MAX {
            return Err(Failure::Conflict(format!("{PROFILES_MAX} profiles are kept already")));
        }
        self.store.put_profile(name, &serde_json::to_string(&profile).unwrap_or_default())?;
        Ok(())
    }

    /// `GET /v1/load/profiles`.
    pub fn profiles(&self) -> Result<Vec<NamedProfile>> {
        Ok(self
            .store
            .profiles()?
            .into_iter()
            .filter_map(|(name, body)| Some(NamedProfile { name, profile: serde_json::from_str(&body).ok()? }))
            .collect())
    }

    // ---- alerts -----------------------------------------------------------------------------

    /// `PUT /v1/alerts/rules`: replaces the rules (and forgets what the old ones were doing).
    pub fn put_rules(&self, rules: AlertRules) -> Result<()> {
        let alerts = alerts_of(&rules).map_err(Failure::Invalid)?;
        self.store.put_setting("alert_rules", &serde_json::to_string(&rules).unwrap_or_default())?;
        let mut inner = self.inner();
        inner.alerts = alerts;
        inner.rules = rules;
        Ok(())
    }

    /// `GET /v1/alerts`.
    pub fn alerts(&self) -> AlertsView {
        let inner = self.inner();
        AlertsView { firing: firing(&inner), history: inner.alert_history.iter().cloned().collect() }
    }

    /// `GET /v1/alerts/rules`.
    pub fn rules(&self) -> AlertRules {
        self.inner().rules.clone()
    }

    /// `POST /v1/alerts/{id}/ack`.
    pub fn acknowledge(&self, id: u64) -> Result<()> {
        let now = self.now();
        let mut inner = self.inner();
        inner.alerts.acknowledge(id, now).map_err(|e| Failure::NotFound(format!("alert {id}: {e:?}")))?;
        if let Some(last) = inner.alert_history.iter().rev().find(|a| a.id == id).cloned() {
            inner.remember(AlertView {
                state: "acknowledged".to_owned(),
                at_ms: unix_ms(),
                acknowledged: true,
                ..last
            });
        }
        Ok(())
    }

    // ---- resources --------------------------------------------------------------------------

    /// `POST /v1/allocations`: a reservation in the ledger, on the asked node or where it fits
    /// best (the least left free).
    pub fn allocate(&self, request: Allocate) -> Result<Allocation> {
        let mut inner = self.inner();
        if inner.allocations.len() >= ALLOCATIONS_MAX {
            return Err(Failure::Conflict(format!("{ALLOCATIONS_MAX} allocations are held already")));
        }
        inner.next_allocation += 1;
        let id = format!("alloc-{}-{}", unix_ms(), inner.next_allocation);
        let node = match &request.node {
            Some(node) => node.clone(),
            None => {
                let fits = inner
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.health.state() != HealthState::Dead)
                    .filter_map(|(id, _)| Some((id.clone(), inner.ledger.free(id)?)))
                    .filter(|(_, free)| free.covers(&request.resources))
                    .min_by_key(|(_, free)| (free.cpu_millis - request.resources.cpu_millis, free.memory_mb));
                match fits {
                    Some((node, _)) => node,
                    None => return Err(Failure::Conflict("no node has that much free".to_owned())),
                }
            }
        };
        inner.ledger.reserve(&id, &node, &request.resources).map_err(|e| match e {
            dtest_core::placement::ledger::Refusal::UnknownNode(_) => Failure::NotFound(e.to_string()),
            _ => Failure::Conflict(e.to_string()),
        })?;
        let allocation = Allocation { id: id.clone(), node, resources: request.resources, holder: request.holder };
        if let Err(e) = self.store.put_allocation(&id, &serde_json::to_string(&allocation).unwrap_or_default()) {
            inner.ledger.release(&id);
            return Err(e.into());
        }
        inner.allocations.insert(id, allocation.clone());
        Ok(allocation)
    }

    /// `DELETE /v1/allocations/{id}`.
    pub fn deallocate(&self, id: &str) -> Result<()> {
        let mut inner = self.inner();
        if !inner.allocations.contains_key(id) {
            return Err(Failure::NotFound(format!("no allocation `{id}`")));
        }
        self.store.delete_allocation(id)?;
        inner.allocations.remove(id);
        inner.ledger.release(id);
        Ok(())
    }

    /// `GET /v1/utilization`.
    pub fn utilization(&self) -> UtilizationView {
        let inner = self.inner();
        let nodes = inner
            .nodes
            .keys()
            .map(|id| {
                let capacity = inner.ledger.capacity(id).cloned().unwrap_or_default();
                let reserved = inner.ledger.reserved(id);
                let free = inner.ledger.free(id).unwrap_or_default();
                let cpu_share = if capacity.cpu_millis == 0 {
                    0.0
                } else {
                    reserved.cpu_millis as f64 / capacity.cpu_millis as f64
                };
                NodeUtilization { node: id.clone(), capacity, reserved, free, cpu_share }
            })
            .collect();
        let reservations = inner
            .ledger
            .reservations()
            .map(|(id, node, resources)| Allocation {
                id: id.to_owned(),
                node: node.to_owned(),
                resources: resources.clone(),
                holder: inner.allocations.get(id).and_then(|a| a.holder.clone()).or_else(|| {
                    id.strip_prefix("exec:").and_then(|rest| rest.split('/').next()).map(|e| format!("execution {e}"))
                }),
            })
            .collect();
        UtilizationView { nodes, reservations }
    }

    // ---- messages ---------------------------------------------------------------------------

    /// `POST /v1/messages`: to one node, with the mode's guarantee: `fire_and_forget` is sent
    /// once; the others are resent until the node takes them (up to five sends), and
    /// `exactly_once` carries an id the node delivers once.
    pub async fn send_message(&self, request: SendMessage) -> Result<Delivery> {
        let id = match request.id {
            Some(id) => {
                check_name("id", &id)?;
                id
            }
            None => fresh_message_id(),
        };
        let mode = request.mode.map_or(DeliveryMode::ExactlyOnce, DeliveryMode::from);
        let client = self
            .inner()
            .nodes
            .get(&request.node)
            .map(|n| n.client.clone())
            .ok_or_else(|| Failure::NotFound(format!("no node `{}`", request.node)))?;
        check_body(&request.body)?;
        Ok(deliver(client, request.node, id, mode, request.body).await)
    }

    /// `POST /v1/messages/broadcast`: to every node, at once.
    pub async fn broadcast(&self, request: Broadcast) -> Result<BroadcastResult> {
        check_body(&request.body)?;
        let id = fresh_message_id();
        let mode = request.mode.map_or(DeliveryMode::ExactlyOnce, DeliveryMode::from);
        let nodes: Vec<(String, NodeClient)> =
            self.inner().nodes.iter().map(|(id, n)| (id.clone(), n.client.clone())).collect();
        let deliveries = futures::future::join_all(
            nodes.into_iter().map(|(node, client)| deliver(client, node, id.clone(), mode, request.body.clone())),
        )
        .await;
        Ok(BroadcastResult { id, deliveries })
    }
}

/// Sends one message to one node, resending reliable ones with backoff.
async fn deliver(client: NodeClient, node: String, id: String, mode: DeliveryMode, body: Value) -> Delivery {
    let message = dtest_node::api::NodeMessage { id: id.clone(), from: "dtest-serve".to_owned(), mode, body };
    let attempts_max = if mode == DeliveryMode::FireAndForget { 1 } else { MESSAGE_ATTEMPTS };
    let mut error = None;
    for attempt in 1..=attempts_max {
        match client.send_message(&message).await {
            Ok(receipt) => {
                return Delivery {
                    id,
                    node,
                    delivered: true,
                    duplicate: receipt.duplicate,
                    delivered_to: receipt.delivered_to,
                    attempts: attempt,
                    error: None,
                };
            }
            // The node refused it (a full inbox, a bad body): resending would not help.
            Err(dtest_node::client::ClientError::Refused(status, why)) if status < 500 => {
                error = Some(format!("refused ({status}): {why}"));
                return Delivery {
                    id,
                    node,
                    delivered: false,
                    duplicate: false,
                    delivered_to: 0,
                    attempts: attempt,
                    error,
                };
            }
            Err(e) => error = Some(e.to_string()),
        }
        if attempt < attempts_max {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }
    Delivery { id, node, delivered: false, duplicate: false, delivered_to: 0, attempts: attempts_max, error }
}

/// A scenario given as JSON, checked by the scenario parser; its complaints, one after another.
fn scenario_of(json: &Value) -> std::result::Result<Scenario, String> {
    dtest_core::scenario::parse(json.to_string().as_bytes()).map_err(|diagnostics| {
        let all: Vec<String> = diagnostics.iter().map(|d| d.display_in("scenario").to_string()).collect();
        all.join("; ")
    })
}

fn check_body(body: &Value) -> Result<()> {
    if serde_json::to_vec(body).map_or(0, |b| b.len()) > dtest_node::api::MESSAGE_BODY_MAX {
        return Err(Failure::Invalid(format!("body: over {} bytes", dtest_node::api::MESSAGE_BODY_MAX)));
    }
    Ok(())
}

fn fresh_message_id() -> String {
    dtest_orchestrator::session::fresh_id("msg").unwrap_or_else(|_| format!("msg-{}", unix_ms()))
}

/// Names: 1 to 128 characters of letters, digits, `-`, `_`, `.` and `:`.
fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok { Ok(()) } else { Err(Failure::Invalid(format!("{field}: 1 to 128 of [A-Za-z0-9-_.:]"))) }
}

fn share_prefix(execution: &str) -> String {
    format!("exec:{execution}/")
}

fn share_id(execution: &str, node: &str) -> String {
    format!("exec:{execution}/{node}")
}

fn state_name(state: HealthState) -> &'static str {
    match state {
        HealthState::Healthy => "healthy",
        HealthState::Degraded => "degraded",
        HealthState::Unhealthy => "unhealthy",
        HealthState::Dead => "dead",
    }
}

fn view_of(inner: &Inner, id: &str, now: u64) -> Option<NodeView> {
    let node = inner.nodes.get(id)?;
    let phi = node.health.detector().phi(now);
    Some(NodeView {
        id: id.to_owned(),
        url: node.url.clone(),
        state: state_name(node.health.state()).to_owned(),
        phi: if phi.is_finite() { phi } else { f64::MAX },
        score: node.health.score(),
        group: node.info.group.clone(),
        region: node.info.region.clone(),
        zone: node.info.zone.clone(),
        capabilities: node.info.capabilities.clone(),
        labels: node.labels.clone(),
        resources: node.info.resources.clone(),
        reserved: inner.ledger.reserved(id),
        allow_commands: node.info.allow_commands,
        registered_ms: node.registered_ms,
        last_seen_ms: node.last_seen_ms,
    })
}

fn cluster_figures(inner: &Inner) -> (u8, u64) {
    let healths: Vec<&NodeHealth> = inner.nodes.values().map(|n| &n.health).collect();
    let dead = healths.iter().filter(|h| h.state() == HealthState::Dead).count() as u64;
    let health = if healths.is_empty() {
        100
    } else {
        (healths.iter().map(|h| u64::from(h.score())).sum::<u64>() / healths.len() as u64) as u8
    };
    (health, dead)
}

fn firing(inner: &Inner) -> Vec<AlertView> {
    inner
        .alerts
        .firing()
        .into_iter()
        .map(|(id, rule, subject, severity, acknowledged)| AlertView {
            id,
            rule: rule.to_owned(),
            subject: subject.to_owned(),
            severity: severity.name().to_owned(),
            state: "firing".to_owned(),
            at_ms: inner.alert_history.iter().rev().find(|a| a.id == id).map_or(0, |a| a.at_ms),
            value: inner.alert_history.iter().rev().find(|a| a.id == id).map_or(0.0, |a| a.value),
            acknowledged,
        })
        .collect()
}

fn alert_view(event: &dtest_core::health::alerts::AlertEvent, at_ms: u64, acknowledged: bool) -> AlertView {
    AlertView {
        id: event.id,
        rule: event.rule.clone(),
        subject: event.subject.clone(),
        severity: event.severity.name().to_owned(),
        state: match event.transition {
            Transition::Fired => "fired",
            Transition::Resolved => "resolved",
            Transition::Acknowledged => "acknowledged",
        }
        .to_owned(),
        at_ms,
        value: event.value,
        acknowledged,
    }
}

/// The core's alert evaluator for `rules`, each checked.
fn alerts_of(rules: &AlertRules) -> std::result::Result<Alerts, String> {
    const METRICS: [&str; 5] = ["score", "phi", "round_trip_ms", "health", "nodes_dead"];
    if rules.rules.len() > 100 {
        return Err("rules: at most 100".to_owned());
    }
    let mut alerts = Alerts::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        if rule.name.is_empty() || rule.name.len() > 128 {
            return Err(format!("{}: 1 to 128 characters", field("name")));
        }
        if !METRICS.contains(&rule.metric.as_str()) {
            return Err(format!("{}: expected one of {}", field("metric"), METRICS.join(", ")));
        }
        let comparison = Comparison::ALL
            .into_iter()
            .find(|c| c.symbol() == rule.comparison)
            .ok_or_else(|| format!("{}: expected >, >=, < or <=", field("comparison")))?;
        if !rule.threshold.is_finite() {
            return Err(format!("{}: expected a finite number", field("threshold")));
        }
        if !(0.0..=86_400.0).contains(&rule.for_s) {
            return Err(format!("{}: expected 0 to 86400 seconds", field("for_s")));
        }
        let severity = match rule.severity.as_deref() {
            None => Severity::Warning,
            Some(name) => Severity::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| format!("{}: expected info, warning or critical", field("severity")))?,
        };
        alerts
            .add_rule(AlertRule {
                name: rule.name.clone(),
                metric: rule.metric.clone(),
                comparison,
                threshold: rule.threshold,
                for_ms: (rule.for_s * 1e3) as u64,
                severity,
            })
            .map_err(|e| format!("{}: {e:?}", field("name")))?;
    }
    Ok(alerts)
}

fn summary_of(report: &Report) -> Value {
    json!({
        "passed": report.passed(),
        "interrupted": report.interrupted,
        "tasks": report.tasks,
        "reassignments": report.reassignments,
        "violations": report.violations.len(),
        "requests": report.requests,
        "rps": report.rps,
    })
}

fn execution_view(row: &ExecutionHead, live: Option<&Live>) -> ExecutionView {
    ExecutionView {
        id: row.id.clone(),
        name: row.name.clone(),
        kind: row.kind.as_str().to_owned(),
        state: if live.is_some() && row.state == "pending" { "running".to_owned() } else { row.state.clone() },
        created_ms: row.created_ms,
        started_ms: row.started_ms,
        finished_ms: row.finished_ms,
        seed: row.seed,
        progress: live.map(|l| l.progress.clone()),
        summary: row.summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
    }
}

/// Each target's TLS settings as a submitted scenario may give them: `insecure` only (a
/// `ca_file` is refused at submission).
fn target_tls(scenario: &Scenario) -> Vec<dtest_node::tls::TlsOptions> {
    scenario.targets.iter().map(|t| dtest_node::tls::TlsOptions { ca_pem: None, insecure: t.tls.insecure }).collect()
}

/// A session's journal in the store.
struct StoreJournal {
    store: Arc<Store>,
    id: String,
}

impl Journal for StoreJournal {
    fn setup(&self, setup: &Setup) -> std::result::Result<(), String> {
        let text = serde_json::to_string(setup).map_err(|e| e.to_string())?;
        self.store.set_execution_started(&self.id, unix_ms(), &text).map_err(|e| e.to_string())?;
        self.store.set_execution_state(&self.id, "running").map_err(|e| e.to_string())
    }

    fn record(&self, seq: u64, entry: &Entry) -> std::result::Result<(), String> {
        let text = serde_json::to_string(entry).map_err(|e| e.to_string())?;
        self.store.append_journal(&self.id, seq, &text).map_err(|e| e.to_string())
    }
}
