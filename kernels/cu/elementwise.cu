// Elementwise kernels: the CUDA twins of engine/src/cpu/elementwise.rs (`unary`, `binary`).
//
// Napkin math (f32, n elements): unary reads 4n and writes 4n bytes, binary reads 8n and
// writes 4n; at most ~20 FLOPs per element (softplus), so every op is memory bound on an
// H100: the floor is bytes / ~2.9 TB/s (e.g. 16 Mi elements unary: 134 MB -> 46 us).
// Launch: 1-D grid of 256-thread blocks, a grid-stride loop, contiguous operands.
//
// Op codes follow the order of the Rust enums `UnaryOp` and `BinaryOp`.

enum UnaryOp { NEG = 0, EXP, LOG, SQRT, RSQRT, SIGMOID, SILU, SOFTPLUS, TANH, POWF, AFFINE };
enum BinaryOp { ADD = 0, SUB, MUL, DIV, EQ };

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
extern "C" __global__ void unary_f32(float* out, const float* x, int op, float p0, float p1, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = apply_unary(op, x[i], p0, p1);
    }
}

// out[i] = a[i] (op) b[i] for i < n.
extern "C" __global__ void binary_f32(float* out, const float* a, const float* b, int op, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float x = a[i], y = b[i];
        float r;
        switch (op) {
            case ADD: r = x + y; break;
            case SUB: r = x - y; break;
            case MUL: r = x * y; break;
            case DIV: r = x / y; break;
            case EQ: r = x == y ? 1.0f : 0.0f; break;
            default: r = __int_as_float(0x7fc00000);
        }
        out[i] = r;
    }
}
