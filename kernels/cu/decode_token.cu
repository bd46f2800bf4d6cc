// One token of a Mamba-1 LM in ONE persistent kernel: decode_token_f32 (f32 weights) and
// decode_token_bf16 (in_proj, x_proj, out_proj and the embedding in bf16, everything else f32,
// all sums in f32). The CPU twin of both is `ops::decode::cpu::decode_token` (the decode.cu
// twins in sequence; for bf16 weights, on the weights rounded to bf16).
//
// Why. At batch 1 a token is a chain of matrix-vector products whose floor is reading every
// weight once (d_model 768 x 24: 363 MB in f32, ~75 us at ~4.8 TB/s). The four kernels a layer
// of decode.cu reach ~20% of that: each dependent launch costs a few microseconds of latency
// (launch, wait for the previous grid, a round trip for its input) on top of its bytes.
// Here one block per SM lives for the whole token; the layers' phases are separated by grid
// barriers (~1 us each), and every block copies the weight slices of its NEXT phase into
// shared memory (cp.async) while the current phase and the barrier run, so the weights stream
// at the bandwidth while the chain of phases pays only latency.
//
// Per layer (M d_model, D d_inner, N d_state, R dt_rank, K d_conv, X = R + 2N), G blocks:
//
//   A  block g owns in_proj rows [g ra, g ra + ra) (ra divides D, so a block is all x or all z):
//      u = RMSNorm(r) ; v = in_proj u ; x rows: conv window <- v, xc = silu(conv_w . window +
//      conv_b), and the block's share of x_proj: xpart[g] = x_proj[:, its channels] xc[its
//      channels] ; z rows: z = v.
//   B  block g owns channels [g cb, g cb + cb): xdbl = sum over g' of xpart[g'] (in order: no
//      atomics, the result repeats bit for bit) ; dt = softplus(dt_w xdbl[:R] + dt_b) ;
//      s = exp(dt A) s + dt B xc ; y = (C . s + D xc) silu(z).
//   C  block g owns out_proj rows [g rc, g rc + rc): r += out_proj y.
//
// then the head (block g: rows [g rh, ..) of logits = embedding RMSNorm_f(r)). Before layer 0,
// r = embedding[ids]. 1 + 3 L grid barriers a token.
//
// Shared memory (offsets from the launcher, launch/decode_token.rs, one place for the layout):
//   sa   phase A's weights: in_proj rows (ra x M, W), x_proj columns (X x ra, W), conv_w rows
//        (ra x K), conv_b (ra), norm_w (M); the head's rows (rh x M, W) and norm_f after the
//        last layer
//   sb   phase B's: dt_w rows (cb x R), A rows (cb x N), dt_b (cb), D (cb)
//   sc   phase C's: out_proj rows (rc x D, W)
//   act  the staged input (bt x max(M, D)), xdbl (bt x X), this block's xc (bt x ra), the
//        dot products (max rows x bt)
// The copies: during A(l) the block queues sc for C(l); during B(l) sa for A(l+1) (or the
// head); during C(l) sb for B(l+1); each phase's barrier waits for its own group
// (cp.async.wait_group 1: the one queued after it may still run). A phase queues its copies
// only once its own inputs have arrived: queued first, 10 MB of copies stand in the memory
// queues in front of the phase's few loads (measured: microseconds a phase).
//
// Every activation another block wrote is read with __ldcg (L2; L1 is not coherent across
// SMs), after the barrier's acquire.

#include "reduce.cuh"

#define TOKEN_THREADS 512
#define TOKEN_WARPS (TOKEN_THREADS / 32)
#define TOKEN_BT 8    // batch rows at most
#define TOKEN_KMAX 8  // d_conv at most
#ifndef TOKEN_SKIP
#define TOKEN_SKIP 0  // kernels/tools/token_bench.cu times variants: bit 0, 1, 2 skip phase A, B, C
#endif

