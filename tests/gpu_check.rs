//! Every GPU kernel against its CPU twin, on the GPU machine: fresh random inputs each
//! run (the seed is printed), outputs poisoned with NaN before each launch (so an element
//! the kernel forgot fails), then CUDA-event timing (median of 20 after warm-up) and the
//! bandwidth each kernel reaches. Exits non-zero if any kernel disagrees.
//!
//! Build here and run there: see docs/GPU.md (`bash kernels/tools/gpu-run.sh`).

use mamba_engine::{
    cpu::elementwise::{binary, unary, BinaryOp, UnaryOp},
    cpu::matmul::{matmul, MatStrides},
    shape::Layout,
    Rng,
};
use mamba_kernels::{cust::prelude::*, launch::Gpu};
use std::error::Error;

/// Element tolerance: |gpu - cpu| <= TOL * max(1, |cpu|) (f32, different libm).
const TOL: f64 = 1e-5;

struct Row {
    kernel: String,
    err: f64,
    ok: bool,
    us: f64,
    gbps: f64,
}

fn worst(gpu: &[f32], cpu: &[f32]) -> (f64, bool) {
    let mut worst = 0.0f64;
    let mut ok = true;
    for (&g, &c) in gpu.iter().zip(cpu) {
        let (g, c) = (g as f64, c as f64);
        let e = (g - c).abs() / c.abs().max(1.0);
        if !e.is_finite() || e > TOL {
            ok = false;
        }
        worst = worst.max(if e.is_finite() { e } else { f64::INFINITY });
    }
    (worst, ok)
}

