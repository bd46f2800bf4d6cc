//! Launchers of `cu/reduce.cu`.

use super::{Cost, Gpu, Strided};
use crate::codes::ReduceOp;
use crate::error::{ensure, to_i64, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block (`REDUCE_THREADS` in reduce.cu).
const THREADS: u32 = 256;
/// Doubles in the module's partials buffer (`REDUCE_SCRATCH` in reduce.cu).
const SCRATCH: usize = 1 << 17;
/// Blocks that fill an H100: 132 SMs x 8 resident 256-thread blocks.
const FILL_BLOCKS: usize = 132 * 8;
/// A split block's threads each get at least this many elements, or splitting is not worth it.
const MIN_PER_THREAD: usize = 8;

/// How a reduction is launched: `bx_log` (each block owns 2^bx_log consecutive outputs; 5 =
/// "columns", 0 = "rows", see reduce.cu) and `parts` (blocks sharing each output's inner
/// range; > 1 needs the finishing pass). Depends only on sizes and strides, so a shape always
/// sums in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReducePlan {
    bx_log: u32,
    parts: usize,
}

impl ReducePlan {
    fn new(kept: &Strided, inner: &Strided, n_out: usize, inner_n: usize) -> ReducePlan {
        // Whether a warp of consecutive outputs / consecutive inner elements reads 128
        // contiguous bytes (the merged innermost axis has stride 1 and 32 or more elements).
        let unit_inner =
            |l: &Strided| l.rank > 0 && l.strides[l.rank as usize - 1] == 1 && l.shape[l.rank as usize - 1] >= 32;
        let columns = n_out >= 32 && (unit_inner(kept) || (!unit_inner(inner) && (n_out >= 4096 || inner_n < 32)));
        let bx_log = if columns { 5 } else { 0 };
        let by = THREADS as usize >> bx_log;
        let out_blocks = n_out.div_ceil(1 << bx_log);
        let parts =
            FILL_BLOCKS.div_ceil(out_blocks.max(1)).min(inner_n / (by * MIN_PER_THREAD)).min(SCRATCH / n_out.max(1));
        ReducePlan { bx_log, parts: parts.clamp(1, 65535) }
    }
}

// SAFETY: a `#[repr(i32)]` enum, passed as the C `enum ReduceOp : int` of codes.cuh.
unsafe impl DeviceCopy for ReduceOp {}

/// The parameter of `reduce_f32` (`struct ReduceParams` in cu/reduce.cu): 264 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReduceParams {
    x: DevicePointer<f32>,
    out: DevicePointer<f32>,
    kept: Strided,
    inner: Strided,
    n_out: i64,
    inner_n: i64,
    op: ReduceOp,
    bx_log: i32,
}
const _: () = assert!(std::mem::size_of::<ReduceParams>() == 264);
// SAFETY: device pointers, integers and `Strided`s, laid out as the C struct.
unsafe impl DeviceCopy for ReduceParams {}

/// The parameter of `reduce_finish_f32` (`struct ReduceFinishParams`): 256 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReduceFinishParams {
    out: DevicePointer<f32>,
    kept: Strided,
    inner: Strided,
    n_out: i64,
    parts: i64,
    op: ReduceOp,
    bx_log: i32,
}
const _: () = assert!(std::mem::size_of::<ReduceFinishParams>() == 256);
// SAFETY: a device pointer, integers and `Strided`s, laid out as the C struct.
unsafe impl DeviceCopy for ReduceFinishParams {}

