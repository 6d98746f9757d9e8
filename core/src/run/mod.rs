//! The run: one execution of a scenario, from its first hello to its report, as a sans-IO state
//! machine that both shells drive, so that `dtest sim` tests exactly what `dtest run` executes.
//!
//! [`Run`] owns every decision of a run: the tasks and their timeouts, the wait for the nodes to
//! register, the scenario's fault timeline, the orchestrator, the checker that trusts nothing
//! the orchestrator says about itself, the ledger (records, load results merged once their
//! attempt is counted, false suspicions, utilisation, busy time, alerts) and the report.
//!
//! A shell carries frames between the orchestrator and the nodes, keeps the clock and carries
//! out what the run asks of processes:
//! - [`Run::handle`] a frame from a node; [`Run::handle_timeout`] when [`Run::poll_timeout`]
//!   says (a shell never picks its own tick);
//! - send what [`Run::poll_transmit`] gives; do what [`Run::poll_action`] asks (kill, restart,
//!   pause, resume a node; apply a node's network faults);
//! - read [`Run::poll_event`] for live events; [`Run::cancel`] to stop early;
//! - once [`Run::is_over`], take [`Run::report`].
//!
//! Where the modes differ on purpose, the difference is in [`Mode`] and listed in
//! docs/protocol.md.

mod live;

use std::collections::VecDeque;

use crate::checker::{Checker, NodeEvent};
use crate::faults::{Link, NetFaults};
use crate::health::HealthState;
use crate::health::alerts::{AlertRule, Alerts, Transition};
use crate::measure::Measure;
use crate::placement::{Catalog, Labels, NodeIdx, NodeSpec, Placer, Pool, pool_of_scenario, request_for};
use crate::protocol::{
    Attempt, Event, Frame, Incarnation, Orchestrator, OrchestratorConfig, Outcome, TaskId, TaskInput, TaskState,
    Terminal, ToAgent, ToOrchestrator,
};
use crate::report::{
    AlertRecord, Condition, Convergence, FaultWindow, Invariant, Messages, Mode, Nodes, PENDING_LISTED_MAX, Recovery,
    Report, StrategyUsed, TIMELINE_POINTS_MAX, TaskOutcome, TaskResult, Timeline, TimelinePoint, Utilization,
    Violation, expectations, listed, load_seconds, name,
};
use crate::scenario::{
    Distribution, FaultKind, NodeRef, Resources, Scenario, TaskSpec, TaskSpecId, Work, WorkloadMode,
};

pub use live::{LiveFigures, LiveLoads};

/// Placement waits for every node's hello, or this long from the start, so that the first pass
/// sees the cluster rather than whichever nodes answered first.
pub const REGISTRATION_GRACE_MS: u64 = 5_000;
/// A load task's attempt may run this much longer than its pattern and request timeout (opening
/// connections, a slow last request).
pub const LOAD_MARGIN_MS: u64 = 30_000;
/// Utilisation, alerts and live figures are sampled this often.
pub const SAMPLE_INTERVAL_MS: u64 = 1_000;
/// After a cancel, how long the run waits for the nodes to stop their work and hand back what
/// it measured before it reports without them.
pub const CANCEL_GRACE_MS: u64 = 5_000;
/// When the run is over, how long a shell lets the nodes it started leave gracefully (their
/// goodbyes heard, their work stopped) before it kills them.
pub const LEAVE_GRACE_MS: u64 = 5_000;
/// Live events kept between drains; older ones are dropped and counted.
pub const RUN_EVENTS_MAX: usize = 100_000;
/// Alerts a report lists; later ones are counted, not listed.
pub const ALERT_RECORDS_MAX: usize = 1_000;

/// How to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Which shell drives the run: what it reports differs as docs/protocol.md lists.
    pub mode: Mode,
    /// The seed of the orchestrator's own choices (random placement, retry jitter); in
    /// simulation also the seed of the whole run.
    pub seed: u64,
    /// Overrides the scenario's distribution strategy.
    pub distribution: Option<Distribution>,
    /// The faults are a swarm mix drawn from the seed: judged by the invariants alone.
    pub swarm: bool,
    /// Test-only: the orchestrator counts stale results, to show the checkers catch it.
    pub break_fencing: bool,
    /// Keep live events for [`Run::poll_event`] (a simulation that nobody watches does not).
    pub events: bool,
}

/// A node as it describes itself (a real node's `info`), for [`Cluster::of_nodes`].
#[derive(Clone, Debug, PartialEq)]
pub struct NodeOffer {
    /// `<group>-<n>`, as faults name it.
    pub name: String,
    /// The scenario node it stands for.
    pub node_ref: NodeRef,
    /// What it offers.
    pub resources: Resources,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Its region.
    pub region: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
}

/// The nodes of a run and what placement knows of them.
#[derive(Clone, Debug)]
pub struct Cluster {
    pool: Pool,
    catalog: Catalog,
    labels: Labels,
    names: Vec<String>,
    node_refs: Vec<NodeRef>,
}

impl Cluster {
    /// Every node the scenario declares, as the simulator runs them.
    pub fn of_scenario(scenario: &Scenario) -> Cluster {
        let (pool, catalog, labels) = pool_of_scenario(scenario);
        let node_refs: Vec<NodeRef> = scenario.nodes().collect();
        let names = node_refs.iter().map(|&n| scenario.node_id(n)).collect();
        Cluster { pool, catalog, labels, names, node_refs }
    }

