//! Batched matrix multiplication on the CPU (GEMM), written from scratch.
//!
//! `out[b] = a[b] · bm[b]` for `b < batch`, with `a[b]: (m, k)`, `bm[b]: (k, n)` and
//! `out[b]: (m, n)`. The operands may be any strided views (row-major, transposed,
//! broadcast over the batch); `out` is contiguous.
//!
//! # Why not the triple loop?
//!
//! The naive `for i { for j { for p { c[i][j] += a[i][p] * b[p][j] } } }` does 2·m·n·k
//! flops but is limited by memory, not arithmetic: every multiply-add loads two values,
//! and for large matrices those loads miss the caches. A core can do two 8-wide fused
//! multiply-adds (FMA) per cycle, i.e. 32 f32 flops, but only a few loads. The fix
//! (GotoBLAS / BLIS) is to arrange the work so that each value loaded into a register
//! is used many times, and each value brought into a cache is used many times before
//! it is evicted.
//!
//! # The blocking hierarchy (outermost to innermost)
//!
//! ```text
//! for jc in 0..n step NC          // B̃ = B[pc.., jc..]: (KC, NC) block, lives in L3
//!   for pc in 0..k step KC        //   packed once per (jc, pc), shared by all threads
//!     for ic in 0..m step MC      // Ã = A[ic.., pc..]: (MC, KC) block, lives in L2
//!       (parallel tasks)          //   packed by the task that uses it
//!       for jr in 0..NC step NR   // one (KC, NR) micro-panel of B̃, hot in L1
//!         for ir in 0..MC step MR // one (MR, KC) micro-panel of Ã
//!           micro-kernel: C[ir.., jr..] (MR, NR) += Ã_panel · B̃_panel   (rank-KC update)
//! ```
//!
//! * **Packing.** Ã and B̃ are copied into contiguous buffers in exactly the order the
//!   micro-kernel reads them: Ã as MR-row micro-panels stored column by column (`[p][i]`,
//!   shape (KC, MR)), B̃ as NR-column micro-panels stored row by row (`[p][j]`, shape
//!   (KC, NR)). The micro-kernel then streams both with unit stride whatever the strides
//!   of the original views (so transposed inputs need no separate code path). Edges are
//!   zero-padded up to MR/NR, so the micro-kernel always computes a full tile and only
//!   the valid part is stored. The copy is O(m·k + k·n) against O(m·n·k) arithmetic.
//! * **Micro-kernel.** An MR×NR tile of C is accumulated in registers (a plain
//!   `[[T; NR]; MR]` array that LLVM keeps in vector registers). For each of the KC
//!   steps it loads one row of NR values of B̃ (two 8-wide vectors for f32), broadcasts
//!   each of the MR values of Ã and does MR·NR/8 vector FMAs: with MR=6, NR=16 that is
//!   12 FMAs per 2 loads + 6 broadcasts, and 12 of the 16 ymm registers hold the
//!   accumulators. C itself is read and written once per KC steps.
//! * **Cache sizes** (f32: MR=6, NR=16, KC=512, MC<=72, NC=4080). A B̃ micro-panel
//!   (KC·NR = 32 KiB) is reused by all MC/MR micro-panels of Ã from L1/L2; Ã (MC·KC =
//!   144 KiB) stays in L2 while it meets every micro-panel of B̃; B̃ (KC·NC, at most
//!   8 MiB) sits in L3. KC=512 and MC=72 won over 256/384 and 48..192 when measured on
//!   the benchmark machine (a larger KC also means fewer passes over C).
//!
//! # Threads, SIMD and the special cases
//!
//! The (MC rows × column chunk) tiles of C in one `(jc, pc)` step are independent rayon
//! tasks (each packs its own Ã; B̃ is packed once, in parallel, and shared read-only).
//! A batch of many small matrices is instead spread over the threads one whole matrix
//! per task. Each thread keeps its packing buffers between calls (`take_spare`). A
//! matrix-vector product (m == 1 or n == 1) only reads each element of the
//! matrix once, so packing would just double the memory traffic: it streams the matrix
//! in place instead (`gemv`). The micro-kernel is generic code; on x86-64 with AVX2+FMA
//! (checked at run time, so the binary runs on any x86-64) it is instantiated inside a
//! `#[target_feature(enable = "avx2,fma")]` function so that LLVM emits 256-bit FMAs;
//! elsewhere a portable instantiation (plain mul + add, SSE-sized tile) is used.

