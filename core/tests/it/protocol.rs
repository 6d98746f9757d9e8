//! The in-core harness: one orchestrator and N agents in memory, joined by a seeded network
//! that drops, duplicates, delays and reorders frames, with agents killed and restarted and
//! nodes cut off. Checkers that do not trust the orchestrator watch every event:
//!
//! - every task ends in exactly one terminal state;
//! - a counted result comes from the attempt currently leased for that task (no stale result
//!   counted);
//! - no node is ever over-committed;
//! - once the faults stop, every task ends (liveness).
//!
//! Thousands of seeded schedules run through it; one test switches fencing off and shows the
//! checkers catch the double count.

use std::collections::BTreeMap;

use dtest_core::health::Metrics;
use dtest_core::placement::{Amounts, CapSet, Locality, NodeIdx, NodeSpec, Placer, Pool, Request, TaskKey};
use dtest_core::protocol::{
    Agent, AgentAction, AgentConfig, Attempt, Event, Frame, Incarnation, Orchestrator, OrchestratorConfig, Outcome,
    TaskId, TaskInput, ToAgent, ToOrchestrator,
};
use dtest_core::scenario::{Allocation, Distribution, Weights};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

const NODES: usize = 4;
const TASKS: usize = 24;
const STEP_MS: u64 = 10;
/// Faults happen only before this.
const FAULTS_UNTIL_MS: u64 = 20_000;
/// Every task must have ended by this (the faults stop 60 s earlier).
const LIVENESS_BY_MS: u64 = 80_000;

/// Work an agent runs: (node, incarnation, task, attempt, how it will end).
type Work = (usize, u64, TaskId, Attempt, Outcome);

enum Message {
    ToAgent(usize, Frame<ToAgent>),
    ToOrchestrator(usize, Frame<ToOrchestrator>),
}

struct Harness {
    rng: ChaCha8Rng,
    now: u64,
    orchestrator: Orchestrator,
    agents: Vec<Option<Agent>>,
    incarnations: Vec<u64>,
    /// Frames in flight, by arrival time and sequence (so equal times keep send order).
    network: BTreeMap<(u64, u64), Message>,
    /// Work running on agents, by (done at, seq).
    work: BTreeMap<(u64, u64), Work>,
    seq: u64,
    /// Per node, the time until which its links drop everything (a partition).
    cut_until: Vec<u64>,
    /// Per node, when a killed agent restarts.
    restart_at: Vec<Option<u64>>,
    capacity: Vec<Amounts>,
    checker: Checker,
}

#[derive(Default)]
struct Checker {
    /// Each task's sequential stage.
    stages: Vec<u32>,
    ended: BTreeMap<TaskId, u32>,
    /// The attempt and node of each task's latest lease.
    leased: BTreeMap<TaskId, (Attempt, NodeIdx)>,
    violations: Vec<String>,
}

impl Checker {
    fn observe(&mut self, now: u64, event: &Event) {
        match event {
            Event::Assigned { task, attempt, node, .. } => {
                self.leased.insert(*task, (*attempt, *node));
                let stage = self.stages[task.0 as usize];
                let early = (0..self.stages.len() as u64)
                    .map(TaskId)
                    .filter(|t| self.stages[t.0 as usize] < stage)
                    .find(|t| !self.ended.contains_key(t));
                if let Some(unfinished) = early {
                    self.violations
                        .push(format!("{now} ms: {task:?} started before {unfinished:?} of an earlier stage ended"));
                }
            }
            Event::Counted { task, attempt, node, .. } if self.leased.get(task) != Some(&(*attempt, *node)) => {
                self.violations.push(format!("{now} ms: stale result of {task:?} {attempt:?} from {node:?} counted"));
            }
            Event::Ended { task, terminal } => {
                let count = self.ended.entry(*task).or_default();
                *count += 1;
                if *count > 1 {
                    self.violations.push(format!("{now} ms: {task:?} ended again ({terminal:?})"));
                }
            }
            _ => {}
        }
    }
}

fn amounts(cpu: u32) -> Amounts {
    let mut a = Amounts::ZERO;
    a.0[0] = cpu;
    a
}

