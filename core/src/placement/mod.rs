//! Placement: which node runs each task, decided deterministically and fast.
//!
//! A placement is filter → choose. The filters are the same for every strategy: the node may
//! take work (healthy or degraded, not suspected or dead, circuit closed), offers every required
//! capability, and has the resources free, counting capacity reserved for other tasks in any
//! window the task could overlap. The [`Pool`] indexes nodes so that these filters skip full and
//! ineligible parts of the cluster wholesale.
//!
//! Then two settings of the scenario's `strategy` choose among the nodes that pass:
//! **`distribution`** decides *where* (one node, or a tier of equally suitable nodes) and
//! **`allocation`** decides *which node within a tier*, and is what the pool uses on its own
//! ([`Placer::allocate_any`]). Every tie goes to the lowest node index; randomness comes only from
//! the seeded ChaCha generator, so the same inputs and seed give the same placements.
//!
//! | distribution | a task goes to |
//! | --- | --- |
//! | `round_robin` | the next node in turn (after the last one used) that fits |
//! | `least_loaded` | the fitting node whose busiest resource is the least used (dominant share) |
//! | `random` | a random fitting node: a seeded random start, then the first node from there that fits |
//! | `capability` | the tier of nodes with the fewest capabilities the task does not need, so special nodes stay free for tasks that need them; `allocation` picks within |
//! | `locality` | the tier of nodes in the task's region and zone, else its region, else (unless `strict`) anywhere; a full or partitioned-away region falls to the next tier; `allocation` picks within |
//! | `weighted` | the best weighted sum of free resources after placement, health score, fewer running tasks and locality match |
//! | `adaptive` | one of the others, chosen per task by the rule in [`adaptive_choice`] |
//!
//! | allocation | within a tier, a task goes to |
//! | --- | --- |
//! | `first_fit` | the lowest-numbered node that fits |
//! | `best_fit` | the fitting node that is already most allocated, so work packs onto few nodes (bin-packing, Kubernetes' MostAllocated) |
//! | `balanced` | the node whose resources are most evenly used after placement (1 − standard deviation of the per-resource fractions, Kubernetes' BalancedAllocation) |
//! | `locality` | the lowest-numbered fitting node in the task's zone, else region, else anywhere |
//!
//! `balanced` and `weighted` score candidates: with more than [`SCORE_SAMPLE`] fitting nodes they
//! score that many, starting after where the previous search stopped, as Kubernetes scores a
//! sample of large clusters. Every other choice is exact.
//!
//! **Priorities and preemption.** A caller places pending tasks highest priority first. With
//! `strategy.preemption`, a task that fits nowhere may evict running tasks of strictly lower
//! priority ([`Pool::preemption_plan`]): on the node where the evicted work is of the lowest
//! priority and the fewest tasks. The evicted tasks are returned in [`Placement::Preempted`] for
//! the caller to requeue; the pool never drops one.

// Ranges of node indices are the unit of candidate sets here, so one-range lists are common.
#![allow(clippy::single_range_in_vec_init)]

mod pool;
mod resources;

use std::collections::BTreeMap;
use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

pub use pool::{
    AllocId, LoadOrder, Locality, NodeIdx, NodeSpec, NodeState, Pool, PoolError, Released, Request, Reservation,
    TaskKey, Utilization,
};
pub use resources::{Amounts, CapSet, Catalog, CatalogError, FIXED_RESOURCES, KINDS, PPM, dominant_share};

use crate::scenario::{Allocation, Distribution, Scenario, Weights};

/// Fitting nodes scored per placement by `balanced` and `weighted`.
pub const SCORE_SAMPLE: usize = 64;

/// What the caller has observed lately, for `adaptive`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observations {
    /// Failed attempts over finished attempts, recently (0 to 1).
    pub failure_rate: f64,
    /// Tasks waiting to be placed.
    pub queue_len: u64,
}

/// The outcome of placing one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Allocated on a node.
    Placed {
        /// Where.
        node: NodeIdx,
        /// The allocation, to release when the task ends.
        alloc: AllocId,
    },
    /// Allocated after evicting lower-priority tasks, which the caller must requeue.
    Preempted {
        /// Where.
        node: NodeIdx,
        /// The allocation.
        alloc: AllocId,
        /// The evicted allocations, already released.
        evicted: Vec<Released>,
    },
    /// Nowhere, for now.
    Unschedulable(Unschedulable),
}

