//! The liveness phase: after the last fault heals, the system must converge (every task ended,
//! every node not down alive in the orchestrator's eyes, every alert the faults do not explain
//! resolved) within a bound, and the report says how long each took or what never did.

use dtest_core::report::{Condition, Invariant, Report};
use dtest_core::scenario::Scenario;
use dtest_sim::{SimOptions, simulate};
use serde_json::{Value, json};

fn file(name: &str) -> Value {
    let path = format!("{}/../scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn parse(value: &Value) -> Scenario {
    dtest_core::scenario::parse(value.to_string().as_bytes()).expect("valid")
}

fn run(value: &Value, seed: u64) -> Report {
    simulate(&parse(value), &SimOptions { seed, ..SimOptions::default() }).expect("simulable")
}

fn after(report: &Report, condition: Condition) -> Option<u64> {
    let recovery = report.recovery.as_ref().expect("a liveness phase");
    recovery.conditions.iter().find(|c| c.condition == condition).expect("judged").recovered_after_ms
}

#[test]
fn after_the_last_restart_every_node_comes_back_and_the_run_ends_once_it_has() {
    let report = run(&file("node-failure"), 42);
    let recovery = report.recovery.clone().expect("every fault heals or kills for good");
    // The rack's restart at 100 s is the last fault; worker-1 stays dead and is not waited for.
    assert_eq!((recovery.quiet_from_ms, recovery.bound_ms), (100_000, 200_000));
    assert!(recovery.converged, "{recovery:?}");
    let nodes = after(&report, Condition::NodesAlive).expect("the rack came back");
    assert!(nodes <= 5_000, "restarted nodes say hello at once: {nodes} ms");
    assert_eq!(after(&report, Condition::TasksEnded), Some(0), "the work ended before the restart");
    // The cluster's node-down alert (one node down or more) rightly fires while worker-1 stays
    // dead: explained. rack-down (five or more) is not, by one node: it must resolve, and does
    // once the rack is back.
    assert!(report.alerts.iter().any(|a| a.rule == "node-down" && a.resolved_at_ms.is_none()));
    let rack_down = report.alerts.iter().find(|a| a.rule == "rack-down").expect("the rack went down");
    assert_eq!(rack_down.resolved_at_ms, Some(100_000 + nodes));
    assert_eq!(after(&report, Condition::AlertsResolved), Some(nodes));
    // The run ends once converged, not at the scenario's end.
    let simulated_ms = (report.simulated_s.expect("sim") * 1e3) as u64;
    assert_eq!(simulated_ms, 100_000 + nodes, "{report:?}");
    assert!(report.passed(), "{:?}", report.violations);
}

#[test]
fn an_alert_that_never_resolves_is_named_with_what_did_not_converge() {
    // Simulated nodes report 30% CPU: an alert above 10% fires on every live node for good.
    let mut value = file("node-failure");
    value["alerts"] = json!([{ "name": "busy", "metric": "cpu", "op": ">", "threshold": 0.1, "severity": "warning" }]);
    let report = run(&value, 42);
    let recovery = report.recovery.clone().expect("a liveness phase");
    assert!(!recovery.converged);
    let alerts = recovery.conditions.iter().find(|c| c.condition == Condition::AlertsResolved).expect("judged");
    assert_eq!(alerts.recovered_after_ms, None);
    assert!(alerts.pending.iter().any(|p| p == "busy on rack-1"), "{:?}", alerts.pending);
    // 39 of 40 nodes, listed to a bound: worker-1 is down for good, and its alert is explained.
    assert_eq!(alerts.pending.len(), dtest_core::report::PENDING_LISTED_MAX + 1, "bounded: {:?}", alerts.pending);
    assert_eq!(alerts.pending.last().map(String::as_str), Some("and 31 more"));
    let violation =
        report.violations.iter().find(|v| v.invariant == Invariant::Liveness).expect("a liveness violation");
    assert!(violation.what.contains("alerts resolved never (busy on"), "{}", violation.what);
    // It waited the whole bound for convergence.
    assert_eq!(report.simulated_s, Some(300.0));
}

#[test]
fn a_stated_bound_is_held_to() {
    let mut value = file("node-failure");
    value["expect"]["recovered_within_s"] = json!(0.001);
    let report = run(&value, 42);
    let recovery = report.recovery.clone().expect("a liveness phase");
    assert_eq!(recovery.bound_ms, 1);
    assert!(!recovery.converged);
    let violation = report.violations.iter().find(|v| v.invariant == Invariant::Liveness).expect("too slow");
    // The run ends at the bound, before the restarted rack is back: named.
    assert!(
        violation.what.contains("nodes alive never (rack-1, rack-2, rack-3, rack-4, rack-5)"),
        "{}",
        violation.what
    );
}

#[test]
fn a_fault_healing_at_the_very_end_gets_its_liveness_phase_past_it() {
    let mut value = file("node-failure");
    value["faults"] = json!([{ "at_s": 15, "type": "kill", "nodes": ["worker-1"], "restart_at_s": 300 }]);
    let report = run(&value, 42);
    let recovery = report.recovery.clone().expect("a liveness phase");
    assert_eq!((recovery.quiet_from_ms, recovery.bound_ms), (300_000, dtest_core::run::RECOVERY_MIN_MS));
    assert!(recovery.converged, "{recovery:?}");
    let simulated_ms = (report.simulated_s.expect("sim") * 1e3) as u64;
    assert!(simulated_ms > 300_000, "the run went past the scenario's end for the restart: {simulated_ms} ms");
    assert!(report.passed(), "{:?}", report.violations);
}

#[test]
fn a_fault_that_lasts_to_the_end_leaves_nothing_to_judge() {
    let mut value = file("node-failure");
    value["faults"] = json!([{ "at_s": 10, "type": "packet_loss", "rate": 0.01 }]);
    assert_eq!(run(&value, 42).recovery, None);
}
