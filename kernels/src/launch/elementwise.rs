//! Launchers of `cu/elementwise.cu`.

use super::copy::check_len;
use super::{grid_for, Cost, Gpu, Strided, BLOCK};
use cust::error::CudaResult;
use cust::prelude::*;

/// Napkin FLOPs per element of unary op `op` (the order of `UnaryOp`), counting a
/// transcendental (exp, log, tanh, pow) or a division as one.
fn unary_flops(op: i32) -> f64 {
    match op {
        0 | 1 | 2 | 3 | 4 | 8 | 9 => 1.0, // neg, exp, log, sqrt, rsqrt, tanh, powf
        5 => 3.0,                         // sigmoid: exp, add, div
        6 => 4.0,                         // silu: sigmoid, mul
        7 => 5.0,                         // softplus: abs, exp, log1p, max, add
        _ => 2.0,                         // affine: mul, add
    }
}

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
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.function("elementwise", "unary_f32")?;
        let _timed = self.timed("unary_f32", Cost::f32s(2 * n).with_flops(unary_flops(op) * n as f64));
        let stream = &self.stream;
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
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.function("elementwise", "binary_f32")?;
        let _timed = self.timed("binary_f32", Cost::f32s(3 * n).with_flops(n as f64));
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(out.as_device_ptr(), a.as_device_ptr(), b.as_device_ptr(), op, n as i64))
        }
    }

    /// `out[i] = op(x[lx(i)])` for the view `lx` of the buffer `x`; `out` is contiguous in the
    /// view's row-major order — twin of `cpu::elementwise::unary` with a strided layout.
    #[allow(clippy::too_many_arguments)]
    pub fn unary_strided_f32(
        &self,
        op: i32,
        p0: f32,
        p1: f32,
        x: &DeviceSlice<f32>,
        lx: Strided,
        out: &mut DeviceSlice<f32>,
    ) -> CudaResult<()> {
        let n = out.len();
        assert_eq!(lx.numel(), n, "unary_strided_f32: view and output sizes differ");
        assert!(lx.end() <= x.len(), "unary_strided_f32: view reaches past the input buffer");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("elementwise", "unary_strided_f32")?;
        let cost = Cost::f32s(lx.footprint() + n).with_flops(unary_flops(op) * n as f64);
        let _timed = self.timed("unary_strided_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                out.as_device_ptr(), x.as_device_ptr(), lx, op, p0, p1, check_len("unary_strided_f32", n)
            ))
        }
    }

    /// `out[i] = a[la(i)] op b[lb(i)]`, where `la` and `lb` are the operands' views already
    /// broadcast to the output's shape (stride 0 on broadcast axes) and `out` is contiguous —
    /// twin of `cpu::elementwise::binary` with strided layouts.
    pub fn binary_strided_f32(
        &self,
        op: i32,
        a: &DeviceSlice<f32>,
        la: Strided,
        b: &DeviceSlice<f32>,
        lb: Strided,
        out: &mut DeviceSlice<f32>,
    ) -> CudaResult<()> {
        let n = out.len();
        assert!(la.numel() == n && lb.numel() == n, "binary_strided_f32: operand views and output sizes differ");
        assert!(la.end() <= a.len() && lb.end() <= b.len(), "binary_strided_f32: a view reaches past its buffer");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("elementwise", "binary_strided_f32")?;
        let cost = Cost::f32s(la.footprint() + lb.footprint() + n).with_flops(n as f64);
        let _timed = self.timed("binary_strided_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                out.as_device_ptr(), a.as_device_ptr(), la, b.as_device_ptr(), lb, op, check_len("binary_strided_f32", n)
            ))
        }
    }
}
