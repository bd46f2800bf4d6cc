//! # mamba-model
//!
//! Layers and models on top of the engine. For now: `Linear` and a small MLP used by
//! the demo; the Mamba block and LM arrive with the selective scan.

pub mod linear;
pub use linear::{Linear, Mlp};
