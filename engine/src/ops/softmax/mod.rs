//! Log-softmax over the last axis and the fused cross-entropy loss.
//!
//! Both treat a tensor of shape `(..., V)` as `N` rows of `V` logits (`N` = product of the
//! leading axes) and call the row kernels in `cpu.rs`.
//!
//! Cross-entropy is fused rather than composed from `log_softmax` and a gather: the
//! composition would save the `N × V` log-probabilities for backward, while the fused op saves
//! only one logsumexp per row (`N` floats) next to the logits it was given, and recomputes
//! softmax from them in backward. For a language model with a large vocabulary those
//! `N × V` floats are the largest activation of the whole network.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    error::Error,
    Result, Tensor,
};

/// `(N, V)` for a tensor of shape `(..., V)`: rows and row length. Rank 0 has no last axis.
fn rows_and_classes(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    let Some((&v, lead)) = t.shape().split_last() else {
        return Err(Error::Rank {
            op,
            shape: vec![],
            expected: "at least one axis (the op runs over the last)".into(),
        });
    };
    Ok((lead.iter().product(), v))
}

impl Tensor {
    /// Log-softmax over the last axis: shape `(..., V)` → `(..., V)`.
    ///
    /// ```text
    /// y_j = x_j - log Σ_k exp(x_k)      (computed as (x_j - m) - log Σ_k exp(x_k - m), m = max x)
    /// ```
    ///
    /// Backward, with `p = exp(y)` (the softmax): `dx = dy - p * Σ_j dy_j` per row. It runs as
    /// a small kernel (`log_softmax_backward`) rather than as tensor ops: the tensor-op form
    /// `dy - exp(y) * sum(dy, -1)` would allocate three `N × V` temporaries (exp, product,
    /// difference) and walk memory four times; the kernel makes one pass and one output.
    /// Only the output `y` is saved. Errors for a rank-0 tensor.
    pub fn log_softmax(&self) -> Result<Tensor> {
        let (_, v) = rows_and_classes("log_softmax", self)?;
        let x = self.contiguous_detached()?;
        let out = run(&LogSoftmaxForward { v }, &[&x])?;
        let saved = out.clone();
        Ok(record("log_softmax", out, &[self], &[&saved], move |g, s, _| {
            // The incoming gradient may be a broadcast or other strided view.
            Ok(vec![Some(run(&LogSoftmaxBackward { v }, &[&s[0], &g.contiguous_detached()?])?)])
        }))
    }

    /// Mean cross-entropy of logits `(..., V)` against class indices, as a scalar.
    ///
    /// The logits are read as `N` rows of `V` (`N` = product of the leading axes);
    /// `targets.len()` must be `N`. Rows whose target equals `ignore_index` (e.g. padding)
    /// are left out; over the `n_valid` others
    ///
    /// ```text
    /// loss = (1 / n_valid) Σ_r -log_softmax(x_r)[t_r] = (1 / n_valid) Σ_r (logsumexp(x_r) - x_r[t_r])
    /// ```
    ///
    /// with the sum accumulated in f64. Backward:
    /// `dx_r = (softmax(x_r) - onehot(t_r)) * dloss / n_valid`, and zero for ignored rows.
    ///
    /// If every row is ignored, the loss is 0 and so is every gradient. (PyTorch returns
    /// NaN here — 0/0 — which would poison the parameters through the optimiser although
    /// there was simply nothing to learn from that batch.)
    ///
    /// Saved for backward: the logits (made contiguous, which is the input itself in the
    /// usual case) and one logsumexp per row; the targets are copied into the closure.
    /// The logsumexp is kept in the logits' dtype: for f32 logits near 1e4 its rounding
    /// (about 5e-4) limits the recomputed softmax to about that accuracy; for logits of
    /// ordinary size (|x| < 100) the error is below 1e-5.
    ///
    /// Errors: rank-0 logits (`Error::Rank`), `targets.len() != N` (`Error::ShapeMismatch`),
    /// a target outside `0..V` that is not `ignore_index` (`Error::Index`, naming it and `V`).
    pub fn cross_entropy(&self, targets: &[i64], ignore_index: i64) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        let (n, v) = rows_and_classes(OP, self)?;
        if targets.len() != n {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().to_vec(),
                rhs: vec![targets.len()],
                hint: format!("logits (..., V={v}) hold {n} rows, so {n} targets are needed, got {}", targets.len()),
            });
        }
        let mut n_valid = 0usize;
        for &t in targets.iter().filter(|&&t| t != ignore_index) {
            if t < 0 || t >= v as i64 {
                return Err(Error::Index { op: OP, index: t, size: v, what: "target class" });
            }
            n_valid += 1;
        }

        let x = self.contiguous_detached()?;
        let (out, lse) = run(&CrossEntropyForward { targets, ignore_index, n_valid, v }, &[&x])?;
        let targets = targets.to_vec();
        Ok(record(OP, out, &[self], &[&x, &lse], move |g, s, _| {
            let (x, lse) = (&s[0], &s[1]);
            if n_valid == 0 {
                return Ok(vec![Some(x.zeros_like()?)]);
            }
            let backward = CrossEntropyBackward { targets: &targets, ignore_index, n_valid };
            Ok(vec![Some(run(&backward, &[x, lse, g])?)])
        }))
    }
}

