//! The GPU arm of attention: `attention_forward_f32_d*`, `attention_delta_f32`,
//! `attention_backward_{dkv,dq}_f32_d*` (kernels/cu/attention.cu, the tiled twins of `cpu.rs`).

use super::AttentionDims;
use crate::cuda::args::{elems, new_f32, run, Slice};
use crate::{error::Result, Tensor};
use mamba_kernels::launch::{
    AttentionBackward, AttentionDims as KDims, AttentionForward, ATTENTION_MAX_HEAD_DIM,
};

const OP: &str = "attention";

/// The sizes as the launchers take them (`attention` sends wider heads elsewhere).
fn kernel_dims(d: AttentionDims) -> KDims {
    const _: () = assert!(super::GPU_MAX_HEAD_DIM == ATTENTION_MAX_HEAD_DIM);
    let AttentionDims { batch, heads, kv_heads, lq, lk, head_dim, start, scale } = d;
    KDims { batch, heads, kv_heads, lq, lk, head_dim, start, scale: scale as f32 }
}

fn slices(ins: &[&Tensor]) -> Result<Vec<Slice>> {
    ins.iter().map(|t| elems(OP, t)).collect()
}

/// Twin of `cpu::attention_forward` on contiguous `[q, k, v]`: `(o, lse)`.
pub(super) fn attention_forward(d: AttentionDims, ins: &[&Tensor]) -> Result<(Tensor, Tensor)> {
    let dims = kernel_dims(d);
    let x = slices(ins)?;
    let (o, mut out) = new_f32(OP, ins[0].shape())?;
    let (lse, mut lse_s) = new_f32(OP, &[d.batch, d.heads, d.lq])?;
    let args = AttentionForward { q: &x[0], k: &x[1], v: &x[2], out: &mut out, lse: &mut lse_s, dims };
    run(OP, |g| g.attention_forward_f32(args))?;
    Ok((o, lse))
}

/// Twin of `cpu::attention_backward` on contiguous `[q, k, v, o, lse, dout]`: `[dq, dk, dv]`.
pub(super) fn attention_backward(d: AttentionDims, ins: &[&Tensor]) -> Result<Vec<Tensor>> {
    let dims = kernel_dims(d);
    let x = slices(ins)?;
    let (_delta, mut delta) = new_f32(OP, &[d.batch, d.heads, d.lq])?;
    let (dq, mut dq_s) = new_f32(OP, ins[0].shape())?;
    let (dk, mut dk_s) = new_f32(OP, ins[1].shape())?;
    let (dv, mut dv_s) = new_f32(OP, ins[2].shape())?;
    let args = AttentionBackward {
        q: &x[0],
        k: &x[1],
        v: &x[2],
        o: &x[3],
        lse: &x[4],
        dout: &x[5],
        delta: &mut delta,
        dq: &mut dq_s,
        dk: &mut dk_s,
        dv: &mut dv_s,
        dims,
    };
    run(OP, |g| g.attention_backward_f32(args))?;
    Ok(vec![dq, dk, dv])
}
