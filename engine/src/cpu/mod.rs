//! CPU kernels. Each works on a flat slice plus a [`Layout`](crate::shape::Layout)
//! and returns a fresh contiguous `Vec` (except `adamw`, an optimizer update in place);
//! none knows about autograd. The CUDA kernels (kernels/*.cu) carry the same names, and
//! tests tie each pair together.

pub mod adamw;
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

/// Whether this CPU runs AVX2+FMA code (std caches the detection). Kernels compile a
/// second copy of their hot loop with `#[target_feature(enable = "avx2,fma")]` and pick
/// it at run time, so the binary still runs on any x86-64.
pub(crate) fn avx2_fma() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    false
}
