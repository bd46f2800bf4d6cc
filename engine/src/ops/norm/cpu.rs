//! RMSNorm kernels on contiguous rows.
//!
//! `x` is `rows` rows of `d` values each (row-major), `w` holds `d` gains. Per row:
//!
//! ```text
//! rstd   = 1 / sqrt(mean_j x_j^2 + eps)
//! y_i    = x_i * rstd * w_i
//! ```
//!
//! Backward, for one row with upstream gradient `dy`:
//!
//! ```text
//! dx_i = rstd * w_i dy_i - x_i * rstd^3 * mean_j(w_j dy_j x_j)
//! dw_i = sum over rows of dy_i * x_i * rstd
//! ```
//!
//! The second term of `dx` comes from `rstd` depending on every `x_j`:
//! `d rstd / d x_k = -rstd^3 x_k / d`. Sums over a row accumulate in f64, so the f32
//! kernel loses nothing to long rows.

use crate::cpu::PAR_MIN;
use crate::dtype::Elem;
use rayon::prelude::*;

/// Forward pass: returns `(y, rstd)` with `y` shaped like `x` and one `rstd` per row.
/// `x.len()` must be `rows * d` and `w.len()` must be `d` (the op checks shapes).
pub fn rms_norm_forward<T: Elem>(x: &[T], w: &[T], rows: usize, d: usize, eps: f64) -> (Vec<T>, Vec<T>) {
    debug_assert_eq!(x.len(), rows * d);
    debug_assert_eq!(w.len(), d);
    let mut y = vec![T::zero(); rows * d];
    let mut rstd = vec![T::zero(); rows];
    if d == 0 {
        return (y, rstd); // no values to normalise (the op refuses this case anyway)
    }
    let row = |((yr, r), xr): ((&mut [T], &mut T), &[T])| {
        let ms = xr.iter().map(|&v| v.as_f64() * v.as_f64()).sum::<f64>() / d as f64;
        let rs = 1.0 / (ms + eps).sqrt();
        *r = T::cast(rs);
        let rs = T::cast(rs);
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *o = v * rs * g;
        }
    };
    if rows * d < PAR_MIN {
        y.chunks_mut(d).zip(rstd.iter_mut()).zip(x.chunks(d)).for_each(row);
    } else {
        y.par_chunks_mut(d).zip(rstd.par_iter_mut()).zip(x.par_chunks(d)).for_each(row);
    }
    (y, rstd)
}

