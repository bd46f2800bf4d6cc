//! The GPU arm of the reductions: `reduce_f32` (kernels/cu/reduce.cu).
pub(super) use crate::cuda::ops::reduce;
