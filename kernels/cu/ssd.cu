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
// Kernels, in launch order (every block 256 threads; "tile" = 64 x 64 outputs, 4 x 4 per thread,
// k-slices of 16 staged in shared memory; the (Q, Q) products are made 64 x 64 tile by tile,
// masked and scaled in shared memory, then multiplied on; causal tiles above the diagonal skipped):
// forward
//   ssd_chunk_state_f32   grid (nc * tiles(p) * tiles(n), h, b): the chunk's own final state from
//                         zero, sum_j exp(a_Q - a_j) dt'_j x_j B_j^T, into states; a_Q into decay
//   ssd_state_pass_f32    grid (ceil(p n / 256), h, b), one thread per state element, chunks in
//                         order: states[c] <- S_in, S_in <- exp(a_Q) S_in + local; last
//   ssd_chunk_out_f32     grid (nc * tiles(Q) * tiles(p), h, b): Y tile (rows i, columns p), D x,
//                         the gate; writes out
// backward (dy = dout without z)
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
//
// Checked without a GPU by kernels/tools/emu/ssd.sh (these kernels on the CPU, one OS thread per
// CUDA thread, against a float64 recurrence); on the GPU by gpu-check (tests/gpu_check/ssd.rs and
// the op's gradient-check cases), against the CPU twin.
//
// Resources (ptxas, sm_90): the tile kernels 120-128 registers under __launch_bounds__(256, 2)
// (two blocks, 16 warps per SM; the k-loop unrolled by 2 keeps ssd_chunk_db_f32 from spilling),
// ssd_chunk_(d)state_f32 80, the passes 28 and 37, finish 30; no spills; 27 KB of static shared
// memory per block (two 16 x 64 k-slices, one 64 x 64 masked tile, the chunk's dt' and a).
//
// Napkin math at the benchmark shape (b 8, L 2048, h 24, p 64, g 1, n 64, Q 256: nc 8, f32):
//   bytes: x, z, out 100.7 MB each, B, C 4.2 MB each, states 25.2 MB; forward reads x, z, B, C,
//   states twice and writes out, states: ~0.4 GB -> ~0.1 ms at ~4 TB/s. Backward reads x, z, dout,
//   dy (x 2-3), B, C, states, dstates and writes dx, dz, dy, dB, dC: ~1 GB -> ~0.3 ms.
//   FLOPs per (b, chunk, head), counting the 10 of 16 causal tiles computed at Q = 256:
//   C B^T 5.2 M, its product with X' 5.2 M, S_in C 2.1 M, chunk state 2.1 M -> forward 14.7 M x
//   1536 = 22.6 GFLOP; backward ~5 x that (the gate's recompute, dS_loc, dX', dC, dB each one or
//   two such products) ~ 80 GFLOP. On CUDA cores (H200 fp32 ~60 TFLOP/s peak, ~15-25 reached by a
//   4 x 4 register tile fed from shared memory) that is ~1-1.5 ms forward and ~4-5 ms backward:
//   compute bound, against the reference Triton's 0.84 ms and 6.18 ms (fwd+bwd). Tensor cores
//   (tf32, or bf16 in the bf16 issue) and fusing the five (Q, Q) recomputations are the speed work.

#define SSD_THREADS 256
#define SSD_T 64           // tile rows and columns
#define SSD_KT 16          // k-slice staged per step
#define SSD_MAX_CHUNK 256  // one thread per step of a chunk in the prefix and finish
#define SSD_WARPS (SSD_THREADS / 32)

// The parameter of every SSD kernel: `SsdParams` in launch/ssd.rs, same fields. Pointers a
// kernel does not use are null (z, init, dinit, dz, dy when there is no gate or initial state).
struct SsdParams {
    const float *x, *dt, *A, *Bm, *Cm, *Dskip, *dt_bias, *z, *init;
    float *out, *last, *states;
    const float *dout, *dlast;
    float *dy, *dstates, *decay, *kdot, *xdx, *da;
    float *dx, *ddt, *dA, *dB, *dC, *dD, *ddt_bias, *dz, *dinit;
    int batch, len, heads, headdim, groups, state, chunk, n_chunks;
};
static_assert(sizeof(SsdParams) == 264, "SsdParams: launch/ssd.rs has 264 bytes");

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable for any x (as the CPU twin).
__device__ __forceinline__ float ssd_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float ssd_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

