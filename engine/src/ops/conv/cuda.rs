//! The GPU arm of the causal conv: `conv1d_causal_forward_f32`, `conv1d_causal_backward_f32`
//! (kernels/cu/conv.cu): each function allocates the outputs, turns tensors into kernel
//! arguments (`cuda/args.rs`) and launches the kernel twin to the CPU one in `cpu.rs`. The op's
//! `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use crate::cuda::args::{elems, new_f32, run};
use crate::{error::{Error, Result}, Device, Tensor};
use mamba_kernels::launch::{ConvDims, ConvGrads};

/// Twin of `cpu::conv::conv1d_causal_forward` on `(b, c, l)` with a `(c, k)` kernel.
pub(super) fn conv1d_causal_forward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "conv1d_causal";
    let (&[b, c, l], k) = (x.shape(), w.shape()[1]) else { unreachable!("shapes checked by the op") };
    let max = mamba_kernels::launch::CONV_MAX_K;
    if k > max {
        // Refused at forward so a model fails at once, not in its backward.
        let msg = format!("the GPU conv takes kernels of at most {max} taps (d_conv), got {k}");
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    let (out, mut o) = new_f32(OP, x.shape())?;
    let (xs, ws) = (elems(OP, x)?, elems(OP, w)?);
    let bs = bias.map(|t| elems(OP, t)).transpose()?;
    run(OP, |g| g.conv1d_causal_forward_f32(&xs, &ws, bs.as_ref(), &mut o, ConvDims { b, c, l, k }))?;
    Ok(out)
}

/// Twin of `cpu::conv::conv1d_causal_backward`: `(dx, dw, db)`.
pub(super) fn conv1d_causal_backward(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "conv1d_causal";
    let (&[b, c, l], k) = (x.shape(), w.shape()[1]) else { unreachable!("shapes checked by the op") };
    let (dx, mut dxs) = new_f32(OP, &[b, c, l])?;
    let (dw, mut dws) = new_f32(OP, &[c, k])?;
    let (db, mut dbs) = new_f32(OP, &[c])?;
    let (xs, ws, gs) = (elems(OP, x)?, elems(OP, w)?, elems(OP, dy)?);
    let grads = ConvGrads { dx: &mut dxs, dw: &mut dws, db: &mut dbs };
    run(OP, |g| g.conv1d_causal_backward_f32(&xs, &ws, &gs, grads, ConvDims { b, c, l, k }))?;
    Ok((dx, dw, db))
}