    /// Real nodes, as they describe themselves.
    pub fn of_nodes(scenario: &Scenario, nodes: &[NodeOffer]) -> Result<Cluster, RunError> {
        let mut catalog = Catalog::of_scenario(scenario);
        let mut labels = Labels::default();
        for group in &scenario.groups {
            group.region.as_deref().map(|r| labels.intern(r));
            group.zone.as_deref().map(|z| labels.intern(z));
        }
        let mut specs = Vec::with_capacity(nodes.len());
        for node in nodes {
            for c in &node.capabilities {
                catalog
                    .add_capability(c)
                    .map_err(|e| RunError::Cluster(format!("node {}: capability `{c}`: {e}", node.name)))?;
            }
            for custom in node.resources.custom.keys() {
                catalog
                    .add_custom(custom)
                    .map_err(|e| RunError::Cluster(format!("node {}: resource `{custom}`: {e}", node.name)))?;
            }
            specs.push(NodeSpec {
                capacity: catalog.amounts(&node.resources).unwrap_or_default(),
                capabilities: catalog.capabilities(&node.capabilities).unwrap_or_default(),
                region: node.region.as_deref().map(|r| labels.intern(r)),
                zone: node.zone.as_deref().map(|z| labels.intern(z)),
            });
        }
        Ok(Cluster {
            pool: Pool::new(specs),
            catalog,
            labels,
            names: nodes.iter().map(|n| n.name.clone()).collect(),
            node_refs: nodes.iter().map(|n| n.node_ref).collect(),
        })
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Why a run cannot start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The nodes' descriptions do not fit the scenario's catalogue.
    Cluster(String),
    /// A task needs what no node offers.
    Unplaceable(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Cluster(why) | RunError::Unplaceable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for RunError {}

/// What the shell must do to processes and links.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Kill the node's process at once (SIGKILL): a crash.
    Kill(NodeIdx),
    /// Start the killed node again: a new incarnation.
    Restart(NodeIdx),
    /// Freeze the node's process (SIGSTOP).
    Pause(NodeIdx),
    /// Let it run again (SIGCONT).
    Resume(NodeIdx),
    /// The network faults on the node's link to the orchestrator are now these.
    Link(NodeIdx, Link),
}

/// What happened in a run, for live views (progress bars, `dtest serve`'s WebSocket, MCP
/// progress). Each comes with the run's time in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// A node incarnation said hello (a first start or a restart).
    NodeJoined {
        /// The node.
        node: NodeIdx,
        /// Its incarnation.
        incarnation: Incarnation,
    },
    /// A node's health fell to unhealthy: its heartbeats are late or its machine is struggling.
    NodeSuspected {
        /// The node.
        node: NodeIdx,
    },
    /// A node was declared dead; its work goes elsewhere.
    NodeDead {
        /// The node.
        node: NodeIdx,
    },
    /// A node declared dead was heard from again in the same incarnation.
    NodeBack {
        /// The node.
        node: NodeIdx,
    },
    /// A node said it is shutting down.
    NodeLeft {
        /// The node.
        node: NodeIdx,
    },
    /// An attempt of a task was leased to a node.
    TaskAssigned {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// The node.
        node: NodeIdx,
    },
    /// A task ended.
    TaskFinished {
        /// The task.
        task: TaskId,
        /// How.
        outcome: TaskOutcome,
    },
    /// An attempt ended on its node: its result was counted, or its lease expired (the node
    /// went silent past the attempt's timeout and its grace).
    AttemptEnded {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// The node it ran on.
        node: NodeIdx,
        /// How it ended.
        end: AttemptEnd,
    },
    /// A task's lease was taken back and the task queued again.
    TaskReassigned {
        /// The task.
        task: TaskId,
        /// The node it was taken from.
        from: NodeIdx,
    },
    /// An alert rule's condition held for its `for_s`.
    AlertFired(AlertRecord),
    /// It stopped holding.
    AlertResolved(AlertRecord),
    /// A scenario fault began (index into the scenario's faults).
    FaultStarted {
        /// The fault.
        fault: usize,
    },
    /// A scenario fault ended.
    FaultEnded {
        /// The fault.
        fault: usize,
    },
    /// How the load is doing, once a second while any runs.
    Load(LiveFigures),
}

/// The least time the liveness phase gives the system to converge when the scenario states no
/// bound: nodes rejoin within a few heartbeats, alerts resolve within their `for`.
pub const RECOVERY_MIN_MS: u64 = 30_000;

/// How an attempt ended ([`RunEvent::AttemptEnded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The work succeeded.
    Passed,
    /// The work failed.
    Failed,
    /// The work ran past its timeout.
    TimedOut,
    /// The work was cancelled.
    Cancelled,
    /// No result came before the lease expired.
    Expired,
}

impl AttemptEnd {
    /// Its name, as events spell it.
    pub fn name(self) -> &'static str {
        match self {
            AttemptEnd::Passed => "passed",
            AttemptEnd::Failed => "failed",
            AttemptEnd::TimedOut => "timed_out",
            AttemptEnd::Cancelled => "cancelled",
            AttemptEnd::Expired => "expired",
        }
    }

    fn of(outcome: &Outcome) -> AttemptEnd {
        match outcome {
            Outcome::Passed => AttemptEnd::Passed,
            Outcome::Failed(_) => AttemptEnd::Failed,
            Outcome::TimedOut => AttemptEnd::TimedOut,
            Outcome::Cancelled => AttemptEnd::Cancelled,
        }
    }
}

/// What the run knows of one task.
#[derive(Clone, Debug, Default)]
struct Record {
    attempts: u32,
    /// The node and time of the attempt leased now.
    leased: Option<(NodeIdx, u64)>,
    /// The counted attempt's outcome, node and how long it ran.
    counted: Option<(Outcome, NodeIdx, u64)>,
}

/// One execution of a scenario.
pub struct Run {
    scenario: Scenario,
    options: RunOptions,
    names: Vec<String>,
    node_refs: Vec<NodeRef>,
    orchestrator: Orchestrator,
    checker: Checker,
    /// The entry of each task and its instance number (from 1).
    instances: Vec<(u32, u32)>,
    records: Vec<Record>,
    /// The fault timeline: (time, fault, starting?), in order; the next edge's index.
    timeline: Vec<(u64, usize, bool)>,
    next_edge: usize,
    /// When the last fault that ends does (a kill never restarted, when it happens); a fault
    /// that lasts to the end does not count.
    settle_ms: u64,
    /// When the liveness phase begins: every fault has healed. `None` when a fault lasts to the
    /// end, or there are none.
    quiet_from_ms: Option<u64>,
    /// Since when, in the liveness phase, every node not down has been alive, and no alert has
    /// fired (sampled each second).
    nodes_alive_since: Option<u64>,
    alerts_resolved_since: Option<u64>,
    /// The cluster over time ([`Report::timeline`]), sampled every `timeline_every_ms`.
    samples: Timeline,
    timeline_every_ms: u64,
    next_timeline_ms: u64,
    net: NetFaults,
    links: Vec<Link>,
    down: Vec<bool>,
    paused: Vec<bool>,
    kills: Vec<(usize, u64)>,
    last_kill: Vec<Option<u64>>,
    false_suspicions: u64,
    /// Placement has begun: every node said hello, or the grace passed.
    started: bool,
    next_sample_ms: u64,
    util: (u64, f64, f64),
    busy_ms: Vec<u64>,
    health: Vec<HealthState>,
    load: Measure,
    has_load: bool,
    live: LiveLoads,
    unreadable: Vec<Violation>,
    alerts: Alerts,
    alert_records: Vec<AlertRecord>,
    alerts_dropped: u64,
    done_at_ms: Option<u64>,
    cancelled_at_ms: Option<u64>,
    over_at_ms: Option<u64>,
    /// The report, made the moment the run was over (what happens after, as its work is wound
    /// down, is not in it).
    report: Option<Report>,
    sent: u64,
    dropped: u64,
    events_seen: u64,
    actions: VecDeque<Action>,
    events: VecDeque<(u64, RunEvent)>,
    events_dropped: u64,
}

