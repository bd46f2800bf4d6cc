//! Attention on the CPU, one query row at a time (the math is in `mod.rs`): the plain twin
//! of the tiled kernels in `kernels/cu/attention.cu`. Each row's scores live in a buffer of
//! its visible keys only, so memory is O(Lk) per thread, never (Lq, Lk).
//!
//! Layouts (contiguous): `q, o, dq: (b, h, lq, d)`, `k, v, dk, dv: (b, g, lk, d)`,
//! `lse: (b, h, lq)`. Query head `hh` reads key/value head `hh / (h / g)`.

use crate::dtype::Elem;
use rayon::prelude::*;

/// Problem sizes. Query `i` sits at position `start + i` and sees the keys `0..=start + i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDims {
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub head_dim: usize,
    pub start: usize,
    pub scale: f64,
}

impl AttentionDims {
    /// Keys query row `i` sees: `0..visible(i)`.
    pub fn visible(&self, i: usize) -> usize {
        (self.start + i + 1).min(self.lk)
    }

    /// Query heads sharing one key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

fn dot<T: Elem>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// `s_j = scale q · k_j` for the visible keys, then `m = max_j s_j` and `p_j = exp(s_j - m)`
/// in place; returns `(m, sum_j p_j)`.
fn softmax_row<T: Elem>(q: &[T], keys: &[T], d: usize, scale: T, p: &mut [T]) -> (T, T) {
    let mut m = T::neg_infinity();
    for (j, s) in p.iter_mut().enumerate() {
        *s = scale * dot(q, &keys[j * d..(j + 1) * d]);
        m = m.max(*s);
    }
    let mut l = T::zero();
    for s in p.iter_mut() {
        *s = (*s - m).exp_fast();
        l += *s;
    }
    (m, l)
}

/// Forward: `o_i = sum_j softmax_j(scale q_i · k_j) v_j` over the visible keys, and
/// `lse_i = log sum_j exp(scale q_i · k_j)` (what backward recomputes the softmax from).
/// Returns `(o, lse)`.
pub fn attention_forward<T: Elem>(dims: AttentionDims, q: &[T], k: &[T], v: &[T]) -> (Vec<T>, Vec<T>) {
    let AttentionDims { heads, kv_heads, lq, lk, head_dim: d, .. } = dims;
    let scale = T::from(dims.scale).unwrap_or_else(T::one);
    let mut o = vec![T::zero(); q.len()];
    let mut lse = vec![T::zero(); q.len() / d.max(1)];
    // one task per (batch, head): its lq rows of o and lse
    o.par_chunks_mut((lq * d).max(1)).zip(lse.par_chunks_mut(lq.max(1))).enumerate().for_each(|(bh, (o, lse))| {
        let (b, hh) = (bh / heads, bh % heads);
        let kv = (b * kv_heads + hh / dims.group()) * lk * d;
        let (keys, values) = (&k[kv..kv + lk * d], &v[kv..kv + lk * d]);
        let mut p = vec![T::zero(); lk];
        for i in 0..lq {
            let row = &q[(bh * lq + i) * d..(bh * lq + i + 1) * d];
            let n = dims.visible(i);
            let (m, l) = softmax_row(row, keys, d, scale, &mut p[..n]);
            let out = &mut o[i * d..(i + 1) * d];
            for (j, &pj) in p[..n].iter().enumerate() {
                for (oc, &vc) in out.iter_mut().zip(&values[j * d..(j + 1) * d]) {
                    *oc += pj * vc;
                }
            }
            out.iter_mut().for_each(|oc| *oc = *oc / l);
            lse[i] = m + l.ln();
        }
    });
    (o, lse)
}

/// The gradients of `q`, `k`, `v`.
pub struct AttentionGrads<T> {
    pub dq: Vec<T>,
    pub dk: Vec<T>,
    pub dv: Vec<T>,
}

/// Backward from `dout`, recomputing each row's softmax from `lse` (nothing (Lq, Lk) saved):
///
/// ```text
/// p_ij  = exp(scale q_i · k_j - lse_i)       D_i = dout_i · o_i
/// ds_ij = p_ij (dout_i · v_j - D_i)
/// dq_i  = scale sum_j ds_ij k_j     dk_j = scale sum_i ds_ij q_i     dv_j = sum_i p_ij dout_i
/// ```
///
/// (dk and dv sum over the query heads sharing the key/value head.) One task per (batch,
/// key/value head): it owns its heads' rows of dq and its rows of dk and dv.
pub fn attention_backward<T: Elem>(
    dims: AttentionDims,
    [q, k, v, o, lse, dout]: [&[T]; 6],
) -> AttentionGrads<T> {
    let AttentionDims { kv_heads, lq, lk, head_dim: d, .. } = dims;
    let group = dims.group();
    let scale = T::from(dims.scale).unwrap_or_else(T::one);
    let (mut dq, mut dk, mut dv) = (vec![T::zero(); q.len()], vec![T::zero(); k.len()], vec![T::zero(); v.len()]);
    let (q_block, kv_block) = ((group * lq * d).max(1), (lk * d).max(1));
    dq.par_chunks_mut(q_block)
        .zip(dk.par_chunks_mut(kv_block).zip(dv.par_chunks_mut(kv_block)))
        .enumerate()
        .for_each(|(bg, (dq, (dk, dv)))| {
            let (b, g) = (bg / kv_heads, bg % kv_heads);
            let kv = (b * kv_heads + g) * lk * d;
            let (keys, values) = (&k[kv..kv + lk * d], &v[kv..kv + lk * d]);
            for r in 0..group * lq {
                // row r of this task: head b * heads + g * group + r / lq, query r % lq
                let row = (b * dims.heads + g * group) * lq + r;
                let (qi, oi, gi) = (&q[row * d..(row + 1) * d], &o[row * d..(row + 1) * d], &dout[row * d..(row + 1) * d]);
                let delta = dot(gi, oi);
                let dqi = &mut dq[r * d..(r + 1) * d];
                for j in 0..dims.visible(r % lq) {
                    let (kj, vj) = (&keys[j * d..(j + 1) * d], &values[j * d..(j + 1) * d]);
                    let p = (scale * dot(qi, kj) - lse[row]).exp_fast();
                    let ds = p * (dot(gi, vj) - delta);
                    for c in 0..d {
                        dqi[c] += scale * ds * kj[c];
                        dk[j * d + c] += scale * ds * qi[c];
                        dv[j * d + c] += p * gi[c];
                    }
                }
            }
        });
    AttentionGrads { dq, dk, dv }
}
