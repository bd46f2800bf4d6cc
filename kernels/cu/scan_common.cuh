// The selective scan's shared pieces: the kernels' parameter structs (launch/scan.rs mirrors
// them), the 16-lane layout's constants, the transposed butterfly sums, the backward's stores
// of its partial sums. Included by scan.cu (forward v1, v2, backward v1-v3, the reduce) and
// scan_pipelined.cuh (forward v3, backward v4, on f32 or bf16 inputs); the algorithm and the
// layouts are described in scan.cu.
#pragma once

#define SCAN_MAX_STATE 16

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable for any x (as the CPU twin).
__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// The parameter of both forward kernels: `ScanForwardParams` in launch/scan.rs, same fields
// (layouts in scan.cu's header; z, delta_bias and init may be null).
struct ScanForwardParams {
    float* out;
    float* last_state;
    float* chunk_states;
    const float *u, *delta, *A, *Bm, *Cm, *Dskip;
    const float* z;
    const float* delta_bias;
    const float* init;
    int softplus, batch, dim, len, n_state, chunk;
};
static_assert(sizeof(ScanForwardParams) == 120, "ScanForwardParams: launch/scan.rs has 120 bytes");

#define SCAN_BWD_CH 8                                    // channels per block (forward v2, backward v1, v2)
#define SCAN_BWD_LANES 16                                // lanes per channel = most states
#define SCAN_BWD_THREADS (SCAN_BWD_CH * SCAN_BWD_LANES)  // 128
#define SCAN_BWD_WIN 16                                  // time steps per window (= lanes)
#define SCAN_BWD_MAX_WINS 16                             // windows per chunk: chunk <= 256
#define SCAN_LOG2E 1.4426950408889634f

// Transposed sum over a 16-lane group: lane l returns sum over the group's lanes of v[l].
// Each level halves the values a lane holds: 8 + 4 + 2 + 1 = 15 shuffles for 16 sums.
// One pair of a level: v[k] and v[k + OFF] become one value in v[k].
template <int OFF>
__device__ __forceinline__ void transpose_pair(float (&v)[SCAN_BWD_WIN], int k, int lane) {
    const bool up = lane & OFF;  // this lane keeps the upper half (steps with bit OFF set)
    const float send = up ? v[k] : v[k + OFF];
    const float keep = up ? v[k + OFF] : v[k];
    v[k] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
}
template <int OFF>
__device__ __forceinline__ void transpose_level(float (&v)[SCAN_BWD_WIN], int lane) {
#pragma unroll
    for (int k = 0; k < OFF; ++k) transpose_pair<OFF>(v, k, lane);
}
// The levels after the first (the caller has done level 8, pair by pair as the values came:
// backward v4 and forward v3 do, which keeps 8 fewer values alive).
__device__ __forceinline__ float transpose_sum16_after8(float (&v)[SCAN_BWD_WIN], int lane) {
    transpose_level<4>(v, lane);
    transpose_level<2>(v, lane);
    transpose_level<1>(v, lane);
    return v[0];
}
__device__ __forceinline__ float transpose_sum16(float (&v)[SCAN_BWD_WIN], int lane) {
    transpose_level<8>(v, lane);
    return transpose_sum16_after8(v, lane);
}

// The backward body's arguments, with u, delta, z and their gradients du, ddelta, dz of element
// type X: float, or bf16_t (everything else stays f32).
#define SCAN_BWD_PARAMS_OF(X)                                                                                      \
    X *__restrict__ du, X *__restrict__ ddelta, X *__restrict__ dz, float *__restrict__ dinit,                       \
        float *__restrict__ part, const X *__restrict__ u, const X *__restrict__ delta,                             \
        const float *__restrict__ A, const float *__restrict__ Bm, const float *__restrict__ Cm,                     \
        const float *__restrict__ Dskip, const X *__restrict__ z, const float *__restrict__ delta_bias,              \
        int softplus, const float *__restrict__ chunk_states, const float *__restrict__ dout,                      \
        const float *__restrict__ dlast, int batch, int dim, int len, int n_state, int chunk
