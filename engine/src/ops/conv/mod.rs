//! Causal depthwise 1-D convolution, fused (forward and backward are one kernel each).
//!
//! ```text
//! x (B, C, L), weight (C, K), bias (C)  ->  y (B, C, L)
//! y[b,c,t] = bias[c] + sum_{j=0}^{K-1} weight[c,j] * x[b,c,t-(K-1)+j]      x[.., <0] = 0
//! ```
//!
//! This is PyTorch's `nn.Conv1d(C, C, K, groups=C, padding=K-1)` with its output cut to
//! the first `L` steps, which is how Mamba mixes each channel with its recent past
//! (K = 4). Mamba stores the weight as `(C, 1, K)`; reshape it to `(C, K)` first.
//! Backward saves `x` and `weight` only; the formulas are in `cpu.rs`.

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
    /// Causal depthwise conv1d of `self` `(B, C, L)` with `weight` `(C, K)` and an optional
    /// `bias` `(C)`; returns `(B, C, L)`. Gradients flow to `self`, `weight` and `bias`.
    pub fn conv1d_causal(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "conv1d_causal";
        super::check_pair(OP, self, weight)?;
        if let Some(bias) = bias {
            super::check_pair(OP, self, bias)?;
        }
        let &[_, c, _] = self.shape() else {
            return Err(Error::Rank {
                op: OP,
                shape: self.shape().to_vec(),
                expected: "rank 3: (batch, channels, length)".into(),
            });
        };
        let mismatch = |rhs: &Tensor, hint: String| Error::ShapeMismatch {
            op: OP,
            lhs: self.shape().to_vec(),
            rhs: rhs.shape().to_vec(),
            hint,
        };
        let &[wc, k] = weight.shape() else {
            return Err(mismatch(
                weight,
                format!("the weight must be (C, K) = ({c}, K); reshape a (C, 1, K) weight first"),
            ));
        };
        if wc != c {
            return Err(mismatch(weight, format!("the weight has {wc} channels but x has {c}")));
        }
        if k == 0 {
            return invalid(OP, format!("the kernel size K must be at least 1 (weight shape {:?})", weight.shape()));
        }
        if let Some(bias) = bias.filter(|t| t.shape() != [c]) {
            return Err(mismatch(bias, format!("the bias must have shape [{c}], one value per channel")));
        }

        let out = conv1d_causal_forward(self, weight, bias)?;
        let backward = move |g: &Tensor, s: &[Tensor], needs: &[bool]| -> Result<Vec<Option<Tensor>>> {
            let (dx, dw, db) = conv1d_causal_grads(&s[0], &s[1], g)?;
            let mut grads = vec![needs[0].then_some(dx), needs[1].then_some(dw)];
            if needs.len() == 3 {
                grads.push(needs[2].then_some(db));
            }
            Ok(grads)
        };
        Ok(match bias {
            Some(bias) => record(OP, out, &[self, weight, bias], &[self, weight], backward),
            None => record(OP, out, &[self, weight], &[self, weight], backward),
        })
    }
}

/// `(dx, dw, db)` from the backward kernel (runs inside backward: records nothing).
fn conv1d_causal_grads(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    if x.rank() != 3 || w.rank() != 2 {
        return invalid(
            "conv1d_causal",
            format!("saved shapes {:?} and {:?} are not (B, C, L) and (C, K) (engine bug)", x.shape(), w.shape()),
        );
    }
    let (x, w, dy) = (x.contiguous_detached()?, w.contiguous_detached()?, dy.contiguous_detached()?);
    run(&Conv1dCausalBackward, &[&x, &w, &dy])
}

/// The forward kernel on validated `(B, C, L)`, `(C, K)` and optional `(C)` tensors (no graph).
fn conv1d_causal_forward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (x, w) = (x.contiguous_detached()?, w.contiguous_detached()?);
    let bias = bias.map(|t| t.contiguous_detached()).transpose()?;
    let mut inputs = vec![&x, &w];
    inputs.extend(bias.as_ref());
    run(&Conv1dCausalForward, &inputs)
}

/// `(b, c, l, k)` from `x (B, C, L)` and `w (C, K)`.
fn dims(x: &crate::shape::Layout, w: &crate::shape::Layout) -> (usize, usize, usize, usize) {
    (x.shape[0], x.shape[1], x.shape[2], w.shape[1])
}

