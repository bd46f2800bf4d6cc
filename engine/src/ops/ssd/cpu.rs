//! The SSD scan on the CPU: the forward here, the backward in `cpu_backward.rs`. The math is
//! in `mod.rs`; each function below carries the piece it computes. Work is parallel over
//! (batch, head) pairs, which are independent in the forward; inside a pair the chunks run
//! in order, each as the masked matrix products of the chunked algorithm (written as plain
//! loops, for reading; the GPU twin in `kernels/cu/ssd.cu` tiles the same products).
//!
//! Layouts (contiguous, the reference's): `x, z, out: (b, L, h, p)`, `dt: (b, L, h)`,
//! `a, d_skip, dt_bias: (h)`, `bm, cm: (b, L, g, n)`, `init, last_state: (b, h, p, n)`,
//! `chunk_states: (b, n_chunks, h, p, n)`.

use crate::dtype::Elem;
use crate::ops::elementwise::cpu::{sigmoid, softplus};
use rayon::prelude::*;
use std::ops::Range;

/// Problem sizes: `heads` of `headdim` channels, `groups` of B and C (dividing `heads`),
/// `state` values per channel, `chunk` steps per chunk (at most `len`, at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdDims {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub headdim: usize,
    pub groups: usize,
    pub state: usize,
    pub chunk: usize,
}

impl SsdDims {
    pub fn n_chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// The group of B and C that head `h` reads.
    pub fn group_of(&self, h: usize) -> usize {
        h / (self.heads / self.groups)
    }

    /// The time steps of chunk `c` (the last chunk may be shorter).
    pub fn chunk_steps(&self, c: usize) -> Range<usize> {
        c * self.chunk..((c + 1) * self.chunk).min(self.len)
    }

    /// Offset of the `(p, n)` state of (batch `b`, chunk `c`, head `h`) in `chunk_states`.
    pub fn state_at(&self, b: usize, c: usize, h: usize) -> usize {
        ((b * self.n_chunks() + c) * self.heads + h) * self.headdim * self.state
    }
}

/// The scan's inputs as contiguous slices in the layouts above.
#[derive(Clone, Copy)]
pub struct SsdInputs<'a, T> {
    pub x: &'a [T],
    pub dt: &'a [T],
    pub a: &'a [T],
    pub bm: &'a [T],
    pub cm: &'a [T],
    pub d_skip: &'a [T],
    pub dt_bias: &'a [T],
    pub z: Option<&'a [T]>,
    pub init: Option<&'a [T]>,
}

/// One (batch, head) pair's rows of the inputs, by time step.
pub(super) struct Head<'a, T> {
    pub x: &'a SsdInputs<'a, T>,
    pub dims: SsdDims,
    pub b: usize,
    pub h: usize,
    g: usize,
}

impl<'a, T: Elem> Head<'a, T> {
    pub fn new(x: &'a SsdInputs<'a, T>, dims: SsdDims, b: usize, h: usize) -> Self {
        Head { x, dims, b, h, g: dims.group_of(h) }
    }

    /// Offset of row (b, t, h) in a (b, L, h, p) tensor.
    pub fn x_at(&self, t: usize) -> usize {
        ((self.b * self.dims.len + t) * self.dims.heads + self.h) * self.dims.headdim
    }

    /// Offset of row (b, t, g) in a (b, L, g, n) tensor.
    pub fn bc_at(&self, t: usize) -> usize {
        ((self.b * self.dims.len + t) * self.dims.groups + self.g) * self.dims.state
    }

    pub fn x_t(&self, t: usize) -> &'a [T] {
        &self.x.x[self.x_at(t)..][..self.dims.headdim]
    }

    pub fn z_t(&self, t: usize) -> Option<&'a [T]> {
        self.x.z.map(|z| &z[self.x_at(t)..][..self.dims.headdim])
    }

    pub fn b_t(&self, t: usize) -> &'a [T] {
        &self.x.bm[self.bc_at(t)..][..self.dims.state]
    }

    pub fn c_t(&self, t: usize) -> &'a [T] {
        &self.x.cm[self.bc_at(t)..][..self.dims.state]
    }

    pub fn a(&self) -> T {
        self.x.a[self.h]
    }

    pub fn d(&self) -> T {
        self.x.d_skip[self.h]
    }

    /// The state before the first step: `initial_state[b, h]`, or zeros.
    pub fn initial_state(&self) -> Vec<T> {
        let pn = self.dims.headdim * self.dims.state;
        match self.x.init {
            Some(s) => s[(self.b * self.dims.heads + self.h) * pn..][..pn].to_vec(),
            None => vec![T::zero(); pn],
        }
    }
}

/// One chunk's steps and decays: `dt'` (after bias and softplus), `d(dt')/d(dt)` (the
/// sigmoid) and the cumulative log-decay `a_i = sum_{k <= i} dt'_k A` from the chunk's start.
pub(super) struct Chunk<T> {
    pub steps: Range<usize>,
    pub dt: Vec<T>,
    pub dt_grad: Vec<T>,
    pub a: Vec<T>,
}

impl<T: Elem> Chunk<T> {
    pub fn new(head: &Head<T>, c: usize) -> Self {
        let steps = head.dims.chunk_steps(c);
        let (mut dt, mut dt_grad, mut a) = (Vec::new(), Vec::new(), Vec::new());
        let mut sum = T::zero();
        for t in steps.clone() {
            let raw = head.x.dt[(head.b * head.dims.len + t) * head.dims.heads + head.h] + head.x.dt_bias[head.h];
            let dt_t = softplus(raw);
            dt.push(dt_t);
            dt_grad.push(sigmoid(raw));
            sum += dt_t * head.a();
            a.push(sum);
        }
        Chunk { steps, dt, dt_grad, a }
    }

