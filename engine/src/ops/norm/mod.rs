//! RMSNorm, fused: one kernel for the forward, one for the backward.
//!
//! For `x` of shape `(..., d)` and a gain `w` of shape `(d)`, each row (last axis) is
//! scaled by the reciprocal of its root mean square:
//!
//! ```text
//! rstd = 1 / sqrt(mean_j x_j^2 + eps)          one per row, shape (rows)
//! y    = x * rstd * w                          shape of x
//! ```
//!
//! Written with elementwise ops this would save several `x`-sized intermediates for
//! backward; fused, it saves `x`, `w` and the `rows` values of `rstd` — and not `y`.
//! The backward formulas are in `cpu.rs`, next to the kernel that evaluates them.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    error::{invalid, Error},
    Result, Tensor,
};

impl Tensor {
    /// RMSNorm over the last axis: `y = x * w / sqrt(mean(x^2, last axis) + eps)`.
    ///
    /// Shapes: `self` is `(..., d)` with rank >= 1, `weight` is `(d)`; `y` is `(..., d)`.
    /// Gradients flow to both `self` and `weight`. `eps` must be finite and >= 0.
    /// The backward is itself not differentiable (no second derivatives).
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        super::check_pair("rms_norm", self, weight)?;
        let Some(&d) = self.shape().last() else {
            return Err(Error::Rank { op: "rms_norm", shape: vec![], expected: "rank >= 1: (..., d)".into() });
        };
        if weight.shape() != [d] {
            return Err(Error::ShapeMismatch {
                op: "rms_norm",
                lhs: self.shape().to_vec(),
                rhs: weight.shape().to_vec(),
                hint: format!("the weight must have shape [{d}], the last dimension of x"),
            });
        }
        if d == 0 {
            return invalid(
                "rms_norm",
                format!("cannot normalise over an empty last axis (x has shape {:?})", self.shape()),
            );
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return invalid("rms_norm", format!("eps must be finite and >= 0, got {eps}"));
        }
        let (x, w) = (self.contiguous_detached()?, weight.contiguous_detached()?);
        let (out, rstd) = run(&RmsNormForward { eps }, &[&x, &w])?;
        // Save the input view itself (not a contiguous copy) so no new buffer is kept alive.
        Ok(record("rms_norm", out, &[self, weight], &[self, weight, &rstd], |g, s, needs| {
            let t =
                [&s[0], &s[1], &s[2], g].map(|t| t.contiguous_detached()).into_iter().collect::<Result<Vec<_>>>()?;
            let (dx, dw) = run(&RmsNormBackward, &[&t[0], &t[1], &t[2], &t[3]])?;
            Ok(vec![needs[0].then_some(dx), needs[1].then_some(dw)])
        }))
    }
}

/// `[x (rows, d), w (d)]`, contiguous -> `(y (rows, d), rstd (rows))`.
struct RmsNormForward {
    eps: f64,
}

impl Kernel for RmsNormForward {
    const NAME: &'static str = "rms_norm";
    type Out = (Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor)> {
        let (d, shape) = (x[1].layout.numel(), &x[0].layout.shape);
        let rows = x[0].layout.numel() / d;
        let (y, rstd) = cpu::rms_norm_forward(x[0].elems(), x[1].elems(), rows, d, self.eps);
        Ok((Tensor::from_vec(y, shape)?, Tensor::from_vec(rstd, &[rows])?))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        cuda::rms_norm_forward(x[0], x[1], self.eps)
    }
}

/// `[x (rows, d), w (d), rstd (rows), dy (rows, d)]`, contiguous -> `(dx, dw)`.
struct RmsNormBackward;

