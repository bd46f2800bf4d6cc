//! `cu/attention.cu` through the engine's `ops::attention::attention`, GPU against the CPU twin
//! (f32 both): the output and the gradients of q, k and v, as relative norms, at shapes that
//! cross tile edges (L 150 with 3 query heads on one key/value head, head_dim 40; head_dim 100
//! through the d128 kernels; 5 later queries over 77 keys; a one-token step), then at the
//! issue's benchmark shape (b 8, L 2048, 12 heads of 64, causal) where forward and forward +
//! backward are also timed: kernels/tools/sdpa_ref.py times PyTorch's
//! scaled_dot_product_attention at the same shape in the same device run.

use crate::{rel_norm, Check, Res, Row};
use mamba_engine::ops::attention::attention;
use mamba_engine::{cuda, DType, Device, Rng, Tensor};

/// Sums over up to 2048 keys in other orders on the two sides.
const ATTENTION_TOL: f64 = 1e-4;

/// (b, h, g, lq, lk, d, start)
type Shape = (usize, usize, usize, usize, usize, usize, usize);

fn inputs((b, h, g, lq, lk, d, _): Shape, rng: &mut Rng) -> Vec<Tensor> {
    let mut r = |s: &[usize]| Tensor::randn(s, 0.0, 1.0, DType::F32, rng);
    vec![r(&[b, h, lq, d]), r(&[b, g, lk, d]), r(&[b, g, lk, d]), r(&[b, h, lq, d])]
}

/// The output, then the gradients of q, k, v from the seed `x[3]`.
fn side(x: &[Tensor], start: usize, device: Device) -> Res<Vec<Vec<f32>>> {
    let leaves: Vec<Tensor> = x[..3].iter().map(|t| Ok(t.to(device)?.requires_grad())).collect::<Res<_>>()?;
    let scale = 1.0 / (x[0].dim(3)? as f64).sqrt();
    let y = attention(&leaves[0], &leaves[1], &leaves[2], scale, start)?;
    y.backward_with(&x[3].to(device)?)?;
    let mut v = vec![y.to_vec::<f32>()?];
    for l in &leaves {
        v.push(l.grad().ok_or("an input got no gradient")?.to_vec::<f32>()?);
    }
    Ok(v)
}

/// Forward and forward + backward on the GPU, in microseconds.
fn timings(c: &Check, x: &[Tensor]) -> Res<(f64, f64)> {
    let leaves: Vec<Tensor> = x[..3].iter().map(|t| Ok(t.to(Device::Cuda)?.requires_grad())).collect::<Res<_>>()?;
    let dout = x[3].to(Device::Cuda)?;
    let scale = 1.0 / (x[0].dim(3)? as f64).sqrt();
    let fwd = c.time(|| {
        let _guard = mamba_engine::no_grad();
        attention(&leaves[0], &leaves[1], &leaves[2], scale, 0)?;
        Ok(())
    })?;
    let both = c.time(|| {
        leaves.iter().for_each(|l| l.zero_grad());
        attention(&leaves[0], &leaves[1], &leaves[2], scale, 0)?.backward_with(&dout)?;
        Ok(())
    })?;
    Ok((fwd, both))
}

pub fn run(c: &mut Check) -> Res<()> {
    let checked: [(Shape, bool); 5] = [
        ((2, 3, 1, 150, 150, 40, 0), false),
        ((1, 4, 2, 70, 70, 100, 0), false),
        ((2, 2, 2, 5, 77, 64, 72), false),
        ((3, 4, 4, 1, 33, 64, 32), false),
        ((8, 12, 12, 2048, 2048, 64, 0), true),
    ];
    for (shape, timed) in checked {
        if timed && !c.timing {
            continue; // under compute-sanitizer: the small shapes only
        }
        let (b, h, g, lq, lk, d, start) = shape;
        let x = inputs(shape, &mut Rng::new(c.rng.next_u64()));
        let want = side(&x, start, Device::Cpu)?;
        cuda::set_poison(true); // every new GPU buffer NaN: an element no kernel writes fails
        let got = side(&x, start, Device::Cuda);
        cuda::set_poison(false);
        let got = got?;
        let name = format!("attention {b}x{h}/{g}x{lq}/{lk}x{d}");
        let (fwd, both) = if timed { timings(c, &x)? } else { (f64::NAN, f64::NAN) };
        let err = rel_norm(&got[0], &want[0]);
        c.rows.push(Row { kernel: format!("{name} out (norm)"), err, ok: err <= ATTENTION_TOL, us: fwd, rate: f64::NAN });
        // no atomics: a second GPU run gives the same bits
        let again = side(&x, start, Device::Cuda)?;
        let repeats = got.iter().zip(&again).all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        c.rows.push(Row {
            kernel: format!("{name} repeats bit for bit"),
            err: if repeats { 0.0 } else { f64::INFINITY },
            ok: repeats,
            us: f64::NAN,
            rate: f64::NAN,
        });
        let errs: Vec<f64> = (1..4).map(|i| rel_norm(&got[i], &want[i])).collect();
        println!("{name} (start {start}): gradient errors (norm) q {:.1e}, k {:.1e}, v {:.1e}", errs[0], errs[1], errs[2]);
        let worst = errs.iter().copied().fold(0.0, f64::max);
        c.rows.push(Row { kernel: format!("{name} grads (norm)"), err: worst, ok: worst <= ATTENTION_TOL, us: both, rate: f64::NAN });
    }
    Ok(())
}
