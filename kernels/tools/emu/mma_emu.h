// CPU twins of the PTX wrappers of kernels/cu/mma.cuh (matmul_bf16.cu, matmul_tf32.cu), on top of cuda_emu.h (one OS
// thread per CUDA thread, one block at a time): dynamic shared memory, cp.async (16 or 4 bytes,
// zero-filled past src-size; queued per thread and landed only at the wait_group that must
// see it, the latest a GPU may land it), ldmatrix.x4 (.trans), mma.sync m16n8k16 bf16 -> f32
// and cvt.rn.bf16x2.f32. The fragment layouts are written here from the PTX ISA's tables, not
// taken from the kernel. Every shared access is checked to be aligned and inside the block's
// buffer, every global read of cp.async inside one of the ranges in g_global (when any are
// registered): a violation aborts with a message. Shared memory is poisoned (0xff bytes: bf16
// NaNs) before each block, so a read of a slice that has not landed shows up as NaN.
#pragma once
#include "cuda_emu.h"
#include <cstdlib>
#include <utility>

struct float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

[[noreturn]] inline void emu_fail(const char* what, long long a, long long b) {
    std::fprintf(stderr, "emulator: %s (%lld, %lld) in block (%u, %u, %u) thread %u\n", what, a, b, blockIdx.x,
                 blockIdx.y, blockIdx.z, threadIdx.x);
    std::abort();
}

// The block's dynamic shared memory; emu_smem(bytes) sizes it before a launch.
inline std::vector<unsigned char> g_smem;
inline void emu_poison_smem() { std::memset(g_smem.data(), 0xff, g_smem.size()); }
inline void emu_smem(size_t bytes) {
    g_smem.assign(bytes, 0xff);
    g_block_start = emu_poison_smem;
}
inline unsigned char* dyn_smem() { return g_smem.data(); }
inline unsigned smem_addr(const void* p) {
    const long long off = static_cast<const unsigned char*>(p) - g_smem.data();
    if (off < 0 || off > (long long)g_smem.size()) emu_fail("smem_addr outside shared memory", off, g_smem.size());
    return (unsigned)off;
}
inline void emu_check_smem(unsigned addr, unsigned bytes) {
    if (addr % 16 != 0 || addr + bytes > g_smem.size()) emu_fail("unaligned or out-of-bounds shared access", addr, bytes);
}

// Global ranges cp.async may read (empty: unchecked).
inline std::vector<std::pair<const unsigned char*, size_t>> g_global;
struct EmuCopy {
    unsigned dst;
    const unsigned char* src;
    int bytes, size;  // read `bytes` of the copy's `size` (16 or 4), zero-fill the rest
};
inline thread_local std::vector<EmuCopy> t_open;                  // issued since the last commit
inline thread_local std::vector<std::vector<EmuCopy>> t_groups;  // committed, oldest first

