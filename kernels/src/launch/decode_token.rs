//! Launcher of `cu/decode_token.cu`: one token of a Mamba-1 LM in one persistent kernel, one
//! block per SM, grid barriers between the layers' phases (see the .cu's top comment).
//!
//! A [`TokenPlan`] is made once per decoder: it fixes the split of the work
//! ([`DecodeDims::token_layout`]), copies the layers' device addresses into a table on the
//! GPU and allocates the barrier counter and the x_proj partials. [`Gpu::decode_token`] then
//! queues a token: the counter zeroed, the kernel launched cooperatively (the driver refuses
//! the launch unless every block can be resident at once, which the barriers need).

use super::{sms, Cost, Gpu};
use crate::error::{ensure, Error, Result};
pub use crate::shapes::TokenLayout;
use crate::shapes::{DecodeDims, TOKEN_THREADS};
use cust::memory::{DeviceBuffer, DeviceCopy, DevicePointer};
use std::ffi::c_void;

/// One layer's device addresses (`struct TokenLayer` in cu/decode_token.cu): the weights
/// (in_proj, x_proj, out_proj in the plan's weight type, the rest f32, A = -exp(A_log)) and
/// the layer's conv and SSM states, written in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenLayer {
    pub in_proj: u64,
    pub x_proj: u64,
    pub out_proj: u64,
    pub norm_w: u64,
    pub conv_w: u64,
    pub conv_b: u64,
    pub dt_w: u64,
    pub dt_b: u64,
    pub a: u64,
    pub d_skip: u64,
    pub conv_state: u64,
    pub ssm_state: u64,
}
const _: () = assert!(std::mem::size_of::<TokenLayer>() == 96);
// SAFETY: integers (device addresses), laid out as the C struct.
unsafe impl DeviceCopy for TokenLayer {}

/// The token's own buffers (device addresses, f32 unless said): `residual` (B, M), `xc`, `z`,
/// `y` (B, D) scratch, `logits` (B, V), `ids` (B, token ids as floats), `embedding` (V, M, the
/// weight type), `norm_f` (M).
#[derive(Clone, Copy, Debug)]
pub struct TokenBuffers {
    pub residual: u64,
    pub xc: u64,
    pub z: u64,
    pub y: u64,
    pub logits: u64,
    pub ids: u64,
    pub embedding: u64,
    pub norm_f: u64,
}

/// The kernel's parameter (`struct DecodeTokenParams`): 160 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeTokenParams {
    layers: DevicePointer<TokenLayer>,
    residual: u64,
    xc: u64,
    z: u64,
    y: u64,
    xpart: DevicePointer<f32>,
    logits: u64,
    ids: u64,
    embedding: u64,
    norm_f: u64,
    barrier: DevicePointer<u32>,
    n_layers: i32,
    batch: i32,
    m: i32,
    d: i32,
    n: i32,
    r: i32,
    k: i32,
    vocab: i32,
    ra: i32,
    cb: i32,
    rc: i32,
    rh: i32,
    gx: i32,
    eps: f32,
    sa: i32,
    sb: i32,
    sc: i32,
    act: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeTokenParams>() == 160);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeTokenParams {}

/// A token's launch, fixed once: the kernel, its parameter and the device memory it points to
/// besides the caller's buffers (which must outlive the plan: it holds their addresses).
pub struct TokenPlan {
    kernel: &'static str,
    params: DecodeTokenParams,
    layout: TokenLayout,
    cost: Cost,
    _layers: DeviceBuffer<TokenLayer>,
    _xpart: DeviceBuffer<f32>,
    barrier: DeviceBuffer<u32>,
}

impl TokenPlan {
    /// The split of the work it launches.
    pub fn layout(&self) -> TokenLayout {
        self.layout
    }
}

/// Whether `at` is a 16-byte aligned device address (the kernel copies 16-byte chunks).
fn aligned16(name: &str, at: u64) -> Result<()> {
    ensure(at != 0 && at.is_multiple_of(16), "decode_token", || format!("{name} at {at:#x} is not on 16 bytes"))
}

impl Gpu {
    /// The shared memory a block may opt in to, less the kernel's static arrays.
    fn max_block_smem() -> usize {
        let mut bytes = 0i32;
        let attr = cust::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
        // SAFETY: an out pointer and device 0 of the context the engine made.
        let r = unsafe { cust::sys::cuDeviceGetAttribute(&mut bytes, attr, 0) };
        let bytes = if r == cust::sys::cudaError_enum::CUDA_SUCCESS { bytes as usize } else { 48 * 1024 };
        bytes.saturating_sub(1024)
    }

    /// The split of a token at `dims` over this GPU, or why the one-kernel token cannot run it.
    pub fn token_layout(&self, dims: DecodeDims, vocab: usize, bf16: bool) -> std::result::Result<TokenLayout, String> {
        dims.token_layout(vocab, if bf16 { 2 } else { 4 }, sms(), Self::max_block_smem())
    }

