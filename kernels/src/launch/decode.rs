//! Launchers of `cu/decode.cu`: one token of a Mamba-1 LM in fused kernels.

use super::{Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block (`DECODE_THREADS`), weight rows per block (`DECODE_BLOCK_ROWS`) and
/// batch rows per block at most (`DECODE_BT`) in decode.cu.
const THREADS: u32 = 256;
pub const DECODE_BLOCK_ROWS: usize = 16;
const MAX_BT: usize = 8;
/// The staged input rows of a block fit in 40 KiB of shared memory (the 48 KiB a block gets
/// without opting in, less the static arrays).
const MAX_STAGE_FLOATS: usize = 10 * 1024;

/// The parameter of `decode_embed_f32` (`struct DecodeEmbedParams` in cu/decode.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeEmbedParams {
    residual: DevicePointer<f32>,
    embedding: DevicePointer<f32>,
    ids: DevicePointer<f32>,
    batch: i32,
    m: i32,
    vocab: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeEmbedParams>() == 40);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeEmbedParams {}

/// The parameter of `decode_in_f32` (`struct DecodeInParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeInParams {
    xc: DevicePointer<f32>,
    z: DevicePointer<f32>,
    xpart: DevicePointer<f32>,
    conv_state: DevicePointer<f32>,
    residual: DevicePointer<f32>,
    norm_w: DevicePointer<f32>,
    in_proj: DevicePointer<f32>,
    conv_w: DevicePointer<f32>,
    conv_b: DevicePointer<f32>,
    x_proj: DevicePointer<f32>,
    batch: i32,
    m: i32,
    d: i32,
    k: i32,
    xdim: i32,
    bt: i32,
    eps: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeInParams>() == 112);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeInParams {}

/// The parameter of `decode_ssm_f32` (`struct DecodeSsmParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeSsmParams {
    y: DevicePointer<f32>,
    ssm_state: DevicePointer<f32>,
    xpart: DevicePointer<f32>,
    xc: DevicePointer<f32>,
    z: DevicePointer<f32>,
    dt_w: DevicePointer<f32>,
    dt_b: DevicePointer<f32>,
    a: DevicePointer<f32>,
    d_skip: DevicePointer<f32>,
    batch: i32,
    d: i32,
    n: i32,
    r: i32,
    n_parts: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeSsmParams>() == 96);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeSsmParams {}

/// The parameter of `decode_out_f32` and `decode_head_f32` (`struct DecodeRowsParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeRowsParams {
    out: DevicePointer<f32>,
    x: DevicePointer<f32>,
    norm_w: DevicePointer<f32>,
    w: DevicePointer<f32>,
    batch: i32,
    rows: i32,
    cols: i32,
    bt: i32,
    eps: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeRowsParams>() == 56);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeRowsParams {}

/// The sizes of one Mamba-1 layer and the batch being decoded.
#[derive(Clone, Copy, Debug)]
pub struct DecodeDims {
    pub batch: usize,
    /// d_model
    pub m: usize,
    /// d_inner
    pub d: usize,
    pub d_state: usize,
    pub dt_rank: usize,
    pub d_conv: usize,
}

impl DecodeDims {
    /// Values of x_proj's output per token: dt_rank + 2 d_state.
    pub fn xdim(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }

    /// Partial x_proj sums `decode_in_f32` leaves for `decode_ssm_f32`: (d / 16, batch, xdim).
    pub fn xpart_len(&self) -> usize {
        self.d / DECODE_BLOCK_ROWS * self.batch * self.xdim()
    }

