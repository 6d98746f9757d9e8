//! One simulated run: madsim nodes running the core's agents, one running its orchestrator,
//! the scenario's faults at their times, simulated work and load, and the checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtest_core::health::Metrics;
use dtest_core::load::Schedule;
use dtest_core::measure::{Measure, Status};
use dtest_core::placement::{Catalog, Labels, NodeIdx, Observations, Placer, pool_of_scenario, request_for};
use dtest_core::protocol::{
    Agent, AgentAction, AgentConfig, Attempt, Event, Frame, Incarnation, Orchestrator, OrchestratorConfig, Outcome,
    TaskId, TaskInput, ToAgent, ToOrchestrator,
};
use dtest_core::scenario::{FaultKind, NodeRef, Scenario, TaskSpecId, Work};
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::{Instant, sleep, sleep_until};

use crate::post::{Letter, Mailbox, PostOffice};
use crate::{SimError, SimOptions};
use dtest_core::checker::Checker;
use dtest_core::faults::{Direction, NetFaults, Verdict};

/// How often the orchestrator's timers are looked at, in simulated milliseconds.
const ORCHESTRATOR_TICK_MS: u64 = 100;
/// A link's own latency, drawn uniformly per message (madsim's default link), in milliseconds;
/// the scenario's latency faults add to it.
const LINK_LATENCY_MS: std::ops::RangeInclusive<u64> = 1..=10;

/// What the checkers and the report need, shared by every simulated node.
#[derive(Default)]
pub(crate) struct World {
    pub faults: NetFaults,
    pub sent: u64,
    pub dropped: u64,
    /// Each node's current incarnation.
    pub incarnations: Vec<u64>,
    /// Every kill: (node, when).
    pub kills: Vec<(usize, u64)>,
    /// Per node, its latest kill.
    pub last_kill: Vec<Option<u64>>,
    pub paused: BTreeSet<usize>,
    pub checker: Checker,
    /// What load attempts measured, until their result is counted.
    pub attempt_load: BTreeMap<(TaskId, Attempt), Measure>,
    /// The counted attempts' measures, merged.
    pub load: Measure,
    pub util_samples: u64,
    pub util_sum: f64,
    pub util_max: f64,
    pub done_at_ms: Option<u64>,
    /// The orchestrator's counters, copied as it runs.
    pub stats: dtest_core::protocol::Stats,
    /// Nodes declared dead while alive and reachable.
    pub false_suspicions: u64,
    /// Frames in flight and alarms set.
    pub post: PostOffice,
    /// Events the orchestrator emitted.
    pub events: u64,
}

pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub scenario: Scenario,
    pub start: Instant,
    pub node_refs: Vec<NodeRef>,
    pub seed: u64,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.start).as_millis() as u64
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // The simulation runs on one thread; a poisoned lock means a checker panicked already.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which way a frame goes, with the frame.
enum Mail {
    ToAgent(Frame<ToAgent>),
    ToOrchestrator(Frame<ToOrchestrator>),
}

