//! `attn_cfg`: the settings of the attention layers (`attn_layer_idx`), the keys of the
//! reference `MHA` constructor (`mamba_ssm/modules/mha.py`) with its defaults:
//!
//! ```text
//! "attn_layer_idx": [1], "attn_cfg": {"num_heads": 4, "causal": true, "rotary_emb_dim": 16}
//! ```
//!
//! `num_heads` is required. The config keeps `attn_cfg` as written (so it is saved back as
//! given); [`AttnConfig::read`] types it when a model is built or counted.

use super::keys::{key_error, Fields};
use crate::{Error, Result};
use serde_json::{Map, Value};

/// The keys of the reference `MHA` constructor.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnConfig {
    /// H, query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention; default H): each serves H / num_heads_kv
    /// query heads.
    pub num_heads_kv: usize,
    /// D, channels per head (default d_model / H).
    pub head_dim: usize,
    /// Width of the gated MLP that shares in_proj and out_proj with the attention, rounded
    /// up to a multiple of 256 (default 0: none).
    pub mlp_dim: usize,
    /// Biases on in_proj and out_proj (true, true).
    pub qkv_proj_bias: bool,
    pub out_proj_bias: bool,
    /// The scores' scale (default 1 / sqrt(D)).
    pub softmax_scale: Option<f64>,
    /// Whether a position sees only itself and the past. The reference's default is false;
    /// a language model needs true, and this project refuses false.
    pub causal: bool,
    /// Width of a causal depthwise conv over q, k, v before the attention (0: none).
    pub d_conv: usize,
    /// Channels of each head rotated by the rotary position embedding (0: none), and its base.
    pub rotary_emb_dim: usize,
    pub rotary_emb_base: f64,
    /// Rotating pairs of neighbouring channels instead of the two halves (false; true is
    /// not built).
    pub rotary_emb_interleaved: bool,
}

impl AttnConfig {
    /// Type `attn_cfg` for a model of width `d_model`: wrong types and unknown keys name the
    /// key; the sizes must fit (the reference's asserts, as errors).
    pub fn read(map: &Map<String, Value>, d_model: usize) -> Result<AttnConfig> {
        let mut f = Fields::new(Value::Object(map.clone()), "attn_cfg", "attn_cfg.", "attn_cfg")?;
        let num_heads: usize = f.required("num_heads")?;
        let head_dim: Option<usize> = f.get("head_dim")?;
        let cfg = AttnConfig {
            num_heads,
            num_heads_kv: f.get::<Option<usize>>("num_heads_kv")?.flatten().unwrap_or(num_heads),
            head_dim: head_dim.unwrap_or(d_model.checked_div(num_heads).unwrap_or(0)),
            mlp_dim: f.or::<usize>("mlp_dim", 0)?.div_ceil(256).saturating_mul(256),
            qkv_proj_bias: f.or("qkv_proj_bias", true)?,
            out_proj_bias: f.or("out_proj_bias", true)?,
            softmax_scale: f.or("softmax_scale", None)?,
            causal: f.or("causal", false)?,
            d_conv: f.or("d_conv", 0)?,
            rotary_emb_dim: f.or("rotary_emb_dim", 0)?,
            rotary_emb_base: f.or("rotary_emb_base", 10000.0)?,
            rotary_emb_interleaved: f.or("rotary_emb_interleaved", false)?,
        };
        f.finish()?;
        if head_dim.is_none() && num_heads > 0 && !d_model.is_multiple_of(num_heads) {
            let what = format!("d_model {d_model} is not a multiple of num_heads {num_heads}: set head_dim");
            return Err(key_error("attn_cfg.num_heads", what));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let fail = |key: &str, what: String| Err(key_error(format!("attn_cfg.{key}"), what));
        if self.num_heads == 0 || self.num_heads_kv == 0 || self.head_dim == 0 {
            return fail("num_heads", "num_heads, num_heads_kv and head_dim must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_heads_kv) {
            let what = format!("num_heads {} must be a multiple of num_heads_kv {}", self.num_heads, self.num_heads_kv);
            return fail("num_heads_kv", what);
        }
        if self.rotary_emb_dim > self.head_dim || !self.rotary_emb_dim.is_multiple_of(2) {
            let what =
                format!("rotary_emb_dim {} must be even and at most head_dim {}", self.rotary_emb_dim, self.head_dim);
            return fail("rotary_emb_dim", what);
        }
        if !self.causal {
            let what = "false lets each position see the tokens it must predict: a language model needs \
                        \"causal\": true (the reference's default is false)";
            return fail("causal", what.into());
        }
        if self.rotary_emb_interleaved {
            return Err(Error::Unsupported("attn_cfg.rotary_emb_interleaved = true is not built".into()));
        }
        if self.softmax_scale.is_some_and(|s| !s.is_finite()) || !self.rotary_emb_base.is_finite() {
            return fail("softmax_scale", "softmax_scale and rotary_emb_base must be finite".into());
        }
        Ok(())
    }

    /// Channels of q, k and v together: D (H + 2 num_heads_kv) (`None` on overflow).
    pub fn qkv_dim(&self) -> Option<usize> {
        self.head_dim.checked_mul(self.num_heads_kv.checked_mul(2)?.checked_add(self.num_heads)?)
    }
}
