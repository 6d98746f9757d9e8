//! The orchestrator's state machine: registration, failure detection, placement, the task
//! lifecycle with leases and fencing, retries, circuit breakers, cancellation and plans.
//!
//! Like [`super::Agent`], it does no IO and reads no clock: the shell feeds it frames from nodes
//! ([`Orchestrator::handle`]) and timer ticks ([`Orchestrator::tick`]) and drains frames to send
//! ([`Orchestrator::poll_transmit`]) and events to report ([`Orchestrator::poll_event`]).
//!
//! **Lifecycle.** A task is *held* (its sequential stage has not begun), *pending*, *waiting*
//! (backing off before a retry), *leased* to a node for one attempt (assigned, then running), or
//! ended: *completed*, *failed* or *cancelled*, exactly once.
//!
//! **Fencing.** Each lease names a node incarnation and an attempt, and only a result for the
//! current lease counts. Every other result (an attempt reassigned after its node was declared
//! dead, a lease that expired, a node's previous life) is refused and reported as stale.
//!
//! **Failures.** A node whose phi reaches the threshold is declared dead and its leases are
//! reassigned (a new attempt, no retry spent); a restarted node is a new incarnation and its old
//! leases are reassigned at once. A failed or timed-out attempt is retried after exponential
//! backoff with full jitter until the task's `max_attempts`; a lease that outlives the task's
//! timeout plus a grace period expires as a timeout. Each node has a circuit breaker fed with
//! attempt outcomes; an open breaker keeps new work away from it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::backoff::full_jitter_ms;
use super::breaker::{BreakerConfig, CircuitBreaker};
use super::delivery::{DeliveryMode, Frame, Inbox, Outbox, OutboxConfig};
use super::message::{Attempt, Incarnation, Outcome, TaskId, ToAgent, ToOrchestrator};
use crate::health::{ClusterHealth, HealthConfig, HealthState, Metrics, NodeHealth, PhiConfig, cluster_health};
use crate::measure::LoadResult;
use crate::placement::{AllocId, NodeIdx, NodeState, Observations, Placement, Placer, Pool, Request, TaskKey};

/// Events kept for the shell between drains; older ones are dropped and counted.
pub const EVENTS_MAX: usize = 1_000_000;
/// Attempts whose outcomes make the recent failure rate `adaptive` placement reads.
pub const RECENT_ATTEMPTS: usize = 100;

/// Settings of an [`Orchestrator`].
#[derive(Clone, Debug, PartialEq)]
pub struct OrchestratorConfig {
    /// Failure detector settings.
    pub phi: PhiConfig,
    /// Health score thresholds and anti-flapping.
    pub health: HealthConfig,
    /// Circuit breaker per node.
    pub breaker: BreakerConfig,
    /// Resends to agents.
    pub outbox: OutboxConfig,
    /// First retry backoff (before jitter).
    pub backoff_base_ms: f64,
    /// Longest retry backoff.
    pub backoff_cap_ms: f64,
    /// Time past a task's timeout before its lease expires.
    pub lease_grace_ms: u64,
    /// Reassignments of one task (node deaths, preemptions) before it fails.
    pub reassignments_max: u32,
    /// Unschedulable tasks tried per scheduling pass before the pass stops.
    pub placement_misses_per_pass: usize,
    /// Least time between two scheduling passes: what changes meanwhile (results, new nodes)
    /// is placed in one pass.
    pub schedule_interval_ms: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            phi: PhiConfig::default(),
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            outbox: OutboxConfig::default(),
            backoff_base_ms: 100.0,
            backoff_cap_ms: 10_000.0,
            lease_grace_ms: 5_000,
            reassignments_max: 100,
            placement_misses_per_pass: 64,
            schedule_interval_ms: 50,
        }
    }
}

/// A task to run.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInput {
    /// What it needs of a node (its `task` key is replaced by the orchestrator's task id).
    pub request: Request,
    /// What to run, in the shell's terms.
    pub work: u32,
    /// How long an attempt may run.
    pub timeout_ms: u64,
    /// Attempts before it fails.
    pub max_attempts: u32,
    /// Sequential stage: stage `k + 1` begins when every task of stage `k` has ended.
    pub stage: u32,
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Terminal {
    /// An attempt passed.
    Completed,
    /// Out of attempts (or reassignments).
    Failed,
    /// Cancelled.
    Cancelled,
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Its stage has not begun.
    Held,
    /// Waiting for a node.
    Pending,
    /// Backing off before a retry.
    Waiting {
        /// When it becomes pending again.
        ready_ms: u64,
    },
    /// Leased to a node for one attempt.
    Leased {
        /// The node.
        node: NodeIdx,
        /// The node's incarnation.
        incarnation: Incarnation,
        /// The attempt.
        attempt: Attempt,
        /// Whether the agent said it started.
        started: bool,
    },
    /// Ended.
    Ended(Terminal),
}

