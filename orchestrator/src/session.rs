//! A session: one execution of a scenario on real node daemons, from the first `info` to the
//! report, driving the core's [`Run`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtest_core::faults::Link;
use dtest_core::placement::NodeIdx;
use dtest_core::protocol::{Frame, ToAgent};
use dtest_core::report::{Mode, Report};
use dtest_core::run::{
    Action, Cluster, LEAVE_GRACE_MS, LiveFigures, NodeOffer, Run, RunEvent, RunOptions, SAMPLE_INTERVAL_MS,
    reply_bytes_max,
};
use dtest_core::scenario::{FaultKind, GroupId, NodeRef, Resources, Scenario, Work};
use dtest_node::api::{Faults, NodeInfo, Plan, PlanEntry, PlanWork};
use dtest_node::client::NodeClient;
use dtest_node::load::{LoadSpec, Rate};
use dtest_node::secret::Secret;
use dtest_node::secure::ClientTls;
use dtest_node::tls::TlsOptions;
use tokio::sync::{mpsc, watch};

use crate::journal::{Entry, JournalHandle, Setup, SetupNode};
use crate::local::{self, LocalNode, TempDir};
use crate::transport::{Carrier, Input, poll_node, push_faults, send_to_node};

/// Live events a consumer may fall behind by before the oldest are dropped (a live view's, not
/// the report's: the report does not depend on them).
const EVENTS_BUFFER: usize = 4_096;
/// Inputs from the nodes' carriers queued for the run at most; a carrier waits for room (its
/// node's next frames wait on the node meanwhile).
const INPUTS_MAX: usize = 1_024;
/// Frames queued for one node's carrier at most; past it, frames are lost as on a congested
/// network and the protocol resends what must arrive.
const OUTGOING_MAX: usize = 4_096;
/// While the journal refuses inputs, how often the run tries again.
const JOURNAL_RETRY: Duration = Duration::from_millis(250);
/// How long a node has to answer `info` at the start.
const INFO_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a session's nodes come from.
#[derive(Clone, Debug)]
pub enum NodeSource {
    /// Start this many local daemons (loopback, free ports, a fresh token).
    Local(u32),
    /// Running daemons at these URLs, with their token.
    Remote {
        /// `http://host:port` each.
        urls: Vec<String>,
        /// The nodes' token.
        token: Secret,
        /// Whom to trust as the nodes (`https://` URLs), and the certificate to present.
        tls: ClientTls,
    },
}

/// What a session runs.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The scenario, validated, with its targets' URLs as they should be used.
    pub scenario: Scenario,
    /// Each target's TLS settings, in the scenario's target order (see [`tls_options`]).
    pub tls: Vec<TlsOptions>,
    /// The nodes.
    pub nodes: NodeSource,
    /// The seed of the orchestrator's own choices.
    pub seed: u64,
    /// The `dtest` binary local nodes run; this process's own executable when `None`.
    pub node_exe: Option<PathBuf>,
    /// What each remote node offers this session, in `urls` order, instead of all it has
    /// (`None`, or no entry: all it has): a service that shares its nodes between executions
    /// gives each its share.
    pub shares: Vec<Option<Resources>>,
    /// Where the session records its setup and every input before acting on it, so that the
    /// run survives the crash of the process hosting it ([`Session::resume`]).
    pub journal: Option<JournalHandle>,
    /// The execution id, which names the plan on the nodes; drawn at start when `None` (a
    /// service names an execution before it starts it).
    pub id: Option<String>,
}

impl SessionConfig {
    /// A session of `scenario` on `nodes`, with no target TLS, no shares and no journal.
    pub fn new(scenario: Scenario, nodes: NodeSource, seed: u64) -> SessionConfig {
        SessionConfig {
            scenario,
            tls: Vec::new(),
            nodes,
            seed,
            node_exe: None,
            shares: Vec::new(),
            journal: None,
            id: None,
        }
    }
}

/// The run's clock: milliseconds since the run's start, resumable after a restart.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    offset_ms: u64,
}

impl Clock {
    /// A clock that reads `offset_ms` now.
    fn starting_at(offset_ms: u64) -> Clock {
        Clock { origin: Instant::now(), offset_ms }
    }

