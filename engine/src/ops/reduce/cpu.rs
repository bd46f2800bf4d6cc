//! Reductions over a set of axes. The output keeps every axis (reduced ones become 1),
//! so a caller can broadcast it straight back against the input.
//!
//! For output element `o`, the kernel walks the sub-layout spanned by the reduced axes,
//! starting at the offset of `o`'s kept indices. Sums accumulate in f64.

use crate::cpu::PAR_MIN;
use crate::{dtype::Elem, shape::Layout};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// Reduce `x` (viewed through `layout`) over `axes` (sorted, unique, in range).
pub fn reduce<T: Elem>(op: ReduceOp, x: &[T], layout: &Layout, axes: &[usize]) -> Vec<T> {
    let rank = layout.shape.len();
    let reduced = |i: usize| axes.contains(&i);
    // Kept axes indexed like the output; reduced axes form the inner walk.
    let kept = Layout {
        shape: (0..rank).map(|i| if reduced(i) { 1 } else { layout.shape[i] }).collect(),
        strides: layout.strides.clone(),
        offset: layout.offset,
    };
    let inner_shape: Vec<usize> = axes.iter().map(|&a| layout.shape[a]).collect();
    let inner_strides: Vec<usize> = axes.iter().map(|&a| layout.strides[a]).collect();
    let n_out = kept.numel();
    let inner_n: usize = inner_shape.iter().product();
    let one = |o: usize| -> T {
        let inner = Layout {
            shape: inner_shape.as_slice().into(),
            strides: inner_strides.as_slice().into(),
            offset: element_offset(&kept, o),
        };
        match op {
            ReduceOp::Sum => {
                let mut acc = 0.0f64;
                inner.for_each_offset(|_, off| acc += x[off].as_f64());
                T::cast(acc)
            }
            ReduceOp::Max => {
                let mut acc = T::neg_infinity();
                // a NaN wins (as in PyTorch): `Float::max` would skip it
                inner.for_each_offset(|_, off| {
                    if x[off].is_nan() || x[off] > acc {
                        acc = x[off];
                    }
                });
                acc
            }
        }
    };
    if n_out * inner_n < PAR_MIN {
        (0..n_out).map(one).collect()
    } else {
        (0..n_out).into_par_iter().map(one).collect()
    }
}

/// Offset of the `i`-th element (row-major) of `layout`.
fn element_offset(layout: &Layout, mut i: usize) -> usize {
    let mut off = layout.offset;
    for d in (0..layout.shape.len()).rev() {
        off += (i % layout.shape[d]) * layout.strides[d];
        i /= layout.shape[d];
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_propagates_nan() {
        let x = [f64::NAN, 1.0, 2.0, 3.0];
        let r = reduce(ReduceOp::Max, &x, &Layout::contiguous(&[2, 2]), &[1]);
        assert!(r[0].is_nan() && r[1] == 3.0, "{r:?}");
    }

    #[test]
    fn sums_and_maxes_over_any_axes() {
        // [[0,1,2],[3,4,5]]
        let x: Vec<f64> = (0..6).map(|i| i as f64).collect();
        let l = Layout::contiguous(&[2, 3]);
        assert_eq!(reduce(ReduceOp::Sum, &x, &l, &[0]), vec![3.0, 5.0, 7.0]);
        assert_eq!(reduce(ReduceOp::Sum, &x, &l, &[1]), vec![3.0, 12.0]);
        assert_eq!(reduce(ReduceOp::Sum, &x, &l, &[0, 1]), vec![15.0]);
        assert_eq!(reduce(ReduceOp::Max, &x, &l.transpose(0, 1), &[1]), vec![3.0, 4.0, 5.0]);
    }
}
