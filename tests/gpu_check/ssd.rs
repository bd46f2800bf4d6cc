//! `cu/ssd.cu` through the engine's `ops::ssd::ssd`, GPU against the CPU twin (f32 both): the
//! output, the last state and the gradient of every input (of `out` and of `last_state`
//! together), as relative norms, at a shape with several tiles in every direction (p 70,
//! n 66, chunk 130 over L 150: two chunks, the second short; a row tile past it), then at
//! the benchmark shape (b 8, L 2048, 24 heads of 64, d_state 64, chunk 256, z) where
//! forward and forward + backward are also timed (kernels/tools/ssd_ref.py times the
//! reference's Triton kernel at the same shapes). d_state 128 and (b 1, L 65536) are timed
//! only. Everything runs in both precisions of the tile products: f32-accurate (the default)
//! and one tf32 pass (`precision::set_tf32`, rows marked tf32), each with its tolerance.

use crate::{rel_norm, Check, Res, Row};
use mamba_engine::ledger::{human, saved_in_graph};
use mamba_engine::ops::ssd::{ssd, ssd_args, ssd_both, ssd_inputs, SsdShape};
use mamba_engine::{DType, Device, Rng, Tensor};

/// Gradients are long f32 sums taken in other orders (and by atomics) on the two sides.
const SSD_TOL: f64 = 1e-4;

/// What one side gives: the packed (out, last_state), then every input's gradient.
fn side(x: &[Tensor], seed: &Tensor, options: (bool, bool), chunk: usize, device: Device) -> Res<Vec<Vec<f32>>> {
    let leaves: Vec<Tensor> = x.iter().map(|t| Ok(t.to(device)?.requires_grad())).collect::<Res<_>>()?;
    let y = ssd_both(ssd(&ssd_args(&leaves, options, chunk))?)?;
    y.backward_with(&seed.to(device)?)?;
    let mut v = vec![y.to_vec::<f32>()?];
    for l in &leaves {
        v.push(l.grad().ok_or("an input got no gradient")?.to_vec::<f32>()?);
    }
    Ok(v)
}

/// The error of d(dt_bias): each head's value is the sum of d(dt) over batch and steps, often
/// with cancellation, so it is measured against the sum of the terms' sizes (what bounds the
/// rounding of such a sum), not its own norm (which can be near zero: 6e-4 was seen on one seed).
fn summed_error(got: &[f32], want: &[f32], ddt: &[f32]) -> f64 {
    let heads = want.len();
    let mut scale = vec![0.0f64; heads];
    for (i, t) in ddt.iter().enumerate() {
        scale[i % heads] += f64::from(t.abs());
    }
    let worst = got.iter().zip(want).zip(&scale).map(|((g, w), s)| f64::from(g - w).abs() / s.max(f64::MIN_POSITIVE));
    worst.fold(0.0, f64::max)
}

/// Forward and forward + backward on the GPU, in microseconds; prints what the forward's graph
/// keeps for backward (the ledger, on the GPU) under `name`.
fn timings(c: &Check, name: &str, x: &[Tensor], options: (bool, bool), chunk: usize) -> Res<(f64, f64)> {
    let leaves: Vec<Tensor> = x.iter().map(|t| Ok(t.to(Device::Cuda)?.requires_grad())).collect::<Res<_>>()?;
    let saved = saved_in_graph(&ssd(&ssd_args(&leaves, options, chunk))?.out).total_bytes;
    let inputs: usize = leaves.iter().map(|t| t.numel() * 4).sum();
    println!(
        "{name}: bytes saved for backward {saved} ({}) = inputs {} + chunk states {}",
        human(saved),
        human(inputs),
        human(saved.saturating_sub(inputs))
    );
    let shape = leaves[0].shape().to_vec();
    let dout = Tensor::ones(&shape, DType::F32, Device::Cuda)?;
    let fwd = c.time(|| {
        let _guard = mamba_engine::no_grad();
        ssd(&ssd_args(&leaves, options, chunk))?;
        Ok(())
    })?;
    let both = c.time(|| {
        leaves.iter().for_each(|l| l.zero_grad()); // no accumulation kernels in the timing
        ssd(&ssd_args(&leaves, options, chunk))?.out.backward_with(&dout)?;
        Ok(())
    })?;
    Ok((fwd, both))
}

