//! Every distribution strategy on the same seed, one row each: what `dtest sim --strategy all`
//! prints and the MCP tool `compare_strategies` returns. And every strategy on every seed of a
//! range ([`compare_seeds`]), paired by seed: means with confidence intervals and differences
//! from a baseline strategy ([`Paired::stats`]), what `--strategy all --seeds A..B` prints.

use std::ops::Range;
use std::sync::Mutex;

use dtest_core::report::{AdaptiveChoices, Report};
use dtest_core::scenario::{Distribution, Scenario};
use schemars::JsonSchema;
use serde::Serialize;

use crate::stats::{Difference, Estimate};
use crate::sweep::in_parallel;
use crate::{SimError, SimOptions, Watch, simulate};

/// One strategy's run, in the figures that tell strategies apart.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct StrategyRow {
    /// The distribution strategy.
    pub strategy: String,
    /// Whether every expectation and invariant held.
    pub passed: bool,
    /// Seconds until the last task ended, if all did.
    pub makespan_s: Option<f64>,
    /// Mean utilization of the nodes, 0 to 1.
    pub utilization_mean: f64,
    /// Utilization of the busiest node, 0 to 1.
    pub utilization_max: f64,
    /// How unevenly busy time fell on the nodes (the report's `utilization.busy_spread`).
    pub busy_spread: f64,
    /// What `adaptive` chose, when it was the strategy.
    pub adaptive: Option<AdaptiveChoices>,
    /// Leases taken back and placed again.
    pub reassignments: u64,
    /// The slowest detection of a kill, in ms.
    pub failure_detection_max_ms: Option<u64>,
    /// The p99 latency of load, in ms, when load ran.
    pub latency_p99_ms: Option<f64>,
}

impl StrategyRow {
    /// The row of a report.
    pub fn of(report: &Report) -> StrategyRow {
        StrategyRow {
            strategy: report.strategy.distribution.clone(),
            passed: report.passed(),
            makespan_s: report.makespan_s,
            utilization_mean: report.utilization.mean,
            utilization_max: report.utilization.max,
            busy_spread: report.utilization.busy_spread,
            adaptive: report.strategy.adaptive,
            reassignments: report.reassignments,
            failure_detection_max_ms: report.failure_detection_ms.map(|d| d.max),
            latency_p99_ms: report.latency_ms.map(|l| l.p99),
        }
    }
}

/// Simulates `scenario` with `options` once per strategy of `strategies`, in that order;
/// `progress` is called after each.
pub fn compare(
    scenario: &Scenario,
    options: &SimOptions,
    strategies: &[Distribution],
    progress: &dyn Fn(&Report),
) -> Result<Vec<Report>, SimError> {
    strategies
        .iter()
        .map(|&distribution| {
            let report = simulate(scenario, &SimOptions { distribution: Some(distribution), ..options.clone() })?;
            progress(&report);
            Ok(report)
        })
        .collect()
}

/// A paired comparison runs at most this many seeds: it keeps every run's figures (a few dozen
/// bytes each, seven runs a seed) until the end.
pub const COMPARED_SEEDS_MAX: u64 = 100_000;

/// What a paired comparison keeps of one run: the figures it compares.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Whether every expectation and invariant held.
    pub passed: bool,
    /// Seconds until the last task ended, if all did.
    pub makespan_s: Option<f64>,
    /// The p99 latency of load, in ms, when load ran.
    pub latency_p99_ms: Option<f64>,
    /// Leases taken back and placed again.
    pub reassignments: u64,
    /// How unevenly busy time fell on the nodes.
    pub busy_spread: f64,
}

impl Figures {
    /// The figures of a report.
    pub fn of(report: &Report) -> Figures {
        Figures {
            passed: report.passed(),
            makespan_s: report.makespan_s,
            latency_p99_ms: report.latency_ms.map(|l| l.p99),
            reassignments: report.reassignments,
            busy_spread: report.utilization.busy_spread,
        }
    }
}

/// A figure compared across seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Seconds until the last task ended.
    MakespanS,
    /// p99 latency of load, in ms.
    LatencyP99Ms,
    /// Leases taken back and placed again.
    Reassignments,
    /// Busy-time spread.
    BusySpread,
}

impl Metric {
    /// Every metric, in the order tables list them.
    pub const ALL: [Metric; 4] = [Metric::MakespanS, Metric::LatencyP99Ms, Metric::Reassignments, Metric::BusySpread];

