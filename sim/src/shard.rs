//! Sweeps across machines: each machine runs one [`Shard`] of a sweep and writes a
//! [`ResultFile`] (`dtest sim FILE --seeds A..B --shard I/N --out FILE`); [`merge`] checks that
//! the files are the shards of one sweep, all of them, each once, and combines them into the
//! summary a one-machine sweep prints (`dtest sim merge FILES...`).
//!
//! A result file names the scenario by its file's path, name and SHA-256, and holds the sweep's
//! settings (seeds, shard, swarm, strategy, dtest's version) and every seed's outcome, in order:
//! in a swarm sweep with the dimensions of every seed's fault mix and the invariants each failing
//! seed violated, so that the merge attributes failures ([`crate::attribution`]) as one machine
//! does.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::sweep::{SeedOutcome, Shard};

/// The `format` of a result file this dtest writes and reads. Version 2 added every swarm seed's
/// `mix` and failing seeds' `invariants`; a version 1 file lacks what attribution needs.
pub const FORMAT: &str = "dtest-sweep-result/2";
/// A shard holds at most this many seeds (a sweep is split into enough shards to keep to it).
pub const SHARD_SEEDS_MAX: u64 = 1_000_000;
/// A result file is read up to this many bytes.
pub const RESULT_FILE_BYTES_MAX: u64 = 256 << 20;

/// The scenario a sweep ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The file as given on the command line: replays name it.
    pub path: String,
    /// The scenario's `name`.
    pub name: String,
    /// The SHA-256 of the file's bytes, in hex: shards of one sweep ran the same file.
    pub sha256: String,
}

/// Seeds `start..end` (end excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeds {
    /// The first seed.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

impl Seeds {
    /// As a range.
    pub fn range(self) -> Range<u64> {
        self.start..self.end
    }
}

impl fmt::Display for Seeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// What one shard of a sweep found: what `--out` writes for a sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultFile {
    /// [`FORMAT`].
    pub format: String,
    /// The version of dtest that ran it: shards of one sweep ran the same simulator.
    pub dtest: String,
    /// The scenario.
    pub scenario: ScenarioFile,
    /// The whole sweep's seeds.
    pub seeds: Seeds,
    /// Which shard of them this is.
    pub shard: Shard,
    /// Whether each seed drew its own fault mix.
    pub swarm: bool,
    /// The distribution strategy that overrode the scenario's, if one did.
    pub strategy: Option<String>,
    /// Test-only: the sweep ran the known broken core (`--break-fencing`), so its replays must.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_fencing: bool,
    /// Seeds that passed.
    pub passed: u64,
    /// Seeds that failed.
    pub failed: u64,
    /// Every seed of the shard, in order.
    pub outcomes: Vec<SeedOutcome>,
}

/// What a sweep ran, apart from its seeds: shards that differ in it are not of one sweep.
fn settings(file: &ResultFile) -> (&str, &Seeds, u64, bool, Option<&str>, bool) {
    (&file.dtest, &file.seeds, file.shard.count, file.swarm, file.strategy.as_deref(), file.break_fencing)
}

/// The shards of one sweep, combined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The scenario (the path of the first file's).
    pub scenario: ScenarioFile,
    /// The sweep's seeds.
    pub seeds: Seeds,
    /// Into how many shards it was split.
    pub shards: u64,
    /// Whether each seed drew its own fault mix.
    pub swarm: bool,
    /// The strategy override.
    pub strategy: Option<String>,
    /// Whether the sweep ran the known broken core.
    pub break_fencing: bool,
    /// Every seed's outcome, in order: attribution compares the failing seeds with the rest.
    pub outcomes: Vec<SeedOutcome>,
}

impl Merged {
    /// How many seeds the sweep ran.
    pub fn total(&self) -> u64 {
        self.seeds.end - self.seeds.start
    }

    /// The seeds that failed, in order.
    pub fn failing(&self) -> impl Iterator<Item = &SeedOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }

    /// What a one-machine sweep of the same seeds prints ([`crate::sweep::Sweep::summary`]).
    pub fn summary(&self, replay: &str, shown: usize) -> String {
        crate::sweep::summary(&self.outcomes, replay, shown)
    }
}

