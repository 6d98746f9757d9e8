//! `dtest sim FILE`: a deterministic simulation of a scenario under madsim; `dtest sim merge`:
//! the result files of a sweep's shards, combined.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dtest_core::report::Report;
use dtest_core::scenario::{Distribution, Scenario};
use dtest_sim::attribution::Attribution;
use dtest_sim::compare::{COMPARED_SEEDS_MAX, Figures, Metric, PairedStats, StrategyRow, compare, compare_seeds};
use dtest_sim::shard::{self, ResultFile, ScenarioFile, Seeds};
use dtest_sim::sweep::{SeedOutcome, Shard, parse_seeds, sweep_shard};
use dtest_sim::{Determinism, Divergence, SimOptions, TracedEvent, check_determinism, simulate};

use crate::Exit;
use crate::output::Outputs;
use crate::validate::print_stdout;
use dtest_orchestrator::scenario_file::load;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, disable_help_subcommand = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<SimCommand>,
    /// The scenario file.
    #[arg(value_name = "FILE", required = true)]
    file: Option<PathBuf>,
    /// The seed; the same seed gives the same run and the same report.
    #[arg(long, default_value_t = 42, conflicts_with = "seeds")]
    seed: u64,
    /// Sweep seeds A to B-1 on every core, then list every failing seed with the command that
    /// replays it.
    #[arg(long, value_name = "A..B")]
    seeds: Option<String>,
    /// Run only shard I of N of the sweep (I from 0): the seeds s of A..B with (s - A) % N == I.
    /// With --out, writes the shard's result file for `dtest sim merge`.
    #[arg(long, value_name = "I/N", requires = "seeds")]
    shard: Option<String>,
    /// Replace the scenario's faults with a mix drawn from each seed (partitions, kills, loss,
    /// latency, clogs); seeds are then judged by the invariants alone.
    #[arg(long)]
    swarm: bool,
    /// Override the scenario's distribution strategy (round_robin, least_loaded, random,
    /// capability, locality, weighted, adaptive), or `all` to compare them on the same seed; with
    /// --seeds, on every seed of the range, with 95% confidence intervals and paired differences
    /// from the scenario's own strategy.
    #[arg(long, value_name = "NAME")]
    strategy: Option<String>,
    /// Run the seed twice and fail unless both runs handle the same events (every frame, input,
    /// timeout and action, at the same simulated times) and give identical reports, byte for
    /// byte; if not, show the first event where they part.
    #[arg(long)]
    check_determinism: bool,
    /// Test-only (dtest's own tests use it to show a real divergence): with
    /// --check-determinism, the second run's shell draws a number from the seeded generator out
    /// of turn at this event (counted from 0).
    #[arg(long, hide = true, value_name = "EVENT", requires = "check_determinism")]
    perturb_second_run_at: Option<u64>,
    /// Test-only: the orchestrator counts stale results (a known broken core), to show the checkers catch it.
    #[arg(long, hide = true)]
    break_fencing: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to FILE; with --seeds, the sweep's result file (every seed's
    /// outcome), which `dtest sim merge` combines with the other shards'.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also write a self-contained HTML report (charts of the load) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also write the run's timeline to FILE as a Chrome trace (JSON): a track per node with
    /// every task attempt and what the orchestrator thought of the node, the faults and the
    /// alerts. Open it in https://ui.perfetto.dev (or chrome://tracing). One seed only.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seeds", "check_determinism"])]
    trace: Option<PathBuf>,
    /// `--shrink` and `--shrink-out`: the smallest scenario that fails as the seed does.
    #[command(flatten)]
    shrinking: crate::shrink::ShrinkArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SimCommand {
    /// Combine the result files of a sweep's shards (`--shard I/N --out FILE`) into the sweep's
    /// summary, with the command that replays each failing seed.
    Merge(MergeArgs),
}

