//! Differentiable ops, one folder per op family (a unit):
//! - `<op>/mod.rs`: the op's arguments, validation, the math as doc comments, and its
//!   forward and backward side by side; the forward hands a kernel struct to `dispatch`;
//! - `<op>/cpu.rs`: the CPU kernel, generic over the element type;
//! - `<op>/cuda.rs`: the GPU arm (behind the `cuda` feature), which launches the CUDA
//!   kernel of the same name in `kernels/cu/<op>.cu`.
//!
//! docs/ARCHITECTURE.md has the recipe for adding one.

pub mod case;

/// Every op unit, listed once: the modules, and the registries built from each unit's
/// `OPS` (the differentiable op names it records) and `cases()` (its gradient checks).
macro_rules! units {
    ($($unit:ident),* $(,)?) => {
        $(pub mod $unit;)*

        /// The unit names; a unit with a GPU arm has its kernels in `kernels/cu/<unit>.cu`.
        pub const UNITS: &[&str] = &[$(stringify!($unit)),*];

        /// Every differentiable op name, unit by unit. `autograd::record` refuses other
        /// names (in debug builds), and the gradient-check test fails for a name no case
        /// exercises, so no op can ship without a gradient check.
        pub fn names() -> &'static [&'static str] {
            static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
            NAMES.get_or_init(|| [$($unit::OPS),*].concat())
        }

        /// Every unit's gradient-check cases, unit by unit.
        pub fn cases() -> Vec<case::Case> {
            [$($unit::cases()),*].into_iter().flatten().collect()
        }
    };
}

units!(
    adamw,
    attention,
    checkpoint,
    conv,
    copy,
    decode,
    elementwise,
    embedding,
    flip,
    matmul,
    norm,
    reduce,
    scan,
    shape,
    softmax,
    ssd
);

use crate::{Error, Result, Tensor};

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
