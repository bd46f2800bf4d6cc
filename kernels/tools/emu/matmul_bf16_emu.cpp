// Runs kernels/cu/matmul_bf16.cu on the CPU (mma_emu.h over cuda_emu.h; matmul_bf16.sh builds
// and runs this) with the grids, shared memory sizes and split-K plan of
// kernels/src/launch/matmul_bf16.rs (kept in step by hand), against a float64 product of the
// same bf16 values. Each case runs in all four layouts (A, B row- or column-major), with ld
// padding, view offsets and batch strides chosen at random; the padding holds bf16 NaNs, so a
// kernel that reads past an operand's edge into it produces NaN. C sits in a NaN-poisoned buffer
// with a guard element on each side: every element must be written, nothing outside it.
// Tolerance: |got - want| <= 1e-5 * sum_k |a_ik b_kj| (plus half a bf16 ulp of |want| for bf16
// output), as gpu-check's.
#include "mma_emu.h"
#include MATMUL_BF16_CU
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>

using KFn = void (*)(MatmulBf16Params);
struct Cfg {
    const char* name;
    int bm, bn, bk, stages;
    KFn f32[4], bf16[4];  // by layout 2 * (A column-major) + (B column-major)
};
static const Cfg CFGS[] = {
    {"v1", 128, 256, 32, 4,
     {matmul_bf16_v1_nn_f32, matmul_bf16_v1_nt_f32, matmul_bf16_v1_tn_f32, matmul_bf16_v1_tt_f32},
     {matmul_bf16_v1_nn_bf16, matmul_bf16_v1_nt_bf16, matmul_bf16_v1_tn_bf16, matmul_bf16_v1_tt_bf16}},
    {"v1n", 128, 128, 32, 4,
     {matmul_bf16_v1n_nn_f32, matmul_bf16_v1n_nt_f32, matmul_bf16_v1n_tn_f32, matmul_bf16_v1n_tt_f32},
     {matmul_bf16_v1n_nn_bf16, matmul_bf16_v1n_nt_bf16, matmul_bf16_v1n_tn_bf16, matmul_bf16_v1n_tt_bf16}},
    {"v2", 128, 256, 64, 3,
     {matmul_bf16_v2_nn_f32, matmul_bf16_v2_nt_f32, matmul_bf16_v2_tn_f32, matmul_bf16_v2_tt_f32},
     {matmul_bf16_v2_nn_bf16, matmul_bf16_v2_nt_bf16, matmul_bf16_v2_tn_bf16, matmul_bf16_v2_tt_bf16}},
};

static const uint16_t BF16_NAN = 0x7fc0;

// One stored operand of logical shape (nb, rows, cols): element (z, r, c) at
// data[off + z * batch + (col_major ? r + c * ld : r * ld + c)].
struct Operand {
    std::vector<uint16_t> data;
    size_t off;
    long long ld, batch;
    bool col_major;
    double at(int z, int r, int c) const {
        return bf16_to_float(data[off + z * batch + (col_major ? r + c * ld : r * ld + (long long)c)]);
    }
};

// Values uniform in [-1, 1) rounded to bf16; ld the contiguous extent rounded up to 8 (+8 at
// random), the view at 0 or 8 elements in, batch stride the matrix (+8 at random) or 0 when
// broadcast. Everything else in the buffer is NaN.
static Operand make(std::mt19937_64& rng, int nb, int rows, int cols, bool col_major, bool bcast) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int inner = col_major ? rows : cols, outer = col_major ? cols : rows;
    Operand o;
    o.col_major = col_major;
    o.ld = (inner + 7) / 8 * 8 + 8 * (rng() % 2);
    o.off = 8 * (rng() % 2);
    const long long mat = (long long)outer * o.ld;
    o.batch = bcast ? 0 : mat + 8 * (rng() % 2);
    const int stored = bcast ? 1 : nb;
    o.data.assign(o.off + (stored - 1) * o.batch + mat + 8, BF16_NAN);
    for (int z = 0; z < stored; ++z)
        for (int x = 0; x < outer; ++x)
            for (int i = 0; i < inner; ++i) o.data[o.off + z * o.batch + x * o.ld + i] = float_to_bf16(u(rng));
    return o;
}