    /// Why these sizes cannot take the fused kernels, if they cannot.
    pub fn unsupported(&self) -> Option<String> {
        let Self { batch, m, d, d_state, dt_rank, d_conv } = *self;
        if batch == 0 || d_state == 0 || dt_rank == 0 || d_conv == 0 {
            return Some("every size must be positive".into());
        }
        if !m.is_multiple_of(4) || !d.is_multiple_of(DECODE_BLOCK_ROWS) {
            return Some(format!("d_model ({m}) must be a multiple of 4 and d_inner ({d}) of 16"));
        }
        if m.max(d) > MAX_STAGE_FLOATS {
            return Some(format!("d_model and d_inner must be at most {MAX_STAGE_FLOATS}"));
        }
        if self.xdim() > 12 * 1024 || d * d_conv > i32::MAX as usize / batch.max(1) {
            return Some("x_proj or the conv state is too large".into());
        }
        None
    }
}

/// Batch rows per block for inputs of `cols` values: as many as fit (at most 8, the batch).
fn batch_tile(batch: usize, cols: usize) -> usize {
    (MAX_STAGE_FLOATS / cols.max(1)).clamp(1, MAX_BT).min(batch.max(1))
}

/// The arguments of [`Gpu::decode_in_f32`]: `residual` (B, M) in, the rest as in decode.cu.
pub struct DecodeIn<'a> {
    pub xc: &'a mut DeviceSlice<f32>,
    pub z: &'a mut DeviceSlice<f32>,
    pub xpart: &'a mut DeviceSlice<f32>,
    pub conv_state: &'a mut DeviceSlice<f32>,
    pub residual: &'a DeviceSlice<f32>,
    pub norm_w: &'a DeviceSlice<f32>,
    pub in_proj: &'a DeviceSlice<f32>,
    pub conv_w: &'a DeviceSlice<f32>,
    pub conv_b: &'a DeviceSlice<f32>,
    pub x_proj: &'a DeviceSlice<f32>,
    pub eps: f32,
}

/// The arguments of [`Gpu::decode_ssm_f32`].
pub struct DecodeSsm<'a> {
    pub y: &'a mut DeviceSlice<f32>,
    pub ssm_state: &'a mut DeviceSlice<f32>,
    pub xpart: &'a DeviceSlice<f32>,
    pub xc: &'a DeviceSlice<f32>,
    pub z: &'a DeviceSlice<f32>,
    pub dt_w: &'a DeviceSlice<f32>,
    pub dt_b: &'a DeviceSlice<f32>,
    /// A = -exp(A_log), (D, N)
    pub a: &'a DeviceSlice<f32>,
    pub d_skip: &'a DeviceSlice<f32>,
}

impl Gpu {
    /// `residual` (B, M) = rows `ids` (B, as floats) of `embedding` (V, M) — twin of
    /// `ops::decode::cpu::decode_embed`.
    pub fn decode_embed_f32(
        &self,
        residual: &mut DeviceSlice<f32>,
        embedding: &DeviceSlice<f32>,
        ids: &DeviceSlice<f32>,
        m: usize,
    ) -> Result<()> {
        const K: &str = "decode_embed_f32";
        let batch = ids.len();
        check_len(K, "residual", residual.len(), batch * m)?;
        ensure(m > 0 && embedding.len().is_multiple_of(m), K, || format!("embedding is not rows of {m}"))?;
        let vocab = embedding.len() / m;
        ensure(vocab > 0 && batch > 0, K, || "empty embedding or batch".into())?;
        let params = DecodeEmbedParams {
            residual: residual.as_device_ptr(),
            embedding: embedding.as_device_ptr(),
            ids: ids.as_device_ptr(),
            batch: to_i32(K, "batch", batch)?,
            m: to_i32(K, "m", m)?,
            vocab: to_i32(K, "vocab", vocab)?,
            pad: 0,
        };
        let cost = Cost::f32s(2 * batch * m + batch);
        self.launch(K, batch as u32, THREADS, 0, params, cost)
    }

