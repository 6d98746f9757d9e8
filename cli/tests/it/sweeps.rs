//! Sweeps across machines: shards of a sweep (`--shard I/N --out FILE`) merge (`dtest sim merge`)
//! into exactly the summary one machine prints, merging refuses what is not every shard of one
//! sweep once, and the Kubernetes and CI manifests of docs/sweeps.md run as written.

use std::path::Path;
use std::process::{Command, Output};

use crate::{dtest, root, temp_dir, text};

/// A scenario whose command tasks fail now and then, and are not retried: some seeds pass, some
/// fail.
const FLAKY: &str = r#"{
  "name": "flaky",
  "description": "command tasks that fail now and then: some seeds pass, some fail",
  "duration_s": 60,
  "cluster": { "groups": [ { "name": "g", "count": 2, "resources": { "cpu_millis": 1000, "memory_mb": 1024 } } ] },
  "workload": { "tasks": [ { "name": "t", "count": 4, "kind": "command",
    "requires": { "cpu_millis": 250, "memory_mb": 128 }, "command": { "argv": ["true"] },
    "sim": { "duration_ms": { "mean": 400, "stddev": 100 }, "fail_rate": 0.15 } } ] },
  "retry": { "max_attempts": 1 },
  "expect": { "all_tasks_complete": true, "max_failed_tasks": 0 }
}"#;

/// Runs `count` shards of a sweep of `file` (with `extra` flags) over `seeds`, each writing its
/// result file into `dir`; returns the files.
fn run_shards(file: &str, extra: &[&str], seeds: &str, count: u64, dir: &Path) -> Vec<String> {
    (0..count)
        .map(|index| {
            let out = dir.join(format!("shard-{index}.json")).to_string_lossy().into_owned();
            let shard = format!("{index}/{count}");
            let mut args = vec!["sim", file, "--seeds", seeds, "--shard", &shard, "--out", &out];
            args.extend_from_slice(extra);
            let output = dtest(&args);
            assert!(matches!(output.status.code(), Some(0 | 1)), "shard {shard}: {}", text(&output.stderr));
            assert!(text(&output.stdout).starts_with(&format!("shard {shard} of seeds {seeds}\n")), "{shard}");
            out
        })
        .collect()
}

fn merge(files: &[String], extra: &[&str]) -> Output {
    let mut args = vec!["sim", "merge"];
    args.extend(files.iter().map(String::as_str));
    args.extend_from_slice(extra);
    dtest(&args)
}

