// Sum and max over any set of axes: the CUDA twin of engine/src/ops/reduce/cpu.rs (`reduce`).
//
// The launcher splits the input view into `kept` (the view with the reduced axes set to 1,
// indexed like the output: n_out elements) and `inner` (the reduced axes, offset 0: inner_n
// elements), and this file computes
//     out[o] = reduce_{i < inner_n} x[kept(o) + inner(i)].
// Sums accumulate in double, like the CPU twin, so the result usually equals the CPU's to
// the last bit of the f32 (both round one double once); max is exact. Max lets a NaN win,
// as `cpu::reduce` does (fmaxf would drop it). -0 vs +0 ties may differ in sign.
//
// Napkin math: reads n_out * inner_n floats once (4 B each), writes n_out; one add or
// compare per element: memory bound, floor 4 * n_out * inner_n / ~2.9 TB/s (16 Mi floats:
// 67 MB -> 23 us). The double adds cost nothing next to that (H100: 34 TFLOP/s fp64).
//
// Launch shape: 256-thread blocks, each owning bx consecutive outputs and splitting their
// inner range over by = 256 / bx threads (thread t: tx = t % bx, ty = t / bx). The launcher
// picks bx:
//   bx = 32 ("columns"): a warp holds 32 consecutive outputs at the same inner index, so
//        loads coalesce when the kept inner axis is contiguous (the column sums of
//        (rows, cols) over rows: the bias-gradient case), and it is one thread per output
//        (x 8 inner slices) when there are many outputs;
//   bx = 1 ("rows"): a block per output, a warp reading 32 consecutive inner elements, for
//        reductions over the contiguous axis and for few outputs (the sum of everything).
// When these give too few blocks to fill the GPU, the launcher also splits the inner range
// over gridDim.y = parts blocks: each writes a double partial to `reduce_scratch` (parts x
// n_out), and `reduce_finish_f32` reduces the partials the same way. The scratch is a module
// global: reductions must not run concurrently (one stream per Gpu orders them).
// Deterministic: no atomics; the combination order depends only on shapes and strides.

#include "codes.cuh"
#include "strided.cuh"

#define REDUCE_THREADS 256
#define REDUCE_WARPS (REDUCE_THREADS / 32)
// Partials of split reductions (doubles, 1 MiB); `REDUCE_SCRATCH` in launch/reduce.rs.
#define REDUCE_SCRATCH (1 << 17)

// ReduceOp (SUM, MAX) is in codes.cuh, generated from kernels/src/codes.rs.

// The kernels' parameters: `Reduce*Params` in launch/reduce.rs, same fields.
struct ReduceParams {
    const float* x;  // the buffer the views index
    float* out;      // (n_out)
    Strided kept, inner;
    long long n_out, inner_n;
    ReduceOp op;
    int bx_log;
};
static_assert(sizeof(ReduceParams) == 264, "ReduceParams: launch/reduce.rs has 264 bytes");

struct ReduceFinishParams {
    float* out;  // (n_out)
    Strided kept, inner;
    long long n_out, parts;
    ReduceOp op;
    int bx_log;
};
static_assert(sizeof(ReduceFinishParams) == 256, "ReduceFinishParams: launch/reduce.rs has 256 bytes");

__device__ double reduce_scratch[REDUCE_SCRATCH];

// acc (op) v. For max a NaN wins from either side, as in cpu::reduce (`v.is_nan() || v > acc`).
__device__ __forceinline__ double combine(int op, double acc, double v) {
    if (op == SUM) return acc + v;
    return (v > acc || v != v) ? v : acc;
}

