//! Many seeds at once: sweeps over a range of seeds on every core, and swarm testing, where each
//! seed draws its own fault mix within the scenario's bounds (as TigerBeetle's VOPR does), so a
//! sweep explores partitions, kills, loss, latency and clogs the scenario's author did not write.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dtest_core::scenario::{ClogDirection, Fault, FaultKind, GroupId, NodeRef, NodeSet, Scenario, Side};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::{SimError, SimOptions, Watch, simulate};

/// Faults of a swarm seed happen in the first part of the run only, so that the rest shows
/// whether everything recovers (liveness).
const SWARM_FAULTS_FRACTION: f64 = 0.6;

/// The outcome of one seed of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Whether every expectation and invariant held.
    pub passed: bool,
    /// Why not: the first violation or failed expectation.
    pub reason: Option<String>,
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

    /// A summary for people: counts, then the first `shown` failing seeds, each with the command
    /// that replays it. `replay` is the command line without `--seed`.
    pub fn summary(&self, replay: &str, shown: usize) -> String {
        let failing: Vec<&SeedOutcome> = self.failing().collect();
        let mut out = format!(
            "{} seeds: {} passed, {} failed\n",
            self.outcomes.len(),
            self.outcomes.len() - failing.len(),
            failing.len()
        );
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
}

/// Seeds `A..B` (A up to B-1), as `--seeds` takes them; `None` unless A < B.
pub fn parse_seeds(text: &str) -> Option<std::ops::Range<u64>> {
    let (a, b) = text.split_once("..")?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < b).then_some(a..b)
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
    crate::world::simulable(scenario)?;
    let stopped = || options.watch.as_ref().is_some_and(Watch::stopped);
    let next = AtomicU64::new(seeds.start);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end || stopped() {
                        break;
                    }
                    let outcome = run_seed(scenario, &SimOptions { seed, ..options.clone() });
                    progress(&outcome);
                    outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
                }
            });
        }
    });
    if stopped() {
        return Err(SimError::Stopped);
    }
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|o| o.seed);
    Ok(Sweep { outcomes })
}

/// One seed of a sweep: `options.seed`, judged as the report judges it.
pub fn run_seed(scenario: &Scenario, options: &SimOptions) -> SeedOutcome {
    let seed = options.seed;
    match simulate(scenario, options) {
        Ok(report) => SeedOutcome { seed, passed: report.passed(), reason: report.failure() },
        Err(e) => SeedOutcome { seed, passed: false, reason: Some(e.to_string()) },
    }
}

/// The scenario with its faults replaced by a mix drawn from `seed`: partitions, kills (most
/// restarted), packet loss, latency and clogs, all within the first 60% of the run and ended by
/// then, so the rest of the run checks recovery. A swarm seed is judged by the invariants only
/// (no task lost or counted twice, no stale result counted, no over-commit, every task ended
/// after the faults, kills noticed in time), not by expectations written for the authored faults.
pub fn swarm_scenario(scenario: &Scenario, seed: u64) -> Scenario {
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
    Scenario { faults, ..scenario.clone() }
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