#[test]
fn three_shards_merge_into_the_summary_and_failing_seeds_of_one_machine() {
    let dir = temp_dir("sweeps-merge");
    let flaky = dir.join("flaky.json").to_string_lossy().into_owned();
    std::fs::write(&flaky, FLAKY).expect("write the scenario");
    for (file, extra, seeds) in
        [("scenarios/load-patterns.json", &["--swarm"][..], "0..9"), (flaky.as_str(), &[][..], "3..17")]
    {
        let sweep = |more: &[&str]| dtest(&[&["sim", file, "--seeds", seeds][..], extra, more].concat());
        let (whole, whole_json) = (sweep(&[]), sweep(&["--json"]));
        let shards = run_shards(file, extra, seeds, 3, &dir);
        let merged = merge(&shards, &[]);
        assert_eq!(text(&merged.stdout), text(&whole.stdout), "{file}: {}", text(&merged.stderr));
        assert_eq!(merged.status.code(), whole.status.code(), "{file}");
        let merged_json = merge(&shards, &["--json"]);
        let summary = |o: &Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("JSON on stdout");
        let (merged_json, whole_json) = (summary(&merged_json), summary(&whole_json));
        assert_eq!(merged_json, whole_json, "{file}");
        if file == flaky {
            // The failing path is exercised: some seeds failed, each with its replay command.
            assert_eq!(merged.status.code(), Some(1));
            let failing = merged_json["failing"].as_array().expect("failing seeds");
            assert!(!failing.is_empty() && merged_json["passed"].as_u64() > Some(0), "{merged_json}");
            let seed = &failing[0]["seed"];
            assert_eq!(failing[0]["replay"], format!("dtest sim {flaky} --seed {seed}"));
            // A result file says which expectations failed.
            let result: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&shards[0]).expect("a result file")).expect("JSON");
            let failed = result["outcomes"].as_array().expect("outcomes").iter().find(|o| o["passed"] == false);
            assert_eq!(failed.map(|o| &o["failed"][0]), Some(&serde_json::json!("expectation all_tasks_complete")));
            assert_eq!(result["scenario"]["sha256"].as_str().map(str::len), Some(64));
        }
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn merging_refuses_missing_and_repeated_shards_other_scenarios_and_malformed_files() {
    let dir = temp_dir("sweeps-refuse");
    let files = run_shards("scenarios/node-failure.json", &[], "0..6", 3, &dir);
    let refused = |files: &[String], expected: &str| {
        let output = merge(files, &[]);
        assert_eq!(output.status.code(), Some(2), "{expected}: {}", text(&output.stdout));
        assert!(text(&output.stderr).contains(expected), "expected {expected:?} in:\n{}", text(&output.stderr));
    };
    refused(
        &[files[0].clone(), files[2].clone()],
        "1 of 3 shards missing (2 seeds of 0..6):\n  shard 1/3: seeds 1, 4 (2 seeds)",
    );
    refused(&[files[0].clone(), files[1].clone(), files[1].clone(), files[2].clone()], "shard 1/3 is in both");
    let other = temp_dir("sweeps-refuse-other");
    let other_files = run_shards("scenarios/flapping-network.json", &[], "0..6", 3, &other);
    refused(&[files[0].clone(), other_files[1].clone(), files[2].clone()], "is a sweep of another scenario");
    let swarm = run_shards("scenarios/node-failure.json", &["--swarm"], "0..6", 3, &other);
    refused(&[files[0].clone(), swarm[1].clone(), files[2].clone()], "is not of the same sweep");
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{\"format\": \"dtest-sweep-result/1\"}").expect("write");
    refused(&[garbage.to_string_lossy().into_owned()], "not a dtest sweep result file");
    // Oversized files are refused before they are read (a sparse file: no disk used).
    let huge = dir.join("huge.json");
    std::fs::File::create(&huge).expect("create").set_len((256 << 20) + 1).expect("grow");
    refused(&[huge.to_string_lossy().into_owned()], "larger than 256 MiB");
    for bad in ["3/3", "1/0", "x"] {
        let output = dtest(&["sim", "scenarios/node-failure.json", "--seeds", "0..6", "--shard", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(text(&output.stderr).contains("--shard expects I/N"), "{bad}: {}", text(&output.stderr));
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
    std::fs::remove_dir_all(&other).expect("clean up");
}

/// The documents of a YAML file, as JSON (PyYAML reads it: scripts/test.sh installs it).
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let output = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)"])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(output.status.success(), "python3 with PyYAML reads {}: {}", path.display(), text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON from python3")
}

