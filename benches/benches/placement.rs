//! Placement speed: 100,000 tasks onto 1,000 and onto 10,000 heterogeneous nodes, per strategy.
//!
//! Targets (issue 3): round_robin and random at least 2,000,000 placements/s; least_loaded,
//! first_fit and best_fit at least 500,000/s; weighted, adaptive, capability, locality and
//! balanced at least 200,000/s; the cost per placement at 10,000 nodes at most 3 times the cost
//! at 1,000. Each iteration places all tasks into a fresh pool (the copy is not timed).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dtest_benches::{cluster, tasks};
use dtest_core::placement::{Observations, Placement, Placer};
use dtest_core::scenario::{Allocation, Distribution, Weights};

const TASKS: usize = 100_000;

fn placement(c: &mut Criterion) {
    let requests = tasks(TASKS);
    for nodes in [1_000, 10_000] {
        let pool = cluster(nodes);
        let mut group = c.benchmark_group(format!("placement/{nodes}-nodes"));
        group.throughput(Throughput::Elements(TASKS as u64));
        group.sample_size(10);
        let distributions = [
            ("round_robin", Distribution::RoundRobin),
            ("random", Distribution::Random),
            ("least_loaded", Distribution::LeastLoaded),
            ("weighted", Distribution::Weighted),
            ("adaptive", Distribution::Adaptive),
            ("capability", Distribution::Capability),
            ("locality", Distribution::Locality),
        ];
        for (name, distribution) in distributions {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        (
                            pool.clone(),
                            Placer::new(&pool, distribution, Allocation::FirstFit, Weights::default(), false, 7),
                        )
                    },
                    |(mut pool, mut placer)| {
                        let observed = Observations::default();
                        let placed = requests
                            .iter()
                            .filter(|r| !matches!(placer.place(&mut pool, r, &observed), Placement::Unschedulable(_)))
                            .count();
                        assert_eq!(placed, TASKS, "the benchmark cluster fits every task");
                    },
                    BatchSize::PerIteration,
                );
            });
        }
        let allocations = [
            ("first_fit", Allocation::FirstFit),
            ("best_fit", Allocation::BestFit),
            ("balanced", Allocation::Balanced),
        ];
        for (name, allocation) in allocations {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        (
                            pool.clone(),
                            Placer::new(&pool, Distribution::LeastLoaded, allocation, Weights::default(), false, 7),
                        )
                    },
                    |(mut pool, mut placer)| {
                        let placed = requests.iter().filter(|r| placer.allocate_any(&mut pool, r).is_some()).count();
                        assert_eq!(placed, TASKS, "the benchmark cluster fits every task");
                    },
                    BatchSize::PerIteration,
                );
            });
        }
        group.finish();
    }
}

criterion_group!(benches, placement);
criterion_main!(benches);
