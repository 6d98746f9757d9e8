//! Every distribution strategy on the same seed, one row each: what `dtest sim --strategy all`
//! prints and the MCP tool `compare_strategies` returns.

use dtest_core::report::{AdaptiveChoices, Report};
use dtest_core::scenario::{Distribution, Scenario};
use schemars::JsonSchema;
use serde::Serialize;

use crate::{SimError, SimOptions, simulate};

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