inline void emu_cp_async(unsigned dst, const void* src, int src_bytes, int size) {
    const auto* s = static_cast<const unsigned char*>(src);
    if (dst % size != 0 || dst + size > g_smem.size()) emu_fail("unaligned or out-of-bounds cp.async target", dst, size);
    if (src_bytes < 0 || src_bytes > size) emu_fail("cp.async src-size outside 0..size", src_bytes, size);
    if (reinterpret_cast<uintptr_t>(s) % size != 0) emu_fail("cp.async source not aligned to its size", size, 0);
    if (src_bytes > 0 && !g_global.empty()) {
        bool in = false;
        for (auto& [base, len] : g_global) in |= s >= base && s + src_bytes <= base + len;
        if (!in) emu_fail("cp.async reads outside every operand", src_bytes, 0);
    }
    t_open.push_back({dst, s, src_bytes, size});
}
inline void cp_async_16(unsigned dst, const void* src, int src_bytes) { emu_cp_async(dst, src, src_bytes, 16); }
inline void cp_async_4(unsigned dst, const void* src, int src_bytes) { emu_cp_async(dst, src, src_bytes, 4); }
inline void cp_async_commit() {
    t_groups.push_back(std::move(t_open));
    t_open.clear();
}
template <int N>
inline void cp_async_wait() {
    while (t_groups.size() > (size_t)N) {
        for (const EmuCopy& c : t_groups.front()) {
            std::memcpy(&g_smem[c.dst], c.src, c.bytes);
            std::memset(&g_smem[c.dst + c.bytes], 0, c.size - c.bytes);
        }
        t_groups.erase(t_groups.begin());
    }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j..8j+7 give the 16-byte rows of
// matrix j; lane l receives in r[j] the elements (l / 4, 2 (l % 4) + h) of matrix j (h = 0
// in the low half), or with .trans (2 (l % 4) + h, l / 4).
inline unsigned g_ldsm_addr[32][32];
inline void emu_ldmatrix(unsigned (&r)[4], unsigned addr, bool trans) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    emu_check_smem(addr, 16);
    g_ldsm_addr[w][lane] = addr;
    g_warp_bar[w]->arrive_and_wait();
    for (int j = 0; j < 4; ++j) {
        unsigned v = 0;
        for (int h = 0; h < 2; ++h) {
            const int row = trans ? 2 * (lane % 4) + h : lane / 4, col = trans ? lane / 4 : 2 * (lane % 4) + h;
            uint16_t e;
            std::memcpy(&e, &g_smem[g_ldsm_addr[w][8 * j + row] + 2 * col], 2);
            v |= (unsigned)e << (16 * h);
        }
        r[j] = v;
    }
    g_warp_bar[w]->arrive_and_wait();
}
inline void ldmatrix_x4(unsigned (&r)[4], unsigned addr) { emu_ldmatrix(r, addr, false); }
// ld.shared.f32 (matmul_tf32.cu): 4-byte aligned, inside the block's buffer.
inline float lds_f32(unsigned addr) {
    if (addr % 4 != 0 || addr + 4 > g_smem.size()) emu_fail("unaligned or out-of-bounds ld.shared.f32", addr, 4);
    float v;
    std::memcpy(&v, &g_smem[addr], 4);
    return v;
}
inline float bits_f32(unsigned u) {
    float v;
    std::memcpy(&v, &u, 4);
    return v;
}
inline void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) { emu_ldmatrix(r, addr, true); }

inline float bf16_to_float(unsigned bits16) { return __uint_as_float(bits16 << 16); }
// f32 -> bf16 bits, to nearest, ties to even (NaN stays NaN).
inline unsigned float_to_bf16(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
inline unsigned pack_bf16x2(float lo, float hi) { return float_to_bf16(lo) | float_to_bf16(hi) << 16; }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, lane l, g = l / 4, t = l % 4;
// two bf16 per register, the lower index in the low half): A (16 x 16) row r, column k is in
// lane (r % 8) * 4 + (k % 8) / 2, register (r >= 8) + 2 (k >= 8); B (16 x 8) row k, column n
// in lane n * 4 + (k % 8) / 2, register (k >= 8); C element e of lane l is row g + 8 (e / 2),
// column 2t + e % 2. The products are exact; their sum is taken in f64 and added to c once.
inline unsigned g_mma_in[32][32][6];
inline void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const unsigned in[6] = {a[0], a[1], a[2], a[3], b0, b1};
    std::memcpy(g_mma_in[w][lane], in, sizeof in);
    g_warp_bar[w]->arrive_and_wait();
    const auto half = [&](int ln, int reg, int k) { return bf16_to_float((g_mma_in[w][ln][reg] >> (16 * (k % 2))) & 0xffffu); };
    const auto A = [&](int r, int k) { return half((r % 8) * 4 + (k % 8) / 2, (r >= 8) + 2 * (k >= 8), k); };
    const auto B = [&](int k, int n) { return half(n * 4 + (k % 8) / 2, 4 + (k >= 8), k); };
    float out[4];
    for (int e = 0; e < 4; ++e) {
        const int r = g + 8 * (e / 2), n = 2 * t + e % 2;
        double s = 0;
        for (int k = 0; k < 16; ++k) s += (double)A(r, k) * B(k, n);
        out[e] = (float)((double)c[e] + s);
    }
    g_warp_bar[w]->arrive_and_wait();
    for (int e = 0; e < 4; ++e) c[e] = out[e];
}
