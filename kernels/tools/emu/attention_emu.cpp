// Runs kernels/cu/attention.cu on the CPU (cuda_emu.h; attention.sh builds and runs this) with
// the launch sequence of kernels/src/launch/attention.rs (kept in step by hand), against an
// independent float64 reference: the plain softmax over each query's visible keys and its hand
// backward. Outputs are poisoned with NaN first, so an element no block writes shows up. The
// backward gets the kernels' own f32 o and lse, as on the GPU.
#include "cuda_emu.h"
#include ATTENTION_CU
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>

using V = std::vector<double>;
struct Dims {
    int b, h, g, lq, lk, d, start;
    double scale;
    size_t q_len() const { return (size_t)b * h * lq * d; }
    size_t kv_len() const { return (size_t)b * g * lk * d; }
    size_t rows() const { return (size_t)b * h * lq; }
};
struct Res { V o, lse, delta, dq, dk, dv; };

// float64: s_ij = scale q_i . k_j over j <= start + i, p = softmax, o = p v; backward
// dp_ij = dout_i . v_j, D_i = sum_j p_ij dp_ij, ds = p (dp - D), dq = scale ds k,
// dk = scale ds^T q, dv = p^T dout (dk, dv summed over the group's heads).
static Res reference(const Dims& d, const V& q, const V& k, const V& v, const V& dout) {
    const int D = d.d, group = d.h / d.g;
    Res r;
    r.o.assign(d.q_len(), 0); r.dq.assign(d.q_len(), 0); r.lse.assign(d.rows(), 0); r.delta.assign(d.rows(), 0);
    r.dk.assign(d.kv_len(), 0); r.dv.assign(d.kv_len(), 0);
    for (int b = 0; b < d.b; ++b)
        for (int hh = 0; hh < d.h; ++hh) {
            const size_t kv = (size_t)(b * d.g + hh / group) * d.lk * D;
            for (int i = 0; i < d.lq; ++i) {
                const size_t row = (size_t)(b * d.h + hh) * d.lq + i;
                const double* qi = &q[row * D];
                const double* gi = &dout[row * D];
                const int n = std::min(d.lk, d.start + i + 1);
                V s(n), p(n), dp(n);
                double m = -INFINITY;
                for (int j = 0; j < n; ++j) {
                    double acc = 0;
                    for (int c = 0; c < D; ++c) acc += qi[c] * k[kv + (size_t)j * D + c];
                    s[j] = d.scale * acc;
                    m = std::max(m, s[j]);
                }
                double l = 0;
                for (int j = 0; j < n; ++j) l += std::exp(s[j] - m);
                const double lse = m + std::log(l);
                r.lse[row] = lse;
                double delta = 0;
                for (int j = 0; j < n; ++j) {
                    p[j] = std::exp(s[j] - lse);
                    double acc = 0;
                    for (int c = 0; c < D; ++c) {
                        r.o[row * D + c] += p[j] * v[kv + (size_t)j * D + c];
                        acc += gi[c] * v[kv + (size_t)j * D + c];
                    }
                    dp[j] = acc;
                    delta += p[j] * acc;
                }
                r.delta[row] = delta;
                for (int j = 0; j < n; ++j) {
                    const double ds = p[j] * (dp[j] - delta);
                    for (int c = 0; c < D; ++c) {
                        r.dq[row * D + c] += d.scale * ds * k[kv + (size_t)j * D + c];
                        r.dk[kv + (size_t)j * D + c] += d.scale * ds * qi[c];
                        r.dv[kv + (size_t)j * D + c] += p[j] * gi[c];
                    }
                }
            }
        }
    return r;
}

using F = std::vector<float>;
static F tof(const V& v) { return F(v.begin(), v.end()); }
static V tod(const F& v) { return V(v.begin(), v.end()); }
static F nans(size_t n) { return F(n, std::numeric_limits<float>::quiet_NaN()); }

// The launch sequence of kernels/src/launch/attention.rs: variant() picks d64 (tiles 64, 32, 32)
// or d128 (32, 16, 16); forward grid (ceil(lq / BM), b h); delta grid_for(rows 32) = clamp(
// ceil(rows 32 / 256), 1, 132 16); dkv grid (ceil(lk / BT), b g); dq grid (ceil(lq / BT), b h).
static Res emulate(const Dims& d, const V& qd, const V& kd, const V& vd, const V& doutd) {
    F q = tof(qd), k = tof(kd), v = tof(vd), dout = tof(doutd);
    F o = nans(d.q_len()), lse = nans(d.rows()), delta = nans(d.rows()), dq = nans(d.q_len()),
      dk = nans(d.kv_len()), dv = nans(d.kv_len());
    const bool d64 = d.d <= 64;
    const unsigned bm = d64 ? 64 : 32, bt = d64 ? 32 : 16;
    auto cdiv = [](size_t a, size_t b) { return (unsigned)((a + b - 1) / b); };
    AttentionParams p{};
    p.batch = d.b; p.heads = d.h; p.kv_heads = d.g; p.lq = d.lq; p.lk = d.lk; p.d = d.d; p.start = d.start;
    p.scale = (float)d.scale;
    p.q = q.data(); p.k = k.data(); p.v = v.data(); p.out = o.data(); p.out_lse = lse.data();
    emu_launch(d64 ? attention_forward_f32_d64 : attention_forward_f32_d128,
               EmuDim3{cdiv(d.lq, bm), (unsigned)(d.b * d.h), 1}, 256, p);
    AttentionParams pb{};
    pb.batch = d.b; pb.heads = d.h; pb.kv_heads = d.g; pb.lq = d.lq; pb.lk = d.lk; pb.d = d.d; pb.start = d.start;
    pb.scale = (float)d.scale;
    pb.q = q.data(); pb.k = k.data(); pb.v = v.data(); pb.o = o.data(); pb.lse = lse.data(); pb.dout = dout.data();
    pb.delta = delta.data(); pb.out_delta = delta.data();
    pb.dq = dq.data(); pb.dk = dk.data(); pb.dv = dv.data();
    const unsigned delta_blocks = std::clamp(cdiv(d.rows() * 32, 256), 1u, 132u * 16);
    emu_launch(attention_delta_f32, EmuDim3{delta_blocks, 1, 1}, 256, pb);
    emu_launch(d64 ? attention_backward_dkv_f32_d64 : attention_backward_dkv_f32_d128,
               EmuDim3{cdiv(d.lk, bt), (unsigned)(d.b * d.g), 1}, 256, pb);
    emu_launch(d64 ? attention_backward_dq_f32_d64 : attention_backward_dq_f32_d128,
               EmuDim3{cdiv(d.lq, bt), (unsigned)(d.b * d.h), 1}, 256, pb);
    return Res{tod(o), tod(lse), tod(delta), tod(dq), tod(dk), tod(dv)};
}