    /// Norm, in_proj, conv and the x_proj partials of one token — twin of
    /// `ops::decode::cpu::decode_in`.
    pub fn decode_in_f32(&self, dims: DecodeDims, a: DecodeIn<'_>) -> Result<()> {
        const K: &str = "decode_in_f32";
        if let Some(why) = dims.unsupported() {
            return Err(crate::Error::bad(K, why));
        }
        let DecodeDims { batch, m, d, d_conv: k, .. } = dims;
        let xdim = dims.xdim();
        for (name, len, want) in [
            ("xc", a.xc.len(), batch * d),
            ("z", a.z.len(), batch * d),
            ("xpart", a.xpart.len(), dims.xpart_len()),
            ("conv_state", a.conv_state.len(), batch * d * k),
            ("residual", a.residual.len(), batch * m),
            ("norm_w", a.norm_w.len(), m),
            ("in_proj", a.in_proj.len(), 2 * d * m),
            ("conv_w", a.conv_w.len(), d * k),
            ("conv_b", a.conv_b.len(), d),
            ("x_proj", a.x_proj.len(), xdim * d),
        ] {
            check_len(K, name, len, want)?;
        }
        let bt = batch_tile(batch, m);
        let params = DecodeInParams {
            xc: a.xc.as_device_ptr(),
            z: a.z.as_device_ptr(),
            xpart: a.xpart.as_device_ptr(),
            conv_state: a.conv_state.as_device_ptr(),
            residual: a.residual.as_device_ptr(),
            norm_w: a.norm_w.as_device_ptr(),
            in_proj: a.in_proj.as_device_ptr(),
            conv_w: a.conv_w.as_device_ptr(),
            conv_b: a.conv_b.as_device_ptr(),
            x_proj: a.x_proj.as_device_ptr(),
            batch: to_i32(K, "batch", batch)?,
            m: m as i32,
            d: d as i32,
            k: k as i32,
            xdim: xdim as i32,
            bt: bt as i32,
            eps: a.eps,
            pad: 0,
        };
        // Reads in_proj, x_proj, the conv weights and state once; 2 FLOPs a weight a row.
        let weights = 2 * d * m + xdim * d + d * (k + 1) + m;
        let acts = batch * (m + 2 * d * k + 2 * d) + dims.xpart_len();
        let cost = Cost { bytes: 4.0 * (weights + acts) as f64, flops: (2 * batch * (2 * d * m + xdim * d)) as f64 };
        let grid = ((2 * d / DECODE_BLOCK_ROWS) as u32, batch.div_ceil(bt) as u32);
        self.launch(K, grid, THREADS, (4 * bt * m) as u32, params, cost)
    }

    /// The SSM update and gated output of one token — twin of `ops::decode::cpu::decode_ssm`.
    pub fn decode_ssm_f32(&self, dims: DecodeDims, a: DecodeSsm<'_>) -> Result<()> {
        const K: &str = "decode_ssm_f32";
        if let Some(why) = dims.unsupported() {
            return Err(crate::Error::bad(K, why));
        }
        let DecodeDims { batch, d, d_state: n, dt_rank: r, .. } = dims;
        for (name, len, want) in [
            ("y", a.y.len(), batch * d),
            ("ssm_state", a.ssm_state.len(), batch * d * n),
            ("xpart", a.xpart.len(), dims.xpart_len()),
            ("xc", a.xc.len(), batch * d),
            ("z", a.z.len(), batch * d),
            ("dt_w", a.dt_w.len(), d * r),
            ("dt_b", a.dt_b.len(), d),
            ("a", a.a.len(), d * n),
            ("d_skip", a.d_skip.len(), d),
        ] {
            check_len(K, name, len, want)?;
        }
        ensure(batch <= 65535, K, || format!("batch {batch} exceeds the grid's 65535"))?;
        let params = DecodeSsmParams {
            y: a.y.as_device_ptr(),
            ssm_state: a.ssm_state.as_device_ptr(),
            xpart: a.xpart.as_device_ptr(),
            xc: a.xc.as_device_ptr(),
            z: a.z.as_device_ptr(),
            dt_w: a.dt_w.as_device_ptr(),
            dt_b: a.dt_b.as_device_ptr(),
            a: a.a.as_device_ptr(),
            d_skip: a.d_skip.as_device_ptr(),
            batch: batch as i32,
            d: d as i32,
            n: n as i32,
            r: r as i32,
            n_parts: (d / DECODE_BLOCK_ROWS) as i32,
            pad: 0,
        };
        // Reads the partials (each block all of its row's), states twice, small weights.
        let bytes = 4 * (dims.xpart_len() + 2 * batch * d * n + d * (r + n + 2) + 4 * batch * d);
        let flops = batch * d * (2 * r + 6 * n + 10);
        let cost = Cost { bytes: bytes as f64, flops: flops as f64 };
        let grid = ((d / DECODE_BLOCK_ROWS) as u32, batch as u32);
        self.launch(K, grid, THREADS, (4 * dims.xdim()) as u32, params, cost)
    }

