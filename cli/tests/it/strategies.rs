//! `dtest sim FILE --strategy all --seeds A..B`: every distribution strategy on the same seeds,
//! each with its means and 95% confidence intervals, and its differences from the scenario's own
//! strategy paired by seed, the significant ones marked; as a table and as JSON.

use crate::{dtest, text};

const STRATEGIES: [&str; 7] =
    ["round_robin", "least_loaded", "random", "capability", "locality", "weighted", "adaptive"];

/// The line of `strategy` in the part of `table` after the line starting with `after`.
fn line<'a>(table: &'a str, after: &str, strategy: &str) -> &'a str {
    table
        .lines()
        .skip_while(|l| !l.starts_with(after))
        .find(|l| l.starts_with(&format!("  {strategy} ")))
        .unwrap_or_else(|| panic!("no line of {strategy} after {after:?} in:\n{table}"))
}

/// `REPORT.reassignments` of one run of partition.
fn reassignments(seed: u64, strategy: &str) -> i64 {
    let seed = seed.to_string();
    let output = dtest(&["sim", "scenarios/partition.json", "--seed", &seed, "--strategy", strategy, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    report["reassignments"].as_i64().expect("reassignments")
}

#[test]
fn every_strategy_over_seeds_gets_intervals_and_paired_differences_from_the_scenario_s() {
    let output = dtest(&["sim", "scenarios/partition.json", "--strategy", "all", "--seeds", "0..8"]);
    let table = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{table}{}", text(&output.stderr));
    assert!(table.starts_with("dtest sim partition --seeds 0..8 --strategy all: every strategy on the same 8 seeds\n"));
    let differences = "differences from least_loaded (the scenario's strategy)";
    for strategy in STRATEGIES {
        let means = line(&table, "  strategy", strategy);
        assert!(
            means.contains("0 of 8") && means.matches(" ± ").count() == 4,
            "makespan, p99, reassignments, spread: {means}"
        );
        assert!(line(&table, differences, strategy).contains(" (8)"), "8 pairs each:\n{table}");
    }
    assert!(table.contains("p99 ms") && table.contains("95% confidence interval"), "{table}");
    assert!(table.contains("* significant: the interval excludes 0"), "{table}");
    // The baseline against itself: 0, not significant.
    let own = line(&table, differences, "least_loaded");
    assert!(own.contains("+0.00 ± 0.00 (8)") && !own.contains('*'), "{own}");
    // Locality keeps a region's tasks in it, so the partition that cuts us-east off takes back
    // far fewer leases: marked significant, and so it is, seed by seed, run alone.
    let locality = line(&table, differences, "locality");
    // Cells end with their pairs, `(8)`, then the mark: makespan, p99, reassignments, spread.
    let cells: Vec<&str> = locality.split("(8)").collect();
    assert!(cells[2].contains(" -") && cells[3].starts_with('*'), "reassignments: {locality}");
    for seed in 0..8 {
        let (ours, theirs) = (reassignments(seed, "locality"), reassignments(seed, "least_loaded"));
        assert!(ours < theirs, "seed {seed}: locality {ours} reassignments, least_loaded {theirs}");
    }
}

#[test]
fn the_paired_comparison_as_json_and_its_exit_codes() {
    let output = dtest(&["sim", "scenarios/sharded-tests.json", "--strategy", "all", "--seeds", "0..12", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        (&json["baseline"], &json["seeds"]["start"], &json["seeds"]["end"]),
        (&"least_loaded".into(), &0.into(), &12.into())
    );
    let rows = json["strategies"].as_array().expect("strategies");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["strategy"].as_str()).collect();
    assert_eq!(names, STRATEGIES);
    for row in rows {
        assert_eq!((row["runs"].as_u64(), row["failed"].as_u64()), (Some(12), Some(0)), "{row}");
        let spread = &row["means"]["busy_spread"];
        assert!(
            spread["low"].as_f64() <= spread["mean"].as_f64() && spread["mean"].as_f64() <= spread["high"].as_f64()
        );
        assert!(row["means"]["latency_p99_ms"].is_null(), "no load, no latency");
    }
    let baseline = rows.iter().find(|r| r["strategy"] == "least_loaded").expect("the baseline");
    for metric in ["makespan_s", "reassignments", "busy_spread"] {
        let d = &baseline["differences"][metric];
        assert_eq!(
            (d["mean"].as_f64(), d["n"].as_u64(), &d["significant"]),
            (Some(0.0), Some(12), &false.into()),
            "{metric}"
        );
    }
    // Capability leaves the choice among sharded-tests' four equal nodes to `first_fit`, which
    // packs the shards onto the first: a larger spread than least_loaded's, on every seed.
    let capability = rows.iter().find(|r| r["strategy"] == "capability").expect("capability");
    assert_eq!(capability["differences"]["busy_spread"]["significant"], true, "{capability}");
    // A run that fails makes the comparison exit 1; bad input exits 2.
    let broken =
        ["sim", "scenarios/node-failure.json", "--strategy", "all", "--seeds", "0..4", "--swarm", "--break-fencing"];
    let failed = dtest(&broken);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stdout));
    let round_robin = line(&text(&failed.stdout), "  strategy", "round_robin").to_owned();
    assert!(!round_robin.contains(" 0 of 4"), "fencing off fails swarm seeds: {round_robin}");
    for bad in [&["--seeds", "4..4"][..], &["--seeds", "0..4", "--shard", "0/2"], &["--seeds", "0..200000"]] {
        let output = dtest(&[&["sim", "scenarios/sharded-tests.json", "--strategy", "all"][..], bad].concat());
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", text(&output.stderr));
    }
}
