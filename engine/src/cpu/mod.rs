//! CPU kernels. Each works on a flat slice plus a [`Layout`](crate::shape::Layout)
//! and returns a fresh contiguous `Vec`; none knows about autograd. The CUDA kernels
//! (kernels/*.cu) carry the same names, and tests tie each pair together.

pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod scan;
pub mod softmax;

/// Below this many elements a kernel stays on one thread: rayon's fork/join costs more.
pub(crate) const PAR_MIN: usize = 1 << 15;