    /// Run milliseconds now.
    pub fn now_ms(self) -> u64 {
        self.offset_ms + self.origin.elapsed().as_millis() as u64
    }

    /// The instant the clock reads `ms` (now, for times already past).
    fn instant(self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms.saturating_sub(self.offset_ms))
    }
}

/// Why a session could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The scenario lacks what a real run needs.
    #[error("{0}")]
    NotRunnable(String),
    /// Nodes did not answer at the start.
    #[error("unreachable nodes at start: {}", .0.join(", "))]
    Unreachable(Vec<String>),
    /// A node cannot run what the scenario asks.
    #[error("node {node} ({url}): {why}")]
    Node {
        /// Its name.
        node: String,
        /// Its URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A local daemon could not be started.
    #[error("local node {node}: {why}")]
    LocalNode {
        /// Its name.
        node: String,
        /// Why.
        why: String,
    },
    /// The nodes do not fit the scenario.
    #[error("{0}")]
    Cluster(#[from] dtest_core::run::RunError),
    /// The machine refused something (a temporary directory, a token).
    #[error("{0}")]
    Io(String),
    /// The session's task ended without a report (it panicked or was aborted).
    #[error("the session ended without a report: {0}")]
    Lost(String),
    /// The journal could not record the setup.
    #[error("cannot record the execution: {0}")]
    Journal(String),
    /// A journaled session cannot be rebuilt.
    #[error("cannot resume: {0}")]
    NotResumable(String),
}

/// A live event of a session.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// Something happened in the run, at `at_ms` from its start.
    Run {
        /// When.
        at_ms: u64,
        /// What.
        event: RunEvent,
    },
    /// Where the run stands, once a second.
    Progress(Progress),
    /// Something went wrong that the run survives (a local node that could not restart).
    Warning(String),
}

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Milliseconds since the start.
    pub at_ms: u64,
    /// Tasks ended.
    pub tasks_ended: u64,
    /// Tasks.
    pub tasks: u64,
    /// Nodes up in the orchestrator's eyes.
    pub nodes_up: u64,
    /// Nodes.
    pub nodes: u64,
    /// The load's live figures, when the scenario has load.
    pub load: Option<LiveFigures>,
    /// The run was cancelled and is winding down.
    pub cancelling: bool,
}

/// Cancels a session from anywhere (a signal handler, another task, a REST call).
#[derive(Clone, Debug)]
pub struct Canceller(Arc<watch::Sender<bool>>);

