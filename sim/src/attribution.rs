//! Which fault dimensions go with failures in a swarm sweep. Each swarm seed draws its own fault
//! mix ([`crate::sweep::swarm_scenario`]), so a sweep is an experiment: comparing the seeds that
//! drew, say, a permanent kill with those that did not tells which kind of fault the failures
//! come with, before anyone replays a seed. Each dimension's difference is tested with Fisher's
//! exact test (two-sided), which is exact for the small counts of a few failing seeds, where a
//! chi-squared test misleads.
//!
//! Everything here is counted from [`SeedOutcome`]s alone (their [`Mix`] and violated
//! invariants), so merged shards attribute exactly as one machine does.

use std::fmt::Write as _;
use std::sync::OnceLock;

use dtest_core::report::Invariant;
use dtest_core::scenario::{Fault, FaultKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sweep::SeedOutcome;

/// A difference is significant below this p-value.
pub const SIGNIFICANCE: f64 = 0.05;

/// A kind of fault a swarm seed may draw: what attribution counts seeds by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// A partition cut both ways.
    Partition,
    /// A partition that drops only traffic from its side outwards.
    OneWayPartition,
    /// Nodes killed and restarted later as new incarnations.
    KillRestarted,
    /// Nodes killed for good.
    KillPermanent,
    /// Messages dropped at random.
    PacketLoss,
    /// Messages delayed.
    Latency,
    /// Nodes' links dropping everything.
    Clog,
}

impl Dimension {
    /// Every dimension, in the order tables list them.
    pub const ALL: [Dimension; 7] = [
        Dimension::Partition,
        Dimension::OneWayPartition,
        Dimension::KillRestarted,
        Dimension::KillPermanent,
        Dimension::PacketLoss,
        Dimension::Latency,
        Dimension::Clog,
    ];

    /// Its name, as summaries and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Partition => "partition",
            Dimension::OneWayPartition => "one_way_partition",
            Dimension::KillRestarted => "kill_restarted",
            Dimension::KillPermanent => "kill_permanent",
            Dimension::PacketLoss => "packet_loss",
            Dimension::Latency => "latency",
            Dimension::Clog => "clog",
        }
    }

    /// The dimension of a fault; none for pauses, which swarm seeds do not draw.
    pub fn of(kind: &FaultKind) -> Option<Dimension> {
        Some(match kind {
            FaultKind::Partition { oneway: false, .. } => Dimension::Partition,
            FaultKind::Partition { oneway: true, .. } => Dimension::OneWayPartition,
            FaultKind::Kill { restart_at_ms: Some(_), .. } => Dimension::KillRestarted,
            FaultKind::Kill { restart_at_ms: None, .. } => Dimension::KillPermanent,
            FaultKind::PacketLoss { .. } => Dimension::PacketLoss,
            FaultKind::Latency { .. } => Dimension::Latency,
            FaultKind::Clog { .. } => Dimension::Clog,
            FaultKind::Pause { .. } => return None,
        })
    }

    /// Its bit in a [`Mix`].
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The dimensions of a seed's fault mix, as a set: one byte per seed, so a sweep of a million
/// seeds keeps every seed's mix cheaply. Serialized as the list of its dimensions' names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mix(u8);

impl Mix {
    /// The dimensions of `faults`.
    pub fn of(faults: &[Fault]) -> Mix {
        faults.iter().filter_map(|f| Dimension::of(&f.kind)).fold(Mix::default(), Mix::with)
    }

    /// This mix and `dimension`.
    pub fn with(self, dimension: Dimension) -> Mix {
        Mix(self.0 | dimension.bit())
    }

    /// Whether the mix has `dimension`.
    pub fn contains(self, dimension: Dimension) -> bool {
        self.0 & dimension.bit() != 0
    }

    /// Its dimensions, in [`Dimension::ALL`]'s order.
    pub fn dimensions(self) -> impl Iterator<Item = Dimension> {
        Dimension::ALL.into_iter().filter(move |&d| self.contains(d))
    }
}

impl Serialize for Mix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.dimensions())
    }
}

impl<'de> Deserialize<'de> for Mix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mix, D::Error> {
        // At most one entry per dimension: a list cannot grow without bound.
        let names = BoundedDimensions::deserialize(deserializer)?;
        Ok(names.0.into_iter().fold(Mix::default(), Mix::with))
    }
}

