//! Heartbeat handling speed: a phi accrual update plus a phi evaluation per heartbeat, over
//! 1,000 nodes. Target (issue 4): at least 1,000,000 heartbeats per second, health score
//! included once it exists.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dtest_core::health::{PhiAccrual, PhiConfig};

fn heartbeats(c: &mut Criterion) {
    const NODES: u64 = 1_000;
    const ROUNDS: u64 = 100;
    let mut group = c.benchmark_group("health");
    group.throughput(Throughput::Elements(NODES * ROUNDS));
    group.bench_function("heartbeat+phi/1000-nodes", |b| {
        let mut detectors: Vec<PhiAccrual> = (0..NODES).map(|_| PhiAccrual::new(PhiConfig::default())).collect();
        let mut now = 0u64;
        b.iter(|| {
            let mut suspected = 0u32;
            for _ in 0..ROUNDS {
                now += 1_000;
                for (i, d) in detectors.iter_mut().enumerate() {
                    let at = now + (i as u64 * 7) % 50; // a little jitter
                    d.heartbeat(at);
                    suspected += u32::from(!d.is_available(at));
                }
            }
            std::hint::black_box(suspected)
        });
    });
    group.finish();
}

criterion_group!(benches, heartbeats);
criterion_main!(benches);
