// The SSD scan of Mamba-2 (chunked, matrix form), forward and backward, f32: the CUDA twin of
// engine/src/ops/ssd/cpu.rs (forward) and cpu_backward.rs (backward); the math, with shapes,
// is in engine/src/ops/ssd/mod.rs. Layouts (contiguous): x, z, out, dy (b, L, h, p); dt (b, L, h);
// A, D, dt_bias (h); B, C (b, L, g, n) with head hh reading group hh / (h / g); init, last
// (b, h, p, n); states (b, nc, h, p, n) = the state entering each chunk of Q = `chunk` steps.
// Scratch, per (batch, head): decay (nc) = a_Q of each chunk, kdot (nc), xdx and da (L).
//
// Per chunk (steps t0..t0+q, local i, j), with dt' = softplus(dt + dt_bias) and the cumulative
// log-decay a_i = sum_{k <= i} dt'_k A:
//   forward   Y_i   = sum_{j <= i} exp(a_i - a_j) (C_i . B_j) dt'_j x_j + exp(a_i) S_in C_i + D x_i
//             S_out = exp(a_Q) S_in + sum_j exp(a_Q - a_j) dt'_j x_j B_j^T,   out = Y silu(z)
//   backward  dX'_j = sum_{i >= j} exp(a_i - a_j) (C_i . B_j) dy_i + exp(a_Q - a_j) dS_end B_j
//             dC_i  = sum_{j <= i} exp(a_i - a_j) dt'_j (dy_i . x_j) B_j + exp(a_i) S_in^T dy_i
//             dB_j  = sum_{i >= j} exp(a_i - a_j) dt'_j (dy_i . x_j) C_i + exp(a_Q - a_j) dt'_j dS_end^T x_j
//             da_i  = C_i . dC_i - B_i . dB_i (+ K at the last step), dalpha = reverse cumsum of da
//
// Kernels, in launch order (every block 256 threads; "tile" = 64 x 64 outputs made by 8 warps
// with tf32 tensor-core mma.sync at f32 accuracy (3xTF32, see mma_tile), k-slices of 8 (16 in
// the one-accumulator output kernels) staged in shared memory, the next slice loaded while this
// one is multiplied; the (Q, Q) products are made 64 x 64 tile by tile, masked and scaled in
// shared memory, then multiplied on; causal tiles above the diagonal skipped):
// forward (v2: C B^T once per group, not once per head)
//   ssd_chunk_cb_f32      grid (nc * tiles(Q)^2, g, b): cb = C B^T of each chunk and group, its
//                         causal tiles, into scratch (b, nc, g, Q, Q): every head of a group reads it
//   ssd_chunk_state_f32   grid (nc * tiles(p) * tiles(n), h, b): the chunk's own final state from
//                         zero, sum_j exp(a_Q - a_j) dt'_j x_j B_j^T, into states; a_Q into decay
//   ssd_state_pass_f32    grid (ceil(p n / 256), h, b), one thread per state element, chunks in
//                         order: states[c] <- S_in, S_in <- exp(a_Q) S_in + local; last
//   ssd_chunk_out_f32     grid (nc * tiles(Q) * tiles(p), h, b): Y tile (rows i, columns p), D x,
//                         the gate; writes out
// backward (dy = dout without z)
//   ssd_chunk_cb_f32      as in the forward (recomputed: scratch, not saved)
//   ssd_chunk_gate_grad_f32  as ssd_chunk_out_f32, recomputing Y: dy = dout silu(z), dz
//   ssd_chunk_dstate_f32  as ssd_chunk_state_f32: sum_i exp(a_i) dy_i C_i^T into dstates
//   ssd_dstate_pass_f32   chunks newest first from dlast: dstates[c] <- dS_end, dS <- local +
//                         exp(a_Q) dS; kdot += exp(a_Q) <dS_end, S_in>; dinit
//   ssd_chunk_dx_f32      dX' tile (rows j, columns p): dx = dt' dX' + D dy; xdx += x . dX'; dD
//   ssd_chunk_dc_f32      dC tile (rows i, columns n): dC += (atomics: heads share a group); da += C . dC
//   ssd_chunk_db_f32      dB tile (rows j, columns n): dB +=; da -= B . dB; kdot += B . dB^state
//   ssd_chunk_finish_f32  grid (nc, h, b): dalpha = reverse cumsum of da (+ kdot at the last step),
//                         ddt = (xdx + A dalpha) sigmoid(dt + dt_bias); dA += dt' dalpha; d(dt_bias)
// The launcher zeroes what is accumulated with atomics (xdx, da, kdot, dA, dB, dC, dD, d(dt_bias)),
// whose last bits then vary from run to run.
// Every tile kernel exists as NAME_f32 (3xTF32: f32 accuracy) and NAME_tf32 (one tf32 pass, the
// reference's precision), chosen by `precision::set_tf32` (see SSD_TILE_KERNEL).
//
// Checked without a GPU by kernels/tools/emu/ssd.sh (these kernels on the CPU, one OS thread per
// CUDA thread, mma.sync emulated lane by lane, against a float64 recurrence); on the GPU by
// gpu-check (tests/gpu_check/ssd.rs and the op's gradient-check cases), against the CPU twin.
//
// Resources (ptxas, sm_90): ssd_chunk_d[bc]_f32 113-118 registers (two accumulators, k-slices
// of 8: 16 spill) and ssd_chunk_{out,gate_grad,dx}_f32 128 (k-slices of 16) under
// __launch_bounds__(256, 2) (two blocks, 16 warps per SM; three blocks spill);
// ssd_chunk_{cb,state,dstate}_f32 79 under (256, 3); the passes 71-76, finish 30; no spills;
// 27 KB of static shared memory per block (two 16 x 72 k-slices, one 64 x 64 masked tile, the
// chunk's dt' and a).
//
// Napkin math at the benchmark shape (b 8, L 2048, h 24, p 64, g 1, n 64, Q 256: nc 8, f32):
//   bytes: x, z, out 100.7 MB each, B, C 4.2 MB each, states 25.2 MB, cb 16.8 MB; forward reads
//   x, z, B, C, states twice and writes out, states: ~0.4 GB -> ~0.1 ms at ~4 TB/s. Backward
//   reads x, z, dout, dy (x 2-3), B, C, states, dstates and writes dx, dz, dy, dB, dC: ~1 GB ->
//   ~0.3 ms. FLOPs per (b, chunk, head), counting the 10 of 16 causal tiles computed at Q = 256:
//   C B^T 5.2 M (v2: per group, 1/24 of that here), its product with X' 5.2 M, S_in C 2.1 M,
//   chunk state 2.1 M -> forward ~9.6 M x 1536 = 14.7 GFLOP; backward ~4 x that ~ 60 GFLOP.
//   v1 ran these on CUDA cores at ~11.5 TFLOP/s (a 4 x 4 register tile per thread fed from
//   shared memory); tf32 mma.sync runs ~8x the CUDA cores' f32 peak, 3xTF32 costs 3 of them, so
//   the products should stop dominating and the staging (global loads, exp of the mask) lead.
//   docs/SSD.md has each version's prediction and result.

