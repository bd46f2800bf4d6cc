// Batched, strided bf16 matrix product on the tensor cores: C[b] = A[b] B[b] with A[b] (M, K)
// and B[b] (K, N) in bf16, products summed in f32, C contiguous (nb, M, N) in f32 or bf16
// (rounded to nearest even once, at the end). No cuBLAS: mma.sync, ldmatrix and cp.async.
// The CPU twin is the same product in f64 from the same bf16 values (tests/gpu_check/
// matmul_bf16.rs); kernels/tools/emu/matmul_bf16.sh runs these kernels on the CPU.
//
// Operands as in matmul.cu: each is row-major ("n": element (r, c) at r * ld + c) or
// column-major ("t": at r + c * ld) with any leading dimension, at a batch stride (0 =
// broadcast). Tiles move from global to shared memory in 16-byte chunks (cp.async), so the
// launcher requires every chunk to be aligned: the operand's start 16-byte aligned, ld and
// batch stride multiples of 8 elements (a clear error otherwise). Any M, N, K: chunks past an
// edge are zero-filled by cp.async's src-size (a chunk that straddles the contiguous edge
// copies only its inside part), so nothing outside the operands is read, and C is written
// with bounds checks.
//
// Napkin math. Dense bf16 on the H200 is ~990 TFLOP/s by the datasheet through wgmma; cuBLAS
// reaches ~790 here. mma.sync (the Ampere instruction, still on Hopper) is reported at about
// 2/3 of wgmma's rate, ~650 TFLOP/s, which is this file's ceiling.
//   8192^3: 1.1 TFLOP, 1.39 ms at cuBLAS's rate; bytes 128 + 128 MiB in, 256 MiB out (f32):
//     0.11 ms at 4.8 TB/s. Compute bound by 13x.
//   The d_model 768 Mamba LM, batch 8 x 2048 = 16384 tokens (T): in_proj T x 768 -> 3072
//     (77 GFLOP, 98 us at 790; C alone is 201 MB in f32, 42 us: write bf16 where it can),
//     out_proj 1536 -> 768 (39 GFLOP), x_proj 1536 -> 80 (4 GFLOP against 50 MB of A: memory
//     bound, ~10 us), and the backward's dx (nn) and dW (tn, K = T: few output tiles, so
//     split-K below).
// Shared memory per SM (228 KB) and the register file (64K) bound the tile: a 64 x 64 warp
// tile keeps 128 f32 accumulators per thread, and per k16 step a warp does 32 mma for 8
// ldmatrix.x4 (4 KB of shared reads). Per k16 step of a 128 x 256 block: 256 mma (~390
// cycles at the mma.sync rate) against 32 KB of ldmatrix and 12 KB of cp.async writes (~350
// cycles at 128 B/cycle): shared-memory bandwidth is nearly the limit, which is why smaller
// warp tiles lose (64 x 32: 256 cycles of shared traffic per 194 of mma) and why wgmma
// (operands straight from shared memory) is where cuBLAS's last 30% lives.
//
// Design (v1, v2): 256 threads (8 warps, 2 along m x 4 along n, a 64 x 64 tile each),
// block tile 128 x 256, K in slices of BK, one block per SM (240-255 registers). Each slice
// of A (128 x BK) and B (BK x 256) is copied with cp.async.cg into a ring of STAGES shared
// buffers, STAGES - 1 slices ahead of the one the tensor cores work on. The chunks land where
// they sit in global memory (no transposing copy): an operand contiguous along k (A "n", B
// "t") is stored [x][BK], the others [BK][x]; ldmatrix.x4 turns either into mma fragments,
// with .trans for the [BK][x] ones. Rows are XOR-swizzled in 16-byte chunks (Tile::swz) so
// that the 8 rows of one ldmatrix or cp.async phase hit 8 different bank groups; a fragment's
// address is one register per operand and slice, XOR / plus constants (frag_addr). Per k16
// step the fragments of the next step are loaded before this step's mma; one wait_group and
// one __syncthreads per slice, placed as CUTLASS's multistage loop places them (gemm_bf16):
// mma in flight cover the barrier, and the first fragments of the next slice load under the
// last step's mma. Blocks are ordered in groups of GROUP_M row tiles (column by column inside
// a group) so that the ~132 blocks resident at once share A's and B's panels in L2. The
// epilogue writes each accumulator pair (2 adjacent columns) straight from registers: 8-byte
// (f32) or 4-byte (bf16) stores, full 32-byte sectors per row.
//   v1: BK 32, 4 stages (96 KB). Prediction (not yet measured): 450-550 TFLOP/s at 8192^3,
//       55-70% of cuBLAS; the model's big shapes 40-60% (fewer waves, C's bytes).
//   v2: BK 64, 3 stages (144 KB): half the barriers per FLOP, one stage less of latency
//       hiding. Prediction: within +-5% of v1; measured side by side to pick one.
//   v1n: v1 with a 128 x 128 tile (warp tile 64 x 32, ~158 registers: one block per SM; at
//       2 per SM it spills), which the launcher runs for N <= 128 whatever the version
//       (x_proj's 80 columns would waste 69% of a 256-wide tile; such shapes are memory bound).
// Split-K (the launcher's choice, when the output tiles do not fill the GPU, e.g. dW with K
// = 16384): grid z is batch x splits, split s sums k in [s kchunk, (s + 1) kchunk) into its
// own f32 partial (nb * splits, M, N) in a workspace, and matmul_bf16_reduce_{f32,bf16} adds
// the partials in split order: deterministic, no atomics.
// wgmma (sm_90a) needs the -gencode compute_90a target in build.rs: a later version.

