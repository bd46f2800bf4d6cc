// Batched, strided matrix product C[b] = A[b] B[b] (f32): the CUDA twin of
// engine/src/ops/matmul/cpu.rs (`matmul`). No cuBLAS: a classic tiled SGEMM.
//
// Operands: A[b] is (M, K), B[b] is (K, N), each at a batch stride (0 = broadcast over the
// batch) and either row-major ("n": element (r, c) at r * ld + c) or column-major ("t":
// at r + c * ld) with any leading dimension ld; C is contiguous (nb, M, N). One kernel per
// (A layout, B layout) pair and version: matmul_v{1,2}_{nn,nt,tn,tt}_f32 (templates), so the
// only thing a layout changes is how a tile is staged in shared memory; the FMA loop is the
// same. 16-byte loads are used only where the launcher says the base pointer, ld and batch
// stride keep every float4 aligned (views can start at any element); otherwise, and at
// every edge, loads are bounds-checked scalars (zero outside the matrix), so any shape works.
//
// Napkin math at M = N = K = 4096: 2 M N K = 137.4 GFLOP; the H100's non-tensor f32 rate
// (cuBLAS reaches ~50 TFLOP/s) makes it compute bound: ~2.7 ms at cuBLAS speed, while the
// bytes (3 x 64 MiB once) would take ~70 us. The Mamba in_proj (2048 x 768 x 3072) is
// 9.7 GFLOP, ~0.2 ms at cuBLAS speed.
//
// Both versions: a 256-thread block computes a 128 x 128 tile of C, marching over K in
// steps of 8. Per step the block stages A's 128 x 8 slice and B's 8 x 128 slice in shared
// memory as S[k][x] (x = the row of A or the column of B), one float4 per thread each:
// where the operand is contiguous along k (A row-major, B column-major) a thread reads 4
// consecutive k of one x and stores them transposed; otherwise 4 consecutive x of one k,
// stored as they are. Every thread then accumulates an 8 x 8 sub-tile of C in registers
// from 8 + 8 shared values per k (64 FMAs per 16 shared reads).
//   v1: one shared buffer (load, sync, compute, sync); a thread's 8 x 8 tile is contiguous.
//       The former row-major-only `matmul_f32` (33.5 TFLOP/s at 4096^3, 67% of cuBLAS),
//       now strided: 127 registers under a 2-blocks-per-SM bound (it had 111: same occupancy).
//   v2: two shared buffers: the next slice is fetched into registers before computing on
//       this one and stored to the other buffer after (one sync per step, global latency
//       hidden behind 512 FMAs); a thread's tile is 2 x 2 blocks of 4 x 4 spaced 64 apart,
//       read as float4 with no bank conflicts; the shared rows are padded by 4 floats so the
//       transposed stores do not conflict either. 2 blocks per SM (<= 128 registers).
//       Prediction (not yet measured): 75-85% of cuBLAS at 4096^3.
// Launch: grid (ceil(N/128), ceil(M/128), nb), block 256; the launcher splits a batch of
// more than 65535 matrices into several launches (offset base pointers).
// For M <= 8 (generation, batch 1) the engine runs matmul_small_m_{nt,nn}_f32 instead
// (GEMV-style, reading B once with every SM busy): see the end of this file.

#define BM 128
#define BN 128
#define BK 8
#define THREADS 256

// One operand's share of staging: each thread owns one float4 of every 128 (x) x 8 (k)
// slice, x being the row of A or the column of B. KINNER: the operand is contiguous along
// k (A row-major, B column-major): the thread reads 4 consecutive k of one x and stores
// them transposed into S[k][x]; otherwise 4 consecutive x of one k, stored as they are.
// The thread's pointer walks along k (8 elements or 8 rows per slice), so the loop does
// no 64-bit index math; loads outside the matrix read as zero.
template <bool KINNER>
struct Stager {
    const float* p;  // the thread's first element of the current slice
    long long step;  // elements from one slice to the next
    int x_left;      // elements of the matrix left along x from the thread's first x
    int k;           // the thread's first k in the current slice
    bool vec;        // 16-byte loads are aligned (base, ld and batch stride checked by the launcher)

