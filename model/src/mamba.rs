//! The Mamba language model, exactly as the reference `MambaLMHeadModel`.
//!
//! ```text
//! ids (B, L) ─embedding─▶ h (B, L, d_model)
//! for each layer:  residual = h (+ residual);  h = Mixer(RMSNorm(residual))
//! logits = RMSNorm_f(h + residual) @ embedding^T                  (tied head)
//! ```
//!
//! The mixer (the "Mamba block"), with d_inner = expand * d_model:
//!
//! ```text
//! x, z   = split(in_proj(h))                       (B, d_inner, L) each
//! x      = silu(causal_depthwise_conv1d(x))        kernel d_conv, left padding d_conv-1
//! dt,B,C = split(x_proj(x))                        (dt_rank, d_state, d_state)
//! delta  = dt_proj.weight @ dt                     (B, d_inner, L); its bias goes to the scan
//! y      = selective_scan(x, delta, A = -exp(A_log), B, C, D, z, delta_bias, softplus)
//! out    = out_proj(y)
//! ```
//!
//! `step` runs the same network one token at a time with a conv state (B, d_inner, d_conv)
//! and an SSM state (B, d_inner, d_state) per layer: constant cost per token.

use crate::{config::MambaConfig, io::Loaded, Error, Result};
use mamba_engine::{
    no_grad,
    ops::scan::{selective_scan, ScanArgs},
    DType, Device, Rng, Tensor,
};
use std::collections::BTreeMap;

/// RMSNorm epsilon of the reference.
pub const RMS_EPS: f64 = 1e-5;

/// y = x W^T for a weight stored (out, in).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.transpose(0, 1)?)?)
}

pub struct Mixer {
    pub in_proj: Tensor,        // (2 d_inner, d_model)
    pub conv_weight: Tensor,    // (d_inner, 1, d_conv)
    pub conv_bias: Tensor,      // (d_inner)
    pub x_proj: Tensor,         // (dt_rank + 2 d_state, d_inner)
    pub dt_proj_weight: Tensor, // (d_inner, dt_rank)
    pub dt_proj_bias: Tensor,   // (d_inner)
    pub a_log: Tensor,          // (d_inner, d_state)
    pub d: Tensor,              // (d_inner)
    pub out_proj: Tensor,       // (d_model, d_inner)
}

pub struct Layer {
    pub norm: Tensor, // (d_model)
    pub mixer: Mixer,
}

pub struct MambaLM {
    pub cfg: MambaConfig,
    pub embedding: Tensor, // (padded vocab, d_model), also the output head
    pub layers: Vec<Layer>,
    pub norm_f: Tensor, // (d_model)
    /// Time steps between the states the scan saves for backward.
    pub scan_chunk: usize,
}

/// Per-layer recurrent state for generation.
pub struct InferenceState {
    pub conv: Vec<Tensor>, // (B, d_inner, d_conv) per layer
    pub ssm: Vec<Tensor>,  // (B, d_inner, d_state) per layer
}

impl Mixer {
    /// The reference initialisation, each rule in the comments below (docs/ARCHITECTURE.md
    /// describes the model, docs/SCAN.md the selective scan).
    fn new(cfg: &MambaConfig, dtype: DType, rng: &mut Rng) -> Result<Mixer> {
        let (dm, di) = (cfg.d_model, cfg.d_inner());
        let s = &cfg.ssm_cfg;
        let (n, r, k) = (s.d_state, s.dt_rank, s.d_conv);
        let uniform =
            |shape: &[usize], bound: f64, rng: &mut Rng| Tensor::rand_uniform(shape, -bound, bound, dtype, rng);
        let fan = |n: usize| 1.0 / (n as f64).sqrt(); // nn.Linear / nn.Conv1d default bound
        let in_proj = uniform(&[2 * di, dm], fan(dm), rng);
        let conv_weight = uniform(&[di, 1, k], fan(k), rng);
        let conv_bias = uniform(&[di], fan(k), rng);
        let x_proj = uniform(&[r + 2 * n, di], fan(di), rng);
        let dt_proj_weight = uniform(&[di, r], (r as f64).powf(-0.5), rng);
        // dt ~ exp(U(log 1e-3, log 0.1)) clamped at 1e-4; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
        let (lo, hi) = (1e-3f64.ln(), 0.1f64.ln());
        let bias: Vec<f64> = (0..di)
            .map(|_| {
                let dt = (lo + (hi - lo) * rng.uniform()).exp().max(1e-4);
                dt + (-(-dt).exp_m1()).ln()
            })
            .collect();
        let a_log: Vec<f64> = (0..di).flat_map(|_| (1..=n).map(|i| (i as f64).ln())).collect();
        // out_proj is rescaled by 1/sqrt(n_layer) (GPT-2 style prenorm-residual scaling).
        let out_proj = uniform(&[dm, di], fan(di) / (cfg.n_layer as f64).sqrt(), rng);
        Ok(Mixer {
            in_proj: in_proj.requires_grad(),
            conv_weight: conv_weight.requires_grad(),
            conv_bias: conv_bias.requires_grad(),
            x_proj: x_proj.requires_grad(),
            dt_proj_weight: dt_proj_weight.requires_grad(),
            dt_proj_bias: Tensor::from_f64(&bias, &[di], dtype)?.requires_grad(),
            a_log: Tensor::from_f64(&a_log, &[di, n], dtype)?.requires_grad(),
            d: Tensor::ones(&[di], dtype, Device::Cpu)?.requires_grad(),
            out_proj: out_proj.requires_grad(),
        })
    }