#define THREADS 256
#define GROUP_M 8
#define MMB_VEC_C 1  // flags bit 0: C's pair stores are aligned (C 8-byte (f32) / 4-byte (bf16) aligned, N even)

typedef unsigned short bf16_t;  // a bf16 value's bit pattern

// Every PTX instruction this file uses, one small wrapper each, in mma.cuh.
#include "mma.cuh"  // cp.async, ldmatrix, mma.sync bf16, cvt.rn.bf16x2 (and their CPU twins)

// ---------------------------------------------------------------------------------------
// One operand's k-slice in shared memory: X (the block's rows of A or columns of B) by BK,
// stored as its 16-byte chunks sit in global memory. KMAJOR (contiguous along k: A "n", B
// "t"): ROWS = X rows of BK / 8 chunks; else ROWS = BK rows of X / 8 chunks. Chunk c of row r
// sits at chunk c ^ swz(r) of that row: the 8 rows that one ldmatrix phase (or cp.async
// phase) reads or writes at one logical chunk then cover all 8 groups of 4 banks. With
// 64-byte rows (RCH 4) two rows share a 128-byte line, so rows pair up: swz = (r / 2) % 4.
template <int X, int BK, bool KMAJOR>
struct Tile {
    static constexpr int RCH = (KMAJOR ? BK : X) / 8;  // 16-byte chunks per row
    static constexpr int ROWS = KMAJOR ? X : BK;
    static constexpr int BYTES = X * BK * 2;
    static constexpr int RP = THREADS / RCH;              // rows one pass of the block covers
    static constexpr int PASSES = ROWS / RP;              // cp.async per thread per slice
    static_assert(RCH >= 4 && THREADS % RCH == 0 && ROWS % RP == 0, "tile shape");
    __device__ static __forceinline__ int swz(int r) { return RCH >= 8 ? (r & 7) : ((r >> 1) & 3); }
    // Byte offset of logical chunk c of row r.
    __device__ static __forceinline__ unsigned off(int r, int c) { return (unsigned)((r * RCH + (c ^ swz(r))) * 16); }
};

// One thread's share of copying an operand's k-slices: chunk (row tid / RCH + i RP, chunk
// tid % RCH) of the tile for i < PASSES. The operand is addressed P + outer * ld + inner:
// KMAJOR outer = x, inner = k; else outer = k, inner = x. The last chunk of a row may be
// partial (src-size); chunks outside read nothing (their source is then the operand's start,
// `base`). Sizes and strides come in at each load (kernel parameters, which cost no registers).
template <class T, bool KMAJOR, int BK>
struct Loader {
    const bf16_t* p;   // the thread's chunk of pass 0 in the current slice
    int outer, inner;  // the indices of that chunk
    unsigned dst;      // byte offset of that chunk in the tile

