//! Shrinking a failing seed: the smallest scenario that still fails the same way, so that a
//! person debugging it reads two faults on four nodes instead of nine faults on forty.
//!
//! The seed's run is kept; what changes is the scenario, in three phases, each candidate run
//! with the same seed and kept only when it fails the same check (the same invariant, or the
//! same expectation) as the original:
//!
//! 1. fewer faults: Zeller's delta debugging (ddmin) over the list of faults, down to a list
//!    from which no single fault can be removed (1-minimal);
//! 2. shorter fault windows: for each fault that ends, the earliest end (in steps of
//!    [`WINDOW_STEP_MS`]) that still fails, by binary search;
//! 3. fewer nodes and tasks: each group's node count and each task entry's count, halved while
//!    that fails, else lowered by one. Only a group's highest-numbered nodes go, and they leave
//!    every fault that names them; a fault left naming no node is dropped (for packet loss and
//!    latency, no node would mean every node).
//!
//! The phases repeat, in rounds, until a round changes nothing.
//!
//! Every candidate goes through the scenario file: written ([`dtest_core::scenario::to_json`])
//! and parsed back, so the parser's checks refuse what no file could say (a candidate that does
//! not parse is skipped) and what runs is exactly what the written file replays. A swarm seed is
//! first turned into the scenario file of the mix it drew, judged by the invariants alone as the
//! swarm judged it.
//!
//! The candidates of one step run on every core, but the one kept is the first that fails in a
//! fixed order, so the result does not depend on the machine. At most [`SIMULATIONS_MAX`]
//! simulations run; then the smallest failing case found so far is returned.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use dtest_core::limits::DESCRIPTION_BYTES_MAX;
use dtest_core::report::{Condition, Invariant, Report};
use dtest_core::scenario::{self, Expect, Fault, FaultKind, GroupId, NodeSet, Scenario};

use crate::{SimError, SimOptions, Watch, simulate, sweep};

/// A shrink runs at most this many simulations, then returns the smallest failing case so far.
pub const SIMULATIONS_MAX: u64 = 2_000;

/// Fault windows are shortened in steps of this many milliseconds: finer would cost
/// simulations and give ends no one reads more easily.
pub const WINDOW_STEP_MS: u64 = 100;

/// What must keep failing: the check the original run failed first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failing {
    /// The first violation's invariant (other than liveness).
    Invariant(Invariant),
    /// Liveness, with the conditions that did not converge in time: the same must stay late, or
    /// shrinking drifts from "the nodes never came back" to "the work no longer fits".
    Liveness(Vec<Condition>),
    /// Without a violation, the first failed expectation, by its name in `expect`.
    Expectation(String),
}

impl Failing {
    /// What `report` failed first: its first violation's invariant, else (outside a swarm, where
    /// expectations are judged) its first failed expectation; `None` when it passed.
    pub fn of(report: &Report) -> Option<Failing> {
        if let Some(violation) = report.violations.first() {
            return Some(match violation.invariant {
                Invariant::Liveness => Failing::Liveness(late(report)),
                invariant => Failing::Invariant(invariant),
            });
        }
        let judged = if report.swarm { &[][..] } else { &report.expectations[..] };
        judged.iter().find(|e| !e.ok).map(|e| Failing::Expectation(e.name.clone()))
    }

    /// Whether `report` fails this same check (anywhere in its list, not necessarily first).
    pub fn holds_in(&self, report: &Report) -> bool {
        match self {
            Failing::Invariant(invariant) => report.violations.iter().any(|v| v.invariant == *invariant),
            Failing::Liveness(conditions) => {
                report.violations.iter().any(|v| v.invariant == Invariant::Liveness) && late(report) == *conditions
            }
            Failing::Expectation(name) => !report.swarm && report.expectations.iter().any(|e| !e.ok && e.name == *name),
        }
    }
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failing::Invariant(invariant) => write!(f, "invariant {}", invariant.name()),
            Failing::Liveness(conditions) => {
                let names: Vec<&str> = conditions.iter().map(|c| c.name()).collect();
                write!(f, "invariant liveness ({} late)", names.join(", "))
            }
            Failing::Expectation(name) => write!(f, "expectation {name}"),
        }
    }
}

