//! The precision of f32 products on the GPU's tensor cores, one switch for the process (as
//! PyTorch's `allow_tf32`). Off (the default): kernels that multiply f32 on tensor cores do it
//! at f32 accuracy with three tf32 passes (3xTF32: a = hi + lo, a b ~ hi hi + hi lo + lo hi).
//! On: one tf32 pass (10-bit mantissas in, f32 accumulation, ~1e-3 relative error), which is
//! what the reference's Triton kernels do with f32 inputs. Today the SSD scan reads it; the CPU
//! always computes in full f32.

use std::sync::atomic::{AtomicBool, Ordering};

static TF32: AtomicBool = AtomicBool::new(false);

/// Run f32 tensor-core products in one tf32 pass (`true`) or at f32 accuracy (`false`).
pub fn set_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
}

/// Whether f32 tensor-core products run in one tf32 pass.
pub fn tf32() -> bool {
    TF32.load(Ordering::Relaxed)
}