/// Why a task could not be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unschedulable {
    /// No node, whatever its state, offers the capabilities and has the capacity.
    NeverFits,
    /// Some node could take it, but none of those may take work now (suspected, dead, open circuit).
    NoEligibleNode,
    /// Capable nodes are busy; it may fit later.
    Busy,
}

/// The decision of [`adaptive_choice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveChoice {
    /// Failures are frequent: `weighted`, with health weighing four times the rest.
    AvoidFailures,
    /// Load is uneven: `least_loaded`.
    Rebalance,
    /// The queue is long: `best_fit` over the whole cluster, to fit as much as possible.
    Pack,
    /// Nothing stands out: `least_loaded`.
    Spread,
}

/// Failure rate at or above which `adaptive` steers away from failing nodes.
pub const ADAPTIVE_FAILURE_RATE: f64 = 0.2;
/// Busiest node's load minus the mean load, in parts per million, at or above which `adaptive`
/// rebalances.
pub const ADAPTIVE_IMBALANCE_PPM: u32 = 250_000;
/// Queued tasks per node at or above which `adaptive` packs.
pub const ADAPTIVE_QUEUE_PER_NODE: u64 = 2;

/// The `adaptive` rule, first match wins: a failure rate of at least 20% → avoid failures
/// (`weighted`, health ×4); else the busiest node at least 25 points above the mean load →
/// rebalance (`least_loaded`); else at least 2 queued tasks per node → pack (`best_fit`);
/// else spread (`least_loaded`).
pub fn adaptive_choice(observed: &Observations, load_mean_ppm: u32, load_max_ppm: u32, nodes: usize) -> AdaptiveChoice {
    if observed.failure_rate >= ADAPTIVE_FAILURE_RATE {
        AdaptiveChoice::AvoidFailures
    } else if load_max_ppm.saturating_sub(load_mean_ppm) >= ADAPTIVE_IMBALANCE_PPM {
        AdaptiveChoice::Rebalance
    } else if observed.queue_len >= ADAPTIVE_QUEUE_PER_NODE * nodes as u64 {
        AdaptiveChoice::Pack
    } else {
        AdaptiveChoice::Spread
    }
}

/// Groups of node ranges in order of preference.
type Tiers = Vec<Vec<Range<usize>>>;

/// A run of consecutive nodes with the same labels, for tiers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    range: Range<usize>,
    region: Option<u16>,
    zone: Option<u16>,
    capabilities: CapSet,
}

/// Places tasks onto a [`Pool`] by the scenario's strategies.
#[derive(Clone, Debug)]
pub struct Placer {
    distribution: Distribution,
    allocation: Allocation,
    weights: Weights,
    preemption: bool,
    rng: ChaCha8Rng,
    /// Where `round_robin` and the sampled strategies continue.
    cursor: usize,
    segments: Vec<Segment>,
    /// Tiers by (locality, capabilities) for `locality` and `capability`, computed once each.
    tiers: BTreeMap<(Locality, CapSet, bool), Tiers>,
    /// The ranges a strict locality allows, computed once each.
    strict_ranges: BTreeMap<Locality, Vec<Range<usize>>>,
    scratch: Vec<NodeIdx>,
}

impl Placer {
    /// A placer for `pool` with the given strategies and seed.
    pub fn new(
        pool: &Pool,
        distribution: Distribution,
        allocation: Allocation,
        weights: Weights,
        preemption: bool,
        seed: u64,
    ) -> Placer {
        let mut segments: Vec<Segment> = Vec::new();
        for i in 0..pool.len() {
            let spec = pool.spec(NodeIdx(i as u32));
            match segments.last_mut() {
                Some(s) if s.region == spec.region && s.zone == spec.zone && s.capabilities == spec.capabilities => {
                    s.range.end = i + 1;
                }
                _ => segments.push(Segment {
                    range: i..i + 1,
                    region: spec.region,
                    zone: spec.zone,
                    capabilities: spec.capabilities,
                }),
            }
        }
        Placer {
            distribution,
            allocation,
            weights,
            preemption,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cursor: 0,
            segments,
            tiers: BTreeMap::new(),
            strict_ranges: BTreeMap::new(),
            scratch: Vec::with_capacity(SCORE_SAMPLE),
        }
    }

    /// The distribution strategy.
    pub fn distribution(&self) -> Distribution {
        self.distribution
    }

