//! Vision Mamba (`model/src/vision.rs`) on the GPU against the CPU, for both bidirectional
//! blocks (Mamba-1 and Mamba-2): one small model, the same weights on both devices, fresh
//! random images and labels from this run's seed. The logits, the loss and, after backward
//! from the loss, every parameter's gradient must agree to `VISION_TOL` in relative norm
//! (f32 on both sides, different summation orders). Every new GPU buffer is NaN-filled first.

use crate::{rel_norm, Check, Res, Row};
use mamba_engine::{cuda, no_grad, DType, Device, Tensor};
use mamba_model::{Mamba2Config, MambaConfig, SsmConfig, VisionConfig, VisionMamba};

/// ‖gpu - cpu‖ / ‖cpu‖ bound for the logits, the loss and every gradient.
pub const VISION_TOL: f64 = 1e-4;

/// Images per batch; 3 x 8 x 8 images in patches of 2: 16 patches and the class token.
const BATCH: usize = 4;
const CLASSES: usize = 10;

/// The small model: d_model 32, 2 layers, d_state 8; Mamba-2 with headdim 16 and chunks of
/// 8 (the 17 tokens span three, the last one partial).
fn config(mamba2: bool) -> VisionConfig {
    let mut blocks = MambaConfig::new(32, 2);
    if mamba2 {
        let ssd = Mamba2Config { d_state: 8, headdim: 16, chunk_size: 8, bidirectional: true, ..Default::default() };
        blocks.ssm_cfg = SsmConfig::Mamba2(ssd);
    } else if let SsmConfig::Mamba1(c) = &mut blocks.ssm_cfg {
        (c.bidirectional, c.d_state) = (true, 8);
    }
    VisionConfig { channels: 3, height: 8, width: 8, patch: 2, classes: CLASSES, blocks }
}

/// What the model gives on one device: the logits, the loss and each parameter's gradient
/// (empty if none reached it).
struct Outcome {
    logits: Vec<f32>,
    loss: Vec<f32>,
    grads: Vec<(String, Vec<f32>)>,
}

/// `model`'s weights moved to `device` (fresh leaves), forward, the loss and its backward.
fn run_on(model: &VisionMamba, images: &Tensor, labels: &[usize], device: Device) -> Res<Outcome> {
    let model = model.to(device)?;
    let x = images.to(device)?;
    let logits = {
        let _guard = no_grad();
        model.forward(&x)?.to_vec::<f32>()?
    };
    let loss = model.loss(&x, labels)?;
    loss.backward()?;
    let grads = model
        .parameters()
        .iter()
        .map(|p| Ok((p.name.clone(), p.tensor.grad().map(|g| g.to_vec::<f32>()).transpose()?.unwrap_or_default())))
        .collect::<Res<_>>()?;
    Ok(Outcome { logits, loss: loss.to_vec::<f32>()?, grads })
}

/// One layer kind: CPU vs GPU, one row.
fn check(c: &mut Check, mamba2: bool) -> Res<()> {
    let cfg = config(mamba2);
    let model = VisionMamba::new(cfg.clone(), DType::F32, c.rng.next_u64())?;
    let n = BATCH * cfg.channels * cfg.height * cfg.width;
    let pixels: Vec<f64> = c.uniform(n, 0.0, 1.0).into_iter().map(f64::from).collect();
    let images = Tensor::from_f64(&pixels, &[BATCH, cfg.channels, cfg.height, cfg.width], DType::F32)?;
    let labels: Vec<usize> = (0..BATCH).map(|_| c.rng.below(CLASSES)).collect();
    let kind = if mamba2 { "mamba2" } else { "mamba1" };
    let cpu = run_on(&model, &images, &labels, Device::Cpu)?;
    cuda::set_poison(true);
    let gpu = run_on(&model, &images, &labels, Device::Cuda);
    cuda::set_poison(false);
    let name = format!("vision {kind} cpu vs cuda (logits, loss, {} grads)", cpu.grads.len());
    let gpu = match gpu {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("{name}: {e}");
            c.rows.push(Row { kernel: name, err: f64::INFINITY, ok: false, us: f64::NAN, rate: f64::NAN });
            return Ok(());
        }
    };
    let mut worst = rel_norm(&gpu.logits, &cpu.logits).max(rel_norm(&gpu.loss, &cpu.loss));
    for ((name, g), (_, w)) in gpu.grads.iter().zip(&cpu.grads) {
        // a gradient missing on either side fails (rel_norm of different lengths is infinite)
        let err = if w.is_empty() { f64::INFINITY } else { rel_norm(g, w) };
        if err > VISION_TOL {
            println!("vision {kind}: gradient of {name}: relative error {err:.2e}");
        }
        worst = worst.max(err);
    }
    if gpu.grads.len() != cpu.grads.len() {
        worst = f64::INFINITY;
    }
    c.rows.push(Row { kernel: name, err: worst, ok: worst <= VISION_TOL, us: f64::NAN, rate: f64::NAN });
    Ok(())
}

pub fn run(c: &mut Check) -> Res<()> {
    check(c, false)?;
    check(c, true)
}