/// Sends a frame between the orchestrator and node `node` through the fault layer, which may
/// drop or delay it; the link's own latency comes on top.
fn send(shared: &Shared, node: usize, mail: Mail) {
    let now_ms = shared.now_ms();
    let mut world = shared.world();
    world.sent += 1;
    let direction = match mail {
        Mail::ToAgent(_) => Direction::ToNode,
        Mail::ToOrchestrator(_) => Direction::ToOrchestrator,
    };
    let mut rng = thread_rng();
    let verdict = world.faults.verdict(shared.node_refs[node], direction, || rng.r#gen::<f64>());
    let Verdict::Deliver(delay_ms) = verdict else {
        world.dropped += 1;
        return;
    };
    let at_ms = now_ms + rng.gen_range(LINK_LATENCY_MS) + delay_ms;
    let letter = match mail {
        Mail::ToAgent(frame) => {
            Letter::Agent { node, incarnation: world.incarnations[node], input: AgentInput::Frame(frame) }
        }
        Mail::ToOrchestrator(frame) => Letter::Orchestrator(OrchestratorInput::Frame(node, frame)),
    };
    world.post.post(at_ms, letter);
}

/// A normal draw (Box–Muller) from madsim's seeded generator.
fn normal(mean: f64, stddev: f64) -> f64 {
    let mut rng = thread_rng();
    let (u1, u2): (f64, f64) = (rng.r#gen::<f64>().max(f64::MIN_POSITIVE), rng.r#gen::<f64>());
    mean + stddev * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A node's agent, for one incarnation; madsim runs it again on restart.
async fn agent_main(shared: Arc<Shared>, node: usize) {
    let incarnation = {
        let mut world = shared.world();
        world.incarnations[node] += 1;
        world.incarnations[node]
    };
    let inputs = Mailbox::<AgentInput>::new();
    shared.world().post.open_agent(node, incarnation, inputs.clone());
    let heartbeat_interval_ms = shared.scenario.failure_detector.heartbeat_interval_ms;
    let mut agent = Agent::new(
        shared.now_ms(),
        Incarnation(incarnation),
        AgentConfig { heartbeat_interval_ms, ..AgentConfig::default() },
    );
    let mut alarm = Alarm::default();
    let mut work: BTreeMap<(TaskId, Attempt), madsim::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        agent.set_metrics(Metrics { cpu: 0.3, memory: 0.4, disk: 0.2, network: 0.1, task_error_rate: 0.0 });
        while let Some(action) = agent.poll_action() {
            match action {
                AgentAction::Start { task, attempt, work: spec } => {
                    let done = inputs.clone();
                    let handle = madsim::task::spawn(run_work(shared.clone(), done, task, attempt, spec));
                    work.insert((task, attempt), handle);
                }
                AgentAction::Stop { task, attempt } => {
                    if let Some(handle) = work.remove(&(task, attempt)) {
                        handle.abort();
                    }
                }
            }
        }
        while let Some(frame) = agent.poll_transmit() {
            send(&shared, node, Mail::ToOrchestrator(frame));
        }
        alarm.arm(&shared, agent.next_tick_ms(), |at_ms| Letter::Agent {
            node,
            incarnation,
            input: AgentInput::Tick(at_ms),
        });
        match inputs.take().await {
            AgentInput::Frame(frame) => agent.handle(shared.now_ms(), frame),
            AgentInput::Finished(task, attempt, outcome) => {
                work.remove(&(task, attempt));
                agent.work_finished(shared.now_ms(), task, attempt, outcome);
            }
            AgentInput::Tick(at_ms) => alarm.rang(at_ms),
        }
        agent.tick(shared.now_ms());
    }
}

/// What wakes an agent.
pub(crate) enum AgentInput {
    Frame(Frame<ToAgent>),
    Finished(TaskId, Attempt, Outcome),
    Tick(u64),
}

/// What wakes the orchestrator.
pub(crate) enum OrchestratorInput {
    Frame(usize, Frame<ToOrchestrator>),
    Tick(u64),
}

/// A wake-up at a simulated time, delivered as an input by the post office. Only an earlier
/// wake-up than the one already set is posted.
#[derive(Default)]
struct Alarm {
    armed_ms: Option<u64>,
}

impl Alarm {
    fn arm(&mut self, shared: &Shared, at_ms: u64, letter: impl FnOnce(u64) -> Letter) {
        if self.armed_ms.is_some_and(|armed| armed <= at_ms) || at_ms >= u64::MAX / 4 {
            return;
        }
        self.armed_ms = Some(at_ms);
        shared.world().post.post(at_ms, letter(at_ms));
    }

    /// An alarm set for `at_ms` went off; later alarms may still be pending and ring harmlessly.
    fn rang(&mut self, at_ms: u64) {
        if self.armed_ms == Some(at_ms) {
            self.armed_ms = None;
        }
    }
}

/// Simulated work for one attempt: a command's run time and failure, or a load task's requests.
async fn run_work(shared: Arc<Shared>, done: Mailbox<AgentInput>, task: TaskId, attempt: Attempt, spec: u32) {
    let spec = &shared.scenario.workload.tasks[spec as usize];
    let outcome = match &spec.work {
        Work::Command { sim, .. } => {
            let sim = sim.as_ref().expect("checked before the run: command tasks have `sim`");
            let ms = normal(sim.duration_mean_ms, sim.duration_stddev_ms).max(0.0);
            sleep(Duration::from_micros((ms * 1000.0) as u64)).await;
            if thread_rng().r#gen::<f64>() < sim.fail_rate {
                Outcome::Failed("simulated failure".to_owned())
            } else {
                Outcome::Passed
            }
        }
        Work::Load(load) => {
            let target = &shared.scenario.targets[load.target.0 as usize];
            let model = target.sim.as_ref().expect("checked before the run: load targets have `sim`");
            let schedule = Schedule::new(load.pattern.clone(), shared.seed ^ u64::from(load.target.0));
            let share = 1.0 / f64::from(spec.count);
            let wait = load.start_ms.saturating_sub(shared.now_ms());
            sleep(Duration::from_millis(wait)).await;
            let sigma = (model.latency_p99_ms / model.latency_p50_ms.max(1e-3)).max(1.0).ln() / 2.326;
            let mut measure = Measure::new();
            let mut carry = 0.0;
            let seconds = load.pattern.duration_ms().div_ceil(1000);
            for second in 0..seconds {
                let from = second as f64 * 1000.0;
                let expected = schedule.arrivals_between(from, from + 1000.0) * share + carry;
                let arrivals = expected.floor() as u64;
                carry = expected - arrivals as f64;
                // Queueing when the target's total demand exceeds its capacity.
                let demand = schedule.rate_at(from);
                let queue_ms = match model.capacity_rps {
                    Some(capacity) if demand >= capacity => 1000.0 * (demand - capacity) / capacity,
                    Some(capacity) => {
                        let rho = demand / capacity;
                        1000.0 / capacity * rho / (1.0 - rho)
                    }
                    None => 0.0,
                };
                // Every simulated request starts on time: corrected and uncorrected agree.
                let now_s = shared.now_ms() / 1000;
                for _ in 0..arrivals {
                    let latency_ms = model.latency_p50_ms * (sigma * normal(0.0, 1.0)).exp()
                        + queue_ms * thread_rng().r#gen::<f64>() * 2.0;
                    let status = if latency_ms > load.timeout_ms as f64 {
                        Status::Timeout
                    } else if thread_rng().r#gen::<f64>() < model.error_rate {
                        Status::Http(500)
                    } else {
                        Status::Http(200)
                    };
                    let us = (latency_ms.min(load.timeout_ms as f64) * 1000.0).round() as u64;
                    measure.record(now_s, 0, us, status);
                }
                sleep(Duration::from_millis(1000)).await;
            }
            let mut world = shared.world();
            world.attempt_load.insert((task, attempt), measure);
            Outcome::Passed
        }
    };
    done.put(AgentInput::Finished(task, attempt, outcome));
}