    __device__ __forceinline__ Stager(const float* __restrict__ P, long long ld, int x0, int X, bool vec_ok, int tid) {
        const int x = KINNER ? x0 + tid / 2 : x0 + (tid % 32) * 4;
        k = KINNER ? (tid % 2) * 4 : tid / 32;
        p = KINNER ? P + (long long)x * ld + k : P + (long long)k * ld + x;
        step = KINNER ? BK : BK * ld;
        x_left = X - x;
        vec = vec_ok;
    }

    // This thread's float4 of the current slice (K: the operand's k extent); then step on.
    __device__ __forceinline__ float4 fetch(int K) {
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        // Elements along the contiguous axis that are inside the matrix (0..4), if any.
        const int inner_left = KINNER ? (x_left > 0 ? K - k : 0) : (k < K ? x_left : 0);
        if (vec && inner_left >= 4) {
            v = *reinterpret_cast<const float4*>(p);
        } else if (inner_left > 0) {
            v.x = p[0];
            v.y = inner_left > 1 ? p[1] : 0.f;
            v.z = inner_left > 2 ? p[2] : 0.f;
            v.w = inner_left > 3 ? p[3] : 0.f;
        }
        p += step;
        k += BK;
        return v;
    }
};

// Store what `fetch` returned into S[k * LD + x].
template <bool KINNER, int LD>
__device__ __forceinline__ void stash(float* S, float4 v, int tid) {
    if (KINNER) {
        const int x = tid / 2, k = (tid % 2) * 4;
        S[(k + 0) * LD + x] = v.x;
        S[(k + 1) * LD + x] = v.y;
        S[(k + 2) * LD + x] = v.z;
        S[(k + 3) * LD + x] = v.w;
    } else {
        *reinterpret_cast<float4*>(&S[(tid / 32) * LD + (tid % 32) * 4]) = v;
    }
}

// Store 4 consecutive values of row r of C (row length N) from column c on.
__device__ __forceinline__ void store4(float* C, int M, int N, int r, int c, float4 v, bool vec) {
    if (r >= M) return;
    float* p = C + (long long)r * N + c;
    if (vec && c + 3 < N) {
        *reinterpret_cast<float4*>(p) = v;
    } else {
        if (c < N) p[0] = v.x;
        if (c + 1 < N) p[1] = v.y;
        if (c + 2 < N) p[2] = v.z;
        if (c + 3 < N) p[3] = v.w;
    }
}

// Flags: bit 0: A's float4 loads are aligned, bit 1: B's, bit 2: C's float4 stores.
#define VEC_A 1
#define VEC_B 2
#define VEC_C 4

// ---------------------------------------------------------------------------------------
// Version 1: single-buffered, contiguous 8 x 8 thread tile.
template <bool AT, bool BT>
__device__ __forceinline__ void tile_v1(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                                        int M, int N, int K, long long lda, long long ldb, int flags) {
    __shared__ __align__(16) float As[BK * BM];  // As[k][m]
    __shared__ __align__(16) float Bs[BK * BN];  // Bs[k][n]
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int thread_row = tid / 16, thread_col = tid % 16;  // 16 x 16 threads, 8 x 8 each
    Stager<!AT> sa(A, lda, row0, M, flags & VEC_A, tid);
    Stager<BT> sb(B, ldb, col0, N, flags & VEC_B, tid);
    float acc[8][8] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        stash<!AT, BM>(As, sa.fetch(K), tid);
        stash<BT, BN>(Bs, sb.fetch(K), tid);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float reg_m[8], reg_n[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) reg_m[i] = As[k * BM + thread_row * 8 + i];
#pragma unroll
            for (int j = 0; j < 8; ++j) reg_n[j] = Bs[k * BN + thread_col * 8 + j];
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(reg_m[i], reg_n[j], acc[i][j]);
        }
        __syncthreads();  // before the next slice overwrites the buffers
    }
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; j += 4)
            store4(C, M, N, row0 + thread_row * 8 + i, col0 + thread_col * 8 + j,
                   make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]), flags & VEC_C);
}

