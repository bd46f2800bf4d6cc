//! The Mamba-1 mixer (the "Mamba block", the reference `Mamba` of `mamba_simple.py`), with
//! d_inner = expand · d_model, N = d_state, R = dt_rank, K = d_conv:
//!
//! ```text
//! x, z   = split(in_proj(h))                       (B, d_inner, L) each
//! x      = silu(causal_depthwise_conv1d(x))        kernel K, left padding K-1
//! dt,B,C = split(x_proj(x))                        (R, N, N) per position
//! delta  = dt_proj.weight @ dt                     (B, d_inner, L); its bias goes to the scan
//! y      = selective_scan(x, delta, A = -exp(A_log), B, C, D, z, delta_bias, softplus)
//! out    = out_proj(y)                             (B, L, d_model)
//! ```
//!
//! The scan (`engine/src/ops/scan/`, docs/SCAN.md) computes, per channel d and state index n,
//!
//! ```text
//! Δ_t = softplus(delta_t + dt_proj.bias)
//! s_t = exp(Δ_t A) s_{t-1} + Δ_t B_t x_t            s: (B, d_inner, N)
//! y_t = C_t · s_t + D x_t,   then  y_t · silu(z_t)
//! ```
//!
//! `step` runs the same recurrence one token at a time from a [`Mamba1State`];
//! `forward_from` runs a whole sequence from one (the conv window continues the convolution,
//! the SSM state is the scan's initial state) and returns the state it ends in, the SSM part
//! differentiably: a long text in consecutive pieces (truncated backprop through time).

use super::{conv_step, conv_window};
use crate::{
    config::{DtInit, Mamba1Config, MambaConfig},
    kept, linear,
    params::{Backend, Decay, Init, Vb},
    widened, Error, Result,
};
use mamba_engine::{
    ops::checkpoint::checkpoint,
    ops::scan::{selective_scan, ScanArgs, ScanOut},
    DType, Device, Rng, Tensor,
};

/// The sizes of one Mamba-1 mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub d_model: usize,
    pub d_inner: usize,
    pub d_state: usize,
    pub dt_rank: usize,
    pub d_conv: usize,
}

/// A Mamba-1 mixer's parameters (`P` = [`Tensor`]; `()` when only counting them).
#[derive(Clone)]
pub struct Mamba1<P = Tensor> {
    pub dims: Dims,
    pub in_proj: P,        // (2 d_inner, d_model)
    pub conv_weight: P,    // (d_inner, 1, d_conv)
    pub conv_bias: P,      // (d_inner)
    pub x_proj: P,         // (dt_rank + 2 d_state, d_inner)
    pub dt_proj_weight: P, // (d_inner, dt_rank)
    pub dt_proj_bias: P,   // (d_inner)
    pub a_log: P,          // (d_inner, d_state)
    pub d: P,              // (d_inner)
    pub out_proj: P,       // (d_model, d_inner)
}

/// The recurrent state of one Mamba-1 mixer for generation.
pub struct Mamba1State {
    /// The last d_conv inputs of the convolution: (B, d_inner, d_conv).
    pub conv: Tensor,
    /// The SSM state s: (B, d_inner, d_state).
    pub ssm: Tensor,
}

impl Mamba1 {
    /// Declare the parameters under `vb` (`...mixer.`), in the reference's order, with the
    /// reference initialisation. `residuals` is how many residual branches each block has (1,
    /// or 2 with an MLP): out_proj is scaled by 1/sqrt(residuals · n_layer), GPT-2 style.
    pub fn declare<B: Backend>(
        cfg: &MambaConfig,
        c: &Mamba1Config,
        residuals: usize,
        vb: &mut Vb<'_, B>,
    ) -> Result<Mamba1<B::Param>> {
        let (dm, n, r, k) = (cfg.d_model, c.d_state, c.dt_rank, c.d_conv);
        let sizes = c.d_inner(dm).and_then(|di| Some((di, di.checked_mul(2)?, n.checked_mul(2)?.checked_add(r)?)));
        let Some((di, two_di, x_proj_rows)) = sizes else {
            let what = format!(
                "the Mamba1 mixer's sizes overflow (d_model {dm}, expand {}, d_state {n}, dt_rank {r})",
                c.expand
            );
            return Err(Error::Unsupported(what));
        };
        let uniform = |bound: f64| Init::Uniform { bound };
        let fan = |n: usize| 1.0 / (n as f64).sqrt(); // nn.Linear / nn.Conv1d default bound
        let dims = Dims { d_model: dm, d_inner: di, d_state: n, dt_rank: r, d_conv: k };
        let residual_scale = (residuals as f64 * cfg.n_layer as f64).sqrt();
        let in_proj = vb.get("in_proj.weight", &[two_di, dm], uniform(fan(dm)), Decay::Yes)?;
        let [conv_weight, conv_bias, x_proj, dt_proj_weight, dt_proj_bias, a_log, d] =
            declare_branch(c, dims, x_proj_rows, FORWARD, vb)?;
        let out_proj = vb.get("out_proj.weight", &[dm, di], uniform(fan(di) / residual_scale), Decay::Yes)?;
        Ok(Mamba1 { dims, in_proj, conv_weight, conv_bias, x_proj, dt_proj_weight, dt_proj_bias, a_log, d, out_proj })
    }
}

