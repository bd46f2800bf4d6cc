//! Differentiable ops, one folder per op family (a unit):
//! - `<op>/mod.rs`: the op's arguments, validation, the math as doc comments, and its
//!   forward and backward side by side; the forward hands a kernel struct to `dispatch`;
//! - `<op>/cpu.rs`: the CPU kernel, generic over the element type;
//! - `<op>/cuda.rs`: the GPU arm (behind the `cuda` feature), which launches the CUDA
//!   kernel of the same name in `kernels/cu/<op>.cu`.
//!
//! docs/ARCHITECTURE.md has the recipe for adding one.

pub mod adamw;
pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod scan;
pub mod shape;
pub mod softmax;

use crate::{Error, Result, Tensor};

/// Every op name that records a backward node. `autograd::record` refuses names not
/// listed here (in debug builds), and the test suite fails for any name without a
/// finite-difference gradient check, so no op can ship without one.
#[rustfmt::skip]
pub const OPS: &[&str] = &[
    // elementwise
    "add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "rsqrt", "powf", "sigmoid", "silu", "softplus", "tanh",
    "affine",
    // matmul and reductions
    "matmul", "sum", "max",
    // shape
    "reshape", "permute", "narrow", "broadcast", "copy", "concat", "to_dtype",
    // fused layers
    "embedding", "log_softmax", "cross_entropy", "rms_norm", "conv1d_causal",
    // Mamba
    "selective_scan",
];

/// Both operands on one device with one dtype, or an error naming `op`.
pub(crate) fn check_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch { op, lhs: a.device(), rhs: b.device() });
    }
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}
