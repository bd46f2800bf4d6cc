//! The whole token in one kernel on the GPU (`decode_token_f32`, `decode_token_bf16`,
//! kernels/cu/decode_token.cu): what [`decode_mamba1`] for every layer (the first one starting
//! from the embedding) and [`decode_head`] do in 1 + 3 L or 1 + 4 L launches, in one persistent
//! launch with grid barriers between the layers' phases. Its CPU twin, [`decode_token`], is
//! those ops in sequence.
//!
//! A [`TokenKernel`] is made once per decoder (it fixes the split of the work and holds every
//! tensor whose address the GPU plan uses, so that the addresses stay valid), then
//! [`TokenKernel::run`] queues one token: ids in, logits out.
//!
//! Weights: all f32, or (`decode_token_bf16`) in_proj, x_proj, out_proj and the embedding in
//! bf16 with everything else f32; the sums are f32 either way.

use super::{decode_head, decode_mamba1, Dims, Embed, Mamba1Buffers, Mamba1Weights};
use crate::{
    dtype::DType,
    error::{invalid, Result},
    Device, Tensor,
};

/// A model's weights as the token reads them.
pub struct TokenWeights<'a> {
    pub layers: Vec<Mamba1Weights<'a>>,
    pub embedding: &'a Tensor, // (V, M)
    pub norm_f: &'a Tensor,    // (M)
}

/// What a token writes: the residual stream (B, M), the ids it reads (B, as floats), the
/// logits (B, V) and every layer's states and scratch (the kernel uses layer 0's xc, z, y as
/// its scratch for all layers).
pub struct TokenIo<'a> {
    pub residual: &'a Tensor,
    pub ids: &'a Tensor,
    pub logits: &'a Tensor,
    pub layers: &'a [Mamba1Buffers],
}

/// The twin of `decode_token_*`: embedding, every layer, head, through the fused ops' twins
/// (or, for tensors on the GPU, their three- or four-kernel layers, the first starting from
/// the embedding).
pub fn decode_token(dims: Dims, w: &TokenWeights<'_>, io: &TokenIo<'_>, eps: f64) -> Result<()> {
    if w.layers.len() != io.layers.len() || w.layers.is_empty() {
        return invalid(super::OP, format!("{} layers of weights for {} of buffers", w.layers.len(), io.layers.len()));
    }
    let mut embed = Some(Embed { embedding: w.embedding, ids: io.ids });
    for (lw, bufs) in w.layers.iter().zip(io.layers) {
        decode_mamba1(dims, io.residual, embed.take(), lw, bufs, eps)?;
    }
    decode_head(io.logits, io.residual, w.norm_f, w.embedding, eps)
}

/// One token in one launch (GPU), fixed for a decoder's buffers.
pub struct TokenKernel {
    #[cfg(feature = "cuda")]
    plan: mamba_kernels::launch::TokenPlan,
    /// Every tensor the plan holds the address of, kept alive with it.
    _keep: Vec<Tensor>,
}