/// Why result files do not merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeError {
    /// A file is not a result file of this dtest, or contradicts itself.
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// Two files ran different scenarios.
    OtherScenario {
        /// The first file.
        first: String,
        /// The one that differs.
        file: String,
        /// Its scenario.
        theirs: Box<ScenarioFile>,
        /// The first file's scenario.
        ours: Box<ScenarioFile>,
    },
    /// Two files are of sweeps with different settings.
    OtherSweep {
        /// The first file.
        first: String,
        /// The one that differs.
        file: String,
        /// How.
        problem: String,
    },
    /// Two files hold the same shard.
    Overlap {
        /// The shard.
        shard: Shard,
        /// Both files.
        files: [String; 2],
    },
    /// Shards are missing; each with how many seeds it has and its first ones.
    Missing {
        /// The sweep's seeds.
        seeds: Seeds,
        /// The shards missing.
        shards: Vec<Shard>,
    },
}

/// Missing shards listed in an error.
const MISSING_LISTED_MAX: usize = 10;
/// Seeds listed of each missing shard.
const SEEDS_LISTED_MAX: usize = 5;

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::Malformed { file, problem } => write!(f, "{file}: {problem}"),
            MergeError::OtherScenario { first, file, theirs, ours } => write!(
                f,
                "{file} is a sweep of another scenario than {first}: {} ({}, sha256 {}) against {} ({}, sha256 {})",
                theirs.path, theirs.name, theirs.sha256, ours.path, ours.name, ours.sha256
            ),
            MergeError::OtherSweep { first, file, problem } => {
                write!(f, "{file} is not of the same sweep as {first}: {problem}")
            }
            MergeError::Overlap { shard, files: [a, b] } => write!(f, "shard {shard} is in both {a} and {b}"),
            MergeError::Missing { seeds, shards } => {
                let missing: u64 = shards.iter().map(|s| s.len(&seeds.range())).sum();
                write!(f, "{} of {} shards missing ({missing} seeds of {seeds}):", shards.len(), shards[0].count)?;
                for shard in shards.iter().take(MISSING_LISTED_MAX) {
                    let first: Vec<String> =
                        shard.seeds(seeds.range()).take(SEEDS_LISTED_MAX).map(|s| s.to_string()).collect();
                    let len = shard.len(&seeds.range());
                    let more = if len > SEEDS_LISTED_MAX as u64 { ", …" } else { "" };
                    write!(f, "\n  shard {shard}: seeds {}{more} ({len} seeds)", first.join(", "))?;
                }
                if shards.len() > MISSING_LISTED_MAX {
                    write!(f, "\n  and {} more shards", shards.len() - MISSING_LISTED_MAX)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for MergeError {}

/// Checks that `file` is a result file of this format and agrees with itself: a valid shard of
/// its seeds, holding exactly that shard's seeds in order, counted right.
pub fn check(label: &str, file: &ResultFile) -> Result<(), MergeError> {
    let malformed = |problem: String| MergeError::Malformed { file: label.to_owned(), problem };
    if file.format != FORMAT {
        return Err(malformed(format!("format {:?} is not {FORMAT:?}", file.format)));
    }
    let shard = file.shard;
    if shard.count == 0 || shard.index >= shard.count || shard.count > crate::sweep::SHARDS_MAX {
        return Err(malformed(format!(
            "shard {shard} is not one of 1 to {} shards, counted from 0",
            crate::sweep::SHARDS_MAX
        )));
    }
    if file.seeds.start >= file.seeds.end {
        return Err(malformed(format!("seeds {} is empty", file.seeds)));
    }
    let expected = shard.len(&file.seeds.range());
    if expected > SHARD_SEEDS_MAX {
        return Err(malformed(format!(
            "shard {shard} of {} has {expected} seeds; at most {SHARD_SEEDS_MAX}",
            file.seeds
        )));
    }
    if file.outcomes.len() as u64 != expected {
        return Err(malformed(format!(
            "shard {shard} of {} has {expected} seeds, but the file holds {} outcomes",
            file.seeds,
            file.outcomes.len()
        )));
    }
    if let Some((outcome, seed)) =
        file.outcomes.iter().zip(shard.seeds(file.seeds.range())).find(|(outcome, seed)| outcome.seed != *seed)
    {
        return Err(malformed(format!(
            "outcome of seed {} where shard {shard} of {} has seed {seed}",
            outcome.seed, file.seeds
        )));
    }
    if let Some(outcome) = file.outcomes.iter().find(|o| o.mix.is_some() != file.swarm) {
        let has = if file.swarm {
            "has no fault mix, though the sweep is a swarm"
        } else {
            "has a fault mix, though the sweep is not a swarm"
        };
        return Err(malformed(format!("seed {} {has}", outcome.seed)));
    }
    let failed = file.outcomes.iter().filter(|o| !o.passed).count() as u64;
    if (file.passed, file.failed) != (expected - failed, failed) {
        return Err(malformed(format!(
            "counts {} passed and {} failed, but the outcomes hold {} and {failed}",
            file.passed,
            file.failed,
            expected - failed
        )));
    }
    Ok(())
}

/// Merges the result files of one sweep (each with a label for messages): each is checked
/// ([`check`]), all must be of the same scenario (by hash) and settings, and together they must
/// hold every shard once.
pub fn merge(files: Vec<(String, ResultFile)>) -> Result<Merged, MergeError> {
    let Some((first_label, first)) = files.first() else {
        return Err(MergeError::Malformed { file: "(none)".to_owned(), problem: "no result files".to_owned() });
    };
    for (label, file) in &files {
        check(label, file)?;
        if file.scenario.sha256 != first.scenario.sha256 {
            return Err(MergeError::OtherScenario {
                first: first_label.clone(),
                file: label.clone(),
                theirs: Box::new(file.scenario.clone()),
                ours: Box::new(first.scenario.clone()),
            });
        }
        if settings(file) != settings(first) {
            let describe = |f: &ResultFile| {
                format!(
                    "dtest {}, seeds {} in {} shards{}{}{}",
                    f.dtest,
                    f.seeds,
                    f.shard.count,
                    if f.swarm { ", swarm" } else { "" },
                    f.strategy.as_deref().map_or_else(String::new, |s| format!(", strategy {s}")),
                    if f.break_fencing { ", broken fencing" } else { "" }
                )
            };
            return Err(MergeError::OtherSweep {
                first: first_label.clone(),
                file: label.clone(),
                problem: format!("{} against {}", describe(file), describe(first)),
            });
        }
    }
    let count = first.shard.count;
    let mut holder: Vec<Option<usize>> = vec![None; count as usize];
    for (i, (label, file)) in files.iter().enumerate() {
        let slot = &mut holder[file.shard.index as usize];
        if let Some(other) = *slot {
            return Err(MergeError::Overlap { shard: file.shard, files: [files[other].0.clone(), label.clone()] });
        }
        *slot = Some(i);
    }
    let missing: Vec<Shard> =
        (0..count).filter(|&index| holder[index as usize].is_none()).map(|index| Shard { index, count }).collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { seeds: first.seeds, shards: missing });
    }
    let (scenario, seeds, swarm, strategy) = (first.scenario.clone(), first.seeds, first.swarm, first.strategy.clone());
    let break_fencing = first.break_fencing;
    let mut outcomes: Vec<SeedOutcome> = files.into_iter().flat_map(|(_, file)| file.outcomes).collect();
    outcomes.sort_by_key(|o| o.seed);
    Ok(Merged { scenario, seeds, shards: count, swarm, strategy, break_fencing, outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Dimension, Mix};
    use crate::sweep::Sweep;
    use dtest_core::report::Invariant;

    /// The result file of `shard` of seeds 10..30, where seeds divisible by 7 failed.
    fn shard_file(shard: Shard) -> ResultFile {
        let seeds = Seeds { start: 10, end: 30 };
        let outcomes: Vec<SeedOutcome> = shard.seeds(seeds.range()).map(outcome).collect();
        let failed = outcomes.iter().filter(|o| !o.passed).count() as u64;
        ResultFile {
            format: FORMAT.to_owned(),
            dtest: "0.1.0".to_owned(),
            scenario: ScenarioFile {
                path: "scenarios/partition.json".to_owned(),
                name: "partition".to_owned(),
                sha256: "ab".repeat(32),
            },
            seeds,
            shard,
            swarm: true,
            strategy: None,
            break_fencing: false,
            passed: outcomes.len() as u64 - failed,
            failed,
            outcomes,
        }
    }

    /// Seeds divisible by 7 fail (a stale result); seeds divisible by 7 or 3 drew a permanent
    /// kill, and every other seed a clog.
    fn outcome(seed: u64) -> SeedOutcome {
        let passed = !seed.is_multiple_of(7);
        let mut mix = Mix::default();
        if seed.is_multiple_of(7) || seed.is_multiple_of(3) {
            mix = mix.with(Dimension::KillPermanent);
        }
        if seed.is_multiple_of(2) {
            mix = mix.with(Dimension::Clog);
        }
        SeedOutcome {
            seed,
            passed,
            reason: (!passed).then(|| format!("at 1.000 s: seed {seed} broke")),
            failed: if passed { Vec::new() } else { vec!["invariant: broke".to_owned()] },
            faults: Vec::new(),
            mix: Some(mix),
            invariants: if passed { Vec::new() } else { vec![Invariant::StaleResult] },
        }
    }

    fn shards(count: u64) -> Vec<(String, ResultFile)> {
        (0..count).map(|index| (format!("shard-{index}.json"), shard_file(Shard { index, count }))).collect()
    }

    #[test]
    fn shards_interleave_and_cover_the_range_once() {
        let seeds = 10..30;
        let mut all: Vec<u64> = (0..3).flat_map(|index| Shard { index, count: 3 }.seeds(seeds.clone())).collect();
        assert_eq!(Shard { index: 1, count: 3 }.seeds(seeds.clone()).collect::<Vec<_>>(), [11, 14, 17, 20, 23, 26, 29]);
        assert_eq!(Shard { index: 2, count: 3 }.len(&seeds), 6);
        all.sort_unstable();
        assert_eq!(all, seeds.clone().collect::<Vec<_>>());
        // More shards than seeds: the last ones are empty.
        assert_eq!(Shard { index: 25, count: 30 }.len(&seeds), 0);
        assert_eq!(Shard { index: 25, count: 30 }.seeds(seeds).count(), 0);
        assert_eq!(Shard::parse("2/3"), Some(Shard { index: 2, count: 3 }));
        for bad in ["3/3", "1/0", "-1/3", "1", "1/10001", "a/b"] {
            assert_eq!(Shard::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn merged_shards_summarise_as_one_sweep_of_the_same_seeds() {
        let merged = merge(shards(3)).expect("one sweep's shards");
        let whole = Sweep { outcomes: (10..30).map(outcome).collect() };
        let summary = merged.summary("dtest sim x.json", usize::MAX);
        assert_eq!(summary, whole.summary("dtest sim x.json", usize::MAX));
        assert_eq!(merged.failing().map(|o| o.seed).collect::<Vec<_>>(), [14, 21, 28]);
        // The attribution is of every seed, passing ones too.
        assert!(summary.contains("invariant stale_result (3 seeds violated it):"), "{summary}");
        let kill = summary.lines().find(|l| l.trim_start().starts_with("kill_permanent")).expect("a row");
        // 3 of 8 against 0 of 12 (p = 0.049 alone) is no association once adjusted for the
        // seven dimensions tested together.
        assert!(
            kill.contains(" 8 ") && kill.contains("37.5%") && kill.contains(" 12 ") && !kill.ends_with(" *"),
            "{kill}"
        );
    }

    #[test]
    fn merging_refuses_a_missing_shard_and_names_its_seeds() {
        let mut files = shards(3);
        files.remove(1);
        let error = merge(files).expect_err("shard 1 is missing");
        assert_eq!(
            error.to_string(),
            "1 of 3 shards missing (7 seeds of 10..30):\n  shard 1/3: seeds 11, 14, 17, 20, 23, … (7 seeds)"
        );
    }

    #[test]
    fn merging_refuses_other_scenarios_sweeps_overlaps_and_files_that_contradict_themselves() {
        let mut files = shards(2);
        files[1].1.scenario.sha256 = "cd".repeat(32);
        assert!(matches!(merge(files), Err(MergeError::OtherScenario { .. })));
        let mut files = shards(2);
        files[1].1.swarm = false;
        files[1].1.outcomes.iter_mut().for_each(|o| o.mix = None);
        let error = merge(files).expect_err("not one sweep").to_string();
        assert!(error.contains("shard-1.json is not of the same sweep as shard-0.json"), "{error}");
        let mut files = shards(2);
        files.push(("again.json".to_owned(), shard_file(Shard { index: 1, count: 2 })));
        assert_eq!(merge(files).expect_err("twice").to_string(), "shard 1/2 is in both shard-1.json and again.json");
        let mut files = shards(2);
        files[0].1.outcomes.pop();
        let error = merge(files).expect_err("a seed short").to_string();
        assert!(error.starts_with("shard-0.json: shard 0/2 of 10..30 has 10 seeds, but the file holds 9"), "{error}");
        let mut files = shards(2);
        files[0].1.outcomes[3].seed += 1;
        assert!(merge(files).expect_err("another seed").to_string().contains("outcome of seed 17 where"));
        let mut files = shards(2);
        files[0].1.passed += 1;
        assert!(merge(files).expect_err("miscounted").to_string().contains("counts"));
        let mut files = shards(2);
        files[0].1.format = "other/1".to_owned();
        assert!(merge(files).expect_err("another format").to_string().contains("format \"other/1\""));
        let mut files = shards(2);
        files[1].1.outcomes[2].mix = None;
        let error = merge(files).expect_err("a swarm seed without its mix").to_string();
        assert!(error.contains("seed 15 has no fault mix, though the sweep is a swarm"), "{error}");
        let mut files = shards(2);
        files[1].1.break_fencing = true;
        let error = merge(files).expect_err("another core").to_string();
        assert!(error.contains("broken fencing against"), "{error}");
    }
}
