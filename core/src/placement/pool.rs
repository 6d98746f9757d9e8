//! The resource pool: every node's capacity and allocations, reservations, and the index that
//! finds fitting nodes in about O(log n).
//!
//! The index is a segment tree over the nodes in pool order (a scenario's nodes are group by
//! group, so each group is a contiguous range). Every tree node holds, for its subtree: the
//! component-wise largest free amount, the union of capabilities (bit [`CapSet::ELIGIBLE`] set if
//! some node may take work), and the smallest and largest load. A subtree whose largest free
//! amount does not cover a request, or whose capabilities lack one it needs, cannot hold a
//! fitting node and is skipped whole; the exact check (reservations included) is made at a leaf.
//! Full and ineligible parts of the cluster therefore cost nothing to search past.

use std::collections::BTreeMap;
use std::ops::Range;

use super::resources::{Amounts, CapSet, PPM, dominant_share};
use crate::scenario::TaskSpecId;

/// Index of a node in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdx(pub u32);

/// The caller's name for a task instance; returned when its allocation is released or evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey(pub u64);

/// A handle to an allocation. Stale handles (already released) are refused, never misapplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocId {
    index: u32,
    generation: u32,
}

/// What the failure detector and circuit breaker say of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// Heartbeats arrive and checks pass.
    #[default]
    Healthy,
    /// Working but strained; still takes work.
    Degraded,
    /// Failing checks; takes no new work.
    Unhealthy,
    /// Heartbeats are late (phi above threshold); takes no new work.
    Suspected,
    /// Declared dead; takes no new work.
    Dead,
}

impl NodeState {
    /// Whether a node in this state may be given new work.
    pub fn takes_work(self) -> bool {
        matches!(self, NodeState::Healthy | NodeState::Degraded)
    }
}

/// A node as the pool is given it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// What each of its resources amounts to.
    pub capacity: Amounts,
    /// What it offers.
    pub capabilities: CapSet,
    /// Region label, as an index the caller assigns (same index, same region).
    pub region: Option<u16>,
    /// Zone label, likewise.
    pub zone: Option<u16>,
}

/// A request for resources on behalf of one task instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Who asks.
    pub task: TaskKey,
    /// The task entry it belongs to, for reservations held for that entry.
    pub spec: Option<TaskSpecId>,
    /// How much of each resource.
    pub amounts: Amounts,
    /// Capabilities the node must offer.
    pub capabilities: CapSet,
    /// Higher is more important; only strictly higher priority may preempt.
    pub priority: u32,
    /// Preferred region and zone.
    pub locality: Locality,
    /// The time of the request.
    pub now_ms: u64,
    /// Until when the allocation may be held (its timeout), or `None` for unknown. Capacity
    /// reserved for others in any window overlapping `[now_ms, until_ms)` is off limits.
    pub until_ms: Option<u64>,
}

/// A locality preference by label index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// Preferred region.
    pub region: Option<u16>,
    /// Preferred zone.
    pub zone: Option<u16>,
    /// Never run outside the preference.
    pub strict: bool,
}

/// Capacity held on one node for one task entry during a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The task entry the capacity is for.
    pub owner: TaskSpecId,
    /// The capacity held.
    pub amounts: Amounts,
    /// Window start.
    pub from_ms: u64,
    /// Window end (exclusive).
    pub until_ms: u64,
}

/// A released or evicted allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The handle it had.
    pub alloc: AllocId,
    /// The node it was on.
    pub node: NodeIdx,
    /// Whose it was.
    pub task: TaskKey,
    /// What it held, now free again.
    pub amounts: Amounts,
}

/// Errors of the pool's API; each is a mistake of the caller, reported rather than obeyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The allocation was already released (or never existed).
    UnknownAllocation(AllocId),
    /// The node index is out of range.
    UnknownNode(NodeIdx),
    /// The request does not fit on the node it was aimed at.
    DoesNotFit(NodeIdx),
    /// A reservation larger than the node.
    ReservationTooLarge(NodeIdx),
}

#[derive(Clone, Debug)]
struct Node {
    spec: NodeSpec,
    allocated: Amounts,
    state: NodeState,
    circuit_open: bool,
    health: u8,
    /// Live allocations, as slab indices.
    allocs: Vec<u32>,
    reservations: Vec<Reservation>,
    /// Its capability class and its leaf in that class's tree.
    class: u32,
    class_leaf: u32,
}

