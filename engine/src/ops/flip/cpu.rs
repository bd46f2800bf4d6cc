//! The flip kernel: a contiguous `(outer, n, inner)` block reversed along its middle axis.

use crate::{cpu::PAR_MIN, dtype::Scalar};
use rayon::prelude::*;

/// `y[o, i, j] = x[o, n - 1 - i, j]` for contiguous `x` of `outer * n * inner` elements.
/// Each output run of `inner` elements is one contiguous copy.
pub fn flip<T: Scalar>(x: &[T], (outer, n, inner): (usize, usize, usize)) -> Vec<T> {
    debug_assert_eq!(x.len(), outer * n * inner);
    let mut y = vec![T::default(); x.len()];
    if inner == 0 {
        return y;
    }
    // Output run r = (o, i) reads the input run (o, n - 1 - i).
    let run = |(r, out): (usize, &mut [T])| {
        let (o, i) = (r / n, r % n);
        let src = (o * n + (n - 1 - i)) * inner;
        out.copy_from_slice(&x[src..src + inner]);
    };
    if x.len() < PAR_MIN {
        y.chunks_mut(inner).enumerate().for_each(run);
    } else {
        y.par_chunks_mut(inner).enumerate().for_each(run);
    }
    y
}
