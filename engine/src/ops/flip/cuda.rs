//! The GPU arm of flip: `flip_f32` (kernels/cu/flip.cu).

use crate::cuda::args::{elems, new_f32, run};
use crate::{error::Result, Tensor};

/// Twin of `cpu::flip` on the contiguous `x`, viewed as `(outer, n, inner)`.
pub(super) fn flip(x: &Tensor, dims: (usize, usize, usize)) -> Result<Tensor> {
    const OP: &str = "flip";
    let (out, mut o) = new_f32(OP, x.shape())?;
    let xs = elems(OP, x)?;
    run(OP, |g| g.flip_f32(&xs, &mut o, dims))?;
    Ok(out)
}