    /// Its name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::MakespanS => "makespan_s",
            Metric::LatencyP99Ms => "latency_p99_ms",
            Metric::Reassignments => "reassignments",
            Metric::BusySpread => "busy_spread",
        }
    }

    /// Its value in a run; none when the run has none (no makespan when a task never ended, no
    /// latency without load).
    pub fn value(self, figures: &Figures) -> Option<f64> {
        match self {
            Metric::MakespanS => figures.makespan_s,
            Metric::LatencyP99Ms => figures.latency_p99_ms,
            Metric::Reassignments => Some(figures.reassignments as f64),
            Metric::BusySpread => Some(figures.busy_spread),
        }
    }
}

/// One value per [`Metric`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Metrics<T> {
    /// Of [`Metric::MakespanS`].
    pub makespan_s: T,
    /// Of [`Metric::LatencyP99Ms`].
    pub latency_p99_ms: T,
    /// Of [`Metric::Reassignments`].
    pub reassignments: T,
    /// Of [`Metric::BusySpread`].
    pub busy_spread: T,
}

impl<T> Metrics<T> {
    /// Each metric's value from `f`.
    pub fn from_fn(mut f: impl FnMut(Metric) -> T) -> Metrics<T> {
        Metrics {
            makespan_s: f(Metric::MakespanS),
            latency_p99_ms: f(Metric::LatencyP99Ms),
            reassignments: f(Metric::Reassignments),
            busy_spread: f(Metric::BusySpread),
        }
    }

    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> &T {
        match metric {
            Metric::MakespanS => &self.makespan_s,
            Metric::LatencyP99Ms => &self.latency_p99_ms,
            Metric::Reassignments => &self.reassignments,
            Metric::BusySpread => &self.busy_spread,
        }
    }
}

/// Every strategy run on every seed of a range.
#[derive(Clone, Debug, PartialEq)]
pub struct Paired {
    /// The seeds.
    pub seeds: Range<u64>,
    /// The strategies, in the order given.
    pub strategies: Vec<Distribution>,
    /// `runs[i][k]`: strategy `strategies[i]` on seed `seeds.start + k`.
    pub runs: Vec<Vec<Figures>>,
}

/// One strategy over the seeds: its means, and its differences from the baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyStats {
    /// The strategy.
    pub strategy: Distribution,
    /// Seeds it ran.
    pub runs: u64,
    /// Of which failed (an expectation or invariant).
    pub failed: u64,
    /// Each metric's mean over the seeds that have it, with its 95% interval.
    pub means: Metrics<Option<Estimate>>,
    /// This strategy minus the baseline, seed by seed, over the seeds where both have the metric.
    pub differences: Metrics<Option<Difference>>,
}

/// What a paired comparison found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedStats {
    /// The strategy the others are compared with.
    pub baseline: Distribution,
    /// Every strategy, in the order run.
    pub strategies: Vec<StrategyStats>,
}

impl Paired {
    /// Every run passed.
    pub fn passed(&self) -> bool {
        self.runs.iter().flatten().all(|f| f.passed)
    }

    /// `metric` of strategy `i` on each seed.
    fn values(&self, i: usize, metric: Metric) -> Vec<Option<f64>> {
        self.runs[i].iter().map(|f| metric.value(f)).collect()
    }

    /// Means and intervals per strategy, and differences from `baseline` (none for a strategy
    /// when the baseline did not run).
    pub fn stats(&self, baseline: Distribution) -> PairedStats {
        let base = self.strategies.iter().position(|&s| s == baseline);
        let strategies = self
            .strategies
            .iter()
            .enumerate()
            .map(|(i, &strategy)| StrategyStats {
                strategy,
                runs: self.runs[i].len() as u64,
                failed: self.runs[i].iter().filter(|f| !f.passed).count() as u64,
                means: Metrics::from_fn(|m| {
                    Estimate::of(&self.values(i, m).into_iter().flatten().collect::<Vec<f64>>())
                }),
                differences: Metrics::from_fn(|m| {
                    base.and_then(|b| Difference::paired(&self.values(i, m), &self.values(b, m)))
                }),
            })
            .collect();
        PairedStats { baseline, strategies }
    }
}

