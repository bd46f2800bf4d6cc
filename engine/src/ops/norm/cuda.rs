//! The GPU arm of RMSNorm: `rms_norm_forward_f32`, `rms_norm_backward_f32`
//! (kernels/cu/norm.cu): each function allocates the outputs, turns tensors into kernel
//! arguments (`cuda/args.rs`) and launches the kernel twin to the CPU one in `cpu.rs`. The op's
//! `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use crate::cuda::args::{elems, new_f32, run};
use crate::{cuda::CudaData, dtype::DType, error::{Error, Result}, Device, Tensor};
use mamba_kernels::launch::{Gpu, RmsNormBackward, RmsNormForward};

/// Twin of `cpu::rms_norm_forward`: `(y, rstd)`. Refuses rows wider than the
/// backward kernel takes, so that a model fails at its first forward, not in backward.
pub(super) fn rms_norm_forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm";
    let d = w.numel();
    if d > mamba_kernels::launch::RMS_NORM_MAX_D {
        let max = mamba_kernels::launch::RMS_NORM_MAX_D;
        let msg = format!(
            "the GPU RMSNorm takes rows of at most {max} values (its backward keeps a row in shared memory), got {d}"
        );
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    let rows = x.numel() / d;
    let (y, mut ys) = new_f32(OP, x.shape())?;
    let (rstd, mut rs) = new_f32(OP, &[rows])?;
    let (xs, ws) = (elems(OP, x)?, elems(OP, w)?);
    let args = RmsNormForward { x: &xs, w: &ws, y: &mut ys, rstd: &mut rs, rows, d, eps: eps as f32 };
    run(OP, |g| g.rms_norm_forward_f32(args))?;
    Ok((y, rstd))
}

/// Twin of `cpu::rms_norm_backward`: `(dx, dw)`.
pub(super) fn rms_norm_backward(x: &Tensor, w: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm";
    let d = w.numel();
    let rows = x.numel() / d;
    let (dx, mut dxs) = new_f32(OP, x.shape())?;
    let (dw, mut dws) = new_f32(OP, &[d])?;
    let scratch = CudaData::alloc(OP, DType::F32, Gpu::rms_norm_scratch_len(rows, d))?;
    let mut sc = scratch.f32(OP)?;
    let (xs, ws, rs, gs) = (elems(OP, x)?, elems(OP, w)?, elems(OP, rstd)?, elems(OP, dy)?);
    let args =
        RmsNormBackward { x: &xs, w: &ws, rstd: &rs, dy: &gs, dx: &mut dxs, dw: &mut dws, scratch: &mut sc, rows, d };
    run(OP, |g| g.rms_norm_backward_f32(args))?;
    Ok((dx, dw))
}