/// The orchestrator: the core's state machine, fed by the network and a timer.
async fn orchestrator_main(shared: Arc<Shared>, mut orchestrator: Orchestrator) {
    let inputs = Mailbox::<OrchestratorInput>::new();
    shared.world().post.open_orchestrator(inputs.clone());
    let mut next_tick = 0u64;
    let mut next_sample = 0u64;
    let mut alarm = Alarm::default();
    loop {
        alarm.arm(&shared, next_tick, |at_ms| Letter::Orchestrator(OrchestratorInput::Tick(at_ms)));
        match inputs.take().await {
            OrchestratorInput::Frame(node, frame) => orchestrator.handle(shared.now_ms(), NodeIdx(node as u32), frame),
            OrchestratorInput::Tick(at_ms) => alarm.rang(at_ms),
        }
        let now = shared.now_ms();
        if now >= next_tick {
            orchestrator.tick(now, &Observations::default());
            next_tick = now + ORCHESTRATOR_TICK_MS;
        }
        while let Some((node, frame)) = orchestrator.poll_transmit() {
            send(&shared, node.0 as usize, Mail::ToAgent(frame));
        }
        let mut world = shared.world();
        while let Some(event) = orchestrator.poll_event() {
            if let Event::Counted { task, attempt, outcome: Outcome::Passed, .. } = &event
                && let Some(measure) = world.attempt_load.remove(&(*task, *attempt))
            {
                world.load.add(&measure, 0);
            }
            if let Event::NodeDead { node } = &event {
                let n = node.0 as usize;
                let killed = world.checker.down_since_kill(n, world.last_kill[n]);
                let justified = killed || world.paused.contains(&n) || world.faults.cuts(shared.node_refs[n]);
                if !justified {
                    world.false_suspicions += 1;
                }
            }
            world.events += 1;
            world.checker.observe(now, &event);
        }
        world.stats = orchestrator.stats();
        if now >= next_sample {
            // madsim keeps a weak reference to every task a node ever spawned until the node is
            // killed, and a weak reference keeps the task's record allocated; counting the tasks
            // drops the finished ones. Without this, memory grows with every message sent.
            Handle::current().metrics().num_tasks();
            let (mean, max) = orchestrator.pool().load_mean_and_max();
            world.util_samples += 1;
            world.util_sum += f64::from(mean) / 1e6;
            world.util_max = world.util_max.max(f64::from(max) / 1e6);
            next_sample = now + 1_000;
        }
        if orchestrator.is_done() && world.done_at_ms.is_none() {
            world.done_at_ms = Some(now);
        }
    }
}

