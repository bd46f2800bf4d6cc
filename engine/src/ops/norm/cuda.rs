//! The GPU arm of RMSNorm: launches `rms_norm_forward_f32` / `rms_norm_backward_f32` (kernels/cu/norm.cu).
pub(super) use crate::cuda::ops::{rms_norm_backward, rms_norm_forward};
