//! A mixture-of-experts MLP branch (Switch Transformer; MoE-Mamba, Jamba), for the blocks in
//! `moe_layer_idx`. With E experts (each a [`GatedMlp`]), T tokens x (T, d_model) and k = top_k:
//!
//! ```text
//! p        = softmax(x Wᵀ)                      (T, E)   router: W (E, d_model), no bias
//! chosen   = the k largest p of each token, kept while the expert has room:
//!            an expert takes at most C = ceil(capacity_factor · T · k / E) tokens, in order
//! out_t    = Σ_{e chosen for t} p_te · expert_e(x_t)     a token no expert took gets 0:
//!                                                           the block's residual carries it
//! aux      = coef · E · Σ_e f_e P_e             f_e: share of the T·k choices that went to e
//!                                              (before the capacity), P_e: mean of p_te over t
//! ```
//!
//! The choice is not differentiable; the gradient reaches the router through p_te (the gate)
//! and the load-balancing loss `aux`, which is smallest when the tokens spread evenly. The
//! capacity applies to whole sequences (training and evaluation, as Switch); step mode
//! (generation) sends each token to its top k without a limit.
//!
//! Here every expert runs over all T tokens and the gate zeroes what it did not take: E times
//! the work of one expert, plain ops only. Sending each expert only its tokens needs gather and
//! scatter by index, which the engine does not have yet.

use crate::{
    config::{MambaConfig, MoeConfig},
    linear,
    mlp::GatedMlp,
    params::{Backend, Decay, Init, Vb},
    Result,
};
use mamba_engine::Tensor;

/// An MoE branch's parameters (`P` = [`Tensor`]; `()` when only counting them).
pub struct Moe<P = Tensor> {
    pub cfg: MoeConfig,
    pub router: P, // (E, d_model)
    pub experts: Vec<GatedMlp<P>>,
}

/// What one MoE layer did with a batch: its load-balancing loss (a scalar in the graph) and
/// how the tokens spread.
pub struct MoeStats {
    /// aux_loss_coef · E · Σ_e f_e P_e.
    pub aux_loss: Tensor,
    /// f_e: the share of the top-k choices that went to each expert (sums to 1).
    pub load: Vec<f64>,
    /// Share of the choices dropped by the capacity.
    pub dropped: f64,
}

impl Moe {
    /// Declare the router (`router.weight`, as `nn.Linear`) and the experts
    /// (`experts.{e}.fc1.weight`, `experts.{e}.fc2.weight`, as [`GatedMlp`]) under `vb`
    /// (`backbone.layers.{i}.mlp.`).
    pub fn declare<B: Backend>(cfg: &MambaConfig, vb: &mut Vb<'_, B>) -> Result<Moe<B::Param>> {
        let moe = MoeConfig::read(&cfg.moe_cfg, cfg.d_model)?;
        let bound = 1.0 / (cfg.d_model as f64).sqrt();
        let router = vb.get("router.weight", &[moe.num_experts, cfg.d_model], Init::Uniform { bound }, Decay::Yes)?;
        let experts = (0..moe.num_experts)
            .map(|e| GatedMlp::declare_width(cfg, moe.d_expert, &mut vb.pp(format!("experts.{e}"))))
            .collect::<Result<_>>()?;
        Ok(Moe { cfg: moe, router, experts })
    }
}

impl Moe<Tensor> {
    /// x (.., d_model) -> (.., d_model) and the layer's statistics; `capacity`: drop what
    /// exceeds each expert's capacity (whole sequences) or not (step mode).
    pub fn forward(&self, x: &Tensor, capacity: bool) -> Result<(Tensor, MoeStats)> {
        let shape = x.shape().to_vec();
        let (d, e) = (shape[shape.len() - 1], self.cfg.num_experts);
        let tokens = x.numel() / d.max(1);
        let xs = x.reshape(&[tokens, d])?;
        let p = linear(&xs, &self.router)?.log_softmax()?.exp()?; // (T, E)
        let route = self.route(&p.to_vec_f64()?, tokens, capacity);
        let mask = Tensor::from_f64(&route.mask, &[tokens, e], p.dtype())?.to(p.device())?;
        let gates = p.mul(&mask)?;
        let mut out = Tensor::zeros(&[tokens, d], x.dtype(), x.device())?;
        for (i, expert) in self.experts.iter().enumerate() {
            out = out.add(&expert.forward(&xs)?.mul(&gates.narrow(1, i, 1)?)?)?;
        }
        let out = out.reshape(&shape)?;
        // aux = coef · E · Σ_e f_e P_e, with P_e = mean_t p_te
        let f = Tensor::from_f64(&route.load, &[e], p.dtype())?.to(p.device())?;
        let scale = self.cfg.aux_loss_coef * e as f64 / tokens as f64;
        let aux_loss = p.sum(&[0], false)?.mul(&f)?.sum_all()?.mul_scalar(scale)?;
        Ok((out, MoeStats { aux_loss, load: route.load, dropped: route.dropped }))
    }

    /// The top-k experts of each token by `p` (T x E, row-major; ties to the lower index),
    /// within each expert's capacity when `capacity`.
    fn route(&self, p: &[f64], tokens: usize, capacity: bool) -> Route {
        let (e, k) = (self.cfg.num_experts, self.cfg.top_k);
        let room = match capacity {
            true => (self.cfg.capacity_factor * (tokens * k) as f64 / e as f64).ceil() as usize,
            false => usize::MAX,
        };
        let (mut mask, mut taken, mut chosen) = (vec![0.0; tokens * e], vec![0usize; e], vec![0usize; e]);
        let mut dropped = 0;
        for t in 0..tokens {
            let row = &p[t * e..][..e];
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &x in &order[..k] {
                chosen[x] += 1;
                if taken[x] < room {
                    taken[x] += 1;
                    mask[t * e + x] = 1.0;
                } else {
                    dropped += 1;
                }
            }
        }
        let choices = (tokens * k).max(1) as f64;
        let load = chosen.iter().map(|&c| c as f64 / choices).collect();
        Route { mask, load, dropped: dropped as f64 / choices }
    }
}

/// A batch's routing: the (T, E) 0/1 mask of what each expert takes, the load f_e and the
/// dropped share.
struct Route {
    mask: Vec<f64>,
    load: Vec<f64>,
    dropped: f64,
}

#[cfg(test)]
mod tests;
