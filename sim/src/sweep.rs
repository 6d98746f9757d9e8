//! Many seeds at once: sweeps over a range of seeds on every core, and swarm testing, where each
//! seed draws its own fault mix within the scenario's bounds (as TigerBeetle's VOPR does), so a
//! sweep explores partitions, kills, loss, latency and clogs the scenario's author did not write.
//! A sweep can be split into shards ([`Shard`]) run on different machines; `shard` merges their
//! result files.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dtest_core::report::{Invariant, Report, listed};
use dtest_core::scenario::{ClogDirection, Fault, FaultKind, GroupId, NodeRef, NodeSet, Scenario, Side};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::attribution::{Attribution, Mix};
use crate::{SimError, SimOptions, Watch, simulate};

/// Faults of a swarm seed happen in the first part of the run only, so that the rest shows
/// whether everything recovers (liveness).
const SWARM_FAULTS_FRACTION: f64 = 0.6;

/// A failing seed lists at most this many failed expectations and violated invariants; more are
/// counted in a last entry.
pub const FAILED_LISTED_MAX: usize = 8;

/// The outcome of one seed of a sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Whether every expectation and invariant held.
    pub passed: bool,
    /// Why not: the first violation or failed expectation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every invariant violated (`invariant: WHAT`) and expectation failed (`expectation NAME`),
    /// the first [`FAILED_LISTED_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// In a swarm sweep, the fault mix the failing seed drew ([`describe_fault`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// In a swarm sweep, the dimensions of the fault mix every seed drew, passing or not: what
    /// [`Attribution`] compares failing seeds with passing ones by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Mix>,
    /// Each invariant the failing seed violated, once, in [`Invariant::ALL`]'s order: what
    /// attribution counts per invariant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants: Vec<Invariant>,
}

impl SeedOutcome {
    /// The outcome of `seed` whose run reported `report`.
    pub fn of(seed: u64, report: &Report) -> SeedOutcome {
        let passed = report.passed();
        let failed = if passed {
            Vec::new()
        } else {
            let violations = report.violations.iter().map(|v| format!("invariant: {}", v.what));
            let judged = if report.swarm { &[][..] } else { &report.expectations[..] };
            let expectations = judged.iter().filter(|e| !e.ok).map(|e| format!("expectation {}", e.name));
            listed(violations.chain(expectations).collect(), FAILED_LISTED_MAX)
        };
        let mut invariants: Vec<Invariant> = report.violations.iter().map(|v| v.invariant).collect();
        invariants.sort_unstable();
        invariants.dedup();
        SeedOutcome { seed, passed, reason: report.failure(), failed, faults: Vec::new(), mix: None, invariants }
    }

    /// The outcome of a seed whose run could not be judged: it failed for `reason`.
    fn unjudged(seed: u64, reason: String) -> SeedOutcome {
        SeedOutcome {
            seed,
            passed: false,
            reason: Some(reason),
            failed: Vec::new(),
            faults: Vec::new(),
            mix: None,
            invariants: Vec::new(),
        }
    }
}

/// The outcome of a sweep, seeds in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// Every seed's outcome.
    pub outcomes: Vec<SeedOutcome>,
}

impl Sweep {
    /// The seeds that failed.
    pub fn failing(&self) -> impl Iterator<Item = &SeedOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }

    /// A summary for people: counts, then in a swarm sweep with a failing seed the fault
    /// dimensions that go with failures ([`Attribution::text`]), then the first `shown` failing
    /// seeds, each with the command that replays it. `replay` is the command line without
    /// `--seed`.
    pub fn summary(&self, replay: &str, shown: usize) -> String {
        summary(&self.outcomes, replay, shown)
    }
}

