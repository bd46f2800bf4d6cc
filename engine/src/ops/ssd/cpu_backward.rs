//! The SSD scan's backward on the CPU (the equations are in `mod.rs`). Per (batch, head)
//! pair, the chunks run newest first, each recomputed from its saved entry state `S_in`;
//! `dS_end` (the gradient of the state leaving the chunk) is carried from chunk to chunk,
//! starting from `dlast`. The pairs run in parallel; what several pairs share (B and C of a
//! group, A, D and dt_bias of a head over the batch) is summed after, in a fixed order.

use super::cpu::{chunk_y, dot, silu, Chunk, Head, SsdDims, SsdInputs};
use crate::dtype::Elem;
use crate::ops::elementwise::cpu::sigmoid;
use rayon::prelude::*;

/// Gradients of every input; `dz` / `dinit` exist when `z` / `init` were given.
pub struct SsdGrads<T> {
    pub dx: Vec<T>,
    pub ddt: Vec<T>,
    pub da: Vec<T>,
    pub dbm: Vec<T>,
    pub dcm: Vec<T>,
    pub dd_skip: Vec<T>,
    pub ddt_bias: Vec<T>,
    pub dz: Option<Vec<T>>,
    pub dinit: Option<Vec<T>>,
}

/// One (batch, head) pair's share: its rows `(L, p)` of dx and dz, `(L)` of ddt, its
/// contributions `(L, n)` to its group's dB and dC, its terms of dA, dD and d(dt_bias), and
/// the gradient of its initial state `(p, n)`.
struct HeadGrads<T> {
    dx: Vec<T>,
    dz: Vec<T>,
    ddt: Vec<T>,
    dbm: Vec<T>,
    dcm: Vec<T>,
    da: T,
    dd: T,
    dbias: T,
    dinit: Vec<T>,
}

/// The upstream gradients: `dout (b, L, h, p)` and `dlast (b, h, p, n)`.
#[derive(Clone, Copy)]
struct Upstream<'a, T> {
    dout: &'a [T],
    dlast: &'a [T],
}

pub fn ssd_backward<T: Elem>(
    dims: SsdDims,
    x: &SsdInputs<T>,
    chunk_states: &[T],
    dout: &[T],
    dlast: &[T],
) -> SsdGrads<T> {
    let SsdDims { batch, len, heads, headdim: p_dim, groups, state: n_dim, .. } = dims;
    let up = Upstream { dout, dlast };
    let per_head: Vec<HeadGrads<T>> = (0..batch * heads)
        .into_par_iter()
        .map(|bh| head_backward(&Head::new(x, dims, bh / heads, bh % heads), chunk_states, up))
        .collect();
    let zero = T::zero();
    let mut g = SsdGrads {
        dx: vec![zero; batch * len * heads * p_dim],
        ddt: vec![zero; batch * len * heads],
        da: vec![zero; heads],
        dbm: vec![zero; batch * len * groups * n_dim],
        dcm: vec![zero; batch * len * groups * n_dim],
        dd_skip: vec![zero; heads],
        ddt_bias: vec![zero; heads],
        dz: x.z.map(|_| vec![zero; batch * len * heads * p_dim]),
        dinit: x.init.map(|_| vec![zero; batch * heads * p_dim * n_dim]),
    };
    for (bh, r) in per_head.into_iter().enumerate() {
        let head = Head::new(x, dims, bh / heads, bh % heads);
        for t in 0..len {
            let (at, bc) = (head.x_at(t), head.bc_at(t));
            g.dx[at..at + p_dim].copy_from_slice(&r.dx[t * p_dim..][..p_dim]);
            if let Some(dz) = &mut g.dz {
                dz[at..at + p_dim].copy_from_slice(&r.dz[t * p_dim..][..p_dim]);
            }
            g.ddt[(head.b * len + t) * heads + head.h] = r.ddt[t];
            for n in 0..n_dim {
                g.dbm[bc + n] += r.dbm[t * n_dim + n];
                g.dcm[bc + n] += r.dcm[t * n_dim + n];
            }
        }
        g.da[head.h] += r.da;
        g.dd_skip[head.h] += r.dd;
        g.ddt_bias[head.h] += r.dbias;
        if let Some(dinit) = &mut g.dinit {
            dinit[bh * p_dim * n_dim..][..p_dim * n_dim].copy_from_slice(&r.dinit);
        }
    }
    g
}