#[derive(Debug, clap::Args)]
struct MergeArgs {
    /// The result files, one per shard, every shard once.
    #[arg(value_name = "FILES", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// The scenario file; clap requires it unless a subcommand is given.
    fn file(&self) -> &Path {
        self.file.as_deref().unwrap_or(Path::new(""))
    }
}

pub fn run(args: &Args) -> Exit {
    if let Some(SimCommand::Merge(merge)) = &args.command {
        return run_merge(merge);
    }
    let label = args.file().display().to_string();
    let scenario = match load(args.file()) {
        Ok(scenario) => scenario,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}", p.display_in(&label));
            }
            return Exit::BadInput;
        }
    };
    let all = args.strategy.as_deref() == Some("all");
    if all && args.trace.is_some() {
        eprintln!("error: --trace writes the timeline of one run; --strategy all makes one per strategy: name one");
        return Exit::BadInput;
    }
    let distribution = match args.strategy.as_deref().filter(|_| !all).map(parse_distribution).transpose() {
        Ok(d) => d,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::BadInput;
        }
    };
    let options = SimOptions {
        seed: args.seed,
        distribution,
        swarm: args.swarm,
        break_fencing: args.break_fencing,
        ..SimOptions::default()
    };
    if args.shrinking.shrink {
        let given = crate::shrink::Given {
            file: args.file(),
            scenario: &scenario,
            options: &options,
            strategy: args.strategy.as_deref(),
            json: args.json,
        };
        return crate::shrink::run(&args.shrinking, &given);
    }
    if let Some(range) = &args.seeds {
        if all {
            return compare_strategies_over_seeds(args, &scenario, range, &options);
        }
        return run_sweep(args, &scenario, range, &options);
    }
    if all {
        return compare_strategies(args, &scenario, &options);
    }
    let report = if args.check_determinism {
        match check_determinism(&scenario, &options, args.perturb_second_run_at) {
            Ok(Determinism::Same { report, events }) => {
                eprintln!(
                    "determinism: seed {} ran twice with identical reports ({} bytes) and identical events ({events})",
                    args.seed,
                    report.to_json().len()
                );
                *report
            }
            Ok(Determinism::Diverged(divergence)) => {
                eprint!("{}", divergence_text(args.seed, &divergence));
                return Exit::Failed;
            }
            Ok(Determinism::Intermittent { index, at_ms }) => {
                eprintln!(
                    "error: seed {} is not deterministic: the runs diverged at event {index} (t={:.3} s), but not when run again to show it",
                    args.seed,
                    at_ms as f64 / 1e3
                );
                return Exit::Failed;
            }
            Ok(Determinism::ReportsDiffer) => {
                eprintln!(
                    "error: seed {} is not deterministic: every event agreed, yet the two reports differ",
                    args.seed
                );
                return Exit::Failed;
            }
            Err(e) => {
                eprintln!("{label}: {e}");
                return Exit::BadInput;
            }
        }
    } else if let Some(path) = &args.trace {
        match simulate_and_trace(&scenario, &options, path) {
            Ok(report) => report,
            Err(exit) => return exit,
        }
    } else {
        match simulate(&scenario, &options) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("{label}: {e}");
                return Exit::BadInput;
            }
        }
    };
    let outputs = Outputs { json: args.json, out: args.out.as_deref(), html: args.html.as_deref(), junit: None };
    crate::output::finish(&report, outputs)
}

