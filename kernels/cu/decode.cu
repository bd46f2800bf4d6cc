// Token-by-token decoding of Mamba-1 and Mamba-2 LMs in few fused kernels: the CUDA twins of
// engine/src/ops/decode/cpu.rs (same names). One token for each of B sequences; per Mamba-1
// layer (d_model M, d_inner D, d_state N, dt_rank R, d_conv K, xdim = R + 2N):
//
//   decode_in_f32    [layer 0: r = embedding[id]] ; u = RMSNorm(r) ; [x, z] = in_proj u ;
//                    conv window <- x ; xc = silu(conv_w . window + conv_b)
//   decode_rows_f32  xdbl = x_proj xc = [dt, B, C]       (inside decode_ssm for small layers)
//   decode_ssm_f32   dt = softplus(dt_w dt + dt_b) ; s = exp(dt A) s + dt B xc ;
//                    y = (C . s + D xc) silu(z)
//   decode_rows_f32  r += out_proj y
//
// and per Mamba-2 layer (e = H P channels in H heads of P, G groups of B and C, conv_dim = e + 2GN):
//
//   decode_in_f32    u = RMSNorm(r) ; [z, xBC, dt] = in_proj u ; conv window <- xBC ;
//                    xbc = silu(conv_w . window + conv_b)        (the conv rows: xBC's)
//   decode_ssd_f32   per head: dt' = softplus(dt + dt_bias) ; S = exp(dt' A) S + dt' x B^T ;
//                    y = (S C + D x) silu(z)
//   decode_rows_f32  r += out_proj RMSNorm(y) (with the gated norm's weight; without a norm, none)
//
// and once per token decode_rows_f32 again for the head (logits = embedding RMSNorm_f(r)).
// Layer 0's decode_in gathers the token's embedding row itself (a launch of its own would cost
// more than the copy): 3 L + 1 launches a token for small Mamba-1 layers (the default model, 4
// layers: 13) and for Mamba-2, 4 L + 1 for larger Mamba-1 layers, instead of the generic step's
// ~25-30 small ops a layer; every weight is
// read once per token. At batch 1 the step is a chain of matrix-vector products bound by
// reading the weights (d_model 768 x 24: 363 MB, ~75 us at ~4.8 TB/s) and by latency: each
// kernel is a few microseconds, so a chain of dependent round trips to memory inside one
// (~0.5-1 us each) costs as much as its bytes. So:
//
// - Weights do not depend on the previous kernel: every kernel loads its weights into
//   registers first (up to DECODE_WMAX float4 per lane), then stages its input, then
//   multiplies. The input's round trip and the norm overlap the weights' (Nsight Compute saw
//   decode_in at 12 us for 10 MB when the weights were loaded after the norm).
// - Launched as programmatic dependents (launch/pdl.rs): a kernel may start while the one before
//   it still runs, loads its weights, then waits (griddepcontrol.wait) for that kernel to finish
//   before it touches activations, and lets the next kernel start likewise. Nothing is written
//   before the wait.
// - A block of 8 warps owns 8 / split weight rows; `split` warps share a row, each taking
//   every split-th group of 32 float4 columns. The launchers pick split so that there are
//   ~2 blocks per SM where the rows allow (out_proj at d_model 768: split 4, 384 blocks).
// - The block's input (up to DECODE_BT batch rows) is staged in shared memory and normed
//   there, so each weight is loaded once for all the batch rows.
// - decode_ssm gives each channel 16 threads (state index n = lane, lane + 16, ...).

#define DECODE_THREADS 256
#define DECODE_WARPS (DECODE_THREADS / 32)
#define DECODE_BT 8    // batch rows per block at most
#define DECODE_WMAX 8  // float4 of its row a lane loads before the multiplies
// The row kernels say __launch_bounds__(256, 1): with the bare (256), ptxas held them to 40
// registers and spilled (they need more; at most 2-3 blocks per SM are launched anyway).

#include "reduce.cuh"

