// Embedding lookup (f32): the CUDA twins of engine/src/ops/embedding/cpu.rs (`embedding_forward`,
// `embedding_backward`). w / dw (V, D), ids (N) int64, y / dy (N, D), all contiguous.
//   y[n, :] = w[ids[n], :],    dw[v, :] = sum over n with ids[n] == v of dy[n, :]
// Every id must be in [0, V): the kernels do not check (the CPU twin panics instead).
//
// Napkin math at the LM's shape N = 16384, V = 256, D = 768 (f32):
//   forward  reads ids (131 KB) + the gathered w rows (<= 50 MB, but w is only 786 KB, so
//            after the first touch rows come from L2) and writes y (50.3 MB): no FLOPs,
//            floor ~50 MB / ~3 TB/s -> ~17 us. One thread per output element, grid-stride.
//   backward writes dw (786 KB) and reads every dy row once (50.3 MB, floor ~17 us), but
//            each block also scans all N ids: grid (V, ceil(D/256)) = 768 blocks x 16384
//            ids = 12.6 M id loads (100 MB of mostly-L2 traffic, one coalesced 2 KB tile per
//            256 ids) plus a ballot/prefix per tile. That scan is O(V N), so this design
//            is for small vocabularies (the byte-level LM's V = 256); a large V wants a sort.
//
// Backward is deterministic without atomics: block (v, cy) owns dw[v, cy*256 .. +256]. It
// walks ids in tiles of 256; in each tile the positions with ids[m] == v are compacted, in
// increasing m, into shared memory (warp ballots + a prefix over the 8 warp counts), then
// each thread adds dy[m, col] for those m in order. The sum runs in the same order as the
// CPU twin's (increasing n, f32, starting from 0), so dw matches it exactly. Rows no id
// names are written as zeros.

#define INDEX_THREADS 256

// The kernels' parameters: `Embedding*Params` in launch/embedding.rs, same fields.
struct EmbeddingForwardParams {
    float* y;                // (n, d)
    const float* w;          // (v, d)
    const long long* ids;    // (n)
    int n, d;
};
static_assert(sizeof(EmbeddingForwardParams) == 32, "EmbeddingForwardParams: launch/embedding.rs has 32 bytes");

struct EmbeddingBackwardParams {
    float* dw;               // (v, d)
    const float* dy;         // (n, d)
    const long long* ids;    // (n)
    int n, v, d;
    int pad_;
};
static_assert(sizeof(EmbeddingBackwardParams) == 40, "EmbeddingBackwardParams: launch/embedding.rs has 40 bytes");

// Grid-stride over n*d outputs.
extern "C" __global__ void __launch_bounds__(INDEX_THREADS) embedding_forward_f32(const __grid_constant__ EmbeddingForwardParams p) {
    float* __restrict__ y = p.y;
    const float* __restrict__ w = p.w;
    const long long* __restrict__ ids = p.ids;
    const int n = p.n, d = p.d;
    const long long total = (long long)n * d;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long row = i / d;
        const int col = (int)(i - row * d);
        y[i] = w[ids[row] * d + col];
    }
}

// Grid (v, ceil(d / INDEX_THREADS)), block INDEX_THREADS. ids and dy are read with __ldg
// (ld.global.nc), which nvcc inferred from __restrict__ kernel parameters but does not from
// pointers in a parameter struct.
extern "C" __global__ void __launch_bounds__(INDEX_THREADS) embedding_backward_f32(const __grid_constant__ EmbeddingBackwardParams p) {
    float* __restrict__ dw = p.dw;
    const float* __restrict__ dy = p.dy;
    const long long* __restrict__ ids = p.ids;
    const int n = p.n, v = p.v, d = p.d;
    __shared__ int match[INDEX_THREADS];
    __shared__ int warp_count[INDEX_THREADS / 32];
    const int row = blockIdx.x;
    if (row >= v) return;  // whole block: the barriers below stay uniform
    const int col = blockIdx.y * INDEX_THREADS + threadIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float acc = 0.0f;
    for (int base = 0; base < n; base += INDEX_THREADS) {
        const int m = base + threadIdx.x;
        const bool hit = m < n && __ldg(ids + m) == (long long)row;
        const unsigned ballot = __ballot_sync(0xffffffffu, hit);
        if (lane == 0) warp_count[warp] = __popc(ballot);
        __syncthreads();
        int offset = 0, total = 0;
        for (int q = 0; q < warps; ++q) {
            const int cnt = warp_count[q];
            offset += q < warp ? cnt : 0;
            total += cnt;
        }
        if (hit) match[offset + __popc(ballot & ((1u << lane) - 1u))] = m;
        __syncthreads();
        if (col < d)
            for (int i = 0; i < total; ++i) acc += __ldg(dy + (long long)match[i] * d + col);
        __syncthreads();  // match and warp_count are rewritten by the next tile
    }
    if (col < d) dw[(long long)row * d + col] = acc;
}
