//! The Mamba paper's Table 1 ablations (selective copying): a block architecture around an
//! inner sequence layer, `ssm_cfg.arch` x `ssm_cfg.ssm`. Mamba around S6 is the [`Mamba1`]
//! mixer itself (this module builds the other five), with d_inner = expand · d_model,
//! K = d_conv and every projection without a bias:
//!
//! ```text
//! no_gate   u = in_proj(h)                                     (B, d_inner, L)
//!           out = out_proj(SSM(u))
//! h3        q, k, v = split(in_proj(h))                        (B, d_inner, L) each
//!           u = causal_depthwise_conv1d(k) · v                 the shift SSM: a short causal conv
//!           out = out_proj(q · SSM(u))
//! mamba     x, z = split(in_proj(h))
//!           u = silu(causal_depthwise_conv1d(x))
//!           out = out_proj(SSM(u) · silu(z))
//! ```
//!
//! The SSM is diagonal with a real A = -exp(A_log) (d_inner, N), per channel d and state n:
//!
//! ```text
//! s_t = exp(Δ A) s_{t-1} + Δ B u_t,    y_t = C · s_t + D u_t
//! S6  Δ_t, B_t, C_t from u_t (x_proj, dt_proj: mixer/mamba1.rs)             selective
//! S4  Δ = softplus(dt_bias) (d_inner), B and C (d_inner, N), all parameters   time-invariant
//! ```
//!
//! S4 runs on the selective scan op, whose B and C are shared by the channels: each (d, n)
//! pair becomes a channel of its own with one state, fed u_d with B = C = 1 (so its state is
//! `s_t = exp(Δ_d A_dn) s_{t-1} + Δ_d u_t`), and `y_d = Σ_n B_dn C_dn s_dn + D_d u_d`
//! afterwards (B and C are constants in time, so they factor out of the recurrence). It
//! costs N times the scan's channels, which the small task models afford.
//!
//! [`Mamba1`]: super::Mamba1

use super::{
    conv_step,
    mamba1::{declare_s6, dt_bias_init, s4d_real_init, selective, selective_step, Dims},
};
use crate::{
    config::{Arch, Mamba1Config, MambaConfig, SsmKind},
    linear,
    params::{Backend, Decay, Init, Vb},
    Error, Result,
};
use mamba_engine::{
    ops::scan::{selective_scan, ScanArgs, ScanOut},
    DType, Device, Tensor,
};

/// One ablation mixer's parameters (`P` = [`Tensor`]; `()` when only counting them).
pub struct Ablation<P = Tensor> {
    pub arch: Arch,
    pub dims: Dims,
    pub in_proj: P, // (m d_inner, d_model), m = 1 (no_gate), 2 (mamba), 3 (h3)
    /// The causal conv over x (mamba) or k (h3): conv1d.weight (d_inner, 1, K) and its bias.
    pub conv: Option<[P; 2]>,
    pub ssm: Ssm<P>,
    pub out_proj: P, // (d_model, d_inner)
}

/// The inner sequence layer's parameters.
pub enum Ssm<P = Tensor> {
    /// x_proj.weight, dt_proj.weight, dt_proj.bias, A_log, D: as in [`super::Mamba1`].
    S6([P; 5]),
    /// dt_bias (d_inner), A_log (d_inner, N), B (d_inner, N), C (d_inner, N), D (d_inner).
    S4([P; 5]),
}

/// The recurrent state of an ablation mixer.
pub struct AblationState {
    /// The last d_conv inputs of the conv (B, d_inner, K), when the arch has one.
    pub conv: Option<Tensor>,
    /// The SSM state (B, d_inner, N); for S4 without B's factor (see the module docs).
    pub ssm: Tensor,
}

impl<P> Ablation<P> {
    /// The arch and the SSM, as the paper's Table 1 names them.
    pub fn name(&self) -> &'static str {
        match (self.arch, &self.ssm) {
            (Arch::NoGate, Ssm::S4(_)) => "no-gate S4",
            (Arch::NoGate, Ssm::S6(_)) => "no-gate S6",
            (Arch::H3, Ssm::S4(_)) => "H3 S4",
            (Arch::H3, Ssm::S6(_)) => "H3 S6",
            (Arch::Mamba, Ssm::S4(_)) => "Mamba S4",
            (Arch::Mamba, Ssm::S6(_)) => "Mamba S6",
        }
    }
}