#define SSD_THREADS 256
#define SSD_T 64           // tile rows and columns
#define SSD_KT 8           // k-slice staged per step (16 spills in the two-accumulator kernels)
#define SSD_KT_WIDE 16     // k-slice of the one-accumulator output kernels (out, gate_grad, dx)
#define SSD_MAX_CHUNK 256  // one thread per step of a chunk in the prefix and finish
#define SSD_WARPS (SSD_THREADS / 32)

// The parameter of every SSD kernel: `SsdParams` in launch/ssd.rs, same fields. Pointers a
// kernel does not use are null (z, init, dinit, dz, dy when there is no gate or initial state).
struct SsdParams {
    const float *x, *dt, *A, *Bm, *Cm, *Dskip, *dt_bias, *z, *init;
    float *out, *last, *states;
    const float *dout, *dlast;
    float *dy, *dstates, *decay, *kdot, *xdx, *da, *cb;
    float *dx, *ddt, *dA, *dB, *dC, *dD, *ddt_bias, *dz, *dinit;
    int batch, len, heads, headdim, groups, state, chunk, n_chunks;
};
static_assert(sizeof(SsdParams) == 272, "SsdParams: launch/ssd.rs has 272 bytes");

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable for any x (as the CPU twin).
__device__ __forceinline__ float ssd_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float ssd_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

#include "mma.cuh"  // tf32_round, mma_tf32 (and their CPU twins)
#ifndef CUDA_EMU  // kernels/tools/emu/cuda_emu.h has CPU twins of these
// Asynchronous copies global -> shared (cp.async, sm_80+): `bytes` of the 16 (or 4) are read,
// the rest of the destination zero-filled; ssd_cp_async_wait waits for all of this thread's.
__device__ __forceinline__ void ssd_cp_async16(float* dst, const float* src, int bytes) {
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void ssd_cp_async4(float* dst, const float* src, int bytes) {
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void ssd_cp_async_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }
#endif

struct SsdSmem {
    float a[SSD_KT_WIDE][SSD_T + 8];  // k-slice of the left operand, as (k, row); the stride of 72
    float b[SSD_KT_WIDE][SSD_T + 8];  // (8 mod 32 banks) makes the fragment loads conflict-free
    float m[SSD_T][SSD_T + 4];        // a masked (Q, Q) tile, (row, k): stride 68 (4 mod 32 banks)
    alignas(16) float bt[SSD_T][SSD_T + 8];  // the 64 x 64 operand it meets, (k, column), by cp.async
    float dt[SSD_MAX_CHUNK];     // dt' of the chunk's steps (0 past its end)
    float cum[SSD_MAX_CHUNK];    // a_i (a_{q-1} past its end)
    float w[SSD_MAX_CHUNK];      // a per-step weight of the chunk-state products
    float warp[SSD_WARPS];
};

// Where a block's rows are: batch b, head hh, its group g, chunk c (steps t0 .. t0 + q).
struct SsdBlock {
    int b, hh, g, c, t0, q;
    __device__ SsdBlock(const SsdParams& p, int c_) : b(blockIdx.z), hh(blockIdx.y), c(c_) {
        g = hh / (p.heads / p.groups);
        t0 = c * p.chunk;
        q = min(p.chunk, p.len - t0);
    }
    // Offsets of step t's row in a (b, L, h, p) tensor, in a (b, L, g, n) tensor; of (b, c, hh)
    // in states; of (b, hh) in a per-(batch, head) array of `per` values.
    __device__ long long xrow(const SsdParams& p, int t) const {
        return (((long long)b * p.len + t) * p.heads + hh) * p.headdim;
    }
    __device__ long long bcrow(const SsdParams& p, int t) const {
        return (((long long)b * p.len + t) * p.groups + g) * p.state;
    }
    __device__ long long state_at(const SsdParams& p) const {
        return (((long long)b * p.n_chunks + c) * p.heads + hh) * (long long)p.headdim * p.state;
    }
    __device__ long long bh(const SsdParams& p, int per) const { return ((long long)b * p.heads + hh) * per; }
};

// Block-wide inclusive scan of one value per thread (256 threads): prefix sums, or with REVERSE
// suffix sums (thread i gets sum over threads >= i). Every thread must call it.
template <bool REVERSE>
__device__ float block_scan(float v, SsdSmem& sm) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const float o = REVERSE ? __shfl_down_sync(0xffffffffu, v, off) : __shfl_up_sync(0xffffffffu, v, off);
        if (REVERSE ? lane + off < 32 : lane >= off) v += o;
    }
    __syncthreads();  // sm.warp's previous readers are done
    if (lane == (REVERSE ? 0 : 31)) sm.warp[w] = v;
    __syncthreads();
    for (int k = 0; k < SSD_WARPS; ++k)
        if (REVERSE ? k > w : k < w) v += sm.warp[k];
    return v;
}