    /// Steps in the chunk.
    pub fn len(&self) -> usize {
        self.dt.len()
    }

    /// `a_Q`: the log-decay over the whole chunk.
    pub fn a_last(&self) -> T {
        self.a[self.len() - 1]
    }

    /// Time step of local index `i`.
    pub fn t(&self, i: usize) -> usize {
        self.steps.start + i
    }
}

pub(super) fn dot<T: Elem>(u: &[T], v: &[T]) -> T {
    u.iter().zip(v).map(|(&a, &b)| a * b).sum()
}

/// The chunk's output before the gate, `(Q, p)` row by row:
/// `y_i = sum_{j <= i} exp(a_i - a_j) (C_i . B_j) dt'_j x_j  +  exp(a_i) S_in C_i  +  D x_i`
/// (intra-chunk, inter-chunk, skip). `s_in` is the `(p, n)` state entering the chunk.
pub(super) fn chunk_y<T: Elem>(head: &Head<T>, k: &Chunk<T>, s_in: &[T]) -> Vec<T> {
    let (p_dim, n_dim) = (head.dims.headdim, head.dims.state);
    let mut y = vec![T::zero(); k.len() * p_dim];
    for i in 0..k.len() {
        let (c_i, yi) = (head.c_t(k.t(i)), &mut y[i * p_dim..][..p_dim]);
        for j in 0..=i {
            let w = (k.a[i] - k.a[j]).exp() * dot(c_i, head.b_t(k.t(j))) * k.dt[j];
            yi.iter_mut().zip(head.x_t(k.t(j))).for_each(|(y, &x)| *y += w * x);
        }
        let e = k.a[i].exp();
        for (p, y) in yi.iter_mut().enumerate() {
            *y += e * dot(&s_in[p * n_dim..][..n_dim], c_i) + head.d() * head.x_t(k.t(i))[p];
        }
    }
    y
}

/// Advance the `(p, n)` state over the chunk:
/// `S_out = exp(a_Q) S_in + sum_j exp(a_Q - a_j) dt'_j x_j B_j^T`.
pub(super) fn chunk_state_update<T: Elem>(head: &Head<T>, k: &Chunk<T>, s: &mut [T]) {
    let n_dim = head.dims.state;
    let carry = k.a_last().exp();
    s.iter_mut().for_each(|v| *v *= carry);
    for j in 0..k.len() {
        let w = (k.a_last() - k.a[j]).exp() * k.dt[j];
        let b_j = head.b_t(k.t(j));
        for (p, &x) in head.x_t(k.t(j)).iter().enumerate() {
            s[p * n_dim..][..n_dim].iter_mut().zip(b_j).for_each(|(s, &b)| *s += w * x * b);
        }
    }
}

/// `silu(z) = z sigmoid(z)`.
pub(super) fn silu<T: Elem>(z: T) -> T {
    z * sigmoid(z)
}

/// What forward returns: `out (b, L, h, p)`, `last_state (b, h, p, n)` and the state
/// entering each chunk, `chunk_states (b, n_chunks, h, p, n)`.
pub struct SsdForward<T> {
    pub out: Vec<T>,
    pub last_state: Vec<T>,
    pub chunk_states: Vec<T>,
}

/// One head's results: its rows of `out` as `(L, p)`, its chunk states `(n_chunks, p, n)`
/// and its last state `(p, n)`.
struct HeadForward<T> {
    out: Vec<T>,
    states: Vec<T>,
    last: Vec<T>,
}

/// The chunks of one (batch, head) pair in order: save `S_in`, the chunk's output, then
/// `S_in` of the next chunk.
fn head_forward<T: Elem>(head: &Head<T>) -> HeadForward<T> {
    let (p_dim, pn) = (head.dims.headdim, head.dims.headdim * head.dims.state);
    let mut out = Vec::with_capacity(head.dims.len * p_dim);
    let mut states = Vec::with_capacity(head.dims.n_chunks() * pn);
    let mut s = head.initial_state();
    for c in 0..head.dims.n_chunks() {
        let k = Chunk::new(head, c);
        states.extend_from_slice(&s);
        let y = chunk_y(head, &k, &s);
        for (i, y_i) in y.chunks(p_dim.max(1)).enumerate() {
            match head.z_t(k.t(i)) {
                Some(z) => out.extend(y_i.iter().zip(z).map(|(&y, &z)| y * silu(z))),
                None => out.extend_from_slice(y_i),
            }
        }
        chunk_state_update(head, &k, &mut s);
    }
    HeadForward { out, states, last: s }
}

pub fn ssd_forward<T: Elem>(dims: SsdDims, x: &SsdInputs<T>) -> SsdForward<T> {
    let SsdDims { batch, len, heads, headdim: p_dim, state: n_dim, .. } = dims;
    let (pn, nc) = (p_dim * n_dim, dims.n_chunks());
    let per_head: Vec<HeadForward<T>> =
        (0..batch * heads).into_par_iter().map(|bh| head_forward(&Head::new(x, dims, bh / heads, bh % heads))).collect();
    let mut f = SsdForward {
        out: vec![T::zero(); batch * len * heads * p_dim],
        last_state: vec![T::zero(); batch * heads * pn],
        chunk_states: vec![T::zero(); batch * nc * heads * pn],
    };
    for (bh, r) in per_head.into_iter().enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for t in 0..len {
            let at = ((b * len + t) * heads + h) * p_dim;
            f.out[at..at + p_dim].copy_from_slice(&r.out[t * p_dim..][..p_dim]);
        }
        for c in 0..nc {
            f.chunk_states[dims.state_at(b, c, h)..][..pn].copy_from_slice(&r.states[c * pn..][..pn]);
        }
        f.last_state[bh * pn..][..pn].copy_from_slice(&r.last);
    }
    f
}