use crate::dtype::{DType, Elem};
use rayon::prelude::*;
use std::{any::Any, cell::Cell, thread::LocalKey};

/// Strides of one operand, in elements. `batch` may be 0 (the operand is broadcast over the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatStrides {
    pub batch: usize,
    pub row: usize,
    pub col: usize,
}

impl MatStrides {
    /// Strides of a contiguous row-major `(batch, rows, cols)` array.
    pub fn contiguous(rows: usize, cols: usize) -> Self {
        MatStrides { batch: rows * cols, row: cols, col: 1 }
    }
}

/// Below this many multiply-adds (m·n·k) a matrix is done on one thread: splitting it
/// would cost more in synchronisation than it saves.
const PAR_MIN_WORK: usize = 1 << 18;

/// out[b, i, j] = sum_p a[b, i, p] * bm[b, p, j] for b < batch, i < m, j < n.
/// `a` and `bm` are addressed with their strides from index 0 (any strides: transposed views are common, e.g. row=1,col=m);
/// `out` is contiguous (batch, m, n) and is overwritten. k == 0 gives zeros.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Elem>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    sa: MatStrides,
    bm: &[T],
    sb: MatStrides,
    out: &mut [T],
) {
    debug_assert!(out.len() >= batch * m * n, "matmul: out too short");
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let out = &mut out[..batch * m * n];
    if k == 0 {
        out.fill(T::zero());
        return;
    }
    // The largest index each operand is read at must exist.
    debug_assert!(a.len() > (batch - 1) * sa.batch + (m - 1) * sa.row + (k - 1) * sa.col, "matmul: a too short");
    debug_assert!(bm.len() > (batch - 1) * sb.batch + (k - 1) * sb.row + (n - 1) * sb.col, "matmul: bm too short");
    let (a, b) = (Operand { data: a, st: sa }, Operand { data: bm, st: sb });
    // Register tile MR x NR: 6x16 f32 / 6x8 f64 = 12 ymm accumulators with AVX2; the
    // portable path assumes only 16 SSE registers (4x8 f32 / 4x4 f64 = 8 xmm).
    match (T::DTYPE, crate::cpu::avx2_fma()) {
        (DType::F32, true) => batched::<T, 6, 16, true>(batch, m, n, k, a, b, out),
        (DType::F32, false) => batched::<T, 4, 8, false>(batch, m, n, k, a, b, out),
        // f64 (the only other `Elem`)
        (_, true) => batched::<T, 6, 8, true>(batch, m, n, k, a, b, out),
        (_, false) => batched::<T, 4, 4, false>(batch, m, n, k, a, b, out),
    }
}

/// One strided operand: element `(r, c)` of matrix `b` is `data[b*st.batch + r*st.row + c*st.col]`.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    data: &'a [T],
    st: MatStrides,
}

impl<T> Operand<'_, T> {
    /// The same operand seen from matrix `b` of the batch on.
    fn at_batch(self, b: usize) -> Self {
        Operand { data: &self.data[b * self.st.batch..], st: self.st }
    }
    /// The transposed view (no copy: the row and column strides swap).
    fn t(self) -> Self {
        Operand { st: MatStrides { row: self.st.col, col: self.st.row, ..self.st }, ..self }
    }
}

thread_local! {
    /// Packing buffers kept by each thread between calls: allocating (and zeroing) a fresh
    /// B̃ of up to KC·NC elements costs ~5% of a 512x512 product. At most ~8 MiB each.
    static SPARE_A: Cell<Option<Box<dyn Any>>> = const { Cell::new(None) };
    static SPARE_B: Cell<Option<Box<dyn Any>>> = const { Cell::new(None) };
}

type Spare = LocalKey<Cell<Option<Box<dyn Any>>>>;

/// This thread's spare buffer from `slot`, or a new one (first or nested call).
fn take_spare<T: Elem>(slot: &'static Spare) -> Vec<T> {
    slot.take().and_then(|b| b.downcast::<Vec<T>>().ok()).map_or_else(Vec::new, |b| *b)
}