// The chunk's dt' and cumulative log-decay a into shared memory (zeros / a_{q-1} past q).
__device__ void chunk_prefix(const SsdParams& p, const SsdBlock& k, SsdSmem& sm) {
    const int i = threadIdx.x;
    float dtp = 0.0f;
    if (i < k.q) dtp = ssd_softplus(p.dt[((long long)k.b * p.len + k.t0 + i) * p.heads + k.hh] + p.dt_bias[k.hh]);
    const float a = block_scan<false>(dtp * p.A[k.hh], sm);
    if (i < SSD_MAX_CHUNK) {
        sm.dt[i] = dtp;
        sm.cum[i] = a;
    }
    __syncthreads();
}

// ------------------------------------------------------------------ tiles on tensor cores
// A 64 x 64 tile is made by the block's 8 warps with mma.sync m16n8k8 (tf32 in, f32 out): warp w
// owns rows 32 (w / 4) .. +32 and columns 16 (w % 4) .. +16, two 16-row by two 8-column mma
// tiles. In the accumulator layout of mma.sync, acc[u][v] of lane l (g = l / 4, t = l % 4) is
// the element at row tile_row(u) = 32 (w / 4) + g + 8 u, column tile_col(v) = 16 (w % 4) + 2 t
// + 8 (v / 2) + v % 2. Every epilogue reads positions through these two.
__device__ __forceinline__ int tile_row(int u) { return 32 * (threadIdx.x / 128) + threadIdx.x % 32 / 4 + 8 * u; }
__device__ __forceinline__ int tile_col(int v) {
    return 16 * (threadIdx.x / 32 % 4) + 2 * (threadIdx.x % 4) + 8 * (v >> 1) + (v & 1);
}

// f32 products at f32 accuracy on tf32 tensor cores ("3xTF32"): each operand splits into hi =
// tf32(a) and lo = tf32(a - hi), and a b ~ hi_a hi_b + hi_a lo_b + lo_a hi_b (the lo lo term is
// below f32's rounding). One pass of tf32 alone, as the reference's Triton kernels use, would
// be ~3x cheaper but 1e-3 relative, far from the CPU twin.
struct Tf32 {
    float hi, lo;
    __device__ __forceinline__ explicit Tf32(float a) {
        hi = tf32_round(a);
        lo = tf32_round(a - hi);
    }
};

// One k-step of 8 of the warp's 32 x 16 part of a tile: acc += A (rows, 8) B (8, columns), the
// fragments read through sa(row, k) and sb(k, column) (k < 8, tile coordinates), each split
// into tf32 hi + lo when EXACT (3xTF32: lo hi + hi lo + hi hi), else hi alone (one pass).
template <bool EXACT, class SA, class SB>
__device__ __forceinline__ void mma_step(float (&acc)[4][4], SA sa, SB sb) {
    const int tid = threadIdx.x, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wr = 32 * (tid / 128), wc = 16 * (tid / 32 % 4);
    const Tf32 b[2][2] = {{Tf32(sb(t, wc + g)), Tf32(sb(t + 4, wc + g))},
                          {Tf32(sb(t, wc + 8 + g)), Tf32(sb(t + 4, wc + 8 + g))}};
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
        const int r = wr + 16 * mi + g;
        const Tf32 a[4] = {Tf32(sa(r, t)), Tf32(sa(r + 8, t)), Tf32(sa(r, t + 4)), Tf32(sa(r + 8, t + 4))};
#pragma unroll
        for (int ni = 0; ni < 2; ++ni) {
            float &c0 = acc[2 * mi][2 * ni], &c1 = acc[2 * mi][2 * ni + 1];
            float &c2 = acc[2 * mi + 1][2 * ni], &c3 = acc[2 * mi + 1][2 * ni + 1];
            const Tf32(&y)[2] = b[ni];
            if constexpr (EXACT) {  // the small terms first
                mma_tf32(c0, c1, c2, c3, a[0].lo, a[1].lo, a[2].lo, a[3].lo, y[0].hi, y[1].hi);
                mma_tf32(c0, c1, c2, c3, a[0].hi, a[1].hi, a[2].hi, a[3].hi, y[0].lo, y[1].lo);
            }  // (else the lo halves are dead code: the compiler drops them)
            mma_tf32(c0, c1, c2, c3, a[0].hi, a[1].hi, a[2].hi, a[3].hi, y[0].hi, y[1].hi);
        }
    }
}

