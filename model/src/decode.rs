//! Fast generation for Mamba-1 LMs: the [`Decoder`] runs one token through the model in the
//! fused decoding kernels (`mamba_engine::ops::decode`: four launches a layer, every weight
//! read once) instead of the generic step's ~30 tensor ops a layer, and on the GPU records
//! the token's launches once as a CUDA graph and replays it for every later token.
//!
//! ```text
//! ids ─decode_embed─▶ r (B, M)
//! for each layer:  r += Mixer(RMSNorm(r))        decode_mamba1 (conv and SSM states in place)
//! logits = embedding RMSNorm_f(r)                decode_head   (B, padded vocab)
//! ```
//!
//! This is the same network as [`MambaLM::step`] (the reference block adds the residual
//! before the norm, so the stream `r` is the sum the blocks pass along). Every buffer is
//! allocated once, here, so that the recorded launches stay valid token after token.

use crate::{
    lm::{InferenceState, MambaLM},
    mixer::{Mamba1, Mixer, MixerState},
    Error, Result, RMS_EPS,
};
use mamba_engine::{
    no_grad,
    ops::decode::{self, decode_embed, decode_head, decode_mamba1, Dims, Mamba1Buffers, Mamba1Weights},
    replay::{HostLink, Recorded},
    DType, Device, Tensor,
};

/// How [`Decoder::step`] runs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// The fused kernels, launched one by one.
    Fused,
    /// The fused kernels, recorded once as a CUDA graph and replayed (the same as `Fused` on
    /// the CPU).
    Graph,
}

/// A Mamba-1 LM decoding `batch` sequences token by token (see the module docs).
pub struct Decoder<'m> {
    /// The recorded token (GPU). First, so that it drops first: fields drop in declaration
    /// order, and the graph (whose drop waits for a replay in flight) uses every buffer below.
    recorded: Option<Recorded>,
    model: &'m MambaLM,
    /// Each block's mixer (all Mamba-1, no MLP branch).
    mixers: Vec<&'m Mamba1>,
    dims: Dims,
    /// A = -exp(A_log) of each layer.
    a: Vec<Tensor>,
    layers: Vec<Mamba1Buffers>,
    residual: Tensor, // (B, M)
    ids: Tensor,      // (B) token ids as floats
    logits: Tensor,   // (B, padded vocab)
    /// The host's ends of `ids` and `logits` (page-locked on the GPU, copied inside the graph).
    ids_link: HostLink,
    logits_link: HostLink,
    launch: Launch,
}

/// The Mamba-1 mixers of `model`'s blocks, or why the decoder cannot run it.
fn mamba1_layers(model: &MambaLM) -> std::result::Result<Vec<&Mamba1>, String> {
    model
        .layers
        .iter()
        .enumerate()
        .map(|(i, block)| match (&block.mixer, &block.mlp) {
            (Mixer::Mamba1(m), None) => Ok(m),
            (Mixer::Mamba1(_), Some(_)) => Err(format!("layer {i} has an MLP branch")),
            (mixer, _) => Err(format!("layer {i} is {}, the fused decoder runs Mamba1 layers", mixer.kind())),
        })
        .collect()
}

impl<'m> Decoder<'m> {
    /// Why `model` cannot be decoded `batch` sequences at a time by the fused kernels, if it
    /// cannot (then [`MambaLM::step`] does it).
    pub fn unsupported(model: &MambaLM, batch: usize) -> Option<String> {
        let layers = match mamba1_layers(model) {
            Ok(l) => l,
            Err(why) => return Some(why),
        };
        if model.embedding.dtype() == DType::BF16 {
            return Some("the weights are bf16".into());
        }
        let Some(first) = layers.first() else { return Some("the model has no layers".into()) };
        if model.cfg.padded_vocab() > 1 << 24 {
            return Some("the ids travel as f32, exact below 2^24; the vocabulary is larger".into());
        }
        decode::unsupported(dims(first, batch))
    }