#[derive(Clone, Debug)]
struct Allocation {
    node: u32,
    task: TaskKey,
    spec: Option<TaskSpecId>,
    /// What it holds, as an index into the pool's shared table of amounts.
    shape: u32,
    priority: u32,
    /// Order of allocation, for "newest first" eviction.
    sequence: u64,
    /// Position in its node's `allocs`.
    slot_in_node: u32,
}

#[derive(Clone, Debug)]
enum Slot {
    Used { generation: u32, allocation: Allocation },
    Free { generation: u32, next_free: Option<u32> },
}

/// The distinct amounts live allocations hold, shared and reference-counted: the instances of a
/// task entry all ask for the same amounts, so an allocation keeps a 4-byte index instead of a
/// copy (100,000 allocations take 4.8 MB less).
#[derive(Clone, Debug, Default)]
struct Shapes {
    table: Vec<(Amounts, u32)>,
    index: BTreeMap<[u32; super::resources::KINDS], u32>,
    free: Vec<u32>,
    /// The most recently interned shape, which consecutive requests usually repeat.
    last: u32,
}

impl Shapes {
    fn intern(&mut self, amounts: &Amounts) -> u32 {
        if let Some((a, refs)) = self.table.get_mut(self.last as usize)
            && *refs > 0
            && a == amounts
        {
            *refs += 1;
            return self.last;
        }
        let id = match self.index.get(&amounts.0) {
            Some(&id) => {
                self.table[id as usize].1 += 1;
                id
            }
            None => {
                let id = match self.free.pop() {
                    Some(id) => {
                        self.table[id as usize] = (*amounts, 1);
                        id
                    }
                    None => {
                        self.table.push((*amounts, 1));
                        (self.table.len() - 1) as u32
                    }
                };
                self.index.insert(amounts.0, id);
                id
            }
        };
        self.last = id;
        id
    }

    fn get(&self, id: u32) -> &Amounts {
        &self.table[id as usize].0
    }

    fn release(&mut self, id: u32) {
        let (amounts, refs) = &mut self.table[id as usize];
        *refs -= 1;
        if *refs == 0 {
            self.index.remove(&amounts.0);
            self.free.push(id);
        }
    }

    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // A B-tree entry costs about its key and value plus a pointer's share of its node.
        self.table.capacity() * size_of::<(Amounts, u32)>()
            + self.index.len() * (size_of::<Amounts>() + size_of::<u32>() + size_of::<usize>())
            + self.free.capacity() * size_of::<u32>()
    }
}

/// Aggregates of a subtree of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Summary {
    free_max: Amounts,
    capabilities: CapSet,
    load_min: u32,
    load_max: u32,
}

impl Summary {
    const EMPTY: Summary =
        Summary { free_max: Amounts::ZERO, capabilities: CapSet(0), load_min: u32::MAX, load_max: 0 };

    fn merge(a: &Summary, b: &Summary) -> Summary {
        Summary {
            free_max: a.free_max.max(&b.free_max),
            capabilities: CapSet(a.capabilities.0 | b.capabilities.0),
            load_min: a.load_min.min(b.load_min),
            load_max: a.load_max.max(b.load_max),
        }
    }

    /// Whether some node below might fit `need` with `capabilities` (never a false "no").
    #[inline]
    fn may_fit(&self, need: &Amounts, capabilities: CapSet) -> bool {
        self.capabilities.contains(capabilities) && self.free_max.covers(need)
    }
}

/// A segment tree over some of the nodes (all, or one capability class), in pool order.
#[derive(Clone, Debug)]
struct Tree {
    /// Pool index of each leaf, increasing.
    members: Vec<u32>,
    leaves: usize,
    summary: Vec<Summary>,
}

impl Tree {
    fn new(members: Vec<u32>) -> Tree {
        let leaves = members.len().next_power_of_two().max(1);
        Tree { members, leaves, summary: vec![Summary::EMPTY; 2 * leaves] }
    }

    /// The pool indices under leaves `lo..hi` span this range (empty for padding leaves).
    #[inline]
    fn span(&self, lo: usize, hi: usize) -> Range<usize> {
        let hi = hi.min(self.members.len());
        if lo >= hi { 0..0 } else { self.members[lo] as usize..self.members[hi - 1] as usize + 1 }
    }

