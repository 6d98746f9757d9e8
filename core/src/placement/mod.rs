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

pub mod ledger;
mod pool;
mod resources;

use std::collections::BTreeMap;
use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

pub use pool::{
    AllocId, LoadOrder, Locality, NodeIdx, NodeSpec, NodeState, Pool, PoolError, Released, Request, Reservation, Scope,
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
#[repr(u8)]
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

/// Part of a candidate set: nodes of one index scope within sorted, disjoint ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    scope: Scope,
    ranges: Vec<Range<usize>>,
}

/// A candidate set: equally preferred nodes, as parts.
type Tier = Vec<Part>;

/// A run of consecutive nodes with the same labels, for locality tiers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    range: Range<usize>,
    region: Option<u16>,
    zone: Option<u16>,
}

/// Places tasks onto a [`Pool`] by the scenario's strategies.
#[derive(Clone, Debug)]
pub struct Placer {
    distribution: Distribution,
    allocation: Allocation,
    weights: Weights,
    preemption: bool,
    search: Search,
    tiers: TierCache,
    /// How often `adaptive` chose each way, in [`AdaptiveChoice`] order.
    choices: [u64; 4],
}

/// The moving parts of searches: the seeded generator and where the last one stopped.
#[derive(Clone, Debug)]
struct Search {
    rng: ChaCha8Rng,
    /// Where `round_robin` and the sampled strategies continue.
    cursor: usize,
    scratch: Vec<NodeIdx>,
}

/// Candidate tiers per kind of request, computed once each and then only borrowed.
#[derive(Clone, Debug)]
struct TierCache {
    segments: Vec<Segment>,
    classes: Vec<CapSet>,
    /// Every node.
    all: Tier,
    index: BTreeMap<(TierKind, Locality, CapSet), usize>,
    sets: Vec<Vec<Tier>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TierKind {
    /// The nodes a strict locality allows (one tier).
    Strict,
    /// `locality`'s tiers: zone, region, the rest.
    Locality,
    /// `capability`'s tiers: by the number of capabilities the task does not need.
    Capability,
}

impl TierCache {
    /// The id of the tiers of `kind` for `request`, computing them the first time.
    fn id(&mut self, kind: TierKind, request: &Request) -> usize {
        let caps = if kind == TierKind::Capability { request.capabilities } else { CapSet::default() };
        let key = (kind, request.locality, caps);
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let l = request.locality;
        let all = [0..self.all_len()];
        let whole = |ranges: Vec<Range<usize>>| vec![Part { scope: Scope::All, ranges }];
        let tiers: Vec<Tier> = match kind {
            TierKind::Strict => locality_tiers(&self.segments, &all, l).into_iter().take(1).map(whole).collect(),
            TierKind::Locality => locality_tiers(&self.segments, &all, l).into_iter().map(whole).collect(),
            TierKind::Capability => {
                // Each capability class has an index of its own, so a tier of classes is
                // searched without wading through other classes' free nodes.
                let ranges = if l.strict {
                    locality_tiers(&self.segments, &all, l).into_iter().next().unwrap_or_default()
                } else {
                    all.to_vec()
                };
                let mut by_extra: BTreeMap<u32, Tier> = BTreeMap::new();
                for (c, caps) in self.classes.iter().enumerate().filter(|(_, caps)| caps.contains(request.capabilities))
                {
                    let part = Part { scope: Scope::Class(c as u32), ranges: ranges.clone() };
                    by_extra.entry(caps.without(request.capabilities).len()).or_default().push(part);
                }
                by_extra.into_values().collect()
            }
        };
        self.sets.push(tiers);
        self.index.insert(key, self.sets.len() - 1);
        self.sets.len() - 1
    }

    fn all_len(&self) -> usize {
        self.all.first().and_then(|p| p.ranges.first()).map_or(0, |r| r.end)
    }

    /// The id of the nodes a request may use at all (`None`: every node), for split borrows.
    fn allowed_id(&mut self, request: &Request) -> Option<usize> {
        request.locality.strict.then(|| self.id(TierKind::Strict, request))
    }