    __device__ __forceinline__ Loader(const bf16_t* P, long long ld, int x0, int kbeg, int tid) {
        const int r = tid / T::RCH, c = tid % T::RCH;
        outer = (KMAJOR ? x0 : kbeg) + r;
        inner = (KMAJOR ? kbeg : x0) + 8 * c;
        p = P + (long long)outer * ld + inner;
        dst = T::off(r, c);
    }

    // Queue this slice's copies into the tile at shared address `tile`; step to the next slice.
    // X: the operand's extent along x, kend: the end of this block's k range.
    __device__ __forceinline__ void load(unsigned tile, const bf16_t* base, long long ld, int X, int kend) {
        const int left = (KMAJOR ? kend : X) - inner, outer_end = KMAJOR ? X : kend;
        const int bytes = left >= 8 ? 16 : (left > 0 ? 2 * left : 0);
#pragma unroll
        for (int i = 0; i < T::PASSES; ++i) {
            const bool in = bytes > 0 && outer + i * T::RP < outer_end;
            cp_async_16(tile + dst + i * T::RP * T::RCH * 16, in ? p + i * T::RP * ld : base, in ? bytes : 0);
        }
        if (KMAJOR) {
            p += BK;
            inner += BK;
        } else {
            p += BK * ld;
            outer += BK;
        }
    }
};

// Shared byte offset (within the tile) of the row this lane hands to ldmatrix for the A
// fragment at rows m0..m0+15, k ks..ks+15: matrices (m0, ks), (m0 + 8, ks), (m0, ks + 8),
// (m0 + 8, ks + 8) = a[0..3]. KMAJOR: rows are m (non-transposed load); else rows are k and
// the load transposes.
template <class T, bool KMAJOR>
__device__ __forceinline__ unsigned a_frag_off(int m0, int ks, int lane) {
    if (KMAJOR) return T::off(m0 + (lane & 15), ks / 8 + (lane >> 4));
    return T::off(ks + (lane & 7) + 8 * (lane >> 4), m0 / 8 + ((lane >> 3) & 1));
}
// Likewise for the B fragments of two n8 tiles n0..n0+7, n0+8..n0+15 at k ks..ks+15:
// matrices (n0, ks), (n0, ks + 8), (n0 + 8, ks), (n0 + 8, ks + 8) = b0, b1 of the first
// tile, b0, b1 of the second.
template <class T, bool KMAJOR>
__device__ __forceinline__ unsigned b_frag_off(int n0, int ks, int lane) {
    if (KMAJOR) return T::off(n0 + (lane & 7) + 8 * (lane >> 4), ks / 8 + ((lane >> 3) & 1));
    return T::off(ks + (lane & 7) + 8 * ((lane >> 3) & 1), n0 / 8 + (lane >> 4));
}

// The address of fragment `i` (A: m16 tile i, B: pair of n8 tiles i) of k16 step ks, from
// `base` = tile address + the lane's offset for (i, ks) = (0, 0). Moving along the swizzled
// axis only flips chunk bits 4..6 of the address, which the tile's 128-byte alignment leaves to
// the lane offset, so it is an XOR; moving along the other axis is a whole number of rows, an
// add. K-major: ks is the swizzled axis (chunk ks / 8), i is 16 rows; else i is 2 chunks
// (16 columns; the warp's first column is a multiple of 32, so no carry) and ks is ks rows.
// Keeps one register per operand instead of one address per fragment.
template <class T, bool KMAJOR>
__device__ __forceinline__ unsigned frag_addr(unsigned base, int i, int ks) {
    if (KMAJOR) return (base ^ (unsigned)(ks / 8 * 16)) + (unsigned)(16 * i * T::RCH * 16);
    return (base ^ (unsigned)(2 * i * 16)) + (unsigned)(ks * T::RCH * 16);
}

