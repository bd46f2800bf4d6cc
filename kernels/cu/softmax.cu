// Log-softmax and cross-entropy over contiguous rows: the CUDA twins of
// engine/src/ops/softmax/cpu.rs (`log_softmax_forward`, `log_softmax_backward`,
// `cross_entropy_forward`, `cross_entropy_backward`), f32 only.
//
// Every kernel sees `rows` contiguous rows of `v` values and gives one 256-thread block to
// each row (grid = rows, block = 256; a block-stride loop covers any v). Row sums and maxima
// use a warp-shuffle reduction, then one shared-memory slot per warp, then one warp.
// Stability as on the CPU: each row is shifted by its max m before exponentiating, so every
// exp lies in (0, 1] and the row sum in [1, v]; outputs are formed as (x - m) - ln(sum) so
// logits of ~1e4 stay accurate. Sums are accumulated in f32 (the CPU uses f64): with v in
// the hundreds or thousands the relative error stays ~1e-6.
//
// Napkin math (f32, N rows, V classes; LM shape N = 8 * 2048 = 16384, V = 256, so one
// N x V buffer is 16.8 MB). Every kernel does ~V exps and O(V) FLOPs per row, far below
// what would make it compute bound, so the floor is bytes / ~2.9 TB/s (H100 HBM3):
//   log_softmax_forward:  reads x, writes y             8 N V bytes       (33.6 MB -> 12 us)
//   log_softmax_backward: reads y, dy, writes dx        12 N V bytes      (50.3 MB -> 17 us)
//   cross_entropy_forward: reads x (+ targets), writes lse, loss
//                                                       4 N V + 16 N      (17.0 MB ->  6 us)
//   cross_entropy_backward: reads x, lse, targets, writes dx
//                                                       8 N V + 12 N      (33.8 MB -> 12 us)
// The second (and third) pass over a row re-reads it from L1/L2 (a row is 1 KB at V = 256),
// not from HBM, so it is not counted. With V = 256 each thread handles one element per pass;
// 16384 blocks of 256 threads keep all 132 SMs busy.
//
// Ignored rows (targets[r] == ignore_index) get lse = loss = 0 and dx = 0, as on the CPU.
// cross_entropy_forward writes the per-row loss only; the mean (Σ loss / #valid rows) is
// taken by the caller, and the backward's `scale` is the mean's gradient dloss / #valid.

#define SOFTMAX_BLOCK 256

#include "reduce.cuh"

// The kernels' parameters: `*Params` in launch/softmax.rs, same fields. Rows of v values.
struct LogSoftmaxForwardParams {
    float* y;         // (rows, v)
    const float* x;   // (rows, v)
    int rows, v;
};
static_assert(sizeof(LogSoftmaxForwardParams) == 24, "LogSoftmaxForwardParams: launch/softmax.rs has 24 bytes");

struct LogSoftmaxBackwardParams {
    float* dx;        // (rows, v)
    const float* y;   // (rows, v)
    const float* dy;  // (rows, v)
    int rows, v;
};
static_assert(sizeof(LogSoftmaxBackwardParams) == 32, "LogSoftmaxBackwardParams: launch/softmax.rs has 32 bytes");

struct CrossEntropyForwardParams {
    float* lse;                // (rows)
    float* loss;               // (rows)
    const float* x;            // (rows, v)
    const long long* targets;  // (rows)
    long long ignore_index;
    int rows, v;
};
static_assert(sizeof(CrossEntropyForwardParams) == 48, "CrossEntropyForwardParams: launch/softmax.rs has 48 bytes");

struct CrossEntropyBackwardParams {
    float* dx;                 // (rows, v)
    const float* x;            // (rows, v)
    const float* lse;          // (rows)
    const long long* targets;  // (rows)
    long long ignore_index;
    float scale;
    int rows, v;
    int pad_;
};
static_assert(sizeof(CrossEntropyBackwardParams) == 56, "CrossEntropyBackwardParams: launch/softmax.rs has 56 bytes");

// Row max m and ln Σ_j exp(x_j - m) of one row, both returned to every thread of the block.
__device__ __forceinline__ void max_and_log_sum(const float* __restrict__ x, int v, float& m, float& log_sum) {
    float local = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) local = fmaxf(local, x[j]);
    m = block_max(local);
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) s += expf(x[j] - m);
    log_sum = logf(block_sum(s));
}

