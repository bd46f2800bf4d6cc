//! Shared helpers for the cross-crate tests: seeded random tensors, views with a chosen
//! (non-contiguous) layout, index arithmetic, naive f64 references, and closeness checks.
//!
//! The references here work on plain row-major `Vec<f64>`s and never call the engine,
//! so a test comparing an op against them compares two independent implementations.

pub use mamba_engine::ops::scan::{scan_args, scan_inputs};
use mamba_engine::{DType, Error, Rng, Tensor};

// ---------------------------------------------------------------- random tensors

/// Normal(0, 1) f64 samples of `shape`, from `seed`.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, &mut Rng::new(seed))
}

/// Uniform f64 samples in [lo, hi) of `shape`, from `seed`.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, lo, hi, DType::F64, &mut Rng::new(seed))
}

/// Normal(0, 1) f64 samples drawn from an existing generator.
pub fn randn_rng(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, rng)
}

/// The values of `t` in row-major order as f64 (panics only inside tests).
pub fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().expect("to_vec_f64")
}

// ---------------------------------------------------------------- views

/// How a test tensor is laid out in memory. Every variant yields a tensor of exactly
/// the requested shape; all but `Contiguous` are views onto a differently shaped buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// A fresh row-major buffer.
    Contiguous,
    /// The last two axes of a buffer of the swapped shape, transposed back.
    Transposed,
    /// Axes reversed: a buffer of the reversed shape, permuted back.
    Permuted,
    /// Entries 1..=d of a last axis of length d + 2 (an offset and a row gap).
    Narrowed,
    /// Every even-numbered axis stretched from size 1 (stride 0).
    Broadcast,
}

pub const VIEWS: [View; 5] = [View::Contiguous, View::Transposed, View::Permuted, View::Narrowed, View::Broadcast];

/// A random f64 tensor of `shape` laid out as `view` says (no autograd).
pub fn make_view(shape: &[usize], view: View, rng: &mut Rng) -> Tensor {
    make_view_with(shape, view, &mut |s| randn_rng(s, rng))
}

/// A tensor of `shape` laid out as `view` says, viewing a buffer made by `base(buffer_shape)`.
pub fn make_view_with(shape: &[usize], view: View, base: &mut dyn FnMut(&[usize]) -> Tensor) -> Tensor {
    let r = shape.len();
    let out = match view {
        View::Contiguous => base(shape),
        View::Transposed if r >= 2 => {
            let mut s = shape.to_vec();
            s.swap(r - 2, r - 1);
            base(&s).transpose(-1, -2).expect("transpose")
        }
        View::Permuted if r >= 2 => {
            let s: Vec<usize> = shape.iter().rev().copied().collect();
            let perm: Vec<usize> = (0..r).rev().collect();
            base(&s).permute(&perm).expect("permute")
        }
        View::Narrowed if r >= 1 => {
            let mut s = shape.to_vec();
            s[r - 1] += 2;
            base(&s).narrow(-1, 1, shape[r - 1]).expect("narrow")
        }
        View::Broadcast => {
            let s: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if i % 2 == 0 { 1 } else { d }).collect();
            base(&s).broadcast_as(shape).expect("broadcast_as")
        }
        _ => base(shape),
    };
    assert_eq!(out.shape(), shape, "make_view({view:?}) built the wrong shape");
    out
}

// ---------------------------------------------------------------- index arithmetic

/// Row-major multi-index of flat index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Flat row-major index of `idx` in `shape`.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Flat index into an operand of `in_shape` read at output multi-index `out_idx`
/// under numpy broadcasting (align right; size-1 axes repeat).
pub fn broadcast_source(out_idx: &[usize], in_shape: &[usize]) -> usize {
    let extra = out_idx.len() - in_shape.len();
    let idx: Vec<usize> =
        in_shape.iter().enumerate().map(|(i, &d)| if d == 1 { 0 } else { out_idx[i + extra] }).collect();
    ravel(&idx, in_shape)
}

/// The numpy broadcast of two shapes, or None if they do not fit.
pub fn naive_broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- naive references

/// `f(a, b)` elementwise with broadcasting.
pub fn naive_binary(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<f64>, Vec<usize>) {
    let shape = naive_broadcast_shape(sa, sb).expect("shapes broadcast");
    let n: usize = shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            f(a[broadcast_source(&idx, sa)], b[broadcast_source(&idx, sb)])
        })
        .collect();
    (out, shape)
}

/// Batched matrix product `(.., m, k) @ (.., k, n)` by the triple loop, batch axes broadcast.
pub fn naive_matmul(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    assert_eq!(k, sb[rb - 2], "inner dimensions");
    let batch = naive_broadcast_shape(&sa[..ra - 2], &sb[..rb - 2]).expect("batch axes broadcast");
    let nb: usize = batch.iter().product();
    let mut out = vec![0.0; nb * m * n];
    for bi in 0..nb {
        let bidx = unravel(bi, &batch);
        let oa = broadcast_source(&bidx, &sa[..ra - 2]) * m * k;
        let ob = broadcast_source(&bidx, &sb[..rb - 2]) * k * n;
        for i in 0..m {
            for j in 0..n {
                out[bi * m * n + i * n + j] = (0..k).map(|p| a[oa + i * k + p] * b[ob + p * n + j]).sum();
            }
        }
    }
    let mut shape = batch;
    shape.extend_from_slice(&[m, n]);
    (out, shape)
}

