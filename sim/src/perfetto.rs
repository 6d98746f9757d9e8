//! A run's timeline as a Chrome trace (the trace-event JSON format), which
//! <https://ui.perfetto.dev> and chrome://tracing open: what `dtest sim FILE --seed N --trace
//! FILE.json` writes, so that a person can see where the time of a run went and what each fault
//! did to it, instead of reading the report's totals.
//!
//! The trace is one process with these tracks (threads), top to bottom:
//! - `faults`: each scenario fault as a span from its start to its end (or the run's end),
//!   named by its description ([`crate::sweep::describe_fault`]);
//! - `alerts`, if any fired: each alert as a span from firing to resolution (or the run's end);
//! - one track per node, named by its id (`eu-3`), in node order: every task attempt leased to
//!   it as a span from its assignment to its end, named by task and instance (`build#3`), with
//!   the task, attempt and outcome as args; and the orchestrator's view of the node as instants
//!   (`suspected`, `dead`, `alive` when it joined with a new incarnation or came back, `left`).
//!
//! A thread's spans must nest, and a node runs several attempts at once (alerts and faults
//! overlap too), so a track whose spans overlap is drawn in lanes: more tracks right under it,
//! named `eu-3 (2)`, `eu-3 (3)`, each span in the first lane free at its start.
//!
//! Everything comes from the run's live events ([`crate::simulate_timeline`]), which say when an
//! attempt was assigned and when it ended: its result counted (`passed`, `failed`, `timed_out`,
//! `cancelled`), its lease expired (`expired`), or its lease taken back from a node declared
//! dead (`reassigned`). An attempt still leased when the run ended ends there
//! (`running_at_end`).
//!
//! The conversion is a pure function of the scenario, the report and the events: the same seed
//! gives the same bytes. Its size is bounded by the events: a simulation keeps at most
//! [`crate::EVENTS_MAX`] of them, the first ones; each makes at most one span or instant, and
//! each lane two metadata events (a lane holds a span, or is a track's first), so a trace has
//! at most three times as many events as the run kept, and two per node more. In practice it
//! is about one trace event per run event, 130 bytes each: `scenarios/scale-1000.json` (1,000
//! nodes, 20,020 tasks) makes 42,000 run events and a 4.5 MB trace, so a run at the cap makes
//! one of some 33 MB. A run that had more events says so in its trace (an instant `trace
//! truncated` where it stops, and `otherData`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use dtest_core::report::{AlertRecord, Report};
use dtest_core::run::RunEvent;
use dtest_core::scenario::Scenario;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::sweep::describe_fault;

/// The trace's one process id: the run.
const PID: u32 = 1;

/// A Chrome trace of a run, as [`chrome_trace`] makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The JSON text, one trace event a line.
    pub json: String,
    /// Trace events in it (spans, instants and track names).
    pub events: usize,
}

/// The timeline of a run as a Chrome trace: `events` are the run's live events with their times
/// ([`crate::simulate_timeline`]), `dropped` how many more the simulation counted but did not
/// keep; `scenario` is the scenario that ran (the swarm's, with `--swarm`).
pub fn chrome_trace(scenario: &Scenario, report: &Report, events: &[(u64, RunEvent)], dropped: u64) -> Trace {
    let timeline = Timeline::of(scenario, report, events, dropped > 0);
    let mut out = Vec::new();
    out.push(TraceEvent::meta("process_name", 0, Value::from(process_name(report))));
    let mut tid = 0;
    for track in timeline.tracks() {
        track.draw(&mut tid, &mut out);
    }
    if dropped > 0 {
        out.push(truncated(events, dropped));
    }
    let other = other_data(report, &timeline, events.len(), dropped);
    Trace { json: to_json(&out, &other), events: out.len() }
}

/// The process's name: what ran, and the seed that replays it.
fn process_name(report: &Report) -> String {
    match report.seed {
        Some(seed) => format!("dtest sim {} --seed {seed}", report.scenario),
        None => format!("dtest run {}", report.scenario),
    }
}

