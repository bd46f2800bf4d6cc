//! `cu/adamw.cu` against `ops::adamw::cpu::adamw_step`: an awkward size ((1 << 20) + 3) at steps
//! 1, 2 and 1000 (weight decay on, off, on), then 16 Mi elements, timed; then the engine's
//! `ops::adamw::adamw_step` on GPU tensors (a parameter at an offset in a larger buffer, a
//! transposed gradient) against the same call on the CPU, and its refusal of f64 on the GPU.
//!
//! The outputs are the inputs, updated in place, so they cannot be poisoned. Instead the
//! inputs are such that the step moves almost every element by far more than the tolerance
//! (p by lr |update| ~ 1e-3, m by 0.1 |g - m|, v by 0.001 |g^2 - v|), and each check counts
//! the elements the GPU left bit for bit at their input where the CPU moved them (an element
//! the kernel skipped), which must be none.

use crate::{Check, Res, Row, TOL};
use mamba_engine::{
    cuda, ops,
    ops::adamw::cpu::{adamw_step, AdamWHyper},
    DType, Device, Rng, Tensor,
};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::AdamWStep;

const BETAS: (f64, f64) = (0.9, 0.999);

/// Largest |gpu - cpu| / scale, and the number of elements the GPU left bit for bit at `old`
/// where the CPU moved them by more than the tolerance (skipped elements: they fail the
/// tolerance too, this names why). `scale` is each element's size as [`scales`] gives it.
fn compare(gpu: &[f32], cpu: &[f32], old: &[f32], scale: &[f64]) -> (f64, usize) {
    let (mut worst, mut stale) = (if gpu.len() == cpu.len() { 0.0f64 } else { f64::INFINITY }, 0);
    for (((&g, &c), &o), &scale) in gpu.iter().zip(cpu).zip(old).zip(scale) {
        let e = (g as f64 - c as f64).abs() / scale;
        worst = worst.max(if e.is_finite() { e } else { f64::INFINITY });
        stale += usize::from(g.to_bits() == o.to_bits() && (c as f64 - o as f64).abs() > TOL * scale);
    }
    (worst, stale)
}

/// Per element, the size an error in p, m and v is measured against: the value before and
/// after, and the terms summed on the way (relative to the value alone, m = b1 m + (1-b1) g
/// cancelling to ~0 would turn one rounding of its terms into a huge relative error, and p
/// inherits that error through lr m / (sqrt(v) + eps): with 16 Mi random elements, such
/// cancellations happen). `old` is (p, m, v) before the step, `new` after it on the CPU.
fn scales(old: [&[f32]; 3], new: [&[f32]; 3], g: &[f32], h: &AdamWHyper) -> [Vec<f64>; 3] {
    let a = |x: f32| x.abs() as f64;
    let mut out = [vec![], vec![], vec![]];
    for i in 0..g.len() {
        let m_terms = h.b1 * a(old[1][i]) + (1.0 - h.b1) * a(g[i]);
        let denom = (new[2][i] as f64 / h.bias2).sqrt() + h.eps;
        let p_terms = h.lr * m_terms / h.bias1 / denom;
        out[0].push(a(new[0][i]).max(a(old[0][i])).max(p_terms).max(1e-30));
        out[1].push(a(new[1][i]).max(a(old[1][i])).max(m_terms).max(1e-30));
        out[2].push(a(new[2][i]).max(a(old[2][i])).max(1e-30));
    }
    out
}

fn launch(
    c: &Check,
    p: &mut DeviceBuffer<f32>,
    g: &DeviceBuffer<f32>,
    m: &mut DeviceBuffer<f32>,
    v: &mut DeviceBuffer<f32>,
    h: &AdamWHyper,
) -> Res<()> {
    let f = |x: f64| x as f32;
    let (lr, eps, wd) = (f(h.lr), f(h.eps), f(h.weight_decay));
    let step = AdamWStep { lr, b1: h.b1, b2: h.b2, eps, wd, bias1: f(h.bias1), bias2: f(h.bias2) };
    Ok(c.gpu.adamw_step_f32(p, g, m, v, step)?)
}

