// Runs kernels/cu/ssd.cu on the CPU (cuda_emu.h; ssd.sh builds and runs this) with the launch
// sequence of kernels/src/launch/ssd.rs (kept in step by hand), against an independent float64
// reference: the plain recurrence and its hand adjoint, step by step (checked itself against
// tests/fixtures/reference/ssd.safetensors). Inputs are poisoned with NaN where the kernels must
// write every element, as gpu-check does.
#include "cuda_emu.h"
#include <cstring>
#include <functional>
#include <vector>

// cp.async: each thread's copies wait in a queue until it calls ssd_cp_async_wait (so a read
// of the destination before the wait sees stale values, as it could on the GPU).
inline thread_local std::vector<std::function<void()>> g_async;
inline void ssd_cp_async16(float* dst, const float* src, int bytes) {
    g_async.push_back([=] { std::memset(dst, 0, 16); std::memcpy(dst, src, bytes); });
}
inline void ssd_cp_async4(float* dst, const float* src, int bytes) {
    g_async.push_back([=] { std::memset(dst, 0, 4); std::memcpy(dst, src, bytes); });
}
inline void ssd_cp_async_wait() {
    for (auto& f : g_async) f();
    g_async.clear();
}
#include SSD_CU
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>

using V = std::vector<double>;
struct Dims {
    int b, L, h, p, g, n, chunk;
    int nc() const { return (L + chunk - 1) / chunk; }
};
struct Data { V x, dt, A, B, C, D, bias, z, init; };  // z, init empty when absent
struct Res { V out, last, dx, ddt, dA, dB, dC, dD, dbias, dz, dinit; };

static double softplus(double v) { return std::max(v, 0.0) + std::log1p(std::exp(-std::fabs(v))); }
static double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }

static Res reference(const Dims& d, const Data& in, const V& dout, const V& dlast) {
    const int P = d.p, N = d.n, H = d.h, G = d.g, L = d.L, PN = P * N;
    Res r;
    r.out.assign((size_t)d.b * L * H * P, 0); r.last.assign((size_t)d.b * H * PN, 0);
    r.dx.assign(r.out.size(), 0); r.ddt.assign((size_t)d.b * L * H, 0); r.dA.assign(H, 0);
    r.dB.assign((size_t)d.b * L * G * N, 0); r.dC = r.dB; r.dD.assign(H, 0); r.dbias.assign(H, 0);
    if (!in.z.empty()) r.dz.assign(r.out.size(), 0);
    if (!in.init.empty()) r.dinit.assign(r.last.size(), 0);
    for (int b = 0; b < d.b; ++b)
        for (int hh = 0; hh < H; ++hh) {
            const int g = hh / (H / G);
            auto xo = [&](int t) { return ((size_t)(b * L + t) * H + hh) * P; };
            auto bo = [&](int t) { return ((size_t)(b * L + t) * G + g) * N; };
            std::vector<V> S(L + 1, V(PN, 0.0));
            if (!in.init.empty()) for (int e = 0; e < PN; ++e) S[0][e] = in.init[(size_t)(b * H + hh) * PN + e];
            V dtp(L), ex(L), raw(L), ys((size_t)L * P);
            for (int t = 0; t < L; ++t) {
                raw[t] = in.dt[(size_t)(b * L + t) * H + hh] + in.bias[hh];
                dtp[t] = softplus(raw[t]);
                ex[t] = std::exp(dtp[t] * in.A[hh]);
                for (int p = 0; p < P; ++p)
                    for (int n = 0; n < N; ++n)
                        S[t + 1][p * N + n] = ex[t] * S[t][p * N + n] + dtp[t] * in.x[xo(t) + p] * in.B[bo(t) + n];
                for (int p = 0; p < P; ++p) {
                    double y = in.D[hh] * in.x[xo(t) + p];
                    for (int n = 0; n < N; ++n) y += S[t + 1][p * N + n] * in.C[bo(t) + n];
                    ys[(size_t)t * P + p] = y;
                    const double z = in.z.empty() ? 0 : in.z[xo(t) + p];
                    r.out[xo(t) + p] = in.z.empty() ? y : y * z * sigm(z);
                }
            }
            for (int e = 0; e < PN; ++e) r.last[(size_t)(b * H + hh) * PN + e] = S[L][e];
            V dS(PN);
            for (int e = 0; e < PN; ++e) dS[e] = dlast[(size_t)(b * H + hh) * PN + e];
            for (int t = L - 1; t >= 0; --t) {
                for (int p = 0; p < P; ++p) {
                    const double gr = dout[xo(t) + p], x = in.x[xo(t) + p];
                    double dy = gr;
                    if (!in.z.empty()) {
                        const double z = in.z[xo(t) + p], s = sigm(z);
                        dy = gr * z * s;
                        r.dz[xo(t) + p] = gr * ys[(size_t)t * P + p] * s * (1 + z * (1 - s));
                    }
                    r.dD[hh] += dy * x;
                    r.dx[xo(t) + p] += in.D[hh] * dy;
                    for (int n = 0; n < N; ++n) {
                        dS[p * N + n] += dy * in.C[bo(t) + n];
                        r.dC[bo(t) + n] += dy * S[t + 1][p * N + n];
                    }
                }
                double de = 0, ddtp = 0;
                for (int p = 0; p < P; ++p)
                    for (int n = 0; n < N; ++n) {
                        const double ds = dS[p * N + n], x = in.x[xo(t) + p], bb = in.B[bo(t) + n];
                        de += ds * S[t][p * N + n];
                        ddtp += ds * x * bb;
                        r.dx[xo(t) + p] += dtp[t] * ds * bb;
                        r.dB[bo(t) + n] += dtp[t] * ds * x;
                    }
                ddtp += de * in.A[hh] * ex[t];
                r.dA[hh] += de * dtp[t] * ex[t];
                const double g2 = ddtp * sigm(raw[t]);
                r.ddt[(size_t)(b * L + t) * H + hh] = g2;
                r.dbias[hh] += g2;
                for (auto& v : dS) v *= ex[t];
            }
            if (!in.init.empty()) for (int e = 0; e < PN; ++e) r.dinit[(size_t)(b * H + hh) * PN + e] = dS[e];
        }
    return r;
}

