//! `moe_cfg` and `moe_layer_idx`: which blocks' MLP branch is a mixture of experts, and its
//! settings. Not reference keys (the reference has no MoE): written only when some layer is
//! MoE, so the config of a model without one stays the reference's.
//!
//! ```text
//! "moe_layer_idx": [1, 3], "moe_cfg": {"num_experts": 4, "top_k": 1, "d_expert": 256}
//! ```

use super::keys::{key_error, Fields};
use crate::Result;
use serde_json::{Map, Value};

/// The settings of the MoE layers (`moe.rs`), with their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// E, the experts (required).
    pub num_experts: usize,
    /// Experts each token is sent to (1: Switch).
    pub top_k: usize,
    /// An expert takes at most ceil(capacity_factor · tokens · top_k / E) tokens of a batch;
    /// the rest skip it (1.25).
    pub capacity_factor: f64,
    /// Weight of the load-balancing loss added to the training loss (0.01).
    pub aux_loss_coef: f64,
    /// Hidden width of each expert's gated MLP, rounded up to a multiple of 128 (default: 4 ·
    /// d_model).
    pub d_expert: usize,
}

impl MoeConfig {
    /// Type `moe_cfg` for a model of width `d_model`; errors name the key.
    pub fn read(map: &Map<String, Value>, d_model: usize) -> Result<MoeConfig> {
        let mut f = Fields::new(Value::Object(map.clone()), "moe_cfg", "moe_cfg.", "moe_cfg")?;
        let cfg = MoeConfig {
            num_experts: f.required("num_experts")?,
            top_k: f.or("top_k", 1)?,
            capacity_factor: f.or("capacity_factor", 1.25)?,
            aux_loss_coef: f.or("aux_loss_coef", 0.01)?,
            d_expert: f.or("d_expert", d_model.saturating_mul(4))?,
        };
        f.finish()?;
        let fail = |key: &str, what: String| Err(key_error(format!("moe_cfg.{key}"), what));
        if cfg.num_experts == 0 || cfg.d_expert == 0 {
            return fail("num_experts", "num_experts and d_expert must be positive".into());
        }
        if cfg.top_k == 0 || cfg.top_k > cfg.num_experts {
            return fail("top_k", format!("top_k {} must be 1 to num_experts {}", cfg.top_k, cfg.num_experts));
        }
        if !(cfg.capacity_factor.is_finite() && cfg.capacity_factor > 0.0) {
            return fail("capacity_factor", "capacity_factor must be positive and finite".into());
        }
        if !(cfg.aux_loss_coef.is_finite() && cfg.aux_loss_coef >= 0.0) {
            return fail("aux_loss_coef", "aux_loss_coef must be finite and not negative".into());
        }
        Ok(cfg)
    }
}
