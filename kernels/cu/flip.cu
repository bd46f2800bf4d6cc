// Flip (f32): the CUDA twin of engine/src/ops/flip/cpu.rs (`flip`). A contiguous x viewed
// as (outer, n, inner) is reversed along its middle axis:
//   y[o, i, j] = x[o, n - 1 - i, j]
//
// Napkin math at (outer, n, inner) = (8, 2048, 1536) (25.2 M elements, f32): reads x and
// writes y once each, 201 MB, no FLOPs: memory bound, floor ~201 MB / ~4 TB/s -> ~50 us.
// Launch: 1-D grid-stride loop, one output element per thread per step; consecutive threads
// write consecutive y and read consecutive x within a run of `inner` (coalesced both ways
// unless inner is tiny, where the reads of one warp still fall in one or two segments).

// The kernel's parameter: `FlipParams` in launch/flip.rs, same fields.
struct FlipParams {
    float* y;        // (outer, n, inner)
    const float* x;  // (outer, n, inner)
    long long total; // outer * n * inner
    long long n;     // length of the flipped axis
    long long inner; // elements per run (product of the axes after it)
};
static_assert(sizeof(FlipParams) == 40, "FlipParams: launch/flip.rs has 40 bytes");

extern "C" __global__ void flip_f32(const __grid_constant__ FlipParams p) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < p.total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long j = e % p.inner;
        const long long row = e / p.inner;  // o * n + i
        const long long i = row % p.n;
        p.y[e] = p.x[(row - i + (p.n - 1 - i)) * p.inner + j];
    }
}