impl Canceller {
    /// Asks the session to stop: its leased work is cancelled on every node, loads hand back
    /// what they measured, and the report is marked interrupted.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

/// A running execution of a scenario.
pub struct Session {
    id: String,
    names: Vec<String>,
    events: mpsc::Receiver<SessionEvent>,
    canceller: Canceller,
    /// The run's task; taken by [`Session::finish`].
    task: Option<tokio::task::JoinHandle<Report>>,
}

impl Drop for Session {
    /// A session nobody holds any more is cancelled: its work does not run on unwatched.
    fn drop(&mut self) {
        if self.task.is_some() {
            self.canceller.cancel();
        }
    }
}

impl Session {
    /// Starts the nodes (or checks the given ones), sends them the plan, and starts the run.
    pub async fn start(config: SessionConfig) -> Result<Session, SessionError> {
        let SessionConfig { scenario, tls, nodes, seed, node_exe, shares, journal, id } = config;
        runnable(&scenario, &tls, matches!(nodes, NodeSource::Local(_)))?;
        let id = match id {
            Some(id) => id,
            None => fresh_id(&scenario.name).map_err(SessionError::Io)?,
        };
        let dir = TempDir::new("dtest-run").map_err(|e| SessionError::Io(format!("a temporary directory: {e}")))?;
        let heartbeat_ms = scenario.failure_detector.heartbeat_interval_ms;
        let (token_file, token, urls, locals, node_tls) = match nodes {
            NodeSource::Local(n) => {
                let token = local::fresh_token().map_err(|e| SessionError::Io(format!("cannot draw a token: {e}")))?;
                let token_file = dir.0.join("token");
                local::write_private(&token_file, &token)
                    .map_err(|e| SessionError::Io(format!("cannot write {}: {e}", token_file.display())))?;
                let started = futures::future::join_all(local::identities(&scenario, n).into_iter().map(|identity| {
                    let log = dir.0.join(format!("{}.log", identity.name));
                    LocalNode::start(identity, log, node_exe.clone(), &token_file, heartbeat_ms)
                }))
                .await;
                let locals = started.into_iter().collect::<Result<Vec<_>, _>>()?;
                let urls = locals.iter().map(LocalNode::url).collect();
                (Some(token_file), Secret::new(token), urls, locals, ClientTls::default())
            }
            NodeSource::Remote { urls, token, tls } => {
                let urls: Vec<String> = urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
                if urls.is_empty() {
                    return Err(SessionError::NotRunnable("no node named".to_owned()));
                }
                (None, token, urls, Vec::new(), tls)
            }
        };

        // Every node must answer before anything starts; name all that do not. What the run asks
        // of them bounds what they may send back.
        let reply_max = reply_bytes_max(&scenario);
        let clients: Vec<NodeClient> =
            urls.iter().map(|u| NodeClient::new(u, &token, &node_tls).with_reply_bytes_max(reply_max)).collect();
        let infos = futures::future::join_all(clients.iter().map(|c| c.info(INFO_TIMEOUT))).await;
        let mut unreachable = Vec::new();
        let mut offers = Vec::new();
        let mut per_group: BTreeMap<String, u32> = BTreeMap::new();
        for (i, (client, info)) in clients.iter().zip(infos).enumerate() {
            match info {
                Err(e) => unreachable.push(format!("{} ({e})", client.url())),
                Ok(info) => {
                    let (name, node_ref) = match locals.get(i) {
                        Some(local) => (local.identity.name.clone(), local.identity.node_ref),
                        None => identify(&scenario, &info, i, &mut per_group),
                    };
                    let commands = scenario.workload.tasks.iter().any(|t| matches!(t.work, Work::Command { .. }));
                    if commands && !info.allow_commands {
                        return Err(SessionError::Node {
                            node: name,
                            url: client.url().to_owned(),
                            why: "runs no commands; start it with --allow-commands".to_owned(),
                        });
                    }
                    let mut offer = offer(name, node_ref, info);
                    if let Some(Some(share)) = shares.get(i) {
                        offer.resources = share.clone();
                    }
                    offers.push(offer);
                }
            }
        }
        if !unreachable.is_empty() {
            return Err(SessionError::Unreachable(unreachable));
        }
        let cluster = Cluster::of_nodes(&scenario, &offers)?;
        let options = RunOptions { mode: Mode::Run, seed, events: true, ..RunOptions::default() };
        let run = Run::new(&scenario, cluster, options)?;
        if let Some(journal) = &journal {
            let nodes = urls
                .iter()
                .zip(&offers)
                .enumerate()
                .map(|(i, (url, offer))| SetupNode::of(url, offer, matches!(shares.get(i), Some(Some(_)))))
                .collect();
            journal.0.setup(&Setup { id: id.clone(), nodes }).map_err(SessionError::Journal)?;
        }
        let plan = Arc::new(plan(&id, &scenario, &tls, seed));
        // The run's clock starts as the nodes get the plan: loads' `start_s` count from here.
        let clock = Clock::starting_at(0);
        let answers = futures::future::join_all(clients.iter().map(|c| c.put_plan(&plan))).await;
        for ((client, offer), answer) in clients.iter().zip(&offers).zip(answers) {
            if let Err(e) = answer {
                // The nodes that took the plan hold it for nothing: best effort, let them go.
                let _ = futures::future::join_all(clients.iter().map(|c| c.end_plan(&plan.id))).await;
                return Err(SessionError::Node {
                    node: offer.name.clone(),
                    url: client.url().to_owned(),
                    why: format!("refused the plan: {e}"),
                });
            }
        }
        let names = offers.iter().map(|o| o.name.clone()).collect();
        let driver = Driver {
            run,
            clients,
            locals,
            token_file,
            heartbeat_ms,
            plan,
            clock,
            journal: journal.map(|j| (j, 0)),
            journal_failing: false,
            events: mpsc::channel(1).0,
            events_dropped: 0,
            names: Vec::new(),
            attempts: BTreeMap::new(),
            _dir: Some(dir),
        };
        Ok(Session::spawn(id, names, driver, Vec::new()))
    }

