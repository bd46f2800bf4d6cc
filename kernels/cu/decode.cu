// Token-by-token decoding of a Mamba-1 LM in few fused kernels: the CUDA twins of
// engine/src/ops/decode/cpu.rs (same names). One token for each of B sequences; per layer
// (d_model M, d_inner D, d_state N, dt_rank R, d_conv K, xdim = R + 2N):
//
//   decode_in_f32    u = RMSNorm(r) ; [x, z] = in_proj u ; conv window <- x ;
//                    xc = silu(conv_w . window + conv_b) ; x_proj partials of xc
//   decode_ssm_f32   xdbl = sum of the partials = [dt, B, C] ; dt = softplus(dt_w dt + dt_b)
//                    s = exp(dt A) s + dt B xc ; y = (C . s + D xc) silu(z)
//   decode_out_f32   r += out_proj y
//
// and once per token decode_embed_f32 (r = embedding[id]) and decode_head_f32 (logits =
// embedding RMSNorm_f(r)). Three launches per layer instead of the ~30 small ops of the
// generic step, and every weight is read once per token: at batch 1 the step is a chain of
// matrix-vector products, bound by reading the weights (d_model 768 x 24: 363 MB, ~75 us at
// ~4.8 TB/s), so the kernels are built to keep many loads in flight:
//
// - A block is 8 warps; a warp owns DECODE_ROWS weight rows and reads them with float4 loads
//   (lane l takes columns 4l, 4l+128, ...), a block owns 8 x DECODE_ROWS = 16 rows. The
//   block's slice of the input (up to DECODE_BT batch rows, normed first where the layer
//   norms) sits in shared memory, so each weight is loaded once for all the batch rows.
//   in_proj at d_model 768: 3072 rows -> 192 blocks, 24 KB of weights each.
// - x_proj needs all of xc, which is spread over the in_proj blocks; instead of another
//   launch, each x block multiplies its 16 channels into a partial x_proj (xdim values per
//   batch row) and decode_ssm sums the D/16 partials in a fixed order (no atomics: the
//   result does not change from run to run).
// - decode_ssm gives each channel 16 threads (state index n = lane, lane + 16, ...).
//
// The launchers (launch/decode.rs) check that M, D are multiples of 16 and 4, that the
// staged rows fit in shared memory, and pick the batch tile.

#define DECODE_THREADS 256
#define DECODE_WARPS (DECODE_THREADS / 32)
#define DECODE_ROWS 2                                // weight rows per warp
#define DECODE_BLOCK_ROWS (DECODE_WARPS * DECODE_ROWS)  // 16 rows per block
#define DECODE_BT 8                                  // batch rows per block at most

#include "reduce.cuh"

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), as scan.cu and the CPU twin.
__device__ __forceinline__ float decode_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float decode_silu(float x) { return x / (1.0f + expf(-x)); }

// The kernels' parameters: `Decode*Params` in launch/decode.rs, same fields.
struct DecodeEmbedParams {
    float* residual;        // (B, M)
    const float* embedding; // (V, M)
    const float* ids;       // (B) token ids as floats (exact below 2^24)
    int batch, m, vocab, pad_;
};
static_assert(sizeof(DecodeEmbedParams) == 40, "DecodeEmbedParams: launch/decode.rs has 40 bytes");

struct DecodeInParams {
    float* xc;               // (B, D) silu(conv) of x
    float* z;                // (B, D)
    float* xpart;            // (D / 16, B, xdim) partial x_proj sums
    float* conv_state;       // (B, D, K) the last K inputs of the conv, oldest first
    const float* residual;   // (B, M)
    const float* norm_w;     // (M)
    const float* in_proj;    // (2D, M)
    const float* conv_w;     // (D, K)
    const float* conv_b;     // (D)
    const float* x_proj;     // (xdim, D)
    int batch, m, d, k, xdim, bt;
    float eps;
    int pad_;
};
static_assert(sizeof(DecodeInParams) == 112, "DecodeInParams: launch/decode.rs has 112 bytes");

struct DecodeSsmParams {
    float* y;               // (B, D) gated output
    float* ssm_state;       // (B, D, N)
    const float* xpart;     // (D / 16, B, xdim)
    const float* xc;        // (B, D)
    const float* z;         // (B, D)
    const float* dt_w;      // (D, R)
    const float* dt_b;      // (D)
    const float* a;         // (D, N)  A = -exp(A_log)
    const float* d_skip;    // (D)
    int batch, d, n, r, n_parts, pad_;
};
static_assert(sizeof(DecodeSsmParams) == 96, "DecodeSsmParams: launch/decode.rs has 96 bytes");

