//! The attention mixer of the hybrid models (the reference `MHA`, `mamba_ssm/modules/mha.py`,
//! the layers named in `attn_layer_idx`), with H query heads, G = num_heads_kv key/value heads
//! (each shared by H / G query heads), D = head_dim and M = mlp_dim:
//!
//! ```text
//! qkv, m   = split(in_proj(h))                  (B, L, D (H + 2G)), (B, L, M)
//! qkv      = causal_depthwise_conv1d(qkv)       if d_conv > 0 (with a bias)
//! q, k, v  = split(qkv)                         (B, H, L, D), (B, G, L, D), (B, G, L, D)
//! q, k     = rotary(q), rotary(k)               the first rotary_emb_dim channels of each head
//! o        = softmax(q kᵀ · scale + causal mask) v            (B, H, L, D), head h reads k, v of h / (H/G)
//! out      = out_proj([o, m_up · silu(m_gate)])               (B, L, d_model)
//! ```
//!
//! Rotary position embedding (non-interleaved, as flash-attn's `RotaryEmbedding`), with
//! R = rotary_emb_dim and a position p: the channel pairs (i, i + R/2), i < R/2, turn by the
//! angle p · base^(-2i/R):
//!
//! ```text
//! x_i' = x_i cos θ_i - x_{i+R/2} sin θ_i,    x_{i+R/2}' = x_{i+R/2} cos θ_i + x_i sin θ_i
//! ```
//!
//! The softmax attention itself is the engine's fused op (`ops::attention`: tiled, online
//! softmax, the (L, L) scores never stored). Step mode keeps a KV cache: the rotated keys and
//! the values of every position so far.

use super::{conv_step, conv_window};
use crate::{
    config::{AttnConfig, MambaConfig},
    params::{Backend, Decay, Init, Vb},
    Error, Result,
};
use mamba_engine::{ops::attention::attention, DType, Device, Tensor};

/// One attention mixer's parameters (`P` = [`Tensor`]; `()` when only counting them).
pub struct Attention<P = Tensor> {
    pub cfg: AttnConfig,
    pub d_model: usize,
    pub in_proj: P,               // (D (H + 2G) + M, d_model)
    pub in_proj_bias: Option<P>,  // (D (H + 2G) + M)
    pub conv: Option<[P; 2]>,     // conv1d.weight (D (H + 2G), 1, d_conv), conv1d.bias
    pub out_proj: P,              // (d_model, D H + M / 2)
    pub out_proj_bias: Option<P>, // (d_model)
}

/// The state of one attention mixer for generation.
pub struct AttentionState {
    /// Rotated keys and values of the positions so far: (B, G, T, D) each; `None` before the
    /// first token.
    pub kv: Option<[Tensor; 2]>,
    /// The last d_conv inputs of the conv (B, D (H + 2G), d_conv), when there is one.
    pub conv: Option<Tensor>,
    /// T, the positions seen (the next one's rotary position).
    pub len: usize,
}

impl Attention {
    /// Declare the parameters under `vb` (`...mixer.`) in the reference's order: in_proj,
    /// conv1d, out_proj; weights as `nn.Linear` (out_proj scaled by 1/sqrt(residuals ·
    /// n_layer), as every residual output), biases zero, the conv as `nn.Conv1d`.
    pub fn declare<B: Backend>(cfg: &MambaConfig, residuals: usize, vb: &mut Vb<'_, B>) -> Result<Attention<B::Param>> {
        let a = AttnConfig::read(&cfg.attn_cfg, cfg.d_model)?;
        let dm = cfg.d_model;
        let sizes = a.qkv_dim().and_then(|qkv| {
            Some((qkv, qkv.checked_add(a.mlp_dim)?, a.head_dim.checked_mul(a.num_heads)?.checked_add(a.mlp_dim / 2)?))
        });
        let Some((qkv, rows, out_cols)) = sizes else {
            return Err(Error::Unsupported(format!("the attention layer's sizes overflow ({a:?})")));
        };
        let uniform = |bound: f64| Init::Uniform { bound };
        let fan = |n: usize| 1.0 / (n as f64).sqrt();
        let in_proj = vb.get("in_proj.weight", &[rows, dm], uniform(fan(dm)), Decay::Yes)?;
        let in_proj_bias = match a.qkv_proj_bias {
            true => Some(vb.get("in_proj.bias", &[rows], zeros_of(rows), Decay::No)?),
            false => None,
        };
        let conv = match a.d_conv {
            0 => None,
            k => Some([
                vb.get("conv1d.weight", &[qkv, 1, k], uniform(fan(k)), Decay::Yes)?,
                vb.get("conv1d.bias", &[qkv], uniform(fan(k)), Decay::No)?,
            ]),
        };
        let scale = (residuals as f64 * cfg.n_layer as f64).sqrt();
        let out_proj = vb.get("out_proj.weight", &[dm, out_cols], uniform(fan(out_cols) / scale), Decay::Yes)?;
        let out_proj_bias = match a.out_proj_bias {
            true => Some(vb.get("out_proj.bias", &[dm], zeros_of(dm), Decay::No)?),
            false => None,
        };
        Ok(Attention { cfg: a, d_model: dm, in_proj, in_proj_bias, conv, out_proj, out_proj_bias })
    }
}