// max |got - want| (printed), and whether every |got - want| / max(1, |want|) < tol, no NaN.
static bool check(const char* name, const V& got, const V& want, double tol) {
    double worst = 0;
    bool ok = got.size() == want.size();
    for (size_t i = 0; ok && i < got.size(); ++i) {
        const double e = std::fabs(got[i] - want[i]);
        if (std::isnan(got[i]) || !(e / std::max(1.0, std::fabs(want[i])) < tol)) ok = false;
        worst = std::max(worst, std::isnan(got[i]) ? INFINITY : e);
    }
    std::printf(" %s %.1e%s", name, worst, ok ? "" : "(!)");
    return ok;
}

int main(int argc, char** argv) {
    struct Case { const char* name; Dims d; };
    const Case cases[] = {
        {"(1,2,1, 5, 5,  3, 0) tiny, MHA->MQA", {1, 2, 1, 5, 5, 3, 0, 0.7}},
        {"(2,4,2,37,37, 16, 0) GQA, batch 2", {2, 4, 2, 37, 37, 16, 0, 0.25}},
        {"(1,2,2, 3,40, 64,37) later queries", {1, 2, 2, 3, 40, 64, 37, 0.125}},
        {"(1,1,1,70,70, 64, 0) tiles 64/32 crossed", {1, 1, 1, 70, 70, 64, 0, 0.125}},
        {"(1,2,1,20,20,100, 0) d128, d padded", {1, 2, 1, 20, 20, 100, 0, 0.1}},
        {"(2,4,2, 1,23, 32,22) decode step, d64", {2, 4, 2, 1, 23, 32, 22, 0.18}},
        {"(1,2,1, 1,33,128,32) decode step, d128", {1, 2, 1, 1, 33, 128, 32, 0.09}},
        {"(1,2,1,40,75, 48,35) d64, start>0, 2 q tiles", {1, 2, 1, 40, 75, 48, 35, 0.15}},
        {"(1,4,2,45,50, 72, 5) d128, GQA, start>0", {1, 4, 2, 45, 50, 72, 5, 0.12}},
        // start = 1 mod the backward tile: query 31 (resp. 15) is the first to see key tile 1,
        // so dkv's first query tile (i_first) sits just before the tile boundary
        {"(1,2,1,40,41, 24, 1) d64, dkv i_first edge", {1, 2, 1, 40, 41, 24, 1, 0.2}},
        {"(1,2,1,20,37, 80,17) d128, dkv i_first edge", {1, 2, 1, 20, 37, 80, 17, 0.11}},
    };
    const int only = argc > 1 ? std::atoi(argv[1]) : -1;
    std::mt19937_64 rng(11);
    std::normal_distribution<double> nd(0, 1);
    bool ok = true;
    for (int ci = 0; ci < (int)(sizeof(cases) / sizeof(cases[0])); ++ci) {
        const Dims& d = cases[ci].d;
        auto rn = [&](size_t n, double sd) {
            V x(n);
            for (auto& e : x) e = sd * nd(rng);
            return x;
        };
        // q, k with sd 1.5 so scale q.k spreads over a few units (peaked, not flat, softmax)
        const V q = rn(d.q_len(), 1.5), k = rn(d.kv_len(), 1.5), v = rn(d.kv_len(), 1), dout = rn(d.q_len(), 1);
        if (only >= 0 && only != ci) continue;
        const Res want = reference(d, q, k, v, dout), got = emulate(d, q, k, v, dout);
        std::printf("%d %-46s", ci, cases[ci].name);
        bool c = true;
        c &= check("o", got.o, want.o, 1e-4);
        c &= check("lse", got.lse, want.lse, 1e-4);
        c &= check("delta", got.delta, want.delta, 1e-4);
        c &= check("dq", got.dq, want.dq, 1e-4);
        c &= check("dk", got.dk, want.dk, 1e-4);
        c &= check("dv", got.dv, want.dv, 1e-4);
        std::printf("  %s\n", c ? "ok" : "FAILED");
        std::fflush(stdout);
        ok &= c;
    }
    std::printf("%lld blocks emulated; %s\n", g_blocks_run, ok ? "all ok" : "SOME FAILED");
    return ok ? 0 : 1;
}