/// Simulates `scenario` with `options` once per strategy of `strategies` and seed of `seeds` (at
/// most [`COMPARED_SEEDS_MAX`]), on `threads` threads, a seed's strategies together; `progress`
/// is called after each run. A stopped [`SimOptions::watch`] ends it with [`SimError::Stopped`].
pub fn compare_seeds(
    scenario: &Scenario,
    seeds: Range<u64>,
    options: &SimOptions,
    strategies: &[Distribution],
    threads: usize,
    progress: &(dyn Fn(&Figures) + Sync),
) -> Result<Paired, SimError> {
    crate::world::simulable(scenario)?;
    let count = seeds.end.saturating_sub(seeds.start);
    if count > COMPARED_SEEDS_MAX {
        return Err(SimError::Missing(format!(
            "a comparison of strategies runs at most {COMPARED_SEEDS_MAX} seeds; {count} asked"
        )));
    }
    let runs = count * strategies.len() as u64;
    let failure: Mutex<Option<SimError>> = Mutex::new(None);
    let stopped = || {
        options.watch.as_ref().is_some_and(Watch::stopped)
            || failure.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    };
    let strategy = |k: u64| (k % strategies.len() as u64) as usize;
    let done = in_parallel(runs, threads, &stopped, &|k| {
        let seed = seeds.start + k / strategies.len() as u64;
        let run = SimOptions { seed, distribution: Some(strategies[strategy(k)]), ..options.clone() };
        match simulate(scenario, &run) {
            Ok(report) => {
                let figures = Figures::of(&report);
                progress(&figures);
                Some(figures)
            }
            Err(e) => {
                failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                None
            }
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if options.watch.as_ref().is_some_and(Watch::stopped) {
        return Err(SimError::Stopped);
    }
    let mut paired = Paired { seeds, strategies: strategies.to_vec(), runs: vec![Vec::new(); strategies.len()] };
    for (k, figures) in (0..).zip(done) {
        paired.runs[strategy(k)].extend(figures);
    }
    Ok(paired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(makespan_s: Option<f64>, reassignments: u64) -> Figures {
        Figures { passed: makespan_s.is_some(), makespan_s, latency_p99_ms: None, reassignments, busy_spread: 0.1 }
    }

    #[test]
    fn paired_stats_count_failures_leave_out_missing_makespans_and_compare_with_the_baseline() {
        let paired = Paired {
            seeds: 0..4,
            strategies: vec![Distribution::RoundRobin, Distribution::Random],
            runs: vec![
                vec![figures(Some(10.0), 1), figures(Some(11.0), 2), figures(Some(12.0), 1), figures(Some(10.0), 0)],
                vec![figures(Some(12.0), 1), figures(None, 2), figures(Some(14.5), 1), figures(Some(11.5), 0)],
            ],
        };
        assert!(!paired.passed());
        let stats = paired.stats(Distribution::RoundRobin);
        let [base, random] = &stats.strategies[..] else { panic!("two strategies") };
        assert_eq!((base.runs, base.failed, random.failed), (4, 0, 1));
        assert_eq!(random.means.makespan_s.map(|e| e.n), Some(3));
        assert_eq!(random.means.latency_p99_ms, None);
        // Pairs without random's missing makespan: 2.0, 2.5, 1.5.
        let d = random.differences.makespan_s.expect("pairs");
        assert_eq!((d.estimate.n, d.estimate.mean), (3, 2.0));
        assert!(d.significant, "{d:?}");
        // The same reassignments seed by seed: a difference of 0, not significant.
        let r = random.differences.reassignments.expect("pairs");
        assert_eq!((r.estimate.n, r.estimate.mean, r.significant), (4, 0.0, false));
        let own = base.differences.makespan_s.expect("pairs");
        assert_eq!((own.estimate.mean, own.significant), (0.0, false));
        assert!(paired.stats(Distribution::Adaptive).strategies[0].differences.busy_spread.is_none());
    }

    #[test]
    fn every_strategy_runs_on_every_seed_in_the_same_order_on_any_thread_count() {
        let text =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/sharded-tests.json")).expect("read");
        let scenario = dtest_core::scenario::parse(&text).expect("valid");
        let strategies = [Distribution::RoundRobin, Distribution::LeastLoaded];
        let run = |threads| {
            compare_seeds(&scenario, 3..6, &SimOptions::default(), &strategies, threads, &|_| {}).expect("simulable")
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one, two);
        assert_eq!(one.runs.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3]);
        let alone =
            simulate(&scenario, &SimOptions { seed: 4, distribution: Some(strategies[1]), ..SimOptions::default() })
                .expect("simulable");
        assert_eq!(one.runs[1][1], Figures::of(&alone));
    }
}
