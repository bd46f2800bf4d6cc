//! Fast generation for Mamba-1 and Mamba-2 LMs: the [`Decoder`] runs one token through the
//! model in the fused decoding kernels (`mamba_engine::ops::decode`: three or four launches a
//! Mamba-1 layer, three a Mamba-2 layer, and one for the head; 13 a token for the default
//! model; every weight read once) instead of the generic step's ~30 tensor ops a layer, and on
//! the GPU records the token's launches once as a CUDA graph and replays it for every later
//! token.
//!
//! ```text
//! layer 0:         r = embedding[ids] (B, M)     in the first layer's first kernel
//! for each layer:  r += Mixer(RMSNorm(r))        decode_mamba1 or decode_mamba2 (states in place)
//! logits = embedding RMSNorm_f(r)                decode_head   (B, padded vocab)
//! ```
//!
//! This is the same network as [`MambaLM::step`] (the reference block adds the residual
//! before the norm, so the stream `r` is the sum the blocks pass along). Every buffer is
//! allocated once, here, so that the recorded launches stay valid token after token.

use crate::{
    lm::{InferenceState, MambaLM},
    mixer::{Mamba1, Mamba2, Mixer, MixerState},
    Error, Result, RMS_EPS,
};
use mamba_engine::{
    no_grad,
    ops::decode::{
        self, decode_mamba2, decode_token, Dims, Embed, Mamba1Buffers, Mamba1Weights, Mamba2Buffers, Mamba2Weights,
        SsdDims, TokenIo, TokenKernel, TokenWeights,
    },
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
    /// recorded as a CUDA graph with the ids' and logits' copies. Mamba-1 only.
    Token,
    /// As `Token`, reading bf16 copies of in_proj, x_proj, out_proj and the embedding (made
    /// once here; the sums stay f32): half the bytes a token.
    TokenBf16,
}

/// The decoder's layers, all of one kind, with their kernels' sizes and buffers.
enum Stack<'m> {
    Mamba1 { mixers: Vec<&'m Mamba1>, dims: Dims, layers: Vec<Mamba1Buffers> },
    Mamba2 { mixers: Vec<&'m Mamba2>, dims: SsdDims, layers: Vec<Mamba2Buffers> },
}

impl Stack<'_> {
    fn len(&self) -> usize {
        match self {
            Stack::Mamba1 { layers, .. } => layers.len(),
            Stack::Mamba2 { layers, .. } => layers.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Stack::Mamba1 { .. } => "Mamba1",
            Stack::Mamba2 { .. } => "Mamba2",
        }
    }

    /// Each layer's A_log, from which the decoder makes A = -exp(A_log) once.
    fn a_logs(&self) -> Vec<&Tensor> {
        match self {
            Stack::Mamba1 { mixers, .. } => mixers.iter().map(|m| &m.a_log).collect(),
            Stack::Mamba2 { mixers, .. } => mixers.iter().map(|m| &m.a_log).collect(),
        }
    }
}

/// A Mamba-1 or Mamba-2 LM decoding `batch` sequences token by token (see the module docs).
pub struct Decoder<'m> {
    /// The recorded token (GPU). First, so that it drops first: fields drop in declaration
    /// order, and the graph (whose drop waits for a replay in flight) uses every buffer below.
    recorded: Option<Recorded>,
    model: &'m MambaLM,
    stack: Stack<'m>,
    batch: usize,
    /// A = -exp(A_log) of each layer: (D, N) for Mamba-1, (H) for Mamba-2.
    a: Vec<Tensor>,
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

