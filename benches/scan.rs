//! The fused selective scan at the default training shape of one layer
//! (B=16, D=256, L=128, N=16, f32): forward alone, and forward + backward.
//!
//! Run: `cargo bench -p mamba-benches --bench scan`. Throughput is reported as
//! B*D*L*N state updates per second (one update = one exp and two multiply-adds).

use criterion::{Criterion, Throughput};
use mamba_engine::{
    ops::scan::{selective_scan, ScanArgs},
    DType, Rng, Tensor,
};
use std::hint::black_box;

const B: usize = 16;
const D: usize = 256;
const L: usize = 128;
const N: usize = 16;

fn benches(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut r =
        |shape: &[usize], lo: f64, hi: f64| Tensor::rand_uniform(shape, lo, hi, DType::F32, &mut rng).requires_grad();
    let x = [
        r(&[B, D, L], -1.0, 1.0),
        r(&[B, D, L], -2.0, 1.0),
        r(&[D, N], -2.0, -0.1),
        r(&[B, N, L], -1.0, 1.0),
        r(&[B, N, L], -1.0, 1.0),
        r(&[D], -1.0, 1.0),
        r(&[B, D, L], -2.0, 2.0),
        r(&[D], -1.0, 0.5),
    ];
    let args = ScanArgs::mamba(&x, 64).unwrap();
    let mut group = c.benchmark_group("selective_scan_f32 (elements = state updates)");
    group.throughput(Throughput::Elements((B * D * L * N) as u64));
    group.bench_function("forward", |b| b.iter(|| black_box(selective_scan(&args).unwrap().out)));
    group.bench_function("forward+backward", |b| {
        b.iter(|| {
            let out = selective_scan(&args).unwrap().out;
            out.sum_all().unwrap().backward().unwrap();
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
