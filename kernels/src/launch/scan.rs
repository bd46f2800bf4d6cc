//! Launchers of `cu/scan.cu` and `cu/scan_pipelined.cuh` (forward v3, backward v4, on f32 or
//! bf16 inputs).

use super::{Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Error, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block of the forward v1 kernel (`SCAN_THREADS` in scan.cu).
const SCAN_THREADS: u32 = 128;
/// Most states per channel the kernel holds in registers (`SCAN_MAX_STATE` in scan.cu).
pub const SCAN_MAX_STATE: usize = 16;
/// Forward v2 and backward v1, v2: channels per block and threads per block (`SCAN_BWD_CH`,
/// `SCAN_BWD_THREADS`): 16 lanes per channel. Backward v3 has twice both.
const SCAN_BWD_CH: usize = 8;
const SCAN_BWD_THREADS: u32 = 128;
/// Threads per block of the backward's reduce kernel.
const SCAN_REDUCE_THREADS: u32 = 256;
/// Longest `chunk` the backward takes: 16 windows of 16 steps (`SCAN_BWD_MAX_WINS` x `SCAN_BWD_WIN`).
pub const SCAN_BWD_MAX_CHUNK: usize = 256;
/// The scan kernel versions the engine runs (the faster ones; gpu-check times every one).
/// Backward v3 (16 channels per block) halves v2's partial sums, so its workspace and the
/// reduce's reads (docs/SCAN.md, "A deterministic backward"). Forward v3 and backward v4 are
/// v2 and v3 with the next window's inputs copied (cp.async) while the current one runs.
pub const SCAN_FWD_VERSION: u32 = 3;
pub const SCAN_BWD_VERSION: u32 = 4;
/// The newest version of each (gpu-check runs every one up to these).
pub const SCAN_FWD_VERSIONS: u32 = 3;
pub const SCAN_BWD_VERSIONS: u32 = 4;
/// Floats of per-thread copies in the pipelined kernels' dynamic shared memory, per buffer
/// (`SCAN_RAW_FWD`, `SCAN_RAW` in scan_pipelined.cuh), and the window (`SCAN_BWD_WIN`).
const SCAN_RAW_FWD: usize = 3;
const SCAN_RAW: usize = 5;
const SCAN_WIN: usize = 16;

/// Bytes of dynamic shared memory of forward v3 (`fwd`) or backward v4 with `threads`
/// threads at `chunk`: `scan_smem_floats` in scan_pipelined.cuh (two buffers of the per-thread copies,
/// two of Bm's and Cm's 16 x 17 rows, and for the backward the state entering each window).
fn pipelined_smem(fwd: bool, threads: usize, chunk: usize) -> u32 {
    let raw = if fwd { SCAN_RAW_FWD } else { SCAN_RAW };
    let windows = if fwd { 0 } else { chunk.div_ceil(SCAN_WIN) * threads };
    (4 * (2 * raw * threads + 4 * SCAN_MAX_STATE * (SCAN_WIN + 1) + windows)) as u32
}

/// The element type of the activations `u, delta, z` and of their gradients `du, ddelta, dz`:
/// f32, or bf16 (its bits as `u16`, as the bf16 GEMM takes them; forward v3 and backward v4
/// only). Everything else (A, D, the bias, B, C, the states, `out`, `dout`) is f32.
pub trait ScanElem: DeviceCopy {
    /// The kernels' name suffix.
    const NAME: &'static str;
}
impl ScanElem for f32 {
    const NAME: &'static str = "f32";
}
impl ScanElem for u16 {
    const NAME: &'static str = "bf16";
}

/// The sizes of a selective scan: batch `B`, channels `D`, length `L`, states per channel `N`
/// and the steps per saved chunk state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanDims {
    pub batch: usize,
    pub dim: usize,
    pub len: usize,
    pub state: usize,
    pub chunk: usize,
}

