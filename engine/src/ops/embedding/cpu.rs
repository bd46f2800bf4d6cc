//! Row gather and its adjoint, scatter-add (the embedding lookup).
//!
//! `w` is a `(V, D)` table, contiguous; `ids` are `N` row indices, already checked to be
//! `< V` by the op.
//!
//! ```text
//! gather:       y[n, :]       = w[ids[n], :]              y is (N, D)
//! scatter-add:  dw[v, :]      = sum_{n : ids[n] = v} dy[n, :]     dw is (V, D)
//! ```
//!
//! A repeated id sends one gradient per occurrence, and they must all add up: two
//! threads adding into the same row at once would lose updates. So the backward
//! splits the *vocabulary* into ranges, one per task; every task scans all ids and adds
//! only the rows it owns. Each row then receives its terms in the order of `ids`, as the
//! sequential loop would, so the result does not depend on the thread count.

use crate::cpu::PAR_MIN;
use crate::dtype::Elem;
use rayon::prelude::*;

/// Gather rows: `y[n*d..(n+1)*d] = w[ids[n]*d..(ids[n]+1)*d]`. Every id must be `< w.len() / d`.
pub fn embedding_forward<T: Elem>(w: &[T], d: usize, ids: &[usize]) -> Vec<T> {
    let mut y = vec![T::zero(); ids.len() * d];
    if y.is_empty() {
        return y;
    }
    let row = |(yr, &id): (&mut [T], &usize)| yr.copy_from_slice(&w[id * d..(id + 1) * d]);
    if y.len() < PAR_MIN {
        y.chunks_mut(d).zip(ids).for_each(row);
    } else {
        y.par_chunks_mut(d).zip(ids).for_each(row);
    }
    y
}

/// Scatter-add (`index_add`): a zero `(v, d)` gradient with row `ids[n]` increased by
/// `dy[n*d..(n+1)*d]` for every `n`. `dy.len()` must be `ids.len() * d`, every id `< v`.
pub fn embedding_backward<T: Elem>(dy: &[T], ids: &[usize], v: usize, d: usize) -> Vec<T> {
    debug_assert_eq!(dy.len(), ids.len() * d);
    let mut dw = vec![T::zero(); v * d];
    if dw.is_empty() {
        return dw;
    }
    // Add the gradient rows whose id falls in `first..first + part.len()/d` into `part`.
    let add_range = |(p, part): (usize, &mut [T]), rows_per_part: usize| {
        let first = p * rows_per_part;
        let owned = first..first + part.len() / d;
        for (n, &id) in ids.iter().enumerate() {
            if owned.contains(&id) {
                let dst = &mut part[(id - first) * d..(id - first + 1) * d];
                dst.iter_mut().zip(&dy[n * d..(n + 1) * d]).for_each(|(a, &g)| *a += g);
            }
        }
    };
    if dy.len() < PAR_MIN {
        add_range((0, &mut dw), v);
    } else {
        // A few ranges per thread balance ids that crowd into part of the vocabulary.
        let rows_per_part = v.div_ceil(4 * rayon::current_num_threads()).max(1);
        dw.par_chunks_mut(rows_per_part * d).enumerate().for_each(|pc| add_range(pc, rows_per_part));
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows() {
        let w: Vec<f64> = (0..12).map(|i| i as f64).collect(); // (4, 3)
        assert_eq!(embedding_forward(&w, 3, &[2, 0, 2]), vec![6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0]);
        assert!(embedding_forward(&w, 3, &[]).is_empty());
        assert!(embedding_forward::<f64>(&[], 0, &[1, 2]).is_empty());
    }

    #[test]
    fn repeated_ids_accumulate() {
        let dy = [1.0f64, 2.0, 10.0, 20.0, 100.0, 200.0]; // three rows of D = 2
        assert_eq!(embedding_backward(&dy, &[1, 3, 1], 4, 2), vec![0.0, 0.0, 101.0, 202.0, 0.0, 0.0, 10.0, 20.0]);
        assert_eq!(embedding_backward::<f32>(&[], &[], 2, 3), vec![0.0; 6]);
    }

    #[test]
    fn parallel_scatter_matches_the_sequential_loop() {
        // Many repeats of a few ids, plus ids at both ends of the vocabulary.
        let (v, d, n) = (37, 64, 1500); // n * d > PAR_MIN
        let mut rng = crate::Rng::new(3);
        let mut ids: Vec<usize> = (0..n).map(|_| rng.below(5) * 7).collect();
        ids[0] = v - 1;
        let dy: Vec<f32> = (0..n * d).map(|_| rng.uniform() as f32 - 0.5).collect();
        let mut want = vec![0.0f32; v * d];
        for (i, &id) in ids.iter().enumerate() {
            for j in 0..d {
                want[id * d + j] += dy[i * d + j];
            }
        }
        // same order of additions per row: bit-identical, not just close
        assert_eq!(embedding_backward(&dy, &ids, v, d), want);
        let w: Vec<f32> = (0..v * d).map(|i| i as f32).collect();
        let y = embedding_forward(&w, d, &ids);
        assert!(ids.iter().enumerate().all(|(i, &id)| y[i * d..(i + 1) * d] == w[id * d..(id + 1) * d]));
    }
}
