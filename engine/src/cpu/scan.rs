//! The selective scan (Mamba's S6 recurrence) on the CPU, forward and backward.
//!
//! Shapes (the reference layout): `u, delta, z, out: (B, D, L)`, `a: (D, N)`,
//! `bm, cm: (B, N, L)`, `d_skip, delta_bias: (D)`. Per batch `b`, channel `d`, state `n`,
//! time `t`:
//!
//! ```text
//! dt_t   = softplus(delta_t + bias_d)          (or delta_t + bias_d without softplus)
//! h_t[n] = exp(dt_t A[d,n]) h_{t-1}[n] + dt_t Bm_t[n] u_t,        h_{-1} = 0
//! y_t    = sum_n Cm_t[n] h_t[n] + D_d u_t
//! out_t  = y_t * silu(z_t)                      (or y_t without z)
//! ```
//!
//! **Recomputation.** The states `h` form a (B, D, L, N) tensor — N times larger than the
//! input. The forward pass never stores it: it walks time in chunks and keeps only the
//! state entering each chunk, `chunk_states: (B, D, L/chunk, N)`. Backward walks the
//! chunks in reverse; for each it replays the forward recurrence from the saved state
//! (holding just `chunk x N` states), then runs the adjoint recurrence backwards
//! through it:
//!
//! ```text
//! dh_t     = Cm_t dy_t + exp(dt_{t+1} A) dh_{t+1}                  (carried across chunks)
//! dCm_t   += dy_t h_t          dBm_t += dh_t dt_t u_t              (summed over channels d)
//! du_t     = D dy_t + sum_n dh_t dt_t Bm_t
//! d(dt_t)  = sum_n dh_t (A exp(dt_t A) h_{t-1} + Bm_t u_t)
//! dA      += dh_t dt_t exp(dt_t A) h_{t-1}
//! ddelta_t = d(dt_t) sigmoid(delta_t + bias)   (softplus' = sigmoid)
//! ```
//!
//! Work is parallel over (batch, group of channels): channels are independent except
//! that `dBm`, `dCm` sum over `d` and `dA`, `dD`, `dbias` sum over `b`, so each task
//! accumulates those into its own small buffers, reduced at the end.

use crate::cpu::elementwise::{sigmoid, softplus};
use crate::dtype::Elem;
use rayon::prelude::*;

/// Problem sizes. `chunk` is the number of time steps between saved states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanDims {
    pub batch: usize,
    pub dim: usize,
    pub len: usize,
    pub state: usize,
    pub chunk: usize,
}

impl ScanDims {
    pub fn n_chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }
}

/// The scan's inputs as contiguous slices in the layouts above.
#[derive(Clone, Copy)]
pub struct ScanInputs<'a, T> {
    pub u: &'a [T],
    pub delta: &'a [T],
    pub a: &'a [T],
    pub bm: &'a [T],
    pub cm: &'a [T],
    pub d_skip: &'a [T],
    pub z: Option<&'a [T]>,
    pub delta_bias: Option<&'a [T]>,
    pub softplus: bool,
}

impl<T: Elem> ScanInputs<'_, T> {
    /// dt for channel `d` from the raw delta value: (dt, d(dt)/d(delta)).
    #[inline(always)]
    fn dt(&self, d: usize, raw: T) -> (T, T) {
        let x = raw + self.delta_bias.map_or(T::zero(), |b| b[d]);
        if self.softplus {
            (softplus(x), sigmoid(x))
        } else {
            (x, T::one())
        }
    }
}

/// What forward returns: `out (B, D, L)`, `last_state (B, D, N)` and the states entering
/// each chunk, `chunk_states (B, D, n_chunks, N)` (the first chunk's is zero).
pub struct ScanForward<T> {
    pub out: Vec<T>,
    pub last_state: Vec<T>,
    pub chunk_states: Vec<T>,
}

