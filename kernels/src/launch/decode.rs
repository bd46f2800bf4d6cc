//! Launchers of `cu/decode.cu`: one token of a Mamba-1 or Mamba-2 LM in fused kernels.

use super::{Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Result};
pub use crate::shapes::{DecodeDims, DecodeInLayout, DecodeSsdDims};
use crate::shapes::{DECODE_FUSE_MAX_D, DECODE_MAX_ROW, DECODE_SSM_CHANNELS};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads (`DECODE_THREADS`) and warps per block, and batch rows per block at most
/// (`DECODE_BT`) in decode.cu.
const THREADS: u32 = 256;
const WARPS: usize = 8;
const MAX_BT: usize = 8;
/// Blocks that keep every multiprocessor of the H200 busy with two.
const ENOUGH_BLOCKS: usize = 2 * 132;

/// The parameter of `decode_in_f32` (`struct DecodeInParams` in cu/decode.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeInParams {
    xc: DevicePointer<f32>,
    rest: DevicePointer<f32>,
    conv_state: DevicePointer<f32>,
    residual: DevicePointer<f32>,
    norm_w: DevicePointer<f32>,
    in_proj: DevicePointer<f32>,
    conv_w: DevicePointer<f32>,
    conv_b: DevicePointer<f32>,
    embedding: DevicePointer<f32>,
    ids: DevicePointer<f32>,
    batch: i32,
    m: i32,
    rows: i32,
    conv_lo: i32,
    conv_n: i32,
    k: i32,
    bt: i32,
    split: i32,
    eps: f32,
    vocab: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeInParams>() == 120);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeInParams {}

/// The parameter of `decode_ssm_f32` (`struct DecodeSsmParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeSsmParams {
    y: DevicePointer<f32>,
    ssm_state: DevicePointer<f32>,
    xdbl: DevicePointer<f32>,
    xc: DevicePointer<f32>,
    z: DevicePointer<f32>,
    dt_w: DevicePointer<f32>,
    dt_b: DevicePointer<f32>,
    a: DevicePointer<f32>,
    d_skip: DevicePointer<f32>,
    x_proj: DevicePointer<f32>,
    batch: i32,
    d: i32,
    n: i32,
    r: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeSsmParams>() == 96);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeSsmParams {}

/// The parameter of `decode_ssd_f32` (`struct DecodeSsdParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct DecodeSsdParams {
    y: DevicePointer<f32>,
    ssm_state: DevicePointer<f32>,
    xbc: DevicePointer<f32>,
    zdt: DevicePointer<f32>,
    dt_bias: DevicePointer<f32>,
    a: DevicePointer<f32>,
    d_skip: DevicePointer<f32>,
    batch: i32,
    heads: i32,
    headdim: i32,
    d_state: i32,
    ngroups: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeSsdParams>() == 80);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeSsdParams {}

/// The parameter of `decode_rows_f32` (`struct DecodeRowsParams`).
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
    split: i32,
    accumulate: i32,
    eps: f32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<DecodeRowsParams>() == 64);
// SAFETY: device pointers and numbers, laid out as the C struct.
unsafe impl DeviceCopy for DecodeRowsParams {}

/// Batch rows per block for inputs of `cols` values: as many as fit (at most 8, the batch).
fn batch_tile(batch: usize, cols: usize) -> usize {
    (DECODE_MAX_ROW / cols.max(1)).clamp(1, MAX_BT).min(batch.max(1))
}