/// What happened, for reports and checkers.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A node incarnation said hello.
    NodeUp {
        /// The node.
        node: NodeIdx,
        /// Its new incarnation.
        incarnation: Incarnation,
    },
    /// A node was declared dead.
    NodeDead {
        /// The node.
        node: NodeIdx,
    },
    /// A node said it is shutting down; its leases were taken back.
    NodeLeft {
        /// The node.
        node: NodeIdx,
    },
    /// A node declared dead was heard from again, in the same incarnation (a false suspicion,
    /// or a healed partition).
    NodeBack {
        /// The node.
        node: NodeIdx,
    },
    /// An attempt was leased to a node.
    Assigned {
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
        /// The node.
        node: NodeIdx,
        /// The node's incarnation.
        incarnation: Incarnation,
    },
    /// A result was counted.
    Counted {
        /// The task.
        task: TaskId,
        /// The attempt it came from.
        attempt: Attempt,
        /// The node.
        node: NodeIdx,
        /// The outcome.
        outcome: Outcome,
        /// What a load attempt measured, as its node sent it (unread: the shell decodes it).
        load: Option<Box<LoadResult>>,
    },
    /// A result was refused by fencing.
    Stale {
        /// The task.
        task: TaskId,
        /// The attempt it came from.
        attempt: Attempt,
        /// The node.
        node: NodeIdx,
    },
    /// A lease was taken back (node dead, new incarnation, preemption) and the task requeued.
    Reassigned {
        /// The task.
        task: TaskId,
        /// The node it was taken from.
        from: NodeIdx,
    },
    /// A lease outlived the task's timeout.
    LeaseExpired {
        /// The task.
        task: TaskId,
        /// The node.
        node: NodeIdx,
    },
    /// A task ended.
    Ended {
        /// The task.
        task: TaskId,
        /// How.
        terminal: Terminal,
    },
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    node: NodeIdx,
    incarnation: Incarnation,
    attempt: Attempt,
    alloc: AllocId,
    expires_ms: u64,
    started: bool,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Held,
    Pending,
    Waiting(u64),
    Leased(Lease),
    Ended(Terminal),
}

#[derive(Clone, Debug)]
struct Task {
    input: TaskInput,
    state: State,
    /// The last attempt issued.
    attempt: Attempt,
    failures: u32,
    reassignments: u32,
    cancel_requested: bool,
}

#[derive(Clone, Debug)]
struct Node {
    incarnation: Option<Incarnation>,
    health: NodeHealth,
    breaker: CircuitBreaker,
    outbox: Outbox<ToAgent>,
    inbox: Inbox,
    dead: bool,
    /// This incarnation said it is leaving: nothing it says revives it.
    left: bool,
    leases: BTreeSet<TaskId>,
    /// This node's entries in the orchestrator's time indexes.
    dead_at_ms: Option<u64>,
    resend_at_ms: Option<u64>,
}

/// Counters for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Leases taken back and requeued.
    pub reassignments: u64,
    /// Results refused by fencing.
    pub stale_results: u64,
    /// Nodes declared dead that came back in the same incarnation.
    pub nodes_back: u64,
    /// Events dropped because the shell did not drain them.
    pub events_dropped: u64,
}

