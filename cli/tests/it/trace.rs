//! `dtest sim FILE --seed N --trace FILE.json`: the run's timeline as a Chrome trace that
//! Perfetto opens, with a track per node, the faults and what the orchestrator saw; the report is
//! the same with or without it, the same seed writes the same bytes, and sweeps refuse it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::{dtest, root, temp_dir};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The scenario's node ids, in node order.
fn node_ids(file: &str) -> Vec<String> {
    let scenario =
        dtest_core::scenario::parse(&std::fs::read(root().join(file)).expect("read")).expect("a valid scenario");
    scenario.nodes().map(|n| scenario.node_id(n)).collect()
}

/// A parsed trace: its events, and the name of each thread.
struct Trace {
    events: Vec<Value>,
    threads: BTreeMap<u64, String>,
}

impl Trace {
    fn read(file: &Path) -> Trace {
        let value: Value = serde_json::from_slice(&std::fs::read(file).expect("the trace was written")).expect("JSON");
        assert_eq!(value["displayTimeUnit"], "ms");
        let events = value["traceEvents"].as_array().expect("traceEvents").clone();
        let threads = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .map(|e| (e["tid"].as_u64().expect("tid"), e["args"]["name"].as_str().expect("a name").to_owned()))
            .collect();
        Trace { events, threads }
    }

    /// Events of category `cat` with their track's name.
    fn of(&self, cat: &str) -> Vec<(&str, &Value)> {
        self.events.iter().filter(|e| e["cat"] == cat).map(|e| (self.track(e), e)).collect()
    }

    fn track(&self, event: &Value) -> &str {
        event["tid"].as_u64().and_then(|tid| self.threads.get(&tid)).map_or("", String::as_str)
    }
}

fn ts_s(event: &Value) -> f64 {
    event["ts"].as_u64().expect("integer ts") as f64 / 1e6
}