struct Case {
    const char* what;
    int cfg, nb, m, n, k, splits;
    bool a_bcast, b_bcast, out_bf16;
    int c_off;  // elements before C in its buffer (1: pair stores unaligned)
};

// The launcher's plan for `splits` (at least 1): k in chunks of whole slices.
static void plan(const Case& c, const Cfg& g, int& splits, int& kchunk) {
    if (c.splits <= 1 || c.k == 0) {
        splits = 1;
        kchunk = c.k;
        return;
    }
    const int kt = (c.k + g.bk - 1) / g.bk;
    kchunk = (kt + c.splits - 1) / c.splits * g.bk;
    splits = (c.k + kchunk - 1) / kchunk;
}

// Runs the case in one layout; returns the output as doubles (NaN where unwritten) and
// whether the guards stayed NaN.
static std::vector<double> emulate(const Case& c, int layout, const Operand& A, const Operand& B, bool& guards) {
    const Cfg& g = CFGS[c.cfg];
    int splits, kchunk;
    plan(c, g, splits, kchunk);
    const size_t mn = (size_t)c.m * c.n, len = c.nb * mn;
    std::vector<float> cf(c.c_off + len + 1, std::numeric_limits<float>::quiet_NaN());
    std::vector<uint16_t> cb(c.c_off + len + 1, BF16_NAN);
    std::vector<float> work(splits > 1 ? c.nb * splits * mn : 0, std::numeric_limits<float>::quiet_NaN());
    void* out = c.out_bf16 ? (void*)(cb.data() + c.c_off) : (void*)(cf.data() + c.c_off);
    g_global = {{(const unsigned char*)A.data.data(), A.data.size() * 2},
                {(const unsigned char*)B.data.data(), B.data.size() * 2}};
    MatmulBf16Params p{};
    p.A = A.data.data() + A.off;
    p.B = B.data.data() + B.off;
    p.C = splits > 1 ? (void*)work.data() : out;
    p.lda = A.ld, p.sa = A.batch, p.ldb = B.ld, p.sb = B.batch;
    p.M = c.m, p.N = c.n, p.K = c.k;
    const bool bf16_direct = c.out_bf16 && splits == 1;
    const uintptr_t align = bf16_direct ? 4 : 8;
    p.flags = (reinterpret_cast<uintptr_t>(p.C) % align == 0 && c.n % 2 == 0) ? MMB_VEC_C : 0;
    p.splits = splits, p.kchunk = kchunk;
    const unsigned tiles = (unsigned)(((c.m + g.bm - 1) / g.bm) * ((c.n + g.bn - 1) / g.bn));
    emu_smem((size_t)g.stages * (g.bm + g.bn) * g.bk * 2);
    emu_launch(bf16_direct ? g.bf16[layout] : g.f32[layout], EmuDim3{tiles, 1, (unsigned)(c.nb * splits)}, 256, p);
    if (splits > 1) {
        MatmulBf16ReduceParams r{};
        r.W = work.data(), r.C = out, r.mn = (long long)mn, r.splits = splits;
        const unsigned blocks = (unsigned)std::min<size_t>((mn + 255) / 256, 64);
        emu_launch(c.out_bf16 ? matmul_bf16_reduce_bf16 : matmul_bf16_reduce_f32, EmuDim3{blocks, (unsigned)c.nb, 1},
                   256, r);
    }
    std::vector<double> got(len);
    for (size_t i = 0; i < len; ++i) got[i] = c.out_bf16 ? bf16_to_float(cb[c.c_off + i]) : cf[c.c_off + i];
    const auto nan_at = [&](size_t i) { return c.out_bf16 ? cb[i] == BF16_NAN : std::isnan(cf[i]); };
    guards = nan_at(c.c_off + len);
    for (int i = 0; i < c.c_off; ++i) guards &= nan_at(i);
    return got;
}

