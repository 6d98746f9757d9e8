//! `dtest sim`: the shipped scenarios pass at seed 42 with the reports pinned in `snapshots/`,
//! runs are deterministic, and bad input exits 2.

use crate::{dtest, shipped_scenarios, snapshot_settings};

#[test]
fn every_shipped_scenario_passes_at_seed_42_with_the_report_reviewed() {
    snapshot_settings().bind(|| {
        for file in shipped_scenarios() {
            let output = dtest(&["sim", &file, "--seed", "42"]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            assert_eq!(output.status.code(), Some(0), "{file}:\n{text}{}", String::from_utf8_lossy(&output.stderr));
            assert!(text.contains(": PASSED"), "{file}: {text}");
            let name = file.trim_start_matches("scenarios/").trim_end_matches(".json");
            insta::assert_snapshot!(format!("sim-{name}-seed-42"), text);
        }
    });
}

#[test]
fn the_json_report_has_the_contract_fields_and_replays_byte_for_byte() {
    let first = dtest(&["sim", "scenarios/partition.json", "--seed", "7", "--json", "--check-determinism"]);
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("ran twice with identical reports"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON on stdout");
    for field in [
        "scenario",
        "mode",
        "seed",
        "strategy",
        "tasks",
        "reassignments",
        "nodes",
        "failure_detection_ms",
        "messages",
        "utilization",
        "latency_ms",
        "histogram",
        "expectations",
        "violations",
        "requests",
        "errors",
        "duration_s",
        "rps",
        "latency_uncorrected_ms",
    ] {
        assert!(report.get(field).is_some(), "the report lacks `{field}`");
    }
    assert_eq!(report["mode"], "sim");
    assert_eq!(report["seed"], 7);
    for field in ["submitted", "completed", "failed", "cancelled", "lost", "duplicated"] {
        assert!(report["tasks"][field].is_u64(), "tasks.{field}");
    }
    let second = dtest(&["sim", "scenarios/partition.json", "--seed", "7", "--json"]);
    assert_eq!(first.stdout, second.stdout, "the same seed gives the same bytes");
    let other = dtest(&["sim", "scenarios/partition.json", "--seed", "8", "--json"]);
    assert_ne!(first.stdout, other.stdout, "another seed, another run");
}

#[test]
fn out_writes_the_json_report_and_strategy_overrides_the_scenario() {
    let dir = std::env::temp_dir().join(format!("dtest-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("report.json");
    let output = dtest(&[
        "sim",
        "scenarios/sharded-tests.json",
        "--strategy",
        "round_robin",
        "--out",
        out.to_str().expect("utf-8 temp path"),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the report was written")).expect("JSON");
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(report["strategy"]["distribution"], "round_robin");
    assert!(String::from_utf8_lossy(&output.stdout).contains("round_robin"), "text on stdout as well");
}

#[test]
fn bad_input_exits_2_with_a_reason() {
    let unknown = dtest(&["sim", "scenarios/partition.json", "--strategy", "fastest"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown strategy \"fastest\""));
    let invalid = dtest(&["sim", "cli/tests/invalid/negative-cpu.json"]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("cpu_millis: expected a non-negative integer"));
    let missing = dtest(&["sim", "no/such.json"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_scenario_without_what_simulation_needs_is_refused() {
    let dir = std::env::temp_dir().join(format!("dtest-sim-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("no-sim.json");
    std::fs::write(
        &file,
        r#"{ "name": "no-sim", "description": "a command with nothing to simulate", "duration_s": 60,
             "cluster": { "groups": [ { "name": "g", "count": 1, "resources": { "cpu_millis": 1000 } } ] },
             "workload": { "tasks": [ { "name": "t", "kind": "command", "command": { "argv": ["true"] } } ] } }"#,
    )
    .expect("write");
    let output = dtest(&["sim", file.to_str().expect("utf-8 temp path")]);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("task \"t\" has no `sim` section; dtest sim needs it"));
}

#[test]
fn the_readme_shows_the_report_the_quick_start_really_prints() {
    let output = dtest(&["sim", "scenarios/partition.json", "--seed", "42"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let readme = std::fs::read_to_string(crate::root().join("README.md")).expect("read README.md");
    assert!(readme.contains(text.as_ref()), "README.md's sample report differs from what dtest prints:\n{text}");
}

#[test]
fn the_strategy_comparison_of_partition_is_reviewed() {
    let output = dtest(&["sim", "scenarios/partition.json", "--seed", "42", "--strategy", "all"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}");
    for strategy in ["round_robin", "least_loaded", "random", "capability", "locality", "weighted", "adaptive"] {
        assert!(text.contains(strategy), "{strategy} missing from:\n{text}");
    }
    snapshot_settings().bind(|| insta::assert_snapshot!("sim-partition-strategy-all", text));
}

#[test]
fn a_swarm_sweep_reports_every_seed_and_replays_one() {
    let output = dtest(&["sim", "scenarios/node-failure.json", "--seeds", "0..8", "--swarm", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!((summary["seeds"].as_u64(), summary["failed"].as_u64()), (Some(8), Some(0)));
    // A swarm seed replays on its own, with the same fault mix.
    let one = dtest(&["sim", "scenarios/node-failure.json", "--seed", "3", "--swarm", "--json", "--check-determinism"]);
    assert_eq!(one.status.code(), Some(0), "{}", String::from_utf8_lossy(&one.stderr));
    let bad = dtest(&["sim", "scenarios/node-failure.json", "--seeds", "5..5"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--seeds expects A..B"));
}

#[test]
fn a_swarm_run_is_judged_by_its_invariants_in_text_and_exit_code_alike() {
    // Seed 9's fault mix makes node-failure's `max_false_suspicions: 0` fail, though no
    // invariant is violated: the verdict and the exit code must agree that it passed.
    let output = dtest(&["sim", "scenarios/node-failure.json", "--seed", "9", "--swarm"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.starts_with("dtest sim node-failure --swarm --seed 9: PASSED"), "{text}");
    assert!(text.contains("FAIL max_false_suspicions") && text.contains("not judged in a swarm run"), "{text}");
    let json = dtest(&["sim", "scenarios/node-failure.json", "--seed", "9", "--swarm", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON on stdout");
    assert_eq!(report["swarm"], true);
}

#[test]
fn a_determinism_failure_names_the_first_event_where_the_runs_part() {
    // The hidden, test-only flag makes the second run's shell draw a random number out of turn
    // at event 500: a real divergence, which the check must find there and not later.
    let output = dtest(&[
        "sim",
        "scenarios/node-failure.json",
        "--seed",
        "3",
        "--check-determinism",
        "--perturb-second-run-at",
        "500",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "no report of a run that is not deterministic");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with("error: seed 3 is not deterministic: the runs diverge at event 500 (t="), "{stderr}");
    assert!(lines[0].ends_with(" s)"), "{stderr}");
    assert!(lines[1].starts_with("  first run:  [") && !lines[1].contains("perturbation"), "{stderr}");
    assert!(lines[2].starts_with("  second run: [") && lines[2].contains("test-only perturbation"), "{stderr}");
    let help = String::from_utf8_lossy(&dtest(&["sim", "--help"]).stdout).into_owned();
    assert!(!help.contains("perturb"), "the test-only flag is hidden");
}