/// The chunks of one pair, newest first, carrying `dS_end` (`ds`, `(p, n)`).
fn head_backward<T: Elem>(head: &Head<T>, chunk_states: &[T], up: Upstream<T>) -> HeadGrads<T> {
    let SsdDims { len, headdim: p_dim, state: n_dim, .. } = head.dims;
    let pn = p_dim * n_dim;
    let zero = T::zero();
    let mut r = HeadGrads {
        dx: vec![zero; len * p_dim],
        dz: if head.x.z.is_some() { vec![zero; len * p_dim] } else { vec![] },
        ddt: vec![zero; len],
        dbm: vec![zero; len * n_dim],
        dcm: vec![zero; len * n_dim],
        da: zero,
        dd: zero,
        dbias: zero,
        dinit: vec![],
    };
    let bh = head.b * head.dims.heads + head.h;
    let mut ds = up.dlast[bh * pn..][..pn].to_vec();
    for c in (0..head.dims.n_chunks()).rev() {
        let k = Chunk::new(head, c);
        let s_in = &chunk_states[head.dims.state_at(head.b, c, head.h)..][..pn];
        chunk_backward(head, &k, s_in, &mut ds, up.dout, &mut r);
    }
    r.dinit = ds;
    r
}

/// One chunk's gradients into `r`; on return `ds` holds the chunk's `dS_in` (the older
/// chunk's `dS_end`).
fn chunk_backward<T: Elem>(head: &Head<T>, k: &Chunk<T>, s_in: &[T], ds: &mut [T], dout: &[T], r: &mut HeadGrads<T>) {
    let (p_dim, n_dim) = (head.dims.headdim, head.dims.state);
    let dy = gate_backward(head, k, s_in, dout, r);
    let m = Products::new(head, k, &dy);
    let (dxp, dbm, dcm, k_last) = m.grads(head, k, s_in, ds, &dy);
    // da_i = C_i . dC_i - B_i . dB_i (plus K at the last step); dalpha_k = sum_{i >= k} da_i.
    let mut dalpha = T::zero();
    for i in (0..k.len()).rev() {
        let t = k.t(i);
        let da_i = dot(head.c_t(t), &dcm[i * n_dim..][..n_dim]) - dot(head.b_t(t), &dbm[i * n_dim..][..n_dim]);
        dalpha += da_i + if i + 1 == k.len() { k_last } else { T::zero() };
        let dxp_i = &dxp[i * p_dim..][..p_dim];
        // dt' enters through X' = dt' x and through alpha = dt' A.
        let ddt_prime = dot(head.x_t(t), dxp_i) + head.a() * dalpha;
        r.ddt[t] = ddt_prime * k.dt_grad[i];
        r.dbias += r.ddt[t];
        r.da += k.dt[i] * dalpha;
        for p in 0..p_dim {
            r.dx[t * p_dim + p] = k.dt[i] * dxp_i[p] + head.d() * dy[i * p_dim + p];
        }
        r.dbm[t * n_dim..][..n_dim].copy_from_slice(&dbm[i * n_dim..][..n_dim]);
        r.dcm[t * n_dim..][..n_dim].copy_from_slice(&dcm[i * n_dim..][..n_dim]);
    }
    // dS_in = sum_i exp(a_i) dy_i C_i^T + exp(a_Q) dS_end.
    let carry = k.a_last().exp();
    ds.iter_mut().for_each(|v| *v *= carry);
    for i in 0..k.len() {
        let (e, c_i) = (k.a[i].exp(), head.c_t(k.t(i)));
        for p in 0..p_dim {
            let g = e * dy[i * p_dim + p];
            ds[p * n_dim..][..n_dim].iter_mut().zip(c_i).for_each(|(s, &c)| *s += g * c);
        }
    }
}

/// The gate: recompute the chunk's `y` (before the gate), write `dz = dout y silu'(z)` and
/// add `dy . x` into dD; return `dy = dout silu(z)` as `(Q, p)` (or `dout` without z).
fn gate_backward<T: Elem>(head: &Head<T>, k: &Chunk<T>, s_in: &[T], dout: &[T], r: &mut HeadGrads<T>) -> Vec<T> {
    let p_dim = head.dims.headdim;
    let y = head.x.z.map(|_| chunk_y(head, k, s_in));
    let mut dy = Vec::with_capacity(k.len() * p_dim);
    for i in 0..k.len() {
        let t = k.t(i);
        let g = &dout[head.x_at(t)..][..p_dim];
        match (head.z_t(t), &y) {
            (Some(z), Some(y)) => {
                for p in 0..p_dim {
                    let s = sigmoid(z[p]);
                    dy.push(g[p] * silu(z[p]));
                    // silu'(z) = s (1 + z (1 - s))
                    r.dz[t * p_dim + p] = g[p] * y[i * p_dim + p] * s * (T::one() + z[p] * (T::one() - s));
                }
            }
            _ => dy.extend_from_slice(g),
        }
        r.dd += dot(&dy[i * p_dim..][..p_dim], head.x_t(t));
    }
    dy
}