pub fn selective_scan_forward<T: Elem>(dims: ScanDims, x: &ScanInputs<T>) -> ScanForward<T> {
    let ScanDims { batch, dim, len, state: n_state, chunk } = dims;
    let nc = dims.n_chunks();
    let mut out = vec![T::zero(); batch * dim * len];
    let mut last_state = vec![T::zero(); batch * dim * n_state];
    let mut chunk_states = vec![T::zero(); batch * dim * nc * n_state];
    // One task per (b, d) channel; each owns its rows of every output.
    out.par_chunks_mut(len.max(1))
        .zip(last_state.par_chunks_mut(n_state.max(1)))
        .zip(chunk_states.par_chunks_mut((nc * n_state).max(1)))
        .enumerate()
        .for_each(|(bd, ((out, last), saved))| {
            let (b, d) = (bd / dim, bd % dim);
            let row = bd * len; // offset of (b, d, 0) in (B, D, L)
            let a = &x.a[d * n_state..(d + 1) * n_state];
            let mut h = vec![T::zero(); n_state];
            for t in 0..len {
                if t % chunk == 0 {
                    saved[(t / chunk) * n_state..][..n_state].copy_from_slice(&h);
                }
                let (dt, _) = x.dt(d, x.delta[row + t]);
                let du = dt * x.u[row + t];
                let mut y = x.d_skip[d] * x.u[row + t];
                for n in 0..n_state {
                    let bc = (b * n_state + n) * len + t; // (b, n, t) in (B, N, L)
                    h[n] = (dt * a[n]).exp() * h[n] + du * x.bm[bc];
                    y += x.cm[bc] * h[n];
                }
                out[t] = match x.z {
                    Some(z) => y * z[row + t] * sigmoid(z[row + t]),
                    None => y,
                };
            }
            last.copy_from_slice(&h);
        });
    ScanForward { out, last_state, chunk_states }
}

/// Gradients of every input; `dz`/`ddelta_bias` exist when `z`/`delta_bias` were given.
pub struct ScanGrads<T> {
    pub du: Vec<T>,
    pub ddelta: Vec<T>,
    pub da: Vec<T>,
    pub dbm: Vec<T>,
    pub dcm: Vec<T>,
    pub dd_skip: Vec<T>,
    pub dz: Option<Vec<T>>,
    pub ddelta_bias: Option<Vec<T>>,
}

/// One task's share: rows of the per-channel gradients for channels `d0..d0+g` of
/// batch `b`, plus its partial sums of the shared gradients.
struct Partial<T> {
    b: usize,
    d0: usize,
    du: Vec<T>,     // (g, L)
    ddelta: Vec<T>, // (g, L)
    dz: Vec<T>,     // (g, L), empty without z
    da: Vec<T>,     // (g, N)
    dd: Vec<T>,     // (g)
    dbias: Vec<T>,  // (g)
    dbm: Vec<T>,    // (N, L) summed over this task's channels
    dcm: Vec<T>,    // (N, L)
}

pub fn selective_scan_backward<T: Elem>(
    dims: ScanDims,
    x: &ScanInputs<T>,
    chunk_states: &[T],
    dout: &[T],
) -> ScanGrads<T> {
    let ScanDims { batch, dim, len, state: n_state, .. } = dims;
    // Enough tasks to keep every thread busy, few enough that the (N, L) partials stay small.
    let tasks_wanted = 4 * rayon::current_num_threads();
    let group = (batch * dim).div_ceil(tasks_wanted).clamp(1, dim.max(1));
    let groups = dim.div_ceil(group);
    let partials: Vec<Partial<T>> = (0..batch * groups)
        .into_par_iter()
        .map(|task| {
            let (b, d0) = (task / groups, (task % groups) * group);
            channel_group_backward(dims, x, chunk_states, dout, b, d0, group.min(dim - d0))
        })
        .collect();

    let mut g = ScanGrads {
        du: vec![T::zero(); batch * dim * len],
        ddelta: vec![T::zero(); batch * dim * len],
        da: vec![T::zero(); dim * n_state],
        dbm: vec![T::zero(); batch * n_state * len],
        dcm: vec![T::zero(); batch * n_state * len],
        dd_skip: vec![T::zero(); dim],
        dz: x.z.map(|_| vec![T::zero(); batch * dim * len]),
        ddelta_bias: x.delta_bias.map(|_| vec![T::zero(); dim]),
    };
    for p in partials {
        let rows = (p.b * dim + p.d0) * len..(p.b * dim + p.d0) * len + p.du.len();
        g.du[rows.clone()].copy_from_slice(&p.du);
        g.ddelta[rows.clone()].copy_from_slice(&p.ddelta);
        if let Some(dz) = &mut g.dz {
            dz[rows].copy_from_slice(&p.dz);
        }
        add_into(&mut g.da[p.d0 * n_state..][..p.da.len()], &p.da);
        add_into(&mut g.dd_skip[p.d0..][..p.dd.len()], &p.dd);
        if let Some(db) = &mut g.ddelta_bias {
            add_into(&mut db[p.d0..][..p.dbias.len()], &p.dbias);
        }
        add_into(&mut g.dbm[p.b * n_state * len..][..n_state * len], &p.dbm);
        add_into(&mut g.dcm[p.b * n_state * len..][..n_state * len], &p.dcm);
    }
    g
}

