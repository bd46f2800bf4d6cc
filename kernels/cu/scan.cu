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
// Forward v3 and backward v4, the selected versions, are v2 and v3 with the next window's inputs
// in flight, on f32 or bf16 inputs: scan_pipelined.cuh, included at the end of this file.

#define SCAN_THREADS 128

#include "scan_common.cuh"

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

// The body of the backward kernels. KEEP_E: keep the window's decays e_t from the replay in
// registers for the adjoint (152 registers, 3 blocks per SM); otherwise recompute them (one
// more exp per element, 128 registers, 4 blocks per SM). CH: channels per block (8 or 16; 16
// halves the partials). Which is faster is for the GPU to say.
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
// (Backward v4 on bf16 inputs uses it too: its dBm, dCm are f32.)
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

// Forward v3 and backward v4 (the selected versions), on f32 or bf16 inputs.
#include "scan_pipelined.cuh"