impl Harness {
    fn new(seed: u64, fencing: bool) -> Harness {
        let rng = ChaCha8Rng::seed_from_u64(seed);
        let capacity: Vec<Amounts> = (0..NODES).map(|i| amounts(2_000 + 1_000 * (i as u32 % 2))).collect();
        let pool = Pool::new(
            capacity
                .iter()
                .map(|&capacity| NodeSpec { capacity, capabilities: CapSet(0), region: None, zone: None })
                .collect(),
        );
        let distribution =
            [Distribution::LeastLoaded, Distribution::RoundRobin, Distribution::Random][seed as usize % 3];
        let placer =
            Placer::new(&pool, distribution, Allocation::BestFit, Weights::default(), seed.is_multiple_of(2), seed);
        let stages: Vec<u32> = (0..TASKS).map(|i| if seed.is_multiple_of(5) { (i / 8) as u32 } else { 0 }).collect();
        let tasks = (0..TASKS)
            .map(|i| TaskInput {
                request: Request {
                    task: TaskKey(0),
                    spec: None,
                    amounts: amounts(500 + 500 * (i as u32 % 3)),
                    capabilities: CapSet(0),
                    priority: (i % 4) as u32,
                    locality: Locality::default(),
                    now_ms: 0,
                    until_ms: None,
                },
                work: i as u32,
                timeout_ms: 10_000,
                max_attempts: 4,
                stage: stages[i],
            })
            .collect();
        let mut orchestrator = Orchestrator::new(pool, placer, tasks, OrchestratorConfig::default(), seed);
        if !fencing {
            orchestrator.disable_fencing_for_tests();
        }
        let agents = (0..NODES).map(|_| Some(Agent::new(0, Incarnation(1), AgentConfig::default()))).collect();
        Harness {
            rng,
            now: 0,
            orchestrator,
            agents,
            incarnations: vec![1; NODES],
            network: BTreeMap::new(),
            work: BTreeMap::new(),
            seq: 0,
            cut_until: vec![0; NODES],
            restart_at: vec![None; NODES],
            capacity,
            checker: Checker { stages, ..Checker::default() },
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.next_u64() % 100 < percent
    }

    /// Puts a frame on the network: while faults last it may be lost, duplicated and delayed.
    fn transmit(&mut self, node: usize, message: Message) {
        let faulty = self.now < FAULTS_UNTIL_MS;
        if faulty && (self.now < self.cut_until[node] || self.chance(15)) {
            return;
        }
        let copies = if faulty && self.chance(10) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = 1 + if faulty { self.rng.next_u64() % 400 } else { 5 };
            self.seq += 1;
            self.network.insert((self.now + delay, self.seq), message_clone(&message));
        }
    }

    fn step(&mut self) {
        self.now += STEP_MS;
        let now = self.now;
        // Faults: kills with later restarts, and partitions.
        if now < FAULTS_UNTIL_MS && self.chance(1) {
            let node = (self.rng.next_u64() % NODES as u64) as usize;
            if self.chance(50) {
                if self.agents[node].is_some() {
                    self.agents[node] = None;
                    self.work.retain(|_, w| w.0 != node);
                    self.restart_at[node] = Some(now + 1_000 + self.rng.next_u64() % 8_000);
                }
            } else {
                self.cut_until[node] = now + 1_000 + self.rng.next_u64() % 10_000;
            }
        }
        if now < FAULTS_UNTIL_MS && self.chance(1) && self.chance(20) {
            let task = TaskId(self.rng.next_u64() % TASKS as u64);
            self.orchestrator.cancel(now, task);
        }
        for node in 0..NODES {
            if self.restart_at[node].is_some_and(|t| t <= now) {
                self.restart_at[node] = None;
                self.incarnations[node] += 1;
                self.agents[node] = Some(Agent::new(now, Incarnation(self.incarnations[node]), AgentConfig::default()));
            }
        }
        // Deliveries due.
        while let Some((&(at, seq), _)) = self.network.first_key_value()
            && at <= now
        {
            let message = self.network.remove(&(at, seq)).expect("just seen");
            match message {
                Message::ToAgent(node, frame) => {
                    if let Some(agent) = &mut self.agents[node] {
                        agent.handle(now, frame);
                    }
                }
                Message::ToOrchestrator(node, frame) => self.orchestrator.handle(now, NodeIdx(node as u32), frame),
            }
        }
        // Work that ends.
        while let Some((&(at, seq), _)) = self.work.first_key_value()
            && at <= now
        {
            let (node, incarnation, task, attempt, outcome) = self.work.remove(&(at, seq)).expect("just seen");
            if let Some(agent) = &mut self.agents[node]
                && agent.incarnation().0 == incarnation
            {
                agent.work_finished(now, task, attempt, outcome);
            }
        }
        // Agents.
        for node in 0..NODES {
            let Some(agent) = &mut self.agents[node] else { continue };
            agent.set_metrics(Metrics { cpu: 0.3, memory: 0.4, ..Metrics::default() });
            agent.tick(now);
            let incarnation = agent.incarnation().0;
            let mut actions = Vec::new();
            while let Some(action) = agent.poll_action() {
                actions.push(action);
            }
            let mut frames = Vec::new();
            while let Some(frame) = agent.poll_transmit() {
                frames.push(frame);
            }
            for action in actions {
                match action {
                    AgentAction::Start { task, attempt, .. } => {
                        let duration = 200 + self.rng.next_u64() % 3_000;
                        let outcome =
                            if self.chance(10) { Outcome::Failed("exit 1".to_owned()) } else { Outcome::Passed };
                        self.seq += 1;
                        self.work.insert((now + duration, self.seq), (node, incarnation, task, attempt, outcome));
                    }
                    AgentAction::Stop { task, attempt } => {
                        self.work.retain(|_, w| !(w.0 == node && w.2 == task && w.3 == attempt));
                    }
                }
            }
            for frame in frames {
                self.transmit(node, Message::ToOrchestrator(node, frame));
            }
        }
        // The orchestrator.
        self.orchestrator.tick(now);
        while let Some((node, frame)) = self.orchestrator.poll_transmit() {
            let node = node.0 as usize;
            self.transmit(node, Message::ToAgent(node, frame));
        }
        while let Some(event) = self.orchestrator.poll_event() {
            self.checker.observe(now, &event);
        }
        for (node, capacity) in self.capacity.iter().enumerate() {
            let allocated = self.orchestrator.pool().allocated(NodeIdx(node as u32));
            if !capacity.covers(&allocated) {
                self.checker.violations.push(format!("{now} ms: node {node} over-committed"));
            }
        }
    }

