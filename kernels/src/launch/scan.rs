//! Launchers of `cu/scan.cu`.

use super::{Cost, Gpu};
use cust::error::CudaResult;
use cust::memory::DevicePointer;
use cust::prelude::*;

/// Threads per block of the forward v1 kernel (`SCAN_THREADS` in scan.cu).
const SCAN_THREADS: u32 = 128;
/// Most states per channel the kernel holds in registers (`SCAN_MAX_STATE` in scan.cu).
pub const SCAN_MAX_STATE: usize = 16;
/// Forward v2 and backward: channels per block and threads per block (`SCAN_BWD_CH`,
/// `SCAN_BWD_THREADS`): 16 lanes per channel.
const SCAN_BWD_CH: usize = 8;
const SCAN_BWD_THREADS: u32 = 128;
/// Longest `chunk` the backward takes: 16 windows of 16 steps (`SCAN_BWD_MAX_WINS` x `SCAN_BWD_WIN`).
pub const SCAN_BWD_MAX_CHUNK: usize = 256;
/// The scan kernel versions the engine runs (the faster ones; gpu-check times both).
pub const SCAN_FWD_VERSION: u32 = 2;
pub const SCAN_BWD_VERSION: u32 = 2;

impl Gpu {
    /// Selective-scan forward — twin of `cpu::scan::selective_scan_forward`. Layouts:
    /// `u, delta, z, out: (B, D, L)`, `a: (D, N)`, `bm, cm: (B, N, L)`,
    /// `d_skip, delta_bias: (D)`, `last_state: (B, D, N)`,
    /// `chunk_states: (B, D, ceil(L / chunk), N)` (the state entering each chunk).
    /// `n_state` must be at most `SCAN_MAX_STATE` (16). `version` 1 is one thread per channel
    /// (the baseline), 2 is 16 lanes per channel ([`SCAN_FWD_VERSION`], the selected one).
    #[allow(clippy::too_many_arguments)]
    pub fn selective_scan_forward_f32(
        &self,
        version: u32,
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
            bdl <= i32::MAX as usize && bnl <= i32::MAX as usize && chunk <= i32::MAX as usize && batch <= 65535,
            "selective_scan_forward_f32: too large"
        );
        let channels = batch * dim;
        if channels == 0 {
            return Ok(());
        }
        let z = z.map_or(DevicePointer::null(), |z| z.as_device_ptr());
        let bias = delta_bias.map_or(DevicePointer::null(), |b| b.as_device_ptr());
        assert!(version == 1 || version == 2, "selective_scan_forward_f32: no version {version}");
        let v2 = version == 2;
        let kernel = if v2 { "selective_scan_forward_f32" } else { "selective_scan_forward_v1_f32" };
        let f = self.function("scan", kernel)?;
        // Bytes once each: read u, delta (+ z), Bm, Cm; write out, last_state, chunk_states.
        // FLOPs: ~5 per (b, d, t, n) (dt A, its exp, the update's mul and fma, C h).
        let zs = if z.is_null() { 0 } else { bdl };
        let bytes = 4 * (3 * bdl + zs + 2 * bnl + dim * n_state + 2 * dim + channels * (n_chunks + 1) * n_state);
        let _timed = self.timed(kernel, Cost { bytes: bytes as f64, flops: 5.0 * (bdl * n_state) as f64 });
        let stream = &self.stream;
        let (grid, block) = if v2 {
            ((dim.div_ceil(SCAN_BWD_CH) as u32, batch as u32, 1), SCAN_BWD_THREADS)
        } else {
            ((channels.div_ceil(SCAN_THREADS as usize) as u32, 1, 1), SCAN_THREADS)
        };
        unsafe {
            launch!(f<<<grid, block, 0, stream>>>(
                out.as_device_ptr(), last_state.as_device_ptr(), chunk_states.as_device_ptr(),
                u.as_device_ptr(), delta.as_device_ptr(), a.as_device_ptr(), bm.as_device_ptr(),
                cm.as_device_ptr(), d_skip.as_device_ptr(), z, bias, softplus as i32,
                batch as i32, dim as i32, len as i32, n_state as i32, chunk as i32
            ))
        }
    }

    /// Selective-scan backward — twin of `cpu::scan::selective_scan_backward`. Inputs as
    /// for forward plus the forward's `chunk_states: (B, D, ceil(L / chunk), N)` and `dout:
    /// (B, D, L)`; every gradient has its input's layout. `dz` must be given exactly when `z`
    /// is, `ddelta_bias` exactly when `delta_bias` is. All outputs are overwritten (the
    /// accumulated ones, `da, dbm, dcm, dd_skip, ddelta_bias`, are zeroed here on the stream
    /// first); those five are sums of atomics, so their last bits vary from run to run.
    /// `n_state <= 16`, `chunk <= SCAN_BWD_MAX_CHUNK` (256). `version` 1 keeps each step's
    /// decay in registers for the adjoint (more registers, fewer exps), 2 recomputes it
    /// ([`SCAN_BWD_VERSION`], selected: 2.70 vs 3.43 ms at B8 D1536 L2048 N16 on the H100).
    #[allow(clippy::too_many_arguments)]
    pub fn selective_scan_backward_f32(
        &self,
        version: u32,
        u: &DeviceSlice<f32>,
        delta: &DeviceSlice<f32>,
        a: &DeviceSlice<f32>,
        bm: &DeviceSlice<f32>,
        cm: &DeviceSlice<f32>,
        d_skip: &DeviceSlice<f32>,
        z: Option<&DeviceSlice<f32>>,
        delta_bias: Option<&DeviceSlice<f32>>,
        softplus: bool,
        chunk_states: &DeviceSlice<f32>,
        dout: &DeviceSlice<f32>,
        du: &mut DeviceSlice<f32>,
        ddelta: &mut DeviceSlice<f32>,
        da: &mut DeviceSlice<f32>,
        dbm: &mut DeviceSlice<f32>,
        dcm: &mut DeviceSlice<f32>,
        dd_skip: &mut DeviceSlice<f32>,
        dz: Option<&mut DeviceSlice<f32>>,
        ddelta_bias: Option<&mut DeviceSlice<f32>>,
        batch: usize,
        dim: usize,
        len: usize,
        n_state: usize,
        chunk: usize,
    ) -> CudaResult<()> {
        let x = ScanBwdArgs { u, delta, a, bm, cm, d_skip, z, delta_bias, softplus, chunk_states, dout };
        let g = ScanBwdOut { du, ddelta, da, dbm, dcm, dd_skip, dz, ddelta_bias };
        let kernel = match version {
            1 => "selective_scan_backward_v1_f32",
            2 => "selective_scan_backward_f32",
            _ => panic!("selective_scan_backward_f32: no version {version}"),
        };
        self.scan_backward(kernel, x, g, [batch, dim, len, n_state, chunk])
    }

    /// Size checks, zeroing of the accumulated outputs and the launch, for either variant.
    fn scan_backward(&self, kernel: &'static str, x: ScanBwdArgs, g: ScanBwdOut, sizes: [usize; 5]) -> CudaResult<()> {
        let [batch, dim, len, n_state, chunk] = sizes;
        let ScanBwdArgs { u, delta, a, bm, cm, d_skip, z, delta_bias, softplus, chunk_states, dout } = x;
        let ScanBwdOut { du, ddelta, da, dbm, dcm, dd_skip, dz, mut ddelta_bias } = g;
        assert!((1..=SCAN_MAX_STATE).contains(&n_state), "{kernel}: n_state = {n_state} not in 1..={SCAN_MAX_STATE}");
        assert!((1..=SCAN_BWD_MAX_CHUNK).contains(&chunk), "{kernel}: chunk = {chunk} not in 1..={SCAN_BWD_MAX_CHUNK}");
        assert!(z.is_some() == dz.is_some(), "{kernel}: dz must be given exactly when z is");
        assert!(
            delta_bias.is_some() == ddelta_bias.is_some(),
            "{kernel}: ddelta_bias must be given exactly when delta_bias is"
        );
        let (bdl, bnl, dn) = (batch * dim * len, batch * n_state * len, dim * n_state);
        let n_chunks = len.div_ceil(chunk);
        assert!(
            u.len() == bdl
                && delta.len() == bdl
                && dout.len() == bdl
                && du.len() == bdl
                && ddelta.len() == bdl
                && a.len() == dn
                && da.len() == dn
                && bm.len() == bnl
                && cm.len() == bnl
                && dbm.len() == bnl
                && dcm.len() == bnl
                && d_skip.len() == dim
                && dd_skip.len() == dim
                && z.is_none_or(|z| z.len() == bdl)
                && dz.as_ref().is_none_or(|dz| dz.len() == bdl)
                && delta_bias.is_none_or(|b| b.len() == dim)
                && ddelta_bias.as_ref().is_none_or(|b| b.len() == dim)
                && chunk_states.len() == batch * dim * n_chunks * n_state,
            "{kernel}: buffer sizes do not match (B, D, L, N, chunk)"
        );
        assert!(
            bdl <= i32::MAX as usize && bnl <= i32::MAX as usize && batch <= 65535,
            "{kernel}: too large (B * D * L must fit in i32, B in a grid's y)"
        );
        let stream = &self.stream;
        // The accumulated outputs start at zero (callers may pass uninitialised buffers).
        let accumulated =
            [Some(&mut *da), Some(&mut *dbm), Some(&mut *dcm), Some(&mut *dd_skip), ddelta_bias.as_deref_mut()];
        for buf in accumulated.into_iter().flatten() {
            unsafe { buf.set_zero_async(stream)? };
        }
        if batch * dim * len == 0 {
            return Ok(());
        }
        let z = z.map_or(DevicePointer::null(), |z| z.as_device_ptr());
        let dz = dz.map_or(DevicePointer::null(), |dz| dz.as_device_ptr());
        let bias = delta_bias.map_or(DevicePointer::null(), |b| b.as_device_ptr());
        let dbias = ddelta_bias.map_or(DevicePointer::null(), |b| b.as_device_ptr());
        let f = self.function("scan", kernel)?;
        // Bytes once each: read u, delta, dout (+ z), Bm, Cm, chunk_states; write du, ddelta (+ dz),
        // dBm, dCm. FLOPs: ~22 per (b, d, t, n) (two replays and the adjoint, exps counted as one).
        let zs = if z.is_null() { 0 } else { 2 * bdl };
        let bytes = 4 * (5 * bdl + zs + 4 * bnl + batch * dim * n_chunks * n_state + 2 * dn + 4 * dim);
        let cost = Cost { bytes: bytes as f64, flops: 22.0 * (bdl * n_state) as f64 };
        let _timed = self.timed(kernel, cost);
        let grid = (dim.div_ceil(SCAN_BWD_CH) as u32, batch as u32, 1);
        unsafe {
            launch!(f<<<grid, SCAN_BWD_THREADS, 0, stream>>>(
                du.as_device_ptr(), ddelta.as_device_ptr(), da.as_device_ptr(), dbm.as_device_ptr(),
                dcm.as_device_ptr(), dd_skip.as_device_ptr(), dz, dbias, u.as_device_ptr(), delta.as_device_ptr(),
                a.as_device_ptr(), bm.as_device_ptr(), cm.as_device_ptr(), d_skip.as_device_ptr(), z, bias,
                softplus as i32, chunk_states.as_device_ptr(), dout.as_device_ptr(), batch as i32, dim as i32,
                len as i32, n_state as i32, chunk as i32
            ))
        }
    }
}

/// The backward's inputs (see [`Gpu::selective_scan_backward_f32`]).
struct ScanBwdArgs<'a> {
    u: &'a DeviceSlice<f32>,
    delta: &'a DeviceSlice<f32>,
    a: &'a DeviceSlice<f32>,
    bm: &'a DeviceSlice<f32>,
    cm: &'a DeviceSlice<f32>,
    d_skip: &'a DeviceSlice<f32>,
    z: Option<&'a DeviceSlice<f32>>,
    delta_bias: Option<&'a DeviceSlice<f32>>,
    softplus: bool,
    chunk_states: &'a DeviceSlice<f32>,
    dout: &'a DeviceSlice<f32>,
}

/// The backward's outputs.
struct ScanBwdOut<'a> {
    du: &'a mut DeviceSlice<f32>,
    ddelta: &'a mut DeviceSlice<f32>,
    da: &'a mut DeviceSlice<f32>,
    dbm: &'a mut DeviceSlice<f32>,
    dcm: &'a mut DeviceSlice<f32>,
    dd_skip: &'a mut DeviceSlice<f32>,
    dz: Option<&'a mut DeviceSlice<f32>>,
    ddelta_bias: Option<&'a mut DeviceSlice<f32>>,
}