    /// Sets a leaf and the summaries above it.
    fn set(&mut self, leaf: usize, summary: Summary) {
        let mut t = self.leaves + leaf;
        self.summary[t] = summary;
        while t > 1 {
            t /= 2;
            let merged = Summary::merge(&self.summary[2 * t], &self.summary[2 * t + 1]);
            if self.summary[t] == merged {
                break; // Nothing above changes either.
            }
            self.summary[t] = merged;
        }
    }

    fn root(&self) -> &Summary {
        &self.summary[1]
    }
}

/// Which tree a search runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every node.
    All,
    /// The nodes of one capability class (see [`Pool::classes`]).
    Class(u32),
}

/// Where a search may look: nodes in one of `ranges` (sorted, disjoint) and inside `window`.
struct Bounds<'a> {
    ranges: &'a [Range<usize>],
    window: Range<usize>,
}

impl Bounds<'_> {
    /// Whether any node in the pool-index span is within bounds: O(log ranges).
    #[inline]
    fn touch(&self, span: Range<usize>) -> bool {
        let (lo, hi) = (span.start.max(self.window.start), span.end.min(self.window.end));
        if lo >= hi {
            return false;
        }
        let i = self.ranges.partition_point(|r| r.end <= lo);
        self.ranges.get(i).is_some_and(|r| r.start < hi)
    }
}

/// Which extreme of load a search looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadOrder {
    /// The least loaded fitting node.
    Least,
    /// The most loaded fitting node (bin-packing).
    Most,
}

/// The pool. Every method keeps the invariant that no node's allocations exceed its capacity in
/// any resource; it is asserted where allocations change.
#[derive(Clone, Debug)]
pub struct Pool {
    nodes: Vec<Node>,
    /// The index over every node.
    tree: Tree,
    /// One index per distinct capability set, and the sets.
    classes: Vec<Tree>,
    class_capabilities: Vec<CapSet>,
    /// Component-wise largest capacity, and every capability, over all nodes.
    capacity_max: Amounts,
    capabilities_all: CapSet,
    slots: Vec<Slot>,
    free_slot: Option<u32>,
    shapes: Shapes,
    live: u32,
    sequence: u64,
    /// Sums over all nodes, for cluster-wide utilisation.
    capacity_total: [u64; super::resources::KINDS],
    allocated_total: [u64; super::resources::KINDS],
    load_sum: u64,
}

impl Pool {
    /// A pool of `nodes`, all healthy with nothing allocated.
    pub fn new(nodes: Vec<NodeSpec>) -> Pool {
        // Capability classes, numbered in order of first appearance.
        let mut class_capabilities: Vec<CapSet> = Vec::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut node_class = Vec::with_capacity(nodes.len());
        for (i, spec) in nodes.iter().enumerate() {
            let class = match class_capabilities.iter().position(|&c| c == spec.capabilities) {
                Some(class) => class,
                None => {
                    class_capabilities.push(spec.capabilities);
                    members.push(Vec::new());
                    class_capabilities.len() - 1
                }
            };
            node_class.push((class as u32, members[class].len() as u32));
            members[class].push(i as u32);
        }
        let count = nodes.len() as u32;
        let mut pool = Pool {
            nodes: nodes
                .into_iter()
                .zip(node_class)
                .map(|(spec, (class, class_leaf))| Node {
                    spec,
                    allocated: Amounts::ZERO,
                    state: NodeState::Healthy,
                    circuit_open: false,
                    health: 100,
                    allocs: Vec::new(),
                    reservations: Vec::new(),
                    class,
                    class_leaf,
                })
                .collect(),
            tree: Tree::new((0..count).collect()),
            classes: members.into_iter().map(Tree::new).collect(),
            class_capabilities,
            capacity_max: Amounts::ZERO,
            capabilities_all: CapSet(0),
            slots: Vec::new(),
            free_slot: None,
            shapes: Shapes::default(),
            live: 0,
            sequence: 0,
            capacity_total: [0; super::resources::KINDS],
            allocated_total: [0; super::resources::KINDS],
            load_sum: 0,
        };
        for node in &pool.nodes {
            for (t, c) in pool.capacity_total.iter_mut().zip(node.spec.capacity.0) {
                *t += u64::from(c);
            }
            pool.capacity_max = pool.capacity_max.max(&node.spec.capacity);
            pool.capabilities_all.0 |= node.spec.capabilities.0;
        }
        for i in 0..pool.nodes.len() {
            pool.update(i);
        }
        pool
    }

