//! Health scores: a 0–100 number and a state per node from its heartbeat phi and its metrics,
//! with anti-flapping, and the cluster's health as an aggregate.
//!
//! The score is a weighted mean of six parts, each 0–100:
//!
//! | part | weight | 100 when | 0 when |
//! | --- | --- | --- | --- |
//! | heartbeat | 40 | phi ≤ 1 | phi at the detector's threshold |
//! | cpu, memory | 15 each | use ≤ 80% | use at 100% |
//! | disk | 10 | use ≤ 80% | use at 100% |
//! | network | 5 | use ≤ 80% | use at 100% |
//! | task errors | 15 | no failed attempts | half the recent attempts failed |
//!
//! (linear in between). A score of 70 or more is `healthy`, 40 or more `degraded`, less
//! `unhealthy`; a node whose phi reaches the threshold is `dead` at once, since phi already
//! weighs the evidence. Other changes take effect only after several consecutive evaluations
//! agree, as Consul's `failures_before_critical` and `success_before_passing` do: by default 3
//! to get worse and 2 to get better, so one bad sample does not move work off a node.

use super::phi::{PhiAccrual, PhiConfig};

/// A node's health state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthState {
    /// Score 70 or more.
    #[default]
    Healthy,
    /// Score 40 to 69: still takes work.
    Degraded,
    /// Score below 40: takes no new work.
    Unhealthy,
    /// Heartbeats stopped (phi at the threshold).
    Dead,
}

/// What a node reports with its heartbeat; fractions from 0 to 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// CPU in use.
    pub cpu: f64,
    /// Memory in use.
    pub memory: f64,
    /// Disk in use.
    pub disk: f64,
    /// Network bandwidth in use.
    pub network: f64,
    /// Failed task attempts over finished ones, recently.
    pub task_error_rate: f64,
}

/// Score thresholds and anti-flapping counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthConfig {
    /// Lowest score that is `healthy`.
    pub healthy_from: u8,
    /// Lowest score that is `degraded`.
    pub degraded_from: u8,
    /// Consecutive worse evaluations before the state gets worse.
    pub failures_before_worse: u32,
    /// Consecutive better evaluations before the state gets better.
    pub successes_before_better: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { healthy_from: 70, degraded_from: 40, failures_before_worse: 3, successes_before_better: 2 }
    }
}

/// The score (0–100) of a node with heartbeat `phi` (threshold `phi_threshold`) and `metrics`.
pub fn score(phi: f64, phi_threshold: f64, metrics: &Metrics) -> u8 {
    let heartbeat = 1.0 - ((phi - 1.0) / (phi_threshold - 1.0).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    let usage = |used: f64| 1.0 - ((used - 0.8) / 0.2).clamp(0.0, 1.0);
    let errors = 1.0 - (metrics.task_error_rate / 0.5).clamp(0.0, 1.0);
    let weighted = 40.0 * heartbeat
        + 15.0 * usage(metrics.cpu)
        + 15.0 * usage(metrics.memory)
        + 10.0 * usage(metrics.disk)
        + 5.0 * usage(metrics.network)
        + 15.0 * errors;
    // NaN metrics (a broken reporter) count as the worst case rather than poisoning the score.
    if weighted.is_nan() { 0 } else { weighted.round().clamp(0.0, 100.0) as u8 }
}

/// One node's health: its failure detector, last metrics, score and debounced state.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    config: HealthConfig,
    detector: PhiAccrual,
    threshold: f64,
    metrics: Metrics,
    score: u8,
    state: HealthState,
    /// The state the evaluations lean towards, and how many in a row have.
    leaning: HealthState,
    streak: u32,
}

impl NodeHealth {
    /// A node not heard from yet, taken as healthy.
    pub fn new(phi: PhiConfig, config: HealthConfig) -> NodeHealth {
        let threshold = phi.threshold;
        NodeHealth {
            config,
            detector: PhiAccrual::new(phi),
            threshold,
            metrics: Metrics::default(),
            score: 100,
            state: HealthState::Healthy,
            leaning: HealthState::Healthy,
            streak: 0,
        }
    }

