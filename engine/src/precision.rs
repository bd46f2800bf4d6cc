//! Precision switches for the products of the model.
//!
//! **tf32** (one switch for the process, as PyTorch's `allow_tf32`): the precision of f32
//! products on the GPU's tensor cores. Off (the default): kernels that multiply f32 on tensor
//! cores do it at f32 accuracy with three tf32 passes (3xTF32: a = hi + lo, a b ~ hi hi + hi lo +
//! lo hi). On: one tf32 pass (10-bit mantissas in, f32 accumulation, ~1e-3 relative error),
//! which is what the reference's Triton kernels do with f32 inputs. Today the SSD scan reads it;
//! the CPU always computes in full f32.
//!
//! **matmul_bf16** (per thread, as PyTorch's autocast): whether the model's linear layers
//! multiply in bf16. [`Tensor::matmul_autocast`](crate::Tensor::matmul_autocast), which every
//! projection of the model calls, reads it: on, and both operands f32, it runs
//! [`Tensor::matmul_bf16`](crate::Tensor::matmul_bf16) (operands rounded to bf16, products summed
//! in f32, an f32 result: the GPU's bf16 tensor-core GEMM; the CPU makes the same roundings);
//! off (the default), the f32 `matmul`. f64 products never change (gradient checks and the
//! reference tests run in f64). It is per thread rather than per process so that tests training
//! in parallel threads of one process do not see each other's setting; the trainer sets it on the
//! thread that runs the model (each rank thread of `--ranks` in threads sets its own).
//!
//! **f32_gemm_tensor_cores** (process-wide, default on; `MAMBA_F32_GEMM=cuda-cores` in the
//! environment turns it off at start): whether the GPU's f32 matmul runs on the tensor cores
//! (kernels/cu/matmul_tf32.cu: 3xTF32 at f32 accuracy, or one pass under tf32) where it can read
//! the operands in place, rather than on the CUDA cores (kernels/cu/matmul.cu). A switch so that
//! the two can be measured against each other in one build.
//!
//! **scan_bf16** (per thread, as matmul_bf16; default off, or on where `MAMBA_SCAN=bf16` is in
//! the environment at start): while matmul_bf16 is on, the model's selective scans take u, delta and z in bf16 (the
//! scan keeps its state and sums in f32; `ops::scan`'s doc), as the reference's autocast hands
//! its scan the bf16 outputs of its bf16 GEMMs. It halves what the scan keeps for backward
//! (d_model 768 x 24, batch 8 x 2048: a 17.0 GiB peak instead of 20.4) but costs time while the
//! scan's inputs come from f32 ops and must be cast (-3% tokens/s, -8% with `--recompute`, on
//! the H200, docs/PERF.md): an option for memory until they come in bf16.
//!
//! The tf32 and matmul_bf16 switches are independent: tf32 concerns f32 products made on tensor cores (the SSD scan's),
//! which stay f32 products under matmul_bf16; matmul_bf16 concerns the linear layers, which
//! under it no longer multiply f32 at all.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

static TF32: AtomicBool = AtomicBool::new(false);
static SCAN_BF16_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
static F32_GEMM_CUDA_CORES: std::sync::OnceLock<AtomicBool> = std::sync::OnceLock::new();

fn f32_gemm_cuda_cores_flag() -> &'static AtomicBool {
    F32_GEMM_CUDA_CORES
        .get_or_init(|| AtomicBool::new(std::env::var("MAMBA_F32_GEMM").is_ok_and(|v| v == "cuda-cores")))
}

/// Run the GPU's f32 matmul on the tensor cores where it can (`true`, the default) or always on
/// the CUDA cores (`false`).
pub fn set_f32_gemm_tensor_cores(on: bool) {
    f32_gemm_cuda_cores_flag().store(!on, Ordering::Relaxed);
}

/// Whether the GPU's f32 matmul runs on the tensor cores where it can.
pub fn f32_gemm_tensor_cores() -> bool {
    !f32_gemm_cuda_cores_flag().load(Ordering::Relaxed)
}

thread_local! {
    static MATMUL_BF16: Cell<bool> = const { Cell::new(false) };
    static SCAN_BF16: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Run f32 tensor-core products in one tf32 pass (`true`) or at f32 accuracy (`false`).
pub fn set_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
}

/// Whether f32 tensor-core products run in one tf32 pass.
pub fn tf32() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// On this thread, make the model's f32 linear layers multiply in bf16 (`true`) or in f32
/// (`false`, the default); see the module's doc.
pub fn set_matmul_bf16(on: bool) {
    MATMUL_BF16.with(|c| c.set(on));
}

/// Whether, on this thread, the model's f32 linear layers multiply in bf16.
pub fn matmul_bf16() -> bool {
    MATMUL_BF16.with(Cell::get)
}

/// On this thread, make the model's selective scans take u, delta, z in bf16 while
/// matmul_bf16 is on (`true`) or keep them f32 (`false`); unset, `MAMBA_SCAN=bf16` decides.
pub fn set_scan_bf16(on: bool) {
    SCAN_BF16.with(|c| c.set(Some(on)));
}

/// Whether, on this thread, the model's selective scans take u, delta, z in bf16 (see the
/// module's doc).
pub fn scan_bf16() -> bool {
    let env = || *SCAN_BF16_ENV.get_or_init(|| std::env::var("MAMBA_SCAN").is_ok_and(|v| v == "bf16"));
    matmul_bf16() && SCAN_BF16.with(Cell::get).unwrap_or_else(env)
}
