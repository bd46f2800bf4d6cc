// Elementwise kernels: the CUDA twins of engine/src/ops/elementwise/cpu.rs (`unary`, `binary`).
//
// Napkin math (f32, n elements): unary reads 4n and writes 4n bytes, binary reads 8n and
// writes 4n; at most ~20 FLOPs per element (softplus), so every op is memory bound on an
// H100: the floor is bytes / ~2.9 TB/s (e.g. 16 Mi elements unary: 134 MB -> 46 us).
// Launch: 1-D grid of 256-thread blocks, a grid-stride loop.
//
// Two flavours: `unary_f32` / `binary_f32` for contiguous operands (i is the element), and
// `*_strided_f32` for any view (transposed, narrowed, broadcast): thread i writes output i
// (row-major, contiguous, so stores coalesce) and reads operand element strided_offset(l, i).
// Index math costs one integer division per merged axis beyond the first; with n < 2^31 it
// runs in 32 bits. A broadcast operand (stride 0) reads fewer distinct bytes: the repeats
// come from L1/L2. Reads of a transposed view are not coalesced (a warp touches 32 sectors
// for 32 floats); the neighbouring warps use the rest of each sector from L1/L2, so DRAM
// still sees each byte about once, but expect these below the contiguous kernels' rate.
//
// Op codes: the enums `UnaryOp` and `BinaryOp` of codes.cuh, which build.rs generates from
// kernels/src/codes.rs (the one definition, shared with the launchers and the engine).

#include "codes.cuh"
#include "strided.cuh"

// The kernels' parameters: `*Params` in launch/elementwise.rs, same fields. p0, p1 are the
// op's parameters (POWF: exponent p0; AFFINE: x * p0 + p1), unused by the other ops.
struct UnaryParams {
    float* out;      // (n)
    const float* x;  // (n)
    long long n;
    UnaryOp op;
    float p0, p1;
    int pad_;
};
static_assert(sizeof(UnaryParams) == 40, "UnaryParams: launch/elementwise.rs has 40 bytes");

struct BinaryParams {
    float* out;      // (n)
    const float* a;  // (n)
    const float* b;  // (n)
    long long n;
    BinaryOp op;
    int pad_;
};
static_assert(sizeof(BinaryParams) == 40, "BinaryParams: launch/elementwise.rs has 40 bytes");

struct UnaryStridedParams {
    float* out;      // (n), the view's row-major order
    const float* x;  // the buffer lx views
    Strided lx;
    long long n;
    UnaryOp op;
    float p0, p1;
    int pad_;
};
static_assert(sizeof(UnaryStridedParams) == 152, "UnaryStridedParams: launch/elementwise.rs has 152 bytes");

struct BinaryStridedParams {
    float* out;      // (n), the output's row-major order
    const float* a;  // the buffer la views
    const float* b;  // the buffer lb views
    Strided la, lb;
    long long n;
    BinaryOp op;
    int pad_;
};
static_assert(sizeof(BinaryStridedParams) == 264, "BinaryStridedParams: launch/elementwise.rs has 264 bytes");

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// softplus(x) = max(x, 0) + log1p(exp(-|x|)): never overflows.
__device__ __forceinline__ float softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float apply_unary(int op, float x, float p0, float p1) {
    switch (op) {
        case NEG: return -x;
        case EXP: return expf(x);
        case LOG: return logf(x);
        case SQRT: return sqrtf(x);
        case RSQRT: return rsqrtf(x);
        case SIGMOID: return sigmoid(x);
        case SILU: return x * sigmoid(x);
        case SOFTPLUS: return softplus(x);
        case TANH: return tanhf(x);
        case POWF: return powf(x, p0);
        case AFFINE: return x * p0 + p1;
        default: return __int_as_float(0x7fc00000);  // NaN: an unknown op must not pass a test
    }
}

// out[i] = f(x[i]) for i < n. `op` is uniform across the grid, so the switch does not diverge.
extern "C" __global__ void unary_f32(const __grid_constant__ UnaryParams p) {
    float* out = p.out;
    const float* x = p.x;
    const int op = p.op;
    const float p0 = p.p0, p1 = p.p1;
    const long long n = p.n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = apply_unary(op, x[i], p0, p1);
    }
}

__device__ __forceinline__ float apply_binary(int op, float x, float y) {
    switch (op) {
        case ADD: return x + y;
        case SUB: return x - y;
        case MUL: return x * y;
        case DIV: return x / y;
        case EQ: return x == y ? 1.0f : 0.0f;
        default: return __int_as_float(0x7fc00000);
    }
}

// out[i] = a[i] (op) b[i] for i < n.
extern "C" __global__ void binary_f32(const __grid_constant__ BinaryParams p) {
    float* out = p.out;
    const float *a = p.a, *b = p.b;
    const int op = p.op;
    const long long n = p.n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = apply_binary(op, a[i], b[i]);
    }
}

// The strided kernels' loops, generic over the index type (see strided.cuh). With I =
// unsigned the caller guarantees n <= 2^31 - 1, so i + grid stride never wraps.
template <typename I>
__device__ __forceinline__ void unary_strided(float* out, const float* x, const Strided& lx, int op, float p0,
                                              float p1, I n) {
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        out[i] = apply_unary(op, x[strided_offset(lx, i)], p0, p1);
    }
}

template <typename I>
__device__ __forceinline__ void binary_strided(float* out, const float* a, const Strided& la, const float* b,
                                               const Strided& lb, int op, I n) {
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        out[i] = apply_binary(op, a[strided_offset(la, i)], b[strided_offset(lb, i)]);
    }
}

// out[i] = f(x[lx(i)]) for i < n; out contiguous (n elements, the view's row-major order).
extern "C" __global__ void unary_strided_f32(const __grid_constant__ UnaryStridedParams p) {
    float* out = p.out;
    const float* x = p.x;
    const Strided& lx = p.lx;
    const int op = p.op;
    const float p0 = p.p0, p1 = p.p1;
    const long long n = p.n;
    if (n <= 0x7fffffffLL) unary_strided<unsigned>(out, x, lx, op, p0, p1, (unsigned)n);
    else unary_strided<unsigned long long>(out, x, lx, op, p0, p1, (unsigned long long)n);
}

// out[i] = a[la(i)] (op) b[lb(i)] for i < n. la and lb are both operands' layouts already
// broadcast to the output's shape (stride 0 on broadcast axes); out is contiguous.
extern "C" __global__ void binary_strided_f32(const __grid_constant__ BinaryStridedParams p) {
    float* out = p.out;
    const float *a = p.a, *b = p.b;
    const Strided &la = p.la, &lb = p.lb;
    const int op = p.op;
    const long long n = p.n;
    if (n <= 0x7fffffffLL) binary_strided<unsigned>(out, a, la, b, lb, op, (unsigned)n);
    else binary_strided<unsigned long long>(out, a, la, b, lb, op, (unsigned long long)n);
}
