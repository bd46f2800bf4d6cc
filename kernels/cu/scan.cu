// Selective scan (Mamba's S6 recurrence), forward v1, f32: the CUDA twin of
// engine/src/ops/scan/cpu.rs `selective_scan_forward` (docs/SCAN.md). Layouts: u, delta, z,
// out (B, D, L); A (D, N); Bm, Cm (B, N, L); Dskip, delta_bias (D); init, last_state
// (B, D, N); chunk_states (B, D, n_chunks, N) = the state entering each chunk (init, or
// zeros, for chunk 0). Per channel (b, d), state n, time t:
//   dt_t   = softplus(delta_t + bias_d)   (or delta_t + bias_d without softplus)
//   h_t[n] = exp(dt_t A[d,n]) h_{t-1}[n] + dt_t Bm_t[n] u_t,   h_{-1} = init (or 0)
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
// with an `n < n_state` guard so the arrays stay in registers; the launcher checks
// n_state <= 16 and the kernel also returns if it is larger) and walks t sequentially.
// Bm/Cm at (b, n, t) are shared by all D channels of a batch: L1/L2 hits after the first.
//
// Known weaknesses of v1 (why it will be far from the floor):
//  * uncoalesced: at step t, adjacent threads read u/delta/z/out at stride L (8 KB apart),
//    so each warp load touches 32 sectors; only L1 reuse of those sectors over the next
//    7 steps keeps DRAM traffic near the napkin bytes, and L1 transactions are ~8-32x.
//  * too little parallelism: B*D = 12288 threads = 96 blocks < 132 SMs, each thread a
//    2048-step dependent chain, so the kernel is latency bound.
// v2 (`selective_scan_forward_f32`, at the end of this file, after the backward whose block
// layout it shares) gives each channel 16 lanes, one per state, and stages 16-step windows
// with coalesced loads; time stays sequential per channel (196 K threads are enough to fill
// the GPU). A scan along L (the reference kernel's way) would be the next step after it.

#define SCAN_THREADS 128
#define SCAN_MAX_STATE 16

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable for any x (as the CPU twin).
__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// The parameter of both forward kernels: `ScanForwardParams` in launch/scan.rs, same fields
// (layouts in the header above; z, delta_bias and init may be null).
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

