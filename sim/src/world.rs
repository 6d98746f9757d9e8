//! One simulated run: madsim nodes running the core's agents, one running the core's run (the
//! orchestrator, the fault timeline and the checkers), simulated work and load.
//!
//! The shell carries frames through the scenario's network faults and the links' own latency,
//! keeps the clock, and carries out the run's actions with madsim: kills, restarts and pauses of
//! nodes. Every decision (when to tick, when a fault starts, what to report) is the core's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtest_core::health::Metrics;
use dtest_core::load::Schedule;
use dtest_core::measure::{LoadResult, Measure, Status};
use dtest_core::placement::NodeIdx;
use dtest_core::protocol::{
    Agent, AgentAction, AgentConfig, Attempt, Frame, Incarnation, Outcome, TaskId, ToAgent, ToOrchestrator,
};
use dtest_core::report::Mode;
use dtest_core::run::{Action, Cluster, Run, RunEvent, RunOptions};
use dtest_core::scenario::{NodeRef, Scenario, Work};
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::{Instant, sleep};

use crate::post::{Letter, Mailbox, PostOffice};
use crate::trace::{Recorder, Traced};
use crate::{SimError, SimOptions, Watch};
use dtest_core::faults::{Direction, Verdict};

/// A link's own latency, drawn uniformly per message (madsim's default link), in milliseconds;
/// the scenario's latency faults add to it.
const LINK_LATENCY_MS: std::ops::RangeInclusive<u64> = 1..=10;

/// The run and the simulated network, shared by every simulated node.
pub(crate) struct World {
    /// The core's run: orchestrator, fault timeline, checkers, ledger.
    pub run: Run,
    /// Each node's current incarnation.
    pub incarnations: Vec<u64>,
    /// Frames in flight and alarms set.
    pub post: PostOffice,
    /// The madsim node of each scenario node.
    pub ids: Vec<NodeId>,
    /// Whether the run's watch stopped it before its end.
    pub stopped: bool,
    /// The run's live events (with [`SimOptions::events`]), moved here as they come so that the
    /// run's own queue, which keeps only its newest, never drops the start of a long run; the
    /// first [`crate::EVENTS_MAX`].
    pub events: Vec<(u64, RunEvent)>,
    /// Events past [`crate::EVENTS_MAX`], counted, not kept.
    pub events_dropped: u64,
}

impl World {
    /// Moves the run's pending live events into [`World::events`]; past [`crate::EVENTS_MAX`]
    /// they are counted instead. Nothing to do when the run keeps no events.
    pub fn keep_events(&mut self) {
        while let Some(event) = self.run.poll_event() {
            if self.events.len() < crate::EVENTS_MAX {
                self.events.push(event);
            } else {
                self.events_dropped += 1;
            }
        }
    }
}

pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub scenario: Scenario,
    /// The scenario entry of each task.
    pub entries: Vec<u32>,
    pub start: Instant,
    pub node_refs: Vec<NodeRef>,
    pub seed: u64,
    pub watch: Option<Watch>,
    /// The run's trace, kept only when checking determinism.
    pub trace: Option<Mutex<Recorder>>,
}

impl Shared {
    /// The shared state of a simulation of `scenario`, its clock starting now.
    pub fn new(scenario: &Scenario, options: &SimOptions) -> Result<Shared, SimError> {
        let run_options = RunOptions {
            mode: Mode::Sim,
            seed: options.seed,
            distribution: options.distribution,
            swarm: options.swarm,
            break_fencing: options.break_fencing,
            events: options.events,
        };
        let run = Run::new(scenario, Cluster::of_scenario(scenario), run_options)
            .map_err(|e| SimError::Missing(e.to_string()))?;
        let nodes = run.nodes();
        let entries = (0..run.tasks()).map(|t| run.instance(TaskId(t as u64)).map_or(0, |(e, _)| e as u32)).collect();
        Ok(Shared {
            world: Mutex::new(World {
                run,
                incarnations: vec![0; nodes],
                post: PostOffice::new(nodes),
                ids: Vec::new(),
                stopped: false,
                events: Vec::new(),
                events_dropped: 0,
            }),
            entries,
            node_refs: scenario.nodes().collect(),
            scenario: scenario.clone(),
            start: Instant::now(),
            seed: options.seed,
            watch: options.watch.clone(),
            trace: None,
        })
    }

    pub fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.start).as_millis() as u64
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // The simulation runs on one thread; a poisoned lock means a checker panicked already.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the event `event` gives (with its time) in the run's trace, if one is kept;
    /// otherwise `event` is not called. Its lock is taken after the world's, never before it.
    #[inline]
    fn trace<'a>(&self, event: impl FnOnce() -> (u64, Traced<'a>)) {
        if let Some(trace) = &self.trace {
            let (at_ms, event) = event();
            trace.lock().unwrap_or_else(|e| e.into_inner()).record(at_ms, event);
        }
    }
}

/// Which way a frame goes, with the frame.
enum Mail {
    ToAgent(Frame<ToAgent>),
    ToOrchestrator(Frame<ToOrchestrator>),
}