/// A global instant where the kept events stop, saying how many more the run had.
fn truncated(events: &[(u64, RunEvent)], dropped: u64) -> TraceEvent {
    let at_ms = events.last().map_or(0, |(at, _)| *at);
    let mut args = Map::new();
    args.insert("kept".into(), Value::from(events.len()));
    args.insert("not_kept".into(), Value::from(dropped));
    args.insert(
        "why".into(),
        Value::from(format!(
            "a simulation keeps its first {} events; the timeline after this point is incomplete",
            crate::EVENTS_MAX
        )),
    );
    TraceEvent { name: "trace truncated".into(), cat: "dtest", ph: "i", s: Some("g"), args, ..TraceEvent::at(at_ms) }
}

/// What the trace is of, in its `otherData` (chrome://tracing shows it as the trace's metadata).
fn other_data(report: &Report, timeline: &Timeline, kept: usize, dropped: u64) -> Value {
    serde_json::json!({
        "scenario": report.scenario,
        "seed": report.seed,
        "run_end_ms": timeline.end_ms,
        "run_events": kept,
        "run_events_not_kept": dropped,
    })
}

/// The trace's JSON: one event a line, so that a trace diffs and greps well.
fn to_json(events: &[TraceEvent], other: &Value) -> String {
    let mut json = String::with_capacity(events.len() * 160 + 256);
    json.push_str("{\"traceEvents\":[\n");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            json.push_str(",\n");
        }
        // Strings, numbers and maps with string keys: serializing cannot fail.
        json.push_str(&serde_json::to_string(event).unwrap_or_default());
    }
    json.push_str("\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":");
    json.push_str(&serde_json::to_string(other).unwrap_or_default());
    json.push_str("}\n");
    json
}

/// One event of the trace-event format; times in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct TraceEvent {
    name: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    cat: &'static str,
    /// `X` a complete span, `i` an instant, `M` metadata.
    ph: &'static str,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<u64>,
    /// An instant's scope: `t` its thread, `g` the whole trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Map::is_empty")]
    args: Map<String, Value>,
}

impl TraceEvent {
    /// An empty event at `at_ms` on no thread, to fill in.
    fn at(at_ms: u64) -> TraceEvent {
        TraceEvent {
            name: String::new(),
            cat: "",
            ph: "i",
            ts: at_ms.saturating_mul(1000),
            dur: None,
            s: None,
            pid: PID,
            tid: 0,
            args: Map::new(),
        }
    }

    /// A metadata event: `process_name`, `thread_name` (`value` the name) or `thread_sort_index`
    /// (`value` the index).
    fn meta(name: &str, tid: u32, value: Value) -> TraceEvent {
        let key = if name.ends_with("sort_index") { "sort_index" } else { "name" };
        let mut args = Map::new();
        args.insert(key.into(), value);
        TraceEvent { name: name.into(), ph: "M", tid, args, ..TraceEvent::at(0) }
    }
}

/// A span on a track, from `start_ms` to `end_ms`.
#[derive(Clone, Debug)]
struct Span {
    start_ms: u64,
    end_ms: u64,
    name: String,
    args: Map<String, Value>,
}

/// An instant on a track.
#[derive(Clone, Debug)]
struct Mark {
    at_ms: u64,
    name: &'static str,
    args: Map<String, Value>,
}

/// A track as the events made it, before it is split into lanes.
#[derive(Clone, Debug, Default)]
struct Track {
    name: String,
    /// The category of its spans (`attempt`, `fault`, `alert`).
    cat: &'static str,
    spans: Vec<Span>,
    marks: Vec<Mark>,
}

impl Track {
    fn new(name: String, cat: &'static str) -> Track {
        Track { name, cat, ..Track::default() }
    }