struct SsdSmem {
    float a[SSD_KT][SSD_T + 1];  // k-slice of the left operand, as (k, row)
    float b[SSD_KT][SSD_T + 1];  // k-slice of the right operand, as (k, column)
    float m[SSD_T][SSD_T + 1];   // a masked (Q, Q) tile
    float dt[SSD_MAX_CHUNK];     // dt' of the chunk's steps (0 past its end)
    float cum[SSD_MAX_CHUNK];    // a_i (a_{q-1} past its end)
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

// acc (this thread's 4 x 4 of a 64 x 64 tile) += sum_{k < K} fa(row, k) fb(k, col), with
// rows ty + 16 u, columns tx + 16 v. fa / fb return 0 outside the operand. A_KFAST / B_KFAST:
// consecutive threads load consecutive k (the operand is contiguous along k), else
// consecutive rows / columns. Every thread must call it; it starts and ends synchronised.
template <bool A_KFAST, bool B_KFAST, class FA, class FB>
__device__ __forceinline__ void mma_tile(float (&acc)[4][4], int K, SsdSmem& sm, FA fa, FB fb) {
    const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
    for (int k0 = 0; k0 < K; k0 += SSD_KT) {
#pragma unroll
        for (int m = 0; m < SSD_T * SSD_KT / SSD_THREADS; ++m) {
            const int e = tid + SSD_THREADS * m;
            const int ar = A_KFAST ? e / SSD_KT : e % SSD_T, ak = A_KFAST ? e % SSD_KT : e / SSD_T;
            sm.a[ak][ar] = k0 + ak < K ? fa(ar, k0 + ak) : 0.0f;
            const int bc = B_KFAST ? e / SSD_KT : e % SSD_T, bk = B_KFAST ? e % SSD_KT : e / SSD_T;
            sm.b[bk][bc] = k0 + bk < K ? fb(k0 + bk, bc) : 0.0f;
        }
        __syncthreads();
#pragma unroll 2  // fully unrolled, the loads hoisted make ssd_chunk_db_f32 spill at 128 registers
        for (int k = 0; k < SSD_KT; ++k) {
            float av[4], bv[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) av[u] = sm.a[k][ty + 16 * u];
#pragma unroll
            for (int v = 0; v < 4; ++v) bv[v] = sm.b[k][tx + 16 * v];
#pragma unroll
            for (int u = 0; u < 4; ++u)
#pragma unroll
                for (int v = 0; v < 4; ++v) acc[u][v] = fmaf(av[u], bv[v], acc[u][v]);
        }
        __syncthreads();
    }
}

__device__ __forceinline__ void zero_tile(float (&acc)[4][4]) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = 0.0f;
}

// m (a 64 x 64 tile of a (Q, Q) product, rows r0.., columns s0.., both chunk-local) masked to
// the causal part and scaled, into sm.m. LOWER: keep column j <= row i (rows are the later step),
// weight exp(a_i - a_j) * (DT ? dt'_j : 1); else keep column i >= row j (rows are the earlier
// step), weight exp(a_i - a_j) * (DT ? dt'_j : 1) with j the row. Rows and columns past q are 0.
template <bool LOWER, bool DT>
__device__ __forceinline__ void mask_tile(const float (&m)[4][4], int r0, int s0, int q, SsdSmem& sm) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int r = r0 + ty + 16 * u, s = s0 + tx + 16 * v;
            const int i = LOWER ? r : s, j = LOWER ? s : r;  // i: the later step, j: the earlier
            float w = 0.0f;
            if (j <= i && i < q) w = m[u][v] * expf(sm.cum[i] - sm.cum[j]) * (DT ? sm.dt[j] : 1.0f);
            sm.m[ty + 16 * u][tx + 16 * v] = w;
        }
    __syncthreads();
}