/// `--trace FILE`: simulates with the run's events kept and writes their timeline to `path` as a
/// Chrome trace; the report is the one [`simulate`] gives. Says on stderr what it wrote, and if
/// the run had more events than a simulation keeps, where the trace stops.
fn simulate_and_trace(scenario: &Scenario, options: &SimOptions, path: &Path) -> Result<Report, Exit> {
    let (report, events, dropped) = dtest_sim::simulate_timeline(scenario, options).map_err(|e| {
        eprintln!("error: {e}");
        Exit::BadInput
    })?;
    // The faults that ran: with --swarm, the mix drawn from the seed.
    let swarm = options.swarm.then(|| dtest_sim::sweep::swarm_scenario(scenario, options.seed));
    let trace = dtest_sim::perfetto::chrome_trace(swarm.as_ref().unwrap_or(scenario), &report, &events, dropped);
    if let Err(e) = std::fs::write(path, &trace.json) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return Err(Exit::BadInput);
    }
    if dropped > 0 {
        eprintln!(
            "warning: the run had {} events; the trace holds the first {} and stops at {:.3} s",
            events.len() as u64 + dropped,
            events.len(),
            events.last().map_or(0, |(at, _)| *at) as f64 / 1e3
        );
    }
    eprintln!(
        "trace: wrote {} ({} events, {} bytes); open it in https://ui.perfetto.dev (or chrome://tracing)",
        path.display(),
        trace.events,
        trace.json.len()
    );
    Ok(report)
}

/// Where two runs of a seed part, for people: the event's index and time, then both versions.
fn divergence_text(seed: u64, d: &Divergence) -> String {
    let version = |event: &Option<TracedEvent>| match event {
        Some(e) => format!("[{:.3} s] {}", e.at_ms as f64 / 1e3, e.text),
        None => format!("(the run ended after {} events)", d.index),
    };
    format!(
        "error: seed {seed} is not deterministic: the runs diverge at event {} (t={:.3} s)\n  first run:  {}\n  second run: {}\n",
        d.index,
        d.at_ms as f64 / 1e3,
        version(&d.first),
        version(&d.second)
    )
}

/// The command line that replays a seed of this run, without `--seed`.
fn replay_command(file: &str, swarm: bool, strategy: Option<&str>, break_fencing: bool) -> String {
    let mut command = format!("dtest sim {file}");
    if swarm {
        command.push_str(" --swarm");
    }
    if break_fencing {
        command.push_str(" --break-fencing");
    }
    if let Some(strategy) = strategy {
        command.push_str(&format!(" --strategy {strategy}"));
    }
    command
}

/// A sweep's summary as JSON: what `--seeds --json` and `merge --json` print. A swarm sweep adds
/// every seed's fault mix (`outcomes`, as many as the sweep's seeds, which a result file bounds)
/// and the attribution of failures to fault dimensions.
fn sweep_json(scenario: &str, swarm: bool, outcomes: &[SeedOutcome], replay: &str) -> String {
    let seeds = outcomes.len() as u64;
    let failing: Vec<serde_json::Value> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| serde_json::json!({ "seed": o.seed, "reason": o.reason, "replay": format!("{replay} --seed {}", o.seed) }))
        .collect();
    let mut summary = serde_json::json!({
        "scenario": scenario,
        "seeds": seeds,
        "swarm": swarm,
        "passed": seeds - failing.len() as u64,
        "failed": failing.len(),
        "failing": failing,
    });
    if swarm {
        summary["outcomes"] = outcomes.iter().map(mix_json).collect();
        summary["attribution"] = serde_json::json!(Attribution::of(outcomes));
    }
    format!("{}\n", serde_json::to_string_pretty(&summary).unwrap_or_default())
}

/// One seed of a swarm sweep's JSON: whether it passed, the dimensions of its fault mix, and the
/// invariants it violated.
fn mix_json(o: &SeedOutcome) -> serde_json::Value {
    let mut seed = serde_json::json!({ "seed": o.seed, "passed": o.passed, "mix": o.mix });
    if !o.invariants.is_empty() {
        seed["invariants"] = serde_json::json!(o.invariants);
    }
    seed
}

/// A progress bar on stderr of `len` steps of `unit` (seeds, runs), with how many failed.
struct Progress {
    bar: indicatif::ProgressBar,
    failed: AtomicU64,
}

impl Progress {
    fn new(len: u64, unit: &str) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{bar:40}} {{pos}}/{{len}} {unit}, {{msg}} [{{elapsed}} of ~{{duration}}]"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress { bar, failed: AtomicU64::new(0) }
    }

    /// One step done, which `passed` or not.
    fn step(&self, passed: bool) {
        let failed = self.failed.fetch_add(u64::from(!passed), Ordering::Relaxed) + u64::from(!passed);
        self.bar.set_message(format!("{failed} failed"));
        self.bar.inc(1);
    }
}