template <bool TRANS>
__device__ __forceinline__ void ldsm(unsigned (&r)[4], unsigned addr) {
    if (TRANS) {
        ldmatrix_x4_trans(r, addr);
    } else {
        ldmatrix_x4(r, addr);
    }
}

// Block ordering: tile rows in groups of GROUP_M, column by column inside a group, so the
// blocks resident at once read few panels of A and B (L2 reuse).
__device__ __forceinline__ void raster(int pid, int tiles_m, int tiles_n, int& tm, int& tn) {
    const int per_group = GROUP_M * tiles_n;
    const int group = pid / per_group, first = group * GROUP_M;
    const int rows = min(tiles_m - first, GROUP_M);
    const int in = pid - group * per_group;
    tm = first + in % rows;
    tn = in / rows;
}

// Store columns col, col + 1 of row `row` of C (M, N), bounds-checked.
template <bool OUT_BF16>
__device__ __forceinline__ void store_pair(void* C, int M, int N, int row, int col, float v0, float v1, bool vec) {
    if (row >= M || col >= N) return;
    const long long e = (long long)row * N + col;
    if (OUT_BF16) {
        const unsigned pk = pack_bf16x2(v0, v1);
        bf16_t* q = static_cast<bf16_t*>(C) + e;
        if (vec && col + 1 < N) {
            *reinterpret_cast<unsigned*>(q) = pk;
        } else {
            q[0] = (bf16_t)(pk & 0xffffu);
            if (col + 1 < N) q[1] = (bf16_t)(pk >> 16);
        }
    } else {
        float* q = static_cast<float*>(C) + e;
        if (vec && col + 1 < N) {
            *reinterpret_cast<float2*>(q) = make_float2(v0, v1);
        } else {
            q[0] = v0;
            if (col + 1 < N) q[1] = v1;
        }
    }
}

// The parameter of every GEMM kernel: `MatmulBf16Params` in launch/matmul_bf16.rs, same
// fields. A[b] at A + b sa, B[b] at B + b sb (b = blockIdx.z / splits); C (nb * splits, M, N)
// contiguous, f32 or bf16 as the kernel's name says (f32 partials when splits > 1). Split s =
// blockIdx.z % splits covers k in [s kchunk, min(K, (s + 1) kchunk)), kchunk a multiple of BK.
struct MatmulBf16Params {
    const bf16_t* A;
    const bf16_t* B;
    void* C;
    long long lda, sa, ldb, sb;
    int M, N, K, flags;
    int splits, kchunk;
};
static_assert(sizeof(MatmulBf16Params) == 80, "MatmulBf16Params: launch/matmul_bf16.rs has 80 bytes");

// One warp's fragments of a k16 step, two sets: the next step's are loaded while this step's
// mma run. ta, tb: shared addresses of the slice's A and B tiles.
template <class TA, class TB, bool AK, bool BKM, int MI, int NI>
struct Frags {
    unsigned a[2][MI][4], b[2][NI][2];

    // ta, tb: the slice's tiles plus the lane's offsets of fragment 0 at step 0
    // (a_frag_off(wm, 0, lane), b_frag_off(wn, 0, lane)).
    __device__ __forceinline__ void load(unsigned ta, unsigned tb, int ks, int buf) {
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) ldsm<!AK>(a[buf][mi], frag_addr<TA, AK>(ta, mi, ks));
#pragma unroll
        for (int j = 0; j < NI / 2; ++j) {
            unsigned r[4];
            ldsm<!BKM>(r, frag_addr<TB, BKM>(tb, j, ks));
            b[buf][2 * j][0] = r[0];
            b[buf][2 * j][1] = r[1];
            b[buf][2 * j + 1][0] = r[2];
            b[buf][2 * j + 1][1] = r[3];
        }
    }

    __device__ __forceinline__ void mma(float (&acc)[MI][NI][4], int buf) {
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int n = 0; n < NI; ++n) {
                const int ni = mi & 1 ? NI - 1 - n : n;  // serpentine: B fragments reused across mi
                mma_bf16(acc[mi][ni], a[buf][mi], b[buf][ni][0], b[buf][ni][1]);
            }
    }
};

