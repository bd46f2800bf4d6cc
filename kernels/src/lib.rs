//! # mamba-kernels
//!
//! Home of the CUDA kernels (`kernels/*.cu`), the build step that compiles them to PTX,
//! and their typed launchers. Empty until the CUDA backend lands (behind a `cuda`
//! feature); every CPU twin already lives in `mamba-engine/src/cpu`.