    /// Places one task: allocates it on the chosen node, or preempts, or says why not.
    pub fn place(&mut self, pool: &mut Pool, request: &Request, observed: &Observations) -> Placement {
        let choice = self.choose(pool, request, observed);
        if let Some(node) = choice {
            let alloc = pool.allocate(node, request).expect("the chosen node passed the same filters");
            return Placement::Placed { node, alloc };
        }
        if self.preemption && request.priority > 0 {
            let tiers = self.allowed(pool, request);
            if let Some((node, victims)) = pool.preemption_plan(&tiers, request) {
                let evicted: Vec<Released> =
                    victims.into_iter().map(|v| pool.release(v).expect("the plan names live allocations")).collect();
                let alloc = pool.allocate(node, request).expect("the plan freed enough");
                return Placement::Preempted { node, alloc, evicted };
            }
        }
        Placement::Unschedulable(self.why(pool, request))
    }

    /// Allocates `request` anywhere by the allocation strategy alone, as a plain resource pool.
    pub fn allocate_any(&mut self, pool: &mut Pool, request: &Request) -> Option<(NodeIdx, AllocId)> {
        let node = self.within(pool, &[0..pool.len()], self.allocation, request)?;
        let alloc = pool.allocate(node, request).expect("the chosen node passed the same filters");
        Some((node, alloc))
    }

    fn choose(&mut self, pool: &Pool, request: &Request, observed: &Observations) -> Option<NodeIdx> {
        if !pool.may_fit_anywhere(request) {
            return None;
        }
        // A strict locality is a filter for every strategy, not a preference.
        let allowed = self.allowed(pool, request);
        match self.distribution {
            Distribution::RoundRobin => {
                let node = first_fit_from(pool, &allowed, self.cursor, request)?;
                self.cursor = node.0 as usize + 1;
                Some(node)
            }
            Distribution::Random => {
                let start = (self.rng.next_u64() % pool.len() as u64) as usize;
                first_fit_from(pool, &allowed, start, request)
            }
            Distribution::LeastLoaded => best_of(pool, &allowed, LoadOrder::Least, request),
            Distribution::Weighted => {
                let weights = self.weights.clone();
                self.weighted(pool, &allowed, request, &weights)
            }
            Distribution::Capability | Distribution::Locality => {
                let allocation = self.allocation;
                for tier in self.tiers_for(request) {
                    if let Some(node) = self.within(pool, &tier, allocation, request) {
                        return Some(node);
                    }
                }
                None
            }
            Distribution::Adaptive => {
                let (mean, max) = pool.load_mean_and_max();
                match adaptive_choice(observed, mean, max, pool.len()) {
                    AdaptiveChoice::AvoidFailures => {
                        let weights = Weights { health: 4.0, free_resources: 1.0, load: 1.0, locality: 1.0 };
                        self.weighted(pool, &allowed, request, &weights)
                    }
                    AdaptiveChoice::Rebalance | AdaptiveChoice::Spread => {
                        best_of(pool, &allowed, LoadOrder::Least, request)
                    }
                    AdaptiveChoice::Pack => best_of(pool, &allowed, LoadOrder::Most, request),
                }
            }
        }
    }

    /// The nodes a request may use at all: everything, or its strict locality.
    fn allowed(&mut self, pool: &Pool, request: &Request) -> Vec<Range<usize>> {
        if !request.locality.strict {
            return vec![0..pool.len()];
        }
        let segments = &self.segments;
        self.strict_ranges
            .entry(request.locality)
            .or_insert_with(|| {
                locality_tiers(segments, &[0..pool.len()], request.locality).into_iter().next().unwrap_or_default()
            })
            .clone()
    }

    /// The allocation strategy over `ranges`, in order of preference for `locality`.
    fn within(
        &mut self,
        pool: &Pool,
        ranges: &[Range<usize>],
        allocation: Allocation,
        request: &Request,
    ) -> Option<NodeIdx> {
        match allocation {
            Allocation::FirstFit => ranges.iter().find_map(|r| pool.first_fit(r.clone(), r.start, request)),
            Allocation::BestFit => best_of(pool, ranges, LoadOrder::Most, request),
            Allocation::Balanced => {
                self.best_scored(pool, ranges, request, |pool, node| balance_score(pool, node, request))
            }
            Allocation::Locality => {
                if request.locality.region.is_none() && request.locality.zone.is_none() {
                    return ranges.iter().find_map(|r| pool.first_fit(r.clone(), r.start, request));
                }
                let tiers = locality_tiers(&self.segments, ranges, request.locality);
                tiers.iter().find_map(|tier| tier.iter().find_map(|r| pool.first_fit(r.clone(), r.start, request)))
            }
        }
    }

