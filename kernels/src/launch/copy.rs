//! Launchers of `cu/copy.cu`, and [`Strided`], the by-value layout argument of every
//! kernel that reads or writes a view (`cu/strided.cuh` is its CUDA side).

use super::{grid_for, Cost, Gpu, BLOCK};
use crate::error::{ensure, to_i64, Result};
use cust::memory::{DeviceCopy, DevicePointer};
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

    /// The transpose case of a gather into contiguous output: `Some(k)` when the innermost
    /// axis (the output's unit-stride axis) steps through the input with a stride above 1
    /// while axis `k` has stride 1 (the innermost such axis), so one side of the generic
    /// copy cannot coalesce. A broadcast innermost axis (stride 0) is not a transpose: a
    /// warp reads one element there.
    pub fn transpose_axis(&self) -> Option<usize> {
        let r = self.rank as usize;
        if r < 2 || self.strides[r - 1] <= 1 {
            return None;
        }
        (0..r - 1).rev().find(|&k| self.strides[k] == 1)
    }

    /// Whether no two indices map to one element (needed of a view that is written), judged
    /// by stride 0 only: axes that interleave are not detected.
    pub fn writable(&self) -> bool {
        self.axes().all(|(d, s)| s != 0 || d <= 1)
    }
}

impl Strided {
    /// Fails unless the view has `n` elements and stays inside a buffer of `len` elements.
    pub(crate) fn check(&self, kernel: &'static str, name: &str, len: usize, n: usize) -> Result<()> {
        let numel = self.numel();
        ensure(numel == n, kernel, || format!("view {name} has {numel} elements, the output {n}"))?;
        let end = self.end();
        ensure(end <= len, kernel, || format!("view {name} reaches element {end} of a buffer of {len}"))
    }
}

/// A gather of `n` elements through a view into contiguous `out`: the parameter of
/// `copy_strided_f32` (`struct GatherParams<float, float>` in cu/copy.cu), and of the casts
/// between f32, f64 and bf16 (as `u16`, its bit pattern): 136 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct GatherParams<O: DeviceCopy, I: DeviceCopy> {
    out: DevicePointer<O>,
    x: DevicePointer<I>,
    lx: Strided,
    n: i64,
}
const _: () = assert!(std::mem::size_of::<GatherParams<f32, f32>>() == 136);
// SAFETY: device pointers, integers and a `Strided`, laid out as the C struct.
unsafe impl<O: DeviceCopy, I: DeviceCopy> DeviceCopy for GatherParams<O, I> {}

/// The parameter of `copy_transpose_f32` (`struct CopyTransposeParams`): 168 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyTransposeParams {
    out: DevicePointer<f32>,
    x: DevicePointer<f32>,
    t: Transpose,
}
const _: () = assert!(std::mem::size_of::<CopyTransposeParams>() == 168);
// SAFETY: device pointers and a `Transpose` (integers), laid out as the C struct.
unsafe impl DeviceCopy for CopyTransposeParams {}

/// The parameter of `copy_into_f32` (`struct CopyIntoParams`): 248 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyIntoParams {
    dst: DevicePointer<f32>,
    src: DevicePointer<f32>,
    ldst: Strided,
    lsrc: Strided,
    n: i64,
}
const _: () = assert!(std::mem::size_of::<CopyIntoParams>() == 248);
// SAFETY: device pointers, integers and `Strided`s, laid out as the C struct.
unsafe impl DeviceCopy for CopyIntoParams {}

/// The parameter of `fill_f32` (`struct FillParams`): 24 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct FillParams {
    out: DevicePointer<f32>,
    n: i64,
    value: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<FillParams>() == 24);
// SAFETY: a device pointer and numbers, laid out as the C struct.
unsafe impl DeviceCopy for FillParams {}

/// Axes besides the two of the tile plane that `copy_transpose_f32` walks as a batch.
const TRANSPOSE_MAX_BATCH: usize = MAX_RANK - 2;
/// The tile edge of `copy_transpose_f32` and the rows of threads in its block.
const TRANSPOSE_TILE: u32 = 32;
const TRANSPOSE_ROWS: u32 = 8;

/// The argument of `copy_transpose_f32` (`struct Transpose` in `cu/copy.cu`, same fields,
/// all 8-byte: 152 bytes): a gather `lx` whose innermost axis `a` has input stride `in_a`
/// and whose axis `k` has input stride 1, split into the (a, k) plane and the other axes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Transpose {
    offset: i64,
    n_a: i64,
    n_k: i64,
    in_a: i64,
    /// Output stride of `k` (of `a`: 1).
    out_k: i64,
    /// Product of the batch axes' lengths.
    batch: i64,
    batch_rank: i64,
    batch_shape: [i64; TRANSPOSE_MAX_BATCH],
    batch_in: [i64; TRANSPOSE_MAX_BATCH],
    batch_out: [i64; TRANSPOSE_MAX_BATCH],
}