    /// A decoder for `batch` sequences with zero states (or [`Error::Unsupported`] saying why
    /// the model cannot have one).
    pub fn new(model: &'m MambaLM, batch: usize, launch: Launch) -> Result<Decoder<'m>> {
        if let Some(why) = Self::unsupported(model, batch) {
            return Err(Error::Unsupported(format!("the fused decoder: {why}")));
        }
        let mixers = mamba1_layers(model).map_err(Error::Unsupported)?;
        let dims = dims(mixers[0], batch);
        let (dtype, device) = (model.embedding.dtype(), model.device());
        let _guard = no_grad();
        let a = mixers.iter().map(|m| Ok(m.a_log.exp()?.neg()?)).collect::<Result<Vec<_>>>()?;
        let buffers =
            mixers.iter().map(|_| Mamba1Buffers::zeros(dims, dtype, device)).collect::<mamba_engine::Result<_>>()?;
        let ids = Tensor::zeros(&[batch], dtype, device)?;
        let logits = Tensor::zeros(&[batch, model.cfg.padded_vocab()], dtype, device)?;
        Ok(Decoder {
            recorded: None,
            model,
            mixers,
            dims,
            a,
            layers: buffers,
            residual: Tensor::zeros(&[batch, dims.m], dtype, device)?,
            ids_link: HostLink::new(&ids)?,
            logits_link: HostLink::new(&logits)?,
            ids,
            logits,
            launch,
        })
    }

    /// Continue from `state` (what [`MambaLM::prefill`] left for the same batch).
    pub fn load(&mut self, state: &InferenceState) -> Result<()> {
        if state.layers.len() != self.layers.len() {
            return Err(Error::Unsupported(format!(
                "a state of {} layers for a model of {}",
                state.layers.len(),
                self.layers.len()
            )));
        }
        for (bufs, s) in self.layers.iter().zip(&state.layers) {
            let MixerState::Mamba1(s) = s else {
                return Err(Error::Unsupported(format!("a {} state for a Mamba1 layer", s.kind())));
            };
            bufs.conv_state.set_data(&s.conv)?;
            bufs.ssm_state.set_data(&s.ssm)?;
        }
        Ok(())
    }

    /// Feed one token per sequence (`ids`: batch of them); returns the logits (batch x padded
    /// vocab, row-major) on the host.
    pub fn step(&mut self, ids: &[usize]) -> Result<Vec<f64>> {
        let vocab = self.model.cfg.padded_vocab();
        if ids.len() != self.dims.batch || ids.iter().any(|&i| i >= vocab) {
            let what = format!("{} ids below {vocab} expected, got {ids:?}", self.dims.batch);
            return Err(Error::Unsupported(format!("decoder step: {what}")));
        }
        self.ids_link.set(&ids.iter().map(|&i| i as f64).collect::<Vec<_>>())?;
        let device = self.model.device();
        if self.launch == Launch::Graph && device == Device::Cuda {
            if self.recorded.is_none() {
                self.recorded = Recorded::capture(device, || self.token())?;
            }
            match &self.recorded {
                Some(r) => r.replay()?,
                None => self.token()?, // nothing was recorded (a profiling session times each launch)
            }
        } else {
            self.token()?;
        }
        Ok(self.logits_link.get()?)
    }

    /// Every launch of one token: the ids in, the layers, the logits out.
    fn token(&self) -> mamba_engine::Result<()> {
        let model = self.model;
        self.ids_link.upload()?;
        decode_embed(&self.residual, &model.embedding, &self.ids)?;
        for (((block, m), a), bufs) in model.layers.iter().zip(&self.mixers).zip(&self.a).zip(&self.layers) {
            let w = Mamba1Weights {
                norm: &block.norm,
                in_proj: &m.in_proj,
                conv_w: &m.conv_weight,
                conv_b: &m.conv_bias,
                x_proj: &m.x_proj,
                dt_w: &m.dt_proj_weight,
                dt_b: &m.dt_proj_bias,
                a,
                d_skip: &m.d,
                out_proj: &m.out_proj,
            };
            decode_mamba1(self.dims, &self.residual, &w, bufs, RMS_EPS)?;
        }
        decode_head(&self.logits, &self.residual, &model.norm_f, &model.embedding, RMS_EPS)?;
        self.logits_link.download()
    }
}

/// The kernels' sizes for mixer `m` at `batch`.
fn dims(m: &Mamba1, batch: usize) -> Dims {
    let d = m.dims;
    Dims { batch, m: d.d_model, d: d.d_inner, d_state: d.d_state, dt_rank: d.dt_rank, d_conv: d.d_conv }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lm::tests::stepped_vs_parallel, MambaConfig, SsmConfig};
    use mamba_engine::Rng;

    /// max |decoder - parallel| / max |parallel|: prefill, then the decoder from its state.
    fn decoder_vs_parallel(model: &MambaLM, prompt: usize, len: usize) -> f64 {
        let start = |state| {
            let mut decoder = Decoder::new(model, 2, Launch::Graph).unwrap();
            decoder.load(&state).unwrap();
            decoder
        };
        stepped_vs_parallel(model, prompt, len, start, |d: &mut Decoder, ids| d.step(&ids).unwrap())
    }

    #[test]
    fn prefill_then_decoder_matches_parallel_mode() {
        let f64_model = MambaLM::new(MambaConfig::new(32, 2), DType::F64, 7).unwrap();
        let worst = decoder_vs_parallel(&f64_model, 5, 200);
        assert!(worst < 1e-10, "f64: max error {worst:e} of the largest logit");
        let f32_model = MambaLM::new(MambaConfig::new(32, 2), DType::F32, 7).unwrap();
        let worst = decoder_vs_parallel(&f32_model, 1, 300);
        assert!(worst < 1e-4, "f32: max error {worst:e} of the largest logit");
    }

    /// The decoder and the generic step agree from zero states, token by token, at batch 3.
    #[test]
    fn decoder_matches_the_generic_step() {
        let model = MambaLM::new(MambaConfig::new(16, 3), DType::F64, 2).unwrap();
        let mut state = model.new_state(3).unwrap();
        let mut decoder = Decoder::new(&model, 3, Launch::Fused).unwrap();
        let mut rng = Rng::new(9);
        for _ in 0..40 {
            let ids: Vec<usize> = (0..3).map(|_| rng.below(256)).collect();
            let want = model.step(&ids, &mut state).unwrap().to_vec_f64().unwrap();
            let got = decoder.step(&ids).unwrap();
            let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-11, "off by {worst:e}");
        }
        assert!(decoder.step(&[1, 2]).is_err(), "a wrong number of ids is refused");
        assert!(decoder.step(&[1, 2, 100_000]).is_err(), "an id past the vocabulary is refused");
    }

    #[test]
    fn models_it_cannot_run_are_named_with_the_reason() {
        let cases = [
            (MambaConfig { d_intermediate: 8, ..MambaConfig::new(16, 2) }, "has an MLP branch"),
            (MambaConfig { ssm_cfg: SsmConfig::Mamba2(Default::default()), ..MambaConfig::new(64, 1) }, "is Mamba2"),
            (MambaConfig::new(18, 1), "must be a multiple of 4"),
        ];
        for (cfg, want) in cases {
            let model = MambaLM::new(cfg, DType::F32, 0).unwrap();
            let why = Decoder::unsupported(&model, 1).expect("unsupported");
            assert!(why.contains(want), "{why}");
            assert!(Decoder::new(&model, 1, Launch::Fused).is_err());
        }
    }
}
