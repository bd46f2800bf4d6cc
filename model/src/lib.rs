//! # mamba-model
//!
//! Models on top of the engine: the Mamba language model (`mamba.rs`, the reference
//! `MambaLMHeadModel`), its configuration (`config.rs`, serialised like the reference
//! `config.json`) and safetensors reading/writing (`io.rs`).

pub mod config;
pub mod io;
pub mod mamba;

pub use config::{MambaConfig, SsmConfig};
pub use mamba::{InferenceState, MambaLM};