impl ScanDims {
    /// Chunks of `chunk` steps in `len` (the last may be shorter).
    pub fn n_chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// The kernels' `int` sizes `[batch, dim, len, state, chunk]`, or an error unless each
    /// fits, `1 <= state <= SCAN_MAX_STATE`, `chunk >= 1`, `B * D * L` and `B * N * L` fit
    /// in an i32 and `B` in a grid's y.
    fn ints(&self, kernel: &'static str) -> Result<[i32; 5]> {
        let ScanDims { batch, dim, len, state, chunk } = *self;
        ensure((1..=SCAN_MAX_STATE).contains(&state), kernel, || {
            format!("state = {state} not in 1..={SCAN_MAX_STATE}")
        })?;
        ensure(chunk > 0, kernel, || "chunk must be positive".into())?;
        let (bdl, bnl) = (batch * dim * len, batch * state * len);
        ensure(bdl <= i32::MAX as usize && bnl <= i32::MAX as usize && batch <= 65535, kernel, || {
            "too large (B * D * L and B * N * L must fit in i32, B in a grid's y)".into()
        })?;
        Ok([
            to_i32(kernel, "batch", batch)?,
            to_i32(kernel, "dim", dim)?,
            to_i32(kernel, "len", len)?,
            to_i32(kernel, "state", state)?,
            to_i32(kernel, "chunk", chunk)?,
        ])
    }
}

/// The inputs of the scan, forward and backward. Layouts: `u, delta, z: (B, D, L)`,
/// `a: (D, N)`, `bm, cm: (B, N, L)`, `d_skip, delta_bias: (D)`, `init: (B, D, N)`. With
/// `softplus`, the step is `softplus(delta + delta_bias)`, else `delta + delta_bias`. `X`: the
/// element of `u, delta, z` ([`ScanElem`]).
#[derive(Clone, Copy)]
pub struct ScanInputs<'a, X: ScanElem = f32> {
    pub u: &'a DeviceSlice<X>,
    pub delta: &'a DeviceSlice<X>,
    pub a: &'a DeviceSlice<f32>,
    pub bm: &'a DeviceSlice<f32>,
    pub cm: &'a DeviceSlice<f32>,
    pub d_skip: &'a DeviceSlice<f32>,
    /// The gate: `out = y * silu(z)` when given.
    pub z: Option<&'a DeviceSlice<X>>,
    pub delta_bias: Option<&'a DeviceSlice<f32>>,
    pub softplus: bool,
    /// The state before the first step (zero when absent). The forward reads it; the
    /// backward replays chunk 0 from `chunk_states` (which starts with it) and writes `dinit`.
    pub init: Option<&'a DeviceSlice<f32>>,
}

impl<X: ScanElem> ScanInputs<'_, X> {
    /// Fails unless every input has its layout's length for `dims`.
    fn check(&self, kernel: &'static str, dims: ScanDims) -> Result<()> {
        let ScanDims { batch, dim, len, state, .. } = dims;
        let (bdl, bnl) = (batch * dim * len, batch * state * len);
        for (name, got, want) in [
            ("u", self.u.len(), bdl),
            ("delta", self.delta.len(), bdl),
            ("a", self.a.len(), dim * state),
            ("bm", self.bm.len(), bnl),
            ("cm", self.cm.len(), bnl),
            ("d_skip", self.d_skip.len(), dim),
        ] {
            check_len(kernel, name, got, want)?;
        }
        if let Some(z) = self.z {
            check_len(kernel, "z", z.len(), bdl)?;
        }
        if let Some(b) = self.delta_bias {
            check_len(kernel, "delta_bias", b.len(), dim)?;
        }
        if let Some(s) = self.init {
            check_len(kernel, "init", s.len(), batch * dim * state)?;
        }
        Ok(())
    }
}

/// The arguments of [`Gpu::selective_scan_forward`]: the inputs, the outputs `out:
/// (B, D, L)`, `last_state: (B, D, N)` and `chunk_states: (B, D, ceil(L / chunk), N)` (the
/// state entering each chunk), and the sizes.
pub struct ScanForward<'a, X: ScanElem = f32> {
    pub x: ScanInputs<'a, X>,
    pub out: &'a mut DeviceSlice<f32>,
    pub last_state: &'a mut DeviceSlice<f32>,
    pub chunk_states: &'a mut DeviceSlice<f32>,
    pub dims: ScanDims,
}

