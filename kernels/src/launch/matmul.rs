//! Launchers of `cu/matmul.cu`.

use super::{Cost, Gpu};
use cust::error::CudaResult;
use cust::prelude::*;

impl Gpu {
    /// `c = a b` for row-major contiguous `a (m, k)`, `b (k, n)`, `c (m, n)` — twin of
    /// `cpu::matmul::matmul` with batch 1 (kernels/cu/matmul.cu has the tiling).
    pub fn matmul_f32(
        &self,
        a: &DeviceSlice<f32>,
        b: &DeviceSlice<f32>,
        c: &mut DeviceSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> CudaResult<()> {
        assert!(
            a.len() == m * k && b.len() == k * n && c.len() == m * n,
            "matmul_f32: buffer sizes do not match (m, n, k)"
        );
        let f = self.function("matmul", "matmul_f32")?;
        let _timed = self.timed("matmul_f32", Cost::default());
        let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid, 256, 0, stream>>>(a.as_device_ptr(), b.as_device_ptr(), c.as_device_ptr(), m as i32, n as i32, k as i32))
        }
    }
}