impl Ablation {
    /// Declare the parameters under `vb` (`...mixer.`): the projections and conv as in
    /// [`super::Mamba1::declare`] (out_proj scaled by 1/sqrt(residuals · n_layer)); S4 with the
    /// S4D-real init (A = -(1..N), B = 1, C ~ N(0, 1)) and Mamba's dt range for Δ.
    pub fn declare<B: Backend>(
        cfg: &MambaConfig,
        c: &Mamba1Config,
        residuals: usize,
        vb: &mut Vb<'_, B>,
    ) -> Result<Ablation<B::Param>> {
        let (dm, n, r, k) = (cfg.d_model, c.d_state, c.dt_rank, c.d_conv);
        let m = match c.arch {
            Arch::NoGate => 1,
            Arch::Mamba => 2,
            Arch::H3 => 3,
        };
        let sizes = c.d_inner(dm).and_then(|di| Some((di, di.checked_mul(m)?, n.checked_mul(2)?.checked_add(r)?)));
        let Some((di, in_rows, x_proj_rows)) = sizes else {
            return Err(Error::Unsupported(format!("the ablation mixer's sizes overflow (d_model {dm}, d_state {n})")));
        };
        let uniform = |bound: f64| Init::Uniform { bound };
        let fan = |n: usize| 1.0 / (n as f64).sqrt(); // nn.Linear / nn.Conv1d default bound
        let dims = Dims { d_model: dm, d_inner: di, d_state: n, dt_rank: r, d_conv: k };
        let in_proj = vb.get("in_proj.weight", &[in_rows, dm], uniform(fan(dm)), Decay::Yes)?;
        let conv = match c.arch {
            Arch::NoGate => None,
            Arch::Mamba | Arch::H3 => Some([
                vb.get("conv1d.weight", &[di, 1, k], uniform(fan(k)), Decay::Yes)?,
                vb.get("conv1d.bias", &[di], uniform(fan(k)), Decay::No)?,
            ]),
        };
        let ssm = match c.ssm {
            SsmKind::S6 => {
                let names = ["x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"];
                Ssm::S6(declare_s6(c, dims, x_proj_rows, names, vb)?)
            }
            SsmKind::S4 => Ssm::S4([
                vb.get("dt_bias", &[di], dt_bias_init(c, di), Decay::No)?,
                vb.get("A_log", &[di, n], s4d_real_init(di, n), Decay::No)?,
                vb.get("B", &[di, n], Init::Ones, Decay::No)?,
                vb.get("C", &[di, n], Init::Normal { std: 1.0 }, Decay::No)?,
                vb.get("D", &[di], Init::Ones, Decay::No)?,
            ]),
        };
        let residual_scale = (residuals as f64 * cfg.n_layer as f64).sqrt();
        let out_proj = vb.get("out_proj.weight", &[dm, di], uniform(fan(di) / residual_scale), Decay::Yes)?;
        Ok(Ablation { arch: c.arch, dims, in_proj, conv, ssm, out_proj })
    }
}

/// How the SSM's output is gated: by silu(z) (mamba), by q (h3), or not (no_gate).
enum Gate {
    None,
    Silu(Tensor),
    Mul(Tensor),
}

impl Gate {
    fn apply(self, y: Tensor) -> Result<Tensor> {
        Ok(match self {
            Gate::None => y,
            Gate::Silu(z) => y.mul(&z.silu()?)?,
            Gate::Mul(q) => y.mul(&q)?,
        })
    }
}

impl Ablation<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model).
    pub fn forward(&self, h: &Tensor, chunk: usize) -> Result<Tensor> {
        Ok(self.prefill(h, chunk)?.0)
    }

    /// As [`forward`](Self::forward), and the state [`step`](Self::step) continues from.
    pub fn prefill(&self, h: &Tensor, chunk: usize) -> Result<(Tensor, AblationState)> {
        let di = self.dims.d_inner;
        let p = linear(h, &self.in_proj)?.transpose(1, 2)?; // (B, m d_inner, L)
        let part = |i: usize| p.narrow(1, i * di, di);
        let conv = |x: &Tensor| -> Result<(Tensor, Tensor)> {
            let [w, b] = self.conv_weights()?;
            let window = super::conv_window(x, self.dims.d_conv)?;
            Ok((x.conv1d_causal(&w.reshape(&[di, self.dims.d_conv])?, Some(b))?, window))
        };
        let (u, gate, window) = match self.arch {
            Arch::NoGate => (p.clone(), Gate::None, None),
            Arch::Mamba => {
                let (x, window) = conv(&part(0)?)?;
                (x.silu()?, Gate::Silu(part(1)?), Some(window))
            }
            Arch::H3 => {
                let (k, window) = conv(&part(1)?)?;
                (k.mul(&part(2)?)?, Gate::Mul(part(0)?), Some(window))
            }
        };
        let scan = match &self.ssm {
            Ssm::S6(w) => selective(self.dims, chunk, &u, None, w)?,
            Ssm::S4(w) => s4_scan(self.dims, chunk, &u, w)?,
        };
        let y = gate.apply(scan.out)?;
        let state = AblationState { conv: window, ssm: scan.last_state };
        Ok((linear(&y.transpose(1, 2)?, &self.out_proj)?, state))
    }

    /// The conv's weight and bias (an arch with a conv has them).
    fn conv_weights(&self) -> Result<&[Tensor; 2]> {
        let missing = || Error::Unsupported(format!("the {:?} arch needs conv1d.weight and conv1d.bias", self.arch));
        self.conv.as_ref().ok_or_else(missing)
    }

    /// Zero conv and SSM states for `batch` sequences.
    pub fn new_state(&self, batch: usize, dtype: DType, device: Device) -> Result<AblationState> {
        let Dims { d_inner, d_state, d_conv, .. } = self.dims;
        let conv = match self.conv {
            Some(_) => Some(Tensor::zeros(&[batch, d_inner, d_conv], dtype, device)?),
            None => None,
        };
        Ok(AblationState { conv, ssm: Tensor::zeros(&[batch, d_inner, d_state], dtype, device)? })
    }

    /// One token: h (B, d_model) -> (B, d_model), updating `state`.
    pub fn step(&self, h: &Tensor, state: &mut AblationState) -> Result<Tensor> {
        let di = self.dims.d_inner;
        let p = linear(h, &self.in_proj)?; // (B, m d_inner)
        let part = |i: usize| p.narrow(1, i * di, di);
        let mut conv = |x: &Tensor| -> Result<Tensor> {
            let [w, b] = self.conv_weights()?;
            let Some(window) = state.conv.as_mut() else {
                return Err(Error::Unsupported("this state has no conv window (it was made by another mixer)".into()));
            };
            conv_step(window, x, w, b)
        };
        let (u, gate) = match self.arch {
            Arch::NoGate => (p.clone(), Gate::None),
            Arch::Mamba => (conv(&part(0)?)?.silu()?, Gate::Silu(part(1)?)),
            Arch::H3 => (conv(&part(1)?)?.mul(&part(2)?)?, Gate::Mul(part(0)?)),
        };
        let y = match &self.ssm {
            Ssm::S6([a, b, c, d, e]) => selective_step(self.dims, &u, &mut state.ssm, [a, b, c, d, e])?,
            Ssm::S4(w) => s4_step(&u, &mut state.ssm, w)?,
        };
        linear(&gate.apply(y)?, &self.out_proj)
    }
}