/// What a node's replies may carry besides load results: frames, heartbeats with live figures.
pub const REPLY_BASE_BYTES: u64 = 4 * 1024 * 1024;
/// The most one second of a load result takes on the wire: two histograms with every bucket of
/// the per-second precision filled (`a_second_on_the_wire_fits_its_bound` holds it to that).
pub const SECOND_WIRE_BYTES_MAX: u64 = 48 * 1024;
/// The longest reply read from a node whatever the scenario: a week-long load's results.
pub const REPLY_BYTES_CAP: u64 = 256 * 1024 * 1024;

/// The longest reply a node of a run of `scenario` can have reason to send: the base, and every
/// second each load instance can report, at its largest, up to [`REPLY_BYTES_CAP`]. What a
/// peer sends beyond what the run asked of it is not read, so a hostile node costs the
/// orchestrator the memory of the run's own loads, not of the longest load there could be.
pub fn reply_bytes_max(scenario: &Scenario) -> u64 {
    let seconds: u64 = scenario
        .workload
        .tasks
        .iter()
        .filter(|t| matches!(t.work, Work::Load(_)))
        .map(|t| u64::from(t.count).saturating_mul(attempt_timeout_ms(t).div_ceil(1000) + 1))
        .fold(0, u64::saturating_add);
    REPLY_BASE_BYTES.saturating_add(seconds.saturating_mul(SECOND_WIRE_BYTES_MAX)).min(REPLY_BYTES_CAP)
}

/// An attempt's timeout for a task entry: a real command's own; a simulated one's ten times the
/// sum of its mean and ten deviations; a load's end, its last request's timeout and [`LOAD_MARGIN_MS`].
pub fn attempt_timeout_ms(spec: &TaskSpec) -> u64 {
    match &spec.work {
        Work::Command { command: Some(c), .. } => c.timeout_ms,
        Work::Command { command: None, sim } => sim
            .as_ref()
            .map_or(60_000, |sim| ((sim.duration_mean_ms + 10.0 * sim.duration_stddev_ms) * 10.0).max(1_000.0) as u64),
        Work::Load(load) => load.start_ms + load.pattern.duration_ms() + load.timeout_ms + LOAD_MARGIN_MS,
    }
}

impl Run {
    /// A run of `scenario` on `cluster`, starting at time 0 of the shell's clock.
    pub fn new(scenario: &Scenario, cluster: Cluster, options: RunOptions) -> Result<Run, RunError> {
        let Cluster { pool, catalog, labels, names, node_refs } = cluster;
        let sequential = scenario.workload.mode == WorkloadMode::Sequential;
        let mut inputs = Vec::new();
        let mut instances = Vec::new();
        for (s, spec) in scenario.workload.tasks.iter().enumerate() {
            let timeout_ms = attempt_timeout_ms(spec);
            for index in 1..=spec.count {
                let request =
                    request_for(scenario, &catalog, &labels, TaskSpecId(s as u32), index, 0).ok_or_else(|| {
                        RunError::Unplaceable(format!(
                            "task `{}` needs a capability or resource that none of the nodes has",
                            spec.name
                        ))
                    })?;
                inputs.push(TaskInput {
                    request,
                    work: instances.len() as u32,
                    timeout_ms,
                    max_attempts: spec.max_attempts,
                    stage: if sequential { s as u32 } else { 0 },
                });
                instances.push((s as u32, index));
            }
        }
        let distribution = options.distribution.unwrap_or(scenario.strategy.distribution);
        let placer = Placer::new(
            &pool,
            distribution,
            scenario.strategy.allocation,
            scenario.strategy.weights.clone(),
            scenario.strategy.preemption,
            options.seed,
        );
        let config = OrchestratorConfig {
            phi: (&scenario.failure_detector).into(),
            backoff_base_ms: scenario.retry.backoff_base_ms,
            backoff_cap_ms: scenario.retry.backoff_cap_ms,
            ..OrchestratorConfig::default()
        };
        let nodes = names.len();
        let checker = Checker::new(
            (0..nodes).map(|i| pool.spec(NodeIdx(i as u32)).capacity).collect(),
            inputs.iter().map(|t| t.request.amounts).collect(),
        );
        let mut orchestrator = Orchestrator::new(pool, placer, inputs, config, options.seed);
        if options.break_fencing {
            orchestrator.disable_fencing_for_tests();
        }
        let mut timeline = Vec::new();
        let (mut settle_ms, mut lasting) = (0, false);
        for (i, fault) in scenario.faults.iter().enumerate() {
            timeline.push((fault.at_ms, i, true));
            match (fault.end_ms(), &fault.kind) {
                (Some(end), _) => {
                    timeline.push((end, i, false));
                    settle_ms = settle_ms.max(end);
                }
                // A node killed for good is gone: the system must converge without it.
                (None, FaultKind::Kill { .. }) => settle_ms = settle_ms.max(fault.at_ms),
                (None, _) => lasting = true,
            }
        }
        timeline.sort();
        let quiet_from_ms = (!scenario.faults.is_empty() && !lasting).then_some(settle_ms);
        let mut alerts = Alerts::new();
        for rule in &scenario.alerts {
            // The scenario parser bounds the rules far below what `Alerts` holds.
            let _ = alerts.add_rule(AlertRule {
                name: rule.name.clone(),
                metric: rule.metric.name().to_owned(),
                comparison: rule.comparison,
                threshold: rule.threshold,
                for_ms: rule.for_ms,
                severity: rule.severity,
            });
        }
        let records = vec![Record::default(); instances.len()];
        Ok(Run {
            has_load: scenario.workload.tasks.iter().any(|t| matches!(t.work, Work::Load(_))),
            scenario: scenario.clone(),
            options,
            orchestrator,
            checker,
            instances,
            records,
            timeline,
            next_edge: 0,
            settle_ms,
            quiet_from_ms,
            nodes_alive_since: None,
            alerts_resolved_since: None,
            samples: Timeline::default(),
            // Whole seconds, so that a sample falls on the run's own once-a-second beat.
            timeline_every_ms: scenario.duration_ms.div_ceil(TIMELINE_POINTS_MAX).div_ceil(1000).max(1) * 1000,
            next_timeline_ms: 0,
            net: NetFaults::default(),
            links: vec![Link::default(); nodes],
            down: vec![false; nodes],
            paused: vec![false; nodes],
            kills: Vec::new(),
            last_kill: vec![None; nodes],
            false_suspicions: 0,
            started: false,
            next_sample_ms: 0,
            util: (0, 0.0, 0.0),
            busy_ms: vec![0; nodes],
            health: vec![HealthState::Healthy; nodes],
            load: Measure::new(),
            live: LiveLoads::default(),
            unreadable: Vec::new(),
            alerts,
            alert_records: Vec::new(),
            alerts_dropped: 0,
            done_at_ms: None,
            cancelled_at_ms: None,
            over_at_ms: None,
            report: None,
            sent: 0,
            dropped: 0,
            events_seen: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            names,
            node_refs,
        })
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Nodes.
    pub fn nodes(&self) -> usize {
        self.names.len()
    }

    /// A node's name (`<group>-<n>`).
    pub fn node_name(&self, node: NodeIdx) -> &str {
        &self.names[node.0 as usize]
    }

    /// The scenario node a node stands for.
    pub fn node_ref(&self, node: NodeIdx) -> NodeRef {
        self.node_refs[node.0 as usize]
    }

    /// Tasks (instances of every entry).
    pub fn tasks(&self) -> usize {
        self.instances.len()
    }

    /// A task's entry (index into the scenario's tasks) and instance number (from 1). A task's
    /// `work` in assignments is its own number.
    pub fn instance(&self, task: TaskId) -> Option<(usize, u32)> {
        self.instances.get(task.0 as usize).map(|&(entry, index)| (entry as usize, index))
    }

    /// Tasks that have ended.
    pub fn ended(&self) -> usize {
        self.checker.ended.len()
    }

    /// Nodes up now, in the orchestrator's eyes.
    pub fn nodes_up(&self) -> usize {
        (0..self.names.len()).filter(|&i| self.orchestrator.node_up(NodeIdx(i as u32))).count()
    }

    /// How the load is doing now, if the scenario has load.
    pub fn live_load(&self, now_ms: u64) -> Option<LiveFigures> {
        self.has_load.then(|| self.live.figures(now_ms, &self.load))
    }

    /// The network faults in force now (a simulator applies them to every frame it carries).
    pub fn net(&self) -> &NetFaults {
        &self.net
    }

    /// Events read so far (the budget guard counts them).
    pub fn events_seen(&self) -> u64 {
        self.events_seen
    }

    /// The shell carried `n` frames.
    pub fn count_sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// `n` frames were lost on the way (a fault dropped them, an exchange failed).
    pub fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// A frame from `node` arrived at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, node: NodeIdx, frame: Frame<ToOrchestrator>) {
        if node.0 as usize >= self.names.len() {
            return;
        }
        if let Frame::Data(packet) = &frame
            && let ToOrchestrator::Heartbeat { load, .. } = &packet.body
            && self.has_load
        {
            let tasks = self.instances.len() as u64;
            for (task, attempt, live) in load.iter().filter(|(task, ..)| task.0 < tasks) {
                self.live.heard(now_ms, node.0 as usize, *task, *attempt, live);
            }
        }
        self.orchestrator.handle(now_ms, node, frame);
        self.drain(now_ms);
    }