#define SCAN_BWD_PARAMS SCAN_BWD_PARAMS_OF(float)
// The parameter of the backward kernels: `ScanBackwardParams` in launch/scan.rs, same
// fields (outputs first; dz, dinit, z, delta_bias, dlast may be null; `part` is the workspace
// of partial sums, laid out as selective_scan_backward_reduce_f32 says). The flag and sizes
// are 8-byte (each fits an int): with 4-byte ones nvcc loads them in pairs and version 2, at
// its 128-register cap, spilled 4 bytes.
struct ScanBackwardParams {
    float *du, *ddelta;
    float* dz;
    float* dinit;
    float* part;
    const float *u, *delta, *A, *Bm, *Cm, *Dskip;
    const float* z;
    const float* delta_bias;
    const float* chunk_states;
    const float* dout;
    const float* dlast;
    long long softplus, batch, dim, len, n_state, chunk;
};
static_assert(sizeof(ScanBackwardParams) == 176, "ScanBackwardParams: launch/scan.rs has 176 bytes");

// The fields of a ScanBackwardParams p in SCAN_BWD_PARAMS_OF(X) order (the struct's pointers
// are declared float; the bf16 kernels' launcher stores bf16 buffers in u, delta, z, du, ddelta, dz).
#define SCAN_BWD_ARGS_OF(X)                                                                                       \
    (X*)p.du, (X*)p.ddelta, (X*)p.dz, p.dinit, p.part, (const X*)p.u, (const X*)p.delta, p.A, p.Bm, p.Cm,      \
        p.Dskip, (const X*)p.z, p.delta_bias, (int)p.softplus, p.chunk_states, p.dout, p.dlast, (int)p.batch,  \
        (int)p.dim, (int)p.len, (int)p.n_state, (int)p.chunk
#define SCAN_BWD_ARGS SCAN_BWD_ARGS_OF(float)

// dBm, dCm of the window at tw (wl steps) from s_red (per warp and step: dBm[n] | dCm[n]): the
// warps summed in order, stored as this block's partial (b, blockIdx.x, q, n, t); 64-byte runs
// in t. (A 32-bit offset from the window's pointer: 2 N L <= 2 B N L < 2^32, checked by the
// launcher; a 64-bit index spilled.) After a barrier that ends s_red's writers.
template <int THREADS>
__device__ __forceinline__ void scan_store_window(float* __restrict__ part, const float (*s_red)[SCAN_BWD_WIN][32],
                                                  int b, int tw, int wl, int n_state, int len) {
    constexpr int WARPS = THREADS / 32;
    float* wp = part + ((long long)b * gridDim.x + blockIdx.x) * 2 * n_state * len + tw;
    for (int o = threadIdx.x; o < 2 * SCAN_BWD_LANES * SCAN_BWD_WIN; o += THREADS) {
        const int q = o / (SCAN_BWD_LANES * SCAN_BWD_WIN), n = (o / SCAN_BWD_WIN) % SCAN_BWD_LANES;
        const int i = o % SCAN_BWD_WIN;
        if (n < n_state && i < wl) {
            float sum = 0.0f;
#pragma unroll
            for (int k = 0; k < WARPS; ++k) sum += s_red[k][i][q * 16 + n];
            wp[(unsigned)(q * n_state + n) * (unsigned)len + i] = sum;
        }
    }
}

// The end of a channel's backward: dinit (exp(dt_0 A) dh_0), then its partials of dA (B, D, N)
// and dD, dbias (B, D) each, after dBm, dCm's in `part`. (gridDim.y is B: holding `batch` live
// through the loops spilled version 2.)
__device__ __forceinline__ void scan_store_channel(float* __restrict__ part, float* __restrict__ dinit, float dh,
                                                   float dA_acc, float dd_acc, float dbias_acc, long long bd, int dim,
                                                   int n_state, int len, int lane, bool live) {
    const bool live_n = live && lane < n_state;
    if (live_n && dinit) dinit[bd * n_state + lane] = dh;
    const long long nb = gridDim.y;
    float* pa = part + nb * gridDim.x * 2 * n_state * len;
    float* pd = pa + nb * dim * n_state;
    if (live_n) pa[bd * n_state + lane] = dA_acc;
#pragma unroll
    for (int off = 8; off >= 1; off >>= 1) {
        dd_acc += __shfl_xor_sync(0xffffffffu, dd_acc, off);
        dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, off);
    }
    if (live && lane == 0) {
        pd[bd] = dd_acc;
        pd[nb * dim + bd] = dbias_acc;
    }
}

