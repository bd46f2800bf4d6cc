// Strided copies, casts (f32, f64 and bf16) and fill: the CUDA twins of engine/src/ops/copy/cpu.rs (`copy_strided`,
// `copy_into`, `cast`) and of `CpuData::full`.
//
// Napkin math (n elements): a gather or scatter of f32 reads 4n and writes 4n bytes; a cast
// moves 4n + 8n; fill writes 4n. No arithmetic: all memory bound, floor bytes / ~2.9 TB/s
// (16 Mi f32 copied: 134 MB -> 46 us). Launch: 1-D grid of 256-thread blocks, grid-stride
// loop; thread i handles element i of the view in row-major order, so the contiguous side
// coalesces and the strided side pays strided_offset (strided.cuh) and, for a transposed
// view, uncoalesced accesses (a warp touches 32 sectors; neighbouring warps use the rest of
// each sector from L1/L2: 838 GB/s on a 4096^2 transpose against 2.1 TB/s contiguous).
//
// Hence copy_transpose_f32, which the copy_strided_f32 launcher picks for a gather whose
// output-contiguous axis a (the view's innermost) has an input stride > 1 while another axis
// k has input stride 1: the (B, D, L) <-> (B, L, D) permutes of training (d_model 768 x 24
// layers: 7% of GPU time, 2,760 calls in 10 steps). It moves the (a, k) plane through shared
// memory in 32 x 32 tiles: each warp reads 32 consecutive k (one 128-byte line of input) and
// writes 32 consecutive a (one line of output), so both sides coalesce. Same bytes as the
// gather (4n in, 4n out; 4096^2: 134 MB -> floor 46 us; (8, 2048, 1536): 201 MB -> 69 us);
// the index math is per tile, not per element. Launch: blocks of 32 x 8 threads, each thread
// 4 elements of a tile; grid (tiles along a, tiles along k, batch), where the batch is every
// other axis (up to 4, any strides, broadcast included), each dimension grid-strided so any
// size fits. The tile is padded to 33 columns so the column-wise shared reads hit 32 banks.

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

// The parameter of copy_strided_f32 (O = I = float) and of the casts: a gather of n elements
// through the view lx of x into contiguous out. `GatherParams` in launch/copy.rs, same fields.
template <typename O, typename I>
struct GatherParams {
    O* out;       // (n)
    const I* x;   // the buffer lx views
    Strided lx;
    long long n;
};
static_assert(sizeof(GatherParams<float, float>) == 136, "GatherParams: launch/copy.rs has 136 bytes");
static_assert(sizeof(GatherParams<double, float>) == 136, "GatherParams: launch/copy.rs has 136 bytes");

// out[i] = x[lx(i)]: the view lx of x gathered into contiguous out (n elements).
extern "C" __global__ void copy_strided_f32(const __grid_constant__ GatherParams<float, float> p) {
    float* out = p.out;
    const float* x = p.x;
    const Strided& lx = p.lx;
    const long long n = p.n;
    if (n <= 0x7fffffffLL) copy_strided<unsigned>(out, x, lx, (unsigned)n);
    else copy_strided<unsigned long long>(out, x, lx, (unsigned long long)n);
}

// The transpose case of copy_strided_f32, prepared by the launcher (launch/copy.rs,
// `struct Transpose` there, same fields: 144 bytes). Output element (batch..., k, a) in
// row-major order of the view; the input holds it at offset + k + a * in_a + batch part.
#define TRANSPOSE_MAX_BATCH 4  // STRIDED_MAX_RANK - 2
#define TRANSPOSE_TILE 32
#define TRANSPOSE_ROWS 8

struct Transpose {
    long long offset;      // input offset of element 0
    long long n_a, n_k;    // lengths of axis a (output stride 1) and axis k (input stride 1)
    long long in_a;        // input stride of a
    long long out_k;       // output stride of k
    long long batch;       // product of the batch axes' lengths (< 2^31)
    long long batch_rank;  // 0..4 other axes, outermost first
    long long batch_shape[TRANSPOSE_MAX_BATCH];
    long long batch_in[TRANSPOSE_MAX_BATCH];   // their input strides (0: broadcast)
    long long batch_out[TRANSPOSE_MAX_BATCH];  // their output strides
};

