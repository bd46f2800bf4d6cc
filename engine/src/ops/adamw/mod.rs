//! The fused AdamW step for one parameter: the parameter and its two moments are updated
//! in place, in one pass (one kernel launch on the GPU) instead of ~16 elementwise ops.
//! The math is in `cpu.rs`. Not a differentiable op: it records no graph.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    dispatch::{run, CpuIn, Kernel},
    dtype::{Elem, Scalar},
    error::{invalid, Error, Result},
    storage::Storage,
    Tensor,
};
pub use cpu::AdamWHyper;
use std::sync::RwLockWriteGuard;

const OP: &str = "adamw_step";

/// One AdamW step: `param`, `m` and `v` are overwritten with their updated values, read
/// with `grad`. All four must have one shape, dtype and device; `param`, `m` and `v` must
/// be contiguous and each its own buffer (the update writes them in place); `grad` may be
/// any view. Computes in the tensors' dtype on the CPU, in f32 on the GPU.
pub fn adamw_step(param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, h: &AdamWHyper) -> Result<()> {
    let named = [("the parameter", param), ("the gradient", grad), ("m", m), ("v", v)];
    for (name, t) in &named[1..] {
        if t.shape() != param.shape() {
            let hint = format!("{name} must have the parameter's shape");
            return Err(Error::ShapeMismatch { op: OP, lhs: param.shape().to_vec(), rhs: t.shape().to_vec(), hint });
        }
        super::check_pair(OP, param, t)?;
    }
    for (name, t) in [named[0], named[2], named[3]] {
        if !t.is_contiguous() {
            let l = t.layout();
            let why = format!(
                "{name} is updated in place and must be contiguous (shape {:?}, strides {:?})",
                l.shape, l.strides
            );
            return invalid(OP, why);
        }
    }
    let grad = grad.contiguous_detached()?;
    let named = [named[0], ("the gradient", &grad), named[2], named[3]];
    for (i, (a, ta)) in named.iter().enumerate() {
        for (b, tb) in &named[i + 1..] {
            if ta.same_storage(tb) {
                return invalid(
                    OP,
                    format!("{a} and {b} share one buffer; the update needs a buffer of its own for each"),
                );
            }
        }
    }
    if param.numel() == 0 {
        return Ok(());
    }
    // Only the gradient is an input: the kernel locks param, m and v for writing itself.
    run(&AdamWStep { param, m, v, h }, &[&grad])
}

/// `[grad]`, contiguous: updates `param`, `m` and `v` (contiguous, distinct buffers) in place.
struct AdamWStep<'a> {
    param: &'a Tensor,
    m: &'a Tensor,
    v: &'a Tensor,
    h: &'a AdamWHyper,
}

impl Kernel for AdamWStep<'_> {
    const NAME: &'static str = OP;
    type Out = ();

    fn cpu<T: Elem>(&self, g: &[CpuIn<'_, T>]) -> Result<()> {
        // Distinct storages (checked by adamw_step), so taking each lock once cannot deadlock.
        let (mut ps, mut ms, mut vs) = (write(self.param), write(self.m), write(self.v));
        let (p, m, v) = (in_place::<T>(&mut ps, self.param)?, in_place(&mut ms, self.m)?, in_place(&mut vs, self.v)?);
        cpu::adamw_step(p, g[0].elems(), m, v, self.h);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, g: &[&Tensor]) -> Result<()> {
        cuda::adamw_step(self.param, g[0], self.m, self.v, self.h)
    }
}

/// The storage of `t`, locked for writing (as `Tensor::set_data` does).
fn write(t: &Tensor) -> RwLockWriteGuard<'_, Storage> {
    t.storage.write().unwrap_or_else(|e| e.into_inner())
}

/// The elements of the contiguous `t` inside its locked CPU storage `s`.
fn in_place<'a, T: Scalar>(s: &'a mut Storage, t: &Tensor) -> Result<&'a mut [T]> {
    let data = T::slice_mut(s.as_cpu_mut(OP)?).ok_or(Error::DTypeMismatch { op: OP, lhs: t.dtype(), rhs: T::DTYPE })?;
    Ok(&mut data[t.layout.offset..t.layout.offset + t.numel()])
}