using F = std::vector<float>;
static F tof(const V& v) { return F(v.begin(), v.end()); }
static V tod(const F& v) { return V(v.begin(), v.end()); }
static F nans(size_t n) { return F(n, std::numeric_limits<float>::quiet_NaN()); }

// SSD_EMU_TF32=1: the tile kernels' one-pass tf32 variants (NAME_tf32), at a tf32 tolerance.
static const bool g_tf32 = std::getenv("SSD_EMU_TF32") != nullptr;
#define TILE(name) (g_tf32 ? name##_tf32 : name##_f32)

// The launch sequence of kernels/src/launch/ssd.rs.
static Res emulate(const Dims& d, const Data& in, const V& dout_d, const V& dlast_d) {
    F x = tof(in.x), dt = tof(in.dt), A = tof(in.A), B = tof(in.B), C = tof(in.C), D = tof(in.D), bias = tof(in.bias),
      z = tof(in.z), init = tof(in.init), dout = tof(dout_d), dlast = tof(dlast_d);
    const size_t blhp = (size_t)d.b * d.L * d.h * d.p, bhpn = (size_t)d.b * d.h * d.p * d.n, nc = d.nc();
    const size_t states_n = bhpn * nc, bhc = (size_t)d.b * d.h * nc, bhl = (size_t)d.b * d.h * d.L;
    const size_t blgn = (size_t)d.b * d.L * d.g * d.n;
    const size_t cb_n = (size_t)d.b * nc * d.g * d.chunk * d.chunk;
    F out = nans(blhp), last = nans(bhpn), states = nans(states_n), decay = nans(bhc), cb = nans(cb_n);
    SsdParams p{};
    p.x = x.data(); p.dt = dt.data(); p.A = A.data(); p.Bm = B.data(); p.Cm = C.data(); p.Dskip = D.data();
    p.dt_bias = bias.data(); p.z = in.z.empty() ? nullptr : z.data(); p.init = in.init.empty() ? nullptr : init.data();
    p.batch = d.b; p.len = d.L; p.heads = d.h; p.headdim = d.p; p.groups = d.g; p.state = d.n; p.chunk = d.chunk;
    p.n_chunks = (int)nc;
    p.out = out.data(); p.last = last.data(); p.states = states.data(); p.decay = decay.data();
    p.cb = cb.data();
    auto tiles = [&](int rows, int cols) {
        return EmuDim3{(unsigned)(nc * ((rows + 63) / 64) * ((cols + 63) / 64)), (unsigned)d.h, (unsigned)d.b};
    };
    const EmuDim3 per_state{(unsigned)((d.p * d.n + 255) / 256), (unsigned)d.h, (unsigned)d.b};
    const unsigned tq = (d.chunk + 63) / 64;
    const EmuDim3 cb_grid{(unsigned)(nc * tq * tq), (unsigned)d.g, (unsigned)d.b};
    emu_launch(TILE(ssd_chunk_cb), cb_grid, 256, p);
    emu_launch(TILE(ssd_chunk_state), tiles(d.p, d.n), 256, p);
    emu_launch(ssd_state_pass_f32, per_state, 256, p);
    emu_launch(TILE(ssd_chunk_out), tiles(d.chunk, d.p), 256, p);
    // backward, fresh scratch as in engine/src/ops/ssd/cuda.rs
    F dstates = nans(states_n), decay2 = nans(bhc), kdot(bhc, 0), xdx(bhl, 0), da_s(bhl, 0), dy = nans(blhp);
    F dx = nans(blhp), ddt = nans((size_t)d.b * d.L * d.h), dA(d.h, 0), dB(blgn, 0), dC(blgn, 0), dD(d.h, 0),
      dbias(d.h, 0), dz = nans(blhp), dinit = nans(bhpn);
    p.out = nullptr; p.last = nullptr;
    p.dout = dout.data(); p.dlast = dlast.data(); p.dy = in.z.empty() ? nullptr : dy.data();
    p.dstates = dstates.data(); p.decay = decay2.data(); p.kdot = kdot.data(); p.xdx = xdx.data(); p.da = da_s.data();
    F cb2 = nans(cb_n);
    p.cb = cb2.data();
    p.dx = dx.data(); p.ddt = ddt.data(); p.dA = dA.data(); p.dB = dB.data(); p.dC = dC.data(); p.dD = dD.data();
    p.ddt_bias = dbias.data(); p.dz = in.z.empty() ? nullptr : dz.data(); p.dinit = in.init.empty() ? nullptr : dinit.data();
    emu_launch(TILE(ssd_chunk_cb), cb_grid, 256, p);
    if (!in.z.empty()) emu_launch(TILE(ssd_chunk_gate_grad), tiles(d.chunk, d.p), 256, p);
    emu_launch(TILE(ssd_chunk_dstate), tiles(d.p, d.n), 256, p);
    emu_launch(ssd_dstate_pass_f32, per_state, 256, p);
    emu_launch(TILE(ssd_chunk_dx), tiles(d.chunk, d.p), 256, p);
    emu_launch(TILE(ssd_chunk_dc), tiles(d.chunk, d.n), 256, p);
    emu_launch(TILE(ssd_chunk_db), tiles(d.chunk, d.n), 256, p);
    emu_launch(ssd_chunk_finish_f32, EmuDim3{(unsigned)nc, (unsigned)d.h, (unsigned)d.b}, 256, p);
    Res r{tod(out), tod(last), tod(dx), tod(ddt), tod(dA), tod(dB), tod(dC), tod(dD), tod(dbias), {}, {}};
    if (!in.z.empty()) r.dz = tod(dz);
    if (!in.init.empty()) r.dinit = tod(dinit);
    return r;
}

