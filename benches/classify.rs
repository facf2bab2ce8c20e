//! How the time `opguard::mps::is_mps_error` takes grows with the message:
//! texts of 1 KB to 4 MB made of near-misses (words that almost name MPS, or
//! NVIDIA's MPS daemon), judged whole. Criterion reports the throughput in
//! bytes per second for each size; the same throughput at every size is what
//! linear time looks like (BENCHMARKS.md).
//!
//!     cargo bench --bench classify

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use opguard::mps::is_mps_error;

/// Near-misses of `bytes` bytes (or a little less): no MPS error in it.
fn near_misses(bytes: usize) -> String {
    const UNIT: &str = "AutogradMPS timestamps mpsc control daemo ";
    UNIT.repeat(bytes / UNIT.len())
}

fn classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("is_mps_error");
    for kb in [1, 64, 1024, 4096] {
        let text = near_misses(kb * 1024);
        assert!(
            !is_mps_error(&text),
            "a near-miss was taken for an MPS error"
        );
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("near_misses_kb", kb), &text, |b, text| {
            b.iter(|| is_mps_error(black_box(text)));
        });
    }
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
