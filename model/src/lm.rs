//! The language model, exactly as the reference `MambaLMHeadModel`: an embedding, `n_layer`
//! blocks (`block.rs`: norm + mixer, and an MLP when `d_intermediate > 0`), a final RMSNorm
//! and the head tied to the embedding.
//!
//! ```text
//! ids (B, L) ─embedding─▶ h (B, L, d_model),  r = none
//! for each block:  (h, r) = Block(h, r)            r = h + r;  h = Mixer(RMSNorm(r)) [+ MLP branch]
//! logits = RMSNorm_f(h + r) @ embedding^T          (B, L, padded vocab), tied head
//! ```
//!
//! Parameter names (`backbone.embedding.weight`, `backbone.layers.{i}.norm.weight`,
//! `backbone.layers.{i}.mixer.*`, `backbone.layers.{i}.norm2.weight`,
//! `backbone.layers.{i}.mlp.fc{1,2}.weight`, `backbone.norm_f.weight`) come from the
//! modules' declarations (`params.rs`), made once here by `declare`; the model keeps the
//! list they make ([`MambaLM::parameters`]), which every reader of parameters iterates.
//!
//! `step` runs the same network one token at a time, each mixer carrying its recurrent state
//! ([`InferenceState`]): constant cost per token. `objective_from` runs whole sequences from
//! such a state and returns the one they end in (Mamba-1 layers): a long text in consecutive
//! pieces, truncated backprop through time.

use crate::{
    block::Block,
    config::MambaConfig,
    io::Loaded,
    mixer::{Mixer, MixerState},
    moe::MoeStats,
    params::{self, Backend, Count, Decay, Init, Param, Shapes, Vb},
    Error, Result, RMS_EPS,
};
use mamba_engine::{no_grad, DType, Device, Tensor};
use std::{collections::BTreeMap, ops::Range};

/// The training objective of one batch ([`MambaLM::objective`]).
pub struct Objective {
    /// What backward runs on: `cross_entropy` plus every MoE layer's `aux_loss`.
    pub total: Tensor,
    pub cross_entropy: Tensor,
    /// Per MoE layer, in order.
    pub moe: Vec<MoeStats>,
}

pub struct MambaLM {
    pub cfg: MambaConfig,
    pub embedding: Tensor, // (padded vocab, d_model), also the output head
    pub layers: Vec<Block>,
    pub norm_f: Tensor, // (d_model)
    /// Time steps between the states the scan saves for backward.
    pub scan_chunk: usize,
    /// Recompute each mixer's inner activations in backward instead of keeping them
    /// (`Mixer::forward`); off by default.
    pub recompute: bool,
    /// Every parameter in declaration order (the order of the reference state dict).
    params: Vec<Param>,
}

/// The recurrent state of every layer's mixer, for generation.
pub struct InferenceState {
    pub layers: Vec<MixerState>,
}

/// The model's parameters as declared (`P` = [`Tensor`], or `()` when counting).
struct Parts<P> {
    embedding: P,
    layers: Vec<Block<P>>,
    norm_f: P,
}

/// The whole model's declaration, in the reference's order: `backbone.embedding`, the blocks
/// `backbone.layers.{i}` for i in `layers` (all of them, except when counting), then
/// `backbone.norm_f`. The embedding starts N(0, 0.02²), the norms at 1.
fn declare<B: Backend>(cfg: &MambaConfig, layers: Range<usize>, backend: &mut B) -> Result<Parts<B::Param>> {
    let d = cfg.d_model;
    let vocab = cfg.checked_padded_vocab().ok_or_else(|| overflow(cfg))?;
    let mut root = Vb::root(backend);
    let mut vb = root.pp("backbone");
    let embedding = vb.get("embedding.weight", &[vocab, d], Init::Normal { std: 0.02 }, Decay::Yes)?;
    let mut blocks = vb.pp("layers");
    let layers = layers.map(|i| Block::declare(cfg, i, &mut blocks.pp(i))).collect::<Result<_>>()?;
    let norm_f = vb.get("norm_f.weight", &[d], Init::Ones, Decay::No)?;
    Ok(Parts { embedding, layers, norm_f })
}

/// The parameter count of `cfg` ([`MambaConfig::param_count`]) from [`declare`], allocating no
/// tensor: the embedding and norm_f, plus one block of each kind times the number of layers of
/// that kind (blocks of one kind have the same shapes), so that it costs nothing for any
/// n_layer.
pub(crate) fn count_parameters(cfg: &MambaConfig) -> Result<usize> {
    let mut ends = Count::new();
    declare(cfg, 0..0, &mut ends)?;
    // Layers differ only by being attention or not and having an MoE branch or not: count
    // one block of each kind (n_layer may be huge; the index lists are not).
    let (attn, moe) = (&cfg.attn_layer_idx, &cfg.moe_layer_idx);
    let both: Vec<usize> = attn.iter().copied().filter(|i| moe.contains(i)).collect();
    let special = attn.len() + moe.len() - both.len();
    let plain = (0..cfg.n_layer).find(|i| !attn.contains(i) && !moe.contains(i));
    let only = |a: &[usize], b: &[usize]| a.iter().copied().find(|i| !b.contains(i));
    let kinds = [
        (plain, cfg.n_layer.saturating_sub(special)),
        (only(attn, moe), attn.len() - both.len()),
        (only(moe, attn), moe.len() - both.len()),
        (both.first().copied(), both.len()),
    ];
    let mut total = ends.total;
    for (layer, how_many) in kinds {
        let Some(layer) = layer.filter(|_| how_many > 0) else { continue };
        let mut block = Count::new();
        Block::declare(cfg, layer, &mut Vb::root(&mut block))?;
        total = total.zip(block.total.and_then(|n| n.checked_mul(how_many))).and_then(|(a, b)| a.checked_add(b));
    }
    total.ok_or_else(|| overflow(cfg))
}

