// Selective scan, forward v3 and backward v4 (the selected versions), on f32 or bf16 inputs: the
// CUDA twins of engine/src/ops/scan/cpu.rs (the math, layouts and earlier versions are in
// scan.cu; shared pieces in scan_common.cuh).
//
// The same work as backward v3 and forward
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
//
// bf16 inputs (`_bf16` kernels): u, delta, z are bf16, as are du, ddelta, dz; the (B, N, L) Bm,
// Cm (1% of the bytes), the state, A, D, delta_bias, init, out, dout, chunk_states and the
// other gradients stay f32, and every sum is made in f32. (The reference kernel's bf16 mode
// takes Bm, Cm in bf16 too; the op rounds them if given so.) A window's copy
// buffer keeps 4 bytes per element either way: a bf16 element is copied as the aligned 4-byte
// word that holds it (cp.async moves 4, 8 or 16 bytes), and its reader widens the half it
// needs with one byte permute (`scan_val`). Two lanes fetch each word, the same 32-byte
// sectors; the bytes from memory are halved, the shared memory and the arithmetic unchanged.
#include "scan_common.cuh"
#include "mma.cuh"  // cp.async, cvt.rn.bf16x2 (and their CPU twins under the emulator)

// A bf16 value is its bit pattern (as in matmul_bf16.cu); widening is exact, rounding is to
// nearest, ties to even (cvt.rn.bf16x2).
typedef unsigned short bf16_t;

__device__ __forceinline__ void scan_store(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void scan_store(bf16_t* dst, float v) { *dst = (bf16_t)(pack_bf16x2(v, 0.0f) & 0xffffu); }

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
// The bf16 at src as the aligned word holding it (never past that word: allocations are
// 4-byte multiples at 256-byte boundaries), or a zero word when !ok.
__device__ __forceinline__ void scan_copy(float* dst, const bf16_t* src, bool ok) {
    cp_async_4(smem_addr(dst), reinterpret_cast<const void*>(reinterpret_cast<unsigned long long>(src) & ~3ull), ok ? 4 : 0);
}

// The selector of __byte_perm(word, 0, sel) that moves the bf16 at address p (the low half of its
// word at a 4-byte boundary, else the high half) to the top of an f32's bits, zeros below: the
// f32 of equal value. 0 for f32 inputs.
template <typename X>
__device__ __forceinline__ unsigned scan_sel(const X* p) {
    if constexpr (sizeof(X) == 4) return 0u;
    else return (reinterpret_cast<unsigned long long>(p) & 2) ? 0x3244u : 0x1044u;
}
// The value in a copy-buffer slot: an f32 as it is, a bf16 widened with its selector.
template <typename X>
__device__ __forceinline__ float scan_val(float slot, unsigned sel) {
    if constexpr (sizeof(X) == 4) return slot;
    else return __uint_as_float(__byte_perm(__float_as_uint(slot), 0u, sel));
}

// Backward v4: scan_backward's algebra (see its comment) along the ScanWin walk, with window
// k + 1 copied while window k runs. Grid (ceil(D / CH), B), CH * 16 threads.
template <typename X, int CH>
__device__ __forceinline__ void scan_backward_pipelined(SCAN_BWD_PARAMS_OF(X)) {
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
        const long long t = row + tw + lane;  // this lane's step
        if (cur.w == 0 && cur.adj == (scan_windows(cur.c, len, chunk) < 2))  // a chunk begins
            s_ck[tid] = rw[4 * THREADS];
        // This thread's own step: dt and friends, as scan_backward's stage (dt, u and dy stay
        // in s_sc for the outputs at the window's end, out of the registers of the loops).
        float o_sig = 0.0f, o_u = 0.0f, o_dy = 0.0f, o_gz = 0.0f, dt = 0.0f;
        if (ok) {
            const float x = scan_val<X>(rw[0], scan_sel(delta + t)) + s_par[ch].x;
            dt = softplus ? softplus_f(x) : x;
            o_u = scan_val<X>(rw[THREADS], scan_sel(u + t));
            if (cur.adj) {
                o_sig = softplus ? sigmoid_f(x) : 1.0f;
                const float g = rw[2 * THREADS];
                if (z) {
                    const float zt = scan_val<X>(rw[3 * THREADS], scan_sel(z + t)), s = sigmoid_f(zt);
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
        if (z) {
            const float y = transpose_sum16_after8(v, lane) + s_par[ch].y * s_sc[ch][lane].w;
            if (ok) scan_store(dz + t, y * o_gz);
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
            scan_store(du + t, fmaf(s_par[ch].y, own.z, own.x * s_sum));
            const float g = (p_sum + own.w * s_sum) * o_sig;
            scan_store(ddelta + t, g);
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
    scan_backward_pipelined<float, 16>(SCAN_BWD_ARGS);
}
// The same on bf16 u, delta, z (the struct's u, delta, z, du, ddelta, dz hold bf16 buffers);
// then selective_scan_backward_reduce_f32 (dBm, dCm are f32).
extern "C" __global__ void __launch_bounds__(2 * SCAN_BWD_THREADS, SCAN_BWD_V4_BLOCKS) selective_scan_backward_v4_bf16(const __grid_constant__ ScanBackwardParams p) {
    scan_backward_pipelined<bf16_t, 16>(SCAN_BWD_ARGS_OF(bf16_t));
}

// Forward v3: forward v2's block layout and arithmetic (see its comment), with window k + 1's
// delta, u, z and Bm, Cm rows copied while window k runs. Windows start at every chunk start,
// in order. Grid (ceil(D / 8), B), 128 threads, dynamic shared memory
// scan_smem_floats(true, 128, chunk) floats.
#ifndef SCAN_FWD_V3_BLOCKS
#define SCAN_FWD_V3_BLOCKS 10  // blocks per SM the registers must allow
#endif
template <typename X>
__device__ __forceinline__ void scan_forward_pipelined(const ScanForwardParams& p) {
    constexpr int THREADS = SCAN_BWD_THREADS, ROW = SCAN_BWD_WIN + 1;
    const X* __restrict__ delta = reinterpret_cast<const X*>(p.delta);
    const X* __restrict__ u = reinterpret_cast<const X*>(p.u);
    const X* __restrict__ z = reinterpret_cast<const X*>(p.z);
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
            const long long t = row + tw + lane;  // this lane's step
            float dt = 0.0f, ut = 0.0f, gate = 1.0f;
            if (ok) {
                const float x = scan_val<X>(rw[0], scan_sel(delta + t)) + bias;
                dt = softplus ? softplus_f(x) : x;
                ut = scan_val<X>(rw[THREADS], scan_sel(u + t));
                if (z) {
                    const float zt = scan_val<X>(rw[2 * THREADS], scan_sel(z + t));
                    gate = zt * sigmoid_f(zt);
                }
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
            if (ok) p.out[t] = y * gate;
        }
    }
    if (live_n) p.last_state[bd * n_state + lane] = h;
}
extern "C" __global__ void __launch_bounds__(SCAN_BWD_THREADS, SCAN_FWD_V3_BLOCKS)
    selective_scan_forward_v3_f32(const __grid_constant__ ScanForwardParams p) {
    scan_forward_pipelined<float>(p);
}
// The same on bf16 u, delta, z (the struct's pointers hold bf16 buffers); out is f32.
extern "C" __global__ void __launch_bounds__(SCAN_BWD_THREADS, SCAN_FWD_V3_BLOCKS)
    selective_scan_forward_v3_bf16(const __grid_constant__ ScanForwardParams p) {
    scan_forward_pipelined<bf16_t>(p);
}
