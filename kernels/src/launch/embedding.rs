//! Launchers of `cu/embedding.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block of the backward kernel (`INDEX_THREADS` in embedding.cu).
const INDEX_THREADS: u32 = 256;

/// The parameter of `embedding_forward_f32` (`struct EmbeddingForwardParams` in cu/embedding.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct EmbeddingForwardParams {
    y: DevicePointer<f32>,
    w: DevicePointer<f32>,
    ids: DevicePointer<i64>,
    n: i32,
    d: i32,
}
const _: () = assert!(std::mem::size_of::<EmbeddingForwardParams>() == 32);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for EmbeddingForwardParams {}

/// The parameter of `embedding_backward_f32` (`struct EmbeddingBackwardParams`).
#[repr(C)]
#[derive(Clone, Copy)]
struct EmbeddingBackwardParams {
    dw: DevicePointer<f32>,
    dy: DevicePointer<f32>,
    ids: DevicePointer<i64>,
    n: i32,
    v: i32,
    d: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<EmbeddingBackwardParams>() == 40);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for EmbeddingBackwardParams {}

impl Gpu {
    /// `y` (n, d): row `ids[i]` of `w` (v, d) for each of the `n` ids — twin of
    /// `ops::embedding::cpu::embedding_forward`. Every id must be in `[0, v)`; the kernel does not check.
    pub fn embedding_forward_f32(
        &self,
        w: &DeviceSlice<f32>,
        ids: &DeviceSlice<i64>,
        y: &mut DeviceSlice<f32>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        const K: &str = "embedding_forward_f32";
        check_len(K, "ids", ids.len(), n)?;
        check_len(K, "y", y.len(), n * d)?;
        ensure(d > 0 && w.len().is_multiple_of(d), K, || format!("w holds {} elements, not rows of d = {d}", w.len()))?;
        let (n32, d32) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
        if n * d == 0 {
            return Ok(());
        }
        let params = EmbeddingForwardParams {
            y: y.as_device_ptr(),
            w: w.as_device_ptr(),
            ids: ids.as_device_ptr(),
            n: n32,
            d: d32,
        };
        // Reads the ids and the gathered rows, writes y; no FLOPs (rows of a small w are
        // L2 hits, so this is an upper bound on DRAM traffic, as in gpu-check's rate).
        self.launch(K, grid_for(n * d), BLOCK, 0, params, Cost { bytes: (8 * n + 8 * n * d) as f64, flops: 0.0 })
    }

    /// `dw` (v, d): zeros plus `dy[i, :]` added into row `ids[i]` for every `i` — twin of
    /// `ops::embedding::cpu::embedding_backward`. Deterministic (no atomics; sums in increasing `i`,
    /// like the CPU twin). Each block scans all `n` ids, so the cost grows as `v * n`: meant
    /// for small vocabularies. Every id must be in `[0, v)`; others are ignored.
    pub fn embedding_backward_f32(
        &self,
        dy: &DeviceSlice<f32>,
        ids: &DeviceSlice<i64>,
        dw: &mut DeviceSlice<f32>,
        n: usize,
        v: usize,
        d: usize,
    ) -> Result<()> {
        const K: &str = "embedding_backward_f32";
        check_len(K, "ids", ids.len(), n)?;
        check_len(K, "dy", dy.len(), n * d)?;
        check_len(K, "dw", dw.len(), v * d)?;
        let (n32, v32, d32) = (to_i32(K, "n", n)?, to_i32(K, "v", v)?, to_i32(K, "d", d)?);
        let col_blocks = d.div_ceil(INDEX_THREADS as usize);
        ensure(col_blocks <= 65535, K, || format!("d = {d} needs more than 65535 column blocks"))?;
        if v * d == 0 {
            return Ok(());
        }
        let params = EmbeddingBackwardParams {
            dw: dw.as_device_ptr(),
            dy: dy.as_device_ptr(),
            ids: ids.as_device_ptr(),
            n: n32,
            v: v32,
            d: d32,
            pad: 0,
        };
        // Reads dy and the ids once from DRAM (each block's rescans of the ids hit L2), writes
        // dw; one add per dy element.
        let cost = Cost { bytes: (4 * n * d + 8 * n + 4 * v * d) as f64, flops: (n * d) as f64 };
        self.launch(K, (v as u32, col_blocks as u32, 1), INDEX_THREADS, 0, params, cost)
    }
}
