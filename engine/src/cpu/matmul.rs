//! TEMPORARY naive matmul; being replaced by the blocked kernel.
use crate::dtype::Elem;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatStrides {
    pub batch: usize,
    pub row: usize,
    pub col: usize,
}
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Elem>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    sa: MatStrides,
    bm: &[T],
    sb: MatStrides,
    out: &mut [T],
) {
    for b in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut acc = T::zero();
                for p in 0..k {
                    acc += a[b * sa.batch + i * sa.row + p * sa.col] * bm[b * sb.batch + p * sb.row + j * sb.col];
                }
                out[(b * m + i) * n + j] = acc;
            }
        }
    }
}