/// The orchestrator.
#[derive(Clone, Debug)]
pub struct Orchestrator {
    config: OrchestratorConfig,
    rng: ChaCha8Rng,
    pool: Pool,
    placer: Placer,
    nodes: Vec<Node>,
    tasks: Vec<Task>,
    /// Pending tasks by priority (highest first), then id.
    pending: BTreeSet<(u32, TaskId)>,
    waiting: BTreeSet<(u64, TaskId)>,
    expiries: BTreeSet<(u64, TaskId)>,
    /// Tasks not yet ended, per stage; the lowest stage with any is open.
    unfinished: BTreeMap<u32, u32>,
    held: BTreeMap<u32, Vec<TaskId>>,
    /// Whether capacity, node states or the queue changed since the last scheduling pass.
    dirty: bool,
    /// When each node will be dead without another heartbeat, when an open breaker turns
    /// half-open, and when a node's outbox resends: time indexes, so a tick costs O(log n) per
    /// node that has something due, not O(n).
    dead_at: BTreeSet<(u64, u32)>,
    breaker_at: BTreeSet<(u64, u32)>,
    resend_at: BTreeSet<(u64, u32)>,
    /// Counts results of attempts other than the current lease (a test-only fault).
    fencing_off: bool,
    /// The last [`RECENT_ATTEMPTS`] counted attempts, whether each failed, and how many did.
    recent: VecDeque<bool>,
    recent_failures: u32,
    /// No scheduling pass before this time ([`OrchestratorConfig::schedule_interval_ms`]).
    next_pass_ms: u64,
    transmit: VecDeque<(NodeIdx, Frame<ToAgent>)>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Orchestrator {
    /// An orchestrator for `pool`'s nodes (none registered yet) and `tasks`, numbered in order.
    pub fn new(
        mut pool: Pool,
        placer: Placer,
        tasks: Vec<TaskInput>,
        config: OrchestratorConfig,
        seed: u64,
    ) -> Orchestrator {
        let nodes = (0..pool.len())
            .map(|i| {
                // A node takes no work until its agent says hello.
                pool.set_state(NodeIdx(i as u32), NodeState::Dead).expect("a node of the pool");
                Node {
                    incarnation: None,
                    health: NodeHealth::new(config.phi.clone(), config.health),
                    breaker: CircuitBreaker::new(config.breaker),
                    outbox: Outbox::new(config.outbox, 0),
                    inbox: Inbox::new(0),
                    dead: true,
                    left: false,
                    leases: BTreeSet::new(),
                    dead_at_ms: None,
                    resend_at_ms: None,
                }
            })
            .collect();
        let first_stage = tasks.iter().map(|t| t.stage).min().unwrap_or(0);
        let mut o = Orchestrator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            pool,
            placer,
            nodes,
            tasks: Vec::with_capacity(tasks.len()),
            pending: BTreeSet::new(),
            waiting: BTreeSet::new(),
            expiries: BTreeSet::new(),
            unfinished: BTreeMap::new(),
            held: BTreeMap::new(),
            dirty: true,
            dead_at: BTreeSet::new(),
            breaker_at: BTreeSet::new(),
            resend_at: BTreeSet::new(),
            fencing_off: false,
            recent: VecDeque::with_capacity(RECENT_ATTEMPTS),
            recent_failures: 0,
            next_pass_ms: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        };
        for (i, mut input) in tasks.into_iter().enumerate() {
            let id = TaskId(i as u64);
            input.request.task = TaskKey(id.0);
            *o.unfinished.entry(input.stage).or_default() += 1;
            let state = if input.stage == first_stage {
                o.pending.insert((u32::MAX - input.request.priority, id));
                State::Pending
            } else {
                o.held.entry(input.stage).or_default().push(id);
                State::Held
            };
            o.tasks.push(Task {
                input,
                state,
                attempt: Attempt(0),
                failures: 0,
                reassignments: 0,
                cancel_requested: false,
            });
        }
        o
    }

    /// Test hook: count every result, fenced or not, to show that checkers catch it.
    pub fn disable_fencing_for_tests(&mut self) {
        self.fencing_off = true;
    }

    /// The resource pool (read only: the orchestrator owns its books).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of tasks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// A task's state.
    pub fn task_state(&self, task: TaskId) -> TaskState {
        match self.tasks[task.0 as usize].state {
            State::Held => TaskState::Held,
            State::Pending => TaskState::Pending,
            State::Waiting(ready_ms) => TaskState::Waiting { ready_ms },
            State::Leased(l) => {
                TaskState::Leased { node: l.node, incarnation: l.incarnation, attempt: l.attempt, started: l.started }
            }
            State::Ended(t) => TaskState::Ended(t),
        }
    }

    /// Whether every task has ended.
    pub fn is_done(&self) -> bool {
        self.unfinished.is_empty()
    }

    /// The health state of a node.
    pub fn node_health(&self, node: NodeIdx) -> HealthState {
        self.nodes[node.0 as usize].health.state()
    }

    /// A node's health: its score (0 to 100), its failure detector's phi at `now_ms` (0 before
    /// its first heartbeat) and the metrics of its last heartbeat.
    pub fn node_vitals(&self, node: NodeIdx, now_ms: u64) -> (u8, f64, Metrics) {
        let health = &self.nodes[node.0 as usize].health;
        let phi = health.detector().phi(now_ms);
        (health.score(), if phi.is_finite() { phi } else { f64::MAX }, health.metrics())
    }