    /// Appends the track's events to `out`, its lanes taking the thread ids after `tid`, which
    /// is left at the last: names and sort order (the thread id), spans, then instants on its
    /// first lane.
    fn draw(&self, tid: &mut u32, out: &mut Vec<TraceEvent>) {
        let mut spans: Vec<&Span> = self.spans.iter().collect();
        // Stable: spans that start and end together keep the order of the events.
        spans.sort_by_key(|s| (s.start_ms, s.end_ms));
        let (lane_of, lanes) = lanes(spans.iter().map(|s| (s.start_ms, s.end_ms)));
        let first = *tid + 1;
        for lane in 0..lanes {
            *tid += 1;
            let name = if lane == 0 { self.name.clone() } else { format!("{} ({})", self.name, lane + 1) };
            out.push(TraceEvent::meta("thread_name", *tid, Value::from(name)));
            out.push(TraceEvent::meta("thread_sort_index", *tid, Value::from(*tid)));
        }
        for (span, lane) in spans.into_iter().zip(lane_of) {
            out.push(TraceEvent {
                name: span.name.clone(),
                cat: self.cat,
                ph: "X",
                dur: Some(span.end_ms.saturating_sub(span.start_ms).saturating_mul(1000)),
                tid: first + lane as u32,
                args: span.args.clone(),
                ..TraceEvent::at(span.start_ms)
            });
        }
        for mark in &self.marks {
            out.push(TraceEvent {
                name: mark.name.into(),
                cat: "node",
                s: Some("t"),
                tid: first,
                args: mark.args.clone(),
                ..TraceEvent::at(mark.at_ms)
            });
        }
    }
}

/// Lanes for spans given as (start, end) in order of their starts, such that no two spans of a
/// lane overlap (a span may start where another ends): each goes to the lowest lane free at its
/// start. Returns each span's lane and how many lanes there are (at least one).
fn lanes(spans: impl Iterator<Item = (u64, u64)>) -> (Vec<usize>, usize) {
    let mut busy: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut free = BTreeSet::new();
    let mut count = 1;
    free.insert(0);
    let mut lane_of = Vec::new();
    for (start, end) in spans {
        while let Some(&Reverse((until, lane))) = busy.peek()
            && until <= start
        {
            busy.pop();
            free.insert(lane);
        }
        let lane = free.pop_first().unwrap_or_else(|| {
            count += 1;
            count - 1
        });
        busy.push(Reverse((end, lane)));
        lane_of.push(lane);
    }
    (lane_of, count)
}

/// The run's tracks, as its events made them.
struct Timeline {
    /// When the run ended (ms): spans still open then end there.
    end_ms: u64,
    faults: Option<Track>,
    alerts: Track,
    nodes: Vec<Track>,
}

impl Timeline {
    /// With `truncated`, the events stop before the run did: what was still open ends where they
    /// stop, its end unknown.
    fn of(scenario: &Scenario, report: &Report, events: &[(u64, RunEvent)], truncated: bool) -> Timeline {
        let last_ms = events.last().map_or(0, |(at, _)| *at);
        let reported_ms = report.simulated_s.or(report.elapsed_s).map_or(0, |s| (s * 1e3).round() as u64);
        let end_ms = reported_ms.max(last_ms);
        let mut builder = Builder::new(scenario, end_ms);
        for (at_ms, event) in events {
            builder.event(*at_ms, event);
        }
        match truncated {
            true => builder.finish(last_ms, "unknown (trace truncated)"),
            false => builder.finish(end_ms, "running_at_end"),
        }
    }

    /// The tracks in the order they are drawn: faults, alerts, nodes.
    fn tracks(&self) -> impl Iterator<Item = &Track> {
        let alerts = Some(&self.alerts).filter(|t| !t.spans.is_empty());
        self.faults.iter().chain(alerts).chain(&self.nodes)
    }
}

/// An attempt leased and not yet known to have ended.
#[derive(Clone, Copy, Debug)]
struct Open {
    node: usize,
    attempt: u32,
    start_ms: u64,
}

