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
//! [`Mixer`] and [`MixerState`] have one variant per kind and only dispatch: Mamba-1
//! (`mixer/mamba1.rs`, on the selective scan) and Mamba-2 (`ssm_cfg.layer = "Mamba2"`,
//! `mixer/mamba2.rs`, on the SSD scan); attention and MoE come next. The Mamba paper's
//! Table 1 ablations (`ssm_cfg.arch`, `ssm_cfg.ssm` away from their defaults) are a third
//! kind, `mixer/ablation.rs`.

pub mod ablation;
pub mod attention;
pub mod bimamba;
pub mod mamba1;
pub mod mamba2;

pub use ablation::{Ablation, AblationState};
pub use attention::{Attention, AttentionState};
pub use bimamba::BiMamba;
pub use mamba1::{Mamba1, Mamba1State};
pub use mamba2::{Mamba2, Mamba2State};

use crate::{
    config::{MambaConfig, SsmConfig},
    params::{Backend, Vb},
    Error, Result,
};
use mamba_engine::{DType, Device, Tensor};

/// One block's mixer (`P` = [`Tensor`]; `()` when only counting parameters).
pub enum Mixer<P = Tensor> {
    Mamba1(Mamba1<P>),
    Mamba2(Mamba2<P>),
    Ablation(Ablation<P>),
    Attention(Attention<P>),
    BiMamba(BiMamba<P>),
}

/// The recurrent state of one block's mixer, of the same kind as the mixer.
pub enum MixerState {
    Mamba1(Mamba1State),
    Mamba2(Mamba2State),
    Ablation(AblationState),
    Attention(AttentionState),
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
            return Ok(Mixer::Attention(Attention::declare(cfg, residuals, vb)?));
        }
        match &cfg.ssm_cfg {
            SsmConfig::Mamba1(c) if c.bidirectional => Ok(Mixer::BiMamba(BiMamba::declare(cfg, residuals, vb)?)),
            SsmConfig::Mamba2(c) if c.bidirectional => Ok(Mixer::BiMamba(BiMamba::declare(cfg, residuals, vb)?)),
            SsmConfig::Mamba1(c) if c.is_mamba() => Ok(Mixer::Mamba1(Mamba1::declare(cfg, c, residuals, vb)?)),
            SsmConfig::Mamba1(c) => Ok(Mixer::Ablation(Ablation::declare(cfg, c, residuals, vb)?)),
            SsmConfig::Mamba2(c) => Ok(Mixer::Mamba2(Mamba2::declare(cfg, c, residuals, vb)?)),
        }
    }
}

impl<P> Mixer<P> {
    /// The reference name of the mixer's layer: "Mamba1" or "Mamba2"; for the paper's
    /// ablations, the arch and the SSM (e.g. "H3 S4").
    pub fn kind(&self) -> &'static str {
        match self {
            Mixer::Mamba1(_) => "Mamba1",
            Mixer::Mamba2(_) => "Mamba2",
            Mixer::Ablation(m) => m.name(),
            Mixer::Attention(_) => "MHA",
            Mixer::BiMamba(_) => "BiMamba",
        }
    }
}

impl MixerState {
    /// The kind of mixer that made this state: "Mamba1", "Mamba2" or "Ablation".
    pub fn kind(&self) -> &'static str {
        match self {
            MixerState::Mamba1(_) => "Mamba1",
            MixerState::Mamba2(_) => "Mamba2",
            MixerState::Ablation(_) => "Ablation",
            MixerState::Attention(_) => "MHA",
        }
    }
}

