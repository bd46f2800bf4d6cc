// Runs kernels/cu/matmul_tf32.cu on the CPU (mma_emu.h over cuda_emu.h; matmul_tf32.sh builds and
// runs this) with the grid, shared memory size and split-K plan of kernels/src/launch/
// matmul_tf32.rs (kept in step by hand), against a float64 product of the same f32 values. Each
// case runs in both versions and all four layouts, 3xTF32 (_f32) and one tf32 pass (_tf32), with ld padding, view
// offsets and batch strides chosen at random; the padding holds NaNs, so a kernel that reads past
// an operand's edge produces NaN. C sits in a NaN-poisoned buffer with a guard element on each
// side: every element must be written, nothing outside it.
// Tolerance: |got - want| <= tol * sum_k |a_ik b_kj| with tol 1e-5 for 3xTF32 (as gpu-check's
// f32 matmul) and 2e-3 for one pass (two roundings to 10 mantissa bits: 2^-10 relative each).
#include "mma_emu.h"
#include MATMUL_TF32_CU
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <random>

using KFn = void (*)(MatmulTf32Params);
// [version - 1][3xTF32, one pass][layout]
static const KFn KERNELS[2][2][4] = {
    {{matmul_tf32_v1_nn_f32, matmul_tf32_v1_nt_f32, matmul_tf32_v1_tn_f32, matmul_tf32_v1_tt_f32},
     {matmul_tf32_v1_nn_tf32, matmul_tf32_v1_nt_tf32, matmul_tf32_v1_tn_tf32, matmul_tf32_v1_tt_tf32}},
    {{matmul_tf32_v2_nn_f32, matmul_tf32_v2_nt_f32, matmul_tf32_v2_tn_f32, matmul_tf32_v2_tt_f32},
     {matmul_tf32_v2_nn_tf32, matmul_tf32_v2_nt_tf32, matmul_tf32_v2_tn_tf32, matmul_tf32_v2_tt_tf32}},
};
static const int BM = 128, BN = 128, BK = 32, STAGES = 3;

// One stored operand of logical shape (nb, rows, cols): element (z, r, c) at
// data[off + z * batch + (col_major ? r + c * ld : r * ld + c)].
struct Operand {
    std::vector<float> data;
    size_t off;
    long long ld, batch;
    bool col_major;
    double at(int z, int r, int c) const { return data[off + z * batch + (col_major ? r + c * ld : r * ld + (long long)c)]; }
};

// Values uniform in [-1, 1) with all 24 bits used; ld the contiguous extent rounded up to 4
// (+4 at random), the view at 0 or 4 elements in, batch stride the matrix (+4 at random) or 0
// when broadcast. Everything else in the buffer is NaN.
static Operand make(std::mt19937_64& rng, int nb, int rows, int cols, bool col_major, bool bcast) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int inner = col_major ? rows : cols, outer = col_major ? cols : rows;
    Operand o;
    o.col_major = col_major;
    o.ld = (inner + 3) / 4 * 4 + 4 * (rng() % 2);
    o.off = 4 * (rng() % 2);
    const long long mat = (long long)outer * o.ld;
    o.batch = bcast ? 0 : mat + 4 * (rng() % 2);
    const int stored = bcast ? 1 : nb;
    o.data.assign(o.off + (stored - 1) * o.batch + mat + 4, std::numeric_limits<float>::quiet_NaN());
    for (int z = 0; z < stored; ++z)
        for (int x = 0; x < outer; ++x)
            for (int i = 0; i < inner; ++i) o.data[o.off + z * o.batch + x * o.ld + i] = u(rng);
    return o;
}

struct Case {
    const char* what;
    int nb, m, n, k, splits;
    bool a_bcast, b_bcast;
    int c_off;  // elements before C in its buffer (1: pair stores unaligned)
};

// The launcher's plan for `splits` (at least 1): k in chunks of whole slices.
static void plan(const Case& c, int& splits, int& kchunk) {
    if (c.splits <= 1 || c.k == 0) {
        splits = 1;
        kchunk = c.k;
        return;
    }
    const int kt = (c.k + BK - 1) / BK;
    kchunk = (kt + c.splits - 1) / c.splits * BK;
    splits = (c.k + kchunk - 1) / kchunk;
}