/// The conditions of a report's liveness phase that did not converge within its bound, in order
/// (none without a liveness phase).
fn late(report: &Report) -> Vec<Condition> {
    let Some(recovery) = &report.recovery else { return Vec::new() };
    let bound = recovery.bound_ms;
    recovery
        .conditions
        .iter()
        .filter(|c| c.recovered_after_ms.is_none_or(|ms| ms > bound))
        .map(|c| c.condition)
        .collect()
}

/// How big a failing case is, in what a person has to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    /// Fault events.
    pub faults: u64,
    /// Nodes over all groups.
    pub nodes: u64,
    /// Task instances over all entries.
    pub tasks: u64,
    /// How long the faults hold, summed over faults: each from its start to its end, or to the
    /// scenario's end when it never ends.
    pub fault_ms: u64,
}

impl Size {
    /// The size of `scenario`.
    pub fn of(scenario: &Scenario) -> Size {
        let window = |f: &Fault| f.end_ms().unwrap_or(scenario.duration_ms).saturating_sub(f.at_ms);
        Size {
            faults: scenario.faults.len() as u64,
            nodes: scenario.nodes_total(),
            tasks: scenario.tasks_total(),
            fault_ms: scenario.faults.iter().map(window).fold(0, u64::saturating_add),
        }
    }
}

/// The phases of a shrink, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Running the seed, and the scenario file made of it, to learn what fails.
    Reproduce,
    /// Delta debugging over the faults.
    Faults,
    /// Earlier ends of fault windows.
    Windows,
    /// Lower node counts.
    Nodes,
    /// Lower task counts.
    Tasks,
}

impl Phase {
    /// What the phase does, for a progress line.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Reproduce => "reproducing the failure",
            Phase::Faults => "fewer faults",
            Phase::Windows => "shorter fault windows",
            Phase::Nodes => "fewer nodes",
            Phase::Tasks => "fewer tasks",
        }
    }
}

/// Where a shrink is, after each batch of simulations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The phase running.
    pub phase: Phase,
    /// Simulations run so far.
    pub simulations: u64,
    /// The smallest failing case so far.
    pub size: Size,
}

/// What a shrink found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The seed passes: nothing to shrink.
    Passes,
    /// The scenario file made of the run did not fail the same way, so nothing that fails can
    /// be written (for a swarm seed, its drawn mix as explicit faults should fail the same).
    NotReproduced {
        /// What the seed failed.
        failing: Failing,
        /// What the file did instead: passed, failed something else ([`Report::failure`]), or
        /// did not parse.
        instead: String,
    },
    /// The smallest failing case found.
    Shrunk(Box<Shrunk>),
}

/// The smallest failing case found, and what it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Shrunk {
    /// The minimal scenario: replayed with [`Shrunk::seed`] (and no swarm), it fails
    /// [`Shrunk::failing`].
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// What kept failing.
    pub failing: Failing,
    /// The minimal scenario's failure, as its report gives it ([`Report::failure`]).
    pub failure: String,
    /// The size of the scenario the seed ran (for a swarm seed, with the mix it drew).
    pub before: Size,
    /// The size of the minimal scenario.
    pub after: Size,
    /// Simulations run, the original's included.
    pub simulations: u64,
    /// Whether [`SIMULATIONS_MAX`] stopped the shrink before it had tried everything.
    pub stopped_early: bool,
}

/// Shrinks the failing run of `scenario` with `options` (its seed, strategy, swarm, broken
/// fencing) to the smallest scenario that fails the same check with the same seed, running
/// candidates on every core. `progress` is called after each batch. A stopped
/// [`SimOptions::watch`] ends the shrink with [`SimError::Stopped`].
pub fn shrink(
    scenario: &Scenario,
    options: &SimOptions,
    progress: &(dyn Fn(&Step) + Sync),
) -> Result<Outcome, SimError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    shrink_on(scenario, options, threads, progress)
}