// The whole GEMM of one block: tile (BM, BN) of C[blockIdx.z], k in slices of BK through a
// STAGES-deep cp.async ring. AT / BT: A / B column-major.
// Per slice kt (KS = BK / 16 steps of k16): the copies of slice kt + STAGES - 1 go into the
// slot slice kt - 1 used; step ks loads the fragments of step ks + 1 and runs the mma of step ks.
// Between the mma of step KS - 2 and the fragments of step KS - 1 (those of slice kt + 1's
// step 0) the block waits for slice kt + 1 and meets at the barrier: the mma in flight cover
// the barrier, and the last step's mma cover the first fragment loads of the next slice. After
// that barrier every warp has read all of slice kt, so its slot is free for the next copies.
template <int BM, int BN, int BK, int STAGES, bool AT, bool BT, bool OUT_BF16>
__device__ __forceinline__ void gemm_bf16(const MatmulBf16Params& p) {
    constexpr bool AK = !AT, BKM = BT;  // operand contiguous along k
    using TA = Tile<BM, BK, AK>;
    using TB = Tile<BN, BK, BKM>;
    constexpr int STAGE = TA::BYTES + TB::BYTES, KS = BK / 16;
    constexpr int WTM = BM / 2, WTN = BN / 4;  // warp tile: 8 warps, 2 along m x 4 along n
    constexpr int MI = WTM / 16, NI = WTN / 8;
    static_assert(NI % 2 == 0 && STAGES >= 2 && KS % 2 == 0, "config");
    static_assert(WTM <= 64 && WTN <= 64, "frag_addr: a warp's fragments span at most 8 aligned chunks");
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 2) * WTM, wn = (warp & 3) * WTN;
    int tm, tn;
    raster(blockIdx.x, (p.M + BM - 1) / BM, (p.N + BN - 1) / BN, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN;
    const int b = blockIdx.z / p.splits, s = blockIdx.z % p.splits;
    const int kbeg = s * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
    const int ktiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
    Loader<TA, AK, BK> la(p.A + b * p.sa, p.lda, m0, kbeg, tid);
    Loader<TB, BKM, BK> lb(p.B + b * p.sb, p.ldb, n0, kbeg, tid);
    const unsigned smem = smem_addr(dyn_smem());
    const auto load_slice = [&](int slot) {
        la.load(smem + slot * STAGE, p.A, p.lda, p.M, kend);
        lb.load(smem + slot * STAGE + TA::BYTES, p.B, p.ldb, p.N, kend);
    };

    // Prologue: slices 0 .. STAGES - 2 in flight, one commit group each (empty past the end).
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < ktiles) load_slice(st);
        cp_async_commit();
    }
    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
    Frags<TA, TB, AK, BKM, MI, NI> f;
    cp_async_wait<STAGES - 2>();  // slice 0 has landed
    __syncthreads();
    int rd = 0;  // the ring slot computed now; the one refilled now is the one before it
    const unsigned a_lane = a_frag_off<TA, AK>(wm, 0, lane), b_lane = TA::BYTES + b_frag_off<TB, BKM>(wn, 0, lane);
    if (ktiles > 0) f.load(smem + a_lane, smem + b_lane, 0, 0);
    for (int kt = 0; kt < ktiles; ++kt) {
        if (kt + STAGES - 1 < ktiles) load_slice(rd == 0 ? STAGES - 1 : rd - 1);
        cp_async_commit();
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            // (On the last slice, step KS - 1 loads stale fragments that no mma uses.)
            const unsigned slot = smem + rd * STAGE;
            f.load(slot + a_lane, slot + b_lane, ks + 1 < KS ? 16 * (ks + 1) : 0, (ks + 1) & 1);
            f.mma(acc, ks & 1);
            if (ks == KS - 2) {
                cp_async_wait<STAGES - 2>();  // slice kt + 1 has landed (groups newer: STAGES - 2)
                __syncthreads();
                rd = rd + 1 == STAGES ? 0 : rd + 1;
            }
        }
    }

    // Epilogue: lane (g, t) holds rows g, g + 8 of each m16 tile, columns 2t, 2t + 1 of each n8.
    void* C = static_cast<char*>(p.C) + (long long)blockIdx.z * p.M * p.N * (OUT_BF16 ? 2 : 4);
    const bool vec = p.flags & MMB_VEC_C;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                store_pair<OUT_BF16>(C, p.M, p.N, m0 + wm + 16 * mi + g + 8 * h, n0 + wn + 8 * ni + 2 * t,
                                     acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1], vec);
}