impl TokenKernel {
    /// Why the one-kernel token cannot run a model of `dims` with a `vocab`-row head (weights in
    /// bf16 or not) on `device`, if it cannot (then the four-kernel layers do).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn unsupported(dims: Dims, vocab: usize, bf16: bool, device: Device) -> Option<String> {
        match device {
            Device::Cpu => Some("the one-kernel token runs on the GPU".into()),
            #[cfg(feature = "cuda")]
            Device::Cuda => match crate::cuda::gpu(super::OP) {
                Ok(g) => g.token_layout(dims, vocab, bf16).err(),
                Err(e) => Some(e.to_string()),
            },
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Some("built without the `cuda` feature".into()),
        }
    }

    /// The plan for `w` and `io` (on the GPU, contiguous; the weights as the module docs say).
    pub fn new(dims: Dims, w: &TokenWeights<'_>, io: &TokenIo<'_>, eps: f64) -> Result<TokenKernel> {
        let bf16 = w.embedding.dtype() == DType::BF16;
        let vocab = w.embedding.numel() / dims.m.max(1);
        if let Some(why) = Self::unsupported(dims, vocab, bf16, io.residual.device()) {
            return invalid(super::OP, format!("the one-kernel token: {why}"));
        }
        if w.layers.len() != io.layers.len() || w.layers.is_empty() {
            return invalid(super::OP, format!("{} layers of weights for {} of buffers", w.layers.len(), io.layers.len()));
        }
        let wide = if bf16 { DType::BF16 } else { DType::F32 };
        let mut keep = Vec::new();
        let mut want = |t: &Tensor, n: usize, dtype: DType, what: &str| -> Result<()> {
            if t.numel() != n || !t.is_contiguous() || t.dtype() != dtype || t.device() != Device::Cuda {
                let why = format!("{what}: expected {n} contiguous {dtype} elements on the GPU, got {t:?}");
                return invalid(super::OP, why);
            }
            keep.push(t.clone());
            Ok(())
        };
        let Dims { batch, m, d, d_state: n, dt_rank: r, d_conv: k } = dims;
        want(w.embedding, vocab * m, wide, "embedding")?;
        want(w.norm_f, m, DType::F32, "norm_f")?;
        for (i, l) in w.layers.iter().enumerate() {
            for (t, len, dtype, name) in [
                (l.in_proj, 2 * d * m, wide, "in_proj"),
                (l.x_proj, dims.xdim() * d, wide, "x_proj"),
                (l.out_proj, m * d, wide, "out_proj"),
                (l.norm, m, DType::F32, "norm"),
                (l.conv_w, d * k, DType::F32, "conv_w"),
                (l.conv_b, d, DType::F32, "conv_b"),
                (l.dt_w, d * r, DType::F32, "dt_w"),
                (l.dt_b, d, DType::F32, "dt_b"),
                (l.a, d * n, DType::F32, "a"),
                (l.d_skip, d, DType::F32, "d_skip"),
            ] {
                want(t, len, dtype, &format!("layer {i}'s {name}"))?;
            }
        }
        let f32 = DType::F32;
        for (i, b) in io.layers.iter().enumerate() {
            want(&b.conv_state, batch * d * k, f32, &format!("layer {i}'s conv state"))?;
            want(&b.ssm_state, batch * d * n, f32, &format!("layer {i}'s ssm state"))?;
        }
        let b0 = &io.layers[0];
        for (t, len, name) in [
            (io.residual, batch * m, "residual"),
            (io.ids, batch, "ids"),
            (io.logits, batch * vocab, "logits"),
            (&b0.xc, batch * d, "xc"),
            (&b0.z, batch * d, "z"),
            (&b0.y, batch * d, "y"),
        ] {
            want(t, len, f32, name)?;
        }
        Self::plan(dims, vocab, bf16, w, io, eps, keep)
    }

    #[cfg(feature = "cuda")]
    fn plan(dims: Dims, vocab: usize, bf16: bool, w: &TokenWeights<'_>, io: &TokenIo<'_>, eps: f64, keep: Vec<Tensor>) -> Result<TokenKernel> {
        use mamba_kernels::launch::{TokenBuffers, TokenLayer};
        let layers = w
            .layers
            .iter()
            .zip(io.layers)
            .map(|(l, b)| {
                Ok(TokenLayer {
                    in_proj: address(l.in_proj)?,
                    x_proj: address(l.x_proj)?,
                    out_proj: address(l.out_proj)?,
                    norm_w: address(l.norm)?,
                    conv_w: address(l.conv_w)?,
                    conv_b: address(l.conv_b)?,
                    dt_w: address(l.dt_w)?,
                    dt_b: address(l.dt_b)?,
                    a: address(l.a)?,
                    d_skip: address(l.d_skip)?,
                    conv_state: address(&b.conv_state)?,
                    ssm_state: address(&b.ssm_state)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let b0 = &io.layers[0];
        let bufs = TokenBuffers {
            residual: address(io.residual)?,
            xc: address(&b0.xc)?,
            z: address(&b0.z)?,
            y: address(&b0.y)?,
            logits: address(io.logits)?,
            ids: address(io.ids)?,
            embedding: address(w.embedding)?,
            norm_f: address(w.norm_f)?,
        };
        let gpu = crate::cuda::gpu(super::OP)?;
        let plan = gpu
            .decode_token_plan(dims, vocab, bf16, &layers, bufs, eps as f32)
            .map_err(crate::cuda::err(super::OP))?;
        Ok(TokenKernel { plan, _keep: keep })
    }

    #[cfg(not(feature = "cuda"))]
    fn plan(_: Dims, _: usize, _: bool, _: &TokenWeights<'_>, _: &TokenIo<'_>, _: f64, _: Vec<Tensor>) -> Result<TokenKernel> {
        Err(crate::dispatch::no_cuda(super::OP))
    }

    /// Queue one token: the ids in the `ids` tensor given to [`new`](Self::new) become logits in
    /// its `logits`, the states move on by one.
    pub fn run(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        return crate::cuda::args::run(super::OP, |g| g.decode_token(&self.plan));
        #[cfg(not(feature = "cuda"))]
        Err(crate::dispatch::no_cuda(super::OP))
    }
}

/// The device address of contiguous `t`'s first element (checked by `TokenKernel::new`).
#[cfg(feature = "cuda")]
fn address(t: &Tensor) -> Result<u64> {
    let s = t.read();
    let data = s.as_cuda(super::OP)?;
    Ok(data.bytes(super::OP, t.layout.offset, t.numel())?.as_device_ptr().as_raw())
}