// One layer's tensors (`TokenLayer` in launch/decode_token.rs, same fields): 96 bytes.
struct TokenLayer {
    const void* in_proj;   // (2D, M) W
    const void* x_proj;    // (X, D) W
    const void* out_proj;  // (M, D) W
    const float* norm_w;   // (M)
    const float* conv_w;   // (D, K)
    const float* conv_b;   // (D)
    const float* dt_w;     // (D, R)
    const float* dt_b;     // (D)
    const float* a;        // (D, N)  A = -exp(A_log)
    const float* d_skip;   // (D)
    float* conv_state;     // (B, D, K) the last K conv inputs, oldest first
    float* ssm_state;      // (B, D, N)
};
static_assert(sizeof(TokenLayer) == 96, "TokenLayer: launch/decode_token.rs has 96 bytes");

struct DecodeTokenParams {
    const TokenLayer* layers;  // (n_layers)
    float* residual;           // (B, M)
    float* xc;                 // (B, D)
    float* z;                  // (B, D)
    float* y;                  // (B, D)
    float* xpart;              // (B, X, gx) phase A's x_proj partials
    float* logits;             // (B, V)
    const float* ids;          // (B) token ids as floats
    const void* embedding;     // (V, M) W
    const float* norm_f;       // (M)
    unsigned* barrier;         // zero at launch; counts arrivals
    int n_layers, batch, m, d, n, r, k, vocab;
    int ra, cb, rc, rh;        // rows (channels) per block in A, B, C, the head
    int gx;                    // blocks of phase A that hold x rows: D / ra
    float eps;
    int sa, sb, sc, act;       // shared-memory offsets in bytes
};
static_assert(sizeof(DecodeTokenParams) == 160, "DecodeTokenParams: launch/decode_token.rs has 160 bytes");

// ------------------------------------------------------------------ weights as f32 or bf16

// Four weights from shared memory, widened to f32.
__device__ __forceinline__ float4 token_w4(const float* w, int q) { return reinterpret_cast<const float4*>(w)[q]; }
// bf16 weights are their bit patterns (the upper 16 bits of an f32), as the engine stores them.
typedef unsigned short token_bf16;
__device__ __forceinline__ float4 token_w4(const token_bf16* w, int q) {
    const uint2 v = reinterpret_cast<const uint2*>(w)[q];  // 4 bf16: the upper 16 bits of 4 floats
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xffff0000u));
}
__device__ __forceinline__ float token_w1(const float* w, long long i) { return w[i]; }
__device__ __forceinline__ float token_w1(const token_bf16* w, long long i) { return __uint_as_float((unsigned)w[i] << 16); }

// ------------------------------------------------------------------ copies and the barrier

#ifdef TOKEN_TRACE
// kernels/tools/token_bench.cu's timeline: thread 0 of each block stamps %globaltimer at
// every step of the token into token_trace[block][step].
__device__ unsigned long long* token_trace;
__device__ int token_trace_steps;
#define TOKEN_STAMP(step)                                                                          \
    do {                                                                                           \
        if (threadIdx.x == 0 && token_trace) {                                                    \
            unsigned long long now;                                                                \
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));                                \
            token_trace[(long long)blockIdx.x * token_trace_steps + (step)] = now;                  \
        }                                                                                          \
    } while (0)
#else
#define TOKEN_STAMP(step) \
    do {                  \
    } while (0)
#endif

// Queue a copy of `bytes` (a multiple of 16, both ends 16-byte aligned) into shared memory.
// Warp 0 copies nothing: its thread 0 runs the grid barrier, whose fence would otherwise wait
// for its copies in flight.
__device__ __forceinline__ void token_copy(void* dst, const void* src, int bytes) {
    const unsigned base = (unsigned)__cvta_generic_to_shared(dst);
#ifdef TOKEN_SKIP_COPIES  // token_bench.cu: the timing without the weights' traffic
    return;
#endif
    if (threadIdx.x < 32) return;
    for (int i = (threadIdx.x - 32) * 16; i < bytes; i += (TOKEN_THREADS - 32) * 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(base + i), "l"((const char*)src + i));
}
// No "memory" clobber on the copies: it would make the compiler reload every value it holds
// from memory after each one. The buffers a copy fills are read only after the barrier that
// follows its wait_group, and refilled only after the barrier that ends their readers.