impl Kernel for RmsNormBackward {
    const NAME: &'static str = "rms_norm";
    type Out = (Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor)> {
        let (dx, dw) = cpu::rms_norm_backward(x[0].elems(), x[1].elems(), x[2].elems(), x[3].elems());
        Ok((Tensor::from_vec(dx, &x[0].layout.shape)?, Tensor::from_vec(dw, &x[1].layout.shape)?))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        cuda::rms_norm_backward(x[0], x[1], x[2], x[3])
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["rms_norm"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    rms_norm: tol TIGHT, exercises ["rms_norm"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[4], r)],
        f |x| x[0].rms_norm(&x[1], 1e-5);
    rms_norm_of_transposed: tol TIGHT, exercises ["rms_norm", "permute"],
        inputs |r| vec![rn(&[4, 3], r), rn(&[4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.rms_norm(&x[1], 1e-5);
}

#[cfg(test)]
mod tests {
    use crate::{
        autograd::saved_in_graph,
        gradcheck::{check, Tolerance},
        DType, Error, Rng, Tensor,
    };

    #[test]
    fn matches_the_formula_written_with_tensor_ops() {
        let mut rng = Rng::new(7);
        let x = Tensor::randn(&[2, 3, 8], 0.0, 1.0, DType::F64, &mut rng);
        let w = Tensor::randn(&[8], 1.0, 0.1, DType::F64, &mut rng);
        let y = x.rms_norm(&w, 1e-5).unwrap();
        let rstd = x.sqr().unwrap().mean(&[-1], true).unwrap().add_scalar(1e-5).unwrap().rsqrt().unwrap();
        let want = x.mul(&rstd).unwrap().mul(&w).unwrap();
        assert_eq!(y.shape(), &[2, 3, 8]);
        for (a, b) in y.to_vec_f64().unwrap().iter().zip(want.to_vec_f64().unwrap()) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn gradcheck_contiguous_and_transposed_input() {
        let mut rng = Rng::new(11);
        let x = Tensor::randn(&[3, 5], 0.0, 1.0, DType::F64, &mut rng);
        let w = Tensor::randn(&[5], 1.0, 0.3, DType::F64, &mut rng);
        let r = check(|xs| xs[0].rms_norm(&xs[1], 1e-5), &[x, w.clone()], Tolerance::default()).unwrap();
        assert!(r.ops.contains(&"rms_norm"), "{:?}", r.ops);
        // x stored as (d, rows) and fed in transposed: the op sees a non-contiguous view
        let xt = Tensor::randn(&[5, 4], 0.0, 1.0, DType::F64, &mut rng);
        let r = check(
            |xs| {
                let v = xs[0].transpose(0, 1)?;
                assert!(!v.is_contiguous());
                v.rms_norm(&xs[1], 1e-5)
            },
            &[xt, w],
            Tolerance::default(),
        )
        .unwrap();
        assert_eq!(r.checked, 20 + 5);
    }

    #[test]
    fn gradcheck_rank1_and_rank3() {
        let mut rng = Rng::new(12);
        let w = Tensor::randn(&[4], 1.0, 0.3, DType::F64, &mut rng);
        let x1 = Tensor::randn(&[4], 0.0, 1.0, DType::F64, &mut rng);
        check(|xs| xs[0].rms_norm(&xs[1], 1e-6), &[x1, w.clone()], Tolerance::default()).unwrap();
        let x3 = Tensor::randn(&[2, 3, 4], 0.0, 1.0, DType::F64, &mut rng);
        check(|xs| xs[0].rms_norm(&xs[1], 0.1), &[x3, w], Tolerance::default()).unwrap();
    }

    #[test]
    fn f32_backward_reaches_both_leaves_and_saves_only_x_w_rstd() {
        let mut rng = Rng::new(13);
        let x = Tensor::randn(&[6, 16], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
        let w = Tensor::ones(&[16], DType::F32, crate::Device::Cpu).unwrap().requires_grad();
        let y = x.rms_norm(&w, 1e-5).unwrap();
        let saved = saved_in_graph(&y).per_op["rms_norm"].bytes;
        assert_eq!(saved, (6 * 16 + 16 + 6) * 4, "x, weight and one rstd per row");
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().shape(), &[6, 16]);
        assert_eq!(w.grad().unwrap().shape(), &[16]);
        assert_eq!(w.grad().unwrap().dtype(), DType::F32);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros(&[2, 3], DType::F32, crate::Device::Cpu).unwrap();
        let w3 = Tensor::ones(&[3], DType::F32, crate::Device::Cpu).unwrap();
        let scalar = Tensor::scalar(1.0, DType::F32, crate::Device::Cpu).unwrap();
        assert!(matches!(scalar.rms_norm(&w3, 1e-5), Err(Error::Rank { op: "rms_norm", .. })));
        let w2 = Tensor::ones(&[2], DType::F32, crate::Device::Cpu).unwrap();
        assert!(matches!(x.rms_norm(&w2, 1e-5), Err(Error::ShapeMismatch { op: "rms_norm", .. })));
        let w13 = Tensor::ones(&[1, 3], DType::F32, crate::Device::Cpu).unwrap();
        assert!(matches!(x.rms_norm(&w13, 1e-5), Err(Error::ShapeMismatch { .. })));
        let w64 = Tensor::ones(&[3], DType::F64, crate::Device::Cpu).unwrap();
        assert!(matches!(x.rms_norm(&w64, 1e-5), Err(Error::DTypeMismatch { .. })));
        assert!(matches!(x.rms_norm(&w3, -1.0), Err(Error::Invalid { op: "rms_norm", .. })));
        assert!(matches!(x.rms_norm(&w3, f64::NAN), Err(Error::Invalid { .. })));
        let empty = Tensor::zeros(&[2, 0], DType::F32, crate::Device::Cpu).unwrap();
        let w0 = Tensor::ones(&[0], DType::F32, crate::Device::Cpu).unwrap();
        assert!(matches!(empty.rms_norm(&w0, 1e-5), Err(Error::Invalid { .. })));
    }
}