/// The two precisions of the tile products (`precision::set_tf32`), each with its tolerance:
/// f32-accurate (3xTF32) and one tf32 pass (10-bit mantissas: ~1e-3 relative in the products,
/// which long gradient sums carry to a few 1e-3).
const PRECISIONS: [(bool, &str, f64); 2] = [(false, "", SSD_TOL), (true, " tf32", 1e-2)];

/// dA's tolerance is 10x the others': dA = sum over every batch row and step of dt' dalpha, a
/// sum with cancellation whose relative error depends on the draw (on the H200, same kernels,
/// different seeds: 4e-7 to 8e-5 in f32, 1.6e-3 to 4e-2 in tf32); a wrong dA is off by O(1).
const DA_SLACK: f64 = 10.0;

pub fn run(c: &mut Check) -> Res<()> {
    let names = ["x", "dt", "A", "B", "C", "D", "dt_bias", "z", "init"];
    let checked: [(SsdShape, usize, bool); 2] =
        [((1, 150, 2, 70, 1, 66), 130, false), ((8, 2048, 24, 64, 1, 64), 256, true)];
    for ((b, l, h, p, g, n), chunk, timed) in checked {
        if timed && !c.timing {
            continue; // under compute-sanitizer: the small shape only
        }
        let options = (true, !timed); // z always; an initial state at the small shape
        let mut x = ssd_inputs((b, l, h, p, g, n), DType::F32, &mut Rng::new(c.rng.next_u64()));
        if !options.1 {
            x.truncate(8);
        }
        let packed = b * l * h * p + b * h * p * n;
        let seed = Tensor::rand_uniform(&[packed], -1.0, 1.0, DType::F32, &mut Rng::new(c.rng.next_u64()));
        let want = side(&x, &seed, options, chunk, Device::Cpu)?;
        for (tf32, tag, tol) in PRECISIONS {
            mamba_engine::precision::set_tf32(tf32);
            let got = side(&x, &seed, options, chunk, Device::Cuda)?;
            let name = format!("ssd {b}x{l}x{h}x{p} g{g} n{n}/{chunk}{tag}");
            let (fwd, both) = if timed { timings(c, &name, &x, options, chunk)? } else { (f64::NAN, f64::NAN) };
            let out_err = rel_norm(&got[0], &want[0]);
            c.rows.push(Row {
                kernel: format!("{name} out+last (norm)"),
                err: out_err,
                ok: out_err <= tol,
                us: fwd,
                rate: f64::NAN,
            });
            // got[1..] in input order: x, dt, A, B, C, D, dt_bias, ...
            let errs: Vec<f64> = (1..got.len())
                .map(|i| if i == 7 { summed_error(&got[7], &want[7], &want[2]) } else { rel_norm(&got[i], &want[i]) })
                .collect();
            // errs[2] is dA's (see DA_SLACK)
            let worst =
                errs.iter().enumerate().map(|(i, &e)| if i == 2 { e / DA_SLACK } else { e }).fold(0.0, f64::max);
            let each: Vec<String> = errs.iter().zip(names).map(|(e, n)| format!("{n} {e:.1e}")).collect();
            println!(
                "{name}: gradient errors (norm; dt_bias: over its terms; dA / {DA_SLACK} counts) {}",
                each.join(", ")
            );
            let kernel = format!("{name} fwd+bwd grads (norm)");
            c.rows.push(Row { kernel, err: worst, ok: worst <= tol, us: both, rate: f64::NAN });
        }
        mamba_engine::precision::set_tf32(false);
    }
    if !c.timing {
        return Ok(());
    }
    for ((b, l, h, p, g, n), chunk) in [((8, 2048, 24, 64, 1, 128), 256), ((1, 65536, 24, 64, 1, 64), 256)] {
        let x = ssd_inputs((b, l, h, p, g, n), DType::F32, &mut Rng::new(c.rng.next_u64()));
        for (tf32, tag, _) in PRECISIONS {
            mamba_engine::precision::set_tf32(tf32);
            let name = format!("ssd {b}x{l}x{h}x{p} g{g} n{n}/{chunk}{tag}");
            let (fwd, both) = timings(c, &name, &x[..8], (true, false), chunk)?;
            c.rows.push(Row { kernel: format!("{name} fwd (timed)"), err: 0.0, ok: true, us: fwd, rate: f64::NAN });
            c.rows.push(Row {
                kernel: format!("{name} fwd+bwd (timed)"),
                err: 0.0,
                ok: true,
                us: both,
                rate: f64::NAN,
            });
        }
        mamba_engine::precision::set_tf32(false);
    }
    Ok(())
}
