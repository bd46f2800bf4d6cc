//! The selective scan (Mamba's S6 recurrence) on the CPU, forward and backward.
//!
//! Shapes (the reference layout): `u, delta, z, out: (B, D, L)`, `a: (D, N)`,
//! `bm, cm: (B, N, L)`, `d_skip, delta_bias: (D)`, `init, last_state: (B, D, N)`. Per batch
//! `b`, channel `d`, state `n`, time `t`:
//!
//! ```text
//! dt_t   = softplus(delta_t + bias_d)          (or delta_t + bias_d without softplus)
//! h_t[n] = exp(dt_t A[d,n]) h_{t-1}[n] + dt_t Bm_t[n] u_t,   h_{-1} = init (or 0)
//! y_t    = sum_n Cm_t[n] h_t[n] + D_d u_t
//! out_t  = y_t * silu(z_t)                      (or y_t without z)
//! last_state = h_{L-1}
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
//! dh_{L-1} = Cm_{L-1} dy_{L-1} + dlast                            (dlast: of last_state, or 0)
//! dh_t     = Cm_t dy_t + exp(dt_{t+1} A) dh_{t+1}                  (carried across chunks)
//! dCm_t   += dy_t h_t          dBm_t += dh_t dt_t u_t              (summed over channels d)
//! du_t     = D dy_t + sum_n dh_t dt_t Bm_t
//! d(dt_t)  = sum_n dh_t (A exp(dt_t A) h_{t-1} + Bm_t u_t)
//! dA      += dh_t dt_t exp(dt_t A) h_{t-1}
//! ddelta_t = d(dt_t) sigmoid(delta_t + bias)   (softplus' = sigmoid)
//! dinit    = exp(dt_0 A) dh_0                  (the carry past step 0)
//! ```
//!
//! Work is parallel over (batch, group of channels): channels are independent except
//! that `dBm`, `dCm` sum over `d` and `dA`, `dD`, `dbias` sum over `b`, so each task
//! accumulates those into its own small buffers, reduced at the end.

use crate::dtype::Elem;
use crate::ops::elementwise::cpu::{sigmoid, softplus};
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
    /// The state before step 0, `(B, D, N)`; zeros without it.
    pub init: Option<&'a [T]>,
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
/// each chunk, `chunk_states (B, D, n_chunks, N)` (the first chunk's is `init`, or zero).
pub struct ScanForward<T> {
    pub out: Vec<T>,
    pub last_state: Vec<T>,
    pub chunk_states: Vec<T>,
}

/// (B, N, L) -> (B, L, N), so that the state loop reads B_t and C_t contiguously.
fn time_major<T: Elem>(m: &[T], batch: usize, n_state: usize, len: usize) -> Vec<T> {
    let mut out = vec![T::zero(); m.len()];
    for b in 0..batch {
        for n in 0..n_state {
            for t in 0..len {
                out[(b * len + t) * n_state + n] = m[(b * n_state + n) * len + t];
            }
        }
    }
    out
}