// acc (this thread's 16 values of a 64 x 64 tile, layout above) += sum_{k < K} fa(row, k)
// fb(k, col), staged KT values of k at a time (KT <= SSD_KT_WIDE). fa / fb return 0 outside the operand. A_KFAST / B_KFAST: consecutive threads load
// consecutive k (the operand is contiguous along k), else consecutive rows / columns. The next
// k-slice is loaded into registers while the tensor cores work on this one. Every thread must
// call it; it starts and ends synchronised.
template <bool EXACT, bool A_KFAST, bool B_KFAST, int KT = SSD_KT, class FA, class FB>
__device__ __forceinline__ void mma_tile(float (&acc)[4][4], int K, SsdSmem& sm, FA fa, FB fb) {
    constexpr int PER = SSD_T * KT / SSD_THREADS;  // elements of each operand per thread
    const int tid = threadIdx.x;
    float ra[PER], rb[PER];
    const auto fetch = [&](int k0) {
#pragma unroll
        for (int m = 0; m < PER; ++m) {
            const int e = tid + SSD_THREADS * m;
            const int ar = A_KFAST ? e / KT : e % SSD_T, ak = A_KFAST ? e % KT : e / SSD_T;
            ra[m] = k0 + ak < K ? fa(ar, k0 + ak) : 0.0f;
            const int bc = B_KFAST ? e / KT : e % SSD_T, bk = B_KFAST ? e % KT : e / SSD_T;
            rb[m] = k0 + bk < K ? fb(k0 + bk, bc) : 0.0f;
        }
    };
    const auto store = [&]() {
#pragma unroll
        for (int m = 0; m < PER; ++m) {
            const int e = tid + SSD_THREADS * m;
            sm.a[A_KFAST ? e % KT : e / SSD_T][A_KFAST ? e / KT : e % SSD_T] = ra[m];
            sm.b[B_KFAST ? e % KT : e / SSD_T][B_KFAST ? e / KT : e % SSD_T] = rb[m];
        }
    };
    const auto multiply = [&]() {
        const auto& sa = sm.a;
        const auto& sb = sm.b;
#pragma unroll
        for (int ks = 0; ks < KT; ks += 8)
            mma_step<EXACT>(acc, [&](int r, int k) { return sa[ks + k][r]; }, [&](int k, int c) { return sb[ks + k][c]; });
    };
    // (Two shared buffers with one barrier per slice measured slower than this: docs/SSD.md v4.)
    fetch(0);
    for (int k0 = 0; k0 < K; k0 += KT) {
        store();
        __syncthreads();
        if (k0 + KT < K) fetch(k0 + KT);
        multiply();
        __syncthreads();
    }
}

// acc += sm.m (64 x 64, (row, k)) sm.bt (64 x 64, (k, column)): both operands already in shared
// memory (v6: the masked tile is not restaged, the other operand came by cp.async), no barrier.
template <bool EXACT>
__device__ __forceinline__ void mma_smem(float (&acc)[4][4], const SsdSmem& sm) {
#pragma unroll
    for (int ks = 0; ks < SSD_T; ks += 8)
        mma_step<EXACT>(acc, [&](int r, int k) { return sm.m[r][ks + k]; }, [&](int k, int c) { return sm.bt[ks + k][c]; });
}

// Start copying the 64 x 64 tile src[k * ld + c] (rows k < kl, columns c < cl; zeros elsewhere)
// into sm.bt with cp.async: 16 bytes a copy when every row starts 16-byte aligned, else 4. The
// caller waits (ssd_cp_async_wait) and synchronises before reading sm.bt.
__device__ __forceinline__ void tile_async(SsdSmem& sm, const float* src, int ld, int kl, int cl) {
    if (((reinterpret_cast<unsigned long long>(src) | (4ull * ld)) & 15) == 0) {
        for (int e = threadIdx.x; e < SSD_T * SSD_T / 4; e += SSD_THREADS) {
            const int k = e / (SSD_T / 4), c = e % (SSD_T / 4) * 4;
            const int n = k < kl ? max(0, min(4, cl - c)) : 0;
            ssd_cp_async16(&sm.bt[k][c], n > 0 ? src + k * ld + c : src, 4 * n);
        }
    } else {
        for (int e = threadIdx.x; e < SSD_T * SSD_T; e += SSD_THREADS) {
            const int k = e / SSD_T, c = e % SSD_T;
            const bool in = k < kl && c < cl;
            ssd_cp_async4(&sm.bt[k][c], in ? src + k * ld + c : src, in ? 4 : 0);
        }
    }
}

__device__ __forceinline__ void zero_tile(float (&acc)[4][4]) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = 0.0f;
}

// (mask_tile and mask_cb end without a barrier: the caller waits for its cp.async and then
// synchronises once.)
// m (a 64 x 64 tile of a (Q, Q) product, rows r0.., columns s0.., both chunk-local) masked to
// the causal part and scaled, into sm.m. LOWER: keep column j <= row i (rows are the later step),
// weight exp(a_i - a_j) * (DT ? dt'_j : 1); else keep column i >= row j (rows are the earlier
// step), weight exp(a_i - a_j) * (DT ? dt'_j : 1) with j the row. Rows and columns past q are 0.
template <bool LOWER, bool DT>
__device__ __forceinline__ void mask_tile(const float (&m)[4][4], int r0, int s0, int q, SsdSmem& sm) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int r = r0 + tile_row(u), s = s0 + tile_col(v);
            const int i = LOWER ? r : s, j = LOWER ? s : r;  // i: the later step, j: the earlier
            float w = 0.0f;
            if (j <= i && i < q) w = m[u][v] * expf(sm.cum[i] - sm.cum[j]) * (DT ? sm.dt[j] : 1.0f);
            sm.m[tile_row(u)][tile_col(v)] = w;
        }
}

