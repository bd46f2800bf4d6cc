//! `mamba train` on the GPU against the CPU: the default byte model, the first 20 steps
//! from the same seed and data. Each loss must match the CPU's to `TRAIN_TOL` relative
//! (both run f32; the GPU sums in other orders, and the differences compound over steps).
//! Then resuming on the GPU: 10 steps, a checkpoint, `--resume` for 10 more; the 20 losses
//! must match the straight GPU run to `TRAIN_TOL` (not bit for bit as on the CPU: the scan
//! backward's atomics vary in their last bits).

use crate::{Check, Res, Row};
use clap::Parser;
use mamba_engine::Device;
use mamba_train::trainer::{train, TrainArgs};

pub const TRAIN_TOL: f64 = 1e-3;
const STEPS: u64 = 20;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

fn losses(device: Device, out: &std::path::Path) -> Res<(Vec<f64>, f64)> {
    losses_with(device, out, &[])
}

/// The losses of one `mamba train` call with the default settings plus `flags`, and its time.
fn losses_with(device: Device, out: &std::path::Path, flags: &[&str]) -> Res<(Vec<f64>, f64)> {
    let mut args = Cli::parse_from([&["train"], flags].concat()).args;
    (args.steps, args.out, args.quiet, args.device) = (Some(STEPS), Some(out.to_path_buf()), true, device);
    let started = std::time::Instant::now();
    let summary = train(&args)?;
    Ok((summary.losses, started.elapsed().as_secs_f64()))
}

pub fn run(c: &mut Check) -> Res<()> {
    let dir = std::env::temp_dir().join(format!("gpu-check-train-{}", std::process::id()));
    let (cpu, cpu_s) = losses(Device::Cpu, &dir.join("cpu"))?;
    let (gpu, gpu_s) = losses(Device::Cuda, &dir.join("cuda"))?;
    let resumed_dir = dir.join("resumed");
    let (first, _) = losses_with(Device::Cuda, &resumed_dir, &["--stop-after", "10"])?;
    let ckpt = resumed_dir.join("checkpoint");
    let (second, _) = losses_with(Device::Cuda, &resumed_dir, &["--resume", ckpt.to_str().unwrap_or_default()])?;
    let _ = std::fs::remove_dir_all(&dir);
    let resumed = [first, second].concat();
    let mut worst_resume = if resumed.len() == gpu.len() { 0.0f64 } else { f64::INFINITY };
    for (a, b) in gpu.iter().zip(&resumed) {
        let rel = (a - b).abs() / a.abs();
        worst_resume = worst_resume.max(if rel.is_finite() { rel } else { f64::INFINITY });
    }
    c.rows.push(Row {
        kernel: format!("train cuda 10 + resume 10 vs {STEPS} straight"),
        err: worst_resume,
        ok: worst_resume <= TRAIN_TOL,
        us: f64::NAN,
        rate: f64::NAN,
    });
    println!("train: {STEPS} steps, cpu {cpu_s:.1} s, cuda {gpu_s:.1} s (each including evaluation and sampling)");
    println!("{:>5} {:>12} {:>12} {:>10}", "step", "cpu loss", "cuda loss", "rel diff");
    let mut worst = if cpu.len() == gpu.len() && cpu.len() == STEPS as usize { 0.0f64 } else { f64::INFINITY };
    for (i, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
        let rel = (a - b).abs() / a.abs();
        worst = worst.max(if rel.is_finite() { rel } else { f64::INFINITY });
        println!("{:>5} {a:>12.6} {b:>12.6} {rel:>10.2e}", i + 1);
    }
    c.rows.push(Row {
        kernel: format!("train {STEPS} losses cpu vs cuda"),
        err: worst,
        ok: worst <= TRAIN_TOL,
        us: f64::NAN,
        rate: f64::NAN,
    });
    Ok(())
}