    fn weighted(
        &mut self,
        pool: &Pool,
        ranges: &[Range<usize>],
        request: &Request,
        weights: &Weights,
    ) -> Option<NodeIdx> {
        let total = weights.free_resources + weights.health + weights.load + weights.locality;
        self.best_scored(pool, ranges, request, |pool, node| {
            let spec = pool.spec(node);
            let after = pool.allocated(node).plus(&request.amounts);
            let free = 1.0 - f64::from(dominant_share(&after, &spec.capacity)) / f64::from(PPM);
            let health = f64::from(pool.health(node)) / 100.0;
            let load = 1.0 / (1.0 + pool.tasks_on(node) as f64);
            let locality = locality_match(spec, request.locality);
            (weights.free_resources * free
                + weights.health * health
                + weights.load * load
                + weights.locality * locality)
                / total
        })
    }

    /// Scores up to [`SCORE_SAMPLE`] fitting nodes from the cursor on; the best wins, ties to
    /// the lowest index.
    fn best_scored(
        &mut self,
        pool: &Pool,
        ranges: &[Range<usize>],
        request: &Request,
        score: impl Fn(&Pool, NodeIdx) -> f64,
    ) -> Option<NodeIdx> {
        let mut best: Option<(f64, NodeIdx)> = None;
        let mut sample = std::mem::take(&mut self.scratch);
        let mut last = None;
        for range in ranges {
            let start = self.cursor.clamp(range.start, range.end);
            pool.sample(range.clone(), start, SCORE_SAMPLE, request, &mut sample);
            for &node in &sample {
                let s = score(pool, node);
                let better = match best {
                    None => true,
                    Some((b, bn)) => s > b || (s == b && node < bn),
                };
                if better {
                    best = Some((s, node));
                }
            }
            last = sample.last().copied().or(last);
            if best.is_some() {
                break;
            }
        }
        self.scratch = sample;
        if let Some(last) = last {
            self.cursor = last.0 as usize + 1;
            if self.cursor >= pool.len() {
                self.cursor = 0;
            }
        }
        best.map(|(_, node)| node)
    }

    /// Tiers of ranges for `locality` (by place) or `capability` (by extra capabilities).
    fn tiers_for(&mut self, request: &Request) -> Vec<Vec<Range<usize>>> {
        let by_capability = self.distribution == Distribution::Capability;
        let key = (request.locality, request.capabilities, by_capability);
        if let Some(tiers) = self.tiers.get(&key) {
            return tiers.clone();
        }
        let all: Vec<Range<usize>> = self.segments.iter().map(|s| s.range.clone()).collect();
        let tiers = if by_capability {
            let mut by_extra: BTreeMap<u32, Vec<Range<usize>>> = BTreeMap::new();
            let l = request.locality;
            let in_place = |s: &&Segment| {
                !l.strict || (l.region.is_none_or(|r| s.region == Some(r)) && l.zone.is_none_or(|z| s.zone == Some(z)))
            };
            for s in self.segments.iter().filter(in_place).filter(|s| s.capabilities.contains(request.capabilities)) {
                by_extra.entry(s.capabilities.without(request.capabilities).len()).or_default().push(s.range.clone());
            }
            by_extra.into_values().collect()
        } else {
            locality_tiers(&self.segments, &all, request.locality)
        };
        self.tiers.insert(key, tiers.clone());
        tiers
    }

    fn why(&self, pool: &Pool, request: &Request) -> Unschedulable {
        let mut capable = false;
        for i in 0..pool.len() {
            let node = NodeIdx(i as u32);
            let spec = pool.spec(node);
            if spec.capabilities.contains(request.capabilities) && spec.capacity.covers(&request.amounts) {
                capable = true;
                if pool.eligible(node) {
                    return Unschedulable::Busy;
                }
            }
        }
        if capable { Unschedulable::NoEligibleNode } else { Unschedulable::NeverFits }
    }
}

/// The first fitting node at or after `start` in `ranges` (sorted), wrapping round.
fn first_fit_from(pool: &Pool, ranges: &[Range<usize>], start: usize, request: &Request) -> Option<NodeIdx> {
    let after =
        ranges.iter().filter(|r| r.end > start).find_map(|r| pool.first_fit(r.start.max(start)..r.end, 0, request));
    after.or_else(|| {
        ranges.iter().filter(|r| r.start < start).find_map(|r| pool.first_fit(r.start..r.end.min(start), 0, request))
    })
}