// decode_out_f32 (norm_w null, eps unused: r += W y) and decode_head_f32 (logits = W
// RMSNorm(r)) share this: out (B, rows) = or += W (rows, cols) . [norm](x (B, cols)).
struct DecodeRowsParams {
    float* out;             // (B, rows)
    const float* x;         // (B, cols)
    const float* norm_w;    // (cols) or null
    const float* w;         // (rows, cols)
    int batch, rows, cols, bt;
    float eps;
    int pad_;
};
static_assert(sizeof(DecodeRowsParams) == 56, "DecodeRowsParams: launch/decode.rs has 56 bytes");

// Grid (B), block 256: r[b] = embedding[ids[b]] (an out-of-range id is clamped; the host
// checks ids before writing them).
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_embed_f32(const __grid_constant__ DecodeEmbedParams p) {
    const int b = blockIdx.x;
    if (b >= p.batch) return;
    const int id = min(max((int)p.ids[b], 0), p.vocab - 1);
    for (int j = threadIdx.x; j < p.m; j += blockDim.x) p.residual[(long long)b * p.m + j] = p.embedding[(long long)id * p.m + j];
}

// Stage batch rows b0 .. b0+bt of x (B, cols) into u (bt, cols) in shared memory, times
// norm_w when given, and each row's 1/rms into rs (1 without a norm). Warp w reduces row w.
__device__ void decode_stage(float* u, float* rs, const float* __restrict__ x, const float* __restrict__ norm_w,
                             int b0, int bt, int cols, float eps) {
    for (int i = threadIdx.x; i < bt * cols; i += blockDim.x) {
        const int c = i % cols;
        const float v = x[(long long)b0 * cols + i];
        u[i] = norm_w ? v * norm_w[c] : v;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (warp < bt) {
        float ss = 0.0f;
        if (norm_w) {
            const float* xr = x + (long long)(b0 + warp) * cols;
            for (int c = lane; c < cols; c += 32) ss = fmaf(xr[c], xr[c], ss);
            ss = warp_sum(ss);
        }
        if (lane == 0) rs[warp] = norm_w ? rsqrtf(ss / (float)cols + eps) : 1.0f;
    }
    __syncthreads();
}

// acc[i][b] = rs[b] * sum_c w[row0 + i][c] u[b][c] for this warp's DECODE_ROWS rows (rows
// past `rows` give 0), every lane holding the sums. cols % 4 == 0, w and u 16-byte aligned.
__device__ void decode_rows_dot(float (&acc)[DECODE_ROWS][DECODE_BT], const float* __restrict__ w, int row0, int rows,
                                int cols, const float* u, const float* rs, int bt) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < DECODE_ROWS; i++)
#pragma unroll
        for (int b = 0; b < DECODE_BT; b++) acc[i][b] = 0.0f;
    const int c4 = cols / 4;
    const float4* wr[DECODE_ROWS];
#pragma unroll
    for (int i = 0; i < DECODE_ROWS; i++) wr[i] = reinterpret_cast<const float4*>(w + (long long)min(row0 + i, rows - 1) * cols);
    const float4* u4 = reinterpret_cast<const float4*>(u);
#pragma unroll 2
    for (int c = lane; c < c4; c += 32) {
        float4 wv[DECODE_ROWS];
#pragma unroll
        for (int i = 0; i < DECODE_ROWS; i++) wv[i] = __ldg(wr[i] + c);
#pragma unroll
        for (int b = 0; b < DECODE_BT; b++) {
            if (b < bt) {
                const float4 x = u4[b * c4 + c];
#pragma unroll
                for (int i = 0; i < DECODE_ROWS; i++)
                    acc[i][b] = fmaf(wv[i].x, x.x, fmaf(wv[i].y, x.y, fmaf(wv[i].z, x.z, fmaf(wv[i].w, x.w, acc[i][b]))));
            }
        }
    }
#pragma unroll
    for (int i = 0; i < DECODE_ROWS; i++)
#pragma unroll
        for (int b = 0; b < DECODE_BT; b++) acc[i][b] = row0 + i < rows && b < bt ? warp_sum(acc[i][b]) * rs[b] : 0.0f;
}

