//! The GPU arm of log-softmax and cross-entropy (kernels/cu/softmax.cu).
pub(super) use crate::cuda::ops::{
    cross_entropy_backward, cross_entropy_forward, log_softmax_backward, log_softmax_forward,
};