    /// A heartbeat with metrics arrived at `now_ms`; returns the state after it.
    pub fn heartbeat(&mut self, now_ms: u64, metrics: Metrics) -> HealthState {
        self.detector.heartbeat(now_ms);
        self.metrics = metrics;
        self.evaluate(now_ms)
    }

    /// Re-evaluates at `now_ms` (a timer tick with no heartbeat); returns the state.
    pub fn evaluate(&mut self, now_ms: u64) -> HealthState {
        let phi = self.detector.phi(now_ms);
        self.score = score(phi, self.threshold, &self.metrics);
        let observed = if phi >= self.threshold {
            HealthState::Dead
        } else if self.score >= self.config.healthy_from {
            HealthState::Healthy
        } else if self.score >= self.config.degraded_from {
            HealthState::Degraded
        } else {
            HealthState::Unhealthy
        };
        if observed == HealthState::Dead {
            // Phi has already weighed the silence; debouncing it again would only delay detection.
            self.state = observed;
            self.leaning = observed;
            self.streak = 0;
            return self.state;
        }
        if observed == self.state {
            self.leaning = observed;
            self.streak = 0;
            return self.state;
        }
        if observed == self.leaning {
            self.streak += 1;
        } else {
            self.leaning = observed;
            self.streak = 1;
        }
        let needed =
            if observed > self.state { self.config.failures_before_worse } else { self.config.successes_before_better };
        if self.streak >= needed.max(1) {
            self.state = observed;
            self.streak = 0;
        }
        self.state
    }

    /// The last score.
    pub fn score(&self) -> u8 {
        self.score
    }

    /// The metrics of the last heartbeat.
    pub fn metrics(&self) -> Metrics {
        self.metrics
    }

    /// The debounced state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// When, without another heartbeat, the node will be dead (see
    /// [`PhiAccrual::suspect_at_ms`]).
    pub fn dead_at_ms(&self) -> Option<u64> {
        self.detector.suspect_at_ms()
    }

    /// The failure detector.
    pub fn detector(&self) -> &PhiAccrual {
        &self.detector
    }
}

/// The cluster's health at a glance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClusterHealth {
    /// Nodes in each state: healthy, degraded, unhealthy, dead.
    pub counts: [u32; 4],
    /// Mean score of the nodes that are not dead (0 when all are).
    pub mean_score: f64,
    /// Lowest score of the nodes that are not dead (0 when all are).
    pub min_score: u8,
    /// `unhealthy` when at least half the nodes are unhealthy or dead, `degraded` when any node
    /// is not healthy, else `healthy` (never `dead`).
    pub state: HealthState,
}

