// Strided copies, casts and fill: the CUDA twins of engine/src/cpu/copy.rs (`copy_strided`,
// `copy_into`, `cast`) and of `CpuData::full`.
//
// Napkin math (n elements): a gather or scatter of f32 reads 4n and writes 4n bytes; a cast
// moves 4n + 8n; fill writes 4n. No arithmetic: all memory bound, floor bytes / ~2.9 TB/s
// (16 Mi f32 copied: 134 MB -> 46 us). Launch: 1-D grid of 256-thread blocks, grid-stride
// loop; thread i handles element i of the view in row-major order, so the contiguous side
// coalesces and the strided side pays strided_offset (strided.cuh) and, for a transposed
// view, uncoalesced accesses (a warp touches 32 sectors; neighbouring warps use the rest of
// each sector from L1/L2). A shared-memory tiled transpose would make both sides coalesce;
// it is the next step if the profile shows transposing copies.

#include "strided.cuh"

// With I = unsigned the launcher guarantees n <= 2^31 - 1 (i + grid stride never wraps).
#define GRID_STRIDE_LOOP(I, i, n) for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (n); i += (I)gridDim.x * blockDim.x)

template <typename I>
__device__ __forceinline__ void copy_strided(float* out, const float* x, const Strided& lx, I n) {
    GRID_STRIDE_LOOP(I, i, n) out[i] = x[strided_offset(lx, i)];
}

template <typename I>
__device__ __forceinline__ void copy_into(float* dst, const Strided& ld, const float* src, const Strided& ls, I n) {
    GRID_STRIDE_LOOP(I, i, n) dst[strided_offset(ld, i)] = src[strided_offset(ls, i)];
}

template <typename D, typename S, typename I>
__device__ __forceinline__ void cast(D* out, const S* x, const Strided& lx, I n) {
    GRID_STRIDE_LOOP(I, i, n) out[i] = (D)x[strided_offset(lx, i)];  // f64 -> f32 rounds to nearest, as Rust `as`
}

// out[i] = x[lx(i)]: the view lx of x gathered into contiguous out (n elements).
extern "C" __global__ void copy_strided_f32(float* out, const float* x, Strided lx, long long n) {
    if (n <= 0x7fffffffLL) copy_strided<unsigned>(out, x, lx, (unsigned)n);
    else copy_strided<unsigned long long>(out, x, lx, (unsigned long long)n);
}

// dst[ldst(i)] = src[lsrc(i)] for i < n: both views have the same shape (n elements). ldst
// must not repeat an element (no stride 0 on an axis longer than 1), or two threads race.
// Concat writes each piece into a narrowed view of the output with this.
extern "C" __global__ void copy_into_f32(float* dst, Strided ldst, const float* src, Strided lsrc, long long n) {
    if (n <= 0x7fffffffLL) copy_into<unsigned>(dst, ldst, src, lsrc, (unsigned)n);
    else copy_into<unsigned long long>(dst, ldst, src, lsrc, (unsigned long long)n);
}

// out[i] = (double)x[lx(i)]: exact.
extern "C" __global__ void cast_f32_f64(double* out, const float* x, Strided lx, long long n) {
    if (n <= 0x7fffffffLL) cast<double, float, unsigned>(out, x, lx, (unsigned)n);
    else cast<double, float, unsigned long long>(out, x, lx, (unsigned long long)n);
}

// out[i] = (float)x[lx(i)]: round to nearest even, out-of-range values become +-inf.
extern "C" __global__ void cast_f64_f32(float* out, const double* x, Strided lx, long long n) {
    if (n <= 0x7fffffffLL) cast<float, double, unsigned>(out, x, lx, (unsigned)n);
    else cast<float, double, unsigned long long>(out, x, lx, (unsigned long long)n);
}

// out[i] = value for i < n.
extern "C" __global__ void fill_f32(float* out, float value, long long n) {
    GRID_STRIDE_LOOP(long long, i, n) out[i] = value;
}
