// Selective scan (Mamba's S6 recurrence), forward, f32: the CUDA twin of
// engine/src/cpu/scan.rs `selective_scan_forward` (docs/SCAN.md). Layouts: u, delta, z,
// out (B, D, L); A (D, N); Bm, Cm (B, N, L); Dskip, delta_bias (D); last_state (B, D, N);
// chunk_states (B, D, n_chunks, N) = the state entering each chunk (zeros for chunk 0).
// Per channel (b, d), state n, time t:
//   dt_t   = softplus(delta_t + bias_d)   (or delta_t + bias_d without softplus)
//   h_t[n] = exp(dt_t A[d,n]) h_{t-1}[n] + dt_t Bm_t[n] u_t,   h_{-1} = 0
//   out_t  = (sum_n Cm_t[n] h_t[n] + D_d u_t) * silu(z_t)   (or without the gate)
//
// Napkin math at B 8, D 1536, L 2048, N 16, chunk 64 (f32):
//   reads  u, delta, z: 3 x 100.7 MB = 302 MB; Bm, Cm: 2 x 1.05 MB; A 98 KB; D, bias 12 KB
//   writes out 100.7 MB; last_state 0.79 MB; chunk_states (32 chunks) 25.2 MB
//   total ~431 MB once each -> ~0.13-0.14 ms at ~3.2 TB/s of HBM3.
//   FLOPs: 403 M (b,d,t,n) state updates x ~5 (dt*A, exp's scale, fma h, fma y) ~ 2 GFLOP
//   plus 403 M expf (MUFU ex2: 16/clk/SM x 132 SMs x ~1.8 GHz ~ 3.8 T/s -> ~0.1 ms).
//   So the floor is ~0.15 ms, memory bound; the reference Mamba selective-scan CUDA kernel
//   takes 0.977 ms forward at this size on this H100 — the number to compare against.
//
// Launch shape (version 1, simple and correct): one thread per (b, d) channel, blocks of
// SCAN_THREADS = 128 over the B*D channels; the thread keeps its N states and A[d, :] in
// registers (compile-time maximum SCAN_MAX_STATE = 16 states, loops fully unrolled over 16
// with an `n < n_state` guard so the arrays stay in registers; the launcher asserts
// n_state <= 16 and the kernel also returns if it is larger) and walks t sequentially.
// Bm/Cm at (b, n, t) are shared by all D channels of a batch: L1/L2 hits after the first.
//
// Known weaknesses of v1 (why it will be far from the floor):
//  * uncoalesced: at step t, adjacent threads read u/delta/z/out at stride L (8 KB apart),
//    so each warp load touches 32 sectors; only L1 reuse of those sectors over the next
//    7 steps keeps DRAM traffic near the napkin bytes, and L1 transactions are ~8-32x.
//  * too little parallelism: B*D = 12288 threads = 96 blocks < 132 SMs, each thread a
//    2048-step dependent chain, so the kernel is latency bound.
// v2 would put threads along L: a block per (b, group of channels) stages a tile of time
// steps of u/delta/z/Bm/Cm in shared memory with coalesced loads, each thread scans a
// contiguous stretch of t, and the stretches are joined with a parallel (Blelloch /
// warp-shuffle) scan over the affine pairs (prod exp(dt A), accumulated h) — as the
// reference kernel does — with chunk boundaries aligned to the tiles.

#define SCAN_THREADS 128
#define SCAN_MAX_STATE 16

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable for any x (as the CPU twin).
__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// Grid ceil(B*D / SCAN_THREADS), block SCAN_THREADS. z and delta_bias may be null.
extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
    selective_scan_forward_f32(float* __restrict__ out, float* __restrict__ last_state,
                               float* __restrict__ chunk_states, const float* __restrict__ u,
                               const float* __restrict__ delta, const float* __restrict__ A,
                               const float* __restrict__ Bm, const float* __restrict__ Cm,
                               const float* __restrict__ Dskip, const float* __restrict__ z,
                               const float* __restrict__ delta_bias, int softplus, int batch, int dim, int len,
                               int n_state, int chunk) {
    const long long bd = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (bd >= (long long)batch * dim || n_state > SCAN_MAX_STATE || n_state < 1 || chunk < 1) return;
    const int b = (int)(bd / dim), d = (int)(bd % dim);
    const long long row = bd * len;  // offset of (b, d, 0) in (B, D, L)
    const float* bb = Bm + (long long)b * n_state * len;
    const float* cb = Cm + (long long)b * n_state * len;
    const int n_chunks = (len + chunk - 1) / chunk;
    float* saved = chunk_states + bd * n_chunks * n_state;

    float a[SCAN_MAX_STATE], h[SCAN_MAX_STATE];
#pragma unroll
    for (int n = 0; n < SCAN_MAX_STATE; ++n) {
        a[n] = n < n_state ? A[(long long)d * n_state + n] : 0.0f;
        h[n] = 0.0f;
    }
    const float bias = delta_bias ? delta_bias[d] : 0.0f;
    const float dskip = Dskip[d];

    for (int t = 0; t < len; ++t) {
        if (t % chunk == 0) {
            float* s = saved + (long long)(t / chunk) * n_state;
#pragma unroll
            for (int n = 0; n < SCAN_MAX_STATE; ++n)
                if (n < n_state) s[n] = h[n];
        }
        const float x = delta[row + t] + bias;
        const float dt = softplus ? softplus_f(x) : x;
        const float ut = u[row + t];
        const float du = dt * ut;
        float y = 0.0f;
#pragma unroll
        for (int n = 0; n < SCAN_MAX_STATE; ++n) {
            if (n < n_state) {
                const long long o = (long long)n * len + t;
                h[n] = fmaf(expf(dt * a[n]), h[n], du * bb[o]);
                y = fmaf(cb[o], h[n], y);
            }
        }
        y = fmaf(dskip, ut, y);
        if (z) {
            const float zt = z[row + t];
            y *= zt * sigmoid_f(zt);
        }
        out[row + t] = y;
    }
    float* last = last_state + bd * n_state;
#pragma unroll
    for (int n = 0; n < SCAN_MAX_STATE; ++n)
        if (n < n_state) last[n] = h[n];
}