/// [`shrink`] on `threads` threads; the result is the same for any number.
fn shrink_on(
    scenario: &Scenario,
    options: &SimOptions,
    threads: usize,
    progress: &(dyn Fn(&Step) + Sync),
) -> Result<Outcome, SimError> {
    let original = simulate(scenario, options)?;
    let Some(failing) = Failing::of(&original) else { return Ok(Outcome::Passes) };
    let start = standalone(scenario, options, &failing);
    let candidates = SimOptions { swarm: false, events: false, ..options.clone() };
    let mut search = Search::new(candidates, failing.clone(), threads, start.clone(), progress);
    search.simulations = 1;
    if search.first_failing(Phase::Reproduce, 1, &|_| Some(start.clone()))?.is_none() {
        let instead = match (through_file(&start), search.last_failure.take()) {
            (None, _) => "its scenario file does not parse".to_owned(),
            (Some(_), None) => "it passes".to_owned(),
            (Some(_), Some(failure)) => format!("it fails another way: {failure}"),
        };
        return Ok(Outcome::NotReproduced { failing, instead });
    }
    // A round's later phases can make an earlier one's candidates fail (fewer tasks, and a node
    // more can go): rounds repeat until one changes nothing. Each change makes the case smaller,
    // so this ends, if the limit does not end it first.
    loop {
        let round = search.best.clone();
        search.faults()?;
        search.windows()?;
        search.nodes()?;
        search.tasks()?;
        if search.best == round || search.exhausted {
            break;
        }
    }
    Ok(Outcome::Shrunk(Box::new(search.finish(options.seed, Size::of(&start)))))
}

