//! The Mamba-2 mixer (the reference `Mamba2` of `mamba_ssm/modules/mamba2.py`), with
//! e = d_inner = expand · d_model, P = headdim, H = nheads = e / P, G = ngroups, N = d_state,
//! K = d_conv, Q = chunk_size and conv_dim = e + 2GN:
//!
//! ```text
//! z, xBC, dt = split(in_proj(h))                (B, L, e), (B, L, conv_dim), (B, L, H)
//! xBC        = silu(causal_depthwise_conv1d(xBC))          over time, kernel K, with a bias
//! x, B, C    = split(xBC)                       (B, L, H, P), (B, L, G, N), (B, L, G, N)
//! y          = ssd(x, dt, A = -exp(A_log), B, C, D, dt_bias, chunk Q)          (B, L, e)
//! y          = RMSNorm_G(y · silu(z)) · norm.weight         (the reference's RMSNormGated)
//! out        = out_proj(y)                                                (B, L, d_model)
//! ```
//!
//! The SSD scan (`mamba_engine::ops::ssd`) computes, per head h (one scalar A_h) with a
//! (P, N) state S, head h reading group h / (H / G) of B and C:
//!
//! ```text
//! dt'_t = softplus(dt_t + dt_bias)
//! S_t   = exp(dt'_t A) S_{t-1} + dt'_t x_t B_t^T
//! y_t   = S_t C_t + D x_t
//! ```
//!
//! RMSNorm_G normalises each of the G groups of e/G consecutive channels on its own (eps
//! 1e-5): `v / sqrt(mean_group(v²) + eps)`, then one weight per channel. With the reference's
//! options `norm_before_gate` it is `RMSNorm_G(y) · silu(z)`, and with `rmsnorm = false` there
//! is no norm (and no `norm.weight`): `y · silu(z)`, the gate applied inside the scan.
//!
//! `step` runs the same network one token at a time from a [`Mamba2State`] (the last K
//! inputs of the convolution and the (H, P, N) state per sequence).

use super::{conv_step, conv_window};
use crate::{
    config::{Mamba2Config, MambaConfig},
    kept, linear,
    params::{Backend, Decay, Init, Vb},
    widened, Error, Result, RMS_EPS,
};
use mamba_engine::{
    ops::checkpoint::checkpoint,
    ops::ssd::{ssd, SsdArgs},
    DType, Device, Rng, Tensor,
};

/// The sizes of one Mamba-2 mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub d_model: usize,
    /// e = expand · d_model (all of it goes through the SSM: d_ssm = d_inner).
    pub d_inner: usize,
    /// N, the state size per head.
    pub d_state: usize,
    /// G, groups of heads sharing one B and one C.
    pub ngroups: usize,
    /// H = d_inner / headdim.
    pub nheads: usize,
    /// P, channels per head.
    pub headdim: usize,
    /// K, the convolution's width.
    pub d_conv: usize,
    /// Q, time steps per chunk of the SSD scan.
    pub chunk: usize,
}

impl Dims {
    /// The convolution's channels: x, B and C, e + 2GN.
    pub fn conv_dim(&self) -> usize {
        self.d_inner + 2 * self.ngroups * self.d_state
    }

    /// in_proj's outputs: z, xBC and dt, 2e + 2GN + H.
    pub fn d_in_proj(&self) -> usize {
        self.d_inner + self.conv_dim() + self.nheads
    }
}

/// A Mamba-2 mixer's parameters (`P` = [`Tensor`]; `()` when only counting them).
#[derive(Clone)]
pub struct Mamba2<P = Tensor> {
    pub dims: Dims,
    /// Normalise before the gate (`norm_before_gate`, false by default).
    pub norm_before_gate: bool,
    pub in_proj: P,     // (2e + 2GN + H, d_model)
    pub conv_weight: P, // (conv_dim, 1, K)
    pub conv_bias: P,   // (conv_dim)
    pub dt_bias: P,     // (H)
    pub a_log: P,       // (H)
    pub d: P,           // (H)
    /// The gated RMSNorm's weight (e); `None` with `rmsnorm = false`.
    pub norm: Option<P>,
    pub out_proj: P, // (d_model, e)
}

