//! The GPU arm of decoding: `decode_in_f32`, `decode_rows_f32`, `decode_ssm_f32`,
//! `decode_ssd_f32` (kernels/cu/decode.cu), twins of `cpu.rs`. `mod.rs`
//! has checked sizes, contiguity, devices and that every written buffer is its own, and holds
//! the locks; this file turns the locked buffers into device slices and launches.

use super::{gate_and_gather, lock, Dims, SsdDims, OP};
use crate::cuda::args::{run, Slice};
use crate::{cuda::f32_only, dtype::DType, error::Result, storage::Storage, Tensor};
use mamba_kernels::launch::{DecodeEmbed, DecodeIn, DecodeRows, DecodeSsd, DecodeSsm};
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

/// The f32 elements of contiguous `t` in its locked storage.
fn slice(s: &Storage, t: &Tensor) -> Result<Slice> {
    let data = s.as_cuda(OP)?;
    if data.dtype() != DType::F32 {
        return Err(f32_only(OP, data.dtype()));
    }
    data.slice(OP, t.layout.offset, t.numel())
}

/// `f` on the device slices of `written` and `read`, locked for the call.
fn with_slices<R>(
    written: &[(&Tensor, usize)],
    read: &[(&Tensor, usize)],
    f: impl FnOnce(Vec<Slice>, &[Slice]) -> Result<R>,
) -> Result<R> {
    let wt: Vec<&Tensor> = written.iter().map(|p| p.0).collect();
    let rt: Vec<&Tensor> = read.iter().map(|p| p.0).collect();
    let (gw, gr) = lock(&wt, &rt);
    let ws = gw.iter().zip(&wt).map(|(g, t)| slice(g, t)).collect::<Result<Vec<_>>>()?;
    let rs = gr.iter().zip(&rt).map(|(g, t)| slice(g, t)).collect::<Result<Vec<_>>>()?;
    f(ws, &rs)
}

pub(super) fn decode_head(
    gw: &RwLockWriteGuard<'_, Storage>,
    gr: &[RwLockReadGuard<'_, Storage>],
    [logits, residual, norm_f, embedding]: [&Tensor; 4],
    eps: f64,
) -> Result<()> {
    let mut out = slice(gw, logits)?;
    let (r, nf, emb) = (slice(&gr[0], residual)?, slice(&gr[1], norm_f)?, slice(&gr[2], embedding)?);
    let batch = residual.numel() / norm_f.numel();
    let args = DecodeRows { out: &mut out, x: &r, norm_w: Some(&nf), w: &emb, batch, accumulate: false, eps: eps as f32 };
    run(OP, |g| g.decode_rows_f32(args))
}

/// `MAMBA_DECODE_XPROJ=separate`: x_proj in its own launch even where decode_ssm could do it
/// (to measure the one against the other; read once).
fn separate_x_proj() -> bool {
    static SEPARATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEPARATE.get_or_init(|| std::env::var("MAMBA_DECODE_XPROJ").is_ok_and(|v| v == "separate"))
}

/// One layer: `decode_in_f32` (for the first layer from the embedding), `decode_rows_f32`
/// (x_proj; for a small layer inside `decode_ssm_f32` instead), `decode_ssm_f32`,
/// `decode_rows_f32` (out_proj into the residual) on the one stream.
/// `written` and `read` are in the order of `super::decode_mamba1`: read has the ten weights,
/// then the embedding and the ids for the first layer.
pub(super) fn decode_mamba1(
    dims: Dims,
    written: &[(&Tensor, usize); 7],
    read: &[(&Tensor, usize)],
    eps: f64,
) -> Result<()> {
    with_slices(written, read, |ws, rs| layer_mamba1(dims, ws, rs, eps))
}

fn layer_mamba1(dims: Dims, ws: Vec<Slice>, rs: &[Slice], eps: f64) -> Result<()> {
    let [mut residual, mut conv_state, mut ssm_state, mut xc, mut z, mut xdbl, mut y] =
        <[Slice; 7]>::try_from(ws).unwrap_or_else(|_| unreachable!("seven buffers"));
    let [norm_w, in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, a, d_skip, out_proj, gather @ ..] = rs else {
        unreachable!("ten weights")
    };
    let embed = match gather {
        [embedding, ids] => Some(DecodeEmbed { embedding, ids }),
        _ => None,
    };
    let (kd, batch, eps) = (dims, dims.batch, eps as f32);
    run(OP, |g| {
        let args = DecodeIn {
            xc: &mut xc,
            rest: &mut z,
            conv_state: &mut conv_state,
            residual: &mut residual,
            embed,
            norm_w,
            in_proj,
            conv_w,
            conv_b,
            eps,
        };
        g.decode_in_f32(kd.in_layout(), args)?;
        let fused = kd.fuses_x_proj() && !separate_x_proj(); // a small layer: x_proj inside decode_ssm
        if !fused {
            g.decode_rows_f32(DecodeRows { out: &mut xdbl, x: &xc, norm_w: None, w: x_proj, batch, accumulate: false, eps })?;
        }
        let x_proj = fused.then_some(x_proj);
        let args =
            DecodeSsm { y: &mut y, ssm_state: &mut ssm_state, xdbl: &mut xdbl, xc: &xc, z: &z, dt_w, dt_b, a, d_skip, x_proj };
        g.decode_ssm_f32(kd, args)?;
        g.decode_rows_f32(DecodeRows { out: &mut residual, x: &y, norm_w: None, w: out_proj, batch, accumulate: true, eps })
    })
}

/// One Mamba-2 layer: `decode_in_f32` (the conv over xBC; for the first layer from the
/// embedding), `decode_ssd_f32`, `decode_rows_f32` (out_proj of the gated norm into the
/// residual). `written` and `read` in the order of `super::decode_mamba2`.
pub(super) fn decode_mamba2(
    dims: SsdDims,
    written: &[(&Tensor, usize); 6],
    read: &[(&Tensor, usize)],
    gated: bool,
    eps: f64,
) -> Result<()> {
    with_slices(written, read, |ws, rs| layer_mamba2(dims, ws, rs, gated, eps))
}

fn layer_mamba2(dims: SsdDims, ws: Vec<Slice>, rs: &[Slice], gated: bool, eps: f64) -> Result<()> {
    let [mut residual, mut conv_state, mut ssm_state, mut xbc, mut zdt, mut y] =
        <[Slice; 6]>::try_from(ws).unwrap_or_else(|_| unreachable!("six buffers"));
    let [norm_w, in_proj, conv_w, conv_b, dt_bias, a, d_skip, out_proj, more @ ..] = rs else {
        unreachable!("eight weights")
    };
    let (gate_norm, gather) = gate_and_gather(more, gated);
    let embed = gather.map(|[embedding, ids]| DecodeEmbed { embedding, ids });
    let (batch, eps) = (dims.batch, eps as f32);
    run(OP, |g| {
        let (xc, rest) = (&mut xbc, &mut zdt);
        let args = DecodeIn { xc, rest, conv_state: &mut conv_state, residual: &mut residual, embed, norm_w, in_proj, conv_w, conv_b, eps };
        g.decode_in_f32(dims.in_layout(), args)?;
        g.decode_ssd_f32(dims, DecodeSsd { y: &mut y, ssm_state: &mut ssm_state, xbc: &xbc, zdt: &zdt, dt_bias, a, d_skip })?;
        g.decode_rows_f32(DecodeRows { out: &mut residual, x: &y, norm_w: gate_norm, w: out_proj, batch, accumulate: true, eps })
    })
}