impl Gpu {
    /// `out[o] = reduce_{i < inner_n} x[kept(o) + inner(i)]` — twin of `ops::reduce::cpu::reduce`
    /// (a NaN wins a max). `kept` is the input view with the reduced axes set to size 1
    /// (indexed like the output: `out.len()` elements), `inner` the reduced axes' shapes and
    /// strides (offset 0, `inner_n` elements). Sums accumulate in f64; deterministic. An
    /// empty `inner` gives 0 (sum) or -inf (max).
    pub fn reduce_f32(
        &self,
        op: ReduceOp,
        x: &DeviceSlice<f32>,
        kept: Strided,
        inner: Strided,
        out: &mut DeviceSlice<f32>,
    ) -> Result<()> {
        const K: &str = "reduce_f32";
        let (n_out, inner_n) = (out.len(), inner.numel());
        ensure(kept.numel() == n_out, K, || format!("kept view has {} elements, out {n_out}", kept.numel()))?;
        ensure(inner.offset == 0, K, || format!("inner must have offset 0, has {}", inner.offset))?;
        ensure(n_out == 0 || inner_n == 0 || kept.end() + inner.end() - 1 <= x.len(), K, || {
            format!("the views reach element {} of a buffer of {}", kept.end() + inner.end() - 1, x.len())
        })?;
        let (n_out_i, inner_i) = (to_i64(K, "n_out", n_out)?, to_i64(K, "inner_n", inner_n)?);
        if n_out == 0 {
            return Ok(());
        }
        let plan = ReducePlan::new(&kept, &inner, n_out, inner_n);
        let out_blocks = n_out.div_ceil(1 << plan.bx_log);
        ensure(out_blocks <= i32::MAX as usize, K, || format!("too many outputs ({n_out})"))?;
        let grid = (out_blocks as u32, plan.parts as u32);
        let (x, out_ptr) = (x.as_device_ptr(), out.as_device_ptr());
        let params = ReduceParams {
            x,
            out: out_ptr,
            kept,
            inner,
            n_out: n_out_i,
            inner_n: inner_i,
            op,
            bx_log: plan.bx_log as i32,
        };
        let split = if plan.parts > 1 { 8.0 * (plan.parts * n_out) as f64 } else { 0.0 }; // partials written
        let bytes = 4.0 * (kept.footprint() * inner.footprint() + n_out) as f64 + split;
        self.launch(K, grid, THREADS, 0, params, Cost { bytes, flops: (n_out * inner_n) as f64 })?;
        if plan.parts == 1 {
            return Ok(());
        }
        // The partials (parts, n_out) in reduce.cu's scratch, reduced over parts.
        let pk = Strided::contiguous(n_out, 0);
        let pi = Strided::new(&[plan.parts], &[n_out], 0).expect("rank 1");
        let fin = ReducePlan::new(&pk, &pi, n_out, plan.parts);
        let cost = Cost { bytes: (8 * plan.parts + 4) as f64 * n_out as f64, flops: (plan.parts * n_out) as f64 };
        let grid = n_out.div_ceil(1 << fin.bx_log) as u32;
        let params = ReduceFinishParams {
            out: out_ptr,
            kept: pk,
            inner: pi,
            n_out: n_out_i,
            parts: plan.parts as i64,
            op,
            bx_log: fin.bx_log as i32,
        };
        self.launch("reduce_finish_f32", grid, THREADS, 0, params, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(shape: &[usize], strides: &[usize], axes: &[usize]) -> ReducePlan {
        let kept_shape: Vec<usize> = (0..shape.len()).map(|i| if axes.contains(&i) { 1 } else { shape[i] }).collect();
        let kept = Strided::new(&kept_shape, strides, 0).unwrap();
        let is: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
        let ss: Vec<usize> = axes.iter().map(|&a| strides[a]).collect();
        let inner = Strided::new(&is, &ss, 0).unwrap();
        ReducePlan::new(&kept, &inner, kept.numel(), inner.numel())
    }

    #[test]
    fn plans_follow_the_contiguous_axis() {
        // column sums of (16384, 768) over rows: columns, split to fill the GPU
        let p = plan(&[16384, 768], &[768, 1], &[0]);
        assert_eq!(p.bx_log, 5);
        assert!(p.parts > 1 && p.parts * 768 <= SCRATCH, "{p:?}");
        // row sums of (16384, 768): a block per row, no split
        assert_eq!(plan(&[16384, 768], &[768, 1], &[1]), ReducePlan { bx_log: 0, parts: 1 });
        // everything of 16 Mi: one output, split over about FILL_BLOCKS blocks
        let p = plan(&[4096, 4096], &[4096, 1], &[0, 1]);
        assert_eq!((p.bx_log, p.parts), (0, FILL_BLOCKS));
        // tiny: no split
        assert_eq!(plan(&[3, 5], &[5, 1], &[0, 1]), ReducePlan { bx_log: 0, parts: 1 });
    }
}