    /// Rebuilds a journaled session after the process that hosted it died, from its setup and
    /// journal, and goes on with it on the same nodes (which kept its plan, its leased work and
    /// their results). `config` is the one it started with; only remote nodes can be resumed.
    pub async fn resume(config: SessionConfig, setup: Setup, entries: Vec<Entry>) -> Result<Session, SessionError> {
        let SessionConfig { scenario, tls, nodes, seed, journal, .. } = config;
        let NodeSource::Remote { token, tls: node_tls, .. } = nodes else {
            return Err(SessionError::NotResumable(
                "its local nodes ended with the process that started them".to_owned(),
            ));
        };
        let offers: Vec<NodeOffer> = setup.nodes.iter().map(SetupNode::offer).collect();
        let cluster = Cluster::of_nodes(&scenario, &offers)?;
        let options = RunOptions { mode: Mode::Run, seed, events: true, ..RunOptions::default() };
        let mut run = Run::new(&scenario, cluster, options)?;
        let replayed = crate::journal::replay(&mut run, offers.len(), &entries);
        let reply_max = reply_bytes_max(&scenario);
        let clients = setup
            .nodes
            .iter()
            .map(|n| NodeClient::new(&n.url, &token, &node_tls).with_reply_bytes_max(reply_max))
            .collect();
        let dir = None;
        let driver = Driver {
            run,
            clients,
            locals: Vec::new(),
            token_file: None,
            heartbeat_ms: scenario.failure_detector.heartbeat_interval_ms,
            plan: Arc::new(plan(&setup.id, &scenario, &tls, seed)),
            clock: Clock::starting_at(replayed.now_ms),
            journal: journal.map(|j| (j, entries.len() as u64)),
            journal_failing: false,
            events: mpsc::channel(1).0,
            events_dropped: 0,
            names: Vec::new(),
            attempts: BTreeMap::new(),
            _dir: dir,
        };
        let names = offers.iter().map(|o| o.name.clone()).collect();
        Ok(Session::spawn(setup.id, names, driver, replayed.links))
    }

    fn spawn(id: String, names: Vec<String>, mut driver: Driver, links: Vec<Option<Link>>) -> Session {
        let (events_tx, events) = mpsc::channel(EVENTS_BUFFER);
        driver.events = events_tx;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        driver.names = names.clone();
        // Every line logged about the run carries its id, as a field of this span.
        let span = tracing::info_span!("execution", execution = %id);
        let task = tokio::spawn(tracing::Instrument::instrument(driver.drive(cancel_rx, links), span));
        Session { id, names, events, canceller: Canceller(Arc::new(cancel_tx)), task: Some(task) }
    }

    /// The execution id: the scenario's name and 64 random bits, unique across processes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The nodes' names, by the index live events use.
    pub fn node_names(&self) -> &[String] {
        &self.names
    }

    /// A handle that cancels this session.
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// Cancels the session (see [`Canceller::cancel`]).
    pub fn cancel(&self) {
        self.canceller.cancel();
    }

