//! The GPU arm of the elementwise ops: `unary_f32`, `binary_f32` and their strided
//! versions (kernels/cu/elementwise.cu).
pub(super) use crate::cuda::ops::{binary, unary};
