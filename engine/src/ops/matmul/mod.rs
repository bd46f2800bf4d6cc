//! Matrix product with broadcast batch axes: `(.., m, k) @ (.., k, n) -> (.., m, n)`.
//! Backward: dA = dC @ B^T, dB = A^T @ dC (each summed over axes it was broadcast on).
//! Transposes are views: the kernel reads any strides, so nothing is copied.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    error::Error,
    shape::{broadcast_shape, Layout},
    Result, Tensor,
};
pub use cpu::MatStrides;

/// The batch axes of `layout` (all but the last two) as one stride, if they collapse.
fn batch_stride(layout: &Layout) -> Option<usize> {
    let r = layout.shape.len() - 2;
    let dims: Vec<(usize, usize)> =
        (0..r).map(|i| (layout.shape[i], layout.strides[i])).filter(|&(d, _)| d != 1).collect();
    let Some(&(_, inner)) = dims.last() else { return Some(0) };
    let mut expected = inner;
    for &(d, s) in dims.iter().rev() {
        if s != expected {
            return None;
        }
        expected = s * d;
    }
    Some(inner)
}

/// `t` broadcast to `batch + [rows, cols]`, as (tensor, strides) the kernel can read.
fn operand(t: &Tensor, batch: &[usize]) -> Result<(Tensor, MatStrides)> {
    let mut shape = batch.to_vec();
    shape.extend_from_slice(&t.shape()[t.rank() - 2..]);
    let mut view = t.with_layout(t.layout.broadcast_as(&shape));
    let bs = match batch_stride(&view.layout) {
        Some(s) => s,
        None => {
            view = view.contiguous()?;
            batch_stride(&view.layout).unwrap_or(0)
        }
    };
    let r = shape.len();
    let strides = MatStrides { batch: bs, row: view.layout.strides[r - 2], col: view.layout.strides[r - 1] };
    Ok((view, strides))
}

/// `[a, b]` read as `nb` matrices `(m, k)` and `(k, n)` through strides -> `(.., m, n)`.
struct Matmul<'a> {
    sa: MatStrides,
    sb: MatStrides,
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
    shape: &'a [usize],
}

impl Kernel for Matmul<'_> {
    const NAME: &'static str = "matmul";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let Matmul { sa, sb, nb, m, n, k, shape } = *self;
        let mut out = vec![T::zero(); nb * m * n];
        cpu::matmul(nb, m, n, k, x[0].at_offset(), sa, x[1].at_offset(), sb, &mut out);
        Tensor::from_vec(out, shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        let Matmul { sa, sb, nb, m, n, k, shape } = *self;
        cuda::matmul(x[0], sa, x[1], sb, nb, m, n, k, shape)
    }
}

impl Tensor {
    /// Matrix product; both operands need rank >= 2.
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor> {
        super::check_pair("matmul", self, b)?;
        let mismatch = |hint: &str| Error::ShapeMismatch {
            op: "matmul",
            lhs: self.shape().to_vec(),
            rhs: b.shape().to_vec(),
            hint: hint.into(),
        };
        if self.rank() < 2 || b.rank() < 2 {
            return Err(mismatch("both operands need at least 2 axes (.., rows, cols)"));
        }
        let (m, k) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        let (k2, n) = (b.shape()[b.rank() - 2], b.shape()[b.rank() - 1]);
        if k != k2 {
            return Err(mismatch(&format!("inner dimensions differ: {k} vs {k2}")));
        }
        let batch = broadcast_shape("matmul", &self.shape()[..self.rank() - 2], &b.shape()[..b.rank() - 2])
            .map_err(|_| mismatch("the batch axes (all but the last two) do not broadcast"))?;
        let (va, sa) = operand(self, &batch)?;
        let (vb, sb) = operand(b, &batch)?;
        let nb: usize = batch.iter().product();
        let mut shape = batch.to_vec();
        shape.extend_from_slice(&[m, n]);
        let out = run(&Matmul { sa, sb, nb, m, n, k, shape: &shape }, &[&va, &vb])?;
        Ok(record("matmul", out, &[self, b], &[self, b], |g, s, needs| {
            let (a, b) = (&s[0], &s[1]);
            let ga = if needs[0] { Some(g.matmul(&b.transpose(-1, -2)?)?.sum_to_shape(a.shape())?) } else { None };
            let gb = if needs[1] { Some(a.transpose(-1, -2)?.matmul(g)?.sum_to_shape(b.shape())?) } else { None };
            Ok(vec![ga, gb])
        }))
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["matmul"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    matmul_2d: tol TIGHT, exercises ["matmul"],
        inputs |r| vec![rn(&[3, 4], r), rn(&[4, 5], r)],
        f |x| x[0].matmul(&x[1]);
    matmul_batched_broadcast_transposed_rhs: tol TIGHT, exercises ["matmul", "permute"],
        // (2,1,3,4) @ (3,5,4)^T: batch (2,1) with (3,) broadcasts to (2,3)
        inputs |r| vec![rn(&[2, 1, 3, 4], r), rn(&[3, 5, 4], r)],
        f |x| x[0].matmul(&strided(x[1].transpose(-1, -2)?)?);
    matmul_transposed_lhs: tol TIGHT, exercises ["matmul", "permute"],
        inputs |r| vec![rn(&[4, 3], r), rn(&[4, 2], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.matmul(&x[1]);
    matmul_broadcast_operand: tol TIGHT, exercises ["matmul", "broadcast"],
        // a stride-0 batch axis: the gradient of `a` is summed over the batch
        inputs |r| vec![rn(&[3, 4], r), rn(&[2, 4, 5], r)],
        f |x| strided(x[0].broadcast_as(&[2, 3, 4])?)?.matmul(&x[1]);
    matmul_permuted_batch: tol TIGHT, exercises ["matmul", "permute"],
        // batch axes whose strides do not collapse into one
        inputs |r| vec![rn(&[3, 2, 4, 5], r), rn(&[5, 2], r)],
        f |x| strided(x[0].permute(&[1, 0, 2, 3])?)?.matmul(&x[1]);
}