/// Warps per weight row for `rows` rows of `cols` values in `tiles` batch tiles: the fewest
/// that make enough blocks (a block holds 8 / split rows), but never so many that a warp gets
/// fewer than 32 float4 of a row. At d_model 768, batch 1: in_proj 1 (384 blocks), out_proj 4
/// (384), x_proj 8 (80: its 80 rows allow no more), the head 4 (64); the default model's
/// 128-wide in_proj rows are one warp's.
fn split_for(rows: usize, cols: usize, tiles: usize) -> usize {
    let most = [8, 4, 2].into_iter().find(|&s| cols / 4 >= 32 * s).unwrap_or(1);
    let blocks = |split: usize| rows.div_ceil(WARPS / split) * tiles;
    [1, 2, 4, 8].into_iter().find(|&s| s == most || blocks(s) >= ENOUGH_BLOCKS).unwrap_or(most)
}

/// Whether the buffers the kernels read as float4 start on 16 bytes.
fn aligned(kernel: &'static str, slices: &[(&str, &DeviceSlice<f32>)]) -> Result<()> {
    for (name, s) in slices {
        let at = s.as_device_ptr().as_raw();
        ensure(at.is_multiple_of(16), kernel, || format!("{name} starts at {at:#x}, not on 16 bytes"))?;
    }
    Ok(())
}

/// The arguments of [`Gpu::decode_in_f32`], as in decode.cu.
pub struct DecodeIn<'a> {
    /// (B, conv_n) the conv's output
    pub xc: &'a mut DeviceSlice<f32>,
    /// (B, rows - conv_n) in_proj's other rows (Mamba-1: z; Mamba-2: z and dt)
    pub rest: &'a mut DeviceSlice<f32>,
    pub conv_state: &'a mut DeviceSlice<f32>,
    /// (B, M): the layer's input, or with `embed` its output (the embedding's rows at the ids)
    pub residual: &'a mut DeviceSlice<f32>,
    /// Layer 0's: the residual stream starts from the token ids in this launch
    pub embed: Option<DecodeEmbed<'a>>,
    pub norm_w: &'a DeviceSlice<f32>,
    pub in_proj: &'a DeviceSlice<f32>,
    pub conv_w: &'a DeviceSlice<f32>,
    pub conv_b: &'a DeviceSlice<f32>,
    pub eps: f32,
}

/// The token ids (B, as floats, exact below 2^24; one out of [0, V) is clamped) and the
/// embedding (V, M) whose rows they pick.
#[derive(Clone, Copy)]
pub struct DecodeEmbed<'a> {
    pub embedding: &'a DeviceSlice<f32>,
    pub ids: &'a DeviceSlice<f32>,
}

impl DecodeEmbed<'_> {
    /// The kernel's `embedding`, `ids` and `vocab` for a batch of `batch` rows of `m`.
    fn params(
        &self,
        kernel: &'static str,
        batch: usize,
        m: usize,
    ) -> Result<(DevicePointer<f32>, DevicePointer<f32>, i32)> {
        let Self { embedding, ids } = self;
        check_len(kernel, "ids", ids.len(), batch)?;
        ensure(!embedding.is_empty() && embedding.len().is_multiple_of(m), kernel, || {
            format!("the embedding's {} values are not rows of d_model {m}", embedding.len())
        })?;
        aligned(kernel, &[("embedding", embedding)])?;
        Ok((embedding.as_device_ptr(), ids.as_device_ptr(), to_i32(kernel, "vocab", embedding.len() / m)?))
    }
}

/// The arguments of [`Gpu::decode_ssm_f32`].
pub struct DecodeSsm<'a> {
    pub y: &'a mut DeviceSlice<f32>,
    pub ssm_state: &'a mut DeviceSlice<f32>,
    /// x_proj's output (B, dt_rank + 2 d_state): read, or written when `x_proj` is given
    pub xdbl: &'a mut DeviceSlice<f32>,
    pub xc: &'a DeviceSlice<f32>,
    pub z: &'a DeviceSlice<f32>,
    pub dt_w: &'a DeviceSlice<f32>,
    pub dt_b: &'a DeviceSlice<f32>,
    /// A = -exp(A_log), (D, N)
    pub a: &'a DeviceSlice<f32>,
    pub d_skip: &'a DeviceSlice<f32>,
    /// x_proj (dt_rank + 2 d_state, D) for a layer that [`DecodeDims::fuses_x_proj`]: the
    /// kernel computes `xdbl = x_proj xc` itself instead of reading it
    pub x_proj: Option<&'a DeviceSlice<f32>>,
}

