//! Launchers of `cu/adamw.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use crate::error::{check_len, to_i64, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Napkin FLOPs per element: m 3, v 4, the bias-corrected ratio 5 (mul, mul, sqrt, add,
/// div), weight decay 2, the step 2.
const FLOPS: f64 = 16.0;

/// The hyperparameters of one AdamW step, as the kernel takes them. `bias1 = 1 - b1^t`,
/// `bias2 = 1 - b2^t` at the 1-based step t; `wd` is 0 for a parameter that does not decay.
/// The betas are f64 because the kernel needs `1 - b` to f32 precision, which
/// `1 - 0.999f32` is not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub b1: f64,
    pub b2: f64,
    pub eps: f32,
    pub wd: f32,
    pub bias1: f32,
    pub bias2: f32,
}

/// The parameter of `adamw_step_f32` (`struct AdamwStepParams` in cu/adamw.cu): 80 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamwStepParams {
    p: DevicePointer<f32>,
    g: DevicePointer<f32>,
    m: DevicePointer<f32>,
    v: DevicePointer<f32>,
    n: i64,
    beta1: f64,
    beta2: f64,
    lr: f32,
    eps: f32,
    wd: f32,
    bias1: f32,
    bias2: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<AdamwStepParams>() == 80);
// SAFETY: device pointers and numbers only, laid out as the C struct (no references).
unsafe impl DeviceCopy for AdamwStepParams {}

impl Gpu {
    /// One AdamW step in place: `p`, `m`, `v` updated from `g` (all of one length, not
    /// overlapping) — twin of `ops::adamw::cpu::adamw_step`.
    pub fn adamw_step_f32(
        &self,
        p: &mut DeviceSlice<f32>,
        g: &DeviceSlice<f32>,
        m: &mut DeviceSlice<f32>,
        v: &mut DeviceSlice<f32>,
        h: AdamWStep,
    ) -> Result<()> {
        const K: &str = "adamw_step_f32";
        let n = p.len();
        check_len(K, "g", g.len(), n)?;
        check_len(K, "m", m.len(), n)?;
        check_len(K, "v", v.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let params = AdamwStepParams {
            p: p.as_device_ptr(),
            g: g.as_device_ptr(),
            m: m.as_device_ptr(),
            v: v.as_device_ptr(),
            n: to_i64(K, "n", n)?,
            beta1: h.b1,
            beta2: h.b2,
            lr: h.lr,
            eps: h.eps,
            wd: h.wd,
            bias1: h.bias1,
            bias2: h.bias2,
            pad: 0,
        };
        // reads p, g, m, v; writes p, m, v
        self.launch(K, grid_for(n), BLOCK, 0, params, Cost::f32s(7 * n).with_flops(FLOPS * n as f64))
    }
}