    /// The next live event; `None` once the run is over and every event was read.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Abandons the run to its nodes: stops this session's task at once, cancelling nothing, as
    /// the death of the process hosting it would. The nodes keep the plan, their leased work and
    /// its results, which [`Session::resume`] picks up from the journal.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Waits for the end of the run and returns its report.
    pub async fn finish(mut self) -> Result<Report, SessionError> {
        let task = self.task.take().ok_or_else(|| SessionError::Lost("finished already".to_owned()))?;
        task.await.map_err(|e| SessionError::Lost(e.to_string()))
    }
}

/// A fresh execution id: the scenario's name and 64 random bits, unique across processes.
pub fn fresh_id(name: &str) -> Result<String, String> {
    let random = local::fresh_token().map_err(|e| format!("cannot draw an id: {e}"))?;
    Ok(format!("{name}-{}", &random[..16]))
}

/// What `run` needs that `sim` does not, checked before anything starts.
fn runnable(scenario: &Scenario, tls: &[TlsOptions], local: bool) -> Result<(), SessionError> {
    let bad = |why: String| Err(SessionError::NotRunnable(why));
    for task in &scenario.workload.tasks {
        match &task.work {
            Work::Command { command: None, .. } => {
                return bad(format!("task `{}` has no `command`: `dtest run` needs the real one to run", task.name));
            }
            Work::Load(load) => {
                let target = &scenario.targets[load.target.0 as usize];
                let Some(url) = &target.url else {
                    return bad(format!(
                        "target `{}` has no `url`: `dtest run` needs one to send load to (or --target {}=URL)",
                        target.name, target.name
                    ));
                };
                let tls = tls.get(load.target.0 as usize).cloned().unwrap_or_default();
                let spec = load_spec(load, url, &tls, 0);
                if let Err(e) = dtest_node::load::check(&spec) {
                    return bad(format!("task `{}`: {e}", task.name));
                }
            }
            Work::Command { .. } => {}
        }
    }
    if !local && scenario.faults.iter().any(|f| matches!(f.kind, FaultKind::Kill { .. } | FaultKind::Pause { .. })) {
        return bad("kill and pause faults need `--local`: dtest can only signal node processes it started".to_owned());
    }
    Ok(())
}

/// Each target's TLS settings, with its `ca_file` (relative to `dir`, the scenario file's
/// directory) read: the nodes get the certificates, not a path that only exists here.
pub fn tls_options(scenario: &Scenario, dir: &Path) -> Result<Vec<TlsOptions>, String> {
    let options = scenario.targets.iter().map(|t| {
        let ca_pem = match &t.tls.ca_file {
            None => None,
            Some(ca) => {
                let path: PathBuf = dir.join(ca);
                Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("targets.{}.tls.ca_file: cannot read {}: {e}", t.name, path.display()))?,
                )
            }
        };
        Ok(TlsOptions { ca_pem, insecure: t.tls.insecure })
    });
    options.collect()
}

/// What a node needs to run a load task: the whole task's pattern; each node takes its
/// instance's share of the arrivals.
fn load_spec(load: &dtest_core::scenario::Load, url: &str, tls: &TlsOptions, seed: u64) -> LoadSpec {
    LoadSpec {
        url: url.to_owned(),
        method: load.method,
        headers: load.headers.clone(),
        body: load.body.clone(),
        timeout_ms: load.timeout_ms,
        connections: load.connections,
        http_version: load.http_version,
        tls: tls.clone(),
        start_ms: load.start_ms,
        rate: Rate::Pattern {
            pattern: load.pattern.clone(),
            // The simulator's seed for the same pattern, so `random` draws the same rates.
            seed: seed ^ u64::from(load.target.0),
            index: 0,
            of: 1,
        },
    }
}

/// The run's tasks as the nodes run them; an assignment's `work` is a task's number.
fn plan(id: &str, scenario: &Scenario, tls: &[TlsOptions], seed: u64) -> Plan {
    let entries = scenario.workload.tasks.iter().map(|t| PlanEntry {
        name: t.name.clone(),
        count: t.count,
        work: match &t.work {
            Work::Command { command, .. } => {
                let c = command.as_ref().expect("checked by runnable(): real runs have commands");
                PlanWork::Command { argv: c.argv.clone(), env: c.env.clone(), cwd: c.cwd.clone() }
            }
            Work::Load(load) => {
                let url = scenario.targets[load.target.0 as usize].url.as_deref().unwrap_or_default();
                let tls = tls.get(load.target.0 as usize).cloned().unwrap_or_default();
                PlanWork::Load(load_spec(load, url, &tls, seed))
            }
        },
    });
    Plan { id: id.to_owned(), entries: entries.collect(), elapsed_ms: 0 }
}

/// A node as placement sees it.
fn offer(name: String, node_ref: NodeRef, info: NodeInfo) -> NodeOffer {
    NodeOffer {
        name,
        node_ref,
        resources: info.resources,
        capabilities: info.capabilities,
        region: info.region,
        zone: info.zone,
    }
}