pub fn run(c: &mut Check) -> Res<()> {
    let big = if c.timing { 1 << 24 } else { 1 << 10 }; // small under compute-sanitizer
    let cases: [(usize, &[(u64, f64)]); 2] = [((1 << 20) + 3, &[(1, 0.1), (2, 0.0), (1000, 0.1)]), (big, &[(1, 0.1)])];
    for (n, steps) in cases {
        let mut p = c.uniform(n, -1.0, 1.0);
        let mut m = c.uniform(n, -0.1, 0.1);
        let mut v = c.uniform(n, 1e-4, 1e-2);
        let (mut dp, mut dm, mut dv) =
            (DeviceBuffer::from_slice(&p)?, DeviceBuffer::from_slice(&m)?, DeviceBuffer::from_slice(&v)?);
        for &(t, wd) in steps {
            let h = AdamWHyper::at_step(1e-3, BETAS, 1e-8, wd, t);
            let g = c.uniform(n, -1.0, 1.0);
            let dg = DeviceBuffer::from_slice(&g)?;
            // each step starts both sides from the CPU's state, so errors do not compound
            dp.copy_from(&p[..])?;
            dm.copy_from(&m[..])?;
            dv.copy_from(&v[..])?;
            launch(c, &mut dp, &dg, &mut dm, &mut dv, &h)?;
            c.gpu.stream.synchronize()?;
            let old = [p.clone(), m.clone(), v.clone()];
            adamw_step(&mut p, &g, &mut m, &mut v, &h);
            let scale = scales([&old[0], &old[1], &old[2]], [&p, &m, &v], &g, &h);
            let (mut err, mut stale) = (0.0f64, 0);
            let gpu = [dp.as_host_vec()?, dm.as_host_vec()?, dv.as_host_vec()?];
            for (((gpu, cpu), old), scale) in gpu.iter().zip([&p, &m, &v]).zip(&old).zip(&scale) {
                let (e, s) = compare(gpu, cpu, old, scale);
                (err, stale) = (err.max(e), stale + s);
            }
            if stale > 0 {
                println!("adamw_step_f32 n{n} t{t}: {stale} elements left unchanged");
            }
            let kernel = format!("adamw_step_f32 n{n} t{t} wd{wd}");
            let ok = err <= TOL && stale == 0;
            let (us, rate) = if n == big && c.timing {
                let us = c.time(|| launch(c, &mut dp, &dg, &mut dm, &mut dv, &h))?;
                (us, (28 * n) as f64 / us / 1e3) // reads p, g, m, v; writes p, m, v
            } else {
                (f64::NAN, f64::NAN)
            };
            c.rows.push(Row { kernel, err, ok, us, rate });
        }
    }
    engine(c)
}

/// `ops::adamw::adamw_step` on the GPU against the CPU, through the engine's checks and
/// dispatch: the parameter is rows 3..40 of a (45, 29) buffer, the gradient a transposed
/// view (copied to contiguous on the way). The whole buffer is compared, so rows outside
/// the view must come back untouched.
fn engine(c: &mut Check) -> Res<()> {
    let mut rng = Rng::new(c.rng.next_u64());
    let h = AdamWHyper::at_step(1e-3, BETAS, 1e-8, 0.1, 7);
    let base = Tensor::randn(&[45, 29], 0.0, 1.0, DType::F32, &mut rng);
    let gt = Tensor::randn(&[29, 37], 0.0, 1.0, DType::F32, &mut rng);
    let m = Tensor::randn(&[37, 29], 0.0, 0.1, DType::F32, &mut rng);
    let v = Tensor::rand_uniform(&[37, 29], 1e-4, 1e-2, DType::F32, &mut rng);
    let old: Vec<Vec<f32>> = [&base, &m, &v].iter().map(|t| t.to_vec::<f32>()).collect::<Result<_, _>>()?;
    cuda::set_poison(true); // the gradient's contiguous copy is a new buffer
    let (gbase, gm, gv) = (base.to(Device::Cuda)?, m.to(Device::Cuda)?, v.to(Device::Cuda)?);
    let gg = gt.to(Device::Cuda)?.transpose(0, 1)?;
    let result = ops::adamw::adamw_step(&gbase.narrow(0, 3, 37)?, &gg, &gm, &gv, &h);
    cuda::set_poison(false);
    result?;
    ops::adamw::adamw_step(&base.narrow(0, 3, 37)?, &gt.transpose(0, 1)?, &m, &v, &h)?;
    // Scales for the view's rows; the rest of the buffer must come back as it was.
    let g_rows = gt.transpose(0, 1)?.to_vec::<f32>()?;
    let new: Vec<Vec<f32>> = [&base, &m, &v].iter().map(|t| t.to_vec::<f32>()).collect::<Result<_, _>>()?;
    let (g_rows, p_new) = (&g_rows[..], &new[0][3 * 29..40 * 29]);
    let [p_scale, m_scale, v_scale] = scales([&old[0][3 * 29..40 * 29], &old[1], &old[2]], [p_new, &new[1], &new[2]], g_rows, &h);
    let p_scale: Vec<f64> = (0..45 * 29)
        .map(|i| if (3 * 29..40 * 29).contains(&i) { p_scale[i - 3 * 29] } else { (old[0][i].abs() as f64).max(1e-30) })
        .collect();
    let (mut err, mut stale) = (0.0f64, 0);
    for (((gpu, cpu), old), scale) in [gbase, gm, gv].iter().zip(&new).zip(&old).zip([&p_scale, &m_scale, &v_scale]) {
        let (e, s) = compare(&gpu.to_vec::<f32>()?, cpu, old, scale);
        (err, stale) = (err.max(e), stale + s);
    }
    let ok = err <= TOL && stale == 0;
    c.rows.push(Row { kernel: "op adamw_step (offset, transposed g)".into(), err, ok, us: f64::NAN, rate: f64::NAN });

    // f64 on the GPU has no kernel: an error that says so, not a wrong update
    let z = || Tensor::zeros(&[5], DType::F64, Device::Cuda);
    let refused = ops::adamw::adamw_step(&z()?, &z()?, &z()?, &z()?, &h);
    let ok = matches!(
        &refused,
        Err(mamba_engine::Error::Unsupported { op: "adamw_step", device: Device::Cuda, dtype: DType::F64 })
    );
    if !ok {
        println!("op adamw_step f64 on the GPU: expected a refusal, got {refused:?}");
    }
    c.rows.push(Row { kernel: "op adamw_step f64 refused".into(), err: 0.0, ok, us: f64::NAN, rate: f64::NAN });
    Ok(())
}
