//! Causal depthwise 1-D convolution kernels (the short conv in front of Mamba's scan).
//!
//! `x` is `(B, C, L)` contiguous, `w` is `(C, K)`, `bias` is `(C)`. Every channel has its
//! own filter (depthwise), and output `t` sees only inputs `t-(K-1) ..= t` (causal):
//!
//! ```text
//! y[b,c,t] = bias[c] + sum_{j=0}^{K-1} w[c,j] * x[b,c,t-(K-1)+j]      x[.., <0] = 0
//! ```
//!
//! The adjoints, with `t = s + (K-1) - j` the output that input `s` reached through tap `j`:
//!
//! ```text
//! dx[b,c,s] = sum_{j : t < L} w[c,j] * dy[b,c,s+(K-1)-j]
//! dw[c,j]   = sum_{b,t} dy[b,c,t] * x[b,c,t-(K-1)+j]
//! db[c]     = sum_{b,t} dy[b,c,t]
//! ```
//!
//! `y` and `dx` are computed one `(b, c)` row at a time (rows are independent); `dw` and
//! `db` one channel at a time (each channel's sums touch only its own outputs), so no
//! two threads ever write the same value. Sums over `j` have only `K` terms and stay in
//! `T`; sums over `(b, t)` are long and accumulate in f64.

use crate::cpu::PAR_MIN;
use crate::dtype::Elem;
use rayon::prelude::*;

/// Forward pass: `y` of shape `(B, C, L)`. `x.len() == b*c*l`, `w.len() == c*k`, and
/// `bias`, if given, has `c` values (the op checks shapes).
pub fn conv1d_causal_forward<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    b: usize,
    c: usize,
    l: usize,
    k: usize,
) -> Vec<T> {
    debug_assert_eq!(x.len(), b * c * l);
    debug_assert_eq!(w.len(), c * k);
    let mut y = vec![T::zero(); b * c * l];
    if y.is_empty() {
        return y;
    }
    let row = |(r, yr): (usize, &mut [T])| {
        let ch = r % c;
        let (xr, wr) = (&x[r * l..(r + 1) * l], &w[ch * k..(ch + 1) * k]);
        let b0 = bias.map_or(T::zero(), |bs| bs[ch]);
        for (t, out) in yr.iter_mut().enumerate() {
            let mut acc = b0;
            // taps j < K-1-t would read before time 0, i.e. the zero padding: skip them
            for j in k.saturating_sub(t + 1)..k {
                acc += wr[j] * xr[t + j + 1 - k];
            }
            *out = acc;
        }
    };
    if b * c * l * k < PAR_MIN {
        y.chunks_mut(l).enumerate().for_each(row);
    } else {
        y.par_chunks_mut(l).enumerate().for_each(row);
    }
    y
}

