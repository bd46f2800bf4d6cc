// Causal grouped-query attention, forward and backward, f32, never storing the (Lq, Lk) scores:
// the CUDA twin of engine/src/ops/attention/cpu.rs; the math is in engine/src/ops/attention/mod.rs.
// Layouts (contiguous): q, o, dout, dq (b, h, lq, d); k, v, dk, dv (b, g, lk, d); lse, delta
// (b, h, lq). Query head hh reads key/value head hh / (h / g); query i (position start + i) sees
// the keys j <= start + i.
//
//   forward   s_ij = scale q_i . k_j,  online softmax over key tiles: m_i (running max), l_i (sum),
//             o_i = sum_j exp(s_ij - m_i) v_j / l_i,  lse_i = m_i + log l_i
//   backward  p_ij = exp(s_ij - lse_i) (recomputed),  D_i = dout_i . o_i,
//             ds_ij = p_ij (dout_i . v_j - D_i),  dq_i = scale sum_j ds_ij k_j,
//             dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i  (i over the group's heads)
//
// Kernels (256 threads = 16 x 16, every thread a few rows (ty) by a few columns (tx, strided by
// 16) of each tile; tiles staged in shared memory with rows padded to DP + 1 floats so column
// walks hit 32 banks; head_dim zero-padded to DP = 64 or 128, one instantiation each):
//   attention_forward_f32_dDP       grid (ceil(lq / BM), b h): a query tile walks the key tiles
//                                   it can see; scores and p one (BM, BN) tile at a time
//   attention_delta_f32             one warp per query row: D_i = dout_i . o_i
//   attention_backward_dkv_f32_dDP  grid (ceil(lk / BN), b g): a key tile walks the query tiles
//                                   of every head of its group that see it; dk, dv in registers
//   attention_backward_dq_f32_dDP   grid (ceil(lq / BM), b h): a query tile walks its key tiles
//                                   again; dq in registers
// No atomics: every output element has one owner block, so the results repeat bit for bit.
// dkv and dq both recompute p and ds (one more pass of QK^T and dout V^T) instead of storing
// them or adding dq with atomics.
//
// Napkin math at (b 8, h 12, L 2048, d 64), causal: QK^T and PV are 2 L^2 d / 2 FLOPs each per
// (b, h): forward 51.5 GFLOP, backward 2.5x that (QK^T twice, dout V^T twice, dq, dk, dv).
// Bytes are small (q, k, v, o 50 MB each): compute bound. Every FMA here reads its operands
// from shared memory (a few loads per RM x RN FMAs), so these run well under the f32 peak;
// tensor cores (the bf16 issue) are the way past that.

// The kernels' one parameter: `AttentionParams` in launch/attention.rs, same fields (136 bytes).
struct AttentionParams {
    const float* q;      // (b, h, lq, d)
    const float* k;      // (b, g, lk, d)
    const float* v;      // (b, g, lk, d)
    const float* o;      // (b, h, lq, d) forward output (backward)
    const float* lse;    // (b, h, lq) (backward)
    const float* dout;   // (b, h, lq, d) (backward)
    const float* delta;  // (b, h, lq) (backward, after attention_delta_f32)
    float* out;          // forward: o
    float* out_lse;      // forward: lse
    float* dq;           // (b, h, lq, d)
    float* dk;           // (b, g, lk, d)
    float* dv;           // (b, g, lk, d)
    float* out_delta;    // attention_delta_f32: delta
    int batch, heads, kv_heads, lq, lk, d, start;
    float scale;
};
static_assert(sizeof(AttentionParams) == 136, "AttentionParams: launch/attention.rs has 136 bytes");

constexpr int THREADS = 256;

// Rows r0.. r0 + R of a (n, d) matrix into s[R][S] (S >= DP), zero past row n and column d.
template <int R, int DP, int S>
__device__ __forceinline__ void load_rows(float (*s)[S], const float* m, int r0, int n, int d) {
    for (int e = threadIdx.x; e < R * DP; e += THREADS) {
        const int r = e / DP, c = e % DP;
        s[r][c] = (r0 + r < n && c < d) ? m[(long long)(r0 + r) * d + c] : 0.0f;
    }
}

// Values r0.. r0 + R of a length-n vector into s, zero past n.
template <int R>
__device__ __forceinline__ void load_vec(float* s, const float* x, int r0, int n) {
    for (int e = threadIdx.x; e < R; e += THREADS) s[e] = r0 + e < n ? x[r0 + e] : 0.0f;
}