// As mask_tile, for the tile of C B^T (rows r0.., columns s0..) that ssd_chunk_cb_f32 wrote: LOWER
// reads cb[i][j] = C_i . B_j, else its transpose (rows j, columns i). Consecutive threads walk
// cb's contiguous axis j.
template <bool LOWER, bool DT>
__device__ __forceinline__ void mask_cb(const SsdParams& p, const SsdBlock& k, int r0, int s0, SsdSmem& sm) {
    const float* cb = p.cb + (((long long)k.b * p.n_chunks + k.c) * p.groups + k.g) * p.chunk * p.chunk;
#pragma unroll 4
    for (int e = threadIdx.x; e < SSD_T * SSD_T; e += SSD_THREADS) {
        const int r = LOWER ? e / SSD_T : e % SSD_T, s = LOWER ? e % SSD_T : e / SSD_T;
        const int i = LOWER ? r0 + r : s0 + s, j = LOWER ? s0 + s : r0 + r;
        float w = 0.0f;
        if (j <= i && i < k.q) w = cb[(long long)i * p.chunk + j] * expf(sm.cum[i] - sm.cum[j]) * (DT ? sm.dt[j] : 1.0f);
        sm.m[r][s] = w;
    }
}

// Sum over the 4 lanes of a warp that share a row of the tile (t = lane % 4); the tile's 4
// warps of a row band each add their own part.
__device__ __forceinline__ float row_sum4(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Sum over the warp, atomically added to *dst by lane 0.
__device__ __forceinline__ void warp_atomic_add(float* dst, float v) {
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (threadIdx.x % 32 == 0) atomicAdd(dst, v);
}

// The tile of a grid.x index: chunk c, then row tile, then column tile.
struct TileIndex {
    int c, r0, s0;
    __device__ TileIndex(int rows, int cols) {
        const int tr = (rows + SSD_T - 1) / SSD_T, tc = (cols + SSD_T - 1) / SSD_T;
        const int x = blockIdx.x;
        c = x / (tr * tc);
        r0 = (x / tc) % tr * SSD_T;
        s0 = x % tc * SSD_T;
    }
};

// Each tile kernel comes twice: NAME_f32 makes its products at f32 accuracy (3xTF32) and
// NAME_tf32 in one tf32 pass (10-bit mantissas in, f32 accumulation: ~1e-3 relative, the
// precision of PyTorch's allow_tf32 and of the reference's Triton kernels for f32 inputs). The
// body is a template on E (exact); the launcher picks the kernel by the op's precision.
#define SSD_TILE_KERNEL(name, blocks, ...)                                                                 \
    template <bool E>                                                                                     \
    __device__ __forceinline__ void name##_body(const SsdParams& p) {                                     \
        __VA_ARGS__;                                                                                      \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(SSD_THREADS, blocks) name##_f32(const __grid_constant__ SsdParams p) { \
        name##_body<true>(p);                                                                             \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(SSD_THREADS, blocks) name##_tf32(const __grid_constant__ SsdParams p) { \
        name##_body<false>(p);                                                                            \
    }

// ------------------------------------------------------------------ C B^T, once per group
// Grid (nc * tiles(Q)^2, g, b): cb[b, c, g, i, j] = C_i . B_j for the chunk's causal tiles (j's
// tile <= i's); the tiles above the diagonal are never read. Every head of the group reuses it.
template <bool EXACT>
__device__ void chunk_cb(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.chunk);
    const int b = blockIdx.z, g = blockIdx.y, t0 = ti.c * p.chunk, q = min(p.chunk, p.len - t0);
    if (ti.s0 > ti.r0 || ti.r0 >= q) return;  // above the diagonal, or past the short last chunk
    const auto row = [&](int t) { return (((long long)b * p.len + t0 + t) * p.groups + g) * p.state; };
    // the operands' first rows, their stride along t, and how many rows are left
    const float *cs = p.Cm + row(ti.r0), *bs = p.Bm + row(ti.s0);
    const int rs = p.groups * p.state;  // the stride along t (Q rs fits an int: the launcher checks)
    const int rl = q - ti.r0, sl = q - ti.s0;
    float acc[4][4];
    zero_tile(acc);
    mma_tile<EXACT, true, true>(
        acc, p.state, sm, [&](int r, int n) { return r < rl ? cs[r * rs + n] : 0.0f; },
        [&](int n, int s) { return s < sl ? bs[s * rs + n] : 0.0f; });
    float* dst = p.cb + (((long long)b * p.n_chunks + ti.c) * p.groups + g) * p.chunk * p.chunk;
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int i = ti.r0 + tile_row(u), j = ti.s0 + tile_col(v);
            if (i < q && j < q) dst[(long long)i * p.chunk + j] = acc[u][v];
        }
}
SSD_TILE_KERNEL(ssd_chunk_cb, 3, chunk_cb<E>(p))

// ------------------------------------------------------------------ chunk states (forward, backward)
// DSTATE false: states[c] = sum_j exp(a_Q - a_j) dt'_j x_j B_j^T  (rows p, columns n).
// DSTATE true:  dstates[c] = sum_i exp(a_i) dy_i C_i^T.
template <bool DSTATE, bool EXACT>
__device__ void chunk_state(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.headdim, p.state);
    const SsdBlock k(p, ti.c);
    chunk_prefix(p, k, sm);
    const float a_q = sm.cum[k.q - 1];
    const int t = threadIdx.x;  // each step's weight once, not once per channel
    if (t < k.q) sm.w[t] = DSTATE ? expf(sm.cum[t]) : expf(a_q - sm.cum[t]) * sm.dt[t];
    __syncthreads();
    const float* xs = (DSTATE ? (p.z ? p.dy : p.dout) : p.x) + k.xrow(p, k.t0) + ti.r0;
    const float* bs = (DSTATE ? p.Cm : p.Bm) + k.bcrow(p, k.t0) + ti.s0;
    const int xst = p.heads * p.headdim, bst = p.groups * p.state;  // strides along t
    const int rl = p.headdim - ti.r0, sl = p.state - ti.s0;
    float acc[4][4];
    zero_tile(acc);
    mma_tile<EXACT, false, false>(
        acc, k.q, sm, [&](int r, int j) { return r < rl ? xs[j * xst + r] * sm.w[j] : 0.0f; },
        [&](int j, int s) { return s < sl ? bs[j * bst + s] : 0.0f; });
    float* dst = (DSTATE ? p.dstates : p.states) + k.state_at(p);
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int pc = ti.r0 + tile_row(u), n = ti.s0 + tile_col(v);
            if (pc < p.headdim && n < p.state) dst[(long long)pc * p.state + n] = acc[u][v];
        }
    if (ti.r0 == 0 && ti.s0 == 0 && threadIdx.x == 0) p.decay[k.bh(p, p.n_chunks) + k.c] = a_q;
}