// ---------------------------------------------------------------------------------------
// Version 2: double-buffered, 2 x 2 blocks of 4 x 4 per thread, padded shared rows.
#define LDS (BM + 4)  // padded row: transposed stores hit 32 distinct banks; 528 B keeps float4 alignment

template <bool AT, bool BT>
__device__ __forceinline__ void tile_v2(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                                        int M, int N, int K, long long lda, long long ldb, int flags) {
    __shared__ __align__(16) float As[2][BK * LDS];  // As[buf][k][m]
    __shared__ __align__(16) float Bs[2][BK * LDS];  // Bs[buf][k][n]
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    // Rows ty*4 + {0..3} and 64 + ty*4 + {0..3}; columns likewise with tx. In a warp ty
    // takes 2 values (broadcast reads of A), tx 16 consecutive float4s (no conflicts).
    const int ty = tid / 16, tx = tid % 16;
    Stager<!AT> sa(A, lda, row0, M, flags & VEC_A, tid);
    Stager<BT> sb(B, ldb, col0, N, flags & VEC_B, tid);
    float acc[8][8] = {};

    float4 ra = sa.fetch(K), rb = sb.fetch(K);
    stash<!AT, LDS>(As[0], ra, tid);
    stash<BT, LDS>(Bs[0], rb, tid);
    __syncthreads();
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += BK) {
        const bool next = k0 + BK < K;
        if (next) {  // in flight while the FMAs below run
            ra = sa.fetch(K);
            rb = sb.fetch(K);
        }
        const float* as = As[buf];
        const float* bs = Bs[buf];
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            const float4 a0 = *reinterpret_cast<const float4*>(&as[k * LDS + ty * 4]);
            const float4 a1 = *reinterpret_cast<const float4*>(&as[k * LDS + 64 + ty * 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&bs[k * LDS + tx * 4]);
            const float4 b1 = *reinterpret_cast<const float4*>(&bs[k * LDS + 64 + tx * 4]);
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (next) {
            // The other buffer was last read in the previous step, before its closing sync.
            stash<!AT, LDS>(As[buf ^ 1], ra, tid);
            stash<BT, LDS>(Bs[buf ^ 1], rb, tid);
            __syncthreads();
            buf ^= 1;
        }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int r = row0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
#pragma unroll
        for (int h = 0; h < 2; ++h)
            store4(C, M, N, r, col0 + h * 64 + tx * 4,
                   make_float4(acc[i][h * 4], acc[i][h * 4 + 1], acc[i][h * 4 + 2], acc[i][h * 4 + 3]), flags & VEC_C);
    }
}

// ---------------------------------------------------------------------------------------
// Entry points. AT: A column-major (A[b] + r + c * lda), else row-major (r * lda + c); BT
// likewise for B. sa, sb: batch strides in elements (0 = broadcast); C's is M * N.
// The parameter of every tiled kernel: `MatmulParams` in launch/matmul.rs, same fields.
struct MatmulParams {
    const float* A;
    const float* B;
    float* C;
    long long lda, sa, ldb, sb;
    int M, N, K, flags;
};
static_assert(sizeof(MatmulParams) == 72, "MatmulParams: launch/matmul.rs has 72 bytes");

#define MATMUL_KERNEL(name, tile, at, bt, minblocks)                                                           \
    extern "C" __global__ void __launch_bounds__(THREADS, minblocks) name(const __grid_constant__ MatmulParams p) {              \
        const float* __restrict__ A = p.A;                                                                     \
        const float* __restrict__ B = p.B;                                                                     \
        float* __restrict__ C = p.C;                                                                           \
        const int M = p.M, N = p.N, K = p.K, flags = p.flags;                                                  \
        const long long lda = p.lda, sa = p.sa, ldb = p.ldb, sb = p.sb;                                        \
        const long long z = blockIdx.z;                                                                        \
        tile<at, bt>(A + z * sa, B + z * sb, C + z * M * N, M, N, K, lda, ldb, flags);                        \
    }

