//! Matrix product with broadcast batch axes: `(.., m, k) @ (.., k, n) -> (.., m, n)`.
//! Backward: dA = dC @ B^T, dB = A^T @ dC (each summed over axes it was broadcast on).
//! Transposes are views: the kernel reads any strides, so nothing is copied.
//!
//! Two ops: `matmul` (f32, f64, or bf16 in and out with f32 sums) and `matmul_bf16` (operands
//! rounded to bf16, f32 sums and result: the model's linear layers under
//! `precision::set_matmul_bf16`, through `Tensor::matmul_autocast`).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::{bf16, DType, Elem, Scalar},
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
/// f32 and f64 operands give a result of their dtype; bf16 operands give `out` (bf16 or f32):
/// the products of the bf16 values summed in f32, rounded once to `out`.
struct Matmul<'a> {
    sa: MatStrides,
    sb: MatStrides,
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
    shape: &'a [usize],
    out: DType,
}

/// How many elements from a view's offset the strides `s` of `(nb, rows, cols)` reach.
fn reach(s: MatStrides, nb: usize, rows: usize, cols: usize) -> usize {
    if nb == 0 || rows == 0 || cols == 0 {
        return 0;
    }
    (nb - 1) * s.batch + (rows - 1) * s.row + (cols - 1) * s.col + 1
}

impl Kernel for Matmul<'_> {
    const NAME: &'static str = "matmul";
    type Out = Tensor;
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [DType] = &[DType::F32, DType::BF16];

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let Matmul { sa, sb, nb, m, n, k, shape, .. } = *self;
        let mut out = vec![T::zero(); nb * m * n];
        cpu::matmul(nb, m, n, k, x[0].at_offset(), sa, x[1].at_offset(), sb, &mut out);
        Tensor::from_vec(out, shape)
    }

    /// The values the operands' strides reach, widened to f32 (exact), through the f32 GEMM
    /// (a product of two bf16 values is exact in f32, so only the f32 sums round), then
    /// rounded once to `out`: what the tensor cores compute, up to the order of the sums.
    fn cpu_bf16(&self, x: &[CpuIn<'_, bf16>]) -> Result<Tensor> {
        let Matmul { sa, sb, nb, m, n, k, shape, out: dtype } = *self;
        let widen = |v: &[bf16], len: usize| -> Vec<f32> { v[..len].iter().map(|b| b.to_f32()).collect() };
        let a = widen(x[0].at_offset(), reach(sa, nb, m, k));
        let b = widen(x[1].at_offset(), reach(sb, nb, k, n));
        let mut out = vec![0f32; nb * m * n];
        cpu::matmul(nb, m, n, k, &a, sa, &b, sb, &mut out);
        match dtype {
            DType::BF16 => {
                Tensor::from_vec(out.iter().map(|&v| <bf16 as Scalar>::cast(v as f64)).collect::<Vec<bf16>>(), shape)
            }
            _ => Tensor::from_vec(out, shape),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        let Matmul { sa, sb, nb, m, n, k, shape, out } = *self;
        if x[0].dtype() == DType::BF16 {
            return cuda::matmul_bf16(x[0], sa, x[1], sb, [nb, m, n, k], shape, out);
        }
        cuda::matmul(x[0], sa, x[1], sb, nb, m, n, k, shape)
    }
}

/// The product `a @ b` as op `op` (checked, broadcast, run; no graph), bf16 operands giving
/// `out` (f32 and f64 operands give their own dtype).
fn product(op: &'static str, a: &Tensor, b: &Tensor, out: DType) -> Result<Tensor> {
    super::check_pair(op, a, b)?;
    let mismatch =
        |hint: &str| Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec(), hint: hint.into() };
    if a.rank() < 2 || b.rank() < 2 {
        return Err(mismatch("both operands need at least 2 axes (.., rows, cols)"));
    }
    let (m, k) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
    let (k2, n) = (b.shape()[b.rank() - 2], b.shape()[b.rank() - 1]);
    if k != k2 {
        return Err(mismatch(&format!("inner dimensions differ: {k} vs {k2}")));
    }
    let batch = broadcast_shape(op, &a.shape()[..a.rank() - 2], &b.shape()[..b.rank() - 2])
        .map_err(|_| mismatch("the batch axes (all but the last two) do not broadcast"))?;
    let (va, sa) = operand(a, &batch)?;
    let (vb, sb) = operand(b, &batch)?;
    let nb: usize = batch.iter().product();
    let mut shape = batch.to_vec();
    shape.extend_from_slice(&[m, n]);
    run(&Matmul { sa, sb, nb, m, n, k, shape: &shape, out }, &[&va, &vb])
}

