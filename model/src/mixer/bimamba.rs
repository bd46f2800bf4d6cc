//! The bidirectional Mamba mixer of Vision Mamba (Vim, Zhu et al. 2024; `ssm_cfg.bidirectional
//! = true`): one in_proj and one out_proj around two branches, one reading the sequence
//! forward and one backward, each with its own conv, x_proj, dt_proj, A_log and D (Vim's names:
//! `conv1d_b`, `x_proj_b`, `dt_proj_b`, `A_b_log`, `D_b` for the backward one). With Mamba-1
//! blocks:
//!
//! ```text
//! x, z  = split(in_proj(h))                                (B, d_inner, L) each
//! y_f   = branch_f(x, z)                                   conv, SiLU, S6, · silu(z): mixer/mamba1.rs
//! y_b   = flip(branch_b(flip(x), flip(z)))                 the same over the reversed sequence
//! out   = out_proj((y_f + y_b) / 2)                        Vim's "divide out" combination
//! ```
//!
//! With Mamba-2 blocks the same holds around Mamba-2's inside (conv over xBC, the SSD scan,
//! the gated norm): z, xBC and dt are flipped for the backward branch, which has its own
//! `conv1d_b`, `dt_bias_b`, `A_b_log` and `D_b` and shares the norm's weight.
//!
//! The backward branch runs the same fused scan on a flipped copy rather than a scan that walks
//! backwards: the scan makes its inputs contiguous anyway, and a flip is one pass over them
//! (the `flip` op), so the copy costs one more pass of x, z and y and no new kernel.
//!
//! Every position sees the whole sequence, so there is no step mode.

use super::{mamba1, mamba2, Mamba1, Mamba2};
use crate::{
    config::{MambaConfig, SsmConfig},
    linear,
    params::{Backend, Vb},
    Error, Result,
};
use mamba_engine::Tensor;

/// A bidirectional mixer's parameters (`P` = [`Tensor`]; `()` when only counting them): the
/// forward mixer (in_proj, out_proj, its branch) and the backward branch.
pub enum BiMamba<P = Tensor> {
    /// The backward branch: [conv1d_b.weight, conv1d_b.bias, x_proj_b.weight,
    /// dt_proj_b.weight, dt_proj_b.bias, A_b_log, D_b].
    Mamba1 { forward: Mamba1<P>, backward: [P; 7] },
    /// The backward branch: [conv1d_b.weight, conv1d_b.bias, dt_bias_b, A_b_log, D_b].
    Mamba2 { forward: Mamba2<P>, backward: [P; 5] },
}

impl BiMamba {
    /// Declare the mixer's parameters and then the backward branch's, initialised alike.
    pub fn declare<B: Backend>(cfg: &MambaConfig, residuals: usize, vb: &mut Vb<'_, B>) -> Result<BiMamba<B::Param>> {
        match &cfg.ssm_cfg {
            SsmConfig::Mamba1(c) => {
                let forward = Mamba1::declare(cfg, c, residuals, vb)?;
                let dims = forward.dims;
                let x_proj_rows = dims.dt_rank + 2 * dims.d_state; // did not overflow in Mamba1::declare
                let backward = mamba1::declare_branch(c, dims, x_proj_rows, mamba1::BACKWARD, vb)?;
                Ok(BiMamba::Mamba1 { forward, backward })
            }
            SsmConfig::Mamba2(c) => {
                let forward = Mamba2::declare(cfg, c, residuals, vb)?;
                let backward = mamba2::declare_branch(c, forward.dims, mamba2::BACKWARD, vb)?;
                Ok(BiMamba::Mamba2 { forward, backward })
            }
        }
    }
}

impl BiMamba<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model), every position reading the whole sequence.
    /// `chunk`: the Mamba-1 scan's checkpoint interval (Mamba-2 uses its chunk_size).
    pub fn forward(&self, h: &Tensor, chunk: usize) -> Result<Tensor> {
        match self {
            BiMamba::Mamba1 { forward: f, backward } => {
                let xz = linear(h, &f.in_proj)?.transpose(1, 2)?; // (B, 2 d_inner, L)
                let fwd = [&f.conv_weight, &f.conv_bias, &f.x_proj, &f.dt_proj_weight, &f.dt_proj_bias, &f.a_log, &f.d];
                let y_f = mamba1::inner(f.dims, chunk, &xz, &fwd.map(Tensor::clone))?.out;
                let y_b = mamba1::inner(f.dims, chunk, &xz.flip(2)?, backward)?.out.flip(2)?;
                linear(&y_f.add(&y_b)?.mul_scalar(0.5)?.transpose(1, 2)?, &f.out_proj)
            }
            BiMamba::Mamba2 { forward: f, backward } => {
                let d = f.dims;
                let parts = linear(h, &f.in_proj)?.split(&[d.d_inner, d.conv_dim(), d.nheads], 2)?; // z, xBC, dt
                                                                                                    // inner's order: xBC, z, dt, conv weight, conv bias, A_log, D, dt_bias, (norm)
                let branch = |t: [&Tensor; 3], p: [&Tensor; 5]| -> Result<Tensor> {
                    let mut inputs: Vec<Tensor> = t.into_iter().chain(p).cloned().collect();
                    inputs.extend(f.norm.iter().cloned());
                    Ok(mamba2::inner(d, f.norm_before_gate, &inputs)?.0)
                };
                let y_f = branch(
                    [&parts[1], &parts[0], &parts[2]],
                    [&f.conv_weight, &f.conv_bias, &f.a_log, &f.d, &f.dt_bias],
                )?;
                let flipped = [parts[1].flip(1)?, parts[0].flip(1)?, parts[2].flip(1)?];
                let [cw, cb, dt_bias, a_log, dd] = backward;
                let y_b = branch([&flipped[0], &flipped[1], &flipped[2]], [cw, cb, a_log, dd, dt_bias])?.flip(1)?;
                linear(&y_f.add(&y_b)?.mul_scalar(0.5)?, &f.out_proj)
            }
        }
    }
}

/// The error of a step or a prefill of a bidirectional layer.
pub(crate) fn no_step() -> Error {
    Error::Unsupported("a bidirectional (Vision Mamba) layer reads the whole sequence: it has no step mode".into())
}
