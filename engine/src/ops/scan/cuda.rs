//! The GPU arm of the selective scan: `selective_scan_forward_f32`,
//! `selective_scan_backward_f32` (kernels/cu/scan.cu).
pub(super) use crate::cuda::ops::{scan_backward, scan_forward};