/// `t`'s values rounded to bf16, outside the graph (the same tensor if it is bf16 already).
/// A transposed view (a weight `W^T`, `x^T` in dW) is rounded as stored and viewed transposed
/// again: the cast reads and writes in order, and the GPU kernel reads the result
/// column-major in place.
fn rounded(t: &Tensor) -> Result<Tensor> {
    let t = t.detach();
    let (r, strides) = (t.rank(), &t.layout.strides);
    if t.dtype() != DType::BF16 && r >= 2 && strides[r - 2] == 1 && strides[r - 1] != 1 {
        return t.transpose(-1, -2)?.to_dtype(DType::BF16)?.transpose(-1, -2);
    }
    t.to_dtype(DType::BF16)
}

/// A gradient of `matmul`: `x @ y` summed over the axes `like` was broadcast on, in `like`'s
/// dtype. For bf16 the product comes out in f32 ([`Tensor::matmul_bf16`]), is summed over
/// those axes in f32 and rounded to bf16 once (no reduction kernel takes bf16).
fn gradient(x: &Tensor, y: &Tensor, like: &Tensor) -> Result<Tensor> {
    if like.dtype() == DType::BF16 {
        return x.matmul_bf16(y)?.sum_to_shape(like.shape())?.to_dtype(DType::BF16);
    }
    x.matmul(y)?.sum_to_shape(like.shape())
}

impl Tensor {
    /// Matrix product; both operands need rank >= 2 and one dtype. f32 and f64 compute in their
    /// dtype. bf16 operands give a bf16 result: `C = bf16(sum_p A_ip B_pj)`, the sums in f32
    /// (never in bf16), rounded once; backward gives bf16 gradients the same way, each summed
    /// in f32 over broadcast batch axes before its one rounding. On the GPU bf16 runs on the
    /// tensor cores (kernels/cu/matmul_bf16.cu), copying or zero-padding an operand whose
    /// layout the kernel cannot read (see `cuda.rs`).
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor> {
        let out = product("matmul", self, b, self.dtype())?;
        Ok(record("matmul", out, &[self, b], &[self, b], |g, s, needs| {
            let (a, b) = (&s[0], &s[1]);
            let ga = if needs[0] { Some(gradient(g, &b.transpose(-1, -2)?, a)?) } else { None };
            let gb = if needs[1] { Some(gradient(&a.transpose(-1, -2)?, g, b)?) } else { None };
            Ok(vec![ga, gb])
        }))
    }

    /// The matrix product in bf16 with an f32 result, what the model's linear layers run under
    /// [`precision::set_matmul_bf16`](crate::precision::set_matmul_bf16):
    ///
    /// ```text
    /// C  = bf16(A) bf16(B)                  (.., m, k) @ (.., k, n) -> (.., m, n), f32
    /// dA = bf16(dC) bf16(B)^T               summed in f32 over A's broadcast axes, in A's dtype
    /// dB = bf16(A)^T bf16(dC)               likewise for B
    /// ```
    ///
    /// every product of two bf16 values summed in f32 and returned in f32, never rounded to
    /// bf16. The operands may be f32, f64 or bf16 (one dtype); the rounding to bf16 passes the
    /// gradient through unchanged (as PyTorch's autocast: d bf16(x) / dx = 1).
    ///
    /// Why the gradients come out in f32: for a weight W (out, in) of a linear layer,
    /// dW = dYᵀ X sums over every token of the batch; rounding that sum to bf16 would add a
    /// relative error of up to 2^-8 to each update, on top of AdamW's own, and the master weights and
    /// moments are f32 anyway. So dW is summed in f32 and stays f32 (the kernel's f32 C), and so
    /// is dX, which flows on into f32 ops. Only the operands of each product are bf16.
    ///
    /// Saved for backward: the operands as given (f32 for the model), rounded again there, so
    /// the memory kept is that of the f32 `matmul` (the size estimate stays exact) at the cost
    /// of two casts per backward.
    pub fn matmul_bf16(&self, b: &Tensor) -> Result<Tensor> {
        super::check_pair("matmul_bf16", self, b)?;
        // Backward needs only the operands' bf16 roundings, which the product reads anyway:
        // they are what the node keeps (half the bytes of f32 operands, and nothing is rounded
        // twice); the f32 operands can go as soon as nothing else holds them.
        let (ra, rb) = (rounded(self)?, rounded(b)?);
        let out = product("matmul_bf16", &ra, &rb, DType::F32)?;
        let (da, db) = (self.dtype(), b.dtype());
        Ok(record("matmul_bf16", out, &[self, b], &[&ra, &rb], move |g, s, needs| {
            let (ra, rb) = (&s[0], &s[1]);
            let g = rounded(g)?;
            let back = |x: &Tensor, y: &Tensor, like: &Tensor, dtype: DType| -> Result<Tensor> {
                product("matmul_bf16", x, y, DType::F32)?.sum_to_shape(like.shape())?.to_dtype(dtype)
            };
            let ga = if needs[0] { Some(back(&g, &rb.transpose(-1, -2)?, ra, da)?) } else { None };
            let gb = if needs[1] { Some(back(&ra.transpose(-1, -2)?, &g, rb, db)?) } else { None };
            Ok(vec![ga, gb])
        }))
    }