// One launch of either kernel; T is the input type (float, or double for the partials).
// With I = unsigned the caller guarantees n_out, inner_n <= 2^31 - 1, so no index wraps.
template <int op, typename T, typename I>
__device__ __forceinline__ void reduce_body(const T* x, const Strided& kept, const Strided& inner, float* out, I n_out,
                                            I inner_n, int bx_log, double (*part)[32]) {
    const int t = threadIdx.x, bx = 1 << bx_log;
    const int tx = t & (bx - 1), ty = t >> bx_log, by = REDUCE_THREADS >> bx_log;
    const I o = (I)blockIdx.x * bx + tx;
    const double identity = op == SUM ? 0.0 : -INFINITY;
    double acc = identity;
    if (o < n_out) {
        const long long base = strided_offset(kept, o);
        const I step = (I)gridDim.y * by;
        I i = (I)blockIdx.y * by + ty;
        // Four loads in flight per thread, combined in the order of the plain loop below.
        for (; i + 3 * step < inner_n; i += 4 * step) {
            const double v0 = (double)x[base + strided_offset(inner, i)];
            const double v1 = (double)x[base + strided_offset(inner, i + step)];
            const double v2 = (double)x[base + strided_offset(inner, i + 2 * step)];
            const double v3 = (double)x[base + strided_offset(inner, i + 3 * step)];
            acc = combine(op, combine(op, combine(op, combine(op, acc, v0), v1), v2), v3);
        }
        for (; i < inner_n; i += step) acc = combine(op, acc, (double)x[base + strided_offset(inner, i)]);
    }
    // Combine the by threads of each output: lanes with equal tx within a warp (xor offsets
    // >= bx keep tx), then the block's warps in order, by the thread with ty = 0.
    const int lane = t & 31, warp = t >> 5;
    for (int off = 16; off >= bx; off >>= 1) acc = combine(op, acc, __shfl_xor_sync(0xffffffffu, acc, off));
    if (lane < bx) part[warp][lane] = acc;  // lane == tx here
    __syncthreads();
    if (t < bx && o < n_out) {  // ty == 0, tx == t
        acc = part[0][t];
        for (int w = 1; w < REDUCE_WARPS; ++w) acc = combine(op, acc, part[w][t]);
        if (gridDim.y == 1) out[o] = (float)acc;
        else reduce_scratch[(long long)blockIdx.y * n_out + o] = acc;
    }
}

// reduce_body for the op known at run time: one instantiation per op, so the combine in the
// inner loops has no branch (the same operations in the same order either way).
template <typename T, typename I>
__device__ __forceinline__ void reduce_op(int op, const T* x, const Strided& kept, const Strided& inner, float* out,
                                          I n_out, I inner_n, int bx_log) {
    __shared__ double part[REDUCE_WARPS][32];  // one per warp and output column, shared by both ops
    if (op == SUM) reduce_body<SUM, T, I>(x, kept, inner, out, n_out, inner_n, bx_log, part);
    else reduce_body<MAX, T, I>(x, kept, inner, out, n_out, inner_n, bx_log, part);
}

// Grid (ceil(n_out / 2^bx_log), parts), block REDUCE_THREADS. With parts == 1 writes out
// (n_out floats); else the partials for reduce_finish_f32.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) reduce_f32(const __grid_constant__ ReduceParams p) {
    const int op = p.op, bx_log = p.bx_log;
    const float* x = p.x;
    float* out = p.out;
    const Strided &kept = p.kept, &inner = p.inner;
    const long long n_out = p.n_out, inner_n = p.inner_n;
    if (n_out <= 0x7fffffffLL && inner_n <= 0x7fffffffLL) {
        reduce_op<float, unsigned>(op, x, kept, inner, out, (unsigned)n_out, (unsigned)inner_n, bx_log);
    } else {
        reduce_op<float, unsigned long long>(op, x, kept, inner, out, (unsigned long long)n_out,
                                             (unsigned long long)inner_n, bx_log);
    }
}

// out[o] = reduce_p reduce_scratch[p * n_out + o]: kept = (n_out) stride 1, inner = (parts)
// stride n_out, built by the launcher. Grid (ceil(n_out / 2^bx_log), 1), block REDUCE_THREADS.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) reduce_finish_f32(const __grid_constant__ ReduceFinishParams p) {
    const int op = p.op, bx_log = p.bx_log;
    float* out = p.out;
    const Strided &kept = p.kept, &inner = p.inner;
    const long long n_out = p.n_out, parts = p.parts;
    reduce_op<double, unsigned>(op, reduce_scratch, kept, inner, out, (unsigned)n_out, (unsigned)parts, bx_log);
}
