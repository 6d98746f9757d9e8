//! One scenario through `dtest sim` and through `dtest run --local`: the same core decides, so
//! the same placement decisions come out; and what differs between the modes on purpose (listed
//! in docs/protocol.md) is pinned here.

use std::collections::BTreeMap;

use dtest_core::placement::NodeIdx;
use dtest_core::protocol::TaskId;
use dtest_core::report::{Mode, Report};
use dtest_core::run::RunEvent;
use dtest_core::scenario::Scenario;
use dtest_node::secret::Secret;
use dtest_orchestrator::{NodeSource, Session, SessionConfig, SessionEvent};
use dtest_sim::SimOptions;

/// Three nodes of two sizes and nine tasks of three sizes, all of which fit at once: every
/// placement is made in the first pass, which waits for every node's hello in both modes.
const SCENARIO: &str = r#"{
  "name": "parity",
  "description": "the same placements in sim and run",
  "duration_s": 60,
  "cluster": { "groups": [
    { "name": "big", "count": 1, "resources": { "cpu_millis": 8000, "memory_mb": 8192 } },
    { "name": "small", "count": 2, "resources": { "cpu_millis": 3000, "memory_mb": 4096 } }
  ] },
  "strategy": { "distribution": "least_loaded", "allocation": "best_fit" },
  "workload": { "tasks": [
    { "name": "large", "count": 2, "kind": "command", "requires": { "cpu_millis": 2000, "memory_mb": 512 },
      "command": { "argv": ["sleep", "1.5"], "timeout_s": 30 },
      "sim": { "duration_ms": { "mean": 1500, "stddev": 0 } } },
    { "name": "medium", "count": 3, "kind": "command", "requires": { "cpu_millis": 1000, "memory_mb": 256 },
      "command": { "argv": ["sleep", "1.5"], "timeout_s": 30 },
      "sim": { "duration_ms": { "mean": 1500, "stddev": 0 } } },
    { "name": "tiny", "count": 4, "kind": "command", "requires": { "cpu_millis": 500, "memory_mb": 64 },
      "command": { "argv": ["sleep", "1.5"], "timeout_s": 30 },
      "sim": { "duration_ms": { "mean": 1500, "stddev": 0 } } }
  ] },
  "expect": { "all_tasks_complete": true },
  "alerts": [ { "name": "cpu-at-least-30", "metric": "cpu", "op": ">=", "threshold": 0.3, "severity": "info" } ]
}"#;

fn scenario() -> Scenario {
    dtest_core::scenario::parse(SCENARIO.as_bytes()).expect("a valid scenario")
}

/// Each task's first placement, by node.
fn first_placements(events: impl IntoIterator<Item = RunEvent>) -> BTreeMap<TaskId, NodeIdx> {
    let mut placed = BTreeMap::new();
    for event in events {
        if let RunEvent::TaskAssigned { task, node, .. } = event {
            placed.entry(task).or_insert(node);
        }
    }
    placed
}

/// Runs the scenario on three local daemons; the report and every run event.
async fn run_local(scenario: Scenario) -> (Report, Vec<RunEvent>, String) {
    let config = SessionConfig {
        scenario,
        tls: Vec::new(),
        nodes: NodeSource::Local(3),
        seed: 42,
        node_exe: Some(env!("CARGO_BIN_EXE_dtest").into()),
        shares: Vec::new(),
        journal: None,
        id: None,
    };
    let mut session = Session::start(config).await.expect("the session starts");
    let id = session.id().to_owned();
    let mut events = Vec::new();
    while let Some(event) = session.next_event().await {
        if let SessionEvent::Run { event, .. } = event {
            events.push(event);
        }
    }
    (session.finish().await.expect("a report"), events, id)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

#[test]
fn sim_and_run_make_the_same_placement_decisions() {
    let options = SimOptions { seed: 42, ..SimOptions::default() };
    let (simulated, sim_events) = dtest_sim::simulate_traced(&scenario(), &options).expect("simulable");
    let (real, run_events, _) = runtime().block_on(run_local(scenario()));
    let (sim_placed, run_placed) =
        (first_placements(sim_events.into_iter().map(|(_, e)| e)), first_placements(run_events));
    assert_eq!(sim_placed.len(), 9, "every task placed: {sim_placed:?}");
    assert_eq!(sim_placed, run_placed, "the first placement of every task");
    for report in [&simulated, &real] {
        assert!(report.passed(), "{}", report.to_text());
        assert_eq!(report.tasks.completed, 9);
    }

    // What differs on purpose.
    assert_eq!((simulated.mode, real.mode), (Mode::Sim, Mode::Run));
    assert_eq!((simulated.seed, real.seed), (Some(42), None), "the seed replays a simulation only");
    assert!(simulated.simulated_s.is_some() && simulated.elapsed_s.is_none(), "simulated time in sim");
    assert!(real.elapsed_s.is_some() && real.simulated_s.is_none(), "wall-clock time in run");
    assert!(simulated.results.is_empty(), "sim reports leave out per-task results");
    assert_eq!(real.results.len(), 9, "run reports have every task's result");
    let fixed: Vec<(&str, f64)> = simulated.alerts.iter().map(|a| (a.subject.as_str(), a.value)).collect();
    assert_eq!(fixed, [("big-1", 0.3), ("small-1", 0.3), ("small-2", 0.3)], "simulated nodes report a fixed 30% CPU");
}

#[test]
fn kill_and_pause_faults_need_local_nodes_in_a_real_run() {
    let mut scenario = scenario();
    let text = SCENARIO.replace(
        r#""expect""#,
        r#""faults": [ { "at_s": 5, "type": "kill", "nodes": ["small-1"], "restart_at_s": 10 } ], "expect""#,
    );
    scenario = dtest_core::scenario::parse(text.as_bytes()).unwrap_or(scenario);
    assert!(!scenario.faults.is_empty(), "the kill fault parsed");
    let config = SessionConfig {
        scenario,
        tls: Vec::new(),
        nodes: NodeSource::Remote {
            urls: vec!["http://127.0.0.1:9".to_owned()],
            token: Secret::new("t"),
            tls: Default::default(),
        },
        seed: 42,
        node_exe: None,
        shares: Vec::new(),
        journal: None,
        id: None,
    };
    let refused = runtime().block_on(Session::start(config)).expect_err("refused before any node is asked");
    assert!(refused.to_string().contains("kill and pause faults need `--local`"), "{refused}");
}

#[test]
fn several_sessions_run_in_one_process_at_once_with_their_own_ids() {
    let (a, b) = runtime().block_on(async { tokio::join!(run_local(scenario()), run_local(scenario())) });
    assert_ne!(a.2, b.2, "each execution has its own id");
    for (report, ..) in [a, b] {
        assert!(report.passed(), "{}", report.to_text());
        assert_eq!(report.tasks.completed, 9);
    }
}
