//! The budget guard: figures of fixed, seeded simulations and placements that noise cannot move
//! (peak heap bytes and allocations from a counting allocator; frames sent, letters delivered
//! and orchestrator events from the simulator), checked against the budgets committed in
//! `benches/budgets.json`. A regression in memory or work fails the build here, on any machine,
//! instead of going unnoticed until someone times the README's figures again.
//!
//! `cargo bench --workspace -- --test` (CI's quick mode) runs it like any benchmark. It exits 1
//! when a figure is over its budget, or so far under it (below half) that the budget no longer
//! guards anything; after a change that moves the figures on purpose, write new budgets (each
//! figure plus 25%) and commit them with the reason:
//!
//! ```sh
//! cargo bench -p dtest-benches --bench budgets -- --bless
//! ```
//!
//! `-- --json` prints the figures as JSON and checks nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use dtest_benches::counting::{Counting, Usage, measure};
use dtest_benches::{cluster, tasks};
use dtest_core::placement::{Observations, Placement, Placer};
use dtest_core::scenario::{self, Allocation, Distribution, Scenario, Weights};
use dtest_sim::sweep::sweep;
use dtest_sim::{Counts, SimOptions, simulate_counted};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Budgets are the blessed figure times this.
const HEADROOM: f64 = 1.25;
/// A figure below this share of its budget means the budget has gone stale.
const STALE_BELOW: f64 = 0.5;

/// Figures of one run, by name.
type Figures = BTreeMap<String, u64>;

/// A fixed run: its name in the budgets, and how to measure it.
type Run = (&'static str, fn() -> Figures);

fn load(name: &str) -> Scenario {
    let path = format!("{}/../scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
    scenario::parse(&std::fs::read(&path).expect("read a shipped scenario")).expect("valid")
}

fn figures(usage: Usage, counts: Option<Counts>) -> Figures {
    let mut f = Figures::new();
    f.insert("peak_heap_bytes".into(), usage.peak_bytes);
    f.insert("allocations".into(), usage.allocations);
    if let Some(c) = counts {
        f.insert("messages".into(), c.messages);
        f.insert("letters".into(), c.letters);
        f.insert("events".into(), c.events);
    }
    f
}

/// One seed of a shipped scenario.
fn simulation(name: &str) -> Figures {
    let scenario = load(name);
    let options = SimOptions { seed: 42, ..SimOptions::default() };
    let (result, usage) = measure(|| simulate_counted(&scenario, &options));
    let (report, counts) = result.expect("a shipped scenario is simulable");
    assert!(report.passed(), "{name} at seed 42 no longer passes: {:?}", report.failure());
    figures(usage, Some(counts))
}

/// A swarm sweep on one thread: its peak heap is one seed's if finished seeds are let go, and
/// grows with the seeds if they are kept.
fn swarm_sweep(name: &str, seeds: u64) -> Figures {
    let scenario = load(name);
    let options = SimOptions { swarm: true, ..SimOptions::default() };
    let (result, usage) = measure(|| sweep(&scenario, 0..seeds, &options, 1, &|_| {}));
    let result = result.expect("a shipped scenario is simulable");
    assert_eq!(result.failing().count(), 0, "{name}: swarm seeds fail");
    figures(usage, None)
}

/// The placement benchmark's cluster of 10,000 nodes taking its 100,000 tasks: what the pool
/// and its index hold at their fullest.
fn placement() -> Figures {
    let requests = tasks(100_000);
    let ((), usage) = measure(|| {
        let mut pool = cluster(10_000);
        let mut placer =
            Placer::new(&pool, Distribution::LeastLoaded, Allocation::BestFit, Weights::default(), false, 7);
        for r in &requests {
            let placed = placer.place(&mut pool, r, &Observations::default());
            assert!(!matches!(placed, Placement::Unschedulable(_)), "the benchmark cluster fits every task");
        }
    });
    figures(usage, None)
}

fn budgets_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("budgets.json")
}

fn main() -> ExitCode {
    let bless = std::env::args().any(|a| a == "--bless");
    let json = std::env::args().any(|a| a == "--json");
    let runs: [Run; 4] = [
        ("placement: 100,000 tasks onto 10,000 nodes", placement),
        ("sim partition --seed 42", || simulation("partition")),
        ("sim scale-1000 --seed 42", || simulation("scale-1000")),
        ("sim partition --seeds 0..30 --swarm, 1 thread", || swarm_sweep("partition", 30)),
    ];
    let measured: BTreeMap<String, Figures> = runs.iter().map(|(name, run)| (name.to_string(), run())).collect();
    if json {
        // For scripts (benches/measured.py): the figures alone, on stdout.
        println!("{}", serde_json::to_string_pretty(&measured).expect("figures serialize"));
        return ExitCode::SUCCESS;
    }

    let path = budgets_path();
    if bless {
        let budgets: BTreeMap<&String, BTreeMap<&String, u64>> = measured
            .iter()
            .map(|(run, f)| (run, f.iter().map(|(k, &v)| (k, (v as f64 * HEADROOM).ceil() as u64)).collect()))
            .collect();
        let text = serde_json::to_string_pretty(&budgets).expect("budgets serialize") + "\n";
        std::fs::write(&path, text).expect("write benches/budgets.json");
        println!("wrote {} (every figure plus {:.0}%)", path.display(), (HEADROOM - 1.0) * 100.0);
        return ExitCode::SUCCESS;
    }
    let budgets: BTreeMap<String, Figures> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("benches/budgets.json is a map of runs to figures"),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };

    println!("budget guard: {}", path.display());
    println!("{:<48} {:<16} {:>14} {:>14} {:>6}", "run", "figure", "measured", "budget", "used");
    let mut problems = Vec::new();
    for (run, figures) in &measured {
        for (figure, &value) in figures {
            let budget = budgets.get(run).and_then(|b| b.get(figure)).copied();
            let used = budget.map_or(String::from("-"), |b| format!("{:.0}%", 100.0 * value as f64 / b.max(1) as f64));
            let shown = budget.map_or(String::from("none"), |b| b.to_string());
            println!("{run:<48} {figure:<16} {value:>14} {shown:>14} {used:>6}");
            match budget {
                None => problems.push(format!("{run}: {figure} has no budget")),
                Some(b) if value > b => problems.push(format!("{run}: {figure} is {value}, over its budget of {b}")),
                Some(b) if (value as f64) < b as f64 * STALE_BELOW => problems.push(format!(
                    "{run}: {figure} is {value}, under half its budget of {b}: the budget no longer guards it"
                )),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        println!("every figure within its budget");
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    eprintln!(
        "if the change is meant, write new budgets and commit them with the reason:\n  \
         cargo bench -p dtest-benches --bench budgets -- --bless"
    );
    ExitCode::FAILURE
}
