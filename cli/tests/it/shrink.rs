//! `dtest sim FILE --seed N --shrink`: a swarm seed that catches the broken core (fencing off)
//! shrinks to a scenario file of at most two faults on fewer nodes or tasks, which replays the
//! same invariant with the printed command and passes with the core intact; a passing seed has
//! nothing to shrink; shrinking is of one seed; every shipped scenario written back as a file
//! reads back as itself.

use std::process::Output;

use crate::{dtest, root, shipped_scenarios, temp_dir, text};

/// A swarm seed of scenarios/node-failure.json that fails with fencing broken, its first
/// violation a stale result counted (checked: seeds 0, 2, 8, 17, 25 and 32 of 0..40 are such).
const BROKEN_SEED: &str = "0";

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
}

/// The `before` and `after` numbers of a row of the sizes table: `  nodes   40   5`.
fn row(stdout: &str, name: &str) -> (f64, f64) {
    let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{stdout}"));
    let numbers: Vec<f64> = line.split_whitespace().skip(1).map(|n| n.parse().expect("a number")).collect();
    (numbers[0], numbers[1])
}

/// The invariants a report's violations name.
fn invariants(report: &serde_json::Value) -> Vec<String> {
    report["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["invariant"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_broken_core_s_swarm_seed_shrinks_to_a_small_file_that_replays_the_same_invariant() {
    let dir = temp_dir("shrink-broken");
    let out = dir.join("minimal.json");
    let out_text = out.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let shrunk = dtest(&[
        "sim",
        "scenarios/node-failure.json",
        "--swarm",
        "--break-fencing",
        "--seed",
        BROKEN_SEED,
        "--shrink",
        "--shrink-out",
        &out_text,
    ]);
    let took = started.elapsed();
    let stdout = text(&shrunk.stdout);
    assert_eq!(shrunk.status.code(), Some(1), "{stdout}{}", text(&shrunk.stderr));
    assert!(stdout.starts_with(&format!("seed {BROKEN_SEED} fails invariant stale_result; shrunk in ")), "{stdout}");
    let (faults_before, faults) = row(&stdout, "faults");
    let (nodes_before, nodes) = row(&stdout, "nodes");
    let (tasks_before, tasks) = row(&stdout, "tasks");
    let (seconds_before, seconds) = row(&stdout, "fault-seconds");
    assert!(faults <= 2.0 && faults < faults_before, "{stdout}");
    assert!(nodes < nodes_before || tasks < tasks_before, "{stdout}");
    assert!((nodes_before, tasks_before) == (40.0, 300.0) && seconds < seconds_before, "{stdout}");
    assert!(stdout.contains(&format!("wrote {out_text}\n")), "{stdout}");
    eprintln!("shrinking seed {BROKEN_SEED} took {took:?}: {}", stdout.lines().next().unwrap_or(""));

    // The file is a scenario file like any other.
    let written = std::fs::read(&out).expect("the minimal scenario was written");
    let scenario = dtest_core::scenario::parse(&written).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(scenario.faults.len() as f64, faults);
    assert_eq!((scenario.nodes_total() as f64, scenario.tasks_total() as f64), (nodes, tasks));
    let validated = dtest(&["validate", &out_text]);
    assert_eq!(validated.status.code(), Some(0), "{}", text(&validated.stderr));

    // The printed command replays the same invariant; the same file with the core intact passes.
    let replay = stdout.lines().find_map(|l| l.strip_prefix("replay: ")).expect("a replay line");
    assert_eq!(replay, format!("dtest sim {out_text} --seed {BROKEN_SEED} --break-fencing"));
    let mut words: Vec<&str> = replay.split_whitespace().skip(1).collect();
    words.push("--json");
    let replayed = dtest(&words);
    assert_eq!(replayed.status.code(), Some(1), "{}", text(&replayed.stderr));
    assert!(invariants(&json(&replayed)).contains(&"stale_result".to_owned()), "{}", text(&replayed.stdout));
    let sound = dtest(&["sim", &out_text, "--seed", BROKEN_SEED, "--json"]);
    assert_eq!(sound.status.code(), Some(0), "{}", text(&sound.stdout));
    assert!(invariants(&json(&sound)).is_empty());

    // Shrinking the minimal case again finds it minimal, and says so as JSON.
    let again_out = dir.join("again.json").to_string_lossy().into_owned();
    let again = dtest(&[
        "sim",
        &out_text,
        "--seed",
        BROKEN_SEED,
        "--break-fencing",
        "--shrink",
        "--shrink-out",
        &again_out,
        "--json",
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    let again = json(&again);
    assert_eq!(again["failing"], serde_json::json!({ "invariant": "stale_result" }));
    assert_eq!(again["before"]["faults"].as_f64(), Some(faults));
    assert!(again["after"]["faults"].as_f64() <= Some(faults), "{again}");
    assert_eq!(again["written"], again_out.as_str());
    assert_eq!(again["replay"], format!("dtest sim {again_out} --seed {BROKEN_SEED} --break-fencing").as_str());
    assert!(again["simulations"].as_u64().is_some_and(|n| n > 0) && again["stopped_early"] == false, "{again}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_passing_seed_has_nothing_to_shrink() {
    // The broken core's seed, with the core intact.
    let dir = temp_dir("shrink-passing");
    let out = dir.join("never.json");
    let out_text = out.to_string_lossy().into_owned();
    let args =
        ["sim", "scenarios/node-failure.json", "--swarm", "--seed", BROKEN_SEED, "--shrink", "--shrink-out", &out_text];
    let passed = dtest(&args);
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed.stderr));
    assert_eq!(text(&passed.stdout), format!("seed {BROKEN_SEED} passes: nothing to shrink\n"));
    assert!(!out.exists(), "nothing is written");
    let as_json = json(&dtest(&[&args[..], &["--json"]].concat()));
    assert_eq!(as_json["passed"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shrinking_is_of_one_seed_given() {
    for extra in
        [&["--seeds", "0..3"][..], &["--seed", "1", "--check-determinism"], &[], &["--seed", "1", "--strategy", "all"]]
    {
        let output = dtest(&[&["sim", "scenarios/node-failure.json", "--shrink"][..], extra].concat());
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {}", text(&output.stdout));
        let stderr = text(&output.stderr);
        assert!(stderr.contains("--shrink") || stderr.contains("--seed"), "{extra:?}: {stderr}");
    }
}

#[test]
fn every_shipped_scenario_written_back_as_a_file_reads_back_as_itself() {
    for file in shipped_scenarios() {
        let bytes = std::fs::read(root().join(&file)).expect("read the scenario");
        let scenario = dtest_core::scenario::parse(&bytes).unwrap_or_else(|p| panic!("{file}: {p:?}"));
        let text = dtest_core::scenario::to_json(&scenario);
        let back = dtest_core::scenario::parse(text.as_bytes()).unwrap_or_else(|p| panic!("{file}: {p:?}\n{text}"));
        assert_eq!(back, scenario, "{file}");
    }
}