fn add_into<T: Elem>(dst: &mut [T], src: &[T]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
}

/// Backward for channels `d0..d0+g` of batch `b`, chunk by chunk in reverse.
fn channel_group_backward<T: Elem>(
    dims: ScanDims,
    x: &ScanInputs<T>,
    chunk_states: &[T],
    dout: &[T],
    b: usize,
    d0: usize,
    g: usize,
) -> Partial<T> {
    let ScanDims { dim, len, state: n_state, chunk, .. } = dims;
    let nc = dims.n_chunks();
    let zero = T::zero();
    let mut p = Partial {
        b,
        d0,
        du: vec![zero; g * len],
        ddelta: vec![zero; g * len],
        dz: if x.z.is_some() { vec![zero; g * len] } else { vec![] },
        da: vec![zero; g * n_state],
        dd: vec![zero; g],
        dbias: vec![zero; g],
        dbm: vec![zero; n_state * len],
        dcm: vec![zero; n_state * len],
    };
    // Replayed states of one chunk and their decay factors, (chunk, N) each.
    let mut hs = vec![zero; chunk * n_state];
    let mut decay = vec![zero; chunk * n_state];
    let mut dh = vec![zero; n_state];
    for k in 0..g {
        let d = d0 + k;
        let row = (b * dim + d) * len;
        let a = &x.a[d * n_state..(d + 1) * n_state];
        dh.fill(zero);
        for c in (0..nc).rev() {
            let (t0, t1) = (c * chunk, ((c + 1) * chunk).min(len));
            let h0 = &chunk_states[((b * dim + d) * nc + c) * n_state..][..n_state];
            // Replay the forward recurrence over this chunk from its saved entry state.
            for t in t0..t1 {
                let (dt, _) = x.dt(d, x.delta[row + t]);
                let du = dt * x.u[row + t];
                for n in 0..n_state {
                    let prev = if t == t0 { h0[n] } else { hs[(t - t0 - 1) * n_state + n] };
                    let e = (dt * a[n]).exp();
                    decay[(t - t0) * n_state + n] = e;
                    hs[(t - t0) * n_state + n] = e * prev + du * x.bm[(b * n_state + n) * len + t];
                }
            }
            // Adjoint recurrence, newest step first.
            for t in (t0..t1).rev() {
                let (dt, ddt_ddelta) = x.dt(d, x.delta[row + t]);
                let u = x.u[row + t];
                let h = &hs[(t - t0) * n_state..][..n_state];
                let dy = match x.z {
                    Some(z) => {
                        let (zt, s) = (z[row + t], sigmoid(z[row + t]));
                        let y =
                            (0..n_state).map(|n| x.cm[(b * n_state + n) * len + t] * h[n]).sum::<T>() + x.d_skip[d] * u;
                        p.dz[k * len + t] = dout[row + t] * y * s * (T::one() + zt * (T::one() - s));
                        dout[row + t] * zt * s
                    }
                    None => dout[row + t],
                };
                p.dd[k] += dy * u;
                let mut du = dy * x.d_skip[d];
                let mut ddt = zero;
                for n in 0..n_state {
                    let bc = (b * n_state + n) * len + t;
                    let prev = if t == t0 { h0[n] } else { hs[(t - t0 - 1) * n_state + n] };
                    let e = decay[(t - t0) * n_state + n];
                    p.dcm[n * len + t] += dy * h[n];
                    dh[n] += dy * x.cm[bc];
                    ddt += dh[n] * (a[n] * e * prev + x.bm[bc] * u);
                    p.da[k * n_state + n] += dh[n] * dt * e * prev;
                    p.dbm[n * len + t] += dh[n] * dt * u;
                    du += dh[n] * dt * x.bm[bc];
                    dh[n] *= e; // becomes the carry into step t-1
                }
                p.du[k * len + t] = du;
                let ddelta = ddt * ddt_ddelta;
                p.ddelta[k * len + t] = ddelta;
                p.dbias[k] += ddelta;
            }
        }
    }
    p
}