/// `[x (rows, v)]`, contiguous -> `log_softmax(x)` per row.
struct LogSoftmaxForward {
    v: usize,
}

impl Kernel for LogSoftmaxForward {
    const NAME: &'static str = "log_softmax";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        Tensor::from_vec(cpu::log_softmax_forward(x[0].elems(), self.v), &x[0].layout.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::log_softmax_forward(x[0], self.v)
    }
}

/// `[y, dy]` (rows, v), contiguous -> `dx = dy - exp(y) * Σ_j dy_j` per row.
struct LogSoftmaxBackward {
    v: usize,
}

impl Kernel for LogSoftmaxBackward {
    const NAME: &'static str = "log_softmax";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        Tensor::from_vec(cpu::log_softmax_backward(x[0].elems(), x[1].elems(), self.v), &x[0].layout.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::log_softmax_backward(x[0], x[1], self.v)
    }
}

/// `[x (rows, v)]`, contiguous -> (the mean loss over the `n_valid` rows, as a scalar;
/// one logsumexp per row).
struct CrossEntropyForward<'a> {
    targets: &'a [i64],
    ignore_index: i64,
    n_valid: usize,
    v: usize,
}

impl Kernel for CrossEntropyForward<'_> {
    const NAME: &'static str = "cross_entropy";
    type Out = (Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor)> {
        let (lse, row_loss) = cpu::cross_entropy_forward(x[0].elems(), self.v, self.targets, self.ignore_index);
        // Summed in row order, so the result does not depend on the thread count.
        let total: f64 = row_loss.iter().sum();
        let loss = if self.n_valid == 0 { 0.0 } else { total / self.n_valid as f64 };
        Ok((Tensor::from_vec(vec![T::cast(loss)], &[])?, Tensor::from_vec(lse, &[self.targets.len()])?))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        cuda::cross_entropy_forward(x[0], self.targets, self.ignore_index, self.n_valid, self.v)
    }
}

/// `[x (rows, v), lse (rows), dloss (scalar)]`, x contiguous ->
/// `dx = (softmax(x) - onehot(t)) * dloss / n_valid` (`dloss`: the gradient of the scalar loss).
struct CrossEntropyBackward<'a> {
    targets: &'a [i64],
    ignore_index: i64,
    n_valid: usize,
}