// Queue `rows` rows of `row_bytes` each (both multiples of 16) from src (row stride
// `src_stride` bytes) into consecutive rows at dst.
__device__ __forceinline__ void token_copy_rows(void* dst, const void* src, int rows, int row_bytes, long long src_stride) {
#ifdef TOKEN_SKIP_COPIES
    return;
#endif
    if (threadIdx.x < 32) return;
    const unsigned base = (unsigned)__cvta_generic_to_shared(dst);
    const int chunks = row_bytes / 16;
    for (int i = threadIdx.x - 32; i < rows * chunks; i += TOKEN_THREADS - 32) {
        const int row = i / chunks, c = i % chunks;
        const char* from = (const char*)src + row * src_stride + c * 16;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(base + row * row_bytes + c * 16), "l"(from));
    }
}
__device__ __forceinline__ void token_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// The grid barrier between phases: every block's writes so far become visible to every block
// (release / acquire at GPU scope, as cooperative groups' grid sync), and this block's copy
// group for the phase that follows has landed (the one group queued after it may still run).
__device__ __forceinline__ void token_sync(unsigned* bar, unsigned& target, int step = 0) {
    TOKEN_STAMP(step);
    __syncthreads();  // the phase before is done in this block (its writes, its smem reads)
    target += gridDim.x;
    if (threadIdx.x == 0) {
        __threadfence();
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
    }
    asm volatile("cp.async.wait_group 1;" ::: "memory");
    TOKEN_STAMP(step + 1);
    if (threadIdx.x == 0) {
        unsigned seen;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(bar) : "memory");
        } while (seen < target);
        __threadfence();
    }
    __syncthreads();
    TOKEN_STAMP(step + 2);
}

// ------------------------------------------------------------------ block-wide pieces

// Stage rows b < bt of x (B, cols) into u (bt, cols) times norm_w (shared) / rms(row).
// rs is scratch for the bt scales.
__device__ __forceinline__ void token_stage_norm(float* u, float* rs, const float* x, const float* norm_w, int bt,
                                                 int cols, float eps) {
    for (int i = threadIdx.x; i < bt * cols / 4; i += TOKEN_THREADS)
        reinterpret_cast<float4*>(u)[i] = __ldcg(reinterpret_cast<const float4*>(x) + i);
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (warp < bt) {
        float ss = 0.0f;
        for (int c = lane; c < cols; c += 32) ss = fmaf(u[warp * cols + c], u[warp * cols + c], ss);
        ss = warp_sum(ss);
        if (lane == 0) rs[warp] = rsqrtf(ss / (float)cols + eps);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < bt * cols; i += TOKEN_THREADS) u[i] *= rs[i / cols] * norm_w[i % cols];
    __syncthreads();
}

// res[i * bt + b] = w[i] . u[b] for rows i < nr of w (nr, cols) in shared memory and u (bt,
// cols) in shared memory (cols % 4 == 0). `split` warps share a row when the rows are fewer than
// the warps; their partials meet in red. Ends with a barrier: res is ready.
template <typename W>
__device__ __forceinline__ void token_rows(const W* w, int nr, int cols, const float* u, int bt, float* res,
                                           float (*red)[TOKEN_BT]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = cols / 4;
    int split = 1;
    while (split < TOKEN_WARPS && nr * split * 2 <= TOKEN_WARPS && c4 >= 64 * split) split *= 2;
    const int part = warp % split, step = 32 * split;
    for (int i = warp / split; i < nr; i += TOKEN_WARPS / split) {
        float acc[TOKEN_BT];
#pragma unroll
        for (int b = 0; b < TOKEN_BT; b++) acc[b] = 0.0f;
        const W* row = w + (long long)i * cols;
#pragma unroll 1  // unrolled, the 8 batch rows' loads in flight spill past the 128 registers of 512 threads
        for (int q = part * 32 + lane; q < c4; q += step) {
            const float4 wq = token_w4(row, q);
#pragma unroll
            for (int b = 0; b < TOKEN_BT; b++) {
                if (b < bt) {
                    const float4 x = reinterpret_cast<const float4*>(u + b * cols)[q];
                    acc[b] = fmaf(wq.x, x.x, fmaf(wq.y, x.y, fmaf(wq.z, x.z, fmaf(wq.w, x.w, acc[b]))));
                }
            }
        }
#pragma unroll
        for (int b = 0; b < TOKEN_BT; b++) {
            if (b < bt) {
                const float v = warp_sum(acc[b]);
                if (lane == 0) {
                    if (split == 1) res[i * bt + b] = v;
                    else red[warp][b] = v;
                }
            }
        }
    }
    __syncthreads();
    if (split > 1) {  // then every row had one pass: combine its split partials in order
        const int t = threadIdx.x;
        if (t < nr * bt) {
            const int i = t / bt, b = t % bt;
            float v = 0.0f;
            for (int s = 0; s < split; s++) v += red[i * split + s][b];
            res[i * bt + b] = v;
        }
        __syncthreads();
    }
}