MATMUL_KERNEL(matmul_v1_nn_f32, tile_v1, false, false, 2)
MATMUL_KERNEL(matmul_v1_nt_f32, tile_v1, false, true, 2)
MATMUL_KERNEL(matmul_v1_tn_f32, tile_v1, true, false, 2)
MATMUL_KERNEL(matmul_v1_tt_f32, tile_v1, true, true, 2)
MATMUL_KERNEL(matmul_v2_nn_f32, tile_v2, false, false, 2)
MATMUL_KERNEL(matmul_v2_nt_f32, tile_v2, false, true, 2)
MATMUL_KERNEL(matmul_v2_tn_f32, tile_v2, true, false, 2)
MATMUL_KERNEL(matmul_v2_tt_f32, tile_v2, true, true, 2)

// ---------------------------------------------------------------------------------------
// Small M (M <= SMALL_M = 8): token-by-token generation, y (M, N) = x (M, K) @ W^T. The
// tiled kernels above launch ceil(N/128) blocks for M = 1 (24 at N = 3072) and stream all
// of B through each: the floor here is reading B once at the copy rate (a 768 x 3072
// weight is 9.4 MB: ~3.2 us at 2.95 TB/s), and the FLOPs (2 M N K) are nothing beside it.
// Why 8: per 16 bytes of B a lane reads M float4 of A from shared memory; a warp's LDS.128
// is 4 cycles of the SM's 128 B/clk, so M = 8 costs 32 cycles per 512 B of B, about what
// the SM's share of DRAM (~15 B/clk) takes for them. Beyond that A's reads, not B's, set
// the pace, and the tiled kernel (register reuse of A) is the right shape again.
//
// A (any layout: its row and column strides are arguments) is staged in shared memory in
// chunks of KC columns (the launcher picks KC, a multiple of 4, so M * KC * 4 <= 32 KiB):
// As[r * KC + p], zero-filled up to a multiple of 4. The first group of B loads of each
// chunk is issued before staging (it does not need A), so the staging latency hides under it.
//   matmul_small_m_nt_f32: B column-major (element (p, j) at j * ldb + p; a Linear weight
//     as W^T, the tied head). One warp per output column j: lanes stride over p with float4
//     loads (32 lanes x 16 B = one 512 B run of the column), NT_UNROLL of them in flight per
//     lane, M float4 accumulators, then a butterfly shuffle sum; lane 0 writes the M values.
//     Launch: grid (ceil(N / warps), nb), block warps * 32 (warps in {2, 4, 8}: the launcher
//     uses fewer for small N so that more SMs pull B).
//   matmul_small_m_nn_f32: B row-major (element (p, j) at p * ldb + j). A block owns 16
//     columns: 4 lanes x float4 cover a 64 B run of one row; the block's blockDim / 4 row
//     groups split K (split-K inside the block), NN_UNROLL rows in flight per thread. The
//     8 row groups of a warp are summed by shuffles, the warps through shared memory.
//     Launch: grid (ceil(N / 16), nb), block 256 or 512 (512 for small N: more rows in flight).
// B's float4 loads only where the launcher says they are aligned (VEC_B), as above; C is
// written with scalar stores (M values per column). K == 0 writes zeros.

#define SMALL_M 8
#define NT_UNROLL 8
#define NN_UNROLL 8
#define NN_COLS 16      // columns of C per nn block
#define NN_MAX_THREADS 512

// Stage A[r][p0 + p] for r < M, p < kcur into S[r * KC + p], zeros up to kcur rounded up to 4.
// (__ldg: nvcc does not infer the read-only load from a pointer in a parameter struct.)
__device__ __forceinline__ void stage_a(float* S, const float* __restrict__ A, int M, int KC, int p0, int kcur,
                                        long long a_rs, long long a_cs) {
    const int k4 = (kcur + 3) & ~3;
    for (int r = 0; r < M; ++r) {
        const float* row = A + r * a_rs + p0 * a_cs;
        for (int p = threadIdx.x; p < k4; p += blockDim.x) S[r * KC + p] = p < kcur ? __ldg(row + p * a_cs) : 0.f;
    }
}

