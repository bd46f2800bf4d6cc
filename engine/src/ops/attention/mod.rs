//! Causal multi-head attention as one fused, differentiable op (grouped-query: several query
//! heads share a key/value head), which never stores the (Lq, Lk) score matrix.
//!
//! # The math
//!
//! Shapes: `q, o: (b, h, Lq, d)`, `k, v: (b, g, Lk, d)` with `g` dividing `h`; query head
//! `hh` reads key/value head `hh / (h / g)`. Query `i` sits at position `start + i` and sees
//! the keys at positions `j <= start + i` (prefill: `start = 0`, `Lq = Lk`; one generated
//! token: `Lq = 1`, `start = Lk - 1`).
//!
//! ```text
//! s_ij  = scale q_i · k_j                      (j visible from i; scale = 1/sqrt(d) usually)
//! lse_i = log sum_j exp(s_ij)                  p_ij = exp(s_ij - lse_i)     (the softmax)
//! o_i   = sum_j p_ij v_j
//! ```
//!
//! The forward keeps only `o` and `lse` (b, h, Lq) besides its inputs. On the GPU it walks
//! the keys tile by tile with the online softmax (a running max `m` and sum `l`, rescaling
//! the partial output whenever the max grows), so the scores exist one tile at a time.
//!
//! # Backward (recomputing p from lse)
//!
//! ```text
//! D_i   = dout_i · o_i                        (= sum_j p_ij dout_i · v_j)
//! ds_ij = p_ij (dout_i · v_j - D_i)           (the softmax's Jacobian applied to dp)
//! dq_i  = scale sum_j ds_ij k_j
//! dk_j  = scale sum_i ds_ij q_i               dv_j = sum_i p_ij dout_i
//! ```
//!
//! where dk and dv also sum over the query heads that share the key/value head. The CPU twin
//! is `cpu.rs` (a row at a time); the GPU kernels are `kernels/cu/attention.cu`.

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
pub use cpu::AttentionDims;

const OP: &str = "attention";

/// The widest head the GPU kernels take (`ATTENTION_MAX_HEAD_DIM` of the kernels crate).
pub const GPU_MAX_HEAD_DIM: usize = 128;

/// `q (b, h, Lq, d)`, `k, v (b, g, Lk, d)` -> `o (b, h, Lq, d)`: causal softmax attention
/// with queries at positions `start..start + Lq` (see the module docs).
/// The GPU kernels take head_dim up to [`GPU_MAX_HEAD_DIM`]; wider heads on the GPU go
/// through [`attention_composed`], which stores the scores.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, start: usize) -> Result<Tensor> {
    let dims = dims_of(q, k, v, scale, start)?;
    if q.device() == crate::Device::Cuda && dims.head_dim > GPU_MAX_HEAD_DIM {
        return attention_composed(q, k, v, scale, start);
    }
    let ins: Vec<Tensor> = [q, k, v].iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let (o, lse) = run(&Forward(dims), &[&ins[0], &ins[1], &ins[2]])?;
    let saved = [&ins[0], &ins[1], &ins[2], &o, &lse];
    let out = o.clone();
    Ok(record(OP, out, &[q, k, v], &saved, move |g, s, _| {
        let dout = g.contiguous()?;
        let grads = run(&Backward(dims), &[&s[0], &s[1], &s[2], &s[3], &s[4], &dout])?;
        Ok(grads.into_iter().map(Some).collect())
    }))
}

fn rank4(name: &str, t: &Tensor) -> Result<[usize; 4]> {
    match *t.shape() {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::Rank { op: OP, shape: t.shape().to_vec(), expected: format!("{name} of shape (b, heads, L, d)") }),
    }
}