impl Kernel for CrossEntropyBackward<'_> {
    const NAME: &'static str = "cross_entropy";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let scale = x[2].data[x[2].layout.offset].as_f64() / self.n_valid as f64;
        let v = x[0].layout.shape.last().copied().unwrap_or(1);
        let dx = cpu::cross_entropy_backward(x[0].elems(), v, x[1].elems(), self.targets, self.ignore_index, scale);
        Tensor::from_vec(dx, &x[0].layout.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::cross_entropy_backward(x[0], x[1], self.targets, self.ignore_index, self.n_valid, x[2])
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["log_softmax", "cross_entropy"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    log_softmax: tol TIGHT, exercises ["log_softmax"],
        inputs |r| vec![rn(&[2, 3, 5], r).mul_scalar(2.0).unwrap()],
        f |x| x[0].log_softmax();
    log_softmax_of_transposed: tol TIGHT, exercises ["log_softmax", "permute"],
        inputs |r| vec![rn(&[5, 3], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.log_softmax();
    cross_entropy_with_ignored_row: tol TIGHT, exercises ["cross_entropy"],
        inputs |r| vec![rn(&[4, 5], r)],
        f |x| x[0].cross_entropy(&[1, -100, 4, 0], -100);
    cross_entropy_of_transposed: tol TIGHT, exercises ["cross_entropy", "permute"],
        inputs |r| vec![rn(&[5, 3], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.cross_entropy(&[2, 0, 2], -1);
}

#[cfg(test)]
mod tests {
    use crate::{
        autograd::saved_in_graph,
        gradcheck::{check, Tolerance},
        DType, Error, Rng, Tensor,
    };

    fn randn(shape: &[usize], std: f64, seed: u64) -> Tensor {
        Tensor::randn(shape, 0.0, std, DType::F64, &mut Rng::new(seed))
    }

    /// -mean over valid rows of log_softmax(x)[t], from plain numbers.
    fn reference_ce(x: &Tensor, targets: &[i64], ignore: i64) -> f64 {
        let v = *x.shape().last().unwrap();
        let y = x.log_softmax().unwrap().to_vec_f64().unwrap();
        let picked: Vec<f64> =
            targets.iter().enumerate().filter(|(_, &t)| t != ignore).map(|(r, &t)| -y[r * v + t as usize]).collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    }

    #[test]
    fn log_softmax_rows_are_log_probabilities() {
        let x = randn(&[2, 3, 4], 2.0, 1);
        let y = x.log_softmax().unwrap();
        assert_eq!(y.shape(), &[2, 3, 4]);
        let sums = y.exp().unwrap().sum(&[-1], false).unwrap().to_vec_f64().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-12), "{sums:?}");
        // y = x - log Σ exp(x), written with tensor ops.
        let lse = x.exp().unwrap().sum(&[-1], true).unwrap().log().unwrap();
        let want = x.sub(&lse).unwrap().to_vec_f64().unwrap();
        for (a, b) in y.to_vec_f64().unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn log_softmax_backward_matches_the_tensor_op_formula() {
        let x = randn(&[3, 5], 1.0, 2).requires_grad();
        let dy = randn(&[3, 5], 1.0, 3);
        let y = x.log_softmax().unwrap();
        y.backward_with(&dy).unwrap();
        let want = dy.sub(&y.detach().exp().unwrap().mul(&dy.sum(&[-1], true).unwrap()).unwrap()).unwrap();
        for (a, b) in x.grad().unwrap().to_vec_f64().unwrap().iter().zip(&want.to_vec_f64().unwrap()) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn log_softmax_gradcheck() {
        let tol = Tolerance::default();
        let r = check(|x| x[0].log_softmax(), &[randn(&[3, 5], 1.0, 4)], tol).unwrap();
        assert!(r.ops.contains(&"log_softmax"));
        check(|x| x[0].log_softmax(), &[randn(&[2, 3, 4], 1.0, 5)], tol).unwrap();
        check(|x| x[0].log_softmax(), &[randn(&[6], 1.0, 6)], tol).unwrap();
        // A transposed (non-contiguous) view; the gradient also arrives through a broadcast.
        let r = check(
            |x| {
                x[0].transpose(0, 1)?
                    .log_softmax()?
                    .sum(&[-1], true)?
                    .broadcast_as(&[5, 4])?
                    .mul(&x[0].transpose(0, 1)?)
            },
            &[randn(&[4, 5], 1.0, 7)],
            tol,
        )
        .unwrap();
        assert!(r.ops.contains(&"permute") && r.ops.contains(&"log_softmax"));
    }

    #[test]
    fn cross_entropy_matches_log_softmax() {
        let x = randn(&[2, 3, 5], 1.5, 8);
        let targets = [4, 0, -100, 2, 2, 1];
        let loss = x.cross_entropy(&targets, -100).unwrap();
        assert_eq!(loss.shape(), &[] as &[usize]);
        assert!((loss.item().unwrap() - reference_ce(&x, &targets, -100)).abs() < 1e-12);
        // f32 logits give an f32 loss.
        let l32 = x.to_dtype(DType::F32).unwrap().cross_entropy(&targets, -100).unwrap();
        assert_eq!(l32.dtype(), DType::F32);
        assert!((l32.item().unwrap() - loss.item().unwrap()).abs() < 1e-5);
    }

    #[test]
    fn cross_entropy_gradcheck() {
        let tol = Tolerance::default();
        let r = check(|x| x[0].cross_entropy(&[1, -100, 3, 0], -100), &[randn(&[4, 5], 1.0, 9)], tol).unwrap();
        assert!(r.ops.contains(&"cross_entropy"));
        // (B, L, V) logits, an ignore index that is also a valid class.
        check(|x| x[0].cross_entropy(&[0, 2, 1, 0, 3, 2], 0), &[randn(&[2, 3, 4], 1.0, 10)], tol).unwrap();
        // Scaled afterwards, so dloss != 1 reaches the backward kernel.
        check(|x| x[0].cross_entropy(&[2, 2, 0], -1)?.affine(-3.0, 0.0), &[randn(&[3, 4], 1.0, 11)], tol).unwrap();
        // A transposed (non-contiguous) view of shape (5, 4).
        let r = check(|x| x[0].transpose(0, 1)?.cross_entropy(&[0, 3, 1, 2, 3], -1), &[randn(&[4, 5], 1.0, 12)], tol)
            .unwrap();
        assert!(r.ops.contains(&"permute") && r.ops.contains(&"cross_entropy"));
    }

    #[test]
    fn ignored_rows_contribute_nothing() {
        let x = randn(&[4, 6], 1.0, 13).requires_grad();
        x.cross_entropy(&[-1, 5, -1, 2], -1).unwrap().backward().unwrap();
        let full = x.grad().unwrap().to_vec_f64().unwrap();
        // The same loss and gradients as the two valid rows alone.
        let valid = Tensor::concat(&[&x.narrow(0, 1, 1).unwrap(), &x.narrow(0, 3, 1).unwrap()], 0).unwrap().detach();
        let valid = valid.requires_grad();
        let loss = valid.cross_entropy(&[5, 2], -1).unwrap();
        assert!((loss.item().unwrap() - x.cross_entropy(&[-1, 5, -1, 2], -1).unwrap().item().unwrap()).abs() < 1e-12);
        loss.backward().unwrap();
        let part = valid.grad().unwrap().to_vec_f64().unwrap();
        assert!(full[..6].iter().chain(&full[12..18]).all(|&g| g == 0.0));
        assert_eq!(&full[6..12], &part[..6]);
        assert_eq!(&full[18..24], &part[6..]);
    }

    #[test]
    fn all_ignored_gives_zero_loss_and_zero_gradients() {
        let x = randn(&[3, 4], 1.0, 14).requires_grad();
        let loss = x.cross_entropy(&[-100, -100, -100], -100).unwrap();
        assert_eq!(loss.item().unwrap(), 0.0);
        loss.backward().unwrap();
        assert!(x.grad().unwrap().to_vec_f64().unwrap().iter().all(|&g| g == 0.0));
        // No rows at all, and no classes with every row ignored: also 0, not an error.
        let empty = Tensor::zeros(&[0, 4], DType::F32, crate::Device::Cpu).unwrap();
        assert_eq!(empty.cross_entropy(&[], -100).unwrap().item().unwrap(), 0.0);
        let no_classes = Tensor::zeros(&[2, 0], DType::F32, crate::Device::Cpu).unwrap();
        assert_eq!(no_classes.cross_entropy(&[-1, -1], -1).unwrap().item().unwrap(), 0.0);
    }

    #[test]
    fn large_logits_stay_finite() {
        // Logits ~1e4 overflow exp() in any dtype; the shifted kernels must not care.
        let small = randn(&[3, 5], 3.0, 15);
        let targets = [1, 4, 0];
        let want = small.cross_entropy(&targets, -1).unwrap().item().unwrap();
        for dtype in [DType::F64, DType::F32] {
            let big = small.add_scalar(1e4).unwrap().to_dtype(dtype).unwrap().requires_grad();
            let loss = big.cross_entropy(&targets, -1).unwrap();
            let tol = if dtype == DType::F64 { 1e-9 } else { 2e-3 };
            assert!((loss.item().unwrap() - want).abs() < tol, "{dtype}: {} vs {want}", loss.item().unwrap());
            loss.backward().unwrap();
            assert!(big.grad().unwrap().to_vec_f64().unwrap().iter().all(|g| g.is_finite()));
            assert!(big.log_softmax().unwrap().to_vec_f64().unwrap().iter().all(|y| y.is_finite()));
        }
    }

    #[test]
    fn only_what_backward_needs_is_saved() {
        let (n, v) = (4, 6);
        let x = randn(&[n, v], 1.0, 16).requires_grad();
        let y = x.log_softmax().unwrap();
        assert_eq!(saved_in_graph(&y).per_op["log_softmax"].bytes, n * v * 8); // y only
        let loss = x.cross_entropy(&[0, 1, 2, 3], -1).unwrap();
        assert_eq!(saved_in_graph(&loss).per_op["cross_entropy"].bytes, n * v * 8 + n * 8);
        // logits + lse
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = randn(&[2, 3], 1.0, 17);
        let scalar = Tensor::scalar(1.0, DType::F64, crate::Device::Cpu).unwrap();
        assert!(matches!(scalar.log_softmax(), Err(Error::Rank { op: "log_softmax", .. })));
        assert!(matches!(scalar.cross_entropy(&[0], -1), Err(Error::Rank { op: "cross_entropy", .. })));
        let e = x.cross_entropy(&[0, 1, 2], -1).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { op: "cross_entropy", .. }), "{e}");
        assert!(e.to_string().contains("2 targets are needed, got 3"), "{e}");
        let e = x.cross_entropy(&[0, 3], -1).unwrap_err();
        assert_eq!(e, Error::Index { op: "cross_entropy", index: 3, size: 3, what: "target class" });
        assert!(e.to_string().contains("3 is out of range for size 3"), "{e}");
        let e = x.cross_entropy(&[-1, 0], -100).unwrap_err();
        assert!(matches!(e, Error::Index { index: -1, size: 3, .. }), "{e}");
    }
}