/// The name and scenario node of a node found at `--nodes` position `i`.
fn identify(
    scenario: &Scenario,
    info: &NodeInfo,
    i: usize,
    per_group: &mut BTreeMap<String, u32>,
) -> (String, NodeRef) {
    match info.group.as_deref().and_then(|g| scenario.groups.iter().position(|s| s.name == g)) {
        Some(g) => {
            let index = per_group.entry(scenario.groups[g].name.clone()).or_insert(0);
            *index += 1;
            (format!("{}-{}", scenario.groups[g].name, index), NodeRef { group: GroupId(g as u32), index: *index })
        }
        // Not a scenario group: no fault can name it.
        None => (format!("node-{}", i + 1), NodeRef { group: GroupId(u32::MAX), index: i as u32 + 1 }),
    }
}

/// The session's task: the run, its nodes and its clock.
struct Driver {
    run: Run,
    clients: Vec<NodeClient>,
    locals: Vec<LocalNode>,
    token_file: Option<PathBuf>,
    heartbeat_ms: u64,
    plan: Arc<Plan>,
    clock: Clock,
    /// The journal, and the number of the next entry.
    journal: Option<(JournalHandle, u64)>,
    /// The journal refused the last input.
    journal_failing: bool,
    events: mpsc::Sender<SessionEvent>,
    events_dropped: u64,
    /// The nodes' names, for logs.
    names: Vec<String>,
    /// Each running task's attempt, for logs.
    attempts: BTreeMap<u64, u32>,
    /// The local nodes' token and logs, removed at the end.
    _dir: Option<TempDir>,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records an input in the journal, then hands it to the run; whether it did. An input the
    /// journal cannot record is not handed to the run either, so the journal stays the whole
    /// truth of the run: a frame is lost as a dropped packet is (the protocol resends what must
    /// arrive), a timeout stays due, and the caller retries a cancel. The run waits, with a
    /// warning, until the journal takes inputs again.
    fn input(&mut self, entry: Entry) -> bool {
        if let Some((journal, seq)) = &mut self.journal {
            match journal.0.record(*seq, &entry) {
                Ok(()) => *seq += 1,
                Err(e) => {
                    if !self.journal_failing {
                        self.journal_failing = true;
                        self.emit(SessionEvent::Warning(format!(
                            "the journal cannot record the run's inputs ({e}); the run waits until it can"
                        )));
                    }
                    return false;
                }
            }
            if self.journal_failing {
                self.journal_failing = false;
                self.emit(SessionEvent::Warning("the journal records again; the run goes on".to_owned()));
            }
        }
        entry.apply(&mut self.run);
        true
    }

