//! Heartbeat handling speed: per heartbeat, a phi accrual update, a health score and the
//! debounced state, over 1,000 nodes. Target (issue 4): at least 1,000,000 per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dtest_core::health::{HealthConfig, HealthState, Metrics, NodeHealth, PhiConfig};

fn heartbeats(c: &mut Criterion) {
    const NODES: u64 = 1_000;
    const ROUNDS: u64 = 100;
    let mut group = c.benchmark_group("health");
    group.throughput(Throughput::Elements(NODES * ROUNDS));
    group.bench_function("heartbeat/1000-nodes", |b| {
        let mut nodes: Vec<NodeHealth> =
            (0..NODES).map(|_| NodeHealth::new(PhiConfig::default(), HealthConfig::default())).collect();
        let mut now = 0u64;
        b.iter(|| {
            let mut not_healthy = 0u32;
            for round in 0..ROUNDS {
                now += 1_000;
                for (i, node) in nodes.iter_mut().enumerate() {
                    let at = now + (i as u64 * 7) % 50; // a little jitter
                    let cpu = ((i as u64 + round) % 100) as f64 / 100.0;
                    let metrics = Metrics { cpu, memory: 0.5, disk: 0.3, network: 0.1, task_error_rate: 0.0 };
                    not_healthy += u32::from(node.heartbeat(at, metrics) != HealthState::Healthy);
                }
            }
            std::hint::black_box(not_healthy)
        });
    });
    group.finish();
}

criterion_group!(benches, heartbeats);
criterion_main!(benches);
