// Batched, strided f32 matrix product on the tensor cores: C[b] = A[b] B[b], A (M, K) and B
// (K, N) f32, C contiguous (nb, M, N) f32. Two precisions from one kernel body:
//   matmul_tf32_<v>_<layouts>_f32   3xTF32: x = hi + lo with hi = tf32(x), lo = tf32(x - hi),
//                                   a b ~ a_lo b_hi + a_hi b_lo + a_hi b_hi (the lo lo term,
//                                   2^-22 relative, dropped): f32 accuracy, three mma a product.
//   matmul_tf32_<v>_<layouts>_tf32  one pass of tf32(a) tf32(b) (10 mantissa bits, PyTorch's
//                                   allow_tf32 precision), for `precision::set_tf32`.
// Products summed in f32 by the tensor cores. No cuBLAS: mma.sync m16n8k8, ldmatrix, cp.async.
// The CPU twin is the f32 product (ops::matmul::cpu); kernels/tools/emu/matmul_tf32.sh runs these
// kernels on the CPU against a float64 product.
//
// Why: the f32 GEMMs (matmul.cu, CUDA cores) reach 34-42 TFLOP/s on the H200 and cuBLAS 48.8;
// they are ~60% of a training step of the d_model 768 x 24 model (docs/PERF.md). tf32 mma.sync
// runs at ~2/3 of the H200's ~495 TFLOP/s dense tf32 (wgmma's rate), ~330; three passes give
// ~110 TFLOP/s of f32-accurate products at best, one pass ~330. Prediction for v1 (128 x 128
// tiles, no fragment double-buffering): 3xTF32 60-80 TFLOP/s at 4096^3, 1.2-1.6x cuBLAS f32;
// one pass 150-200.
//
// Operands as in matmul_bf16.cu: each row-major ("n") or column-major ("t") with any leading
// dimension, at a batch stride (0 = broadcast); tiles move global -> shared in 16-byte chunks
// (4 floats, cp.async), so the launcher requires the operand's start 16-byte aligned and ld and
// batch stride multiples of 4 (else it runs matmul.cu). Chunks past an edge are zero-filled.
//
// Fragments (m16n8k8 tf32, lane l, g = l / 4, t = l % 4): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4),
// a3 (g + 8, t + 4); b0 (k t, n g), b1 (k t + 4, n g). An operand contiguous along k (A "n", B
// "t") is stored [x][BK]: one ldmatrix.x4 (b16 pairs = one f32) hands each lane its float
// (row l / 4, column l % 4) of four 8 x 4 matrices, exactly those fragments. The others are
// stored [BK][x] and read with one 32-bit shared load per fragment value: lanes (g, t) read rows
// t (or t + 4) at 8 consecutive columns, and the swizzle 2 (r % 4) puts those 4 rows' 2 chunks
// on 8 different groups of 4 banks (no conflict).
//
// v1: 256 threads (8 warps, 2 along m x 4 along n, a 64 x 32 tile each), block tile 128 x 128,
// BK 32, 3 stages (96 KB), one __syncthreads per slice; each k8 step loads its fragments, then
// multiplies. v2: the same, the next step's fragments loaded before this step's mma (as
// matmul_bf16.cu does). Prediction: v2 5-15% faster; gpu-check times both.

#define TF_THREADS 256
#define TF_GROUP_M 8
#define MMT_VEC_C 1  // flags bit 0: C's pair stores are 8-byte aligned (C 8-byte aligned, N even)

#include "mma.cuh"  // cp.async, ldmatrix, ld.shared, cvt.rna.tf32, mma.sync tf32 (and their CPU twins)

// One operand's k-slice in shared memory, X (the block's rows of A or columns of B) by BK f32,
// as its 16-byte chunks sit in global memory. KMAJOR: X rows of BK / 4 chunks, swizzle r % 8
// (ldmatrix's 8 rows of one chunk column on 8 bank groups); else BK rows of X / 4 chunks,
// swizzle 2 (r % 4) (see the file's head). Chunk c of row r sits at chunk c ^ swz(r).
template <int X, int BK, bool KMAJOR>
struct TileF {
    static constexpr int RCH = (KMAJOR ? BK : X) / 4;  // 16-byte chunks per row
    static constexpr int ROWS = KMAJOR ? X : BK;
    static constexpr int BYTES = X * BK * 4;
    static constexpr int RP = TF_THREADS / RCH;  // rows one pass of the block covers
    static constexpr int PASSES = ROWS / RP;     // cp.async per thread per slice
    static_assert(RCH >= 8 && TF_THREADS % RCH == 0 && ROWS % RP == 0, "tile shape");
    __device__ static __forceinline__ int swz(int r) { return KMAJOR ? (r & 7) : 2 * (r & 3); }
    __device__ static __forceinline__ unsigned off(int r, int c) { return (unsigned)((r * RCH + (c ^ swz(r))) * 16); }
    // Byte offset of element (row r, element e of the row).
    __device__ static __forceinline__ unsigned at(int r, int e) { return off(r, e >> 2) + (unsigned)(e & 3) * 4; }
};

