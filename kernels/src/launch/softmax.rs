//! Launchers of `cu/softmax.cu`: one 256-thread block per row of `v` values.

use super::{Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block (one block per row); must match `SOFTMAX_BLOCK` in `cu/softmax.cu`.
const ROW_BLOCK: u32 = 256;

/// Rows of a contiguous buffer of `len` values in rows of `v`, checking the shape.
fn rows_of(kernel: &'static str, len: usize, v: usize) -> Result<usize> {
    ensure(v > 0 || len == 0, kernel, || "rows of 0 values hold nothing".into())?;
    if v == 0 {
        return Ok(0);
    }
    ensure(len.is_multiple_of(v), kernel, || format!("length {len} is not a multiple of the row length {v}"))?;
    Ok(len / v)
}

/// The parameter of `log_softmax_forward_f32` (`struct LogSoftmaxForwardParams` in cu/softmax.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct LogSoftmaxForwardParams {
    y: DevicePointer<f32>,
    x: DevicePointer<f32>,
    rows: i32,
    v: i32,
}
const _: () = assert!(std::mem::size_of::<LogSoftmaxForwardParams>() == 24);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for LogSoftmaxForwardParams {}

/// The parameter of `log_softmax_backward_f32` (`struct LogSoftmaxBackwardParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct LogSoftmaxBackwardParams {
    dx: DevicePointer<f32>,
    y: DevicePointer<f32>,
    dy: DevicePointer<f32>,
    rows: i32,
    v: i32,
}
const _: () = assert!(std::mem::size_of::<LogSoftmaxBackwardParams>() == 32);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for LogSoftmaxBackwardParams {}

/// The parameter of `cross_entropy_forward_f32` (`struct CrossEntropyForwardParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct CrossEntropyForwardParams {
    lse: DevicePointer<f32>,
    loss: DevicePointer<f32>,
    x: DevicePointer<f32>,
    targets: DevicePointer<i64>,
    ignore_index: i64,
    rows: i32,
    v: i32,
}
const _: () = assert!(std::mem::size_of::<CrossEntropyForwardParams>() == 48);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for CrossEntropyForwardParams {}

/// The parameter of `cross_entropy_backward_f32` (`struct CrossEntropyBackwardParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct CrossEntropyBackwardParams {
    dx: DevicePointer<f32>,
    x: DevicePointer<f32>,
    lse: DevicePointer<f32>,
    targets: DevicePointer<i64>,
    ignore_index: i64,
    scale: f32,
    rows: i32,
    v: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<CrossEntropyBackwardParams>() == 56);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for CrossEntropyBackwardParams {}

/// The arguments of [`Gpu::cross_entropy_backward_f32`]: logits `x` and `dx` (rows, v),
/// `lse` and `targets` (rows).
pub struct CrossEntropyBackward<'a> {
    pub x: &'a DeviceSlice<f32>,
    pub lse: &'a DeviceSlice<f32>,
    pub targets: &'a DeviceSlice<i64>,
    pub ignore_index: i64,
    /// Multiplies every gradient (1 / valid rows for a mean loss).
    pub scale: f32,
    /// Written.
    pub dx: &'a mut DeviceSlice<f32>,
    pub v: usize,
}

impl Gpu {
    /// `y = log_softmax(x)` over rows of `v` values — twin of `ops::softmax::cpu::log_softmax_forward`.
    pub fn log_softmax_forward_f32(&self, x: &DeviceSlice<f32>, y: &mut DeviceSlice<f32>, v: usize) -> Result<()> {
        const K: &str = "log_softmax_forward_f32";
        check_len(K, "y", y.len(), x.len())?;
        let rows = rows_of(K, x.len(), v)?;
        if rows == 0 {
            return Ok(());
        }
        let params = LogSoftmaxForwardParams {
            y: y.as_device_ptr(),
            x: x.as_device_ptr(),
            rows: to_i32(K, "rows", rows)?,
            v: to_i32(K, "v", v)?,
        };
        // Reads x, writes y; per element a max, a subtract, an exp and an add, then two subtracts.
        let nv = rows * v;
        self.launch(K, rows as u32, ROW_BLOCK, 0, params, Cost { bytes: (8 * nv) as f64, flops: (6 * nv) as f64 })
    }