// SAFETY: plain integers, no pointers; the kernel reads it as the C struct above.
unsafe impl DeviceCopy for Transpose {}

impl Transpose {
    /// `lx` (merged, rank >= 2) with `k` from [`Strided::transpose_axis`].
    fn new(lx: &Strided, k: usize) -> Transpose {
        let r = lx.rank as usize;
        let a = r - 1;
        // output strides: contiguous row-major over the view's shape
        let mut out = [1i64; MAX_RANK];
        for d in (0..a).rev() {
            out[d] = out[d + 1] * lx.shape[d + 1];
        }
        let mut t = Transpose {
            offset: lx.offset,
            n_a: lx.shape[a],
            n_k: lx.shape[k],
            in_a: lx.strides[a],
            out_k: out[k],
            batch: 1,
            ..Transpose::default()
        };
        for d in (0..a).filter(|&d| d != k) {
            let i = t.batch_rank as usize;
            (t.batch_shape[i], t.batch_in[i], t.batch_out[i]) = (lx.shape[d], lx.strides[d], out[d]);
            t.batch *= lx.shape[d];
            t.batch_rank += 1;
        }
        t
    }

    /// Grid (tiles along a, tiles along k, batch), each clamped to CUDA's limit; the kernel
    /// grid-strides each dimension.
    fn grid(&self) -> (u32, u32, u32) {
        let tiles = |n: i64| (n as u64).div_ceil(TRANSPOSE_TILE as u64);
        let x = tiles(self.n_a).min(i32::MAX as u64) as u32;
        let y = tiles(self.n_k).min(65535) as u32;
        let z = (self.batch as u64).min(65535) as u32;
        (x, y, z)
    }
}