/// Builds the orchestrator's tasks from the scenario.
fn task_inputs(scenario: &Scenario, catalog: &Catalog, labels: &Labels) -> Vec<TaskInput> {
    let sequential = scenario.workload.mode == dtest_core::scenario::WorkloadMode::Sequential;
    let mut inputs = Vec::new();
    for (s, spec) in scenario.workload.tasks.iter().enumerate() {
        let timeout_ms = match &spec.work {
            Work::Command { command: Some(c), .. } => c.timeout_ms,
            Work::Command { command: None, sim } => {
                let sim = sim.as_ref().expect("a command task has `command` or `sim`");
                // Without a real command's timeout, allow ten times the mean plus ten deviations.
                ((sim.duration_mean_ms + 10.0 * sim.duration_stddev_ms) * 10.0).max(1_000.0) as u64
            }
            Work::Load(load) => load.start_ms + load.pattern.duration_ms() + 60_000,
        };
        for index in 1..=spec.count {
            let request = request_for(scenario, catalog, labels, TaskSpecId(s as u32), index, 0)
                .expect("validated scenarios only have placeable tasks");
            inputs.push(TaskInput {
                request,
                work: s as u32,
                timeout_ms,
                max_attempts: spec.max_attempts,
                stage: if sequential { s as u32 } else { 0 },
            });
        }
    }
    inputs
}