__device__ __forceinline__ float token_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float token_silu(float x) { return x / (1.0f + expf(-x)); }

// ------------------------------------------------------------------ the phases' copies

extern __shared__ __align__(16) char token_smem_raw[];  // the layout below

template <typename W>
struct TokenSmem {
    W* in_w;       // (ra, M)
    W* xw;         // (X, ra)
    float* cw;     // (ra, K)
    float* cbias;  // (ra)
    float* nw;     // (M)
    float* dtw;    // (cb, R)
    float* av;     // (cb, N)
    float* dtb;    // (cb)
    float* dsk;    // (cb)
    W* out_w;      // (rc, D)
    float* u;      // (bt, max(M, D))
    float* xdbl;   // (bt, X)
    float* xcs;    // (bt, ra)
    float* res;    // (max(ra, rc, rh), bt)
};

template <typename W>
__device__ __forceinline__ TokenSmem<W> token_smem(const DecodeTokenParams& p, char* s) {
    const int x = p.r + 2 * p.n, bt = p.batch;
    TokenSmem<W> t;
    t.in_w = reinterpret_cast<W*>(s + p.sa);
    t.xw = t.in_w + p.ra * p.m;
    t.cw = reinterpret_cast<float*>(t.xw + x * p.ra);  // 16-byte aligned: ra % 8 == 0
    t.cbias = t.cw + p.ra * p.k;
    t.nw = t.cbias + p.ra;
    t.dtw = reinterpret_cast<float*>(s + p.sb);
    t.av = t.dtw + p.cb * p.r;
    t.dtb = t.av + p.cb * p.n;
    t.dsk = t.dtb + p.cb;
    t.out_w = reinterpret_cast<W*>(s + p.sc);
    t.u = reinterpret_cast<float*>(s + p.act);
    t.xdbl = t.u + bt * max(p.m, p.d);
    t.xcs = t.xdbl + bt * x;
    t.res = t.xcs + bt * p.ra;
    return t;
}

// Phase A's weights of `layer` for block g (its in_proj rows; x_proj columns, conv and norm).
template <typename W>
__device__ __forceinline__ void token_issue_a(const DecodeTokenParams& p, const TokenSmem<W>& s, const TokenLayer& L) {
    const int g = blockIdx.x, r0 = g * p.ra, x = p.r + 2 * p.n;
    if (r0 >= 2 * p.d) return;
    const int nr = min(p.ra, 2 * p.d - r0);
    token_copy(s.in_w, static_cast<const W*>(L.in_proj) + (long long)r0 * p.m, nr * p.m * (int)sizeof(W));
    token_copy(s.nw, L.norm_w, p.m * 4);
    if (r0 >= p.d) return;
    const int wb = (int)sizeof(W);  // x_proj's columns of this block: X rows of ra each
    token_copy_rows(s.xw, static_cast<const W*>(L.x_proj) + r0, x, p.ra * wb, (long long)p.d * wb);
    token_copy(s.cw, L.conv_w + (long long)r0 * p.k, p.ra * p.k * 4);
    token_copy(s.cbias, L.conv_b + r0, p.ra * 4);
}

// The head's rows for block g, and norm_f, into sa.
template <typename W>
__device__ __forceinline__ void token_issue_head(const DecodeTokenParams& p, const TokenSmem<W>& s) {
    const int v0 = blockIdx.x * p.rh;
    if (v0 >= p.vocab) return;
    const int nr = min(p.rh, p.vocab - v0);
    token_copy(s.in_w, static_cast<const W*>(p.embedding) + (long long)v0 * p.m, nr * p.m * (int)sizeof(W));
    token_copy(s.nw, p.norm_f, p.m * 4);
}