/// Keep `buf` in `slot` for the next call on this thread.
fn put_spare<T: Elem>(slot: &'static Spare, buf: Vec<T>) {
    slot.set(Some(Box::new(buf)));
}

/// Split the batch: many small matrices go one matrix per task; otherwise the matrices
/// are done one after the other, each split into tiles over the threads.
fn batched<T: Elem, const MR: usize, const NR: usize, const FMA: bool>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Operand<T>,
    b: Operand<T>,
    out: &mut [T],
) {
    let (work, threads) = (m * n * k, rayon::current_num_threads());
    let one = |i: usize, c: &mut [T], parallel: bool| {
        let (a, b) = (a.at_batch(i), b.at_batch(i));
        if m == 1 {
            gemv(n, k, a, b, c, parallel);
        } else if n == 1 {
            gemv(m, k, b.t(), a.t(), c, parallel); // out^T (1, m) = b^T (1, k) · a^T (k, m)
        } else {
            gemm::<T, MR, NR, FMA>(m, n, k, a, b, c, parallel);
        }
    };
    if batch > 1 && threads > 1 && (work < PAR_MIN_WORK || batch >= 4 * threads) {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, false));
    } else {
        let parallel = threads > 1 && work >= PAR_MIN_WORK;
        out.chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, parallel));
    }
}

/// A raw pointer to `out` that rayon tasks may share. Every task writes a disjoint
/// rectangle of `out`, so there are no data races.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Send> Sync for OutPtr<T> {}
impl<T> OutPtr<T> {
    // A method (not field access) so that closures capture the whole Send/Sync wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

/// One matrix: `c (m, n) = a (m, k) · b (k, n)`, `c` contiguous. Runs the jc / pc loops of
/// the hierarchy; the (ic, column chunk) tiles of each step are the parallel tasks.
fn gemm<T: Elem, const MR: usize, const NR: usize, const FMA: bool>(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<T>,
    b: Operand<T>,
    c: &mut [T],
    parallel: bool,
) {
    let (mc_max, kc_max, nc_max) = match T::DTYPE {
        DType::F32 => (72, 512, 4080),
        _ => (72, 512, 2040), // f64
    };
    // Balance the row blocks: 512 rows become 8 blocks of 64 rather than 7x72 + 8.
    let mc = m.div_ceil(m.div_ceil(mc_max)).next_multiple_of(MR);
    let row_blocks = m.div_ceil(mc);
    let threads = rayon::current_num_threads();
    let mut b_buf: Vec<T> = take_spare(&SPARE_B);
    b_buf.resize(kc_max.min(k) * nc_max.min(n).next_multiple_of(NR), T::zero());
    let c_ptr = OutPtr(c.as_mut_ptr());
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        // Column chunks per row block: enough tasks (about 4 per thread) to balance, but
        // each at least 8 micro-panels wide so that packing Ã stays cheap.
        let chunks = if parallel { (4 * threads).div_ceil(row_blocks).clamp(1, nc.div_ceil(8 * NR)) } else { 1 };
        let chunk_w = nc.div_ceil(chunks).next_multiple_of(NR);
        let chunks = nc.div_ceil(chunk_w);
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            let b_pack = &mut b_buf[..kc * nc.next_multiple_of(NR)];
            pack_b::<T, NR>(b, pc, kc, jc, nc, b_pack, parallel);
            let b_pack = &*b_pack;
            // Task t: rows [ic, ic+mcb) x columns [jc+j0, jc+j0+ncb) of C.
            let task = |t: usize, a_pack: &mut Vec<T>| {
                let (ic, j0) = ((t / chunks) * mc, (t % chunks) * chunk_w);
                let (mcb, ncb) = (mc.min(m - ic), chunk_w.min(nc - j0));
                a_pack.resize(kc * mcb.next_multiple_of(MR), T::zero());
                pack_a::<T, MR>(a, ic, mcb, pc, kc, a_pack);
                // Micro-panel j0/NR of B̃ starts at (j0/NR)·(kc·NR) = j0·kc.
                let b_tile = &b_pack[j0 * kc..(j0 + ncb.next_multiple_of(NR)) * kc];
                // SAFETY: ic < m and jc + j0 < n, so the offset is inside c; the tile
                // [ic, ic+mcb) x [jc+j0, jc+j0+ncb) lies in c and only this task writes it.
                let c = OutPtr(unsafe { c_ptr.get().add(ic * n + jc + j0) });
                let tile = Tile { kc, mc: mcb, nc: ncb, c, ldc: n, accumulate: pc > 0 };
                macro_kernel::<T, MR, NR, FMA>(a_pack, b_tile, tile);
            };
            let run = |t: usize| {
                let mut a_pack = take_spare(&SPARE_A);
                task(t, &mut a_pack);
                put_spare(&SPARE_A, a_pack);
            };
            if parallel {
                (0..row_blocks * chunks).into_par_iter().for_each(run);
            } else {
                (0..row_blocks * chunks).for_each(run);
            }
        }
    }
    put_spare(&SPARE_B, b_buf);
}