/// The chunk's two masked `(Q, Q)` products, each entry `(i, j)` for `j <= i` (zero above):
/// `cb_ij = exp(a_i - a_j) (C_i . B_j)` and `yx_ij = exp(a_i - a_j) (dy_i . X'_j)` with
/// `X'_j = dt'_j x_j`.
struct Products<T> {
    q: usize,
    cb: Vec<T>,
    yx: Vec<T>,
}

impl<T: Elem> Products<T> {
    fn new(head: &Head<T>, k: &Chunk<T>, dy: &[T]) -> Self {
        let (q, p_dim) = (k.len(), head.dims.headdim);
        let (mut cb, mut yx) = (vec![T::zero(); q * q], vec![T::zero(); q * q]);
        for i in 0..q {
            for j in 0..=i {
                let (ti, tj) = (k.t(i), k.t(j));
                let decay = (k.a[i] - k.a[j]).exp();
                cb[i * q + j] = decay * dot(head.c_t(ti), head.b_t(tj));
                yx[i * q + j] = decay * k.dt[j] * dot(&dy[i * p_dim..][..p_dim], head.x_t(tj));
            }
        }
        Products { q, cb, yx }
    }

    /// `dX' (Q, p)`, `dB (Q, n)`, `dC (Q, n)` of this head, and `K = exp(a_Q) <dS_end, S_in>
    /// + sum_j B_j . dB^state_j` (the gradient of `a_Q` through the chunk's final state):
    /// ```text
    /// dX'_j = sum_{i >= j} cb_ij dy_i + exp(a_Q - a_j) dS_end B_j
    /// dB_j  = sum_{i >= j} yx_ij C_i  + exp(a_Q - a_j) dS_end^T X'_j     (the last: dB^state)
    /// dC_i  = sum_{j <= i} yx_ij B_j  + exp(a_i) S_in^T dy_i
    /// ```
    #[allow(clippy::type_complexity)]
    fn grads(&self, head: &Head<T>, k: &Chunk<T>, s_in: &[T], ds: &[T], dy: &[T]) -> (Vec<T>, Vec<T>, Vec<T>, T) {
        let (q, p_dim, n_dim) = (self.q, head.dims.headdim, head.dims.state);
        let zero = T::zero();
        let (mut dxp, mut dbm, mut dcm) = (vec![zero; q * p_dim], vec![zero; q * n_dim], vec![zero; q * n_dim]);
        let mut k_last = k.a_last().exp() * dot(ds, s_in);
        for j in 0..q {
            let (tj, to_end) = (k.t(j), (k.a_last() - k.a[j]).exp());
            let (b_j, x_j) = (head.b_t(tj), head.x_t(tj));
            let (dxp_j, dy_j) = (&mut dxp[j * p_dim..][..p_dim], &dy[j * p_dim..][..p_dim]);
            let db_j = &mut dbm[j * n_dim..][..n_dim];
            for p in 0..p_dim {
                let ds_p = &ds[p * n_dim..][..n_dim];
                dxp_j[p] = to_end * dot(ds_p, b_j);
                let w = to_end * k.dt[j] * x_j[p];
                db_j.iter_mut().zip(ds_p).for_each(|(d, &s)| *d += w * s);
            }
            k_last += dot(b_j, db_j); // B_j . dB^state_j
            for i in j..q {
                let (cb, yx, c_i) = (self.cb[i * q + j], self.yx[i * q + j], head.c_t(k.t(i)));
                dxp_j.iter_mut().zip(&dy[i * p_dim..][..p_dim]).for_each(|(d, &g)| *d += cb * g);
                db_j.iter_mut().zip(c_i).for_each(|(d, &c)| *d += yx * c);
            }
            let (dc_j, e) = (&mut dcm[j * n_dim..][..n_dim], k.a[j].exp());
            for p in 0..p_dim {
                let g = e * dy_j[p];
                dc_j.iter_mut().zip(&s_in[p * n_dim..][..n_dim]).for_each(|(d, &s)| *d += g * s);
            }
            for i in 0..=j {
                let yx = self.yx[j * q + i]; // row j (as the later index), column i <= j
                dc_j.iter_mut().zip(head.b_t(k.t(i))).for_each(|(d, &b)| *d += yx * b);
            }
        }
        (dxp, dbm, dcm, k_last)
    }
}
