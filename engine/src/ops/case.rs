//! What a gradient-check case is. Each op unit ends with its own table of cases
//! (`cases! { .. }` in `ops/<op>/mod.rs`): small functions of seeded random f64 inputs
//! that exercise the op, many through non-contiguous views (transposed, permuted,
//! narrowed, broadcast). Two users run every unit's table (`ops::cases()`):
//! - `tests/ops_gradcheck.rs` checks each case's gradient against central differences,
//!   and fails if an op of `ops::names()` is exercised by no case;
//! - the GPU check (`tests/gpu_check/ops.rs`) runs each case on the CPU and on the GPU and
//!   compares values and gradients, and fails if an op never ran on the GPU.

use crate::{error::Error, gradcheck::Tolerance, DType, Result, Rng, Tensor};

/// The default f64 tolerance: central differences with eps 1e-6 are accurate to ~1e-9.
pub const TIGHT: Tolerance = Tolerance { eps: 1e-6, atol: 1e-6, rtol: 1e-5 };
/// For functions that pass through f32: a larger step so rounding (~1e-7) stays small
/// against it, and a tolerance that admits the step's O(eps^2) truncation error.
pub const F32_PATH: Tolerance = Tolerance { eps: 1e-2, atol: 1e-3, rtol: 1e-2 };

pub struct Case {
    pub name: &'static str,
    pub tol: Tolerance,
    /// Ops this case is about: they must appear in the graph of `f`.
    pub exercises: &'static [&'static str],
    pub inputs: fn(&mut Rng) -> Vec<Tensor>,
    pub f: fn(&[Tensor]) -> Result<Tensor>,
}

/// A fixed seed per case, derived from its name (FNV-1a), so adding a case moves no other.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Standard normal f64 values of `shape`.
pub fn rn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, rng)
}

/// Uniform f64 values in [0.5, 2) (for log, sqrt, division).
pub fn pos(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::rand_uniform(shape, 0.5, 2.0, DType::F64, rng)
}

/// Fail inside `f` if a view the case relies on turned out contiguous (the case would
/// then silently stop testing the strided path).
pub fn strided(t: Tensor) -> Result<Tensor> {
    if t.is_contiguous() {
        return Err(Error::Invalid {
            op: "test",
            msg: format!("expected a non-contiguous view, got layout {:?}", t.layout()),
        });
    }
    Ok(t)
}

/// Declares a unit's case table as `pub fn cases() -> Vec<Case>`; the case functions see
/// this module's helpers (`rn`, `pos`, `strided`, `TIGHT`, `F32_PATH`) and the unit's items.
macro_rules! cases {
    ($( $name:ident: tol $tol:expr, exercises [$($op:literal),*], inputs |$rng:ident| $inputs:expr, f |$x:ident| $f:expr; )*) => {
        /// This unit's gradient-check cases (see `ops/case.rs`).
        pub fn cases() -> Vec<$crate::ops::case::Case> {
            #[allow(unused_imports)]
            use $crate::{ops::case::*, DType, Tensor};
            vec![$($crate::ops::case::Case {
                name: stringify!($name), tol: $tol, exercises: &[$($op),*], inputs: |$rng| $inputs, f: |$x| $f,
            }),*]
        }
    };
}
pub(crate) use cases;
