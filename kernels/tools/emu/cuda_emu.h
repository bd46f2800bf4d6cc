// A CPU emulation of the CUDA features ssd.cu uses: one OS thread per CUDA thread, blocks run
// one after another, __syncthreads = a block-wide barrier, warp shuffles through a per-warp
// buffer and barrier, atomics under a mutex, __shared__ = static (one block at a time). A thread
// that returns leaves the barriers (arrive_and_drop), as an exited CUDA thread leaves
// __syncthreads. Only what kernels/cu/ssd.cu uses is here.
#pragma once
#define CUDA_EMU
#include <barrier>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static

struct EmuDim3 { unsigned x, y, z; };
inline thread_local EmuDim3 threadIdx, blockIdx;
inline EmuDim3 blockDim, gridDim;

inline std::barrier<>* g_block_bar;
inline std::barrier<>* g_warp_bar[32];
inline float g_warp_buf[32][32];
inline std::mutex g_atomic_mu;

inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline float emu_shfl(float v, int src) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    g_warp_buf[w][lane] = v;
    g_warp_bar[w]->arrive_and_wait();
    const float r = g_warp_buf[w][src];
    g_warp_bar[w]->arrive_and_wait();
    return r;
}
inline float __shfl_xor_sync(unsigned, float v, int m) { return emu_shfl(v, (threadIdx.x % 32) ^ m); }
inline float __shfl_up_sync(unsigned, float v, int d) {
    const int l = threadIdx.x % 32;
    return emu_shfl(v, l >= d ? l - d : l);
}
inline float __shfl_down_sync(unsigned, float v, int d) {
    const int l = threadIdx.x % 32;
    return emu_shfl(v, l + d < 32 ? l + d : l);
}
// Bit casts and prmt (byte i of the result is byte (s >> 4 i) & 7 of y:x).
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = (uint64_t)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
// cvt.rna.tf32.f32: 10 mantissa bits, to nearest, ties away from zero (finite inputs).
inline float tf32_round(float a) {
    uint32_t u;
    std::memcpy(&u, &a, 4);
    u = (u + 0x1000u) & 0xffffe000u;
    std::memcpy(&a, &u, 4);
    return a;
}
// mma.sync m16n8k8 tf32 (fragment layouts in mma.cuh's mma_tf32): the warp's lanes post their
// fragments, each lane then makes its four outputs, summed in k order in f32.
inline float g_mma_buf[32][32][10];
inline void mma_tf32(float& c0, float& c1, float& c2, float& c3, float a0, float a1, float a2, float a3, float b0,
                     float b1) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float* mine = g_mma_buf[w][lane];
    const float in[10] = {a0, a1, a2, a3, b0, b1, c0, c1, c2, c3};
    std::memcpy(mine, in, sizeof in);
    g_warp_bar[w]->arrive_and_wait();
    const auto A = [&](int r, int k) { return g_mma_buf[w][(r % 8) * 4 + k % 4][(r >= 8) + 2 * (k >= 4)]; };
    const auto B = [&](int k, int n) { return g_mma_buf[w][n * 4 + k % 4][4 + (k >= 4)]; };
    float out[4];
    for (int e = 0; e < 4; ++e) {
        const int r = g + 8 * (e / 2), n = 2 * t + e % 2;
        float acc = mine[6 + e];
        for (int k = 0; k < 8; ++k) acc += tf32_round(A(r, k)) * tf32_round(B(k, n));
        out[e] = acc;
    }
    g_warp_bar[w]->arrive_and_wait();
    c0 = out[0], c1 = out[1], c2 = out[2], c3 = out[3];
}
inline float atomicAdd(float* a, float v) {
    std::lock_guard<std::mutex> g(g_atomic_mu);
    const float o = *a;
    *a = o + v;
    return o;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
#include <math.h>

inline long long g_blocks_run = 0;
// Called before each block's threads start (mma_emu.h poisons the shared memory); may stay null.
inline void (*g_block_start)() = nullptr;
template <class P>
void emu_launch(void (*kernel)(P), EmuDim3 grid, unsigned threads, const P& p) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                if (g_block_start) g_block_start();
                std::barrier<> bar(threads);
                std::vector<std::barrier<>*> wb;
                for (unsigned w = 0; w < threads / 32; ++w) wb.push_back(new std::barrier<>(32));
                g_block_bar = &bar;
                for (unsigned w = 0; w < threads / 32; ++w) g_warp_bar[w] = wb[w];
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < threads; ++t)
                    ts.emplace_back([&, t] {
                        threadIdx = {t, 0, 0};
                        blockIdx = {x, y, z};
                        kernel(p);
                        g_warp_bar[t / 32]->arrive_and_drop();
                        bar.arrive_and_drop();
                    });
                for (auto& th : ts) th.join();
                for (auto* b : wb) delete b;
                ++g_blocks_run;
            }
}
