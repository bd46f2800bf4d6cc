// Standalone timing of cu/scan.cu on the GPU machine (nvcc, no cargo), for trying kernel
// versions without a Rust build. Random inputs at the reference size (B 8, D 1536, L 2048,
// N 16, chunk 64, with z, delta_bias and softplus), the launch shapes of launch/scan.rs redone
// here; CUDA events, median of 20 after 5 warm-ups. Each later version's outputs are compared
// with the first's (max |diff| / max |first|): a quick sanity check on the device; the checks
// that count are gpu-check (against the CPU twin) and kernels/tools/emu/scan.sh.
//   nvcc -arch=sm_90 -O3 -I kernels/cu -o /tmp/sb kernels/tools/scan_bench.cu && /tmp/sb [once]
// `once`: one launch of each kernel, no timing (for ncu).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cmath>
#include "../cu/scan.cu"

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

__global__ void fill(float* p, long long n, unsigned seed, float lo, float hi) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
        p[i] = lo + (hi - lo) * ((h & 0xffffff) / 16777216.0f);
    }
}
static float* rnd(long long n, unsigned seed, float lo, float hi) {
    float* f; CK(cudaMalloc(&f, n * 4)); fill<<<1024, 256>>>(f, n, seed, lo, hi); CK(cudaGetLastError()); return f;
}
static float* zeros(long long n) { float* f; CK(cudaMalloc(&f, n * 4)); CK(cudaMemset(f, 0xff, n * 4)); return f; }

static const int B = 8, D = 1536, L = 2048, N = 16, CHUNK = 64, NC = (L + CHUNK - 1) / CHUNK;
static const long long BDL = (long long)B * D * L, BNL = (long long)B * N * L, BDN = (long long)B * D * N;

template <class F> static float median_ms(F f, bool once) {
    if (once) { f(); CK(cudaDeviceSynchronize()); return 0; }
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    for (int i = 0; i < 5; i++) f();
    std::vector<float> t;
    for (int i = 0; i < 20; i++) {
        CK(cudaEventRecord(a)); f(); CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b));
        float ms; CK(cudaEventElapsedTime(&ms, a, b)); t.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end()); return t[t.size() / 2];
}
static std::vector<float> host(const float* d, long long n) {
    std::vector<float> h(n); CK(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost)); return h;
}
static double rel(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0, r = 0;
    for (size_t i = 0; i < a.size(); i++) { m = std::max(m, (double)std::fabs(a[i] - b[i])); r = std::max(r, (double)std::fabs(a[i])); }
    for (size_t i = 0; i < b.size(); i++) if (std::isnan(b[i])) return NAN;
    return m / r;
}

typedef void (*BwdKernel)(ScanBackwardParams);
struct Bwd { const char* name; BwdKernel k; int ch, threads, smem; };

int main(int argc, char** argv) {
    const bool once = argc > 1 && !strcmp(argv[1], "once");
    float *u = rnd(BDL, 1, -1, 1), *delta = rnd(BDL, 2, -3, 0.5f), *z = rnd(BDL, 3, -2, 2), *dout = rnd(BDL, 4, -1, 1);
    float *A = rnd((long long)D * N, 5, -2, -0.05f), *Bm = rnd(BNL, 6, -1, 1), *Cm = rnd(BNL, 7, -1, 1);
    float *Dskip = rnd(D, 8, 0.5f, 1.5f), *bias = rnd(D, 9, -1, 0);
    // forward v2, then v3 (dynamic shared memory), compared with v2; v3's chunk states feed the backward
    float *out = zeros(BDL), *last = zeros(BDN), *states = zeros(BDN * NC);
    std::vector<std::vector<float>> fwd_first;
    for (int v = 2; v <= 3; v++) {
        CK(cudaMemset(out, 0xff, BDL * 4)); CK(cudaMemset(states, 0xff, BDN * NC * 4));
        ScanForwardParams fp{out, last, states, u, delta, A, Bm, Cm, Dskip, z, bias, nullptr, 1, B, D, L, N, CHUNK};
        const int smem = v == 3 ? 4 * scan_smem_floats(true, 128, CHUNK) : 0;
        const float ms = median_ms([&] {
            if (v == 2) selective_scan_forward_f32<<<dim3((D + 7) / 8, B), 128>>>(fp);
            else selective_scan_forward_v3_f32<<<dim3((D + 7) / 8, B), 128, smem>>>(fp);
        }, once);
        CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
        std::vector<std::vector<float>> got = {host(out, BDL), host(last, BDN), host(states, BDN * NC)};
        double worst = 0;
        if (fwd_first.empty()) fwd_first = got;
        else for (size_t i = 0; i < got.size(); i++) worst = std::max(worst, rel(fwd_first[i], got[i]));
        printf("forward v%d                  %8.1f us  vs first: %.2e\n", v, ms * 1000, worst);
    }

    std::vector<Bwd> versions = {{"backward v3 + reduce", selective_scan_backward_v3_f32, 16, 256, 0},
                                 {"backward v4 + reduce", selective_scan_backward_v4_f32, 16, 256,
                                  4 * scan_smem_floats(false, 256, CHUNK)}};
    std::vector<std::vector<float>> first;
    for (const Bwd& v : versions) {
        const int nblk = (D + v.ch - 1) / v.ch;
        float *du = zeros(BDL), *ddelta = zeros(BDL), *dz = zeros(BDL), *part = zeros((long long)B * nblk * 2 * N * L + BDN + 2LL * B * D);
        float *dA = zeros((long long)D * N), *dBm = zeros(BNL), *dCm = zeros(BNL), *dD = zeros(D), *dbias = zeros(D);
        ScanBackwardParams bp{du, ddelta, dz, nullptr, part, u, delta, A, Bm, Cm, Dskip, z, bias, states, dout, nullptr, 1, B, D, L, N, CHUNK};
        ScanBwdReduceParams rp{dA, dBm, dCm, dD, dbias, part, B, D, L, N, nblk};
        const float k = median_ms([&] { v.k<<<dim3(nblk, B), v.threads, v.smem>>>(bp); }, once);
        const float r = median_ms([&] { selective_scan_backward_reduce_f32<<<1024, 256>>>(rp); }, once);
        CK(cudaDeviceSynchronize());
        std::vector<std::vector<float>> got = {host(du, BDL), host(ddelta, BDL), host(dz, BDL), host(dA, (long long)D * N),
                                               host(dBm, BNL), host(dCm, BNL), host(dD, D), host(dbias, D)};
        double worst = 0;
        if (first.empty()) first = got;
        else for (size_t i = 0; i < got.size(); i++) worst = std::max(worst, rel(first[i], got[i]));
        printf("%-27s %8.1f us (kernel %.1f + reduce %.1f)  vs first: %.2e\n", v.name, (k + r) * 1000, k * 1000, r * 1000, worst);
        for (float* p : {du, ddelta, dz, part, dA, dBm, dCm, dD, dbias}) CK(cudaFree(p));
    }
    return 0;
}