    async fn drive(mut self, mut cancel: watch::Receiver<bool>, resumed_links: Vec<Option<Link>>) -> Report {
        let (inputs_tx, mut inputs) = mpsc::channel::<Input>(INPUTS_MAX);
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = Arc::new(tokio::sync::Semaphore::new(crate::transport::QUEUED_BYTES_MAX));
        let mut outgoing = Vec::new();
        let mut links = Vec::new();
        let mut carriers = Vec::new();
        for (i, client) in self.clients.iter().enumerate() {
            let (tx, rx) = mpsc::channel(OUTGOING_MAX);
            outgoing.push(tx);
            let carrier =
                Carrier { plan: self.plan.clone(), clock: self.clock, over: over.clone(), queued: queued.clone() };
            carriers.push(tokio::spawn(poll_node(i, client.clone(), carrier.clone(), inputs_tx.clone())));
            carriers.push(tokio::spawn(send_to_node(i, client.clone(), carrier, rx, inputs_tx.clone())));
            let (link_tx, link_rx) = watch::channel(Faults::default());
            // A resumed run puts back the links it had decided.
            if let Some(Some(link)) = resumed_links.get(i) {
                link_tx.send_replace(Faults { link: *link, plan: None });
            }
            carriers.push(tokio::spawn(push_faults(client.clone(), self.plan.id.clone(), link_rx)));
            links.push(link_tx);
        }
        drop(inputs_tx);
        let mut next_progress = 0;
        let mut cancelled = false;
        // A cancel the journal could not record yet.
        let mut cancel_pending = false;
        let mut carrying = true;
        while let Some(due_ms) = self.run.poll_timeout() {
            let mut due = tokio::time::Instant::from_std(self.clock.instant(due_ms));
            if self.journal_failing {
                // Not a busy loop while the store is down: try again in a while.
                due = due.max(tokio::time::Instant::now() + JOURNAL_RETRY);
            }
            tokio::select! {
                input = inputs.recv(), if carrying => match input {
                    Some(Input::Frames(i, frames, _held)) => {
                        self.input(Entry::Frames { at_ms: self.now_ms(), node: i as u32, frames });
                    }
                    Some(Input::Undelivered(n)) => {
                        self.input(Entry::Undelivered { frames: n });
                    }
                    // Every carrier ended (they end only when this loop has): time alone goes on.
                    None => carrying = false,
                },
                () = tokio::time::sleep_until(due) => {}
                changed = cancel.changed(), if !cancelled => {
                    cancelled = true;
                    cancel_pending = changed.is_ok() && *cancel.borrow();
                }
            }
            if cancel_pending {
                cancel_pending = !self.input(Entry::Cancel { at_ms: self.now_ms() });
            }
            let now = self.now_ms();
            if self.run.poll_timeout().is_some_and(|at| at <= now) {
                self.input(Entry::Timeout { at_ms: now });
            }
            self.transmit(&outgoing);
            while let Some(action) = self.run.poll_action() {
                self.act(action, &links).await;
            }
            while let Some((at_ms, event)) = self.run.poll_event() {
                self.log(&event);
                self.emit(SessionEvent::Run { at_ms, event });
            }
            if now >= next_progress {
                next_progress = now + SAMPLE_INTERVAL_MS;
                self.emit(SessionEvent::Progress(Progress {
                    at_ms: now,
                    tasks_ended: self.run.ended() as u64,
                    tasks: self.run.tasks() as u64,
                    nodes_up: self.run.nodes_up() as u64,
                    nodes: self.run.nodes() as u64,
                    load: self.run.live_load(now),
                    cancelling: self.run.is_cancelled(),
                }));
            }
        }
        let report = self.run.report();
        // Over: from here no carrier gives a node the plan again (one that lost it has none of
        // this run's work left to cancel).
        over.store(true, std::sync::atomic::Ordering::Relaxed);
        self.leave(&mut inputs, &outgoing, &links).await;
        // The nodes are not this session's any more: nothing may poll them or give them its
        // plan again.
        drop(inputs);
        for carrier in &carriers {
            carrier.abort();
        }
        // An aborted carrier resolves once dropped: none can give a node the plan again after this.
        let _ = futures::future::join_all(carriers).await;
        self.end_plans().await;
        report
    }

    /// Tells every node to forget the run's plan so that plans do not pile up on nodes that
    /// serve several runs; best effort (a node killed or gone needs no telling).
    async fn end_plans(&self) {
        let id = &self.plan.id;
        let _ = futures::future::join_all(self.clients.iter().map(|c| c.end_plan(id))).await;
    }

    /// Logs what happened in the run (inside the session's `execution` span): its nodes' and
    /// tasks' lives at `info`, what the run survives at `warn`.
    fn log(&mut self, event: &RunEvent) {
        let name = |node: &NodeIdx| self.names.get(node.0 as usize).map_or("?", String::as_str);
        match event {
            RunEvent::NodeJoined { node, incarnation } => {
                tracing::info!(node = name(node), incarnation = incarnation.0, "node joined");
            }
            RunEvent::NodeSuspected { node } => tracing::warn!(node = name(node), "node suspected"),
            RunEvent::NodeDead { node } => tracing::warn!(node = name(node), "node declared dead; its work moves"),
            RunEvent::NodeBack { node } => tracing::info!(node = name(node), "node back"),
            RunEvent::NodeLeft { node } => tracing::info!(node = name(node), "node left"),
            RunEvent::TaskAssigned { task, attempt, node } => {
                self.attempts.insert(task.0, attempt.0);
                tracing::info!(task = task.0, attempt = attempt.0, node = name(node), "task attempt assigned");
            }
            RunEvent::TaskFinished { task, outcome } => {
                let attempt = self.attempts.remove(&task.0);
                tracing::info!(task = task.0, attempt, outcome = outcome.name(), "task ended");
            }
            RunEvent::AttemptEnded { task, attempt, node, end } => {
                tracing::debug!(
                    task = task.0,
                    attempt = attempt.0,
                    node = name(node),
                    end = end.name(),
                    "attempt ended"
                );
            }
            RunEvent::TaskReassigned { task, from } => {
                let attempt = self.attempts.get(&task.0).copied();
                tracing::warn!(
                    task = task.0,
                    attempt,
                    from = name(from),
                    "task attempt taken back; the task is queued again"
                );
            }
            RunEvent::AlertFired(alert) => tracing::warn!(
                alert = alert.id,
                rule = %alert.rule,
                subject = %alert.subject,
                value = alert.value,
                "alert fired"
            ),
            RunEvent::AlertResolved(alert) => {
                tracing::info!(alert = alert.id, rule = %alert.rule, subject = %alert.subject, "alert resolved");
            }
            RunEvent::FaultStarted { fault } => tracing::info!(fault, "fault started"),
            RunEvent::FaultEnded { fault } => tracing::info!(fault, "fault ended"),
            RunEvent::Load(_) => {}
        }
    }

