//! Launchers of `cu/copy.cu`, and [`Strided`], the by-value layout argument of every
//! kernel that reads or writes a view (`cu/strided.cuh` is its CUDA side).

use super::{grid_for, Cost, Gpu, BLOCK};
use cust::error::CudaResult;
use cust::memory::DeviceCopy;
use cust::prelude::*;

/// Most axes a [`Strided`] holds (after merging); `STRIDED_MAX_RANK` in `cu/strided.cuh`.
pub const MAX_RANK: usize = 6;

/// A strided view as kernels take it by value: element `[i0, .., i_{rank-1}]` lives at
/// `offset + sum_d i_d * strides[d]` (in elements; stride 0 repeats an element). Only the
/// first `rank` axes are used. Same layout as `struct Strided` in `cu/strided.cuh`
/// (`int`, then 8-byte aligned `long long`s: 112 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strided {
    pub rank: i32,
    pub offset: i64,
    pub shape: [i64; MAX_RANK],
    pub strides: [i64; MAX_RANK],
}

// SAFETY: plain integers, no pointers; the kernel reads it as the C struct above.
unsafe impl DeviceCopy for Strided {}

impl Strided {
    /// The view `(shape, strides, offset)` with size-1 axes dropped and neighbours that are
    /// contiguous with each other (`strides[i] == strides[i+1] * shape[i+1]`) merged, which
    /// maps each row-major index to the same element with less index math; `None` if more
    /// than [`MAX_RANK`] axes remain. A view with no elements becomes shape `[0]`.
    pub fn new(shape: &[usize], strides: &[usize], offset: usize) -> Option<Strided> {
        assert_eq!(shape.len(), strides.len(), "Strided::new: shape and strides differ in length");
        let mut l = Strided { offset: offset as i64, ..Strided::default() };
        if shape.contains(&0) {
            (l.rank, l.shape[0], l.strides[0]) = (1, 0, 1);
            return Some(l);
        }
        // (size, stride) from the outermost axis in; merge an axis into the previous one when
        // stepping the previous one is the same as running through this one.
        let mut axes: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
        for (&d, &s) in shape.iter().zip(strides).filter(|&(&d, _)| d != 1) {
            match axes.last_mut() {
                Some((pd, ps)) if *ps == s * d => (*pd, *ps) = (*pd * d, s),
                _ => axes.push((d, s)),
            }
        }
        if axes.len() > MAX_RANK {
            return None;
        }
        l.rank = axes.len() as i32;
        for (i, &(d, s)) in axes.iter().enumerate() {
            assert!(d <= i64::MAX as usize && s <= i64::MAX as usize, "Strided::new: size or stride too large");
            (l.shape[i], l.strides[i]) = (d as i64, s as i64);
        }
        Some(l)
    }

    /// A contiguous row-major view of `n` elements from `offset`.
    pub fn contiguous(n: usize, offset: usize) -> Strided {
        Strided::new(&[n], &[1], offset).expect("rank 1")
    }

