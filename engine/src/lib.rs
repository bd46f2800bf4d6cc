//! # mamba-engine
//!
//! A small tensor library with reverse-mode autograd, written to be read.
//!
//! Start with [`Tensor`] (tensor.rs): a strided view onto shared storage. Ops live in
//! `ops/<op>/` — each pairs a forward that hands its kernel to `dispatch.rs` (the one
//! place that picks the CPU or GPU kernel for a device and dtype) with a backward written
//! in tensor ops. `autograd.rs` records the graph and runs backward; `ledger.rs` counts
//! bytes per device and what each op saves for backward; `gradcheck.rs` checks any op's
//! gradient against central finite differences in f64. `cuda/` is the GPU's plumbing
//! (context, allocator, buffers); `cpu.rs` the CPU's (threading threshold, SIMD).

pub mod autograd;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub(crate) mod dispatch;
pub mod dtype;
pub mod error;
pub mod gradcheck;
pub mod ledger;
pub mod ops;
pub mod precision;
pub mod replay;
pub mod rng;
pub mod shape;
pub mod storage;
pub mod tensor;

pub use autograd::{is_grad_enabled, no_grad};
pub use device::Device;
pub use dtype::DType;
pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::Tensor;