/// Checks that the scenario has what simulation needs.
pub(crate) fn simulable(scenario: &Scenario) -> Result<(), SimError> {
    for group in &scenario.groups {
        if group.resources.is_none() {
            return Err(SimError::Missing(format!("group {:?} has no `resources`; dtest sim needs them", group.name)));
        }
    }
    for task in &scenario.workload.tasks {
        match &task.work {
            Work::Command { sim: None, .. } => {
                return Err(SimError::Missing(format!(
                    "task {:?} has no `sim` section; dtest sim needs it",
                    task.name
                )));
            }
            Work::Load(load) if scenario.targets[load.target.0 as usize].sim.is_none() => {
                let target = &scenario.targets[load.target.0 as usize].name;
                return Err(SimError::Missing(format!("target {target:?} has no `sim` section; dtest sim needs it")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs the simulation and returns the shared state at its end, plus when it ended.
pub(crate) fn run(scenario: &Scenario, options: &SimOptions) -> (Arc<Shared>, u64, u64) {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(options.seed, madsim::Config::default());
    let scenario = scenario.clone();
    let options = options.clone();
    let (shared, end_ms, faults_end_ms) = runtime.block_on(async move {
        let handle = Handle::current();
        let (pool, catalog, labels) = pool_of_scenario(&scenario);
        let inputs = task_inputs(&scenario, &catalog, &labels);
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
        let nodes = scenario.nodes_total() as usize;
        let checker = Checker::new(
            (0..nodes).map(|i| pool.spec(NodeIdx(i as u32)).capacity).collect(),
            inputs.iter().map(|t| t.request.amounts).collect(),
        );
        let mut orchestrator = Orchestrator::new(pool, placer, inputs, config, options.seed);
        if options.break_fencing {
            orchestrator.disable_fencing_for_tests();
        }
        let shared = Arc::new(Shared {
            world: Mutex::new(World {
                incarnations: vec![0; nodes],
                last_kill: vec![None; nodes],
                checker,
                post: PostOffice::new(nodes),
                ..World::default()
            }),
            node_refs: scenario.nodes().collect(),
            scenario: scenario.clone(),
            start: Instant::now(),
            seed: options.seed,
        });
        let post_office = handle.create_node().name("network").build();
        post_office.spawn(crate::post::run(shared.clone()));
        let orchestrator_node = handle.create_node().name("orchestrator").build();
        orchestrator_node.spawn(orchestrator_main(shared.clone(), orchestrator));
        let ids: Vec<NodeId> = (0..nodes)
            .map(|i| {
                let s = shared.clone();
                handle
                    .create_node()
                    .name(scenario.node_id(shared.node_refs[i]))
                    .init(move || agent_main(s.clone(), i))
                    .build()
                    .id()
            })
            .collect();

        // The fault timeline: (time, sequence, fault index, starting?).
        let mut timeline: Vec<(u64, usize, bool)> = Vec::new();
        let mut faults_end_ms = 0;
        for (i, fault) in scenario.faults.iter().enumerate() {
            timeline.push((fault.at_ms, i, true));
            match fault.end_ms() {
                Some(end) => {
                    timeline.push((end, i, false));
                    faults_end_ms = faults_end_ms.max(end);
                }
                None => faults_end_ms = faults_end_ms.max(scenario.duration_ms),
            }
        }
        timeline.sort();
        let members = |set: &dtest_core::scenario::NodeSet| -> Vec<usize> {
            (0..nodes).filter(|&i| set.contains(shared.node_refs[i])).collect()
        };
        let mut next = 0;
        let mut down: BTreeSet<usize> = BTreeSet::new();
        loop {
            // Apply the faults due, then sleep until the next one or the next second.
            let now = shared.now_ms();
            while next < timeline.len() && timeline[next].0 <= now {
                let (_, i, starting) = timeline[next];
                next += 1;
                match &scenario.faults[i].kind {
                    FaultKind::Kill { nodes: set, .. } => {
                        // Overlapping kills (swarm mixes have them) kill a node once and restart
                        // it once: madsim's restart of a running node would keep its old socket.
                        for n in members(set) {
                            if starting && down.insert(n) {
                                handle.kill(ids[n]);
                                let mut world = shared.world();
                                world.post.close_agent(n);
                                world.kills.push((n, now));
                                world.last_kill[n] = Some(now);
                            } else if !starting && down.remove(&n) {
                                handle.restart(ids[n]);
                            }
                        }
                    }
                    FaultKind::Pause { nodes: set, .. } => {
                        for n in members(set) {
                            if starting {
                                handle.pause(ids[n]);
                                shared.world().paused.insert(n);
                            } else {
                                handle.resume(ids[n]);
                                shared.world().paused.remove(&n);
                            }
                        }
                    }
                    _ => {
                        let mut world = shared.world();
                        if starting { world.faults.start(&scenario, i) } else { world.faults.end(i) }
                    }
                }
            }
            let done = shared.world().done_at_ms.is_some();
            if now >= scenario.duration_ms || (done && now >= faults_end_ms) {
                break;
            }
            let next_fault = timeline.get(next).map_or(u64::MAX, |t| t.0);
            let wake = next_fault.min(now + 1_000).min(scenario.duration_ms);
            sleep_until(shared.start + Duration::from_millis(wake.max(now + 1))).await;
        }
        let end = shared.now_ms();
        // A task still waiting when the runtime is dropped is never freed (madsim keeps a cycle
        // between a task and its own record), and with it everything it holds, the whole world
        // included: a sweep would keep every seed's run. Killing the nodes drops their tasks
        // at the executor's next turn, which the sleep gives it.
        for id in ids.into_iter().chain([post_office.id(), orchestrator_node.id()]) {
            handle.kill(id);
        }
        sleep(Duration::from_millis(1)).await;
        (shared, end, faults_end_ms)
    });
    drop(runtime);
    assert_eq!(Arc::strong_count(&shared), 1, "a simulated task outlived its run");
    (shared, end_ms, faults_end_ms)
}