    fn axes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rank as usize).map(|i| (self.shape[i] as usize, self.strides[i] as usize))
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.axes().map(|(d, _)| d).product()
    }

    /// One past the largest element offset the view touches (its buffer must be at least this long).
    pub fn end(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset as usize + self.axes().map(|(d, s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Distinct elements the view touches, counting a broadcast (stride 0) axis once: the
    /// napkin bytes a kernel reads from DRAM for it.
    pub fn footprint(&self) -> usize {
        self.axes().filter(|&(_, s)| s != 0).map(|(d, _)| d).product()
    }

    /// Whether no two indices map to one element (needed of a view that is written), judged
    /// by stride 0 only: axes that interleave are not detected.
    pub fn writable(&self) -> bool {
        self.axes().all(|(d, s)| s != 0 || d <= 1)
    }
}

/// `n` as the kernels' `long long` element count.
pub(crate) fn check_len(name: &str, n: usize) -> i64 {
    assert!(n <= i64::MAX as usize, "{name}: too many elements");
    n as i64
}

impl Gpu {
    /// `out[i] = x[lx(i)]`: the view `lx` of `x` gathered into contiguous `out` — twin of
    /// `cpu::copy::copy_strided`.
    pub fn copy_strided_f32(&self, x: &DeviceSlice<f32>, lx: Strided, out: &mut DeviceSlice<f32>) -> CudaResult<()> {
        let n = out.len();
        assert_eq!(lx.numel(), n, "copy_strided_f32: view and output sizes differ");
        assert!(lx.end() <= x.len(), "copy_strided_f32: view reaches past the input buffer");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("copy", "copy_strided_f32")?;
        let _timed = self.timed("copy_strided_f32", Cost::f32s(lx.footprint() + n));
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                out.as_device_ptr(), x.as_device_ptr(), lx, check_len("copy_strided_f32", n)
            ))
        }
    }

    /// `dst[ldst(i)] = src[lsrc(i)]` for `i < n` (views of equal shape) — twin of
    /// `cpu::copy::copy_into`; concat writes each piece into a narrowed view of its output.
    /// `ldst` must not repeat an element, and `dst` and `src` must not overlap.
    pub fn copy_into_f32(
        &self,
        dst: &mut DeviceSlice<f32>,
        ldst: Strided,
        src: &DeviceSlice<f32>,
        lsrc: Strided,
        n: usize,
    ) -> CudaResult<()> {
        assert!(ldst.numel() == n && lsrc.numel() == n, "copy_into_f32: view sizes differ from n");
        assert!(ldst.end() <= dst.len() && lsrc.end() <= src.len(), "copy_into_f32: a view reaches past its buffer");
        assert!(ldst.writable(), "copy_into_f32: the destination view repeats elements (stride 0)");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("copy", "copy_into_f32")?;
        let _timed = self.timed("copy_into_f32", Cost::f32s(lsrc.footprint() + n));
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                dst.as_device_ptr(), ldst, src.as_device_ptr(), lsrc, check_len("copy_into_f32", n)
            ))
        }
    }

    /// `out[i] = x[lx(i)] as f64` (contiguous `out`) — twin of `cpu::copy::cast::<f32, f64>`.
    pub fn cast_f32_f64(&self, x: &DeviceSlice<f32>, lx: Strided, out: &mut DeviceSlice<f64>) -> CudaResult<()> {
        let n = out.len();
        assert_eq!(lx.numel(), n, "cast_f32_f64: view and output sizes differ");
        assert!(lx.end() <= x.len(), "cast_f32_f64: view reaches past the input buffer");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("copy", "cast_f32_f64")?;
        let _timed =
            self.timed("cast_f32_f64", Cost { bytes: 4.0 * lx.footprint() as f64 + 8.0 * n as f64, flops: 0.0 });
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                out.as_device_ptr(), x.as_device_ptr(), lx, check_len("cast_f32_f64", n)
            ))
        }
    }

    /// `out[i] = x[lx(i)] as f32` (round to nearest; contiguous `out`) — twin of
    /// `cpu::copy::cast::<f64, f32>`.
    pub fn cast_f64_f32(&self, x: &DeviceSlice<f64>, lx: Strided, out: &mut DeviceSlice<f32>) -> CudaResult<()> {
        let n = out.len();
        assert_eq!(lx.numel(), n, "cast_f64_f32: view and output sizes differ");
        assert!(lx.end() <= x.len(), "cast_f64_f32: view reaches past the input buffer");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("copy", "cast_f64_f32")?;
        let _timed =
            self.timed("cast_f64_f32", Cost { bytes: 8.0 * lx.footprint() as f64 + 4.0 * n as f64, flops: 0.0 });
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                out.as_device_ptr(), x.as_device_ptr(), lx, check_len("cast_f64_f32", n)
            ))
        }
    }

    /// `out[i] = value` for every element — twin of `CpuData::full` (f32).
    pub fn fill_f32(&self, out: &mut DeviceSlice<f32>, value: f32) -> CudaResult<()> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.function("copy", "fill_f32")?;
        let _timed = self.timed("fill_f32", Cost::f32s(n));
        let stream = &self.stream;
        unsafe { launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(out.as_device_ptr(), value, check_len("fill_f32", n))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_contiguous_axes_and_drops_ones() {
        // contiguous (2, 3, 4) -> one axis of 24
        let l = Strided::new(&[2, 3, 4], &[12, 4, 1], 5).unwrap();
        assert_eq!((l.rank, l.offset, l.shape[0], l.strides[0]), (1, 5, 24, 1));
        // transposed (3, 2) of a (2, 3): nothing merges
        let t = Strided::new(&[3, 2], &[1, 3], 0).unwrap();
        assert_eq!((t.rank, &t.shape[..2], &t.strides[..2]), (2, &[3i64, 2][..], &[1i64, 3][..]));
        assert_eq!(t.end(), 6);
        // a row broadcast over (4, 5, 3): the two stride-0 axes merge; size-1 axes vanish
        let b = Strided::new(&[4, 1, 5, 3], &[0, 7, 0, 1], 0).unwrap();
        assert_eq!((b.rank, &b.shape[..2], &b.strides[..2]), (2, &[20i64, 3][..], &[0i64, 1][..]));
        assert_eq!((b.numel(), b.footprint(), b.end()), (60, 3, 3));
        assert!(!b.writable());
        // a narrowed view (2, 2) of a (2, 3) at column 1: rows do not merge
        let n = Strided::new(&[2, 2], &[3, 1], 1).unwrap();
        assert_eq!((n.rank, n.end()), (2, 6));
        // all ones and rank 0: one element at the offset
        let s = Strided::new(&[1, 1], &[9, 9], 4).unwrap();
        assert_eq!((s.rank, s.numel(), s.end()), (0, 1, 5));
        assert_eq!(Strided::new(&[3, 0], &[1, 1], 0).unwrap().numel(), 0);
    }

    #[test]
    fn too_many_axes_is_none() {
        // 7 axes of 2 with strides that never merge (every stride 3x the next would be 2x)
        let shape = [2usize; 7];
        let strides: Vec<usize> = (0..7).rev().map(|i| 3usize.pow(i)).collect();
        assert!(Strided::new(&shape, &strides, 0).is_none());
        let contiguous: Vec<usize> = (0..7).rev().map(|i| 2usize.pow(i)).collect();
        assert_eq!(Strided::new(&shape, &contiguous, 0).unwrap().rank, 1);
    }
}
