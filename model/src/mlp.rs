//! The gated MLP of a block (the reference `GatedMLP` of `mamba_ssm/modules/mlp.py`), present
//! when `d_intermediate > 0`. With H = d_intermediate rounded up to a multiple of 128:
//!
//! ```text
//! y, gate = split(fc1(x))          fc1: d_model -> 2H (no bias), split in halves on the last dim
//! out     = fc2(y · silu(gate))    fc2: H -> d_model (no bias)
//! ```
//!
//! It works on any leading shape: (B, L, d_model) in the forward pass, (B, d_model) in step mode.

use crate::{
    config::MambaConfig,
    linear,
    params::{Backend, Decay, Init, Vb},
    Error, Result,
};
use mamba_engine::Tensor;

/// The reference `GatedMLP`'s `multiple_of`: the hidden width is rounded up to it.
pub const MULTIPLE_OF: usize = 128;

/// A gated MLP's parameters (`P` = [`Tensor`]; `()` when only counting them).
pub struct GatedMlp<P = Tensor> {
    /// H, the hidden width.
    pub hidden: usize,
    pub fc1: P, // (2H, d_model)
    pub fc2: P, // (d_model, H)
}

/// H: `d_intermediate` rounded up to a multiple of 128 (`None` if that overflows).
pub fn hidden_width(d_intermediate: usize) -> Option<usize> {
    d_intermediate.div_ceil(MULTIPLE_OF).checked_mul(MULTIPLE_OF)
}

impl GatedMlp {
    /// Declare fc1 and fc2 under `vb` (`backbone.layers.{i}.mlp.`). Both start as PyTorch's
    /// `nn.Linear`, U(±1/sqrt(fan_in)); fc2 is then scaled by 1/sqrt(2 · n_layer), as the
    /// reference's `_init_weights` does for the second residual branch of each block.
    pub fn declare<B: Backend>(cfg: &MambaConfig, vb: &mut Vb<'_, B>) -> Result<GatedMlp<B::Param>> {
        GatedMlp::declare_width(cfg, cfg.d_intermediate, vb)
    }

    /// As [`GatedMlp::declare`] with the hidden width `d_intermediate` (rounded up to 128)
    /// given, e.g. an expert's.
    pub fn declare_width<B: Backend>(
        cfg: &MambaConfig,
        d_intermediate: usize,
        vb: &mut Vb<'_, B>,
    ) -> Result<GatedMlp<B::Param>> {
        let d = cfg.d_model;
        let sizes = hidden_width(d_intermediate).and_then(|h| Some((h, h.checked_mul(2)?)));
        let Some((h, two_h)) = sizes else {
            return Err(Error::Unsupported(format!("the MLP's width {d_intermediate} overflows")));
        };
        let fan = |n: usize| 1.0 / (n as f64).sqrt();
        let fc2_bound = fan(h) / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(GatedMlp {
            hidden: h,
            fc1: vb.get("fc1.weight", &[two_h, d], Init::Uniform { bound: fan(d) }, Decay::Yes)?,
            fc2: vb.get("fc2.weight", &[d, h], Init::Uniform { bound: fc2_bound }, Decay::Yes)?,
        })
    }
}

impl GatedMlp<Tensor> {
    /// x (.., d_model) -> (.., d_model)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.hidden;
        let y = linear(x, &self.fc1)?; // (.., 2H)
        let (y, gate) = (y.narrow(-1, 0, h)?, y.narrow(-1, h, h)?);
        linear(&y.mul(&gate.silu()?)?, &self.fc2)
    }
}
