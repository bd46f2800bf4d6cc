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
//! Each expert runs on its own tokens only (gathered by index, see `experts_on_their_tokens`),
//! so a layer costs about k experts' work per token, not E. The routing itself runs on the
//! host: it reads p once per layer (one device-to-host copy of T x E values), because the
//! capacity rule walks the tokens in order.

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
        let out = self.experts_on_their_tokens(&xs, &p, &route.mask)?;
        let out = out.reshape(&shape)?;
        // aux = coef · E · Σ_e f_e P_e, with P_e = mean_t p_te
        let f = Tensor::from_f64(&route.load, &[e], p.dtype())?.to(p.device())?;
        let scale = self.cfg.aux_loss_coef * e as f64 / tokens as f64;
        let aux_loss = p.sum(&[0], false)?.mul(&f)?.sum_all()?.mul_scalar(scale)?;
        Ok((out, MoeStats { aux_loss, load: route.load, dropped: route.dropped }))
    }

    /// out (T, d) = Σ_e mask_te p_te expert_e(x_t), each expert run on its own tokens only:
    /// gather them (the engine's row gather, the `embedding` op, whose backward is the
    /// scatter-add), run the expert, scale by the gate p_te, and bring the outputs back the
    /// same way: every output row gets a slot in one (S + 1, d) table (S = the choices kept;
    /// the last row zero, for a token with fewer than k), and token t's r-th kept choice is
    /// gathered from its slot, for r < k. So both directions are gathers by index, and both
    /// backwards the scatter-adds. The indices are made on the host from the routing.
    fn experts_on_their_tokens(&self, xs: &Tensor, p: &Tensor, mask: &[f64]) -> Result<Tensor> {
        let (tokens, d, e_count) = (xs.dim(0)?, xs.dim(1)?, self.cfg.num_experts);
        let (mut outs, mut slots_of, mut slots) = (Vec::new(), vec![Vec::new(); tokens], 0);
        for (e, expert) in self.experts.iter().enumerate() {
            let ids: Vec<usize> = (0..tokens).filter(|&t| mask[t * e_count + e] == 1.0).collect();
            if ids.is_empty() {
                continue; // an expert without tokens does no work (and gets no gradient)
            }
            ids.iter().enumerate().for_each(|(i, &t)| slots_of[t].push(slots + i));
            slots += ids.len();
            let gate = p.narrow(1, e, 1)?.embedding(&ids, &[ids.len()])?; // (n_e, 1)
            outs.push(expert.forward(&xs.embedding(&ids, &[ids.len()])?)?.mul(&gate)?);
            // (n_e, d)
        }
        outs.push(Tensor::zeros(&[1, d], xs.dtype(), xs.device())?); // slot S: no choice
        let table = Tensor::concat(&outs.iter().collect::<Vec<_>>(), 0)?; // (S + 1, d)
        let mut out = Tensor::zeros(&[tokens, d], xs.dtype(), xs.device())?;
        for r in 0..self.cfg.top_k {
            let ids: Vec<usize> = slots_of.iter().map(|s| s.get(r).copied().unwrap_or(slots)).collect();
            out = out.add(&table.embedding(&ids, &[tokens])?)?;
        }
        Ok(out)
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
