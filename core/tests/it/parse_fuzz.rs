//! Throws random and mutated inputs at the scenario parser: it must never panic and must always
//! return either a scenario that keeps the model's invariants or at least one located problem.
//!
//! Three sources, 100,000+ inputs in all: random bytes; the shipped scenarios with their bytes
//! cut, flipped, duplicated and spliced; and the shipped scenarios with one JSON value replaced,
//! removed or added, which gets past the syntax into the schema and cross-field checks.

use dtest_core::limits::{ALERTS_MAX, NODES_MAX, PHI_THRESHOLD_MAX, TASKS_MAX};
use dtest_core::scenario::{self, FaultKind, Scenario, Work};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

fn shipped() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read scenarios/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).expect("read scenario")).collect()
}

/// What must be true of any outcome.
fn check_outcome(bytes: &[u8]) -> Result<(), TestCaseError> {
    match scenario::parse(bytes) {
        Ok(scenario) => check_model(&scenario),
        Err(problems) => {
            prop_assert!(!problems.is_empty(), "an error with no problem in it");
            for p in &problems {
                prop_assert!(!p.message.is_empty());
                prop_assert!(p.message.chars().next().is_some_and(|c| !c.is_uppercase()), "{:?}", p.message);
                prop_assert!(!p.message.ends_with('.'), "{:?}", p.message);
                if let Some(pos) = p.pos {
                    prop_assert!(pos.line >= 1 && pos.column >= 1);
                    let lines = bytes.split(|&b| b == b'\n').count() as u32;
                    prop_assert!(pos.line <= lines, "line {} of {lines}", pos.line);
                }
            }
            Ok(())
        }
    }
}

/// The validated model's invariants, checked independently of the code that built it.
fn check_model(s: &Scenario) -> Result<(), TestCaseError> {
    prop_assert!(s.duration_ms >= 1);
    prop_assert!(!s.groups.is_empty() && s.nodes_total() <= NODES_MAX);
    prop_assert!(s.tasks_total() >= 1 && s.tasks_total() <= TASKS_MAX);
    let node_ok = |n: &scenario::NodeRef| {
        (n.group.0 as usize) < s.groups.len() && n.index >= 1 && n.index <= s.groups[n.group.0 as usize].count
    };
    for task in &s.workload.tasks {
        if let Work::Load(load) = &task.work {
            prop_assert!((load.target.0 as usize) < s.targets.len());
            prop_assert!(load.start_ms + load.pattern.duration_ms() <= s.duration_ms);
        }
    }
    let mut alert_names = std::collections::BTreeSet::new();
    for alert in &s.alerts {
        prop_assert!(alert_names.insert(alert.name.as_str()), "alert {:?} twice", alert.name);
        prop_assert!(alert.for_ms <= s.duration_ms);
        let max = match alert.metric.name() {
            "health_score" | "cluster_health" => 100.0,
            "cpu" | "memory" | "disk" | "task_error_rate" => 1.0,
            "phi" => PHI_THRESHOLD_MAX,
            "nodes_down" => s.nodes_total() as f64,
            other => return Err(TestCaseError::fail(format!("unknown metric {other}"))),
        };
        prop_assert!((0.0..=max).contains(&alert.threshold), "{alert:?}");
    }
    prop_assert!(s.alerts.len() <= ALERTS_MAX);
    for fault in &s.faults {
        prop_assert!(fault.at_ms <= s.duration_ms);
        let sets: Vec<&scenario::NodeSet> = match &fault.kind {
            FaultKind::Partition { sides, heal_at_ms, .. } => {
                prop_assert!(heal_at_ms.is_none_or(|h| h > fault.at_ms && h <= s.duration_ms));
                let with_orchestrator = sides.iter().filter(|side| side.orchestrator).count();
                prop_assert!(with_orchestrator <= 1);
                prop_assert!(sides.len() == 1 || with_orchestrator == 1, "several sides, no orchestrator");
                sides.iter().map(|side| &side.nodes).collect()
            }
            FaultKind::Kill { nodes, restart_at_ms } => {
                prop_assert!(restart_at_ms.is_none_or(|r| r > fault.at_ms && r <= s.duration_ms));
                prop_assert!(!nodes.is_empty());
                vec![nodes]
            }
            FaultKind::PacketLoss { nodes, .. } | FaultKind::Latency { nodes, .. } => vec![nodes],
            FaultKind::Clog { nodes, .. } | FaultKind::Pause { nodes, .. } => vec![nodes],
        };
        for set in sets {
            prop_assert!(set.nodes.iter().all(node_ok));
            prop_assert!(set.groups.iter().all(|g| (g.0 as usize) < s.groups.len()));
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum ByteEdit {
    Truncate(usize),
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| ByteEdit::Flip(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| ByteEdit::Delete(at, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..16),
                prop::sample::select(vec![
                    &b"{"[..],
                    b"}",
                    b"[",
                    b"]",
                    b",",
                    b":",
                    b"\"",
                    b"-",
                    b"1e999",
                    b"null",
                    b"\\u"
                ])
                .prop_map(|s| s.to_vec()),
            ]
        )
            .prop_map(|(at, bytes)| ByteEdit::Insert(at, bytes)),
        (any::<usize>(), 1usize..256).prop_map(|(at, n)| ByteEdit::Duplicate(at, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    let len = bytes.len().max(1);
    match edit {
        ByteEdit::Truncate(at) => bytes.truncate(at % len),
        ByteEdit::Flip(at, b) => {
            if let Some(x) = bytes.get_mut(at % len) {
                *x = *b;
            }
        }
        ByteEdit::Delete(at, n) => {
            let start = at % len;
            let end = (start + n).min(bytes.len());
            bytes.drain(start.min(end)..end);
        }
        ByteEdit::Insert(at, new) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        ByteEdit::Duplicate(at, n) => {
            let start = at % len;
            let end = (start + n).min(bytes.len());
            let copy = bytes.get(start..end).unwrap_or_default().to_vec();
            bytes.splice(end..end, copy);
        }
    }
}

/// A replacement JSON value, biased towards what breaks checks: wrong types, bounds, names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 2, 59, 60, 61, 100_000, 100_001, 1_000_000, 10_000_001])
            .prop_map(Value::from),
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![0.5, 1e-9, 1e300, -0.0]).prop_map(Value::from),
        "[a-z0-9_{}./ -]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "eu",
            "us",
            "eu-1",
            "us-7",
            "orchestrator",
            "api",
            "ramp",
            "kill",
            "partition",
            "command",
            "load",
            "{index}",
            "http://127.0.0.1:1/",
            "",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Clone, Debug)]
enum ValueEdit {
    Replace(Value),
    Remove,
    AddKey(String, Value),
}

/// Applies `edit` to the `pick`-th value of `doc` in a depth-first walk.
fn edit_value(doc: &mut Value, pick: usize, edit: &ValueEdit) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, target: &mut usize, edit: &ValueEdit) -> bool {
        if *target == 0 {
            match edit {
                ValueEdit::Replace(new) => *v = new.clone(),
                ValueEdit::AddKey(key, new) => {
                    if let Value::Object(map) = v {
                        map.insert(key.clone(), new.clone());
                    }
                }
                ValueEdit::Remove => {} // Handled by the parent.
            }
            return true;
        }
        *target -= 1;
        let remove_child = |target: usize| target == 0 && matches!(edit, ValueEdit::Remove);
        match v {
            Value::Array(items) => {
                for i in 0..items.len() {
                    if remove_child(*target) {
                        items.remove(i);
                        return true;
                    }
                    if walk(&mut items[i], target, edit) {
                        return true;
                    }
                }
            }
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    if remove_child(*target) {
                        map.remove(&key);
                        return true;
                    }
                    if walk(map.get_mut(&key).expect("key listed above"), target, edit) {
                        return true;
                    }
                }
            }
            _ => {}
        }
        false
    }
    let mut target = pick % count(doc);
    walk(doc, &mut target, edit);
}