/// [`Sweep::summary`] of a sweep whose seeds' outcomes are `outcomes`, in order.
pub fn summary(outcomes: &[SeedOutcome], replay: &str, shown: usize) -> String {
    let seeds = outcomes.len() as u64;
    let failing: Vec<&SeedOutcome> = outcomes.iter().filter(|o| !o.passed).collect();
    let mut out = format!("{} seeds: {} passed, {} failed\n", seeds, seeds - failing.len() as u64, failing.len());
    if let Some(attribution) = Attribution::of(outcomes).filter(|a| a.failed > 0) {
        out.push_str(&attribution.text());
    }
    for o in failing.iter().take(shown) {
        out.push_str(&format!(
            "  seed {}: {}\n    replay: {replay} --seed {}\n",
            o.seed,
            o.reason.as_deref().unwrap_or("failed"),
            o.seed
        ));
    }
    if failing.len() > shown {
        out.push_str(&format!("  and {} more failing seeds\n", failing.len() - shown));
    }
    out
}

/// Seeds `A..B` (A up to B-1), as `--seeds` takes them; `None` unless A < B.
pub fn parse_seeds(text: &str) -> Option<std::ops::Range<u64>> {
    let (a, b) = text.split_once("..")?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < b).then_some(a..b)
}

/// Sweeps split across machines have at most this many shards.
pub const SHARDS_MAX: u64 = 10_000;

/// One shard of a sweep over seeds `A..B`, as `--shard I/N` names it: the seeds `s` with
/// `(s - A) % N == I`, every `N`-th seed from `A + I`. Interleaved rather than contiguous, so
/// that every shard gets seeds from the whole range and shards take about as long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: u64,
    /// Of how many, at most [`SHARDS_MAX`].
    pub count: u64,
}

impl Shard {
    /// The whole sweep as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `I/N` with `I < N <= SHARDS_MAX`.
    pub fn parse(text: &str) -> Option<Shard> {
        let (i, n) = text.split_once('/')?;
        let (index, count): (u64, u64) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (index < count && count <= SHARDS_MAX).then_some(Shard { index, count })
    }

    /// This shard's seeds of `seeds`, in order.
    pub fn seeds(self, seeds: std::ops::Range<u64>) -> impl Iterator<Item = u64> {
        let step = usize::try_from(self.count).unwrap_or(usize::MAX);
        (seeds.start.saturating_add(self.index).min(seeds.end)..seeds.end).step_by(step)
    }

    /// How many seeds of `seeds` are this shard's.
    pub fn len(self, seeds: &std::ops::Range<u64>) -> u64 {
        let span = seeds.end.saturating_sub(seeds.start);
        span.saturating_sub(self.index).div_ceil(self.count)
    }

