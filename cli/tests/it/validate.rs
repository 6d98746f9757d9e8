//! `dtest validate`: shipped scenarios pass; every file of the invalid corpus fails with exit 2
//! and the messages recorded in `snapshots/`.

use crate::{dtest, root, shipped_scenarios, snapshot_settings};

#[test]
fn every_shipped_scenario_validates() {
    let files = shipped_scenarios();
    assert!(files.len() >= 8, "expected the eight shipped scenarios, found {files:?}");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let output = dtest(&args);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.stdout, b"", "validate prints nothing but problems");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn invalid_files_fail_with_position_path_and_exit_2() {
    let corpus = root().join("cli/tests/invalid");
    let mut names: Vec<String> = std::fs::read_dir(&corpus)
        .expect("read the invalid corpus")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 30, "the invalid corpus has {} files, expected at least 30", names.len());
    snapshot_settings().bind(|| {
        for name in &names {
            let file = format!("cli/tests/invalid/{name}");
            let output = dtest(&["validate", &file]);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert_eq!(output.status.code(), Some(2), "{file}: {stderr}");
            assert_eq!(output.stdout, b"", "{file}: problems go to stderr");
            for line in stderr.lines() {
                // FILE:LINE:COLUMN: [PATH: ]MESSAGE
                let rest = line.strip_prefix(&format!("{file}:")).unwrap_or_else(|| panic!("no file in {line:?}"));
                let mut parts = rest.splitn(3, ':');
                let (line_no, column) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                assert!(line_no.parse::<u32>().is_ok() && column.parse::<u32>().is_ok(), "no line:column in {line:?}");
            }
            insta::assert_snapshot!(format!("invalid-{}", name.trim_end_matches(".json")), stderr);
        }
    });
}

#[test]
fn every_problem_of_a_file_is_reported() {
    let output = dtest(&["validate", "cli/tests/invalid/many-problems.json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let paths = ["duration_s", "count", "kind", "rps", "faults[0].type"];
    for path in paths {
        assert!(stderr.contains(path), "no problem reported at {path}:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), paths.len(), "{stderr}");
}

#[test]
fn files_are_reported_independently_and_in_json_on_request() {
    let output = dtest(&[
        "validate",
        "--json",
        "scenarios/geo.json",
        "cli/tests/invalid/negative-cpu.json",
        "no/such/file.json",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let problems: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let problems = problems.as_array().expect("an array of problems");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0]["file"], "cli/tests/invalid/negative-cpu.json");
    assert_eq!(problems[0]["path"], "workload.tasks[0].requires.cpu_millis");
    assert_eq!(problems[0]["message"], "expected a non-negative integer, found -5");
    assert!(problems[0]["line"].as_u64().is_some_and(|l| l > 1));
    assert_eq!(problems[1]["file"], "no/such/file.json");
    assert_eq!(problems[1]["message"], "cannot open: no such file or directory");
}

#[test]
fn oversized_files_are_refused_without_reading_them_whole() {
    let dir = std::env::temp_dir().join(format!("dtest-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("big.json");
    // 100 MB of a JSON array: valid syntax, far past SCENARIO_BYTES_MAX.
    let mut bytes = Vec::with_capacity(100 * 1024 * 1024);
    bytes.push(b'[');
    while bytes.len() < 100 * 1024 * 1024 {
        bytes.extend_from_slice(b"1,");
    }
    bytes.extend_from_slice(b"1]");
    std::fs::write(&file, &bytes).expect("write the big file");
    let output = dtest(&["validate", file.to_str().expect("utf-8 temp path")]);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bytes, above the limit of 8388608 (SCENARIO_BYTES_MAX)"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(dtest(&["validate"]).status.code(), Some(2));
    assert_eq!(dtest(&["no-such-command"]).status.code(), Some(2));
    let help = dtest(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("validate"));
}