fn value_edit() -> impl Strategy<Value = ValueEdit> {
    prop_oneof![
        4 => json_value().prop_map(ValueEdit::Replace),
        2 => Just(ValueEdit::Remove),
        1 => ("[a-z_]{1,12}", json_value()).prop_map(|(k, v)| ValueEdit::AddKey(k, v)),
    ]
}

fn run(cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner.run(&strategy, |bytes| check_outcome(&bytes)).expect("the parser held for every input");
}

#[test]
fn random_bytes_never_panic() {
    run(20_000, prop::collection::vec(any::<u8>(), 0..2048));
}

#[test]
fn random_json_documents_never_panic() {
    run(20_000, json_value().prop_map(|v| serde_json::to_vec(&v).expect("serialize")));
}

#[test]
fn byte_mutations_of_shipped_scenarios_never_panic() {
    let scenarios = shipped();
    let strategy = (0..scenarios.len(), prop::collection::vec(byte_edit(), 1..6)).prop_map(move |(i, edits)| {
        let mut bytes = scenarios[i].clone();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        bytes
    });
    run(30_000, strategy);
}

#[test]
fn value_mutations_of_shipped_scenarios_never_panic() {
    let scenarios: Vec<Value> =
        shipped().iter().map(|b| serde_json::from_slice(b).expect("shipped scenarios are JSON")).collect();
    let strategy = (0..scenarios.len(), prop::collection::vec((any::<usize>(), value_edit()), 1..4)).prop_map(
        move |(i, edits)| {
            let mut doc = scenarios[i].clone();
            for (pick, edit) in &edits {
                edit_value(&mut doc, *pick, edit);
            }
            serde_json::to_vec_pretty(&doc).expect("serialize")
        },
    );
    run(40_000, strategy);
}

#[test]
fn shipped_scenarios_parse_and_keep_the_model_invariants() {
    for bytes in shipped() {
        let scenario = scenario::parse(&bytes).expect("shipped scenarios are valid");
        check_model(&scenario).expect("invariants");
    }
}
