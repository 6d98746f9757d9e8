//! dtest's simulation shell: the core's run, orchestrator and agents as madsim nodes.
//!
//! Every scenario node is a madsim node running the core's [`dtest_core::protocol::Agent`]; one
//! more runs the core's [`dtest_core::run::Run`], which holds the orchestrator, the fault
//! timeline, the checkers and the report, exactly as `dtest run` drives it on real nodes. madsim
//! supplies the deterministic executor, the clock, and kills, restarts and pauses of nodes, which
//! the run asks for as actions. The network is the shell's own (`post`): each frame passes the
//! run's network faults (partitions, clogs, loss, latency), then waits for its millisecond in one
//! queue with the nodes' alarms, and one task puts it into its recipient's mailbox; madsim's
//! endpoints cost several tasks and timers per message. Work is simulated: command tasks take
//! their `sim` durations and fail at their `fail_rate`; load tasks draw each request's latency to
//! match the target's p50 and p99, with queueing beyond its capacity and errors at its rate, and
//! send what they measured back in their result, as a real node does. The shell decides nothing:
//! it wakes the run when the run asks (`poll_timeout`), so the simulator tests what real clusters
//! run.
//!
//! The checkers trust nothing the orchestrator says about itself: they rebuild leases and
//! allocations from its events and report any task ended twice, stale result counted, node
//! over-committed, task never ended after the faults healed, or kill noticed too late.
//!
//! Beyond one run: `sweep` runs many seeds (each with its own fault mix in a swarm) and splits a
//! sweep into shards; `shard` holds a shard's result file and merges them; `attribution` says
//! which fault dimensions a swarm's failures go with; `compare` runs every strategy on one seed
//! or, paired, on many, with `stats` giving confidence intervals; `shrink` minimises a failing
//! seed's scenario; `perfetto` writes a run's timeline as a Chrome trace; `trace` records every
//! event a run handles, only for [`check_determinism`], which runs a seed twice side by side and
//! names the first event where the runs part.
//!
//! The workspace builds with `--cfg madsim` (`.cargo/config.toml`), which compiles madsim's
//! simulated runtime into the one `dtest` binary. Without the flag this crate refuses to build,
//! so a `RUSTFLAGS` that replaces the config's flags cannot silently drop the simulator.

#[cfg(not(madsim))]
compile_error!(
    "dtest-sim needs `--cfg madsim` (set in .cargo/config.toml); is RUSTFLAGS set? it replaces the config's flags"
);

pub mod attribution;
pub mod compare;
pub mod perfetto;
mod post;
pub mod shard;
pub mod shrink;
pub mod stats;
pub mod sweep;
mod trace;
mod world;

pub use trace::{Divergence, EVENT_TEXT_MAX, TracedEvent};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dtest_core::report::Report;
use dtest_core::run::RunEvent;
use dtest_core::scenario::{Distribution, Scenario};

/// How to run a simulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// The seed: the same seed gives the same run and the same report, byte for byte.
    pub seed: u64,
    /// Overrides the scenario's distribution strategy.
    pub distribution: Option<Distribution>,
    /// Replace the scenario's faults with a mix drawn from the seed ([`sweep::swarm_scenario`]);
    /// the run is then judged by the invariants alone.
    pub swarm: bool,
    /// Test-only: the orchestrator counts stale results, to show the checkers catch it.
    pub break_fencing: bool,
    /// Keep the run's live events ([`simulate_traced`] sets it).
    pub events: bool,
    /// Where a caller watches a running simulation and stops it; options that share one watch
    /// (a sweep's seeds) all stop together.
    pub watch: Option<Watch>,
}

/// A running simulation seen from outside: how far its simulated clock has got, and a stop flag
/// it reads at every turn of the run. Stopping ends it at its next turn with
/// [`SimError::Stopped`]; a stopped simulation reports nothing, since a report of half a run
/// would judge expectations meant for the whole.
#[derive(Clone, Debug, Default)]
pub struct Watch(Arc<WatchState>);