/// The names of a branch's parameters in [`declare_branch`]'s order: the Mamba block's, and
/// the backward branch of Vision Mamba's bidirectional block.
pub(crate) type BranchNames = [&'static str; 7];
pub(crate) const FORWARD: BranchNames =
    ["conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"];
pub(crate) const BACKWARD: BranchNames =
    ["conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight", "dt_proj_b.bias", "A_b_log", "D_b"];

/// The conv and S6 parameters of one branch, as the reference initialises them: [conv
/// weight, conv bias, x_proj, dt_proj weight, dt_proj bias, A_log, D] under `names`.
pub(crate) fn declare_branch<B: Backend>(
    c: &Mamba1Config,
    dims: Dims,
    x_proj_rows: usize,
    names: BranchNames,
    vb: &mut Vb<'_, B>,
) -> Result<[B::Param; 7]> {
    let (di, k) = (dims.d_inner, dims.d_conv);
    let bound = 1.0 / (k as f64).sqrt(); // nn.Conv1d's default
    let conv_weight = vb.get(names[0], &[di, 1, k], Init::Uniform { bound }, Decay::Yes)?;
    let conv_bias = vb.get(names[1], &[di], Init::Uniform { bound }, Decay::No)?;
    let s6_names = [names[2], names[3], names[4], names[5], names[6]];
    let [x_proj, dt_proj_weight, dt_proj_bias, a_log, d] = declare_s6(c, dims, x_proj_rows, s6_names, vb)?;
    Ok([conv_weight, conv_bias, x_proj, dt_proj_weight, dt_proj_bias, a_log, d])
}

/// S6's parameters, as the reference initialises them: x_proj (R + 2N, d_inner) and
/// dt_proj.weight (d_inner, R) as `nn.Linear` (dt_proj scaled by `dt_scale`, or constant with
/// `dt_init = "constant"`), dt_proj.bias from the dt range, A_log S4D-real, D = 1.
pub(crate) fn declare_s6<B: Backend>(
    c: &Mamba1Config,
    dims: Dims,
    x_proj_rows: usize,
    names: [&'static str; 5],
    vb: &mut Vb<'_, B>,
) -> Result<[B::Param; 5]> {
    let Dims { d_inner: di, d_state: n, dt_rank: r, .. } = dims;
    let dt_std = (r as f64).powf(-0.5) * c.dt_scale;
    let dt_init = match c.dt_init {
        DtInit::Random => Init::Uniform { bound: dt_std },
        DtInit::Constant => Init::Values(Box::new(move |_| vec![dt_std; di * r])),
    };
    let x_proj_bound = 1.0 / (di as f64).sqrt();
    Ok([
        vb.get(names[0], &[x_proj_rows, di], Init::Uniform { bound: x_proj_bound }, Decay::Yes)?,
        vb.get(names[1], &[di, r], dt_init, Decay::Yes)?,
        vb.get(names[2], &[di], dt_bias_init(c, di), Decay::No)?,
        vb.get(names[3], &[di, n], s4d_real_init(di, n), Decay::No)?,
        vb.get(names[4], &[di], Init::Ones, Decay::No)?,
    ])
}

/// dt's bias: dt ~ exp(U(log dt_min, log dt_max)) floored, stored as softplus^-1(dt) = dt +
/// log(-expm1(-dt)), so that softplus(bias) starts at dt (d_inner values).
pub(crate) fn dt_bias_init(c: &Mamba1Config, di: usize) -> Init<'static> {
    let (lo, hi, floor) = (c.dt_min.ln(), c.dt_max.ln(), c.dt_init_floor);
    Init::Values(Box::new(move |rng: &mut Rng| -> Vec<f64> {
        let softplus_inv = |dt: f64| dt + (-(-dt).exp_m1()).ln();
        (0..di).map(|_| softplus_inv((lo + (hi - lo) * rng.uniform()).exp().max(floor))).collect()
    }))
}

/// A_log for S4D-real: A = -(1, 2, .., N) in every one of `di` channels.
pub(crate) fn s4d_real_init(di: usize, n: usize) -> Init<'static> {
    Init::Values(Box::new(move |_: &mut Rng| (0..di).flat_map(|_| (1..=n).map(|i| (i as f64).ln())).collect()))
}