/// The recurrent state of one Mamba-2 mixer for generation.
pub struct Mamba2State {
    /// The last d_conv inputs of the convolution: (B, conv_dim, d_conv).
    pub conv: Tensor,
    /// The SSM state S of every head: (B, H, P, N).
    pub ssm: Tensor,
}

/// Refuse the reference options this mixer does not build, naming the key.
fn check_built(c: &Mamba2Config, d_inner: usize) -> Result<()> {
    let refuse = |key: &str, what: &str| Err(Error::Unsupported(format!("ssm_cfg.{key}: {what}")));
    if c.d_ssm.is_some_and(|d| d != d_inner) {
        return refuse("d_ssm", "only d_ssm = d_inner (the default) is built, not the gated MLP beside the SSM");
    }
    if c.d_has_hdim {
        return refuse("D_has_hdim", "only D per head (false, the default) is built");
    }
    if c.dt_limit != [0.0, f64::INFINITY] {
        return refuse("dt_limit", "only the default [0, inf] (no clamp) is built");
    }
    if c.bias || !c.conv_bias {
        return refuse("bias", "only bias = false and conv_bias = true (the defaults) are built");
    }
    Ok(())
}

impl Mamba2 {
    /// Declare the parameters under `vb` (`...mixer.`), in the reference's order, with the
    /// reference initialisation: in_proj and out_proj as `nn.Linear` (out_proj then scaled by
    /// 1/sqrt(residuals · n_layer), GPT-2 style), the convolution as `nn.Conv1d` (or
    /// U(±conv_init)), A_log = log U(A_init_range), softplus(dt_bias) log-uniform in
    /// [dt_min, dt_max] floored at dt_init_floor, D = 1, norm.weight = 1.
    pub fn declare<B: Backend>(
        cfg: &MambaConfig,
        c: &Mamba2Config,
        residuals: usize,
        vb: &mut Vb<'_, B>,
    ) -> Result<Mamba2<B::Param>> {
        let dm = cfg.d_model;
        let dims = dims(cfg, c)?;
        check_built(c, dims.d_inner)?;
        let (e, d_in_proj) = (dims.d_inner, dims.d_in_proj());
        let uniform = |bound: f64| Init::Uniform { bound };
        let fan = |n: usize| 1.0 / (n as f64).sqrt(); // nn.Linear / nn.Conv1d default bound
        let residual_scale = (residuals as f64 * cfg.n_layer as f64).sqrt();
        let in_proj = vb.get("in_proj.weight", &[d_in_proj, dm], uniform(fan(dm)), Decay::Yes)?;
        let [conv_weight, conv_bias, dt_bias, a_log, d] = declare_branch(c, dims, FORWARD, vb)?;
        let norm = match c.rmsnorm {
            true => Some(vb.get("norm.weight", &[e], Init::Ones, Decay::No)?),
            false => None,
        };
        let out_proj = vb.get("out_proj.weight", &[dm, e], uniform(fan(e) / residual_scale), Decay::Yes)?;
        Ok(Mamba2 {
            dims,
            norm_before_gate: c.norm_before_gate,
            in_proj,
            conv_weight,
            conv_bias,
            dt_bias,
            a_log,
            d,
            norm,
            out_proj,
        })
    }
}

