// RMSNorm on contiguous rows (f32): the CUDA twins of engine/src/ops/norm/cpu.rs
// (`rms_norm_forward`, `rms_norm_backward`). Per row of d values:
//   rstd = rsqrt(mean_j x_j^2 + eps),  y_i = x_i * rstd * w_i
//   dx_i = rstd w_i dy_i - x_i rstd^3 mean_j(w_j dy_j x_j),  dw_i = sum_rows dy_i x_i rstd
//
// Napkin math at rows = 16384, d = 768 (12.6 M elements, f32):
//   forward  reads x (50.3 MB) and writes y (50.3 MB) + rstd (64 KB); w (3 KB) stays in
//            L1/L2. ~3 FLOPs per element: memory bound, floor 100.7 MB / ~3 TB/s -> ~34 us.
//   backward reads x and dy, writes dx (151 MB) + dw partials (n_parts x d, <= 3.1 MB,
//            written once and read once by the reduce): floor ~157 MB / ~3 TB/s -> ~52 us.
// Each kernel reads its row twice (reduce, then use); the second read of a 3 KB row that
// the same block just read comes from L1, so DRAM sees each byte once.
//
// Launch shape: one 256-thread block per row (forward), one block per group of rows
// (backward). Why a block and not a warp per row: it works for any d with no per-d tuning,
// the loads stay coalesced (thread t reads columns t, t+256, ...), and with thousands of
// rows there are far more blocks than the 132 SMs x 8 resident blocks, so the GPU stays
// full; the cost is one __syncthreads pair per reduction, small next to the row's loads.
// Sums are f32 (the CPU twin uses f64): per-thread partials of d/256 terms, then a tree.
//
// dw is deterministic with no atomics: backward block b owns rows [b*rpb, (b+1)*rpb) and
// accumulates dy*x*rstd for its rows in shared memory (thread t owns columns t mod 256, so
// no two threads touch one slot), then writes row b of dw_partial (n_parts, d). The
// second kernel, rms_norm_dw_reduce_f32, sums the parts in a fixed order.

#define NORM_THREADS 256

#include "reduce.cuh"

// The kernels' parameters: `RmsNorm*Params` in launch/norm.rs, same fields.
struct RmsNormForwardParams {
    float* y;         // (rows, d)
    float* rstd;      // (rows)
    const float* x;   // (rows, d)
    const float* w;   // (d)
    int rows, d;
    float eps;
    int pad_;
};
static_assert(sizeof(RmsNormForwardParams) == 48, "RmsNormForwardParams: launch/norm.rs has 48 bytes");

struct RmsNormBackwardParams {
    float* dx;          // (rows, d)
    float* dw_partial;  // (n_parts, d)
    const float* x;     // (rows, d)
    const float* w;     // (d)
    const float* rstd;  // (rows)
    const float* dy;    // (rows, d)
    int rows, d, rows_per_part;
    int pad_;
};
static_assert(sizeof(RmsNormBackwardParams) == 64, "RmsNormBackwardParams: launch/norm.rs has 64 bytes");

struct RmsNormDwReduceParams {
    float* dw;                // (d)
    const float* dw_partial;  // (n_parts, d)
    int n_parts, d;
};
static_assert(sizeof(RmsNormDwReduceParams) == 24, "RmsNormDwReduceParams: launch/norm.rs has 24 bytes");

// Grid (rows), block NORM_THREADS. y (rows, d), rstd (rows).
extern "C" __global__ void __launch_bounds__(NORM_THREADS) rms_norm_forward_f32(const __grid_constant__ RmsNormForwardParams p) {
    float* __restrict__ y = p.y;
    float* __restrict__ rstd = p.rstd;
    const float* __restrict__ x = p.x;
    const float* __restrict__ w = p.w;
    const int rows = p.rows, d = p.d;
    const float eps = p.eps;
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * d;
    float* yr = y + (long long)r * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = xr[j];
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss);
    const float rs = rsqrtf(ss / (float)d + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * rs * w[j];
}

// Grid (n_parts), block NORM_THREADS, dynamic shared memory d floats. Block b handles rows
// [b*rows_per_part, min(rows, (b+1)*rows_per_part)) and writes dw_partial[b, :].
extern "C" __global__ void __launch_bounds__(NORM_THREADS) rms_norm_backward_f32(const __grid_constant__ RmsNormBackwardParams p) {
    float* __restrict__ dx = p.dx;
    float* __restrict__ dw_partial = p.dw_partial;
    const float* __restrict__ x = p.x;
    const float* __restrict__ w = p.w;
    const float* __restrict__ rstd = p.rstd;
    const float* __restrict__ dy = p.dy;
    const int rows = p.rows, d = p.d, rows_per_part = p.rows_per_part;
    extern __shared__ float acc[];  // d floats: this block's dw partial
    for (int j = threadIdx.x; j < d; j += blockDim.x) acc[j] = 0.0f;
    const int r0 = blockIdx.x * rows_per_part;
    const int r1 = min(rows, r0 + rows_per_part);
    const float inv_d = 1.0f / (float)d;
    for (int r = r0; r < r1; ++r) {
        const float* xr = x + (long long)r * d;
        const float* dyr = dy + (long long)r * d;
        float* dxr = dx + (long long)r * d;
        const float rs = rstd[r];
        float dot = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dot = fmaf(w[j] * dyr[j], xr[j], dot);
        dot = block_sum(dot) * inv_d;
        const float coef = rs * rs * rs * dot;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            const float xv = xr[j], g = dyr[j];
            dxr[j] = rs * w[j] * g - xv * coef;
            acc[j] = fmaf(g * xv, rs, acc[j]);  // slot j belongs to this thread alone
        }
    }
    float* part = dw_partial + (long long)blockIdx.x * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) part[j] = acc[j];
}

// dw[j] = sum_p dw_partial[p, j], in a fixed order (bitwise reproducible).
// Grid (ceil(d/32)), block (32, 32): threadIdx.x picks the column (coalesced across the
// warp), threadIdx.y sums parts y, y+32, ...; the 32 sums are then added in y order.
// Napkin: reads n_parts x d floats once (<= 3.1 MB at d = 768) -> a few us.
extern "C" __global__ void __launch_bounds__(1024) rms_norm_dw_reduce_f32(const __grid_constant__ RmsNormDwReduceParams p) {
    float* __restrict__ dw = p.dw;
    const float* __restrict__ dw_partial = p.dw_partial;
    const int n_parts = p.n_parts, d = p.d;
    __shared__ float sums[32][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (j < d) {
#pragma unroll 4
        for (int p = threadIdx.y; p < n_parts; p += 32) s += dw_partial[(long long)p * d + j];
    }
    sums[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        float t = 0.0f;
        for (int k = 0; k < 32; ++k) t += sums[k][threadIdx.x];
        dw[j] = t;
    }
}
