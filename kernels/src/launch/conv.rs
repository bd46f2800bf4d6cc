//! Launchers of `cu/conv.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use cust::error::CudaResult;
use cust::memory::DevicePointer;
use cust::prelude::*;

/// Threads per block of the dw/db kernel (`CONV_THREADS` in conv.cu).
const CONV_THREADS: u32 = 256;
/// Widest kernel the dw/db kernel takes (`CONV_MAX_K` in conv.cu): its partials live in registers.
pub const CONV_MAX_K: usize = 8;

/// Panics unless `k > 0` and every size fits the kernels' `int`s (callers check lengths).
fn check_shape(name: &str, b: usize, c: usize, l: usize, k: usize) {
    assert!(k > 0, "{name}: k must be positive");
    assert!(
        b <= i32::MAX as usize && c <= i32::MAX as usize && l <= i32::MAX as usize && k <= i32::MAX as usize,
        "{name}: too large"
    );
}

impl Gpu {
    /// `y` (B, C, L) of the depthwise causal conv of `x` (B, C, L) with `w` (C, K) and an
    /// optional `bias` (C) — twin of `cpu::conv::conv1d_causal_forward`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv1d_causal_forward_f32(
        &self,
        x: &DeviceSlice<f32>,
        w: &DeviceSlice<f32>,
        bias: Option<&DeviceSlice<f32>>,
        y: &mut DeviceSlice<f32>,
        b: usize,
        c: usize,
        l: usize,
        k: usize,
    ) -> CudaResult<()> {
        check_shape("conv1d_causal_forward_f32", b, c, l, k);
        let n = b * c * l;
        assert!(
            x.len() == n && y.len() == n && w.len() == c * k && bias.is_none_or(|bs| bs.len() == c),
            "conv1d_causal_forward_f32: buffer sizes do not match (b, c, l, k)"
        );
        if n == 0 {
            return Ok(());
        }
        let bias_ptr = bias.map_or(DevicePointer::null(), |bs| bs.as_device_ptr());
        let f = self.function("conv", "conv1d_causal_forward_f32")?;
        // Reads x, w (and bias), writes y; 2K FLOPs per output (padding taps counted).
        let bytes = 4 * (2 * n + c * k + if bias.is_some() { c } else { 0 });
        let cost = Cost { bytes: bytes as f64, flops: (2 * k * n) as f64 };
        let _timed = self.timed("conv1d_causal_forward_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                y.as_device_ptr(), x.as_device_ptr(), w.as_device_ptr(), bias_ptr,
                b as i32, c as i32, l as i32, k as i32
            ))
        }
    }

    /// `(dx, dw, db)` of the depthwise causal conv from the saved `x`, `w` and upstream `dy`
    /// — twin of `cpu::conv::conv1d_causal_backward` (`db` always written). `k` must be at
    /// most `CONV_MAX_K`. dw and db are reproducible: no atomics, fixed summation order.
    #[allow(clippy::too_many_arguments)]
    pub fn conv1d_causal_backward_f32(
        &self,
        x: &DeviceSlice<f32>,
        w: &DeviceSlice<f32>,
        dy: &DeviceSlice<f32>,
        dx: &mut DeviceSlice<f32>,
        dw: &mut DeviceSlice<f32>,
        db: &mut DeviceSlice<f32>,
        b: usize,
        c: usize,
        l: usize,
        k: usize,
    ) -> CudaResult<()> {
        check_shape("conv1d_causal_backward_f32", b, c, l, k);
        assert!(k <= CONV_MAX_K, "conv1d_causal_backward_f32: k = {k} exceeds {CONV_MAX_K}");
        let n = b * c * l;
        assert!(
            x.len() == n && dy.len() == n && dx.len() == n && w.len() == c * k && dw.len() == c * k && db.len() == c,
            "conv1d_causal_backward_f32: buffer sizes do not match (b, c, l, k)"
        );
        let stream = &self.stream;
        if n > 0 {
            // In a block, so the guard below times this launch only.
            let f = self.function("conv", "conv1d_causal_backward_dx_f32")?;
            // Reads dy and w, writes dx; 2K FLOPs per element.
            let cost = Cost { bytes: (4 * (2 * n + c * k)) as f64, flops: (2 * k * n) as f64 };
            let _timed = self.timed("conv1d_causal_backward_dx_f32", cost);
            unsafe {
                launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                    dx.as_device_ptr(), w.as_device_ptr(), dy.as_device_ptr(), b as i32, c as i32, l as i32, k as i32
                ))?;
            }
        }
        if c == 0 {
            return Ok(());
        }
        // With b*l == 0 every block sums nothing and writes zeros, like the CPU twin.
        let f = self.function("conv", "conv1d_causal_backward_dw_f32")?;
        // Reads x and dy again, writes dw and db; 2K + 1 FLOPs per element.
        let cost = Cost { bytes: (4 * (2 * n + c * k + c)) as f64, flops: ((2 * k + 1) * n) as f64 };
        let _timed = self.timed("conv1d_causal_backward_dw_f32", cost);
        unsafe {
            launch!(f<<<c as u32, CONV_THREADS, 0, stream>>>(
                dw.as_device_ptr(), db.as_device_ptr(), x.as_device_ptr(), dy.as_device_ptr(),
                b as i32, c as i32, l as i32, k as i32
            ))
        }
    }
}