// Sum over the 16 lanes (tx) that share a row of the tile.
__device__ __forceinline__ float row_sum16(float v) {
#pragma unroll
    for (int off = 8; off >= 1; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
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

// ------------------------------------------------------------------ chunk states (forward, backward)
// DSTATE false: states[c] = sum_j exp(a_Q - a_j) dt'_j x_j B_j^T  (rows p, columns n).
// DSTATE true:  dstates[c] = sum_i exp(a_i) dy_i C_i^T.
template <bool DSTATE>
__device__ void chunk_state(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.headdim, p.state);
    const SsdBlock k(p, ti.c);
    chunk_prefix(p, k, sm);
    const float* xs = DSTATE ? (p.z ? p.dy : p.dout) : p.x;
    const float* bs = DSTATE ? p.Cm : p.Bm;
    const float a_q = sm.cum[k.q - 1];
    float acc[4][4];
    zero_tile(acc);
    mma_tile<false, false>(
        acc, k.q, sm,
        [&](int r, int j) {
            const int pc = ti.r0 + r;
            if (pc >= p.headdim) return 0.0f;
            const float w = DSTATE ? expf(sm.cum[j]) : expf(a_q - sm.cum[j]) * sm.dt[j];
            return xs[k.xrow(p, k.t0 + j) + pc] * w;
        },
        [&](int j, int s) { return ti.s0 + s < p.state ? bs[k.bcrow(p, k.t0 + j) + ti.s0 + s] : 0.0f; });
    float* dst = (DSTATE ? p.dstates : p.states) + k.state_at(p);
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int pc = ti.r0 + ty + 16 * u, n = ti.s0 + tx + 16 * v;
            if (pc < p.headdim && n < p.state) dst[(long long)pc * p.state + n] = acc[u][v];
        }
    if (ti.r0 == 0 && ti.s0 == 0 && threadIdx.x == 0) p.decay[k.bh(p, p.n_chunks) + k.c] = a_q;
}

extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_state_f32(const __grid_constant__ SsdParams p) {
    chunk_state<false>(p);
}

extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_dstate_f32(const __grid_constant__ SsdParams p) {
    chunk_state<true>(p);
}

// ------------------------------------------------------------------ the passes over chunks
// Forward: states[c] holds the chunk's own final state; turn it into the state entering the
// chunk, chunks in order, from init (or 0); the state after the last chunk into last.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_state_pass_f32(const __grid_constant__ SsdParams p) {
    const long long pn = (long long)p.headdim * p.state, e = (long long)blockIdx.x * SSD_THREADS + threadIdx.x;
    if (e >= pn) return;
    const long long bh = (long long)blockIdx.z * p.heads + blockIdx.y;
    float s = p.init ? p.init[bh * pn + e] : 0.0f;
    for (int c = 0; c < p.n_chunks; ++c) {
        const long long o = (((long long)blockIdx.z * p.n_chunks + c) * p.heads + blockIdx.y) * pn + e;
        const float local = p.states[o];
        p.states[o] = s;
        s = fmaf(expf(p.decay[bh * p.n_chunks + c]), s, local);
    }
    p.last[bh * pn + e] = s;
}

