//! The GPU arm of the embedding: `embedding_forward_f32`, `embedding_backward_f32`
//! (kernels/cu/embedding.cu): each function allocates the outputs, turns tensors into kernel
//! arguments (`cuda/args.rs`) and launches the kernel twin to the CPU one in `cpu.rs`. The op's
//! `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use crate::cuda::args::{elems, new_f32, run, upload_ids};
use crate::{dtype::DType, error::Result, Device, Tensor};

/// Twin of `ops::embedding::cpu::embedding_forward`: rows `ids` of the `(v, d)` table `w`.
pub(super) fn embedding_forward(w: &Tensor, ids: &[usize], shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "embedding";
    let d = w.shape()[1];
    let (out, mut o) = new_f32(OP, shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (_keep, gids) = upload_ids(OP, ids)?;
    let ws = elems(OP, w)?;
    run(OP, |g| g.embedding_forward_f32(&ws, &gids, &mut o, ids.len(), d))?;
    Ok(out)
}

/// Twin of `ops::embedding::cpu::embedding_backward`: the `(v, d)` scatter-add of `dy`'s rows.
pub(super) fn embedding_backward(dy: &Tensor, ids: &[usize], v: usize, d: usize) -> Result<Tensor> {
    const OP: &str = "embedding";
    if v * d == 0 || ids.is_empty() {
        return Tensor::zeros(&[v, d], DType::F32, Device::Cuda);
    }
    let (_keep, gids) = upload_ids(OP, ids)?;
    let (out, mut o) = new_f32(OP, &[v, d])?;
    let gs = elems(OP, dy)?;
    run(OP, |g| g.embedding_backward_f32(&gs, &gids, &mut o, ids.len(), v, d))?;
    Ok(out)
}
