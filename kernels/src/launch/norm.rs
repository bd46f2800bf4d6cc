//! Launchers of `cu/norm.cu`.

use super::{Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block of the RMSNorm kernels (`NORM_THREADS` in norm.cu).
const NORM_THREADS: u32 = 256;
/// At most this many dw partials (backward blocks): ~8 resident blocks on each of 132 SMs.
const MAX_PARTS: usize = 1024;
/// Widest row the backward kernel takes: its dw accumulator (d floats) lives in the 48 KiB
/// of shared memory a block gets without opting in.
pub const MAX_D_BACKWARD: usize = 48 * 1024 / 4 - 32;

/// The parameter of `rms_norm_forward_f32` (`struct RmsNormForwardParams` in cu/norm.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct RmsNormForwardParams {
    y: DevicePointer<f32>,
    rstd: DevicePointer<f32>,
    x: DevicePointer<f32>,
    w: DevicePointer<f32>,
    rows: i32,
    d: i32,
    eps: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<RmsNormForwardParams>() == 48);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for RmsNormForwardParams {}

/// The parameter of `rms_norm_backward_f32` (`struct RmsNormBackwardParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct RmsNormBackwardParams {
    dx: DevicePointer<f32>,
    dw_partial: DevicePointer<f32>,
    x: DevicePointer<f32>,
    w: DevicePointer<f32>,
    rstd: DevicePointer<f32>,
    dy: DevicePointer<f32>,
    rows: i32,
    d: i32,
    rows_per_part: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<RmsNormBackwardParams>() == 64);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for RmsNormBackwardParams {}

/// The parameter of `rms_norm_dw_reduce_f32` (`struct RmsNormDwReduceParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct RmsNormDwReduceParams {
    dw: DevicePointer<f32>,
    dw_partial: DevicePointer<f32>,
    n_parts: i32,
    d: i32,
}
const _: () = assert!(std::mem::size_of::<RmsNormDwReduceParams>() == 24);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for RmsNormDwReduceParams {}

/// The arguments of [`Gpu::rms_norm_forward_f32`]: `rows` contiguous rows of `d` values.
pub struct RmsNormForward<'a> {
    /// (rows, d)
    pub x: &'a DeviceSlice<f32>,
    /// (d)
    pub w: &'a DeviceSlice<f32>,
    /// (rows, d), written
    pub y: &'a mut DeviceSlice<f32>,
    /// (rows), written: 1 / rms of each row
    pub rstd: &'a mut DeviceSlice<f32>,
    pub rows: usize,
    pub d: usize,
    pub eps: f32,
}