/// The gradients the backward writes, each with its input's layout. `dz` must be given
/// exactly when `z` is, `ddelta_bias` exactly when `delta_bias` is, `dinit` exactly when
/// `init` is. `du, ddelta, dz` have the inputs' element `X`, the rest are f32.
pub struct ScanGrads<'a, X: ScanElem = f32> {
    pub du: &'a mut DeviceSlice<X>,
    pub ddelta: &'a mut DeviceSlice<X>,
    pub da: &'a mut DeviceSlice<f32>,
    pub dbm: &'a mut DeviceSlice<f32>,
    pub dcm: &'a mut DeviceSlice<f32>,
    pub dd_skip: &'a mut DeviceSlice<f32>,
    pub dz: Option<&'a mut DeviceSlice<X>>,
    pub ddelta_bias: Option<&'a mut DeviceSlice<f32>>,
    pub dinit: Option<&'a mut DeviceSlice<f32>>,
}

/// The arguments of [`Gpu::selective_scan_backward`]: the forward's inputs and its
/// `chunk_states: (B, D, ceil(L / chunk), N)`, the upstream `dout: (B, D, L)` and `dlast:
/// (B, D, N)` (the gradient of `last_state`; zero when absent), the gradients, the workspace
/// and the sizes.
pub struct ScanBackward<'a, X: ScanElem = f32> {
    pub x: ScanInputs<'a, X>,
    pub chunk_states: &'a DeviceSlice<f32>,
    pub dout: &'a DeviceSlice<f32>,
    pub dlast: Option<&'a DeviceSlice<f32>>,
    pub grads: ScanGrads<'a, X>,
    /// The partial sums, at least [`Gpu::selective_scan_backward_workspace`] elements
    /// (allocated by the caller, so the call stays asynchronous; contents need not be set).
    pub workspace: &'a mut DeviceSlice<f32>,
    pub dims: ScanDims,
}

/// The parameter of the forward kernels (`struct ScanForwardParams` in cu/scan_common.cuh; the
/// bf16 kernels find bf16 buffers in `u`, `delta`, `z`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ScanForwardParams {
    out: DevicePointer<f32>,
    last_state: DevicePointer<f32>,
    chunk_states: DevicePointer<f32>,
    u: DevicePointer<f32>,
    delta: DevicePointer<f32>,
    a: DevicePointer<f32>,
    bm: DevicePointer<f32>,
    cm: DevicePointer<f32>,
    d_skip: DevicePointer<f32>,
    /// Null without the gate.
    z: DevicePointer<f32>,
    /// Null without a bias.
    delta_bias: DevicePointer<f32>,
    /// Null for a zero initial state.
    init: DevicePointer<f32>,
    softplus: i32,
    batch: i32,
    dim: i32,
    len: i32,
    n_state: i32,
    chunk: i32,
}
const _: () = assert!(std::mem::size_of::<ScanForwardParams>() == 120);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for ScanForwardParams {}

/// The parameter of the backward kernels (`struct ScanBackwardParams` in cu/scan_common.cuh;
/// the bf16 kernels find bf16 buffers in `u`, `delta`, `z`, `du`, `ddelta`, `dz`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ScanBackwardParams {
    du: DevicePointer<f32>,
    ddelta: DevicePointer<f32>,
    /// Null exactly when `z` is.
    dz: DevicePointer<f32>,
    /// Null exactly when `init` is.
    dinit: DevicePointer<f32>,
    /// The workspace: partial sums of dBm, dCm, dA, dD, dbias.
    part: DevicePointer<f32>,
    u: DevicePointer<f32>,
    delta: DevicePointer<f32>,
    a: DevicePointer<f32>,
    bm: DevicePointer<f32>,
    cm: DevicePointer<f32>,
    d_skip: DevicePointer<f32>,
    z: DevicePointer<f32>,
    delta_bias: DevicePointer<f32>,
    chunk_states: DevicePointer<f32>,
    dout: DevicePointer<f32>,
    /// Null for a zero `dlast`.
    dlast: DevicePointer<f32>,
    /// The flag and sizes are 8-byte (see the C struct: 4-byte ones make version 2 spill).
    softplus: i64,
    batch: i64,
    dim: i64,
    len: i64,
    n_state: i64,
    chunk: i64,
}
const _: () = assert!(std::mem::size_of::<ScanBackwardParams>() == 176);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for ScanBackwardParams {}