/// Backward pass: returns `(dx, dw)` (shapes of `x` and `w`) given the saved `rstd`
/// (one per row) and the upstream gradient `dy` (shaped like `x`, contiguous).
///
/// `dx` rows are independent and written in parallel. `dw` is a sum over rows, so each
/// block of rows adds into its own partial `dw` (no two threads write one value) and
/// the partials are then added in block order. The blocking depends only on the shape,
/// so the result is the same on any number of threads.
pub fn rms_norm_backward<T: Elem>(x: &[T], w: &[T], rstd: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (rows, d) = (rstd.len(), w.len());
    debug_assert_eq!(x.len(), rows * d);
    debug_assert_eq!(dy.len(), rows * d);
    let mut dx = vec![T::zero(); rows * d];
    if rows * d == 0 {
        return (dx, vec![T::zero(); d]);
    }
    // Enough rows per block to amortise a partial, and at most 64 partials in total.
    let block_rows = (PAR_MIN / d).max(rows.div_ceil(64)).max(1);
    let block = |(b, dxb): (usize, &mut [T])| -> Vec<f64> {
        let mut dw = vec![0.0f64; d];
        for (i, dxr) in dxb.chunks_mut(d).enumerate() {
            let r = b * block_rows + i;
            let (xr, dyr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
            let rs = rstd[r].as_f64();
            // mean_j(w_j dy_j x_j): the coupling through rstd
            let dot = (0..d).map(|j| w[j].as_f64() * dyr[j].as_f64() * xr[j].as_f64()).sum::<f64>() / d as f64;
            let coef = rs * rs * rs * dot;
            for j in 0..d {
                let (xv, g) = (xr[j].as_f64(), dyr[j].as_f64());
                dxr[j] = T::cast(rs * w[j].as_f64() * g - xv * coef);
                dw[j] += g * xv * rs;
            }
        }
        dw
    };
    let partials: Vec<Vec<f64>> = if rows * d < PAR_MIN {
        dx.chunks_mut(block_rows * d).enumerate().map(block).collect()
    } else {
        dx.par_chunks_mut(block_rows * d).enumerate().map(block).collect()
    };
    let mut dw = vec![0.0f64; d];
    for p in &partials {
        dw.iter_mut().zip(p).for_each(|(a, &b)| *a += b);
    }
    (dx, dw.into_iter().map(T::cast).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formulas above, written out element by element in f64.
    fn naive_forward(x: &[f64], w: &[f64], rows: usize, d: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; rows * d];
        let mut rstd = vec![0.0; rows];
        for r in 0..rows {
            let ms: f64 = (0..d).map(|j| x[r * d + j].powi(2)).sum::<f64>() / d as f64;
            rstd[r] = 1.0 / (ms + eps).sqrt();
            for j in 0..d {
                y[r * d + j] = x[r * d + j] * rstd[r] * w[j];
            }
        }
        (y, rstd)
    }

    fn naive_backward(x: &[f64], w: &[f64], rstd: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (rows, d) = (rstd.len(), w.len());
        let mut dx = vec![0.0; rows * d];
        let mut dw = vec![0.0; d];
        for r in 0..rows {
            let m: f64 = (0..d).map(|j| w[j] * dy[r * d + j] * x[r * d + j]).sum::<f64>() / d as f64;
            for i in 0..d {
                let k = r * d + i;
                dx[k] = rstd[r] * w[i] * dy[k] - x[k] * rstd[r].powi(3) * m;
                dw[i] += dy[k] * x[k] * rstd[r];
            }
        }
        (dx, dw)
    }

    /// Deterministic values in [-2, 2) that are not all alike.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::Rng::new(seed);
        (0..n).map(|_| 4.0 * rng.uniform() - 2.0).collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn forward_and_backward_match_the_formulas() {
        // small (sequential) and large (parallel, several dw blocks) shapes
        for &(rows, d) in &[(3, 5), (1, 1), (700, 96)] {
            let (x, w, dy) = (values(rows * d, 1), values(d, 2), values(rows * d, 3));
            let (y, rstd) = rms_norm_forward(&x, &w, rows, d, 1e-5);
            let (ny, nr) = naive_forward(&x, &w, rows, d, 1e-5);
            close(&y, &ny, 1e-12);
            close(&rstd, &nr, 1e-12);
            let (dx, dw) = rms_norm_backward(&x, &w, &rstd, &dy);
            let (ndx, ndw) = naive_backward(&x, &w, &nr, &dy);
            close(&dx, &ndx, 1e-12);
            close(&dw, &ndw, 1e-10);
        }
    }

    #[test]
    fn f32_kernel_tracks_f64() {
        let (rows, d) = (400, 100); // above PAR_MIN: the parallel path
        let (x, w, dy) = (values(rows * d, 4), values(d, 5), values(rows * d, 6));
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        let (y, rstd) = rms_norm_forward(&f(&x), &f(&w), rows, d, 1e-6);
        let (dx, dw) = rms_norm_backward(&f(&x), &f(&w), &rstd, &f(&dy));
        let (ny, nr) = naive_forward(&x, &w, rows, d, 1e-6);
        let (ndx, ndw) = naive_backward(&x, &w, &nr, &dy);
        close(&wide(y), &ny, 1e-5);
        close(&wide(dx), &ndx, 1e-5);
        close(&wide(dw), &ndw, 1e-4);
    }

    #[test]
    fn zero_rows_stay_finite_thanks_to_eps() {
        let (y, rstd) = rms_norm_forward(&[0.0f64; 4], &[1.0; 4], 1, 4, 1e-6);
        assert_eq!(y, vec![0.0; 4]);
        assert!((rstd[0] - 1e3).abs() < 1e-9);
        let (dx, dw) = rms_norm_backward(&[0.0f64; 4], &[1.0; 4], &rstd, &[1.0; 4]);
        assert!(dx.iter().all(|v| (v - 1e3).abs() < 1e-9), "{dx:?}");
        assert_eq!(dw, vec![0.0; 4]);
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        assert_eq!(rms_norm_forward::<f32>(&[], &[], 3, 0, 1e-5), (vec![], vec![0.0; 3]));
        assert_eq!(rms_norm_backward::<f32>(&[], &[1.0, 2.0], &[], &[]), (vec![], vec![0.0; 2]));
    }
}
