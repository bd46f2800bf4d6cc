//! Launchers of `cu/adamw.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use cust::error::CudaResult;
use cust::prelude::*;

/// Napkin FLOPs per element: m 3, v 4, the bias-corrected ratio 5 (mul, mul, sqrt, add,
/// div), weight decay 2, the step 2.
const FLOPS: f64 = 16.0;

impl Gpu {
    /// One AdamW step in place: `p`, `m`, `v` updated from `g` (all of one length, not
    /// overlapping) — twin of `cpu::adamw::adamw_step`. `bias1 = 1 - b1^t`, `bias2 = 1 - b2^t`
    /// at the 1-based step t; `wd` is 0 for a parameter that does not decay. The betas are
    /// f64 because the kernel needs `1 - b` to f32 precision, which `1 - 0.999f32` is not.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_step_f32(
        &self,
        p: &mut DeviceSlice<f32>,
        g: &DeviceSlice<f32>,
        m: &mut DeviceSlice<f32>,
        v: &mut DeviceSlice<f32>,
        lr: f32,
        b1: f64,
        b2: f64,
        eps: f32,
        wd: f32,
        bias1: f32,
        bias2: f32,
    ) -> CudaResult<()> {
        let n = p.len();
        assert!(g.len() == n && m.len() == n && v.len() == n, "adamw_step_f32: p, g, m, v lengths differ");
        if n == 0 {
            return Ok(());
        }
        let f = self.function("adamw", "adamw_step_f32")?;
        // reads p, g, m, v; writes p, m, v
        let _timed = self.timed("adamw_step_f32", Cost::f32s(7 * n).with_flops(FLOPS * n as f64));
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(
                p.as_device_ptr(), g.as_device_ptr(), m.as_device_ptr(), v.as_device_ptr(), n as i64,
                lr, b1, b2, eps, wd, bias1, bias2
            ))
        }
    }
}