// The parameter of copy_transpose_f32: `CopyTransposeParams` in launch/copy.rs.
struct CopyTransposeParams {
    float* out;
    const float* x;
    Transpose t;
};
static_assert(sizeof(CopyTransposeParams) == 168, "CopyTransposeParams: launch/copy.rs has 168 bytes");

// out[view order] = x[view]: the view's (a, k) plane of batch element z, 32 x 32 tiles.
// The launcher guarantees n < 2^31, so tile and batch counts fit in unsigned; out and x are
// distinct buffers (a Rust &mut and a &). Every loop bound depends on the block only, so the
// __syncthreads are reached by all of its threads.
extern "C" __global__ void __launch_bounds__(TRANSPOSE_TILE * TRANSPOSE_ROWS)
    copy_transpose_f32(const __grid_constant__ CopyTransposeParams p) {
    float* __restrict__ out = p.out;
    const float* __restrict__ x = p.x;
    const Transpose& t = p.t;
    __shared__ float tile[TRANSPOSE_TILE][TRANSPOSE_TILE + 1];  // tile[a - a0][k - k0]
    const unsigned tiles_a = (unsigned)((t.n_a + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE);
    const unsigned tiles_k = (unsigned)((t.n_k + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE);
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (unsigned z = blockIdx.z; z < (unsigned)t.batch; z += gridDim.z) {
        // batch element z -> input and output offsets; axis 0 needs no division (as strided_offset)
        long long in = t.offset, o = 0;
        unsigned b = z;
#pragma unroll
        for (int d = TRANSPOSE_MAX_BATCH - 1; d >= 1; --d) {
            if (d < t.batch_rank) {
                const unsigned s = (unsigned)t.batch_shape[d], q = b / s, r = b - q * s;
                in += (long long)r * t.batch_in[d];
                o += (long long)r * t.batch_out[d];
                b = q;
            }
        }
        if (t.batch_rank > 0) {
            in += (long long)b * t.batch_in[0];
            o += (long long)b * t.batch_out[0];
        }
        for (unsigned tk = blockIdx.y; tk < tiles_k; tk += gridDim.y) {
            for (unsigned ta = blockIdx.x; ta < tiles_a; ta += gridDim.x) {
                const long long a0 = (long long)ta * TRANSPOSE_TILE, k0 = (long long)tk * TRANSPOSE_TILE;
                // read: lanes along k (input stride 1), rows along a
                if (k0 + tx < t.n_k) {
                    const float* p = x + in + (k0 + tx) + (a0 + ty) * t.in_a;
#pragma unroll
                    for (int j = 0; j < TRANSPOSE_TILE; j += TRANSPOSE_ROWS)
                        if (a0 + ty + j < t.n_a) tile[ty + j][tx] = p[j * t.in_a];
                }
                __syncthreads();
                // write: lanes along a (output stride 1), rows along k
                if (a0 + tx < t.n_a) {
                    float* q = out + o + (k0 + ty) * t.out_k + (a0 + tx);
#pragma unroll
                    for (int j = 0; j < TRANSPOSE_TILE; j += TRANSPOSE_ROWS)
                        if (k0 + ty + j < t.n_k) q[j * t.out_k] = tile[tx][ty + j];
                }
                __syncthreads();  // the tile is refilled by the next iteration
            }
        }
    }
}

// dst[ldst(i)] = src[lsrc(i)] for i < n: both views have the same shape (n elements). ldst
// must not repeat an element (no stride 0 on an axis longer than 1), or two threads race.
// Concat writes each piece into a narrowed view of the output with this.
// `CopyIntoParams` in launch/copy.rs, same fields.
struct CopyIntoParams {
    float* dst;
    const float* src;
    Strided ldst, lsrc;
    long long n;
};
static_assert(sizeof(CopyIntoParams) == 248, "CopyIntoParams: launch/copy.rs has 248 bytes");

extern "C" __global__ void copy_into_f32(const __grid_constant__ CopyIntoParams p) {
    float* dst = p.dst;
    const float* src = p.src;
    const Strided &ldst = p.ldst, &lsrc = p.lsrc;
    const long long n = p.n;
    if (n <= 0x7fffffffLL) copy_into<unsigned>(dst, ldst, src, lsrc, (unsigned)n);
    else copy_into<unsigned long long>(dst, ldst, src, lsrc, (unsigned long long)n);
}

// out[i] = (double)x[lx(i)]: exact.
extern "C" __global__ void cast_f32_f64(const __grid_constant__ GatherParams<double, float> p) {
    double* out = p.out;
    const float* x = p.x;
    const Strided& lx = p.lx;
    const long long n = p.n;
    if (n <= 0x7fffffffLL) cast<double, float, unsigned>(out, x, lx, (unsigned)n);
    else cast<double, float, unsigned long long>(out, x, lx, (unsigned long long)n);
}

// out[i] = (float)x[lx(i)]: round to nearest even, out-of-range values become +-inf.
extern "C" __global__ void cast_f64_f32(const __grid_constant__ GatherParams<float, double> p) {
    float* out = p.out;
    const double* x = p.x;
    const Strided& lx = p.lx;
    const long long n = p.n;
    if (n <= 0x7fffffffLL) cast<float, double, unsigned>(out, x, lx, (unsigned)n);
    else cast<float, double, unsigned long long>(out, x, lx, (unsigned long long)n);
}

// bf16, held as its 16-bit pattern, with the conversions of engine/src/dtype.rs (their CUDA
// twins, bit for bit): to bf16 rounds to nearest, ties to even (a NaN stays a quiet NaN);
// from double it rounds to odd in float first, so the result is rounded once; from bf16
// is exact (the pattern is the top half of a float).
struct bf16_t {
    unsigned short bits;
    __device__ __forceinline__ bf16_t(float x) {
        const unsigned b = __float_as_uint(x);
        bits = (b & 0x7fffffffu) > 0x7f800000u ? (unsigned short)((b >> 16) | 0x40u)
                                               : (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    }
    __device__ __forceinline__ bf16_t(double x) : bf16_t(round_to_odd(x)) {}
    __device__ __forceinline__ operator float() const { return __uint_as_float((unsigned)bits << 16); }
    __device__ __forceinline__ operator double() const { return (double)(float)*this; }
    // x as a float whose last bit is odd whenever the conversion was inexact.
    static __device__ __forceinline__ float round_to_odd(double x) {
        const float f = __double2float_rn(x);
        unsigned b = __float_as_uint(f);
        if (isfinite(f) && (double)f != x && (b & 1u) == 0) b = fabs((double)f) < fabs(x) ? b + 1 : b - 1;
        return __uint_as_float(b);
    }
};
static_assert(sizeof(bf16_t) == 2, "bf16_t is the 16-bit pattern");
static_assert(sizeof(GatherParams<bf16_t, float>) == 136, "GatherParams: launch/copy.rs has 136 bytes");

// The four bf16 casts, each out[i] = x[lx(i)] converted as above.
#define CAST_KERNEL(NAME, O, I)                                                     \
    extern "C" __global__ void NAME(const __grid_constant__ GatherParams<O, I> p) { \
        if (p.n <= 0x7fffffffLL) cast<O, I, unsigned>(p.out, p.x, p.lx, (unsigned)p.n); \
        else cast<O, I, unsigned long long>(p.out, p.x, p.lx, (unsigned long long)p.n); \
    }
CAST_KERNEL(cast_f32_bf16, bf16_t, float)
CAST_KERNEL(cast_bf16_f32, float, bf16_t)
CAST_KERNEL(cast_f64_bf16, bf16_t, double)
CAST_KERNEL(cast_bf16_f64, double, bf16_t)

// `FillParams` in launch/copy.rs, same fields.
struct FillParams {
    float* out;  // (n)
    long long n;
    float value;
    int pad_;
};
static_assert(sizeof(FillParams) == 24, "FillParams: launch/copy.rs has 24 bytes");

// out[i] = value for i < n.
extern "C" __global__ void fill_f32(const __grid_constant__ FillParams p) {
    float* out = p.out;
    const long long n = p.n;
    const float value = p.value;
    GRID_STRIDE_LOOP(long long, i, n) out[i] = value;
}
