//! Launchers of `cu/elementwise.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use cust::error::CudaResult;
use cust::prelude::*;

impl Gpu {
    /// `out[i] = op(x[i])` — twin of `cpu::elementwise::unary` (op codes in the same order).
    pub fn unary_f32(
        &self,
        op: i32,
        p0: f32,
        p1: f32,
        x: &DeviceSlice<f32>,
        out: &mut DeviceSlice<f32>,
    ) -> CudaResult<()> {
        assert_eq!(x.len(), out.len(), "unary_f32: input and output lengths differ");
        let f = self.function("elementwise", "unary_f32")?;
        let _timed = self.timed("unary_f32", Cost::default());
        let (n, stream) = (x.len(), &self.stream);
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(out.as_device_ptr(), x.as_device_ptr(), op, p0, p1, n as i64))
        }
    }

    /// `out[i] = a[i] op b[i]` — twin of `cpu::elementwise::binary` on contiguous operands.
    pub fn binary_f32(
        &self,
        op: i32,
        a: &DeviceSlice<f32>,
        b: &DeviceSlice<f32>,
        out: &mut DeviceSlice<f32>,
    ) -> CudaResult<()> {
        assert!(a.len() == out.len() && b.len() == out.len(), "binary_f32: operand lengths differ");
        let f = self.function("elementwise", "binary_f32")?;
        let _timed = self.timed("binary_f32", Cost::default());
        let (n, stream) = (out.len(), &self.stream);
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(out.as_device_ptr(), a.as_device_ptr(), b.as_device_ptr(), op, n as i64))
        }
    }
}