    /// The nodes of [`TierCache::allowed_id`].
    fn allowed(&self, id: Option<usize>) -> &[Part] {
        match id {
            None => &self.all,
            Some(id) => self.sets[id].first().map_or(&[], Vec::as_slice),
        }
    }
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
                Some(s) if s.region == spec.region && s.zone == spec.zone => s.range.end = i + 1,
                _ => segments.push(Segment { range: i..i + 1, region: spec.region, zone: spec.zone }),
            }
        }
        Placer {
            distribution,
            allocation,
            weights,
            preemption,
            search: Search {
                rng: ChaCha8Rng::seed_from_u64(seed),
                cursor: 0,
                scratch: Vec::with_capacity(SCORE_SAMPLE),
            },
            tiers: TierCache {
                segments,
                classes: pool.classes().to_vec(),
                all: vec![Part { scope: Scope::All, ranges: vec![0..pool.len()] }],
                index: BTreeMap::new(),
                sets: Vec::new(),
            },
            choices: [0; 4],
        }
    }

    /// How many placements `adaptive` made each way so far: avoiding failures, rebalancing,
    /// packing, spreading (all zero for the other strategies).
    pub fn adaptive_choices(&self) -> [u64; 4] {
        self.choices
    }

    /// The distribution strategy.
    pub fn distribution(&self) -> Distribution {
        self.distribution
    }

    /// Places one task: allocates it on the chosen node, or preempts, or says why not.
    ///
    /// Placing, and finding that nothing fits and why, cost about O(log n). Looking for
    /// preemption victims scans the allowed nodes (O(n)); it happens only with preemption on,
    /// for a task of some priority that fits nowhere.
    pub fn place(&mut self, pool: &mut Pool, request: &Request, observed: &Observations) -> Placement {
        if let Some(node) = self.choose(pool, request, observed) {
            let alloc = pool.allocate(node, request).expect("the chosen node passed the same filters");
            return Placement::Placed { node, alloc };
        }
        let id = self.tiers.allowed_id(request);
        let allowed: &[Range<usize>] = self.tiers.allowed(id).first().map_or(&[], |part| &part.ranges);
        if self.preemption
            && request.priority > 0
            && let Some((node, victims)) = pool.preemption_plan(allowed, request)
        {
            let evicted: Vec<Released> =
                victims.into_iter().map(|v| pool.release(v).expect("the plan names live allocations")).collect();
            let alloc = pool.allocate(node, request).expect("the plan freed enough");
            return Placement::Preempted { node, alloc, evicted };
        }
        Placement::Unschedulable(why(pool, allowed, request))
    }

    /// Places a batch of pending tasks, highest `priority` first and in the given order among
    /// equals (a stable sort), returning each request's outcome in the order given.
    pub fn place_all(&mut self, pool: &mut Pool, requests: &[Request], observed: &Observations) -> Vec<Placement> {
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(requests[i].priority));
        let mut outcomes: Vec<Option<Placement>> = vec![None; requests.len()];
        for i in order {
            outcomes[i] = Some(self.place(pool, &requests[i], observed));
        }
        outcomes.into_iter().map(|o| o.expect("every request was placed or refused")).collect()
    }

    /// Allocates `request` anywhere by the allocation strategy alone, as a plain resource pool.
    pub fn allocate_any(&mut self, pool: &mut Pool, request: &Request) -> Option<(NodeIdx, AllocId)> {
        let id = self.tiers.allowed_id(request);
        let allowed = self.tiers.allowed(id);
        let node = self.search.within(pool, allowed, &self.tiers.segments, self.allocation, request)?;
        let alloc = pool.allocate(node, request).expect("the chosen node passed the same filters");
        Some((node, alloc))
    }

    fn choose(&mut self, pool: &Pool, request: &Request, observed: &Observations) -> Option<NodeIdx> {
        if !pool.may_fit_anywhere(request) {
            return None;
        }
        let search = &mut self.search;
        let allowed_id = self.tiers.allowed_id(request);
        let allowed = self.tiers.allowed(allowed_id);
        match self.distribution {
            Distribution::RoundRobin => {
                let node = first_fit_from(pool, allowed, search.cursor, request)?;
                search.cursor = node.0 as usize + 1;
                Some(node)
            }
            Distribution::Random => {
                let start = (search.rng.next_u64() % pool.len() as u64) as usize;
                first_fit_from(pool, allowed, start, request)
            }
            Distribution::LeastLoaded => best_by_load(pool, allowed, LoadOrder::Least, request),
            Distribution::Weighted => search.weighted(pool, allowed, request, &self.weights),
            Distribution::Capability | Distribution::Locality => {
                let kind = if self.distribution == Distribution::Capability {
                    TierKind::Capability
                } else {
                    TierKind::Locality
                };
                let id = self.tiers.id(kind, request);
                let segments = &self.tiers.segments;
                self.tiers.sets[id]
                    .iter()
                    .find_map(|tier| search.within(pool, tier, segments, self.allocation, request))
            }
            Distribution::Adaptive => {
                let (mean, max) = pool.load_mean_and_max();
                let choice = adaptive_choice(observed, mean, max, pool.len());
                self.choices[choice as usize] += 1;
                match choice {
                    AdaptiveChoice::AvoidFailures => {
                        let weights = Weights { health: 4.0, free_resources: 1.0, load: 1.0, locality: 1.0 };
                        search.weighted(pool, allowed, request, &weights)
                    }
                    AdaptiveChoice::Rebalance | AdaptiveChoice::Spread => {
                        best_by_load(pool, allowed, LoadOrder::Least, request)
                    }
                    AdaptiveChoice::Pack => best_by_load(pool, allowed, LoadOrder::Most, request),
                }
            }
        }
    }
}