// Four consecutive floats from p (left of them inside the operand: 0 reads zeros).
__device__ __forceinline__ float4 load4(const float* __restrict__ p, int left, bool vec) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (vec && left >= 4) {
        v = __ldg(reinterpret_cast<const float4*>(p));
    } else if (left > 0) {
        v.x = __ldg(p);
        v.y = left > 1 ? __ldg(p + 1) : 0.f;
        v.z = left > 2 ? __ldg(p + 2) : 0.f;
        v.w = left > 3 ? __ldg(p + 3) : 0.f;
    }
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// A[z] + r * a_rs + p * a_cs; B[z] column j at j * ldb (contiguous along p); sa, sb: batch
// strides (0 = broadcast); C contiguous (nb, M, N). KC: A's shared chunk (dynamic shared
// memory M * KC floats).
// The parameter of both small-M kernels: `MatmulSmallMParams` in launch/matmul.rs.
struct MatmulSmallMParams {
    const float* A;
    const float* B;
    float* C;
    long long a_rs, a_cs, sa, ldb, sb;
    int M, N, K, KC, flags;
    int pad_;
};
static_assert(sizeof(MatmulSmallMParams) == 88, "MatmulSmallMParams: launch/matmul.rs has 88 bytes");

extern "C" __global__ void __launch_bounds__(256) matmul_small_m_nt_f32(const __grid_constant__ MatmulSmallMParams p) {
    const float* __restrict__ A = p.A;
    const float* __restrict__ B = p.B;
    float* __restrict__ C = p.C;
    const int M = p.M, N = p.N, K = p.K, KC = p.KC, flags = p.flags;
    const long long a_rs = p.a_rs, a_cs = p.a_cs, sa = p.sa, ldb = p.ldb, sb = p.sb;
    extern __shared__ __align__(16) float As[];  // As[r * KC + p]
    const long long z = blockIdx.y;
    A += z * sa;
    B += z * sb;
    C += z * M * N;
    const int lane = threadIdx.x % 32;
    const int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const bool active = j < N;  // inactive warps still stage A and meet the syncs
    const float* col = B + (long long)(active ? j : 0) * ldb;
    const bool vec = flags & VEC_B;
    float4 acc[SMALL_M];
#pragma unroll
    for (int r = 0; r < SMALL_M; ++r) acc[r] = make_float4(0.f, 0.f, 0.f, 0.f);

    for (int p0 = 0; p0 < K; p0 += KC) {
        const int kcur = min(KC, K - p0);
        const float* bp = col + p0;
        // Group g covers p in [g * 128 * NT_UNROLL, ...): lane's float4 u at q0 + u * 128.
        int q0 = lane * 4;
        float4 bv[NT_UNROLL];
#pragma unroll
        for (int u = 0; u < NT_UNROLL; ++u) {
            const int q = q0 + u * 128;
            bv[u] = active ? load4(bp + q, kcur - q, vec) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        __syncthreads();  // the previous chunk's As is no longer read
        stage_a(As, A, M, KC, p0, kcur, a_rs, a_cs);
        __syncthreads();
        if (!active) continue;
        for (;;) {
#pragma unroll
            for (int u = 0; u < NT_UNROLL; ++u) {
                const int q = q0 + u * 128;
                if (q < kcur) {  // As is zero-filled to a multiple of 4, B read as zeros past kcur
#pragma unroll
                    for (int r = 0; r < SMALL_M; ++r) {
                        if (r < M) {
                            const float4 a = *reinterpret_cast<const float4*>(&As[r * KC + q]);
                            acc[r].x = fmaf(a.x, bv[u].x, acc[r].x);
                            acc[r].y = fmaf(a.y, bv[u].y, acc[r].y);
                            acc[r].z = fmaf(a.z, bv[u].z, acc[r].z);
                            acc[r].w = fmaf(a.w, bv[u].w, acc[r].w);
                        }
                    }
                }
            }
            q0 += 128 * NT_UNROLL;
            if (q0 >= kcur) break;
#pragma unroll
            for (int u = 0; u < NT_UNROLL; ++u) {
                const int q = q0 + u * 128;
                bv[u] = load4(bp + q, kcur - q, vec);
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < SMALL_M; ++r) {
        if (r < M) {
            const float s = warp_sum((acc[r].x + acc[r].y) + (acc[r].z + acc[r].w));
            if (lane == 0) C[(long long)r * N + j] = s;
        }
    }
}

// A as above; B[z] row p at p * ldb (contiguous along j); block: NN_COLS columns from
// blockIdx.x * NN_COLS, blockDim.x / 4 row groups.
extern "C" __global__ void __launch_bounds__(NN_MAX_THREADS) matmul_small_m_nn_f32(const __grid_constant__ MatmulSmallMParams p) {
    const float* __restrict__ A = p.A;
    const float* __restrict__ B = p.B;
    float* __restrict__ C = p.C;
    const int M = p.M, N = p.N, K = p.K, KC = p.KC, flags = p.flags;
    const long long a_rs = p.a_rs, a_cs = p.a_cs, sa = p.sa, ldb = p.ldb, sb = p.sb;
    extern __shared__ __align__(16) float As[];  // As[r * KC + p]
    __shared__ float red[NN_MAX_THREADS / 32][SMALL_M][NN_COLS];  // per-warp partial sums
    const long long z = blockIdx.y;
    A += z * sa;
    B += z * sb;
    C += z * M * N;
    const int tid = threadIdx.x, lane = tid % 32;
    const int groups = blockDim.x / 4;
    const int g = tid / 4;                                 // row group: rows g, g + groups, ...
    const int j0 = blockIdx.x * NN_COLS + (tid % 4) * 4;  // this thread's 4 columns
    const int jleft = N - j0;                              // columns inside C from j0 (<= 0: none)
    const bool vec = flags & VEC_B;
    float acc[SMALL_M][4] = {};

    for (int p0 = 0; p0 < K; p0 += KC) {
        const int kcur = min(KC, K - p0);
        const float* bp = B + (long long)p0 * ldb + j0;
        int q0 = g;  // the thread's row u of this group: q0 + u * groups
        float4 bv[NN_UNROLL];
#pragma unroll
        for (int u = 0; u < NN_UNROLL; ++u) {
            const int q = q0 + u * groups;
            bv[u] = q < kcur ? load4(bp + (long long)q * ldb, jleft, vec) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        __syncthreads();  // the previous chunk's As is no longer read
        stage_a(As, A, M, KC, p0, kcur, a_rs, a_cs);
        __syncthreads();
        for (;;) {
#pragma unroll
            for (int u = 0; u < NN_UNROLL; ++u) {
                const int q = q0 + u * groups;
                if (q < kcur) {
#pragma unroll
                    for (int r = 0; r < SMALL_M; ++r) {
                        if (r < M) {
                            const float a = As[r * KC + q];
                            acc[r][0] = fmaf(a, bv[u].x, acc[r][0]);
                            acc[r][1] = fmaf(a, bv[u].y, acc[r][1]);
                            acc[r][2] = fmaf(a, bv[u].z, acc[r][2]);
                            acc[r][3] = fmaf(a, bv[u].w, acc[r][3]);
                        }
                    }
                }
            }
            q0 += groups * NN_UNROLL;
            if (q0 >= kcur) break;
#pragma unroll
            for (int u = 0; u < NN_UNROLL; ++u) {
                const int q = q0 + u * groups;
                bv[u] = q < kcur ? load4(bp + (long long)q * ldb, jleft, vec) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
    }
    // Sum the warp's 8 row groups (lanes 4 apart hold the same columns), then the warps.
    const int warp = tid / 32;
#pragma unroll
    for (int r = 0; r < SMALL_M; ++r) {
        if (r < M) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float v = acc[r][i];
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                if (lane < 4) red[warp][r][lane * 4 + i] = v;
            }
        }
    }
    __syncthreads();
    if (tid < M * NN_COLS) {
        const int r = tid / NN_COLS, c = tid % NN_COLS, j = blockIdx.x * NN_COLS + c;
        float s = 0.f;
        for (int w = 0; w < blockDim.x / 32; ++w) s += red[w][r][c];
        if (j < N) C[(long long)r * N + j] = s;
    }
}