/// The names of a branch's parameters in [`declare_branch`]'s order: the Mamba-2 block's, and
/// the backward branch of a bidirectional block (`mixer/bimamba.rs`).
pub(crate) type BranchNames = [&'static str; 5];
pub(crate) const FORWARD: BranchNames = ["conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D"];
pub(crate) const BACKWARD: BranchNames = ["conv1d_b.weight", "conv1d_b.bias", "dt_bias_b", "A_b_log", "D_b"];

/// The conv and SSD parameters of one branch, as the reference initialises them: [conv
/// weight, conv bias, dt_bias, A_log, D] under `names`.
pub(crate) fn declare_branch<B: Backend>(
    c: &Mamba2Config,
    dims: Dims,
    names: BranchNames,
    vb: &mut Vb<'_, B>,
) -> Result<[B::Param; 5]> {
    let (h, k, conv_dim) = (dims.nheads, dims.d_conv, dims.conv_dim());
    let fan = 1.0 / (k as f64).sqrt(); // nn.Conv1d's default bound
    let conv_init = Init::Uniform { bound: c.conv_init.unwrap_or(fan) };
    // dt ~ exp(U(log dt_min, log dt_max)) floored; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
    let (lo, hi, floor) = (c.dt_min.ln(), c.dt_max.ln(), c.dt_init_floor);
    let dt_bias = move |rng: &mut Rng| -> Vec<f64> {
        let softplus_inv = |dt: f64| dt + (-(-dt).exp_m1()).ln();
        (0..h).map(|_| softplus_inv((lo + (hi - lo) * rng.uniform()).exp().max(floor))).collect()
    };
    let [a_lo, a_hi] = c.a_init_range;
    let a_log =
        move |rng: &mut Rng| -> Vec<f64> { (0..h).map(|_| (a_lo + (a_hi - a_lo) * rng.uniform()).ln()).collect() };
    Ok([
        vb.get(names[0], &[conv_dim, 1, k], conv_init, Decay::Yes)?,
        vb.get(names[1], &[conv_dim], Init::Uniform { bound: fan }, Decay::No)?,
        vb.get(names[2], &[h], Init::Values(Box::new(dt_bias)), Decay::No)?,
        vb.get(names[3], &[h], Init::Values(Box::new(a_log)), Decay::No)?,
        vb.get(names[4], &[h], Init::Ones, Decay::No)?,
    ])
}

/// The sizes of `c` in a model of `cfg.d_model`, in checked arithmetic (the config's
/// validation has checked that headdim divides d_inner and ngroups the heads).
fn dims(cfg: &MambaConfig, c: &Mamba2Config) -> Result<Dims> {
    let dm = cfg.d_model;
    let sizes = c.d_inner(dm).and_then(|e| {
        let conv_dim = c.ngroups.checked_mul(c.d_state)?.checked_mul(2)?.checked_add(e)?;
        let nheads = e.checked_div(c.headdim)?;
        conv_dim.checked_add(e)?.checked_add(nheads)?; // d_in_proj
        Some((e, nheads))
    });
    let Some((d_inner, nheads)) = sizes else {
        let what = format!(
            "the Mamba2 mixer's sizes overflow (d_model {dm}, expand {}, d_state {}, ngroups {}, headdim {})",
            c.expand, c.d_state, c.ngroups, c.headdim
        );
        return Err(Error::Unsupported(what));
    };
    Ok(Dims {
        d_model: dm,
        d_inner,
        d_state: c.d_state,
        ngroups: c.ngroups,
        nheads,
        headdim: c.headdim,
        d_conv: c.d_conv,
        chunk: c.chunk_size,
    })
}

impl Mamba2<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model), the whole sequence; the SSD scan runs in chunks
    /// of the config's `chunk_size`. `recompute`: keep for backward only in_proj's output
    /// (and the parameters) and run the conv, the scan and the norm again in backward (the
    /// `checkpoint` op); the values are the same.
    pub fn forward(&self, h: &Tensor, recompute: bool) -> Result<Tensor> {
        let Dims { d_inner: e, nheads: nh, .. } = self.dims;
        let parts = kept(linear(h, &self.in_proj)?)?.split(&[e, self.dims.conv_dim(), nh], 2)?; // z, xBC, dt
        let inputs = self.inner_inputs(&parts);
        let (dims, before_gate) = (self.dims, self.norm_before_gate);
        let y = if recompute {
            checkpoint(&inputs, move |t| Ok(inner(dims, before_gate, t)?.0))?
        } else {
            inner(dims, before_gate, &inputs.into_iter().cloned().collect::<Vec<_>>())?.0
        };
        linear(&y, &self.out_proj)
    }

    /// As [`forward`](Self::forward) (without recompute), and the state that [`step`](Self::step)
    /// continues from: the last d_conv conv inputs and the SSD scan's last state (prefill).
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, Mamba2State)> {
        let Dims { d_inner: e, nheads: nh, d_conv: k, .. } = self.dims;
        let parts = kept(linear(h, &self.in_proj)?)?.split(&[e, self.dims.conv_dim(), nh], 2)?; // z, xBC, dt
        let inputs = self.inner_inputs(&parts);
        let inputs: Vec<Tensor> = inputs.into_iter().cloned().collect();
        let (y, ssm) = inner(self.dims, self.norm_before_gate, &inputs)?;
        let state = Mamba2State { conv: conv_window(&widened(&parts[1])?.transpose(1, 2)?, k)?, ssm };
        Ok((linear(&y, &self.out_proj)?, state))
    }

    /// The inputs of [`inner`], in its order: in_proj's `parts` (z, xBC, dt) and the parameters.
    fn inner_inputs<'a>(&'a self, parts: &'a [Tensor]) -> Vec<&'a Tensor> {
        let params = [&self.conv_weight, &self.conv_bias, &self.a_log, &self.d, &self.dt_bias];
        let mut inputs = vec![&parts[1], &parts[0], &parts[2]];
        inputs.extend(params);
        inputs.extend(&self.norm);
        inputs
    }

    /// Zero conv and SSM states for `batch` sequences.
    pub fn new_state(&self, batch: usize, dtype: DType, device: Device) -> Result<Mamba2State> {
        let Dims { d_state, nheads, headdim, d_conv, .. } = self.dims;
        Ok(Mamba2State {
            conv: Tensor::zeros(&[batch, self.dims.conv_dim(), d_conv], dtype, device)?,
            ssm: Tensor::zeros(&[batch, nheads, headdim, d_state], dtype, device)?,
        })
    }

    /// One token: h (B, d_model) -> (B, d_model), updating `state`. The recurrence of the
    /// module docs, written with plain ops (dt' (B, H), x (B, H, P), B and C per head
    /// (B, H, N)):
    ///
    /// ```text
    /// S = exp(dt' A) S + dt' x B^T        (B, H, P, N)
    /// y = S C + D x                       (B, H, P) -> (B, e), then the gate and the norm
    /// ```
    pub fn step(&self, h: &Tensor, state: &mut Mamba2State) -> Result<Tensor> {
        let Dims { d_inner: e, d_state: n, ngroups: g, nheads: nh, headdim: p, .. } = self.dims;
        let (batch, conv_dim) = (h.dim(0)?, self.dims.conv_dim());
        let parts = linear(h, &self.in_proj)?.split(&[e, conv_dim, nh], 1)?; // z, xBC, dt
        let xbc = conv_step(&mut state.conv, &parts[1], &self.conv_weight, &self.conv_bias)?.silu()?; // (B, conv_dim)
        let xbc = xbc.split(&[e, g * n, g * n], 1)?;
        let x = xbc[0].reshape(&[batch, nh, p])?;
        // B and C of each head's group: (B, G, N) -> (B, H, 1, N).
        let per_head = |m: &Tensor| -> Result<Tensor> {
            let m = m.reshape(&[batch, g, 1, n])?.broadcast_as(&[batch, g, nh / g, n])?;
            Ok(m.reshape(&[batch, nh, 1, n])?)
        };
        let (bm, cm) = (per_head(&xbc[1])?, per_head(&xbc[2])?);
        let dt = parts[2].add(&self.dt_bias)?.softplus()?.reshape(&[batch, nh, 1, 1])?;
        let a = self.a_log.exp()?.neg()?.reshape(&[nh, 1, 1])?;
        let drive = dt.mul(&x.unsqueeze(3)?)?.mul(&bm)?; // dt' x B^T
        state.ssm = dt.mul(&a)?.exp()?.mul(&state.ssm)?.add(&drive)?;
        let y = state.ssm.mul(&cm)?.sum(&[3], false)?.add(&x.mul(&self.d.reshape(&[nh, 1])?)?)?;
        let (y, z) = (y.reshape(&[batch, e])?, &parts[0]);
        let y = match &self.norm {
            None => y.mul(&z.silu()?)?,
            Some(w) => gated_norm(self.dims, self.norm_before_gate, &y, z, w)?,
        };
        linear(&y, &self.out_proj)
    }
}

