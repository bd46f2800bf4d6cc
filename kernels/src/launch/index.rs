//! Launchers of `cu/index.cu`.

use super::{grid_for, Cost, Gpu, BLOCK};
use cust::error::CudaResult;
use cust::prelude::*;

/// Threads per block of the backward kernel (`INDEX_THREADS` in index.cu).
const INDEX_THREADS: u32 = 256;

impl Gpu {
    /// `y` (n, d): row `ids[i]` of `w` (v, d) for each of the `n` ids — twin of
    /// `cpu::index::embedding_forward`. Every id must be in `[0, v)`; the kernel does not check.
    pub fn embedding_forward_f32(
        &self,
        w: &DeviceSlice<f32>,
        ids: &DeviceSlice<i64>,
        y: &mut DeviceSlice<f32>,
        n: usize,
        d: usize,
    ) -> CudaResult<()> {
        assert!(
            ids.len() == n && y.len() == n * d && d > 0 && w.len().is_multiple_of(d),
            "embedding_forward_f32: buffer sizes do not match (n, d)"
        );
        assert!(n <= i32::MAX as usize && d <= i32::MAX as usize, "embedding_forward_f32: too large");
        if n * d == 0 {
            return Ok(());
        }
        let f = self.function("index", "embedding_forward_f32")?;
        // Reads the ids and the gathered rows, writes y; no FLOPs (rows of a small w are
        // L2 hits, so this is an upper bound on DRAM traffic, as in gpu-check's rate).
        let _timed = self.timed("embedding_forward_f32", Cost { bytes: (8 * n + 8 * n * d) as f64, flops: 0.0 });
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid_for(n * d), BLOCK, 0, stream>>>(
                y.as_device_ptr(), w.as_device_ptr(), ids.as_device_ptr(), n as i32, d as i32
            ))
        }
    }

    /// `dw` (v, d): zeros plus `dy[i, :]` added into row `ids[i]` for every `i` — twin of
    /// `cpu::index::embedding_backward`. Deterministic (no atomics; sums in increasing `i`,
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
    ) -> CudaResult<()> {
        assert!(
            ids.len() == n && dy.len() == n * d && dw.len() == v * d,
            "embedding_backward_f32: buffer sizes do not match (n, v, d)"
        );
        assert!(
            n <= i32::MAX as usize && v <= i32::MAX as usize && d <= i32::MAX as usize,
            "embedding_backward_f32: too large"
        );
        let col_blocks = d.div_ceil(INDEX_THREADS as usize);
        assert!(col_blocks <= 65535, "embedding_backward_f32: d too large");
        if v * d == 0 {
            return Ok(());
        }
        let f = self.function("index", "embedding_backward_f32")?;
        // Reads dy and the ids once from DRAM (each block's rescans of the ids hit L2), writes
        // dw; one add per dy element.
        let cost = Cost { bytes: (4 * n * d + 8 * n + 4 * v * d) as f64, flops: (n * d) as f64 };
        let _timed = self.timed("embedding_backward_f32", cost);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<(v as u32, col_blocks as u32, 1), INDEX_THREADS, 0, stream>>>(
                dw.as_device_ptr(), dy.as_device_ptr(), ids.as_device_ptr(), n as i32, v as i32, d as i32
            ))
        }
    }
}