impl Mamba1<Tensor> {
    /// h (B, L, d_model) -> (B, L, d_model). `chunk`: time steps between the states the scan
    /// saves for backward. `recompute`: keep for backward only in_proj's output `xz` (and the
    /// parameters) and run conv, SiLU, x_proj, delta and the scan again in backward (the
    /// `checkpoint` op) instead of keeping each of their outputs; the values are the same.
    pub fn forward(&self, h: &Tensor, chunk: usize, recompute: bool) -> Result<Tensor> {
        let xz = kept(linear(h, &self.in_proj)?)?.transpose(1, 2)?; // (B, 2 d_inner, L)
        let params = self.inner_params();
        let dims = self.dims;
        let y = if recompute {
            let inputs: Vec<&Tensor> = std::iter::once(&xz).chain(params).collect();
            checkpoint(&inputs, move |t| Ok(inner(dims, chunk, &t[0], &t[1..])?.out))?
        } else {
            inner(dims, chunk, &xz, &params.map(Tensor::clone))?.out
        };
        linear(&y.transpose(1, 2)?, &self.out_proj)
    }

    /// As [`forward`](Self::forward) (without recompute), and the state that [`step`](Self::step)
    /// continues from: the last d_conv conv inputs and the scan's last state (prefill).
    pub fn prefill(&self, h: &Tensor, chunk: usize) -> Result<(Tensor, Mamba1State)> {
        let Dims { d_inner: di, d_conv: k, .. } = self.dims;
        let xz = kept(linear(h, &self.in_proj)?)?.transpose(1, 2)?; // (B, 2 d_inner, L)
        let params = self.inner_params();
        let scan = inner(self.dims, chunk, &xz, &params.map(Tensor::clone))?;
        // The scan's last state is a view of its output buffer: a copy of its own lets that go.
        let ssm = Tensor::concat(&[&scan.last_state], 0)?;
        let state = Mamba1State { conv: conv_window(&widened(&xz)?.narrow(1, 0, di)?, k)?, ssm };
        Ok((linear(&scan.out.transpose(1, 2)?, &self.out_proj)?, state))
    }

    /// As [`forward`](Self::forward), continuing sequences that ended in `state` (from
    /// [`new_state`](Self::new_state), [`prefill`](Self::prefill) or an earlier call), and the
    /// state at the end of `h` (B, L, d_model):
    ///
    /// ```text
    /// x_ext = [window[.., 1..K], x]            (B, d_inner, K-1+L): the conv's left context
    /// x     = silu(conv(x_ext))[.., K-1..]     the same as conv over the whole text
    /// y     = selective_scan(.., initial_state = ssm)      new ssm = its last_state
    /// new window = the last K columns of [window, x]
    /// ```
    ///
    /// Both returned states are differentiable functions of `h`, the parameters and `state`
    /// (detach them to cut the graph between pieces, as truncated backprop through time does).
    /// The SSM state is a view of the scan's output buffer, which it keeps alive: copy it to
    /// keep it for long.
    pub fn forward_from(
        &self,
        h: &Tensor,
        state: &Mamba1State,
        chunk: usize,
        recompute: bool,
    ) -> Result<(Tensor, Mamba1State)> {
        let Dims { d_inner: di, d_conv: k, d_state: n, .. } = self.dims;
        let batch = h.dim(0)?;
        for (what, t, want) in [("conv", &state.conv, [batch, di, k]), ("ssm", &state.ssm, [batch, di, n])] {
            if t.shape() != want {
                return Err(Error::Unsupported(format!(
                    "a Mamba1 {what} state of shape {:?} cannot continue this batch: expected {want:?} (batch, \
                     d_inner, {})",
                    t.shape(),
                    if what == "conv" { "d_conv" } else { "d_state" }
                )));
            }
        }
        let xz = kept(linear(h, &self.in_proj)?)?.transpose(1, 2)?; // (B, 2 d_inner, L)
        let window = continue_window(&state.conv, &widened(&xz)?.narrow(1, 0, di)?)?;
        let prefix = state.conv.narrow(2, 1, k - 1)?; // the K-1 inputs before x_0 (B, d_inner, K-1)
        let params = self.inner_params();
        let dims = self.dims;
        let scan = if recompute {
            let inputs: Vec<&Tensor> = [&xz, &prefix, &state.ssm].into_iter().chain(params).collect();
            let packed = checkpoint(&inputs, move |t| {
                let o = inner_from(dims, chunk, &t[0], Some(&t[1]), Some(&t[2]), &t[3..])?;
                Tensor::concat(&[&o.out.flatten(0, 2)?, &o.last_state.flatten(0, 2)?], 0)
            })?;
            let len = xz.dim(2)?;
            let parts = packed.split(&[batch * di * len, batch * di * n], 0)?;
            ScanOut { out: parts[0].reshape(&[batch, di, len])?, last_state: parts[1].reshape(&[batch, di, n])? }
        } else {
            inner_from(dims, chunk, &xz, Some(&prefix), Some(&state.ssm), &params.map(Tensor::clone))?
        };
        let y = linear(&scan.out.transpose(1, 2)?, &self.out_proj)?;
        Ok((y, Mamba1State { conv: window, ssm: scan.last_state }))
    }