/// Median time in microseconds of `f` over 20 runs after 3 warm-ups, timed with events.
fn time(gpu: &Gpu, mut f: impl FnMut() -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
    if std::env::var_os("GPU_CHECK_NO_TIMING").is_some() {
        return Ok(f64::NAN); // under compute-sanitizer: correctness only
    }
    for _ in 0..3 {
        f()?;
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let (start, stop) = (Event::new(EventFlags::DEFAULT)?, Event::new(EventFlags::DEFAULT)?);
        start.record(&gpu.stream)?;
        f()?;
        stop.record(&gpu.stream)?;
        stop.synchronize()?;
        times.push(stop.elapsed_time_f32(&start)? as f64 * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), Box<dyn Error>> {
    let gpu = Gpu::new()?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    println!("gpu-check: seed {seed}");
    let mut rng = Rng::new(seed);
    let n = (1 << 20) + 3; // not a multiple of the block size
                           // for timing (small under the sanitizer, which skips timing anyway)
    let big = if std::env::var_os("GPU_CHECK_NO_TIMING").is_some() { 1 << 10 } else { 1 << 24 };
    let mut rows = Vec::new();

    let unary_ops = [
        ("neg", UnaryOp::Neg, 0),
        ("exp", UnaryOp::Exp, 1),
        ("log", UnaryOp::Log, 2),
        ("sqrt", UnaryOp::Sqrt, 3),
        ("rsqrt", UnaryOp::Rsqrt, 4),
        ("sigmoid", UnaryOp::Sigmoid, 5),
        ("silu", UnaryOp::Silu, 6),
        ("softplus", UnaryOp::Softplus, 7),
        ("tanh", UnaryOp::Tanh, 8),
        ("powf", UnaryOp::Powf(2.5), 9),
        ("affine", UnaryOp::Affine { mul: -1.5, add: 0.25 }, 10),
    ];
    for (name, op, code) in unary_ops {
        let positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Powf(_));
        let (lo, hi) = if positive { (0.01, 10.0) } else { (-10.0, 10.0) };
        let x: Vec<f32> = (0..n).map(|_| (lo + (hi - lo) * rng.uniform()) as f32).collect();
        let (p0, p1) = match op {
            UnaryOp::Powf(p) => (p as f32, 0.0),
            UnaryOp::Affine { mul, add } => (mul as f32, add as f32),
            _ => (0.0, 0.0),
        };
        let dx = DeviceBuffer::from_slice(&x)?;
        let mut dout = DeviceBuffer::from_slice(&vec![f32::NAN; n])?;
        gpu.unary_f32(code, p0, p1, &dx, &mut dout)?;
        gpu.stream.synchronize()?;
        let got = dout.as_host_vec()?;
        let want = unary(op, &x, &Layout::contiguous(&[n]));
        let (err, ok) = worst(&got, &want);
        let bx = DeviceBuffer::from_slice(&vec![0.5f32; big])?;
        let mut bout = DeviceBuffer::from_slice(&vec![0f32; big])?;
        let us = time(&gpu, || Ok(gpu.unary_f32(code, p0, p1, &bx, &mut bout)?))?;
        rows.push(Row { kernel: format!("unary_f32 {name}"), err, ok, us, gbps: (8 * big) as f64 / us / 1e3 });
    }

    let binary_ops =
        [("add", BinaryOp::Add, 0), ("sub", BinaryOp::Sub, 1), ("mul", BinaryOp::Mul, 2), ("div", BinaryOp::Div, 3)];
    for (name, op, code) in binary_ops {
        let a: Vec<f32> = (0..n).map(|_| (rng.uniform() * 20.0 - 10.0) as f32).collect();
        let b: Vec<f32> = (0..n).map(|_| (rng.uniform() * 9.0 + 1.0) as f32).collect();
        let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
        let mut dout = DeviceBuffer::from_slice(&vec![f32::NAN; n])?;
        gpu.binary_f32(code, &da, &db, &mut dout)?;
        gpu.stream.synchronize()?;
        let got = dout.as_host_vec()?;
        let l = Layout::contiguous(&[n]);
        let want = binary(op, &a, &l, &b, &l);
        let (err, ok) = worst(&got, &want);
        let (ba, bb) = (DeviceBuffer::from_slice(&vec![0.5f32; big])?, DeviceBuffer::from_slice(&vec![2f32; big])?);
        let mut bout = DeviceBuffer::from_slice(&vec![0f32; big])?;
        let us = time(&gpu, || Ok(gpu.binary_f32(code, &ba, &bb, &mut bout)?))?;
        rows.push(Row { kernel: format!("binary_f32 {name}"), err, ok, us, gbps: (12 * big) as f64 / us / 1e3 });
    }

    // Matmul: correctness at an awkward size (every edge path) and at 4096^3, then timing.
    let timing = std::env::var_os("GPU_CHECK_NO_TIMING").is_none();
    let sizes: &[(usize, usize, usize)] =
        if timing { &[(515, 259, 131), (4096, 4096, 4096)] } else { &[(515, 259, 131)] };
    for &(m, n, k) in sizes {
        let a: Vec<f32> = (0..m * k).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
        let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
        let mut dc = DeviceBuffer::from_slice(&vec![f32::NAN; m * n])?;
        gpu.matmul_f32(&da, &db, &mut dc, m, n, k)?;
        gpu.stream.synchronize()?;
        let got = dc.as_host_vec()?;
        let mut want = vec![0f32; m * n];
        let (sa, sb) = (MatStrides { batch: 0, row: k, col: 1 }, MatStrides { batch: 0, row: n, col: 1 });
        matmul(1, m, n, k, &a, sa, &b, sb, &mut want);
        // ‖gpu - cpu‖ / ‖cpu‖: the two sum in different orders
        let diff: f64 = got.iter().zip(&want).map(|(&g, &w)| ((g - w) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum::<f64>().sqrt();
        let err = if got.iter().all(|v| v.is_finite()) { diff / norm } else { f64::INFINITY };
        let us = time(&gpu, || Ok(gpu.matmul_f32(&da, &db, &mut dc, m, n, k)?))?;
        let tflops = 2.0 * (m * n * k) as f64 / us / 1e6;
        rows.push(Row { kernel: format!("matmul_f32 {m}x{n}x{k}"), err, ok: err <= TOL, us, gbps: tflops * 1000.0 });
    }

    println!("{:<22} {:>12} {:>6} {:>10} {:>8}", "kernel", "max rel err", "ok", "us", "GB/s");
    println!("(matmul rows: error is ‖gpu - cpu‖ / ‖cpu‖ and the last column is GFLOP/s)");
    for r in &rows {
        println!("{:<22} {:>12.2e} {:>6} {:>10.1} {:>8.0}", r.kernel, r.err, r.ok, r.us, r.gbps);
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    println!("{} kernels, {failed} failed (tolerance {TOL:e} x max(1, |cpu|))", rows.len());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
