//! The report of a run, simulated or real, in the form users and scripts rely on: JSON for machines, text
//! for people. A simulation's report holds no wall-clock figure, so the same seed gives the same
//! bytes; a real run's says how long it took and what became of every task.

use std::fmt::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::measure::{Measure, SeriesPoint, StatusCounts, encode};
use crate::scenario::{Scenario, Work, WorkloadMode};

/// The report of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Which command made it.
    pub mode: Mode,
    /// The run was stopped before its end (Ctrl-C, SIGTERM, a cancel): what it holds is what
    /// was measured until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// The seed that replays this run (simulations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Whether the seed drew its own fault mix instead of the scenario's faults; such a run is
    /// judged by the invariants alone, not by expectations written for other faults.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub swarm: bool,
    /// The strategies used (none for `dtest load`).
    #[serde(skip_serializing_if = "StrategyUsed::is_none")]
    pub strategy: StrategyUsed,
    /// Simulated seconds the run lasted (simulations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulated_s: Option<f64>,
    /// Wall-clock seconds the run lasted (real runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    /// Seconds from the start until the last task ended, if all did (and the run was not
    /// interrupted).
    pub makespan_s: Option<f64>,
    /// What became of the tasks.
    pub tasks: Tasks,
    /// Leases taken back (dead or restarted nodes, preemption) and placed again.
    pub reassignments: u64,
    /// Results refused because they came from an attempt no longer leased.
    pub stale_results_refused: u64,
    /// The nodes.
    pub nodes: Nodes,
    /// From each kill to the moment the orchestrator knew (declared dead or saw the restart), in
    /// milliseconds of the run's clock.
    pub failure_detection_ms: Option<Spread>,
    /// The liveness phase: how the system converged after the last fault healed; absent when a
    /// fault lasted to the end, or there were none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Protocol messages.
    pub messages: Messages,
    /// How full the nodes were, sampled every second of the run (simulated or wall-clock).
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
    /// Arrivals the generators dropped: not sent within the request timeout of their due time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Requests sent more than 1 ms after their due time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late: Option<u64>,
    /// Requests by how they ended: status classes, timeouts, connection errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusCounts>,
    /// The load second by second, by the second requests ended in, from the run's start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SeriesPoint>,
    /// Each expectation of the scenario, checked.
    pub expectations: Vec<Expectation>,
    /// Invariant violations found by the checkers; empty when none.
    pub violations: Vec<Violation>,
    /// Every task's counted result (real runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
    /// Every alert of the scenario's `alerts` rules that fired, in firing order, with when it
    /// resolved (none while it still fired at the end).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRecord>,
    /// The cluster over time, for the HTML report's timeline chart. Not in the JSON report:
    /// hundreds of numbers a reader of JSON (a person, a CI job, an AI assistant) has no use for;
    /// `dtest sim --trace` gives the whole story.
    #[serde(skip)]
    #[schemars(skip)]
    pub timeline: Timeline,
}

/// The cluster sampled over a run, at most [`TIMELINE_POINTS_MAX`] times, one column per
/// figure; and the faults' windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// When each sample was taken, seconds from the run's start.
    pub t_s: Vec<f64>,
    /// Nodes up in the orchestrator's eyes (said hello, not declared dead).
    pub nodes_up: Vec<u32>,
    /// Of those, nodes suspected (health below 40: heartbeats late, or sick).
    pub nodes_suspected: Vec<u32>,
    /// Nodes declared dead.
    pub nodes_dead: Vec<u32>,
    /// Tasks leased to a node.
    pub tasks_running: Vec<u32>,
    /// Tasks ended (completed, failed or cancelled).
    pub tasks_ended: Vec<u32>,
    /// Reassignments so far.
    pub reassignments: Vec<u64>,
    /// Each fault's window: kind, start and end (the run's end if it lasted), seconds.
    pub faults: Vec<FaultWindow>,
}

impl Timeline {
    /// Appends a sample.
    pub fn push(&mut self, p: TimelinePoint) {
        self.t_s.push(p.t_s);
        self.nodes_up.push(p.nodes_up);
        self.nodes_suspected.push(p.nodes_suspected);
        self.nodes_dead.push(p.nodes_dead);
        self.tasks_running.push(p.tasks_running);
        self.tasks_ended.push(p.tasks_ended);
        self.reassignments.push(p.reassignments);
    }
}

