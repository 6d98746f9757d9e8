//! Placements of a small fixed cluster, one snapshot per strategy, so any change of behaviour
//! shows up as a diff in `snapshots/` to review.

use std::fmt::Write;

use dtest_core::placement::{
    Catalog, Labels, NodeIdx, Observations, Placement, Placer, Pool, pool_of_scenario, request_for,
};
use dtest_core::scenario::{self, Allocation, Distribution, Scenario, TaskSpecId};

const CLUSTER: &str = r#"{
  "name": "placement-snapshots",
  "description": "three kinds of node in two regions, and tasks that tell the strategies apart",
  "duration_s": 60,
  "cluster": { "groups": [
    { "name": "small", "count": 3, "region": "eu", "zone": "eu-a",
      "resources": { "cpu_millis": 2000, "memory_mb": 4096 }, "capabilities": ["linux"] },
    { "name": "gpu", "count": 2, "region": "eu", "zone": "eu-b",
      "resources": { "cpu_millis": 8000, "memory_mb": 16384, "gpus": 1 }, "capabilities": ["linux", "cuda"] },
    { "name": "web", "count": 3, "region": "us", "zone": "us-a",
      "resources": { "cpu_millis": 4000, "memory_mb": 8192 }, "capabilities": ["linux", "http"] }
  ] },
  "workload": { "tasks": [
    { "name": "unit", "count": 8, "kind": "command", "requires": { "cpu_millis": 500, "memory_mb": 512 },
      "sim": { "duration_ms": { "mean": 1000 } } },
    { "name": "train", "count": 2, "kind": "command", "priority": 5, "capabilities": ["cuda"],
      "requires": { "cpu_millis": 4000, "memory_mb": 8192, "gpus": 1 }, "sim": { "duration_ms": { "mean": 1000 } } },
    { "name": "api", "count": 3, "kind": "command", "capabilities": ["http"], "locality": { "region": "us" },
      "requires": { "cpu_millis": 1000, "memory_mb": 1024 }, "sim": { "duration_ms": { "mean": 1000 } } },
    { "name": "near-us", "count": 4, "kind": "command", "locality": { "region": "us" },
      "requires": { "cpu_millis": 1500, "memory_mb": 2048 }, "sim": { "duration_ms": { "mean": 1000 } } },
    { "name": "big", "count": 3, "kind": "command", "requires": { "cpu_millis": 3000, "memory_mb": 4096 },
      "sim": { "duration_ms": { "mean": 1000 } } }
  ] }
}"#;

fn setup() -> (Scenario, Pool, Catalog, Labels) {
    let scenario = scenario::parse(CLUSTER.as_bytes()).expect("the snapshot scenario is valid");
    let (pool, catalog, labels) = pool_of_scenario(&scenario);
    (scenario, pool, catalog, labels)
}

/// Places every task instance in file order and renders who went where and how full each node is.
fn render(distribution: Option<Distribution>, allocation: Allocation) -> String {
    let (scenario, mut pool, catalog, labels) = setup();
    let mut placer = Placer::new(&pool, distribution.unwrap_or_default(), allocation, Default::default(), false, 42);
    let mut out = String::new();
    for (s, task) in scenario.workload.tasks.iter().enumerate() {
        for index in 1..=task.count {
            let request = request_for(&scenario, &catalog, &labels, TaskSpecId(s as u32), index, 0).expect("placeable");
            let outcome = match distribution {
                Some(_) => placer.place(&mut pool, &request, &Observations::default()),
                None => match placer.allocate_any(&mut pool, &request) {
                    Some((node, alloc)) => Placement::Placed { node, alloc },
                    None => Placement::Unschedulable(dtest_core::placement::Unschedulable::Busy),
                },
            };
            let place = match outcome {
                Placement::Placed { node, .. } | Placement::Preempted { node, .. } => node_id(&scenario, node),
                Placement::Unschedulable(why) => format!("unplaced ({why:?})"),
            };
            writeln!(out, "{:<10} -> {place}", format!("{}#{index}", task.name)).expect("write to a String");
        }
    }
    writeln!(out, "\nnode      load").expect("write to a String");
    for (i, id) in scenario.nodes().enumerate() {
        let load = f64::from(pool.load(NodeIdx(i as u32))) / 1e6;
        writeln!(out, "{:<9} {load:.2}", scenario.node_id(id)).expect("write to a String");
    }
    out
}

fn node_id(scenario: &Scenario, node: NodeIdx) -> String {
    let id = scenario.nodes().nth(node.0 as usize).expect("a node of the scenario");
    scenario.node_id(id)
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

#[test]
fn each_distribution_strategy_places_the_fixed_cluster() {
    let strategies = [
        ("round_robin", Distribution::RoundRobin),
        ("least_loaded", Distribution::LeastLoaded),
        ("random", Distribution::Random),
        ("capability", Distribution::Capability),
        ("locality", Distribution::Locality),
        ("weighted", Distribution::Weighted),
        ("adaptive", Distribution::Adaptive),
    ];
    settings().bind(|| {
        for (name, distribution) in strategies {
            insta::assert_snapshot!(format!("placement-{name}"), render(Some(distribution), Allocation::FirstFit));
        }
    });
}

#[test]
fn each_allocation_strategy_places_the_fixed_cluster() {
    let strategies = [
        ("first_fit", Allocation::FirstFit),
        ("best_fit", Allocation::BestFit),
        ("balanced", Allocation::Balanced),
        ("locality", Allocation::Locality),
    ];
    settings().bind(|| {
        for (name, allocation) in strategies {
            insta::assert_snapshot!(format!("allocation-{name}"), render(None, allocation));
        }
    });
}