/// The SHA-256 of `bytes`, in hex, as `sha256sum` prints it.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn run_sweep(args: &Args, scenario: &Scenario, range: &str, options: &SimOptions) -> Exit {
    let Some(seeds) = parse_seeds(range) else {
        eprintln!("error: --seeds expects A..B with A < B, like 0..1000; found {range:?}");
        return Exit::BadInput;
    };
    let shard = match args.shard.as_deref().map(|text| (text, Shard::parse(text))) {
        None => Shard::WHOLE,
        Some((_, Some(shard))) => shard,
        Some((text, None)) => {
            eprintln!(
                "error: --shard expects I/N with 0 <= I < N <= {}, like 0/4; found {text:?}",
                dtest_sim::sweep::SHARDS_MAX
            );
            return Exit::BadInput;
        }
    };
    let shard_seeds = shard.len(&seeds);
    if args.out.is_some() && shard_seeds > shard::SHARD_SEEDS_MAX {
        eprintln!(
            "error: a result file holds at most {} seeds; this one would hold {shard_seeds}: split the sweep with --shard",
            shard::SHARD_SEEDS_MAX
        );
        return Exit::BadInput;
    }
    // Read before the sweep, so that the hash is of the file that ran.
    let sha256 = match args.out.as_ref().map(|_| std::fs::read(args.file())).transpose() {
        Ok(bytes) => bytes.map(|b| sha256_hex(&b)),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file().display());
            return Exit::BadInput;
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = Progress::new(shard_seeds, "seeds");
    let progress = |outcome: &SeedOutcome| bar.step(outcome.passed);
    let result = sweep_shard(scenario, seeds.clone(), shard, options, threads, &progress);
    bar.bar.finish_and_clear();
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("{}: {e}", args.file().display());
            return Exit::BadInput;
        }
    };
    let path = args.file().display().to_string();
    if let (Some(out), Some(sha256)) = (&args.out, sha256) {
        let failed = result.failing().count() as u64;
        let file = ResultFile {
            format: shard::FORMAT.to_owned(),
            dtest: env!("CARGO_PKG_VERSION").to_owned(),
            scenario: ScenarioFile { path: path.clone(), name: scenario.name.clone(), sha256 },
            seeds: Seeds { start: seeds.start, end: seeds.end },
            shard,
            swarm: args.swarm,
            strategy: args.strategy.clone(),
            break_fencing: args.break_fencing,
            passed: result.outcomes.len() as u64 - failed,
            failed,
            outcomes: result.outcomes.clone(),
        };
        let mut text = serde_json::to_string(&file).unwrap_or_default();
        text.push('\n');
        if let Err(e) = std::fs::write(out, text) {
            eprintln!("error: cannot write {}: {e}", out.display());
            return Exit::BadInput;
        }
    }
    let replay = replay_command(&path, args.swarm, args.strategy.as_deref(), args.break_fencing);
    let printed = if args.json {
        print_stdout(&sweep_json(&scenario.name, args.swarm, &result.outcomes, &replay))
    } else {
        let mut text = String::new();
        if args.shard.is_some() {
            text.push_str(&format!("shard {shard} of seeds {range}\n"));
        }
        text.push_str(&result.summary(&replay, usize::MAX));
        print_stdout(&text)
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
            eprintln!("{}: {e}", args.file().display());
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

/// `--strategy all --seeds A..B`: every strategy on every seed of the range on every core, paired
/// by seed; prints each strategy's means with 95% confidence intervals and its differences from
/// the scenario's own strategy. 0 when every run passed, 1 when one failed, 2 on bad input.
fn compare_strategies_over_seeds(args: &Args, scenario: &Scenario, range: &str, options: &SimOptions) -> Exit {
    let Some(seeds) = parse_seeds(range) else {
        eprintln!("error: --seeds expects A..B with A < B, like 0..1000; found {range:?}");
        return Exit::BadInput;
    };
    if args.shard.is_some() || args.out.is_some() {
        eprintln!(
            "error: --strategy all with --seeds runs on one machine and prints its comparison; --shard and --out are for sweeps"
        );
        return Exit::BadInput;
    }
    let count = seeds.end - seeds.start;
    if count > COMPARED_SEEDS_MAX {
        eprintln!(
            "error: --strategy all compares strategies over at most {COMPARED_SEEDS_MAX} seeds; {range} has {count}"
        );
        return Exit::BadInput;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = Progress::new(count * Distribution::ALL.len() as u64, "runs");
    let progress = |figures: &Figures| bar.step(figures.passed);
    let result = compare_seeds(scenario, seeds.clone(), options, &Distribution::ALL, threads, &progress);
    bar.bar.finish_and_clear();
    let paired = match result {
        Ok(paired) => paired,
        Err(e) => {
            eprintln!("{}: {e}", args.file().display());
            return Exit::BadInput;
        }
    };
    let stats = paired.stats(scenario.strategy.distribution);
    let printed = if args.json {
        let json = serde_json::json!({
            "scenario": scenario.name,
            "seeds": { "start": seeds.start, "end": seeds.end },
            "swarm": args.swarm,
            "baseline": stats.baseline,
            "strategies": stats.strategies,
        });
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&json).unwrap_or_default()))
    } else {
        print_stdout(&paired_table(&scenario.name, &seeds, &stats))
    };
    if printed != Exit::Ok {
        return printed;
    }
    if paired.passed() { Exit::Ok } else { Exit::Failed }
}