/// Sends a frame between the orchestrator and node `node` through the run's network faults,
/// which may drop or delay it; the link's own latency comes on top.
fn send(world: &mut World, shared: &Shared, node: usize, mail: Mail) {
    let now_ms = shared.now_ms();
    world.run.count_sent(1);
    let direction = match mail {
        Mail::ToAgent(_) => Direction::ToNode,
        Mail::ToOrchestrator(_) => Direction::ToOrchestrator,
    };
    let mut rng = thread_rng();
    let verdict = world.run.net().verdict(shared.node_refs[node], direction, || rng.r#gen::<f64>());
    let due_ms = match verdict {
        Verdict::Deliver(delay_ms) => Some(now_ms + rng.gen_range(LINK_LATENCY_MS) + delay_ms),
        _ => None,
    };
    shared.trace(|| match &mail {
        Mail::ToAgent(frame) => (now_ms, Traced::ToAgent { node, frame, verdict, due_ms }),
        Mail::ToOrchestrator(frame) => (now_ms, Traced::ToOrchestrator { node, frame, verdict, due_ms }),
    });
    let Some(at_ms) = due_ms else {
        world.run.count_dropped(1);
        return;
    };
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
    shared.trace(|| (shared.now_ms(), Traced::Starts { node, incarnation }));
    let inputs = Mailbox::<AgentInput>::new();
    shared.world().post.open_agent(node, incarnation, inputs.clone());
    let heartbeat_interval_ms = shared.scenario.failure_detector.heartbeat_interval_ms;
    let mut agent = Agent::new(
        shared.now_ms(),
        Incarnation(incarnation),
        AgentConfig { heartbeat_interval_ms, ..AgentConfig::default() },
    );
    // A simulated machine's use does not change: fixed figures (docs/protocol.md lists it).
    agent.set_metrics(Metrics { cpu: 0.3, memory: 0.4, disk: 0.2, network: 0.1, task_error_rate: 0.0 });
    let mut alarm = Alarm::default();
    let mut work: BTreeMap<(TaskId, Attempt), madsim::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        while let Some(action) = agent.poll_action() {
            shared.trace(|| (shared.now_ms(), Traced::AgentDoes { node, incarnation, action: &action }));
            match action {
                AgentAction::Start { task, attempt, work: instance } => {
                    let done = inputs.clone();
                    let handle = madsim::task::spawn(run_work(shared.clone(), done, task, attempt, instance));
                    work.insert((task, attempt), handle);
                }
                AgentAction::Stop { task, attempt } => {
                    if let Some(handle) = work.remove(&(task, attempt)) {
                        handle.abort();
                    }
                    // A cancelled attempt's end is the shell's to report; simulated work keeps
                    // nothing worth handing back.
                    agent.work_finished(shared.now_ms(), task, attempt, Outcome::Cancelled);
                }
            }
        }
        if let Some(frame) = agent.poll_transmit() {
            let mut world = shared.world();
            send(&mut world, &shared, node, Mail::ToOrchestrator(frame));
            while let Some(frame) = agent.poll_transmit() {
                send(&mut world, &shared, node, Mail::ToOrchestrator(frame));
            }
        }
        alarm.arm(&shared, agent.next_tick_ms(), |at_ms| Letter::Agent {
            node,
            incarnation,
            input: AgentInput::Tick(at_ms),
        });
        let input = inputs.take().await;
        shared.trace(|| (shared.now_ms(), Traced::AgentTakes { node, incarnation, input: &input }));
        match input {
            AgentInput::Frame(frame) => agent.handle(shared.now_ms(), frame),
            AgentInput::Finished(task, attempt, outcome, load) => {
                work.remove(&(task, attempt));
                agent.load_finished(shared.now_ms(), task, attempt, outcome, load);
            }
            AgentInput::Tick(at_ms) => alarm.rang(at_ms),
        }
        agent.tick(shared.now_ms());
    }
}

/// What wakes an agent.
#[derive(Debug)]
pub(crate) enum AgentInput {
    Frame(Frame<ToAgent>),
    Finished(TaskId, Attempt, Outcome, Option<Box<LoadResult>>),
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
async fn run_work(shared: Arc<Shared>, done: Mailbox<AgentInput>, task: TaskId, attempt: Attempt, instance: u32) {
    let Some(&entry) = shared.entries.get(instance as usize) else {
        let outcome = Outcome::Failed(format!("work item {instance} is not in the run"));
        return done.put(AgentInput::Finished(task, attempt, outcome, None));
    };
    let spec = &shared.scenario.workload.tasks[entry as usize];
    let mut result = None;
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
                // Every simulated request starts on time: corrected and uncorrected agree. Seconds
                // count from the load's start, as a real node counts them.
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
                    measure.record(second, 0, us, status);
                }
                sleep(Duration::from_millis(1000)).await;
            }
            // Through the protocol, as a node sends it: the run merges it once the attempt counts.
            result = Some(Box::new(measure.to_wire()));
            Outcome::Passed
        }
    };
    done.put(AgentInput::Finished(task, attempt, outcome, result));
}

