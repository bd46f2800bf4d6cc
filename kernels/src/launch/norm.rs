//! Launchers of `cu/norm.cu`.

use super::{Cost, Gpu};
use cust::error::CudaResult;
use cust::prelude::*;

/// Threads per block of the RMSNorm kernels (`NORM_THREADS` in norm.cu).
const NORM_THREADS: u32 = 256;
/// At most this many dw partials (backward blocks): ~8 resident blocks on each of 132 SMs.
const MAX_PARTS: usize = 1024;
/// Widest row the backward kernel takes: its dw accumulator (d floats) lives in the 48 KiB
/// of shared memory a block gets without opting in.
pub const MAX_D_BACKWARD: usize = 48 * 1024 / 4 - 32;

impl Gpu {
    /// Rows per backward block and the number of blocks (= dw partials) for `rows` rows.
    /// Depends only on `rows`, so the dw summation order is fixed for a shape.
    pub fn rms_norm_parts(rows: usize) -> (usize, usize) {
        let per_part = rows.div_ceil(MAX_PARTS).max(1);
        (per_part, rows.div_ceil(per_part))
    }

    /// Length of the scratch buffer `rms_norm_backward_f32` needs for `rows` rows of `d`.
    pub fn rms_norm_scratch_len(rows: usize, d: usize) -> usize {
        (Self::rms_norm_parts(rows).1 * d).max(1)
    }

    /// `(y, rstd)` of RMSNorm over `rows` contiguous rows of `d` — twin of
    /// `cpu::norm::rms_norm_forward` (`y` shaped like `x`, one `rstd` per row).
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_forward_f32(
        &self,
        x: &DeviceSlice<f32>,
        w: &DeviceSlice<f32>,
        y: &mut DeviceSlice<f32>,
        rstd: &mut DeviceSlice<f32>,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> CudaResult<()> {
        assert!(d > 0, "rms_norm_forward_f32: d must be positive");
        assert!(
            x.len() == rows * d && y.len() == rows * d && w.len() == d && rstd.len() == rows,
            "rms_norm_forward_f32: buffer sizes do not match (rows, d)"
        );
        assert!(rows <= i32::MAX as usize && d <= i32::MAX as usize, "rms_norm_forward_f32: too large");
        if rows == 0 {
            return Ok(());
        }
        let f = self.function("norm", "rms_norm_forward_f32")?;
        // Reads x and w, writes y and rstd; per element an FMA for the sum of squares and two
        // multiplies for y.
        let n = rows * d;
        let cost = Cost { bytes: (4 * (2 * n + d + rows)) as f64, flops: (4 * n) as f64 };
        let _timed = self.timed("rms_norm_forward_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<rows as u32, NORM_THREADS, 0, stream>>>(
                y.as_device_ptr(), rstd.as_device_ptr(), x.as_device_ptr(), w.as_device_ptr(), rows as i32, d as i32, eps
            ))
        }
    }

    /// `(dx, dw)` of RMSNorm given the saved `rstd` and upstream `dy` — twin of
    /// `cpu::norm::rms_norm_backward`. `scratch` holds the per-block dw partials and must
    /// have at least `Gpu::rms_norm_scratch_len(rows, d)` elements (no allocation here, so
    /// the call stays asynchronous). dw is reproducible: no atomics, fixed summation order.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_backward_f32(
        &self,
        x: &DeviceSlice<f32>,
        w: &DeviceSlice<f32>,
        rstd: &DeviceSlice<f32>,
        dy: &DeviceSlice<f32>,
        dx: &mut DeviceSlice<f32>,
        dw: &mut DeviceSlice<f32>,
        scratch: &mut DeviceSlice<f32>,
        rows: usize,
        d: usize,
    ) -> CudaResult<()> {
        assert!(d > 0, "rms_norm_backward_f32: d must be positive");
        assert!(
            x.len() == rows * d
                && dy.len() == rows * d
                && dx.len() == rows * d
                && w.len() == d
                && dw.len() == d
                && rstd.len() == rows,
            "rms_norm_backward_f32: buffer sizes do not match (rows, d)"
        );
        assert!(d <= MAX_D_BACKWARD, "rms_norm_backward_f32: d = {d} exceeds {MAX_D_BACKWARD}");
        assert!(rows <= i32::MAX as usize, "rms_norm_backward_f32: too many rows");
        assert!(scratch.len() >= Self::rms_norm_scratch_len(rows, d), "rms_norm_backward_f32: scratch too small");
        let (per_part, parts) = Self::rms_norm_parts(rows);
        let stream = &self.stream;
        if parts > 0 {
            // In a block, so the guard below times this launch only.
            let f = self.function("norm", "rms_norm_backward_f32")?;
            // Reads x, dy, w, rstd, writes dx and the dw partials; per element 3 FLOPs for the
            // row dot, 4 for dx, 3 for the dw partial.
            let n = rows * d;
            let cost = Cost { bytes: (4 * (3 * n + d + rows + parts * d)) as f64, flops: (10 * n) as f64 };
            let _timed = self.timed("rms_norm_backward_f32", cost);
            let shared = (d * std::mem::size_of::<f32>()) as u32;
            unsafe {
                launch!(f<<<parts as u32, NORM_THREADS, shared, stream>>>(
                    dx.as_device_ptr(), scratch.as_device_ptr(), x.as_device_ptr(), w.as_device_ptr(),
                    rstd.as_device_ptr(), dy.as_device_ptr(), rows as i32, d as i32, per_part as i32
                ))?;
            }
        }
        // With no rows, parts = 0 and the reduce writes zeros, like the CPU twin.
        let f = self.function("norm", "rms_norm_dw_reduce_f32")?;
        // Reads the partials (parts, d), writes dw; one add per partial.
        let cost = Cost { bytes: (4 * (parts * d + d)) as f64, flops: (parts * d) as f64 };
        let _timed = self.timed("rms_norm_dw_reduce_f32", cost);
        unsafe {
            launch!(f<<<d.div_ceil(32) as u32, (32, 32, 1), 0, stream>>>(
                dw.as_device_ptr(), scratch.as_device_ptr(), parts as i32, d as i32
            ))
        }
    }
}