/// Pack A[i0..i0+mc, p0..p0+kc] into `dst` as ceil(mc/MR) micro-panels, each (kc, MR):
/// `dst[panel*kc*MR + p*MR + i] = A[i0 + panel*MR + i, p0 + p]`, rows past `mc` zeroed.
fn pack_a<T: Elem, const MR: usize>(a: Operand<T>, i0: usize, mc: usize, p0: usize, kc: usize, dst: &mut [T]) {
    let MatStrides { row: rs, col: cs, .. } = a.st;
    for (panel, dst) in dst.chunks_exact_mut(kc * MR).enumerate() {
        let first = i0 + panel * MR;
        let rows = MR.min(i0 + mc - first);
        let dst = dst.as_chunks_mut::<MR>().0; // dst[p] = the MR values of column p
        if rows == MR && cs == 1 {
            // Row-major A, a whole panel: MR rows read side by side, each one contiguously.
            let src: [&[T]; MR] = std::array::from_fn(|i| &a.data[(first + i) * rs + p0..][..kc]);
            dst.iter_mut().enumerate().for_each(|(p, d)| *d = std::array::from_fn(|i| src[i][p]));
        } else {
            for (p, d) in dst.iter_mut().enumerate() {
                let base = first * rs + (p0 + p) * cs;
                if rows == MR && rs == 1 {
                    *d = a.data[base..base + MR].as_chunks::<MR>().0[0]; // A stored transposed
                } else {
                    d[..rows].iter_mut().enumerate().for_each(|(i, d)| *d = a.data[base + i * rs]);
                    d[rows..].fill(T::zero());
                }
            }
        }
    }
}

/// Pack B[p0..p0+kc, j0..j0+nc] into `dst` as ceil(nc/NR) micro-panels, each (kc, NR):
/// `dst[panel*kc*NR + p*NR + j] = B[p0 + p, j0 + panel*NR + j]`, columns past `nc` zeroed.
#[allow(clippy::too_many_arguments)]
fn pack_b<T: Elem, const NR: usize>(
    b: Operand<T>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    dst: &mut [T],
    parallel: bool,
) {
    let MatStrides { row: rs, col: cs, .. } = b.st;
    // Panels g0.. of one group: each row p of B is copied into all of the group's panels
    // before the next row, so a row-major B is read sequentially.
    let pack_group = |g0: usize, dst: &mut [T]| {
        for p in 0..kc {
            for (q, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
                let first = j0 + (g0 + q) * NR;
                let cols = NR.min(j0 + nc - first);
                let (d, base) = (&mut panel.as_chunks_mut::<NR>().0[p], (p0 + p) * rs + first * cs);
                if cs == 1 && cols == NR {
                    *d = b.data[base..base + NR].as_chunks::<NR>().0[0]; // fixed size: no memcpy call
                } else {
                    d[..cols].iter_mut().enumerate().for_each(|(j, d)| *d = b.data[base + j * cs]);
                    d[cols..].fill(T::zero());
                }
            }
        }
    };
    const GROUP: usize = 8; // panels per group (and per parallel job)
    if parallel {
        dst.par_chunks_mut(GROUP * kc * NR).enumerate().for_each(|(g, d)| pack_group(g * GROUP, d));
    } else {
        dst.chunks_mut(GROUP * kc * NR).enumerate().for_each(|(g, d)| pack_group(g * GROUP, d));
    }
}

