//! Fast generation for Mamba-1 LMs: the [`Decoder`] runs one token through the model in the
//! fused decoding kernels (`mamba_engine::ops::decode`: three or four launches a layer and one
//! for the head, 13 a token for the default model; every weight read once) instead of the
//! generic step's ~30 tensor ops a layer, and on the GPU records the token's launches once as
//! a CUDA graph and replays it for every later token.
//!
//! ```text
//! layer 0:         r = embedding[ids] (B, M)     decode_mamba1 with `Embed`, in its first kernel
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
    ops::decode::{self, decode_token, Dims, Mamba1Buffers, Mamba1Weights, TokenIo, TokenKernel, TokenWeights},
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
    /// The whole token in one persistent kernel (GPU only: `ops::decode::TokenKernel`),
    /// recorded as a CUDA graph with the ids' and logits' copies.
    Token,
    /// As `Token`, reading bf16 copies of in_proj, x_proj, out_proj and the embedding (made
    /// once here; the sums stay f32): half the bytes a token.
    TokenBf16,
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
    /// The one-kernel token (`Launch::Token*`).
    token_kernel: Option<TokenKernel>,
    /// Whether recording the token as a CUDA graph failed (then each token is launched).
    unrecordable: bool,
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
    /// Why `model` cannot be decoded `batch` sequences at a time along `launch`, if it cannot
    /// (then [`MambaLM::step`] does it, or for `Token*` the fused kernels).
    pub fn unsupported_for(model: &MambaLM, batch: usize, launch: Launch) -> Option<String> {
        if let Some(why) = Self::unsupported(model, batch) {
            return Some(why);
        }
        let bf16 = match launch {
            Launch::Fused | Launch::Graph => return None,
            Launch::Token => false,
            Launch::TokenBf16 => true,
        };
        let mixer = mamba1_layers(model).ok()?[0];
        TokenKernel::unsupported(dims(mixer, batch), model.cfg.padded_vocab(), bf16, model.device())
    }

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
        if let Some(why) = Self::unsupported_for(model, batch, launch) {
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
        let mut decoder = Decoder {
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
            token_kernel: None,
            unrecordable: false,
        };
        if matches!(launch, Launch::Token | Launch::TokenBf16) {
            decoder.token_kernel = Some(decoder.token_kernel(launch == Launch::TokenBf16)?);
        }
        Ok(decoder)
    }

    /// The one-kernel token over this decoder's buffers, with bf16 copies of the big weights
    /// if `bf16` (the kernel holds them).
    fn token_kernel(&self, bf16: bool) -> Result<TokenKernel> {
        let _guard = no_grad();
        let narrow = |t: &Tensor| if bf16 { t.to_dtype(DType::BF16) } else { Ok(t.clone()) };
        let embedding = narrow(&self.model.embedding)?;
        let big = self
            .mixers
            .iter()
            .map(|m| Ok([narrow(&m.in_proj)?, narrow(&m.x_proj)?, narrow(&m.out_proj)?]))
            .collect::<Result<Vec<_>>>()?;
        let weights = self.weights(|i| [&big[i][0], &big[i][1], &big[i][2]], &embedding);
        Ok(TokenKernel::new(self.dims, &weights, &self.io(), RMS_EPS)?)
    }

    /// The model's weights as the token reads them, the big three of layer i from `big(i)`.
    fn weights<'a>(&'a self, big: impl Fn(usize) -> [&'a Tensor; 3], embedding: &'a Tensor) -> TokenWeights<'a> {
        let layers = self.model.layers.iter().zip(&self.mixers).zip(&self.a).enumerate();
        let layers = layers
            .map(|(i, ((block, m), a))| {
                let [in_proj, x_proj, out_proj] = big(i);
                Mamba1Weights {
                    norm: &block.norm,
                    in_proj,
                    conv_w: &m.conv_weight,
                    conv_b: &m.conv_bias,
                    x_proj,
                    dt_w: &m.dt_proj_weight,
                    dt_b: &m.dt_proj_bias,
                    a,
                    d_skip: &m.d,
                    out_proj,
                }
            })
            .collect();
        TokenWeights { layers, embedding, norm_f: &self.model.norm_f }
    }

    fn io(&self) -> TokenIo<'_> {
        TokenIo { residual: &self.residual, ids: &self.ids, logits: &self.logits, layers: &self.layers }
    }

    /// How this decoder runs a token.
    pub fn launch(&self) -> Launch {
        self.launch
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
        if self.launch != Launch::Fused && device == Device::Cuda {
            if self.recorded.is_none() && !self.unrecordable {
                match Recorded::capture(device, || self.token()) {
                    Ok(recorded) => self.recorded = recorded,
                    // a driver that cannot record the one-kernel token's cooperative launch:
                    // launch it directly (a capture that fails leaves the stream as it was)
                    Err(_) if self.token_kernel.is_some() => self.unrecordable = true,
                    Err(e) => return Err(e.into()),
                }
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

    /// Every launch of one token: the ids in, the layers (one kernel, or three or four a layer), the
    /// logits out.
    fn token(&self) -> mamba_engine::Result<()> {
        self.ids_link.upload()?;
        match &self.token_kernel {
            Some(kernel) => kernel.run()?,
            None => {
                let m = &self.mixers;
                let weights = self.weights(|i| [&m[i].in_proj, &m[i].x_proj, &m[i].out_proj], &self.model.embedding);
                decode_token(self.dims, &weights, &self.io(), RMS_EPS)?;
            }
        }
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
        let model = MambaLM::new(MambaConfig::new(16, 1), DType::F32, 0).unwrap();
        let why = Decoder::unsupported_for(&model, 1, Launch::Token).expect("the CPU has no one-kernel token");
        assert!(why.contains("runs on the GPU"), "{why}");
        assert!(Decoder::new(&model, 1, Launch::TokenBf16).is_err());
        assert_eq!(Decoder::unsupported_for(&model, 1, Launch::Graph), None);
    }
}