int main(int argc, char** argv) {
    const Case cases[] = {
        {"v1 130x260x70: every edge, partial k chunks", 0, 1, 130, 260, 70, 1, false, false, false, 2},
        {"v1 nb 2, B broadcast, 37x300x136: ring wraps", 0, 2, 37, 300, 136, 1, false, true, false, 0},
        {"v1 bf16 out 129x34x40, C unaligned", 0, 1, 129, 34, 40, 1, false, false, true, 1},
        {"v1n nb 2, A broadcast, 70x80x100", 1, 2, 70, 80, 100, 1, true, false, false, 2},
        {"v1n bf16 out 200x128x64", 1, 1, 200, 128, 64, 1, false, false, true, 2},
        {"v2 130x258x200: ring wraps, ragged", 2, 1, 130, 258, 200, 1, false, false, false, 2},
        {"v2 bf16 out, nb 2, 150x260x90, C unaligned", 2, 2, 150, 260, 90, 1, false, false, true, 1},
        {"v1 split-K 3, nb 2, 64x96x300", 0, 2, 64, 96, 300, 3, false, false, false, 2},
        {"v1n split-K 4 -> bf16, 40x80x520", 1, 1, 40, 80, 520, 4, false, false, true, 2},
        {"v1 k = 0 writes zeros, 5x7", 0, 1, 5, 7, 0, 1, false, false, false, 1},
        {"v1n 1x1x8", 1, 1, 1, 1, 8, 1, false, false, false, 2},
    };
    const char* layouts[4] = {"nn", "nt", "tn", "tt"};
    const int only = argc > 1 ? std::atoi(argv[1]) : -1;
    std::mt19937_64 rng(7);
    bool ok = true;
    for (int ci = 0; ci < (int)(sizeof(cases) / sizeof(cases[0])); ++ci) {
        const Case& c = cases[ci];
        if (only >= 0 && only != ci) continue;
        std::printf("%d %-48s", ci, c.what);
        bool case_ok = true;
        for (int layout = 0; layout < 4; ++layout) {
            const bool at = layout >> 1, bt = layout & 1;
            const Operand A = make(rng, c.nb, c.m, c.k, at, c.a_bcast), B = make(rng, c.nb, c.k, c.n, bt, c.b_bcast);
            bool guards = false;
            const std::vector<double> got = emulate(c, layout, A, B, guards);
            double worst = 0;
            bool lok = guards;
            for (int z = 0; z < c.nb; ++z)
                for (int i = 0; i < c.m; ++i)
                    for (int j = 0; j < c.n; ++j) {
                        double want = 0, mag = 0;
                        for (int p = 0; p < c.k; ++p) {
                            const double ab = A.at(c.a_bcast ? 0 : z, i, p) * B.at(c.b_bcast ? 0 : z, p, j);
                            want += ab;
                            mag += std::fabs(ab);
                        }
                        const double e = std::fabs(got[((size_t)z * c.m + i) * c.n + j] - want);
                        const double tol = 1e-5 * mag + (c.out_bf16 ? std::ldexp(std::fabs(want), -8) : 0.0);
                        if (!(e <= tol)) lok = false;
                        worst = std::max(worst, std::isnan(e) ? INFINITY : e / std::max(mag, 1e-30));
                    }
            std::printf(" %s %.0e%s", layouts[layout], worst, lok ? "" : (guards ? "(!)" : "(guard!)"));
            case_ok &= lok;
        }
        std::printf("  %s\n", case_ok ? "ok" : "FAILED");
        std::fflush(stdout);
        ok &= case_ok;
    }
    std::printf("%lld blocks emulated; %s\n", g_blocks_run, ok ? "all ok" : "SOME FAILED");
    return ok ? 0 : 1;
}
