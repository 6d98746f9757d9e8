//! Property tests of placement against an independent model of the cluster.
//!
//! The model keeps its own list of live allocations and decides "fits" from the definitions
//! (capacity minus allocations minus capacity reserved for others, capabilities, eligibility),
//! without the pool's index. After every step of a random schedule of placements, releases,
//! node state changes and reservations, the pool must agree with the model.

use dtest_core::placement::{
    Amounts, CapSet, Locality, NodeIdx, NodeSpec, NodeState, Observations, Placement, Placer, Pool, Request,
    Reservation, TaskKey,
};
use dtest_core::scenario::{Allocation, Distribution, TaskSpecId, Weights};
use proptest::prelude::*;

fn amounts(cpu: u32, mem: u32, gpus: u32) -> Amounts {
    let mut a = Amounts::ZERO;
    a.0[0] = cpu;
    a.0[1] = mem;
    a.0[4] = gpus;
    a
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (0u32..9, 0u32..9, 0u32..3, 0u64..8, 0u16..2, 0u16..3).prop_map(|(cpu, mem, gpus, caps, region, zone)| NodeSpec {
        capacity: amounts(cpu * 1000, mem * 1024, gpus),
        capabilities: CapSet(caps),
        region: Some(region),
        zone: Some(zone),
    })
}

#[derive(Clone, Debug)]
enum Step {
    Place { cpu: u32, mem: u32, gpus: u32, caps: u64, priority: u32, spec: u32, locality: Option<(u16, bool)> },
    Release(usize),
    SetState(usize, NodeState),
    CircuitOpen(usize, bool),
    Reserve { node: usize, spec: u32, cpu: u32, from: u64, len: u64 },
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let state = prop::sample::select(vec![
        NodeState::Healthy,
        NodeState::Degraded,
        NodeState::Unhealthy,
        NodeState::Suspected,
        NodeState::Dead,
    ]);
    prop_oneof![
        8 => (0u32..4, 0u32..4, 0u32..2, 0u64..8, 0u32..4, 0u32..3, proptest::option::of((0u16..2, any::<bool>())))
            .prop_map(|(cpu, mem, gpus, caps, priority, spec, locality)| Step::Place {
                cpu: cpu * 500, mem: mem * 512, gpus, caps, priority, spec, locality,
            }),
        3 => any::<usize>().prop_map(Step::Release),
        1 => (any::<usize>(), state).prop_map(|(n, s)| Step::SetState(n, s)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(n, o)| Step::CircuitOpen(n, o)),
        1 => (any::<usize>(), 0u32..3, 0u32..4, 0u64..100, 1u64..100)
            .prop_map(|(node, spec, cpu, from, len)| Step::Reserve { node, spec, cpu: cpu * 500, from, len }),
        1 => (1u64..50).prop_map(Step::Tick),
    ]
}

/// The model: what the pool should be, computed the slow, obvious way.
struct Model {
    nodes: Vec<NodeSpec>,
    state: Vec<NodeState>,
    circuit_open: Vec<bool>,
    reservations: Vec<(usize, Reservation)>,
    /// Live allocations: (node, request).
    live: Vec<(usize, Request, dtest_core::placement::AllocId)>,
}

impl Model {
    fn used(&self, node: usize, except_owner_of: Option<TaskSpecId>) -> Amounts {
        let mut used = Amounts::ZERO;
        for (n, r, _) in &self.live {
            if *n == node && (except_owner_of.is_none() || r.spec == except_owner_of) {
                used = used.plus(&r.amounts);
            }
        }
        used
    }

    fn fits(&self, node: usize, request: &Request) -> bool {
        let spec = &self.nodes[node];
        let eligible = self.state[node].takes_work() && !self.circuit_open[node];
        if !eligible || !spec.capabilities.contains(request.capabilities) {
            return false;
        }
        let mut free = spec.capacity.saturating_minus(&self.used(node, None));
        let until = request.until_ms.unwrap_or(u64::MAX);
        for (n, r) in &self.reservations {
            if *n == node && r.from_ms < until && request.now_ms < r.until_ms && request.spec != Some(r.owner) {
                let owner_uses = self.used(node, Some(r.owner));
                free = free.saturating_minus(&r.amounts.saturating_minus(&owner_uses));
            }
        }
        free.covers(&request.amounts)
    }
}