/// Aggregates node states and scores.
pub fn cluster_health<'a>(nodes: impl IntoIterator<Item = &'a NodeHealth>) -> ClusterHealth {
    let mut counts = [0u32; 4];
    let (mut sum, mut live, mut min) = (0u64, 0u32, u8::MAX);
    for node in nodes {
        counts[node.state() as usize] += 1;
        if node.state() != HealthState::Dead {
            sum += u64::from(node.score());
            live += 1;
            min = min.min(node.score());
        }
    }
    let total: u32 = counts.iter().sum();
    let bad = counts[HealthState::Unhealthy as usize] + counts[HealthState::Dead as usize];
    let state = if total > 0 && bad * 2 >= total {
        HealthState::Unhealthy
    } else if counts[HealthState::Healthy as usize] < total {
        HealthState::Degraded
    } else {
        HealthState::Healthy
    };
    ClusterHealth {
        counts,
        mean_score: if live == 0 { 0.0 } else { sum as f64 / f64::from(live) },
        min_score: if live == 0 { 0 } else { min },
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(cpu: f64) -> Metrics {
        Metrics { cpu, ..Metrics::default() }
    }

    #[test]
    fn the_score_weighs_each_part_as_documented() {
        assert_eq!(score(0.5, 8.0, &Metrics::default()), 100);
        assert_eq!(score(8.0, 8.0, &Metrics::default()), 60, "no heartbeat part left");
        assert_eq!(score(0.0, 8.0, &busy(1.0)), 85, "a saturated cpu costs its 15");
        assert_eq!(score(0.0, 8.0, &busy(0.9)), 93, "half of it at 90%");
        let all_bad = Metrics { cpu: 1.0, memory: 1.0, disk: 1.0, network: 1.0, task_error_rate: 0.5 };
        assert_eq!(score(9.0, 8.0, &all_bad), 0);
        assert_eq!(score(0.0, 8.0, &Metrics { cpu: f64::NAN, ..Metrics::default() }), 0);
    }

    #[test]
    fn states_change_only_after_consecutive_agreement() {
        let mut node = NodeHealth::new(PhiConfig::default(), HealthConfig::default());
        let overloaded = Metrics { cpu: 1.0, memory: 1.0, disk: 1.0, network: 1.0, task_error_rate: 0.0 };
        let mut now = 0;
        let mut beat = |node: &mut NodeHealth, m: Metrics| {
            now += 1_000;
            node.heartbeat(now, m)
        };
        assert_eq!(beat(&mut node, Metrics::default()), HealthState::Healthy);
        // Score 55: degraded, but only after three evaluations in a row.
        assert_eq!(beat(&mut node, overloaded), HealthState::Healthy);
        assert_eq!(beat(&mut node, overloaded), HealthState::Healthy);
        assert_eq!(node.score(), 55);
        assert_eq!(beat(&mut node, overloaded), HealthState::Degraded);
        // One good sample in between restarts the count: no flapping.
        assert_eq!(beat(&mut node, Metrics::default()), HealthState::Degraded);
        assert_eq!(beat(&mut node, overloaded), HealthState::Degraded);
        // Two good ones make it healthy again.
        assert_eq!(beat(&mut node, Metrics::default()), HealthState::Degraded);
        assert_eq!(beat(&mut node, Metrics::default()), HealthState::Healthy);
    }

    #[test]
    fn silence_makes_a_node_dead_at_once_and_a_heartbeat_revives_it_gradually() {
        let mut node = NodeHealth::new(PhiConfig::default(), HealthConfig::default());
        for i in 1..=10 {
            node.heartbeat(i * 1_000, Metrics::default());
        }
        assert_eq!(node.evaluate(10_000 + 4_000), HealthState::Healthy);
        assert_eq!(node.evaluate(10_000 + 4_600), HealthState::Dead, "phi crossed 8 at 4.52 s");
        assert_eq!(node.heartbeat(20_000, Metrics::default()), HealthState::Dead, "one heartbeat is not enough");
        assert_eq!(node.heartbeat(21_000, Metrics::default()), HealthState::Healthy);
    }

    #[test]
    fn cluster_health_aggregates_states_and_scores() {
        let mut nodes: Vec<NodeHealth> =
            (0..4).map(|_| NodeHealth::new(PhiConfig::default(), HealthConfig::default())).collect();
        for node in &mut nodes {
            node.heartbeat(1_000, Metrics::default());
        }
        assert_eq!(cluster_health(&nodes).state, HealthState::Healthy);
        nodes[0].evaluate(60_000);
        let c = cluster_health(&nodes);
        assert_eq!(c.counts, [3, 0, 0, 1]);
        assert_eq!(c.state, HealthState::Degraded);
        assert_eq!((c.mean_score, c.min_score), (100.0, 100));
        nodes[1].evaluate(60_000);
        assert_eq!(cluster_health(&nodes).state, HealthState::Unhealthy, "half the cluster is dead");
    }
}