/// The arguments of [`Gpu::decode_ssd_f32`].
pub struct DecodeSsd<'a> {
    /// (B, e) (S C + D x) silu(z)
    pub y: &'a mut DeviceSlice<f32>,
    /// (B, H, P, N)
    pub ssm_state: &'a mut DeviceSlice<f32>,
    /// (B, e + 2GN) decode_in's conv output: x, then B and C of each group
    pub xbc: &'a DeviceSlice<f32>,
    /// (B, e + H) decode_in's other rows: z, then dt before its bias
    pub zdt: &'a DeviceSlice<f32>,
    pub dt_bias: &'a DeviceSlice<f32>,
    /// A = -exp(A_log), (H)
    pub a: &'a DeviceSlice<f32>,
    pub d_skip: &'a DeviceSlice<f32>,
}

/// The arguments of [`Gpu::decode_rows_f32`]:
/// `out (B, rows) = [out +] w (rows, cols) · [RMSNorm with norm_w] x (B, cols)`.
pub struct DecodeRows<'a> {
    pub out: &'a mut DeviceSlice<f32>,
    pub x: &'a DeviceSlice<f32>,
    pub norm_w: Option<&'a DeviceSlice<f32>>,
    pub w: &'a DeviceSlice<f32>,
    pub batch: usize,
    pub accumulate: bool,
    pub eps: f32,
}

