//! `dtest sim FILE`: a deterministic simulation of a scenario under madsim.

use std::path::PathBuf;

use dtest_core::report::Report;
use dtest_core::scenario::{Distribution, Scenario};
use dtest_sim::compare::{StrategyRow, compare};
use dtest_sim::sweep::{parse_seeds, sweep};
use dtest_sim::{SimOptions, simulate};

use crate::Exit;
use crate::output::Outputs;
use crate::validate::print_stdout;
use dtest_orchestrator::scenario_file::load;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The seed; the same seed gives the same run and the same report.
    #[arg(long, default_value_t = 42, conflicts_with = "seeds")]
    seed: u64,
    /// Sweep seeds A to B-1 on every core, then list every failing seed with the command that
    /// replays it.
    #[arg(long, value_name = "A..B")]
    seeds: Option<String>,
    /// Replace the scenario's faults with a mix drawn from each seed (partitions, kills, loss,
    /// latency, clogs); seeds are then judged by the invariants alone.
    #[arg(long)]
    swarm: bool,
    /// Override the scenario's distribution strategy (round_robin, least_loaded, random,
    /// capability, locality, weighted, adaptive), or `all` to compare them on the same seed.
    #[arg(long, value_name = "NAME")]
    strategy: Option<String>,
    /// Run the seed twice and fail unless the two reports are identical, byte for byte.
    #[arg(long)]
    check_determinism: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also write a self-contained HTML report (charts of the load) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(args: &Args) -> Exit {
    let label = args.file.display().to_string();
    let scenario = match load(&args.file) {
        Ok(scenario) => scenario,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}", p.display_in(&label));
            }
            return Exit::BadInput;
        }
    };
    let all = args.strategy.as_deref() == Some("all");
    let distribution = match args.strategy.as_deref().filter(|_| !all).map(parse_distribution).transpose() {
        Ok(d) => d,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::BadInput;
        }
    };
    let options = SimOptions { seed: args.seed, distribution, swarm: args.swarm, ..SimOptions::default() };
    if let Some(range) = &args.seeds {
        return run_sweep(args, &scenario, range, &options);
    }
    if all {
        return compare_strategies(args, &scenario, &options);
    }
    let report = match simulate(&scenario, &options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{label}: {e}");
            return Exit::BadInput;
        }
    };
    if args.check_determinism {
        let json = report.to_json();
        let again = match simulate(&scenario, &options) {
            Ok(report) => report.to_json(),
            Err(e) => {
                eprintln!("{label}: {e}");
                return Exit::BadInput;
            }
        };
        if again != json {
            eprintln!("error: seed {} gave two different reports; the simulation is not deterministic", args.seed);
            return Exit::Failed;
        }
        eprintln!("determinism: seed {} ran twice with identical reports ({} bytes)", args.seed, json.len());
    }
    let outputs = Outputs { json: args.json, out: args.out.as_deref(), html: args.html.as_deref(), junit: None };
    crate::output::finish(&report, outputs)
}

/// The command line that replays a seed of this run, without `--seed`.
fn replay_command(args: &Args) -> String {
    let mut command = format!("dtest sim {}", args.file.display());
    if args.swarm {
        command.push_str(" --swarm");
    }
    if let Some(strategy) = &args.strategy {
        command.push_str(&format!(" --strategy {strategy}"));
    }
    command
}