/// `n` zeros (the reference zeroes every `nn.Linear` bias).
fn zeros_of(n: usize) -> Init<'static> {
    Init::Values(Box::new(move |_| vec![0.0; n]))
}

/// `x @ wᵀ (+ b)`.
fn affine(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul_autocast(&w.transpose(0, 1)?)?; // as crate::linear
    Ok(match b {
        Some(b) => y.add(b)?,
        None => y,
    })
}

impl Attention<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model).
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.prefill(h)?.0)
    }

    /// As [`forward`](Self::forward), and the state [`step`](Self::step) continues from.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, AttentionState)> {
        let (batch, len) = (h.dim(0)?, h.dim(1)?);
        let AttnConfig { num_heads: nh, num_heads_kv: g, head_dim: d, .. } = self.cfg;
        let (qkv, mlp) = self.project(h)?; // (B, L, qkv_dim), (B, L, M)
        let (qkv, conv) = match &self.conv {
            None => (qkv, None),
            Some([w, b]) => {
                let x = qkv.transpose(1, 2)?; // (B, qkv_dim, L)
                let window = conv_window(&x, self.cfg.d_conv)?;
                let w = w.reshape(&[w.dim(0)?, self.cfg.d_conv])?;
                (x.conv1d_causal(&w, Some(b))?.transpose(1, 2)?, Some(window))
            }
        };
        let heads = |from: usize, n: usize| -> Result<Tensor> {
            Ok(qkv.narrow(2, from * d, n * d)?.reshape(&[batch, len, n, d])?.transpose(1, 2)?)
        };
        let q = self.rotary(&heads(0, nh)?, 0)?;
        let k = self.rotary(&heads(nh, g)?, 0)?;
        let v = heads(nh + g, g)?;
        let o = self.attend(&q, &k, &v, 0)?; // (B, H, L, D)
        let o = o.transpose(1, 2)?.reshape(&[batch, len, nh * d])?;
        let state = AttentionState { kv: Some([k.contiguous()?, v.contiguous()?]), conv, len };
        Ok((self.output(o, mlp)?, state))
    }

    /// in_proj: the q, k, v channels and the gated MLP's input (empty when M = 0).
    fn project(&self, h: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let p = affine(h, &self.in_proj, self.in_proj_bias.as_ref())?;
        let last = -1;
        let qkv_dim = p.dim(last)? - self.cfg.mlp_dim;
        let mlp = match self.cfg.mlp_dim {
            0 => None,
            m => Some(p.narrow(last, qkv_dim, m)?),
        };
        Ok((p.narrow(last, 0, qkv_dim)?, mlp))
    }

    /// out_proj of the heads' output o (.., D H), with the gated MLP's `up · silu(gate)`
    /// appended when there is one.
    fn output(&self, o: Tensor, mlp: Option<Tensor>) -> Result<Tensor> {
        let o = match mlp {
            None => o,
            Some(m) => {
                let (last, half) = (-1, self.cfg.mlp_dim / 2);
                let gated = m.narrow(last, 0, half)?.mul(&m.narrow(last, half, half)?.silu()?)?;
                Tensor::concat(&[&o, &gated], last)?
            }
        };
        affine(&o, &self.out_proj, self.out_proj_bias.as_ref())
    }

    /// The rotary embedding of x (B, heads, L, D) at positions `start`..`start + L`.
    fn rotary(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (r, d, len) = (self.cfg.rotary_emb_dim, self.cfg.head_dim, x.dim(2)?);
        if r == 0 {
            return Ok(x.clone());
        }
        let half = r / 2;
        let mut cos = Vec::with_capacity(len * r);
        let mut sin = Vec::with_capacity(len * r);
        for p in start..start + len {
            for i in 0..r {
                let inv_freq = self.cfg.rotary_emb_base.powf(-2.0 * (i % half) as f64 / r as f64);
                let angle = p as f64 * inv_freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v: &[f64]| -> Result<Tensor> { Ok(Tensor::from_f64(v, &[len, r], x.dtype())?.to(x.device())?) };
        let (cos, sin) = (table(&cos)?, table(&sin)?);
        let last = 3;
        let xr = x.narrow(last, 0, r)?;
        let turned = Tensor::concat(&[&xr.narrow(last, half, half)?.neg()?, &xr.narrow(last, 0, half)?], last)?;
        let rotated = xr.mul(&cos)?.add(&turned.mul(&sin)?)?;
        if r == d {
            return Ok(rotated);
        }
        Ok(Tensor::concat(&[&rotated, &x.narrow(last, r, d - r)?], last)?)
    }

    /// softmax(q kᵀ · scale + mask) v for queries q (B, H, Lq, D) at positions
    /// `start`..`start + Lq` and keys/values (B, G, Lk, D) at positions 0..Lk: a query sees
    /// the keys at its position and before. The engine's fused op (`ops::attention`), which
    /// never stores the (Lq, Lk) scores and recomputes them in backward.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, start: usize) -> Result<Tensor> {
        let scale = self.cfg.softmax_scale.unwrap_or(1.0 / (self.cfg.head_dim as f64).sqrt());
        Ok(attention(q, k, v, scale, start)?)
    }

    /// An empty state for `batch` sequences (the KV cache starts with the first token).
    pub fn new_state(&self, batch: usize, dtype: DType, device: Device) -> Result<AttentionState> {
        let conv = match &self.conv {
            None => None,
            Some([w, _]) => Some(Tensor::zeros(&[batch, w.dim(0)?, self.cfg.d_conv], dtype, device)?),
        };
        Ok(AttentionState { kv: None, conv, len: 0 })
    }

    /// One token: h (B, d_model) -> (B, d_model); appends its key and value to the cache.
    pub fn step(&self, h: &Tensor, state: &mut AttentionState) -> Result<Tensor> {
        let AttnConfig { num_heads: nh, num_heads_kv: g, head_dim: d, .. } = self.cfg;
        let batch = h.dim(0)?;
        let (qkv, mlp) = self.project(h)?; // (B, qkv_dim), (B, M)
        let qkv = match (&self.conv, state.conv.as_mut()) {
            (None, _) => qkv,
            (Some([w, b]), Some(window)) => conv_step(window, &qkv, w, b)?,
            (Some(_), None) => return Err(Error::Unsupported("this state has no conv window".into())),
        };
        let heads = |from: usize, n: usize| -> Result<Tensor> {
            Ok(qkv.narrow(1, from * d, n * d)?.reshape(&[batch, n, 1, d])?)
        };
        let q = self.rotary(&heads(0, nh)?, state.len)?;
        let (k, v) = (self.rotary(&heads(nh, g)?, state.len)?, heads(nh + g, g)?);
        let [k, v] = match state.kv.take() {
            None => [k, v],
            Some([ck, cv]) => [Tensor::concat(&[&ck, &k], 2)?, Tensor::concat(&[&cv, &v], 2)?],
        };
        let o = self.attend(&q, &k, &v, state.len)?.reshape(&[batch, nh * d])?;
        state.kv = Some([k, v]);
        state.len += 1;
        self.output(o, mlp)
    }
}

#[cfg(test)]
mod tests;