    /// `dx = dy - exp(y) Σ_row dy` from log-softmax's output `y` — twin of
    /// `ops::softmax::cpu::log_softmax_backward`.
    pub fn log_softmax_backward_f32(
        &self,
        y: &DeviceSlice<f32>,
        dy: &DeviceSlice<f32>,
        dx: &mut DeviceSlice<f32>,
        v: usize,
    ) -> Result<()> {
        const K: &str = "log_softmax_backward_f32";
        check_len(K, "dy", dy.len(), y.len())?;
        check_len(K, "dx", dx.len(), y.len())?;
        let rows = rows_of(K, y.len(), v)?;
        if rows == 0 {
            return Ok(());
        }
        let params = LogSoftmaxBackwardParams {
            dx: dx.as_device_ptr(),
            y: y.as_device_ptr(),
            dy: dy.as_device_ptr(),
            rows: to_i32(K, "rows", rows)?,
            v: to_i32(K, "v", v)?,
        };
        // Reads y and dy, writes dx; per element an add (row sum), then exp, multiply, subtract.
        let nv = rows * v;
        self.launch(K, rows as u32, ROW_BLOCK, 0, params, Cost { bytes: (12 * nv) as f64, flops: (4 * nv) as f64 })
    }

    /// Per-row logsumexp `lse` and loss `lse - x[t]` of logits `x` (`targets.len()` rows of `v`),
    /// both 0 where the target is `ignore_index` — twin of `ops::softmax::cpu::cross_entropy_forward`
    /// (whose loss is f64). The mean over valid rows is the caller's.
    pub fn cross_entropy_forward_f32(
        &self,
        x: &DeviceSlice<f32>,
        targets: &DeviceSlice<i64>,
        ignore_index: i64,
        lse: &mut DeviceSlice<f32>,
        loss: &mut DeviceSlice<f32>,
        v: usize,
    ) -> Result<()> {
        const K: &str = "cross_entropy_forward_f32";
        let rows = targets.len();
        check_len(K, "x (targets.len() rows of v)", x.len(), rows * v)?;
        check_len(K, "lse", lse.len(), rows)?;
        check_len(K, "loss", loss.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let params = CrossEntropyForwardParams {
            lse: lse.as_device_ptr(),
            loss: loss.as_device_ptr(),
            x: x.as_device_ptr(),
            targets: targets.as_device_ptr(),
            ignore_index,
            rows: to_i32(K, "rows", rows)?,
            v: to_i32(K, "v", v)?,
        };
        // Reads x and the targets, writes lse and loss; per element a max, subtract, exp, add.
        let cost = Cost { bytes: (4 * rows * v + 16 * rows) as f64, flops: (4 * rows * v) as f64 };
        self.launch(K, rows as u32, ROW_BLOCK, 0, params, cost)
    }

    /// `dx = scale * (softmax(x) - onehot(t))` per row, 0 where the target is `ignore_index`,
    /// from the `lse` saved by [`Gpu::cross_entropy_forward_f32`] — twin of
    /// `ops::softmax::cpu::cross_entropy_backward`.
    pub fn cross_entropy_backward_f32(&self, args: CrossEntropyBackward<'_>) -> Result<()> {
        const K: &str = "cross_entropy_backward_f32";
        let CrossEntropyBackward { x, lse, targets, ignore_index, scale, dx, v } = args;
        let rows = targets.len();
        check_len(K, "x (targets.len() rows of v)", x.len(), rows * v)?;
        check_len(K, "dx", dx.len(), x.len())?;
        check_len(K, "lse", lse.len(), rows)?;
        if rows == 0 || v == 0 {
            return Ok(());
        }
        let params = CrossEntropyBackwardParams {
            dx: dx.as_device_ptr(),
            x: x.as_device_ptr(),
            lse: lse.as_device_ptr(),
            targets: targets.as_device_ptr(),
            ignore_index,
            scale,
            rows: to_i32(K, "rows", rows)?,
            v: to_i32(K, "v", v)?,
            pad: 0,
        };
        // Reads x, lse and the targets, writes dx; per element a subtract, an exp, a multiply.
        let cost = Cost { bytes: (8 * rows * v + 12 * rows) as f64, flops: (3 * rows * v) as f64 };
        self.launch(K, rows as u32, ROW_BLOCK, 0, params, cost)
    }
}
