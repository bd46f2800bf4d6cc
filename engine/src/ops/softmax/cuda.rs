//! The GPU arm of log-softmax and cross-entropy (kernels/cu/softmax.cu): each function
//! allocates the outputs, turns tensors into kernel arguments (`cuda/args.rs`) and launches the
//! kernel twin to the CPU one in `cpu.rs`. The op's `Kernel` impl in `mod.rs` calls it for
//! tensors on the GPU.

use crate::cuda::args::{elems, new_f32, run, upload_i64};
use crate::{error::Result, Tensor};
use mamba_kernels::launch::{CrossEntropyBackward};

/// Twin of `cpu::log_softmax_forward` over rows of `v` (x contiguous).
pub(super) fn log_softmax_forward(x: &Tensor, v: usize) -> Result<Tensor> {
    const OP: &str = "log_softmax";
    let (out, mut o) = new_f32(OP, x.shape())?;
    let xs = elems(OP, x)?;
    run(OP, |g| g.log_softmax_forward_f32(&xs, &mut o, v))?;
    Ok(out)
}

/// Twin of `cpu::log_softmax_backward`.
pub(super) fn log_softmax_backward(y: &Tensor, dy: &Tensor, v: usize) -> Result<Tensor> {
    const OP: &str = "log_softmax";
    let (out, mut o) = new_f32(OP, y.shape())?;
    let (ys, gs) = (elems(OP, y)?, elems(OP, dy)?);
    run(OP, |g| g.log_softmax_backward_f32(&ys, &gs, &mut o, v))?;
    Ok(out)
}

/// Twin of `cpu::cross_entropy_forward`, finished on the GPU: returns the mean loss
/// over the `n_valid` rows (a scalar tensor, never read back here) and the per-row `lse`.
pub(super) fn cross_entropy_forward(
    x: &Tensor,
    targets: &[i64],
    ignore_index: i64,
    n_valid: usize,
    v: usize,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cross_entropy";
    let rows = targets.len();
    let (_keep, gt) = upload_i64(OP, targets)?;
    let (lse, mut l) = new_f32(OP, &[rows])?;
    let (row_loss, mut r) = new_f32(OP, &[rows])?;
    let xs = elems(OP, x)?;
    run(OP, |g| g.cross_entropy_forward_f32(&xs, &gt, ignore_index, &mut l, &mut r, v))?;
    let scale = if n_valid == 0 { 0.0 } else { 1.0 / n_valid as f64 };
    // The same reduce kernel `sum` runs (axis 0 kept as size 1), then the scale on the device.
    let loss = row_loss.sum(&[0], true)?.affine(scale, 0.0)?.reshape(&[])?;
    Ok((loss, lse))
}

/// Twin of `cpu::cross_entropy_backward`, times the (device) scalar `dloss`.
pub(super) fn cross_entropy_backward(
    x: &Tensor,
    lse: &Tensor,
    targets: &[i64],
    ignore_index: i64,
    n_valid: usize,
    dloss: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let v = x.shape().last().copied().unwrap_or(1);
    let (_keep, gt) = upload_i64(OP, targets)?;
    let (dx, mut o) = new_f32(OP, x.shape())?;
    let (xs, ls) = (elems(OP, x)?, elems(OP, lse)?);
    let scale = 1.0 / n_valid.max(1) as f32;
    let args = CrossEntropyBackward { x: &xs, lse: &ls, targets: &gt, ignore_index, scale, dx: &mut o, v };
    run(OP, |g| g.cross_entropy_backward_f32(args))?;
    // dloss stays on the GPU: reading it back would stall the step.
    dx.mul(&dloss.reshape(&[1])?)
}