#[derive(Debug, Default)]
struct WatchState {
    now_ms: AtomicU64,
    stop: AtomicBool,
}

impl Watch {
    /// The simulated time the run has reached, in ms (of the latest run, in a sweep).
    pub fn now_ms(&self) -> u64 {
        self.0.now_ms.load(Ordering::Relaxed)
    }

    /// Asks every simulation watched by this to stop.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`Watch::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn set_now(&self, now_ms: u64) {
        self.0.now_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Options are equal when they run the same simulation; the watch does not change what runs.
impl PartialEq for Watch {
    fn eq(&self, _: &Watch) -> bool {
        true
    }
}

impl Eq for Watch {}

/// Why a scenario cannot be simulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Something simulation needs is missing from the scenario.
    Missing(String),
    /// Its [`Watch`] stopped it.
    Stopped,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Missing(what) => write!(f, "{what}"),
            SimError::Stopped => write!(f, "stopped before its end"),
        }
    }
}

impl std::error::Error for SimError {}

/// What a simulation did, in units no machine changes: what the budget guard
/// (`benches/benches/budgets.rs`) holds against committed budgets, beside heap and allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Protocol frames sent (the report's `messages.sent`).
    pub messages: u64,
    /// Inputs the simulated network delivered: frames the faults let through, and alarms.
    pub letters: u64,
    /// Events the orchestrator emitted, each read by the checker.
    pub events: u64,
}

/// A run's live events with their simulated times, in order.
pub type Events = Vec<(u64, RunEvent)>;

/// The most live events a simulation keeps ([`simulate_traced`]), the first ones; later ones
/// are counted ([`simulate_timeline`]). The shell drains the run's own queue, which keeps only
/// its newest [`dtest_core::run::RUN_EVENTS_MAX`], as the run goes, so a long run keeps its
/// start; this bounds the memory (112 bytes an event, and an alert's names) and a trace made
/// from them ([`perfetto`]).
pub const EVENTS_MAX: usize = 250_000;

/// Checks that `scenario` has what simulation needs (resources on every group, a `sim` section
/// on every command task and load target).
pub fn check_simulable(scenario: &Scenario) -> Result<(), SimError> {
    world::simulable(scenario)
}

/// Simulates `scenario` with `options` and reports what happened.
pub fn simulate(scenario: &Scenario, options: &SimOptions) -> Result<Report, SimError> {
    simulate_counted(scenario, options).map(|(report, _)| report)
}

/// [`simulate`], and what the simulation did ([`Counts`]).
pub fn simulate_counted(scenario: &Scenario, options: &SimOptions) -> Result<(Report, Counts), SimError> {
    simulate_inner(scenario, options).map(|(report, counts, _)| (report, counts))
}

/// [`simulate`], and the run's live events with their simulated times: every one, up to the
/// first [`EVENTS_MAX`].
pub fn simulate_traced(scenario: &Scenario, options: &SimOptions) -> Result<(Report, Events), SimError> {
    simulate_timeline(scenario, options).map(|(report, events, _)| (report, events))
}

/// [`simulate_traced`], and how many events past [`EVENTS_MAX`] were counted but not kept, so
/// that a timeline made of them can say where it stops.
pub fn simulate_timeline(scenario: &Scenario, options: &SimOptions) -> Result<(Report, Events, u64), SimError> {
    let options = SimOptions { events: true, ..options.clone() };
    simulate_recorded(scenario, &options, None).map(|(report, _, events, dropped)| (report, events, dropped))
}

fn simulate_inner(scenario: &Scenario, options: &SimOptions) -> Result<(Report, Counts, Events), SimError> {
    simulate_recorded(scenario, options, None).map(|(report, counts, events, _)| (report, counts, events))
}

