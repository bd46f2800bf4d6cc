//! The CPU twins of kernels/cu/decode.cu: one token of a Mamba-1 or Mamba-2 LM for each of B
//! sequences. A Mamba-1 layer, with M = d_model, D = d_inner, N = d_state, R = dt_rank,
//! K = d_conv, xdim = R + 2N:
//!
//! ```text
//! decode_in      [layer 0: r = embedding[id]]                            (B, M)
//!                u = RMSNorm(r) ; [x, z] = in_proj u                     (B, D) each
//!                window = [window[1..], x] ; xc = silu(conv_w . window + conv_b)
//! decode_rows    xdbl = x_proj xc = [dt, B, C]                           (B, xdim)
//! decode_ssm     Δ = softplus(dt_w dt + dt_b) ; s = exp(Δ A) s + Δ B xc
//!                y = (C . s + D_skip xc) silu(z)                         (B, D)
//! decode_rows    r += out_proj y
//! decode_rows    logits = embedding RMSNorm_f(r)                         (B, V)
//! ```
//!
//! A Mamba-2 layer (H heads of P channels, e = HP, G groups, conv over xBC, e + 2GN channels):
//!
//! ```text
//! decode_in      u = RMSNorm(r) ; [z, xBC, dt] = in_proj u ; xbc = silu(conv(window <- xBC))
//! decode_ssd     per head: Δ = softplus(dt + dt_bias) ; S = exp(Δ A) S + Δ x B^T   (P, N)
//!                y = (S C + D x) silu(z)                                 (B, e)
//! decode_rows    r += out_proj RMSNorm(y)       (the gated norm's weight; without one, no norm)
//! ```
//!
//! Dot products accumulate in f64.

use crate::dtype::Elem;
use rayon::prelude::*;

/// The sizes of one layer and the batch (`d` = d_inner, `m` = d_model), shared with the
/// kernels' launchers, with what the kernels take (`unsupported`).
pub use mamba_kernels::shapes::DecodeDims as Dims;
/// decode_in's rows: which go through the conv.
pub use mamba_kernels::shapes::DecodeInLayout as InLayout;
/// The sizes of one Mamba-2 layer and the batch.
pub use mamba_kernels::shapes::DecodeSsdDims as SsdDims;

/// The buffers `decode_in` writes: the conv's output (B, conv_n), in_proj's other rows in order
/// (B, rows - conv_n) and the conv windows (B, conv_n, K).
pub struct InOut<'a, T> {
    pub xc: &'a mut [T],
    pub rest: &'a mut [T],
    pub conv_state: &'a mut [T],
}

/// The weights `decode_in` reads.
pub struct InWeights<'a, T> {
    pub norm_w: &'a [T],
    pub in_proj: &'a [T],
    pub conv_w: &'a [T],
    pub conv_b: &'a [T],
}

/// The token ids (B, as floats) and the embedding (V, M) whose rows they pick: layer 0's
/// `decode_in` starts the residual stream from them.
#[derive(Clone, Copy)]
pub struct Embed<'a, T> {
    pub embedding: &'a [T],
    pub ids: &'a [T],
}

/// The buffers `decode_ssm` writes, and its weights.
pub struct SsmOut<'a, T> {
    pub y: &'a mut [T],
    pub ssm_state: &'a mut [T],
}
pub struct SsmWeights<'a, T> {
    pub dt_w: &'a [T],
    pub dt_b: &'a [T],
    /// A = -exp(A_log): (D, N)
    pub a: &'a [T],
    pub d_skip: &'a [T],
}

fn dot<T: Elem>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x.as_f64() * y.as_f64()).sum()
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `x` (cols) times `norm_w` and 1/rms(x): RMSNorm(x) = rstd · u.
fn normed<T: Elem>(x: &[T], norm_w: &[T], eps: f64) -> (Vec<T>, f64) {
    let ms = x.iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>() / x.len() as f64;
    (x.iter().zip(norm_w).map(|(&v, &w)| v * w).collect(), 1.0 / (ms + eps).sqrt())
}

/// out[b][i] = scale_b · w[i] · u_b for every row i of w (rows, cols), in parallel over rows.
fn rows_dot<T: Elem>(w: &[T], u: &[T], scale: f64) -> Vec<f64> {
    let cols = u.len();
    if w.len() < crate::cpu::PAR_MIN {
        w.chunks(cols).map(|row| dot(row, u) * scale).collect()
    } else {
        w.par_chunks(cols).map(|row| dot(row, u) * scale).collect()
    }
}

/// r (B, M) = rows `ids` (B) of `embedding` (V, M); an id outside [0, V) is clamped.
fn embed<T: Elem>(residual: &mut [T], Embed { embedding, ids }: Embed<'_, T>, m: usize) {
    let vocab = embedding.len() / m;
    for (r, &id) in residual.chunks_mut(m).zip(ids) {
        let id = (id.as_f64().max(0.0) as usize).min(vocab - 1);
        r.copy_from_slice(&embedding[id * m..(id + 1) * m]);
    }
}

