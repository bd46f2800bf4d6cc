//! Launchers of `cu/elementwise.cu`.

use super::{grid_for, Cost, Gpu, Strided, BLOCK};
use crate::codes::{BinaryOp, UnaryOp};
use crate::error::{check_len, to_i64, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

// SAFETY: `#[repr(i32)]` enums, passed as the C `enum ... : int` of codes.cuh.
unsafe impl DeviceCopy for UnaryOp {}
// SAFETY: as above.
unsafe impl DeviceCopy for BinaryOp {}

/// The parameter of `unary_f32` (`struct UnaryParams` in cu/elementwise.cu): 40 bytes.
/// `p0, p1` are the op's parameters (`Powf`: exponent `p0`; `Affine`: `x * p0 + p1`).
#[repr(C)]
#[derive(Clone, Copy)]
struct UnaryParams {
    out: DevicePointer<f32>,
    x: DevicePointer<f32>,
    n: i64,
    op: UnaryOp,
    p0: f32,
    p1: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<UnaryParams>() == 40);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for UnaryParams {}

/// The parameter of `binary_f32` (`struct BinaryParams`): 40 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct BinaryParams {
    out: DevicePointer<f32>,
    a: DevicePointer<f32>,
    b: DevicePointer<f32>,
    n: i64,
    op: BinaryOp,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<BinaryParams>() == 40);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for BinaryParams {}

/// The parameter of `unary_strided_f32` (`struct UnaryStridedParams`): 152 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnaryStridedParams {
    out: DevicePointer<f32>,
    x: DevicePointer<f32>,
    lx: Strided,
    n: i64,
    op: UnaryOp,
    p0: f32,
    p1: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<UnaryStridedParams>() == 152);
// SAFETY: device pointers, numbers and a `Strided`, laid out as the C struct.
unsafe impl DeviceCopy for UnaryStridedParams {}

/// The parameter of `binary_strided_f32` (`struct BinaryStridedParams`): 264 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct BinaryStridedParams {
    out: DevicePointer<f32>,
    a: DevicePointer<f32>,
    b: DevicePointer<f32>,
    la: Strided,
    lb: Strided,
    n: i64,
    op: BinaryOp,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<BinaryStridedParams>() == 264);
// SAFETY: device pointers, numbers and `Strided`s, laid out as the C struct.
unsafe impl DeviceCopy for BinaryStridedParams {}

/// Napkin FLOPs per element of unary op `op`, counting a transcendental (exp, log, tanh,
/// pow) or a division as one.
fn unary_flops(op: UnaryOp) -> f64 {
    use UnaryOp::*;
    match op {
        Neg | Exp | Log | Sqrt | Rsqrt | Tanh | Powf => 1.0,
        Sigmoid => 3.0,  // exp, add, div
        Silu => 4.0,     // sigmoid, mul
        Softplus => 5.0, // abs, exp, log1p, max, add
        Affine => 2.0,   // mul, add
    }
}

impl Gpu {
    /// `out[i] = op(x[i])` — twin of `ops::elementwise::cpu::unary`; `p0, p1` as in [`UnaryOp`].
    pub fn unary_f32(
        &self,
        op: UnaryOp,
        p0: f32,
        p1: f32,
        x: &DeviceSlice<f32>,
        out: &mut DeviceSlice<f32>,
    ) -> Result<()> {
        const K: &str = "unary_f32";
        let n = out.len();
        check_len(K, "x", x.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let params =
            UnaryParams { out: out.as_device_ptr(), x: x.as_device_ptr(), n: to_i64(K, "n", n)?, op, p0, p1, pad: 0 };
        self.launch(K, grid_for(n), BLOCK, 0, params, Cost::f32s(2 * n).with_flops(unary_flops(op) * n as f64))
    }

    /// `out[i] = a[i] op b[i]` — twin of `ops::elementwise::cpu::binary` on contiguous operands.
    pub fn binary_f32(
        &self,
        op: BinaryOp,
        a: &DeviceSlice<f32>,
        b: &DeviceSlice<f32>,
        out: &mut DeviceSlice<f32>,
    ) -> Result<()> {
        const K: &str = "binary_f32";
        let n = out.len();
        check_len(K, "a", a.len(), n)?;
        check_len(K, "b", b.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let params = BinaryParams {
            out: out.as_device_ptr(),
            a: a.as_device_ptr(),
            b: b.as_device_ptr(),
            n: to_i64(K, "n", n)?,
            op,
            pad: 0,
        };
        self.launch(K, grid_for(n), BLOCK, 0, params, Cost::f32s(3 * n).with_flops(n as f64))
    }

    /// `out[i] = op(x[lx(i)])` for the view `lx` of the buffer `x`; `out` is contiguous in the
    /// view's row-major order — twin of `ops::elementwise::cpu::unary` with a strided layout.
    pub fn unary_strided_f32(
        &self,
        op: UnaryOp,
        p0: f32,
        p1: f32,
        x: &DeviceSlice<f32>,
        lx: Strided,
        out: &mut DeviceSlice<f32>,
    ) -> Result<()> {
        const K: &str = "unary_strided_f32";
        let n = out.len();
        lx.check(K, "lx", x.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let params = UnaryStridedParams {
            out: out.as_device_ptr(),
            x: x.as_device_ptr(),
            lx,
            n: to_i64(K, "n", n)?,
            op,
            p0,
            p1,
            pad: 0,
        };
        let cost = Cost::f32s(lx.footprint() + n).with_flops(unary_flops(op) * n as f64);
        self.launch(K, grid_for(n), BLOCK, 0, params, cost)
    }

    /// `out[i] = a[la(i)] op b[lb(i)]`, where `la` and `lb` are the operands' views already
    /// broadcast to the output's shape (stride 0 on broadcast axes) and `out` is contiguous —
    /// twin of `ops::elementwise::cpu::binary` with strided layouts.
    pub fn binary_strided_f32(
        &self,
        op: BinaryOp,
        a: &DeviceSlice<f32>,
        la: Strided,
        b: &DeviceSlice<f32>,
        lb: Strided,
        out: &mut DeviceSlice<f32>,
    ) -> Result<()> {
        const K: &str = "binary_strided_f32";
        let n = out.len();
        la.check(K, "la", a.len(), n)?;
        lb.check(K, "lb", b.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let params = BinaryStridedParams {
            out: out.as_device_ptr(),
            a: a.as_device_ptr(),
            b: b.as_device_ptr(),
            la,
            lb,
            n: to_i64(K, "n", n)?,
            op,
            pad: 0,
        };
        let cost = Cost::f32s(la.footprint() + lb.footprint() + n).with_flops(n as f64);
        self.launch(K, grid_for(n), BLOCK, 0, params, cost)
    }
}