/// The parameter of the backward's reduce kernel (`struct ScanBwdReduceParams` in cu/scan.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct ScanBwdReduceParams {
    da: DevicePointer<f32>,
    dbm: DevicePointer<f32>,
    dcm: DevicePointer<f32>,
    dd_skip: DevicePointer<f32>,
    /// Null exactly when `delta_bias` is.
    ddelta_bias: DevicePointer<f32>,
    part: DevicePointer<f32>,
    batch: i64,
    dim: i64,
    len: i64,
    n_state: i64,
    /// Blocks per batch of the backward kernel (partials per dBm, dCm element).
    nblk: i64,
}
const _: () = assert!(std::mem::size_of::<ScanBwdReduceParams>() == 88);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for ScanBwdReduceParams {}

/// The forward kernel of `version` for inputs of element `elem` ("f32" or "bf16": v3 only).
fn forward_kernel(version: u32, elem: &str) -> Result<&'static str> {
    match (version, elem) {
        (1, "f32") => Ok("selective_scan_forward_v1_f32"),
        (2, "f32") => Ok("selective_scan_forward_f32"),
        (3, "f32") => Ok("selective_scan_forward_v3_f32"),
        (3, "bf16") => Ok("selective_scan_forward_v3_bf16"),
        _ => Err(Error::bad("selective_scan_forward", format!("no version {version} for {elem} inputs"))),
    }
}

/// The backward kernel of `version` for inputs of element `elem` ("f32" or "bf16": v4 only)
/// and its channels per block.
fn backward_kernel(version: u32, elem: &str) -> Result<(&'static str, usize)> {
    match (version, elem) {
        (1, "f32") => Ok(("selective_scan_backward_v1_f32", SCAN_BWD_CH)),
        (2, "f32") => Ok(("selective_scan_backward_f32", SCAN_BWD_CH)),
        (3, "f32") => Ok(("selective_scan_backward_v3_f32", 2 * SCAN_BWD_CH)),
        (4, "f32") => Ok(("selective_scan_backward_v4_f32", 2 * SCAN_BWD_CH)),
        (4, "bf16") => Ok(("selective_scan_backward_v4_bf16", 2 * SCAN_BWD_CH)),
        _ => Err(Error::bad("selective_scan_backward", format!("no version {version} for {elem} inputs"))),
    }
}

/// A buffer as the parameter structs' pointer (declared f32; the kernel knows the element).
fn ptr<X: DeviceCopy>(s: &DeviceSlice<X>) -> DevicePointer<f32> {
    s.as_device_ptr().cast()
}

/// An optional buffer as a kernel pointer (null when absent).
fn ptr_or_null<X: DeviceCopy>(s: Option<&DeviceSlice<X>>) -> DevicePointer<f32> {
    s.map_or(DevicePointer::null(), ptr)
}

