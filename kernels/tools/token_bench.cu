// Standalone timing of cu/decode_token.cu on the GPU machine (nvcc, no cargo): random weights,
// the launcher's layout (launch/decode_token.rs, DecodeDims::token_layout) redone here, the
// kernel launched cooperatively, median of 50 tokens after 10. For trying variants of the
// kernel (-D flags) without a Rust build:
//   nvcc -arch=sm_90 -O3 -I kernels/cu -o /tmp/tb kernels/tools/token_bench.cu && /tmp/tb [bf16]
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include "../cu/decode_token.cu"

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

__global__ void fill(float* p, long long n, unsigned seed, float scale) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
        p[i] = scale * ((h & 0xffffff) / 16777216.0f - 0.5f);
    }
}
__global__ void to_bf16(unsigned short* o, const float* p, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        o[i] = (unsigned short)(__float_as_uint(p[i]) >> 16);
}

static void* rnd(long long n, float scale, bool bf16, unsigned seed) {
    float* f; CK(cudaMalloc(&f, n * 4)); fill<<<1024, 256>>>(f, n, seed, scale);
    if (!bf16) return f;
    unsigned short* h; CK(cudaMalloc(&h, n * 2)); to_bf16<<<1024, 256>>>(h, f, n); return h;
}

int main(int argc, char** argv) {
    const bool bf16 = argc > 1 && argv[1][0] == 'b';
    const int B = argc > 2 ? atoi(argv[2]) : 1, L = argc > 3 ? atoi(argv[3]) : 24;
    const int M = 768, D = 1536, N = 16, R = 48, K = 4, V = 256, X = R + 2 * N, wb = bf16 ? 2 : 4;
    int G; CK(cudaDeviceGetAttribute(&G, cudaDevAttrMultiProcessorCount, 0));
    int ra = 8; while (!(D % ra == 0 && (2 * D + ra - 1) / ra <= G)) ra += 8;
    const int cb = ((D + G - 1) / G + 3) / 4 * 4, rc = (M + G - 1) / G, rh = (V + G - 1) / G;
    auto al = [](int b) { return (b + 15) / 16 * 16; };
    const int sb = al((ra * M + X * ra) * wb + 4 * (ra * K + ra + M)), sc = sb + al(4 * cb * (R + N + 2));
    const int act = sc + al(rc * D * wb);
    const int smem = act + 4 * (B * std::max(M, D) + B * X + B * ra + std::max(std::max(ra, rc), rh) * B);
    std::vector<TokenLayer> layers(L);
    for (int l = 0; l < L; l++) {
        TokenLayer& t = layers[l];
        unsigned s = 100 * l;
        t.in_proj = rnd(2LL * D * M, 0.07f, bf16, s + 1); t.x_proj = rnd((long long)X * D, 0.05f, bf16, s + 2);
        t.out_proj = rnd((long long)M * D, 0.05f, bf16, s + 3);
        t.norm_w = (float*)rnd(M, 1.0f, false, s + 4); t.conv_w = (float*)rnd(D * K, 1.0f, false, s + 5);
        t.conv_b = (float*)rnd(D, 1.0f, false, s + 6); t.dt_w = (float*)rnd(D * R, 0.3f, false, s + 7);
        t.dt_b = (float*)rnd(D, 1.0f, false, s + 8); t.a = (float*)rnd(D * N, 1.0f, false, s + 9);
        t.d_skip = (float*)rnd(D, 1.0f, false, s + 10); t.conv_state = (float*)rnd(B * D * K, 1.0f, false, s + 11);
        t.ssm_state = (float*)rnd(B * D * N, 1.0f, false, s + 12);
    }
    DecodeTokenParams p{};
    CK(cudaMalloc(&p.layers, L * sizeof(TokenLayer)));
    CK(cudaMemcpy((void*)p.layers, layers.data(), L * sizeof(TokenLayer), cudaMemcpyHostToDevice));
    p.residual = (float*)rnd(B * M, 1, false, 7); p.xc = (float*)rnd(B * D, 1, false, 8); p.z = (float*)rnd(B * D, 1, false, 9);
    p.y = (float*)rnd(B * D, 1, false, 10); p.xpart = (float*)rnd((long long)(D / ra) * B * X, 1, false, 11);
    p.logits = (float*)rnd(B * V, 1, false, 12);
    float* ids; CK(cudaMalloc(&ids, B * 4)); CK(cudaMemset(ids, 0, B * 4)); p.ids = ids;
    p.embedding = rnd((long long)V * M, 1.0f, bf16, 13); p.norm_f = (float*)rnd(M, 1, false, 14);
    CK(cudaMalloc(&p.barrier, 256));
    p.n_layers = L; p.batch = B; p.m = M; p.d = D; p.n = N; p.r = R; p.k = K; p.vocab = V;
    p.ra = ra; p.cb = cb; p.rc = rc; p.rh = rh; p.gx = D / ra; p.eps = 1e-5f; p.sa = 0; p.sb = sb; p.sc = sc; p.act = act;
    auto kern = bf16 ? decode_token_bf16 : decode_token_f32;
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    void* args[] = {&p};
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    std::vector<float> ts;
    for (int i = 0; i < 60; i++) {
        CK(cudaMemsetAsync(p.barrier, 0, 256));
        cudaEventRecord(a);
        CK(cudaLaunchCooperativeKernel((void*)kern, G, TOKEN_THREADS, args, smem, 0));
        cudaEventRecord(b); CK(cudaEventSynchronize(b));
        float ms; cudaEventElapsedTime(&ms, a, b); if (i >= 10) ts.push_back(ms * 1000);
    }
    std::sort(ts.begin(), ts.end());
#ifdef TOKEN_TRACE
    {
        const int steps = 12 * L + 4;
        unsigned long long* tr; CK(cudaMalloc(&tr, (size_t)G * steps * 8));
        CK(cudaMemcpyToSymbol(token_trace, &tr, sizeof(tr))); CK(cudaMemcpyToSymbol(token_trace_steps, &steps, 4));
        CK(cudaMemsetAsync(p.barrier, 0, 256));
        CK(cudaLaunchCooperativeKernel((void*)kern, G, TOKEN_THREADS, args, smem, 0)); CK(cudaDeviceSynchronize());
        std::vector<unsigned long long> h((size_t)G * steps);
        CK(cudaMemcpy(h.data(), tr, h.size() * 8, cudaMemcpyDeviceToHost));
        // per phase (A, B, C): copies-wait (arrive -> copies landed), spin (-> released), work (-> next arrive)
        const char* names[3] = {"A", "B", "C"};
        for (int ph = 0; ph < 3; ph++) {
            double cw = 0, sp = 0, wk = 0, wkmax = 0; int n = 0;
            for (int l = 1; l < L; l++) for (int g = 0; g < G; g++) {
                const unsigned long long* t = &h[(size_t)g * steps + 12 * l + 3 * ph];
                const unsigned long long end = ph == 2 ? h[(size_t)g * steps + 12 * (l + 1)] : t[3];
                cw += t[1] - t[0]; sp += t[2] - t[1]; double w = (double)(end - t[2]); wk += w; wkmax = std::max(wkmax, w); n++;
            }
            if (ph == 1) {
                double a = 0, b2 = 0, c = 0; int m = 0;
                for (int l = 1; l < L; l++) for (int g = 0; g < 128; g++) {
                    const unsigned long long* t = &h[(size_t)g * steps + 12 * l];
                    a += t[9] - t[5]; b2 += t[10] - t[9]; c += t[11] - t[10]; m++;
                }
                printf("  phase B inside (thread 0): staging %.2f us, xdbl %.2f us, ssm %.2f us\n", a / m / 1e3, b2 / m / 1e3, c / m / 1e3);
            }
            printf("  phase %s: copies wait %.2f us, barrier spin %.2f us, work %.2f us (max %.2f)\n", names[ph], cw / n / 1e3, sp / n / 1e3, wk / n / 1e3, wkmax / 1e3);
        }
    }
#endif
    printf("%s B%d L%d G%d ra%d cb%d rc%d smem %d: %.1f us/token (%.0f tokens/s), %.2f us/layer\n", bf16 ? "bf16" : "f32", B, L, G,
           ra, cb, rc, smem, ts[ts.size() / 2], 1e6 / ts[ts.size() / 2] * B, ts[ts.size() / 2] / L);
    return 0;
}