/// `[x (B, C, L), w (C, K), (bias (C))]`, contiguous -> `y (B, C, L)`.
struct Conv1dCausalForward;

impl Kernel for Conv1dCausalForward {
    const NAME: &'static str = "conv1d_causal";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let (b, c, l, k) = dims(x[0].layout, x[1].layout);
        let bias = x.get(2).map(|t| t.elems());
        Tensor::from_vec(cpu::conv1d_causal_forward(x[0].elems(), x[1].elems(), bias, b, c, l, k), &[b, c, l])
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::conv1d_causal_forward(x[0], x[1], x.get(2).copied())
    }
}

/// `[x (B, C, L), w (C, K), dy (B, C, L)]`, contiguous -> `(dx, dw, db)`.
struct Conv1dCausalBackward;

impl Kernel for Conv1dCausalBackward {
    const NAME: &'static str = "conv1d_causal";
    type Out = (Tensor, Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, c, l, k) = dims(x[0].layout, x[1].layout);
        let (dx, dw, db) = cpu::conv1d_causal_backward(x[0].elems(), x[1].elems(), x[2].elems(), b, c, l, k);
        Ok((Tensor::from_vec(dx, &[b, c, l])?, Tensor::from_vec(dw, &[c, k])?, Tensor::from_vec(db, &[c])?))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        cuda::conv1d_causal_backward(x[0], x[1], x[2])
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["conv1d_causal"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    conv1d_causal_with_bias: tol TIGHT, exercises ["conv1d_causal"],
        inputs |r| vec![rn(&[2, 3, 5], r), rn(&[3, 4], r), rn(&[3], r)],
        f |x| x[0].conv1d_causal(&x[1], Some(&x[2]));
    conv1d_causal_without_bias: tol TIGHT, exercises ["conv1d_causal"],
        inputs |r| vec![rn(&[2, 3, 5], r), rn(&[3, 4], r)],
        f |x| x[0].conv1d_causal(&x[1], None);
    conv1d_causal_kernel_longer_than_input: tol TIGHT, exercises ["conv1d_causal"],
        inputs |r| vec![rn(&[1, 2, 3], r), rn(&[2, 4], r), rn(&[2], r)],
        f |x| x[0].conv1d_causal(&x[1], Some(&x[2]));
    conv1d_causal_of_permuted: tol TIGHT, exercises ["conv1d_causal", "permute"],
        // Mamba's layout: (B, L, C) permuted to (B, C, L)
        inputs |r| vec![rn(&[2, 6, 3], r), rn(&[3, 4], r), rn(&[3], r)],
        f |x| strided(x[0].permute(&[0, 2, 1])?)?.conv1d_causal(&x[1], Some(&x[2]));
}

#[cfg(test)]
mod tests {
    use crate::{
        autograd::saved_in_graph,
        gradcheck::{check, Tolerance},
        DType, Device, Error, Rng, Tensor,
    };

    #[test]
    fn matches_a_shift_and_add_reference() {
        // y = bias + sum_j w[:, j] * (x delayed by K-1-j steps), built from narrow + concat
        let mut rng = Rng::new(21);
        let (b, c, l, k) = (2, 3, 6, 4);
        let x = Tensor::randn(&[b, c, l], 0.0, 1.0, DType::F64, &mut rng);
        let w = Tensor::randn(&[c, k], 0.0, 1.0, DType::F64, &mut rng);
        let bias = Tensor::randn(&[c], 0.0, 1.0, DType::F64, &mut rng);
        let y = x.conv1d_causal(&w, Some(&bias)).unwrap();
        let mut want = bias.reshape(&[1, c, 1]).unwrap().broadcast_as(&[b, c, l]).unwrap();
        for j in 0..k {
            let delay = k - 1 - j;
            let zeros = Tensor::zeros(&[b, c, delay], DType::F64, Device::Cpu).unwrap();
            let shifted = Tensor::concat(&[&zeros, &x.narrow(2, 0, l - delay).unwrap()], 2).unwrap();
            let tap = w.narrow(1, j, 1).unwrap().reshape(&[1, c, 1]).unwrap();
            want = want.add(&shifted.mul(&tap).unwrap()).unwrap();
        }
        for (a, b) in y.to_vec_f64().unwrap().iter().zip(want.to_vec_f64().unwrap()) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn gradcheck_with_and_without_bias() {
        let mut rng = Rng::new(22);
        let x = Tensor::randn(&[2, 3, 5], 0.0, 1.0, DType::F64, &mut rng);
        let w = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, &mut rng);
        let bias = Tensor::randn(&[3], 0.0, 1.0, DType::F64, &mut rng);
        let inputs = [x.clone(), w.clone(), bias];
        let r = check(|xs| xs[0].conv1d_causal(&xs[1], Some(&xs[2])), &inputs, Tolerance::default()).unwrap();
        assert!(r.ops.contains(&"conv1d_causal"));
        assert_eq!(r.checked, 30 + 12 + 3);
        let r = check(|xs| xs[0].conv1d_causal(&xs[1], None), &[x, w], Tolerance::default()).unwrap();
        assert_eq!(r.checked, 30 + 12);
    }