/// Norm, in_proj and conv (shifting the window) of one token; with `gather` (layer 0) the
/// residual is first set to the embedding's rows at the ids.
pub fn decode_in<T: Elem>(
    layout: InLayout,
    out: InOut<'_, T>,
    residual: &mut [T],
    gather: Option<Embed<'_, T>>,
    w: InWeights<'_, T>,
    eps: f64,
) {
    let InLayout { batch, m, conv_lo, conv_n, d_conv: k, .. } = layout;
    if let Some(e) = gather {
        embed(residual, e, m);
    }
    let rest = layout.rest_len();
    for b in 0..batch {
        let (u, rstd) = normed(&residual[b * m..(b + 1) * m], w.norm_w, eps);
        let projected = rows_dot(w.in_proj, &u, rstd); // (rows)
        for (c, &v) in projected.iter().enumerate() {
            if c < conv_lo || c >= conv_lo + conv_n {
                out.rest[b * rest + if c < conv_lo { c } else { c - conv_n }] = T::cast(v);
                continue;
            }
            let (bc, cc) = (b * conv_n + c - conv_lo, c - conv_lo);
            let window = &mut out.conv_state[bc * k..(bc + 1) * k];
            window.rotate_left(1);
            window[k - 1] = T::cast(v);
            let s = w.conv_b[cc].as_f64() + dot(&w.conv_w[cc * k..(cc + 1) * k], window);
            out.xc[bc] = T::cast(silu(s));
        }
    }
}

/// The state update and gated output of every channel, from x_proj's output `xdbl` (B, xdim).
pub fn decode_ssm<T: Elem>(dims: Dims, out: SsmOut<'_, T>, xdbl: &[T], xc: &[T], z: &[T], w: SsmWeights<'_, T>) {
    let Dims { batch, d, d_state: n, dt_rank: r, .. } = dims;
    let xdim = dims.xdim();
    for b in 0..batch {
        let x_dbl: Vec<f64> = xdbl[b * xdim..(b + 1) * xdim].iter().map(|v| v.as_f64()).collect();
        let (dt_in, bs, cs) = (&x_dbl[..r], &x_dbl[r..r + n], &x_dbl[r + n..]);
        for c in 0..d {
            let bc = b * d + c;
            let dt_raw: f64 = w.dt_w[c * r..(c + 1) * r].iter().zip(dt_in).map(|(&a, &v)| a.as_f64() * v).sum();
            let dt = softplus(dt_raw + w.dt_b[c].as_f64());
            let x = xc[bc].as_f64();
            let mut y = 0.0;
            for q in 0..n {
                let s = &mut out.ssm_state[bc * n + q];
                let v = (dt * w.a[c * n + q].as_f64()).exp() * s.as_f64() + dt * bs[q] * x;
                *s = T::cast(v);
                y += cs[q] * v;
            }
            out.y[bc] = T::cast((y + w.d_skip[c].as_f64() * x) * silu(z[bc].as_f64()));
        }
    }
}

/// The small weights of a Mamba-2 layer's `decode_ssd`, one value a head each.
pub struct SsdWeights<'a, T> {
    pub dt_bias: &'a [T],
    /// A = -exp(A_log)
    pub a: &'a [T],
    pub d_skip: &'a [T],
}

/// One token of a Mamba-2 layer's SSD recurrence and gate, from decode_in's `xbc` (B, e + 2GN:
/// x, then B and C of each group) and `zdt` (B, e + H: z, then dt before its bias); head h reads
/// group h / (H / G) of B and C. `out.y` (B, e), `out.ssm_state` (B, H, P, N).
pub fn decode_ssd<T: Elem>(dims: SsdDims, out: SsmOut<'_, T>, xbc: &[T], zdt: &[T], w: SsdWeights<'_, T>) {
    let SsdDims { batch, heads, headdim: p, d_state: n, ngroups: g, .. } = dims;
    let (e, conv_dim) = (dims.d_inner(), dims.conv_dim());
    for b in 0..batch {
        let (xr, zr) = (&xbc[b * conv_dim..(b + 1) * conv_dim], &zdt[b * (e + heads)..(b + 1) * (e + heads)]);
        for h in 0..heads {
            let gi = h / (heads / g);
            let (bs, cs) = (&xr[e + gi * n..e + (gi + 1) * n], &xr[e + (g + gi) * n..e + (g + gi + 1) * n]);
            let dt = softplus(zr[e + h].as_f64() + w.dt_bias[h].as_f64());
            let da = (dt * w.a[h].as_f64()).exp();
            for ch in h * p..(h + 1) * p {
                let x = xr[ch].as_f64();
                let state = &mut out.ssm_state[(b * e + ch) * n..(b * e + ch + 1) * n];
                let mut y = 0.0;
                for ((s, bq), cq) in state.iter_mut().zip(bs).zip(cs) {
                    let v = da * s.as_f64() + dt * x * bq.as_f64();
                    *s = T::cast(v);
                    y += cq.as_f64() * v;
                }
                out.y[b * e + ch] = T::cast((y + w.d_skip[h].as_f64() * x) * silu(zr[ch].as_f64()));
            }
        }
    }
}

/// `out (B, rows) = [out +] w (rows, cols) · [RMSNorm with norm_w] x (B, cols)`: x_proj,
/// out_proj (accumulating into the residual) and the head (normed).
pub fn decode_rows<T: Elem>(out: &mut [T], x: &[T], norm_w: Option<&[T]>, w: &[T], batch: usize, accumulate: bool, eps: f64) {
    let (rows, cols) = (out.len() / batch, x.len() / batch);
    for (o, xr) in out.chunks_mut(rows).zip(x.chunks(cols)) {
        let (u, scale) = match norm_w {
            Some(nw) => normed(xr, nw, eps),
            None => (xr.to_vec(), 1.0),
        };
        for (o, v) in o.iter_mut().zip(rows_dot(w, &u, scale)) {
            *o = T::cast(if accumulate { o.as_f64() + v } else { v });
        }
    }
}
