//! # mamba-model
//!
//! Layers and models on top of the engine: the Mamba language model (`mamba.rs`,
//! the reference `MambaLMHeadModel`), its configuration (`config.rs`), and `Linear`
//! plus the small demo `Mlp` (`linear.rs`).

pub mod config;
pub mod io;
pub mod linear;
pub mod mamba;

pub use config::{MambaConfig, SsmConfig};
pub use linear::{Linear, Mlp};
pub use mamba::{InferenceState, MambaLM};