/// Where one task's (mc, nc) block of C is, and the depth kc of the packed panels.
#[derive(Clone, Copy)]
struct Tile<T> {
    kc: usize,
    mc: usize,
    nc: usize,
    c: OutPtr<T>,
    ldc: usize,
    /// Add to C (later pc blocks) instead of overwriting it (first pc block).
    accumulate: bool,
}

/// Run-time dispatch to the AVX2+FMA instantiation; `FMA` is true only when
/// `crate::cpu::avx2_fma()` said so.
#[inline]
fn macro_kernel<T: Elem, const MR: usize, const NR: usize, const FMA: bool>(a: &[T], b: &[T], t: Tile<T>) {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if FMA {
        // SAFETY: FMA == true is chosen only after detecting avx2 and fma on this CPU.
        return unsafe { macro_kernel_avx2_fma::<T, MR, NR>(a, b, t) };
    }
    macro_kernel_impl::<T, MR, NR, false>(a, b, t)
}

/// The same code as `macro_kernel_impl`, compiled with AVX2+FMA enabled so that the
/// inlined micro-kernel becomes 256-bit `vfmadd` instructions.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn macro_kernel_avx2_fma<T: Elem, const MR: usize, const NR: usize>(a: &[T], b: &[T], t: Tile<T>) {
    macro_kernel_impl::<T, MR, NR, true>(a, b, t)
}

/// C tile (mc, nc) (+)= Ã (mc, kc) · B̃ (kc, nc): loop over the NR-wide micro-panels of B̃
/// (each stays in L1 while it meets every micro-panel of Ã), then the MR-tall ones of Ã.
#[inline(always)]
fn macro_kernel_impl<T: Elem, const MR: usize, const NR: usize, const FMA: bool>(a: &[T], b: &[T], t: Tile<T>) {
    for (jr, b_panel) in b.chunks_exact(t.kc * NR).enumerate() {
        let nr = NR.min(t.nc - jr * NR);
        for (ir, a_panel) in a.chunks_exact(t.kc * MR).enumerate() {
            let mr = MR.min(t.mc - ir * MR);
            let acc = micro_kernel::<T, MR, NR, FMA>(a_panel.as_chunks().0, b_panel.as_chunks().0);
            // SAFETY: rows ir*MR + i < mc and columns jr*NR + j < nc of the tile are in
            // `out` (see gemm) and owned by this task; row r of the tile starts at r*ldc.
            unsafe {
                let c = t.c.get().add(ir * MR * t.ldc + jr * NR);
                for (i, acc_row) in acc.iter().enumerate().take(mr) {
                    if nr == NR {
                        // Whole row: a fixed-size array, so the add and store are whole vectors.
                        let row = &mut *(c.add(i * t.ldc) as *mut [T; NR]);
                        let mut sum = *acc_row;
                        if t.accumulate {
                            let old = *row;
                            (0..NR).for_each(|j| sum[j] += old[j]);
                        }
                        *row = sum;
                    } else {
                        let row = std::slice::from_raw_parts_mut(c.add(i * t.ldc), nr);
                        for (cij, &v) in row.iter_mut().zip(acc_row) {
                            *cij = if t.accumulate { *cij + v } else { v };
                        }
                    }
                }
            }
        }
    }
}

/// The register tile: returns Σ_p a[p] ⊗ b[p], an (MR, NR) sum of outer products, where
/// `a[p]` is column p of the Ã micro-panel (MR values) and `b[p]` row p of the B̃ one (NR).
/// With constant MR, NR the array lives in vector registers and the `j` loop becomes
/// NR/lanes vector FMAs per broadcast `a[p][i]`.
#[inline(always)]
fn micro_kernel<T: Elem, const MR: usize, const NR: usize, const FMA: bool>(
    a: &[[T; MR]],
    b: &[[T; NR]],
) -> [[T; NR]; MR] {
    let mut acc = [[T::zero(); NR]; MR];
    for (ap, bp) in a.iter().zip(b) {
        for i in 0..MR {
            for j in 0..NR {
                // mul_add is one instruction only when the fma feature is enabled; without
                // it, it is a slow library call, hence plain mul + add there.
                acc[i][j] = if FMA { ap[i].mul_add(bp[j], acc[i][j]) } else { acc[i][j] + ap[i] * bp[j] };
            }
        }
    }
    acc
}