/// A list of dimensions read from a file, refused past a few entries per dimension.
struct BoundedDimensions(Vec<Dimension>);

impl<'de> Deserialize<'de> for BoundedDimensions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<BoundedDimensions, D::Error> {
        /// Reads the sequence element by element, so that a long list stops early.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BoundedDimensions;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a list of at most {} fault dimensions", Dimension::ALL.len())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedDimensions, A::Error> {
                let mut dimensions = Vec::new();
                while let Some(d) = seq.next_element::<Dimension>()? {
                    if dimensions.len() == Dimension::ALL.len() {
                        return Err(serde::de::Error::invalid_length(dimensions.len() + 1, &self));
                    }
                    dimensions.push(d);
                }
                Ok(BoundedDimensions(dimensions))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// Seeds of one side of a comparison (with a dimension, or without it) and how many of them
/// failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Seeds.
    pub seeds: u64,
    /// Of which failed (in an invariant's table: violated that invariant).
    pub failed: u64,
}

impl Group {
    /// The share of seeds that failed; none without seeds.
    pub fn rate(self) -> Option<f64> {
        (self.seeds > 0).then(|| self.failed as f64 / self.seeds as f64)
    }
}

/// How failures differ between the seeds with a dimension and those without.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Association {
    /// The dimension.
    pub dimension: Dimension,
    /// Seeds whose mix had it.
    pub with: Group,
    /// Seeds whose mix had not.
    pub without: Group,
    /// Two-sided p-value of Fisher's exact test of the 2×2 table.
    pub p_value: f64,
    /// `p_value` adjusted by Holm's method over the table's dimensions: seven tests at once
    /// would otherwise show a chance association in about one table in three.
    pub p_adjusted: f64,
    /// Whether `p_adjusted` is below [`SIGNIFICANCE`].
    pub significant: bool,
}

impl Association {
    /// The association of `dimension` from the two groups.
    fn of(dimension: Dimension, with: Group, without: Group) -> Association {
        let p_value =
            fisher_exact([[with.failed, with.seeds - with.failed], [without.failed, without.seeds - without.failed]]);
        Association { dimension, with, without, p_value, p_adjusted: p_value, significant: p_value < SIGNIFICANCE }
    }

    /// The failure rate with the dimension minus the rate without; none unless both sides have
    /// seeds.
    pub fn excess(&self) -> Option<f64> {
        Some(self.with.rate()? - self.without.rate()?)
    }
}

/// The associations for one invariant: which dimensions go with seeds violating it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InvariantAttribution {
    /// The invariant.
    pub invariant: Invariant,
    /// Seeds that violated it.
    pub failed: u64,
    /// Per dimension, the rate of violating it with and without.
    pub dimensions: Vec<Association>,
}

/// Which fault dimensions go with failures, over a swarm sweep's seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attribution {
    /// Seeds counted (those with a mix).
    pub seeds: u64,
    /// Of which failed.
    pub failed: u64,
    /// Per dimension, in [`Dimension::ALL`]'s order.
    pub dimensions: Vec<Association>,
    /// Per invariant violated at least once, in [`Invariant::ALL`]'s order.
    pub invariants: Vec<InvariantAttribution>,
    /// The dimension most associated with failure: the highest failure rate with it minus
    /// without it, among the significant ones where that is positive.
    pub stands_out: Option<Dimension>,
}

/// Fault dimensions, and invariants, counted.
const DIMENSIONS: usize = Dimension::ALL.len();
const INVARIANTS: usize = Invariant::ALL.len();

/// Counts of seeds by dimension, as outcomes are added.
#[derive(Default)]
struct Tally {
    all: Group,
    with: [Group; DIMENSIONS],
    /// Per invariant: seeds that violated it, in all and per dimension.
    violated: [u64; INVARIANTS],
    violated_with: [[u64; DIMENSIONS]; INVARIANTS],
}

impl Tally {
    fn add(&mut self, mix: Mix, passed: bool, invariants: &[Invariant]) {
        let failed = u64::from(!passed);
        self.all.seeds += 1;
        self.all.failed += failed;
        for d in mix.dimensions() {
            self.with[d as usize].seeds += 1;
            self.with[d as usize].failed += failed;
        }
        let mut seen = [false; INVARIANTS];
        for &invariant in invariants {
            let i = invariant_index(invariant);
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            self.violated[i] += 1;
            for d in mix.dimensions() {
                self.violated_with[i][d as usize] += 1;
            }
        }
    }

