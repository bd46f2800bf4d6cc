//! Log-softmax and cross-entropy kernels over the last axis.
//!
//! Every kernel here sees its input as `N` contiguous rows of `V` values (`x.len() == N * V`,
//! the op made the input contiguous first) and works on each row independently, so rows are
//! spread over threads once the tensor is large enough.
//!
//! Stability: `exp(x)` overflows f32 at x ≈ 88 and f64 at x ≈ 709, so no kernel ever
//! exponentiates a raw logit. Each row is shifted by its max `m` first:
//!
//! ```text
//! logsumexp(x) = m + ln Σ_j exp(x_j - m),    m = max_j x_j
//! ```
//!
//! Every `x_j - m <= 0`, so each exponential lies in (0, 1] and the sum in [1, V].
//! Sums are accumulated in f64 whatever the element type.

use crate::cpu::PAR_MIN;
use crate::dtype::Elem;
use rayon::prelude::*;

/// Row max `m` and `ln Σ_j exp(x_j - m)`; their sum is the row's logsumexp.
/// Kept apart so log-softmax can form `(x_j - m) - ln Σ` without a large intermediate.
#[inline]
fn max_and_log_sum<T: Elem>(row: &[T]) -> (T, f64) {
    let m = row.iter().copied().fold(T::neg_infinity(), T::max);
    let sum: f64 = row.iter().map(|&x| (x - m).exp().as_f64()).sum();
    (m, sum.ln())
}

/// Apply `f(row_in, row_out)` to every row of length `v`, on several threads when large.
fn for_each_row<T: Elem>(x: &[T], out: &mut [T], v: usize, f: impl Fn(usize, &[T], &mut [T]) + Sync + Send) {
    if v == 0 {
        return; // no elements; chunks of size 0 are not allowed
    }
    if x.len() < PAR_MIN {
        out.chunks_mut(v).zip(x.chunks(v)).enumerate().for_each(|(r, (o, x))| f(r, x, o));
    } else {
        out.par_chunks_mut(v).zip(x.par_chunks(v)).enumerate().for_each(|(r, (o, x))| f(r, x, o));
    }
}

/// Log-softmax of each row of `x` (`N` rows of `v` values, row-major) → same shape.
///
/// ```text
/// y_j = x_j - logsumexp(x) = (x_j - m) - ln Σ_k exp(x_k - m)
/// ```
///
/// Grouping it as `(x_j - m) - ln Σ` keeps both terms small, so the result is accurate even
/// when the logits themselves are huge (≈1e4).
pub fn log_softmax_forward<T: Elem>(x: &[T], v: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    for_each_row(x, &mut y, v, |_, x, y| {
        let (m, log_sum) = max_and_log_sum(x);
        let log_sum = T::cast(log_sum);
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x - m) - log_sum);
    });
    y
}

/// Gradient of log-softmax from its output `y` and the incoming gradient `dy` (both `N × v`).
///
/// With `p = softmax(x) = exp(y)`, the Jacobian is `∂y_j/∂x_i = δ_ij - p_i`, so
///
/// ```text
/// dx_i = Σ_j dy_j (δ_ij - p_i) = dy_i - exp(y_i) Σ_j dy_j
/// ```
///
/// One pass for the row sum (in f64), one pass to write `dx`; no `N × V` temporaries.
pub fn log_softmax_backward<T: Elem>(y: &[T], dy: &[T], v: usize) -> Vec<T> {
    debug_assert_eq!(y.len(), dy.len());
    let mut dx = vec![T::zero(); y.len()];
    for_each_row(y, &mut dx, v, |r, y, dx| {
        let dy = &dy[r * v..(r + 1) * v];
        let total = T::cast(dy.iter().map(|g| g.as_f64()).sum::<f64>());
        for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = dy - y.exp() * total;
        }
    });
    dx
}

