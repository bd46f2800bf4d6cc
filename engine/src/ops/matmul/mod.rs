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