/// The long flags a `--help` lists.
fn flags(help_of: &[&str]) -> Vec<String> {
    let output = dtest(&[help_of, &["--help"]].concat());
    text(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .map(|word| word.trim_end_matches(',').to_owned())
        .collect()
}

/// Checks that every `--flag` of a `dtest sim` (or `dtest sim merge`) command line is one the
/// binary lists in its help.
fn assert_flags_exist(words: &[&str], manifest: &str) {
    let merge = words.get(2) == Some(&"merge");
    let known = flags(if merge { &["sim", "merge"][..] } else { &["sim"][..] });
    for word in words.iter().filter(|w| w.starts_with("--")) {
        assert!(known.iter().any(|k| k == word), "{manifest} uses {word}, which `dtest sim --help` does not list");
    }
}

/// The seed range of a command line (after `--seeds`) and N of its `--shard I/N`.
fn seeds_and_shards(words: &[&str], manifest: &str) -> (String, u64) {
    let after = |flag: &str| {
        let at = words.iter().position(|w| *w == flag).unwrap_or_else(|| panic!("{manifest}: no {flag}"));
        words[at + 1]
    };
    let shards = after("--shard").rsplit_once('/').and_then(|(_, n)| n.parse().ok());
    (after("--seeds").to_owned(), shards.unwrap_or_else(|| panic!("{manifest}: --shard is not INDEX/N")))
}

/// What one machine prints for a sweep of node-failure over `seeds` with `--swarm`.
fn one_machine(seeds: &str) -> String {
    text(&dtest(&["sim", "scenarios/node-failure.json", "--swarm", "--seeds", seeds]).stdout)
}

#[test]
fn the_kubernetes_indexed_job_runs_its_shards_and_its_merge_as_written() {
    let manifest = "docs/k8s/sweep-job.yaml";
    let documents = yaml_documents(&root().join(manifest));
    let job = documents
        .iter()
        .find(|d| d["kind"] == "Job" && d["spec"]["completionMode"] == "Indexed")
        .unwrap_or_else(|| panic!("{manifest} has an Indexed Job"));
    let completions = job["spec"]["completions"].as_u64().expect("completions");
    assert!(job["spec"]["parallelism"].as_u64().is_some_and(|p| p >= 1), "parallelism");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let words: Vec<&str> = [&container["command"], &container["args"]]
        .into_iter()
        .flat_map(|list| list.as_array().expect("an exec-form command").iter().map(|w| w.as_str().expect("a string")))
        .collect();
    assert_eq!(words[..2], ["dtest", "sim"], "{words:?}");
    assert!(words.iter().any(|w| w.contains("$(JOB_COMPLETION_INDEX)")), "the shard is the pod's index");
    assert_flags_exist(&words, manifest);
    let (seeds, shards) = seeds_and_shards(&words, manifest);
    assert_eq!(shards, completions, "{manifest}: --shard INDEX/N with N = completions");
    // Every index, as Kubernetes would run it, over a few seeds instead of 100,000.
    let dir = temp_dir("sweeps-k8s");
    let tiny = format!("0..{}", completions + 3);
    let results = format!("{}/", dir.display());
    for index in 0..completions {
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| if *w == seeds { tiny.clone() } else { w.replace("$(JOB_COMPLETION_INDEX)", &index.to_string()) })
            .map(|w| w.replace("/results/", &results))
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_dtest")).args(&args).current_dir(root()).output().expect("run");
        assert!(matches!(output.status.code(), Some(0 | 1)), "index {index}: {args:?}: {}", text(&output.stderr));
    }
    let merge_manifest = "docs/k8s/sweep-merge.yaml";
    let merge_job = &yaml_documents(&root().join(merge_manifest))[0];
    let container = &merge_job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], serde_json::json!(["sh", "-c"]), "{merge_manifest}");
    let script = container["args"][0].as_str().expect("a script");
    assert_flags_exist(&script.split_whitespace().collect::<Vec<_>>(), merge_manifest);
    let merged = run_script("sh", &script.replace("/results/", &results), &root());
    assert_eq!(merged, one_machine(&tiny), "the merged shards of {manifest} are the one-machine sweep");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn the_ci_matrix_runs_its_shards_and_its_merge_as_written() {
    let manifest = "docs/ci/sweep-matrix.yml";
    let workflow = &yaml_documents(&root().join(manifest))[0];
    let jobs = workflow["jobs"].as_object().expect("jobs");
    let runs = |job: &str| -> Vec<String> {
        jobs[job]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|step| step["run"].as_str())
            .filter(|run| run.contains("dtest sim"))
            .map(str::to_owned)
            .collect()
    };
    let (shard_runs, merge_runs) = (runs("shard"), runs("merge"));
    assert_eq!((shard_runs.len(), merge_runs.len()), (1, 1), "{manifest}: one shard step, one merge step");
    let matrix: Vec<u64> = jobs["shard"]["strategy"]["matrix"]["shard"]
        .as_array()
        .expect("a matrix over shard indexes")
        .iter()
        .map(|i| i.as_u64().expect("an index"))
        .collect();
    let line = shard_runs[0].lines().find(|l| l.contains("dtest sim")).expect("the command");
    let line = line.replace("${{ matrix.shard }}", "INDEX");
    let words: Vec<&str> = line.split_whitespace().skip_while(|w| *w != "dtest").collect();
    assert_flags_exist(&words, manifest);
    let (seeds, shards) = seeds_and_shards(&words, manifest);
    assert_eq!(
        matrix,
        (0..shards).collect::<Vec<_>>(),
        "{manifest}: the matrix is every shard of --shard INDEX/{shards}"
    );
    assert_eq!(jobs["shard"]["strategy"]["fail-fast"], false, "every shard runs to its end");
    let merge_line = merge_runs[0].lines().find(|l| l.contains("dtest sim")).expect("the command");
    assert_flags_exist(&merge_line.split_whitespace().skip_while(|w| *w != "dtest").collect::<Vec<_>>(), manifest);
    // Each job's script as the runner would run it, from a checkout with the scenarios.
    let dir = temp_dir("sweeps-ci");
    std::os::unix::fs::symlink(root().join("scenarios"), dir.join("scenarios")).expect("link the scenarios");
    let tiny = format!("0..{}", shards + 3);
    for index in &matrix {
        let script = shard_runs[0].replace(&seeds, &tiny).replace("${{ matrix.shard }}", &index.to_string());
        assert!(!script.contains("${{"), "an expression the test does not know: {script}");
        run_script("bash", &script, &dir);
    }
    let merged = run_script("bash", &merge_runs[0], &dir);
    assert_eq!(merged, one_machine(&tiny), "the merged shards of {manifest} are the one-machine sweep");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Runs `script` with `shell -e -c` in `dir`, `dtest` on the PATH, and returns its stdout; a