impl Gpu {
    /// `out[i] = x[lx(i)]`: the view `lx` of `x` gathered into contiguous `out` — twin of
    /// `ops::copy::cpu::copy_strided`. A transposing view ([`Strided::transpose_axis`]) goes to
    /// `copy_transpose_f32` (timed under that name), any other to `copy_strided_f32`.
    pub fn copy_strided_f32(&self, x: &DeviceSlice<f32>, lx: Strided, out: &mut DeviceSlice<f32>) -> Result<()> {
        const K: &str = "copy_strided_f32";
        let n = out.len();
        lx.check(K, "lx", x.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let cost = Cost::f32s(lx.footprint() + n);
        // A transposing view: both sides coalesce through shared-memory tiles (cu/copy.cu);
        // its tile and batch counts are 32-bit.
        if let Some(k) = lx.transpose_axis().filter(|_| n <= i32::MAX as usize) {
            let t = Transpose::new(&lx, k);
            let params = CopyTransposeParams { out: out.as_device_ptr(), x: x.as_device_ptr(), t };
            let block = (TRANSPOSE_TILE, TRANSPOSE_ROWS, 1);
            return self.launch("copy_transpose_f32", t.grid(), block, 0, params, cost);
        }
        let params = GatherParams { out: out.as_device_ptr(), x: x.as_device_ptr(), lx, n: to_i64(K, "n", n)? };
        self.launch(K, grid_for(n), BLOCK, 0, params, cost)
    }

    /// `dst[ldst(i)] = src[lsrc(i)]` for `i < n` (views of equal shape) — twin of
    /// `ops::copy::cpu::copy_into`; concat writes each piece into a narrowed view of its output.
    /// `ldst` must not repeat an element, and `dst` and `src` must not overlap.
    pub fn copy_into_f32(
        &self,
        dst: &mut DeviceSlice<f32>,
        ldst: Strided,
        src: &DeviceSlice<f32>,
        lsrc: Strided,
        n: usize,
    ) -> Result<()> {
        const K: &str = "copy_into_f32";
        ldst.check(K, "ldst", dst.len(), n)?;
        lsrc.check(K, "lsrc", src.len(), n)?;
        ensure(ldst.writable(), K, || "the destination view repeats elements (stride 0)".into())?;
        if n == 0 {
            return Ok(());
        }
        let params =
            CopyIntoParams { dst: dst.as_device_ptr(), src: src.as_device_ptr(), ldst, lsrc, n: to_i64(K, "n", n)? };
        self.launch(K, grid_for(n), BLOCK, 0, params, Cost::f32s(lsrc.footprint() + n))
    }

    /// `out[i] = x[lx(i)] as f64` (contiguous `out`) — twin of `ops::copy::cpu::cast::<f32, f64>`.
    pub fn cast_f32_f64(&self, x: &DeviceSlice<f32>, lx: Strided, out: &mut DeviceSlice<f64>) -> Result<()> {
        self.cast("cast_f32_f64", x, lx, out)
    }

    /// `out[i] = x[lx(i)] as f32` (round to nearest; contiguous `out`) — twin of
    /// `ops::copy::cpu::cast::<f64, f32>`.
    pub fn cast_f64_f32(&self, x: &DeviceSlice<f64>, lx: Strided, out: &mut DeviceSlice<f32>) -> Result<()> {
        self.cast("cast_f64_f32", x, lx, out)
    }

    /// `out[i] = bf16(x[lx(i)])`, rounded to nearest even — twin of
    /// `ops::copy::cpu::cast::<f32, bf16>`. bf16 values travel as their 16-bit patterns.
    pub fn cast_f32_bf16(&self, x: &DeviceSlice<f32>, lx: Strided, out: &mut DeviceSlice<u16>) -> Result<()> {
        self.cast("cast_f32_bf16", x, lx, out)
    }

    /// `out[i] = x[lx(i)]` widened from bf16 (exact) — twin of `ops::copy::cpu::cast::<bf16, f32>`.
    pub fn cast_bf16_f32(&self, x: &DeviceSlice<u16>, lx: Strided, out: &mut DeviceSlice<f32>) -> Result<()> {
        self.cast("cast_bf16_f32", x, lx, out)
    }

    /// `out[i] = bf16(x[lx(i)])`, rounded once to nearest even — twin of
    /// `ops::copy::cpu::cast::<f64, bf16>`.
    pub fn cast_f64_bf16(&self, x: &DeviceSlice<f64>, lx: Strided, out: &mut DeviceSlice<u16>) -> Result<()> {
        self.cast("cast_f64_bf16", x, lx, out)
    }

    /// `out[i] = x[lx(i)]` widened from bf16 (exact) — twin of `ops::copy::cpu::cast::<bf16, f64>`.
    pub fn cast_bf16_f64(&self, x: &DeviceSlice<u16>, lx: Strided, out: &mut DeviceSlice<f64>) -> Result<()> {
        self.cast("cast_bf16_f64", x, lx, out)
    }

    /// Any cast: `kernel` converts `I` to `O`.
    fn cast<O: DeviceCopy, I: DeviceCopy>(
        &self,
        kernel: &'static str,
        x: &DeviceSlice<I>,
        lx: Strided,
        out: &mut DeviceSlice<O>,
    ) -> Result<()> {
        let n = out.len();
        lx.check(kernel, "lx", x.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let params = GatherParams { out: out.as_device_ptr(), x: x.as_device_ptr(), lx, n: to_i64(kernel, "n", n)? };
        let (size_o, size_i) = (std::mem::size_of::<O>() as f64, std::mem::size_of::<I>() as f64);
        let cost = Cost { bytes: size_i * lx.footprint() as f64 + size_o * n as f64, flops: 0.0 };
        self.launch(kernel, grid_for(n), BLOCK, 0, params, cost)
    }

    /// `out[i] = value` for every element — twin of `CpuData::full` (f32).
    pub fn fill_f32(&self, out: &mut DeviceSlice<f32>, value: f32) -> Result<()> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let params = FillParams { out: out.as_device_ptr(), n: to_i64("fill_f32", "n", n)?, value, pad: 0 };
        self.launch("fill_f32", grid_for(n), BLOCK, 0, params, Cost::f32s(n))
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

    /// The view `l` of the buffer whose values are their offsets (`0.0, 1.0, 2.0, ...`),
    /// gathered element by element in row-major order.
    fn gather(l: &Strided) -> Vec<f32> {
        let r = l.rank as usize;
        (0..l.numel())
            .map(|mut i| {
                let mut off = l.offset;
                for d in (0..r).rev() {
                    off += (i % l.shape[d] as usize) as i64 * l.strides[d];
                    i /= l.shape[d] as usize;
                }
                off as f32
            })
            .collect()
    }

    /// `copy_transpose_f32` replayed on the CPU with the kernel's loops and bounds (a block's
    /// 32 x 8 threads as loops, each doing its 4 rows), over the same buffer as [`gather`].
    fn replay(t: &Transpose, n: usize) -> Vec<f32> {
        let (tile, rows) = (TRANSPOSE_TILE as i64, TRANSPOSE_ROWS as i64);
        let mut out = vec![f32::NAN; n];
        let mut shared = [[f32::NAN; 33]; 32];
        for z in 0..t.batch {
            let (mut inp, mut o, mut b) = (t.offset, 0i64, z);
            for d in (1..t.batch_rank as usize).rev() {
                let (q, r) = (b / t.batch_shape[d], b % t.batch_shape[d]);
                (inp, o, b) = (inp + r * t.batch_in[d], o + r * t.batch_out[d], q);
            }
            if t.batch_rank > 0 {
                (inp, o) = (inp + b * t.batch_in[0], o + b * t.batch_out[0]);
            }
            for k0 in (0..t.n_k).step_by(tile as usize) {
                for a0 in (0..t.n_a).step_by(tile as usize) {
                    for (ty, tx) in (0..rows).flat_map(|ty| (0..tile).map(move |tx| (ty, tx))) {
                        for j in (0..tile).step_by(rows as usize) {
                            if k0 + tx < t.n_k && a0 + ty + j < t.n_a {
                                let src = inp + k0 + tx + (a0 + ty + j) * t.in_a;
                                shared[(ty + j) as usize][tx as usize] = src as f32;
                                // buffer value = offset
                            }
                        }
                    }
                    for (ty, tx) in (0..rows).flat_map(|ty| (0..tile).map(move |tx| (ty, tx))) {
                        for j in (0..tile).step_by(rows as usize) {
                            if a0 + tx < t.n_a && k0 + ty + j < t.n_k {
                                out[(o + (k0 + ty + j) * t.out_k + a0 + tx) as usize] =
                                    shared[tx as usize][(ty + j) as usize];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn transpose_case_is_detected() {
        // (37, 129) transposed: innermost stride 129, axis 0 stride 1
        assert_eq!(Strided::new(&[129, 37], &[1, 129], 0).unwrap().transpose_axis(), Some(0));
        // contiguous, narrowed rows, broadcast innermost, no unit stride: generic copy
        assert_eq!(Strided::new(&[4, 5], &[5, 1], 0).unwrap().transpose_axis(), None);
        assert_eq!(Strided::new(&[4, 5], &[7, 1], 2).unwrap().transpose_axis(), None);
        assert_eq!(Strided::new(&[4, 5], &[1, 0], 0).unwrap().transpose_axis(), None);
        assert_eq!(Strided::new(&[4, 5], &[2, 10], 0).unwrap().transpose_axis(), None);
        // a (2, 3, 5, 7) permuted (0, 3, 1, 2): axes (2, 105), (7, 1), (15, 7) after merging
        let p = Strided::new(&[2, 7, 3, 5], &[105, 1, 35, 7], 0).unwrap();
        assert_eq!((p.rank, p.transpose_axis()), (3, Some(1)));
        // ... and (3, 1, 2, 0): axes (7, 1), (15, 7), (2, 105)
        let p = Strided::new(&[7, 3, 5, 2], &[1, 35, 7, 105], 0).unwrap();
        assert_eq!((p.rank, p.transpose_axis()), (3, Some(0)));
        // (1, 1) merges to rank 0
        assert_eq!(Strided::new(&[1, 1], &[1, 1], 0).unwrap().transpose_axis(), None);
    }

    #[test]
    fn transpose_replay_matches_the_gather() {
        let cases: [(&[usize], &[usize], usize); 8] = [
            (&[129, 37], &[1, 129], 0),                               // 2-D transpose, partial tiles
            (&[37, 129], &[1, 37], 0),                                // the other way
            (&[2, 7, 3, 5], &[105, 1, 35, 7], 0),                     // (2, 3, 5, 7) permuted (0, 3, 1, 2)
            (&[7, 3, 5, 2], &[1, 35, 7, 105], 0),                     // permuted (3, 1, 2, 0)
            (&[50, 33], &[1, 100], 17),                               // transposed narrowed view, offset
            (&[3, 40, 65], &[0, 1, 40], 5),                           // batch axis broadcast
            (&[2, 64, 3, 70], &[3 * 64 * 70, 1, 64 * 70, 64], 0),     // batch axes around k
            (&[2, 2, 3, 2, 33, 34], &[1000, 7, 300, 1, 20000, 2], 3), // rank 6: 4 batch axes, odd strides
        ];
        for (shape, strides, offset) in cases {
            let l = Strided::new(shape, strides, offset).unwrap();
            let k = l.transpose_axis().unwrap_or_else(|| panic!("{shape:?} {strides:?} is a transpose"));
            let t = Transpose::new(&l, k);
            assert_eq!((t.batch_rank + 2, t.batch * t.n_a * t.n_k), (l.rank as i64, l.numel() as i64));
            assert_eq!(replay(&t, l.numel()), gather(&l), "{shape:?} {strides:?} {offset}");
            let (x, y, z) = t.grid();
            assert!(x >= 1 && (1..=65535).contains(&y) && (1..=65535).contains(&z));
        }
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