    /// Whether a node is registered and not held dead: it said hello and has not died or left
    /// since.
    pub fn node_up(&self, node: NodeIdx) -> bool {
        let n = &self.nodes[node.0 as usize];
        n.incarnation.is_some() && !n.dead
    }

    /// Nodes that said hello at least once.
    pub fn registered(&self) -> usize {
        self.nodes.iter().filter(|n| n.incarnation.is_some()).count()
    }

    /// Frames sent reliably to nodes and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.nodes.iter().filter(|n| !n.dead).map(|n| n.outbox.in_flight()).sum()
    }

    /// Nodes that said hello once and are held dead now (declared dead, or left).
    pub fn nodes_down(&self) -> usize {
        self.nodes.iter().filter(|n| n.incarnation.is_some() && n.dead).count()
    }

    /// The cluster's health over the registered nodes.
    pub fn cluster_health(&self) -> ClusterHealth {
        cluster_health(self.nodes.iter().filter(|n| n.incarnation.is_some()).map(|n| &n.health))
    }

    /// What the orchestrator observes of its own run, as `adaptive` placement reads it: the
    /// share of the last [`RECENT_ATTEMPTS`] counted attempts that failed, and the tasks
    /// waiting for a node.
    pub fn observations(&self) -> Observations {
        let failure_rate =
            if self.recent.is_empty() { 0.0 } else { f64::from(self.recent_failures) / self.recent.len() as f64 };
        Observations { failure_rate, queue_len: self.pending.len() as u64 }
    }

    /// How often `adaptive` placement chose each way (see [`Placer::adaptive_choices`]).
    pub fn adaptive_choices(&self) -> [u64; 4] {
        self.placer.adaptive_choices()
    }

    /// When [`Orchestrator::tick`] next has something to do: a node due to be declared dead, a
    /// breaker to half-open, a lease to expire, a retry, a resend, or a scheduling pass. `None`
    /// when nothing is due until a frame arrives.
    pub fn poll_timeout(&self) -> Option<u64> {
        let pass = self.dirty.then_some(self.next_pass_ms);
        [
            self.dead_at.first().map(|e| e.0),
            self.breaker_at.first().map(|e| e.0),
            self.expiries.first().map(|e| e.0),
            self.waiting.first().map(|e| e.0),
            self.resend_at.first().map(|e| e.0),
            pass,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next frame to send, and to which node.
    pub fn poll_transmit(&mut self) -> Option<(NodeIdx, Frame<ToAgent>)> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn send(&mut self, now_ms: u64, node: NodeIdx, message: ToAgent) -> bool {
        let sent = match self.nodes[node.0 as usize].outbox.send(now_ms, DeliveryMode::ExactlyOnce, message) {
            Ok(packet) => {
                self.transmit.push_back((node, Frame::Data(packet)));
                true
            }
            Err(_) => false,
        };
        self.watch_outbox(node);
        sent
    }

    /// Keeps the node's entry in the resend index up to date.
    fn watch_outbox(&mut self, node: NodeIdx) {
        let n = &mut self.nodes[node.0 as usize];
        let due = n.outbox.next_due_ms();
        if due == n.resend_at_ms {
            return;
        }
        if let Some(old) = n.resend_at_ms {
            self.resend_at.remove(&(old, node.0));
        }
        n.resend_at_ms = due;
        if let Some(due) = due {
            self.resend_at.insert((due, node.0));
        }
    }

    /// Keeps the node's entry in the death index up to date: when, without another heartbeat,
    /// phi will reach the threshold (never earlier than `not_before_ms`).
    fn watch_health(&mut self, node: NodeIdx, not_before_ms: u64) {
        let n = &mut self.nodes[node.0 as usize];
        if let Some(old) = n.dead_at_ms.take() {
            self.dead_at.remove(&(old, node.0));
        }
        if n.dead || n.incarnation.is_none() {
            return;
        }
        if let Some(at) = n.health.dead_at_ms() {
            let at = at.max(not_before_ms);
            n.dead_at_ms = Some(at);
            self.dead_at.insert((at, node.0));
        }
    }

    /// A frame from `node` arrived at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, node: NodeIdx, frame: Frame<ToOrchestrator>) {
        let Some(n) = self.nodes.get(node.0 as usize) else { return };
        let packet = match frame {
            Frame::Ack { session, id } => {
                self.nodes[node.0 as usize].outbox.acknowledge(session, id);
                self.watch_outbox(node);
                return;
            }
            Frame::Data(packet) => packet,
        };
        let incarnation = Incarnation(packet.session);
        match n.incarnation {
            Some(current) if incarnation < current => return, // the node's previous life
            Some(current) if incarnation == current => {}
            _ => self.new_incarnation(now_ms, node, incarnation),
        }
        let receipt = self.nodes[node.0 as usize].inbox.receive(&packet);
        if let Some(id) = receipt.ack {
            self.transmit.push_back((node, Frame::Ack { session: packet.session, id }));
        }
        if !receipt.deliver {
            return;
        }
        match packet.body {
            ToOrchestrator::Hello { .. } => self.heard(now_ms, node, None),
            ToOrchestrator::Leaving { .. } => self.left(node),
            ToOrchestrator::Heartbeat { metrics, running, .. } => {
                self.heard(now_ms, node, Some(metrics));
                for (task, attempt) in running {
                    if !self.is_current(task, node, incarnation, attempt) {
                        self.send(now_ms, node, ToAgent::Cancel { task, attempt });
                    }
                }
            }
            ToOrchestrator::Started { task, attempt, .. } => {
                if self.is_current(task, node, incarnation, attempt)
                    && let State::Leased(lease) = &mut self.tasks[task.0 as usize].state
                {
                    lease.started = true;
                }
            }
            ToOrchestrator::Finished { task, attempt, outcome, load, .. } => {
                self.finished(now_ms, node, incarnation, (task, attempt), outcome, load);
            }
        }
    }

    fn is_current(&self, task: TaskId, node: NodeIdx, incarnation: Incarnation, attempt: Attempt) -> bool {
        matches!(
            self.tasks.get(task.0 as usize).map(|t| t.state),
            Some(State::Leased(l)) if l.node == node && l.incarnation == incarnation && l.attempt == attempt
        )
    }

    fn new_incarnation(&mut self, now_ms: u64, node: NodeIdx, incarnation: Incarnation) {
        // Whatever the previous life held is gone with it.
        let old: Vec<TaskId> = self.nodes[node.0 as usize].leases.iter().copied().collect();
        for task in old {
            self.reassign(task);
        }
        let config = self.config.clone();
        let n = &mut self.nodes[node.0 as usize];
        n.incarnation = Some(incarnation);
        n.health = NodeHealth::new(config.phi, config.health);
        n.breaker = CircuitBreaker::new(config.breaker);
        n.outbox = Outbox::new(config.outbox, incarnation.0);
        n.inbox = Inbox::new(incarnation.0);
        n.dead = false;
        n.left = false;
        self.watch_outbox(node);
        self.set_pool_state(node, HealthState::Healthy, false);
        self.event(Event::NodeUp { node, incarnation });
        self.heard(now_ms, node, None);
    }

    /// `node` shuts down: it is dead to placement, and its leases go elsewhere.
    fn left(&mut self, node: NodeIdx) {
        let n = &mut self.nodes[node.0 as usize];
        if n.left {
            return;
        }
        n.left = true;
        n.dead = true;
        self.event(Event::NodeLeft { node });
        let leases: Vec<TaskId> = self.nodes[node.0 as usize].leases.iter().copied().collect();
        for task in leases {
            self.reassign(task);
        }
        self.set_pool_state(node, HealthState::Dead, false);
    }

    /// A sign of life from `node` (a heartbeat, or a hello).
    fn heard(&mut self, now_ms: u64, node: NodeIdx, metrics: Option<Metrics>) {
        let n = &mut self.nodes[node.0 as usize];
        if n.left {
            return;
        }
        let metrics = metrics.unwrap_or_default();
        let state = n.health.heartbeat(now_ms, metrics);
        let was_dead = n.dead;
        if was_dead && state != HealthState::Dead {
            n.dead = false;
            self.stats.nodes_back += 1;
            self.event(Event::NodeBack { node });
        }
        let open = self.nodes[node.0 as usize].breaker.is_open(now_ms);
        self.set_pool_state(node, state, open);
        self.watch_health(node, now_ms);
    }

    fn set_pool_state(&mut self, node: NodeIdx, state: HealthState, circuit_open: bool) {
        let pool_state = match state {
            HealthState::Healthy => NodeState::Healthy,
            HealthState::Degraded => NodeState::Degraded,
            HealthState::Unhealthy => NodeState::Unhealthy,
            HealthState::Dead => NodeState::Dead,
        };
        if self.pool.state(node) != pool_state || self.pool.eligible(node) == circuit_open {
            self.dirty = true;
        }
        self.pool.set_state(node, pool_state).expect("a node of the pool");
        self.pool.set_circuit_open(node, circuit_open).expect("a node of the pool");
        self.pool.set_health(node, self.nodes[node.0 as usize].health.score()).expect("a node of the pool");
    }

    fn finished(
        &mut self,
        now_ms: u64,
        node: NodeIdx,
        incarnation: Incarnation,
        (task, attempt): (TaskId, Attempt),
        outcome: Outcome,
        load: Option<Box<LoadResult>>,
    ) {
        if task.0 as usize >= self.tasks.len() {
            return; // A task we never had: a confused or hostile peer.
        }
        // Whatever we decide, the agent may forget the result now.
        self.send(now_ms, node, ToAgent::ResultAccepted { task, attempt });
        if !self.is_current(task, node, incarnation, attempt) {
            if self.fencing_off {
                // Test-only: report the stale result as counted, as a core without fencing would,
                // but leave the books alone so the run goes on and the checkers can see it.
                self.event(Event::Counted { task, attempt, node, outcome: outcome.clone(), load });
                if outcome == Outcome::Passed {
                    self.event(Event::Ended { task, terminal: Terminal::Completed });
                }
                return;
            }
            self.stats.stale_results += 1;
            self.event(Event::Stale { task, attempt, node });
            return;
        }
        self.event(Event::Counted { task, attempt, node, outcome: outcome.clone(), load });
        self.end_lease(task);
        // A cancel nobody asked for is a failed attempt: the agent drops its work without a
        // result when its node leaves, so only a broken or hostile node says it, and were it
        // free, such a node could requeue a task forever.
        let requested = self.tasks[task.0 as usize].cancel_requested;
        let failed = match outcome {
            Outcome::Passed => false,
            Outcome::Cancelled => !requested,
            Outcome::Failed(_) | Outcome::TimedOut => true,
        };
        if !(outcome == Outcome::Cancelled && requested) {
            self.recent_outcome(failed);
        }
        let breaker = &mut self.nodes[node.0 as usize].breaker;
        if let super::breaker::BreakerState::Open { until_ms } = breaker.record(now_ms, failed) {
            self.breaker_at.insert((until_ms, node.0));
        }
        let open = self.nodes[node.0 as usize].breaker.is_open(now_ms);
        let state = self.nodes[node.0 as usize].health.state();
        self.set_pool_state(node, state, open);
        match outcome {
            Outcome::Passed => self.end(task, Terminal::Completed),
            Outcome::Cancelled if requested => self.end(task, Terminal::Cancelled),
            Outcome::Cancelled | Outcome::Failed(_) | Outcome::TimedOut => self.attempt_failed(now_ms, task),
        }
    }

    /// Releases the task's lease, if it has one, leaving the task without a state to be set next.
    fn end_lease(&mut self, task: TaskId) -> Option<Lease> {
        let lease = self.forget_lease(task)?;
        self.pool.release(lease.alloc).expect("a lease holds a live allocation");
        Some(lease)
    }

    /// Forgets the task's lease but for its allocation, which the caller releases (or the pool
    /// already has, as after preemption).
    fn forget_lease(&mut self, task: TaskId) -> Option<Lease> {
        let State::Leased(lease) = self.tasks[task.0 as usize].state else { return None };
        self.expiries.remove(&(lease.expires_ms, task));
        self.nodes[lease.node.0 as usize].leases.remove(&task);
        self.tasks[task.0 as usize].state = State::Pending; // the caller sets what follows
        self.dirty = true;
        Some(lease)
    }

    fn recent_outcome(&mut self, failed: bool) {
        if self.recent.len() == RECENT_ATTEMPTS && self.recent.pop_front() == Some(true) {
            self.recent_failures -= 1;
        }
        self.recent.push_back(failed);
        self.recent_failures += u32::from(failed);
    }

    fn attempt_failed(&mut self, now_ms: u64, task: TaskId) {
        let t = &mut self.tasks[task.0 as usize];
        t.failures += 1;
        if t.cancel_requested {
            return self.end(task, Terminal::Cancelled);
        }
        if t.failures >= t.input.max_attempts.max(1) {
            return self.end(task, Terminal::Failed);
        }
        let wait =
            full_jitter_ms(t.failures - 1, self.config.backoff_base_ms, self.config.backoff_cap_ms, &mut self.rng);
        let ready_ms = now_ms.saturating_add(wait);
        self.tasks[task.0 as usize].state = State::Waiting(ready_ms);
        self.pending.remove(&(u32::MAX - self.tasks[task.0 as usize].input.request.priority, task));
        self.waiting.insert((ready_ms, task));
    }

    fn requeue(&mut self, task: TaskId) {
        let t = &mut self.tasks[task.0 as usize];
        if t.cancel_requested {
            return self.end(task, Terminal::Cancelled);
        }
        t.state = State::Pending;
        self.pending.insert((u32::MAX - t.input.request.priority, task));
        self.dirty = true;
    }

    /// Takes a lease back (node dead, new incarnation, preemption) and requeues the task.
    fn reassign(&mut self, task: TaskId) {
        if let Some(lease) = self.end_lease(task) {
            self.taken_back(task, lease);
        }
    }

    /// Requeues a task whose lease was taken back, counting the reassignment.
    fn taken_back(&mut self, task: TaskId, lease: Lease) {
        self.stats.reassignments += 1;
        self.event(Event::Reassigned { task, from: lease.node });
        let t = &mut self.tasks[task.0 as usize];
        t.reassignments += 1;
        if t.reassignments > self.config.reassignments_max {
            return self.end(task, Terminal::Failed);
        }
        self.requeue(task);
    }

    fn end(&mut self, task: TaskId, terminal: Terminal) {
        let t = &mut self.tasks[task.0 as usize];
        assert!(!matches!(t.state, State::Ended(_)), "{task:?} ends once");
        let priority = t.input.request.priority;
        let stage = t.input.stage;
        if let State::Waiting(ready_ms) = t.state {
            self.waiting.remove(&(ready_ms, task));
        }
        t.state = State::Ended(terminal);
        self.pending.remove(&(u32::MAX - priority, task));
        self.event(Event::Ended { task, terminal });
        let left = self.unfinished.get_mut(&stage).expect("an unfinished task's stage is counted");
        *left -= 1;
        if *left == 0 {
            self.unfinished.remove(&stage);
            // The next stage begins when every task of the earlier ones has ended.
            if let Some((&next, _)) = self.unfinished.iter().next()
                && let Some(ids) = self.held.remove(&next)
            {
                for id in ids {
                    self.tasks[id.0 as usize].state = State::Pending;
                    self.pending.insert((u32::MAX - self.tasks[id.0 as usize].input.request.priority, id));
                }
                self.dirty = true;
            }
        }
    }

    /// Cancels a task: at once if it is not leased, else by telling its node.
    pub fn cancel(&mut self, now_ms: u64, task: TaskId) {
        let Some(t) = self.tasks.get_mut(task.0 as usize) else { return };
        t.cancel_requested = true;
        match t.state {
            State::Ended(_) => {}
            State::Leased(lease) => {
                self.send(now_ms, lease.node, ToAgent::Cancel { task, attempt: lease.attempt });
            }
            State::Held => {
                let stage = t.input.stage;
                if let Some(ids) = self.held.get_mut(&stage) {
                    ids.retain(|&id| id != task);
                }
                self.end(task, Terminal::Cancelled);
            }
            State::Pending | State::Waiting(_) => self.end(task, Terminal::Cancelled),
        }
    }

    /// Time has passed to `now_ms`: failure detection, lease expiry, retries, scheduling and
    /// resends. Call it at [`Orchestrator::poll_timeout`] (calling it earlier or more often is
    /// harmless).
    pub fn tick(&mut self, now_ms: u64) {
        while let Some(&(at, i)) = self.dead_at.first()
            && at <= now_ms
        {
            self.dead_at.pop_first();
            let node = NodeIdx(i);
            let n = &mut self.nodes[i as usize];
            n.dead_at_ms = None;
            if n.incarnation.is_none() || n.dead {
                continue;
            }
            let state = n.health.evaluate(now_ms);
            let open = n.breaker.is_open(now_ms);
            if state == HealthState::Dead {
                n.dead = true;
                self.event(Event::NodeDead { node });
                let leases: Vec<TaskId> = self.nodes[i as usize].leases.iter().copied().collect();
                for task in leases {
                    self.reassign(task);
                }
            } else {
                // The prediction rounds; look again a moment later.
                self.watch_health(node, now_ms + 1);
            }
            self.set_pool_state(node, state, open);
        }
        while let Some(&(at, i)) = self.breaker_at.first()
            && at <= now_ms
        {
            self.breaker_at.pop_first();
            let node = NodeIdx(i);
            let state = self.nodes[i as usize].health.state();
            let open = self.nodes[i as usize].breaker.is_open(now_ms);
            self.set_pool_state(node, state, open);
        }
        while let Some(&(expires_ms, task)) = self.expiries.first()
            && expires_ms <= now_ms
        {
            self.expiries.pop_first();
            let lease = self.end_lease(task).expect("an expiry belongs to a lease");
            self.event(Event::LeaseExpired { task, node: lease.node });
            self.recent_outcome(true);
            self.send(now_ms, lease.node, ToAgent::Cancel { task, attempt: lease.attempt });
            self.attempt_failed(now_ms, task);
        }
        while let Some(&(ready_ms, task)) = self.waiting.first()
            && ready_ms <= now_ms
        {
            self.waiting.remove(&(ready_ms, task));
            self.requeue(task);
        }
        if self.dirty && now_ms >= self.next_pass_ms {
            self.next_pass_ms = now_ms.saturating_add(self.config.schedule_interval_ms);
            let observed = self.observations();
            self.schedule(now_ms, &observed);
        }
        while let Some(&(at, i)) = self.resend_at.first()
            && at <= now_ms
        {
            self.resend_at.pop_first();
            self.nodes[i as usize].resend_at_ms = None;
            for packet in self.nodes[i as usize].outbox.poll(now_ms) {
                self.transmit.push_back((NodeIdx(i), Frame::Data(packet)));
            }
            self.watch_outbox(NodeIdx(i));
        }
    }

    /// Places pending tasks, highest priority first, until the queue is empty or
    /// `placement_misses_per_pass` tasks could not be placed.
    fn schedule(&mut self, now_ms: u64, observed: &Observations) {
        self.dirty = false;
        let mut misses = 0;
        let mut after: Option<(u32, TaskId)> = None;
        loop {
            // Walk the queue in order without copying it: placed tasks leave it as we go.
            let next = match after {
                None => self.pending.first().copied(),
                Some(key) => self.pending.range((Excluded(key), Unbounded)).next().copied(),
            };
            let Some((key, task)) = next else { break };
            after = Some((key, task));
            if misses >= self.config.placement_misses_per_pass {
                self.dirty = true; // more may fit; look again next tick
                break;
            }
            let mut request = self.tasks[task.0 as usize].input.request.clone();
            request.now_ms = now_ms;
            request.until_ms = Some(now_ms.saturating_add(self.tasks[task.0 as usize].input.timeout_ms));
            match self.placer.place(&mut self.pool, &request, observed) {
                Placement::Placed { node, alloc } => self.lease(now_ms, (key, task), task, node, alloc),
                Placement::Preempted { node, alloc, evicted } => {
                    for released in evicted {
                        // The pool already released the victim's allocation.
                        let victim = TaskId(released.task.0);
                        if let Some(lease) = self.forget_lease(victim) {
                            self.send(now_ms, lease.node, ToAgent::Cancel { task: victim, attempt: lease.attempt });
                            self.taken_back(victim, lease);
                        }
                    }
                    self.lease(now_ms, (key, task), task, node, alloc);
                }
                Placement::Unschedulable(_) => misses += 1,
            }
        }
    }

    fn lease(&mut self, now_ms: u64, key: (u32, TaskId), task: TaskId, node: NodeIdx, alloc: AllocId) {
        let incarnation = self.nodes[node.0 as usize].incarnation.expect("only registered nodes take work");
        let t = &mut self.tasks[task.0 as usize];
        t.attempt = Attempt(t.attempt.0 + 1);
        let attempt = t.attempt;
        let expires_ms = now_ms.saturating_add(t.input.timeout_ms).saturating_add(self.config.lease_grace_ms);
        let (work, timeout_ms) = (t.input.work, t.input.timeout_ms);
        if !self.send(now_ms, node, ToAgent::Assign { task, attempt, work, timeout_ms }) {
            // The node's outbox is full: give the capacity back and try later.
            self.pool.release(alloc).expect("just allocated");
            self.dirty = true;
            return;
        }
        self.pending.remove(&key);
        self.tasks[task.0 as usize].state =
            State::Leased(Lease { node, incarnation, attempt, alloc, expires_ms, started: false });
        self.expiries.insert((expires_ms, task));
        self.nodes[node.0 as usize].leases.insert(task);
        self.event(Event::Assigned { task, attempt, node, incarnation });
    }
}