impl Gpu {
    /// Selective-scan forward — twin of `ops::scan::cpu::selective_scan_forward` ([`ScanForward`]
    /// gives the layouts). `state` must be at most `SCAN_MAX_STATE` (16). `version` 1 is one
    /// thread per channel (the baseline), 2 is 16 lanes per channel, 3 is 2 with the next
    /// window's inputs in flight ([`SCAN_FWD_VERSION`], the selected one; the one version on
    /// bf16 inputs).
    pub fn selective_scan_forward<X: ScanElem>(&self, version: u32, args: ScanForward<'_, X>) -> Result<()> {
        const K: &str = "selective_scan_forward";
        let ScanForward { x, out, last_state, chunk_states, dims } = args;
        let [batch32, dim32, len32, state32, chunk32] = dims.ints(K)?;
        x.check(K, dims)?;
        let ScanDims { batch, dim, len, state, .. } = dims;
        let (bdl, bnl, n_chunks) = (batch * dim * len, batch * state * len, dims.n_chunks());
        check_len(K, "out", out.len(), bdl)?;
        check_len(K, "last_state", last_state.len(), batch * dim * state)?;
        check_len(K, "chunk_states", chunk_states.len(), batch * dim * n_chunks * state)?;
        let kernel = forward_kernel(version, X::NAME)?;
        let channels = batch * dim;
        if channels == 0 {
            return Ok(());
        }
        let params = ScanForwardParams {
            out: out.as_device_ptr(),
            last_state: last_state.as_device_ptr(),
            chunk_states: chunk_states.as_device_ptr(),
            u: ptr(x.u),
            delta: ptr(x.delta),
            a: x.a.as_device_ptr(),
            bm: x.bm.as_device_ptr(),
            cm: x.cm.as_device_ptr(),
            d_skip: x.d_skip.as_device_ptr(),
            z: ptr_or_null(x.z),
            delta_bias: ptr_or_null(x.delta_bias),
            init: ptr_or_null(x.init),
            softplus: x.softplus as i32,
            batch: batch32,
            dim: dim32,
            len: len32,
            n_state: state32,
            chunk: chunk32,
        };
        // Bytes once each: read u, delta (+ z) (X each), Bm, Cm (+ init); write out, last_state,
        // chunk_states. FLOPs: ~5 per (b, d, t, n) (dt A, its exp, the update's mul and fma, C h).
        let xb = std::mem::size_of::<X>();
        let zs = if x.z.is_none() { 0 } else { bdl };
        let inits = if x.init.is_none() { 0 } else { channels * state };
        let f32s = bdl + 2 * bnl + dim * state + 2 * dim + channels * (n_chunks + 1) * state + inits;
        let bytes = xb * (2 * bdl + zs) + 4 * f32s;
        let cost = Cost { bytes: bytes as f64, flops: 5.0 * (bdl * state) as f64 };
        let (grid, block) = if version == 1 {
            ((channels.div_ceil(SCAN_THREADS as usize) as u32, 1, 1), SCAN_THREADS)
        } else {
            ((dim.div_ceil(SCAN_BWD_CH) as u32, batch as u32, 1), SCAN_BWD_THREADS)
        };
        let smem = if version == 3 { pipelined_smem(true, SCAN_BWD_THREADS as usize, dims.chunk) } else { 0 };
        self.launch(kernel, grid, block, smem, params, cost)
    }

    /// The f32 elements of workspace that backward `version` needs for `dims` (at least 1):
    /// the dBm, dCm partials of each block, `B x nblk x 2 x N x L` (`nblk = ceil(D / 8)`, or
    /// `/ 16` for version 3), and the dA, dD, dbias partials of each batch, `B x D x (N + 2)`.
    /// 403 MB (v2) or 201 MB (v3) at B 8, D 1536, L 2048, N 16.
    pub fn selective_scan_backward_workspace(version: u32, dims: ScanDims) -> Result<usize> {
        let (_, ch) = backward_kernel(version, "f32")?;
        let ScanDims { batch, dim, len, state, .. } = dims;
        Ok((batch * dim.div_ceil(ch) * 2 * state * len + batch * dim * (state + 2)).max(1))
    }

