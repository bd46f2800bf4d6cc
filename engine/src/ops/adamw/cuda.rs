//! The GPU arm of the AdamW step: `adamw_step_f32` (kernels/cu/adamw.cu).
pub(super) use crate::cuda::ops::adamw_step;