    /// The same mixer with every parameter passed through `f`.
    fn map(&self, f: &impl Fn(&Tensor) -> Result<Tensor>) -> Result<Mixer> {
        Ok(Mixer {
            in_proj: f(&self.in_proj)?,
            conv_weight: f(&self.conv_weight)?,
            conv_bias: f(&self.conv_bias)?,
            x_proj: f(&self.x_proj)?,
            dt_proj_weight: f(&self.dt_proj_weight)?,
            dt_proj_bias: f(&self.dt_proj_bias)?,
            a_log: f(&self.a_log)?,
            d: f(&self.d)?,
            out_proj: f(&self.out_proj)?,
        })
    }

    /// h (B, L, d_model) -> (B, L, d_model)
    fn forward(&self, cfg: &MambaConfig, h: &Tensor, chunk: usize) -> Result<Tensor> {
        let (di, s) = (cfg.d_inner(), &cfg.ssm_cfg);
        let xz = linear(h, &self.in_proj)?.transpose(1, 2)?; // (B, 2 d_inner, L)
        let (x, z) = (xz.narrow(1, 0, di)?, xz.narrow(1, di, di)?);
        let x = x.conv1d_causal(&self.conv_weight.reshape(&[di, s.d_conv])?, Some(&self.conv_bias))?.silu()?;
        let x_dbl = linear(&x.transpose(1, 2)?, &self.x_proj)?; // (B, L, dt_rank + 2 d_state)
        let parts = x_dbl.split(&[s.dt_rank, s.d_state, s.d_state], 2)?;
        let delta = linear(&parts[0], &self.dt_proj_weight)?.transpose(1, 2)?; // (B, d_inner, L)
        let (b, c) = (parts[1].transpose(1, 2)?, parts[2].transpose(1, 2)?); // (B, d_state, L)
        let a = self.a_log.exp()?.neg()?;
        let scan = selective_scan(&ScanArgs {
            u: &x,
            delta: &delta,
            a: &a,
            b: &b,
            c: &c,
            d: &self.d,
            z: Some(&z),
            delta_bias: Some(&self.dt_proj_bias),
            softplus: true,
            chunk,
        })?;
        linear(&scan.out.transpose(1, 2)?, &self.out_proj)
    }

    /// One token: h (B, d_model), updating `conv` (B, d_inner, d_conv) and `ssm` (B, d_inner, d_state).
    fn step(&self, cfg: &MambaConfig, h: &Tensor, conv: &mut Tensor, ssm: &mut Tensor) -> Result<Tensor> {
        let (di, s) = (cfg.d_inner(), &cfg.ssm_cfg);
        let xz = linear(h, &self.in_proj)?; // (B, 2 d_inner)
        let (x, z) = (xz.narrow(1, 0, di)?, xz.narrow(1, di, di)?);
        // Shift the conv window left by one and append x: the last d_conv inputs.
        *conv = Tensor::concat(&[&conv.narrow(2, 1, s.d_conv - 1)?, &x.unsqueeze(2)?], 2)?;
        let w = self.conv_weight.reshape(&[1, di, s.d_conv])?;
        let x = conv.mul(&w)?.sum(&[2], false)?.add(&self.conv_bias)?.silu()?; // (B, d_inner)
        let parts = linear(&x, &self.x_proj)?.split(&[s.dt_rank, s.d_state, s.d_state], 1)?;
        let dt = linear(&parts[0], &self.dt_proj_weight)?.add(&self.dt_proj_bias)?.softplus()?.unsqueeze(2)?;
        let a = self.a_log.exp()?.neg()?; // (d_inner, d_state)
                                          // h = exp(dt A) h + dt B x ;  y = C h + D x ;  out = y silu(z)
        let drive = dt.mul(&parts[1].unsqueeze(1)?)?.mul(&x.unsqueeze(2)?)?;
        *ssm = dt.mul(&a)?.exp()?.mul(ssm)?.add(&drive)?;
        let y = ssm.mul(&parts[2].unsqueeze(1)?)?.sum(&[2], false)?.add(&x.mul(&self.d)?)?;
        linear(&y.mul(&z.silu()?)?, &self.out_proj)
    }
}