// Wait until the kernel before this one on the stream has finished and its writes are
// visible (a no-op for an ordinary launch), then let the next kernel start its prologue.
__device__ __forceinline__ void decode_wait() {
#ifndef CUDA_EMU  // kernels/tools/emu runs one kernel after another: nothing to wait for
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A kernel's dynamic shared memory as an array of T (the emulator hands out a buffer of its own).
#ifdef CUDA_EMU
#define DECODE_SMEM(T, name) T* name = reinterpret_cast<T*>(dyn_smem())
#else
#define DECODE_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), as scan.cu and the CPU twin.
__device__ __forceinline__ float decode_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float decode_silu(float x) { return x / (1.0f + expf(-x)); }

// The kernels' parameters: `Decode*Params` in launch/decode.rs, same fields.
// in_proj's rows [conv_lo, conv_lo + conv_n) go through the conv into xc, the others into
// `rest` in their order (Mamba-1: x then z, conv_lo 0, conv_n D, rest = z; Mamba-2: z, xBC, dt,
// conv_lo e, conv_n e + 2GN, rest = [z, dt]).
struct DecodeInParams {
    float* xc;               // (B, conv_n) silu(conv)
    float* rest;             // (B, rows - conv_n)
    float* conv_state;       // (B, conv_n, K) the last K inputs of the conv, oldest first
    float* residual;         // (B, M): read, or with the embedding written (= its rows at ids)
    const float* norm_w;     // (M)
    const float* in_proj;    // (rows, M)
    const float* conv_w;     // (conv_n, K)
    const float* conv_b;     // (conv_n)
    const float* embedding;  // (V, M) for layer 0, else null (then ids is null too)
    const float* ids;        // (B) token ids as floats (exact below 2^24)
    int batch, m, rows, conv_lo, conv_n, k, bt;
    int split;               // warps per row: 1, 2, 4 or 8
    float eps;
    int vocab;               // V
};
static_assert(sizeof(DecodeInParams) == 120, "DecodeInParams: launch/decode.rs has 120 bytes");

struct DecodeSsmParams {
    float* y;               // (B, D) gated output
    float* ssm_state;       // (B, D, N)
    float* xdbl;            // (B, R + 2N) = [dt, B, C]: read, or written when x_proj is given
    const float* xc;        // (B, D)
    const float* z;         // (B, D)
    const float* dt_w;      // (D, R)
    const float* dt_b;      // (D)
    const float* a;         // (D, N)  A = -exp(A_log)
    const float* d_skip;    // (D)
    const float* x_proj;    // (R + 2N, D), or null: xdbl = x_proj xc is computed here (small layers)
    int batch, d, n, r;
};
static_assert(sizeof(DecodeSsmParams) == 96, "DecodeSsmParams: launch/decode.rs has 96 bytes");

// A layer small enough (D <= 32 * DECODE_FUSE_COLS, R + 2N <= 8 * DECODE_FUSE_ROWS) gets x_proj
// inside decode_ssm: every block multiplies the whole x_proj (the default model's: 40 x 256,
// 40 KB from L2) for its batch row instead of a launch of its own, which inside a graph costs
// more (~2.8 us a kernel for the default model) than the product.
#define DECODE_FUSE_ROWS 8  // rows of x_proj per warp (in registers)
#define DECODE_FUSE_COLS 8  // columns per lane

// out (B, rows) = [out +] W (rows, cols) . [RMSNorm](x (B, cols)): x_proj (no norm), out_proj
// (accumulating into the residual) and the head (normed).
struct DecodeRowsParams {
    float* out;             // (B, rows)
    const float* x;         // (B, cols)
    const float* norm_w;    // (cols) or null
    const float* w;         // (rows, cols)
    int batch, rows, cols, bt;
    int split;              // warps per row: 1, 2, 4 or 8
    int accumulate;         // add to out instead of overwriting it
    float eps;
    int pad_;
};
static_assert(sizeof(DecodeRowsParams) == 64, "DecodeRowsParams: launch/decode.rs has 64 bytes");

// This warp's share of weight row `row` of w (rows, cols): float4 columns share*32 + lane +
// i*32*split for i < DECODE_WMAX (zeros past the row or past the last row).
__device__ __forceinline__ void decode_load_row(float4 (&wv)[DECODE_WMAX], const float* __restrict__ w, int row, int rows,
                                                int cols, int split) {
    const int lane = threadIdx.x & 31, share = (threadIdx.x >> 5) % split, c4 = cols / 4;
    const float4* wr = reinterpret_cast<const float4*>(w + (long long)min(row, rows - 1) * cols);
#pragma unroll
    for (int i = 0; i < DECODE_WMAX; i++) {
        const int c = share * 32 + lane + i * 32 * split;
        wv[i] = row < rows && c < c4 ? __ldg(wr + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
}

// Stage batch rows b0 .. b0+bt of x (B, cols) into u (bt, cols) in shared memory, times
// norm_w when given, and each row's 1/rms into rs (1 without a norm): the squares are summed
// from shared memory by warp b for row b. With `ids`, x is a table (vocab, cols) instead and
// batch row b is its row ids[b] (an id out of [0, vocab) is clamped; the host checks ids before
// writing them), also written as it is to row b of `copy` (B, cols) unless that is null.
__device__ __forceinline__ void decode_stage(float* u, float* rs, const float* __restrict__ x,
                                             const float* __restrict__ norm_w, int b0, int bt, int cols, float eps,
                                             const float* ids, int vocab, float* copy) {
    float4* u4 = reinterpret_cast<float4*>(u);
    if (ids) {
        const int c4 = cols / 4;
        for (int i = threadIdx.x; i < bt * c4; i += blockDim.x) {
            const int b = i / c4, c = i - b * c4;
            const int id = min(max((int)ids[b0 + b], 0), vocab - 1);
            const float4 v = __ldg(reinterpret_cast<const float4*>(x + (long long)id * cols) + c);
            u4[i] = v;
            if (copy) reinterpret_cast<float4*>(copy + (long long)(b0 + b) * cols)[c] = v;
        }
    } else {
        const float4* x4 = reinterpret_cast<const float4*>(x + (long long)b0 * cols);
        for (int i = threadIdx.x; i < bt * cols / 4; i += blockDim.x) u4[i] = x4[i];
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (warp < bt) {
        float ss = 0.0f;
        if (norm_w)
            for (int c = lane; c < cols; c += 32) ss = fmaf(u[warp * cols + c], u[warp * cols + c], ss);
        ss = warp_sum(ss);
        if (lane == 0) rs[warp] = norm_w ? rsqrtf(ss / (float)cols + eps) : 1.0f;
    }
    __syncthreads();  // the squares are summed before anyone scales u
    if (norm_w)
        for (int i = threadIdx.x; i < bt * cols; i += blockDim.x) u[i] *= __ldg(norm_w + i % cols);
    __syncthreads();
}

// The block's dot products, from the row slice `wv` this warp loaded (decode_load_row) and
// the staged u: warp w does row row0 + w / split; red[w][b] gets its partial. Then thread
// t < (8 / split) * bt returns rs[b] * (the row's partials summed) for row t / bt and batch
// row t % bt (other threads return 0). cols % 4 == 0; w and u 16-byte aligned.
__device__ __forceinline__ float decode_dot(const float4 (&wv)[DECODE_WMAX], const float* __restrict__ w, int row,
                                            int rows, int cols, int split, const float* u, const float* rs, int bt,
                                            float (*red)[DECODE_BT]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int share = warp % split, c4 = cols / 4, stride = 32 * split;
    const float4* u4 = reinterpret_cast<const float4*>(u);
    float acc[DECODE_BT];
#pragma unroll
    for (int b = 0; b < DECODE_BT; b++) acc[b] = 0.0f;
    auto madd = [&](const float4 wq, int c) {
#pragma unroll
        for (int b = 0; b < DECODE_BT; b++) {
            if (b < bt) {
                const float4 x = u4[b * c4 + c];
                acc[b] = fmaf(wq.x, x.x, fmaf(wq.y, x.y, fmaf(wq.z, x.z, fmaf(wq.w, x.w, acc[b]))));
            }
        }
    };
#pragma unroll
    for (int i = 0; i < DECODE_WMAX; i++) {
        const int c = share * 32 + lane + i * stride;
        if (c < c4) madd(wv[i], c);
    }
    if (row < rows) {  // rows wider than the prefetch (cols > 1024 split): the rest, one by one
        const float4* wr = reinterpret_cast<const float4*>(w + (long long)row * cols);
        for (int c = share * 32 + lane + DECODE_WMAX * stride; c < c4; c += stride) madd(__ldg(wr + c), c);
    }
#pragma unroll
    for (int b = 0; b < DECODE_BT; b++) {
        const float v = warp_sum(acc[b]);
        if (lane == 0) red[warp][b] = v;
    }
    __syncthreads();
    const int t = threadIdx.x, rows_here = DECODE_WARPS / split;
    if (t >= rows_here * bt) return 0.0f;
    const int r = t / bt, b = t % bt;
    float v = 0.0f;
    for (int s = 0; s < split; s++) v += red[r * split + s][b];
    return v * rs[b];
}

// Grid (ceil(rows / (8 / split)), ceil(B / bt)), block 256, dynamic shared memory bt * M
// floats. With the embedding (layer 0) every block gathers its input rows from it and never
// reads the residual, which the blocks (0, y) write, one writer a batch row.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS, 1) decode_in_f32(const __grid_constant__ DecodeInParams p) {
    DECODE_SMEM(float, u_in);  // (bt, M)
    __shared__ float rs[DECODE_BT];
    __shared__ float red[DECODE_WARPS][DECODE_BT];
    const int k = p.k, split = p.split, rows_here = DECODE_WARPS / split;
    const int b0 = blockIdx.y * p.bt, bt = min(p.bt, p.batch - b0);
    const int row0 = blockIdx.x * rows_here, t = threadIdx.x;
    float4 wv[DECODE_WMAX];
    decode_load_row(wv, p.in_proj, row0 + (t >> 5) / split, p.rows, p.m, split);
    // the epilogue's thread for (row t / bt, batch row t % bt) fetches its conv inputs now too
    const bool mine = t < rows_here * bt;
    const int c = row0 + (mine ? t / bt : 0), cc = c - p.conv_lo, b = b0 + (mine ? t % bt : 0);
    const bool conv = mine && cc >= 0 && cc < p.conv_n;
    const long long bc = (long long)b * p.conv_n + cc;  // this conv channel's (b, cc)
    float win[8], cw[8], cb = 0.0f, c_last = 0.0f;  // d_conv <= 8 (the launcher checks)
    if (conv) {
        cb = __ldg(p.conv_b + cc);
        c_last = __ldg(p.conv_w + (long long)cc * k + k - 1);
#pragma unroll
        for (int j = 0; j < 8; j++) cw[j] = j < k ? __ldg(p.conv_w + (long long)cc * k + j) : 0.0f;
    }
    decode_wait();
    if (conv) {
#pragma unroll
        for (int j = 0; j < 8; j++) win[j] = j + 1 < k ? p.conv_state[bc * k + j + 1] : 0.0f;
    }
    const bool gather = p.embedding != nullptr;
    decode_stage(u_in, rs, gather ? p.embedding : p.residual, p.norm_w, b0, bt, p.m, p.eps, gather ? p.ids : nullptr,
                 p.vocab, gather && blockIdx.x == 0 ? p.residual : nullptr);
    const float v = decode_dot(wv, p.in_proj, row0 + (t >> 5) / split, p.rows, p.m, split, u_in, rs, bt, red);
    if (!mine || c >= p.rows) return;
    if (!conv) {
        p.rest[(long long)b * (p.rows - p.conv_n) + (cc < 0 ? c : c - p.conv_n)] = v;
        return;
    }
    // window <- [window[1..], v]; xc = silu(conv_b + conv_w . window)
    float s = cb;
    float* st = p.conv_state + bc * k;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (j + 1 < k) {
            st[j] = win[j];
            s = fmaf(cw[j], win[j], s);
        }
    }
    st[k - 1] = v;
    p.xc[bc] = decode_silu(fmaf(c_last, v, s));
}

// Grid (ceil(rows / (8 / split)), ceil(B / bt)), block 256, dynamic shared memory bt * cols
// floats.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS, 1) decode_rows_f32(const __grid_constant__ DecodeRowsParams p) {
    DECODE_SMEM(float, u_rows);  // (bt, cols)
    __shared__ float rs[DECODE_BT];
    __shared__ float red[DECODE_WARPS][DECODE_BT];
    const int b0 = blockIdx.y * p.bt, bt = min(p.bt, p.batch - b0), split = p.split;
    const int row0 = blockIdx.x * (DECODE_WARPS / split), row = row0 + (threadIdx.x >> 5) / split;
    float4 wv[DECODE_WMAX];
    decode_load_row(wv, p.w, row, p.rows, p.cols, split);
    decode_wait();
    decode_stage(u_rows, rs, p.x, p.norm_w, b0, bt, p.cols, p.eps, nullptr, 0, nullptr);
    const float v = decode_dot(wv, p.w, row, p.rows, p.cols, split, u_rows, rs, bt, red);
    const int t = threadIdx.x, out_row = row0 + t / bt;
    if (t >= (DECODE_WARPS / split) * bt || out_row >= p.rows) return;
    float* o = p.out + (long long)(b0 + t % bt) * p.rows + out_row;
    *o = p.accumulate ? *o + v : v;
}

// Grid (D / 16, B), block 256 = 16 channels x 16 threads, dynamic shared memory xdim floats
// (xdim + 32 * DECODE_FUSE_COLS with x_proj: then block (0, b) also writes row b of xdbl).
// FUSED: x_proj inside (small layers; its 64 weights a thread take 104 registers, so at most 2
// blocks per SM, which large batches of large layers felt: decode_ssm_f32 without it keeps 40).
template <bool FUSED>
__device__ __forceinline__ void decode_ssm(const DecodeSsmParams& p) {
    DECODE_SMEM(float, xdbl_s);  // (xdim) = [dt (R), B (N), C (N)], then xc
    const int d = p.d, n = p.n, r = p.r, xdim = r + 2 * n, b = blockIdx.y;
    const int c = blockIdx.x * 16 + (threadIdx.x >> 4), l = threadIdx.x & 15;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long bc = (long long)b * d + c;
    // x_proj's rows warp + 8k, columns lane + 32i (zeros past the matrix), when fused
    float xw[DECODE_FUSE_ROWS][DECODE_FUSE_COLS];
    if constexpr (FUSED) {
#pragma unroll
        for (int k = 0; k < DECODE_FUSE_ROWS; k++)
#pragma unroll
            for (int i = 0; i < DECODE_FUSE_COLS; i++) {
                const int j = warp + DECODE_WARPS * k, col = lane + 32 * i;
                xw[k][i] = j < xdim && col < d ? __ldg(p.x_proj + (long long)j * d + col) : 0.0f;
            }
    }
    // this channel's weights first, then (after the wait) its state and inputs
    float dtw[4], av[4], sv[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int q = l + 16 * i;
        dtw[i] = q < r ? __ldg(p.dt_w + (long long)c * r + q) : 0.0f;
        av[i] = q < n ? __ldg(p.a + (long long)c * n + q) : 0.0f;
    }
    const float dsk = __ldg(p.d_skip + c), dtb = __ldg(p.dt_b + c);
    decode_wait();
#pragma unroll
    for (int i = 0; i < 4; i++) sv[i] = l + 16 * i < n ? p.ssm_state[bc * n + l + 16 * i] : 0.0f;
    const float x = p.xc[bc], zg = p.z[bc];
    if constexpr (FUSED) {  // xdbl = x_proj xc, warp w taking rows w, w + 8, ...
        float* xc_s = xdbl_s + xdim;  // this batch row's xc, zeros past D
        for (int j = threadIdx.x; j < 32 * DECODE_FUSE_COLS; j += blockDim.x) xc_s[j] = j < d ? p.xc[(long long)b * d + j] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < DECODE_FUSE_ROWS; k++) {
            const int j = warp + DECODE_WARPS * k;
            if (j >= xdim) break;  // (uniform in the warp)
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < DECODE_FUSE_COLS; i++) s = fmaf(xw[k][i], xc_s[lane + 32 * i], s);
            s = warp_sum(s);
            if (lane == 0) {
                xdbl_s[j] = s;
                if (blockIdx.x == 0) p.xdbl[(long long)b * xdim + j] = s;
            }
        }
    } else {
        for (int j = threadIdx.x; j < xdim; j += blockDim.x) xdbl_s[j] = p.xdbl[(long long)b * xdim + j];
    }
    __syncthreads();
    float dt = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) dt = fmaf(dtw[i], xdbl_s[min(l + 16 * i, xdim - 1)], dt);  // dtw is 0 past R
    for (int q = l + 64; q < r; q += 16) dt = fmaf(__ldg(p.dt_w + (long long)c * r + q), xdbl_s[q], dt);
    for (int o = 8; o > 0; o >>= 1) dt += __shfl_xor_sync(0xffffffffu, dt, o);
    dt = decode_softplus(dt + dtb);
    float y = 0.0f;
    auto update = [&](int q, float a, float s0) {
        const float v = expf(dt * a) * s0 + dt * xdbl_s[r + q] * x;
        p.ssm_state[bc * n + q] = v;
        y = fmaf(xdbl_s[r + n + q], v, y);
    };
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (l + 16 * i < n) update(l + 16 * i, av[i], sv[i]);
    for (int q = l + 64; q < n; q += 16) update(q, __ldg(p.a + (long long)c * n + q), p.ssm_state[bc * n + q]);
    for (int o = 8; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    if (l == 0) p.y[bc] = (y + dsk * x) * decode_silu(zg);
}