SSD_TILE_KERNEL(ssd_chunk_state, 3, chunk_state<false, E>(p))
SSD_TILE_KERNEL(ssd_chunk_dstate, 3, chunk_state<true, E>(p))

// ------------------------------------------------------------------ the passes over chunks
// One thread per state element walks the chunks in order. The loop carries the state, so the
// loads of SSD_PASS chunks go out together before the sequential part (v1 waited one memory
// round trip per chunk: 0.55 ms for a 50 MB pass at d_state 128).
#define SSD_PASS 8

// Offset of state element e of chunk c in a (b, nc, h, p, n) tensor (this block's b, h).
__device__ __forceinline__ long long pass_at(const SsdParams& p, int c, long long e) {
    return (((long long)blockIdx.z * p.n_chunks + c) * p.heads + blockIdx.y) * ((long long)p.headdim * p.state) + e;
}

// Forward: states[c] holds the chunk's own final state; turn it into the state entering the
// chunk, chunks in order, from init (or 0); the state after the last chunk into last.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_state_pass_f32(const __grid_constant__ SsdParams p) {
    const long long pn = (long long)p.headdim * p.state, e = (long long)blockIdx.x * SSD_THREADS + threadIdx.x;
    if (e >= pn) return;
    const long long bh = (long long)blockIdx.z * p.heads + blockIdx.y;
    float s = p.init ? p.init[bh * pn + e] : 0.0f;
    for (int c0 = 0; c0 < p.n_chunks; c0 += SSD_PASS) {
        float local[SSD_PASS], ea[SSD_PASS];
#pragma unroll
        for (int u = 0; u < SSD_PASS; ++u)
            if (c0 + u < p.n_chunks) {
                local[u] = p.states[pass_at(p, c0 + u, e)];
                ea[u] = expf(p.decay[bh * p.n_chunks + c0 + u]);
            }
#pragma unroll
        for (int u = 0; u < SSD_PASS; ++u)
            if (c0 + u < p.n_chunks) {
                p.states[pass_at(p, c0 + u, e)] = s;
                s = fmaf(ea[u], s, local[u]);
            }
    }
    p.last[bh * pn + e] = s;
}

// Backward: dstates[c] holds sum_i exp(a_i) dy_i C_i^T; turn it into dS_end (the gradient of
// the state leaving chunk c), chunks newest first from dlast; add exp(a_Q) <dS_end, S_in> to
// kdot[c] (summed over the block first: one atomic per block and chunk); the gradient of the
// state entering chunk 0 into dinit.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_dstate_pass_f32(const __grid_constant__ SsdParams p) {
    __shared__ float part[SSD_WARPS][SSD_PASS];
    const long long pn = (long long)p.headdim * p.state, e = (long long)blockIdx.x * SSD_THREADS + threadIdx.x;
    const bool live = e < pn;  // every thread stays for the block sums
    const long long bh = (long long)blockIdx.z * p.heads + blockIdx.y;
    float ds = live ? p.dlast[bh * pn + e] : 0.0f;
    for (int c1 = p.n_chunks - 1; c1 >= 0; c1 -= SSD_PASS) {
        float local[SSD_PASS], st[SSD_PASS], ea[SSD_PASS], k[SSD_PASS];
#pragma unroll
        for (int u = 0; u < SSD_PASS; ++u) {
            const int c = c1 - u;
            local[u] = st[u] = k[u] = 0.0f, ea[u] = 0.0f;
            if (c < 0) continue;
            ea[u] = expf(p.decay[bh * p.n_chunks + c]);
            if (live) local[u] = p.dstates[pass_at(p, c, e)], st[u] = p.states[pass_at(p, c, e)];
        }
#pragma unroll
        for (int u = 0; u < SSD_PASS; ++u) {
            const int c = c1 - u;
            if (c < 0) continue;
            if (live) p.dstates[pass_at(p, c, e)] = ds;
            k[u] = ea[u] * ds * st[u];
            ds = fmaf(ea[u], ds, local[u]);
        }
#pragma unroll
        for (int u = 0; u < SSD_PASS; ++u) {
#pragma unroll
            for (int off = 16; off >= 1; off >>= 1) k[u] += __shfl_xor_sync(0xffffffffu, k[u], off);
            if (threadIdx.x % 32 == 0) part[threadIdx.x / 32][u] = k[u];
        }
        __syncthreads();
        if (threadIdx.x < SSD_PASS && c1 - (int)threadIdx.x >= 0) {
            float sum = 0.0f;
            for (int w = 0; w < SSD_WARPS; ++w) sum += part[w][threadIdx.x];
            atomicAdd(p.kdot + bh * p.n_chunks + c1 - threadIdx.x, sum);
        }
        __syncthreads();  // part is rewritten by the next batch
    }
    if (live && p.dinit) p.dinit[bh * pn + e] = ds;
}