    /// The parameters of [`inner`], in its order.
    fn inner_params(&self) -> [&Tensor; 7] {
        [
            &self.conv_weight,
            &self.conv_bias,
            &self.x_proj,
            &self.dt_proj_weight,
            &self.dt_proj_bias,
            &self.a_log,
            &self.d,
        ]
    }

    /// Zero conv and SSM states for `batch` sequences.
    pub fn new_state(&self, batch: usize, dtype: DType, device: Device) -> Result<Mamba1State> {
        let Dims { d_inner, d_state, d_conv, .. } = self.dims;
        Ok(Mamba1State {
            conv: Tensor::zeros(&[batch, d_inner, d_conv], dtype, device)?,
            ssm: Tensor::zeros(&[batch, d_inner, d_state], dtype, device)?,
        })
    }

    /// One token: h (B, d_model) -> (B, d_model), updating `state`.
    pub fn step(&self, h: &Tensor, state: &mut Mamba1State) -> Result<Tensor> {
        let di = self.dims.d_inner;
        let xz = linear(h, &self.in_proj)?; // (B, 2 d_inner)
        let (x, z) = (xz.narrow(1, 0, di)?, xz.narrow(1, di, di)?);
        let x = conv_step(&mut state.conv, &x, &self.conv_weight, &self.conv_bias)?.silu()?; // (B, d_inner)
        let s6 = [&self.x_proj, &self.dt_proj_weight, &self.dt_proj_bias, &self.a_log, &self.d];
        let y = selective_step(self.dims, &x, &mut state.ssm, s6)?;
        linear(&y.mul(&z.silu()?)?, &self.out_proj)
    }
}

/// One step of S6 from u (B, d_inner), updating the state s (B, d_inner, N), with `p` =
/// [x_proj, dt_proj_weight, dt_proj_bias, A_log, D]; the output before any gate:
///
/// ```text
/// dt, B, C = split(x_proj(u));   Δ = softplus(dt_proj(dt) + bias)     (B, d_inner, 1)
/// s = exp(Δ A) s + Δ B u;        y = C · s + D u                      (B, d_inner)
/// ```
pub(crate) fn selective_step(dims: Dims, u: &Tensor, s: &mut Tensor, p: [&Tensor; 5]) -> Result<Tensor> {
    let Dims { d_state: n, dt_rank: r, .. } = dims;
    let [x_proj, dt_proj_weight, dt_proj_bias, a_log, d] = p;
    let parts = linear(u, x_proj)?.split(&[r, n, n], 1)?;
    let dt = linear(&parts[0], dt_proj_weight)?.add(dt_proj_bias)?.softplus()?.unsqueeze(2)?;
    let a = a_log.exp()?.neg()?; // (d_inner, d_state)
    let drive = dt.mul(&parts[1].unsqueeze(1)?)?.mul(&u.unsqueeze(2)?)?;
    *s = dt.mul(&a)?.exp()?.mul(s)?.add(&drive)?;
    Ok(s.mul(&parts[2].unsqueeze(1)?)?.sum(&[2], false)?.add(&u.mul(d)?)?)
}

/// The conv window after x (B, d_inner, L) when the one before it was `prev` (B, d_inner, K):
/// the last K columns of [prev, x].
fn continue_window(prev: &Tensor, x: &Tensor) -> mamba_engine::Result<Tensor> {
    let (k, l) = (prev.dim(2)?, x.dim(2)?);
    if l >= k {
        return x.narrow(2, l - k, k)?.contiguous();
    }
    Tensor::concat(&[&prev.narrow(2, l, k - l)?, x], 2)
}

