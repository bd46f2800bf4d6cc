//! What every CPU kernel shares: when to go parallel and which SIMD the machine has.
//! The kernels themselves live with their ops (`ops/<op>/cpu.rs`): each works on flat
//! slices plus a [`Layout`](crate::shape::Layout), returns fresh contiguous `Vec`s (except
//! `adamw`, an optimizer update in place) and knows nothing of autograd or devices.

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