static double rel(const V& a, const V& b) {
    if (a.size() != b.size()) return 1e30;
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::isnan(a[i])) return 1e30;
        diff = std::max(diff, std::fabs(a[i] - b[i]));
        scale = std::max(scale, std::fabs(b[i]));
    }
    return diff / scale;
}

static bool compare(const char* what, const Res& got, const Res& want, double tol) {
    const std::pair<const char*, std::pair<const V*, const V*>> all[] = {
        {"out", {&got.out, &want.out}}, {"last", {&got.last, &want.last}}, {"dx", {&got.dx, &want.dx}},
        {"ddt", {&got.ddt, &want.ddt}}, {"dA", {&got.dA, &want.dA}}, {"dB", {&got.dB, &want.dB}},
        {"dC", {&got.dC, &want.dC}}, {"dD", {&got.dD, &want.dD}}, {"dbias", {&got.dbias, &want.dbias}},
        {"dz", {&got.dz, &want.dz}}, {"dinit", {&got.dinit, &want.dinit}}};
    bool ok = true;
    std::printf("%-44s", what);
    for (auto& [name, pr] : all) {
        if (pr.second->empty() && pr.first->empty()) continue;
        const double e = rel(*pr.first, *pr.second);
        ok = ok && e < tol;
        std::printf(" %s %.1e%s", name, e, e < tol ? "" : "(!)");
    }
    std::printf("  %s\n", ok ? "ok" : "FAILED");
    return ok;
}