impl Mixer<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model). `chunk`: the Mamba-1 scan's checkpoint interval
    /// (`MambaLM::scan_chunk`); Mamba-2 runs its SSD scan in chunks of its own `chunk_size`.
    /// `recompute` (`MambaLM::recompute`): keep only in_proj's output for backward and
    /// recompute the rest of the mixer (before out_proj) there (the ablations keep everything).
    pub fn forward(&self, h: &Tensor, chunk: usize, recompute: bool) -> Result<Tensor> {
        match self {
            Mixer::Mamba1(m) => m.forward(h, chunk, recompute),
            Mixer::Mamba2(m) => m.forward(h, recompute),
            Mixer::Ablation(m) => m.forward(h, chunk),
            Mixer::Attention(m) => m.forward(h),
            Mixer::BiMamba(m) => m.forward(h, chunk),
        }
    }

    /// As [`Mixer::forward`] (no graph is needed), and the state after the last position,
    /// from which [`Mixer::step`] continues: a prompt through the parallel scan (prefill).
    pub fn prefill(&self, h: &Tensor, chunk: usize) -> Result<(Tensor, MixerState)> {
        match self {
            Mixer::Mamba1(m) => m.prefill(h, chunk).map(|(y, s)| (y, MixerState::Mamba1(s))),
            Mixer::Mamba2(m) => m.prefill(h).map(|(y, s)| (y, MixerState::Mamba2(s))),
            Mixer::Ablation(m) => m.prefill(h, chunk).map(|(y, s)| (y, MixerState::Ablation(s))),
            Mixer::Attention(m) => m.prefill(h).map(|(y, s)| (y, MixerState::Attention(s))),
            Mixer::BiMamba(_) => Err(bimamba::no_step()),
        }
    }

    /// A zero state for `batch` sequences.
    pub fn new_state(&self, batch: usize, dtype: DType, device: Device) -> Result<MixerState> {
        match self {
            Mixer::Mamba1(m) => Ok(MixerState::Mamba1(m.new_state(batch, dtype, device)?)),
            Mixer::Mamba2(m) => Ok(MixerState::Mamba2(m.new_state(batch, dtype, device)?)),
            Mixer::Ablation(m) => Ok(MixerState::Ablation(m.new_state(batch, dtype, device)?)),
            Mixer::Attention(m) => Ok(MixerState::Attention(m.new_state(batch, dtype, device)?)),
            Mixer::BiMamba(_) => Err(bimamba::no_step()),
        }
    }

    /// One token: h (B, d_model) -> (B, d_model), updating `state` (made by this mixer's
    /// [`Mixer::new_state`]; another kind's state is an error).
    pub fn step(&self, h: &Tensor, state: &mut MixerState) -> Result<Tensor> {
        match (self, state) {
            (Mixer::Mamba1(m), MixerState::Mamba1(s)) => m.step(h, s),
            (Mixer::Mamba2(m), MixerState::Mamba2(s)) => m.step(h, s),
            (Mixer::Ablation(m), MixerState::Ablation(s)) => m.step(h, s),
            (Mixer::Attention(m), MixerState::Attention(s)) => m.step(h, s),
            (m, s) => Err(Error::Unsupported(format!(
                "a {} mixer cannot step from a {} state (the state was made by another model)",
                m.kind(),
                s.kind()
            ))),
        }
    }
}

/// One step of a causal depthwise convolution: shift the window (B, C, K) left by one, append
/// x (B, C), and return `Σ_k window · weight + bias` (B, C) (weight (C, 1, K), bias (C)).
pub(crate) fn conv_step(window: &mut Tensor, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (c, k) = (weight.dim(0)?, weight.dim(2)?);
    *window = Tensor::concat(&[&window.narrow(2, 1, k - 1)?, &x.unsqueeze(2)?], 2)?;
    let w = weight.reshape(&[1, c, k])?;
    Ok(window.mul(&w)?.sum(&[2], false)?.add(bias)?)
}

/// The last `k` inputs of a causal convolution, x (B, C, L) -> (B, C, k), zeros in front when
/// L < k: the conv state that step mode continues from.
pub(crate) fn conv_window(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, c, l) = (x.dim(0)?, x.dim(1)?, x.dim(2)?);
    if l >= k {
        return Ok(x.narrow(2, l - k, k)?.contiguous()?);
    }
    let zeros = Tensor::zeros(&[b, c, k - l], x.dtype(), x.device())?;
    Ok(Tensor::concat(&[&zeros, x], 2)?)
}