/// Check the shapes against each other and the positions.
fn dims_of(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, start: usize) -> Result<AttentionDims> {
    let [batch, heads, lq, head_dim] = rank4("q", q)?;
    let [kb, kv_heads, lk, kd] = rank4("k", k)?;
    if v.shape() != k.shape() || kb != batch || kd != head_dim {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: q.shape().to_vec(),
            rhs: k.shape().to_vec(),
            hint: format!("q (b, h, Lq, d) and k, v (b, g, Lk, d) must agree on b and d; v is {:?}", v.shape()),
        });
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return invalid(OP, format!("the key/value heads ({kv_heads}) must divide the query heads ({heads})"));
    }
    if head_dim == 0 {
        return invalid(OP, "head_dim is 0: every head needs at least one channel");
    }
    if start.checked_add(lq).is_none_or(|end| end > lk) {
        return invalid(
            OP,
            format!("queries at positions {start}..{start}+{lq} need keys up to there, got {lk} keys"),
        );
    }
    if !scale.is_finite() {
        return invalid(OP, format!("the softmax scale must be finite, got {scale}"));
    }
    super::check_pair(OP, q, k)?;
    super::check_pair(OP, q, v)?;
    Ok(AttentionDims { batch, heads, kv_heads, lq, lk, head_dim, start, scale })
}

/// `[q, k, v]`, contiguous -> `(o, lse)`.
struct Forward(AttentionDims);

impl Kernel for Forward {
    const NAME: &'static str = OP;
    type Out = (Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor)> {
        let d = self.0;
        let (o, lse) = cpu::attention_forward(d, x[0].elems(), x[1].elems(), x[2].elems());
        Ok((Tensor::from_vec(o, &x[0].layout.shape)?, Tensor::from_vec(lse, &[d.batch, d.heads, d.lq])?))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        cuda::attention_forward(self.0, x)
    }
}

/// `[q, k, v, o, lse, dout]`, contiguous -> `[dq, dk, dv]`.
struct Backward(AttentionDims);

