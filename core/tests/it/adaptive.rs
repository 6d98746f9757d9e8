//! `adaptive` placement reads what the orchestrator observes of its own run: its queue and the
//! failure rate of its recent attempts. Driven end to end through agents, with no shell.

use dtest_core::placement::{Amounts, CapSet, Locality, NodeSpec, Placer, Pool, Request, TaskKey};
use dtest_core::protocol::{
    Agent, AgentAction, AgentConfig, Incarnation, Orchestrator, OrchestratorConfig, Outcome, TaskInput,
};
use dtest_core::scenario::{Allocation, Distribution, Weights};

fn amounts(cpu: u32) -> Amounts {
    let mut a = Amounts::ZERO;
    a.0[0] = cpu;
    a
}

/// Runs `tasks` one-core tasks on two four-core nodes whose work ends as `outcome` says, until
/// every task ended; returns what `adaptive` chose (avoid failures, rebalance, pack, spread).
fn run(tasks: usize, max_attempts: u32, outcome: impl Fn(u32) -> Outcome) -> [u64; 4] {
    let spec = NodeSpec { capacity: amounts(4_000), capabilities: CapSet(0), region: None, zone: None };
    let pool = Pool::new(vec![spec; 2]);
    let placer = Placer::new(&pool, Distribution::Adaptive, Allocation::FirstFit, Weights::default(), false, 7);
    let inputs = (0..tasks)
        .map(|i| TaskInput {
            request: Request {
                task: TaskKey(0),
                spec: None,
                amounts: amounts(1_000),
                capabilities: CapSet(0),
                priority: 0,
                locality: Locality::default(),
                now_ms: 0,
                until_ms: None,
            },
            work: i as u32,
            timeout_ms: 60_000,
            max_attempts,
            stage: 0,
        })
        .collect();
    let config = OrchestratorConfig { backoff_base_ms: 1.0, backoff_cap_ms: 1.0, ..OrchestratorConfig::default() };
    let mut orchestrator = Orchestrator::new(pool, placer, inputs, config, 7);
    let mut agents: Vec<Agent> = (0..2).map(|i| Agent::new(0, Incarnation(i + 1), AgentConfig::default())).collect();
    let mut now = 0;
    while !orchestrator.is_done() {
        assert!(now < 600_000, "the tasks never all ended");
        for (i, agent) in agents.iter_mut().enumerate() {
            agent.tick(now);
            while let Some(action) = agent.poll_action() {
                if let AgentAction::Start { task, attempt, work } = action {
                    agent.work_finished(now, task, attempt, outcome(work));
                }
            }
            while let Some(frame) = agent.poll_transmit() {
                orchestrator.handle(now, dtest_core::placement::NodeIdx(i as u32), frame);
            }
        }
        orchestrator.tick(now);
        while let Some((node, frame)) = orchestrator.poll_transmit() {
            agents[node.0 as usize].handle(now, frame);
        }
        while orchestrator.poll_event().is_some() {}
        now += 10;
    }
    orchestrator.adaptive_choices()
}

#[test]
fn a_long_queue_makes_adaptive_pack() {
    let [avoid, _, pack, _] = run(40, 1, |_| Outcome::Passed);
    assert!(pack > 0, "40 tasks queued on 2 nodes: adaptive packs");
    assert_eq!(avoid, 0, "nothing failed");
}

#[test]
fn frequent_failures_make_adaptive_avoid_failing_nodes() {
    // Every other task fails every attempt: far above the 20% at which adaptive turns to
    // health-weighted placement.
    let [avoid, ..] =
        run(40, 3, |work| if work % 2 == 0 { Outcome::Failed("boom".to_owned()) } else { Outcome::Passed });
    assert!(avoid > 0, "failures make adaptive avoid failing nodes");
    let [avoid, ..] = run(4, 1, |_| Outcome::Passed);
    assert_eq!(avoid, 0, "and without failures it does not");
}

#[test]
fn a_cancel_nobody_asked_for_spends_an_attempt() {
    // Nodes that answer every attempt with a cancel the orchestrator never asked for: each
    // counts as a failed attempt, so the tasks end (failed) after three, instead of being
    // requeued forever (`run` gives up after ten simulated minutes).
    let [avoid, ..] = run(4, 3, |_| Outcome::Cancelled);
    assert!(avoid > 0, "and they count as failures for adaptive placement");
}