impl MambaLM {
    /// A model of `cfg` on the CPU, initialised like the reference from `seed`. A configuration
    /// whose sizes overflow (or whose parameters would not fit in the address space) is refused
    /// before anything is allocated, with [`Error::Unsupported`].
    ///
    /// # Examples
    ///
    /// ```
    /// use mamba_engine::DType;
    /// use mamba_model::{MambaConfig, MambaLM};
    ///
    /// # fn main() -> mamba_model::Result<()> {
    /// let model = MambaLM::new(MambaConfig::new(16, 2), DType::F32, 0)?; // d_model 16, 2 layers
    /// let ids: Vec<usize> = b"hello, world".iter().map(|&b| b as usize).collect(); // 2 x 6 bytes
    /// assert_eq!(model.forward(&ids, 2, 6)?.shape(), [2, 6, 256]);
    /// // Next-byte targets: the text shifted by one; -100 marks the last, which has none.
    /// let targets: Vec<i64> = ids[1..].iter().map(|&i| i as i64).chain([-100]).collect();
    /// let loss = model.loss(&ids, &targets, 2, 6)?;
    /// // A fresh model is close to uniform over the 256 bytes.
    /// assert!((loss.item()? - 256f64.ln()).abs() < 0.1);
    /// loss.backward()?;
    /// assert!(model.named_parameters().iter().all(|(_, p)| p.grad().is_some()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(cfg: MambaConfig, dtype: DType, seed: u64) -> Result<MambaLM> {
        cfg.validate()?;
        let bytes = cfg.param_count().and_then(|n| n.checked_mul(dtype.size()));
        if bytes.is_none_or(|b| b > isize::MAX as usize) {
            let s = &cfg.ssm_cfg;
            return Err(Error::Unsupported(format!(
                "the parameters' size overflows (d_model {}, n_layer {}, vocab_size {}, d_state {}, expand {}, \
                 dt_rank {}): lower them",
                cfg.d_model, cfg.n_layer, cfg.vocab_size, s.d_state, s.expand, s.dt_rank
            )));
        }
        let mut rng = Rng::new(seed);
        let embedding = Tensor::randn(&[cfg.padded_vocab(), cfg.d_model], 0.0, 0.02, dtype, &mut rng).requires_grad();
        let layers = (0..cfg.n_layer)
            .map(|_| {
                Ok(Layer {
                    norm: Tensor::ones(&[cfg.d_model], dtype, Device::Cpu)?.requires_grad(),
                    mixer: Mixer::new(&cfg, dtype, &mut rng)?,
                })
            })
            .collect::<Result<_>>()?;
        let norm_f = Tensor::ones(&[cfg.d_model], dtype, Device::Cpu)?.requires_grad();
        Ok(MambaLM { cfg, embedding, layers, norm_f, scan_chunk: 64 })
    }

    /// The same model with its parameters (as fresh leaves) on `device`.
    pub fn to(&self, device: Device) -> Result<MambaLM> {
        let f = |t: &Tensor| Ok(t.detach().to(device)?.requires_grad());
        Ok(MambaLM {
            cfg: self.cfg.clone(),
            embedding: f(&self.embedding)?,
            layers: self
                .layers
                .iter()
                .map(|l| Ok(Layer { norm: f(&l.norm)?, mixer: l.mixer.map(&f)? }))
                .collect::<Result<_>>()?,
            norm_f: f(&self.norm_f)?,
            scan_chunk: self.scan_chunk,
        })
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        self.embedding.device()
    }

    /// ids (batch * len, row-major) -> logits (batch, len, padded vocab)
    pub fn forward(&self, ids: &[usize], batch: usize, len: usize) -> Result<Tensor> {
        let mut h = self.embedding.embedding(ids, &[batch, len])?;
        let mut residual: Option<Tensor> = None;
        for layer in &self.layers {
            let r = match &residual {
                Some(r) => h.add(r)?,
                None => h,
            };
            h = layer.mixer.forward(&self.cfg, &r.rms_norm(&layer.norm, RMS_EPS)?, self.scan_chunk)?;
            residual = Some(r);
        }
        let r = match residual {
            Some(r) => h.add(&r)?,
            None => h,
        };
        Ok(r.rms_norm(&self.norm_f, RMS_EPS)?.matmul(&self.embedding.transpose(0, 1)?)?)
    }

    /// Mean next-byte cross-entropy of `ids` against `targets` (both batch * len).
    pub fn loss(&self, ids: &[usize], targets: &[i64], batch: usize, len: usize) -> Result<Tensor> {
        Ok(self.forward(ids, batch, len)?.cross_entropy(targets, -100)?)
    }

    /// Zero conv and SSM states for `batch` sequences.
    pub fn new_state(&self, batch: usize) -> Result<InferenceState> {
        let (di, s, dt, dev) = (self.cfg.d_inner(), &self.cfg.ssm_cfg, self.embedding.dtype(), self.device());
        let layers = 0..self.cfg.n_layer;
        let zeros = |shape: &[usize]| Tensor::zeros(shape, dt, dev);
        Ok(InferenceState {
            conv: layers.clone().map(|_| zeros(&[batch, di, s.d_conv])).collect::<mamba_engine::Result<_>>()?,
            ssm: layers.map(|_| zeros(&[batch, di, s.d_state])).collect::<mamba_engine::Result<_>>()?,
        })
    }

    /// Feed one token per sequence; returns logits (batch, padded vocab). No graph is recorded.
    pub fn step(&self, ids: &[usize], state: &mut InferenceState) -> Result<Tensor> {
        let _guard = no_grad();
        let mut h = self.embedding.embedding(ids, &[ids.len()])?;
        let mut residual: Option<Tensor> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let r = match &residual {
                Some(r) => h.add(r)?,
                None => h,
            };
            let normed = r.rms_norm(&layer.norm, RMS_EPS)?;
            h = layer.mixer.step(&self.cfg, &normed, &mut state.conv[i], &mut state.ssm[i])?;
            residual = Some(r);
        }
        let r = match residual {
            Some(r) => h.add(&r)?,
            None => h,
        };
        Ok(r.rms_norm(&self.norm_f, RMS_EPS)?.matmul(&self.embedding.transpose(0, 1)?)?)
    }

    /// Every parameter under its reference name (the tied head is not repeated).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("backbone.embedding.weight".to_string(), self.embedding.clone())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = |name: &str| format!("backbone.layers.{i}.{name}");
            let m = &l.mixer;
            out.extend([
                (p("norm.weight"), l.norm.clone()),
                (p("mixer.in_proj.weight"), m.in_proj.clone()),
                (p("mixer.conv1d.weight"), m.conv_weight.clone()),
                (p("mixer.conv1d.bias"), m.conv_bias.clone()),
                (p("mixer.x_proj.weight"), m.x_proj.clone()),
                (p("mixer.dt_proj.weight"), m.dt_proj_weight.clone()),
                (p("mixer.dt_proj.bias"), m.dt_proj_bias.clone()),
                (p("mixer.A_log"), m.a_log.clone()),
                (p("mixer.D"), m.d.clone()),
                (p("mixer.out_proj.weight"), m.out_proj.clone()),
            ]);
        }
        out.push(("backbone.norm_f.weight".to_string(), self.norm_f.clone()));
        out
    }

    /// Whether AdamW should decay this parameter: not A_log, D, biases or norm weights.
    pub fn decays(name: &str) -> bool {
        !(name.ends_with("A_log") || name.ends_with(".D") || name.ends_with("bias") || name.contains("norm"))
    }

    /// Copy parameters from `tensors` (names prefixed by `prefix`), converting dtypes.
    /// Every parameter must be present with its exact shape; a tied `lm_head.weight` may
    /// appear and must then equal the embedding; any other name is refused
    /// ([`Error::Weights`], naming the tensor).
    pub fn load_parameters(&self, tensors: &BTreeMap<String, Loaded>, prefix: &str) -> Result<()> {
        let params = self.named_parameters();
        for (name, p) in &params {
            let key = format!("{prefix}{name}");
            let t = tensors
                .get(&key)
                .and_then(Loaded::tensor)
                .ok_or_else(|| Error::Weights(format!("missing float tensor `{key}`")))?;
            if t.shape() != p.shape() {
                let (got, want) = (t.shape(), p.shape());
                return Err(Error::Weights(format!("`{key}` has shape {got:?}, the model expects {want:?}")));
            }
            p.set_data(&t.to_dtype(p.dtype())?.to(p.device())?)?;
        }
        if let Some(head) = tensors.get(&format!("{prefix}lm_head.weight")) {
            let embedding = self.embedding.to_vec_f64()?;
            let head = head.tensor().map(|t| t.to_dtype(self.embedding.dtype()).and_then(|t| t.to_vec_f64()));
            if !matches!(head, Some(Ok(h)) if h == embedding) {
                let what = format!("`{prefix}lm_head.weight` differs from the embedding, but this model ties them");
                return Err(Error::Weights(what));
            }
        }
        for key in tensors.keys().filter_map(|k| k.strip_prefix(prefix)) {
            if key != "lm_head.weight" && !params.iter().any(|(n, _)| n == key) {
                return Err(Error::Weights(format!(
                    "unexpected tensor `{prefix}{key}`: the checkpoint does not match this model configuration"
                )));
            }
        }
        Ok(())
    }

    pub fn num_parameters(&self) -> usize {
        self.named_parameters().iter().map(|(_, t)| t.numel()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recurrent generation must compute exactly what the parallel scan computes.
    #[test]
    fn step_mode_matches_parallel_mode_over_512_tokens() {
        let model = MambaLM::new(MambaConfig::new(32, 2), DType::F32, 7).unwrap();
        let mut rng = Rng::new(3);
        let ids: Vec<usize> = (0..2 * 512).map(|_| rng.below(256)).collect();
        let parallel = model.forward(&ids, 2, 512).unwrap().to_vec_f64().unwrap(); // (2, 512, 256)
        let mut state = model.new_state(2).unwrap();
        let mut worst: f64 = 0.0;
        let scale = parallel.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for t in 0..512 {
            let step = model.step(&[ids[t], ids[512 + t]], &mut state).unwrap().to_vec_f64().unwrap(); // (2, 256)
            for b in 0..2 {
                for v in 0..256 {
                    let p = parallel[(b * 512 + t) * 256 + v];
                    worst = worst.max((step[b * 256 + v] - p).abs() / scale);
                }
            }
        }
        assert!(worst < 1e-4, "step vs parallel: max error {worst:e} relative to max |logit| {scale}");
    }

    #[test]
    fn init_follows_the_reference() {
        let cfg = MambaConfig::new(64, 4);
        let m = MambaLM::new(cfg, DType::F64, 1).unwrap();
        let mixer = &m.layers[0].mixer;
        let a_log = mixer.a_log.to_vec_f64().unwrap();
        assert!((a_log[0] - 0.0).abs() < 1e-12 && (a_log[15] - 16f64.ln()).abs() < 1e-12);
        assert!(mixer.d.to_vec_f64().unwrap().iter().all(|&d| d == 1.0));
        // softplus(dt_proj.bias) lies in [1e-4, 0.1]
        for b in mixer.dt_proj_bias.to_vec_f64().unwrap() {
            let dt = b.exp().ln_1p();
            assert!((1e-4 - 1e-12..=0.1 + 1e-9).contains(&dt), "dt {dt}");
        }
        let bound = 1.0 / 128f64.sqrt() / 2.0; // fan-in d_inner = 128, n_layer = 4
        assert!(mixer.out_proj.to_vec_f64().unwrap().iter().all(|w| w.abs() <= bound));
        assert_eq!(m.named_parameters().len(), 2 + 10 * 4);
    }

    #[test]
    fn param_count_matches_the_model() {
        for (d_model, n_layer) in [(16, 1), (24, 3), (64, 2)] {
            let model = MambaLM::new(MambaConfig::new(d_model, n_layer), DType::F32, 0).unwrap();
            assert_eq!(model.cfg.param_count(), Some(model.num_parameters()));
        }
    }

    #[test]
    fn overflowing_sizes_are_refused_before_allocating() {
        let mut huge_vocab = MambaConfig::new(16, 1);
        huge_vocab.vocab_size = usize::MAX - 2; // padding it to a multiple of 8 overflows
        let mut huge_expand = MambaConfig::new(16, 1);
        huge_expand.ssm_cfg.expand = usize::MAX / 2;
        // 2^61 parameters do not overflow a count, but 2^63 bytes of f32 exceed the address space
        let mut huge_layers = MambaConfig::new(16, 1);
        huge_layers.n_layer = 1 << 50;
        for cfg in
            [MambaConfig::new(usize::MAX, 4), MambaConfig::new(1 << 40, 1 << 40), huge_vocab, huge_expand, huge_layers]
        {
            match MambaLM::new(cfg, DType::F32, 0) {
                Err(Error::Unsupported(msg)) => assert!(msg.contains("overflows"), "{msg}"),
                Err(e) => panic!("wrong error: {e}"),
                Ok(_) => panic!("an absurd configuration was built"),
            }
        }
    }
}
