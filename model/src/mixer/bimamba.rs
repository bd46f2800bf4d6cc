//! The bidirectional Mamba mixer of Vision Mamba (Vim, Zhu et al. 2024; `ssm_cfg.bidirectional
//! = true`): one in_proj and one out_proj around two Mamba-1 branches, one reading the sequence
//! forward and one backward, each with its own conv, x_proj, dt_proj, A_log and D (Vim's names:
//! `conv1d_b`, `x_proj_b`, `dt_proj_b`, `A_b_log`, `D_b` for the backward one):
//!
//! ```text
//! x, z  = split(in_proj(h))                                (B, d_inner, L) each
//! y_f   = branch_f(x, z)                                   conv, SiLU, S6, · silu(z): mixer/mamba1.rs
//! y_b   = flip(branch_b(flip(x), flip(z)))                 the same over the reversed sequence
//! out   = out_proj((y_f + y_b) / 2)                        Vim's "divide out" combination
//! ```
//!
//! The backward branch runs the same fused scan on a flipped copy rather than a scan that walks
//! backwards: the scan makes its inputs contiguous anyway, and a flip is one pass over them
//! (the `flip` op), so the copy costs one more pass of x, z and y and no new kernel.
//!
//! Every position sees the whole sequence, so there is no step mode.

use super::mamba1::{declare_branch, inner, Mamba1, BACKWARD};
use crate::{
    config::{Mamba1Config, MambaConfig},
    linear,
    params::{Backend, Vb},
    Error, Result,
};
use mamba_engine::Tensor;

/// A bidirectional mixer's parameters (`P` = [`Tensor`]; `()` when only counting them).
pub struct BiMamba<P = Tensor> {
    /// in_proj, out_proj and the forward branch, exactly a Mamba-1 mixer's.
    pub forward: Mamba1<P>,
    /// The backward branch: [conv1d_b.weight, conv1d_b.bias, x_proj_b.weight,
    /// dt_proj_b.weight, dt_proj_b.bias, A_b_log, D_b].
    pub backward: [P; 7],
}

impl BiMamba {
    /// Declare the Mamba-1 mixer's parameters and then the backward branch's, initialised alike.
    pub fn declare<B: Backend>(
        cfg: &MambaConfig,
        c: &Mamba1Config,
        residuals: usize,
        vb: &mut Vb<'_, B>,
    ) -> Result<BiMamba<B::Param>> {
        let forward = Mamba1::declare(cfg, c, residuals, vb)?;
        let dims = forward.dims;
        let x_proj_rows = dims.dt_rank + 2 * dims.d_state; // did not overflow in Mamba1::declare
        let backward = declare_branch(c, dims, x_proj_rows, BACKWARD, vb)?;
        Ok(BiMamba { forward, backward })
    }
}

impl BiMamba<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model), every position reading the whole sequence.
    pub fn forward(&self, h: &Tensor, chunk: usize) -> Result<Tensor> {
        let f = &self.forward;
        let xz = linear(h, &f.in_proj)?.transpose(1, 2)?; // (B, 2 d_inner, L)
        let fwd = [&f.conv_weight, &f.conv_bias, &f.x_proj, &f.dt_proj_weight, &f.dt_proj_bias, &f.a_log, &f.d];
        let y_f = inner(f.dims, chunk, &xz, &fwd.map(Tensor::clone))?.out;
        let y_b = inner(f.dims, chunk, &xz.flip(2)?, &self.backward)?.out.flip(2)?;
        let y = y_f.add(&y_b)?.mul_scalar(0.5)?;
        linear(&y.transpose(1, 2)?, &f.out_proj)
    }
}

/// The error of a step or a prefill of a bidirectional layer.
pub(crate) fn no_step() -> Error {
    Error::Unsupported("a bidirectional (Vision Mamba) layer reads the whole sequence: it has no step mode".into())
}
