//! Simulation speed. Targets (issue 13, release build, this 2-core machine): `partition.json`
//! (120 nodes, up to 600 simulated seconds) in at most 0.15 s; `scale-1000.json` (1,000 nodes)
//! in at most 4 s; swarm sweeps of `partition.json` at 700 seeds a minute or more on two cores.
//! Their memory is guarded by `budgets.rs`, whose figures do not depend on the machine.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dtest_core::scenario::{self, Scenario};
use dtest_sim::sweep::sweep;
use dtest_sim::{SimOptions, simulate};

fn load(name: &str) -> Scenario {
    let path = format!("{}/../scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
    scenario::parse(&std::fs::read(&path).expect("read a shipped scenario")).expect("valid")
}

fn simulation(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    for name in ["partition", "scale-1000"] {
        let scenario = load(name);
        group.bench_function(name, |b| {
            b.iter(|| simulate(&scenario, &SimOptions { seed: 42, ..SimOptions::default() }).expect("simulable"));
        });
    }
    let partition = load("partition");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    group.throughput(Throughput::Elements(20));
    group.bench_function("partition-swarm-sweep-20-seeds", |b| {
        let swarm = SimOptions { swarm: true, ..SimOptions::default() };
        b.iter(|| sweep(&partition, 0..20, &swarm, threads, &|_| {}).expect("simulable"));
    });
    group.finish();
}

criterion_group!(benches, simulation);
criterion_main!(benches);