    /// The distinct capability sets of the nodes; [`Scope::Class`] indexes this.
    pub fn classes(&self) -> &[CapSet] {
        &self.class_capabilities
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the pool has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> u32 {
        self.live
    }

    /// A node's description.
    pub fn spec(&self, node: NodeIdx) -> &NodeSpec {
        &self.nodes[node.0 as usize].spec
    }

    /// What is allocated on a node.
    pub fn allocated(&self, node: NodeIdx) -> Amounts {
        self.nodes[node.0 as usize].allocated
    }

    /// A node's state.
    pub fn state(&self, node: NodeIdx) -> NodeState {
        self.nodes[node.0 as usize].state
    }

    /// A node's health score, 0 to 100.
    pub fn health(&self, node: NodeIdx) -> u8 {
        self.nodes[node.0 as usize].health
    }

    /// Number of live allocations on a node.
    pub fn tasks_on(&self, node: NodeIdx) -> usize {
        self.nodes[node.0 as usize].allocs.len()
    }

    /// A node's load: its dominant share, in parts per million.
    pub fn load(&self, node: NodeIdx) -> u32 {
        let n = &self.nodes[node.0 as usize];
        dominant_share(&n.allocated, &n.spec.capacity)
    }

    /// Whether a node may be given new work: healthy or degraded, with its circuit closed.
    pub fn eligible(&self, node: NodeIdx) -> bool {
        let n = &self.nodes[node.0 as usize];
        n.state.takes_work() && !n.circuit_open
    }

    /// Sets what the failure detector says of a node. Its allocations stay until released.
    pub fn set_state(&mut self, node: NodeIdx, state: NodeState) -> Result<(), PoolError> {
        self.node_mut(node)?.state = state;
        self.update(node.0 as usize);
        Ok(())
    }

    /// Opens or closes a node's circuit breaker.
    pub fn set_circuit_open(&mut self, node: NodeIdx, open: bool) -> Result<(), PoolError> {
        self.node_mut(node)?.circuit_open = open;
        self.update(node.0 as usize);
        Ok(())
    }

    /// Sets a node's health score (0 to 100), which `weighted` placement uses.
    pub fn set_health(&mut self, node: NodeIdx, health: u8) -> Result<(), PoolError> {
        self.node_mut(node)?.health = health.min(100);
        Ok(())
    }

    fn node_mut(&mut self, node: NodeIdx) -> Result<&mut Node, PoolError> {
        self.nodes.get_mut(node.0 as usize).ok_or(PoolError::UnknownNode(node))
    }

    /// Holds `reservation` on `node`. It must fit the node's capacity.
    pub fn reserve(&mut self, node: NodeIdx, reservation: Reservation) -> Result<(), PoolError> {
        let n = self.node_mut(node)?;
        if !n.spec.capacity.covers(&reservation.amounts) {
            return Err(PoolError::ReservationTooLarge(node));
        }
        n.reservations.push(reservation);
        Ok(())
    }

    /// What `request` may use on node `i`: capacity less allocations less what reservations of
    /// other task entries hold during the request's span. Allocations in `excluded` (slab
    /// indices) are treated as gone, for preemption.
    fn free_for(&self, i: usize, request: &Request, excluded: &[u32]) -> Amounts {
        let node = &self.nodes[i];
        let mut allocated = node.allocated;
        for &slot in excluded {
            allocated = allocated.minus(self.amounts_of(self.allocation(slot)));
        }
        let mut free = node.spec.capacity.minus(&allocated);
        let until = request.until_ms.unwrap_or(u64::MAX);
        for r in &node.reservations {
            let overlaps = r.from_ms < until && request.now_ms < r.until_ms;
            if !overlaps || request.spec == Some(r.owner) {
                continue;
            }
            // What the owner already runs on this node counts against its reservation.
            let mut owner_uses = Amounts::ZERO;
            for &slot in node.allocs.iter().filter(|s| !excluded.contains(s)) {
                let a = self.allocation(slot);
                if a.spec == Some(r.owner) {
                    owner_uses = owner_uses.plus(self.amounts_of(a));
                }
            }
            free = free.saturating_minus(&r.amounts.saturating_minus(&owner_uses));
        }
        free
    }

    /// Whether `request` fits node `i` exactly: eligible, capable, and enough free for it.
    pub fn fits(&self, node: NodeIdx, request: &Request) -> bool {
        let i = node.0 as usize;
        i < self.nodes.len() && self.fits_index(i, request)
    }

    #[inline]
    fn fits_index(&self, i: usize, request: &Request) -> bool {
        let node = &self.nodes[i];
        if !(node.state.takes_work() && !node.circuit_open && node.spec.capabilities.contains(request.capabilities)) {
            return false;
        }
        let plain_free = node.spec.capacity.minus(&node.allocated);
        if !plain_free.covers(&request.amounts) {
            return false;
        }
        node.reservations.is_empty() || self.free_for(i, request, &[]).covers(&request.amounts)
    }

    /// Allocates `request` on `node`, or says why not.
    pub fn allocate(&mut self, node: NodeIdx, request: &Request) -> Result<AllocId, PoolError> {
        let i = node.0 as usize;
        if i >= self.nodes.len() {
            return Err(PoolError::UnknownNode(node));
        }
        if !self.fits_index(i, request) {
            return Err(PoolError::DoesNotFit(node));
        }
        Ok(self.allocate_unchecked(i, request))
    }

    fn allocate_unchecked(&mut self, i: usize, request: &Request) -> AllocId {
        self.sequence += 1;
        let shape = self.shapes.intern(&request.amounts);
        let allocation = Allocation {
            node: i as u32,
            task: request.task,
            spec: request.spec,
            shape,
            priority: request.priority,
            sequence: self.sequence,
            slot_in_node: self.nodes[i].allocs.len() as u32,
        };
        let (index, generation) = match self.free_slot {
            Some(index) => {
                let Slot::Free { generation, next_free } = self.slots[index as usize] else {
                    unreachable!("the free list holds free slots only");
                };
                self.free_slot = next_free;
                self.slots[index as usize] = Slot::Used { generation, allocation };
                (index, generation)
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 live allocations");
                self.slots.push(Slot::Used { generation: 0, allocation });
                (index, 0)
            }
        };
        self.live += 1;
        let old_load = self.load(NodeIdx(i as u32));
        let node = &mut self.nodes[i];
        node.allocs.push(index);
        node.allocated = node.allocated.plus(&request.amounts);
        assert!(node.spec.capacity.covers(&node.allocated), "node {i} over-committed");
        for (t, a) in self.allocated_total.iter_mut().zip(request.amounts.0) {
            *t += u64::from(a);
        }
        self.reload(i, old_load);
        AllocId { index, generation }
    }

    fn amounts_of(&self, allocation: &Allocation) -> &Amounts {
        self.shapes.get(allocation.shape)
    }

    fn allocation(&self, slot: u32) -> &Allocation {
        match &self.slots[slot as usize] {
            Slot::Used { allocation, .. } => allocation,
            Slot::Free { .. } => unreachable!("nodes list live allocations only"),
        }
    }

    /// The task, node and amounts of a live allocation.
    pub fn lookup(&self, alloc: AllocId) -> Option<Released> {
        match self.slots.get(alloc.index as usize) {
            Some(Slot::Used { generation, allocation }) if *generation == alloc.generation => Some(Released {
                alloc,
                node: NodeIdx(allocation.node),
                task: allocation.task,
                amounts: *self.amounts_of(allocation),
            }),
            _ => None,
        }
    }

    /// Releases an allocation, restoring exactly what it took. A stale handle is refused.
    pub fn release(&mut self, alloc: AllocId) -> Result<Released, PoolError> {
        let released = self.lookup(alloc).ok_or(PoolError::UnknownAllocation(alloc))?;
        let Slot::Used { allocation, .. } = std::mem::replace(
            &mut self.slots[alloc.index as usize],
            Slot::Free { generation: alloc.generation.wrapping_add(1), next_free: self.free_slot },
        ) else {
            unreachable!("lookup found it used");
        };
        self.free_slot = Some(alloc.index);
        self.live -= 1;
        let i = allocation.node as usize;
        let old_load = self.load(NodeIdx(allocation.node));
        let node = &mut self.nodes[i];
        let at = allocation.slot_in_node as usize;
        assert_eq!(node.allocs[at], alloc.index, "the node lists the allocation where it says");
        node.allocs.swap_remove(at);
        node.allocated = node.allocated.minus(&released.amounts);
        if let Some(&moved) = node.allocs.get(at)
            && let Slot::Used { allocation, .. } = &mut self.slots[moved as usize]
        {
            allocation.slot_in_node = at as u32;
        }
        self.shapes.release(allocation.shape);
        for (t, a) in self.allocated_total.iter_mut().zip(released.amounts.0) {
            *t -= u64::from(a);
        }
        self.reload(i, old_load);
        Ok(released)
    }

    /// After node `i`'s allocations changed: the load sum and the index.
    fn reload(&mut self, i: usize, old_load: u32) {
        let new_load = self.load(NodeIdx(i as u32));
        self.load_sum = self.load_sum - u64::from(old_load) + u64::from(new_load);
        self.update(i);
    }

    fn leaf_summary(&self, i: usize) -> Summary {
        let node = &self.nodes[i];
        let eligible = node.state.takes_work() && !node.circuit_open;
        if !eligible {
            return Summary::EMPTY;
        }
        let load = dominant_share(&node.allocated, &node.spec.capacity);
        Summary {
            free_max: node.spec.capacity.minus(&node.allocated),
            capabilities: CapSet(node.spec.capabilities.0 | CapSet::ELIGIBLE),
            load_min: load,
            load_max: load,
        }
    }

    fn update(&mut self, i: usize) {
        let summary = self.leaf_summary(i);
        self.tree.set(i, summary);
        let node = &self.nodes[i];
        self.classes[node.class as usize].set(node.class_leaf as usize, summary);
    }

    fn scope(&self, scope: Scope) -> &Tree {
        match scope {
            Scope::All => &self.tree,
            Scope::Class(c) => &self.classes[c as usize],
        }
    }

    /// The capability mask a search uses: the request's plus eligibility.
    fn need(request: &Request) -> CapSet {
        CapSet(request.capabilities.0 | CapSet::ELIGIBLE)
    }

    /// The first node of `scope` in `ranges` (sorted and disjoint) at or after `start`, wrapping
    /// round, that fits `request`.
    pub fn first_fit(&self, scope: Scope, ranges: &[Range<usize>], start: usize, request: &Request) -> Option<NodeIdx> {
        let need = Self::need(request);
        let tree = self.scope(scope);
        let search =
            |window: Range<usize>| self.leftmost(tree, 1, 0, tree.leaves, &Bounds { ranges, window }, request, need);
        search(start..usize::MAX).or_else(|| search(0..start)).map(|i| NodeIdx(i as u32))
    }

    #[allow(clippy::too_many_arguments)] // A recursive search's state; a struct would only rename it.
    fn leftmost(
        &self,
        tree: &Tree,
        t: usize,
        lo: usize,
        hi: usize,
        bounds: &Bounds,
        request: &Request,
        need: CapSet,
    ) -> Option<usize> {
        if !tree.summary[t].may_fit(&request.amounts, need) || !bounds.touch(tree.span(lo, hi)) {
            return None;
        }
        if hi - lo == 1 {
            let i = tree.members[lo] as usize;
            return self.fits_index(i, request).then_some(i);
        }
        let mid = (lo + hi) / 2;
        self.leftmost(tree, 2 * t, lo, mid, bounds, request, need)
            .or_else(|| self.leftmost(tree, 2 * t + 1, mid, hi, bounds, request, need))
    }

    /// The least or most loaded node of `scope` in `ranges` (sorted and disjoint) that fits
    /// `request`; ties go to the lowest index.
    pub fn by_load(
        &self,
        scope: Scope,
        ranges: &[Range<usize>],
        order: LoadOrder,
        request: &Request,
    ) -> Option<NodeIdx> {
        let mut best: Option<(u32, usize)> = None;
        let bounds = Bounds { ranges, window: 0..usize::MAX };
        let tree = self.scope(scope);
        self.bound(tree, 1, 0, tree.leaves, &bounds, order, request, Self::need(request), &mut best);
        best.map(|(_, i)| NodeIdx(i as u32))
    }

    #[allow(clippy::too_many_arguments)] // As `leftmost`.
    fn bound(
        &self,
        tree: &Tree,
        t: usize,
        lo: usize,
        hi: usize,
        bounds: &Bounds,
        order: LoadOrder,
        request: &Request,
        need: CapSet,
        best: &mut Option<(u32, usize)>,
    ) {
        let s = &tree.summary[t];
        if !s.may_fit(&request.amounts, need) {
            return;
        }
        let span = tree.span(lo, hi);
        let first = span.start;
        if !bounds.touch(span) {
            return;
        }
        // Branch and bound on (load, index): a subtree whose best possible load, at its lowest
        // index, cannot beat the best found is skipped. Ties therefore go to the lowest index.
        let beats = |load: u32, index: usize, best: &Option<(u32, usize)>| match (order, best) {
            (_, None) => true,
            (LoadOrder::Least, Some((b, bi))) => (load, index) < (*b, *bi),
            (LoadOrder::Most, Some((b, bi))) => load > *b || (load == *b && index < *bi),
        };
        let bound = if order == LoadOrder::Least { s.load_min } else { s.load_max };
        if !beats(bound, first, best) {
            return;
        }
        if hi - lo == 1 {
            if self.fits_index(first, request) {
                *best = Some((bound, first));
            }
            return;
        }
        let mid = (lo + hi) / 2;
        let (left, right) = (&tree.summary[2 * t], &tree.summary[2 * t + 1]);
        // Visit the more promising child first so the bound tightens early.
        let right_first = match order {
            LoadOrder::Least => right.load_min < left.load_min,
            LoadOrder::Most => right.load_max > left.load_max,
        };
        let children = if right_first {
            [(2 * t + 1, mid, hi), (2 * t, lo, mid)]
        } else {
            [(2 * t, lo, mid), (2 * t + 1, mid, hi)]
        };
        for (child, lo, hi) in children {
            self.bound(tree, child, lo, hi, bounds, order, request, need, best);
        }
    }

    /// Appends to `out` up to `count` nodes of `scope` in `ranges` (sorted and disjoint) that fit
    /// `request`, in index order from `start`, wrapping round.
    #[allow(clippy::too_many_arguments)] // The search's inputs, each needed.
    pub fn sample(
        &self,
        scope: Scope,
        ranges: &[Range<usize>],
        start: usize,
        count: usize,
        request: &Request,
        out: &mut Vec<NodeIdx>,
    ) {
        let need = Self::need(request);
        let tree = self.scope(scope);
        for window in [start..usize::MAX, 0..start] {
            self.collect(tree, 1, 0, tree.leaves, &Bounds { ranges, window }, request, need, count, out);
        }
    }

    #[allow(clippy::too_many_arguments)] // As `leftmost`.
    fn collect(
        &self,
        tree: &Tree,
        t: usize,
        lo: usize,
        hi: usize,
        bounds: &Bounds,
        request: &Request,
        need: CapSet,
        count: usize,
        out: &mut Vec<NodeIdx>,
    ) {
        if out.len() >= count || !tree.summary[t].may_fit(&request.amounts, need) || !bounds.touch(tree.span(lo, hi)) {
            return;
        }
        if hi - lo == 1 {
            let i = tree.members[lo] as usize;
            if self.fits_index(i, request) {
                out.push(NodeIdx(i as u32));
            }
            return;
        }
        let mid = (lo + hi) / 2;
        self.collect(tree, 2 * t, lo, mid, bounds, request, need, count, out);
        self.collect(tree, 2 * t + 1, mid, hi, bounds, request, need, count, out);
    }

    /// Whether some node offers `request`'s capabilities and, resource by resource, has its
    /// capacity (whatever is allocated and whatever the nodes' states): O(1).
    pub fn could_ever_fit(&self, request: &Request) -> bool {
        self.capabilities_all.contains(request.capabilities) && self.capacity_max.covers(&request.amounts)
    }

    /// Whether anything in the whole pool could fit `request` by the index's bound; a cheap
    /// "certainly not" for unschedulable requests.
    pub fn may_fit_anywhere(&self, request: &Request) -> bool {
        self.tree.root().may_fit(&request.amounts, Self::need(request))
    }

    /// Preemption: the node in `ranges` where evicting the fewest, least important allocations of
    /// strictly lower priority makes `request` fit; `None` if there is none. Victims on a node
    /// are taken lowest priority first, newest first among equals. Candidates are ranked by the
    /// highest victim priority, then the number of victims, then node index. This scans the
    /// candidate nodes (O(n)); it runs only when nothing fits without preemption.
    pub fn preemption_plan(&self, ranges: &[Range<usize>], request: &Request) -> Option<(NodeIdx, Vec<AllocId>)> {
        let mut best: Option<((u32, usize, usize), Vec<u32>)> = None;
        for range in ranges {
            for i in range.start..range.end.min(self.nodes.len()) {
                let node = &self.nodes[i];
                let takes = node.state.takes_work() && !node.circuit_open;
                if !takes
                    || !node.spec.capabilities.contains(request.capabilities)
                    || !node.spec.capacity.covers(&request.amounts)
                {
                    continue;
                }
                let mut candidates: Vec<u32> =
                    node.allocs.iter().copied().filter(|&s| self.allocation(s).priority < request.priority).collect();
                if candidates.is_empty() {
                    continue;
                }
                candidates.sort_by_key(|&s| {
                    let a = self.allocation(s);
                    (a.priority, std::cmp::Reverse(a.sequence))
                });
                let mut victims = Vec::new();
                for slot in candidates {
                    victims.push(slot);
                    if self.free_for(i, request, &victims).covers(&request.amounts) {
                        let top = victims.iter().map(|&s| self.allocation(s).priority).max().unwrap_or(0);
                        let cost = (top, victims.len(), i);
                        if best.as_ref().is_none_or(|(b, _)| cost < *b) {
                            best = Some((cost, victims));
                        }
                        break;
                    }
                }
            }
        }
        best.map(|((_, _, i), victims)| {
            let ids = victims
                .into_iter()
                .map(|slot| match &self.slots[slot as usize] {
                    Slot::Used { generation, .. } => AllocId { index: slot, generation: *generation },
                    Slot::Free { .. } => unreachable!("victims are live"),
                })
                .collect();
            (NodeIdx(i as u32), ids)
        })
    }

    /// Utilisation of the cluster.
    pub fn utilization(&self) -> Utilization {
        let per_resource = self
            .capacity_total
            .iter()
            .zip(self.allocated_total.iter())
            .map(|(&c, &a)| if c == 0 { 0.0 } else { a as f64 / c as f64 })
            .collect();
        let n = self.nodes.len().max(1) as f64;
        Utilization {
            per_resource,
            node_mean: self.load_sum as f64 / f64::from(PPM) / n,
            node_max: (0..self.nodes.len()).map(|i| self.load(NodeIdx(i as u32))).max().unwrap_or(0) as f64
                / f64::from(PPM),
        }
    }

    /// Mean and maximum load of the nodes that may take work, in parts per million; cheap
    /// (maintained incrementally) for the mean of all nodes, read from the index for the max.
    pub fn load_mean_and_max(&self) -> (u32, u32) {
        let n = self.nodes.len().max(1) as u64;
        let root = self.tree.root();
        let max = if root.capabilities.contains(CapSet(CapSet::ELIGIBLE)) { root.load_max } else { 0 };
        ((self.load_sum / n) as u32, max)
    }

    /// An upper estimate of the heap memory the pool holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.nodes.capacity() * size_of::<Node>()
            + self
                .nodes
                .iter()
                .map(|n| n.allocs.capacity() * size_of::<u32>() + n.reservations.capacity() * size_of::<Reservation>())
                .sum::<usize>()
            + std::iter::once(&self.tree)
                .chain(&self.classes)
                .map(|t| t.summary.capacity() * size_of::<Summary>() + t.members.capacity() * size_of::<u32>())
                .sum::<usize>()
            + self.slots.capacity() * size_of::<Slot>()
            + self.shapes.memory_bytes()
    }
}

/// How full the cluster is.
#[derive(Clone, Debug, PartialEq)]
pub struct Utilization {
    /// Allocated over capacity for each resource kind, cluster-wide, in [`super::Catalog`] order.
    pub per_resource: Vec<f64>,
    /// Mean over nodes of each node's dominant share.
    pub node_mean: f64,
    /// Largest dominant share of any node.
    pub node_max: f64,
}
