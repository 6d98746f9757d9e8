//! Merging load results at the orchestrator: 100 nodes' results of a 30 s load (whole-load
//! histograms and a 30-second series each) into one. Target (issue 7): merging 100 node
//! histograms takes at most 10 ms (`merge/100-node-histograms`); the whole results, with their
//! series and from the wire, are measured too.

use criterion::{Criterion, criterion_group, criterion_main};
use dtest_core::measure::{LoadResult, Measure, Status};

/// A node's result: 30 s at 500 rps with a long-tailed latency spread.
fn node_result(node: u64) -> LoadResult {
    let mut m = Measure::new();
    let mut x = node.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..15_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let us = (500.0 / (1.0 - u).max(1e-6).powf(0.6)) as u64;
        m.record(i / 500, us / 10, us, Status::Http(200));
    }
    m.to_wire()
}

fn merge(c: &mut Criterion) {
    let results: Vec<LoadResult> = (0..100).map(node_result).collect();
    let mut group = c.benchmark_group("measure");
    group.bench_function("merge/100-nodes-from-wire", |b| {
        b.iter(|| {
            let mut total = Measure::new();
            for (i, r) in results.iter().enumerate() {
                let m = Measure::from_wire(r).expect("our own results read back");
                total.add(&m, i as u64 % 3);
            }
            std::hint::black_box(total.latency_ms())
        });
    });
    let measures: Vec<Measure> = results.iter().map(|r| Measure::from_wire(r).unwrap()).collect();
    // The figure: the 100 nodes' latency histograms into one.
    group.bench_function("merge/100-node-histograms", |b| {
        b.iter(|| {
            let mut total = Measure::new().corrected;
            for m in &measures {
                total.add(&m.corrected).expect("same bounds");
            }
            std::hint::black_box(total.value_at_quantile(0.99))
        });
    });
    group.bench_function("merge/100-nodes-decoded", |b| {
        b.iter(|| {
            let mut total = Measure::new();
            for m in &measures {
                total.add(m, 0);
            }
            std::hint::black_box(total.latency_ms())
        });
    });
    group.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
