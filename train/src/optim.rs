//! AdamW (Loshchilov & Hutter, 2019), the learning-rate schedule and gradient clipping.
//!
//! For each parameter p with gradient g, at step t (1-based):
//!
//! ```text
//! m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
//! p = p - lr * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)  +  wd * p )
//! ```
//!
//! with wd = 0 for parameters that should not decay (A_log, D, biases, norm weights).
//! Each parameter's update is one fused pass that writes p, m and v in place
//! (`mamba_engine::ops::adamw::adamw_step`: a CPU kernel, or one launch on the GPU); on the
//! CPU it rounds exactly as the ~16 tensor ops it replaced, so the values are the same.

use crate::Result;
use mamba_engine::{
    no_grad,
    ops::adamw::{adamw_step, AdamWHyper},
    Tensor,
};

/// One optimised tensor and its two moment estimates (`exp_avg`, `exp_avg_sq` in PyTorch).
/// `m` and `v` are updated in place: each must be a contiguous buffer of its own, shared
/// with no other tensor (the step refuses a moment that shares `tensor`'s or the other's).
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
    pub m: Tensor,
    pub v: Tensor,
}

pub struct AdamW {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of updates applied so far.
    pub step: u64,
    pub params: Vec<Param>,
}

impl AdamW {
    /// `params`: (name, tensor, whether weight decay applies).
    pub fn new(params: Vec<(String, Tensor, bool)>, lr: f64, weight_decay: f64) -> Result<AdamW> {
        let params = params
            .into_iter()
            .map(|(name, tensor, decay)| {
                Ok(Param { name, m: tensor.zeros_like()?, v: tensor.zeros_like()?, tensor, decay })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay, step: 0, params })
    }

    /// Apply one update from the accumulated gradients (at `self.lr`), then clear them.
    pub fn step(&mut self) -> Result<()> {
        self.step += 1;
        for p in &self.params {
            let Some(g) = p.tensor.grad() else { continue };
            let wd = if p.decay { self.weight_decay } else { 0.0 };
            let h = AdamWHyper::at_step(self.lr, self.betas, self.eps, wd, self.step);
            adamw_step(&p.tensor, &g, &p.m, &p.v, &h)?;
            p.tensor.zero_grad();
        }
        Ok(())
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.tensor.zero_grad());
    }
}

/// Scale all gradients so their joint L2 norm is at most `max_norm`:
///
/// ```text
/// norm = sqrt(sum over parameters of sum(g^2))      scale = min(1, max_norm / (norm + 1e-6))
/// ```
///
/// Returns the norm before clipping as a scalar tensor where the gradients live (a NaN
/// there means a NaN gradient). Nothing is read back to the host: on the GPU the whole
/// computation, the `min` included, stays on the device, and the caller reads the norm
/// together with the loss in one transfer. `None` if no parameter has a gradient.
pub fn clip_grad_norm(params: &[Param], max_norm: f64) -> Result<Option<Tensor>> {
    let _guard = no_grad();
    let grads: Vec<(&Param, Tensor)> = params.iter().filter_map(|p| Some((p, p.tensor.grad()?))).collect();
    let mut sq: Option<Tensor> = None;
    for (_, g) in &grads {
        let s = g.sqr()?.sum_all()?;
        sq = Some(match sq {
            Some(acc) => acc.add(&s)?,
            None => s,
        });
    }
    let Some(sq) = sq else { return Ok(None) };
    let norm = sq.sqrt()?;
    // min(1, r) = -max(-r, -1), with max a reduction over the pair.
    let ratio = norm.add_scalar(1e-6)?.powf(-1.0)?.mul_scalar(max_norm)?;
    let minus_one = Tensor::scalar(-1.0, norm.dtype(), norm.device())?;
    let pair = Tensor::concat(&[&ratio.neg()?.reshape(&[1])?, &minus_one.reshape(&[1])?], 0)?;
    let scale = pair.max(&[0], false)?.neg()?;
    for (p, g) in &grads {
        p.tensor.set_grad(Some(g.mul(&scale)?))?;
    }
    Ok(Some(norm))
}

/// Linear warmup to `max_lr` over `warmup` steps, then cosine decay to `min_lr` at `total`.
///
/// # Examples
///
/// ```
/// use mamba_train::optim::lr_at;
///
/// let lr = |step| lr_at(step, 10, 110, 1e-3, 1e-4); // 10 warmup steps, 100 of decay
/// assert!((lr(0) - 1e-4).abs() < 1e-12); // warmup: max_lr * (step + 1) / warmup
/// assert_eq!(lr(9), 1e-3);
/// assert!((lr(60) - 5.5e-4).abs() < 1e-12); // halfway through the decay: the mean of the two
/// assert_eq!(lr(110), 1e-4);
/// ```
pub fn lr_at(step: u64, warmup: u64, total: u64, max_lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return max_lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= total {
        return min_lr;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    min_lr + 0.5 * (max_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((lr_at(0, 10, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 10, 100, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 10, 100, 1.0, 0.1) - 0.55).abs() < 1e-12);
        assert_eq!(lr_at(100, 10, 100, 1.0, 0.1), 0.1);
    }
}
