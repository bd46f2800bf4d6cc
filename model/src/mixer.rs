//! The mixer of a block: the layer that moves information along the sequence. Each kind is
//! a module file under `mixer/` with the same four parts:
//!
//! ```text
//! declare(cfg, .., vb)        its parameters, once, under the reference names (params.rs)
//! forward(h, chunk)           h (B, L, d_model) -> (B, L, d_model), the whole sequence
//! new_state(batch, ..)        its recurrent state for generation, zero
//! step(h, state)              h (B, d_model) -> (B, d_model), one token, updating the state
//! ```
//!
//! [`Mixer`] and [`MixerState`] have one variant per kind and only dispatch. Mamba-1 is built;
//! Mamba-2 (`ssm_cfg.layer = "Mamba2"`) parses but is refused when a model is built, until its
//! module (`mixer/mamba2.rs`, on the SSD op) exists; attention and MoE come after it.

pub mod mamba1;

pub use mamba1::{Mamba1, Mamba1State};

use crate::{
    config::{MambaConfig, SsmConfig},
    params::{Backend, Vb},
    Error, Result,
};
use mamba_engine::{DType, Device, Tensor};

/// One block's mixer (`P` = [`Tensor`]; `()` when only counting parameters).
pub enum Mixer<P = Tensor> {
    Mamba1(Mamba1<P>),
}

/// The recurrent state of one block's mixer, of the same kind as the mixer.
pub enum MixerState {
    Mamba1(Mamba1State),
}

impl Mixer {
    /// Declare the mixer of layer `layer_idx` under `vb` (`backbone.layers.{i}.mixer.`).
    /// `residuals`: residual branches per block (1, or 2 with an MLP), for the init's scaling.
    pub fn declare<B: Backend>(
        cfg: &MambaConfig,
        layer_idx: usize,
        residuals: usize,
        vb: &mut Vb<'_, B>,
    ) -> Result<Mixer<B::Param>> {
        if cfg.attn_layer_idx.contains(&layer_idx) {
            let what = format!("layer {layer_idx} is attention (attn_layer_idx): attention layers are not built yet");
            return Err(Error::Unsupported(what));
        }
        match &cfg.ssm_cfg {
            SsmConfig::Mamba1(c) => Ok(Mixer::Mamba1(Mamba1::declare(cfg, c, residuals, vb)?)),
            SsmConfig::Mamba2(_) => {
                Err(Error::Unsupported("the Mamba2 mixer is not built yet (issue 10: it needs the SSD op)".into()))
            }
        }
    }
}

impl Mixer<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model). `chunk`: the scan's checkpoint interval.
    pub fn forward(&self, h: &Tensor, chunk: usize) -> Result<Tensor> {
        match self {
            Mixer::Mamba1(m) => m.forward(h, chunk),
        }
    }

    /// A zero state for `batch` sequences.
    pub fn new_state(&self, batch: usize, dtype: DType, device: Device) -> Result<MixerState> {
        match self {
            Mixer::Mamba1(m) => Ok(MixerState::Mamba1(m.new_state(batch, dtype, device)?)),
        }
    }

    /// One token: h (B, d_model) -> (B, d_model), updating `state` (made by this mixer's
    /// [`Mixer::new_state`]; once there are two kinds, another kind's state is an error).
    pub fn step(&self, h: &Tensor, state: &mut MixerState) -> Result<Tensor> {
        match (self, state) {
            (Mixer::Mamba1(m), MixerState::Mamba1(s)) => m.step(h, s),
        }
    }
}