fn run_sweep(args: &Args, scenario: &Scenario, range: &str, options: &SimOptions) -> Exit {
    let Some(seeds) = parse_seeds(range) else {
        eprintln!("error: --seeds expects A..B with A < B, like 0..1000; found {range:?}");
        return Exit::BadInput;
    };
    if args.strategy.as_deref() == Some("all") {
        eprintln!("error: --strategy all compares strategies on one seed; use it with --seed, not --seeds");
        return Exit::BadInput;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(seeds.end - seeds.start),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg} [{elapsed} of ~{duration}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let failed = std::sync::atomic::AtomicU64::new(0);
    let progress = |outcome: &dtest_sim::sweep::SeedOutcome| {
        if !outcome.passed {
            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        bar.set_message(format!("{} failed", failed.load(std::sync::atomic::Ordering::Relaxed)));
        bar.inc(1);
    };
    let result = sweep(scenario, seeds, options, threads, &progress);
    bar.finish_and_clear();
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return Exit::BadInput;
        }
    };
    let replay = replay_command(args);
    let printed = if args.json {
        let failing: Vec<serde_json::Value> = result
            .failing()
            .map(|o| serde_json::json!({ "seed": o.seed, "reason": o.reason, "replay": format!("{replay} --seed {}", o.seed) }))
            .collect();
        let summary = serde_json::json!({
            "scenario": scenario.name,
            "seeds": result.outcomes.len(),
            "swarm": args.swarm,
            "passed": result.outcomes.len() - failing.len(),
            "failed": failing.len(),
            "failing": failing,
        });
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&summary).unwrap_or_default()))
    } else {
        print_stdout(&result.summary(&replay, usize::MAX))
    };
    if printed != Exit::Ok {
        return printed;
    }
    if result.failing().next().is_some() { Exit::Failed } else { Exit::Ok }
}

/// `--strategy all`: every distribution strategy on the same seed, one row each.
fn compare_strategies(args: &Args, scenario: &Scenario, options: &SimOptions) -> Exit {
    let reports = match compare(scenario, options, &Distribution::ALL, &|_| {}) {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return Exit::BadInput;
        }
    };
    let printed = if args.json {
        let rows: Vec<StrategyRow> = reports.iter().map(StrategyRow::of).collect();
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&rows).unwrap_or_default()))
    } else {
        print_stdout(&strategy_table(scenario, args.seed, &reports))
    };
    if printed != Exit::Ok {
        return printed;
    }
    if reports.iter().all(Report::passed) { Exit::Ok } else { Exit::Failed }
}

fn strategy_table(scenario: &Scenario, seed: u64, rows: &[Report]) -> String {
    let mut out = format!("dtest sim {} --seed {seed} --strategy all\n", scenario.name);
    out.push_str(&format!(
        "  {:<13} {:>10} {:>10} {:>9} {:>7} {:>9} {:>10} {:>10}  {}\n",
        "strategy", "makespan", "util mean", "util max", "spread", "reassign", "detect max", "p99", "result"
    ));
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for r in rows {
        out.push_str(&format!(
            "  {:<13} {:>10} {:>9.0}% {:>8.0}% {:>7.2} {:>9} {:>10} {:>10}  {}\n",
            r.strategy.distribution,
            or_dash(r.makespan_s.map(|s| format!("{s:.1} s"))),
            r.utilization.mean * 100.0,
            r.utilization.max * 100.0,
            r.utilization.busy_spread,
            r.reassignments,
            or_dash(r.failure_detection_ms.map(|d| format!("{:.2} s", d.max as f64 / 1e3))),
            or_dash(r.latency_ms.map(|l| format!("{:.1} ms", l.p99))),
            if r.passed() { "passed" } else { "FAILED" },
        ));
    }
    out.push_str("  spread: how unevenly the nodes were busy (coefficient of variation of busy time; 0 is even)\n");
    if let Some(a) = rows.iter().find_map(|r| r.strategy.adaptive) {
        out.push_str(&format!(
            "  adaptive placed {} tasks avoiding failures, {} rebalancing, {} packing (2+ queued per node), {} spreading\n",
            a.avoid_failures, a.rebalance, a.pack, a.spread
        ));
    }
    out
}

fn parse_distribution(name: &str) -> Result<Distribution, String> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
        format!(
            "unknown strategy {name:?}; expected one of round_robin, least_loaded, random, capability, locality, weighted, adaptive"
        )
    })
}