/// The time-invariant SSM over u (B, d_inner, L) through the selective scan, as the module
/// docs say; `w` = [dt_bias, A_log, B, C, D]. The last state is (B, d_inner, N). Engine ops only.
fn s4_scan(dims: Dims, chunk: usize, u: &Tensor, w: &[Tensor; 5]) -> mamba_engine::Result<ScanOut> {
    let [dt_bias, a_log, b, c, d] = w;
    let (batch, len) = (u.dim(0)?, u.dim(2)?);
    let Dims { d_inner: di, d_state: n, .. } = dims;
    let (dtype, device) = (u.dtype(), u.device());
    // Channel (d, n) reads u_d, with Δ_d and A_dn, B = C = 1 and no skip.
    let u_dn = u.unsqueeze(2)?.broadcast_as(&[batch, di, n, len])?.reshape(&[batch, di * n, len])?;
    let bias = dt_bias.unsqueeze(1)?.broadcast_as(&[di, n])?.reshape(&[di * n])?;
    let ones = Tensor::ones(&[batch, 1, len], dtype, device)?;
    let states = selective_scan(&ScanArgs {
        u: &u_dn,
        delta: &Tensor::zeros(&[batch, di * n, len], dtype, device)?,
        a: &a_log.exp()?.neg()?.reshape(&[di * n, 1])?,
        b: &ones,
        c: &ones,
        d: &Tensor::zeros(&[di * n], dtype, device)?,
        z: None,
        delta_bias: Some(&bias),
        softplus: true,
        initial_state: None,
        chunk,
    })?;
    // y_d = Σ_n B_dn C_dn s_dn + D_d u_d
    let bc = b.mul(c)?.reshape(&[1, di, n, 1])?;
    let y = states.out.reshape(&[batch, di, n, len])?.mul(&bc)?.sum(&[2], false)?;
    let out = y.add(&u.mul(&d.reshape(&[di, 1])?)?)?;
    Ok(ScanOut { out, last_state: states.last_state.reshape(&[batch, di, n])? })
}

/// One step of the time-invariant SSM from u (B, d_inner), updating s (B, d_inner, N):
/// `s = exp(Δ A) s + Δ u;  y = Σ_n B C s + D u`, with `w` = [dt_bias, A_log, B, C, D].
fn s4_step(u: &Tensor, s: &mut Tensor, w: &[Tensor; 5]) -> Result<Tensor> {
    let [dt_bias, a_log, b, c, d] = w;
    let dt = dt_bias.softplus()?.unsqueeze(1)?; // (d_inner, 1)
    let a = a_log.exp()?.neg()?; // (d_inner, N)
    *s = dt.mul(&a)?.exp()?.mul(s)?.add(&dt.mul(&u.unsqueeze(2)?)?)?;
    Ok(s.mul(&b.mul(c)?)?.sum(&[2], false)?.add(&u.mul(d)?)?)
}

#[cfg(test)]
mod tests;
