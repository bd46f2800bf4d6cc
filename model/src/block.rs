//! One layer of the model: the reference `Block` (`mamba_ssm/modules/block.py`).
//!
//! The reference adds the residual *before* the norm ("Add -> Norm -> Mixer"), so a block
//! takes the previous block's output `h` and the residual stream `r`, and returns both:
//!
//! ```text
//! r = h + r                 (r = h in the first block)
//! h = Mixer(RMSNorm(r))                           weight: norm.weight
//! with an MLP (d_intermediate > 0, or the layer in moe_layer_idx):
//!   r = h + r
//!   h = MLP(RMSNorm(r))                           weight: norm2.weight
//!                                                 a GatedMLP, or a mixture of them (moe.rs)
//! ```
//!
//! The model ends with RMSNorm_f(h + r). The same code serves the whole sequence and step
//! mode: the caller says how the mixer runs.

use crate::{
    config::MambaConfig,
    mixer::Mixer,
    mlp::GatedMlp,
    moe::{Moe, MoeStats},
    params::{Backend, Decay, Init, Vb},
    Result, RMS_EPS,
};
use mamba_engine::Tensor;

/// A block's parameters (`P` = [`Tensor`]; `()` when only counting them).
pub struct Block<P = Tensor> {
    pub norm: P, // (d_model)
    pub mixer: Mixer<P>,
    /// The second residual branch, when `d_intermediate > 0`.
    pub mlp: Option<MlpBranch<P>>,
}

/// The MLP branch of a block and its norm.
pub struct MlpBranch<P = Tensor> {
    pub norm2: P, // (d_model)
    pub mlp: Mlp<P>,
}

/// The MLP of a branch: one gated MLP, or a mixture of experts.
pub enum Mlp<P = Tensor> {
    Gated(GatedMlp<P>),
    Moe(Moe<P>),
}

impl Block {
    /// Declare block `layer_idx` under `vb` (`backbone.layers.{i}.`), in the reference's
    /// order: norm, mixer, norm2, mlp.
    pub fn declare<B: Backend>(cfg: &MambaConfig, layer_idx: usize, vb: &mut Vb<'_, B>) -> Result<Block<B::Param>> {
        let d = cfg.d_model;
        let moe = cfg.moe_layer_idx.contains(&layer_idx);
        let residuals = if cfg.d_intermediate > 0 || moe { 2 } else { 1 };
        let norm = vb.get("norm.weight", &[d], Init::Ones, Decay::No)?;
        let mixer = Mixer::declare(cfg, layer_idx, residuals, &mut vb.pp("mixer"))?;
        let mlp = match residuals {
            1 => None,
            _ => Some(MlpBranch {
                norm2: vb.get("norm2.weight", &[d], Init::Ones, Decay::No)?,
                mlp: match moe {
                    true => Mlp::Moe(Moe::declare(cfg, &mut vb.pp("mlp"))?),
                    false => Mlp::Gated(GatedMlp::declare(cfg, &mut vb.pp("mlp"))?),
                },
            }),
        };
        Ok(Block { norm, mixer, mlp })
    }
}

impl Block<Tensor> {
    /// (h, r) -> (h', r') as in the module docs, with `mix` running the mixer on its normed
    /// input (the whole sequence, or one step). An MoE branch pushes its statistics to `moe`
    /// when given (whole sequences: each expert's capacity applies), and runs without a
    /// capacity when not (step mode, prefill).
    pub fn forward_with(
        &self,
        h: Tensor,
        residual: Option<Tensor>,
        mix: impl FnOnce(&Mixer, &Tensor) -> Result<Tensor>,
        moe: Option<&mut Vec<MoeStats>>,
    ) -> Result<(Tensor, Tensor)> {
        let r = match residual {
            Some(r) => h.add(&r)?,
            None => h,
        };
        let h = mix(&self.mixer, &r.rms_norm(&self.norm, RMS_EPS)?)?;
        let Some(branch) = &self.mlp else { return Ok((h, r)) };
        let r = h.add(&r)?;
        let x = r.rms_norm(&branch.norm2, RMS_EPS)?;
        let h = match &branch.mlp {
            Mlp::Gated(mlp) => mlp.forward(&x)?,
            Mlp::Moe(layer) => {
                let (y, stats) = layer.forward(&x, moe.is_some())?;
                if let Some(all) = moe {
                    all.push(stats);
                }
                y
            }
        };
        Ok((h, r))
    }
}

/// The residual loop over `blocks`, for the whole sequence and for one step alike: h (..,
/// d_model) through each block in turn, `mix(i, mixer, x)` running block i's mixer, `moe` as
/// in [`Block::forward_with`]. Returns the residual stream h + r after the last block, which
/// the model's final norm reads.
pub fn through_blocks(
    blocks: &[Block],
    mut h: Tensor,
    mut mix: impl FnMut(usize, &Mixer, &Tensor) -> Result<Tensor>,
    mut moe: Option<&mut Vec<MoeStats>>,
) -> Result<Tensor> {
    let mut residual = None;
    for (i, block) in blocks.iter().enumerate() {
        let (out, r) = block.forward_with(h, residual, |mixer, x| mix(i, mixer, x), moe.as_deref_mut())?;
        (h, residual) = (out, Some(r));
    }
    Ok(match residual {
        Some(r) => h.add(&r)?,
        None => h,
    })
}