/// The run: the core's orchestrator, fault timeline and checkers, woken by frames and by its
/// own alarm at the time it asks for.
async fn orchestrator_main(shared: Arc<Shared>, over: Mailbox<u64>) {
    let inputs = Mailbox::<OrchestratorInput>::new();
    shared.world().post.open_orchestrator(inputs.clone());
    let handle = Handle::current();
    let mut alarm = Alarm::default();
    let mut next_sweep_ms = 0;
    loop {
        let now = shared.now_ms();
        if let Some(watch) = &shared.watch {
            watch.set_now(now);
            if watch.stopped() {
                shared.world().stopped = true;
                over.put(now);
                return;
            }
        }
        let mut actions = Vec::new();
        {
            let mut world = shared.world();
            if world.run.poll_timeout().is_some_and(|at| at <= now) {
                shared.trace(|| (now, Traced::TimersDue));
                world.run.handle_timeout(now);
            }
            // This turn's events and the last frame's, long before the run's queue could fill.
            world.keep_events();
            while let Some((node, frame)) = world.run.poll_transmit() {
                send(&mut world, &shared, node.0 as usize, Mail::ToAgent(frame));
            }
            while let Some(action) = world.run.poll_action() {
                shared.trace(|| (now, Traced::RunDoes(&action)));
                if let Action::Kill(node) = action {
                    world.post.close_agent(node.0 as usize);
                }
                actions.push(action);
            }
        }
        let ids = if actions.is_empty() { Vec::new() } else { shared.world().ids.clone() };
        for action in actions {
            match action {
                Action::Kill(node) => handle.kill(ids[node.0 as usize]),
                Action::Restart(node) => handle.restart(ids[node.0 as usize]),
                Action::Pause(node) => handle.pause(ids[node.0 as usize]),
                Action::Resume(node) => handle.resume(ids[node.0 as usize]),
                // Frames pass the run's network faults as they are sent (`send`).
                Action::Link(..) => {}
            }
        }
        if now >= next_sweep_ms {
            // madsim keeps a weak reference to every task a node ever spawned until the node is
            // killed, and a weak reference keeps the task's record allocated; counting the tasks
            // drops the finished ones. Without this, memory grows with every message sent.
            handle.metrics().num_tasks();
            next_sweep_ms = now + 1_000;
        }
        let next = shared.world().run.poll_timeout();
        let Some(at_ms) = next else {
            over.put(now);
            return;
        };
        alarm.arm(&shared, at_ms.max(now + 1), |at_ms| Letter::Orchestrator(OrchestratorInput::Tick(at_ms)));
        let input = inputs.take().await;
        shared.trace(|| match &input {
            OrchestratorInput::Frame(node, frame) => {
                (shared.now_ms(), Traced::OrchestratorTakes { node: *node, frame })
            }
            OrchestratorInput::Tick(at_ms) => (shared.now_ms(), Traced::Alarm { at_ms: *at_ms }),
        });
        match input {
            OrchestratorInput::Frame(node, frame) => {
                shared.world().run.handle(shared.now_ms(), NodeIdx(node as u32), frame);
            }
            OrchestratorInput::Tick(at_ms) => alarm.rang(at_ms),
        }
    }
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

/// Runs the simulation to its end and returns the shared state, the run's report included;
/// with `trace`, records its events there ([`crate::trace`]) and closes it at the end.
pub(crate) fn run(scenario: &Scenario, options: &SimOptions, trace: Option<Recorder>) -> Result<Arc<Shared>, SimError> {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(options.seed, madsim::Config::default());
    let scenario = scenario.clone();
    let options = options.clone();
    let shared = runtime.block_on(async move {
        let handle = Handle::current();
        let mut shared = Shared::new(&scenario, &options)?;
        shared.trace = trace.map(Mutex::new);
        let shared = Arc::new(shared);
        let nodes = shared.node_refs.len();
        let post_office = handle.create_node().name("network").build();
        post_office.spawn(crate::post::run(shared.clone()));
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
        shared.world().ids = ids.clone();
        let over = Mailbox::new();
        let orchestrator_node = handle.create_node().name("orchestrator").build();
        orchestrator_node.spawn(orchestrator_main(shared.clone(), over.clone()));
        over.take().await;
        // A task still waiting when the runtime is dropped is never freed (madsim keeps a cycle
        // between a task and its own record), and with it everything it holds, the whole world
        // included: a sweep would keep every seed's run. Killing the nodes drops their tasks
        // at the executor's next turn, which the sleep gives it.
        for id in ids.into_iter().chain([post_office.id(), orchestrator_node.id()]) {
            handle.kill(id);
        }
        sleep(Duration::from_millis(1)).await;
        Ok::<_, SimError>(shared)
    })?;
    drop(runtime);
    assert_eq!(Arc::strong_count(&shared), 1, "a simulated task outlived its run");
    if let Some(trace) = &shared.trace {
        trace.lock().unwrap_or_else(|e| e.into_inner()).finish();
    }
    Ok(shared)
}