template <typename W>
__device__ __forceinline__ void token_issue_b(const DecodeTokenParams& p, const TokenSmem<W>& s, const TokenLayer& L) {
    const int c0 = blockIdx.x * p.cb;
    if (c0 >= p.d) return;
    const int nc = min(p.cb, p.d - c0);
    token_copy(s.dtw, L.dt_w + (long long)c0 * p.r, nc * p.r * 4);
    token_copy(s.av, L.a + (long long)c0 * p.n, nc * p.n * 4);
    token_copy(s.dtb, L.dt_b + c0, nc * 4);
    token_copy(s.dsk, L.d_skip + c0, nc * 4);
}

template <typename W>
__device__ __forceinline__ void token_issue_c(const DecodeTokenParams& p, const TokenSmem<W>& s, const TokenLayer& L) {
    const int m0 = blockIdx.x * p.rc;
    if (m0 >= p.m) return;
    const int nr = min(p.rc, p.m - m0);
    token_copy(s.out_w, static_cast<const W*>(L.out_proj) + (long long)m0 * p.d, nr * p.d * (int)sizeof(W));
}

// ------------------------------------------------------------------ the phases

template <typename W, typename Issue>
__device__ void token_phase_a(const DecodeTokenParams& p, const TokenSmem<W>& s, const TokenLayer& L,
                              float (*red)[TOKEN_BT], Issue issue) {
    __shared__ float rs[TOKEN_BT];
    const int g = blockIdx.x, r0 = g * p.ra, bt = p.batch, x = p.r + 2 * p.n, k = p.k, t = threadIdx.x;
    if (r0 >= 2 * p.d) return issue();
    const int nr = min(p.ra, 2 * p.d - r0);
    // the epilogue's thread (row t / bt, batch row t % bt) of an x row loads its conv window
    // now, while the residual is staged
    const bool conv = r0 < p.d && t < nr * bt;
    float* st = L.conv_state + ((long long)(t % bt) * p.d + r0 + t / bt) * k;
    float win[TOKEN_KMAX];
#pragma unroll
    for (int j = 0; j < TOKEN_KMAX; j++) win[j] = conv && j + 1 < k ? st[j + 1] : 0.0f;
    token_stage_norm(s.u, rs, p.residual, s.nw, bt, p.m, p.eps);
    issue();
    token_rows(s.in_w, nr, p.m, s.u, bt, s.res, red);
    if (r0 >= p.d) {  // z rows
        if (t < nr * bt) p.z[(long long)(t % bt) * p.d + r0 - p.d + t / bt] = s.res[t];
        return;
    }
    if (conv) {  // x rows: the window slides by one, xc = silu(conv)
        const int i = t / bt, b = t % bt;
        const float v = s.res[t];
        float acc = s.cbias[i];
#pragma unroll
        for (int j = 0; j < TOKEN_KMAX; j++) {
            if (j + 1 < k) {
                st[j] = win[j];
                acc = fmaf(s.cw[i * k + j], win[j], acc);
            }
        }
        st[k - 1] = v;
        const float xc = token_silu(fmaf(s.cw[i * k + k - 1], v, acc));
        p.xc[(long long)b * p.d + r0 + i] = xc;
        s.xcs[b * p.ra + i] = xc;
    }
    __syncthreads();
    for (int j = t; j < x * bt; j += TOKEN_THREADS) {  // this block's share of x_proj
        const int b = j / x, o = j % x;
        float acc = 0.0f;
        for (int i = 0; i < nr; i++) acc = fmaf(token_w1(s.xw, o * p.ra + i), s.xcs[b * p.ra + i], acc);
        p.xpart[(long long)j * p.gx + g] = acc;  // (B X, gx): phase B reads a row coalesced
    }
}