/// Backward pass: `(dx, dw, db)` with the shapes of `x`, `w` and `(C)`, from the saved
/// `x`, `w` and the upstream gradient `dy` (`(B, C, L)`, contiguous). `db` is cheap and
/// always returned; the op drops it when there was no bias.
pub fn conv1d_causal_backward<T: Elem>(
    x: &[T],
    w: &[T],
    dy: &[T],
    b: usize,
    c: usize,
    l: usize,
    k: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    debug_assert_eq!(x.len(), b * c * l);
    debug_assert_eq!(dy.len(), b * c * l);
    debug_assert_eq!(w.len(), c * k);
    let mut dx = vec![T::zero(); b * c * l];
    let mut dw = vec![T::zero(); c * k];
    let mut db = vec![T::zero(); c];
    if dx.is_empty() || k == 0 {
        return (dx, dw, db); // nothing flowed (k == 0 is refused by the op)
    }
    let parallel = b * c * l * k >= PAR_MIN;

    // dx: one (b, c) row at a time.
    let dx_row = |(r, dxr): (usize, &mut [T])| {
        let ch = r % c;
        let (gr, wr) = (&dy[r * l..(r + 1) * l], &w[ch * k..(ch + 1) * k]);
        for (s, out) in dxr.iter_mut().enumerate() {
            let mut acc = T::zero();
            // tap j carried x[s] to output t = s + k-1-j, which exists only while t < l
            for j in (s + k).saturating_sub(l)..k {
                acc += wr[j] * gr[s + k - 1 - j];
            }
            *out = acc;
        }
    };
    // dw, db: one channel at a time, summing over the batch and time.
    let dw_channel = |(ch, (dwc, dbc)): (usize, (&mut [T], &mut T))| {
        let mut acc = vec![0.0f64; k];
        let mut acc_b = 0.0f64;
        for bi in 0..b {
            let r = bi * c + ch;
            let (xr, gr) = (&x[r * l..(r + 1) * l], &dy[r * l..(r + 1) * l]);
            for (t, &g) in gr.iter().enumerate() {
                let g = g.as_f64();
                acc_b += g;
                for (j, a) in acc.iter_mut().enumerate().skip(k.saturating_sub(t + 1)) {
                    *a += g * xr[t + j + 1 - k].as_f64();
                }
            }
        }
        dwc.iter_mut().zip(acc).for_each(|(o, a)| *o = T::cast(a));
        *dbc = T::cast(acc_b);
    };
    if parallel {
        dx.par_chunks_mut(l).enumerate().for_each(dx_row);
        dw.par_chunks_mut(k).zip(db.par_iter_mut()).enumerate().for_each(dw_channel);
    } else {
        dx.chunks_mut(l).enumerate().for_each(dx_row);
        dw.chunks_mut(k).zip(db.iter_mut()).enumerate().for_each(dw_channel);
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y[b,c,t] straight from the definition, with an explicit zero-padding check.
    fn naive_forward(x: &[f64], w: &[f64], bias: Option<&[f64]>, b: usize, c: usize, l: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0.0; b * c * l];
        for bi in 0..b {
            for ch in 0..c {
                for t in 0..l {
                    let mut acc = bias.map_or(0.0, |bs| bs[ch]);
                    for j in 0..k {
                        let s = t as isize - (k as isize - 1) + j as isize;
                        if s >= 0 {
                            acc += w[ch * k + j] * x[(bi * c + ch) * l + s as usize];
                        }
                    }
                    y[(bi * c + ch) * l + t] = acc;
                }
            }
        }
        y
    }

    /// The adjoint by scattering: every (output, tap) pair sends its gradient back.
    fn naive_backward(
        x: &[f64],
        w: &[f64],
        dy: &[f64],
        b: usize,
        c: usize,
        l: usize,
        k: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut dx, mut dw, mut db) = (vec![0.0; b * c * l], vec![0.0; c * k], vec![0.0; c]);
        for bi in 0..b {
            for ch in 0..c {
                let r = (bi * c + ch) * l;
                for t in 0..l {
                    db[ch] += dy[r + t];
                    for j in 0..k {
                        let s = t as isize - (k as isize - 1) + j as isize;
                        if s >= 0 {
                            dx[r + s as usize] += w[ch * k + j] * dy[r + t];
                            dw[ch * k + j] += dy[r + t] * x[r + s as usize];
                        }
                    }
                }
            }
        }
        (dx, dw, db)
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::Rng::new(seed);
        (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn matches_the_definition_for_many_shapes() {
        // K > L, K == L, K == 1, and a shape big enough for the parallel path
        for &(b, c, l, k) in &[(2, 3, 7, 4), (1, 2, 3, 5), (2, 2, 4, 4), (3, 1, 5, 1), (4, 64, 40, 4)] {
            let (x, w, bias, dy) = (values(b * c * l, 1), values(c * k, 2), values(c, 3), values(b * c * l, 4));
            for bias in [None, Some(bias.as_slice())] {
                close(
                    &conv1d_causal_forward(&x, &w, bias, b, c, l, k),
                    &naive_forward(&x, &w, bias, b, c, l, k),
                    1e-12,
                );
            }
            let (dx, dw, db) = conv1d_causal_backward(&x, &w, &dy, b, c, l, k);
            let (ndx, ndw, ndb) = naive_backward(&x, &w, &dy, b, c, l, k);
            close(&dx, &ndx, 1e-12);
            close(&dw, &ndw, 1e-12);
            close(&db, &ndb, 1e-12);
        }
    }

    #[test]
    fn is_causal_and_a_shifted_filter() {
        // a one-hot filter at tap j delays the signal by K-1-j steps
        let x = [1.0f64, 2.0, 3.0, 4.0];
        assert_eq!(conv1d_causal_forward(&x, &[0.0, 1.0, 0.0], None, 1, 1, 4, 3), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            conv1d_causal_forward(&x, &[0.0, 0.0, 0.0, 1.0], Some(&[0.5]), 1, 1, 4, 4),
            vec![1.5, 2.5, 3.5, 4.5]
        );
        assert_eq!(conv1d_causal_forward(&x, &[1.0, 0.0, 0.0, 0.0], None, 1, 1, 4, 4), vec![0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn f32_kernel_tracks_f64() {
        let (b, c, l, k) = (2, 48, 96, 4);
        let (x, w, dy) = (values(b * c * l, 5), values(c * k, 6), values(b * c * l, 7));
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let y = conv1d_causal_forward(&f(&x), &f(&w), None, b, c, l, k);
        close(&wide(&y), &naive_forward(&x, &w, None, b, c, l, k), 1e-5);
        let (dx, dw, db) = conv1d_causal_backward(&f(&x), &f(&w), &f(&dy), b, c, l, k);
        let (ndx, ndw, ndb) = naive_backward(&x, &w, &dy, b, c, l, k);
        close(&wide(&dx), &ndx, 1e-5);
        close(&wide(&dw), &ndw, 1e-4);
        close(&wide(&db), &ndb, 1e-4);
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        assert!(conv1d_causal_forward::<f32>(&[], &[1.0; 8], None, 2, 2, 0, 4).is_empty());
        let (dx, dw, db) = conv1d_causal_backward::<f32>(&[], &[1.0; 8], &[], 0, 2, 5, 4);
        assert_eq!((dx.len(), dw, db), (0, vec![0.0; 8], vec![0.0; 2]));
        assert_eq!(conv1d_causal_forward::<f32>(&[1.0; 3], &[], Some(&[2.0]), 1, 1, 3, 0), vec![2.0; 3]);
    }
}