    /// Selective-scan backward — twin of `ops::scan::cpu::selective_scan_backward` ([`ScanBackward`]).
    /// All outputs are overwritten. Deterministic: the sums over channels, batch and time
    /// (`da, dbm, dcm, dd_skip, ddelta_bias`) go through per-block partials in `workspace`,
    /// summed in a fixed order by a second kernel (no float atomics), so two runs give the same
    /// bits. `state <= 16`, `chunk <= SCAN_BWD_MAX_CHUNK` (256). `version` 1 keeps each step's
    /// decay in registers for the adjoint (more registers, fewer exps), 2 recomputes it (3.43
    /// and 2.70 ms with atomics at B8 D1536 L2048 N16 on the H100), 3 is 2 with 16 channels per
    /// block, half the partials, 4 is 3 with the next window's inputs in flight
    /// ([`SCAN_BWD_VERSION`], selected; the one version on bf16 inputs).
    pub fn selective_scan_backward<X: ScanElem>(&self, version: u32, args: ScanBackward<'_, X>) -> Result<()> {
        let (kernel, ch) = backward_kernel(version, X::NAME)?;
        let ScanBackward { x, chunk_states, dout, dlast, grads, workspace, dims } = args;
        let [batch32, dim32, len32, state32, chunk32] = dims.ints(kernel)?;
        let chunk = dims.chunk;
        ensure(chunk <= SCAN_BWD_MAX_CHUNK, kernel, || format!("chunk = {chunk} not in 1..={SCAN_BWD_MAX_CHUNK}"))?;
        x.check(kernel, dims)?;
        check_grads(kernel, &x, &grads, dims)?;
        let ScanDims { batch, dim, len, state, .. } = dims;
        let (bdl, n_chunks) = (batch * dim * len, dims.n_chunks());
        check_len(kernel, "dout", dout.len(), bdl)?;
        check_len(kernel, "chunk_states", chunk_states.len(), batch * dim * n_chunks * state)?;
        if let Some(dl) = dlast {
            check_len(kernel, "dlast", dl.len(), batch * dim * state)?;
        }
        let need = Self::selective_scan_backward_workspace(version, dims)?;
        ensure(workspace.len() >= need, kernel, || {
            format!("workspace holds {} elements, needs {need}", workspace.len())
        })?;
        let ScanGrads { du, ddelta, da, dbm, dcm, dd_skip, dz, ddelta_bias, dinit } = grads;
        let part = workspace.as_device_ptr();
        if batch * dim > 0 {
            // (with L = 0 the kernel still runs: dinit = dlast, zero partials)
            let params = ScanBackwardParams {
                du: ptr(du),
                ddelta: ptr(ddelta),
                dz: ptr_or_null(dz.as_deref()),
                dinit: ptr_or_null(dinit.as_deref()),
                part,
                u: ptr(x.u),
                delta: ptr(x.delta),
                a: x.a.as_device_ptr(),
                bm: x.bm.as_device_ptr(),
                cm: x.cm.as_device_ptr(),
                d_skip: x.d_skip.as_device_ptr(),
                z: ptr_or_null(x.z),
                delta_bias: ptr_or_null(x.delta_bias),
                chunk_states: chunk_states.as_device_ptr(),
                dout: dout.as_device_ptr(),
                dlast: ptr_or_null(dlast),
                softplus: x.softplus as i64,
                batch: batch32.into(),
                dim: dim32.into(),
                len: len32.into(),
                n_state: state32.into(),
                chunk: chunk32.into(),
            };
            // Bytes once each: read u, delta (+ z) (X each), dout, Bm, Cm, chunk_states, A, D
            // (+ bias) (+ dlast); write du, ddelta (+ dz) (X each) (+ dinit) and the partials.
            // FLOPs: ~22 per (b, d, t, n) (two replays and the adjoint, exps counted as one).
            let xb = std::mem::size_of::<X>();
            let zs = if x.z.is_none() { 0 } else { 2 * bdl };
            let states = batch * dim * state * (usize::from(dlast.is_some()) + usize::from(x.init.is_some()));
            let reads = 2 * batch * state * len + batch * dim * n_chunks * state + dim * state + 2 * dim;
            let bytes = xb * (4 * bdl + zs) + 4 * (bdl + reads + states + need);
            let cost = Cost { bytes: bytes as f64, flops: 22.0 * (bdl * state) as f64 };
            let grid = (dim.div_ceil(ch) as u32, batch as u32, 1);
            let smem = if version == 4 { pipelined_smem(false, 16 * ch, chunk) } else { 0 };
            if smem > 0 {
                // with the kernel's 20.6 KB of static shared memory, chunks over 128 pass 48 KB
                self.raise_smem_limit(kernel, smem)?;
            }
            self.launch(kernel, grid, (16 * ch) as u32, smem, params, cost)?;
        }
        let sums = ScanBwdReduceParams {
            da: da.as_device_ptr(),
            dbm: dbm.as_device_ptr(),
            dcm: dcm.as_device_ptr(),
            dd_skip: dd_skip.as_device_ptr(),
            ddelta_bias: ptr_or_null(ddelta_bias.as_deref()),
            part,
            batch: batch32.into(),
            dim: dim32.into(),
            len: len32.into(),
            n_state: state32.into(),
            nblk: dim.div_ceil(ch) as i64,
        };
        self.scan_backward_reduce(sums, need)
    }