/// Everything between in_proj and out_proj: xz (B, 2 d_inner, L) -> the scan's y (B, d_inner,
/// L) and last state, with
/// `p` = [conv_weight, conv_bias, x_proj, dt_proj_weight, dt_proj_bias, A_log, D]. Engine ops
/// only (a checkpoint's function returns the engine's error).
pub(crate) fn inner(dims: Dims, chunk: usize, xz: &Tensor, p: &[Tensor]) -> mamba_engine::Result<ScanOut> {
    inner_from(dims, chunk, xz, None, None, p)
}

/// [`inner`] continuing a sequence: `prefix` (B, d_inner, K-1) holds the conv inputs before
/// x_0 (zeros without it: the causal padding), `init` (B, d_inner, N) the scan's state before
/// step 0.
pub(crate) fn inner_from(
    dims: Dims,
    chunk: usize,
    xz: &Tensor,
    prefix: Option<&Tensor>,
    init: Option<&Tensor>,
    p: &[Tensor],
) -> mamba_engine::Result<ScanOut> {
    let Dims { d_inner: di, d_conv: k, .. } = dims;
    let [conv_weight, conv_bias, ..] = p else { unreachable!("seven parameters") };
    let xz = widened(xz)?;
    let (x, z) = (xz.narrow(1, 0, di)?, xz.narrow(1, di, di)?);
    let w = conv_weight.reshape(&[di, k])?;
    let x = match prefix {
        // conv over [prefix, x], keeping the L outputs of x's positions
        Some(pre) if k > 1 => {
            let len = x.dim(2)?;
            Tensor::concat(&[pre, &x], 2)?.conv1d_causal(&w, Some(conv_bias))?.narrow(2, k - 1, len)?
        }
        _ => x.conv1d_causal(&w, Some(conv_bias))?,
    };
    selective_from(dims, chunk, &x.silu()?, Some(&z), init, &p[2..])
}

/// S6 over the whole sequence: u (B, d_inner, L) -> the scan's y (gated by silu(z) if given)
/// and last state, with `p` = [x_proj, dt_proj_weight, dt_proj_bias, A_log, D]. Engine ops only.
pub(crate) fn selective(
    dims: Dims,
    chunk: usize,
    u: &Tensor,
    z: Option<&Tensor>,
    p: &[Tensor],
) -> mamba_engine::Result<ScanOut> {
    selective_from(dims, chunk, u, z, None, p)
}

/// [`selective`] from the state `init` (B, d_inner, N) (zero without it).
fn selective_from(
    dims: Dims,
    chunk: usize,
    u: &Tensor,
    z: Option<&Tensor>,
    init: Option<&Tensor>,
    p: &[Tensor],
) -> mamba_engine::Result<ScanOut> {
    let linear = |x: &Tensor, w: &Tensor| x.matmul_autocast(&w.transpose(0, 1)?); // as crate::linear
    let Dims { d_state: n, dt_rank: r, .. } = dims;
    let [x_proj, dt_proj_weight, dt_proj_bias, a_log, d] = p else { unreachable!("five parameters") };
    let x_dbl = linear(&u.transpose(1, 2)?, x_proj)?; // (B, L, dt_rank + 2 d_state)
    let parts = x_dbl.split(&[r, n, n], 2)?;
    let delta = linear(&parts[0], dt_proj_weight)?.transpose(1, 2)?; // (B, d_inner, L)
    let (b, c) = (parts[1].transpose(1, 2)?, parts[2].transpose(1, 2)?); // (B, d_state, L)
    let a = a_log.exp()?.neg()?;
    // with MAMBA_SCAN=bf16 under bf16 autocast the scan reads u, delta, z in bf16 (the strided
    // views cast as they are made contiguous; precision::scan_bf16 says what it costs)
    let bf16 = mamba_engine::precision::scan_bf16();
    let low = |t: &Tensor| if bf16 { t.to_dtype(DType::BF16) } else { Ok(t.clone()) };
    let (u, delta, z) = (low(u)?, low(&delta)?, z.map(low).transpose()?);
    selective_scan(&ScanArgs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &c,
        d,
        z: z.as_ref(),
        delta_bias: Some(dt_proj_bias),
        softplus: true,
        initial_state: init,
        chunk,
    })
}

#[cfg(test)]
mod tests;