impl Search {
    /// The allocation strategy over a tier.
    fn within(
        &mut self,
        pool: &Pool,
        tier: &[Part],
        segments: &[Segment],
        allocation: Allocation,
        request: &Request,
    ) -> Option<NodeIdx> {
        match allocation {
            Allocation::FirstFit => first_fit_from(pool, tier, 0, request),
            Allocation::BestFit => best_by_load(pool, tier, LoadOrder::Most, request),
            Allocation::Balanced => {
                self.best_scored(pool, tier, request, |pool, node| balance_score(pool, node, request))
            }
            Allocation::Locality => {
                if request.locality.region.is_none() && request.locality.zone.is_none() {
                    return first_fit_from(pool, tier, 0, request);
                }
                // The tier's parts cut down to the task's zone, then region, then the rest.
                let by_place: Vec<Vec<Part>> = tier
                    .iter()
                    .map(|part| {
                        locality_tiers(segments, &part.ranges, Locality { strict: false, ..request.locality })
                            .into_iter()
                            .map(|ranges| Part { scope: part.scope, ranges })
                            .collect()
                    })
                    .collect();
                (0..3).find_map(|k| {
                    let level: Vec<Part> = by_place.iter().filter_map(|parts| parts.get(k).cloned()).collect();
                    first_fit_from(pool, &level, 0, request)
                })
            }
        }
    }