fn simulate_recorded(
    scenario: &Scenario,
    options: &SimOptions,
    trace: Option<trace::Recorder>,
) -> Result<(Report, Counts, Events, u64), SimError> {
    world::simulable(scenario)?;
    let swarm = options.swarm.then(|| sweep::swarm_scenario(scenario, options.seed));
    let scenario = swarm.as_ref().unwrap_or(scenario);
    let shared = world::run(scenario, options, trace)?;
    let mut world = shared.world();
    if world.stopped {
        return Err(SimError::Stopped);
    }
    let report = world.run.report();
    let counts =
        Counts { messages: report.messages.sent, letters: world.post.delivered(), events: world.run.events_seen() };
    world.keep_events();
    // Events the run's own queue dropped within one turn (a run cancelling a million tasks at
    // its end) count as not kept too.
    let dropped = world.events_dropped + world.run.events_dropped();
    Ok((report, counts, std::mem::take(&mut world.events), dropped))
}

/// What running one seed twice found ([`check_determinism`]).
#[derive(Clone, Debug)]
pub enum Determinism {
    /// Both runs handled the same events, in the same order at the same times, and gave the
    /// same report, byte for byte.
    Same {
        /// The report.
        report: Box<Report>,
        /// How many events each run handled.
        events: u64,
    },
    /// The runs part at this event; they were stopped there.
    Diverged(Divergence),
    /// The runs parted at event `index` (at `at_ms`), but when run twice again to show the event,
    /// they did not part at all: the nondeterminism comes and goes.
    Intermittent {
        /// The event, counted from 0.
        index: u64,
        /// Its simulated time, in ms.
        at_ms: u64,
    },
    /// Every event agreed, yet the reports differ.
    ReportsDiffer,
}

/// Runs `options.seed` twice, side by side on two threads, each recording its trace: every frame
/// sent (with the network's verdict), every input a node or the orchestrator takes, every timeout
/// and action, with its simulated time. The traces are compared as they grow, by fingerprint,
/// and both runs stop at the first event that differs; the seed then runs twice more, keeping
/// the events' text, to show that event. Recording costs nothing in a run that does not ask for
/// it. The check stops its runs with watches of its own; `options.watch` is not used.
///
/// `perturb_second_run_at` is for tests only: at that event (counted from 0) the second run's
/// shell draws a number from the seeded generator out of turn, a real divergence from then on,
/// so the report of where it starts can be checked.
pub fn check_determinism(
    scenario: &Scenario,
    options: &SimOptions,
    perturb_second_run_at: Option<u64>,
) -> Result<Determinism, SimError> {
    world::simulable(scenario)?;
    match run_twice(scenario, options, trace::Keep::Fingerprints, perturb_second_run_at) {
        Twice::Same(events, reports) => {
            let [first, second] = *reports;
            let (first, second) = (first?, second?);
            if first.to_json() == second.to_json() {
                Ok(Determinism::Same { report: Box::new(first), events })
            } else {
                Ok(Determinism::ReportsDiffer)
            }
        }
        Twice::Diverged(found) => match run_twice(scenario, options, trace::Keep::Text, perturb_second_run_at) {
            Twice::Diverged(shown) => Ok(Determinism::Diverged(shown)),
            Twice::Same(..) => Ok(Determinism::Intermittent { index: found.index, at_ms: found.at_ms }),
        },
    }
}

/// What two runs of a seed did, side by side.
enum Twice {
    /// The same events, this many; each run's report.
    Same(u64, Box<[Result<Report, SimError>; 2]>),
    /// They parted here, and were stopped.
    Diverged(Divergence),
}