    /// Queues the run's frames to their nodes' carriers. A frame a full queue cannot take is
    /// lost, as on a congested network: the protocol resends what must arrive.
    fn transmit(&mut self, outgoing: &[mpsc::Sender<Frame<ToAgent>>]) {
        let mut dropped = 0;
        while let Some((node, frame)) = self.run.poll_transmit() {
            self.run.count_sent(1);
            if outgoing[node.0 as usize].try_send(frame).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.input(Entry::Undelivered { frames: dropped });
        }
    }

    fn emit(&mut self, event: SessionEvent) {
        if self.events.try_send(event).is_err() {
            self.events_dropped += 1;
        }
    }

    async fn act(&mut self, action: Action, links: &[watch::Sender<Faults>]) {
        use nix::sys::signal::Signal;
        match action {
            Action::Kill(node) => {
                if let Some(local) = self.locals.get_mut(node.0 as usize) {
                    local.kill().await;
                }
            }
            Action::Restart(node) => {
                let (token_file, heartbeat_ms) = (self.token_file.clone(), self.heartbeat_ms);
                if let (Some(local), Some(token_file)) = (self.locals.get_mut(node.0 as usize), token_file)
                    && local.is_down()
                    && let Err(e) = local.restart(&token_file, heartbeat_ms).await
                {
                    // The run goes on without it: the orchestrator keeps it dead.
                    self.emit(SessionEvent::Warning(e.to_string()));
                }
            }
            Action::Pause(node) => {
                if let Some(local) = self.locals.get(node.0 as usize) {
                    local.signal(Signal::SIGSTOP);
                }
            }
            Action::Resume(node) => {
                if let Some(local) = self.locals.get(node.0 as usize) {
                    local.signal(Signal::SIGCONT);
                }
            }
            Action::Link(node, link) => {
                if let Some(tx) = links.get(node.0 as usize) {
                    tx.send_if_modified(|faults: &mut Faults| {
                        let changed = faults.link != link;
                        faults.link = link;
                        changed
                    });
                }
            }
        }
    }

    /// Winds the run down on the nodes: carries the cancels of whatever still ran and the
    /// cleared links until every node has acknowledged them, while the local daemons leave
    /// gracefully (SIGTERM: their work stops, their goodbyes are heard); then kills whatever
    /// local daemon still runs. All of it within [`LEAVE_GRACE_MS`].
    async fn leave(
        &mut self,
        inputs: &mut mpsc::Receiver<Input>,
        outgoing: &[mpsc::Sender<Frame<ToAgent>>],
        links: &[watch::Sender<Faults>],
    ) {
        for local in &self.locals {
            local.signal(nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(LEAVE_GRACE_MS);
        loop {
            self.input(Entry::Timeout { at_ms: self.now_ms() });
            self.transmit(outgoing);
            while let Some(action) = self.run.poll_action() {
                self.act(action, links).await;
            }
            let locals_running = self.locals.iter_mut().any(LocalNode::running);
            if (!locals_running && self.run.is_settled()) || tokio::time::Instant::now() >= deadline {
                break;
            }
            // The orchestrator's resends are due in hundreds of milliseconds: look every 50.
            let pause = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                input = inputs.recv() => if let Some(Input::Frames(i, frames, _held)) = input {
                    self.input(Entry::Frames { at_ms: self.now_ms(), node: i as u32, frames });
                },
                () = pause => {}
            }
        }
        for local in &mut self.locals {
            local.kill().await;
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).finish_non_exhaustive()
    }
}