    /// The associations of every dimension, where `failed_all` seeds failed in all and
    /// `failed_with[d]` of those with dimension `d`.
    fn associations(&self, failed_all: u64, failed_with: &[u64; DIMENSIONS]) -> Vec<Association> {
        let mut rows: Vec<Association> = Dimension::ALL
            .iter()
            .map(|&d| {
                let with = Group { seeds: self.with[d as usize].seeds, failed: failed_with[d as usize] };
                let without = Group { seeds: self.all.seeds - with.seeds, failed: failed_all - with.failed };
                Association::of(d, with, without)
            })
            .collect();
        holm(&mut rows);
        rows
    }

    fn attribution(&self) -> Attribution {
        let failed_with: [u64; DIMENSIONS] = std::array::from_fn(|d| self.with[d].failed);
        let dimensions = self.associations(self.all.failed, &failed_with);
        let invariants = Invariant::ALL
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.violated[i] > 0)
            .map(|(i, &invariant)| InvariantAttribution {
                invariant,
                failed: self.violated[i],
                dimensions: self.associations(self.violated[i], &self.violated_with[i]),
            })
            .collect();
        let stands_out = stands_out(&dimensions);
        Attribution { seeds: self.all.seeds, failed: self.all.failed, dimensions, invariants, stands_out }
    }
}

/// Holm's step-down adjustment of the rows' p-values, as one family of tests: the k-th smallest
/// (from 0) times the tests not yet passed, never below the one before, at most 1.
fn holm(rows: &mut [Association]) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[a].p_value.total_cmp(&rows[b].p_value).then(a.cmp(&b)));
    let mut floor = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        let adjusted = (rows[i].p_value * (rows.len() - k) as f64).min(1.0).max(floor);
        floor = adjusted;
        rows[i].p_adjusted = adjusted;
        rows[i].significant = adjusted < SIGNIFICANCE;
    }
}

/// The index of an invariant in [`Invariant::ALL`].
fn invariant_index(invariant: Invariant) -> usize {
    Invariant::ALL.iter().position(|&i| i == invariant).unwrap_or(0)
}

/// The significant dimension with the highest positive excess failure rate; the first in
/// [`Dimension::ALL`]'s order on a tie.
fn stands_out(dimensions: &[Association]) -> Option<Dimension> {
    let mut best: Option<(f64, Dimension)> = None;
    for a in dimensions.iter().filter(|a| a.significant) {
        let Some(excess) = a.excess().filter(|&e| e > 0.0) else { continue };
        if best.is_none_or(|(b, _)| excess > b) {
            best = Some((excess, a.dimension));
        }
    }
    best.map(|(_, d)| d)
}

impl Attribution {
    /// The attribution of `outcomes`; none unless one has a mix (a swarm sweep's).
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a SeedOutcome>) -> Option<Attribution> {
        let mut tally = Tally::default();
        for o in outcomes {
            if let Some(mix) = o.mix {
                tally.add(mix, o.passed, &o.invariants);
            }
        }
        (tally.all.seeds > 0).then(|| tally.attribution())
    }

    /// The tables for people: per dimension, then per invariant violated, then the dimension
    /// that stands out.
    pub fn text(&self) -> String {
        let mut out = format!("fault dimensions of the {} seeds' mixes against failure:\n", self.seeds);
        table(&mut out, "failed", &self.dimensions);
        for i in &self.invariants {
            let _ = writeln!(out, "invariant {} ({} seeds violated it):", i.invariant.name(), i.failed);
            table(&mut out, "violated", &i.dimensions);
        }
        out.push_str("  with, without: seeds whose mix had the dimension, and those whose mix had not;\n");
        out.push_str("  failed, violated: the share of those seeds that failed (that violated the invariant);\n");
        out.push_str("  p: Fisher's exact test, two-sided, Holm-adjusted over the table's dimensions;\n");
        out.push_str("  * significant: adjusted p < 0.05, the rates with and without differ beyond chance\n");
        out.push_str(&self.verdict());
        out
    }

    /// The line naming the dimension most associated with failure.
    fn verdict(&self) -> String {
        let Some(a) = self.stands_out.and_then(|d| self.dimensions.iter().find(|a| a.dimension == d)) else {
            return "no dimension stands out: none goes with significantly more failures\n".to_owned();
        };
        format!(
            "most associated with failure: {} ({} of seeds with it failed, {} without; p = {})\n",
            a.dimension.name(),
            percent(a.with.rate()),
            percent(a.without.rate()),
            p_text(a.p_adjusted)
        )
    }
}