    /// `residual` (B, M) += `out_proj` (M, D) `y` (B, D) — twin of `ops::decode::cpu::decode_out`.
    pub fn decode_out_f32(
        &self,
        residual: &mut DeviceSlice<f32>,
        y: &DeviceSlice<f32>,
        out_proj: &DeviceSlice<f32>,
        batch: usize,
    ) -> Result<()> {
        self.decode_rows("decode_out_f32", residual, y, None, out_proj, batch, 0.0)
    }

    /// `logits` (B, V) = `embedding` (V, M) RMSNorm(`residual` (B, M), `norm_w`) — twin of
    /// `ops::decode::cpu::decode_head`.
    pub fn decode_head_f32(
        &self,
        logits: &mut DeviceSlice<f32>,
        residual: &DeviceSlice<f32>,
        norm_w: &DeviceSlice<f32>,
        embedding: &DeviceSlice<f32>,
        eps: f32,
    ) -> Result<()> {
        let batch = residual.len() / norm_w.len().max(1);
        self.decode_rows("decode_head_f32", logits, residual, Some(norm_w), embedding, batch, eps)
    }

    /// out (B, rows) (+)= w (rows, cols) [norm](x (B, cols)): `decode_out_f32` without a norm
    /// (accumulating), `decode_head_f32` with one (overwriting).
    #[allow(clippy::too_many_arguments)]
    fn decode_rows(
        &self,
        kernel: &'static str,
        out: &mut DeviceSlice<f32>,
        x: &DeviceSlice<f32>,
        norm_w: Option<&DeviceSlice<f32>>,
        w: &DeviceSlice<f32>,
        batch: usize,
        eps: f32,
    ) -> Result<()> {
        let cols = x.len() / batch.max(1);
        ensure(batch > 0 && cols > 0 && x.len() == batch * cols, kernel, || "empty or ragged input".into())?;
        ensure(cols.is_multiple_of(4) && cols <= MAX_STAGE_FLOATS, kernel, || {
            format!("rows of {cols} values: need a multiple of 4, at most {MAX_STAGE_FLOATS}")
        })?;
        ensure(w.len().is_multiple_of(cols), kernel, || format!("the weight is not rows of {cols}"))?;
        let rows = w.len() / cols;
        check_len(kernel, "out", out.len(), batch * rows)?;
        if let Some(nw) = norm_w {
            check_len(kernel, "norm_w", nw.len(), cols)?;
        }
        let bt = batch_tile(batch, cols);
        let params = DecodeRowsParams {
            out: out.as_device_ptr(),
            x: x.as_device_ptr(),
            norm_w: norm_w.map_or(DevicePointer::null(), |n| n.as_device_ptr()),
            w: w.as_device_ptr(),
            batch: to_i32(kernel, "batch", batch)?,
            rows: to_i32(kernel, "rows", rows)?,
            cols: cols as i32,
            bt: bt as i32,
            eps,
            pad: 0,
        };
        let cost = Cost {
            bytes: 4.0 * (rows * cols + batch * (cols + 2 * rows)) as f64,
            flops: (2 * batch * rows * cols) as f64,
        };
        let grid = (rows.div_ceil(DECODE_BLOCK_ROWS) as u32, batch.div_ceil(bt) as u32);
        self.launch(kernel, grid, THREADS, (4 * bt * cols) as u32, params, cost)
    }
}