/// Per-row cross-entropy of logits `x` (`N = targets.len()` rows of `v` values).
///
/// For a row with target `t` (class index in `0..v`):
///
/// ```text
/// lse  = logsumexp(x) = m + ln Σ_j exp(x_j - m)
/// loss = -log_softmax(x)_t = lse - x_t
/// ```
///
/// Returns `(lse, loss)`, each of length `N`: `lse` in the logits' dtype (it is what backward
/// needs), `loss` in f64 so the caller can sum it without rounding. Rows whose target equals
/// `ignore_index` are skipped: both entries are 0 there.
///
/// Precondition (checked by the op, `Tensor::cross_entropy`): every target is `ignore_index`
/// or lies in `0..v`.
pub fn cross_entropy_forward<T: Elem>(x: &[T], v: usize, targets: &[i64], ignore_index: i64) -> (Vec<T>, Vec<f64>) {
    debug_assert_eq!(x.len(), targets.len() * v);
    if v == 0 {
        // No classes: every row must be ignored (the op checked), nothing to compute.
        return (vec![T::zero(); targets.len()], vec![0.0; targets.len()]);
    }
    let row = |(x, &t): (&[T], &i64)| -> (T, f64) {
        if t == ignore_index {
            return (T::zero(), 0.0);
        }
        debug_assert!((0..v as i64).contains(&t), "target {t} outside 0..{v}");
        let (m, log_sum) = max_and_log_sum(x);
        let lse = m.as_f64() + log_sum;
        (T::cast(lse), lse - x[t as usize].as_f64())
    };
    if x.len() < PAR_MIN {
        x.chunks(v).zip(targets).map(row).unzip()
    } else {
        x.par_chunks(v).zip(targets.par_iter()).map(row).unzip()
    }
}