/// One sample of a [`Timeline`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimelinePoint {
    /// Seconds from the run's start.
    pub t_s: f64,
    /// Nodes up.
    pub nodes_up: u32,
    /// Nodes up but suspected.
    pub nodes_suspected: u32,
    /// Nodes declared dead.
    pub nodes_dead: u32,
    /// Tasks leased.
    pub tasks_running: u32,
    /// Tasks ended.
    pub tasks_ended: u32,
    /// Reassignments so far.
    pub reassignments: u64,
}

/// Samples a timeline keeps at most: a run longer than this many seconds is sampled less often.
pub const TIMELINE_POINTS_MAX: u64 = 600;

/// A fault's window on a timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultWindow {
    /// The fault's kind (`partition`, `kill`, ...).
    pub kind: &'static str,
    /// When it began, seconds.
    pub from_s: f64,
    /// When it ended, or the run did, seconds.
    pub to_s: f64,
}

/// The liveness phase, as VOPR has one: once the last fault has healed, the system must
/// converge within a bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Recovery {
    /// When the last fault healed (a kill that is never restarted counts from the kill: the
    /// system must do without the node), ms from the run's start.
    pub quiet_from_ms: u64,
    /// How long after that the system had to converge, ms.
    pub bound_ms: u64,
    /// Whether every condition held within the bound.
    pub converged: bool,
    /// Each condition of convergence, with the time it took.
    pub conditions: Vec<Convergence>,
}

/// One condition of convergence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Convergence {
    /// What must hold.
    pub condition: Condition,
    /// From the last fault's healing until it held for good, ms (0 if it held all along); absent
    /// if it never did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_after_ms: Option<u64>,
    /// What had not converged when the run ended: tasks, nodes or alerts by name (the first
    /// [`PENDING_LISTED_MAX`], then how many more).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// Names listed of what did not converge, per condition.
pub const PENDING_LISTED_MAX: usize = 8;

/// The conditions of convergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every task ended.
    TasksEnded,
    /// Every node that is not down (killed, paused) is alive in the orchestrator's eyes.
    NodesAlive,
    /// Every alert resolved (only when the scenario has alerts).
    AlertsResolved,
}

impl Condition {
    /// Its name, as reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Condition::TasksEnded => "tasks ended",
            Condition::NodesAlive => "nodes alive",
            Condition::AlertsResolved => "alerts resolved",
        }
    }
}

/// An alert that fired during a run.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct AlertRecord {
    /// The alert's id within the run: the same for its firing and its resolution.
    pub id: u64,
    /// The rule's name.
    pub rule: String,
    /// Whose metric: a node (`eu-3`) or `cluster`.
    pub subject: String,
    /// The rule's severity.
    pub severity: crate::health::alerts::Severity,
    /// When it fired (ms from the run's start).
    pub fired_at_ms: u64,
    /// When it resolved, if it did.
    pub resolved_at_ms: Option<u64>,
    /// The value that made it fire.
    pub value: f64,
}

/// How often `adaptive` placement chose each way, and so why it placed as it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AdaptiveChoices {
    /// Recent attempts failed often (20% or more): `weighted`, health weighing four times.
    pub avoid_failures: u64,
    /// The busiest node was 25 points above the mean load: `least_loaded`.
    pub rebalance: u64,
    /// Two or more tasks waited per node: `best_fit` over the whole cluster (pack).
    pub pack: u64,
    /// Nothing stood out: `least_loaded`.
    pub spread: u64,
}

impl From<[u64; 4]> for AdaptiveChoices {
    fn from(c: [u64; 4]) -> AdaptiveChoices {
        AdaptiveChoices { avoid_failures: c[0], rebalance: c[1], pack: c[2], spread: c[3] }
    }
}

/// The counted result of one task of a real run.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct TaskResult {
    /// The task entry's name.
    pub task: String,
    /// The instance, from 1.
    pub index: u32,
    /// Instances of the entry.
    pub count: u32,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// The node that ran the counted attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Seconds the counted attempt ran, as its node measured.
    pub duration_s: f64,
    /// Why it failed and the tail of its output.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Which command made a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `dtest sim`: simulated time, no wall-clock figure.
    #[default]
    Sim,
    /// `dtest run`: real nodes; times are wall-clock seconds from the run's start.
    Run,
    /// `dtest load`: one process loading one URL; no cluster.
    Load,
}

impl Mode {
    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sim => "sim",
            Mode::Run => "run",
            Mode::Load => "load",
        }
    }
}