// One thread's share of copying an operand's k-slices (as matmul_bf16.cu's Loader, 4 floats a
// chunk): chunk (row tid / RCH + i RP, chunk tid % RCH) of the tile for i < PASSES. The operand
// is addressed P + outer * ld + inner: KMAJOR outer = x, inner = k; else outer = k, inner = x.
template <class T, bool KMAJOR, int BK>
struct LoaderF {
    const float* p;
    int outer, inner;
    unsigned dst;

    __device__ __forceinline__ LoaderF(const float* P, long long ld, int x0, int kbeg, int tid) {
        const int r = tid / T::RCH, c = tid % T::RCH;
        outer = (KMAJOR ? x0 : kbeg) + r;
        inner = (KMAJOR ? kbeg : x0) + 4 * c;
        p = P + (long long)outer * ld + inner;
        dst = T::off(r, c);
    }

    // Queue this slice's copies into the tile at shared address `tile`; step to the next slice.
    __device__ __forceinline__ void load(unsigned tile, const float* base, long long ld, int X, int kend) {
        const int left = (KMAJOR ? kend : X) - inner, outer_end = KMAJOR ? X : kend;
        const int bytes = left >= 4 ? 16 : (left > 0 ? 4 * left : 0);
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

// The A fragment of m16 tile rows m0..m0+15, k ks..ks+7, from tile `ta` (shared address).
template <class T, bool KMAJOR>
__device__ __forceinline__ void a_frag(float (&a)[4], unsigned ta, int m0, int ks, int lane) {
    const int g = lane >> 2, t = lane & 3;
    if (KMAJOR) {
        unsigned r[4];
        ldmatrix_x4(r, ta + T::off(m0 + (lane & 7) + 8 * ((lane >> 3) & 1), ks / 4 + (lane >> 4)));
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = bits_f32(r[i]);
    } else {
        a[0] = lds_f32(ta + T::at(ks + t, m0 + g));
        a[1] = lds_f32(ta + T::at(ks + t, m0 + g + 8));
        a[2] = lds_f32(ta + T::at(ks + t + 4, m0 + g));
        a[3] = lds_f32(ta + T::at(ks + t + 4, m0 + g + 8));
    }
}

// The B fragments of the two n8 tiles n0..n0+7 and n0+8..n0+15 at k ks..ks+7: b[0] the
// first's (b0, b1), b[1] the second's.
template <class T, bool KMAJOR>
__device__ __forceinline__ void b_frags(float (&b)[2][2], unsigned tb, int n0, int ks, int lane) {
    const int g = lane >> 2, t = lane & 3;
    if (KMAJOR) {
        unsigned r[4];
        ldmatrix_x4(r, tb + T::off(n0 + (lane & 7) + 8 * (lane >> 4), ks / 4 + ((lane >> 3) & 1)));
        b[0][0] = bits_f32(r[0]), b[0][1] = bits_f32(r[1]), b[1][0] = bits_f32(r[2]), b[1][1] = bits_f32(r[3]);
    } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            b[h][0] = lds_f32(tb + T::at(ks + t, n0 + 8 * h + g));
            b[h][1] = lds_f32(tb + T::at(ks + t + 4, n0 + 8 * h + g));
        }
    }
}

// x = hi + lo, each exactly a tf32 value (lo holds the next 11 bits).
__device__ __forceinline__ void split_tf32(float x, float& hi, float& lo) {
    hi = tf32_round(x);
    lo = tf32_round(x - hi);
}

// Block ordering in groups of TF_GROUP_M tile rows, column by column inside a group (L2 reuse).
__device__ __forceinline__ void raster_tf32(int pid, int tiles_m, int tiles_n, int& tm, int& tn) {
    const int per_group = TF_GROUP_M * tiles_n;
    const int group = pid / per_group, first = group * TF_GROUP_M;
    const int rows = min(tiles_m - first, TF_GROUP_M);
    const int in = pid - group * per_group;
    tm = first + in % rows;
    tn = in / rows;
}

// The kernels' parameter: `MatmulTf32Params` in launch/matmul_tf32.rs, same fields. A[b] at
// A + b sa, B[b] at B + b sb (b = blockIdx.z / splits); C (nb * splits, M, N) contiguous (f32
// partials when splits > 1). Split s = blockIdx.z % splits covers k in [s kchunk, min(K,
// (s + 1) kchunk)), kchunk a multiple of BK.
struct MatmulTf32Params {
    const float* A;
    const float* B;
    float* C;
    long long lda, sa, ldb, sb;
    int M, N, K, flags;
    int splits, kchunk;
};
static_assert(sizeof(MatmulTf32Params) == 80, "MatmulTf32Params: launch/matmul_tf32.rs has 80 bytes");

