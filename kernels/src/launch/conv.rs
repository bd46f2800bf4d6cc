//! Launchers of `cu/conv.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block of the dw/db kernel (`CONV_THREADS` in conv.cu).
const CONV_THREADS: u32 = 256;
/// Widest kernel the dw/db kernel takes (`CONV_MAX_K` in conv.cu): its partials live in registers.
pub const CONV_MAX_K: usize = 8;

/// The sizes of a depthwise causal conv: batch `b`, channels `c`, length `l`, taps `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub b: usize,
    pub c: usize,
    pub l: usize,
    pub k: usize,
}

impl ConvDims {
    /// `[b, c, l, k]` as the kernels' `int`s, or an error unless `k > 0` and each fits.
    fn ints(self, kernel: &'static str) -> Result<[i32; 4]> {
        ensure(self.k > 0, kernel, || "k must be positive".into())?;
        Ok([
            to_i32(kernel, "b", self.b)?,
            to_i32(kernel, "c", self.c)?,
            to_i32(kernel, "l", self.l)?,
            to_i32(kernel, "k", self.k)?,
        ])
    }
}

/// The gradients the backward writes: `dx` (B, C, L), `dw` (C, K), `db` (C).
pub struct ConvGrads<'a> {
    pub dx: &'a mut DeviceSlice<f32>,
    pub dw: &'a mut DeviceSlice<f32>,
    pub db: &'a mut DeviceSlice<f32>,
}

/// The parameter of `conv1d_causal_forward_f32` (`struct ConvForwardParams` in cu/conv.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct ConvForwardParams {
    y: DevicePointer<f32>,
    x: DevicePointer<f32>,
    w: DevicePointer<f32>,
    /// Null for no bias.
    bias: DevicePointer<f32>,
    b: i32,
    c: i32,
    l: i32,
    k: i32,
}
const _: () = assert!(std::mem::size_of::<ConvForwardParams>() == 48);
// SAFETY: device pointers and integers only, laid out as the C struct.
unsafe impl DeviceCopy for ConvForwardParams {}

/// The parameter of `conv1d_causal_backward_dx_f32` (`struct ConvBackwardDxParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ConvBackwardDxParams {
    dx: DevicePointer<f32>,
    w: DevicePointer<f32>,
    dy: DevicePointer<f32>,
    b: i32,
    c: i32,
    l: i32,
    k: i32,
}
const _: () = assert!(std::mem::size_of::<ConvBackwardDxParams>() == 40);
// SAFETY: device pointers and integers only, laid out as the C struct.
unsafe impl DeviceCopy for ConvBackwardDxParams {}

/// The parameter of `conv1d_causal_backward_dw_f32` (`struct ConvBackwardDwParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ConvBackwardDwParams {
    dw: DevicePointer<f32>,
    db: DevicePointer<f32>,
    x: DevicePointer<f32>,
    dy: DevicePointer<f32>,
    b: i32,
    c: i32,
    l: i32,
    k: i32,
}
const _: () = assert!(std::mem::size_of::<ConvBackwardDwParams>() == 48);
// SAFETY: device pointers and integers only, laid out as the C struct.
unsafe impl DeviceCopy for ConvBackwardDwParams {}

impl Gpu {
    /// `y` (B, C, L) of the depthwise causal conv of `x` (B, C, L) with `w` (C, K) and an
    /// optional `bias` (C) — twin of `ops::conv::cpu::conv1d_causal_forward`.
    pub fn conv1d_causal_forward_f32(
        &self,
        x: &DeviceSlice<f32>,
        w: &DeviceSlice<f32>,
        bias: Option<&DeviceSlice<f32>>,
        y: &mut DeviceSlice<f32>,
        dims: ConvDims,
    ) -> Result<()> {
        const K: &str = "conv1d_causal_forward_f32";
        let [b32, c32, l32, k32] = dims.ints(K)?;
        let ConvDims { b, c, l, k } = dims;
        let n = b * c * l;
        check_len(K, "x", x.len(), n)?;
        check_len(K, "y", y.len(), n)?;
        check_len(K, "w", w.len(), c * k)?;
        if let Some(bs) = bias {
            check_len(K, "bias", bs.len(), c)?;
        }
        if n == 0 {
            return Ok(());
        }
        let bias_ptr = bias.map_or(DevicePointer::null(), |bs| bs.as_device_ptr());
        let params = ConvForwardParams {
            y: y.as_device_ptr(),
            x: x.as_device_ptr(),
            w: w.as_device_ptr(),
            bias: bias_ptr,
            b: b32,
            c: c32,
            l: l32,
            k: k32,
        };
        // Reads x, w (and bias), writes y; 2K FLOPs per output (padding taps counted).
        let bytes = 4 * (2 * n + c * k + if bias.is_some() { c } else { 0 });
        let cost = Cost { bytes: bytes as f64, flops: (2 * k * n) as f64 };
        self.launch(K, grid_for(n), BLOCK, 0, params, cost)
    }

    /// `(dx, dw, db)` of the depthwise causal conv from the saved `x`, `w` and upstream `dy`
    /// — twin of `ops::conv::cpu::conv1d_causal_backward` (`db` always written). `k` must be at
    /// most `CONV_MAX_K`. dw and db are reproducible: no atomics, fixed summation order.
    pub fn conv1d_causal_backward_f32(
        &self,
        x: &DeviceSlice<f32>,
        w: &DeviceSlice<f32>,
        dy: &DeviceSlice<f32>,
        grads: ConvGrads<'_>,
        dims: ConvDims,
    ) -> Result<()> {
        const K: &str = "conv1d_causal_backward_f32";
        let [b32, c32, l32, k32] = dims.ints(K)?;
        let ConvDims { b, c, l, k } = dims;
        let ConvGrads { dx, dw, db } = grads;
        ensure(k <= CONV_MAX_K, K, || format!("k = {k} exceeds {CONV_MAX_K}"))?;
        let n = b * c * l;
        for (name, len, want) in [
            ("x", x.len(), n),
            ("dy", dy.len(), n),
            ("dx", dx.len(), n),
            ("w", w.len(), c * k),
            ("dw", dw.len(), c * k),
            ("db", db.len(), c),
        ] {
            check_len(K, name, len, want)?;
        }
        if n > 0 {
            let params = ConvBackwardDxParams {
                dx: dx.as_device_ptr(),
                w: w.as_device_ptr(),
                dy: dy.as_device_ptr(),
                b: b32,
                c: c32,
                l: l32,
                k: k32,
            };
            // Reads dy and w, writes dx; 2K FLOPs per element.
            let cost = Cost { bytes: (4 * (2 * n + c * k)) as f64, flops: (2 * k * n) as f64 };
            self.launch("conv1d_causal_backward_dx_f32", grid_for(n), BLOCK, 0, params, cost)?;
        }
        if c == 0 {
            return Ok(());
        }
        // With b*l == 0 every block sums nothing and writes zeros, like the CPU twin.
        let params = ConvBackwardDwParams {
            dw: dw.as_device_ptr(),
            db: db.as_device_ptr(),
            x: x.as_device_ptr(),
            dy: dy.as_device_ptr(),
            b: b32,
            c: c32,
            l: l32,
            k: k32,
        };
        // Reads x and dy again, writes dw and db; 2K + 1 FLOPs per element.
        let cost = Cost { bytes: (4 * (2 * n + c * k + c)) as f64, flops: ((2 * k + 1) * n) as f64 };
        self.launch("conv1d_causal_backward_dw_f32", c as u32, CONV_THREADS, 0, params, cost)
    }
}