/// Gradient of `scale * Σ_rows loss_row` with respect to the logits (`N × v`).
///
/// ```text
/// ∂loss/∂x_j = softmax(x)_j - [j == t] = exp(x_j - lse) - onehot(t)_j
/// dx_j       = scale * (exp(x_j - lse) - onehot(t)_j)
/// ```
///
/// The op passes `scale = dloss / n_valid` (the mean's gradient). Rows whose target is
/// `ignore_index` get zeros. `lse` is the per-row logsumexp saved by [`cross_entropy_forward`],
/// so softmax is recomputed here instead of being stored (`N` floats saved, not `N × V`).
pub fn cross_entropy_backward<T: Elem>(
    x: &[T],
    v: usize,
    lse: &[T],
    targets: &[i64],
    ignore_index: i64,
    scale: f64,
) -> Vec<T> {
    debug_assert_eq!(x.len(), targets.len() * v);
    let scale = T::cast(scale);
    let mut dx = vec![T::zero(); x.len()];
    for_each_row(x, &mut dx, v, |r, x, dx| {
        let t = targets[r];
        if t == ignore_index {
            return; // already zero
        }
        for (dx, &x) in dx.iter_mut().zip(x) {
            *dx = (x - lse[r]).exp() * scale;
        }
        dx[t as usize] = dx[t as usize] - scale;
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn random(n: usize, std: f64, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| std * rng.normal()).collect()
    }

    /// Textbook softmax of one row, no max shift (fine for small logits).
    fn naive_softmax(row: &[f64]) -> Vec<f64> {
        let total: f64 = row.iter().map(|x| x.exp()).sum();
        row.iter().map(|x| x.exp() / total).collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn log_softmax_matches_the_naive_formula() {
        let (n, v) = (4, 7);
        let x = random(n * v, 2.0, 1);
        let y = log_softmax_forward(&x, v);
        let naive: Vec<f64> = x.chunks(v).flat_map(|r| naive_softmax(r).into_iter().map(f64::ln)).collect();
        close(&y, &naive, 1e-12);
    }

    #[test]
    fn log_softmax_backward_matches_the_jacobian() {
        // dx_i = Σ_j dy_j (δ_ij - p_i), summed over the full Jacobian.
        let (n, v) = (3, 5);
        let x = random(n * v, 1.0, 2);
        let dy = random(n * v, 1.0, 3);
        let dx = log_softmax_backward(&log_softmax_forward(&x, v), &dy, v);
        let mut naive = vec![0.0; n * v];
        for r in 0..n {
            let p = naive_softmax(&x[r * v..(r + 1) * v]);
            for i in 0..v {
                for j in 0..v {
                    let jac = if i == j { 1.0 } else { 0.0 } - p[i];
                    naive[r * v + i] += dy[r * v + j] * jac;
                }
            }
        }
        close(&dx, &naive, 1e-12);
    }

    #[test]
    fn cross_entropy_kernels_match_the_naive_formulas() {
        let (v, ignore) = (6, -100);
        let targets = [2, -100, 0, 5];
        let x = random(targets.len() * v, 1.5, 4);
        let (lse, loss) = cross_entropy_forward(&x, v, &targets, ignore);
        let scale = 0.25;
        let dx = cross_entropy_backward(&x, v, &lse, &targets, ignore, scale);
        for (r, &t) in targets.iter().enumerate() {
            let row = &x[r * v..(r + 1) * v];
            let got = &dx[r * v..(r + 1) * v];
            if t == ignore {
                assert_eq!((lse[r], loss[r]), (0.0, 0.0));
                assert!(got.iter().all(|&g| g == 0.0));
                continue;
            }
            let p = naive_softmax(row);
            assert!((lse[r] - row.iter().map(|x| x.exp()).sum::<f64>().ln()).abs() < 1e-12);
            assert!((loss[r] + p[t as usize].ln()).abs() < 1e-12);
            let want: Vec<f64> =
                p.iter().enumerate().map(|(j, p)| scale * (p - if j == t as usize { 1.0 } else { 0.0 })).collect();
            close(got, &want, 1e-12);
        }
    }

    #[test]
    fn large_logits_do_not_overflow() {
        // Softmax is shift invariant: logits ~1e4 must give what the same logits minus 1e4 give.
        let (v, targets) = (5, [1i64, 4, 0]);
        let small = random(targets.len() * v, 3.0, 5);
        let big: Vec<f64> = small.iter().map(|x| x + 1e4).collect();
        close(&log_softmax_forward(&big, v), &log_softmax_forward(&small, v), 1e-9);
        let (lse_b, loss_b) = cross_entropy_forward(&big, v, &targets, -1);
        let (lse_s, loss_s) = cross_entropy_forward(&small, v, &targets, -1);
        close(&loss_b, &loss_s, 1e-9);
        let dx_b = cross_entropy_backward(&big, v, &lse_b, &targets, -1, 1.0);
        let dx_s = cross_entropy_backward(&small, v, &lse_s, &targets, -1, 1.0);
        close(&dx_b, &dx_s, 1e-9);

        // f32: every value finite; accuracy limited by the f32 spacing at 1e4 (≈1e-3).
        let big32: Vec<f32> = big.iter().map(|&x| x as f32).collect();
        let y32: Vec<f64> = log_softmax_forward(&big32, v).iter().map(|&y| y as f64).collect();
        close(&y32, &log_softmax_forward(&small, v), 2e-3);
        let (lse32, loss32) = cross_entropy_forward(&big32, v, &targets, -1);
        close(&loss32, &loss_s, 2e-3);
        let dx32: Vec<f64> =
            cross_entropy_backward(&big32, v, &lse32, &targets, -1, 1.0).iter().map(|&d| d as f64).collect();
        assert!(dx32.iter().all(|d| d.is_finite()));
        close(&dx32, &dx_s, 2e-3);
    }

    #[test]
    fn parallel_path_matches_the_sequential_one() {
        // N * V above PAR_MIN takes the rayon path; compare it row by row with small calls.
        let (n, v) = (40, 1024);
        assert!(n * v >= PAR_MIN);
        let x = random(n * v, 1.0, 6);
        let dy = random(n * v, 1.0, 7);
        let targets: Vec<i64> = (0..n as i64).map(|r| if r % 7 == 3 { -1 } else { (r * 37) % v as i64 }).collect();
        let y = log_softmax_forward(&x, v);
        let dx = log_softmax_backward(&y, &dy, v);
        let (lse, loss) = cross_entropy_forward(&x, v, &targets, -1);
        let dce = cross_entropy_backward(&x, v, &lse, &targets, -1, 0.5);
        for r in 0..n {
            let s = r * v..(r + 1) * v;
            let t = &targets[r..r + 1];
            assert_eq!(y[s.clone()], log_softmax_forward(&x[s.clone()], v)[..]);
            assert_eq!(dx[s.clone()], log_softmax_backward(&y[s.clone()], &dy[s.clone()], v)[..]);
            let (l1, c1) = cross_entropy_forward(&x[s.clone()], v, t, -1);
            assert_eq!((lse[r], loss[r]), (l1[0], c1[0]));
            assert_eq!(dce[s.clone()], cross_entropy_backward(&x[s], v, &l1, t, -1, 0.5)[..]);
        }
    }

    #[test]
    fn empty_inputs_are_fine() {
        assert!(log_softmax_forward::<f32>(&[], 0).is_empty());
        assert!(log_softmax_forward::<f32>(&[], 3).is_empty());
        assert!(log_softmax_backward::<f64>(&[], &[], 0).is_empty());
        let (lse, loss) = cross_entropy_forward::<f64>(&[], 0, &[-1, -1], -1);
        assert_eq!((lse, loss), (vec![0.0, 0.0], vec![0.0, 0.0]));
        assert!(cross_entropy_backward::<f64>(&[], 0, &[0.0, 0.0], &[-1, -1], -1, 1.0).is_empty());
    }
}
