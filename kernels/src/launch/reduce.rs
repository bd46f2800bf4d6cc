//! Launchers of `cu/reduce.cu`.

use super::{Cost, Gpu, Strided};
use cust::error::CudaResult;
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

impl Gpu {
    /// `out[o] = reduce_{i < inner_n} x[kept(o) + inner(i)]` with `op` 0 = sum, 1 = max (a
    /// NaN wins) — twin of `cpu::reduce::reduce`. `kept` is the input view with the reduced
    /// axes set to size 1 (indexed like the output, `n_out` elements), `inner` the reduced
    /// axes' shapes and strides (offset 0, `inner_n` elements). Sums accumulate in f64;
    /// deterministic. An empty `inner` gives 0 (sum) or -inf (max).
    #[allow(clippy::too_many_arguments)]
    pub fn reduce_f32(
        &self,
        op: i32,
        x: &DeviceSlice<f32>,
        kept: Strided,
        inner: Strided,
        out: &mut DeviceSlice<f32>,
        n_out: usize,
        inner_n: usize,
    ) -> CudaResult<()> {
        assert!(op == 0 || op == 1, "reduce_f32: op must be 0 (sum) or 1 (max), got {op}");
        assert!(kept.numel() == n_out && out.len() == n_out, "reduce_f32: kept view, out and n_out differ");
        assert!(
            inner.numel() == inner_n && inner.offset == 0,
            "reduce_f32: inner must have inner_n elements, offset 0"
        );
        assert!(
            n_out == 0 || inner_n == 0 || kept.end() + inner.end() - 1 <= x.len(),
            "reduce_f32: the views reach past the input buffer"
        );
        assert!(n_out <= i64::MAX as usize && inner_n <= i64::MAX as usize, "reduce_f32: too large");
        if n_out == 0 {
            return Ok(());
        }
        let plan = ReducePlan::new(&kept, &inner, n_out, inner_n);
        let out_blocks = n_out.div_ceil(1 << plan.bx_log);
        assert!(out_blocks <= i32::MAX as usize, "reduce_f32: too many outputs");
        let grid = (out_blocks as u32, plan.parts as u32);
        let f = self.function("reduce", "reduce_f32")?;
        let stream = &self.stream;
        let (n_out_i, inner_i, bx_log) = (n_out as i64, inner_n as i64, plan.bx_log as i32);
        {
            let split = if plan.parts > 1 { 8.0 * (plan.parts * n_out) as f64 } else { 0.0 }; // partials written
            let bytes = 4.0 * (kept.footprint() * inner.footprint() + n_out) as f64 + split;
            let _timed = self.timed("reduce_f32", Cost { bytes, flops: (n_out * inner_n) as f64 });
            unsafe {
                launch!(f<<<grid, THREADS, 0, stream>>>(
                    op, x.as_device_ptr(), kept, inner, out.as_device_ptr(), n_out_i, inner_i, bx_log
                ))?;
            }
        }
        if plan.parts == 1 {
            return Ok(());
        }
        // The partials (parts, n_out) in reduce.cu's scratch, reduced over parts.
        let pk = Strided::contiguous(n_out, 0);
        let pi = Strided::new(&[plan.parts], &[n_out], 0).expect("rank 1");
        let fin = ReducePlan::new(&pk, &pi, n_out, plan.parts);
        let f = self.function("reduce", "reduce_finish_f32")?;
        let cost = Cost { bytes: (8 * plan.parts + 4) as f64 * n_out as f64, flops: (plan.parts * n_out) as f64 };
        let _timed = self.timed("reduce_finish_f32", cost);
        let grid = n_out.div_ceil(1 << fin.bx_log) as u32;
        let (parts_i, bx_log) = (plan.parts as i64, fin.bx_log as i32);
        unsafe { launch!(f<<<grid, THREADS, 0, stream>>>(op, pk, pi, out.as_device_ptr(), n_out_i, parts_i, bx_log)) }
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