/// Fold `x` over `axes` with `f` from `init`; returns the values and the output shape
/// (reduced axes kept as 1 if `keepdim`, else dropped).
pub fn naive_reduce(
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    keepdim: bool,
    init: f64,
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<f64>, Vec<usize>) {
    let kept: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let mut out = vec![init; kept.iter().product()];
    for (i, &v) in x.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &kept);
        out[o] = f(out[o], v);
    }
    let out_shape = if keepdim {
        kept
    } else {
        shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
    };
    (out, out_shape)
}

/// log_softmax over the last axis of a row-major buffer with rows of length `c`.
pub fn naive_log_softmax(x: &[f64], c: usize) -> Vec<f64> {
    x.chunks(c)
        .flat_map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            row.iter().map(move |v| v - lse).collect::<Vec<_>>()
        })
        .collect()
}

/// Mean negative log-likelihood over rows whose target is not `ignore`.
pub fn naive_cross_entropy(logits: &[f64], c: usize, targets: &[i64], ignore: i64) -> f64 {
    let lp = naive_log_softmax(logits, c);
    let (mut sum, mut n) = (0.0, 0usize);
    for (r, &t) in targets.iter().enumerate() {
        if t != ignore {
            sum -= lp[r * c + t as usize];
            n += 1;
        }
    }
    sum / n as f64
}

/// y = x / sqrt(mean(x^2) + eps) * w over rows of length `d`.
pub fn naive_rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|row| {
            let r = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
            row.iter().zip(w).map(move |(v, wi)| v * r * wi).collect::<Vec<_>>()
        })
        .collect()
}

/// Depthwise causal convolution, PyTorch's `Conv1d(groups=C, padding=K-1)` truncated to
/// the first L outputs: `y[b,c,t] = bias[c] + sum_k w[c,k] x[b,c,t-(K-1)+k]` (x = 0 before t=0).
pub fn naive_conv1d_causal(
    x: &[f64],
    (bsz, ch, len): (usize, usize, usize),
    w: &[f64],
    k: usize,
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let mut y = vec![0.0; bsz * ch * len];
    for b in 0..bsz {
        for c in 0..ch {
            for t in 0..len {
                let mut acc = bias.map_or(0.0, |bs| bs[c]);
                for j in 0..k {
                    let src = t as isize - (k as isize - 1) + j as isize;
                    if src >= 0 {
                        acc += w[c * k + j] * x[(b * ch + c) * len + src as usize];
                    }
                }
                y[(b * ch + c) * len + t] = acc;
            }
        }
    }
    y
}

/// Rows `weight[ids[i]]` of a row-major (V, D) table.
/// Largest |got - want| over the largest |want|: how far apart two computations of one tensor
/// are, relative to its size (f32 results that sum in different orders agree to ~1e-6).
pub fn max_diff_over_scale(got: &Tensor, want: &Tensor) -> f64 {
    let (a, b) = (vals(got), vals(want));
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs())) / scale
}

pub fn naive_embedding(weight: &[f64], d: usize, ids: &[usize]) -> Vec<f64> {
    ids.iter().flat_map(|&i| weight[i * d..(i + 1) * d].to_vec()).collect()
}

/// Row-major inputs of the selective scan: u, delta (B, D, L); a (D, N); b, c (B, N, L);
/// d (D); optional z (B, D, L) and delta_bias (D).
pub struct NaiveScan<'a> {
    pub dims: (usize, usize, usize, usize),
    pub u: &'a [f64],
    pub delta: &'a [f64],
    pub a: &'a [f64],
    pub b: &'a [f64],
    pub c: &'a [f64],
    pub d: &'a [f64],
    pub z: Option<&'a [f64]>,
    pub delta_bias: Option<&'a [f64]>,
    pub softplus: bool,
}

/// Mamba's S6 recurrence one scalar at a time; returns (out (B, D, L), last state (B, D, N)):
///
/// ```text
/// dt = softplus(delta + bias)   h[n] = exp(dt A[d,n]) h[n] + dt B[n] u   y = sum_n C[n] h[n] + D u
/// out = y * silu(z)
/// ```
pub fn naive_selective_scan(s: &NaiveScan) -> (Vec<f64>, Vec<f64>) {
    let (bsz, dim, len, n) = s.dims;
    let mut out = vec![0.0; bsz * dim * len];
    let mut last = vec![0.0; bsz * dim * n];
    for b in 0..bsz {
        for d in 0..dim {
            let mut h = vec![0.0; n];
            for t in 0..len {
                let i = (b * dim + d) * len + t;
                let mut dt = s.delta[i] + s.delta_bias.map_or(0.0, |bias| bias[d]);
                if s.softplus {
                    dt = dt.exp().ln_1p();
                }
                let mut y = s.d[d] * s.u[i];
                for (k, hk) in h.iter_mut().enumerate() {
                    let bc = (b * n + k) * len + t;
                    *hk = (dt * s.a[d * n + k]).exp() * *hk + dt * s.b[bc] * s.u[i];
                    y += s.c[bc] * *hk;
                }
                if let Some(z) = s.z {
                    y *= z[i] / (1.0 + (-z[i]).exp());
                }
                out[i] = y;
            }
            last[(b * dim + d) * n..(b * dim + d + 1) * n].copy_from_slice(&h);
        }
    }
    (out, last)
}

