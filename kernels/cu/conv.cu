// Depthwise causal 1-D convolution (f32): the CUDA twins of engine/src/ops/conv/cpu.rs
// (`conv1d_causal_forward`, `conv1d_causal_backward`). x, y, dy (B, C, L) contiguous,
// w (C, K), bias (C) or null. With zero padding on the left (x[t'] = 0 for t' < 0):
//   y[b,c,t]  = bias[c] + sum_j w[c,j] x[b,c,t+j+1-K]
//   dx[b,c,s] = sum_j w[c,j] dy[b,c,s+K-1-j]          (terms with s+K-1-j >= L dropped)
//   dw[c,j]   = sum_{b,t} dy[b,c,t] x[b,c,t+j+1-K],   db[c] = sum_{b,t} dy[b,c,t]
//
// Napkin math at the LM's shape B = 8, C = 1536, L = 2048, K = 4 (25.2 M elements, f32):
//   forward  reads x (101 MB) and writes y (101 MB); w and bias (25 KB) stay in L1/L2.
//            2K = 8 FLOPs per element (0.2 GFLOP): memory bound, floor 201 MB / ~3 TB/s ->
//            ~67 us. The K-1 neighbouring taps a thread reads were just loaded by its warp
//            neighbours, so they come from L1 and DRAM sees x once.
//   backward dx: reads dy, writes dx (201 MB, ~67 us floor). dw/db: reads x and dy again
//            (201 MB, ~67 us floor), ~2(K+1) FLOPs per element. Total floor ~134 us.
//
// Launch shape: forward and dx are one thread per output element with a grid-stride loop
// (256-thread blocks, grid capped by the launcher). dw/db is one 256-thread block per
// channel: thread i walks the (b, t) pairs i, i+256, ... of that channel (coalesced along
// t), keeping K+1 register partials, then a fixed-order block reduction (warp shuffles,
// then warp 0 over the 8 warp sums). No atomics, so dw and db are reproducible bit for bit
// for a given shape. C = 1536 blocks is ~1.5 waves of 132 SMs x 8 blocks. K is at most
// CONV_MAX_K (the launcher checks) so the partials live in registers.

#define CONV_THREADS 256
#define CONV_MAX_K 8

// The kernels' parameters: `Conv*Params` in launch/conv.rs, same fields.
struct ConvForwardParams {
    float* y;           // (b, c, l)
    const float* x;     // (b, c, l)
    const float* w;     // (c, k)
    const float* bias;  // (c) or null
    int b, c, l, k;
};
static_assert(sizeof(ConvForwardParams) == 48, "ConvForwardParams: launch/conv.rs has 48 bytes");

struct ConvBackwardDxParams {
    float* dx;        // (b, c, l)
    const float* w;   // (c, k)
    const float* dy;  // (b, c, l)
    int b, c, l, k;
};
static_assert(sizeof(ConvBackwardDxParams) == 40, "ConvBackwardDxParams: launch/conv.rs has 40 bytes");

struct ConvBackwardDwParams {
    float* dw;        // (c, k)
    float* db;        // (c)
    const float* x;   // (b, c, l)
    const float* dy;  // (b, c, l)
    int b, c, l, k;
};
static_assert(sizeof(ConvBackwardDwParams) == 48, "ConvBackwardDwParams: launch/conv.rs has 48 bytes");

// Grid-stride over b*c*l outputs. bias may be null (no bias).
extern "C" __global__ void __launch_bounds__(CONV_THREADS) conv1d_causal_forward_f32(const __grid_constant__ ConvForwardParams p) {
    float* __restrict__ y = p.y;
    const float* __restrict__ x = p.x;
    const float* __restrict__ w = p.w;
    const float* __restrict__ bias = p.bias;
    const int b = p.b, c = p.c, l = p.l, k = p.k;
    const long long total = (long long)b * c * l;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / l;  // (b, c) row
        const int t = (int)(i - r * l);
        const int ch = (int)(r % c);
        const float* xr = x + r * l;
        const float* wr = w + (long long)ch * k;
        float acc = bias != nullptr ? bias[ch] : 0.0f;
        // taps j < K-1-t read the zero padding before time 0: skip them
        for (int j = max(0, k - 1 - t); j < k; ++j) acc = fmaf(wr[j], xr[t + j + 1 - k], acc);
        y[i] = acc;
    }
}

// Grid-stride over b*c*l inputs: dx only.
extern "C" __global__ void __launch_bounds__(CONV_THREADS) conv1d_causal_backward_dx_f32(const __grid_constant__ ConvBackwardDxParams p) {
    float* __restrict__ dx = p.dx;
    const float* __restrict__ w = p.w;
    const float* __restrict__ dy = p.dy;
    const int b = p.b, c = p.c, l = p.l, k = p.k;
    const long long total = (long long)b * c * l;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / l;
        const int s = (int)(i - r * l);
        const int ch = (int)(r % c);
        const float* gr = dy + r * l;
        const float* wr = w + (long long)ch * k;
        float acc = 0.0f;
        // tap j carried x[s] to output t = s + K-1-j, which exists only while t < L
        for (int j = max(0, s + k - l); j < k; ++j) acc = fmaf(wr[j], gr[s + k - 1 - j], acc);
        dx[i] = acc;
    }
}

// Grid (c), block CONV_THREADS; k <= CONV_MAX_K. Block ch writes dw[ch, :] and db[ch].
extern "C" __global__ void __launch_bounds__(CONV_THREADS) conv1d_causal_backward_dw_f32(const __grid_constant__ ConvBackwardDwParams p) {
    float* __restrict__ dw = p.dw;
    float* __restrict__ db = p.db;
    const float* __restrict__ x = p.x;
    const float* __restrict__ dy = p.dy;
    const int b = p.b, c = p.c, l = p.l, k = p.k;
    __shared__ float shared[CONV_THREADS / 32][CONV_MAX_K + 1];
    const int ch = blockIdx.x;
    if (ch >= c) return;
    float acc[CONV_MAX_K + 1];
#pragma unroll
    for (int j = 0; j <= CONV_MAX_K; ++j) acc[j] = 0.0f;
    const long long per_channel = (long long)b * l;
    for (long long i = threadIdx.x; i < per_channel; i += blockDim.x) {
        const int bi = (int)(i / l);
        const int t = (int)(i - (long long)bi * l);
        const long long r = (long long)bi * c + ch;
        const float* xr = x + r * l;
        const float g = dy[r * l + t];
        acc[CONV_MAX_K] += g;  // db
#pragma unroll
        for (int j = 0; j < CONV_MAX_K; ++j) {
            const int s = t + j + 1 - k;
            if (j < k && s >= 0) acc[j] = fmaf(g, xr[s], acc[j]);
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int j = 0; j <= CONV_MAX_K; ++j) {
        float v = acc[j];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) shared[warp][j] = v;
    }
    __syncthreads();
    if (warp == 0) {
        // lane j (< k) sums tap j over the warps, lane k sums db; fixed order
        if (lane < k || lane == k) {
            const int slot = lane < k ? lane : CONV_MAX_K;
            float v = 0.0f;
            for (int q = 0; q < warps; ++q) v += shared[q][slot];
            if (lane < k) dw[(long long)ch * k + lane] = v;
            else db[ch] = v;
        }
    }
}