/// Reads the run's events into tracks.
struct Builder<'a> {
    scenario: &'a Scenario,
    end_ms: u64,
    /// The first task id of each scenario task entry, for names.
    first_ids: Vec<u64>,
    attempts: BTreeMap<u64, Open>,
    faults: BTreeMap<usize, u64>,
    alerts: BTreeMap<u64, (u64, AlertRecord)>,
    timeline: Timeline,
}

impl<'a> Builder<'a> {
    fn new(scenario: &'a Scenario, end_ms: u64) -> Builder<'a> {
        let mut first_ids = Vec::with_capacity(scenario.workload.tasks.len());
        let mut next = 0u64;
        for task in &scenario.workload.tasks {
            first_ids.push(next);
            next += u64::from(task.count);
        }
        let nodes = scenario.nodes().map(|n| Track::new(scenario.node_id(n), "attempt")).collect();
        let faults = (!scenario.faults.is_empty()).then(|| Track::new("faults".into(), "fault"));
        Builder {
            scenario,
            end_ms,
            first_ids,
            attempts: BTreeMap::new(),
            faults: BTreeMap::new(),
            alerts: BTreeMap::new(),
            timeline: Timeline { end_ms, faults, alerts: Track::new("alerts".into(), "alert"), nodes },
        }
    }

    fn event(&mut self, at_ms: u64, event: &RunEvent) {
        match event {
            RunEvent::TaskAssigned { task, attempt, node } => {
                // Every attempt's end is an event; one left open would be drawn to here.
                if let Some(open) = self.attempts.remove(&task.0) {
                    self.attempt(task.0, open, at_ms, "superseded");
                }
                let open = Open { node: node.0 as usize, attempt: attempt.0, start_ms: at_ms };
                self.attempts.insert(task.0, open);
            }
            RunEvent::AttemptEnded { task, attempt, end, .. } => {
                if let Some(open) = self.attempts.remove(&task.0) {
                    if open.attempt == attempt.0 {
                        self.attempt(task.0, open, at_ms, end.name());
                    } else {
                        self.attempts.insert(task.0, open);
                    }
                }
            }
            RunEvent::TaskFinished { task, outcome } => {
                if let Some(open) = self.attempts.remove(&task.0) {
                    self.attempt(task.0, open, at_ms, outcome.name());
                }
            }
            RunEvent::TaskReassigned { task, .. } => {
                if let Some(open) = self.attempts.remove(&task.0) {
                    self.attempt(task.0, open, at_ms, "reassigned");
                }
            }
            RunEvent::NodeJoined { node, incarnation } => {
                let args = args([("why", Value::from("joined")), ("incarnation", Value::from(incarnation.0))]);
                self.mark(node.0 as usize, at_ms, "alive", args);
            }
            RunEvent::NodeBack { node } => self.mark(node.0 as usize, at_ms, "alive", args([("why", "back".into())])),
            RunEvent::NodeSuspected { node } => self.mark(node.0 as usize, at_ms, "suspected", Map::new()),
            RunEvent::NodeDead { node } => self.mark(node.0 as usize, at_ms, "dead", Map::new()),
            RunEvent::NodeLeft { node } => self.mark(node.0 as usize, at_ms, "left", Map::new()),
            RunEvent::FaultStarted { fault } => {
                self.faults.entry(*fault).or_insert(at_ms);
            }
            RunEvent::FaultEnded { fault } => {
                if let Some(start_ms) = self.faults.remove(fault) {
                    self.fault(*fault, start_ms, at_ms);
                }
            }
            RunEvent::AlertFired(record) => {
                self.alerts.insert(record.id, (at_ms, record.clone()));
            }
            RunEvent::AlertResolved(record) => {
                if let Some((start_ms, fired)) = self.alerts.remove(&record.id) {
                    self.alert(&fired, start_ms, record.resolved_at_ms.unwrap_or(at_ms), true);
                }
            }
            RunEvent::Load(_) => {}
        }
    }

    /// The scenario entry of a task id.
    fn entry(&self, task: u64) -> Option<usize> {
        let after = self.first_ids.partition_point(|&first| first <= task);
        let entry = after.checked_sub(1)?;
        (task - self.first_ids[entry] < u64::from(self.scenario.workload.tasks[entry].count)).then_some(entry)
    }

    /// A task's name and instance, as people know it: `build#3`.
    fn task_name(&self, task: u64) -> String {
        match self.entry(task) {
            Some(e) => format!("{}#{}", self.scenario.workload.tasks[e].name, task - self.first_ids[e] + 1),
            None => format!("task {task}"),
        }
    }

    fn attempt(&mut self, task: u64, open: Open, end_ms: u64, outcome: &str) {
        let name = self.task_name(task);
        let args = args([
            ("task", Value::from(name.clone())),
            ("attempt", Value::from(open.attempt)),
            ("outcome", Value::from(outcome)),
        ]);
        let span = Span { start_ms: open.start_ms, end_ms: end_ms.max(open.start_ms), name, args };
        if let Some(track) = self.timeline.nodes.get_mut(open.node) {
            track.spans.push(span);
        }
    }

    fn mark(&mut self, node: usize, at_ms: u64, name: &'static str, args: Map<String, Value>) {
        if let Some(track) = self.timeline.nodes.get_mut(node) {
            track.marks.push(Mark { at_ms, name, args });
        }
    }

    fn fault(&mut self, fault: usize, start_ms: u64, end_ms: u64) {
        let (Some(spec), Some(track)) = (self.scenario.faults.get(fault), self.timeline.faults.as_mut()) else {
            return;
        };
        let description = describe_fault(self.scenario, spec);
        // "at 12.000 s: kill eu-3": the span shows when.
        let name = description.split_once(": ").map_or(description.as_str(), |(_, what)| what).to_owned();
        let args = args([("fault", Value::from(fault)), ("description", Value::from(description))]);
        track.spans.push(Span { start_ms, end_ms: end_ms.max(start_ms), name, args });
    }

    fn alert(&mut self, record: &AlertRecord, start_ms: u64, end_ms: u64, resolved: bool) {
        let args = args([
            ("rule", Value::from(record.rule.clone())),
            ("subject", Value::from(record.subject.clone())),
            ("severity", serde_json::to_value(record.severity).unwrap_or_default()),
            ("value", Value::from(record.value)),
            ("resolved", Value::from(resolved)),
        ]);
        let name = format!("{}: {}", record.rule, record.subject);
        self.timeline.alerts.spans.push(Span { start_ms, end_ms: end_ms.max(start_ms), name, args });
    }

    /// Ends what is still open at the run's end, and gives the tracks.
    /// Ends what is still open: attempts at `attempts_end_ms` with `outcome`, faults and alerts
    /// (whose windows the scenario and the report know) at the run's end.
    fn finish(mut self, attempts_end_ms: u64, outcome: &str) -> Timeline {
        let end_ms = self.end_ms;
        for (task, open) in std::mem::take(&mut self.attempts) {
            self.attempt(task, open, attempts_end_ms, outcome);
        }
        for (fault, start_ms) in std::mem::take(&mut self.faults) {
            self.fault(fault, start_ms, end_ms);
        }
        for (_, (start_ms, record)) in std::mem::take(&mut self.alerts) {
            self.alert(&record, start_ms, end_ms, false);
        }
        self.timeline
    }
}

/// Args from pairs, in their order.
fn args<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtest_core::placement::NodeIdx;
    use dtest_core::protocol::{Attempt, Incarnation, TaskId};
    use dtest_core::report::TaskOutcome;
    use dtest_core::run::AttemptEnd;