    /// The `k`-th of this shard's seeds of a range starting at `start`.
    fn nth(self, start: u64, k: u64) -> u64 {
        start + self.index + k * self.count
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Runs `seeds` on `threads` threads; `options.seed` is replaced by each seed (and with
/// `options.swarm` each seed runs its own fault mix). `progress` is called after each seed. A
/// stopped [`SimOptions::watch`] ends the sweep with [`SimError::Stopped`].
pub fn sweep(
    scenario: &Scenario,
    seeds: std::ops::Range<u64>,
    options: &SimOptions,
    threads: usize,
    progress: &(dyn Fn(&SeedOutcome) + Sync),
) -> Result<Sweep, SimError> {
    sweep_shard(scenario, seeds, Shard::WHOLE, options, threads, progress)
}

/// [`sweep`] of one shard of `seeds`: only its seeds run.
pub fn sweep_shard(
    scenario: &Scenario,
    seeds: std::ops::Range<u64>,
    shard: Shard,
    options: &SimOptions,
    threads: usize,
    progress: &(dyn Fn(&SeedOutcome) + Sync),
) -> Result<Sweep, SimError> {
    crate::world::simulable(scenario)?;
    let stopped = || options.watch.as_ref().is_some_and(Watch::stopped);
    let outcomes = in_parallel(shard.len(&seeds), threads, &stopped, &|k| {
        let seed = shard.nth(seeds.start, k);
        let outcome = run_seed(scenario, &SimOptions { seed, ..options.clone() });
        progress(&outcome);
        outcome
    });
    if stopped() {
        return Err(SimError::Stopped);
    }
    Ok(Sweep { outcomes })
}

/// `job(k)` for every `k` of `0..count`, on `threads` threads that each take the next `k` until
/// none is left or `stopped()`; the results in the order of `k` (a sweep's seeds, a comparison's
/// runs), so that they do not depend on the number of threads.
pub(crate) fn in_parallel<T: Send>(
    count: u64,
    threads: usize,
    stopped: &(dyn Fn() -> bool + Sync),
    job: &(dyn Fn(u64) -> T + Sync),
) -> Vec<T> {
    let next = AtomicU64::new(0);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= count || stopped() {
                        break;
                    }
                    let result = job(k);
                    done.lock().unwrap_or_else(|e| e.into_inner()).push((k, result));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|&(k, _)| k);
    done.into_iter().map(|(_, result)| result).collect()
}

/// One seed of a sweep: `options.seed`, judged as the report judges it; a swarm seed keeps the
/// dimensions of the fault mix it drew, and a failing one lists the faults. Drawing the mix
/// again costs a few random numbers, nothing beside the run itself.
pub fn run_seed(scenario: &Scenario, options: &SimOptions) -> SeedOutcome {
    let seed = options.seed;
    let mut outcome = match simulate(scenario, options) {
        Ok(report) => SeedOutcome::of(seed, &report),
        Err(e) => SeedOutcome::unjudged(seed, e.to_string()),
    };
    if options.swarm {
        let faults = swarm_faults(scenario, seed);
        outcome.mix = Some(Mix::of(&faults));
        if !outcome.passed {
            outcome.faults = faults.iter().map(|f| describe_fault(scenario, f)).collect();
        }
    }
    outcome
}

/// A fault in a line, as a failing swarm seed lists its mix: `at 12.000 s: kill eu-3, us-7,
/// restart at 40.000 s`.
pub fn describe_fault(scenario: &Scenario, fault: &Fault) -> String {
    let s = |ms: u64| format!("{:.3} s", ms as f64 / 1e3);
    let set = |set: &NodeSet| -> String {
        let names: Vec<String> = set
            .groups
            .iter()
            .map(|g| format!("group {}", scenario.groups[g.0 as usize].name))
            .chain(set.nodes.iter().map(|&n| scenario.node_id(n)))
            .collect();
        if names.is_empty() { "every node".to_owned() } else { names.join(", ") }
    };
    let until = |end: Option<u64>, word: &str| end.map_or_else(String::new, |end| format!(", {word} {}", s(end)));
    let what = match &fault.kind {
        FaultKind::Partition { sides, oneway, heal_at_ms } => {
            let sides: Vec<String> = sides
                .iter()
                .map(|side| format!("[{}{}]", set(&side.nodes), if side.orchestrator { " + orchestrator" } else { "" }))
                .collect();
            let oneway = if *oneway { " one way" } else { "" };
            format!("partition {} from the rest{oneway}{}", sides.join(" | "), until(*heal_at_ms, "healed at"))
        }
        FaultKind::Kill { nodes, restart_at_ms } => {
            format!("kill {}{}", set(nodes), until(*restart_at_ms, "restart at"))
        }
        FaultKind::PacketLoss { rate, nodes, until_ms } => {
            format!("packet loss {:.1}% on {}{}", rate * 100.0, set(nodes), until(*until_ms, "until"))
        }
        FaultKind::Latency { min_ms, max_ms, nodes, until_ms } => {
            format!("latency {min_ms}-{max_ms} ms on {}{}", set(nodes), until(*until_ms, "until"))
        }
        FaultKind::Clog { nodes, direction, until_ms } => {
            let direction = match direction {
                ClogDirection::Both => "both ways",
                ClogDirection::In => "inbound",
                ClogDirection::Out => "outbound",
            };
            format!("clog {} {direction}{}", set(nodes), until(*until_ms, "until"))
        }
        FaultKind::Pause { nodes, until_ms } => format!("pause {}{}", set(nodes), until(*until_ms, "until")),
    };
    format!("at {}: {what}", s(fault.at_ms))
}

/// The scenario with its faults replaced by a mix drawn from `seed`: partitions, kills (most
/// restarted), packet loss, latency and clogs, all within the first 60% of the scenario's
/// duration and ended by then. The run is then made longer by as much, so that after the faults
/// the liveness phase has as long as the whole scenario had: work the faults held up can still
/// finish, and a seed fails for a system that does not recover, not for a clock that ran out. A
/// swarm seed is judged by the invariants only (no task lost or counted twice, no stale result
/// counted, no over-commit, convergence after the faults, kills noticed in time), not by
/// expectations written for the authored faults.
pub fn swarm_scenario(scenario: &Scenario, seed: u64) -> Scenario {
    let horizon = ((scenario.duration_ms as f64) * SWARM_FAULTS_FRACTION) as u64;
    let duration_ms = scenario.duration_ms.saturating_add(horizon).min(dtest_core::limits::DURATION_MS_MAX);
    Scenario { faults: swarm_faults(scenario, seed), duration_ms, ..scenario.clone() }
}

/// The faults of [`swarm_scenario`], without copying the scenario: what a sweep draws again to
/// attribute its seeds' failures.
pub fn swarm_faults(scenario: &Scenario, seed: u64) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5357_4152_4d00_0000);
    let horizon = ((scenario.duration_ms as f64) * SWARM_FAULTS_FRACTION) as u64;
    let nodes: Vec<NodeRef> = scenario.nodes().collect();
    let mut draw = |n: u64| if n == 0 { 0 } else { rng.next_u64() % n };
    let mut faults = Vec::new();
    let window = |draw: &mut dyn FnMut(u64) -> u64, longest: u64| {
        let at = draw(horizon.saturating_sub(1_000).max(1));
        let length = 1_000 + draw(longest.saturating_sub(1_000).max(1));
        (at, (at + length).min(horizon))
    };
    let some_nodes = |draw: &mut dyn FnMut(u64) -> u64, most: u64| {
        let count = 1 + draw(most.min(nodes.len() as u64).max(1));
        let mut picked: Vec<NodeRef> = (0..count).map(|_| nodes[draw(nodes.len() as u64) as usize]).collect();
        picked.sort_unstable();
        picked.dedup();
        NodeSet { groups: Vec::new(), nodes: picked }
    };
    for _ in 0..draw(3) {
        let (at, heal) = window(&mut draw, 60_000);
        let side = if scenario.groups.len() > 1 && draw(2) == 0 {
            NodeSet { groups: vec![GroupId(draw(scenario.groups.len() as u64) as u32)], nodes: Vec::new() }
        } else {
            some_nodes(&mut draw, (nodes.len() as u64 / 4).max(1))
        };
        let sides = vec![Side { nodes: side, orchestrator: false }];
        faults.push(Fault {
            at_ms: at,
            kind: FaultKind::Partition { sides, oneway: draw(4) == 0, heal_at_ms: Some(heal) },
        });
    }
    for _ in 0..draw(4) {
        let (at, restart) = window(&mut draw, 60_000);
        let restart_at_ms = (draw(10) < 8).then_some(restart);
        let killed = some_nodes(&mut draw, 5);
        // A node left dead for good keeps its tasks' capacity out of reach; only restarted
        // kills when the scenario has a single node per group would otherwise be unfinishable.
        faults.push(Fault { at_ms: at, kind: FaultKind::Kill { nodes: killed, restart_at_ms } });
    }
    if draw(2) == 0 {
        let (at, until) = window(&mut draw, horizon);
        let rate = draw(300) as f64 / 1_000.0;
        faults.push(Fault {
            at_ms: at,
            kind: FaultKind::PacketLoss { rate, nodes: NodeSet::default(), until_ms: Some(until) },
        });
    }
    if draw(2) == 0 {
        let (at, until) = window(&mut draw, horizon);
        let min_ms = draw(10);
        let max_ms = min_ms + draw(200);
        faults.push(Fault {
            at_ms: at,
            kind: FaultKind::Latency { min_ms, max_ms, nodes: NodeSet::default(), until_ms: Some(until) },
        });
    }
    for _ in 0..draw(3) {
        let (at, until) = window(&mut draw, 20_000);
        let direction = [ClogDirection::Both, ClogDirection::In, ClogDirection::Out][draw(3) as usize];
        let clogged = some_nodes(&mut draw, 3);
        faults.push(Fault { at_ms: at, kind: FaultKind::Clog { nodes: clogged, direction, until_ms: Some(until) } });
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/node-failure.json")).expect("read");
        dtest_core::scenario::parse(&text).expect("valid")
    }