#[test]
fn a_node_failure_trace_shows_every_node_the_kill_and_every_attempt_and_changes_no_report() {
    let dir = temp_dir("trace-node-failure");
    let (trace_file, again_file) = (dir.join("trace.json"), dir.join("again.json"));
    let (out_traced, out_plain) = (dir.join("traced-report.json"), dir.join("plain-report.json"));
    let file = "scenarios/node-failure.json";
    let traced =
        dtest(&["sim", file, "--seed", "42", "--json", "--out", path(&out_traced), "--trace", path(&trace_file)]);
    assert_eq!(traced.status.code(), Some(0), "{}", String::from_utf8_lossy(&traced.stderr));
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(stderr.contains("https://ui.perfetto.dev"), "says how to open it: {stderr}");
    let plain = dtest(&["sim", file, "--seed", "42", "--json", "--out", path(&out_plain)]);
    assert_eq!(traced.stdout, plain.stdout, "--trace changes nothing in the report on stdout");
    assert_eq!(std::fs::read(&out_traced).ok(), std::fs::read(&out_plain).ok(), "nor in --out");
    let again = dtest(&["sim", file, "--seed", "42", "--trace", path(&again_file)]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(std::fs::read(&trace_file).ok(), std::fs::read(&again_file).ok(), "the same seed, the same bytes");

    let report: Value = serde_json::from_slice(&traced.stdout).expect("a JSON report");
    let trace = Trace::read(&trace_file);
    std::fs::remove_dir_all(&dir).expect("clean up");
    let end_s = report["simulated_s"].as_f64().expect("simulated_s");

    // A track per node, named by its id, in node order.
    let names: Vec<&String> = trace.threads.values().collect();
    let nodes = node_ids(file);
    let tracks: Vec<&&String> = names.iter().filter(|n| nodes.contains(n)).collect();
    assert_eq!(tracks.len(), nodes.len(), "one track per node: {names:?}");
    assert!(tracks.iter().zip(&nodes).all(|(track, node)| **track == node), "in node order: {tracks:?}");

    // The kill of worker-1 at 15 s lasts to the end; the rack's from 40 s to its restart.
    let faults = trace.of("fault");
    let spans: Vec<(&str, f64, f64)> = faults
        .iter()
        .map(|(_, e)| (e["name"].as_str().expect("name"), ts_s(e), e["dur"].as_u64().expect("dur") as f64 / 1e6))
        .collect();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0].0, "kill worker-1");
    assert_eq!(spans[0].1, 15.0);
    assert!((spans[0].1 + spans[0].2 - end_s).abs() < 1e-6, "to the end: {spans:?}");
    assert_eq!((spans[1].1, spans[1].2), (40.0, 60.0), "{spans:?}");

    // Each killed node declared dead after its kill, within the 10 s the scenario expects; the
    // rack back as new incarnations after its restart at 100 s.
    let marks = trace.of("node");
    let racks = ["rack-1", "rack-2", "rack-3", "rack-4", "rack-5"];
    for (node, kill_s) in [("worker-1", 15.0)].into_iter().chain(racks.map(|r| (r, 40.0))) {
        let dead: Vec<f64> =
            marks.iter().filter(|(t, e)| *t == node && e["name"] == "dead").map(|(_, e)| ts_s(e)).collect();
        assert!(dead.iter().any(|&t| t > kill_s && t <= kill_s + 10.0), "{node} dead after {kill_s} s: {dead:?}");
        assert!(dead.iter().all(|&t| t > kill_s), "{node} not dead before its kill: {dead:?}");
    }
    for rack in racks {
        assert!(
            marks
                .iter()
                .any(|(t, e)| *t == rack && e["name"] == "alive" && e["args"]["incarnation"] == 2 && ts_s(e) >= 100.0),
            "{rack} joined again after its restart"
        );
    }

    // Every attempt on a node's track: each passed or was taken back, since no shard fails,
    // none outlives its 120 s lease, and every one completed before the end.
    let attempts = trace.of("attempt");
    assert!(attempts.iter().all(|(t, _)| nodes.iter().any(|n| t == n || t.starts_with(&format!("{n} (")))));
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, e) in &attempts {
        *outcomes.entry(e["args"]["outcome"].as_str().expect("outcome")).or_default() += 1;
        let (start, dur) = (ts_s(e), e["dur"].as_u64().expect("dur") as f64 / 1e6);
        assert!(start >= 0.0 && start + dur <= end_s + 1e-6, "within the run: {e}");
    }
    let (completed, reassignments) = (report["tasks"]["completed"].as_u64(), report["reassignments"].as_u64());
    assert_eq!((completed, report["tasks"]["failed"].as_u64()), (Some(300), Some(0)));
    assert!(reassignments.is_some_and(|r| r > 0), "the kills took work back");
    assert_eq!(
        outcomes,
        BTreeMap::from([("passed", 300), ("reassigned", reassignments.unwrap_or_default())]),
        "attempts = completed + reassignments"
    );
    let passed: BTreeSet<&str> = attempts
        .iter()
        .filter(|(_, e)| e["args"]["outcome"] == "passed")
        .map(|(_, e)| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(passed.len(), 300, "every shard passed once, named shard#1..shard#300");
    assert!(passed.contains("shard#1") && passed.contains("shard#300"));
}

#[test]
fn a_trace_is_of_one_run_so_sweeps_and_strategy_all_refuse_it() {
    let dir = temp_dir("trace-refused");
    let trace = dir.join("trace.json");
    let file = "scenarios/partition.json";
    for extra in [&["--seeds", "0..2"][..], &["--strategy", "all"], &["--check-determinism"]] {
        let mut args = vec!["sim", file, "--trace", path(&trace)];
        args.extend_from_slice(extra);
        let output = dtest(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains("--trace"), "{extra:?} names --trace: {stderr}");
        assert!(!trace.exists(), "{extra:?} wrote no trace");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