// y[r, j] = (x[r, j] - m_r) - ln Σ_k exp(x[r, k] - m_r). Grid: rows blocks.
extern "C" __global__ void __launch_bounds__(SOFTMAX_BLOCK) log_softmax_forward_f32(const __grid_constant__ LogSoftmaxForwardParams p) {
    float* __restrict__ y = p.y;
    const float* __restrict__ x = p.x;
    const int rows = p.rows, v = p.v;
    const int r = blockIdx.x;
    if (r >= rows) return;  // uniform per block
    const long long off = (long long)r * v;
    x += off;
    y += off;
    float m, log_sum;
    max_and_log_sum(x, v, m, log_sum);
    for (int j = threadIdx.x; j < v; j += blockDim.x) y[j] = (x[j] - m) - log_sum;
}

// dx[r, i] = dy[r, i] - exp(y[r, i]) Σ_j dy[r, j], from log-softmax's output y. Grid: rows blocks.
extern "C" __global__ void __launch_bounds__(SOFTMAX_BLOCK) log_softmax_backward_f32(const __grid_constant__ LogSoftmaxBackwardParams p) {
    float* __restrict__ dx = p.dx;
    const float* __restrict__ y = p.y;
    const float* __restrict__ dy = p.dy;
    const int rows = p.rows, v = p.v;
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long off = (long long)r * v;
    y += off;
    dy += off;
    dx += off;
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) s += dy[j];
    const float total = block_sum(s);
    for (int j = threadIdx.x; j < v; j += blockDim.x) dx[j] = dy[j] - expf(y[j]) * total;
}

// Per-row cross-entropy: lse[r] = logsumexp(x[r, :]), loss[r] = lse[r] - x[r, t_r], with
// t_r = targets[r]; both 0 where t_r == ignore_index. Targets must be ignore_index or in
// 0..v (the op checks; not re-checked here). loss is per row: the caller takes the mean.
// Grid: rows blocks.
extern "C" __global__ void __launch_bounds__(SOFTMAX_BLOCK) cross_entropy_forward_f32(const __grid_constant__ CrossEntropyForwardParams p) {
    float* __restrict__ lse = p.lse;
    float* __restrict__ loss = p.loss;
    const float* __restrict__ x = p.x;
    const long long* __restrict__ targets = p.targets;
    const long long ignore_index = p.ignore_index;
    const int rows = p.rows, v = p.v;
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long t = targets[r];
    if (t == ignore_index) {  // uniform per block: every thread read the same target
        if (threadIdx.x == 0) {
            lse[r] = 0.0f;
            loss[r] = 0.0f;
        }
        return;
    }
    x += (long long)r * v;
    float m, log_sum;
    max_and_log_sum(x, v, m, log_sum);
    if (threadIdx.x == 0) {
        lse[r] = m + log_sum;
        loss[r] = (m - x[t]) + log_sum;  // not lse - x_t: no cancellation at large logits
    }
}

// dx[r, j] = scale * (exp(x[r, j] - lse[r]) - [j == t_r]), 0 for ignored rows; lse is what
// cross_entropy_forward_f32 saved. Grid: rows blocks.
extern "C" __global__ void __launch_bounds__(SOFTMAX_BLOCK)
    cross_entropy_backward_f32(const __grid_constant__ CrossEntropyBackwardParams p) {
    float* __restrict__ dx = p.dx;
    const float* __restrict__ x = p.x;
    const float* __restrict__ lse = p.lse;
    const long long* __restrict__ targets = p.targets;
    const long long ignore_index = p.ignore_index;
    const float scale = p.scale;
    const int rows = p.rows, v = p.v;
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long off = (long long)r * v;
    x += off;
    dx += off;
    const long long t = targets[r];
    if (t == ignore_index) {
        for (int j = threadIdx.x; j < v; j += blockDim.x) dx[j] = 0.0f;
        return;
    }
    const float l = lse[r];
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        const float g = expf(x[j] - l) * scale;
        dx[j] = j == t ? g - scale : g;
    }
}