/// One table of associations, `failed` naming what the rates count.
fn table(out: &mut String, failed: &str, rows: &[Association]) {
    let _ =
        writeln!(out, "  {:<18} {:>7} {:>9} {:>8} {:>9} {:>9}", "dimension", "with", failed, "without", failed, "p");
    for a in rows {
        let _ = writeln!(
            out,
            "  {:<18} {:>7} {:>9} {:>8} {:>9} {:>9}{}",
            a.dimension.name(),
            a.with.seeds,
            percent(a.with.rate()),
            a.without.seeds,
            percent(a.without.rate()),
            p_text(a.p_adjusted),
            if a.significant { " *" } else { "" }
        );
    }
}

/// A rate as a percentage, `-` when there is none.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// A p-value: fixed-point down to 0.0001, then in scientific notation.
fn p_text(p: f64) -> String {
    if p >= 1e-4 { format!("{p:.4}") } else { format!("{p:.1e}") }
}

/// Log-factorials below this are summed once into a table; above, Stirling's series is exact to
/// the last bits of an f64.
const LN_FACTORIAL_TABLE: usize = 1024;

/// ln(n!).
pub fn ln_factorial(n: u64) -> f64 {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = Vec::with_capacity(LN_FACTORIAL_TABLE);
        let mut sum = 0.0;
        table.push(0.0);
        for k in 1..LN_FACTORIAL_TABLE {
            sum += (k as f64).ln();
            table.push(sum);
        }
        table
    });
    if let Some(&v) = usize::try_from(n).ok().and_then(|i| table.get(i)) {
        return v;
    }
    let n = n as f64;
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    (n + 0.5) * n.ln() - n + 0.5 * ln_2pi + 1.0 / (12.0 * n) - 1.0 / (360.0 * n * n * n)
}

/// ln of n choose k, for k <= n.
fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// Tables this much likelier than the observed one (in log) still count as "as extreme": ties
/// that rounding parted, as R's `fisher.test` allows.
const TIES: f64 = 1e-7;
/// Tables this much less likely than the observed one (in log, e^-40) add nothing an f64 keeps.
const NEGLIGIBLE: f64 = 40.0;