/// Everything between in_proj and out_proj: `t` = [xBC (B, L, conv_dim), z (B, L, e), dt
/// (B, L, H), conv_weight, conv_bias, A_log, D, dt_bias, (norm.weight)] -> y (B, L, e) and the
/// scan's last state (B, H, P, N). Engine ops only (a checkpoint's function returns the
/// engine's error).
pub(crate) fn inner(dims: Dims, before_gate: bool, t: &[Tensor]) -> mamba_engine::Result<(Tensor, Tensor)> {
    let Dims { d_inner: e, d_state: n, ngroups: g, nheads: nh, headdim: p, d_conv: k, chunk, .. } = dims;
    let [xbc, z, dt, conv_weight, conv_bias, a_log, d, dt_bias, norm @ ..] = t else {
        unreachable!("eight or nine tensors")
    };
    let (xbc, z, dt) = (&widened(xbc)?, &widened(z)?, &widened(dt)?);
    let (b, l) = (xbc.dim(0)?, xbc.dim(1)?);
    let w = conv_weight.reshape(&[dims.conv_dim(), k])?;
    let xbc = xbc.transpose(1, 2)?.conv1d_causal(&w, Some(conv_bias))?.silu()?.transpose(1, 2)?;
    let xbc = xbc.split(&[e, g * n, g * n], 2)?; // (B, L, e), (B, L, GN), (B, L, GN)
    let x = xbc[0].reshape(&[b, l, nh, p])?;
    let (bm, cm) = (xbc[1].reshape(&[b, l, g, n])?, xbc[2].reshape(&[b, l, g, n])?);
    let a = a_log.exp()?.neg()?;
    // Without the norm the gate is the scan's own.
    let gate = if norm.is_empty() { Some(z.reshape(&[b, l, nh, p])?) } else { None };
    let scan =
        ssd(&SsdArgs { x: &x, dt, a: &a, b: &bm, c: &cm, d, dt_bias, z: gate.as_ref(), initial_state: None, chunk })?;
    let y = scan.out.reshape(&[b, l, e])?;
    let y = match norm {
        [w] => gated_norm(dims, before_gate, &y, z, w)?,
        _ => y,
    };
    Ok((y, scan.last_state))
}