// One warp's raw (f32) fragments of one k8 step: a[mi] of its m16 tiles, b[ni] of its n8 tiles.
template <class TA, class TB, bool AK, bool BKM, int MI, int NI>
struct FragsF {
    float a[MI][4], b[NI][2];

    // Step ks of the slice in tiles ta, tb (shared addresses).
    __device__ __forceinline__ void load(unsigned ta, unsigned tb, int wm, int wn, int ks, int lane) {
#pragma unroll
        for (int j = 0; j < NI / 2; ++j) {
            float r[2][2];
            b_frags<TB, BKM>(r, tb, wn + 16 * j, ks, lane);
#pragma unroll
            for (int h = 0; h < 2; ++h) b[2 * j + h][0] = r[h][0], b[2 * j + h][1] = r[h][1];
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) a_frag<TA, AK>(a[mi], ta, wm + 16 * mi, ks, lane);
    }

    // acc += these fragments' products: 3xTF32 (SPLIT) or one tf32 pass.
    template <bool SPLIT>
    __device__ __forceinline__ void mma(float (&acc)[MI][NI][4]) const {
        float bh[NI][2], bl[NI][2];
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                if (SPLIT) {
                    split_tf32(b[ni][e], bh[ni][e], bl[ni][e]);
                } else {
                    bh[ni][e] = tf32_round(b[ni][e]);
                }
            }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
            float hi[4], lo[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                if (SPLIT) {
                    split_tf32(a[mi][e], hi[e], lo[e]);
                } else {
                    hi[e] = tf32_round(a[mi][e]);
                }
            }
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
                float* c = acc[mi][ni];
                if (SPLIT) {  // the small terms first
                    mma_tf32(c[0], c[1], c[2], c[3], lo[0], lo[1], lo[2], lo[3], bh[ni][0], bh[ni][1]);
                    mma_tf32(c[0], c[1], c[2], c[3], hi[0], hi[1], hi[2], hi[3], bl[ni][0], bl[ni][1]);
                }
                mma_tf32(c[0], c[1], c[2], c[3], hi[0], hi[1], hi[2], hi[3], bh[ni][0], bh[ni][1]);
            }
        }
    }
};

// The whole GEMM of one block: tile (BM, BN) of C[blockIdx.z], k in slices of BK through a
// STAGES-deep cp.async ring. Per slice kt: wait until slice kt has landed and every warp is
// done with slice kt - 1 (one barrier), queue slice kt + STAGES - 1 into slice kt - 1's slot,
// then the BK / 8 mma steps of slice kt. AT / BT: A / B column-major; SPLIT: 3xTF32. PREFETCH
// (v2): each step's fragments are loaded from shared memory before the previous step's mma run
// (two sets in registers), so the loads' latency hides under the tensor cores' work.
template <int BM, int BN, int BK, int STAGES, bool AT, bool BT, bool SPLIT, bool PREFETCH>
__device__ __forceinline__ void gemm_tf32(const MatmulTf32Params& p) {
    constexpr bool AK = !AT, BKM = BT;  // operand contiguous along k
    using TA = TileF<BM, BK, AK>;
    using TB = TileF<BN, BK, BKM>;
    constexpr int STAGE = TA::BYTES + TB::BYTES;
    constexpr int WTM = BM / 2, WTN = BN / 4;  // warp tile: 8 warps, 2 along m x 4 along n
    constexpr int MI = WTM / 16, NI = WTN / 8;
    static_assert(NI % 2 == 0 && STAGES >= 2 && BK % 8 == 0, "config");
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 2) * WTM, wn = (warp & 3) * WTN;
    int tm, tn;
    raster_tf32(blockIdx.x, (p.M + BM - 1) / BM, (p.N + BN - 1) / BN, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN;
    const int b = blockIdx.z / p.splits, s = blockIdx.z % p.splits;
    const int kbeg = s * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
    const int ktiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
    LoaderF<TA, AK, BK> la(p.A + b * p.sa, p.lda, m0, kbeg, tid);
    LoaderF<TB, BKM, BK> lb(p.B + b * p.sb, p.ldb, n0, kbeg, tid);
    const unsigned smem = smem_addr(dyn_smem());
    const auto load_slice = [&](int slot) {
        la.load(smem + slot * STAGE, p.A, p.lda, p.M, kend);
        lb.load(smem + slot * STAGE + TA::BYTES, p.B, p.ldb, p.N, kend);
    };
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
    int rd = 0;  // the ring slot of slice kt
    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kt + STAGES - 1 < ktiles) load_slice(rd == 0 ? STAGES - 1 : rd - 1);
        cp_async_commit();
        const unsigned ta = smem + rd * STAGE, tb = ta + TA::BYTES;
        if (PREFETCH) {
            FragsF<TA, TB, AK, BKM, MI, NI> f[2];
            f[0].load(ta, tb, wm, wn, 0, lane);
#pragma unroll
            for (int ks = 0; ks < BK / 8; ++ks) {
                if (ks + 1 < BK / 8) f[(ks + 1) & 1].load(ta, tb, wm, wn, 8 * (ks + 1), lane);
                f[ks & 1].template mma<SPLIT>(acc);
            }
        } else {
#pragma unroll
            for (int ks = 0; ks < BK; ks += 8) {
                FragsF<TA, TB, AK, BKM, MI, NI> f;
                f.load(ta, tb, wm, wn, ks, lane);
                f.template mma<SPLIT>(acc);
            }
        }
        rd = rd + 1 == STAGES ? 0 : rd + 1;
    }

    // Epilogue: lane (g, t) holds rows g, g + 8 of each m16 tile, columns 2t, 2t + 1 of each n8.
    float* C = p.C + (long long)blockIdx.z * p.M * p.N;
    const bool vec = p.flags & MMT_VEC_C;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm + 16 * mi + g + 8 * h, col = n0 + wn + 8 * ni + 2 * t;
                if (row >= p.M || col >= p.N) continue;
                float* q = C + (long long)row * p.N + col;
                const float v0 = acc[mi][ni][2 * h], v1 = acc[mi][ni][2 * h + 1];
                if (vec && col + 1 < p.N) {
                    *reinterpret_cast<float2*>(q) = make_float2(v0, v1);
                } else {
                    q[0] = v0;
                    if (col + 1 < p.N) q[1] = v1;
                }
            }
}