    #[test]
    fn swarm_faults_depend_on_the_seed_and_end_in_time() {
        let s = scenario();
        assert_eq!(swarm_scenario(&s, 3), swarm_scenario(&s, 3));
        let mixes: std::collections::BTreeSet<usize> =
            (0..50).map(|seed| swarm_scenario(&s, seed).faults.len()).collect();
        assert!(mixes.len() > 3, "seeds draw different mixes: {mixes:?}");
        let horizon = (s.duration_ms as f64 * SWARM_FAULTS_FRACTION) as u64;
        for seed in 0..200 {
            for fault in swarm_scenario(&s, seed).faults {
                let end = fault.end_ms();
                assert!(fault.at_ms < horizon && end.is_none_or(|e| e > fault.at_ms && e <= horizon), "{fault:?}");
            }
        }
    }

    #[test]
    fn a_sweep_catches_a_broken_core_and_names_the_seed_to_replay() {
        let s = scenario();
        let broken = SimOptions { break_fencing: true, swarm: true, ..SimOptions::default() };
        let sweep = sweep(&s, 0..40, &broken, 2, &|_| {}).expect("simulable");
        let failing: Vec<&SeedOutcome> = sweep.failing().collect();
        assert!(!failing.is_empty(), "fencing off must make some seed fail");
        assert!(
            failing
                .iter()
                .any(|o| o.reason.as_deref().is_some_and(|r| r.contains("stale result") || r.contains("second time"))),
            "{failing:?}"
        );
        let summary = sweep.summary("dtest sim scenarios/node-failure.json --swarm", usize::MAX);
        let first = failing[0].seed;
        assert!(
            summary.contains(&format!("replay: dtest sim scenarios/node-failure.json --swarm --seed {first}")),
            "{summary}"
        );
        // And the same seeds pass with the core intact.
        let sound = sweep_seeds(&s, &failing.iter().map(|o| o.seed).collect::<Vec<_>>());
        assert!(sound.iter().all(|o| o.passed), "{sound:?}");
    }

    #[test]
    fn a_seed_s_report_does_not_depend_on_what_ran_before_it() {
        // A sweep runs many seeds in one process; replaying one runs it alone. Nothing a run
        // leaves behind (tasks, global counters) may change the next one.
        let s = scenario();
        let report = |seed| {
            crate::simulate(&s, &SimOptions { seed, swarm: true, ..SimOptions::default() })
                .expect("simulable")
                .to_json()
        };
        let alone = report(5);
        let _ = (report(1), report(2));
        assert_eq!(report(5), alone);
    }

    fn sweep_seeds(s: &Scenario, seeds: &[u64]) -> Vec<SeedOutcome> {
        seeds.iter().map(|&seed| run_seed(s, &SimOptions { seed, swarm: true, ..SimOptions::default() })).collect()
    }
}