impl Gpu {
    /// Norm, in_proj and conv of one token (for layer 0 after the embedding's rows at the
    /// ids) — twin of `ops::decode::cpu::decode_in`.
    pub fn decode_in_f32(&self, layout: DecodeInLayout, a: DecodeIn<'_>) -> Result<()> {
        const K: &str = "decode_in_f32";
        if let Some(why) = layout.unsupported() {
            return Err(crate::Error::bad(K, why));
        }
        let DecodeInLayout { batch, m, rows, conv_lo, conv_n, d_conv: k } = layout;
        for (name, len, want) in [
            ("xc", a.xc.len(), batch * conv_n),
            ("rest", a.rest.len(), batch * layout.rest_len()),
            ("conv_state", a.conv_state.len(), batch * conv_n * k),
            ("residual", a.residual.len(), batch * m),
            ("norm_w", a.norm_w.len(), m),
            ("in_proj", a.in_proj.len(), rows * m),
            ("conv_w", a.conv_w.len(), conv_n * k),
            ("conv_b", a.conv_b.len(), conv_n),
        ] {
            check_len(K, name, len, want)?;
        }
        aligned(K, &[("residual", &*a.residual), ("in_proj", a.in_proj)])?;
        let null = DevicePointer::null();
        let (embedding, ids, vocab) = a.embed.map_or(Ok((null, null, 0)), |e| e.params(K, batch, m))?;
        let bt = batch_tile(batch, m);
        let tiles = batch.div_ceil(bt);
        let split = split_for(rows, m, tiles);
        let params = DecodeInParams {
            xc: a.xc.as_device_ptr(),
            rest: a.rest.as_device_ptr(),
            conv_state: a.conv_state.as_device_ptr(),
            residual: a.residual.as_device_ptr(),
            norm_w: a.norm_w.as_device_ptr(),
            in_proj: a.in_proj.as_device_ptr(),
            conv_w: a.conv_w.as_device_ptr(),
            conv_b: a.conv_b.as_device_ptr(),
            embedding,
            ids,
            batch: batch as i32,
            m: m as i32,
            rows: rows as i32,
            conv_lo: conv_lo as i32,
            conv_n: conv_n as i32,
            k: k as i32,
            bt: bt as i32,
            split: split as i32,
            eps: a.eps,
            vocab,
        };
        // Reads in_proj and the conv weights once, the conv state; 2 FLOPs a weight a row.
        // With the embedding: its rows instead of the residual's, the ids, the residual written.
        let weights = rows * m + conv_n * (k + 1) + m;
        let embed = if a.embed.is_some() { batch * (m + 1) } else { 0 };
        let acts = batch * (m + 2 * conv_n * k + rows) + embed;
        let cost = Cost { bytes: 4.0 * (weights + acts) as f64, flops: (2 * batch * rows * m) as f64 };
        let grid = (rows.div_ceil(WARPS / split) as u32, tiles as u32);
        self.launch_dependent(K, grid, THREADS, (4 * bt * m) as u32, params, cost)
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
            ("xdbl", a.xdbl.len(), batch * dims.xdim()),
            ("xc", a.xc.len(), batch * d),
            ("z", a.z.len(), batch * d),
            ("dt_w", a.dt_w.len(), d * r),
            ("dt_b", a.dt_b.len(), d),
            ("a", a.a.len(), d * n),
            ("d_skip", a.d_skip.len(), d),
        ] {
            check_len(K, name, len, want)?;
        }
        if let Some(w) = a.x_proj {
            ensure(dims.fuses_x_proj(), K, || format!("x_proj of a layer this large ({dims:?}) is its own launch"))?;
            check_len(K, "x_proj", w.len(), dims.xdim() * d)?;
        }
        let params = DecodeSsmParams {
            y: a.y.as_device_ptr(),
            ssm_state: a.ssm_state.as_device_ptr(),
            xdbl: a.xdbl.as_device_ptr(),
            xc: a.xc.as_device_ptr(),
            z: a.z.as_device_ptr(),
            dt_w: a.dt_w.as_device_ptr(),
            dt_b: a.dt_b.as_device_ptr(),
            a: a.a.as_device_ptr(),
            d_skip: a.d_skip.as_device_ptr(),
            x_proj: a.x_proj.map_or(DevicePointer::null(), |w| w.as_device_ptr()),
            batch: batch as i32,
            d: d as i32,
            n: n as i32,
            r: r as i32,
        };
        // Reads the states and writes them back, the small weights once, x_proj's output
        // (and with x_proj its weights, once per block: L2 hits, counted once).
        let fused = a.x_proj.is_some();
        let xw = if fused { dims.xdim() * d } else { 0 };
        let bytes = 4 * (2 * batch * d * n + d * (r + n + 2) + 4 * batch * d + batch * dims.xdim() + xw);
        let flops = batch * d * (2 * r + 6 * n + 10) + 2 * batch * xw;
        let cost = Cost { bytes: bytes as f64, flops: flops as f64 };
        let grid = ((d / DECODE_SSM_CHANNELS) as u32, batch as u32);
        let smem = 4 * (dims.xdim() + if fused { DECODE_FUSE_MAX_D } else { 0 });
        // two kernels, so that x_proj's registers do not cost the large layers their occupancy
        let kernel = if fused { "decode_ssm_xproj_f32" } else { K };
        self.launch_dependent(kernel, grid, THREADS, smem as u32, params, cost)
    }

    /// One token of a Mamba-2 layer's SSD recurrence and gate — twin of
    /// `ops::decode::cpu::decode_ssd`.
    pub fn decode_ssd_f32(&self, dims: DecodeSsdDims, a: DecodeSsd<'_>) -> Result<()> {
        const K: &str = "decode_ssd_f32";
        if let Some(why) = dims.unsupported() {
            return Err(crate::Error::bad(K, why));
        }
        let DecodeSsdDims { batch, heads, headdim, d_state: n, ngroups, .. } = dims;
        let e = dims.d_inner();
        for (name, len, want) in [
            ("y", a.y.len(), batch * e),
            ("ssm_state", a.ssm_state.len(), batch * e * n),
            ("xbc", a.xbc.len(), batch * dims.conv_dim()),
            ("zdt", a.zdt.len(), batch * (e + heads)),
            ("dt_bias", a.dt_bias.len(), heads),
            ("a", a.a.len(), heads),
            ("d_skip", a.d_skip.len(), heads),
        ] {
            check_len(K, name, len, want)?;
        }
        let params = DecodeSsdParams {
            y: a.y.as_device_ptr(),
            ssm_state: a.ssm_state.as_device_ptr(),
            xbc: a.xbc.as_device_ptr(),
            zdt: a.zdt.as_device_ptr(),
            dt_bias: a.dt_bias.as_device_ptr(),
            a: a.a.as_device_ptr(),
            d_skip: a.d_skip.as_device_ptr(),
            batch: batch as i32,
            heads: heads as i32,
            headdim: headdim as i32,
            d_state: n as i32,
            ngroups: ngroups as i32,
            pad: 0,
        };
        // Reads the states and writes them back; x, z, y once, each head's B and C per block.
        let tiles = headdim.div_ceil(WARPS);
        let bytes = 4 * (2 * batch * e * n + 3 * batch * e + batch * heads * (1 + tiles * 2 * n) + 3 * heads);
        let cost = Cost { bytes: bytes as f64, flops: (batch * e * (5 * n + 8)) as f64 };
        let grid = ((heads * tiles) as u32, batch as u32);
        self.launch_dependent(K, grid, THREADS, (8 * n) as u32, params, cost)
    }

    /// `out (B, rows) = [out +] w (rows, cols) · [RMSNorm] x (B, cols)`: x_proj, out_proj
    /// (accumulating into the residual) and the head (normed) — twin of
    /// `ops::decode::cpu::decode_rows`.
    pub fn decode_rows_f32(&self, a: DecodeRows<'_>) -> Result<()> {
        const K: &str = "decode_rows_f32";
        let DecodeRows { out, x, norm_w, w, batch, accumulate, eps } = a;
        let cols = x.len() / batch.max(1);
        ensure(batch > 0 && cols > 0 && x.len() == batch * cols, K, || "empty or ragged input".into())?;
        ensure(cols.is_multiple_of(4) && cols <= DECODE_MAX_ROW, K, || {
            format!("rows of {cols} values: need a multiple of 4, at most {DECODE_MAX_ROW}")
        })?;
        ensure(w.len().is_multiple_of(cols) && !w.is_empty(), K, || format!("the weight is not rows of {cols}"))?;
        ensure(batch <= 65535, K, || format!("batch {batch} exceeds the grid's 65535"))?;
        aligned(K, &[("x", x), ("w", w)])?;
        let rows = w.len() / cols;
        check_len(K, "out", out.len(), batch * rows)?;
        if let Some(nw) = norm_w {
            check_len(K, "norm_w", nw.len(), cols)?;
        }
        let bt = batch_tile(batch, cols);
        let tiles = batch.div_ceil(bt);
        let split = split_for(rows, cols, tiles);
        let params = DecodeRowsParams {
            out: out.as_device_ptr(),
            x: x.as_device_ptr(),
            norm_w: norm_w.map_or(DevicePointer::null(), |n| n.as_device_ptr()),
            w: w.as_device_ptr(),
            batch: batch as i32,
            rows: to_i32(K, "rows", rows)?,
            cols: cols as i32,
            bt: bt as i32,
            split: split as i32,
            accumulate: i32::from(accumulate),
            eps,
            pad: 0,
        };
        let cost = Cost {
            bytes: 4.0 * (rows * cols + batch * (cols + 2 * rows)) as f64,
            flops: (2 * batch * rows * cols) as f64,
        };
        let grid = (rows.div_ceil(WARPS / split) as u32, tiles as u32);
        self.launch_dependent(K, grid, THREADS, (4 * bt * cols) as u32, params, cost)
    }
}
