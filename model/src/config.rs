//! Model configuration, serialised exactly like the reference `config.json` of
//! `MambaLMHeadModel`, so checkpoints are interchangeable.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsmConfig {
    pub d_state: usize,
    pub d_conv: usize,
    pub expand: usize,
    /// Rank of the delta projection; the reference default is ceil(d_model / 16).
    pub dt_rank: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MambaConfig {
    pub d_model: usize,
    pub n_layer: usize,
    pub vocab_size: usize,
    pub ssm_cfg: SsmConfig,
    pub rms_norm: bool,
    pub residual_in_fp32: bool,
    pub fused_add_norm: bool,
    pub pad_vocab_size_multiple: usize,
    pub tie_embeddings: bool,
}

impl MambaConfig {
    /// The reference defaults (d_state 16, d_conv 4, expand 2) for a byte-level model.
    pub fn new(d_model: usize, n_layer: usize) -> MambaConfig {
        MambaConfig {
            d_model,
            n_layer,
            vocab_size: 256,
            ssm_cfg: SsmConfig { d_state: 16, d_conv: 4, expand: 2, dt_rank: d_model.div_ceil(16) },
            rms_norm: true,
            residual_in_fp32: true,
            fused_add_norm: true,
            pad_vocab_size_multiple: 8,
            tie_embeddings: true,
        }
    }

    pub fn d_inner(&self) -> usize {
        self.ssm_cfg.expand * self.d_model
    }

    /// The vocabulary rounded up to `pad_vocab_size_multiple`, as the reference does.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(self.pad_vocab_size_multiple.max(1)) * self.pad_vocab_size_multiple.max(1)
    }

    /// What this implementation supports; anything else is refused with a reason.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.ssm_cfg;
        if self.d_model == 0 || self.n_layer == 0 || self.vocab_size == 0 {
            return Err("d_model, n_layer and vocab_size must be positive".into());
        }
        if s.d_state == 0 || s.d_conv == 0 || s.expand == 0 || s.dt_rank == 0 {
            return Err("ssm_cfg: d_state, d_conv, expand and dt_rank must be positive".into());
        }
        if !self.rms_norm || !self.tie_embeddings {
            return Err("only rms_norm = true and tie_embeddings = true are implemented".into());
        }
        Ok(())
    }
}