// Backward: dstates[c] holds sum_i exp(a_i) dy_i C_i^T; turn it into dS_end (the gradient of
// the state leaving chunk c), chunks newest first from dlast; add exp(a_Q) <dS_end, S_in> to
// kdot[c]; the gradient of the state entering chunk 0 into dinit.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_dstate_pass_f32(const __grid_constant__ SsdParams p) {
    const long long pn = (long long)p.headdim * p.state, e = (long long)blockIdx.x * SSD_THREADS + threadIdx.x;
    const bool live = e < pn;  // every thread stays for the warp sums
    const long long bh = (long long)blockIdx.z * p.heads + blockIdx.y;
    float ds = live ? p.dlast[bh * pn + e] : 0.0f;
    for (int c = p.n_chunks - 1; c >= 0; --c) {
        const long long o = (((long long)blockIdx.z * p.n_chunks + c) * p.heads + blockIdx.y) * pn + e;
        const float ea = expf(p.decay[bh * p.n_chunks + c]);
        float local = 0.0f, k = 0.0f;
        if (live) {
            local = p.dstates[o];
            p.dstates[o] = ds;
            k = ea * ds * p.states[o];
        }
        warp_atomic_add(p.kdot + bh * p.n_chunks + c, k);
        ds = fmaf(ea, ds, local);
    }
    if (live && p.dinit) p.dinit[bh * pn + e] = ds;
}

// ------------------------------------------------------------------ the chunk's output
// Y tile (rows i, columns p) = exp(a_i) C_i S_in^T + sum_{j <= i} [exp(a_i - a_j) dt'_j C_i . B_j] x_j,
// then y = Y + D x. GRAD false: out = y silu(z) (or y). GRAD true: dy = dout silu(z), dz.
template <bool GRAD>
__device__ void chunk_out(const SsdParams& p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.headdim);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;  // a row tile past the short last chunk
    chunk_prefix(p, k, sm);
    const float* s_in = p.states + k.state_at(p);
    float acc[4][4], m[4][4];
    zero_tile(acc);
    const auto c_rows = [&](int r, int n) { return ti.r0 + r < k.q ? p.Cm[k.bcrow(p, k.t0 + ti.r0 + r) + n] : 0.0f; };
    mma_tile<true, true>(acc, p.state, sm, c_rows, [&](int n, int s) {
        return ti.s0 + s < p.headdim ? s_in[(long long)(ti.s0 + s) * p.state + n] : 0.0f;
    });
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const float e = expf(sm.cum[min(ti.r0 + ty + 16 * u, SSD_MAX_CHUNK - 1)]);
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] *= e;
    }
    for (int j0 = 0; j0 <= ti.r0; j0 += SSD_T) {
        zero_tile(m);
        mma_tile<true, true>(m, p.state, sm, c_rows,
                             [&](int n, int s) { return j0 + s < k.q ? p.Bm[k.bcrow(p, k.t0 + j0 + s) + n] : 0.0f; });
        mask_tile<true, true>(m, ti.r0, j0, k.q, sm);
        mma_tile<true, false>(
            acc, SSD_T, sm, [&](int r, int j) { return sm.m[r][j]; },
            [&](int j, int s) {
                return j0 + j < k.q && ti.s0 + s < p.headdim ? p.x[k.xrow(p, k.t0 + j0 + j) + ti.s0 + s] : 0.0f;
            });
    }
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int i = ti.r0 + ty + 16 * u, pc = ti.s0 + tx + 16 * v;
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

extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_out_f32(const __grid_constant__ SsdParams p) {
    chunk_out<false>(p);
}

extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_gate_grad_f32(const __grid_constant__ SsdParams p) {
    chunk_out<true>(p);
}