    #[test]
    fn gradcheck_non_contiguous_input_and_long_kernel() {
        // x stored as (B, L, C), as a model's activations are, and permuted to (B, C, L);
        // K = 6 > L = 4 exercises taps that only ever see padding.
        let mut rng = Rng::new(23);
        let x = Tensor::randn(&[2, 4, 3], 0.0, 1.0, DType::F64, &mut rng);
        let w = Tensor::randn(&[3, 6], 0.0, 1.0, DType::F64, &mut rng);
        let bias = Tensor::randn(&[3], 0.0, 1.0, DType::F64, &mut rng);
        let f = |xs: &[Tensor]| {
            let v = xs[0].permute(&[0, 2, 1])?;
            assert!(!v.is_contiguous());
            v.conv1d_causal(&xs[1], Some(&xs[2]))
        };
        check(f, &[x, w, bias], Tolerance::default()).unwrap();
    }

    #[test]
    fn f32_backward_reaches_every_leaf_and_saves_x_and_weight() {
        let mut rng = Rng::new(24);
        let x = Tensor::randn(&[2, 8, 16], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
        let w = Tensor::randn(&[8, 4], 0.0, 0.5, DType::F32, &mut rng).requires_grad();
        let bias = Tensor::zeros(&[8], DType::F32, Device::Cpu).unwrap().requires_grad();
        let y = x.conv1d_causal(&w, Some(&bias)).unwrap();
        assert_eq!(saved_in_graph(&y).per_op["conv1d_causal"].bytes, (2 * 8 * 16 + 8 * 4) * 4);
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().shape(), &[2, 8, 16]);
        assert_eq!(w.grad().unwrap().shape(), &[8, 4]);
        // d(sum y)/d bias[c] counts every (b, t): 2 * 16
        assert_eq!(bias.grad().unwrap().to_vec::<f32>().unwrap(), vec![32.0; 8]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let z = |s: &[usize]| Tensor::zeros(s, DType::F32, Device::Cpu).unwrap();
        let x = z(&[2, 3, 5]);
        let w = z(&[3, 4]);
        assert!(matches!(z(&[3, 5]).conv1d_causal(&w, None), Err(Error::Rank { op: "conv1d_causal", .. })));
        assert!(matches!(x.conv1d_causal(&z(&[3, 1, 4]), None), Err(Error::ShapeMismatch { op: "conv1d_causal", .. })));
        assert!(matches!(x.conv1d_causal(&z(&[4, 4]), None), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(x.conv1d_causal(&z(&[3, 0]), None), Err(Error::Invalid { .. })));
        assert!(matches!(x.conv1d_causal(&w, Some(&z(&[2]))), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(x.conv1d_causal(&w, Some(&z(&[1, 3]))), Err(Error::ShapeMismatch { .. })));
        let w64 = Tensor::zeros(&[3, 4], DType::F64, Device::Cpu).unwrap();
        assert!(matches!(x.conv1d_causal(&w64, None), Err(Error::DTypeMismatch { .. })));
        let b64 = Tensor::zeros(&[3], DType::F64, Device::Cpu).unwrap();
        assert!(matches!(x.conv1d_causal(&w, Some(&b64)), Err(Error::DTypeMismatch { .. })));
    }
}
