//! Launchers of `cu/scan.cu`.

use super::{Cost, Gpu};
use cust::error::CudaResult;
use cust::memory::DevicePointer;
use cust::prelude::*;

/// Threads per block of the scan kernel (`SCAN_THREADS` in scan.cu).
const SCAN_THREADS: u32 = 128;
/// Most states per channel the kernel holds in registers (`SCAN_MAX_STATE` in scan.cu).
pub const SCAN_MAX_STATE: usize = 16;

impl Gpu {
    /// Selective-scan forward — twin of `cpu::scan::selective_scan_forward`. Layouts:
    /// `u, delta, z, out: (B, D, L)`, `a: (D, N)`, `bm, cm: (B, N, L)`,
    /// `d_skip, delta_bias: (D)`, `last_state: (B, D, N)`,
    /// `chunk_states: (B, D, ceil(L / chunk), N)` (the state entering each chunk).
    /// `n_state` must be at most `SCAN_MAX_STATE` (16).
    #[allow(clippy::too_many_arguments)]
    pub fn selective_scan_forward_f32(
        &self,
        u: &DeviceSlice<f32>,
        delta: &DeviceSlice<f32>,
        a: &DeviceSlice<f32>,
        bm: &DeviceSlice<f32>,
        cm: &DeviceSlice<f32>,
        d_skip: &DeviceSlice<f32>,
        z: Option<&DeviceSlice<f32>>,
        delta_bias: Option<&DeviceSlice<f32>>,
        softplus: bool,
        out: &mut DeviceSlice<f32>,
        last_state: &mut DeviceSlice<f32>,
        chunk_states: &mut DeviceSlice<f32>,
        batch: usize,
        dim: usize,
        len: usize,
        n_state: usize,
        chunk: usize,
    ) -> CudaResult<()> {
        assert!(
            (1..=SCAN_MAX_STATE).contains(&n_state),
            "selective_scan_forward_f32: n_state = {n_state} not in 1..={SCAN_MAX_STATE}"
        );
        assert!(chunk > 0, "selective_scan_forward_f32: chunk must be positive");
        let (bdl, bnl) = (batch * dim * len, batch * n_state * len);
        let n_chunks = len.div_ceil(chunk);
        assert!(
            u.len() == bdl
                && delta.len() == bdl
                && out.len() == bdl
                && a.len() == dim * n_state
                && bm.len() == bnl
                && cm.len() == bnl
                && d_skip.len() == dim
                && z.is_none_or(|z| z.len() == bdl)
                && delta_bias.is_none_or(|b| b.len() == dim)
                && last_state.len() == batch * dim * n_state
                && chunk_states.len() == batch * dim * n_chunks * n_state,
            "selective_scan_forward_f32: buffer sizes do not match (B, D, L, N, chunk)"
        );
        assert!(
            bdl <= i32::MAX as usize && bnl <= i32::MAX as usize && chunk <= i32::MAX as usize,
            "selective_scan_forward_f32: too large"
        );
        let channels = batch * dim;
        if channels == 0 {
            return Ok(());
        }
        let z = z.map_or(DevicePointer::null(), |z| z.as_device_ptr());
        let bias = delta_bias.map_or(DevicePointer::null(), |b| b.as_device_ptr());
        let f = self.function("scan", "selective_scan_forward_f32")?;
        let _timed = self.timed("selective_scan_forward_f32", Cost::default());
        let stream = &self.stream;
        let grid = channels.div_ceil(SCAN_THREADS as usize) as u32;
        unsafe {
            launch!(f<<<grid, SCAN_THREADS, 0, stream>>>(
                out.as_device_ptr(), last_state.as_device_ptr(), chunk_states.as_device_ptr(),
                u.as_device_ptr(), delta.as_device_ptr(), a.as_device_ptr(), bm.as_device_ptr(),
                cm.as_device_ptr(), d_skip.as_device_ptr(), z, bias, softplus as i32,
                batch as i32, dim as i32, len as i32, n_state as i32, chunk as i32
            ))
        }
    }
}