/// Runs `options.seed` twice at once, recording `keep` of each event, and compares the traces
/// as they grow; stops both runs where they part.
fn run_twice(
    scenario: &Scenario,
    options: &SimOptions,
    keep: trace::Keep,
    perturb_second_run_at: Option<u64>,
) -> Twice {
    let watch = Watch::default();
    let options = SimOptions { watch: Some(watch.clone()), ..options.clone() };
    let names: Vec<String> = scenario.nodes().map(|n| scenario.node_id(n)).collect();
    let (first_sink, first) = trace::channel();
    let (second_sink, second) = trace::channel();
    let recorders = [
        trace::Recorder::new(names.clone(), keep, first_sink, None),
        trace::Recorder::new(names, keep, second_sink, perturb_second_run_at),
    ];
    std::thread::scope(|scope| {
        let runs = recorders.map(|recorder| {
            let options = &options;
            scope.spawn(move || simulate_recorded(scenario, options, Some(recorder)).map(|(report, ..)| report))
        });
        match trace::compare(first, second) {
            trace::Compared::Diverged(divergence) => {
                // Nothing after the divergence is worth running; the scope waits for both to stop.
                watch.stop();
                Twice::Diverged(divergence)
            }
            trace::Compared::Same(events) => {
                // A run that panicked failed an assertion of the core or the shell: so does this.
                let reports = runs.map(|run| run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                Twice::Same(events, Box::new(reports))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Scenario {
        let path = format!("{}/../scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
        dtest_core::scenario::parse(&std::fs::read(path).expect("read")).expect("valid")
    }

    #[test]
    fn a_watch_shows_the_clock_and_stops_the_run() {
        let s = scenario("scale-1000");
        let watch = Watch::default();
        let options = SimOptions { watch: Some(watch.clone()), ..SimOptions::default() };
        let running = std::thread::spawn(move || simulate(&s, &options));
        while watch.now_ms() == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        watch.stop();
        assert_eq!(running.join().expect("no panic"), Err(SimError::Stopped));
        assert!(watch.now_ms() < 594_000, "stopped before the end: {} ms", watch.now_ms());
    }

    #[test]
    fn a_stopped_watch_stops_a_sweep_before_its_next_seed() {
        let s = scenario("partition");
        let watch = Watch::default();
        watch.stop();
        let options = SimOptions { watch: Some(watch), ..SimOptions::default() };
        let ran = std::sync::atomic::AtomicU64::new(0);
        let outcome = sweep::sweep(&s, 0..1_000, &options, 2, &|_| {
            ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(outcome, Err(SimError::Stopped));
        assert_eq!(ran.into_inner(), 0);
    }

    #[test]
    fn checking_determinism_agrees_on_every_event_and_changes_nothing_in_the_report() {
        let s = scenario("node-failure");
        let options = SimOptions { seed: 3, swarm: true, ..SimOptions::default() };
        let Ok(Determinism::Same { report, events }) = check_determinism(&s, &options, None) else {
            panic!("a seed replays")
        };
        assert!(events > 1_000, "every frame, input and action is an event: {events}");
        assert_eq!(report.to_json(), simulate(&s, &options).expect("runs").to_json());
    }

    #[test]
    fn a_perturbed_second_run_diverges_at_the_event_perturbed() {
        let s = scenario("node-failure");
        let options = SimOptions { seed: 3, ..SimOptions::default() };
        let Ok(Determinism::Diverged(d)) = check_determinism(&s, &options, Some(700)) else {
            panic!("the second run was perturbed")
        };
        assert_eq!(d.index, 700);
        let (first, second) = (d.first.expect("the first run went on"), d.second.expect("so did the second"));
        assert!(second.text.starts_with("test-only perturbation"), "{second:?}");
        assert!(!first.text.starts_with("test-only"), "{first:?}");
        assert_eq!(d.at_ms, first.at_ms.min(second.at_ms));
    }

    #[test]
    fn watching_changes_nothing_in_the_report() {
        let s = scenario("partition");
        let watched = SimOptions { watch: Some(Watch::default()), ..SimOptions::default() };
        assert_eq!(
            simulate(&s, &watched).expect("runs").to_json(),
            simulate(&s, &SimOptions::default()).expect("runs").to_json()
        );
    }
}