/// How a metric is headed and how many decimals its values get.
fn metric_format(metric: Metric) -> (&'static str, usize) {
    match metric {
        Metric::MakespanS => ("makespan s", 2),
        Metric::LatencyP99Ms => ("p99 ms", 1),
        Metric::Reassignments => ("reassignments", 1),
        Metric::BusySpread => ("busy spread", 3),
    }
}

/// Width of a metric's column in the paired tables.
const METRIC_COLUMN: usize = 22;

/// The paired comparison for people: each strategy's means with their intervals, then its
/// differences from the baseline with their intervals and pairs, significant ones marked.
fn paired_table(name: &str, seeds: &Range<u64>, stats: &PairedStats) -> String {
    let count = seeds.end - seeds.start;
    // p99 only when the scenario has load: a column of dashes says nothing.
    let metrics: Vec<Metric> =
        Metric::ALL.into_iter().filter(|&m| stats.strategies.iter().any(|s| s.means.get(m).is_some())).collect();
    let row = |first: &str, second: &str, cells: &mut dyn Iterator<Item = String>| {
        let mut line = format!("  {first:<13} {second:>9}");
        for cell in cells {
            line.push_str(&format!(" {cell:>METRIC_COLUMN$}"));
        }
        format!("{}\n", line.trim_end())
    };
    let header =
        |first: &str, second: &str| row(first, second, &mut metrics.iter().map(|&m| metric_format(m).0.to_owned()));
    let mut out = format!(
        "dtest sim {name} --seeds {}..{} --strategy all: every strategy on the same {count} seeds\n",
        seeds.start, seeds.end
    );
    out.push_str(&header("strategy", "failed"));
    for s in &stats.strategies {
        let mut cells = metrics
            .iter()
            .map(|&m| s.means.get(m).as_ref().map_or_else(|| "-".to_owned(), |e| mean_cell(m, e, s.runs)));
        out.push_str(&row(&dtest_core::report::name(&s.strategy), &format!("{} of {}", s.failed, s.runs), &mut cells));
    }
    out.push_str("  mean ± half-width of its 95% confidence interval over the seeds (Student's t);\n");
    out.push_str("  (n) when only n seeds had the figure (a run whose tasks did not all end has no makespan)\n");
    out.push_str(&format!(
        "differences from {} (the scenario's strategy), seed by seed: mean ± 95% confidence interval (pairs)\n",
        dtest_core::report::name(&stats.baseline)
    ));
    out.push_str(&header("strategy", ""));
    for s in &stats.strategies {
        let mut cells = metrics
            .iter()
            .map(|&m| s.differences.get(m).as_ref().map_or_else(|| "-".to_owned(), |d| difference_cell(m, d)));
        out.push_str(&row(&dtest_core::report::name(&s.strategy), "", &mut cells));
    }
    out.push_str(
        "  * significant: the interval excludes 0, so the seeds do not explain the difference (each interval\n",
    );
    out.push_str("    at 95% alone: among this many, expect a chance * now and then);\n");
    out.push_str(
        "  (pairs): seeds where both runs had the figure (a seed without a makespan is left out: a strategy\n",
    );
    out.push_str("    whose runs fail on the hard seeds is compared on the easy ones; read its failed count)\n");
    out
}