/// Runs a schedule and returns the placement decisions, checking the model at every step.
fn run(
    nodes: &[NodeSpec],
    steps: &[Step],
    distribution: Distribution,
    allocation: Allocation,
    preemption: bool,
    seed: u64,
) -> Result<Vec<Option<u32>>, TestCaseError> {
    let mut pool = Pool::new(nodes.to_vec());
    let mut placer = Placer::new(&pool, distribution, allocation, Weights::default(), preemption, seed);
    let mut model = Model {
        nodes: nodes.to_vec(),
        state: vec![NodeState::Healthy; nodes.len()],
        circuit_open: vec![false; nodes.len()],
        reservations: Vec::new(),
        live: Vec::new(),
    };
    let mut now = 0u64;
    let mut decisions = Vec::new();
    let mut next_task = 0u64;
    let mut requeued: Vec<TaskKey> = Vec::new();
    for step in steps {
        match step {
            Step::Place { cpu, mem, gpus, caps, priority, spec, locality } => {
                next_task += 1;
                let request = Request {
                    task: TaskKey(next_task),
                    spec: Some(TaskSpecId(*spec)),
                    amounts: amounts(*cpu, *mem, *gpus),
                    capabilities: CapSet(*caps),
                    priority: *priority,
                    locality: locality.map_or(Locality::default(), |(region, strict)| Locality {
                        region: Some(region),
                        zone: None,
                        strict,
                    }),
                    now_ms: now,
                    until_ms: Some(now + 20),
                };
                let fits_somewhere: Vec<usize> = (0..nodes.len()).filter(|&n| model.fits(n, &request)).collect();
                let strict_region = request.locality.strict.then_some(request.locality.region).flatten();
                let fits_allowed: Vec<usize> = fits_somewhere
                    .iter()
                    .copied()
                    .filter(|&n| strict_region.is_none_or(|r| nodes[n].region == Some(r)))
                    .collect();
                match placer.place(&mut pool, &request, &Observations { failure_rate: 0.0, queue_len: 0 }) {
                    Placement::Placed { node, alloc } => {
                        let n = node.0 as usize;
                        prop_assert!(
                            model.fits(n, &request),
                            "placed on node {n}, which the model says cannot take it"
                        );
                        prop_assert!(nodes[n].capabilities.contains(request.capabilities));
                        if let Some(r) = strict_region {
                            prop_assert_eq!(nodes[n].region, Some(r), "a strict locality was left");
                        }
                        if distribution == Distribution::Locality && allocation == Allocation::FirstFit {
                            // First fit within the first tier that has room.
                            let tier: Vec<usize> =
                                fits_allowed.iter().copied().filter(|&m| nodes[m].region == nodes[n].region).collect();
                            prop_assert_eq!(tier.first().copied(), Some(n));
                        }
                        model.live.push((n, request.clone(), alloc));
                        decisions.push(Some(node.0));
                    }
                    Placement::Preempted { node, alloc, evicted } => {
                        prop_assert!(preemption);
                        for e in &evicted {
                            let at = model.live.iter().position(|(_, _, a)| *a == e.alloc);
                            prop_assert!(at.is_some(), "evicted an allocation the model does not know");
                            let (_, victim, _) = model.live.remove(at.unwrap_or_default());
                            prop_assert!(victim.priority < request.priority, "evicted equal or higher priority");
                            prop_assert_eq!(victim.task, e.task);
                            requeued.push(e.task);
                        }
                        let n = node.0 as usize;
                        prop_assert!(fits_somewhere.is_empty() || fits_allowed.is_empty(), "preempted although it fit");
                        prop_assert!(model.fits(n, &request));
                        model.live.push((n, request.clone(), alloc));
                        decisions.push(Some(node.0));
                    }
                    Placement::Unschedulable(_) => {
                        prop_assert!(fits_allowed.is_empty(), "unplaced although nodes {fits_allowed:?} fit");
                        decisions.push(None);
                    }
                }
            }
            Step::Release(k) => {
                if !model.live.is_empty() {
                    let (n, request, alloc) = model.live.remove(k % model.live.len());
                    let before = pool.allocated(NodeIdx(n as u32));
                    let released = pool.release(alloc).expect("a live allocation releases");
                    prop_assert_eq!(released.task, request.task);
                    prop_assert_eq!(pool.allocated(NodeIdx(n as u32)), before.minus(&request.amounts));
                    prop_assert!(pool.release(alloc).is_err(), "a second release of the same handle is refused");
                }
            }
            Step::SetState(n, state) => {
                let n = n % nodes.len();
                pool.set_state(NodeIdx(n as u32), *state).expect("known node");
                model.state[n] = *state;
            }
            Step::CircuitOpen(n, open) => {
                let n = n % nodes.len();
                pool.set_circuit_open(NodeIdx(n as u32), *open).expect("known node");
                model.circuit_open[n] = *open;
            }
            Step::Reserve { node, spec, cpu, from, len } => {
                let n = node % nodes.len();
                let mut held = amounts(*cpu, 0, 0);
                held = held.min(&nodes[n].capacity);
                let r = Reservation {
                    owner: TaskSpecId(*spec),
                    amounts: held,
                    from_ms: now + from,
                    until_ms: now + from + len,
                };
                pool.reserve(NodeIdx(n as u32), r.clone()).expect("a reservation within capacity");
                model.reservations.push((n, r));
            }
            Step::Tick(ms) => now += ms,
        }
        // The pool's books match the model's, and nothing is over-committed.
        for (n, spec) in nodes.iter().enumerate() {
            let used = model.used(n, None);
            prop_assert_eq!(pool.allocated(NodeIdx(n as u32)), used);
            prop_assert!(spec.capacity.covers(&used), "node {n} over-committed");
        }
        prop_assert_eq!(pool.allocations() as usize, model.live.len());
    }
    // No task is lost: every task is live, released by the schedule, unplaced, or requeued.
    prop_assert!(requeued.iter().all(|t| model.live.iter().all(|(_, r, _)| r.task != *t)));
    Ok(decisions)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn placements_keep_every_invariant(
        nodes in prop::collection::vec(node_spec(), 1..12),
        steps in prop::collection::vec(step(), 1..80),
        distribution in prop::sample::select(Distribution::ALL.to_vec()),
        allocation in prop::sample::select(Allocation::ALL.to_vec()),
        preemption in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let first = run(&nodes, &steps, distribution, allocation, preemption, seed)?;
        let second = run(&nodes, &steps, distribution, allocation, preemption, seed)?;
        prop_assert_eq!(first, second, "same inputs and seed, different placements");
    }

    #[test]
    fn first_fit_places_whatever_fits_on_the_lowest_fitting_node(
        nodes in prop::collection::vec(node_spec(), 1..12),
        requests in prop::collection::vec((0u32..4, 0u32..4, 0u64..8), 1..60),
    ) {
        let mut pool = Pool::new(nodes.clone());
        let mut placer = Placer::new(&pool, Distribution::RoundRobin, Allocation::FirstFit, Weights::default(), false, 0);
        for (i, (cpu, mem, caps)) in requests.into_iter().enumerate() {
            let request = Request {
                task: TaskKey(i as u64),
                spec: None,
                amounts: amounts(cpu * 500, mem * 512, 0),
                capabilities: CapSet(caps),
                priority: 0,
                locality: Locality::default(),
                now_ms: 0,
                until_ms: None,
            };
            let lowest = (0..nodes.len()).find(|&n| {
                let free = nodes[n].capacity.minus(&pool.allocated(NodeIdx(n as u32)));
                nodes[n].capabilities.contains(request.capabilities) && free.covers(&request.amounts)
            });
            let placed = placer.allocate_any(&mut pool, &request).map(|(node, _)| node.0 as usize);
            prop_assert_eq!(placed, lowest);
        }
    }
}

#[test]
fn a_pool_of_10000_nodes_with_100000_tasks_stays_under_16_mb() {
    let nodes: Vec<NodeSpec> = (0..10_000u32)
        .map(|i| NodeSpec {
            capacity: amounts(16_000, 32_768, u32::from(i % 5 == 0)),
            capabilities: CapSet(u64::from(i / 50 % 4)),
            region: Some((i / 500) as u16),
            zone: Some((i / 100) as u16),
        })
        .collect();
    let mut pool = Pool::new(nodes);
    let mut placer = Placer::new(&pool, Distribution::RoundRobin, Allocation::FirstFit, Weights::default(), false, 1);
    for i in 0..100_000u64 {
        let request = Request {
            task: TaskKey(i),
            spec: None,
            amounts: amounts(100, 128, 0),
            capabilities: CapSet(0),
            priority: 0,
            locality: Locality::default(),
            now_ms: 0,
            until_ms: None,
        };
        let placed = placer.place(&mut pool, &request, &Observations::default());
        assert!(matches!(placed, Placement::Placed { .. }), "task {i}: {placed:?}");
    }
    let bytes = pool.memory_bytes();
    assert!(bytes <= 16 << 20, "the pool holds {bytes} bytes, above 16 MiB");
}
