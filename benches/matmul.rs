//! f32 matrix multiplication throughput at square sizes 512, 1024, 2048.
//!
//! Run: `cargo bench -p mamba-benches --bench matmul` (rayon uses all cores; set
//! RAYON_NUM_THREADS to change that). Criterion reports "elements/s" with one element =
//! one flop (2·n³ per product), i.e. its `Gelem/s` reads as GFLOP/s. A plain summary
//! (median wall time over a few runs, in GFLOP/s) is printed at the end, to put next to
//! `python3 benches/openblas_matmul.py`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use mamba_engine::ops::matmul::cpu::{matmul, MatStrides};

const SIZES: [usize; 3] = [512, 1024, 2048];

/// Two deterministic (n, n) row-major operands with values in [-0.5, 0.5).
fn operands(n: usize) -> (Vec<f32>, Vec<f32>) {
    let fill = |seed: usize| (0..n * n).map(|i| ((i * seed) % 1000) as f32 / 1000.0 - 0.5).collect();
    (fill(7919), fill(104_729))
}

/// out = a · b for square row-major n x n matrices.
fn square(n: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    let s = MatStrides { batch: n * n, row: n, col: 1 };
    matmul(1, n, n, n, a, s, b, s, out);
}

fn criterion_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32 (elements = flops)");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for n in SIZES {
        let (a, b) = operands(n);
        let mut out = vec![0f32; n * n];
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_function(BenchmarkId::from_parameter(n), |bench| {
            bench.iter(|| square(n, black_box(&a), black_box(&b), black_box(&mut out)))
        });
    }
    group.finish();
}

/// Median GFLOP/s over a few timed runs, after one warm-up run.
fn summary() {
    println!("\nCPU matmul f32, {} rayon threads (median of runs):", rayon::current_num_threads());
    for n in SIZES {
        let (a, b) = operands(n);
        let mut out = vec![0f32; n * n];
        square(n, &a, &b, &mut out);
        let runs = match n {
            512 => 50,
            1024 => 20,
            _ => 7,
        };
        let mut secs: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                square(n, &a, &b, &mut out);
                t.elapsed().as_secs_f64()
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        let gflops = |s: f64| 2.0 * (n as f64).powi(3) / s / 1e9;
        println!(
            "  f32 {n:>4}x{n:<4}: {:7.1} GFLOP/s median, {:7.1} best (of {runs})",
            gflops(secs[runs / 2]),
            gflops(secs[0])
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once in test mode: skip the summary there.
    if !std::env::args().any(|arg| arg == "--test" || arg == "--list") {
        summary();
    }
}