/// Compile `$body` (which calls `#[inline(always)]` generic code) a second time with
/// AVX2+FMA enabled and pick that copy at run time when the CPU has them: the state
/// loops and `exp_fast` then become 256-bit vector code.
macro_rules! with_avx2 {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if crate::cpu::avx2_fma() {
                // SAFETY: the features were detected on this CPU just above.
                unsafe { fast(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

pub fn selective_scan_forward<T: Elem>(dims: ScanDims, x: &ScanInputs<T>) -> ScanForward<T> {
    let ScanDims { batch, dim, len, state: n_state, .. } = dims;
    let nc = dims.n_chunks();
    let (bt, ct) = (time_major(x.bm, batch, n_state, len), time_major(x.cm, batch, n_state, len));
    let mut out = vec![T::zero(); batch * dim * len];
    let mut last_state = vec![T::zero(); batch * dim * n_state];
    let mut chunk_states = vec![T::zero(); batch * dim * nc * n_state];
    if len == 0 {
        // No step: the last state is the initial one (the loop below has no rows of `out`).
        return ScanForward { out, last_state: x.init.map_or(last_state, <[T]>::to_vec), chunk_states };
    }
    // One task per (b, d) channel; each owns its rows of every output.
    out.par_chunks_mut(len.max(1))
        .zip(last_state.par_chunks_mut(n_state.max(1)))
        .zip(chunk_states.par_chunks_mut((nc * n_state).max(1)))
        .enumerate()
        .for_each(|(bd, ((out, last), saved))| {
            let (b, d) = (bd / dim, bd % dim);
            let (bt, ct) = (&bt[b * len * n_state..], &ct[b * len * n_state..]);
            with_avx2!(forward_channel(dims, x, b, d, bt, ct, out, last, saved))
        });
    ScanForward { out, last_state, chunk_states }
}

/// The recurrence for one (b, d) channel; `bt`, `ct` are batch b's B and C as (L, N).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_channel<T: Elem>(
    dims: ScanDims,
    x: &ScanInputs<T>,
    b: usize,
    d: usize,
    bt: &[T],
    ct: &[T],
    out: &mut [T],
    last: &mut [T],
    saved: &mut [T],
) {
    let ScanDims { dim, len, state: n_state, chunk, .. } = dims;
    let row = (b * dim + d) * len; // offset of (b, d, 0) in (B, D, L)
    let a = &x.a[d * n_state..(d + 1) * n_state];
    let mut h = match x.init {
        Some(init) => init[(b * dim + d) * n_state..][..n_state].to_vec(), // h_{-1} = init
        None => vec![T::zero(); n_state],
    };
    for t in 0..len {
        if t % chunk == 0 {
            saved[(t / chunk) * n_state..][..n_state].copy_from_slice(&h);
        }
        let (dt, _) = x.dt(d, x.delta[row + t]);
        let du = dt * x.u[row + t];
        let (b_t, c_t) = (&bt[t * n_state..][..n_state], &ct[t * n_state..][..n_state]);
        for n in 0..n_state {
            h[n] = (dt * a[n]).exp_fast() * h[n] + du * b_t[n]; // h = exp(dt A) h + dt B u
        }
        let y = (0..n_state).map(|n| c_t[n] * h[n]).sum::<T>() + x.d_skip[d] * x.u[row + t];
        out[t] = match x.z {
            Some(z) => y * z[row + t] * sigmoid(z[row + t]),
            None => y,
        };
    }
    last.copy_from_slice(&h);
}

/// Gradients of every input; `dz`/`ddelta_bias`/`dinit` exist when `z`/`delta_bias`/`init`
/// were given.
pub struct ScanGrads<T> {
    pub du: Vec<T>,
    pub ddelta: Vec<T>,
    pub da: Vec<T>,
    pub dbm: Vec<T>,
    pub dcm: Vec<T>,
    pub dd_skip: Vec<T>,
    pub dz: Option<Vec<T>>,
    pub ddelta_bias: Option<Vec<T>>,
    pub dinit: Option<Vec<T>>,
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
    dinit: Vec<T>,  // (g, N), empty without init
    dbt: Vec<T>,    // (L, N) summed over this task's channels (time-major, like bt)
    dct: Vec<T>,    // (L, N)
}

/// The upstream gradients: `dout (B, D, L)` and `dlast (B, D, N)`, the gradient of
/// `last_state` (zero when absent).
#[derive(Clone, Copy)]
struct Upstream<'a, T> {
    dout: &'a [T],
    dlast: Option<&'a [T]>,
}

/// Every input's gradient from `dout (B, D, L)` and `dlast (B, D, N)` (the gradient of
/// `last_state`; `None` is zero and computes exactly what no `dlast` term would).
pub fn selective_scan_backward<T: Elem>(
    dims: ScanDims,
    x: &ScanInputs<T>,
    chunk_states: &[T],
    dout: &[T],
    dlast: Option<&[T]>,
) -> ScanGrads<T> {
    let up = Upstream { dout, dlast };
    let ScanDims { batch, dim, len, state: n_state, .. } = dims;
    let (bt, ct) = (time_major(x.bm, batch, n_state, len), time_major(x.cm, batch, n_state, len));
    // Enough tasks to keep every thread busy, few enough that the (L, N) partials stay small.
    let tasks_wanted = 4 * rayon::current_num_threads();
    let group = (batch * dim).div_ceil(tasks_wanted).clamp(1, dim.max(1));
    let groups = dim.div_ceil(group);
    let partials: Vec<Partial<T>> = (0..batch * groups)
        .into_par_iter()
        .map(|task| {
            let (b, d0) = (task / groups, (task % groups) * group);
            let g = group.min(dim - d0);
            let (bt, ct) = (&bt[b * len * n_state..], &ct[b * len * n_state..]);
            with_avx2!(channel_group_backward(dims, x, bt, ct, chunk_states, up, b, d0, g))
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
        dinit: x.init.map(|_| vec![T::zero(); batch * dim * n_state]),
    };
    for p in partials {
        let rows = (p.b * dim + p.d0) * len..(p.b * dim + p.d0) * len + p.du.len();
        g.du[rows.clone()].copy_from_slice(&p.du);
        g.ddelta[rows.clone()].copy_from_slice(&p.ddelta);
        if let Some(dz) = &mut g.dz {
            dz[rows].copy_from_slice(&p.dz);
        }
        if let Some(dinit) = &mut g.dinit {
            dinit[(p.b * dim + p.d0) * n_state..][..p.dinit.len()].copy_from_slice(&p.dinit);
        }
        add_into(&mut g.da[p.d0 * n_state..][..p.da.len()], &p.da);
        add_into(&mut g.dd_skip[p.d0..][..p.dd.len()], &p.dd);
        if let Some(db) = &mut g.ddelta_bias {
            add_into(&mut db[p.d0..][..p.dbias.len()], &p.dbias);
        }
        // back from (L, N) to the reference layout (N, L)
        for t in 0..len {
            for n in 0..n_state {
                g.dbm[(p.b * n_state + n) * len + t] += p.dbt[t * n_state + n];
                g.dcm[(p.b * n_state + n) * len + t] += p.dct[t * n_state + n];
            }
        }
    }
    g
}

fn add_into<T: Elem>(dst: &mut [T], src: &[T]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
}

/// Backward for channels `d0..d0+g` of batch `b`, chunk by chunk in reverse.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn channel_group_backward<T: Elem>(
    dims: ScanDims,
    x: &ScanInputs<T>,
    bt: &[T],
    ct: &[T],
    chunk_states: &[T],
    up: Upstream<T>,
    b: usize,
    d0: usize,
    g: usize,
) -> Partial<T> {
    let dout = up.dout;
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
        dinit: if x.init.is_some() { vec![zero; g * n_state] } else { vec![] },
        dbt: vec![zero; len * n_state],
        dct: vec![zero; len * n_state],
    };
    // One chunk replayed: states h_t and decays exp(dt_t A) as (chunk, N); dt_t and
    // d(dt_t)/d(delta_t) as (chunk).
    let mut hs = vec![zero; chunk * n_state];
    let mut decay = vec![zero; chunk * n_state];
    let mut dts = vec![(zero, zero); chunk];
    let mut dh = vec![zero; n_state];
    for k in 0..g {
        let d = d0 + k;
        let row = (b * dim + d) * len;
        let a = &x.a[d * n_state..(d + 1) * n_state];
        match up.dlast {
            Some(dlast) => dh.copy_from_slice(&dlast[(b * dim + d) * n_state..][..n_state]), // dh_{L-1} starts at dlast
            None => dh.fill(zero),
        }
        for c in (0..nc).rev() {
            let (t0, t1) = (c * chunk, ((c + 1) * chunk).min(len));
            let h0 = &chunk_states[((b * dim + d) * nc + c) * n_state..][..n_state];
            // Replay the forward recurrence over this chunk from its saved entry state.
            for t in t0..t1 {
                let i = t - t0;
                dts[i] = x.dt(d, x.delta[row + t]);
                let dt = dts[i].0;
                let du = dt * x.u[row + t];
                let (prev, rest) = if i == 0 {
                    (h0, &mut hs[..])
                } else {
                    let (p, r) = hs.split_at_mut(i * n_state);
                    (&p[(i - 1) * n_state..], r)
                };
                let (h, e) = (&mut rest[..n_state], &mut decay[i * n_state..][..n_state]);
                let b_t = &bt[t * n_state..][..n_state];
                for n in 0..n_state {
                    e[n] = (dt * a[n]).exp_fast();
                    h[n] = e[n] * prev[n] + du * b_t[n];
                }
            }
            // Adjoint recurrence, newest step first.
            for t in (t0..t1).rev() {
                let i = t - t0;
                let (dt, ddt_ddelta) = dts[i];
                let u = x.u[row + t];
                let h = &hs[i * n_state..][..n_state];
                let prev = if i == 0 { h0 } else { &hs[(i - 1) * n_state..][..n_state] };
                let e = &decay[i * n_state..][..n_state];
                let (b_t, c_t) = (&bt[t * n_state..][..n_state], &ct[t * n_state..][..n_state]);
                let dy = match x.z {
                    Some(z) => {
                        let (zt, s) = (z[row + t], sigmoid(z[row + t]));
                        let y = (0..n_state).map(|n| c_t[n] * h[n]).sum::<T>() + x.d_skip[d] * u;
                        p.dz[k * len + t] = dout[row + t] * y * s * (T::one() + zt * (T::one() - s));
                        dout[row + t] * zt * s
                    }
                    None => dout[row + t],
                };
                p.dd[k] += dy * u;
                let (dct, dbt) = (&mut p.dct[t * n_state..][..n_state], &mut p.dbt[t * n_state..][..n_state]);
                let da = &mut p.da[k * n_state..][..n_state];
                let mut du = dy * x.d_skip[d];
                let mut ddt = zero;
                for n in 0..n_state {
                    dct[n] += dy * h[n];
                    dh[n] += dy * c_t[n]; // dh_t is now complete
                    ddt += dh[n] * (a[n] * e[n] * prev[n] + b_t[n] * u);
                    da[n] += dh[n] * dt * e[n] * prev[n];
                    dbt[n] += dh[n] * dt * u;
                    du += dh[n] * dt * b_t[n];
                    dh[n] *= e[n]; // becomes the carry into step t-1
                }
                p.du[k * len + t] = du;
                let ddelta = ddt * ddt_ddelta;
                p.ddelta[k * len + t] = ddelta;
                p.dbias[k] += ddelta;
            }
        }
        if x.init.is_some() {
            p.dinit[k * n_state..][..n_state].copy_from_slice(&dh); // exp(dt_0 A) dh_0: d(init)
        }
    }
    p
}