    /// Runs until every task has ended or the liveness deadline; returns the violations.
    fn run(mut self) -> Vec<String> {
        while self.now < LIVENESS_BY_MS && !(self.orchestrator.is_done() && self.now >= FAULTS_UNTIL_MS) {
            self.step();
            if !self.checker.violations.is_empty() {
                return self.checker.violations;
            }
        }
        let mut violations = self.checker.violations;
        if !self.orchestrator.is_done() {
            violations.push(format!("{} ms: not every task ended after the faults stopped", self.now));
        }
        for task in 0..TASKS as u64 {
            if self.checker.ended.get(&TaskId(task)) != Some(&1) {
                violations.push(format!("task {task} ended {:?} times", self.checker.ended.get(&TaskId(task))));
            }
        }
        violations
    }
}

fn message_clone(message: &Message) -> Message {
    match message {
        Message::ToAgent(n, f) => Message::ToAgent(*n, f.clone()),
        Message::ToOrchestrator(n, f) => Message::ToOrchestrator(*n, f.clone()),
    }
}

#[test]
fn thousands_of_faulty_schedules_keep_every_invariant() {
    let seeds = 2_000u64;
    let failing: Vec<(u64, Vec<String>)> =
        (0..seeds).map(|seed| (seed, Harness::new(seed, true).run())).filter(|(_, v)| !v.is_empty()).collect();
    assert!(failing.is_empty(), "{} of {seeds} seeds failed; first: {:?}", failing.len(), failing.first());
}

#[test]
fn with_fencing_off_the_harness_finds_the_double_count() {
    let found = (0..2_000u64).find(|&seed| {
        let violations = Harness::new(seed, false).run();
        violations.iter().any(|v| v.contains("stale result") || v.contains("ended again"))
    });
    assert!(found.is_some(), "switching fencing off must be caught by the checkers");
}

/// A node's replies are bounded by what its run asks of it: the base for commands alone, room
/// for every second each load can report, and never past the cap.
#[test]
fn a_run_reads_no_longer_replies_than_its_loads_can_fill() {
    use dtest_core::run::{REPLY_BASE_BYTES, REPLY_BYTES_CAP, SECOND_WIRE_BYTES_MAX, reply_bytes_max};
    let parse = |text: &str| dtest_core::scenario::parse(text.as_bytes()).expect("a valid scenario");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).expect("a shipped scenario");
    assert_eq!(reply_bytes_max(&parse(&read("sharded-tests.json"))), REPLY_BASE_BYTES, "no load, no room for one");
    let loads = reply_bytes_max(&parse(&read("load-patterns.json")));
    assert!(loads > REPLY_BASE_BYTES + 60 * SECOND_WIRE_BYTES_MAX && loads < REPLY_BYTES_CAP, "{loads}");
}
