//! Model configuration, serialised exactly like the reference `config.json` of
//! `MambaLMHeadModel`, so checkpoints are interchangeable.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The mixer's settings. Fields missing from a config file take the reference defaults
/// (`"ssm_cfg": {}` is what the published Mamba checkpoints contain).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsmConfig {
    #[serde(default = "default_d_state")]
    pub d_state: usize,
    #[serde(default = "default_d_conv")]
    pub d_conv: usize,
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Rank of the delta projection; absent (the reference's "auto") means ceil(d_model / 16),
    /// filled in by [`MambaConfig::from_json`].
    #[serde(default)]
    pub dt_rank: usize,
}

fn default_d_state() -> usize {
    16
}
fn default_d_conv() -> usize {
    4
}
fn default_expand() -> usize {
    2
}
fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MambaConfig {
    pub d_model: usize,
    pub n_layer: usize,
    pub vocab_size: usize,
    pub ssm_cfg: SsmConfig,
    #[serde(default = "default_true")]
    pub rms_norm: bool,
    #[serde(default = "default_true")]
    pub residual_in_fp32: bool,
    #[serde(default = "default_true")]
    pub fused_add_norm: bool,
    #[serde(default = "default_pad")]
    pub pad_vocab_size_multiple: usize,
    #[serde(default = "default_true")]
    pub tie_embeddings: bool,
}

fn default_pad() -> usize {
    8
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

    /// Parse a reference-style `config.json`: absent fields take the reference defaults,
    /// then the result is validated.
    pub fn from_json(text: &str) -> Result<MambaConfig> {
        let mut cfg: MambaConfig = serde_json::from_str(text)?;
        if cfg.ssm_cfg.dt_rank == 0 {
            cfg.ssm_cfg.dt_rank = cfg.d_model.div_ceil(16);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn d_inner(&self) -> usize {
        self.ssm_cfg.expand * self.d_model
    }

    /// The vocabulary rounded up to `pad_vocab_size_multiple`, as the reference does.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(self.pad_vocab_size_multiple.max(1)) * self.pad_vocab_size_multiple.max(1)
    }

    /// [`MambaConfig::padded_vocab`], but `None` where it would overflow.
    pub fn checked_padded_vocab(&self) -> Option<usize> {
        let multiple = self.pad_vocab_size_multiple.max(1);
        self.vocab_size.div_ceil(multiple).checked_mul(multiple)
    }

    /// Number of parameters of `MambaLM::new(cfg)`, in checked arithmetic (`None` where a
    /// size overflows), so absurd configurations are refused before anything is allocated.
    /// Per layer, with d = d_model, e = d_inner, n = d_state, r = dt_rank, k = d_conv:
    ///
    /// ```text
    /// norm d + in_proj 2e·d + conv e·k + e + x_proj (r+2n)·e + dt_proj e·r + e + A_log e·n + D e + out_proj d·e
    /// ```
    ///
    /// plus the embedding (padded vocab · d) and norm_f (d).
    pub fn param_count(&self) -> Option<usize> {
        let s = &self.ssm_cfg;
        let (d, (n, r, k)) = (self.d_model, (s.d_state, s.dt_rank, s.d_conv));
        let e = s.expand.checked_mul(d)?;
        let per_row = [2usize.checked_mul(d)?, k, 1, r.checked_add(n.checked_mul(2)?)?, r, 1, n, 1, d] // times e
            .iter()
            .try_fold(0usize, |acc, &x| acc.checked_add(x))?;
        let layer = e.checked_mul(per_row)?.checked_add(d)?;
        self.n_layer.checked_mul(layer)?.checked_add(self.checked_padded_vocab()?.checked_mul(d)?)?.checked_add(d)
    }

    /// What this implementation supports; anything else is refused with a reason
    /// ([`Error::Unsupported`]).
    pub fn validate(&self) -> Result<()> {
        let s = &self.ssm_cfg;
        let unsupported = |msg: &str| Err(Error::Unsupported(msg.into()));
        if self.d_model == 0 || self.n_layer == 0 || self.vocab_size == 0 {
            return unsupported("d_model, n_layer and vocab_size must be positive");
        }
        if s.d_state == 0 || s.d_conv == 0 || s.expand == 0 || s.dt_rank == 0 {
            return unsupported("ssm_cfg: d_state, d_conv, expand and dt_rank must be positive");
        }
        if !self.rms_norm || !self.tie_embeddings {
            return unsupported("only rms_norm = true and tie_embeddings = true are implemented");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_configs_load_with_reference_defaults() {
        // The shape of state-spaces/mamba-130m's config.json.
        let text = r#"{"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": true,
                       "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8}"#;
        let cfg = MambaConfig::from_json(text).unwrap();
        assert_eq!((cfg.ssm_cfg.d_state, cfg.ssm_cfg.d_conv, cfg.ssm_cfg.expand, cfg.ssm_cfg.dt_rank), (16, 4, 2, 48));
        assert_eq!(cfg.padded_vocab(), 50280);
        assert!(MambaConfig::from_json(r#"{"d_model": 0, "n_layer": 1, "vocab_size": 8, "ssm_cfg": {}}"#).is_err());
        let round_trip = MambaConfig::from_json(&serde_json::to_string(&MambaConfig::new(64, 2)).unwrap()).unwrap();
        assert_eq!(round_trip, MambaConfig::new(64, 2));
    }
}