/// merge's exit 1 (a seed failed) counts as run.
fn run_script(shell: &str, script: &str, dir: &Path) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_dtest")).parent().expect("the binary's directory");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output =
        Command::new(shell).args(["-e", "-c", script]).env("PATH", path).current_dir(dir).output().expect("run");
    assert!(matches!(output.status.code(), Some(0 | 1)), "{script}: {}", text(&output.stderr));
    text(&output.stdout)
}

/// The row of `dimension` in the first (all failures) table of an attribution.
fn attribution_row<'a>(summary: &'a str, dimension: &str) -> &'a str {
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{dimension} ")))
        .unwrap_or_else(|| panic!("no row of {dimension} in:\n{summary}"))
}

#[test]
fn a_swarm_sweep_of_the_broken_core_names_partitions_alike_on_one_machine_and_merged() {
    // The known broken core counts stale results. What makes a result stale is a node that
    // keeps working while the orchestrator has given up on it: cut off by a partition, it sends
    // its results once the partition heals. Kills are not it (a killed node's results never
    // come), and over 100 seeds the attribution says so.
    let (file, seeds, flags) = ("scenarios/node-failure.json", "0..100", ["--swarm", "--break-fencing"]);
    let whole = dtest(&[&["sim", file, "--seeds", seeds][..], &flags].concat());
    let summary = text(&whole.stdout);
    assert_eq!(whole.status.code(), Some(1), "{summary}{}", text(&whole.stderr));
    assert!(summary.contains("most associated with failure: partition ("), "{summary}");
    assert!(attribution_row(&summary, "partition").ends_with(" *"), "{summary}");
    for dimension in ["kill_restarted", "kill_permanent", "packet_loss", "latency"] {
        assert!(!attribution_row(&summary, dimension).ends_with('*'), "{dimension} is not significant:\n{summary}");
    }
    assert!(summary.contains("\ninvariant stale_result ("), "{summary}");
    assert!(
        summary.contains("replay: dtest sim scenarios/node-failure.json --swarm --break-fencing --seed "),
        "{summary}"
    );
    // Shards carry every seed's mix: the merge attributes exactly as one machine did.
    let dir = temp_dir("sweeps-attribution");
    let shards = run_shards(file, &flags, seeds, 2, &dir);
    let merged = merge(&shards, &[]);
    assert_eq!(text(&merged.stdout), summary, "{}", text(&merged.stderr));
    let json: serde_json::Value = serde_json::from_slice(&merge(&shards, &["--json"]).stdout).expect("JSON");
    let attribution = &json["attribution"];
    assert_eq!(attribution["stands_out"], "partition", "{attribution}");
    assert_eq!(attribution["seeds"], 100);
    assert_eq!(attribution["failed"], json["failed"]);
    let partition = attribution["dimensions"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["dimension"] == "partition"))
        .expect("a partition row");
    assert_eq!(partition["significant"], true);
    assert!(partition["p_value"].as_f64().is_some_and(|p| p < 0.01), "{partition}");
    let outcomes = json["outcomes"].as_array().expect("every seed");
    assert_eq!(outcomes.len(), 100);
    assert!(outcomes.iter().all(|o| o["mix"].is_array()), "every seed has its mix");
    let failing = outcomes.iter().find(|o| o["passed"] == false).expect("a failing seed");
    let violated = failing["invariants"].as_array().expect("the invariants it violated");
    assert!(violated.iter().any(|i| i == "stale_result" || i == "ended_twice"), "{failing}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