/// The scenario file a failing run of `scenario` becomes, before shrinking: for a swarm seed,
/// the mix it drew as explicit faults, with no expectation but the two bounds the invariants
/// read (detection and recovery), so it is judged by the invariants alone as the swarm seed
/// was. Its description says where it comes from.
fn standalone(scenario: &Scenario, options: &SimOptions, failing: &Failing) -> Scenario {
    let mut start = scenario.clone();
    if options.swarm {
        start = sweep::swarm_scenario(scenario, options.seed);
        let e = &scenario.expect;
        start.expect = Expect {
            failure_detected_within_ms: e.failure_detected_within_ms,
            recovered_within_ms: e.recovered_within_ms,
            ..Expect::default()
        };
    }
    let swarm = if options.swarm { " (its swarm mix as explicit faults)" } else { "" };
    let note = format!(
        "The smallest failing case dtest sim --shrink found of seed {} of {}{swarm}; it fails {failing}. ",
        options.seed, scenario.name
    );
    start.description = truncated(&format!("{note}{}", scenario.description), DESCRIPTION_BYTES_MAX);
    start
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The candidate subsets of one step of [`ddmin`]: the `i`-th, made when asked, so a step over
/// many items never holds all its subsets at once.
pub type Subsets<'a> = dyn Fn(usize) -> Vec<usize> + 'a;

/// Zeller's ddmin over `len` items (indices `0..len`): a subset of indices, in order, that
/// still fails and from which no single index can be removed (1-minimal); empty when nothing
/// at all fails. Assumes all `len` items together fail. Each step asks
/// `first_failing(count, candidate)` which of `count` candidate subsets, in order, fails first;
/// it answers `None` when none does (or when it can test no more).
pub fn ddmin(len: usize, first_failing: &mut dyn FnMut(usize, &Subsets<'_>) -> Option<usize>) -> Vec<usize> {
    if first_failing(1, &|_| Vec::new()).is_some() {
        return Vec::new();
    }
    let mut current: Vec<usize> = (0..len).collect();
    let mut n = 2;
    while current.len() >= 2 {
        let parts = split(&current, n);
        // With two parts, each complement is the other part.
        let complements = if n == 2 { 0 } else { n };
        let candidate = |i: usize| if i < n { parts[i].clone() } else { complement(&parts, i - n) };
        match first_failing(n + complements, &candidate) {
            Some(i) if i < n => {
                current = parts[i].clone();
                n = 2;
            }
            Some(i) => {
                current = complement(&parts, i - n);
                n = (n - 1).max(2);
            }
            None if n >= current.len() => break,
            None => n = (2 * n).min(current.len()),
        }
    }
    current
}

/// `items` in `n` contiguous parts of nearly equal length, none empty (`n <= items.len()`).
fn split(items: &[usize], n: usize) -> Vec<Vec<usize>> {
    let len = items.len();
    (0..n).map(|k| items[k * len / n..(k + 1) * len / n].to_vec()).collect()
}

/// Every part but part `skip`, in order.
fn complement(parts: &[Vec<usize>], skip: usize) -> Vec<usize> {
    parts.iter().enumerate().filter(|&(k, _)| k != skip).flat_map(|(_, part)| part.iter().copied()).collect()
}

/// The state of one shrink: the smallest failing case so far, what every candidate tried did,
/// and the count of simulations against [`SIMULATIONS_MAX`].
struct Search<'a> {
    /// Options of every candidate's run: the seed's, without swarm.
    options: SimOptions,
    /// What must keep failing.
    failing: Failing,
    /// Candidates run at once.
    threads: usize,
    /// The smallest failing case so far.
    best: Scenario,
    /// Its failure ([`Report::failure`]).
    failure: String,
    /// Simulations run.
    simulations: u64,
    /// Whether a candidate could not run for the limit.
    exhausted: bool,
    /// Each candidate tried, by a hash of its file's text: its failure when it still fails the
    /// same way, else `None`; and whether it was counted. At most one entry per simulation, so
    /// bounded by the limit.
    tried: HashMap<u64, Tried>,
    /// The failure of the last candidate run that failed another way, for
    /// [`Outcome::NotReproduced`].
    last_failure: Option<String>,
    progress: &'a (dyn Fn(&Step) + Sync),
}

/// What a candidate's run found.
struct Tried {
    /// Its failure when it fails the same way.
    failure: Option<String>,
    /// Whether it counts among [`Search::simulations`]. A batch runs its candidates at once, but
    /// only those up to its first failing one count, as if they had run one by one; one run
    /// after that counts when a later step asks for it. So the count, the limit and the result
    /// are the same on any number of cores.
    counted: bool,
}

/// A candidate ready to run: the scenario its file parses into, and the hash of that text.
struct Candidate {
    index: usize,
    key: u64,
    scenario: Scenario,
}

impl<'a> Search<'a> {
    fn new(
        options: SimOptions,
        failing: Failing,
        threads: usize,
        best: Scenario,
        progress: &'a (dyn Fn(&Step) + Sync),
    ) -> Search<'a> {
        Search {
            options,
            failing,
            threads: threads.max(1),
            best,
            failure: String::new(),
            simulations: 0,
            exhausted: false,
            tried: HashMap::new(),
            last_failure: None,
            progress,
        }
    }

    /// Phase 1: ddmin over the faults.
    fn faults(&mut self) -> Result<(), SimError> {
        let all = self.best.faults.clone();
        let base = self.best.clone();
        let with = |kept: &[usize]| Scenario { faults: kept.iter().map(|&i| all[i].clone()).collect(), ..base.clone() };
        let mut error = None;
        let kept = ddmin(all.len(), &mut |count, subset| {
            if error.is_some() {
                return None;
            }
            match self.first_failing(Phase::Faults, count, &|i| Some(with(&subset(i)))) {
                Ok(found) => found,
                Err(e) => {
                    error = Some(e);
                    None
                }
            }
        });
        // Each subset ddmin kept was a failing candidate, which became the best; its last is the
        // result (or the faults as they were, when it kept them all).
        debug_assert!(error.is_some() || kept.len() == all.len() || self.best.faults.len() == kept.len());
        error.map_or(Ok(()), Err)
    }

    /// Phase 2: each fault that ends, ended as early as still fails (binary search over
    /// [`WINDOW_STEP_MS`] steps; the start stays).
    fn windows(&mut self) -> Result<(), SimError> {
        for i in 0..self.best.faults.len() {
            let (at, Some(end)) = (self.best.faults[i].at_ms, self.best.faults[i].end_ms()) else { continue };
            let end_at = |step: u64| at.saturating_add(step.saturating_mul(WINDOW_STEP_MS)).min(end);
            // The smallest failing step is in lo..=hi; step `hi` ends where the fault ends now.
            let (mut lo, mut hi) = (1, end.saturating_sub(at).div_ceil(WINDOW_STEP_MS));
            while lo < hi && !self.exhausted {
                let mid = lo + (hi - lo) / 2;
                let shorter = ended_at(&self.best, i, end_at(mid));
                match self.first_failing(Phase::Windows, 1, &|_| Some(shorter.clone()))? {
                    Some(_) => hi = mid,
                    None => lo = mid + 1,
                }
            }
        }
        Ok(())
    }

    /// Phase 3a: each group's node count, halved or lowered by one while that still fails.
    fn nodes(&mut self) -> Result<(), SimError> {
        for g in 0..self.best.groups.len() {
            let group = GroupId(g as u32);
            while !self.exhausted {
                let counts = lower(self.best.groups[g].count);
                let base = self.best.clone();
                let fewer = |i: usize| fewer_nodes(&base, group, counts[i]);
                if self.first_failing(Phase::Nodes, counts.len(), &fewer)?.is_none() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Phase 3b: each task entry's count, halved or lowered by one while that still fails.
    fn tasks(&mut self) -> Result<(), SimError> {
        for t in 0..self.best.workload.tasks.len() {
            while !self.exhausted {
                let counts = lower(self.best.workload.tasks[t].count);
                let base = self.best.clone();
                let fewer = |i: usize| {
                    let mut s = base.clone();
                    s.workload.tasks[t].count = counts[i];
                    Some(s)
                };
                if self.first_failing(Phase::Tasks, counts.len(), &fewer)?.is_none() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The result: the smallest failing case and its failure.
    fn finish(self, seed: u64, before: Size) -> Shrunk {
        Shrunk {
            after: Size::of(&self.best),
            scenario: self.best,
            seed,
            failing: self.failing,
            failure: self.failure,
            before,
            simulations: self.simulations,
            stopped_early: self.exhausted,
        }
    }

    /// The first of `count` candidates, in order, that still fails the same way, which becomes
    /// the best so far; its index, or `None` when none does. `candidate(i)` makes the
    /// i-th, or `None` when there is none. Candidates are made one at a time and run
    /// [`Search::threads`] at once; a candidate that does not parse, or was tried before, does
    /// not run.
    fn first_failing(
        &mut self,
        phase: Phase,
        count: usize,
        candidate: &dyn Fn(usize) -> Option<Scenario>,
    ) -> Result<Option<usize>, SimError> {
        let mut batch: Vec<Candidate> = Vec::new();
        for index in 0..count {
            if self.exhausted {
                break;
            }
            let Some((key, scenario)) = candidate(index).and_then(|c| through_file(&c)) else { continue };
            match self.tried.get(&key).map(|t| (t.failure.clone(), t.counted)) {
                Some((failure, counted)) => {
                    // The candidates before it come first, as one by one.
                    if let Some(earlier) = self.run(phase, &mut batch)? {
                        return Ok(Some(earlier));
                    }
                    if !counted {
                        if self.simulations >= SIMULATIONS_MAX {
                            self.exhausted = true;
                            break;
                        }
                        self.simulations += 1;
                        if let Some(tried) = self.tried.get_mut(&key) {
                            tried.counted = true;
                        }
                    }
                    let Some(failure) = failure else { continue };
                    self.best = scenario;
                    self.failure = failure;
                    return Ok(Some(index));
                }
                None if batch.iter().any(|c| c.key == key) => continue,
                None => batch.push(Candidate { index, key, scenario }),
            }
            if batch.len() >= self.threads
                && let Some(found) = self.run(phase, &mut batch)?
            {
                return Ok(Some(found));
            }
        }
        self.run(phase, &mut batch)
    }

    /// Runs the batch (as much of it as the limit allows) at once, empties it, and returns the
    /// index of its first candidate, in order, that still fails the same way, which becomes the
    /// best so far.
    fn run(&mut self, phase: Phase, batch: &mut Vec<Candidate>) -> Result<Option<usize>, SimError> {
        let room = SIMULATIONS_MAX.saturating_sub(self.simulations);
        if (batch.len() as u64) > room {
            batch.truncate(room as usize);
            self.exhausted = true;
        }
        if batch.is_empty() {
            return Ok(None);
        }
        let options = &self.options;
        let reports: Vec<Result<Report, SimError>> = std::thread::scope(|scope| {
            let runs: Vec<_> = batch.iter().map(|c| scope.spawn(|| simulate(&c.scenario, options))).collect();
            // A run that panicked failed an assertion of the core or the shell: so does this.
            runs.into_iter().map(|run| run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        let mut found = None;
        for (candidate, report) in batch.drain(..).zip(reports) {
            // Up to the first failing candidate, as if run one by one ([`Tried::counted`]).
            let counted = found.is_none();
            self.simulations += u64::from(counted);
            let report = match report {
                Ok(report) => report,
                Err(SimError::Stopped) => return Err(SimError::Stopped),
                // What simulation needs cannot go missing by shrinking; if it does, skip it.
                Err(SimError::Missing(_)) => {
                    self.tried.insert(candidate.key, Tried { failure: None, counted });
                    continue;
                }
            };
            let failure = report.failure().unwrap_or_default();
            let fails = self.failing.holds_in(&report);
            self.tried.insert(candidate.key, Tried { failure: fails.then(|| failure.clone()), counted });
            if !fails {
                self.last_failure = report.failure();
            } else if found.is_none() {
                found = Some(candidate.index);
                self.best = candidate.scenario;
                self.failure = failure;
            }
        }
        (self.progress)(&Step { phase, simulations: self.simulations, size: Size::of(&self.best) });
        if self.options.watch.as_ref().is_some_and(Watch::stopped) {
            return Err(SimError::Stopped);
        }
        Ok(found)
    }
}

/// The scenario `candidate`'s file parses into, with a hash of the file's text; `None` when
/// the parser refuses it.
fn through_file(candidate: &Scenario) -> Option<(u64, Scenario)> {
    let text = scenario::to_json(candidate);
    let parsed = scenario::parse(text.as_bytes()).ok()?;
    Some((key(&text), parsed))
}

/// A hash of a candidate's file text, to know it again. 64 bits: with at most
/// [`SIMULATIONS_MAX`] candidates, two texts sharing one is about one chance in 10^13.
fn key(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Lower counts to try, in order: half, then one less (once, when they are the same).
fn lower(count: u32) -> Vec<u32> {
    let mut counts = vec![count / 2, count.saturating_sub(1)];
    counts.retain(|&c| c >= 1 && c < count);
    counts.dedup();
    counts
}

/// `scenario` with fault `i` ending at `end_ms`.
fn ended_at(scenario: &Scenario, i: usize, end_ms: u64) -> Scenario {
    let mut s = scenario.clone();
    if let Some(fault) = s.faults.get_mut(i) {
        match &mut fault.kind {
            FaultKind::Partition { heal_at_ms: end, .. }
            | FaultKind::Kill { restart_at_ms: end, .. }
            | FaultKind::PacketLoss { until_ms: end, .. }
            | FaultKind::Latency { until_ms: end, .. }
            | FaultKind::Clog { until_ms: end, .. }
            | FaultKind::Pause { until_ms: end, .. } => *end = Some(end_ms),
        }
    }
    s
}

/// `scenario` with group `group` cut to its first `count` nodes: the others leave every fault
/// and reservation that names them. A fault left naming no node (a partition side left with
/// none) is dropped; a reservation left with none makes no candidate (`None`).
fn fewer_nodes(scenario: &Scenario, group: GroupId, count: u32) -> Option<Scenario> {
    let mut s = scenario.clone();
    s.groups.get_mut(group.0 as usize)?.count = count;
    let gone = |set: &mut NodeSet| {
        let had = !set.is_empty();
        set.nodes.retain(|n| n.group != group || n.index <= count);
        had && set.is_empty()
    };
    s.faults.retain_mut(|fault| match &mut fault.kind {
        FaultKind::Partition { sides, .. } => !sides.iter_mut().any(|side| gone(&mut side.nodes)),
        FaultKind::Kill { nodes, .. }
        | FaultKind::PacketLoss { nodes, .. }
        | FaultKind::Latency { nodes, .. }
        | FaultKind::Clog { nodes, .. }
        | FaultKind::Pause { nodes, .. } => !gone(nodes),
    });
    for reservation in &mut s.reservations {
        if gone(&mut reservation.nodes) {
            return None;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `first_failing` for [`ddmin`] over a predicate of subsets, counting the subsets tried.
    fn oracle<'a>(
        fails: &'a dyn Fn(&[usize]) -> bool,
        tried: &'a mut u64,
    ) -> impl FnMut(usize, &Subsets<'_>) -> Option<usize> + 'a {
        move |count, candidate| {
            (0..count).find(|&i| {
                *tried += 1;
                fails(&candidate(i))
            })
        }
    }

    fn one_minimal(found: &[usize], fails: &dyn Fn(&[usize]) -> bool) -> bool {
        (0..found.len()).all(|skip| {
            let fewer: Vec<usize> = found.iter().enumerate().filter(|&(k, _)| k != skip).map(|(_, &i)| i).collect();
            !fails(&fewer)
        })
    }

    #[test]
    fn ddmin_finds_the_items_a_failure_needs_and_nothing_else() {
        let fails = |s: &[usize]| [3, 11, 17].iter().all(|i| s.contains(i));
        let mut tried = 0;
        let found = ddmin(40, &mut oracle(&fails, &mut tried));
        assert_eq!(found, [3, 11, 17]);
        assert!(tried < 200, "ddmin is far from trying every subset: {tried}");
    }

    #[test]
    fn ddmin_is_one_minimal_when_several_subsets_fail() {
        // Any two of 1, 5, 9 and 30 fail together; so does 20 with 21 with 22.
        let fails = |s: &[usize]| {
            [1, 5, 9, 30].iter().filter(|i| s.contains(i)).count() >= 2 || [20, 21, 22].iter().all(|i| s.contains(i))
        };
        let mut tried = 0;
        let found = ddmin(32, &mut oracle(&fails, &mut tried));
        assert!(fails(&found) && one_minimal(&found, &fails), "{found:?}");
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn ddmin_of_a_failure_that_needs_nothing_is_empty() {
        let mut tried = 0;
        assert_eq!(ddmin(7, &mut oracle(&|_| true, &mut tried)), Vec::<usize>::new());
        assert_eq!(tried, 1);
        let mut tried = 0;
        assert_eq!(ddmin(1, &mut oracle(&|s| s == [0], &mut tried)), [0]);
    }

    #[test]
    fn lower_counts_halve_then_step_down() {
        assert_eq!(lower(35), [17, 34]);
        assert_eq!(lower(2), [1]);
        assert_eq!(lower(1), Vec::<u32>::new());
    }

    /// Six nodes, twelve short tasks; a kill that takes tasks away from a node makes
    /// `max_reassignments: 0` fail, whatever else happens; the other faults are noise.
    const NOISY: &str = r#"{ "name": "noisy", "description": "a kill among noise", "duration_s": 120,
      "cluster": { "groups": [ { "name": "a", "count": 4, "resources": { "cpu_millis": 1000, "memory_mb": 512 } },
                               { "name": "b", "count": 2, "resources": { "cpu_millis": 1000, "memory_mb": 512 } } ] },
      "workload": { "tasks": [ { "name": "t", "count": 12, "kind": "command", "requires": { "cpu_millis": 500 },
                                 "sim": { "duration_ms": { "mean": 20000, "stddev": 1000 } } } ] },
      "faults": [
        { "at_s": 1, "type": "latency", "min_ms": 1, "max_ms": 5, "until_s": 30 },
        { "at_s": 2, "type": "clog", "nodes": ["b-2"], "direction": "in", "until_s": 2.5 },
        { "at_s": 5, "type": "kill", "nodes": ["a-2"], "restart_at_s": 60 },
        { "at_s": 6, "type": "packet_loss", "rate": 0.01, "groups": ["b"], "until_s": 40 } ],
      "expect": { "max_reassignments": 0 } }"#;

    fn noisy() -> Scenario {
        scenario::parse(NOISY.as_bytes()).expect("valid")
    }

    #[test]
    fn shrinking_keeps_the_kill_and_drops_the_noise_and_is_the_same_on_any_number_of_threads() {
        let options = SimOptions { seed: 1, ..SimOptions::default() };
        let shrunk = |threads| match shrink_on(&noisy(), &options, threads, &|_| {}) {
            Ok(Outcome::Shrunk(shrunk)) => shrunk,
            other => panic!("{other:?}"),
        };
        let (one, three) = (shrunk(1), shrunk(3));
        assert_eq!(one.scenario, three.scenario);
        assert_eq!((&one.failing, &one.failure), (&three.failing, &three.failure));
        assert_eq!(one.simulations, three.simulations, "counted as if run one by one");
        assert_eq!(one.failing, Failing::Expectation("max_reassignments".to_owned()));
        assert!(
            matches!(&one.scenario.faults[..], [Fault { kind: FaultKind::Kill { .. }, .. }]),
            "{:?}",
            one.scenario.faults
        );
        assert_eq!(one.before, Size { faults: 4, nodes: 6, tasks: 12, fault_ms: 29_000 + 500 + 55_000 + 34_000 });
        assert!(one.after.nodes < 6 && one.after.tasks < 12 && one.after.fault_ms < 55_000, "{:?}", one.after);
        assert!(!one.stopped_early && one.simulations < 200, "{one:?}");
        // What was written replays: the same seed fails the same expectation.
        let replayed = scenario::parse(scenario::to_json(&one.scenario).as_bytes()).expect("parses");
        assert!(one.failing.holds_in(&simulate(&replayed, &options).expect("runs")));
    }

    #[test]
    fn a_liveness_failure_must_stay_late_in_the_same_conditions() {
        use dtest_core::report::{Convergence, Recovery, Violation};
        let report = |late: Condition| {
            let condition =
                |c| Convergence { condition: c, recovered_after_ms: (c != late).then_some(1_000), pending: Vec::new() };
            Report {
                violations: vec![Violation { at_ms: 1, invariant: Invariant::Liveness, what: String::new() }],
                recovery: Some(Recovery {
                    quiet_from_ms: 0,
                    bound_ms: 5_000,
                    converged: false,
                    conditions: vec![condition(Condition::TasksEnded), condition(Condition::NodesAlive)],
                }),
                ..Report::default()
            }
        };
        let nodes = Failing::of(&report(Condition::NodesAlive)).expect("fails");
        assert_eq!(nodes, Failing::Liveness(vec![Condition::NodesAlive]));
        assert!(nodes.holds_in(&report(Condition::NodesAlive)));
        assert!(!nodes.holds_in(&report(Condition::TasksEnded)), "the work no longer fitting is another failure");
        assert_eq!(nodes.to_string(), "invariant liveness (nodes alive late)");
    }

    #[test]
    fn a_passing_seed_has_nothing_to_shrink() {
        let mut quiet = noisy();
        quiet.faults.clear();
        let options = SimOptions { seed: 1, ..SimOptions::default() };
        assert_eq!(shrink_on(&quiet, &options, 2, &|_| {}), Ok(Outcome::Passes));
    }

    #[test]
    fn a_node_that_leaves_takes_the_faults_naming_only_it_along() {
        let s = noisy();
        let fewer = fewer_nodes(&s, GroupId(1), 1).expect("no reservation");
        assert_eq!(fewer.groups[1].count, 1);
        // The clog of b-2 named no other node; the packet loss names group b, which stays.
        assert_eq!(fewer.faults.len(), 3);
        assert!(fewer.faults.iter().all(|f| !matches!(f.kind, FaultKind::Clog { .. })));
        // Packet loss and latency on no node would mean every node: dropped, never widened.
        let mut named = s.clone();
        named.faults[0] = Fault {
            at_ms: 1_000,
            kind: FaultKind::Latency {
                min_ms: 1,
                max_ms: 2,
                nodes: NodeSet {
                    groups: Vec::new(),
                    nodes: vec![dtest_core::scenario::NodeRef { group: GroupId(0), index: 4 }],
                },
                until_ms: None,
            },
        };
        let fewer = fewer_nodes(&named, GroupId(0), 3).expect("no reservation");
        assert!(fewer.faults.iter().all(|f| !matches!(f.kind, FaultKind::Latency { .. })), "{:?}", fewer.faults);
    }
}