fn best_of(pool: &Pool, ranges: &[Range<usize>], order: LoadOrder, request: &Request) -> Option<NodeIdx> {
    let mut best: Option<NodeIdx> = None;
    for range in ranges {
        if let Some(node) = pool.by_load(range.clone(), order, request) {
            let better = match best {
                None => true,
                Some(b) => {
                    let (l, bl) = (pool.load(node), pool.load(b));
                    match order {
                        LoadOrder::Least => (l, node) < (bl, b),
                        LoadOrder::Most => l > bl || (l == bl && node < b),
                    }
                }
            };
            if better {
                best = Some(node);
            }
        }
    }
    best
}

/// 1 − the standard deviation of the per-resource fractions after placement, over the resource
/// kinds the node has.
fn balance_score(pool: &Pool, node: NodeIdx, request: &Request) -> f64 {
    let capacity = pool.spec(node).capacity;
    let after = pool.allocated(node).plus(&request.amounts);
    let fractions: Vec<f64> = capacity
        .0
        .iter()
        .zip(after.0.iter())
        .filter(|(c, _)| **c > 0)
        .map(|(c, a)| f64::from(*a) / f64::from(*c))
        .collect();
    if fractions.is_empty() {
        return 1.0;
    }
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    let variance = fractions.iter().map(|f| (f - mean) * (f - mean)).sum::<f64>() / fractions.len() as f64;
    1.0 - variance.sqrt()
}

/// 1 for the task's zone (and region), 0.5 for its region only, 0 elsewhere; 1 with no preference.
fn locality_match(spec: &NodeSpec, locality: Locality) -> f64 {
    let region = locality.region.is_none_or(|r| spec.region == Some(r));
    let zone = locality.zone.is_none_or(|z| spec.zone == Some(z));
    match (region, zone) {
        (true, true) => 1.0,
        (true, false) => 0.5,
        _ => 0.0,
    }
}

/// The parts of `ranges` in the task's zone, then its region, then (unless strict) the rest.
fn locality_tiers(segments: &[Segment], ranges: &[Range<usize>], locality: Locality) -> Vec<Vec<Range<usize>>> {
    let mut tiers: [Vec<Range<usize>>; 3] = Default::default();
    for range in ranges {
        for s in segments {
            let start = s.range.start.max(range.start);
            let end = s.range.end.min(range.end);
            if start >= end {
                continue;
            }
            let region = locality.region.is_none_or(|r| s.region == Some(r));
            let zone = locality.zone.is_none_or(|z| s.zone == Some(z));
            let tier = match (region, zone) {
                (true, true) => 0,
                (true, false) => 1,
                _ => 2,
            };
            tiers[tier].push(start..end);
        }
    }
    let [exact, region, rest] = tiers;
    let mut out = vec![exact];
    if !locality.strict {
        if locality.zone.is_some() && locality.region.is_some() {
            out.push(region);
        }
        out.push(rest);
    }
    out.retain(|tier| !tier.is_empty());
    out
}

/// The pool, catalog and label indices of a scenario's cluster. Groups without declared
/// resources get zero capacity (the real shell fills them in from the nodes it finds).
pub fn pool_of_scenario(scenario: &Scenario) -> (Pool, Catalog, Labels) {
    let catalog = Catalog::of_scenario(scenario);
    let mut labels = Labels::default();
    let mut nodes = Vec::with_capacity(scenario.nodes_total() as usize);
    for group in &scenario.groups {
        let spec = NodeSpec {
            capacity: group.resources.as_ref().and_then(|r| catalog.amounts(r)).unwrap_or_default(),
            capabilities: catalog
                .capabilities(&group.capabilities)
                .expect("the catalog holds every group's capabilities"),
            region: group.region.as_deref().map(|r| labels.intern(r)),
            zone: group.zone.as_deref().map(|z| labels.intern(z)),
        };
        nodes.extend(std::iter::repeat_n(spec, group.count as usize));
    }
    (Pool::new(nodes), catalog, labels)
}

/// Region and zone names, by the indices [`NodeSpec`] and [`Locality`] use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, u16>);

impl Labels {
    /// The index of a label, assigned on first use.
    pub fn intern(&mut self, label: &str) -> u16 {
        let next = self.0.len() as u16;
        *self.0.entry(label.to_owned()).or_insert(next)
    }

    /// The index of a known label.
    pub fn get(&self, label: &str) -> Option<u16> {
        self.0.get(label).copied()
    }
}
