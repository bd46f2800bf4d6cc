//! The GPU arm of the reductions: `reduce_f32` (kernels/cu/reduce.cu): each function allocates
//! the outputs, turns tensors into kernel arguments (`cuda/args.rs`) and launches the kernel
//! twin to the CPU one in `cpu.rs`. The op's `Kernel` impl in `mod.rs` calls it for tensors on
//! the GPU.

use crate::cuda::args::{buffer, new_f32, run, strided};
use crate::{error::Result, shape::Layout, Tensor};
use mamba_kernels::codes as kc;
use super::ReduceOp;

/// Twin of `cpu::reduce`; the output keeps every axis (reduced ones become 1).
pub(super) fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "reduce";
    let l = &x.layout;
    let kept = Layout { shape: out_shape.into(), strides: l.strides.clone(), offset: l.offset };
    let inner = Layout {
        shape: axes.iter().map(|&a| l.shape[a]).collect(),
        strides: axes.iter().map(|&a| l.strides[a]).collect(),
        offset: 0,
    };
    let (out, mut o) = new_f32(OP, out_shape)?;
    let (xs, lk, li) = (buffer(OP, x)?, strided(OP, &kept)?, strided(OP, &inner)?);
    let code = match op {
        ReduceOp::Sum => kc::ReduceOp::Sum,
        ReduceOp::Max => kc::ReduceOp::Max,
    };
    run(OP, |g| g.reduce_f32(code, &xs, lk, li, &mut o))?;
    Ok(out)
}
