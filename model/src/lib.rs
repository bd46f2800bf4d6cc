//! # mamba-model
//!
//! Models on top of the engine: the Mamba language model (`mamba.rs`, the reference
//! `MambaLMHeadModel`), its configuration (`config.rs`, serialised like the reference
//! `config.json`), safetensors reading/writing (`io.rs`) and the crate's one error type
//! (`error.rs`).

pub mod config;
pub mod error;
pub mod io;
pub mod mamba;
pub mod params;

pub use config::{MambaConfig, SsmConfig};
pub use error::{Error, Result};
pub use mamba::{InferenceState, MambaLM};
