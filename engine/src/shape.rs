//! Shapes and strided layouts.
//!
//! A tensor is a window onto a flat buffer: element `[i0, i1, ..]` lives at
//! `offset + i0*strides[0] + i1*strides[1] + ..`. Transpose, permute, slice and
//! broadcast only change `(shape, strides, offset)` — no data moves. A stride of 0
//! repeats an element (broadcasting). Kernels walk a layout row by row: a "row" is
//! the last dimension, whose elements are `strides[rank-1]` apart.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// Dimensions or strides; six fit inline, which covers every tensor in this project.
pub type Dims = SmallVec<[usize; 6]>;

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Dims {
    let mut strides: Dims = SmallVec::from_elem(1, shape.len());
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The shape two operands broadcast to (numpy rules: align on the right; a dim of 1 stretches).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Dims> {
    let rank = a.len().max(b.len());
    let mut out: Dims = SmallVec::from_elem(1, rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                    hint: format!(
                        "dim {i} (from the right: {}) is {da} vs {db}; broadcasting needs equal sizes or 1",
                        rank - i
                    ),
                })
            }
        };
    }
    Ok(out)
}

/// The number of elements of `shape`, or an error naming `op` if it overflows.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::Invalid { op, msg: format!("shape {shape:?} has more elements than fit in memory") })
}

/// Turn a possibly negative axis into an index, or say why not.
pub fn axis(op: &'static str, shape: &[usize], axis: isize) -> Result<usize> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(Error::Rank {
            op,
            shape: shape.to_vec(),
            expected: format!("an axis in -{rank}..{rank}, got {axis}"),
        });
    }
    Ok(a as usize)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: Dims,
    pub strides: Dims,
    pub offset: usize,
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout { shape: shape.into(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements sit in row-major order with no gaps (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The axes from the largest stride to the smallest when the elements fill a block of
    /// memory with no gaps in some axis order (a transpose or permutation of a contiguous
    /// tensor): then `self.permute(order)` is contiguous. None when there are gaps or overlaps.
    /// Size-1 axes go first, in index order (their stride is arbitrary).
    pub fn memory_order(&self) -> Option<Vec<usize>> {
        let (ones, mut order): (Vec<usize>, Vec<usize>) = (0..self.shape.len()).partition(|&a| self.shape[a] == 1);
        order.sort_by_key(|&a| std::cmp::Reverse(self.strides[a]));
        let mut expected = 1;
        for &a in order.iter().rev() {
            if self.strides[a] != expected {
                return None;
            }
            expected *= self.shape[a];
        }
        Some(ones.into_iter().chain(order).collect())
    }

    /// Length of a row (the last dimension; 1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Distance between consecutive elements of a row.
    pub fn row_stride(&self) -> usize {
        self.strides.last().copied().unwrap_or(1)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        if self.row_len() == 0 {
            0
        } else {
            self.numel() / self.row_len()
        }
    }

    /// Offset of the first element of row `r` (rows counted in row-major order).
    pub fn row_offset(&self, mut r: usize) -> usize {
        let mut off = self.offset;
        let rank = self.shape.len();
        for i in (0..rank.saturating_sub(1)).rev() {
            let d = self.shape[i];
            off += (r % d) * self.strides[i];
            r /= d;
        }
        off
    }

    /// Index one past the last element this layout can touch (for bounds checks).
    pub fn max_offset(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Swap two axes (a view).
    pub fn transpose(&self, a: usize, b: usize) -> Layout {
        let mut l = self.clone();
        l.shape.swap(a, b);
        l.strides.swap(a, b);
        l
    }

    /// Reorder axes: new axis `i` is old axis `perm[i]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// Keep `len` entries of axis `dim` starting at `start` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        l
    }

    /// Stretch to `shape` by giving broadcast axes stride 0 (a view). The caller checked compatibility.
    pub fn broadcast_as(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.shape.len();
        let mut strides: Dims = SmallVec::from_elem(0, shape.len());
        for i in 0..self.shape.len() {
            if self.shape[i] == shape[i + extra] {
                strides[i + extra] = self.strides[i];
            }
        }
        Layout { shape: shape.into(), strides, offset: self.offset }
    }

    /// Calls `f(i, offset)` for every element in row-major order.
    pub fn for_each_offset(&self, mut f: impl FnMut(usize, usize)) {
        let (n, s) = (self.row_len(), self.row_stride());
        for r in 0..self.rows() {
            let base = self.row_offset(r);
            for j in 0..n {
                f(r * n + j, base + j * s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape("t", &[2, 1, 4], &[3, 1]).unwrap().to_vec(), vec![2, 3, 4]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
    }

    #[test]
    fn memory_order_finds_permutations_of_a_block_and_only_those() {
        let l = Layout::contiguous(&[2, 3, 4]);
        assert_eq!(l.memory_order(), Some(vec![0, 1, 2]));
        let p = l.permute(&[2, 0, 1]); // (4, 2, 3), strides (1, 12, 4)
        let order = p.memory_order().unwrap();
        assert_eq!(order, vec![1, 2, 0]);
        assert!(p.permute(&order).is_contiguous());
        assert_eq!(l.narrow(2, 0, 3).transpose(0, 2).memory_order(), None); // a gap every row
        assert_eq!(l.broadcast_as(&[5, 2, 3, 4]).memory_order(), None); // stride 0: overlaps
        let one = Layout::contiguous(&[3, 1, 2]).transpose(0, 2); // (2, 1, 3): the size-1 axis first
        assert_eq!(one.memory_order(), Some(vec![1, 2, 0]));
    }

    #[test]
    fn views_address_the_right_elements() {
        // a 2x3 matrix [[0,1,2],[3,4,5]] transposed is [[0,3],[1,4],[2,5]]
        let t = Layout::contiguous(&[2, 3]).transpose(0, 1);
        let mut seen = vec![];
        t.for_each_offset(|_, o| seen.push(o));
        assert_eq!(seen, vec![0, 3, 1, 4, 2, 5]);
        assert!(!t.is_contiguous());
        let n = Layout::contiguous(&[2, 3]).narrow(1, 1, 2);
        let mut seen = vec![];
        n.for_each_offset(|_, o| seen.push(o));
        assert_eq!(seen, vec![1, 2, 4, 5]);
        let b = Layout::contiguous(&[3]).broadcast_as(&[2, 3]);
        let mut seen = vec![];
        b.for_each_offset(|_, o| seen.push(o));
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2]);
    }
}
