//! # mamba-model
//!
//! Models on top of the engine, as a family: the language model (`lm.rs`, the reference
//! `MambaLMHeadModel`) is an embedding, blocks (`block.rs`: a norm and a [`Mixer`], and a
//! gated MLP (`mlp.rs`) when `d_intermediate > 0`), a final norm and the tied head. The mixer
//! is one of the kinds under `mixer/` (Mamba-1 and Mamba-2). Every module declares its
//! parameters once under their reference names (`params.rs`); initialisation, the parameter
//! count, safetensors loading and saving, and the optimizer's decay groups all read those
//! declarations.
//!
//! Generation runs token by token through `decode.rs` (fused kernels, a CUDA graph on the
//! GPU) where the model allows, else through `MambaLM::step`.
//!
//! Also: the configuration (`config.rs`, read and written like the reference `config.json`),
//! safetensors reading/writing (`io.rs`) and the crate's one error type (`error.rs`).

pub mod block;
pub mod config;
pub mod decode;
pub mod error;
pub mod io;
pub mod lm;
pub mod mixer;
pub mod mlp;
pub mod moe;
pub mod params;
pub mod vision;

pub use config::{Arch, AttnConfig, Mamba1Config, Mamba2Config, MambaConfig, MoeConfig, SsmConfig, SsmKind};
pub use decode::{Decoder, Launch};
pub use error::{Error, Result};
pub use lm::{InferenceState, MambaLM, Objective};
pub use mixer::{Mixer, MixerState};
pub use moe::MoeStats;
pub use vision::{VisionConfig, VisionMamba};

use mamba_engine::Tensor;

/// RMSNorm epsilon of the reference.
pub const RMS_EPS: f64 = 1e-5;

/// y = x W^T for a weight stored (out, in), as `nn.Linear` without bias: x (.., in) -> (.., out).
/// Every projection of the model multiplies through [`Tensor::matmul_autocast`]: f32, or in
/// bf16 with f32 sums and result while `mamba_engine::precision::set_matmul_bf16` is on.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul_autocast(&w.transpose(0, 1)?)?)
}

/// A projection's output that a mixer keeps for backward (under `--recompute`, what its
/// `checkpoint` holds): rounded to bf16 while `precision::matmul_bf16` is on, as the reference's
/// autocast returns it, which halves those bytes; as is otherwise. The mixer reads it through
/// [`widened`].
pub fn kept(x: Tensor) -> Result<Tensor> {
    if mamba_engine::precision::matmul_bf16() && x.dtype() == mamba_engine::DType::F32 {
        return Ok(x.to_dtype(mamba_engine::DType::BF16)?);
    }
    Ok(x)
}

/// `x` in f32 where it is bf16 (a [`kept`] output), else `x` itself.
pub fn widened(x: &Tensor) -> mamba_engine::Result<Tensor> {
    if x.dtype() == mamba_engine::DType::BF16 {
        return x.to_dtype(mamba_engine::DType::F32);
    }
    Ok(x.clone())
}