    fn scenario(name: &str) -> Scenario {
        let path = format!("{}/../scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
        dtest_core::scenario::parse(&std::fs::read(path).expect("read")).expect("valid")
    }

    /// A simulated run of a shipped scenario, traced.
    fn traced(name: &str, seed: u64) -> (Scenario, Report, Trace) {
        let s = scenario(name);
        let options = crate::SimOptions { seed, ..crate::SimOptions::default() };
        let (report, events, dropped) = crate::simulate_timeline(&s, &options).expect("runs");
        assert_eq!(dropped, 0);
        let trace = chrome_trace(&s, &report, &events, dropped);
        (s, report, trace)
    }

    fn parse(trace: &Trace) -> Vec<Value> {
        let value: Value = serde_json::from_str(&trace.json).expect("the trace is JSON");
        assert_eq!(value["displayTimeUnit"], "ms");
        let events = value["traceEvents"].as_array().expect("traceEvents").clone();
        assert_eq!(events.len(), trace.events);
        events
    }

    /// Thread names by thread id.
    fn threads(events: &[Value]) -> BTreeMap<u64, String> {
        events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .map(|e| (e["tid"].as_u64().expect("tid"), e["args"]["name"].as_str().expect("name").to_owned()))
            .collect()
    }

    /// Every event is well formed for its kind, every span lies within the run, and on each
    /// thread, spans and instants nest (none ends inside another it did not start in).
    fn assert_well_formed(events: &[Value], end_us: u64) {
        let mut by_thread: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        let names = threads(events);
        for e in events {
            assert!(e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
            let ts = e["ts"].as_u64().expect("integer ts");
            let tid = e["tid"].as_u64().expect("tid");
            match e["ph"].as_str() {
                Some("M") => assert!(e["args"].is_object(), "{e}"),
                Some("X") => {
                    let dur = e["dur"].as_u64().expect("a span has an integer dur");
                    assert!(ts + dur <= end_us, "a span past the run's end ({end_us} us): {e}");
                    assert!(names.contains_key(&tid), "a span on a named track: {e}");
                    by_thread.entry(tid).or_default().push((ts, ts + dur));
                }
                Some("i") => {
                    assert!(matches!(e["s"].as_str(), Some("t" | "g")), "an instant has a scope: {e}");
                    assert!(ts <= end_us, "{e}");
                    by_thread.entry(tid).or_default().push((ts, ts));
                }
                other => panic!("unexpected phase {other:?}: {e}"),
            }
        }
        for (tid, mut slices) in by_thread {
            slices.sort_by_key(|&(start, end)| (start, Reverse(end)));
            // The ends of the slices enclosing the current one, innermost last.
            let mut open: Vec<u64> = Vec::new();
            for (start, end) in slices {
                while open.last().is_some_and(|&until| until <= start) {
                    open.pop();
                }
                if let Some(&until) = open.last() {
                    assert!(end <= until, "thread {tid}: a slice [{start}, {end}] overlaps one ending at {until}");
                }
                open.push(end);
            }
        }
    }

    #[test]
    fn a_node_failure_run_has_a_track_per_node_spans_that_nest_and_one_span_per_fault() {
        let (s, report, trace) = traced("node-failure", 42);
        let events = parse(&trace);
        let end_us = (report.simulated_s.expect("simulated") * 1e6).round() as u64;
        assert_well_formed(&events, end_us);
        let names: BTreeSet<String> = threads(&events).into_values().collect();
        for node in s.nodes().map(|n| s.node_id(n)) {
            assert!(names.contains(&node), "a track named {node}");
        }
        let faults: Vec<&Value> = events.iter().filter(|e| e["cat"] == "fault").collect();
        assert_eq!(faults.len(), s.faults.len(), "one span per fault: {faults:?}");
        assert_eq!(faults[0]["name"], "kill worker-1");
        assert_eq!(faults[0]["ts"], 15_000_000);
        assert_eq!(faults[0]["ts"].as_u64().expect("ts") + faults[0]["dur"].as_u64().expect("dur"), end_us);
        let attempts = events.iter().filter(|e| e["cat"] == "attempt").count() as u64;
        assert_eq!(attempts, report.tasks.completed + report.reassignments, "every attempt passed or was taken back");
        assert_eq!(trace, chrome_trace(&s, &report, &crate::simulate_traced(&s, &seed(42)).expect("runs").1, 0));
    }

    fn seed(seed: u64) -> crate::SimOptions {
        crate::SimOptions { seed, ..crate::SimOptions::default() }
    }

    /// A report of a simulated run of `end_s` seconds.
    fn report(end_s: f64) -> Report {
        Report { scenario: "t".into(), seed: Some(1), simulated_s: Some(end_s), ..Report::default() }
    }

    fn assigned(task: u64, attempt: u32, node: u32) -> RunEvent {
        RunEvent::TaskAssigned { task: TaskId(task), attempt: Attempt(attempt), node: NodeIdx(node) }
    }

    /// The attempt spans of a trace: (name, thread name, start ms, end ms, outcome).
    fn attempts(trace: &Trace) -> Vec<(String, String, u64, u64, String)> {
        let events = parse(trace);
        let names = threads(&events);
        events
            .iter()
            .filter(|e| e["cat"] == "attempt")
            .map(|e| {
                let ts = e["ts"].as_u64().expect("ts");
                (
                    e["name"].as_str().expect("name").to_owned(),
                    names[&e["tid"].as_u64().expect("tid")].clone(),
                    ts / 1000,
                    (ts + e["dur"].as_u64().expect("dur")) / 1000,
                    e["args"]["outcome"].as_str().expect("outcome").to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn an_attempt_ends_where_the_events_say() {
        let s = scenario("node-failure");
        let ended = |task, attempt, node, end| RunEvent::AttemptEnded {
            task: TaskId(task),
            attempt: Attempt(attempt),
            node: NodeIdx(node),
            end,
        };
        let events = vec![
            (1_000, assigned(0, 1, 0)),
            (2_000, assigned(1, 1, 0)),
            (3_000, assigned(2, 1, 0)),
            (4_000, assigned(3, 1, 1)),
            (21_000, ended(0, 1, 0, AttemptEnd::Passed)),
            (21_000, RunEvent::TaskFinished { task: TaskId(0), outcome: TaskOutcome::Passed }),
            (22_000, RunEvent::TaskReassigned { task: TaskId(1), from: NodeIdx(0) }),
            (25_000, ended(2, 1, 0, AttemptEnd::Failed)),
            // An end of an attempt that is not the open one changes nothing.
            (26_000, ended(2, 7, 0, AttemptEnd::Failed)),
            (30_000, assigned(2, 2, 1)),
            (129_000, ended(3, 1, 1, AttemptEnd::Expired)),
            (200_000, assigned(3, 2, 2)),
        ];
        let trace = chrome_trace(&s, &report(250.0), &events, 0);
        let mut spans = attempts(&trace);
        spans.sort();
        let row = |name: &str, node: &str, start, end, outcome: &str| {
            (name.to_owned(), node.to_owned(), start, end, outcome.to_owned())
        };
        assert_eq!(
            spans,
            [
                row("shard#1", "worker-1", 1_000, 21_000, "passed"),
                row("shard#2", "worker-1 (2)", 2_000, 22_000, "reassigned"),
                row("shard#3", "worker-1 (3)", 3_000, 25_000, "failed"),
                row("shard#3", "worker-2 (2)", 30_000, 250_000, "running_at_end"),
                row("shard#4", "worker-2", 4_000, 129_000, "expired"),
                row("shard#4", "worker-3", 200_000, 250_000, "running_at_end"),
            ]
        );
    }

    #[test]
    fn node_views_are_instants_and_alerts_and_faults_are_spans_to_their_end_or_the_runs() {
        let s = scenario("node-failure");
        let alert = AlertRecord {
            id: 7,
            rule: "node-down".into(),
            subject: "cluster".into(),
            severity: dtest_core::health::alerts::Severity::Critical,
            fired_at_ms: 16_000,
            resolved_at_ms: None,
            value: 1.0,
        };
        let events = vec![
            (0, RunEvent::NodeJoined { node: NodeIdx(0), incarnation: Incarnation(1) }),
            (15_000, RunEvent::FaultStarted { fault: 0 }),
            (16_000, RunEvent::AlertFired(alert.clone())),
            (18_000, RunEvent::NodeSuspected { node: NodeIdx(0) }),
            (20_000, RunEvent::NodeDead { node: NodeIdx(0) }),
            (40_000, RunEvent::FaultStarted { fault: 1 }),
            (60_000, RunEvent::AlertResolved(AlertRecord { resolved_at_ms: Some(60_000), ..alert })),
            (100_000, RunEvent::FaultEnded { fault: 1 }),
            (101_000, RunEvent::NodeBack { node: NodeIdx(0) }),
        ];
        let trace = chrome_trace(&s, &report(300.0), &events, 0);
        let parsed = parse(&trace);
        assert_well_formed(&parsed, 300_000_000);
        let names = threads(&parsed);
        let on = |cat: &str| -> Vec<(String, String, u64, Option<u64>)> {
            parsed
                .iter()
                .filter(|e| e["cat"] == cat)
                .map(|e| {
                    (
                        names[&e["tid"].as_u64().expect("tid")].clone(),
                        e["name"].as_str().expect("name").to_owned(),
                        e["ts"].as_u64().expect("ts") / 1000,
                        e["dur"].as_u64().map(|d| d / 1000),
                    )
                })
                .collect()
        };
        let n = |track: &str, name: &str, at, dur| (track.to_owned(), name.to_owned(), at, dur);
        assert_eq!(
            on("node"),
            [
                n("worker-1", "alive", 0, None),
                n("worker-1", "suspected", 18_000, None),
                n("worker-1", "dead", 20_000, None),
                n("worker-1", "alive", 101_000, None)
            ]
        );
        assert_eq!(on("alert"), [n("alerts", "node-down: cluster", 16_000, Some(44_000))]);
        assert_eq!(
            on("fault"),
            [
                n("faults", "kill worker-1", 15_000, Some(285_000)),
                n("faults (2)", "kill group rack, restart at 100.000 s", 40_000, Some(60_000))
            ]
        );
    }

    #[test]
    fn a_run_with_more_events_than_kept_says_where_its_trace_stops() {
        let s = scenario("node-failure");
        let events = vec![(1_000, assigned(0, 1, 0)), (4_000, assigned(1, 1, 0))];
        let trace = chrome_trace(&s, &report(300.0), &events, 12);
        // What was open when the events stop ends there, its end unknown: not at the run's end.
        let mut open = attempts(&trace);
        open.sort();
        assert_eq!(open[0].2..open[0].3, 1_000..4_000);
        assert!(open.iter().all(|a| a.4 == "unknown (trace truncated)"), "{open:?}");
        let value: Value = serde_json::from_str(&trace.json).expect("JSON");
        assert_eq!(value["otherData"]["run_events_not_kept"], 12);
        let mark = value["traceEvents"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["name"] == "trace truncated")
            .expect("a truncation mark")
            .clone();
        assert_eq!((mark["ts"].as_u64(), mark["s"].as_str()), (Some(4_000_000), Some("g")));
        assert_eq!(mark["args"]["not_kept"], 12);
    }

    #[test]
    fn lanes_take_the_lowest_free_one_and_never_overlap() {
        let (lane_of, count) = lanes([(0, 10), (0, 5), (5, 7), (6, 8), (10, 10), (10, 20)].into_iter());
        assert_eq!((lane_of, count), (vec![0, 1, 1, 2, 0, 0], 3));
        assert_eq!(lanes(std::iter::empty()), (vec![], 1));
    }
}