// Entry points: matmul_tf32_<version>_<A layout><B layout>_<f32 (3xTF32) | tf32 (one pass)>.
// Launch: grid (ceil(M / BM) * ceil(N / BN), 1, nb * splits), block 256, dynamic shared memory
// STAGES * (BM + BN) * BK * 4 bytes (above 48 KB: the launcher raises the kernel's limit).
#define MATMUL_TF32_KERNEL(name, bm, bn, bk, stages, at, bt, split, pf)                                      \
    extern "C" __global__ void __launch_bounds__(TF_THREADS, 1) name(const __grid_constant__ MatmulTf32Params p) { \
        gemm_tf32<bm, bn, bk, stages, at, bt, split, pf>(p);                                                  \
    }
#define MATMUL_TF32_LAYOUTS(ver, bm, bn, bk, stages, prec, split, pf)                                 \
    MATMUL_TF32_KERNEL(matmul_tf32_##ver##_nn_##prec, bm, bn, bk, stages, false, false, split, pf)     \
    MATMUL_TF32_KERNEL(matmul_tf32_##ver##_nt_##prec, bm, bn, bk, stages, false, true, split, pf)      \
    MATMUL_TF32_KERNEL(matmul_tf32_##ver##_tn_##prec, bm, bn, bk, stages, true, false, split, pf)      \
    MATMUL_TF32_KERNEL(matmul_tf32_##ver##_tt_##prec, bm, bn, bk, stages, true, true, split, pf)

MATMUL_TF32_LAYOUTS(v1, 128, 128, 32, 3, f32, true, false)
MATMUL_TF32_LAYOUTS(v1, 128, 128, 32, 3, tf32, false, false)
MATMUL_TF32_LAYOUTS(v2, 128, 128, 32, 3, f32, true, true)
MATMUL_TF32_LAYOUTS(v2, 128, 128, 32, 3, tf32, false, true)

// Split-K's second pass: C[b][i] = sum over s < splits of W[b splits + s][i], in order of s
// (deterministic), for i < mn; batch b = blockIdx.y. `MatmulTf32ReduceParams` in the launcher.
struct MatmulTf32ReduceParams {
    const float* W;
    float* C;
    long long mn;
    int splits, pad_;
};
static_assert(sizeof(MatmulTf32ReduceParams) == 32, "MatmulTf32ReduceParams: launch/matmul_tf32.rs has 32 bytes");

extern "C" __global__ void __launch_bounds__(TF_THREADS) matmul_tf32_reduce(const __grid_constant__ MatmulTf32ReduceParams p) {
    const long long b = blockIdx.y;
    const float* W = p.W + b * p.splits * p.mn;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.mn; i += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int q = 0; q < p.splits; ++q) s += W[q * p.mn + i];
        p.C[b * p.mn + i] = s;
    }
}