/// The reference's `RMSNormGated` on y, z (.., e): RMSNorm_G(y · silu(z)) · w, or
/// RMSNorm_G(y) · w · silu(z) with `before_gate` (`norm_before_gate`).
fn gated_norm(dims: Dims, before_gate: bool, y: &Tensor, z: &Tensor, w: &Tensor) -> mamba_engine::Result<Tensor> {
    if before_gate {
        return group_rms_norm(dims, y, w)?.mul(&z.silu()?);
    }
    group_rms_norm(dims, &y.mul(&z.silu()?)?, w)
}

/// RMSNorm over each of the G groups of e/G consecutive channels of v (.., e), then the
/// weight w (e): `v_j / sqrt(mean_{i in group(j)} v_i² + eps) · w_j`, eps 1e-5. One group is
/// the fused `rms_norm` with its weight; more are the same op over (.., G, e/G) with a
/// unit weight, times w.
fn group_rms_norm(dims: Dims, v: &Tensor, w: &Tensor) -> mamba_engine::Result<Tensor> {
    let (e, g) = (dims.d_inner, dims.ngroups);
    if g == 1 {
        return v.rms_norm(w, RMS_EPS);
    }
    let shape = v.shape().to_vec();
    let mut grouped = shape[..shape.len() - 1].to_vec();
    grouped.extend([g, e / g]);
    let unit = Tensor::ones(&[e / g], v.dtype(), v.device())?;
    v.reshape(&grouped)?.rms_norm(&unit, RMS_EPS)?.reshape(&shape)?.mul(w)
}

#[cfg(test)]
mod tests;
