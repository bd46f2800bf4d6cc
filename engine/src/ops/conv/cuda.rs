//! The GPU arm of the causal conv: `conv1d_causal_forward_f32`, `conv1d_causal_backward_f32`
//! (kernels/cu/conv.cu).
pub(super) use crate::cuda::ops::{conv1d_causal_backward, conv1d_causal_forward};