// Entry points: matmul_bf16_<version>_<A layout><B layout>_<C dtype>. Launch: grid
// (ceil(M / BM) * ceil(N / BN), 1, nb * splits), block 256, dynamic shared memory
// STAGES * (BM + BN) * BK * 2 bytes (above 48 KB: the launcher raises the kernel's limit).
#define MATMUL_BF16_KERNEL(name, bm, bn, bk, stages, minblocks, at, bt, out_bf16)                          \
    extern "C" __global__ void __launch_bounds__(THREADS, minblocks) name(const __grid_constant__ MatmulBf16Params p) { \
        gemm_bf16<bm, bn, bk, stages, at, bt, out_bf16>(p);                                                 \
    }
#define MATMUL_BF16_LAYOUTS(ver, bm, bn, bk, stages, minblocks, out, out_bf16)                                   \
    MATMUL_BF16_KERNEL(matmul_bf16_##ver##_nn_##out, bm, bn, bk, stages, minblocks, false, false, out_bf16)     \
    MATMUL_BF16_KERNEL(matmul_bf16_##ver##_nt_##out, bm, bn, bk, stages, minblocks, false, true, out_bf16)      \
    MATMUL_BF16_KERNEL(matmul_bf16_##ver##_tn_##out, bm, bn, bk, stages, minblocks, true, false, out_bf16)      \
    MATMUL_BF16_KERNEL(matmul_bf16_##ver##_tt_##out, bm, bn, bk, stages, minblocks, true, true, out_bf16)

MATMUL_BF16_LAYOUTS(v1, 128, 256, 32, 4, 1, f32, false)
MATMUL_BF16_LAYOUTS(v1, 128, 256, 32, 4, 1, bf16, true)
MATMUL_BF16_LAYOUTS(v1n, 128, 128, 32, 4, 1, f32, false)
MATMUL_BF16_LAYOUTS(v1n, 128, 128, 32, 4, 1, bf16, true)
MATMUL_BF16_LAYOUTS(v2, 128, 256, 64, 3, 1, f32, false)
MATMUL_BF16_LAYOUTS(v2, 128, 256, 64, 3, 1, bf16, true)

// ---------------------------------------------------------------------------------------
// Split-K's second pass: C[b][i] = sum over s < splits of W[b splits + s][i], in order of s
// (the same bits every run), for i < mn = M N; batch b = blockIdx.y. Memory bound: reads
// splits * mn f32 per batch, writes mn. `MatmulBf16ReduceParams` in launch/matmul_bf16.rs.
struct MatmulBf16ReduceParams {
    const float* W;
    void* C;
    long long mn;
    int splits, pad_;
};
static_assert(sizeof(MatmulBf16ReduceParams) == 32, "MatmulBf16ReduceParams: launch/matmul_bf16.rs has 32 bytes");

template <bool OUT_BF16>
__device__ __forceinline__ void splitk_reduce(const MatmulBf16ReduceParams& p) {
    const long long b = blockIdx.y;
    const float* W = p.W + b * p.splits * p.mn;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.mn; i += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int q = 0; q < p.splits; ++q) s += W[q * p.mn + i];
        if (OUT_BF16) {
            static_cast<bf16_t*>(p.C)[b * p.mn + i] = (bf16_t)(pack_bf16x2(s, 0.0f) & 0xffffu);
        } else {
            static_cast<float*>(p.C)[b * p.mn + i] = s;
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS) matmul_bf16_reduce_f32(const __grid_constant__ MatmulBf16ReduceParams p) {
    splitk_reduce<false>(p);
}
extern "C" __global__ void __launch_bounds__(THREADS) matmul_bf16_reduce_bf16(const __grid_constant__ MatmulBf16ReduceParams p) {
    splitk_reduce<true>(p);
}
