//! The GPU arm of the AdamW step: `adamw_step_f32` (kernels/cu/adamw.cu): each function
//! allocates the outputs, turns tensors into kernel arguments (`cuda/args.rs`) and launches the
//! kernel twin to the CPU one in `cpu.rs`. The op's `Kernel` impl in `mod.rs` calls it for
//! tensors on the GPU.

use crate::cuda::args::{Slice, elems, run};
use crate::{cuda::f32_only, dtype::DType, error::Result, storage::Storage, Tensor};
use mamba_kernels::launch::{AdamWStep};
use super::AdamWHyper;

/// Twin of `cpu::adamw_step` through `ops::adamw::adamw_step`, which has checked that
/// the four tensors agree, that `param`, `m`, `v` are contiguous and that no two share a
/// buffer. Updates `param`, `m` and `v` in place (one launch) from the contiguous `grad`.
pub(super) fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &AdamWHyper,
) -> Result<()> {
    const OP: &str = "adamw_step";
    // The written buffers stay locked for writing until the launch is queued (distinct
    // buffers, checked by the op, so no lock is taken twice).
    fn write(t: &Tensor) -> std::sync::RwLockWriteGuard<'_, Storage> {
        t.storage.write().unwrap_or_else(|e| e.into_inner())
    }
    let slice = |s: &Storage, t: &Tensor| -> Result<Slice> {
        let data = s.as_cuda(OP)?;
        if data.dtype() != DType::F32 {
            return Err(f32_only(OP, data.dtype()));
        }
        data.slice(OP, t.layout.offset, t.numel())
    };
    let (lp, lm, lv) = (write(param), write(m), write(v));
    let (mut ps, mut ms, mut vs) = (slice(&lp, param)?, slice(&lm, m)?, slice(&lv, v)?);
    let gs = elems(OP, grad)?;
    let f = |x: f64| x as f32;
    let (lr, eps, wd) = (f(h.lr), f(h.eps), f(h.weight_decay));
    let step = AdamWStep { lr, b1: h.b1, b2: h.b2, eps, wd, bias1: f(h.bias1), bias2: f(h.bias2) };
    run(OP, |g| g.adamw_step_f32(&mut ps, &gs, &mut ms, &mut vs, step))
}