/// How one task instance of a real run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// An attempt passed.
    Passed,
    /// Its last attempt failed, or it could not be placed.
    Failed,
    /// Its last attempt ran past the task's timeout.
    TimedOut,
    /// Cancelled (the run was interrupted).
    Cancelled,
    /// Not ended when the run stopped.
    Lost,
}

impl TaskOutcome {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            TaskOutcome::Passed => "passed",
            TaskOutcome::Failed => "failed",
            TaskOutcome::TimedOut => "timed_out",
            TaskOutcome::Cancelled => "cancelled",
            TaskOutcome::Lost => "lost",
        }
    }
}

/// The strategies a run used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct StrategyUsed {
    /// Distribution strategy.
    pub distribution: String,
    /// Allocation strategy.
    pub allocation: String,
    /// What `adaptive` chose, when it was the distribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveChoices>,
}

impl StrategyUsed {
    fn is_none(&self) -> bool {
        self.distribution.is_empty() && self.allocation.is_empty()
    }
}

/// Task counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, JsonSchema)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct Nodes {
    /// Nodes in the scenario.
    pub total: u64,
    /// Times a node was declared dead.
    pub declared_dead: u64,
    /// Declared dead while alive and reachable.
    pub false_suspicions: u64,
}

/// Median and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Spread {
    /// Median.
    pub p50: u64,
    /// Largest.
    pub max: u64,
}

/// Message counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct Messages {
    /// Frames sent.
    pub sent: u64,
    /// Frames dropped by partitions, clogs and loss.
    pub dropped: u64,
}

/// Node utilisation (dominant share) over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct Utilization {
    /// Mean over samples of the mean over nodes.
    pub mean: f64,
    /// Largest node utilisation seen.
    pub max: f64,
    /// How unevenly the work spread over the nodes: the coefficient of variation of each node's
    /// busy time (the sum of its leases' durations, a lease still open at the end counted until
    /// then); 0 when all were busy equally long.
    pub busy_spread: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Violation {
    /// When, in milliseconds from the run's start (simulated in `sim`, wall-clock in `run`).
    pub at_ms: u64,
    /// Which invariant.
    pub invariant: Invariant,
    /// What happened.
    pub what: String,
}

/// The invariants the checkers hold every run to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// No node is given more than its capacity.
    OverCommit,
    /// No result of an attempt that no longer holds the task's lease is counted.
    StaleResult,
    /// No task ends twice.
    EndedTwice,
    /// Once the last fault has healed, the system converges in time: every task ends, every
    /// live node is alive in the orchestrator's eyes, every alert resolves.
    Liveness,
    /// A killed node is noticed within the scenario's bound.
    Detection,
    /// Every result a node sends can be read.
    ReadableResults,
}

impl Invariant {
    /// Every invariant, in order.
    pub const ALL: [Invariant; 6] = [
        Invariant::OverCommit,
        Invariant::StaleResult,
        Invariant::EndedTwice,
        Invariant::Liveness,
        Invariant::Detection,
        Invariant::ReadableResults,
    ];

    /// Its name, as reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::OverCommit => "over_commit",
            Invariant::StaleResult => "stale_result",
            Invariant::EndedTwice => "ended_twice",
            Invariant::Liveness => "liveness",
            Invariant::Detection => "detection",
            Invariant::ReadableResults => "readable_results",
        }
    }
}

