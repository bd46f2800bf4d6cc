//! The GPU arm of the embedding: `embedding_forward_f32`, `embedding_backward_f32`
//! (kernels/cu/index.cu).
pub(super) use crate::cuda::ops::{embedding_backward, embedding_forward};