// ------------------------------------------------------------------ the chunk's output
// Y tile (rows i, columns p) = exp(a_i) C_i S_in^T + sum_{j <= i} [exp(a_i - a_j) dt'_j C_i . B_j] x_j,
// then y = Y + D x. GRAD false: out = y silu(z) (or y). GRAD true: dy = dout silu(z), dz.
template <bool GRAD, bool EXACT>
__device__ void chunk_out(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.headdim);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;  // a row tile past the short last chunk
    chunk_prefix(p, k, sm);
    const float* s_in = p.states + k.state_at(p) + (long long)ti.s0 * p.state;
    const float* cs = p.Cm + k.bcrow(p, k.t0 + ti.r0);
    const int xst = p.heads * p.headdim, bst = p.groups * p.state;  // strides along t
    const int rl = k.q - ti.r0, sl = p.headdim - ti.s0;
    float acc[4][4];
    zero_tile(acc);
    mma_tile<EXACT, true, true, SSD_KT_WIDE>(
        acc, p.state, sm, [&](int r, int n) { return r < rl ? cs[r * bst + n] : 0.0f; },
        [&](int n, int s) { return s < sl ? s_in[s * p.state + n] : 0.0f; });
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const float e = expf(sm.cum[min(ti.r0 + tile_row(u), SSD_MAX_CHUNK - 1)]);
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] *= e;
    }
    for (int j0 = 0; j0 <= ti.r0; j0 += SSD_T) {
        tile_async(sm, p.x + k.xrow(p, k.t0 + j0) + ti.s0, xst, k.q - j0, sl);  // x_j, while masking
        mask_cb<true, true>(p, k, ti.r0, j0, sm);
        ssd_cp_async_wait();
        __syncthreads();
        mma_smem<EXACT>(acc, sm);
        __syncthreads();  // sm.m and sm.bt are rewritten next
    }
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int i = ti.r0 + tile_row(u), pc = ti.s0 + tile_col(v);
            if (i >= k.q || pc >= p.headdim) continue;
            const long long o = k.xrow(p, k.t0 + i) + pc;
            const float y = fmaf(p.Dskip[k.hh], p.x[o], acc[u][v]);
            if (!GRAD) {
                p.out[o] = p.z ? y * p.z[o] * ssd_sigmoid(p.z[o]) : y;
            } else {
                const float zt = p.z[o], s = ssd_sigmoid(zt), g = p.dout[o];
                p.dy[o] = g * zt * s;
                p.dz[o] = g * y * s * (1.0f + zt * (1.0f - s));
            }
        }
}

SSD_TILE_KERNEL(ssd_chunk_out, 2, chunk_out<false, E>(p))
SSD_TILE_KERNEL(ssd_chunk_gate_grad, 2, chunk_out<true, E>(p))

// ------------------------------------------------------------------ backward: dX' and dx
// dX' tile (rows j, columns p) = exp(a_Q - a_j) B_j dS_end^T + sum_{i >= j} [exp(a_i - a_j) B_j . C_i] dy_i;
// dx = dt'_j dX' + D dy; xdx[t] += x_j . dX'_j; dD += dy . x.
template <bool EXACT>
__device__ void chunk_dx(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.headdim);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;
    chunk_prefix(p, k, sm);
    const float* ds_end = p.dstates + k.state_at(p) + (long long)ti.s0 * p.state;
    const float* dys = p.z ? p.dy : p.dout;
    const float* bs = p.Bm + k.bcrow(p, k.t0 + ti.r0);
    const int xst = p.heads * p.headdim, bst = p.groups * p.state;  // strides along t
    const int rl = k.q - ti.r0, sl = p.headdim - ti.s0;
    float acc[4][4];
    zero_tile(acc);
    mma_tile<EXACT, true, true, SSD_KT_WIDE>(
        acc, p.state, sm, [&](int r, int n) { return r < rl ? bs[r * bst + n] : 0.0f; },
        [&](int n, int s) { return s < sl ? ds_end[s * p.state + n] : 0.0f; });
    const float a_q = sm.cum[k.q - 1];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const float e = expf(a_q - sm.cum[min(ti.r0 + tile_row(u), SSD_MAX_CHUNK - 1)]);
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] *= e;
    }
    for (int i0 = ti.r0; i0 < k.q; i0 += SSD_T) {
        tile_async(sm, dys + k.xrow(p, k.t0 + i0) + ti.s0, xst, k.q - i0, sl);  // dy_i, while masking
        mask_cb<false, false>(p, k, ti.r0, i0, sm);
        ssd_cp_async_wait();
        __syncthreads();
        mma_smem<EXACT>(acc, sm);
        __syncthreads();
    }
    float dd = 0.0f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int j = ti.r0 + tile_row(u);
        float xd = 0.0f;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int pc = ti.s0 + tile_col(v);
            if (j >= k.q || pc >= p.headdim) continue;
            const long long o = k.xrow(p, k.t0 + j) + pc;
            const float x = p.x[o], g = dys[o];
            p.dx[o] = fmaf(sm.dt[j], acc[u][v], p.Dskip[k.hh] * g);
            xd = fmaf(x, acc[u][v], xd);
            dd = fmaf(g, x, dd);
        }
        xd = row_sum4(xd);
        if (threadIdx.x % 4 == 0 && j < k.q) atomicAdd(p.xdx + k.bh(p, p.len) + k.t0 + j, xd);
    }
    warp_atomic_add(p.dD + k.hh, dd);
}
SSD_TILE_KERNEL(ssd_chunk_dx, 2, chunk_dx<E>(p))