/// The mixers of `model`'s blocks, all Mamba-1 or all Mamba-2 without an MLP branch.
enum Mixers<'m> {
    Mamba1(Vec<&'m Mamba1>),
    Mamba2(Vec<&'m Mamba2>),
}

/// `model`'s mixers, or why the decoder cannot run it.
fn mixers_of(model: &MambaLM) -> std::result::Result<Mixers<'_>, String> {
    let (mut one, mut two) = (vec![], vec![]);
    for (i, block) in model.layers.iter().enumerate() {
        if block.mlp.is_some() {
            return Err(format!("layer {i} has an MLP branch"));
        }
        match &block.mixer {
            Mixer::Mamba1(m) => one.push(m),
            Mixer::Mamba2(m) if m.norm_before_gate && m.norm.is_some() => {
                return Err(format!("layer {i} normalises before the gate (norm_before_gate)"))
            }
            Mixer::Mamba2(m) if m.dims.ngroups > 1 && m.norm.is_some() => {
                return Err(format!("layer {i}'s gated norm has {} groups; the decoder's has one", m.dims.ngroups))
            }
            Mixer::Mamba2(m) => two.push(m),
            mixer => {
                return Err(format!("layer {i} is {}, the fused decoder runs Mamba1 and Mamba2 layers", mixer.kind()))
            }
        }
    }
    match (one.is_empty(), two.is_empty()) {
        (_, true) => Ok(Mixers::Mamba1(one)),
        (true, false) => Ok(Mixers::Mamba2(two)),
        (false, false) => Err("the layers mix Mamba1 and Mamba2".into()),
    }
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
        match mixers_of(model).ok()? {
            Mixers::Mamba1(m) => {
                TokenKernel::unsupported(mamba1_dims(m[0], batch), model.cfg.padded_vocab(), bf16, model.device())
            }
            Mixers::Mamba2(_) => Some("the one-kernel token runs Mamba1 layers".into()),
        }
    }

    /// Why `model` cannot be decoded `batch` sequences at a time by the fused kernels, if it
    /// cannot (then [`MambaLM::step`] does it).
    pub fn unsupported(model: &MambaLM, batch: usize) -> Option<String> {
        let mixers = match mixers_of(model) {
            Ok(m) => m,
            Err(why) => return Some(why),
        };
        if model.embedding.dtype() == DType::BF16 {
            return Some("the weights are bf16".into());
        }
        if model.layers.is_empty() {
            return Some("the model has no layers".into());
        }
        if model.cfg.padded_vocab() > 1 << 24 {
            return Some("the ids travel as f32, exact below 2^24; the vocabulary is larger".into());
        }
        match mixers {
            Mixers::Mamba1(m) => mamba1_dims(m[0], batch).unsupported(),
            Mixers::Mamba2(m) => mamba2_dims(m[0], batch).unsupported(),
        }
    }

    /// A decoder for `batch` sequences with zero states (or [`Error::Unsupported`] saying why
    /// the model cannot have one).
    pub fn new(model: &'m MambaLM, batch: usize, launch: Launch) -> Result<Decoder<'m>> {
        if let Some(why) = Self::unsupported_for(model, batch, launch) {
            return Err(Error::Unsupported(format!("the fused decoder: {why}")));
        }
        let (dtype, device) = (model.embedding.dtype(), model.device());
        let _guard = no_grad();
        let stack = match mixers_of(model).map_err(Error::Unsupported)? {
            Mixers::Mamba1(mixers) => {
                let dims = mamba1_dims(mixers[0], batch);
                let layers = mixers
                    .iter()
                    .map(|_| Mamba1Buffers::zeros(dims, dtype, device))
                    .collect::<mamba_engine::Result<_>>()?;
                Stack::Mamba1 { mixers, dims, layers }
            }
            Mixers::Mamba2(mixers) => {
                let dims = mamba2_dims(mixers[0], batch);
                let layers = mixers
                    .iter()
                    .map(|_| Mamba2Buffers::zeros(dims, dtype, device))
                    .collect::<mamba_engine::Result<_>>()?;
                Stack::Mamba2 { mixers, dims, layers }
            }
        };
        let a = stack.a_logs().iter().map(|a_log| Ok(a_log.exp()?.neg()?)).collect::<Result<Vec<_>>>()?;
        let ids = Tensor::zeros(&[batch], dtype, device)?;
        let logits = Tensor::zeros(&[batch, model.cfg.padded_vocab()], dtype, device)?;
        let mut decoder = Decoder {
            recorded: None,
            model,
            stack,
            batch,
            a,
            residual: Tensor::zeros(&[batch, model.cfg.d_model], dtype, device)?,
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
    /// if `bf16` (the kernel holds them). Mamba-1 only (`unsupported_for` saw to it).
    fn token_kernel(&self, bf16: bool) -> Result<TokenKernel> {
        let Stack::Mamba1 { mixers, dims, .. } = &self.stack else {
            return Err(Error::Unsupported("the one-kernel token runs Mamba1 layers".into()));
        };
        let _guard = no_grad();
        let narrow = |t: &Tensor| if bf16 { t.to_dtype(DType::BF16) } else { Ok(t.clone()) };
        let embedding = narrow(&self.model.embedding)?;
        let big = mixers
            .iter()
            .map(|m| Ok([narrow(&m.in_proj)?, narrow(&m.x_proj)?, narrow(&m.out_proj)?]))
            .collect::<Result<Vec<_>>>()?;
        let weights = self.weights(mixers, |i| [&big[i][0], &big[i][1], &big[i][2]], &embedding);
        Ok(TokenKernel::new(*dims, &weights, &self.io()?, RMS_EPS)?)
    }

    /// The Mamba-1 model's weights as the token reads them, the big three of layer i from `big(i)`.
    fn weights<'a>(
        &'a self,
        mixers: &[&'a Mamba1],
        big: impl Fn(usize) -> [&'a Tensor; 3],
        embedding: &'a Tensor,
    ) -> TokenWeights<'a> {
        let layers = self.model.layers.iter().zip(mixers).zip(&self.a).enumerate();
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

    /// The Mamba-1 token's buffers.
    fn io(&self) -> Result<TokenIo<'_>> {
        let Stack::Mamba1 { layers, .. } = &self.stack else {
            return Err(Error::Unsupported("the token's buffers are a Mamba1 stack's".into()));
        };
        Ok(TokenIo { residual: &self.residual, ids: &self.ids, logits: &self.logits, layers })
    }

    /// How this decoder runs a token.
    pub fn launch(&self) -> Launch {
        self.launch
    }

    /// Continue from `state` (what [`MambaLM::prefill`] left for the same batch).
    pub fn load(&mut self, state: &InferenceState) -> Result<()> {
        let n = self.stack.len();
        if state.layers.len() != n {
            return Err(Error::Unsupported(format!("a state of {} layers for a model of {n}", state.layers.len())));
        }
        for (i, s) in state.layers.iter().enumerate() {
            let (bufs, from) = match (&self.stack, s) {
                (Stack::Mamba1 { layers, .. }, MixerState::Mamba1(s)) => (layers[i].states(), [&s.conv, &s.ssm]),
                (Stack::Mamba2 { layers, .. }, MixerState::Mamba2(s)) => (layers[i].states(), [&s.conv, &s.ssm]),
                (stack, _) => {
                    return Err(Error::Unsupported(format!("a {} state for a {} layer", s.kind(), stack.kind())));
                }
            };
            for (b, f) in bufs.into_iter().zip(from) {
                b.set_data(f)?;
            }
        }
        Ok(())
    }

    /// Feed one token per sequence (`ids`: batch of them); returns the logits (batch x padded
    /// vocab, row-major) on the host.
    pub fn step(&mut self, ids: &[usize]) -> Result<Vec<f64>> {
        let vocab = self.model.cfg.padded_vocab();
        if ids.len() != self.batch || ids.iter().any(|&i| i >= vocab) {
            let what = format!("{} ids below {vocab} expected, got {ids:?}", self.batch);
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
        match (&self.token_kernel, &self.stack) {
            (Some(kernel), _) => kernel.run()?,
            (None, Stack::Mamba1 { mixers: m, dims, layers }) => {
                let weights = self.weights(m, |i| [&m[i].in_proj, &m[i].x_proj, &m[i].out_proj], &self.model.embedding);
                let io = TokenIo { residual: &self.residual, ids: &self.ids, logits: &self.logits, layers };
                decode_token(*dims, &weights, &io, RMS_EPS)?;
            }
            (None, Stack::Mamba2 { mixers, dims, layers }) => self.token_mamba2(mixers, *dims, layers)?,
        }
        self.logits_link.download()
    }

    /// A Mamba-2 stack's layers and the head (the first layer from the embedding).
    fn token_mamba2(&self, mixers: &[&Mamba2], dims: SsdDims, layers: &[Mamba2Buffers]) -> mamba_engine::Result<()> {
        let mut embed = Some(Embed { embedding: &self.model.embedding, ids: &self.ids });
        for (((block, m), a), bufs) in self.model.layers.iter().zip(mixers).zip(&self.a).zip(layers) {
            let w = Mamba2Weights {
                norm: &block.norm,
                in_proj: &m.in_proj,
                conv_w: &m.conv_weight,
                conv_b: &m.conv_bias,
                dt_bias: &m.dt_bias,
                a,
                d_skip: &m.d,
                gate_norm: m.norm.as_ref(),
                out_proj: &m.out_proj,
            };
            decode_mamba2(dims, &self.residual, embed.take(), &w, bufs, RMS_EPS)?;
        }
        decode::decode_head(&self.logits, &self.residual, &self.model.norm_f, &self.model.embedding, RMS_EPS)
    }
}

/// The kernels' sizes for Mamba-1 mixer `m` at `batch`.
fn mamba1_dims(m: &Mamba1, batch: usize) -> Dims {
    let d = m.dims;
    Dims { batch, m: d.d_model, d: d.d_inner, d_state: d.d_state, dt_rank: d.dt_rank, d_conv: d.d_conv }
}

/// The kernels' sizes for Mamba-2 mixer `m` at `batch`.
fn mamba2_dims(m: &Mamba2, batch: usize) -> SsdDims {
    let d = m.dims;
    SsdDims {
        batch,
        m: d.d_model,
        heads: d.nheads,
        headdim: d.headdim,
        d_state: d.d_state,
        ngroups: d.ngroups,
        d_conv: d.d_conv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lm::tests::stepped_vs_parallel, Mamba2Config, MambaConfig, SsmConfig};
    use mamba_engine::Rng;

    /// A Mamba-2 LM of width `d_model` (headdim 16, d_state 8, chunk 16), then `edit`.
    fn mamba2(d_model: usize, n_layer: usize, edit: impl FnOnce(&mut Mamba2Config)) -> MambaConfig {
        let mut s = Mamba2Config { d_state: 8, headdim: 16, chunk_size: 16, ..Default::default() };
        edit(&mut s);
        MambaConfig { ssm_cfg: SsmConfig::Mamba2(s), ..MambaConfig::new(d_model, n_layer) }
    }

    /// max |decoder - parallel| / max |parallel|: prefill, then the decoder from its state.
    fn decoder_vs_parallel(model: &MambaLM, prompt: usize, len: usize) -> f64 {
        let start = |state| {
            let mut decoder = Decoder::new(model, 2, Launch::Graph).unwrap();
            decoder.load(&state).unwrap();
            decoder
        };
        stepped_vs_parallel(model, prompt, len, start, |d: &mut Decoder, ids| d.step(&ids).unwrap())
    }

    /// Mamba-1 and Mamba-2 (with the gated norm, and without it over 2 groups of B and C):
    /// prefill through the parallel scan, then the decoder, against the parallel logits.
    #[test]
    fn prefill_then_decoder_matches_parallel_mode() {
        let configs = [
            ("Mamba-1", MambaConfig::new(32, 2)),
            ("Mamba-2", mamba2(32, 2, |_| {})),
            ("Mamba-2 no norm, 2 groups", mamba2(32, 2, |s| (s.rmsnorm, s.ngroups) = (false, 2))),
        ];
        for (name, cfg) in configs {
            let f64_model = MambaLM::new(cfg.clone(), DType::F64, 7).unwrap();
            let worst = decoder_vs_parallel(&f64_model, 5, 200);
            assert!(worst < 1e-10, "{name} f64: max error {worst:e} of the largest logit");
            let f32_model = MambaLM::new(cfg, DType::F32, 7).unwrap();
            let worst = decoder_vs_parallel(&f32_model, 1, 300);
            assert!(worst < 1e-4, "{name} f32: max error {worst:e} of the largest logit");
        }
    }

    /// The decoder and the generic step agree from zero states, token by token, at batch 3.
    #[test]
    fn decoder_matches_the_generic_step() {
        for cfg in [MambaConfig::new(16, 3), mamba2(16, 3, |s| s.headdim = 8)] {
            let model = MambaLM::new(cfg, DType::F64, 2).unwrap();
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
    }

    #[test]
    fn models_it_cannot_run_are_named_with_the_reason() {
        let cases = [
            (MambaConfig { d_intermediate: 8, ..MambaConfig::new(16, 2) }, "has an MLP branch"),
            (mamba2(64, 1, |s| s.norm_before_gate = true), "normalises before the gate"),
            (mamba2(64, 1, |s| s.ngroups = 2), "gated norm has 2 groups"),
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
        let model = MambaLM::new(mamba2(32, 1, |_| {}), DType::F32, 0).unwrap();
        let why = Decoder::unsupported_for(&model, 1, Launch::Token).expect("Mamba-2 has no one-kernel token");
        assert!(why.contains("runs Mamba1 layers"), "{why}");
    }
}