// ------------------------------------------------------------------ backward: dX' and dx
// dX' tile (rows j, columns p) = exp(a_Q - a_j) B_j dS_end^T + sum_{i >= j} [exp(a_i - a_j) B_j . C_i] dy_i;
// dx = dt'_j dX' + D dy; xdx[t] += x_j . dX'_j; dD += dy . x.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_dx_f32(const __grid_constant__ SsdParams p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.headdim);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;
    chunk_prefix(p, k, sm);
    const float* ds_end = p.dstates + k.state_at(p);
    const float* dys = p.z ? p.dy : p.dout;
    float acc[4][4], m[4][4];
    zero_tile(acc);
    const auto b_rows = [&](int r, int n) { return ti.r0 + r < k.q ? p.Bm[k.bcrow(p, k.t0 + ti.r0 + r) + n] : 0.0f; };
    mma_tile<true, true>(acc, p.state, sm, b_rows, [&](int n, int s) {
        return ti.s0 + s < p.headdim ? ds_end[(long long)(ti.s0 + s) * p.state + n] : 0.0f;
    });
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    const float a_q = sm.cum[k.q - 1];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const float e = expf(a_q - sm.cum[min(ti.r0 + ty + 16 * u, SSD_MAX_CHUNK - 1)]);
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] *= e;
    }
    for (int i0 = ti.r0; i0 < k.q; i0 += SSD_T) {
        zero_tile(m);
        mma_tile<true, true>(m, p.state, sm, b_rows,
                             [&](int n, int s) { return i0 + s < k.q ? p.Cm[k.bcrow(p, k.t0 + i0 + s) + n] : 0.0f; });
        mask_tile<false, false>(m, ti.r0, i0, k.q, sm);
        mma_tile<true, false>(
            acc, SSD_T, sm, [&](int r, int i) { return sm.m[r][i]; },
            [&](int i, int s) {
                return i0 + i < k.q && ti.s0 + s < p.headdim ? dys[k.xrow(p, k.t0 + i0 + i) + ti.s0 + s] : 0.0f;
            });
    }
    float dd = 0.0f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int j = ti.r0 + ty + 16 * u;
        float xd = 0.0f;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int pc = ti.s0 + tx + 16 * v;
            if (j >= k.q || pc >= p.headdim) continue;
            const long long o = k.xrow(p, k.t0 + j) + pc;
            const float x = p.x[o], g = dys[o];
            p.dx[o] = fmaf(sm.dt[j], acc[u][v], p.Dskip[k.hh] * g);
            xd = fmaf(x, acc[u][v], xd);
            dd = fmaf(g, x, dd);
        }
        xd = row_sum16(xd);
        if (tx == 0 && j < k.q) atomicAdd(p.xdx + k.bh(p, p.len) + k.t0 + j, xd);
    }
    warp_atomic_add(p.dD + k.hh, dd);
}

// ------------------------------------------------------------------ backward: dC and dB
// dC tile (rows i, columns n) = exp(a_i) dy_i^T S_in + sum_{j <= i} [exp(a_i - a_j) dt'_j dy_i . x_j] B_j;
// dC += it (the heads of a group share it); da[t_i] += C_i . dC_i.
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_dc_f32(const __grid_constant__ SsdParams p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.state);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;
    chunk_prefix(p, k, sm);
    const float* s_in = p.states + k.state_at(p);
    const float* dys = p.z ? p.dy : p.dout;
    float acc[4][4], m[4][4];
    zero_tile(acc);
    const auto dy_rows = [&](int r, int pc) { return ti.r0 + r < k.q ? dys[k.xrow(p, k.t0 + ti.r0 + r) + pc] : 0.0f; };
    mma_tile<true, false>(acc, p.headdim, sm, dy_rows, [&](int pc, int s) {
        return ti.s0 + s < p.state ? s_in[(long long)pc * p.state + ti.s0 + s] : 0.0f;
    });
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const float e = expf(sm.cum[min(ti.r0 + ty + 16 * u, SSD_MAX_CHUNK - 1)]);
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] *= e;
    }
    for (int j0 = 0; j0 <= ti.r0; j0 += SSD_T) {
        zero_tile(m);
        mma_tile<true, true>(m, p.headdim, sm, dy_rows,
                             [&](int pc, int s) { return j0 + s < k.q ? p.x[k.xrow(p, k.t0 + j0 + s) + pc] : 0.0f; });
        mask_tile<true, true>(m, ti.r0, j0, k.q, sm);
        mma_tile<true, false>(
            acc, SSD_T, sm, [&](int r, int j) { return sm.m[r][j]; },
            [&](int j, int s) {
                return j0 + j < k.q && ti.s0 + s < p.state ? p.Bm[k.bcrow(p, k.t0 + j0 + j) + ti.s0 + s] : 0.0f;
            });
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int i = ti.r0 + ty + 16 * u;
        float cd = 0.0f;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int n = ti.s0 + tx + 16 * v;
            if (i >= k.q || n >= p.state) continue;
            const long long o = k.bcrow(p, k.t0 + i) + n;
            atomicAdd(p.dC + o, acc[u][v]);
            cd = fmaf(p.Cm[o], acc[u][v], cd);
        }
        cd = row_sum16(cd);
        if (tx == 0 && i < k.q) atomicAdd(p.da + k.bh(p, p.len) + k.t0 + i, cd);
    }
}

