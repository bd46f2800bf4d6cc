//! # mamba-kernels
//!
//! The CUDA kernels (`kernels/cu/*.cu`), the build step that compiles them to PTX for
//! sm_90 (`build.rs`, with the `cuda` feature), the op codes they share with Rust
//! ([`codes`]), and their typed launchers (`src/launch/`, one file per kernel file). Every
//! kernel takes one parameter struct by value, declared in its launcher file and mirrored
//! field for field in the .cu. Each kernel file belongs to one op unit of the engine and
//! each kernel is named like its CPU twin in `engine/src/ops/<op>/cpu.rs`; the GPU check
//! binary (`tests/gpu_check/`) ties each pair together on random inputs. docs/GPU.md says how to build here (no
//! GPU) and run on the lent GPU machine.
//!
//! Without the `cuda` feature this crate holds only [`codes`] and [`shapes`], and nothing
//! needs CUDA.

/// Op codes of the elementwise and reduce kernels: one definition, also compiled into
/// the kernels as the generated header `codes.cuh` (see build.rs).
pub mod codes {
    include!("codes.rs");
}

pub mod shapes;

#[cfg(feature = "cuda")]
pub mod ptx {
    //! The PTX of every kernel file, embedded at build time.
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

#[cfg(feature = "cuda")]
mod error;
#[cfg(feature = "cuda")]
pub use error::{Error, Result};

#[cfg(feature = "cuda")]
pub mod launch;

/// The CUDA driver API wrapper, re-exported so callers use the same version.
#[cfg(feature = "cuda")]
pub use cust;

#[cfg(test)]
mod tests {
    use super::codes::{cuda_header, BinaryOp, ReduceOp, UnaryOp};

    #[test]
    fn codes_header_matches_the_enums() {
        let h = cuda_header();
        assert!(h.contains("enum UnaryOp : int { NEG = 0, EXP = 1,"), "{h}");
        assert!(h.contains(" POWF = 9, AFFINE = 10, };"), "{h}");
        assert!(h.contains("enum BinaryOp : int { ADD = 0, SUB = 1, MUL = 2, DIV = 3, EQ = 4, };"), "{h}");
        assert!(h.contains("enum ReduceOp : int { SUM = 0, MAX = 1, };"), "{h}");
        // codes are their position: the CPU twins' enums list the ops in the same order
        assert!(UnaryOp::ALL.iter().enumerate().all(|(i, &op)| op as usize == i));
        assert!(BinaryOp::ALL.iter().enumerate().all(|(i, &op)| op as usize == i));
        assert!(ReduceOp::ALL.iter().enumerate().all(|(i, &op)| op as usize == i));
    }
}
