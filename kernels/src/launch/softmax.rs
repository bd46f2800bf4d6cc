//! Launchers of `cu/softmax.cu`: one 256-thread block per row of `v` values.

use super::{Cost, Gpu};
use cust::error::CudaResult;
use cust::prelude::*;

/// Threads per block (one block per row); must match `SOFTMAX_BLOCK` in `cu/softmax.cu`.
const ROW_BLOCK: u32 = 256;

/// Rows of a contiguous buffer of `len` values in rows of `v`, checking the shape.
fn rows_of(len: usize, v: usize, name: &str) -> usize {
    assert!(v > 0 || len == 0, "{name}: rows of 0 values hold nothing");
    if v == 0 {
        return 0;
    }
    assert!(len.is_multiple_of(v), "{name}: length {len} is not a multiple of the row length {v}");
    len / v
}

/// Rows and row length as the kernels' `int`s, checking they fit.
fn dims(rows: usize, v: usize, name: &str) -> (i32, i32) {
    let fits = |n: usize| i32::try_from(n).unwrap_or_else(|_| panic!("{name}: {n} does not fit in an i32"));
    (fits(rows), fits(v))
}

impl Gpu {
    /// `y = log_softmax(x)` over rows of `v` values — twin of `cpu::softmax::log_softmax_forward`.
    pub fn log_softmax_forward_f32(&self, x: &DeviceSlice<f32>, y: &mut DeviceSlice<f32>, v: usize) -> CudaResult<()> {
        assert_eq!(x.len(), y.len(), "log_softmax_forward_f32: input and output lengths differ");
        let rows = rows_of(x.len(), v, "log_softmax_forward_f32");
        if rows == 0 {
            return Ok(());
        }
        let (r, n) = dims(rows, v, "log_softmax_forward_f32");
        let f = self.function("softmax", "log_softmax_forward_f32")?;
        // Reads x, writes y; per element a max, a subtract, an exp and an add, then two subtracts.
        let nv = rows * v;
        let _timed = self.timed("log_softmax_forward_f32", Cost { bytes: (8 * nv) as f64, flops: (6 * nv) as f64 });
        let stream = &self.stream;
        unsafe { launch!(f<<<rows as u32, ROW_BLOCK, 0, stream>>>(y.as_device_ptr(), x.as_device_ptr(), r, n)) }
    }

    /// `dx = dy - exp(y) Σ_row dy` from log-softmax's output `y` — twin of
    /// `cpu::softmax::log_softmax_backward`.
    pub fn log_softmax_backward_f32(
        &self,
        y: &DeviceSlice<f32>,
        dy: &DeviceSlice<f32>,
        dx: &mut DeviceSlice<f32>,
        v: usize,
    ) -> CudaResult<()> {
        assert!(y.len() == dy.len() && y.len() == dx.len(), "log_softmax_backward_f32: buffer lengths differ");
        let rows = rows_of(y.len(), v, "log_softmax_backward_f32");
        if rows == 0 {
            return Ok(());
        }
        let (r, n) = dims(rows, v, "log_softmax_backward_f32");
        let f = self.function("softmax", "log_softmax_backward_f32")?;
        // Reads y and dy, writes dx; per element an add (row sum), then exp, multiply, subtract.
        let nv = rows * v;
        let _timed = self.timed("log_softmax_backward_f32", Cost { bytes: (12 * nv) as f64, flops: (4 * nv) as f64 });
        let stream = &self.stream;
        unsafe {
            launch!(f<<<rows as u32, ROW_BLOCK, 0, stream>>>(dx.as_device_ptr(), y.as_device_ptr(), dy.as_device_ptr(), r, n))
        }
    }

    /// Per-row logsumexp `lse` and loss `lse - x[t]` of logits `x` (`targets.len()` rows of `v`),
    /// both 0 where the target is `ignore_index` — twin of `cpu::softmax::cross_entropy_forward`
    /// (whose loss is f64). The mean over valid rows is the caller's.
    pub fn cross_entropy_forward_f32(
        &self,
        x: &DeviceSlice<f32>,
        targets: &DeviceSlice<i64>,
        ignore_index: i64,
        lse: &mut DeviceSlice<f32>,
        loss: &mut DeviceSlice<f32>,
        v: usize,
    ) -> CudaResult<()> {
        let rows = targets.len();
        assert_eq!(x.len(), rows * v, "cross_entropy_forward_f32: logits are not targets.len() rows of v");
        assert!(lse.len() == rows && loss.len() == rows, "cross_entropy_forward_f32: lse and loss need one per row");
        if rows == 0 {
            return Ok(());
        }
        let (r, n) = dims(rows, v, "cross_entropy_forward_f32");
        let f = self.function("softmax", "cross_entropy_forward_f32")?;
        // Reads x and the targets, writes lse and loss; per element a max, subtract, exp, add.
        let cost = Cost { bytes: (4 * rows * v + 16 * rows) as f64, flops: (4 * rows * v) as f64 };
        let _timed = self.timed("cross_entropy_forward_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<rows as u32, ROW_BLOCK, 0, stream>>>(
                lse.as_device_ptr(),
                loss.as_device_ptr(),
                x.as_device_ptr(),
                targets.as_device_ptr(),
                ignore_index,
                r,
                n
            ))
        }
    }

    /// `dx = scale * (softmax(x) - onehot(t))` per row, 0 where the target is `ignore_index`,
    /// from the `lse` saved by [`Gpu::cross_entropy_forward_f32`] — twin of
    /// `cpu::softmax::cross_entropy_backward`.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_backward_f32(
        &self,
        x: &DeviceSlice<f32>,
        lse: &DeviceSlice<f32>,
        targets: &DeviceSlice<i64>,
        ignore_index: i64,
        scale: f32,
        dx: &mut DeviceSlice<f32>,
        v: usize,
    ) -> CudaResult<()> {
        let rows = targets.len();
        assert_eq!(x.len(), rows * v, "cross_entropy_backward_f32: logits are not targets.len() rows of v");
        assert_eq!(dx.len(), x.len(), "cross_entropy_backward_f32: dx and logits lengths differ");
        assert_eq!(lse.len(), rows, "cross_entropy_backward_f32: lse needs one per row");
        if rows == 0 || v == 0 {
            return Ok(());
        }
        let (r, n) = dims(rows, v, "cross_entropy_backward_f32");
        let f = self.function("softmax", "cross_entropy_backward_f32")?;
        // Reads x, lse and the targets, writes dx; per element a subtract, an exp, a multiply.
        let cost = Cost { bytes: (8 * rows * v + 12 * rows) as f64, flops: (3 * rows * v) as f64 };
        let _timed = self.timed("cross_entropy_backward_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<rows as u32, ROW_BLOCK, 0, stream>>>(
                dx.as_device_ptr(),
                x.as_device_ptr(),
                lse.as_device_ptr(),
                targets.as_device_ptr(),
                ignore_index,
                scale,
                r,
                n
            ))
        }
    }
}
