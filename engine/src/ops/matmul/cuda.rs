//! The GPU arm of the matmul: `matmul_strided_f32` and its versions (kernels/cu/matmul.cu).
pub(super) use crate::cuda::ops::matmul;