// Max and sum over the 16 lanes of one tile row (the tx of one ty: 16 consecutive lanes).
__device__ __forceinline__ float row_max(float x) {
    for (int o = 8; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float row_sum(float x) {
    for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Whether query i sees key j.
__device__ __forceinline__ bool visible(const AttentionParams& p, int i, int j) {
    return i < p.lq && j < p.lk && j <= p.start + i;
}

// Keys 0..key_end(p, i0, BM) are all that queries i0..i0 + BM see.
__device__ __forceinline__ int key_end(const AttentionParams& p, int i0, int bm) {
    return min(p.lk, p.start + min(i0 + bm, p.lq));
}

// ---------------------------------------------------------------------------------- forward

template <int DP, int BM, int BN>
__device__ void attention_forward(const AttentionParams& p) {
    constexpr int RM = BM / 16, RN = BN / 16, RD = DP / 16;
    __shared__ float qs[BM][DP + 1];
    __shared__ float ks[BN][DP + 1];
    __shared__ float vs[BN][DP + 1];
    __shared__ float ps[BM][BN + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int bh = blockIdx.y, b = bh / p.heads, g = (bh % p.heads) / (p.heads / p.kv_heads);
    const int i0 = blockIdx.x * BM;
    const long long kv_off = (long long)(b * p.kv_heads + g) * p.lk * p.d;
    load_rows<BM, DP>(qs, p.q + (long long)bh * p.lq * p.d, i0, p.lq, p.d);
    float m[RM], l[RM], acc[RM][RD];
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < RD; ++c) acc[r][c] = 0.0f;
    }
    const int kend = key_end(p, i0, BM);
    for (int j0 = 0; j0 < kend; j0 += BN) {
        __syncthreads();  // the last tile's ks, vs, ps are read
        load_rows<BN, DP>(ks, p.k + kv_off, j0, p.lk, p.d);
        load_rows<BN, DP>(vs, p.v + kv_off, j0, p.lk, p.d);
        __syncthreads();
        float s[RM][RN] = {};
        for (int c = 0; c < DP; ++c) {
            float qv[RM], kv[RN];
#pragma unroll
            for (int r = 0; r < RM; ++r) qv[r] = qs[ty * RM + r][c];
#pragma unroll
            for (int n = 0; n < RN; ++n) kv[n] = ks[tx + 16 * n][c];
#pragma unroll
            for (int r = 0; r < RM; ++r)
#pragma unroll
                for (int n = 0; n < RN; ++n) s[r][n] = fmaf(qv[r], kv[n], s[r][n]);
        }
#pragma unroll
        for (int r = 0; r < RM; ++r) {
            const int i = i0 + ty * RM + r;
            float mt = -INFINITY;
#pragma unroll
            for (int n = 0; n < RN; ++n) {
                // rows past lq see key 0 onwards like a real row, so every m is finite after tile 0
                const int j = j0 + tx + 16 * n;
                s[r][n] = (j < p.lk && j <= p.start + i) ? s[r][n] * p.scale : -INFINITY;
                mt = fmaxf(mt, s[r][n]);
            }
            const float m_new = fmaxf(m[r], row_max(mt));
            const float alpha = expf(m[r] - m_new);
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < RN; ++n) {
                const float e = expf(s[r][n] - m_new);
                ps[ty * RM + r][tx + 16 * n] = e;
                sum += e;
            }
            l[r] = l[r] * alpha + row_sum(sum);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < RD; ++c) acc[r][c] *= alpha;
        }
        __syncthreads();
        for (int j = 0; j < BN; ++j) {
            float pv[RM];
#pragma unroll
            for (int r = 0; r < RM; ++r) pv[r] = ps[ty * RM + r][j];
#pragma unroll
            for (int c = 0; c < RD; ++c) {
                const float vv = vs[j][tx + 16 * c];
#pragma unroll
                for (int r = 0; r < RM; ++r) acc[r][c] = fmaf(pv[r], vv, acc[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        const int i = i0 + ty * RM + r;
        if (i >= p.lq) continue;
        const long long row = (long long)bh * p.lq + i;
#pragma unroll
        for (int c = 0; c < RD; ++c) {
            const int col = tx + 16 * c;
            if (col < p.d) p.out[row * p.d + col] = acc[r][c] / l[r];
        }
        if (tx == 0) p.out_lse[row] = m[r] + logf(l[r]);
    }
}

// ---------------------------------------------------------------------------------- backward

// D_i = dout_i . o_i, one warp per row of the (b h lq, d) matrices.
extern "C" __global__ void attention_delta_f32(const __grid_constant__ AttentionParams p) {
    const long long rows = (long long)p.batch * p.heads * p.lq;
    const int lane = threadIdx.x % 32;
    for (long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32; row < rows;
         row += (long long)gridDim.x * blockDim.x / 32) {
        float sum = 0.0f;
        for (int c = lane; c < p.d; c += 32) sum = fmaf(p.dout[row * p.d + c], p.o[row * p.d + c], sum);
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (lane == 0) p.out_delta[row] = sum;
    }
}

// s = scale q . k and dp = dout . v for a tile: rows a (RA of them from a0) of `as_` and `bs`,
// columns of `cs` and `es` (tx + 16 n). Used with (queries, keys) by dq and (keys, queries) by dkv.
template <int DP, int RA, int RB, int SA, int SB>
__device__ __forceinline__ void two_products(float (*as_)[SA], float (*bs)[SA], float (*cs)[SB], float (*es)[SB],
                                             int a0, float (&s)[RA][RB], float (&dp)[RA][RB]) {
    const int tx = threadIdx.x % 16;
    for (int c = 0; c < DP; ++c) {
        float av[RA], bv[RA], cv[RB], ev[RB];
#pragma unroll
        for (int r = 0; r < RA; ++r) av[r] = as_[a0 + r][c], bv[r] = bs[a0 + r][c];
#pragma unroll
        for (int n = 0; n < RB; ++n) cv[n] = cs[tx + 16 * n][c], ev[n] = es[tx + 16 * n][c];
#pragma unroll
        for (int r = 0; r < RA; ++r)
#pragma unroll
            for (int n = 0; n < RB; ++n) {
                s[r][n] = fmaf(av[r], cv[n], s[r][n]);
                dp[r][n] = fmaf(bv[r], ev[n], dp[r][n]);
            }
    }
}

// A key tile of BN keys (rows) against query tiles of BM queries (columns), for every head of
// its group: dv_j += sum_i p_ij dout_i, dk_j += scale sum_i ds_ij q_i.
template <int DP, int BM, int BN>
__device__ void attention_backward_dkv(const AttentionParams& p) {
    constexpr int RN = BN / 16, RM = BM / 16, RD = DP / 16;
    __shared__ float ks[BN][DP + 1], vs[BN][DP + 1], qs[BM][DP + 1], gs[BM][DP + 1];
    __shared__ float ps[BN][BM + 1], dss[BN][BM + 1], lse_s[BM], delta_s[BM];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int bg = blockIdx.y, b = bg / p.kv_heads, g = bg % p.kv_heads, group = p.heads / p.kv_heads;
    const int j0 = blockIdx.x * BN;
    const long long kv_off = (long long)bg * p.lk * p.d;
    load_rows<BN, DP>(ks, p.k + kv_off, j0, p.lk, p.d);
    load_rows<BN, DP>(vs, p.v + kv_off, j0, p.lk, p.d);
    float dk[RN][RD] = {}, dv[RN][RD] = {};
    const int i_first = max(0, j0 - p.start) / BM * BM;  // the first query tile that sees key j0
    for (int hh = 0; hh < group; ++hh) {
        const long long bh = (long long)b * p.heads + g * group + hh;
        for (int i0 = i_first; i0 < p.lq; i0 += BM) {
            __syncthreads();  // the last tile's qs, gs, ps, dss are read
            load_rows<BM, DP>(qs, p.q + bh * p.lq * p.d, i0, p.lq, p.d);
            load_rows<BM, DP>(gs, p.dout + bh * p.lq * p.d, i0, p.lq, p.d);
            load_vec<BM>(lse_s, p.lse + bh * p.lq, i0, p.lq);
            load_vec<BM>(delta_s, p.delta + bh * p.lq, i0, p.lq);
            __syncthreads();
            float s[RN][RM] = {}, dp[RN][RM] = {};
            two_products<DP>(ks, vs, qs, gs, ty * RN, s, dp);
#pragma unroll
            for (int r = 0; r < RN; ++r)
#pragma unroll
                for (int n = 0; n < RM; ++n) {
                    const int j = j0 + ty * RN + r, col = tx + 16 * n;
                    const float pr = visible(p, i0 + col, j) ? expf(s[r][n] * p.scale - lse_s[col]) : 0.0f;
                    ps[ty * RN + r][col] = pr;
                    dss[ty * RN + r][col] = pr * (dp[r][n] - delta_s[col]);
                }
            __syncthreads();
            for (int i = 0; i < BM; ++i) {
                float pv[RN], dsv[RN];
#pragma unroll
                for (int r = 0; r < RN; ++r) pv[r] = ps[ty * RN + r][i], dsv[r] = dss[ty * RN + r][i];
#pragma unroll
                for (int c = 0; c < RD; ++c) {
                    const float gv = gs[i][tx + 16 * c], qv = qs[i][tx + 16 * c];
#pragma unroll
                    for (int r = 0; r < RN; ++r) {
                        dv[r][c] = fmaf(pv[r], gv, dv[r][c]);
                        dk[r][c] = fmaf(dsv[r], qv, dk[r][c]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RN; ++r) {
        const int j = j0 + ty * RN + r;
        if (j >= p.lk) continue;
#pragma unroll
        for (int c = 0; c < RD; ++c) {
            const int col = tx + 16 * c;
            if (col < p.d) {
                p.dk[kv_off + (long long)j * p.d + col] = dk[r][c] * p.scale;
                p.dv[kv_off + (long long)j * p.d + col] = dv[r][c];
            }
        }
    }
}

// A query tile of BM queries (rows) against the key tiles it sees: dq_i = scale sum_j ds_ij k_j.
template <int DP, int BM, int BN>
__device__ void attention_backward_dq(const AttentionParams& p) {
    constexpr int RM = BM / 16, RN = BN / 16, RD = DP / 16;
    __shared__ float qs[BM][DP + 1], gs[BM][DP + 1], ks[BN][DP + 1], vs[BN][DP + 1];
    __shared__ float dss[BM][BN + 1], lse_s[BM], delta_s[BM];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int bh = blockIdx.y, b = bh / p.heads, g = (bh % p.heads) / (p.heads / p.kv_heads);
    const int i0 = blockIdx.x * BM;
    const long long kv_off = (long long)(b * p.kv_heads + g) * p.lk * p.d;
    load_rows<BM, DP>(qs, p.q + (long long)bh * p.lq * p.d, i0, p.lq, p.d);
    load_rows<BM, DP>(gs, p.dout + (long long)bh * p.lq * p.d, i0, p.lq, p.d);
    load_vec<BM>(lse_s, p.lse + (long long)bh * p.lq, i0, p.lq);
    load_vec<BM>(delta_s, p.delta + (long long)bh * p.lq, i0, p.lq);
    float dq[RM][RD] = {};
    const int kend = key_end(p, i0, BM);
    for (int j0 = 0; j0 < kend; j0 += BN) {
        __syncthreads();  // qs, gs, ... loaded; the last tile's ks, vs, dss read
        load_rows<BN, DP>(ks, p.k + kv_off, j0, p.lk, p.d);
        load_rows<BN, DP>(vs, p.v + kv_off, j0, p.lk, p.d);
        __syncthreads();
        float s[RM][RN] = {}, dp[RM][RN] = {};
        two_products<DP>(qs, gs, ks, vs, ty * RM, s, dp);
#pragma unroll
        for (int r = 0; r < RM; ++r)
#pragma unroll
            for (int n = 0; n < RN; ++n) {
                const int row = ty * RM + r, j = j0 + tx + 16 * n;
                const float pr = visible(p, i0 + row, j) ? expf(s[r][n] * p.scale - lse_s[row]) : 0.0f;
                dss[row][tx + 16 * n] = pr * (dp[r][n] - delta_s[row]);
            }
        __syncthreads();
        for (int j = 0; j < BN; ++j) {
            float dsv[RM];
#pragma unroll
            for (int r = 0; r < RM; ++r) dsv[r] = dss[ty * RM + r][j];
#pragma unroll
            for (int c = 0; c < RD; ++c) {
                const float kv = ks[j][tx + 16 * c];
#pragma unroll
                for (int r = 0; r < RM; ++r) dq[r][c] = fmaf(dsv[r], kv, dq[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        const int i = i0 + ty * RM + r;
        if (i >= p.lq) continue;
#pragma unroll
        for (int c = 0; c < RD; ++c) {
            const int col = tx + 16 * c;
            if (col < p.d) p.dq[((long long)bh * p.lq + i) * p.d + col] = dq[r][c] * p.scale;
        }
    }
}

// The instantiations: head_dim <= 64 and <= 128, tiles (BM, BN) chosen to keep each block's
// static shared memory under 48 KB (launch/attention.rs has the same numbers).
#define ATTENTION_KERNELS(DP, FWD_BM, FWD_BN, BWD_B)                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                \
        attention_forward_f32_d##DP(const __grid_constant__ AttentionParams p) {                         \
        attention_forward<DP, FWD_BM, FWD_BN>(p);                                                        \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                \
        attention_backward_dkv_f32_d##DP(const __grid_constant__ AttentionParams p) {                    \
        attention_backward_dkv<DP, BWD_B, BWD_B>(p);                                                     \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                \
        attention_backward_dq_f32_d##DP(const __grid_constant__ AttentionParams p) {                     \
        attention_backward_dq<DP, BWD_B, BWD_B>(p);                                                      \
    }
ATTENTION_KERNELS(64, 64, 32, 32)
ATTENTION_KERNELS(128, 32, 16, 16)