// Runs the case in one layout and precision; returns the output (NaN where unwritten) and
// whether the guards stayed NaN.
static std::vector<double> emulate(const Case& c, int version, int layout, bool split3, const Operand& A,
                                   const Operand& B, bool& guards) {
    int splits, kchunk;
    plan(c, splits, kchunk);
    const size_t mn = (size_t)c.m * c.n, len = c.nb * mn;
    std::vector<float> cf(c.c_off + len + 1, std::numeric_limits<float>::quiet_NaN());
    std::vector<float> work(splits > 1 ? c.nb * splits * mn : 0, std::numeric_limits<float>::quiet_NaN());
    float* out = cf.data() + c.c_off;
    g_global = {{(const unsigned char*)A.data.data(), A.data.size() * 4},
                {(const unsigned char*)B.data.data(), B.data.size() * 4}};
    MatmulTf32Params p{};
    p.A = A.data.data() + A.off;
    p.B = B.data.data() + B.off;
    p.C = splits > 1 ? work.data() : out;
    p.lda = A.ld, p.sa = A.batch, p.ldb = B.ld, p.sb = B.batch;
    p.M = c.m, p.N = c.n, p.K = c.k;
    p.flags = (reinterpret_cast<uintptr_t>(p.C) % 8 == 0 && c.n % 2 == 0) ? MMT_VEC_C : 0;
    p.splits = splits, p.kchunk = kchunk;
    const unsigned tiles = (unsigned)(((c.m + BM - 1) / BM) * ((c.n + BN - 1) / BN));
    emu_smem((size_t)STAGES * (BM + BN) * BK * 4);
    emu_launch(KERNELS[version - 1][split3 ? 0 : 1][layout], EmuDim3{tiles, 1, (unsigned)(c.nb * splits)}, 256, p);
    if (splits > 1) {
        MatmulTf32ReduceParams r{};
        r.W = work.data(), r.C = out, r.mn = (long long)mn, r.splits = splits;
        const unsigned blocks = (unsigned)std::min<size_t>((mn + 255) / 256, 64);
        emu_launch(matmul_tf32_reduce, EmuDim3{blocks, (unsigned)c.nb, 1}, 256, r);
    }
    std::vector<double> got(len);
    for (size_t i = 0; i < len; ++i) got[i] = out[i];
    guards = std::isnan(cf[c.c_off + len]);
    for (int i = 0; i < c.c_off; ++i) guards &= std::isnan(cf[i]);
    return got;
}

int main(int argc, char** argv) {
    const Case cases[] = {
        {"130x140x70: every edge, partial k chunks", 1, 130, 140, 70, 1, false, false, 2},
        {"nb 2, B broadcast, 37x300x136: ring wraps", 2, 37, 300, 136, 1, false, true, 0},
        {"129x34x41, C unaligned, k odd", 1, 129, 34, 41, 1, false, false, 1},
        {"nb 2, A broadcast, 70x80x100", 2, 70, 80, 100, 1, true, false, 2},
        {"split-K 3, nb 2, 64x96x300", 2, 64, 96, 300, 3, false, false, 2},
        {"k = 0 writes zeros, 5x7", 1, 5, 7, 0, 1, false, false, 1},
        {"1x1x4", 1, 1, 1, 4, 1, false, false, 2},
    };
    const char* layouts[4] = {"nn", "nt", "tn", "tt"};
    const int only = argc > 1 ? std::atoi(argv[1]) : -1;
    std::mt19937_64 rng(7);
    bool ok = true;
    for (int ci = 0; ci < (int)(sizeof(cases) / sizeof(cases[0])); ++ci) {
        const Case& c = cases[ci];
        if (only >= 0 && only != ci) continue;
        for (const int version : {1, 2})
        for (const bool split3 : {true, false}) {
            std::printf("%d v%d %-44s %-4s", ci, version, c.what, split3 ? "f32" : "tf32");
            bool case_ok = true;
            for (int layout = 0; layout < 4; ++layout) {
                const bool at = layout >> 1, bt = layout & 1;
                const Operand A = make(rng, c.nb, c.m, c.k, at, c.a_bcast), B = make(rng, c.nb, c.k, c.n, bt, c.b_bcast);
                bool guards = false;
                const std::vector<double> got = emulate(c, version, layout, split3, A, B, guards);
                const double tol = split3 ? 1e-5 : 2e-3;
                double worst = 0;
                bool lok = guards;
                for (int z = 0; z < c.nb; ++z)
                    for (int i = 0; i < c.m; ++i)
                        for (int j = 0; j < c.n; ++j) {
                            double want = 0, mag = 0;
                            for (int q = 0; q < c.k; ++q) {
                                const double ab = A.at(c.a_bcast ? 0 : z, i, q) * B.at(c.b_bcast ? 0 : z, q, j);
                                want += ab;
                                mag += std::fabs(ab);
                            }
                            const double e = std::fabs(got[((size_t)z * c.m + i) * c.n + j] - want);
                            if (!(e <= tol * mag)) lok = false;
                            worst = std::max(worst, std::isnan(e) ? INFINITY : e / std::max(mag, 1e-30));
                        }
                std::printf(" %s %.0e%s", layouts[layout], worst, lok ? "" : (guards ? "(!)" : "(guard!)"));
                case_ok &= lok;
            }
            std::printf("  %s\n", case_ok ? "ok" : "FAILED");
            std::fflush(stdout);
            ok &= case_ok;
        }
    }
    std::printf("%lld blocks emulated; %s\n", g_blocks_run, ok ? "all ok" : "SOME FAILED");
    return ok ? 0 : 1;
}
