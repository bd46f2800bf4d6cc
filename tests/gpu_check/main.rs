//! Every GPU kernel against its CPU twin, on the GPU machine: fresh random inputs each
//! run (the seed is printed; GPU_CHECK_SEED repeats one), outputs poisoned with NaN before each launch (so an element
//! the kernel forgot fails), then CUDA-event timing (median of 20 after warm-up) and the
//! throughput each kernel reaches. Exits non-zero if any kernel disagrees.
//!
//! One module per kernel file with its own timing table (`kernels/cu/<name>.cu` ->
//! `<name>.rs` here), each with a `run(&mut Check)`, listed once in `kernel_checks!`; then
//! `ops` (every op unit's cases through the engine, CPU vs GPU: a new op is covered there
//! without a module here), `vision` (the whole Vision Mamba model, CPU vs GPU), `dtypes`
//! (bf16 storage and conversions) and `train`. Build here and run there: see docs/GPU.md.
//! GPU_CHECK_ONLY=decode,decode_token runs only those modules' checks (a quick re-run); the
//! names are the kernel files' and ops, vision, dtypes, nccl, train.

/// Declares the kernel-file check modules and runs them in this order (with GPU_CHECK_ONLY
/// set, a comma-separated list of module names, only those: a quick re-run of one kernel file).
macro_rules! kernel_checks {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*
        fn run_kernel_checks(c: &mut Check) -> Res<()> {
            $(if selected(stringify!($module)) { $module::run(c)?; })*
            Ok(())
        }
    };
}

/// Whether GPU_CHECK_ONLY (unset: everything) names `module`.
fn selected(module: &str) -> bool {
    std::env::var("GPU_CHECK_ONLY").map_or(true, |only| only.split(',').any(|m| m.trim() == module))
}
kernel_checks!(
    elementwise,
    copy,
    reduce,
    matmul,
    matmul_bf16,
    matmul_tf32,
    norm,
    softmax,
    conv,
    embedding,
    adamw,
    scan,
    ssd,
    attention,
    decode,
    decode_token
);
mod dtypes;
mod nccl;
mod ops;
mod train;
mod vision;

use mamba_engine::Rng;
use mamba_kernels::{cust::prelude::*, launch::Gpu};
use std::error::Error;

pub type Res<T> = Result<T, Box<dyn Error>>;
/// A module's `run`.
type CheckFn = fn(&mut Check) -> Res<()>;

/// Element tolerance: |gpu - cpu| <= TOL * max(1, |cpu|) (f32, different libm).
pub const TOL: f64 = 1e-5;

/// One line of the final table.
pub struct Row {
    pub kernel: String,
    pub err: f64,
    pub ok: bool,
    pub us: f64,
    /// GB/s for memory-bound kernels, GFLOP/s for matmul (the kernel name says which).
    pub rate: f64,
}

/// What every check module gets: the GPU, the random source and the result table.
pub struct Check {
    pub gpu: &'static Gpu,
    pub rng: Rng,
    pub rows: Vec<Row>,
    /// False under compute-sanitizer: correctness only, small sizes.
    pub timing: bool,
}