/// Matrix-vector product (m == 1): `out (n) = a (1, k) · b (k, n)`. Each element of b is
/// used once, so this is bound by reading b: stream it in its own layout, no packing.
fn gemv<T: Elem>(n: usize, k: usize, a: Operand<T>, b: Operand<T>, out: &mut [T], parallel: bool) {
    let (sa, sb) = (a.st.col, b.st);
    // Columns [j0, j0 + out.len()) of the result; threads split the columns.
    let run = |j0: usize, out: &mut [T]| {
        let len = out.len(); // every slice below has exactly this length: no bounds checks in the loop
        if sb.col == 1 {
            // Rows of b contiguous: out = Σ_p a[p] · b[p, j0..], an "axpy" per row, four rows
            // per pass over out (rows past k get coefficient 0).
            out.fill(T::zero());
            for p0 in (0..k).step_by(4) {
                let row = |p: usize| &b.data[p.min(k - 1) * sb.row + j0..][..len];
                let coef = |p: usize| if p < k { a.data[p * sa] } else { T::zero() };
                let (r0, r1, r2, r3) = (row(p0), row(p0 + 1), row(p0 + 2), row(p0 + 3));
                let (c0, c1, c2, c3) = (coef(p0), coef(p0 + 1), coef(p0 + 2), coef(p0 + 3));
                for j in 0..len {
                    out[j] += c0 * r0[j] + c1 * r1[j] + c2 * r2[j] + c3 * r3[j];
                }
            }
        } else {
            // out[j] = a · b[:, j], one dot product per column.
            for (j, o) in out.iter_mut().enumerate() {
                *o = dot(k, a.data, sa, &b.data[(j0 + j) * sb.col..], sb.row);
            }
        }
    };
    if parallel {
        let chunk = n.div_ceil(2 * rayon::current_num_threads()).max(64);
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| run(i * chunk, o));
    } else {
        run(0, out);
    }
}