/// The names and shapes `cfg` declares, allocating no tensor: the embedding, the blocks in
/// `layers` (`0..0` for none; mind that `n_layer` may be huge) and norm_f.
pub fn declared_shapes(cfg: &MambaConfig, layers: Range<usize>) -> Result<Vec<(String, Vec<usize>)>> {
    let mut shapes = Shapes::default();
    declare(cfg, layers, &mut shapes)?;
    Ok(shapes.specs)
}

/// The training objective of `logits` against `targets`: the mean cross-entropy plus every MoE
/// layer's load-balancing loss.
fn objective_of(logits: &Tensor, targets: &[i64], moe: Vec<MoeStats>) -> Result<Objective> {
    let cross_entropy = logits.cross_entropy(targets, -100)?;
    let mut total = cross_entropy.clone();
    for layer in &moe {
        total = total.add(&layer.aux_loss)?;
    }
    Ok(Objective { total, cross_entropy, moe })
}

/// The error for a configuration whose parameters cannot even be counted.
fn overflow(cfg: &MambaConfig) -> Error {
    let ssm = serde_json::to_string(&cfg.ssm_cfg).unwrap_or_default();
    Error::Unsupported(format!(
        "the parameters' size overflows (d_model {}, n_layer {}, vocab_size {}, d_intermediate {}, ssm_cfg {ssm}): \
         lower them",
        cfg.d_model, cfg.n_layer, cfg.vocab_size, cfg.d_intermediate
    ))
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
        let count = cfg.param_count()?;
        if count.checked_mul(dtype.size()).is_none_or(|b| b > isize::MAX as usize) {
            return Err(overflow(&cfg));
        }
        let mut build = params::fresh(dtype, seed);
        let parts = declare(&cfg, 0..cfg.n_layer, &mut build)?;
        Ok(MambaLM::assemble(cfg, parts, build.params, 64))
    }

    fn assemble(cfg: MambaConfig, parts: Parts<Tensor>, params: Vec<Param>, scan_chunk: usize) -> MambaLM {
        let Parts { embedding, layers, norm_f } = parts;
        MambaLM { cfg, embedding, layers, norm_f, scan_chunk, recompute: false, params }
    }

    /// The same model with its parameters (as fresh leaves) on `device`.
    pub fn to(&self, device: Device) -> Result<MambaLM> {
        let f = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().to(device)?.requires_grad()) };
        let mut build = params::from_params(&self.params, f);
        let parts = declare(&self.cfg, 0..self.cfg.n_layer, &mut build)?;
        let mut model = MambaLM::assemble(self.cfg.clone(), parts, build.params, self.scan_chunk);
        model.recompute = self.recompute;
        Ok(model)
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        self.embedding.device()
    }

    /// ids (batch * len, row-major) -> logits (batch, len, padded vocab)
    pub fn forward(&self, ids: &[usize], batch: usize, len: usize) -> Result<Tensor> {
        Ok(self.forward_moe(ids, batch, len)?.0)
    }

    /// As [`MambaLM::forward`], and the statistics of each MoE layer (none without one).
    pub fn forward_moe(&self, ids: &[usize], batch: usize, len: usize) -> Result<(Tensor, Vec<MoeStats>)> {
        let h = self.embedding.embedding(ids, &[batch, len])?;
        let mut moe = Vec::new();
        let mix = |_, mixer: &Mixer, x: &Tensor| mixer.forward(x, self.scan_chunk, self.recompute);
        let logits = self.through_blocks(h, mix, Some(&mut moe))?;
        Ok((logits, moe))
    }

    /// Mean next-byte cross-entropy of `ids` against `targets` (both batch * len).
    pub fn loss(&self, ids: &[usize], targets: &[i64], batch: usize, len: usize) -> Result<Tensor> {
        Ok(self.forward(ids, batch, len)?.cross_entropy(targets, -100)?)
    }

    /// What training minimises: the cross-entropy plus the MoE layers' load-balancing losses
    /// (the same as [`MambaLM::loss`] without MoE layers).
    pub fn objective(&self, ids: &[usize], targets: &[i64], batch: usize, len: usize) -> Result<Objective> {
        let (logits, moe) = self.forward_moe(ids, batch, len)?;
        objective_of(&logits, targets, moe)
    }

    /// [`MambaLM::objective`] of sequences that continue from `state` (every layer's, from
    /// [`MambaLM::new_state`], [`MambaLM::prefill`] or an earlier call), and the state these
    /// `len` tokens end in: each Mamba-1 mixer's `forward_from`, so the result equals the
    /// objective of the whole sequences' last `len` positions. The returned state is a
    /// differentiable function of the batch, the parameters and `state`; truncated backprop
    /// through time detaches it before the next piece. Every layer must be a Mamba-1 mixer.
    pub fn objective_from(
        &self,
        ids: &[usize],
        targets: &[i64],
        (batch, len): (usize, usize),
        state: &InferenceState,
    ) -> Result<(Objective, InferenceState)> {
        if state.layers.len() != self.layers.len() {
            let (got, want) = (state.layers.len(), self.layers.len());
            return Err(Error::Unsupported(format!("a state of {got} layers cannot continue a model of {want}")));
        }
        let h = self.embedding.embedding(ids, &[batch, len])?;
        let (mut moe, mut next) = (Vec::new(), Vec::with_capacity(self.layers.len()));
        let mix = |i: usize, mixer: &Mixer, x: &Tensor| match (mixer, &state.layers[i]) {
            (Mixer::Mamba1(m), MixerState::Mamba1(s)) => {
                let (y, s) = m.forward_from(x, s, self.scan_chunk, self.recompute)?;
                next.push(MixerState::Mamba1(s));
                Ok(y)
            }
            (m, s) => Err(Error::Unsupported(format!(
                "continuing sequences from a state takes Mamba1 layers only: layer {i} is {} (state {})",
                m.kind(),
                s.kind()
            ))),
        };
        let logits = self.through_blocks(h, mix, Some(&mut moe))?;
        Ok((objective_of(&logits, targets, moe)?, InferenceState { layers: next }))
    }

    /// Zero recurrent states for `batch` sequences.
    pub fn new_state(&self, batch: usize) -> Result<InferenceState> {
        let (dtype, device) = (self.embedding.dtype(), self.device());
        let layers = self.layers.iter().map(|b| b.mixer.new_state(batch, dtype, device)).collect::<Result<_>>()?;
        Ok(InferenceState { layers })
    }

    /// Run `batch` prompts of `len` tokens (ids row-major) through the parallel scans and
    /// return the logits of their last position (batch, padded vocab) and the state from
    /// which [`MambaLM::step`] continues, as if the prompts had been stepped token by token.
    /// No graph is recorded.
    pub fn prefill(&self, ids: &[usize], batch: usize, len: usize) -> Result<(Tensor, InferenceState)> {
        if len == 0 {
            return Err(Error::Unsupported("prefill: a prompt needs at least one token".into()));
        }
        let _guard = no_grad();
        let h = self.embedding.embedding(ids, &[batch, len])?;
        let mut layers = Vec::with_capacity(self.layers.len());
        let prefill = |_, mixer: &Mixer, x: &Tensor| {
            let (y, state) = mixer.prefill(x, self.scan_chunk)?;
            layers.push(state);
            Ok(y)
        };
        let logits = self.through_blocks(h, prefill, None)?;
        let vocab = logits.dim(2)?;
        Ok((logits.narrow(1, len - 1, 1)?.reshape(&[batch, vocab])?, InferenceState { layers }))
    }

    /// Feed one token per sequence; returns logits (batch, padded vocab). No graph is recorded.
    pub fn step(&self, ids: &[usize], state: &mut InferenceState) -> Result<Tensor> {
        let _guard = no_grad();
        let h = self.embedding.embedding(ids, &[ids.len()])?;
        self.through_blocks(h, |i, mixer, x| mixer.step(x, &mut state.layers[i]), None)
    }

    /// The residual loop, for the whole sequence and for one step alike: h (.., d_model)
    /// through every block, `mix(i, mixer, x)` running block i's mixer, then the final norm
    /// and the tied head. `moe`: where MoE layers put their statistics (whole sequences), or
    /// `None` (step mode and prefill: no capacity, see `moe.rs`).
    fn through_blocks(
        &self,
        h: Tensor,
        mix: impl FnMut(usize, &Mixer, &Tensor) -> Result<Tensor>,
        moe: Option<&mut Vec<MoeStats>>,
    ) -> Result<Tensor> {
        let r = crate::block::through_blocks(&self.layers, h, mix, moe)?;
        Ok(r.rms_norm(&self.norm_f, RMS_EPS)?.matmul_autocast(&self.embedding.transpose(0, 1)?)?)
    }

    /// Every parameter in declaration order, with its name and decay flag.
    pub fn parameters(&self) -> &[Param] {
        &self.params
    }

    /// Every parameter under its reference name (the tied head is not repeated).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.iter().map(|p| (p.name.clone(), p.tensor.clone())).collect()
    }

    /// (name, tensor, whether AdamW decays it) for every parameter, as `AdamW::new` takes
    /// them: the decay groups come from the declarations.
    pub fn optimizer_params(&self) -> Vec<(String, Tensor, bool)> {
        self.params.iter().map(|p| (p.name.clone(), p.tensor.clone(), p.decay)).collect()
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
        self.params.iter().map(|p| p.tensor.numel()).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests;