/// `mean ± half-width`, with `(n)` when fewer than `runs` seeds had the metric.
fn mean_cell(metric: Metric, e: &dtest_sim::stats::Estimate, runs: u64) -> String {
    let p = metric_format(metric).1;
    let half = e.half_width().map_or_else(|| "-".to_owned(), |h| format!("{h:.p$}"));
    let fewer = if e.n < runs { format!(" ({})", e.n) } else { String::new() };
    format!("{:.p$} ± {half}{fewer}", e.mean)
}

/// `+mean ± half-width (pairs)`, then `*` when significant.
fn difference_cell(metric: Metric, d: &dtest_sim::stats::Difference) -> String {
    let p = metric_format(metric).1;
    let half = d.estimate.half_width().map_or_else(|| "-".to_owned(), |h| format!("{h:.p$}"));
    let mark = if d.significant { "*" } else { " " };
    // A mean that rounds to zero is +0, whichever side of it it fell.
    let mean = if format!("{:.p$}", d.estimate.mean.abs()).trim_matches(['0', '.']).is_empty() {
        0.0
    } else {
        d.estimate.mean
    };
    format!("{mean:+.p$} ± {half} ({}){mark}", d.estimate.n)
}

/// `dtest sim merge FILES...`: the shards' result files, checked and combined into the sweep's
/// summary; 2 when they are not every shard of one sweep once, else 1 when a seed failed.
fn run_merge(args: &MergeArgs) -> Exit {
    if args.files.len() as u64 > dtest_sim::sweep::SHARDS_MAX {
        eprintln!(
            "error: a sweep has at most {} shards; {} files given",
            dtest_sim::sweep::SHARDS_MAX,
            args.files.len()
        );
        return Exit::BadInput;
    }
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let label = path.display().to_string();
        match read_result(path) {
            Ok(file) => files.push((label, file)),
            Err(problem) => {
                eprintln!("error: {label}: {problem}");
                return Exit::BadInput;
            }
        }
    }
    let merged = match shard::merge(files) {
        Ok(merged) => merged,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let replay = replay_command(&merged.scenario.path, merged.swarm, merged.strategy.as_deref(), merged.break_fencing);
    let printed = if args.json {
        print_stdout(&sweep_json(&merged.scenario.name, merged.swarm, &merged.outcomes, &replay))
    } else {
        print_stdout(&merged.summary(&replay, usize::MAX))
    };
    if printed != Exit::Ok {
        return printed;
    }
    if merged.failing().next().is_none() { Exit::Ok } else { Exit::Failed }
}

/// Reads a result file, at most [`shard::RESULT_FILE_BYTES_MAX`] bytes of it.
fn read_result(path: &Path) -> Result<ResultFile, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let too_large = || format!("larger than {} MiB; not a result file of a shard", shard::RESULT_FILE_BYTES_MAX >> 20);
    if file.metadata().is_ok_and(|m| m.len() > shard::RESULT_FILE_BYTES_MAX) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(shard::RESULT_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > shard::RESULT_FILE_BYTES_MAX {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("not a dtest sweep result file: {e}"))
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