    /// When the run next needs [`Run::handle_timeout`]; `None` once it is over.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.over_at_ms.is_some() {
            return None;
        }
        let orchestrator = if self.started { self.orchestrator.poll_timeout() } else { Some(REGISTRATION_GRACE_MS) };
        let end = match (self.done_at_ms, self.cancelled_at_ms) {
            (Some(done), Some(_)) => done,
            (None, Some(at)) => at + CANCEL_GRACE_MS,
            // Waiting for the liveness phase to converge: its samples wake the run each second.
            (Some(_), None) => match self.quiet_from_ms {
                Some(quiet) if !self.converged() => quiet.saturating_add(self.recovery_bound_ms(quiet)),
                _ => self.settle_ms.min(self.scenario.duration_ms),
            },
            (None, None) => self.scenario.duration_ms,
        };
        [orchestrator, self.timeline.get(self.next_edge).map(|e| e.0), Some(self.next_sample_ms), Some(end)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time has passed to `now_ms`: fault edges, the orchestrator's timers, samples, the end.
    /// Once the run is over, only the orchestrator's resends and acknowledgements go on, so that
    /// the winding down reaches the nodes (see [`Run::is_settled`]).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.over_at_ms.is_some() {
            self.orchestrator.tick(now_ms);
            self.drain(now_ms);
            return;
        }
        while let Some(&(at, fault, starting)) = self.timeline.get(self.next_edge)
            && at <= now_ms
        {
            self.next_edge += 1;
            self.fault_edge(now_ms, fault, starting);
        }
        // Every hello heard starts it at once (`drain`); else the grace does.
        if now_ms >= REGISTRATION_GRACE_MS {
            self.started = true;
        }
        if self.started {
            self.orchestrator.tick(now_ms);
        }
        self.drain(now_ms);
        if now_ms >= self.next_sample_ms {
            self.sample(now_ms);
            self.next_sample_ms = now_ms + SAMPLE_INTERVAL_MS;
        }
        let over = match self.cancelled_at_ms {
            Some(at) => self.done_at_ms.is_some() || now_ms >= at + CANCEL_GRACE_MS,
            None => self.done_at_ms.is_some() && now_ms >= self.settle_ms && !self.recovering(now_ms),
        };
        if over || self.past_end(now_ms) {
            self.finish(now_ms);
        }
    }

    /// Whether the liveness phase still waits at `now_ms` for nodes or alerts to converge
    /// (tasks have ended when this is asked), within its bound.
    fn recovering(&self, now_ms: u64) -> bool {
        let Some(quiet) = self.quiet_from_ms else { return false };
        !self.converged() && now_ms < quiet.saturating_add(self.recovery_bound_ms(quiet))
    }

    /// Whether nodes and alerts have converged in the liveness phase (as last sampled).
    fn converged(&self) -> bool {
        self.nodes_alive_since.is_some() && (self.scenario.alerts.is_empty() || self.alerts_resolved_since.is_some())
    }

    /// How long after `quiet` the system has to converge: the scenario's
    /// `recovered_within_s`, or until its end but at least [`RECOVERY_MIN_MS`]. Once the work is
    /// done, the run goes on past the scenario's end for it if need be: a fault healing at the
    /// very end must not fail a run for a clock that ran out.
    fn recovery_bound_ms(&self, quiet: u64) -> u64 {
        let until_end = self.scenario.duration_ms.saturating_sub(quiet).max(RECOVERY_MIN_MS);
        self.scenario.expect.recovered_within_ms.unwrap_or(until_end)
    }

    /// Whether the run is past its end at `now_ms`: the scenario's end, or, with the work done
    /// and the liveness phase still waiting, the phase's bound.
    fn past_end(&self, now_ms: u64) -> bool {
        now_ms >= self.scenario.duration_ms && !(self.done_at_ms.is_some() && self.recovering(now_ms))
    }

    /// Once a second in the liveness phase: whether every node not down is alive in the
    /// orchestrator's eyes, and whether any alert fires.
    fn watch_convergence(&mut self, now_ms: u64) {
        let alive = (0..self.names.len())
            .all(|n| self.down[n] || self.paused[n] || self.orchestrator.node_up(NodeIdx(n as u32)));
        self.nodes_alive_since = if alive { Some(self.nodes_alive_since.unwrap_or(now_ms)) } else { None };
        let resolved = self.alerts_firing_without_cause().next().is_none();
        self.alerts_resolved_since = if resolved { Some(self.alerts_resolved_since.unwrap_or(now_ms)) } else { None };
    }

    /// Alerts firing that the faults do not explain, as `rule on subject`. A node down for good
    /// (killed and never restarted, or paused) explains its own alerts, and a cluster's
    /// `nodes_down` alert when the nodes down on purpose are enough, by themselves, to make it
    /// hold; nothing else is excused (`cluster_health` leaves dead nodes out).
    fn alerts_firing_without_cause(&self) -> impl Iterator<Item = String> + '_ {
        let firing = if self.alerts.is_firing() { self.alerts.firing() } else { Vec::new() };
        let down_on_purpose = (0..self.names.len()).filter(|&n| self.down[n] || self.paused[n]).count() as f64;
        let explains = move |rule: &str| {
            self.scenario.alerts.iter().find(|a| a.name == rule).is_some_and(|a| {
                a.metric == crate::scenario::AlertMetric::NodesDown && a.comparison.holds(down_on_purpose, a.threshold)
            })
        };
        // Alerts on every node of a large cluster can fire at once: find nodes by name in a map.
        let nodes: std::collections::BTreeMap<&str, usize> = match firing.is_empty() {
            true => Default::default(),
            false => self.names.iter().enumerate().map(|(n, name)| (name.as_str(), n)).collect(),
        };
        firing.into_iter().filter_map(move |(_, rule, subject, ..)| {
            let node = nodes.get(subject).copied();
            let explained = match node {
                Some(n) => self.down[n] || self.paused[n],
                None => explains(rule),
            };
            (!explained).then(|| format!("{rule} on {subject}"))
        })
    }

    /// The liveness phase's account at `end_ms`, and the violation if the system did not
    /// converge within its bound.
    fn recovery(&self, end_ms: u64) -> Option<(Recovery, Option<Violation>)> {
        let quiet = self.quiet_from_ms?;
        let bound_ms = self.recovery_bound_ms(quiet);
        let after = |since: Option<u64>| since.map(|t| t.saturating_sub(quiet));
        let listed = |names| listed(names, PENDING_LISTED_MAX);
        let tasks_pending = (0..self.instances.len() as u64)
            .map(TaskId)
            .filter(|task| !self.checker.ended.contains_key(task))
            .map(|task| self.task_name(task))
            .collect();
        // Tasks count from the last fault's healing even when they ended before it.
        let tasks_after = self.done_at_ms.map(|done| done.saturating_sub(quiet));
        let mut conditions = vec![Convergence {
            condition: Condition::TasksEnded,
            recovered_after_ms: tasks_after,
            pending: if tasks_after.is_some() { Vec::new() } else { listed(tasks_pending) },
        }];
        let nodes_pending = (0..self.names.len())
            .filter(|&n| !(self.down[n] || self.paused[n] || self.orchestrator.node_up(NodeIdx(n as u32))))
            .map(|n| self.names[n].clone())
            .collect();
        conditions.push(Convergence {
            condition: Condition::NodesAlive,
            recovered_after_ms: after(self.nodes_alive_since),
            pending: if self.nodes_alive_since.is_some() { Vec::new() } else { listed(nodes_pending) },
        });
        if !self.scenario.alerts.is_empty() {
            let firing = self.alerts_firing_without_cause().collect();
            conditions.push(Convergence {
                condition: Condition::AlertsResolved,
                recovered_after_ms: after(self.alerts_resolved_since),
                pending: if self.alerts_resolved_since.is_some() { Vec::new() } else { listed(firing) },
            });
        }
        let late = |c: &Convergence| c.recovered_after_ms.is_none_or(|ms| ms > bound_ms);
        let converged = !conditions.iter().any(late);
        let violation = (!converged).then(|| {
            let what: Vec<String> = conditions
                .iter()
                .filter(|c| late(c))
                .map(|c| match c.recovered_after_ms {
                    Some(ms) => format!("{} only after {:.1} s", c.condition.name(), ms as f64 / 1e3),
                    None => format!("{} never ({})", c.condition.name(), c.pending.join(", ")),
                })
                .collect();
            Violation {
                at_ms: end_ms,
                invariant: Invariant::Liveness,
                what: format!(
                    "no convergence within {:.1} s of the last fault healing at {:.1} s: {}",
                    bound_ms as f64 / 1e3,
                    quiet as f64 / 1e3,
                    what.join("; ")
                ),
            }
        });
        Some((Recovery { quiet_from_ms: quiet, bound_ms, converged, conditions }, violation))
    }

    /// One sample of the cluster for the timeline.
    fn sample_timeline(&mut self, now_ms: u64) {
        let point = self.timeline_point(now_ms);
        self.samples.push(point);
    }

    /// The cluster at `now_ms`, as the timeline samples it.
    fn timeline_point(&self, now_ms: u64) -> TimelinePoint {
        let (mut up, mut suspected, mut dead) = (0, 0, 0);
        for n in 0..self.names.len() {
            let node = NodeIdx(n as u32);
            if self.orchestrator.node_up(node) {
                up += 1;
                suspected += u32::from(self.orchestrator.node_health(node) >= HealthState::Unhealthy);
            } else if self.checker.history[n].last().is_some_and(|&(_, e)| e == NodeEvent::Dead) {
                dead += 1;
            }
        }
        TimelinePoint {
            t_s: now_ms as f64 / 1e3,
            nodes_up: up,
            nodes_suspected: suspected,
            nodes_dead: dead,
            tasks_running: self.checker.lease.len() as u32,
            tasks_ended: self.checker.ended.len() as u32,
            reassignments: self.orchestrator.stats().reassignments,
        }
    }

    /// The timeline up to `end_ms`: its samples, one at the end, and the faults' windows.
    fn timeline_until(&self, end_ms: u64) -> Timeline {
        let mut timeline = self.samples.clone();
        if timeline.t_s.last().is_none_or(|&t| t < end_ms as f64 / 1e3) {
            timeline.push(self.timeline_point(end_ms));
        }
        timeline.faults = self
            .scenario
            .faults
            .iter()
            .filter(|f| f.at_ms <= end_ms)
            .map(|f| FaultWindow {
                kind: f.kind_name(),
                from_s: f.at_ms as f64 / 1e3,
                to_s: f.end_ms().unwrap_or(end_ms).min(end_ms) as f64 / 1e3,
            })
            .collect();
        timeline
    }

    /// A task by its entry's name and instance: `build#3`.
    fn task_name(&self, task: TaskId) -> String {
        let (entry, index) = self.instances[task.0 as usize];
        format!("{}#{index}", self.scenario.workload.tasks[entry as usize].name)
    }

    /// The run is over at `now_ms`: its report is made, then whatever still runs is wound
    /// down. Every task not ended is cancelled on its node (no process of the run's work
    /// outlives it) and every node's link is cleared of faults.
    fn finish(&mut self, now_ms: u64) {
        self.over_at_ms = Some(now_ms);
        self.report = Some(self.build_report(now_ms));
        for task in 0..self.instances.len() {
            self.orchestrator.cancel(now_ms, TaskId(task as u64));
        }
        for n in 0..self.names.len() {
            if self.links[n] != Link::default() {
                self.links[n] = Link::default();
                self.actions.push_back(Action::Link(NodeIdx(n as u32), Link::default()));
            }
        }
        self.drain(now_ms);
    }

    /// Whether, after the end, every frame the orchestrator sent was acknowledged (the nodes
    /// know their work is cancelled), or the nodes it went to are held dead.
    pub fn is_settled(&self) -> bool {
        self.over_at_ms.is_some() && self.orchestrator.unacknowledged() == 0
    }

    /// When the run was over (ms).
    pub fn over_at_ms(&self) -> Option<u64> {
        self.over_at_ms
    }

    /// Live events dropped because nobody read them in time.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Stops the run early: every task not ended is cancelled (running work is stopped and hands
    /// back what it measured). The run is over once every task has ended, or after
    /// [`CANCEL_GRACE_MS`]; its report is marked interrupted.
    pub fn cancel(&mut self, now_ms: u64) {
        if self.cancelled_at_ms.is_some() || self.over_at_ms.is_some() {
            return;
        }
        self.cancelled_at_ms = Some(now_ms);
        for task in 0..self.instances.len() {
            self.orchestrator.cancel(now_ms, TaskId(task as u64));
        }
        self.drain(now_ms);
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled_at_ms.is_some()
    }

    /// Whether the run is over: take its report.
    pub fn is_over(&self) -> bool {
        self.over_at_ms.is_some()
    }

    /// The next frame to send, and to which node.
    pub fn poll_transmit(&mut self) -> Option<(NodeIdx, Frame<ToAgent>)> {
        self.orchestrator.poll_transmit()
    }

    /// The next thing to do to a node's process or link.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next live event (with [`RunOptions::events`]).
    pub fn poll_event(&mut self) -> Option<(u64, RunEvent)> {
        self.events.pop_front()
    }

    /// The task states, for live views.
    pub fn task_state(&self, task: TaskId) -> TaskState {
        self.orchestrator.task_state(task)
    }

    fn event(&mut self, at_ms: u64, event: RunEvent) {
        if !self.options.events {
            return;
        }
        if self.events.len() >= RUN_EVENTS_MAX {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back((at_ms, event));
    }

    fn fault_edge(&mut self, now_ms: u64, fault: usize, starting: bool) {
        self.event(now_ms, if starting { RunEvent::FaultStarted { fault } } else { RunEvent::FaultEnded { fault } });
        let members = |set: &crate::scenario::NodeSet, refs: &[NodeRef]| -> Vec<usize> {
            (0..refs.len()).filter(|&i| set.contains(refs[i])).collect()
        };
        match &self.scenario.faults[fault].kind {
            FaultKind::Kill { nodes, .. } => {
                // Overlapping kills (swarm mixes have them) kill a node once and restart it once.
                for n in members(nodes, &self.node_refs) {
                    if starting && !self.down[n] {
                        self.down[n] = true;
                        self.kills.push((n, now_ms));
                        self.last_kill[n] = Some(now_ms);
                        self.actions.push_back(Action::Kill(NodeIdx(n as u32)));
                    } else if !starting && self.down[n] {
                        self.down[n] = false;
                        self.actions.push_back(Action::Restart(NodeIdx(n as u32)));
                    }
                }
            }
            FaultKind::Pause { nodes, .. } => {
                for n in members(nodes, &self.node_refs) {
                    self.paused[n] = starting;
                    let node = NodeIdx(n as u32);
                    self.actions.push_back(if starting { Action::Pause(node) } else { Action::Resume(node) });
                }
            }
            _ => {
                if starting {
                    self.net.start(&self.scenario, fault);
                } else {
                    self.net.end(fault);
                }
                for n in 0..self.names.len() {
                    let link = self.net.link(self.node_refs[n]);
                    if link != self.links[n] {
                        self.links[n] = link;
                        self.actions.push_back(Action::Link(NodeIdx(n as u32), link));
                    }
                }
            }
        }
    }

    /// Reads the orchestrator's events into the checker and the ledger.
    fn drain(&mut self, now_ms: u64) {
        while let Some(event) = self.orchestrator.poll_event() {
            self.events_seen += 1;
            self.observe(now_ms, &event);
            self.checker.observe(now_ms, &event);
        }
        if self.done_at_ms.is_none() && self.orchestrator.is_done() {
            self.done_at_ms = Some(now_ms);
        }
        if !self.started && self.orchestrator.registered() == self.names.len() {
            self.started = true;
        }
    }

    fn observe(&mut self, now_ms: u64, event: &Event) {
        match event {
            Event::NodeUp { node, incarnation } => {
                self.health[node.0 as usize] = HealthState::Healthy;
                self.event(now_ms, RunEvent::NodeJoined { node: *node, incarnation: *incarnation });
            }
            Event::NodeDead { node } => {
                let n = node.0 as usize;
                let killed = self.checker.down_since_kill(n, self.last_kill[n]);
                if !(killed || self.paused[n] || self.net.cuts(self.node_refs[n])) {
                    self.false_suspicions += 1;
                }
                self.health[n] = HealthState::Dead;
                self.event(now_ms, RunEvent::NodeDead { node: *node });
            }
            Event::NodeBack { node } => self.event(now_ms, RunEvent::NodeBack { node: *node }),
            Event::NodeLeft { node } => self.event(now_ms, RunEvent::NodeLeft { node: *node }),
            Event::Assigned { task, attempt, node, .. } => {
                let record = &mut self.records[task.0 as usize];
                record.attempts += 1;
                record.leased = Some((*node, now_ms));
                self.event(now_ms, RunEvent::TaskAssigned { task: *task, attempt: *attempt, node: *node });
            }
            Event::Counted { task, attempt, node, outcome, load } => {
                let started = self.lease_ended(*task, now_ms).map_or(now_ms, |(_, at)| at);
                self.records[task.0 as usize].counted = Some((outcome.clone(), *node, now_ms - started));
                let end = AttemptEnd::of(outcome);
                self.event(now_ms, RunEvent::AttemptEnded { task: *task, attempt: *attempt, node: *node, end });
                self.live.forget(*task);
                if let Some(load) = load {
                    // Seconds beyond the attempt's own timeout cannot be real: refuse the result
                    // rather than let a peer make the series as long as it likes.
                    let spec = &self.scenario.workload.tasks[self.instances[task.0 as usize].0 as usize];
                    let last_s = attempt_timeout_ms(spec).div_ceil(1000);
                    let decoded = match load.seconds.iter().find(|s| s.t > last_s) {
                        Some(s) => Err(format!("second {} is past the attempt's {last_s} s", s.t)),
                        None => Measure::from_wire(load),
                    };
                    match decoded {
                        Ok(measure) => {
                            // A node counts seconds from its load's start: the assignment, or
                            // the load's `start_s` if later.
                            let entry = &self.scenario.workload.tasks[self.instances[task.0 as usize].0 as usize];
                            let start_ms = match &entry.work {
                                Work::Load(load) => load.start_ms,
                                Work::Command { .. } => 0,
                            };
                            self.load.add(&measure, started.max(start_ms) / 1000);
                        }
                        Err(e) => self.unreadable.push(Violation {
                            at_ms: now_ms,
                            invariant: Invariant::ReadableResults,
                            what: format!(
                                "node {} sent a load result for {task:?} ({attempt:?}) that dtest cannot read: {e}",
                                self.names[node.0 as usize]
                            ),
                        }),
                    }
                }
            }
            Event::Reassigned { task, from } => {
                self.lease_ended(*task, now_ms);
                self.event(now_ms, RunEvent::TaskReassigned { task: *task, from: *from });
            }
            Event::LeaseExpired { task, node } => {
                self.lease_ended(*task, now_ms);
                // The checker reads this event after the run: it still holds the lease.
                if let Some(&(attempt, _)) = self.checker.lease.get(task) {
                    let end = AttemptEnd::Expired;
                    self.event(now_ms, RunEvent::AttemptEnded { task: *task, attempt, node: *node, end });
                }
            }
            Event::Ended { task, terminal } => {
                let outcome = self.outcome(*task, Some(*terminal));
                self.event(now_ms, RunEvent::TaskFinished { task: *task, outcome });
            }
            Event::Stale { .. } => {}
        }
    }

    /// The task's lease ended at `now_ms`: its node was busy since the lease began.
    fn lease_ended(&mut self, task: TaskId, now_ms: u64) -> Option<(NodeIdx, u64)> {
        let leased = self.records[task.0 as usize].leased.take()?;
        self.busy_ms[leased.0.0 as usize] += now_ms.saturating_sub(leased.1);
        Some(leased)
    }

    /// Once a second: utilisation, node health changes, alerts and live load figures.
    fn sample(&mut self, now_ms: u64) {
        let (mean, max) = self.orchestrator.pool().load_mean_and_max();
        self.util.0 += 1;
        self.util.1 += f64::from(mean) / 1e6;
        self.util.2 = self.util.2.max(f64::from(max) / 1e6);
        if self.options.events {
            for n in 0..self.names.len() {
                let node = NodeIdx(n as u32);
                let state = self.orchestrator.node_health(node);
                let before = std::mem::replace(&mut self.health[n], state);
                if state == HealthState::Unhealthy && before < HealthState::Unhealthy {
                    self.event(now_ms, RunEvent::NodeSuspected { node });
                }
            }
            // Attempts taken back or ended stop counting as running load.
            let orchestrator = &self.orchestrator;
            self.live.retain(|task, node, attempt| {
                matches!(orchestrator.task_state(task),
                    TaskState::Leased { node: n, attempt: a, .. } if n.0 as usize == node && a == attempt)
            });
            if let Some(figures) = self.live_load(now_ms).filter(|_| !self.live.is_empty()) {
                self.event(now_ms, RunEvent::Load(figures));
            }
        }
        // Before every node said hello there is no cluster to judge.
        if !self.scenario.alerts.is_empty() && self.started {
            self.evaluate_alerts(now_ms);
        }
        if self.quiet_from_ms.is_some_and(|quiet| now_ms >= quiet) && self.started {
            self.watch_convergence(now_ms);
        }
        if now_ms >= self.next_timeline_ms {
            self.next_timeline_ms = now_ms + self.timeline_every_ms;
            self.sample_timeline(now_ms);
        }
    }

    fn evaluate_alerts(&mut self, now_ms: u64) {
        use crate::scenario::AlertMetric;
        let mut transitions = Vec::new();
        // Each metric once: `Alerts::observe` judges every rule on it.
        let mut rules: Vec<AlertMetric> = self.scenario.alerts.iter().map(|a| a.metric).collect();
        rules.sort();
        rules.dedup();
        let node_metrics = rules.iter().any(|m| !m.is_cluster());
        if node_metrics {
            for n in 0..self.names.len() {
                let node = NodeIdx(n as u32);
                let up = self.orchestrator.node_up(node);
                let (score, phi, metrics) = self.orchestrator.node_vitals(node, now_ms);
                for metric in rules.iter().filter(|m| !m.is_cluster()) {
                    let value = match metric {
                        // Held dead (or never heard from): its series is absent, and an alert on
                        // it resolves, as in Prometheus (NaN holds no comparison); `nodes_down`
                        // is the rule for dead nodes.
                        _ if !up => f64::NAN,
                        AlertMetric::HealthScore => f64::from(score),
                        AlertMetric::Phi => phi,
                        AlertMetric::Cpu => metrics.cpu,
                        AlertMetric::Memory => metrics.memory,
                        AlertMetric::Disk => metrics.disk,
                        AlertMetric::TaskErrorRate => metrics.task_error_rate,
                        AlertMetric::NodesDown | AlertMetric::ClusterHealth => continue,
                    };
                    transitions.extend(self.alerts.observe(now_ms, &self.names[n], metric.name(), value));
                }
            }
        }
        for metric in rules.iter().filter(|m| m.is_cluster()) {
            let value = match metric {
                AlertMetric::NodesDown => self.orchestrator.nodes_down() as f64,
                AlertMetric::ClusterHealth => self.orchestrator.cluster_health().mean_score,
                _ => continue,
            };
            transitions.extend(self.alerts.observe(now_ms, "cluster", metric.name(), value));
        }
        for t in transitions {
            match t.transition {
                Transition::Fired => {
                    let record = AlertRecord {
                        id: t.id,
                        rule: t.rule,
                        subject: t.subject,
                        severity: t.severity,
                        fired_at_ms: t.at_ms,
                        resolved_at_ms: None,
                        value: t.value,
                    };
                    self.event(now_ms, RunEvent::AlertFired(record.clone()));
                    if self.alert_records.len() < ALERT_RECORDS_MAX {
                        self.alert_records.push(record);
                    } else {
                        self.alerts_dropped += 1;
                    }
                }
                Transition::Resolved => {
                    if let Some(record) = self.alert_records.iter_mut().rev().find(|r| r.id == t.id) {
                        record.resolved_at_ms = Some(t.at_ms);
                        let record = record.clone();
                        self.event(now_ms, RunEvent::AlertResolved(record));
                    }
                }
                Transition::Acknowledged => {}
            }
        }
    }

    fn outcome(&self, task: TaskId, terminal: Option<Terminal>) -> TaskOutcome {
        match (terminal, &self.records[task.0 as usize].counted) {
            (Some(Terminal::Completed), _) => TaskOutcome::Passed,
            (Some(Terminal::Cancelled), _) => TaskOutcome::Cancelled,
            (Some(Terminal::Failed), Some((Outcome::TimedOut, ..))) => TaskOutcome::TimedOut,
            (Some(Terminal::Failed), _) => TaskOutcome::Failed,
            (None, _) => TaskOutcome::Lost,
        }
    }

    /// The report, as the run stood when it was over (or at the scenario's end, if asked
    /// before).
    pub fn report(&self) -> Report {
        match &self.report {
            Some(report) => report.clone(),
            None => self.build_report(self.scenario.duration_ms),
        }
    }

    fn build_report(&self, end_ms: u64) -> Report {
        let checker = &self.checker;
        let tasks = checker.tasks(self.instances.len() as u64);
        let interrupted = self.cancelled_at_ms.is_some();
        let mut violations: Vec<Violation> = checker
            .violations
            .iter()
            .map(|(at_ms, invariant, what)| Violation { at_ms: *at_ms, invariant: *invariant, what: what.clone() })
            .collect();
        // A task may stay unfinished while a fault still holds; once every fault has healed,
        // the system had its chance (the liveness phase, `recovery`), and without faults, the
        // whole run.
        let recovery = (!interrupted).then(|| self.recovery(end_ms)).flatten();
        if tasks.lost > 0 && !interrupted && self.scenario.faults.is_empty() {
            let what = format!("{} tasks never ended (the run stopped at {} s)", tasks.lost, end_ms / 1000);
            violations.push(Violation { at_ms: end_ms, invariant: Invariant::Liveness, what });
        }
        let recovery = recovery.map(|(recovery, violation)| {
            violations.extend(violation);
            recovery
        });
        let failure_detection_ms = checker.detection(&self.kills, end_ms);
        if let (Some(limit), Some(spread)) = (self.scenario.expect.failure_detected_within_ms, failure_detection_ms)
            && spread.max > limit
        {
            violations.push(Violation {
                at_ms: end_ms,
                invariant: Invariant::Detection,
                what: format!(
                    "a killed node went unnoticed for {} ms, above the {limit} ms the scenario allows",
                    spread.max
                ),
            });
        }
        violations.extend(self.unreadable.iter().cloned());
        violations.sort_by(|a, b| (a.at_ms, &a.what).cmp(&(b.at_ms, &b.what)));
        let sim = self.options.mode == Mode::Sim;
        let distribution = self.options.distribution.unwrap_or(self.scenario.strategy.distribution);
        let stats = self.orchestrator.stats();
        let mut report = Report {
            scenario: self.scenario.name.clone(),
            mode: self.options.mode,
            interrupted,
            seed: sim.then_some(self.options.seed),
            swarm: self.options.swarm,
            strategy: StrategyUsed {
                distribution: name(&distribution),
                allocation: name(&self.scenario.strategy.allocation),
                adaptive: (distribution == Distribution::Adaptive).then(|| self.orchestrator.adaptive_choices().into()),
            },
            simulated_s: sim.then_some(end_ms as f64 / 1e3),
            elapsed_s: (!sim).then_some(end_ms as f64 / 1e3),
            makespan_s: self.done_at_ms.filter(|_| !interrupted).map(|ms| ms as f64 / 1e3),
            tasks,
            reassignments: stats.reassignments,
            stale_results_refused: stats.stale_results,
            nodes: Nodes {
                total: self.names.len() as u64,
                declared_dead: checker.declared_dead,
                false_suspicions: self.false_suspicions,
            },
            failure_detection_ms,
            recovery,
            messages: Messages { sent: self.sent, dropped: self.dropped },
            utilization: Utilization {
                mean: if self.util.0 == 0 { 0.0 } else { self.util.1 / self.util.0 as f64 },
                max: self.util.2,
                busy_spread: spread(&self.busy_until(end_ms)),
            },
            expectations: Vec::new(),
            violations,
            alerts: self.alert_records.clone(),
            timeline: self.timeline_until(end_ms),
            ..Report::default()
        };
        if self.options.mode == Mode::Run {
            report.results = self.results();
        }
        if self.has_load {
            let planned_s = load_seconds(&self.scenario);
            let seconds = if interrupted {
                // Stopped early: the load ran from its first start to the end, not as planned.
                let first_ms = self.scenario.workload.tasks.iter().filter_map(|t| match &t.work {
                    Work::Load(load) => Some(load.start_ms),
                    Work::Command { .. } => None,
                });
                let ran_s = end_ms.saturating_sub(first_ms.min().unwrap_or(0)) as f64 / 1e3;
                planned_s.min(ran_s)
            } else {
                planned_s
            };
            report.set_load(&self.load, seconds);
        }
        report.expectations = expectations(&self.scenario, &report);
        report
    }

    /// Each node's busy time, leases still open counted until `end_ms`.
    fn busy_until(&self, end_ms: u64) -> Vec<u64> {
        let mut busy = self.busy_ms.clone();
        for (node, since) in self.records.iter().filter_map(|r| r.leased) {
            busy[node.0 as usize] += end_ms.saturating_sub(since);
        }
        busy
    }

    fn results(&self) -> Vec<TaskResult> {
        (0..self.instances.len())
            .map(|t| {
                let task = TaskId(t as u64);
                let (entry, index) = self.instances[t];
                let spec = &self.scenario.workload.tasks[entry as usize];
                let record = &self.records[t];
                let terminal = self.checker.ended.get(&task).map(|e| e.0);
                let outcome = self.outcome(task, terminal);
                let message = match (outcome, &record.counted) {
                    (TaskOutcome::TimedOut, _) => {
                        format!("timed out after {} s", attempt_timeout_ms(spec) as f64 / 1e3)
                    }
                    (TaskOutcome::Failed, Some((Outcome::Failed(why), ..))) => why.clone(),
                    (TaskOutcome::Failed, _) => "the task could not be placed or ran out of attempts".to_owned(),
                    (TaskOutcome::Lost, _) => "the task had not ended when the run stopped".to_owned(),
                    _ => String::new(),
                };
                TaskResult {
                    task: spec.name.clone(),
                    index,
                    count: spec.count,
                    outcome,
                    node: record.counted.as_ref().map(|(_, n, _)| self.names[n.0 as usize].clone()),
                    attempts: record.attempts,
                    duration_s: record.counted.as_ref().map_or(0.0, |(_, _, ms)| *ms as f64 / 1e3),
                    message,
                }
            })
            .collect()
    }
}

/// How unevenly work spread over the nodes: the coefficient of variation (standard deviation
/// over mean) of their busy time; 0 when every node was busy equally long (or none was).
fn spread(busy_ms: &[u64]) -> f64 {
    if busy_ms.is_empty() {
        return 0.0;
    }
    let n = busy_ms.len() as f64;
    let mean = busy_ms.iter().map(|&b| b as f64).sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    let variance = busy_ms.iter().map(|&b| (b as f64 - mean).powi(2)).sum::<f64>() / n;
    // Rounded so that summing in another order cannot change a report's bytes.
    (variance.sqrt() / mean * 1e4).round() / 1e4
}