// ---- the fixture (safetensors, F64)
static std::string g_st;
static size_t g_hdr;
static V st_get(const std::string& name) {
    const size_t k = g_st.find("\"" + name + "\":");
    const size_t o = g_st.find("\"data_offsets\":[", k) + 16;
    const size_t a = std::stoull(g_st.substr(o)), b = std::stoull(g_st.substr(g_st.find(',', o) + 1));
    V v((b - a) / 8);
    std::memcpy(v.data(), g_st.data() + 8 + g_hdr + a, b - a);
    return v;
}

static Data random_data(const Dims& d, bool z, bool init, std::mt19937_64& rng) {
    auto r = [&](size_t n, double lo, double hi) {
        std::uniform_real_distribution<double> u(lo, hi);
        V v(n);
        for (auto& e : v) e = u(rng);
        return v;
    };
    const size_t blhp = (size_t)d.b * d.L * d.h * d.p, blgn = (size_t)d.b * d.L * d.g * d.n;
    Data in{r(blhp, -1, 1), r((size_t)d.b * d.L * d.h, -2, 1), r(d.h, -1.5, -0.2), r(blgn, -1, 1), r(blgn, -1, 1),
            r(d.h, -1, 1), r(d.h, -1, 0.5), {}, {}};
    if (z) in.z = r(blhp, -2, 2);
    if (init) in.init = r((size_t)d.b * d.h * d.p * d.n, -1, 1);
    return in;
}

int main(int argc, char** argv) {
    bool ok = true;
    {
        std::ifstream f(argv[1], std::ios::binary);
        g_st.assign(std::istreambuf_iterator<char>(f), {});
        std::memcpy(&g_hdr, g_st.data(), 8);
        const Dims d{2, 37, 4, 3, 2, 5, 8};
        Data in{st_get("x"), st_get("dt"), st_get("A"), st_get("B"), st_get("C"), st_get("D"), st_get("dt_bias"),
                st_get("z"), {}};
        const V dout = st_get("dout"), dlast((size_t)2 * 4 * 3 * 5, 0.0);
        Res want{st_get("out"), st_get("last_state"), st_get("grad.x"), st_get("grad.dt"), st_get("grad.A"),
                 st_get("grad.B"), st_get("grad.C"), st_get("grad.D"), st_get("grad.dt_bias"), st_get("grad.z"), {}};
        ok &= compare("float64 reference vs fixture", reference(d, in, dout, dlast), want, 1e-12);
        for (int chunk : {8, 16}) {
            Dims dc = d;
            dc.chunk = chunk;
            ok &= compare(("GPU emulated vs fixture, chunk " + std::to_string(chunk)).c_str(),
                          emulate(dc, in, dout, dlast), want, g_tf32 ? 5e-3 : 1e-5);
        }
    }
    std::mt19937_64 rng(7);
    struct Case { const char* name; Dims d; bool z, init; };
    const Case cases[] = {
        {"L 37 chunk 16, z, init, dlast", {1, 37, 2, 3, 1, 4, 16}, true, true},
        {"p 1, 3 heads / 3 groups, chunk 1, plain", {2, 5, 3, 1, 3, 2, 1}, false, false},
        {"tiles: p 70, n 66, chunk 130, L 150", {1, 150, 2, 70, 1, 66, 130}, true, true},
        {"chunk 256, L 300, 2 groups of 2", {1, 300, 4, 2, 2, 3, 256}, true, false},
        {"one chunk longer than L, init only", {2, 6, 2, 5, 1, 7, 6}, false, true},
        {"21 chunks (the passes' batches of 8), z, init", {1, 41, 2, 3, 1, 4, 2}, true, true},
    };
    const int only = argc > 2 ? std::atoi(argv[2]) : -1;
    for (int i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])); ++i) {
        const Case& c = cases[i];
        Data in = random_data(c.d, c.z, c.init, rng);
        std::uniform_real_distribution<double> u(-1, 1);
        V dout((size_t)c.d.b * c.d.L * c.d.h * c.d.p), dlast((size_t)c.d.b * c.d.h * c.d.p * c.d.n);
        for (auto& e : dout) e = u(rng);
        for (auto& e : dlast) e = u(rng);
        if (only >= 0 && only != i) continue;
        ok &= compare(c.name, emulate(c.d, in, dout, dlast), reference(c.d, in, dout, dlast), g_tf32 ? 5e-3 : 1e-4);
    }
    std::printf("%lld blocks emulated; %s\n", g_blocks_run, ok ? "all ok" : "SOME FAILED");
    return ok ? 0 : 1;
}