// decode_ssm for layers whose x_proj is its own launch (x_proj null): 40 registers.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_ssm_f32(const __grid_constant__ DecodeSsmParams p) {
    decode_ssm<false>(p);
}

// decode_ssm with x_proj inside (x_proj given; DecodeDims::fuses_x_proj layers). Its CPU twin
// is ops::decode::cpu::decode_ssm with x_proj, as decode_ssm_f32's is without.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_ssm_xproj_f32(const __grid_constant__ DecodeSsmParams p) {
    decode_ssm<true>(p);
}

// One token of a Mamba-2 layer's SSD recurrence (twin: ops::decode::cpu::decode_ssd), per
// head h of P channels with one scalar A_h, reading group g = h / (H / G) of B and C:
//   dt' = softplus(dt_h + dt_bias_h) ; S_h = exp(dt' A_h) S_h + dt' x_h B_g^T    (P, N)
//   y_h = (S_h C_g + D_h x_h) silu(z_h)                                           (P)
// (the gated norm, when the layer has one, is out_proj's staging: decode_rows with norm_w).
struct DecodeSsdParams {
    float* y;               // (B, e) gated output
    float* ssm_state;       // (B, H, P, N)
    const float* xbc;       // (B, e + 2GN) silu(conv): x, then B and C of each group
    const float* zdt;       // (B, e + H): z, then dt before its bias
    const float* dt_bias;   // (H)
    const float* a;         // (H) A = -exp(A_log)
    const float* d_skip;    // (H)
    int batch, heads, headdim, d_state, ngroups, pad_;
};
static_assert(sizeof(DecodeSsdParams) == 80, "DecodeSsdParams: launch/decode.rs has 80 bytes");

