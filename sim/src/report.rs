//! The report of a simulation, as the contract fixes it: JSON for machines, text for people.
//! It holds no wall-clock figure, so the same seed gives the same bytes.

use std::fmt::Write;

use serde::Serialize;

/// The report of one simulated run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Always `sim`.
    pub mode: &'static str,
    /// The seed that replays this run.
    pub seed: u64,
    /// Whether the seed drew its own fault mix instead of the scenario's faults; such a run is
    /// judged by the invariants alone, not by expectations written for other faults.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub swarm: bool,
    /// The strategies used.
    pub strategy: StrategyUsed,
    /// Simulated seconds the run lasted.
    pub simulated_s: f64,
    /// Simulated seconds until the last task ended, if all did.
    pub makespan_s: Option<f64>,
    /// What became of the tasks.
    pub tasks: Tasks,
    /// Leases taken back (dead or restarted nodes, preemption) and placed again.
    pub reassignments: u64,
    /// Results refused because they came from an attempt no longer leased.
    pub stale_results_refused: u64,
    /// The nodes.
    pub nodes: Nodes,
    /// From each kill to the moment the orchestrator knew (declared dead or saw the restart).
    pub failure_detection_ms: Option<Spread>,
    /// Protocol messages.
    pub messages: Messages,
    /// How full the nodes were, sampled every simulated second.
    pub utilization: Utilization,
    /// Requests made by load tasks (when load ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Requests that failed or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Seconds of load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Requests per second achieved over the load's duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// Merged latency percentiles, from each request's intended start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
    /// The same without the correction for coordinated omission (identical in simulation, where
    /// every request starts on schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_ms: Option<Percentiles>,
    /// The merged HdrHistogram of latencies in microseconds, V2 deflate, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
    /// Each expectation of the scenario, checked.
    pub expectations: Vec<Expectation>,
    /// Invariant violations found by the checkers; empty when none.
    pub violations: Vec<Violation>,
}

/// The strategies a run used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyUsed {
    /// Distribution strategy.
    pub distribution: String,
    /// Allocation strategy.
    pub allocation: String,
}

/// Task counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Tasks {
    /// Task instances in the scenario.
    pub submitted: u64,
    /// Ended completed.
    pub completed: u64,
    /// Ended failed.
    pub failed: u64,
    /// Ended cancelled.
    pub cancelled: u64,
    /// Not ended when the run stopped.
    pub lost: u64,
    /// Ended more than once (always 0 unless the core is broken).
    pub duplicated: u64,
}

/// Node counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Nodes {
    /// Nodes in the scenario.
    pub total: u64,
    /// Times a node was declared dead.
    pub declared_dead: u64,
    /// Declared dead while alive and reachable.
    pub false_suspicions: u64,
}

/// Median and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: u64,
    /// Largest.
    pub max: u64,
}

/// Message counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Messages {
    /// Frames sent.
    pub sent: u64,
    /// Frames dropped by partitions, clogs and loss.
    pub dropped: u64,
}

/// Node utilisation (dominant share) over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Utilization {
    /// Mean over samples of the mean over nodes.
    pub mean: f64,
    /// Largest node utilisation seen.
    pub max: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// One checked expectation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expectation {
    /// Its name in the scenario's `expect`.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was measured.
    pub actual: serde_json::Value,
    /// What the scenario asked for.
    pub limit: serde_json::Value,
}

/// One invariant violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Simulated time, in milliseconds.
    pub at_ms: u64,
    /// What happened.
    pub what: String,
}

impl Report {
    /// Whether no invariant was violated and, unless the faults were a swarm mix, every
    /// expectation held (exit 0).
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && (self.swarm || self.expectations.iter().all(|e| e.ok))
    }

    /// Why the run did not pass: its first violation, else its first failed expectation that counts.
    pub fn failure(&self) -> Option<String> {
        let violation = self.violations.first().map(|v| format!("at {:.3} s: {}", v.at_ms as f64 / 1e3, v.what));
        let expectation = (!self.swarm)
            .then(|| self.expectations.iter().find(|e| !e.ok))
            .flatten()
            .map(|e| format!("expectation {} failed: actual {}, limit {}", e.name, e.actual, e.limit));
        violation.or(expectation)
    }

    /// The report as pretty JSON, with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let swarm = if self.swarm { " --swarm" } else { "" };
        let _ = writeln!(out, "dtest sim {}{swarm} --seed {}: {verdict}", self.scenario, self.seed);
        let _ = writeln!(out, "  strategy     {} / {}", self.strategy.distribution, self.strategy.allocation);
        let makespan =
            self.makespan_s.map_or("not all tasks ended".to_owned(), |s| format!("all tasks ended at {s:.1} s"));
        let _ = writeln!(out, "  simulated    {:.1} s, {makespan}", self.simulated_s);
        let t = &self.tasks;
        let _ = writeln!(
            out,
            "  tasks        {} submitted: {} completed, {} failed, {} cancelled, {} lost, {} duplicated",
            t.submitted, t.completed, t.failed, t.cancelled, t.lost, t.duplicated
        );
        let _ = writeln!(
            out,
            "  recovery     {} reassignments, {} stale results refused",
            self.reassignments, self.stale_results_refused
        );
        let n = &self.nodes;
        let detection = self.failure_detection_ms.map_or("no node killed".to_owned(), |d| {
            format!("kills noticed in {:.2} s (median), {:.2} s (slowest)", d.p50 as f64 / 1e3, d.max as f64 / 1e3)
        });
        let _ = writeln!(
            out,
            "  nodes        {} nodes, {} declared dead ({} falsely); {detection}",
            n.total, n.declared_dead, n.false_suspicions
        );
        let _ = writeln!(
            out,
            "  network      {} messages, {} dropped by faults",
            self.messages.sent, self.messages.dropped
        );
        let _ = writeln!(
            out,
            "  utilization  mean {:.0}%, max {:.0}%",
            self.utilization.mean * 100.0,
            self.utilization.max * 100.0
        );
        if let (Some(requests), Some(latency)) = (self.requests, self.latency_ms) {
            let _ = writeln!(
                out,
                "  load         {requests} requests, {} errors, {:.1} rps; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                self.errors.unwrap_or(0),
                self.rps.unwrap_or(0.0),
                latency.p50,
                latency.p90,
                latency.p99,
                latency.max
            );
        }
        if !self.expectations.is_empty() {
            let note =
                if self.swarm { " (written for the scenario's own faults; not judged in a swarm run)" } else { "" };
            let _ = writeln!(out, "  expectations{note}");
            for e in &self.expectations {
                let mark = if e.ok { "ok  " } else { "FAIL" };
                let _ = writeln!(out, "    {mark} {:<26} actual {}, limit {}", e.name, e.actual, e.limit);
            }
        }
        if self.violations.is_empty() {
            let _ = writeln!(
                out,
                "  invariants   all held (no task lost or counted twice, no stale result counted, no node over-committed)"
            );
        } else {
            let _ = writeln!(out, "  violations");
            for v in self.violations.iter().take(20) {
                let _ = writeln!(out, "    at {:.3} s: {}", v.at_ms as f64 / 1e3, v.what);
            }
            if self.violations.len() > 20 {
                let _ = writeln!(out, "    … and {} more", self.violations.len() - 20);
            }
        }
        out
    }
}
