//! Elementwise throughput: `silu` (unary) and `add` (binary) on f32 tensors, as GB/s of
//! memory traffic (unary: read 4 + write 4 bytes per element; binary: 8 + 4).
//!
//! Run: `cargo bench -p mamba-benches --bench elementwise`. The copy floor of this
//! machine (what any elementwise op can at best reach) is printed alongside, measured
//! in the same run as a plain `Vec` clone of the same size.

use criterion::{BenchmarkId, Criterion, Throughput};
use mamba_engine::{DType, Rng, Tensor};
use std::hint::black_box;

const SIZES: [usize; 2] = [1 << 20, 1 << 24];

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise_f32 (bytes moved)");
    for &n in &SIZES {
        let mut rng = Rng::new(1);
        let x = Tensor::randn(&[n], 0.0, 1.0, DType::F32, &mut rng);
        let y = Tensor::randn(&[n], 0.0, 1.0, DType::F32, &mut rng);
        let raw = x.to_vec::<f32>().unwrap();
        group.throughput(Throughput::Bytes((8 * n) as u64));
        group.bench_with_input(BenchmarkId::new("copy floor (Vec clone)", n), &n, |b, _| {
            b.iter(|| black_box(raw.clone()))
        });
        group.bench_with_input(BenchmarkId::new("silu", n), &n, |b, _| b.iter(|| black_box(x.silu().unwrap())));
        group.throughput(Throughput::Bytes((12 * n) as u64));
        group.bench_with_input(BenchmarkId::new("add", n), &n, |b, _| b.iter(|| black_box(x.add(&y).unwrap())));
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