/// The two-sided p-value of Fisher's exact test of the 2×2 table `[[a, b], [c, d]]`: the
/// probability, with the table's margins fixed, of a table no likelier than this one. Computed
/// from log-factorials, walking out from the most likely table and stopping where tables become
/// negligible, so it costs about the square root of the seeds however large the sweep.
pub fn fisher_exact(table: [[u64; 2]; 2]) -> f64 {
    let [[a, b], [c, d]] = table;
    let (row, column, n) = (a + b, a + c, a + b + c + d);
    if n == 0 {
        return 1.0;
    }
    let ln_total = ln_choose(n, column);
    let ln_p = |x: u64| ln_choose(row, x) + ln_choose(n - row, column - x) - ln_total;
    let observed = ln_p(a);
    let (low, high) = (column.saturating_sub(n - row), row.min(column));
    let mode = (((row as u128 + 1) * (column as u128 + 1) / (n as u128 + 2)) as u64).clamp(low, high);
    let mut p = 0.0;
    let mut add = |x: u64| {
        let l = ln_p(x);
        if l <= observed + TIES {
            p += l.exp();
        }
        l < observed - NEGLIGIBLE
    };
    for x in mode..=high {
        if add(x) {
            break;
        }
    }
    for x in (low..mode).rev() {
        if add(x) {
            break;
        }
    }
    p.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_adjusts_step_down_and_keeps_the_order() {
        let mut rows: Vec<Association> = [0.01, 0.04, 0.03, 0.005]
            .iter()
            .zip(Dimension::ALL)
            .map(|(&p, d)| {
                let group = Group { seeds: 1, failed: 0 };
                Association { p_value: p, ..Association::of(d, group, group) }
            })
            .collect();
        holm(&mut rows);
        let adjusted: Vec<f64> = rows.iter().map(|a| (a.p_adjusted * 1e6).round() / 1e6).collect();
        // Sorted 0.005 x4, 0.01 x3, 0.03 x2, 0.04 x1 (raised to the one before).
        assert_eq!(adjusted, [0.03, 0.06, 0.06, 0.02]);
        assert_eq!(rows.iter().map(|a| a.significant).collect::<Vec<_>>(), [true, false, false, true]);
    }

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= relative * expected.abs()
    }

    #[test]
    fn fisher_s_test_gives_the_known_p_values() {
        // Fisher's lady tasting tea: 3 of 4 cups right each way.
        let tea = fisher_exact([[3, 1], [1, 3]]);
        assert!(close(tea, 34.0 / 70.0, 1e-12), "{tea}");
        assert_eq!(format!("{tea:.4}"), "0.4857");
        // R: fisher.test(matrix(c(1, 11, 9, 3), 2))$p.value = 0.002759456
        assert!(close(fisher_exact([[1, 9], [11, 3]]), 0.002_759_456, 1e-6));
        // A perfect split of 20: 2 / C(20, 10).
        assert!(close(fisher_exact([[10, 0], [0, 10]]), 2.0 / 184_756.0, 1e-10));
        // No difference at all, and empty margins.
        assert!(close(fisher_exact([[5, 5], [5, 5]]), 1.0, 1e-12));
        assert_eq!(fisher_exact([[0, 0], [0, 0]]), 1.0);
        assert_eq!(fisher_exact([[0, 7], [0, 9]]), 1.0);
        assert_eq!(fisher_exact([[3, 4], [0, 0]]), 1.0);
        // Symmetric in rows and columns.
        assert_eq!(fisher_exact([[2, 7], [8, 2]]), fisher_exact([[8, 2], [2, 7]]));
        assert!(close(fisher_exact([[2, 7], [8, 2]]), fisher_exact([[2, 8], [7, 2]]), 1e-12));
    }

    #[test]
    fn fisher_s_test_of_large_sweeps_matches_the_sum_over_every_table() {
        // Past the log-factorial table (Stirling), and a strong association: the walk that
        // stops at negligible tables agrees with summing every one.
        let brute = |[[a, b], [c, d]]: [[u64; 2]; 2]| {
            let (row, column, n) = (a + b, a + c, a + b + c + d);
            let ln_p = |x: u64| ln_choose(row, x) + ln_choose(n - row, column - x) - ln_choose(n, column);
            let observed = ln_p(a);
            (column.saturating_sub(n - row)..=row.min(column))
                .map(ln_p)
                .filter(|&l| l <= observed + TIES)
                .map(f64::exp)
                .sum::<f64>()
                .min(1.0)
        };
        for table in [[[40, 960], [10, 990]], [[300, 700], [250, 750]], [[12, 3000], [0, 2500]], [[2, 1], [1, 3000]]] {
            let (walked, summed) = (fisher_exact(table), brute(table));
            assert!(close(walked, summed, 1e-9), "{table:?}: {walked} against {summed}");
        }
        // Stirling meets the summed table where they join.
        let summed: f64 = (1..=2000u64).map(|k| (k as f64).ln()).sum();
        assert!(close(ln_factorial(2000), summed, 1e-13));
        assert_eq!(ln_factorial(0), 0.0);
        assert!(close(ln_factorial(5), 120f64.ln(), 1e-15));
    }

    fn outcome(seed: u64, mix: &[Dimension], invariants: &[Invariant]) -> SeedOutcome {
        SeedOutcome {
            seed,
            passed: invariants.is_empty(),
            reason: None,
            failed: Vec::new(),
            faults: Vec::new(),
            mix: Some(mix.iter().fold(Mix::default(), |m, &d| m.with(d))),
            invariants: invariants.to_vec(),
        }
    }

    /// 60 seeds: those with a permanent kill fail often (stale results), the rest rarely;
    /// latency is everywhere but has nothing to do with it.
    fn synthetic() -> Vec<SeedOutcome> {
        use Dimension::*;
        (0..60u64)
            .map(|seed| {
                let mut mix = vec![Latency];
                let killed = seed % 3 == 0;
                if killed {
                    mix.push(KillPermanent);
                }
                if seed % 2 == 0 {
                    mix.push(Clog);
                }
                let fails = if killed { seed % 4 != 1 } else { seed == 7 };
                let invariants: &[Invariant] = match (fails, seed == 7) {
                    (false, _) => &[],
                    (true, true) => &[Invariant::Liveness],
                    (true, false) => &[Invariant::StaleResult, Invariant::StaleResult],
                };
                outcome(seed, &mix, invariants)
            })
            .collect()
    }

    #[test]
    fn attribution_names_the_dimension_failures_go_with() {
        let outcomes = synthetic();
        let a = Attribution::of(&outcomes).expect("swarm outcomes");
        assert_eq!((a.seeds, a.failed), (60, 16));
        let row = |d: Dimension| a.dimensions[d as usize];
        let kill = row(Dimension::KillPermanent);
        assert_eq!((kill.with, kill.without), (Group { seeds: 20, failed: 15 }, Group { seeds: 40, failed: 1 }));
        assert!(kill.significant && kill.p_value < 1e-6, "{kill:?}");
        // Every seed has latency: nothing to compare it with.
        let latency = row(Dimension::Latency);
        assert_eq!((latency.without.seeds, latency.p_value, latency.significant), (0, 1.0, false));
        assert!(!row(Dimension::Clog).significant, "{:?}", row(Dimension::Clog));
        assert_eq!(row(Dimension::Partition).with.seeds, 0);
        assert_eq!(a.stands_out, Some(Dimension::KillPermanent));
        // Per invariant: a stale result counted once per seed, with the kill; liveness once.
        let names: Vec<&str> = a.invariants.iter().map(|i| i.invariant.name()).collect();
        assert_eq!(names, ["stale_result", "liveness"]);
        let stale = &a.invariants[0];
        assert_eq!(stale.failed, 15);
        assert_eq!(stale.dimensions[Dimension::KillPermanent as usize].with, Group { seeds: 20, failed: 15 });
        assert_eq!(stale.dimensions[Dimension::KillPermanent as usize].without, Group { seeds: 40, failed: 0 });
        let text = a.text();
        assert!(text.contains("invariant stale_result (15 seeds violated it):"), "{text}");
        assert!(
            text.contains("most associated with failure: kill_permanent (75.0% of seeds with it failed, 2.5% without;"),
            "{text}"
        );
        let kill_line = text.lines().find(|l| l.trim_start().starts_with("kill_permanent")).expect("a row");
        assert!(kill_line.ends_with(" *"), "{kill_line}");
    }

    #[test]
    fn nothing_stands_out_without_a_significant_excess_and_sweeps_without_mixes_attribute_nothing() {
        let even: Vec<SeedOutcome> = (0..20u64)
            .map(|seed| {
                let mix: &[Dimension] = if seed % 2 == 0 { &[Dimension::Clog] } else { &[] };
                outcome(seed, mix, if seed % 5 == 0 { &[Invariant::Liveness] } else { &[] })
            })
            .collect();
        let a = Attribution::of(&even).expect("swarm outcomes");
        assert_eq!(a.stands_out, None);
        assert!(a.text().ends_with("no dimension stands out: none goes with significantly more failures\n"));
        let plain = SeedOutcome { mix: None, ..outcome(1, &[], &[]) };
        assert_eq!(Attribution::of([&plain]), None);
    }

    #[test]
    fn a_mix_reads_back_from_its_names_and_refuses_what_is_not_one() {
        use serde::de::IntoDeserializer;
        type Error = serde::de::value::Error;
        let read = |names: Vec<&str>| Mix::deserialize(names.into_deserializer()).map_err(|e: Error| e.to_string());
        let mix = Mix::default().with(Dimension::OneWayPartition).with(Dimension::KillPermanent);
        assert_eq!(read(vec!["kill_permanent", "one_way_partition"]), Ok(mix));
        assert_eq!(mix.dimensions().collect::<Vec<_>>(), [Dimension::OneWayPartition, Dimension::KillPermanent]);
        let names: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(read(names.clone()), Ok(Dimension::ALL.into_iter().fold(Mix::default(), Mix::with)));
        assert!(read(vec!["pause"]).is_err_and(|e| e.contains("unknown variant")));
        assert!(read([names.as_slice(), &["clog"]].concat()).is_err_and(|e| e.contains("at most 7")));
    }
}