    fn weighted(&mut self, pool: &Pool, tier: &[Part], request: &Request, weights: &Weights) -> Option<NodeIdx> {
        let total = weights.free_resources + weights.health + weights.load + weights.locality;
        self.best_scored(pool, tier, request, |pool, node| {
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
    /// the lowest index. The cursor moves past the sample.
    fn best_scored(
        &mut self,
        pool: &Pool,
        tier: &[Part],
        request: &Request,
        score: impl Fn(&Pool, NodeIdx) -> f64,
    ) -> Option<NodeIdx> {
        self.scratch.clear();
        for part in tier {
            pool.sample(part.scope, &part.ranges, self.cursor, SCORE_SAMPLE, request, &mut self.scratch);
        }
        let mut best: Option<(f64, NodeIdx)> = None;
        for &node in &self.scratch {
            let s = score(pool, node);
            if best.is_none_or(|(b, bn)| s > b || (s == b && node < bn)) {
                best = Some((s, node));
            }
        }
        if let Some(last) = self.scratch.last() {
            self.cursor = (last.0 as usize + 1) % pool.len().max(1);
        }
        best.map(|(_, node)| node)
    }
}

/// The first fitting node of `tier` at or after `start`, wrapping round.
fn first_fit_from(pool: &Pool, tier: &[Part], start: usize, request: &Request) -> Option<NodeIdx> {
    tier.iter()
        .filter_map(|part| pool.first_fit(part.scope, &part.ranges, start, request))
        .min_by_key(|node| ((node.0 as usize) < start, *node))
}

/// The least or most loaded fitting node of `tier`; ties to the lowest index.
fn best_by_load(pool: &Pool, tier: &[Part], order: LoadOrder, request: &Request) -> Option<NodeIdx> {
    let key = |node: &NodeIdx| {
        let load = pool.load(*node);
        (if order == LoadOrder::Least { load } else { PPM - load }, *node)
    };
    tier.iter().filter_map(|part| pool.by_load(part.scope, &part.ranges, order, request)).min_by_key(key)
}

/// Why nothing in `allowed` fits: never (no node capable and large enough), not now (none of
/// those eligible), or busy.
///
/// Two index queries, O(log n): whether any node offers the capabilities and has, resource by
/// resource, the capacity (`NeverFits` when not; a mix of nodes each large in a different
/// resource counts as fitting), and whether any eligible node with the capabilities exists in
/// the allowed ranges (`NoEligibleNode` when not). Otherwise the capable nodes are busy.
fn why(pool: &Pool, allowed: &[Range<usize>], request: &Request) -> Unschedulable {
    if !pool.could_ever_fit(request) {
        return Unschedulable::NeverFits;
    }
    let anything = Request { amounts: Amounts::ZERO, ..request.clone() };
    if pool.first_fit(Scope::All, allowed, 0, &anything).is_none() {
        return Unschedulable::NoEligibleNode;
    }
    Unschedulable::Busy
}

/// Sorted ranges with touching neighbours joined.
fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
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
    let [exact, region, rest] = tiers.map(merged);
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

/// The request for instance `index` (from 1) of task entry `spec` of `scenario`, or `None` if the
/// task needs a capability or custom resource no node has (so it can never be placed).
pub fn request_for(
    scenario: &Scenario,
    catalog: &Catalog,
    labels: &Labels,
    spec: crate::scenario::TaskSpecId,
    index: u32,
    now_ms: u64,
) -> Option<Request> {
    let task = &scenario.workload.tasks[spec.0 as usize];
    let locality = task.locality.as_ref().map_or(Locality::default(), |l| Locality {
        region: l.region.as_deref().and_then(|r| labels.get(r)),
        zone: l.zone.as_deref().and_then(|z| labels.get(z)),
        strict: l.strict,
    });
    let until_ms = match &task.work {
        crate::scenario::Work::Command { command: Some(c), .. } => Some(now_ms.saturating_add(c.timeout_ms)),
        crate::scenario::Work::Load(load) => {
            Some(now_ms.saturating_add(load.pattern.duration_ms()).saturating_add(load.timeout_ms))
        }
        crate::scenario::Work::Command { command: None, .. } => None,
    };
    Some(Request {
        task: TaskKey((u64::from(spec.0) << 32) | u64::from(index)),
        spec: Some(spec),
        amounts: catalog.amounts(&task.requires)?,
        capabilities: catalog.capabilities(&task.capabilities)?,
        priority: task.priority,
        locality,
        now_ms,
        until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{self, TaskSpecId};

    const SCENARIO: &str = r#"{
      "name": "t", "description": "two regions", "duration_s": 60,
      "cluster": { "groups": [
        { "name": "eu", "count": 2, "region": "eu", "resources": { "cpu_millis": 1000 } },
        { "name": "us", "count": 2, "region": "us", "resources": { "cpu_millis": 1000 } } ] },
      "workload": { "tasks": [
        { "name": "soft", "count": 4, "kind": "command", "priority": 1, "locality": { "region": "us" },
          "requires": { "cpu_millis": 600 }, "sim": { "duration_ms": { "mean": 1 } } },
        { "name": "strict", "kind": "command", "priority": 9, "locality": { "region": "us", "strict": true },
          "requires": { "cpu_millis": 600 }, "sim": { "duration_ms": { "mean": 1 } } } ] }
    }"#;

    fn setup(distribution: Distribution, preemption: bool) -> (Scenario, Pool, Catalog, Labels, Placer) {
        let scenario = scenario::parse(SCENARIO.as_bytes()).expect("valid");
        let (pool, catalog, labels) = pool_of_scenario(&scenario);
        let placer = Placer::new(&pool, distribution, Allocation::FirstFit, Weights::default(), preemption, 0);
        (scenario, pool, catalog, labels, placer)
    }

    fn node(outcome: &Placement) -> Option<u32> {
        match outcome {
            Placement::Placed { node, .. } | Placement::Preempted { node, .. } => Some(node.0),
            Placement::Unschedulable(_) => None,
        }
    }

    #[test]
    fn a_batch_is_placed_highest_priority_first() {
        let (scenario, mut pool, catalog, labels, mut placer) = setup(Distribution::LeastLoaded, false);
        // Four soft tasks (priority 1) would fill the cluster; the strict one (priority 9) comes
        // last in the batch but is placed first, so it gets its region.
        let mut batch: Vec<Request> = (1..=4)
            .map(|i| request_for(&scenario, &catalog, &labels, TaskSpecId(0), i, 0).expect("placeable"))
            .collect();
        batch.push(request_for(&scenario, &catalog, &labels, TaskSpecId(1), 1, 0).expect("placeable"));
        let outcomes = placer.place_all(&mut pool, &batch, &Observations::default());
        assert_eq!(node(&outcomes[4]), Some(2), "the high-priority task went first, to us-1");
        assert_eq!(outcomes.iter().filter(|o| node(o).is_none()).count(), 1, "one low-priority task waits");
        assert_eq!(outcomes[3], Placement::Unschedulable(Unschedulable::Busy));
    }

    #[test]
    fn utilisation_is_reported_per_resource_and_per_node() {
        let (scenario, mut pool, catalog, labels, mut placer) = setup(Distribution::RoundRobin, false);
        let soft = request_for(&scenario, &catalog, &labels, TaskSpecId(0), 1, 0).expect("placeable");
        let Placement::Placed { node, alloc } = placer.place(&mut pool, &soft, &Observations::default()) else {
            panic!("an empty cluster takes a task");
        };
        assert_eq!(pool.load(node), 600_000, "600 of 1000 millicores");
        let u = pool.utilization();
        assert_eq!(u.per_resource[0], 600.0 / 4000.0, "cluster-wide cpu");
        assert_eq!(u.per_resource[1], 0.0, "no memory asked for");
        assert_eq!(u.node_max, 0.6);
        assert_eq!(u.node_mean, 0.6 / 4.0);
        pool.release(alloc).expect("live");
        assert_eq!(pool.utilization().node_max, 0.0);
        assert_eq!(pool.load_mean_and_max(), (0, 0));
    }

    #[test]
    fn the_adaptive_rule_takes_the_first_matching_branch() {
        let quiet = Observations { failure_rate: 0.0, queue_len: 0 };
        assert_eq!(adaptive_choice(&quiet, 100_000, 200_000, 10), AdaptiveChoice::Spread);
        let failing = Observations { failure_rate: 0.2, queue_len: 1_000 };
        assert_eq!(adaptive_choice(&failing, 0, PPM, 10), AdaptiveChoice::AvoidFailures);
        assert_eq!(adaptive_choice(&quiet, 100_000, 350_000, 10), AdaptiveChoice::Rebalance);
        let queued = Observations { failure_rate: 0.1, queue_len: 20 };
        assert_eq!(adaptive_choice(&queued, 100_000, 200_000, 10), AdaptiveChoice::Pack);
        assert_eq!(adaptive_choice(&Observations { queue_len: 19, ..queued }, 0, 0, 10), AdaptiveChoice::Spread);
    }

    #[test]
    fn locality_falls_back_when_the_region_is_full_or_partitioned_away() {
        let (scenario, mut pool, catalog, labels, mut placer) = setup(Distribution::Locality, false);
        let observed = Observations::default();
        let soft = |i| request_for(&scenario, &catalog, &labels, TaskSpecId(0), i, 0).expect("placeable");
        // us-1 and us-2 are nodes 2 and 3; the region fills, then the rest falls back to eu.
        let placed: Vec<Option<u32>> = (1..=4).map(|i| node(&placer.place(&mut pool, &soft(i), &observed))).collect();
        assert_eq!(placed, [Some(2), Some(3), Some(0), Some(1)]);

        let (_, mut pool, _, _, mut placer) = setup(Distribution::Locality, false);
        for us in [2, 3] {
            pool.set_state(NodeIdx(us), NodeState::Suspected).expect("known node");
        }
        assert_eq!(node(&placer.place(&mut pool, &soft(1), &observed)), Some(0), "partitioned away: falls back");
        let strict = request_for(&scenario, &catalog, &labels, TaskSpecId(1), 1, 0).expect("placeable");
        assert_eq!(
            placer.place(&mut pool, &strict, &observed),
            Placement::Unschedulable(Unschedulable::NoEligibleNode),
            "a strict locality waits rather than leave its region"
        );
    }

    #[test]
    fn preemption_evicts_lower_priority_work_and_hands_it_back() {
        let (scenario, mut pool, catalog, labels, mut placer) = setup(Distribution::LeastLoaded, true);
        let observed = Observations::default();
        let soft: Vec<Request> = (1..=4)
            .map(|i| request_for(&scenario, &catalog, &labels, TaskSpecId(0), i, 0).expect("placeable"))
            .collect();
        for request in &soft {
            assert!(node(&placer.place(&mut pool, request, &observed)).is_some());
        }
        let strict = request_for(&scenario, &catalog, &labels, TaskSpecId(1), 1, 0).expect("placeable");
        let Placement::Preempted { node, evicted, .. } = placer.place(&mut pool, &strict, &observed) else {
            panic!("the cluster is full, so the strict task must preempt");
        };
        assert_eq!(node, NodeIdx(2), "in its region, lowest index among equal victims");
        assert_eq!(evicted.len(), 1);
        assert!(soft.iter().any(|r| r.task == evicted[0].task), "the evicted task is one of the placed ones");
        assert_eq!(pool.allocations(), 4, "three soft tasks and the strict one");
    }
}
