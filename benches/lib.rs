//! Shared fixtures for the benchmarks under `benches/benches/`: placement clusters and tasks, and
//! the counting allocator of the budget guard ([`counting`]).

pub mod counting;

use dtest_core::placement::{Amounts, CapSet, Locality, NodeSpec, Pool, Request, TaskKey};
use dtest_core::scenario::TaskSpecId;

/// Node types of the heterogeneous benchmark cluster: (cpu_millis, memory_mb, gpus, capabilities).
const NODE_TYPES: [(u32, u32, u32, u64); 5] = [
    (4_000, 8_192, 0, 0b001),
    (8_000, 16_384, 0, 0b011),
    (16_000, 32_768, 0, 0b011),
    (32_000, 131_072, 4, 0b111),
    (2_000, 4_096, 0, 0b001),
];

/// A cluster of `nodes` nodes in groups of 50 identical nodes, cycling through five node types,
/// four regions and three zones per region.
pub fn cluster(nodes: usize) -> Pool {
    let specs = (0..nodes)
        .map(|i| {
            let group = i / 50;
            let (cpu, mem, gpus, caps) = NODE_TYPES[group % NODE_TYPES.len()];
            let mut capacity = Amounts::ZERO;
            capacity.0[0] = cpu;
            capacity.0[1] = mem;
            capacity.0[4] = gpus;
            NodeSpec {
                capacity,
                capabilities: CapSet(caps),
                region: Some((group % 4) as u16),
                zone: Some((group % 12) as u16),
            }
        })
        .collect();
    Pool::new(specs)
}

/// `count` task requests of mixed sizes; one in eight needs a capability, one in four prefers a
/// region. Deterministic.
pub fn tasks(count: usize) -> Vec<Request> {
    (0..count)
        .map(|i| {
            let mut amounts = Amounts::ZERO;
            amounts.0[0] = 25 + (i as u32 * 37) % 75;
            amounts.0[1] = 64 + (i as u32 * 53) % 192;
            Request {
                task: TaskKey(i as u64),
                spec: Some(TaskSpecId((i % 4) as u32)),
                amounts,
                capabilities: CapSet(if i % 8 == 0 { 0b010 } else { 0 }),
                priority: (i % 3) as u32,
                locality: Locality { region: (i % 4 == 0).then_some((i / 4 % 4) as u16), zone: None, strict: false },
                now_ms: 0,
                until_ms: None,
            }
        })
        .collect()
}