    /// The backward's second kernel: every summed gradient from the partials, in a fixed order.
    fn scan_backward_reduce(&self, p: ScanBwdReduceParams, partials: usize) -> Result<()> {
        let (bnl, dn, dim) = ((p.batch * p.n_state * p.len) as usize, (p.dim * p.n_state) as usize, p.dim as usize);
        let outputs = 2 * bnl + dn + 2 * dim;
        if outputs == 0 {
            return Ok(());
        }
        // Reads every partial once, writes every output once; one add per partial.
        let cost = Cost { bytes: (4 * (partials + outputs)) as f64, flops: partials as f64 };
        // Any grid gives the same sums (grid-stride, each output's order fixed): cap it.
        let blocks = outputs.div_ceil(SCAN_REDUCE_THREADS as usize).min(1 << 16) as u32;
        self.launch("selective_scan_backward_reduce_f32", blocks, SCAN_REDUCE_THREADS, 0, p, cost)
    }
}

/// Fails unless every gradient has its input's length and the optional ones are given
/// exactly when their inputs are.
fn check_grads<X: ScanElem>(kernel: &'static str, x: &ScanInputs<X>, g: &ScanGrads<X>, dims: ScanDims) -> Result<()> {
    ensure(x.z.is_some() == g.dz.is_some(), kernel, || "dz must be given exactly when z is".into())?;
    ensure(x.delta_bias.is_some() == g.ddelta_bias.is_some(), kernel, || {
        "ddelta_bias must be given exactly when delta_bias is".into()
    })?;
    ensure(x.init.is_some() == g.dinit.is_some(), kernel, || "dinit must be given exactly when init is".into())?;
    let ScanDims { batch, dim, len, state, .. } = dims;
    let (bdl, bnl) = (batch * dim * len, batch * state * len);
    for (name, got, want) in [
        ("du", g.du.len(), bdl),
        ("ddelta", g.ddelta.len(), bdl),
        ("da", g.da.len(), dim * state),
        ("dbm", g.dbm.len(), bnl),
        ("dcm", g.dcm.len(), bnl),
        ("dd_skip", g.dd_skip.len(), dim),
    ] {
        check_len(kernel, name, got, want)?;
    }
    if let Some(dz) = &g.dz {
        check_len(kernel, "dz", dz.len(), bdl)?;
    }
    if let Some(db) = &g.ddelta_bias {
        check_len(kernel, "ddelta_bias", db.len(), dim)?;
    }
    if let Some(di) = &g.dinit {
        check_len(kernel, "dinit", di.len(), batch * dim * state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        backward_kernel, forward_kernel, SCAN_BWD_VERSION, SCAN_BWD_VERSIONS, SCAN_FWD_VERSION, SCAN_FWD_VERSIONS,
    };

    /// Every version the launchers name is a kernel of scan.cu's PTX (scan_pipelined.cuh's
    /// included), and nothing else is (the versions, the selected ones on bf16, the backward's reduce).
    #[test]
    fn every_version_is_in_the_ptx() {
        let mut built: Vec<&str> = super::super::entries(crate::ptx::SCAN).into_iter().map(|(k, _)| k).collect();
        let mut named = vec!["selective_scan_backward_reduce_f32"];
        for v in 1..=SCAN_FWD_VERSIONS {
            named.push(forward_kernel(v, "f32").unwrap());
        }
        for v in 1..=SCAN_BWD_VERSIONS {
            named.push(backward_kernel(v, "f32").unwrap().0);
        }
        named.push(forward_kernel(SCAN_FWD_VERSION, "bf16").unwrap());
        named.push(backward_kernel(SCAN_BWD_VERSION, "bf16").unwrap().0);
        built.sort_unstable();
        named.sort_unstable();
        assert_eq!(built, named);
        assert!(forward_kernel(SCAN_FWD_VERSIONS + 1, "f32").is_err());
        assert!(backward_kernel(SCAN_BWD_VERSIONS + 1, "f32").is_err());
        assert!(forward_kernel(2, "bf16").is_err());
        assert!(backward_kernel(3, "bf16").is_err());
    }
}