// Grid ceil(B*D / SCAN_THREADS), block SCAN_THREADS. z, delta_bias and init may be null.
// (Kept as the baseline for forward v2, `selective_scan_forward_f32` at the end of this file.)
extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
    selective_scan_forward_v1_f32(const __grid_constant__ ScanForwardParams p) {
    float* __restrict__ out = p.out;
    float* __restrict__ last_state = p.last_state;
    float* __restrict__ chunk_states = p.chunk_states;
    const float* __restrict__ u = p.u;
    const float* __restrict__ delta = p.delta;
    const float* __restrict__ A = p.A;
    const float* __restrict__ Bm = p.Bm;
    const float* __restrict__ Cm = p.Cm;
    const float* __restrict__ Dskip = p.Dskip;
    const float* __restrict__ z = p.z;
    const float* __restrict__ delta_bias = p.delta_bias;
    const float* __restrict__ init = p.init;
    const int softplus = p.softplus, batch = p.batch, dim = p.dim, len = p.len, n_state = p.n_state, chunk = p.chunk;
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
        h[n] = n < n_state && init ? init[bd * n_state + n] : 0.0f;  // h_{-1}
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

// ---------------------------------------------------------------------------------------
// Selective scan backward, f32: the CUDA twin of `selective_scan_backward` (engine/src/ops/scan/cpu.rs).
// Gradient layouts as the inputs: du, ddelta, dz (B, D, L); dA (D, N); dBm, dCm (B, N, L);
// dDskip, ddelta_bias (D); dinit (B, D, N). Given the forward's chunk_states, dout and dlast
// (B, D, N, the gradient of last_state; null is zero), per channel and chunk (newest first)
// it replays the forward from the chunk's saved state, then runs the adjoint
//   dh_t = Cm_t dy_t + exp(dt_{t+1} A) dh_{t+1}     (dy = dout * silu(z), or dout; dh_L = dlast)
//   du_t = D dy_t + dt_t sum_n dh_t Bm_t       d(dt)_t = sum_n dh_t (A e_t h_{t-1}) + u_t sum_n dh_t Bm_t
//   dA += dh_t dt_t e_t h_{t-1}   dBm_t += dh_t dt_t u_t   dCm_t += dy_t h_t   (e_t = exp(dt_t A))
//   dz_t = dout_t y_t s (1 + z_t (1 - s)), s = sigmoid(z_t), y_t = sum_n Cm_t h_t + D u_t
//   dinit = exp(dt_0 A) dh_0   (the carry past step 0; the chunk-0 replay starts from init)
//
// Launch shape: grid (ceil(D / 8), B), 128 threads = 8 channels (b, d) x 16 lanes (version
// 3: 16 channels, 256 threads); lane n of a channel owns state n (lanes >= n_state idle: A = Bm = Cm = 0 keeps their h and dh at 0).
// Time goes in windows of 16 steps; the window's per-step values are computed once per
// (channel, step) by lane `step` (dt = softplus, dy, ...) and staged in shared memory with
// Bm, Cm (coalesced 64-byte rows).
// Recomputation, in registers: per chunk, pass 1 replays the chunk window by window keeping
// only the state entering each window (s_ck, one float per thread per window: chunk <= 256);
// pass 2 walks the windows newest first, replays the window's 16 states h and decays e into
// registers (fully unrolled), then runs the adjoint over them with dh carried in a register
// across windows and chunks. Each element is replayed twice (2 exps) and the adjoint reuses e.
// Reductions: over n (du, d(dt), y) a transposed butterfly sums 16 steps' values over the 16
// lanes in 15 shuffles, leaving step l's total on lane l (which also owns step l's scalars,
// so it writes du, ddelta, dz with no more traffic). The sums over channels and batch are
// deterministic, with no float atomics (issue 11; they used to be atomicAdds, whose order,
// and so last bits, varied from run to run): over channels (dBm, dCm) one xor-16 shuffle
// joins a warp's 2 channels and shared memory the warps in index order; each block stores
// its window's sums as a partial in the workspace `part` (B, nblk, 2, N, L) (nblk = gridDim.x,
// 64-byte runs in t). dA (over b) and dD, dbias (over b, t) are summed in registers and
// stored per (b, d). selective_scan_backward_reduce_f32 (below) then sums the partials in
// index order (blocks 0..nblk-1, batches 0..B-1): the same bits on every run and schedule.
//
// Napkin math at B 8, D 1536, L 2048, N 16, chunk 64 (f32):
//   reads  u, delta, z, dout 4 x 100.7 MB; Bm, Cm 2.1 MB (re-read by every block of a batch:
//          L2 hits); chunk_states 25.2 MB; writes du, ddelta, dz 3 x 100.7 MB.
//   ~730 MB once each -> ~0.25 ms at ~2.9 TB/s.
//   The price of determinism, the partials: dBm, dCm, B x nblk x 2 x N x L floats, with 8
//   channels per block (v1, v2; nblk 192) 8 x 192 x 2 x 16 x 2048 x 4 B = 403 MB, with 16
//   (v3; nblk 96) 201 MB; dA, dD, dbias B x D x (N + 2) floats = 0.8 MB. Written here as plain
//   stores (as many 64-byte runs as the atomics sent into L2 before; the kernel moves ~270
//   GB/s of HBM's ~3 TB/s, so the writes overlap its compute) and read once by the reduce
//   kernel: ~0.14 ms (v2) or ~0.07 ms (v3) at ~2.9 TB/s, 5% or 2.6% of the 2.69 ms backward,
//   and a workspace of 403 or 201 MB (freed after the call). A cluster of 8 blocks summing
//   through distributed shared memory would cut the partials 8x more, but needs co-resident
//   blocks, which the CPU emulator (kernels/tools/emu) cannot run.
//   Per (b, d, t, n) (403 M of them): 2 exps (MUFU ex2, ~3.7 T/s on 132 SMs: 0.22 ms) and ~22
//   FP ops (pass 1: 3, pass 2 replay: 4, adjoint: ~12, reductions ~3) ~ 9 GFLOP (~0.15 ms),
//   plus ~8 shared loads/shuffles per element step per warp on the MIO pipe (~0.3 ms).
//   So ~0.3-0.5 ms expected; the reference kernel's backward is ~2.4 ms (3.367 fwd+bwd).

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

// The body of the backward kernels. KEEP_E: keep the window's decays e_t from the replay in
// registers for the adjoint (152 registers, 3 blocks per SM); otherwise recompute them (one
// more exp per element, 128 registers, 4 blocks per SM). CH: channels per block (8 or 16; 16
// halves the partials). Which is faster is for the GPU to say.
#define SCAN_BWD_PARAMS                                                                                             \
    float *__restrict__ du, float *__restrict__ ddelta, float *__restrict__ dz, float *__restrict__ dinit,           \
        float *__restrict__ part, const float *__restrict__ u, const float *__restrict__ delta,                     \
        const float *__restrict__ A, const float *__restrict__ Bm, const float *__restrict__ Cm,                     \
        const float *__restrict__ Dskip, const float *__restrict__ z, const float *__restrict__ delta_bias,          \
        int softplus, const float *__restrict__ chunk_states, const float *__restrict__ dout,                      \
        const float *__restrict__ dlast, int batch, int dim, int len, int n_state, int chunk
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

// The fields of a ScanBackwardParams p in SCAN_BWD_PARAMS order.
#define SCAN_BWD_ARGS                                                                                             \
    p.du, p.ddelta, p.dz, p.dinit, p.part, p.u, p.delta, p.A, p.Bm, p.Cm, p.Dskip, p.z,                         \
        p.delta_bias, (int)p.softplus, p.chunk_states, p.dout, p.dlast, (int)p.batch, (int)p.dim,  \
        (int)p.len, (int)p.n_state, (int)p.chunk

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

// The read-only inputs are loaded with __ldg (ld.global.nc): from __restrict__ kernel
// parameters nvcc inferred that itself, from pointers in a parameter struct it does not.
template <bool KEEP_E, int CH>
__device__ __forceinline__ void scan_backward(SCAN_BWD_PARAMS) {
    constexpr int THREADS = CH * SCAN_BWD_LANES, WARPS = THREADS / 32;
    __shared__ float4 s_sc[CH][SCAN_BWD_WIN];                // per channel and step: (dt, dt u, dy, 0)
    __shared__ float s_b[SCAN_BWD_LANES][SCAN_BWD_WIN + 1];  // the window's Bm as (n, step), padded
    __shared__ float s_c[SCAN_BWD_LANES][SCAN_BWD_WIN + 1];
    __shared__ float s_ck[SCAN_BWD_MAX_WINS][THREADS];  // state entering each window of the chunk
    __shared__ float s_red[WARPS][SCAN_BWD_WIN][32];    // per warp and step: dBm[n] | dCm[n]

    if (n_state > SCAN_BWD_LANES || n_state < 1 || chunk < 1 || chunk > SCAN_BWD_WIN * SCAN_BWD_MAX_WINS) return;
    const int tid = threadIdx.x, ch = tid / SCAN_BWD_LANES, lane = tid % SCAN_BWD_LANES, warp = tid / 32;
    const bool upper = tid & 16;  // upper half-warp: the second of the warp's two channels
    const int b = blockIdx.y, d = blockIdx.x * CH + ch;
    const bool live = d < dim;                   // this channel exists
    const bool live_n = live && lane < n_state;  // ... and this lane's state
    const long long bd = (long long)b * dim + d;
    const long long row = bd * len;  // offset of (b, d, 0) in (B, D, L)
    const int n_chunks = (len + chunk - 1) / chunk;
    const float a = live_n ? __ldg(A + (long long)d * n_state + lane) : 0.0f;
    const float a2 = a * SCAN_LOG2E;  // exp(dt A) = exp2(dt a2)
    const float bias = live && delta_bias ? __ldg(delta_bias + d) : 0.0f;
    const float dskip = live ? __ldg(Dskip + d) : 0.0f;
    const float* bb = Bm + (long long)b * n_state * len;
    const float* cb = Cm + (long long)b * n_state * len;

    // This thread's own step (tw + lane) of the staged window: its values for the outputs.
    float o_dt = 0.0f, o_sig = 0.0f, o_u = 0.0f, o_dy = 0.0f, o_gz = 0.0f;
    // Stage the window [tw, tw + wl) (zeros past wl, which make those steps no-ops: e = 1,
    // no input). `adjoint`: also dy, Cm and the own-step values.
    auto stage = [&](int tw, int wl, bool adjoint) {
        __syncthreads();  // the previous window's readers are done
        const bool ok = live && lane < wl;
        const long long t = row + tw + lane;
        float dt = 0.0f, dtu = 0.0f, dy = 0.0f;
        o_dt = o_sig = o_u = o_dy = o_gz = 0.0f;
        if (ok) {
            const float x = __ldg(delta + t) + bias;
            dt = softplus ? softplus_f(x) : x;
            o_u = __ldg(u + t);
            dtu = dt * o_u;
            if (adjoint) {
                o_dt = dt;
                o_sig = softplus ? sigmoid_f(x) : 1.0f;  // d(dt)/d(delta)
                const float g = __ldg(dout + t);
                if (z) {
                    const float zt = __ldg(z + t), s = sigmoid_f(zt);
                    dy = g * zt * s;
                    o_gz = g * s * (1.0f + zt * (1.0f - s));
                } else {
                    dy = g;
                }
                o_dy = dy;
            }
        }
        s_sc[ch][lane] = make_float4(dt, dtu, dy, 0.0f);
        for (int r = ch; r < SCAN_BWD_LANES; r += CH) {  // rows n of Bm, Cm: 64 bytes each
            const bool okr = r < n_state && lane < wl;
            const long long o = (long long)r * len + tw + lane;
            s_b[r][lane] = okr ? __ldg(bb + o) : 0.0f;
            if (adjoint) s_c[r][lane] = okr ? __ldg(cb + o) : 0.0f;
        }
        __syncthreads();
    };

    // dh starts at dlast (the gradient of h_{L-1} from outside), or 0.
    float dh = live_n && dlast ? __ldg(dlast + bd * n_state + lane) : 0.0f;
    float dA_acc = 0.0f, dd_acc = 0.0f, dbias_acc = 0.0f;
    for (int c = n_chunks - 1; c >= 0; --c) {
        const int t0 = c * chunk, t1 = min(t0 + chunk, len);
        const int n_win = (t1 - t0 + SCAN_BWD_WIN - 1) / SCAN_BWD_WIN;
        // Pass 1: from the chunk's saved state, the state entering each window.
        float h = live_n ? __ldg(chunk_states + (bd * n_chunks + c) * n_state + lane) : 0.0f;
        for (int w = 0; w < n_win; ++w) {
            s_ck[w][tid] = h;  // read back by this thread only
            if (w == n_win - 1) break;
            stage(t0 + w * SCAN_BWD_WIN, SCAN_BWD_WIN, false);
#pragma unroll
            for (int i = 0; i < SCAN_BWD_WIN; ++i) {
                const float4 s = s_sc[ch][i];
                h = fmaf(exp2f(s.x * a2), h, s.y * s_b[lane][i]);
            }
        }
        // Pass 2: windows newest first.
        for (int w = n_win - 1; w >= 0; --w) {
            const int tw = t0 + w * SCAN_BWD_WIN, wl = min(SCAN_BWD_WIN, t1 - tw);
            stage(tw, wl, true);
            // Replay: h_t and e_t of the window's steps into registers; y's terms for dz.
            float hw[SCAN_BWD_WIN], ew[SCAN_BWD_WIN], v[SCAN_BWD_WIN];
            const float h_in = s_ck[w][tid];
            float hc = h_in;
#pragma unroll
            for (int i = 0; i < SCAN_BWD_WIN; ++i) {
                const float4 s = s_sc[ch][i];
                const float e = exp2f(s.x * a2);
                if (KEEP_E) ew[i] = e;
                hc = fmaf(e, hc, s.y * s_b[lane][i]);
                hw[i] = hc;
                v[i] = s_c[lane][i] * hc;
            }
            const bool ok = live && lane < wl;  // this lane's own step exists
            const long long t = row + tw + lane;
            if (z) {  // uniform branch: the shuffles see every lane
                const float y = transpose_sum16(v, lane) + dskip * o_u;
                if (ok) dz[t] = y * o_gz;
            }
            // Adjoint, newest step first. S: dh Bm (for du and d(dt)); P: A dh e h_{t-1}.
            float S[SCAN_BWD_WIN], P[SCAN_BWD_WIN];
#pragma unroll
            for (int i = SCAN_BWD_WIN - 1; i >= 0; --i) {
                const float4 s = s_sc[ch][i];  // dt, dt u, dy
                const float hp = i > 0 ? hw[i - 1] : h_in, e = KEEP_E ? ew[i] : exp2f(s.x * a2);
                dh = fmaf(s.z, s_c[lane][i], dh);  // dh_t is now complete
                const float q = dh * e * hp;
                dA_acc = fmaf(q, s.x, dA_acc);
                P[i] = a * q;
                S[i] = dh * s_b[lane][i];
                const float gb = dh * s.y, gc = s.z * hw[i];  // this channel's dBm_t[n], dCm_t[n]
                s_red[warp][i][tid & 31] = (upper ? gc : gb) + __shfl_xor_sync(0xffffffffu, upper ? gb : gc, 16);
                dh *= e;  // the carry into step t - 1
            }
            const float s_sum = transpose_sum16(S, lane), p_sum = transpose_sum16(P, lane);
            if (ok) {
                du[t] = fmaf(dskip, o_dy, o_dt * s_sum);
                const float g = (p_sum + o_u * s_sum) * o_sig;
                ddelta[t] = g;
                dbias_acc += g;
                dd_acc = fmaf(o_dy, o_u, dd_acc);
            }
            __syncthreads();
            scan_store_window<THREADS>(part, s_red, b, tw, wl, n_state, len);
        }
    }
    scan_store_channel(part, dinit, dh, dA_acc, dd_acc, dbias_acc, bd, dim, n_state, len, lane, live);
}

// Version 1: keeps each step's e_t in registers for the adjoint (152 registers, 3 blocks
// per SM). On the H100 at (8, 1536, 2048, 16), with atomics: 3.43 ms, slower than version 2
// (2.70 ms). Grid (nblk = ceil(dim / 8), batch), 128 threads; versions 1 to 3 are followed by
// selective_scan_backward_reduce_f32, which writes dA, dBm, dCm, dDskip, ddelta_bias from
// `part`. dz, dinit, z, delta_bias, dlast may be null (z and dz together; dinit when the
// forward had no init, dlast for a zero one).
extern "C" __global__ void __launch_bounds__(SCAN_BWD_THREADS, 3) selective_scan_backward_v1_f32(const __grid_constant__ ScanBackwardParams p) {
    scan_backward<true, 8>(SCAN_BWD_ARGS);
}

// Version 2: the same, recomputing e_t in the adjoint (one more exp per element, 128
// registers, 4 blocks per SM; 2.69 ms with atomics on the H100, see scan_backward).
extern "C" __global__ void __launch_bounds__(SCAN_BWD_THREADS, 4) selective_scan_backward_f32(const __grid_constant__ ScanBackwardParams p) {
    scan_backward<false, 8>(SCAN_BWD_ARGS);
}

// Version 3 (selected): version 2 with 16 channels per block (grid (ceil(dim / 16), batch),
// 256 threads, 2 blocks per SM: the same 16 warps per SM at the same 128 registers), so half
// the blocks, half the dBm, dCm partials (201 MB instead of 403 at the napkin size).
extern "C" __global__ void __launch_bounds__(2 * SCAN_BWD_THREADS, 2) selective_scan_backward_v3_f32(const __grid_constant__ ScanBackwardParams p) {
    scan_backward<false, 16>(SCAN_BWD_ARGS);
}

// The parameter of selective_scan_backward_reduce_f32: `ScanBwdReduceParams` in launch/scan.rs.
struct ScanBwdReduceParams {
    float *dA, *dBm, *dCm, *dDskip;
    float* ddelta_bias;  // null without a bias
    const float* part;   // the backward's workspace
    long long batch, dim, len, n_state, nblk;
};
static_assert(sizeof(ScanBwdReduceParams) == 88, "ScanBwdReduceParams: launch/scan.rs has 88 bytes");

// The backward's second, deterministic stage: each summed gradient as the sum of its partials
// in index order. `part` holds dBm | dCm partials (B, nblk, 2, N, L), then dA's (B, D, N), then
// dD's (B, D) and dbias's (B, D). Output i (grid-stride, any grid) of dBm | dCm (2, B, N, L),
// then dA (D, N), then dD | dbias (2, D): adjacent threads read adjacent t (or n, d) of one
// partial, so each of the nblk (or B) loads per output is coalesced. The order of a sum never
// depends on the launch. Bytes: the partials once (see the napkin math above).
extern "C" __global__ void __launch_bounds__(256) selective_scan_backward_reduce_f32(const __grid_constant__ ScanBwdReduceParams p) {
    const long long nl = p.n_state * p.len, bnl = p.batch * nl, dn = p.dim * p.n_state;
    const float* pa = p.part + p.batch * p.nblk * 2 * nl;  // dA partials
    const float* pd = pa + p.batch * dn;                   // dD partials, then dbias's
    const long long total = 2 * bnl + dn + 2 * p.dim, step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        float s = 0.0f;
        if (i < 2 * bnl) {
            const long long q = i / bnl, r = i - q * bnl, b = r / nl, nt = r - b * nl;
            const float* src = p.part + (b * p.nblk * 2 + q) * nl + nt;  // block k's: + k 2 nl
#pragma unroll 8
            for (long long k = 0; k < p.nblk; ++k) s += src[k * 2 * nl];
            (q ? p.dCm : p.dBm)[r] = s;
        } else if (i < 2 * bnl + dn) {
            const long long j = i - 2 * bnl;
            for (long long b = 0; b < p.batch; ++b) s += pa[b * dn + j];
            p.dA[j] = s;
        } else {
            const long long j = i - 2 * bnl - dn, q = j / p.dim, d = j - q * p.dim;
            for (long long b = 0; b < p.batch; ++b) s += pd[(q * p.batch + b) * p.dim + d];
            if (q == 0) p.dDskip[d] = s;
            else if (p.ddelta_bias) p.ddelta_bias[d] = s;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Forward v2: the backward's block layout for the forward (same signature and outputs as
// v1). Grid (ceil(D / 8), B), 128 threads = 8 channels x 16 lanes, lane n holding state n.
// Per window of 16 steps (windows start at every chunk start, so the state entering each
// chunk is on hand to save): lane `step` computes the step's dt = softplus(...), dt u and
// gate silu(z) once per (channel, step), staged with the window's Bm, Cm rows in shared
// memory (coalesced 64-byte loads); the 16 steps run unrolled, h in a register, and the
// y_t = sum_n Cm h terms are summed over lanes by the transposed butterfly (15 shuffles per
// 16 steps), leaving y_t on lane t, which writes out_t.
// Napkin math (the v1 header's 431 MB, ~0.14 ms of bytes; 403 M exps, ~0.11 ms of MUFU):
// per element step ~5 FP ops and ~4 shared loads/shuffles per warp on the MIO pipe (~0.2 ms).
// Expect ~0.25-0.4 ms against v1's 3.6 ms and the reference's 0.977 ms.
// The bound of 10 blocks per SM keeps it at the 48 registers it had before the initial state
// (loading init took ptxas to 56, i.e. 9 blocks per SM); ptxas reports no spill at 48.
extern "C" __global__ void __launch_bounds__(SCAN_BWD_THREADS, 10)
    selective_scan_forward_f32(const __grid_constant__ ScanForwardParams p) {
    float* __restrict__ out = p.out;
    float* __restrict__ last_state = p.last_state;
    float* __restrict__ chunk_states = p.chunk_states;
    const float* __restrict__ u = p.u;
    const float* __restrict__ delta = p.delta;
    const float* __restrict__ A = p.A;
    const float* __restrict__ Bm = p.Bm;
    const float* __restrict__ Cm = p.Cm;
    const float* __restrict__ Dskip = p.Dskip;
    const float* __restrict__ z = p.z;
    const float* __restrict__ delta_bias = p.delta_bias;
    const float* __restrict__ init = p.init;
    const int softplus = p.softplus, dim = p.dim, len = p.len, n_state = p.n_state, chunk = p.chunk;  // batch: gridDim.y
    __shared__ float2 s_sc[SCAN_BWD_CH][SCAN_BWD_WIN];       // per channel and step: (dt, dt u)
    __shared__ float s_b[SCAN_BWD_LANES][SCAN_BWD_WIN + 1];  // the window's Bm as (n, step), padded
    __shared__ float s_c[SCAN_BWD_LANES][SCAN_BWD_WIN + 1];

    if (n_state > SCAN_BWD_LANES || n_state < 1 || chunk < 1) return;
    const int tid = threadIdx.x, ch = tid / SCAN_BWD_LANES, lane = tid % SCAN_BWD_LANES;
    const int b = blockIdx.y, d = blockIdx.x * SCAN_BWD_CH + ch;
    const bool live = d < dim, live_n = live && lane < n_state;
    const long long bd = (long long)b * dim + d;
    const long long row = bd * len;  // offset of (b, d, 0) in (B, D, L)
    const int n_chunks = (len + chunk - 1) / chunk;
    const float a2 = live_n ? A[(long long)d * n_state + lane] * SCAN_LOG2E : 0.0f;  // exp(dt A) = exp2(dt a2)
    const float bias = live && delta_bias ? delta_bias[d] : 0.0f;
    const float dskip = live ? Dskip[d] : 0.0f;
    const float* bb = Bm + (long long)b * n_state * len;
    const float* cb = Cm + (long long)b * n_state * len;

    float h = live_n && init ? init[bd * n_state + lane] : 0.0f;  // h_{-1}
    for (int c = 0; c < n_chunks; ++c) {
        if (live_n) chunk_states[(bd * n_chunks + c) * n_state + lane] = h;
        const int t0 = c * chunk, t1 = min(t0 + chunk, len);
        for (int tw = t0; tw < t1; tw += SCAN_BWD_WIN) {
            const int wl = min(SCAN_BWD_WIN, t1 - tw);
            __syncthreads();  // the previous window's readers are done
            // Stage this lane's own step tw + lane (zeros past wl: e = 1, no input).
            const bool ok = live && lane < wl;
            const long long t = row + tw + lane;
            float dt = 0.0f, ut = 0.0f, gate = 1.0f;
            if (ok) {
                const float x = delta[t] + bias;
                dt = softplus ? softplus_f(x) : x;
                ut = u[t];
                if (z) gate = z[t] * sigmoid_f(z[t]);
            }
            s_sc[ch][lane] = make_float2(dt, dt * ut);
            for (int r = ch; r < SCAN_BWD_LANES; r += SCAN_BWD_CH) {  // rows n of Bm, Cm: 64 bytes each
                const bool okr = r < n_state && lane < wl;
                const long long o = (long long)r * len + tw + lane;
                s_b[r][lane] = okr ? bb[o] : 0.0f;
                s_c[r][lane] = okr ? cb[o] : 0.0f;
            }
            __syncthreads();
            float v[SCAN_BWD_WIN];
#pragma unroll
            for (int i = 0; i < SCAN_BWD_WIN; ++i) {
                const float2 s = s_sc[ch][i];
                h = fmaf(exp2f(s.x * a2), h, s.y * s_b[lane][i]);
                v[i] = s_c[lane][i] * h;
            }
            const float y = transpose_sum16(v, lane) + dskip * ut;
            if (ok) out[t] = y * gate;
        }
    }
    if (live_n) last_state[bd * n_state + lane] = h;
}

// ---------------------------------------------------------------------------------------
// Version 4 of the backward, version 3 of the forward: the same work as backward v3 and forward
// v2, with the next window's inputs in flight while the current one is computed. Nsight Compute
// on the H200 (kernels/tools/scan_bench.sh ncu) put both earlier versions' time in waiting for
// global loads: each window staged its inputs and then stood at a barrier until they arrived
// (stall long_scoreboard 3.7 of 10.6 cycles per issued instruction in the backward, 6.2 of 12.8
// in the forward). Here every thread copies its share of window k + 1 (its own step of delta, u,
// dout, z; its rows of Bm, Cm; at a chunk's first window the saved state) into the other half
// of a double buffer with cp.async at the start of window k, which takes no registers, and
// waits for it (cp.async.wait_group 1) only at the start of window k + 1. The buffers are in
// dynamic shared memory (`scan_smem_floats` floats, launch/scan.rs sizes them), with the
// backward's per-window states, which it sizes to the chunk (16 KB at most, 4 KB at chunk 64).
#include "mma.cuh"  // cp.async (and its CPU twin under the emulator)

#define SCAN_RAW 5      // backward, per thread and window: delta, u, dout, z, the chunk's saved state
#define SCAN_RAW_FWD 3  // forward: delta, u, z

// The floats of dynamic shared memory of forward v3 (`fwd`) or backward v4 with `threads`
// threads at `chunk`: raw (2, SCAN_RAW or SCAN_RAW_FWD, threads), Bm and Cm rows (2, 16, 17)
// each, and for the backward the state entering each window of a chunk (ceil(chunk / 16), threads).
__host__ __device__ constexpr int scan_smem_floats(bool fwd, int threads, int chunk) {
    return 2 * (fwd ? SCAN_RAW_FWD : SCAN_RAW) * threads + 4 * SCAN_BWD_LANES * (SCAN_BWD_WIN + 1) +
           (fwd ? 0 : (chunk + SCAN_BWD_WIN - 1) / SCAN_BWD_WIN * threads);
}

// One window of the backward's walk: chunk c, window w of it, pass 2 (the adjoint) or pass 1.
struct ScanWin {
    int c, w, adj;
};
__device__ __forceinline__ int scan_windows(int c, int len, int chunk) {
    return (min(c * chunk + chunk, len) - c * chunk + SCAN_BWD_WIN - 1) / SCAN_BWD_WIN;
}
// A chunk starts with pass 1 over its windows but the last, or with pass 2 if it has one window.
__device__ __forceinline__ ScanWin scan_chunk_start(int c, int len, int chunk) {
    return ScanWin{c, 0, scan_windows(c, len, chunk) < 2};
}
// The walk: chunks newest first; in each, pass 1 forward to its second-to-last window, then
// pass 2 from its last window back to its first. c = -1: done.
__device__ __forceinline__ ScanWin scan_next(ScanWin x, int len, int chunk) {
    if (!x.adj) {
        const int nw = scan_windows(x.c, len, chunk);
        return x.w + 2 < nw ? ScanWin{x.c, x.w + 1, 0} : ScanWin{x.c, nw - 1, 1};
    }
    if (x.w > 0) return ScanWin{x.c, x.w - 1, 1};
    return x.c > 0 ? scan_chunk_start(x.c - 1, len, chunk) : ScanWin{-1, 0, 0};
}

// 2^x in one MUFU.EX2, results below 2^-126 flushed to zero: exp2f adds a compare and two
// scaling multiplies around it to keep denormal results, three of its four instructions,
// and a decay exp(dt A) below 1e-38 is zero to f32 either way (next to h's other term).
#ifndef CUDA_EMU
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
#else
inline float exp2_ftz(float x) {
    const float y = std::exp2(x);
    return y < 1.17549435e-38f ? 0.0f : y;
}
#endif

// 4 bytes from src to the shared float at dst, or a zero without reading when !ok.
__device__ __forceinline__ void scan_copy(float* dst, const float* src, bool ok) {
    cp_async_4(smem_addr(dst), src, ok ? 4 : 0);
}

// Backward v4: scan_backward's algebra (see its comment) along the ScanWin walk, with window
// k + 1 copied while window k runs. Grid (ceil(D / CH), B), CH * 16 threads.
template <int CH>
__device__ __forceinline__ void scan_backward_pipelined(SCAN_BWD_PARAMS) {
    constexpr int THREADS = CH * SCAN_BWD_LANES, WARPS = THREADS / 32, ROW = SCAN_BWD_WIN + 1;
    __shared__ float4 s_sc[CH][SCAN_BWD_WIN];          // per channel and step: (dt, dt u, dy, u)
    __shared__ float s_red[WARPS][SCAN_BWD_WIN][32];  // per warp and step: dBm[n] | dCm[n]
    __shared__ float2 s_par[CH];                       // per channel: delta_bias, D (read when needed:
                                                       // registers held through the loops spilled)
    float* raw = reinterpret_cast<float*>(dyn_smem());  // (2, SCAN_RAW, THREADS)
    float* s_b = raw + 2 * SCAN_RAW * THREADS;           // (2, 16, ROW): the window's Bm as (n, step)
    float* s_c = s_b + 2 * SCAN_BWD_LANES * ROW;         // (2, 16, ROW): Cm
    float* s_ck = s_c + 2 * SCAN_BWD_LANES * ROW;        // (windows, THREADS): the state entering each

    if (n_state > SCAN_BWD_LANES || n_state < 1 || chunk < 1) return;
    const int tid = threadIdx.x, ch = tid / SCAN_BWD_LANES, lane = tid % SCAN_BWD_LANES, warp = tid / 32;
    const bool upper = tid & 16;
    const int b = blockIdx.y, d = blockIdx.x * CH + ch;
    const bool live = d < dim, live_n = live && lane < n_state;
    const long long bd = (long long)b * dim + d;
    const long long row = bd * len;
    const int n_chunks = (len + chunk - 1) / chunk;
    const float a = live_n ? __ldg(A + (long long)d * n_state + lane) : 0.0f;
    const float a2 = a * SCAN_LOG2E;
    if (lane == 0) s_par[ch] = make_float2(live && delta_bias ? __ldg(delta_bias + d) : 0.0f, live ? __ldg(Dskip + d) : 0.0f);
    const float* bb = Bm + (long long)b * n_state * len;
    const float* cb = Cm + (long long)b * n_state * len;

    // Queue the copies of window x into buffer `buf` (zeros past the sequence or the state).
    auto fetch = [&](ScanWin x, int buf) {
        const int tw = x.c * chunk + x.w * SCAN_BWD_WIN, wl = min(SCAN_BWD_WIN, min(x.c * chunk + chunk, len) - tw);
        const bool ok = live && lane < wl;
        const long long t = ok ? row + tw + lane : 0;
        float* rw = raw + buf * SCAN_RAW * THREADS + tid;
        scan_copy(rw, delta + t, ok);
        scan_copy(rw + THREADS, u + t, ok);
        if (x.adj) {
            scan_copy(rw + 2 * THREADS, dout + t, ok);
            if (z) scan_copy(rw + 3 * THREADS, z + t, ok);
        }
        if (x.w == 0 && x.adj == (scan_windows(x.c, len, chunk) < 2))  // the chunk's first window
            scan_copy(rw + 4 * THREADS, chunk_states + (live_n ? (bd * n_chunks + x.c) * n_state + lane : 0), live_n);
        for (int r = ch; r < SCAN_BWD_LANES; r += CH) {
            const bool okr = r < n_state && lane < wl;
            const long long o = okr ? (long long)r * len + tw + lane : 0;
            scan_copy(s_b + (buf * SCAN_BWD_LANES + r) * ROW + lane, bb + o, okr);
            if (x.adj) scan_copy(s_c + (buf * SCAN_BWD_LANES + r) * ROW + lane, cb + o, okr);
        }
    };

    float dh = live_n && dlast ? __ldg(dlast + bd * n_state + lane) : 0.0f;
    float dA_acc = 0.0f, dd_acc = 0.0f, dbias_acc = 0.0f;
    ScanWin cur = scan_chunk_start(n_chunks - 1, len, chunk);
    if (len > 0) fetch(cur, 0);
    cp_async_commit();
    for (int k = 0; cur.c >= 0 && len > 0; ++k) {
        const int buf = k & 1;
        const ScanWin nxt = scan_next(cur, len, chunk);
        __syncthreads();  // window k - 1's readers of s_sc, s_red and buffer buf ^ 1 are done
        if (nxt.c >= 0) fetch(nxt, buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>();  // this thread's copies of window k have landed
        const int t1 = min(cur.c * chunk + chunk, len), tw = cur.c * chunk + cur.w * SCAN_BWD_WIN;
        const int wl = min(SCAN_BWD_WIN, t1 - tw);
        const bool ok = live && lane < wl;  // this lane's own step exists
        const float* rw = raw + buf * SCAN_RAW * THREADS + tid;
        if (cur.w == 0 && cur.adj == (scan_windows(cur.c, len, chunk) < 2))  // a chunk begins
            s_ck[tid] = rw[4 * THREADS];
        // This thread's own step: dt and friends, as scan_backward's stage (dt, u and dy stay
        // in s_sc for the outputs at the window's end, out of the registers of the loops).
        float o_sig = 0.0f, o_u = 0.0f, o_dy = 0.0f, o_gz = 0.0f, dt = 0.0f;
        if (ok) {
            const float x = rw[0] + s_par[ch].x;
            dt = softplus ? softplus_f(x) : x;
            o_u = rw[THREADS];
            if (cur.adj) {
                o_sig = softplus ? sigmoid_f(x) : 1.0f;
                const float g = rw[2 * THREADS];
                if (z) {
                    const float zt = rw[3 * THREADS], s = sigmoid_f(zt);
                    o_dy = g * zt * s;
                    o_gz = g * s * (1.0f + zt * (1.0f - s));
                } else {
                    o_dy = g;
                }
            }
        }
        s_sc[ch][lane] = make_float4(dt, dt * o_u, o_dy, o_u);
        __syncthreads();  // s_sc and every thread's Bm, Cm rows of window k are visible
        const float* wb = s_b + (buf * SCAN_BWD_LANES + lane) * ROW;  // this lane's state's Bm row
        const float* wc = s_c + (buf * SCAN_BWD_LANES + lane) * ROW;
        if (!cur.adj) {  // pass 1: the state entering the next window
            float h = s_ck[cur.w * THREADS + tid];
#pragma unroll
            for (int i = 0; i < SCAN_BWD_WIN; ++i) {
                const float4 s = s_sc[ch][i];
                h = fmaf(exp2_ftz(s.x * a2), h, s.y * wb[i]);
            }
            s_ck[(cur.w + 1) * THREADS + tid] = h;
            cur = nxt;
            continue;
        }
        // Pass 2: replay the window's states, then the adjoint, newest step first.
        float hw[SCAN_BWD_WIN], v[SCAN_BWD_WIN];
        const float h_in = s_ck[cur.w * THREADS + tid];
        float hc = h_in;
#pragma unroll
        for (int i = 0; i < SCAN_BWD_WIN; ++i) {
            const float4 s = s_sc[ch][i];
            hc = fmaf(exp2_ftz(s.x * a2), hc, s.y * wb[i]);
            hw[i] = hc;
            v[i] = wc[i] * hc;
            if (i >= 8 && z) transpose_pair<8>(v, i - 8, lane);  // (a uniform branch)
        }
        const long long t = row + tw + lane;
        if (z) {
            const float y = transpose_sum16_after8(v, lane) + s_par[ch].y * s_sc[ch][lane].w;
            if (ok) dz[t] = y * o_gz;
        }
        float S[SCAN_BWD_WIN], P[SCAN_BWD_WIN];
#pragma unroll
        for (int i = SCAN_BWD_WIN - 1; i >= 0; --i) {
            const float4 s = s_sc[ch][i];
            const float hp = i > 0 ? hw[i - 1] : h_in, e = exp2_ftz(s.x * a2);
            dh = fmaf(s.z, wc[i], dh);
            const float q = dh * e * hp;
            dA_acc = fmaf(q, s.x, dA_acc);
            P[i] = a * q;
            S[i] = dh * wb[i];
            const float gb = dh * s.y, gc = s.z * hw[i];
            s_red[warp][i][tid & 31] = (upper ? gc : gb) + __shfl_xor_sync(0xffffffffu, upper ? gb : gc, 16);
            dh *= e;
            if (i < 8) {
                transpose_pair<8>(S, i, lane);
                transpose_pair<8>(P, i, lane);
            }
        }
        const float s_sum = transpose_sum16_after8(S, lane), p_sum = transpose_sum16_after8(P, lane);
        if (ok) {
            const float4 own = s_sc[ch][lane];  // dt, dt u, dy, u of this lane's step
            du[t] = fmaf(s_par[ch].y, own.z, own.x * s_sum);
            const float g = (p_sum + own.w * s_sum) * o_sig;
            ddelta[t] = g;
            dbias_acc += g;
            dd_acc = fmaf(own.z, own.w, dd_acc);
        }
        __syncthreads();
        scan_store_window<THREADS>(part, s_red, b, tw, wl, n_state, len);
        cur = nxt;
    }
    scan_store_channel(part, dinit, dh, dA_acc, dd_acc, dbias_acc, bd, dim, n_state, len, lane, live);
}

// Version 4: grid (ceil(dim / 16), batch), 256 threads, dynamic shared memory
// scan_smem_floats(false, 256, chunk) floats; then selective_scan_backward_reduce_f32 as v3.
#ifndef SCAN_BWD_V4_BLOCKS
#define SCAN_BWD_V4_BLOCKS 3  // blocks per SM the registers must allow (80 registers)
#endif
extern "C" __global__ void __launch_bounds__(2 * SCAN_BWD_THREADS, SCAN_BWD_V4_BLOCKS) selective_scan_backward_v4_f32(const __grid_constant__ ScanBackwardParams p) {
    scan_backward_pipelined<16>(SCAN_BWD_ARGS);
}

// Forward v3: forward v2's block layout and arithmetic (see its comment), with window k + 1's
// delta, u, z and Bm, Cm rows copied while window k runs. Windows start at every chunk start,
// in order. Grid (ceil(D / 8), B), 128 threads, dynamic shared memory
// scan_smem_floats(true, 128, chunk) floats.
#ifndef SCAN_FWD_V3_BLOCKS
#define SCAN_FWD_V3_BLOCKS 10  // blocks per SM the registers must allow
#endif
extern "C" __global__ void __launch_bounds__(SCAN_BWD_THREADS, SCAN_FWD_V3_BLOCKS)
    selective_scan_forward_v3_f32(const __grid_constant__ ScanForwardParams p) {
    constexpr int THREADS = SCAN_BWD_THREADS, ROW = SCAN_BWD_WIN + 1;
    const float* __restrict__ delta = p.delta;
    const float* __restrict__ u = p.u;
    const float* __restrict__ z = p.z;
    const int softplus = p.softplus, dim = p.dim, len = p.len, n_state = p.n_state, chunk = p.chunk;  // batch: gridDim.y
    __shared__ float2 s_sc[SCAN_BWD_CH][SCAN_BWD_WIN];  // per channel and step: (dt, dt u)
    float* raw = reinterpret_cast<float*>(dyn_smem());  // (2, SCAN_RAW_FWD, THREADS)
    float* s_b = raw + 2 * SCAN_RAW_FWD * THREADS;       // (2, 16, ROW): the window's Bm as (n, step)
    float* s_c = s_b + 2 * SCAN_BWD_LANES * ROW;         // (2, 16, ROW): Cm

    if (n_state > SCAN_BWD_LANES || n_state < 1 || chunk < 1) return;
    const int tid = threadIdx.x, ch = tid / SCAN_BWD_LANES, lane = tid % SCAN_BWD_LANES;
    const int b = blockIdx.y, d = blockIdx.x * SCAN_BWD_CH + ch;
    const bool live = d < dim, live_n = live && lane < n_state;
    const long long bd = (long long)b * dim + d;
    const long long row = bd * len;
    const int n_chunks = (len + chunk - 1) / chunk;
    const float a2 = live_n ? p.A[(long long)d * n_state + lane] * SCAN_LOG2E : 0.0f;
    const float bias = live && p.delta_bias ? p.delta_bias[d] : 0.0f;
    const float dskip = live ? p.Dskip[d] : 0.0f;
    const float* bb = p.Bm + (long long)b * n_state * len;
    const float* cb = p.Cm + (long long)b * n_state * len;

    // Queue the copies of the window at tw (in the chunk ending at t1) into buffer `buf`.
    auto fetch = [&](int tw, int t1, int buf) {
        const int wl = min(SCAN_BWD_WIN, t1 - tw);
        const bool ok = live && lane < wl;
        const long long t = ok ? row + tw + lane : 0;
        float* rw = raw + buf * SCAN_RAW_FWD * THREADS + tid;
        scan_copy(rw, delta + t, ok);
        scan_copy(rw + THREADS, u + t, ok);
        if (z) scan_copy(rw + 2 * THREADS, z + t, ok);
        for (int r = ch; r < SCAN_BWD_LANES; r += SCAN_BWD_CH) {
            const bool okr = r < n_state && lane < wl;
            const long long o = okr ? (long long)r * len + tw + lane : 0;
            scan_copy(s_b + (buf * SCAN_BWD_LANES + r) * ROW + lane, bb + o, okr);
            scan_copy(s_c + (buf * SCAN_BWD_LANES + r) * ROW + lane, cb + o, okr);
        }
    };

    float h = live_n && p.init ? p.init[bd * n_state + lane] : 0.0f;  // h_{-1}
    if (len > 0) fetch(0, min(chunk, len), 0);
    cp_async_commit();
    int buf = 0;
    for (int c = 0; c < n_chunks; ++c) {
        if (live_n) p.chunk_states[(bd * n_chunks + c) * n_state + lane] = h;
        const int t0 = c * chunk, t1 = min(t0 + chunk, len);
        for (int tw = t0; tw < t1; tw += SCAN_BWD_WIN, buf ^= 1) {
            __syncthreads();  // the previous window's readers of s_sc and buffer buf ^ 1 are done
            if (tw + SCAN_BWD_WIN < t1) fetch(tw + SCAN_BWD_WIN, t1, buf ^ 1);  // the next window
            else if (t1 < len) fetch(t1, min(t1 + chunk, len), buf ^ 1);      // the next chunk's first
            cp_async_commit();
            cp_async_wait<1>();  // this thread's copies of this window have landed
            const int wl = min(SCAN_BWD_WIN, t1 - tw);
            const bool ok = live && lane < wl;
            const float* rw = raw + buf * SCAN_RAW_FWD * THREADS + tid;
            float dt = 0.0f, ut = 0.0f, gate = 1.0f;
            if (ok) {
                const float x = rw[0] + bias;
                dt = softplus ? softplus_f(x) : x;
                ut = rw[THREADS];
                if (z) gate = rw[2 * THREADS] * sigmoid_f(rw[2 * THREADS]);
            }
            s_sc[ch][lane] = make_float2(dt, dt * ut);
            __syncthreads();  // s_sc and every thread's Bm, Cm rows are visible
            const float* wb = s_b + (buf * SCAN_BWD_LANES + lane) * ROW;
            const float* wc = s_c + (buf * SCAN_BWD_LANES + lane) * ROW;
            float v[SCAN_BWD_WIN];
#pragma unroll
            for (int i = 0; i < SCAN_BWD_WIN; ++i) {
                const float2 s = s_sc[ch][i];
                h = fmaf(exp2_ftz(s.x * a2), h, s.y * wb[i]);
                v[i] = wc[i] * h;
                if (i >= 8) transpose_pair<8>(v, i - 8, lane);
            }
            const float y = transpose_sum16_after8(v, lane) + dskip * ut;
            if (ok) p.out[row + tw + lane] = y * gate;
        }
    }
    if (live_n) p.last_state[bd * n_state + lane] = h;
}
