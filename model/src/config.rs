//! Model configuration, read and written like the reference `MambaConfig`
//! (`mamba_ssm/models/config_mamba.py`) in the `config.json` that `save_pretrained` writes, so
//! checkpoints are interchangeable:
//!
//! ```json
//! {"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
//!  "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {},
//!  "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
//!  "pad_vocab_size_multiple": 16, "tie_embeddings": true}
//! ```
//!
//! Every key but `d_model`, `n_layer` and `vocab_size` has the reference default. `ssm_cfg`
//! names the mixer and holds its own keys (`config/ssm.rs`). A key this project does not know
//! (a misspelling, or another layer's key) or a value of the wrong type is an error that names
//! the key ([`Error::Config`]); whoever read the file adds its path.

mod attn;
mod keys;
mod moe;
mod ssm;

pub use attn::AttnConfig;
pub use moe::MoeConfig;
pub use ssm::{Arch, DtInit, Mamba1Config, Mamba2Config, SsmConfig, SsmKind};

use crate::{Error, Result};
use keys::{key_error, Fields};
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MambaConfig {
    pub d_model: usize,
    /// Hidden width of each block's gated MLP (rounded up to a multiple of 128 as the
    /// reference `GatedMLP` does); 0 (the default): no MLP.
    pub d_intermediate: usize,
    pub n_layer: usize,
    pub vocab_size: usize,
    /// The mixer of the layers and its settings.
    pub ssm_cfg: SsmConfig,
    /// Layers that are attention instead of the SSM mixer (`mixer/attention.rs`), and their
    /// settings (the reference `MHA`'s keys, typed by [`AttnConfig::read`]).
    pub attn_layer_idx: Vec<usize>,
    pub attn_cfg: Map<String, Value>,
    /// Blocks whose MLP branch is a mixture of experts, and their settings (`config/moe.rs`;
    /// not reference keys, written only when some layer is MoE).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moe_layer_idx: Vec<usize>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub moe_cfg: Map<String, Value>,
    /// Only `true` is implemented: RMSNorm (not LayerNorm), eps 1e-5.
    pub rms_norm: bool,
    /// The reference's precision and kernel choices; no effect here (the residual stream is in
    /// the model's dtype).
    pub residual_in_fp32: bool,
    pub fused_add_norm: bool,
    /// The vocabulary is padded up to a multiple of this (8).
    pub pad_vocab_size_multiple: usize,
    /// Only `true` is implemented: the output head is the embedding.
    pub tie_embeddings: bool,
}

/// The keys of the reference `MHA` constructor that `attn_cfg` may hold.
const ATTN_KEYS: [&str; 12] = [
    "num_heads",
    "num_heads_kv",
    "head_dim",
    "mlp_dim",
    "qkv_proj_bias",
    "out_proj_bias",
    "softmax_scale",
    "causal",
    "d_conv",
    "rotary_emb_dim",
    "rotary_emb_base",
    "rotary_emb_interleaved",
];

impl MambaConfig {
    /// A Mamba-1 byte-level model with the reference defaults (d_state 16, d_conv 4, expand 2,
    /// dt_rank ceil(d_model / 16), no MLP).
    pub fn new(d_model: usize, n_layer: usize) -> MambaConfig {
        MambaConfig {
            d_model,
            d_intermediate: 0,
            n_layer,
            vocab_size: 256,
            ssm_cfg: SsmConfig::Mamba1(Mamba1Config::new(d_model)),
            attn_layer_idx: Vec::new(),
            attn_cfg: Map::new(),
            moe_layer_idx: Vec::new(),
            moe_cfg: Map::new(),
            rms_norm: true,
            residual_in_fp32: true,
            fused_add_norm: true,
            pad_vocab_size_multiple: 8,
            tie_embeddings: true,
        }
    }

    /// Parse a reference-style `config.json`: absent keys take the reference defaults, unknown
    /// keys and wrong types are errors naming the key, then the result is validated.
    pub fn from_json(text: &str) -> Result<MambaConfig> {
        let cfg = MambaConfig::read(serde_json::from_str(text)?)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn read(value: Value) -> Result<MambaConfig> {
        let mut f = Fields::new(value, "config", "", "a MambaConfig")?;
        let d_model = f.required("d_model")?;
        let cfg = MambaConfig {
            d_model,
            d_intermediate: f.or("d_intermediate", 0)?,
            n_layer: f.required("n_layer")?,
            vocab_size: f.required("vocab_size")?,
            ssm_cfg: SsmConfig::read(f.or("ssm_cfg", Value::Object(Map::new()))?, d_model)?,
            attn_layer_idx: f.or("attn_layer_idx", Vec::new())?,
            attn_cfg: f.or("attn_cfg", Map::new())?,
            moe_layer_idx: f.or("moe_layer_idx", Vec::new())?,
            moe_cfg: f.or("moe_cfg", Map::new())?,
            rms_norm: f.or("rms_norm", true)?,
            residual_in_fp32: f.or("residual_in_fp32", true)?,
            fused_add_norm: f.or("fused_add_norm", true)?,
            pad_vocab_size_multiple: f.or("pad_vocab_size_multiple", 8)?,
            tie_embeddings: f.or("tie_embeddings", true)?,
        };
        f.finish()?;
        if let Some(key) = cfg.attn_cfg.keys().find(|k| !ATTN_KEYS.contains(&k.as_str())) {
            let what = format!("unknown key: attn_cfg has the keys {}", ATTN_KEYS.join(", "));
            return Err(key_error(format!("attn_cfg.{key}"), what));
        }
        Ok(cfg)
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

    /// Number of parameters of `MambaLM::new(cfg)`, counted from the modules' own declarations
    /// without allocating anything (`params.rs`), in checked arithmetic. An overflowing size,
    /// or a layer this project does not build yet, is [`Error::Unsupported`]: absurd
    /// configurations are refused before anything is allocated.
    pub fn param_count(&self) -> Result<usize> {
        crate::lm::count_parameters(self)
    }

    /// What this implementation supports; anything else is refused with a reason
    /// ([`Error::Unsupported`]). An option that parses but is not built yet (Mamba-2's
    /// `d_ssm`, `D_has_hdim`, `dt_limit`, biases) passes here and is refused when a model is
    /// built (or its parameters counted). The attention settings are checked when some layer
    /// is attention.
    pub fn validate(&self) -> Result<()> {
        let unsupported = |msg: &str| Err(Error::Unsupported(msg.into()));
        if self.d_model == 0 || self.n_layer == 0 || self.vocab_size == 0 {
            return unsupported("d_model, n_layer and vocab_size must be positive");
        }
        self.ssm_cfg.validate(self.d_model)?;
        if !self.rms_norm || !self.tie_embeddings {
            return unsupported("only rms_norm = true and tie_embeddings = true are implemented");
        }
        for (key, layers) in [("attn_layer_idx", &self.attn_layer_idx), ("moe_layer_idx", &self.moe_layer_idx)] {
            for (i, idx) in layers.iter().enumerate() {
                if *idx >= self.n_layer || layers[..i].contains(idx) {
                    let what = format!("layer {idx} is out of range (n_layer {}) or repeated", self.n_layer);
                    return Err(key_error(key, what));
                }
            }
        }
        if !self.attn_layer_idx.is_empty() {
            AttnConfig::read(&self.attn_cfg, self.d_model)?;
        }
        if !self.moe_layer_idx.is_empty() {
            MoeConfig::read(&self.moe_cfg, self.d_model)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