/// Σ_p x[p·xs] · y[p·ys]. With unit strides, 16 independent partial sums let LLVM
/// vectorise (it will not reorder one running float sum itself: addition is not associative).
fn dot<T: Elem>(k: usize, x: &[T], xs: usize, y: &[T], ys: usize) -> T {
    if xs == 1 && ys == 1 {
        let ((xv, xr), (yv, yr)) = (x[..k].as_chunks::<16>(), y[..k].as_chunks::<16>());
        let mut acc = [T::zero(); 16];
        xv.iter().zip(yv).for_each(|(xv, yv)| (0..16).for_each(|l| acc[l] += xv[l] * yv[l]));
        acc.into_iter().sum::<T>() + xr.iter().zip(yr).map(|(&u, &v)| u * v).sum::<T>()
    } else {
        (0..k).map(|p| x[p * xs] * y[p * ys]).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a tiny deterministic RNG, so the tests need no `rand` crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random operand of logical shape (batch, rows, cols), stored row-major or
    /// transposed, or broadcast (batch stride 0, a single matrix stored).
    fn operand<T: Elem>(rng: &mut Rng, [batch, rows, cols]: [usize; 3], [tr, bc]: [bool; 2]) -> (Vec<T>, MatStrides) {
        let len = if bc { 1 } else { batch } * rows * cols;
        let data = (0..len).map(|_| T::cast((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)).collect();
        let (row, col) = if tr { (1, rows) } else { (cols, 1) };
        (data, MatStrides { batch: if bc { 0 } else { rows * cols }, row, col })
    }

    /// Compare `matmul` and the portable instantiation with a triple loop in f64.
    /// `flags` = [a transposed, b transposed, a broadcast, b broadcast].
    fn check<T: Elem>(rng: &mut Rng, [batch, m, n, k]: [usize; 4], flags: [bool; 4], tol: f64) {
        let (a, sa) = operand::<T>(rng, [batch, m, k], [flags[0], flags[2]]);
        let (b, sb) = operand::<T>(rng, [batch, k, n], [flags[1], flags[3]]);
        let mut out = vec![T::cast(f64::NAN); batch * m * n]; // must be overwritten
        matmul(batch, m, n, k, &a, sa, &b, sb, &mut out);
        let mut portable = vec![T::cast(f64::NAN); batch * m * n];
        let (opa, opb) = (Operand { data: &a[..], st: sa }, Operand { data: &b[..], st: sb });
        batched::<T, 4, 4, false>(batch, m, n, k, opa, opb, &mut portable);
        for (idx, (&x, &y)) in out.iter().zip(&portable).enumerate() {
            let (bi, i, j) = (idx / (m * n), idx / n % m, idx % n);
            let want: f64 = (0..k)
                .map(|p| {
                    a[bi * sa.batch + i * sa.row + p * sa.col].as_f64()
                        * b[bi * sb.batch + p * sb.row + j * sb.col].as_f64()
                })
                .sum();
            let ok = |got: T| (got.as_f64() - want).abs() <= tol * (1.0 + (k as f64).sqrt());
            assert!(
                ok(x) && ok(y),
                "{:?} {batch}x{m}x{n}x{k} {flags:?}: [{bi},{i},{j}] = {x:?} / {y:?}, want {want}",
                T::DTYPE
            );
        }
    }

    fn random_cases<T: Elem>(tol: f64) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..150 {
            // Mostly small odd sizes, some crossing the MR/NR/MC/KC boundaries (MC <= 72, KC = 512).
            let mut size = |big| if rng.below(4) == 0 { 1 + rng.below(big) } else { 1 + rng.below(40) };
            let shape = [if case % 3 == 0 { size(5) } else { 1 }, size(200), size(200), size(1100)];
            let flags = [0, 1, 2, 3].map(|_| rng.below(2) == 1);
            check::<T>(&mut rng, shape, flags, tol);
        }
    }

    #[test]
    fn matmul_f32_random_shapes_and_strides() {
        random_cases::<f32>(1e-5);
    }

    #[test]
    fn matmul_f64_random_shapes_and_strides() {
        random_cases::<f64>(1e-13);
    }

    #[test]
    fn matmul_edge_cases() {
        let mut rng = Rng(42);
        let (f, t) = (false, true);
        check::<f32>(&mut rng, [1, 1, 1, 1], [f, f, f, f], 1e-6);
        check::<f64>(&mut rng, [3, 1, 1, 1], [t, t, f, t], 1e-14);
        check::<f32>(&mut rng, [1, 3, 4100, 5], [f, f, f, f], 1e-5); // 2 NC blocks (NC = 4080)
        check::<f64>(&mut rng, [1, 3, 2100, 5], [f, t, f, f], 1e-13); // 2 NC blocks (NC = 2040)
                                                                      // Parallel path (m*n*k >= PAR_MIN_WORK), odd everywhere, several KC blocks.
        check::<f32>(&mut rng, [1, 197, 263, 1037], [f, f, f, f], 1e-5);
        check::<f64>(&mut rng, [2, 101, 333, 259], [t, t, f, f], 1e-13);
        // Matrix-vector products (m == 1 or n == 1), serial and parallel, all layouts.
        for (shape, flags) in [[2, 1, 37, 1100], [2, 37, 1, 600], [1, 1, 700, 600], [1, 700, 1, 600]]
            .into_iter()
            .flat_map(|s| (0..16).map(move |bits| (s, [0, 1, 2, 3].map(|i| bits >> i & 1 == 1))))
        {
            check::<f32>(&mut rng, shape, flags, 1e-5);
        }
        // Many small matrices: parallel over the batch, with a broadcast operand.
        check::<f32>(&mut rng, [40, 7, 9, 13], [f, t, t, f], 1e-5);
        check::<f64>(&mut rng, [40, 7, 9, 13], [t, f, f, t], 1e-13);
        // Empty dimensions: k == 0 gives zeros, m or n == 0 writes nothing.
        for (m, n) in [(3, 5), (0, 4), (4, 0)] {
            let mut out = vec![7.0f32; 2 * m * n];
            let s = MatStrides::contiguous(1, 1);
            matmul(2, m, n, 0, &[], s, &[], s, &mut out);
            assert!(out.iter().all(|&x| x == 0.0));
        }
    }
}
