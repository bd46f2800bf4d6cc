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
//! The backward formulas are in `cpu/norm.rs`, next to the kernel that evaluates them.

use crate::{
    autograd::record,
    cpu::norm as kernel,
    error::{invalid, Error},
    storage::CpuData,
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
        let (out, rstd) = rms_norm_forward(self, weight, eps)?;
        // Save the input view itself (not a contiguous copy) so no new buffer is kept alive.
        Ok(record("rms_norm", out, &[self, weight], &[self, weight, &rstd], |g, s, needs| {
            let (dx, dw) = rms_norm_grads(&s[0], &s[1], &s[2], g)?;
            Ok(vec![needs[0].then_some(dx), needs[1].then_some(dw)])
        }))
    }
}

/// `(dx, dw)` from the backward kernel (no graph is recorded: this runs inside backward).
fn rms_norm_grads(x: &Tensor, w: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if x.device() == crate::Device::Cuda {
        return crate::cuda::ops::rms_norm_backward(x, w, rstd, dy);
    }
    let n = x.numel();
    let (d, rows) = (w.numel(), rstd.numel());
    let (x, w, dy) = (x.contiguous_detached()?, w.contiguous_detached()?, dy.contiguous_detached()?);
    let (sx, sw, sr, sg) = (x.read(), w.read(), rstd.read(), dy.read());
    let (ox, ow, or, og) = (x.layout.offset, w.layout.offset, rstd.layout.offset, dy.layout.offset);
    const OP: &str = "rms_norm";
    let (dx, dw) = match (sx.as_cpu(OP)?, sw.as_cpu(OP)?, sr.as_cpu(OP)?, sg.as_cpu(OP)?) {
        (CpuData::F32(xv), CpuData::F32(wv), CpuData::F32(rv), CpuData::F32(gv)) => {
            let (dx, dw) =
                kernel::rms_norm_backward(&xv[ox..ox + n], &wv[ow..ow + d], &rv[or..or + rows], &gv[og..og + n]);
            (CpuData::F32(dx), CpuData::F32(dw))
        }
        (CpuData::F64(xv), CpuData::F64(wv), CpuData::F64(rv), CpuData::F64(gv)) => {
            let (dx, dw) =
                kernel::rms_norm_backward(&xv[ox..ox + n], &wv[ow..ow + d], &rv[or..or + rows], &gv[og..og + n]);
            (CpuData::F64(dx), CpuData::F64(dw))
        }
        _ => return Err(Error::DTypeMismatch { op: "rms_norm", lhs: x.dtype(), rhs: dy.dtype() }),
    };
    Ok((Tensor::from_cpu_data(dx, x.shape())?, Tensor::from_cpu_data(dw, &[d])?))
}

/// `(y, rstd)` from the forward kernel (no graph).
fn rms_norm_forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if x.device() == crate::Device::Cuda {
        return crate::cuda::ops::rms_norm_forward(x, w, eps);
    }
    let d = w.numel();
    let rows = x.numel() / d;
    let shape = x.shape().to_vec();
    let (x, w) = (x.contiguous_detached()?, w.contiguous_detached()?);
    let (sx, sw) = (x.read(), w.read());
    let (ox, ow) = (x.layout.offset, w.layout.offset);
    let (y, rstd) = match (sx.as_cpu("rms_norm")?, sw.as_cpu("rms_norm")?) {
        (CpuData::F32(xv), CpuData::F32(wv)) => {
            let (y, r) = kernel::rms_norm_forward(&xv[ox..ox + rows * d], &wv[ow..ow + d], rows, d, eps);
            (CpuData::F32(y), CpuData::F32(r))
        }
        (CpuData::F64(xv), CpuData::F64(wv)) => {
            let (y, r) = kernel::rms_norm_forward(&xv[ox..ox + rows * d], &wv[ow..ow + d], rows, d, eps);
            (CpuData::F64(y), CpuData::F64(r))
        }
        _ => unreachable!("dtypes checked by rms_norm"),
    };
    Ok((Tensor::from_cpu_data(y, &shape)?, Tensor::from_cpu_data(rstd, &[rows])?))
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