// Grid (H * ceil(P / 8), B), block 256: warp w of block x does channel (x % ceil(P / 8)) * 8 + w
// of head x / ceil(P / 8), lane l the state's columns l, l + 32, ...; dynamic shared memory
// 2N floats (the head's B and C). Batch 1 at H 24, P 64 is 192 blocks.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_ssd_f32(const __grid_constant__ DecodeSsdParams p) {
    DECODE_SMEM(float, bc_s);  // (2N) B, then C
    const int nh = p.heads, hp = p.headdim, n = p.d_state, ng = p.ngroups;
    const int e = nh * hp, conv_dim = e + 2 * ng * n, tiles = (hp + DECODE_WARPS - 1) / DECODE_WARPS;
    const int h = blockIdx.x / tiles, ch = (blockIdx.x % tiles) * DECODE_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, g = h / (nh / ng);
    const long long b = blockIdx.y;
    const float a = __ldg(p.a + h), dsk = __ldg(p.d_skip + h), dtb = __ldg(p.dt_bias + h);
    decode_wait();
    const float* xr = p.xbc + b * conv_dim;
    for (int i = threadIdx.x; i < 2 * n; i += blockDim.x) bc_s[i] = xr[e + (i < n ? g * n + i : ng * n + g * n + i - n)];
    const float dt = decode_softplus(p.zdt[b * (e + nh) + e + h] + dtb), da = expf(dt * a);
    __syncthreads();
    if (ch >= hp) return;
    const int c = h * hp + ch;
    const float x = xr[c], dx = dt * x;
    float* s = p.ssm_state + ((b * nh + h) * hp + ch) * n;
    float y = 0.0f;
#pragma unroll 4
    for (int q = lane; q < n; q += 32) {
        const float v = da * s[q] + dx * bc_s[q];
        s[q] = v;
        y = fmaf(bc_s[n + q], v, y);
    }
    y = warp_sum(y);
    if (lane == 0) p.y[b * e + c] = (y + dsk * x) * decode_silu(p.zdt[b * (e + nh) + c]);
}