template <typename W, typename Issue>
__device__ __forceinline__ void token_phase_b(const DecodeTokenParams& p, const TokenLayer& L, Issue issue, int at) {
    // Every field read once into a register (`L` is in global memory, which a store could
    // alias: a use inside a loop would reload it, a round trip each time).
    const TokenSmem<W> s = token_smem<W>(p, token_smem_raw);
    const int d = p.d, n = p.n, r = p.r, bt = p.batch, gx = p.gx, x = r + 2 * n, t = threadIdx.x;
    const int c0 = blockIdx.x * p.cb, nc = min(p.cb, d - c0), warp = t >> 5, lane = t & 31;
    float* const state_g = L.ssm_state;
    const float* const xpart = p.xpart;
    const float* const xc_g = p.xc;
    const float* const z_g = p.z;
    float* const y_g = p.y;
    if (c0 >= d) return issue();
    // Everything this block reads, issued at once (one round trip, not one per dependent use):
    // its states, xc and z into shared memory, and the x_proj partials.
    float* st = s.u;               // (bt, nc, n)
    float* xs = st + bt * nc * n;  // (bt, nc)
    float* zs = xs + bt * nc;      // (bt, nc)
    for (int i = t; i < bt * nc * n; i += TOKEN_THREADS)
        st[i] = state_g[((long long)(i / (nc * n)) * d + c0) * n + i % (nc * n)];
    for (int i = t; i < bt * nc; i += TOKEN_THREADS) {
        const long long bc = (long long)(i / nc) * d + c0 + i % nc;
        xs[i] = __ldcg(xc_g + bc);
        zs[i] = __ldcg(z_g + bc);
    }
    TOKEN_STAMP(at + 9);
    // xdbl = the partials summed in block order (lanes take blocks g, g + 32, ..., then the
    // butterfly: the same order every token): a warp takes 8 outputs at once. Every block
    // reads all partials, so they are stored output-major: a warp's loads of one output are
    // one coalesced row (block-major, each lane's load was its own L2 request, 655k of them
    // at d_model 768 on the few L2 slices that hold them: ~10 us a layer).
    for (int j0 = warp * 8; j0 < x * bt; j0 += TOKEN_WARPS * 8) {
        float acc[8];
#pragma unroll
        for (int u = 0; u < 8; u++) acc[u] = 0.0f;
        for (int g = lane; g < gx; g += 32) {
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (j0 + u < x * bt) acc[u] += __ldcg(xpart + (long long)(j0 + u) * gx + g);
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const float v = warp_sum(acc[u]);
            if (lane == 0 && j0 + u < x * bt) s.xdbl[j0 + u] = v;
        }
    }
    TOKEN_STAMP(at + 10);
    issue();
    __syncthreads();
    // 16 lanes a (channel, batch row); state index q = l, l + 16, ... The two 16-lane groups of
    // a warp take pairs j, j + 1 of an even count (nc % 4 == 0), so both run every shuffle.
    const int l = t & 15;
    for (int j = t >> 4; j < nc * bt; j += TOKEN_THREADS / 16) {
        const int i = j / bt, b = j % bt;
        const float* xd = s.xdbl + b * x;
        float dt = 0.0f;
        for (int q = l; q < r; q += 16) dt = fmaf(s.dtw[i * r + q], xd[q], dt);
        for (int o = 8; o > 0; o >>= 1) dt += __shfl_xor_sync(0xffffffffu, dt, o);
        dt = token_softplus(dt + s.dtb[i]);
        const float xv = xs[b * nc + i];
        float* state = state_g + ((long long)b * d + c0 + i) * n;
        float yv = 0.0f;
        for (int q = l; q < n; q += 16) {
            const float v = expf(dt * s.av[i * n + q]) * st[(b * nc + i) * n + q] + dt * xd[r + q] * xv;
            state[q] = v;
            yv = fmaf(xd[r + n + q], v, yv);
        }
        for (int o = 8; o > 0; o >>= 1) yv += __shfl_xor_sync(0xffffffffu, yv, o);
        if (l == 0) y_g[(long long)b * d + c0 + i] = (yv + s.dsk[i] * xv) * token_silu(zs[b * nc + i]);
    }
    TOKEN_STAMP(at + 11);
}