impl Report {
    /// Fills in what load measured over `duration_s` seconds of load.
    pub fn set_load(&mut self, m: &Measure, duration_s: f64) {
        self.requests = Some(m.requests);
        self.errors = Some(m.errors);
        self.dropped = Some(m.dropped);
        self.late = Some(m.late);
        self.status = Some(m.status);
        self.duration_s = Some(duration_s);
        self.rps = Some(if duration_s > 0.0 { m.requests as f64 / duration_s } else { 0.0 });
        self.latency_ms = m.latency_ms();
        self.latency_uncorrected_ms = m.latency_uncorrected_ms();
        self.histogram = Some(encode(&m.corrected));
        self.series = m.series();
    }

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
        match self.seed {
            Some(seed) => {
                let swarm = if self.swarm { " --swarm" } else { "" };
                let _ = writeln!(out, "dtest sim {}{swarm} --seed {seed}: {verdict}", self.scenario);
            }
            None => {
                let interrupted = if self.interrupted { " (interrupted)" } else { "" };
                let _ = writeln!(out, "dtest {} {}: {verdict}{interrupted}", self.mode.name(), self.scenario);
            }
        }
        // `dtest load` has no cluster to speak of: one process, one task.
        if self.mode == Mode::Load {
            let _ = writeln!(out, "  ran          {:.1} s", self.elapsed_s.unwrap_or(0.0));
        } else {
            let _ = writeln!(out, "  strategy     {} / {}", self.strategy.distribution, self.strategy.allocation);
            let makespan =
                self.makespan_s.map_or("not all tasks ended".to_owned(), |s| format!("all tasks ended at {s:.1} s"));
            match (self.simulated_s, self.elapsed_s) {
                (Some(s), _) => {
                    let _ = writeln!(out, "  simulated    {s:.1} s, {makespan}");
                }
                (None, s) => {
                    let _ = writeln!(out, "  ran          {:.1} s, {makespan}", s.unwrap_or(0.0));
                }
            }
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
            if let Some(r) = &self.recovery {
                let conditions: Vec<String> = r
                    .conditions
                    .iter()
                    .map(|c| match c.recovered_after_ms {
                        Some(ms) => format!("{} +{:.1} s", c.condition.name(), ms as f64 / 1e3),
                        None => format!("{} NEVER", c.condition.name()),
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  liveness     after the last fault healed at {:.1} s: {} (bound {:.1} s)",
                    r.quiet_from_ms as f64 / 1e3,
                    conditions.join(", "),
                    r.bound_ms as f64 / 1e3
                );
            }
            let _ = writeln!(
                out,
                "  network      {} messages, {} dropped by faults",
                self.messages.sent, self.messages.dropped
            );
            let _ = writeln!(
                out,
                "  utilization  mean {:.0}%, max {:.0}%; busy-time spread {:.2} (0 is even)",
                self.utilization.mean * 100.0,
                self.utilization.max * 100.0,
                self.utilization.busy_spread
            );
            if let Some(a) = self.strategy.adaptive {
                let _ = writeln!(
                    out,
                    "  adaptive     placed {} avoiding failures, {} rebalancing, {} packing, {} spreading",
                    a.avoid_failures, a.rebalance, a.pack, a.spread
                );
            }
        }
        if let (Some(requests), Some(latency)) = (self.requests, self.latency_ms) {
            let _ = writeln!(
                out,
                "  load         {requests} requests, {} errors, {} dropped, {:.1} rps; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                self.errors.unwrap_or(0),
                self.dropped.unwrap_or(0),
                self.rps.unwrap_or(0.0),
                latency.p50,
                latency.p90,
                latency.p99,
                latency.max
            );
            if let (Some(u), Some(late)) = (self.latency_uncorrected_ms, self.late) {
                let _ = writeln!(
                    out,
                    "               uncorrected (from sending, not from the due time) p50 {:.1} ms, p99 {:.1} ms; {late} sent late",
                    u.p50, u.p99
                );
            }
            if let Some(s) = self.status {
                let _ = writeln!(
                    out,
                    "               1xx {}, 2xx {}, 3xx {}, 4xx {}, 5xx {}, timeouts {}, connect errors {}, io errors {}",
                    s.informational, s.success, s.redirect, s.client_error, s.server_error, s.timeout, s.connect, s.io
                );
            }
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
        let failed: Vec<&TaskResult> = self.results.iter().filter(|r| r.outcome != TaskOutcome::Passed).collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "  not passed");
            for r in failed.iter().take(20) {
                let node = r.node.as_deref().unwrap_or("no node");
                let first = r.message.lines().next().unwrap_or("");
                let _ =
                    writeln!(out, "    {}[{}/{}] {} on {node}: {first}", r.task, r.index, r.count, r.outcome.name());
            }
            if failed.len() > 20 {
                let _ = writeln!(out, "    … and {} more", failed.len() - 20);
            }
        }
        if !self.alerts.is_empty() {
            let _ = writeln!(out, "  alerts       {} fired", self.alerts.len());
            for a in self.alerts.iter().take(20) {
                let resolved = a
                    .resolved_at_ms
                    .map_or("still firing at the end".to_owned(), |t| format!("resolved at {:.1} s", t as f64 / 1e3));
                let value = if a.value.fract() == 0.0 { format!("{:.0}", a.value) } else { format!("{:.2}", a.value) };
                let _ = writeln!(
                    out,
                    "    at {:.1} s {} {} on {} (value {value}), {resolved}",
                    a.fired_at_ms as f64 / 1e3,
                    a.severity.name(),
                    a.rule,
                    a.subject,
                );
            }
            if self.alerts.len() > 20 {
                let _ = writeln!(out, "    … and {} more", self.alerts.len() - 20);
            }
        }
        if self.violations.is_empty() && self.mode != Mode::Load && self.tasks.lost > 0 {
            let _ = writeln!(
                out,
                "  invariants   all held; {} tasks had not ended, with faults still in force or the run interrupted",
                self.tasks.lost
            );
        } else if self.violations.is_empty() && self.mode != Mode::Load {
            let _ = writeln!(
                out,
                "  invariants   all held (no task lost or counted twice, no stale result counted, no node over-committed)"
            );
        } else if !self.violations.is_empty() {
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

/// Seconds of load: from the first load's start to the last one's end (their sum when
/// sequential).
pub fn load_seconds(scenario: &Scenario) -> f64 {
    let loads = scenario.workload.tasks.iter().filter_map(|t| match &t.work {
        Work::Load(load) => Some((load.start_ms, load.start_ms + load.pattern.duration_ms())),
        Work::Command { .. } => None,
    });
    let spans: Vec<(u64, u64)> = loads.collect();
    let ms = match scenario.workload.mode {
        WorkloadMode::Sequential => spans.iter().map(|(s, e)| e - s).sum::<u64>(),
        WorkloadMode::Parallel => {
            let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
            let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
            end - start
        }
    };
    ms as f64 / 1000.0
}

/// The first `max` of `names`, then how many more (`and 3 more`): a list a person reads, bounded.
pub fn listed(mut names: Vec<String>, max: usize) -> Vec<String> {
    if names.len() > max {
        let more = names.len() - max;
        names.truncate(max);
        names.push(format!("and {more} more"));
    }
    names
}

/// The serde name of a strategy (`least_loaded`), as users write it.
pub fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Checks every expectation the scenario sets.
pub fn expectations(scenario: &Scenario, r: &Report) -> Vec<Expectation> {
    let e = &scenario.expect;
    let mut out = Vec::new();
    let mut check = |name: &str, ok: bool, actual: serde_json::Value, limit: serde_json::Value| {
        out.push(Expectation { name: name.to_owned(), ok, actual, limit });
    };
    if let Some(want) = e.all_tasks_complete {
        let all = r.tasks.completed == r.tasks.submitted;
        check("all_tasks_complete", all == want, json!(all), json!(want));
    }
    if let Some(max) = e.max_failed_tasks {
        check("max_failed_tasks", r.tasks.failed <= max, json!(r.tasks.failed), json!(max));
    }
    if let Some(max) = e.max_reassignments {
        check("max_reassignments", r.reassignments <= max, json!(r.reassignments), json!(max));
    }
    if let Some(max) = e.max_false_suspicions {
        check("max_false_suspicions", r.nodes.false_suspicions <= max, json!(r.nodes.false_suspicions), json!(max));
    }
    if let Some(limit) = e.failure_detected_within_ms {
        let worst = r.failure_detection_ms.map_or(0, |d| d.max);
        check("failure_detected_within_s", worst <= limit, json!(worst as f64 / 1e3), json!(limit as f64 / 1e3));
    }
    let latency = r.latency_ms;
    for (name, limit, actual) in [
        ("latency_p50_ms", e.latency_p50_ms, latency.map(|l| l.p50)),
        ("latency_p90_ms", e.latency_p90_ms, latency.map(|l| l.p90)),
        ("latency_p99_ms", e.latency_p99_ms, latency.map(|l| l.p99)),
        ("latency_max_ms", e.latency_max_ms, latency.map(|l| l.max)),
    ] {
        if let Some(limit) = limit {
            let ok = actual.is_some_and(|a| a <= limit);
            check(name, ok, json!(actual), json!(limit));
        }
    }
    if let Some(max) = e.error_rate_max {
        let rate = match (r.requests, r.errors) {
            (Some(requests), Some(errors)) if requests > 0 => errors as f64 / requests as f64,
            _ => 0.0,
        };
        check("error_rate_max", rate <= max, json!(rate), json!(max));
    }
    if let Some(min) = e.rps_min {
        let rps = r.rps.unwrap_or(0.0);
        check("rps_min", rps >= min, json!(rps), json!(min));
    }
    if let Some(max) = e.dropped_max {
        let dropped = r.dropped.unwrap_or(0);
        check("dropped_max", dropped <= max, json!(dropped), json!(max));
    }
    out
}