// Grid (2D / 16, ceil(B / bt)), block 256, dynamic shared memory bt * M floats. Blocks
// 0 .. D/16 - 1 own x channels (conv, then the x_proj partial), the rest own z.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_in_f32(const __grid_constant__ DecodeInParams p) {
    extern __shared__ __align__(16) float u[];  // (bt, M)
    __shared__ float rs[DECODE_BT];
    __shared__ float xs[DECODE_BT][DECODE_BLOCK_ROWS];
    const int m = p.m, d = p.d, k = p.k, xdim = p.xdim;
    const int b0 = blockIdx.y * p.bt, bt = min(p.bt, p.batch - b0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int block_row0 = blockIdx.x * DECODE_BLOCK_ROWS, row0 = block_row0 + warp * DECODE_ROWS;
    decode_stage(u, rs, p.residual, p.norm_w, b0, bt, m, p.eps);
    float acc[DECODE_ROWS][DECODE_BT];
    decode_rows_dot(acc, p.in_proj, row0, 2 * d, m, u, rs, bt);
    const bool x_block = block_row0 < d;
#pragma unroll
    for (int i = 0; i < DECODE_ROWS; i++) {
#pragma unroll
        for (int b = 0; b < DECODE_BT; b++) {
            if (lane != b || b >= bt) continue;  // lane b writes batch row b
            const long long bd = (long long)(b0 + b) * d;
            if (!x_block) {
                p.z[bd + row0 + i - d] = acc[i][b];
                continue;
            }
            const int c = row0 + i;
            float* st = p.conv_state + (bd + c) * k;
            const float* cw = p.conv_w + (long long)c * k;
            float s = p.conv_b[c];
            for (int j = 0; j + 1 < k; j++) {
                st[j] = st[j + 1];
                s = fmaf(cw[j], st[j], s);
            }
            st[k - 1] = acc[i][b];
            s = decode_silu(fmaf(cw[k - 1], acc[i][b], s));
            p.xc[bd + c] = s;
            xs[b][warp * DECODE_ROWS + i] = s;
        }
    }
    if (!x_block) return;  // uniform over the block
    __syncthreads();
    // partial x_proj of this block's 16 channels: xpart[blockIdx.x][b][j]
    for (int t = threadIdx.x; t < bt * xdim; t += blockDim.x) {
        const int b = t / xdim, j = t % xdim;
        const float* wj = p.x_proj + (long long)j * d + block_row0;
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < DECODE_BLOCK_ROWS; r++) s = fmaf(wj[r], xs[b][r], s);
        p.xpart[((long long)blockIdx.x * p.batch + b0 + b) * xdim + j] = s;
    }
}

// Grid (D / 16, B), block 256 = 16 channels x 16 threads, dynamic shared memory xdim floats.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_ssm_f32(const __grid_constant__ DecodeSsmParams p) {
    extern __shared__ __align__(16) float xdbl[];  // (xdim) = [dt (R), B (N), C (N)]
    const int d = p.d, n = p.n, r = p.r, xdim = r + 2 * n, b = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // xdbl[j] = sum over the partials, lanes splitting them, in a fixed order
    for (int j = warp; j < xdim; j += DECODE_WARPS) {
        float s = 0.0f;
        for (int q = lane; q < p.n_parts; q += 32) s += p.xpart[((long long)q * p.batch + b) * xdim + j];
        s = warp_sum(s);
        if (lane == 0) xdbl[j] = s;
    }
    __syncthreads();
    const int c = blockIdx.x * 16 + (threadIdx.x >> 4), l = threadIdx.x & 15;
    const long long bc = (long long)b * d + c;
    float dt = 0.0f;
    for (int q = l; q < r; q += 16) dt = fmaf(p.dt_w[(long long)c * r + q], xdbl[q], dt);
    for (int o = 8; o > 0; o >>= 1) dt += __shfl_xor_sync(0xffffffffu, dt, o);
    dt = decode_softplus(dt + p.dt_b[c]);
    const float x = p.xc[bc];
    float y = 0.0f;
    for (int q = l; q < n; q += 16) {
        float* s = p.ssm_state + bc * n + q;
        const float v = expf(dt * p.a[(long long)c * n + q]) * *s + dt * xdbl[r + q] * x;
        *s = v;
        y = fmaf(xdbl[r + n + q], v, y);
    }
    for (int o = 8; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    if (l == 0) p.y[bc] = (y + p.d_skip[c] * x) * decode_silu(p.z[bc]);
}

// Grid (ceil(rows / 16), ceil(B / bt)), block 256, dynamic shared memory bt * cols floats.
// The body of decode_out_f32 (accumulate) and decode_head_f32 (overwrite).
__device__ void decode_rows(const DecodeRowsParams& p, bool accumulate) {
    extern __shared__ __align__(16) float u[];  // (bt, cols)
    __shared__ float rs[DECODE_BT];
    const int b0 = blockIdx.y * p.bt, bt = min(p.bt, p.batch - b0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = blockIdx.x * DECODE_BLOCK_ROWS + warp * DECODE_ROWS;
    decode_stage(u, rs, p.x, p.norm_w, b0, bt, p.cols, p.eps);
    float acc[DECODE_ROWS][DECODE_BT];
    decode_rows_dot(acc, p.w, row0, p.rows, p.cols, u, rs, bt);
#pragma unroll
    for (int i = 0; i < DECODE_ROWS; i++)
#pragma unroll
        for (int b = 0; b < DECODE_BT; b++) {
            if (lane != b || b >= bt || row0 + i >= p.rows) continue;
            float* o = p.out + (long long)(b0 + b) * p.rows + row0 + i;
            *o = accumulate ? *o + acc[i][b] : acc[i][b];
        }
}

extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_out_f32(const __grid_constant__ DecodeRowsParams p) {
    decode_rows(p, true);
}

extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_head_f32(const __grid_constant__ DecodeRowsParams p) {
    decode_rows(p, false);
}