// dB tile (rows j, columns n) = exp(a_Q - a_j) dt'_j x_j^T dS_end + sum_{i >= j} [exp(a_i - a_j) dt'_j x_j . dy_i] C_i;
// dB += it; da[t_j] -= B_j . dB_j; kdot[c] += sum_j B_j . dB^state_j (the first term).
extern "C" __global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_db_f32(const __grid_constant__ SsdParams p) {
    __shared__ SsdSmem sm;
    const TileIndex ti(p.chunk, p.state);
    const SsdBlock k(p, ti.c);
    if (ti.r0 >= k.q) return;
    chunk_prefix(p, k, sm);
    const float* ds_end = p.dstates + k.state_at(p);
    const float* dys = p.z ? p.dy : p.dout;
    float acc[4][4], m[4][4];
    zero_tile(acc);
    const auto x_rows = [&](int r, int pc) { return ti.r0 + r < k.q ? p.x[k.xrow(p, k.t0 + ti.r0 + r) + pc] : 0.0f; };
    mma_tile<true, false>(acc, p.headdim, sm, x_rows, [&](int pc, int s) {
        return ti.s0 + s < p.state ? ds_end[(long long)pc * p.state + ti.s0 + s] : 0.0f;
    });
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    const float a_q = sm.cum[k.q - 1];
    float kd = 0.0f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int j = min(ti.r0 + ty + 16 * u, SSD_MAX_CHUNK - 1);
        const float e = expf(a_q - sm.cum[j]) * sm.dt[j];
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            acc[u][v] *= e;
            const int n = ti.s0 + tx + 16 * v;
            if (ti.r0 + ty + 16 * u < k.q && n < p.state) kd = fmaf(p.Bm[k.bcrow(p, k.t0 + j) + n], acc[u][v], kd);
        }
    }
    warp_atomic_add(p.kdot + k.bh(p, p.n_chunks) + k.c, kd);
    for (int i0 = ti.r0; i0 < k.q; i0 += SSD_T) {
        zero_tile(m);
        mma_tile<true, true>(m, p.headdim, sm, x_rows,
                             [&](int pc, int s) { return i0 + s < k.q ? dys[k.xrow(p, k.t0 + i0 + s) + pc] : 0.0f; });
        mask_tile<false, true>(m, ti.r0, i0, k.q, sm);
        mma_tile<true, false>(
            acc, SSD_T, sm, [&](int r, int i) { return sm.m[r][i]; },
            [&](int i, int s) {
                return i0 + i < k.q && ti.s0 + s < p.state ? p.Cm[k.bcrow(p, k.t0 + i0 + i) + ti.s0 + s] : 0.0f;
            });
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int j = ti.r0 + ty + 16 * u;
        float bd = 0.0f;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int n = ti.s0 + tx + 16 * v;
            if (j >= k.q || n >= p.state) continue;
            const long long o = k.bcrow(p, k.t0 + j) + n;
            atomicAdd(p.dB + o, acc[u][v]);
            bd = fmaf(p.Bm[o], acc[u][v], bd);
        }
        bd = row_sum16(bd);
        if (tx == 0 && j < k.q) atomicAdd(p.da + k.bh(p, p.len) + k.t0 + j, -bd);
    }
}

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