    /// The product of the model's linear layers: [`Tensor::matmul_bf16`] while
    /// [`precision::matmul_bf16`](crate::precision::matmul_bf16) is on (this thread) and both
    /// operands are f32, else [`Tensor::matmul`]. The one place that decision is made.
    pub fn matmul_autocast(&self, b: &Tensor) -> Result<Tensor> {
        if crate::precision::matmul_bf16() && self.dtype() == DType::F32 && b.dtype() == DType::F32 {
            return self.matmul_bf16(b);
        }
        self.matmul(b)
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["matmul", "matmul_bf16"];

// ---------------------------------------------------------------- gradient-check cases

/// Tolerance of the bf16 cases. Their inputs are multiples of 1/2 in [-1, 1] ([`halves`]) and
/// the step is 1/4, so every shifted input is exact in bf16, every product and f32 sum is
/// exact, and so is every output up to k = 20 terms (multiples of 1/8 below 32: 8 bits): the
/// central difference is the exact derivative. The analytic one rounds the output gradient to
/// bf16 (at most 2^-8 relative) and, for bf16 `matmul`, the gradient itself (2^-8 more), so it
/// errs by at most 2^-7 sum_j |dC_ij| |B_lj| (0.05 for 8 terms with |B| <= 1 and |dC| <= 0.8;
/// the errors of the terms rarely align, so far less in practice); `atol` admits that. A wrong
/// formula or index errs by O(1).
const BF16_PATH: crate::gradcheck::Tolerance = crate::gradcheck::Tolerance { eps: 0.25, atol: 0.05, rtol: 1e-2 };

/// f64 values of `shape` drawn from {-1, -1/2, 0, 1/2, 1} (see [`BF16_PATH`]).
fn halves(shape: &[usize], r: &mut crate::Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| ((r.uniform() * 5.0).floor() - 2.0) / 2.0).collect();
    Tensor::from_f64(&values, shape, DType::F64).expect("the values fill the shape")
}

/// `x` rounded to bf16 (a graph node: its gradient converts back).
fn bf(x: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::BF16)
}

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
    matmul_bf16_operands: tol BF16_PATH, exercises ["matmul", "to_dtype"],
        // bf16 in and out; k = 4 and n = 5 are no multiples of 8 (the GPU pads k)
        inputs |r| vec![halves(&[3, 4], r), halves(&[4, 5], r)],
        f |x| bf(&x[0])?.matmul(&bf(&x[1])?)?.to_dtype(DType::F64);
    matmul_bf16_operands_broadcast_transposed: tol BF16_PATH, exercises ["matmul", "to_dtype", "permute"],
        // a batch (2, 3) against a broadcast, transposed rhs: its gradient summed in f32
        inputs |r| vec![halves(&[2, 3, 3, 4], r), halves(&[5, 4], r)],
        f |x| bf(&x[0])?.matmul(&strided(bf(&x[1])?.transpose(0, 1)?)?)?.to_dtype(DType::F64);
    matmul_bf16_autocast: tol BF16_PATH, exercises ["matmul_bf16"],
        // a linear layer: x (B, L, in) @ W^T, W (out, in) read column-major; f32 result
        inputs |r| vec![halves(&[2, 3, 4], r), halves(&[5, 4], r)],
        f |x| x[0].matmul_bf16(&strided(x[1].transpose(0, 1)?)?)?.to_dtype(DType::F64);
    matmul_bf16_autocast_transposed_lhs: tol BF16_PATH, exercises ["matmul_bf16", "permute"],
        // dW's shape of product: a transposed lhs, k = 6 rows summed
        inputs |r| vec![halves(&[6, 3], r), halves(&[6, 8], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.matmul_bf16(&x[1])?.to_dtype(DType::F64);
}

#[cfg(test)]
mod tests;
