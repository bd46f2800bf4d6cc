//! The GPU arm of the copies: `copy_strided_f32`, `copy_into_f32` and the casts
//! (kernels/cu/copy.cu).
pub(super) use crate::cuda::ops::{cast, concat, contiguous};
