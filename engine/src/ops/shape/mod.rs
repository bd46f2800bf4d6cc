//! Shape ops, all views (no copy, no kernel): reshape of a contiguous tensor, permute,
//! transpose, narrow (slice) and broadcast only rewrite the layout. Their backward
//! ops are the inverse view: reshape back, permute by the inverse permutation, pad
//! the slice with zeros, sum over the broadcast axes. The ops that do copy (contiguous,
//! concat, to_dtype) are in `ops/copy`.

use crate::{
    autograd::record,
    error::{invalid, Error},
    shape::{axis, broadcast_shape, Layout},
    Result, Tensor,
};

impl Tensor {
    /// Same elements, new shape (a view when contiguous, else a copy first).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel = crate::shape::checked_numel("reshape", shape)?;
        if numel != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
                hint: format!("{} elements cannot become {numel}", self.numel()),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let src = self.contiguous()?;
        let mut layout = Layout::contiguous(shape);
        layout.offset = src.layout.offset;
        let out = src.with_layout(layout);
        let in_shape = self.shape().to_vec();
        Ok(record("reshape", out, &[&src], &[], move |g, _, _| Ok(vec![Some(g.reshape(&in_shape)?)])))
    }

    /// Flatten axes `from..=to` into one.
    pub fn flatten(&self, from: isize, to: isize) -> Result<Tensor> {
        let (a, b) = (axis("flatten", self.shape(), from)?, axis("flatten", self.shape(), to)?);
        if a > b {
            return invalid("flatten", format!("start axis {from} comes after end axis {to}"));
        }
        let s = self.shape();
        let mut shape = s[..a].to_vec();
        shape.push(s[a..=b].iter().product());
        shape.extend_from_slice(&s[b + 1..]);
        self.reshape(&shape)
    }

    /// Insert an axis of size 1 at `dim` (0..=rank).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::Rank {
                op: "unsqueeze",
                shape: self.shape().to_vec(),
                expected: format!("an axis in 0..={}, got {dim}", self.rank()),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        self.reshape(&shape)
    }

    /// Remove axis `dim`, which must have size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = axis("squeeze", self.shape(), dim)?;
        if self.shape()[d] != 1 {
            return Err(Error::Rank {
                op: "squeeze",
                shape: self.shape().to_vec(),
                expected: format!("axis {dim} of size 1"),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        self.reshape(&shape)
    }

    /// Reorder axes: output axis `i` is input axis `perm[i]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..self.rank()).collect::<Vec<_>>() {
            return Err(Error::Rank {
                op: "permute",
                shape: self.shape().to_vec(),
                expected: format!("a permutation of 0..{}, got {perm:?}", self.rank()),
            });
        }
        let out = self.with_layout(self.layout.permute(perm));
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(record("permute", out, &[self], &[], move |g, _, _| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    /// Swap two axes (a view).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (axis("transpose", self.shape(), a)?, axis("transpose", self.shape(), b)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Entries `start..start+len` of axis `dim` (a view). Backward pads with zeros.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = axis("narrow", self.shape(), dim)?;
        let size = self.shape()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::Index {
                op: "narrow",
                index: start.saturating_add(len) as i64,
                size,
                what: "slice end",
            });
        }
        let out = self.with_layout(self.layout.narrow(d, start, len));
        let shape = self.shape().to_vec();
        Ok(record("narrow", out, &[self], &[], move |g, _, _| {
            let mut parts = Vec::new();
            let zeros = |n: usize| {
                let mut s = shape.clone();
                s[d] = n;
                Tensor::zeros(&s, g.dtype(), g.device())
            };
            if start > 0 {
                parts.push(zeros(start)?);
            }
            parts.push(g.clone());
            if start + len < size {
                parts.push(zeros(size - start - len)?);
            }
            Ok(vec![Some(Tensor::concat(&parts.iter().collect::<Vec<_>>(), d as isize)?)])
        }))
    }

    /// View as `shape` by repeating size-1 (or missing leading) axes. Backward sums them.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        let target = broadcast_shape("broadcast", self.shape(), shape)?;
        if &target[..] != shape {
            return Err(Error::ShapeMismatch {
                op: "broadcast",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
                hint: "the target must be at least as large in every axis".into(),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let out = self.with_layout(self.layout.broadcast_as(shape));
        let in_shape = self.shape().to_vec();
        Ok(record("broadcast", out, &[self], &[], move |g, _, _| Ok(vec![Some(g.sum_to_shape(&in_shape)?)])))
    }

    /// Split `dim` into consecutive pieces of the given sizes (views).
    pub fn split(&self, sizes: &[usize], dim: isize) -> Result<Vec<Tensor>> {
        let d = axis("split", self.shape(), dim)?;
        if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(self.shape()[d]) {
            return invalid("split", format!("sizes {sizes:?} do not add up to axis {d} of shape {:?}", self.shape()));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let t = self.narrow(dim, start, n);
                start += n;
                t
            })
            .collect()
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["reshape", "permute", "narrow", "broadcast"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    reshape: tol TIGHT, exercises ["reshape"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].reshape(&[4, 6])?.tanh();
    reshape_of_transposed: tol TIGHT, exercises ["reshape", "copy"],
        inputs |r| vec![rn(&[3, 4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.reshape(&[2, 6])?.sqr()?.tanh();
    permute: tol TIGHT, exercises ["permute"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[4, 2, 3], r)],
        f |x| x[0].permute(&[2, 0, 1])?.mul(&x[1]);
    transpose: tol TIGHT, exercises ["permute"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[4, 3, 2], r)],
        f |x| x[0].transpose(0, 2)?.mul(&x[1]);
    narrow: tol TIGHT, exercises ["narrow"],
        inputs |r| vec![rn(&[2, 5, 3], r)],
        f |x| x[0].narrow(1, 1, 3)?.exp();
    split: tol TIGHT, exercises ["narrow"],
        inputs |r| vec![rn(&[2, 6], r)],
        f |x| {
            let p = x[0].split(&[1, 3, 2], 1)?;
            p[1].mul(&p[0])?.add(&p[2].sum(&[1], true)?)
        };
    broadcast_as: tol TIGHT, exercises ["broadcast"],
        inputs |r| vec![rn(&[3, 1], r), rn(&[4], r), rn(&[2, 3, 4], r)],
        f |x| x[0].broadcast_as(&[2, 3, 4])?.mul(&x[2])?.add(&x[1].broadcast_as(&[2, 3, 4])?);
}