// ------------------------------------------------------------------ backward: dC and dB
// The gradient of C (DB false; tile rows i) or of B (DB true; rows j), columns n:
//   dC_i = exp(a_i) dy_i^T S_in + sum_{j <= i} [exp(a_i - a_j) dt'_j dy_i . x_j] B_j;  da[t_i] += C_i . dC_i
//   dB_j = exp(a_Q - a_j) dt'_j x_j^T dS_end + sum_{i >= j} [exp(a_i - a_j) dt'_j x_j . dy_i] C_i;
//          da[t_j] -= B_j . dB_j;  kdot[c] += sum_j B_j . (the first term)
// added into dC / dB with atomics (the heads of a group share B and C).
template <bool DB, bool EXACT>
__device__ void chunk_dbc(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.state);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;
    chunk_prefix(p, k, sm);
    const float* dys = p.z ? p.dy : p.dout;
    const float* rows = DB ? p.x : dys;  // the tile's rows, and what they meet in the (Q, Q) product
    const float* meets = DB ? dys : p.x;
    const float* state = (DB ? p.dstates : p.states) + k.state_at(p) + ti.s0;  // dS_end or S_in
    const float* own = DB ? p.Bm : p.Cm;                                        // whose gradient this is
    const float* other = DB ? p.Cm : p.Bm;
    const float* rp = rows + k.xrow(p, k.t0 + ti.r0);
    const int xst = p.heads * p.headdim, bst = p.groups * p.state;  // strides along t
    const int rl = k.q - ti.r0, sl = p.state - ti.s0;
    float acc[4][4], m[4][4];
    zero_tile(acc);
    const auto row_of = [&](int r, int pc) { return r < rl ? rp[r * xst + pc] : 0.0f; };
    mma_tile<EXACT, true, false>(acc, p.headdim, sm, row_of,
                                 [&](int pc, int s) { return s < sl ? state[pc * p.state + s] : 0.0f; });
    const float a_q = sm.cum[k.q - 1];
    float kd = 0.0f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int t = min(ti.r0 + tile_row(u), SSD_MAX_CHUNK - 1);
        const float e = DB ? expf(a_q - sm.cum[t]) * sm.dt[t] : expf(sm.cum[t]);
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            acc[u][v] *= e;
            const int n = ti.s0 + tile_col(v);
            if (DB && ti.r0 + tile_row(u) < k.q && n < p.state) kd = fmaf(own[k.bcrow(p, k.t0 + t) + n], acc[u][v], kd);
        }
    }
    if (DB) warp_atomic_add(p.kdot + k.bh(p, p.n_chunks) + k.c, kd);
    // the other step's tiles: j <= i for dC, i >= j for dB
    for (int o0 = DB ? ti.r0 : 0; DB ? o0 < k.q : o0 <= ti.r0; o0 += SSD_T) {
        const float* ms = meets + k.xrow(p, k.t0 + o0);
        const int ol = k.q - o0;
        tile_async(sm, other + k.bcrow(p, k.t0 + o0) + ti.s0, bst, ol, sl);  // during the first product
        zero_tile(m);
        mma_tile<EXACT, true, true>(m, p.headdim, sm, row_of,
                                    [&](int pc, int s) { return s < ol ? ms[s * xst + pc] : 0.0f; });
        mask_tile<!DB, true>(m, ti.r0, o0, k.q, sm);
        ssd_cp_async_wait();
        __syncthreads();
        mma_smem<EXACT>(acc, sm);
        __syncthreads();
    }
    float* grad = DB ? p.dB : p.dC;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int t = ti.r0 + tile_row(u);
        float d = 0.0f;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int n = ti.s0 + tile_col(v);
            if (t >= k.q || n >= p.state) continue;
            const long long o = k.bcrow(p, k.t0 + t) + n;
            atomicAdd(grad + o, acc[u][v]);
            d = fmaf(own[o], acc[u][v], d);
        }
        d = row_sum4(d);
        if (threadIdx.x % 4 == 0 && t < k.q) atomicAdd(p.da + k.bh(p, p.len) + k.t0 + t, DB ? -d : d);
    }
}

SSD_TILE_KERNEL(ssd_chunk_dc, 2, chunk_dbc<false, E>(p))
SSD_TILE_KERNEL(ssd_chunk_db, 2, chunk_dbc<true, E>(p))

// ------------------------------------------------------------------ backward: the decays
// Grid (nc, h, b), thread i = step i of the chunk: dalpha_i = sum_{k >= i} da_k (+ kdot[c], which
// belongs to the last step and so to every dalpha), d(dt') = xdx + A dalpha, ddt = d(dt')
// sigmoid(dt + dt_bias); dA += dt' dalpha; d(dt_bias) += ddt.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_finish_f32(const __grid_constant__ SsdParams p) {
    __shared__ SsdSmem sm;
    const SsdBlock k(p, blockIdx.x);
    const int i = threadIdx.x;
    const bool live = i < k.q;
    const long long row = k.bh(p, p.len) + k.t0 + i;
    float da = 0.0f, raw = 0.0f;
    if (live) {
        da = p.da[row] + (i == k.q - 1 ? p.kdot[k.bh(p, p.n_chunks) + k.c] : 0.0f);
        raw = p.dt[((long long)k.b * p.len + k.t0 + i) * p.heads + k.hh] + p.dt_bias[k.hh];
    }
    const float dalpha = block_scan<true>(da, sm);
    float gA = 0.0f, gbias = 0.0f;
    if (live) {
        const float g = (p.xdx[row] + p.A[k.hh] * dalpha) * ssd_sigmoid(raw);
        p.ddt[((long long)k.b * p.len + k.t0 + i) * p.heads + k.hh] = g;
        gA = ssd_softplus(raw) * dalpha;
        gbias = g;
    }
    warp_atomic_add(p.dA + k.hh, gA);
    warp_atomic_add(p.ddt_bias + k.hh, gbias);
}
