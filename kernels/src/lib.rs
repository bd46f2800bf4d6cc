//! # mamba-kernels
//!
//! The CUDA kernels (`kernels/cu/*.cu`), the build step that compiles them to PTX for
//! sm_90 (`build.rs`, with the `cuda` feature), and their typed launchers (`launch.rs`).
//! Each kernel is named like its CPU twin in `mamba-engine/src/cpu`; the GPU check binary
//! (`tests/gpu_check.rs`) ties each pair together on random inputs. docs/GPU.md says how
//! to build here (no GPU) and run on the lent H100.
//!
//! Without the `cuda` feature this crate is empty, and nothing needs CUDA.

#[cfg(feature = "cuda")]
pub mod ptx {
    //! The PTX of every kernel file, embedded at build time.
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

#[cfg(feature = "cuda")]
pub mod launch;

/// The CUDA driver API wrapper, re-exported so callers use the same version.
#[cfg(feature = "cuda")]
pub use cust;