    /// A plan for tokens of `dims` through `layers` (in order), weights in bf16 or f32. Every
    /// address must stay valid while the plan is used.
    pub fn decode_token_plan(
        &self,
        dims: DecodeDims,
        vocab: usize,
        bf16: bool,
        layers: &[TokenLayer],
        bufs: TokenBuffers,
        eps: f32,
    ) -> Result<TokenPlan> {
        let kernel = if bf16 { "decode_token_bf16" } else { "decode_token_f32" };
        let layout = self.token_layout(dims, vocab, bf16).map_err(|why| Error::bad(kernel, why))?;
        ensure(!layers.is_empty(), kernel, || "no layers".into())?;
        for (i, l) in layers.iter().enumerate() {
            for (name, at) in [
                ("in_proj", l.in_proj),
                ("x_proj", l.x_proj),
                ("out_proj", l.out_proj),
                ("norm_w", l.norm_w),
                ("conv_w", l.conv_w),
                ("conv_b", l.conv_b),
                ("dt_w", l.dt_w),
                ("dt_b", l.dt_b),
                ("a", l.a),
                ("d_skip", l.d_skip),
                ("conv_state", l.conv_state),
                ("ssm_state", l.ssm_state),
            ] {
                aligned16(&format!("layer {i}'s {name}"), at)?;
            }
        }
        let b = bufs;
        for (name, at) in [("residual", b.residual), ("y", b.y), ("embedding", b.embedding), ("norm_f", b.norm_f)] {
            aligned16(name, at)?;
        }
        ensure([b.xc, b.z, b.logits, b.ids].iter().all(|&a| a != 0), kernel, || "a null buffer".into())?;
        self.raise_smem_limit(kernel, layout.smem as u32)?;
        let table = DeviceBuffer::from_slice(layers)?;
        let xpart = DeviceBuffer::zeroed(layout.gx * dims.batch * dims.xdim())?;
        let barrier = DeviceBuffer::zeroed(1)?;
        let i = |v: usize| v as i32; // every size passed DecodeDims::unsupported (i32 indexing)
        let params = DecodeTokenParams {
            layers: table.as_device_ptr(),
            residual: b.residual,
            xc: b.xc,
            z: b.z,
            y: b.y,
            xpart: xpart.as_device_ptr(),
            logits: b.logits,
            ids: b.ids,
            embedding: b.embedding,
            norm_f: b.norm_f,
            barrier: barrier.as_device_ptr(),
            n_layers: i(layers.len()),
            batch: i(dims.batch),
            m: i(dims.m),
            d: i(dims.d),
            n: i(dims.d_state),
            r: i(dims.dt_rank),
            k: i(dims.d_conv),
            vocab: i(vocab),
            ra: i(layout.ra),
            cb: i(layout.cb),
            rc: i(layout.rc),
            rh: i(layout.rh),
            gx: i(layout.gx),
            eps,
            sa: i(layout.sa),
            sb: i(layout.sb),
            sc: i(layout.sc),
            act: i(layout.act),
        };
        let cost = token_cost(dims, vocab, layers.len(), if bf16 { 2 } else { 4 });
        Ok(TokenPlan { kernel, params, layout, cost, _layers: table, _xpart: xpart, barrier })
    }

    /// Queue one token of `plan`: the ids in its `ids` buffer become logits in its `logits`.
    pub fn decode_token(&self, plan: &TokenPlan) -> Result<()> {
        let kernel = plan.kernel;
        let (function, bytes) = self.functions.get(kernel).ok_or(cust::error::CudaError::NotFound)?;
        ensure(*bytes == Some(std::mem::size_of::<DecodeTokenParams>()), kernel, || "parameter size".into())?;
        let stream = self.stream.as_inner();
        // SAFETY: the counter is one live u32 of the plan; the memset is queued on our stream.
        let r = unsafe { cust::sys::cuMemsetD32Async(plan.barrier.as_device_ptr().as_raw(), 0, 1, stream) };
        ensure(r == cust::sys::cudaError_enum::CUDA_SUCCESS, kernel, || format!("zeroing the barrier: {r:?}"))?;
        let _timed = self.timed(kernel, plan.cost);
        let mut params = plan.params;
        let mut args = [&mut params as *mut DecodeTokenParams as *mut c_void];
        let grid = plan.layout.blocks as u32;
        // SAFETY: the kernel takes one parameter of this struct's size (checked above from
        // its PTX); the addresses in it were checked against the layout when the plan was made
        // and belong to the plan or to buffers its maker keeps alive; the driver copies the
        // parameter before returning.
        let r = unsafe {
            cust::sys::cuLaunchCooperativeKernel(
                function.to_raw(),
                grid,
                1,
                1,
                TOKEN_THREADS as u32,
                1,
                1,
                plan.layout.smem as u32,
                stream,
                args.as_mut_ptr(),
            )
        };
        ensure(r == cust::sys::cudaError_enum::CUDA_SUCCESS, kernel, || {
            format!("cooperative launch of {grid} blocks: {r:?}")
        })
    }
}

/// The token's napkin math: every weight read once (the big three and the embedding in the
/// weight type), the states read and written, 2 FLOPs a weight a sequence.
fn token_cost(dims: DecodeDims, vocab: usize, layers: usize, wbytes: usize) -> Cost {
    let DecodeDims { batch, m, d, d_state: n, dt_rank: r, d_conv: k } = dims;
    let big = 2 * d * m + dims.xdim() * d + m * d;
    let small = d * (k + 1) + m + d * (r + n + 2);
    let states = 2 * batch * d * (k + n);
    let per_layer = (wbytes * big + 4 * (small + states)) as f64;
    let bytes = per_layer * layers as f64 + (wbytes * vocab * m) as f64;
    let flops = (2 * batch * (big + d * (r + 3 * n)) * layers + 2 * batch * vocab * m) as f64;
    Cost { bytes, flops }
}
