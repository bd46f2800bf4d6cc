//! Launcher of `cu/flip.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use crate::error::{check_len, to_i64, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// The parameter of `flip_f32` (`struct FlipParams` in cu/flip.cu): 40 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlipParams {
    y: DevicePointer<f32>,
    x: DevicePointer<f32>,
    total: i64,
    n: i64,
    inner: i64,
}
const _: () = assert!(std::mem::size_of::<FlipParams>() == 40);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for FlipParams {}

impl Gpu {
    /// `y[o, i, j] = x[o, n - 1 - i, j]` for contiguous `x` and `y` of `outer * n * inner`
    /// elements — twin of `ops::flip::cpu::flip`.
    pub fn flip_f32(
        &self,
        x: &DeviceSlice<f32>,
        y: &mut DeviceSlice<f32>,
        (outer, n, inner): (usize, usize, usize),
    ) -> Result<()> {
        const K: &str = "flip_f32";
        let total = outer * n * inner;
        check_len(K, "x", x.len(), total)?;
        check_len(K, "y", y.len(), total)?;
        if total == 0 {
            return Ok(());
        }
        let params = FlipParams {
            y: y.as_device_ptr(),
            x: x.as_device_ptr(),
            total: to_i64(K, "total", total)?,
            n: to_i64(K, "n", n)?,
            inner: to_i64(K, "inner", inner)?,
        };
        // reads x, writes y
        self.launch(K, grid_for(total), BLOCK, 0, params, Cost::f32s(2 * total))
    }
}
