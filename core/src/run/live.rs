//! Live load figures for progress bars and live events: what the nodes' heartbeats say about the
//! loads they are running, summed over the cluster. Only for showing; the report is built from
//! the results the orchestrator counts.

use std::collections::BTreeMap;

use crate::measure::{LiveLoad, Measure, Second};
use crate::protocol::{Attempt, TaskId};

/// A second older than this (by when it arrived) no longer counts as the current rate.
const FRESH_MS: u64 = 2_500;

/// One running load attempt, as its node last told.
struct Live {
    node: usize,
    attempt: Attempt,
    requests: u64,
    errors: u64,
    dropped: u64,
    /// The last full second and when it arrived.
    second: Option<(u64, Second)>,
}

/// The running loads, by task.
#[derive(Default)]
pub struct LiveLoads {
    by_task: BTreeMap<TaskId, Live>,
}

impl LiveLoads {
    /// A heartbeat from `node` said how `attempt` of `task` is doing. A second that cannot be
    /// read is left out: these figures are only shown, never counted.
    pub fn heard(&mut self, now_ms: u64, node: usize, task: TaskId, attempt: Attempt, live: &LiveLoad) {
        let fresh = || Live { node, attempt, requests: 0, errors: 0, dropped: 0, second: None };
        let entry = self.by_task.entry(task).or_insert_with(fresh);
        if (entry.node, entry.attempt) != (node, attempt) {
            *entry = fresh();
        }
        (entry.requests, entry.errors, entry.dropped) = (live.requests, live.errors, live.dropped);
        if let Some(second) = live.second.as_ref().and_then(|s| Second::from_wire(s).ok()) {
            entry.second = Some((now_ms, second));
        }
    }

    /// Keeps only the attempts `current` still holds to be running on their node.
    pub fn retain(&mut self, mut current: impl FnMut(TaskId, usize, Attempt) -> bool) {
        self.by_task.retain(|&task, live| current(task, live.node, live.attempt));
    }

    /// Whether no load is running, as far as heartbeats told.
    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// Forgets a task's attempt, once its result is counted.
    pub fn forget(&mut self, task: TaskId) {
        self.by_task.remove(&task);
    }

    /// The cluster's rate and p99 over the nodes' last full seconds, and totals of the counted
    /// results (`counted`) plus the running loads.
    pub fn figures(&self, now_ms: u64, counted: &Measure) -> LiveFigures {
        let mut recent = Second::new();
        let (mut requests, mut errors, mut dropped) = (counted.requests, counted.errors, counted.dropped);
        for live in self.by_task.values() {
            // What nodes tell, summed: absurd figures saturate rather than overflow.
            requests = requests.saturating_add(live.requests);
            errors = errors.saturating_add(live.errors);
            dropped = dropped.saturating_add(live.dropped);
            if let Some((_, second)) = live.second.as_ref().filter(|(at, _)| now_ms.saturating_sub(*at) <= FRESH_MS) {
                recent.add(second);
            }
        }
        let p99_ms = (!recent.corrected().is_empty()).then(|| recent.corrected().value_at_quantile(0.99) as f64 / 1e3);
        LiveFigures { rps: recent.requests, p99_ms, requests, errors, dropped }
    }

    /// [`LiveLoads::figures`] as one line, for a progress bar.
    pub fn summary(&self, now_ms: u64, counted: &Measure) -> String {
        self.figures(now_ms, counted).to_string()
    }
}

/// How the run's load is doing now.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LiveFigures {
    /// Requests in the nodes' last full seconds.
    pub rps: u64,
    /// Their 99th percentile latency, if any ended.
    pub p99_ms: Option<f64>,
    /// Requests so far.
    pub requests: u64,
    /// Errors so far.
    pub errors: u64,
    /// Arrivals dropped so far.
    pub dropped: u64,
}

impl std::fmt::Display for LiveFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p99 = self.p99_ms.map_or("-".to_owned(), |p| format!("{p:.1} ms"));
        write!(
            f,
            "{} rps, p99 {p99}, {} requests, {} errors, {} dropped",
            self.rps, self.requests, self.errors, self.dropped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Status;

    fn second(t: u64, requests: u64, latency_us: u64) -> LiveLoad {
        let mut m = Measure::new();
        for _ in 0..requests {
            m.record(t, 0, latency_us, Status::Http(200));
        }
        let wire = m.to_wire();
        LiveLoad { requests, errors: 0, dropped: 0, second: wire.seconds.into_iter().next() }
    }

    #[test]
    fn sums_the_nodes_and_merges_their_last_seconds() {
        let mut live = LiveLoads::default();
        live.heard(1_000, 0, TaskId(0), Attempt(1), &second(0, 100, 1_000));
        live.heard(1_000, 1, TaskId(1), Attempt(1), &second(0, 100, 5_000));
        let mut counted = Measure::new();
        counted.record(0, 10, 10, Status::Timeout);
        let text = live.summary(1_500, &counted);
        assert_eq!(text, "200 rps, p99 5.0 ms, 201 requests, 1 errors, 0 dropped");
        // A replaced attempt starts over; a stale second stops counting as the rate.
        live.heard(2_000, 2, TaskId(1), Attempt(2), &LiveLoad { requests: 7, ..LiveLoad::default() });
        assert_eq!(live.summary(3_600, &Measure::new()), "0 rps, p99 -, 107 requests, 0 errors, 0 dropped");
        live.retain(|task, _, _| task != TaskId(0));
        live.forget(TaskId(1));
        assert_eq!(live.summary(3_600, &Measure::new()), "0 rps, p99 -, 0 requests, 0 errors, 0 dropped");
    }

    #[test]
    fn absurd_figures_from_nodes_saturate() {
        let mut live = LiveLoads::default();
        let absurd = LiveLoad { requests: u64::MAX, errors: u64::MAX, dropped: u64::MAX, second: None };
        live.heard(0, 0, TaskId(0), Attempt(1), &absurd);
        live.heard(0, 1, TaskId(1), Attempt(1), &absurd);
        let figures = live.figures(0, &Measure::new());
        assert_eq!((figures.requests, figures.errors, figures.dropped), (u64::MAX, u64::MAX, u64::MAX));
    }
}