template <typename W, typename Issue>
__device__ void token_phase_c(const DecodeTokenParams& p, const TokenSmem<W>& s, float (*red)[TOKEN_BT], Issue issue) {
    const int m0 = blockIdx.x * p.rc, bt = p.batch;
    if (m0 >= p.m) return issue();
    const int nr = min(p.rc, p.m - m0), t = threadIdx.x;
    // this block's rows of r, loaded with y (embed wrote them from another block: L2)
    float* o = p.residual + (long long)(t % bt) * p.m + m0 + t / bt;
    const float old = t < nr * bt ? __ldcg(o) : 0.0f;
    for (int i = t; i < bt * p.d / 4; i += TOKEN_THREADS)
        reinterpret_cast<float4*>(s.u)[i] = __ldcg(reinterpret_cast<const float4*>(p.y) + i);
    issue();
    __syncthreads();
    token_rows(s.out_w, nr, p.d, s.u, bt, s.res, red);
    if (t < nr * bt) *o = old + s.res[t];
}

template <typename W>
__device__ void token_head(const DecodeTokenParams& p, const TokenSmem<W>& s, float (*red)[TOKEN_BT]) {
    __shared__ float rs[TOKEN_BT];
    const int v0 = blockIdx.x * p.rh, bt = p.batch;
    if (v0 >= p.vocab) return;
    const int nr = min(p.rh, p.vocab - v0);
    token_stage_norm(s.u, rs, p.residual, s.nw, bt, p.m, p.eps);
    token_rows(s.in_w, nr, p.m, s.u, bt, s.res, red);
    const int t = threadIdx.x;
    if (t < nr * bt) p.logits[(long long)(t % bt) * p.vocab + v0 + t / bt] = s.res[t];
}

template <typename W>
__device__ void token_body(const DecodeTokenParams& p) {
    __shared__ float red[TOKEN_WARPS][TOKEN_BT];
    const TokenSmem<W> s = token_smem<W>(p, token_smem_raw);
    const TokenLayer* layers = p.layers;
    unsigned target = 0;
    token_issue_a<W>(p, s, layers[0]);
    token_commit();
    token_issue_b<W>(p, s, layers[0]);
    token_commit();
    // r = embedding[ids], every block a share
    for (int i = blockIdx.x * TOKEN_THREADS + threadIdx.x; i < p.batch * p.m; i += gridDim.x * TOKEN_THREADS) {
        const int b = i / p.m, j = i % p.m;
        const int id = min(max((int)p.ids[b], 0), p.vocab - 1);
        p.residual[i] = token_w1(static_cast<const W*>(p.embedding), (long long)id * p.m + j);
    }
    for (int l = 0; l < p.n_layers; l++) {
        const TokenLayer& L = layers[l];
        // each phase queues the copies for a later one once its own inputs have arrived: the
        // bulk copies must not stand in the memory queues in front of the phase's loads
        auto issue_c = [&] { token_issue_c<W>(p, s, L); token_commit(); };
        auto issue_a = [&] {
            if (l + 1 < p.n_layers) token_issue_a<W>(p, s, layers[l + 1]);
            else token_issue_head<W>(p, s);
            token_commit();
        };
        auto issue_b = [&] {
            if (l + 1 < p.n_layers) token_issue_b<W>(p, s, layers[l + 1]);
            token_commit();
        };
        const int at = 12 * l;  // trace steps: per phase, arrive / copies landed / released
        token_sync(p.barrier, target, at);
#if !(TOKEN_SKIP & 1)
        token_phase_a<W>(p, s, L, red, issue_c);
#else
        issue_c();
#endif
        token_sync(p.barrier, target, at + 3);
#if !(TOKEN_SKIP & 2)
        token_phase_b<W>(p, L, issue_a, at);
#else
        issue_a();
#endif
        token_sync(p.barrier, target, at + 6);
#if !(TOKEN_SKIP & 4)
        token_phase_c<W>(p, s, red, issue_b);
#else
        issue_b();
#endif
    }
    token_sync(p.barrier, target, 12 * p.n_layers);
    token_head<W>(p, s, red);
    TOKEN_STAMP(12 * p.n_layers + 3);
}

// Grid: one block per SM (a cooperative launch, so all are resident), block 512, dynamic
// shared memory from the launcher.
extern "C" __global__ void __launch_bounds__(TOKEN_THREADS, 1) decode_token_f32(const __grid_constant__ DecodeTokenParams p) {
    token_body<float>(p);
}
extern "C" __global__ void __launch_bounds__(TOKEN_THREADS, 1) decode_token_bf16(const __grid_constant__ DecodeTokenParams p) {
    token_body<token_bf16>(p);
}