impl Kernel for Backward {
    const NAME: &'static str = OP;
    type Out = Vec<Tensor>;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Vec<Tensor>> {
        let e = |i: usize| x[i].elems();
        let g = cpu::attention_backward(self.0, [e(0), e(1), e(2), e(3), e(4), e(5)]);
        [g.dq, g.dk, g.dv].into_iter().zip(x).map(|(g, t)| Tensor::from_vec(g, &t.layout.shape)).collect()
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Vec<Tensor>> {
        cuda::attention_backward(self.0, x)
    }
}

/// The same attention from plain ops (matmul, a -1e30 mask, log_softmax): it stores the
/// (Lq, Lk) scores, which is what the fused op avoids; tests compare the two.
pub fn attention_composed(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, start: usize) -> Result<Tensor> {
    let d = dims_of(q, k, v, scale, start)?;
    let share = |t: &Tensor| -> Result<Tensor> {
        let t = t.unsqueeze(2)?.broadcast_as(&[d.batch, d.kv_heads, d.group(), d.lk, d.head_dim])?;
        t.reshape(&[d.batch, d.heads, d.lk, d.head_dim])
    };
    let (k, v) = (share(k)?, share(v)?);
    let scores = q.matmul(&k.transpose(2, 3)?)?.mul_scalar(scale)?; // (b, h, Lq, Lk)
    let mask: Vec<f64> =
        (0..d.lq).flat_map(|i| (0..d.lk).map(move |j| if j < d.visible(i) { 0.0 } else { -1e30 })).collect();
    let scores = scores.add(&Tensor::from_f64(&mask, &[d.lq, d.lk], q.dtype())?.to(q.device())?)?;
    scores.log_softmax()?.exp()?.matmul(&v)
}

/// The differentiable ops this unit records.
pub const OPS: &[&str] = &["attention"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    attention_grouped_query_prefill: tol TIGHT, exercises ["attention"],
        // 4 query heads sharing 2 key/value heads, L = 7, head_dim 3, times a weight so every
        // output entry matters differently
        inputs |r| vec![rn(&[2, 4, 7, 3], r), rn(&[2, 2, 7, 3], r), rn(&[2, 2, 7, 3], r), rn(&[2, 4, 7, 3], r)],
        f |x| attention(&x[0], &x[1], &x[2], 0.6, 0)?.mul(&x[3]);
    attention_later_queries_of_transposed_inputs: tol TIGHT, exercises ["attention", "permute"],
        // 3 queries at positions 5..8 over 8 keys (a prefill continuing a cache); q, k and v
        // arrive as (b, L, heads, d) transposed to (b, heads, L, d), as the mixer makes them
        inputs |r| vec![rn(&[1, 3, 2, 4], r), rn(&[1, 8, 2, 4], r), rn(&[1, 8, 2, 4], r)],
        f |x| {
            let t = |x: &Tensor| strided(x.transpose(1, 2)?);
            let y = attention(&t(&x[0])?, &t(&x[1])?, &t(&x[2])?, 0.5, 5)?;
            y.mul(&y)
        };
    attention_one_token_step: tol TIGHT, exercises ["attention"],
        // step mode: one query that sees all 5 keys
        inputs |r| vec![rn(&[2, 2, 1, 2], r), rn(&[2, 2, 5, 2], r), rn(&[2, 2, 5, 2], r)],
        f |x| { let y = attention(&x[0], &x[1], &x[2], 1.0, 4)?; y.mul(&y) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Rng};

    fn inputs(shape_q: [usize; 4], shape_kv: [usize; 4], rng: &mut Rng) -> Vec<Tensor> {
        let r = |s: &[usize], rng: &mut Rng| Tensor::randn(s, 0.0, 1.0, DType::F64, rng).requires_grad();
        vec![r(&shape_q, rng), r(&shape_kv, rng), r(&shape_kv, rng)]
    }

    fn worst(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// The fused op equals the composed one, forward and every gradient, for grouped heads,
    /// prefill and later queries.
    #[test]
    fn fused_matches_composed() {
        let mut rng = Rng::new(3);
        for (sq, skv, start) in [([2, 6, 9, 5], [2, 3, 9, 5], 0), ([1, 2, 4, 3], [1, 1, 10, 3], 6)] {
            let x = inputs(sq, skv, &mut rng);
            let w = Tensor::randn(&sq, 0.0, 1.0, DType::F64, &mut rng);
            let fused = attention(&x[0], &x[1], &x[2], 0.4, start).unwrap();
            let composed = attention_composed(&x[0], &x[1], &x[2], 0.4, start).unwrap();
            assert!(worst(&fused, &composed) < 1e-12);
            fused.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let fused_grads: Vec<Tensor> = x.iter().map(|t| t.grad().unwrap()).collect();
            x.iter().for_each(|t| t.zero_grad());
            composed.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            for (f, t) in fused_grads.iter().zip(&x) {
                assert!(worst(f, &t.grad().unwrap()) < 1e-12);
            }
        }
    }

    #[test]
    fn refuses_bad_shapes_and_positions() {
        let mut rng = Rng::new(1);
        let x = inputs([1, 3, 4, 2], [1, 2, 4, 2], &mut rng);
        assert!(matches!(attention(&x[0], &x[1], &x[2], 1.0, 0), Err(Error::Invalid { .. })));
        let x = inputs([1, 2, 4, 2], [1, 2, 4, 2], &mut rng);
        assert!(matches!(attention(&x[0], &x[1], &x[2], 1.0, 1), Err(Error::Invalid { .. })));
        assert!(attention(&x[0], &x[0], &x[2], 1.0, 0).is_ok());
        let empty = inputs([1, 2, 4, 0], [1, 2, 4, 0], &mut rng);
        assert!(matches!(attention(&empty[0], &empty[1], &empty[2], 1.0, 0), Err(Error::Invalid { .. })));
        assert!(matches!(attention(&x[0], &x[1], &x[2], 1.0, usize::MAX), Err(Error::Invalid { .. })));
        let k3 = x[1].reshape(&[2, 4, 2]).unwrap();
        assert!(matches!(attention(&x[0], &k3, &x[2], 1.0, 0), Err(Error::Rank { .. })));
    }
}