/// Not differentiable: no op names, no gradient-check cases (its tests are below).
pub const OPS: &[&str] = &[];

super::case::cases! {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{no_grad, DType, Device, Rng};

    /// The update as the optimizer wrote it before the fused step, in tensor ops.
    fn reference(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, h: &AdamWHyper) -> (Tensor, Tensor, Tensor) {
        let _guard = no_grad();
        let m = m.affine(h.b1, 0.0).unwrap().add(&g.affine(1.0 - h.b1, 0.0).unwrap()).unwrap();
        let v = v.affine(h.b2, 0.0).unwrap().add(&g.sqr().unwrap().affine(1.0 - h.b2, 0.0).unwrap()).unwrap();
        let denom = v.affine(1.0 / h.bias2, 0.0).unwrap().sqrt().unwrap().add_scalar(h.eps).unwrap();
        let mut update = m.affine(1.0 / h.bias1, 0.0).unwrap().div(&denom).unwrap();
        if h.weight_decay != 0.0 {
            update = update.add(&p.affine(h.weight_decay, 0.0).unwrap()).unwrap();
        }
        (p.sub(&update.affine(h.lr, 0.0).unwrap()).unwrap(), m, v)
    }

    fn randn(shape: &[usize], dtype: DType, rng: &mut Rng) -> Tensor {
        Tensor::randn(shape, 0.0, 1.0, dtype, rng)
    }

    /// Several steps of the fused update and of the reference from the same start, with
    /// a fresh gradient each step; returns the largest difference over p, m and v.
    fn fused_vs_reference(shape: &[usize], dtype: DType, wd: f64, transposed_grad: bool) -> f64 {
        let mut rng = Rng::new(7);
        let p = randn(shape, dtype, &mut rng);
        let zeros = || p.zeros_like().unwrap();
        let (m, v) = (zeros(), zeros());
        // the reference's own buffers: the fused step writes p, m and v in place
        let (mut rp, mut rm, mut rv) = (p.affine(1.0, 0.0).unwrap(), zeros(), zeros());
        let mut worst = 0.0f64;
        for t in 1..=5 {
            let h = AdamWHyper::at_step(1e-2, (0.9, 0.999), 1e-8, wd, t);
            let g = if transposed_grad {
                let s = shape.iter().rev().copied().collect::<Vec<_>>();
                randn(&s, dtype, &mut rng).transpose(0, 1).unwrap()
            } else {
                randn(shape, dtype, &mut rng)
            };
            adamw_step(&p, &g, &m, &v, &h).unwrap();
            (rp, rm, rv) = reference(&rp, &g, &rm, &rv, &h);
            for (a, b) in [(&p, &rp), (&m, &rm), (&v, &rv)] {
                let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
                worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(worst, f64::max);
            }
        }
        worst
    }

    #[test]
    fn matches_the_tensor_op_formula_in_f64() {
        // one thread, then rayon's chunks (37 x 1031 > PAR_MIN, not a multiple of it)
        for shape in [[37, 29], [37, 1031]] {
            for wd in [0.0, 0.1] {
                let err = fused_vs_reference(&shape, DType::F64, wd, false);
                assert!(err < 1e-12, "shape {shape:?} wd {wd}: off by {err:e}");
            }
        }
        assert!(fused_vs_reference(&[13, 17], DType::F64, 0.1, true) < 1e-12, "transposed gradient");
    }

    #[test]
    fn matches_the_tensor_op_formula_bit_for_bit_in_f32() {
        // Same roundings in the same order: training on the CPU is unchanged by fusing.
        assert_eq!(fused_vs_reference(&[37, 1031], DType::F32, 0.1, false), 0.0);
        assert_eq!(fused_vs_reference(&[37, 29], DType::F32, 0.0, false), 0.0);
    }

    #[test]
    fn updates_only_the_view() {
        // param, m and v as contiguous rows 2..5 of larger buffers: the rest stays as it was.
        let mut rng = Rng::new(3);
        let h = AdamWHyper::at_step(1e-2, (0.9, 0.999), 1e-8, 0.1, 1);
        let bufs: Vec<Tensor> = (0..3).map(|_| randn(&[8, 5], DType::F64, &mut rng)).collect();
        let before: Vec<Vec<f64>> = bufs.iter().map(|t| t.to_vec_f64().unwrap()).collect();
        let views: Vec<Tensor> = bufs.iter().map(|t| t.narrow(0, 2, 3).unwrap()).collect();
        let g = randn(&[3, 5], DType::F64, &mut rng);
        let v = views[2].sqr().unwrap(); // v must be >= 0
        views[2].set_data(&v).unwrap();
        let want = reference(&views[0], &g, &views[1], &v, &h);
        adamw_step(&views[0], &g, &views[1], &views[2], &h).unwrap();
        for (i, (buf, want)) in bufs.iter().zip([want.0, want.1, want.2]).enumerate() {
            let after = buf.to_vec_f64().unwrap();
            assert_eq!(after[..10], before[i][..10]);
            assert_eq!(after[25..], before[i][25..]);
            assert_eq!(after[10..25], want.to_vec_f64().unwrap()[..]);
        }
    }

    #[test]
    fn refuses_what_it_cannot_update() {
        let mut rng = Rng::new(5);
        let h = AdamWHyper::at_step(1e-3, (0.9, 0.999), 1e-8, 0.0, 1);
        let t = |rng: &mut Rng| randn(&[4, 6], DType::F32, rng);
        let (p, g, m, v) = (t(&mut rng), t(&mut rng), t(&mut rng), t(&mut rng));
        let message = |r: Result<()>| r.unwrap_err().to_string();

        let short = randn(&[4, 5], DType::F32, &mut rng);
        assert!(message(adamw_step(&p, &short, &m, &v, &h)).contains("the gradient must have the parameter's shape"));
        assert!(message(adamw_step(&p, &g, &short, &v, &h)).contains("m must have the parameter's shape"));
        let wide = randn(&[4, 6], DType::F64, &mut rng);
        assert!(matches!(adamw_step(&p, &g, &m, &wide, &h), Err(Error::DTypeMismatch { .. })));
        assert!(matches!(adamw_step(&p, &wide, &m, &v, &h), Err(Error::DTypeMismatch { .. })));

        let strided = randn(&[6, 4], DType::F32, &mut rng).transpose(0, 1).unwrap();
        assert!(message(adamw_step(&strided, &g, &m, &v, &h))
            .contains("the parameter is updated in place and must be contiguous"));
        assert!(message(adamw_step(&p, &g, &m, &strided, &h)).contains("v is updated in place and must be contiguous"));

        assert!(message(adamw_step(&p, &g, &m, &m, &h)).contains("m and v share one buffer"));
        assert!(message(adamw_step(&p, &g, &p, &v, &h)).contains("the parameter and m share one buffer"));
        assert!(message(adamw_step(&p, &g, &m, &p.reshape(&[24]).unwrap().reshape(&[4, 6]).unwrap(), &h))
            .contains("the parameter and v share one buffer"));
        assert!(message(adamw_step(&p, &v, &m, &v, &h)).contains("the gradient and v share one buffer"));
        // a view of one buffer is the same buffer, even where the elements do not overlap
        let both = randn(&[8, 6], DType::F32, &mut rng);
        let (lo, hi) = (both.narrow(0, 0, 4).unwrap(), both.narrow(0, 4, 4).unwrap());
        assert!(message(adamw_step(&p, &g, &lo, &hi, &h)).contains("m and v share one buffer"));

        // nothing was written by the refused calls
        assert_eq!(p.to_vec::<f32>().unwrap(), {
            let mut rng = Rng::new(5);
            t(&mut rng).to_vec::<f32>().unwrap()
        });
        // an empty parameter is a no-op
        let e = || Tensor::zeros(&[0, 3], DType::F32, Device::Cpu).unwrap();
        adamw_step(&e(), &e(), &e(), &e(), &h).unwrap();
    }
}