// ---------------------------------------------------------------- comparisons

/// Largest violation of |got - want| <= atol + rtol |want|, as a ratio (<= 1 passes).
pub fn worst_ratio(got: &[f64], want: &[f64], atol: f64, rtol: f64) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| match (g - w).abs() {
            0.0 => 0.0,
            d => d / (atol + rtol * w.abs()),
        })
        .fold(0.0, |a, r| if r.is_nan() { f64::INFINITY } else { a.max(r) })
}

/// Assert equal lengths and elementwise closeness, naming `what` and the first bad element.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{what}: element {i}: got {g}, expected {w} (atol {atol}, rtol {rtol})");
    }
}

/// The op an engine error names.
pub fn error_op(e: &Error) -> &'static str {
    e.op()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The helpers are references for the engine: check them against hand-worked values.

    #[test]
    fn index_arithmetic_round_trips() {
        let shape = [2, 3, 4];
        for i in 0..24 {
            assert_eq!(ravel(&unravel(i, &shape), &shape), i);
        }
        assert_eq!(unravel(23, &shape), vec![1, 2, 3]);
        assert_eq!(broadcast_source(&[1, 2, 3], &[3, 1]), 2);
        assert_eq!(broadcast_source(&[1, 2, 3], &[4]), 3);
        assert_eq!(naive_broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(naive_broadcast_shape(&[2, 3], &[4]), None);
    }

    #[test]
    fn references_match_hand_values() {
        // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]
        let (m, s) = naive_matmul(&[1., 2., 3., 4.], &[2, 2], &[5., 6., 7., 8.], &[2, 2]);
        assert_eq!((m, s), (vec![19., 22., 43., 50.], vec![2, 2]));
        let (r, s) = naive_reduce(&[1., 2., 3., 4., 5., 6.], &[2, 3], &[1], false, 0.0, |a, b| a + b);
        assert_eq!((r, s), (vec![6., 15.], vec![2]));
        let (r, s) = naive_reduce(&[1., 5., 3., 4., 2., 6.], &[2, 3], &[0], true, f64::NEG_INFINITY, f64::max);
        assert_eq!((r, s), (vec![4., 5., 6.], vec![1, 3]));
        let (b, s) = naive_binary(&[1., 2.], &[2, 1], &[10., 20., 30.], &[3], |x, y| x + y);
        assert_eq!((b, s), (vec![11., 21., 31., 12., 22., 32.], vec![2, 3]));
        // uniform logits: log_softmax = -ln C, cross entropy = ln C
        assert_close("lsm", &naive_log_softmax(&[0.; 4], 4), &[-(4f64).ln(); 4], 1e-15, 0.0);
        assert!((naive_cross_entropy(&[0.; 6], 3, &[0, -1], -1) - 3f64.ln()).abs() < 1e-15);
        assert_close(
            "rms",
            &naive_rms_norm(&[3., 4.], &[1., 2.], 0.0),
            &[3. / 12.5f64.sqrt(), 8. / 12.5f64.sqrt()],
            1e-15,
            0.0,
        );
        // x = [1,2,3], w = [a,b] = [10,1]: y = [1, 10*1+2, 10*2+3] (+ bias 0.5)
        assert_eq!(naive_conv1d_causal(&[1., 2., 3.], (1, 1, 3), &[10., 1.], 2, Some(&[0.5])), vec![1.5, 12.5, 23.5]);
        assert_eq!(naive_embedding(&[0., 1., 10., 11.], 2, &[1, 0, 1]), vec![10., 11., 0., 1., 10., 11.]);
        // one channel, one state, A = ln(1/2) and dt = 1: h_t = h_{t-1}/2 + B u_t, y = C h + D u
        let scan = NaiveScan {
            dims: (1, 1, 3, 1),
            u: &[1., 2., 4.],
            delta: &[1.; 3],
            a: &[0.5f64.ln()],
            b: &[1.; 3],
            c: &[2.; 3],
            d: &[10.],
            z: None,
            delta_bias: None,
            softplus: false,
        };
        let (y, last) = naive_selective_scan(&scan); // h = 1, 2.5, 5.25
        assert_close("scan", &y, &[12., 25., 50.5], 1e-12, 0.0);
        assert_close("scan state", &last, &[5.25], 1e-12, 0.0);
    }

    #[test]
    fn views_have_the_requested_layout() {
        let mut rng = Rng::new(3);
        for v in VIEWS {
            let t = make_view(&[2, 3, 4], v, &mut rng);
            assert_eq!(t.is_contiguous(), v == View::Contiguous, "{v:?}");
        }
    }
}