/// The arguments of [`Gpu::rms_norm_backward_f32`].
pub struct RmsNormBackward<'a> {
    /// (rows, d), (d), (rows), (rows, d): the forward's input, weight and `rstd`, and `dy`.
    pub x: &'a DeviceSlice<f32>,
    pub w: &'a DeviceSlice<f32>,
    pub rstd: &'a DeviceSlice<f32>,
    pub dy: &'a DeviceSlice<f32>,
    /// (rows, d), written
    pub dx: &'a mut DeviceSlice<f32>,
    /// (d), written
    pub dw: &'a mut DeviceSlice<f32>,
    /// The per-block dw partials: at least `Gpu::rms_norm_scratch_len(rows, d)` elements
    /// (allocated by the caller, so the call stays asynchronous).
    pub scratch: &'a mut DeviceSlice<f32>,
    pub rows: usize,
    pub d: usize,
}

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
    /// `ops::norm::cpu::rms_norm_forward` (`y` (rows, d) shaped like `x`, one `rstd` per row, `w` (d)).
    pub fn rms_norm_forward_f32(&self, args: RmsNormForward<'_>) -> Result<()> {
        const K: &str = "rms_norm_forward_f32";
        let RmsNormForward { x, w, y, rstd, rows, d, eps } = args;
        ensure(d > 0, K, || "d must be positive".into())?;
        check_len(K, "x", x.len(), rows * d)?;
        check_len(K, "y", y.len(), rows * d)?;
        check_len(K, "w", w.len(), d)?;
        check_len(K, "rstd", rstd.len(), rows)?;
        let (rows32, d32) = (to_i32(K, "rows", rows)?, to_i32(K, "d", d)?);
        if rows == 0 {
            return Ok(());
        }
        let params = RmsNormForwardParams {
            y: y.as_device_ptr(),
            rstd: rstd.as_device_ptr(),
            x: x.as_device_ptr(),
            w: w.as_device_ptr(),
            rows: rows32,
            d: d32,
            eps,
            pad: 0,
        };
        // Reads x and w, writes y and rstd; per element an FMA for the sum of squares and two
        // multiplies for y.
        let n = rows * d;
        let cost = Cost { bytes: (4 * (2 * n + d + rows)) as f64, flops: (4 * n) as f64 };
        self.launch(K, rows as u32, NORM_THREADS, 0, params, cost)
    }

    /// `(dx, dw)` of RMSNorm given the saved `rstd` (rows) and upstream `dy` (rows, d) — twin
    /// of `ops::norm::cpu::rms_norm_backward`. dw is reproducible: no atomics, fixed summation
    /// order (per-block partials in `scratch`, then a fixed-order sum).
    pub fn rms_norm_backward_f32(&self, args: RmsNormBackward<'_>) -> Result<()> {
        const K: &str = "rms_norm_backward_f32";
        let RmsNormBackward { x, w, rstd, dy, dx, dw, scratch, rows, d } = args;
        ensure(d > 0, K, || "d must be positive".into())?;
        for (name, len, want) in
            [("x", x.len(), rows * d), ("dy", dy.len(), rows * d), ("dx", dx.len(), rows * d), ("w", w.len(), d)]
        {
            check_len(K, name, len, want)?;
        }
        check_len(K, "dw", dw.len(), d)?;
        check_len(K, "rstd", rstd.len(), rows)?;
        ensure(d <= MAX_D_BACKWARD, K, || format!("d = {d} exceeds {MAX_D_BACKWARD}"))?;
        let need = Self::rms_norm_scratch_len(rows, d);
        ensure(scratch.len() >= need, K, || format!("scratch holds {} elements, needs {need}", scratch.len()))?;
        let (rows32, d32) = (to_i32(K, "rows", rows)?, to_i32(K, "d", d)?);
        let (per_part, parts) = Self::rms_norm_parts(rows);
        if parts > 0 {
            let params = RmsNormBackwardParams {
                dx: dx.as_device_ptr(),
                dw_partial: scratch.as_device_ptr(),
                x: x.as_device_ptr(),
                w: w.as_device_ptr(),
                rstd: rstd.as_device_ptr(),
                dy: dy.as_device_ptr(),
                rows: rows32,
                d: d32,
                rows_per_part: per_part as i32,
                pad: 0,
            };
            // Reads x, dy, w, rstd, writes dx and the dw partials; per element 3 FLOPs for the
            // row dot, 4 for dx, 3 for the dw partial.
            let n = rows * d;
            let cost = Cost { bytes: (4 * (3 * n + d + rows + parts * d)) as f64, flops: (10 * n) as f64 };
            let shared = (d * std::mem::size_of::<f32>()) as u32;
            self.launch(K, parts as u32, NORM_THREADS, shared, params, cost)?;
        }
        // With no rows, parts = 0 and the reduce writes zeros, like the CPU twin.
        let params = RmsNormDwReduceParams {
            dw: dw.as_device_ptr(),
            dw_partial: scratch.as_device_ptr(),
            n_parts: parts as i32,
            d: d32,
        };
        // Reads the partials (parts, d), writes dw; one add per partial.
        let cost = Cost { bytes: (4 * (parts * d + d)) as f64, flops: (parts * d) as f64 };
        self.launch("rms_norm_dw_reduce_f32", d.div_ceil(32) as u32, (32, 32, 1), 0, params, cost)
    }
}
