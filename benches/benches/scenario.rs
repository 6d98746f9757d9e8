//! Scenario parsing speed: bytes to a validated `Scenario`, for the shipped scenarios.
//!
//! `cargo bench -p dtest-benches --bench scenario` prints throughput in bytes per second.
//! Parsing happens once per run, so the bar is only that it never becomes noticeable.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dtest_core::scenario;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("scenario/parse");
    for name in ["partition", "scale-1000", "load-patterns"] {
        let path = format!("{}/../scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).expect("read a shipped scenario");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| scenario::parse(std::hint::black_box(&bytes)).expect("valid")));
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