impl Check {
    /// `n` uniform values in [lo, hi).
    pub fn uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| (lo + (hi - lo) * self.rng.uniform()) as f32).collect()
    }

    /// Median time in microseconds of `f` over 20 runs after 3 warm-ups, timed with events.
    pub fn time(&self, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        if !self.timing {
            return Ok(f64::NAN);
        }
        for _ in 0..3 {
            f()?;
        }
        let mut times = Vec::new();
        for _ in 0..20 {
            let (start, stop) = (Event::new(EventFlags::DEFAULT)?, Event::new(EventFlags::DEFAULT)?);
            start.record(&self.gpu.stream)?;
            f()?;
            stop.record(&self.gpu.stream)?;
            stop.synchronize()?;
            times.push(stop.elapsed_time_f32(&start)? as f64 * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

/// Largest |gpu - cpu| / max(1, |cpu|), and whether every element is within `TOL` (a NaN
/// left by the poisoning fails).
pub fn worst(gpu: &[f32], cpu: &[f32]) -> (f64, bool) {
    let mut worst = 0.0f64;
    let mut ok = gpu.len() == cpu.len();
    for (&g, &c) in gpu.iter().zip(cpu) {
        let e = (g as f64 - c as f64).abs() / (c as f64).abs().max(1.0);
        if !e.is_finite() || e > TOL {
            ok = false;
        }
        worst = worst.max(if e.is_finite() { e } else { f64::INFINITY });
    }
    (worst, ok)
}

/// ‖gpu - cpu‖ / ‖cpu‖ (infinite if the GPU left a non-finite value).
pub fn rel_norm(gpu: &[f32], cpu: &[f32]) -> f64 {
    if gpu.len() != cpu.len() || gpu.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = gpu.iter().zip(cpu).map(|(&g, &w)| ((g - w) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = cpu.iter().map(|&w| (w as f64).powi(2)).sum::<f64>().sqrt();
    diff / norm.max(1e-30)
}

/// A device buffer of `n` NaNs, for outputs.
pub fn poisoned(n: usize) -> Res<DeviceBuffer<f32>> {
    Ok(DeviceBuffer::from_slice(&vec![f32::NAN; n])?)
}

fn main() -> Res<()> {
    // GPU_CHECK_SEED=<seed> repeats a run's inputs (to reproduce a failure); else a fresh seed.
    let seed = match std::env::var("GPU_CHECK_SEED") {
        Ok(seed) => seed.parse()?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64,
    };
    println!("gpu-check: seed {seed}");
    let timing = std::env::var_os("GPU_CHECK_NO_TIMING").is_none();
    // The engine's GPU: kernel checks and engine ops share one context, stream and profiler.
    let mut c = Check { gpu: mamba_engine::cuda::gpu("gpu-check")?, rng: Rng::new(seed), rows: Vec::new(), timing };
    let profile = std::env::var_os("GPU_CHECK_PROFILE").is_some();
    if profile {
        c.gpu.profile_start()?;
    }
    run_kernel_checks(&mut c)?;
    let engine_checks: [(&str, CheckFn); 4] =
        [("ops", ops::run), ("vision", vision::run), ("dtypes", dtypes::run), ("nccl", nccl::run)];
    for (name, run) in engine_checks {
        if selected(name) {
            run(&mut c)?;
        }
    }
    if c.timing && selected("train") {
        train::run(&mut c)?; // under compute-sanitizer, gpu.sh checks training with the mamba binary
    }

    println!("{:<30} {:>12} {:>6} {:>10} {:>9}", "kernel", "error", "ok", "us", "GB/s");
    println!(
        "(error: max |gpu-cpu|/max(1,|cpu|), or ‖gpu-cpu‖/‖cpu‖ where the name says norm; matmul rates are GFLOP/s)"
    );
    for r in &c.rows {
        println!("{:<30} {:>12.2e} {:>6} {:>10.1} {:>9.0}", r.kernel, r.err, r.ok, r.us, r.rate);
    }
    if profile {
        write_profile(c.gpu)?;
    }
    let failed = c.rows.iter().filter(|r| !r.ok).count();
    println!("{} checks, {failed} failed (tolerance {TOL:e})", c.rows.len());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// With GPU_CHECK_PROFILE set: every launch's CUDA-event time per kernel, and the Chrome
/// trace in `$OUT/gpu_check_trace.json` (or `./gpu_check_trace.json`; open in ui.perfetto.dev).
fn write_profile(gpu: &Gpu) -> Res<()> {
    let profile = gpu.profile_stop()?;
    print!("{}", profile.table());
    let dir = std::env::var_os("OUT").map_or_else(|| std::path::PathBuf::from("."), std::path::PathBuf::from);
    let path = dir.join("gpu_check_trace.json");
    std::fs::write(&path, profile.chrome_trace())?;
    println!("trace: {} ({} spans)", path.display(), profile.spans.len());
    Ok(())
}
