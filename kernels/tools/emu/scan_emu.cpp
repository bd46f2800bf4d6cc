// Runs kernels/cu/scan.cu on the CPU (cuda_emu.h; scan.sh builds and runs this) with the launch
// sequence of kernels/src/launch/scan.rs (kept in step by hand): forward v1 to v3, backward v1 to
// v4, and forward v3 / backward v4 on bf16 u, delta, z (against the reference on the same bf16
// values; du, ddelta, dz come back rounded to bf16), each backward followed by the reduce kernel
// that sums the workspace's partials, against an
// independent float64 reference, the plain recurrence and its hand adjoint step by step (checked
// itself against tests/fixtures/reference/selective_scan.safetensors). The cases cover an initial
// state and a dlast (the gradient of last_state): the forward starts from init, the backward from
// dlast and writes dinit. Outputs and the workspace are NaN-poisoned, as gpu-check poisons
// outputs: a partial the reduce reads but no block wrote shows. Each backward runs a second time
// with its blocks (and the reduce's) in the opposite order and the reduce on a 3-block grid
// (grid-stride), and every gradient must repeat bit for bit: no sum's order may depend on the
// schedule (float atomics would fail this wherever 3 or more terms meet).
#include "mma_emu.h"  // cuda_emu.h, float2, dynamic shared memory and cp.async
// What scan.cu uses beyond those: float4 and the read-only load.
struct float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float __ldg(const float* p) { return *p; }
#include SCAN_CU
#include <algorithm>
#include <fstream>
#include <limits>
#include <random>
#include <string>

using V = std::vector<double>;
struct Dims {
    int b, d, L, n, chunk;
    int nc() const { return (L + chunk - 1) / chunk; }
};
// z, bias (and softplus with them: `extras`), init empty when absent.
struct Data { V u, delta, A, B, C, D, z, bias, init; };
struct Res { V out, last, states, du, ddelta, dA, dB, dC, dD, dz, dbias, dinit; };

static double softplus(double v) { return std::max(v, 0.0) + std::log1p(std::exp(-std::fabs(v))); }
static double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_{-1} = init (or 0); its adjoint from dh = dlast.
static Res reference(const Dims& d, const Data& in, const V& dout, const V& dlast) {
    const int L = d.L, N = d.n, nc = d.nc();
    const bool extras = !in.z.empty();
    Res r;
    const size_t bdl = (size_t)d.b * d.d * L, bnl = (size_t)d.b * N * L, bdn = (size_t)d.b * d.d * N;
    r.out.assign(bdl, 0); r.last.assign(bdn, 0); r.states.assign(bdn * nc, 0);
    r.du.assign(bdl, 0); r.ddelta.assign(bdl, 0); r.dA.assign((size_t)d.d * N, 0); r.dB.assign(bnl, 0);
    r.dC.assign(bnl, 0); r.dD.assign(d.d, 0);
    if (extras) r.dz.assign(bdl, 0), r.dbias.assign(d.d, 0);
    if (!in.init.empty()) r.dinit.assign(bdn, 0);
    for (int b = 0; b < d.b; ++b)
        for (int c = 0; c < d.d; ++c) {
            const size_t row = ((size_t)b * d.d + c) * L, bc = (size_t)b * d.d + c;
            auto bo = [&](int n, int t) { return ((size_t)b * N + n) * L + t; };
            std::vector<V> h(L + 1, V(N, 0.0));  // h[t + 1] = h_t
            if (!in.init.empty()) for (int n = 0; n < N; ++n) h[0][n] = in.init[bc * N + n];
            V dt(L), sig(L), y(L);
            for (int t = 0; t < L; ++t) {
                if (t % d.chunk == 0) for (int n = 0; n < N; ++n) r.states[(bc * nc + t / d.chunk) * N + n] = h[t][n];
                const double raw = in.delta[row + t] + (extras ? in.bias[c] : 0.0);
                dt[t] = extras ? softplus(raw) : raw;
                sig[t] = extras ? sigm(raw) : 1.0;
                y[t] = in.D[c] * in.u[row + t];
                for (int n = 0; n < N; ++n) {
                    h[t + 1][n] = std::exp(dt[t] * in.A[c * N + n]) * h[t][n] + dt[t] * in.B[bo(n, t)] * in.u[row + t];
                    y[t] += in.C[bo(n, t)] * h[t + 1][n];
                }
                const double z = extras ? in.z[row + t] : 0.0;
                r.out[row + t] = extras ? y[t] * z * sigm(z) : y[t];
            }
            for (int n = 0; n < N; ++n) r.last[bc * N + n] = h[L][n];
            V dh(N);
            for (int n = 0; n < N; ++n) dh[n] = dlast[bc * N + n];
            for (int t = L - 1; t >= 0; --t) {
                const double u = in.u[row + t], g = dout[row + t];
                double dy = g;
                if (extras) {
                    const double z = in.z[row + t], s = sigm(z);
                    dy = g * z * s;
                    r.dz[row + t] = g * y[t] * s * (1 + z * (1 - s));
                }
                r.dD[c] += dy * u;
                double du = in.D[c] * dy, ddt = 0;
                for (int n = 0; n < N; ++n) {
                    const double e = std::exp(dt[t] * in.A[c * N + n]);
                    r.dC[bo(n, t)] += dy * h[t + 1][n];
                    dh[n] += dy * in.C[bo(n, t)];
                    ddt += dh[n] * (in.A[c * N + n] * e * h[t][n] + in.B[bo(n, t)] * u);
                    r.dA[c * N + n] += dh[n] * dt[t] * e * h[t][n];
                    r.dB[bo(n, t)] += dh[n] * dt[t] * u;
                    du += dh[n] * dt[t] * in.B[bo(n, t)];
                    dh[n] *= e;
                }
                r.du[row + t] = du;
                r.ddelta[row + t] = ddt * sig[t];
                if (extras) r.dbias[c] += ddt * sig[t];
            }
            if (!in.init.empty()) for (int n = 0; n < N; ++n) r.dinit[bc * N + n] = dh[n];
        }
    return r;
}

using F = std::vector<float>;
static F tof(const V& v) { return F(v.begin(), v.end()); }
static V tod(const F& v) { return V(v.begin(), v.end()); }
static F nans(size_t n) { return F(n, std::numeric_limits<float>::quiet_NaN()); }

// bf16 buffers (bit patterns, as the kernels take them): rounded to nearest even, widened exactly.
// Their length is rounded up to an even count: the bf16 kernels read the aligned 4-byte word
// holding an element, as the engine's allocations (4-byte multiples) allow.
using H = std::vector<unsigned short>;
static H tobf(const F& v) {
    H h((v.size() + 1) / 2 * 2, 0);
    for (size_t i = 0; i < v.size(); ++i) h[i] = (unsigned short)float_to_bf16(v[i]);
    return h;
}
static F widen(const H& h, size_t n) {
    F f(n);
    for (size_t i = 0; i < n; ++i) f[i] = bf16_to_float(h[i]);
    return f;
}
static V round_bf16(const V& v) { return tod(widen(tobf(tof(v)), v.size())); }

// A kernel with its blocks run in the opposite order (the emulator runs blocks one after another).
template <auto K, class P>
static void reversed(P p) {
    blockIdx = {gridDim.x - 1 - blockIdx.x, gridDim.y - 1 - blockIdx.y, gridDim.z - 1 - blockIdx.z};
    K(p);
}

// The backward's launches in kernels/src/launch/scan.rs: version `bwd` (1 to 3) writes du, ddelta,
// dz, dinit (with `has_init`) and its partials into the workspace, the reduce sums them into the
// rest. `q` has the inputs; its outputs are set here. `again`: blocks reversed, the reduce on 3 blocks.
struct Grads { F du, ddelta, dz, dinit, dA, dB, dC, dD, dbias; };
static Grads emulate_backward(const Dims& d, ScanBackwardParams q, int bwd, bool has_init, bool again, bool bf16) {
    const int ch = bwd >= 3 ? 16 : 8, nblk = (d.d + ch - 1) / ch;
    const size_t bdl = (size_t)d.b * d.d * d.L, bnl = (size_t)d.b * d.n * d.L, bdn = (size_t)d.b * d.d * d.n;
    Grads g{nans(bdl), nans(bdl), nans(bdl), nans(bdn), nans((size_t)d.d * d.n), nans(bnl), nans(bnl), nans(d.d),
            nans(d.d)};
    F part = nans((size_t)nblk * 2 * bnl + bdn + 2 * (size_t)d.b * d.d);
    q.du = g.du.data(), q.ddelta = g.ddelta.data(), q.dz = q.z ? g.dz.data() : nullptr;
    H du16 = tobf(g.du), ddelta16 = tobf(g.ddelta), dz16 = tobf(g.dz);  // NaN bit patterns
    if (bf16) {
        q.du = reinterpret_cast<float*>(du16.data()), q.ddelta = reinterpret_cast<float*>(ddelta16.data());
        q.dz = q.z ? reinterpret_cast<float*>(dz16.data()) : nullptr;
    }
    q.dinit = has_init ? g.dinit.data() : nullptr, q.part = part.data();
    using K = void (*)(ScanBackwardParams);
    const K kernels[4][2] = {{selective_scan_backward_v1_f32, reversed<selective_scan_backward_v1_f32, ScanBackwardParams>},
                             {selective_scan_backward_f32, reversed<selective_scan_backward_f32, ScanBackwardParams>},
                             {selective_scan_backward_v3_f32, reversed<selective_scan_backward_v3_f32, ScanBackwardParams>},
                             {selective_scan_backward_v4_f32, reversed<selective_scan_backward_v4_f32, ScanBackwardParams>}};
    if (bwd == 4) emu_smem(4 * (size_t)scan_smem_floats(false, 16 * ch, std::max(d.chunk, 1)));
    const K bf16_kernel[2] = {selective_scan_backward_v4_bf16, reversed<selective_scan_backward_v4_bf16, ScanBackwardParams>};
    if (d.b * d.d > 0)
        emu_launch(bf16 ? bf16_kernel[again] : kernels[bwd - 1][again], EmuDim3{(unsigned)nblk, (unsigned)d.b, 1}, 16 * ch, q);
    if (bf16) g.du = widen(du16, bdl), g.ddelta = widen(ddelta16, bdl), g.dz = widen(dz16, bdl);
    ScanBwdReduceParams r{g.dA.data(), g.dB.data(), g.dC.data(), g.dD.data(), q.delta_bias ? g.dbias.data() : nullptr,
                          part.data(), d.b, d.d, d.L, d.n, nblk};
    const long long total = 2 * (long long)bnl + (long long)d.d * d.n + 2 * d.d;
    const unsigned blocks = again ? 3 : (unsigned)((total + 255) / 256);
    if (total > 0)
        emu_launch(again ? reversed<selective_scan_backward_reduce_f32, ScanBwdReduceParams>
                         : selective_scan_backward_reduce_f32,
                   EmuDim3{blocks, 1, 1}, 256, r);
    return g;
}

// Every gradient of `a` and `b` the same bits (NaNs included: an unwritten output fails elsewhere).
static bool same_bits(const Grads& a, const Grads& b) {
    const F* x[] = {&a.du, &a.ddelta, &a.dz, &a.dinit, &a.dA, &a.dB, &a.dC, &a.dD, &a.dbias};
    const F* y[] = {&b.du, &b.ddelta, &b.dz, &b.dinit, &b.dA, &b.dB, &b.dC, &b.dD, &b.dbias};
    for (int k = 0; k < 9; ++k)
        if (x[k]->size() != y[k]->size() || std::memcmp(x[k]->data(), y[k]->data(), x[k]->size() * 4) != 0) return false;
    return true;
}

// The launches of kernels/src/launch/scan.rs: forward `fwd` (1 to 3), then backward `bwd` (1 to 4)
// on that forward's chunk states, twice (see emulate_backward); `repeats` says whether the second
// run gave the same bits. `bf16`: forward v3 and backward v4 on bf16 u, delta, z (the caller's
// values, already bf16 ones), with du, ddelta, dz written in bf16.
static Res emulate(const Dims& d, const Data& in, const V& dout_d, const V& dlast_d, int fwd, int bwd, bool dlast_on,
                   bool& repeats, bool bf16 = false) {
    F u = tof(in.u), delta = tof(in.delta), A = tof(in.A), B = tof(in.B), C = tof(in.C), D = tof(in.D), z = tof(in.z),
      bias = tof(in.bias), init = tof(in.init), dout = tof(dout_d), dlast = tof(dlast_d);
    const bool extras = !in.z.empty(), has_init = !in.init.empty();
    const size_t bdl = (size_t)d.b * d.d * d.L, bnl = (size_t)d.b * d.n * d.L, bdn = (size_t)d.b * d.d * d.n;
    F out = nans(bdl), last = nans(bdn), states = nans(bdn * d.nc());
    ScanForwardParams p{out.data(), last.data(), states.data(), u.data(), delta.data(), A.data(), B.data(), C.data(),
                        D.data(), extras ? z.data() : nullptr, extras ? bias.data() : nullptr,
                        has_init ? init.data() : nullptr, extras, d.b, d.d, d.L, d.n, d.chunk};
    // cp.async may read only the inputs (the emulator aborts on a read outside them)
    g_global.clear();
    for (const F* f : {&u, &delta, &B, &C, &z, &dout, &states})
        if (!f->empty()) g_global.push_back({reinterpret_cast<const unsigned char*>(f->data()), f->size() * 4});
    H u16 = tobf(u), delta16 = tobf(delta), z16 = tobf(z);
    if (bf16) {
        p.u = reinterpret_cast<const float*>(u16.data()), p.delta = reinterpret_cast<const float*>(delta16.data());
        p.z = extras ? reinterpret_cast<const float*>(z16.data()) : nullptr;
        for (const H* h : {&u16, &delta16, &z16})
            if (!h->empty()) g_global.push_back({reinterpret_cast<const unsigned char*>(h->data()), h->size() * 2});
    }
    if (fwd == 1)
        emu_launch(selective_scan_forward_v1_f32, EmuDim3{(unsigned)((d.b * d.d + 127) / 128), 1, 1}, 128, p);
    else if (fwd == 2)
        emu_launch(selective_scan_forward_f32, EmuDim3{(unsigned)((d.d + 7) / 8), (unsigned)d.b, 1}, 128, p);
    else {
        emu_smem(4 * (size_t)scan_smem_floats(true, 128, std::max(d.chunk, 1)));
        emu_launch(bf16 ? selective_scan_forward_v3_bf16 : selective_scan_forward_v3_f32,
                   EmuDim3{(unsigned)((d.d + 7) / 8), (unsigned)d.b, 1}, 128, p);
    }
    // backward (the outputs and workspace set by emulate_backward)
    ScanBackwardParams q{nullptr, nullptr, nullptr, nullptr, nullptr,
                         u.data(), delta.data(), A.data(), B.data(), C.data(), D.data(),
                         extras ? z.data() : nullptr, extras ? bias.data() : nullptr, states.data(), dout.data(),
                         dlast_on ? dlast.data() : nullptr, extras, d.b, d.d, d.L, d.n, d.chunk};
    q.u = p.u, q.delta = p.delta, q.z = p.z;
    const Grads g = emulate_backward(d, q, bwd, has_init, false, bf16);
    repeats = same_bits(g, emulate_backward(d, q, bwd, has_init, true, bf16));
    Res r{tod(out), tod(last), tod(states), tod(g.du), tod(g.ddelta), tod(g.dA), tod(g.dB), tod(g.dC), tod(g.dD), {}, {}, {}};
    if (extras) r.dz = tod(g.dz), r.dbias = tod(g.dbias);
    if (has_init) r.dinit = tod(g.dinit);
    return r;
}

// max |a - b| / max |b| (a NaN anywhere: a kernel left an output unwritten).
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

static bool compare(const std::string& what, const Res& got, const Res& want, double tol) {
    const std::pair<const char*, std::pair<const V*, const V*>> all[] = {
        {"out", {&got.out, &want.out}},       {"last", {&got.last, &want.last}},
        {"states", {&got.states, &want.states}}, {"du", {&got.du, &want.du}},
        {"ddelta", {&got.ddelta, &want.ddelta}}, {"dA", {&got.dA, &want.dA}},
        {"dB", {&got.dB, &want.dB}},          {"dC", {&got.dC, &want.dC}},
        {"dD", {&got.dD, &want.dD}},          {"dz", {&got.dz, &want.dz}},
        {"dbias", {&got.dbias, &want.dbias}}, {"dinit", {&got.dinit, &want.dinit}}};
    bool ok = true;
    std::printf("%-46s", what.c_str());
    for (auto& [name, pr] : all) {
        if (pr.second->empty() && pr.first->empty()) continue;
        const double e = rel(*pr.first, *pr.second);
        ok = ok && e < tol;
        std::printf(" %s %.0e%s", name, e, e < tol ? "" : "(!)");
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

// The float64 reference against the PyTorch fixture (B 2, D 8, L 37, N 4, z, bias, softplus).
static bool check_fixture(const char* path) {
    std::ifstream f(path, std::ios::binary);
    g_st.assign(std::istreambuf_iterator<char>(f), {});
    std::memcpy(&g_hdr, g_st.data(), 8);
    const Dims d{2, 8, 37, 4, 37};
    Data in{st_get("u"), st_get("delta"), st_get("A"), st_get("B"), st_get("C"), st_get("D"), st_get("z"),
            st_get("delta_bias"), {}};
    const V dout = st_get("dout"), dlast((size_t)2 * 8 * 4, 0.0);
    Res want = reference(d, in, dout, dlast);
    Res fx{st_get("out"), st_get("last_state"), want.states, st_get("grad.u"), st_get("grad.delta"),
           st_get("grad.A"), st_get("grad.B"), st_get("grad.C"), st_get("grad.D"), st_get("grad.z"),
           st_get("grad.delta_bias"), {}};
    return compare("float64 reference vs fixture", want, fx, 1e-12);
}

static std::mt19937_64 g_rng(7);
static V uniform(size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    V v(n);
    for (auto& e : v) e = u(g_rng);
    return v;
}

// As gpu-check draws them: dt > 0 (softplus of delta, or small positive delta without it).
static Data random_data(const Dims& d, bool extras, bool init) {
    const size_t bdl = (size_t)d.b * d.d * d.L, bnl = (size_t)d.b * d.n * d.L;
    Data in{uniform(bdl, -1, 1), extras ? uniform(bdl, -4, 0.5) : uniform(bdl, 0.001, 0.1),
            uniform((size_t)d.d * d.n, -4, -0.1), uniform(bnl, -1, 1), uniform(bnl, -1, 1), uniform(d.d, -1, 1),
            {}, {}, {}};
    if (extras) in.z = uniform(bdl, -3, 3), in.bias = uniform(d.d, -1, 1);
    if (init) in.init = uniform((size_t)d.b * d.d * d.n, -2, 2);
    return in;
}

int main(int argc, char** argv) {
    bool ok = check_fixture(argv[1]);
    struct Case { const char* name; Dims d; bool extras, init, dlast; };
    const Case cases[] = {
        {"5 ch, L 37, N 4, chunk 8, z+bias, init+dlast", {2, 5, 37, 4, 8}, true, true, true},
        {"5 ch, L 37, N 4, chunk 8, plain", {2, 5, 37, 4, 8}, false, false, false},
        {"9 ch, L 100, N 16, chunk 40, init+dlast", {1, 9, 100, 16, 40}, false, true, true},
        {"9 ch, L 100, N 16, chunk 40, z+bias, dlast only", {1, 9, 100, 16, 40}, true, false, true},
        {"3 ch, L 20, N 3, chunk 64 > L, init, no dlast", {2, 3, 20, 3, 20}, true, true, false},
        {"17 ch, L 1, N 16, chunk 1, init+dlast", {1, 17, 1, 16, 1}, true, true, true},
        {"4 ch, L 0, N 2, init+dlast (dinit = dlast)", {2, 4, 0, 2, 1}, false, true, true},
        {"3 x 40 ch (5 or 3 blocks), L 50, N 16, chunk 16, z+bias", {3, 40, 50, 16, 16}, true, false, true},
        {"21 ch, L 300, N 16, chunk 256 (16 windows), all", {1, 21, 300, 16, 256}, true, true, true},
    };
    const int only = argc > 2 ? std::atoi(argv[2]) : -1;
    for (int i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])); ++i) {
        const Case& c = cases[i];
        Data in = random_data(c.d, c.extras, c.init);
        V dout = uniform((size_t)c.d.b * c.d.d * c.d.L, -1, 1);
        V dlast = uniform((size_t)c.d.b * c.d.d * c.d.n, -1, 1);
        if (!c.dlast) std::fill(dlast.begin(), dlast.end(), 0.0);
        if (only >= 0 && only != i) continue;
        const Res want = reference(c.d, in, dout, dlast);
        for (auto [fwd, bwd] : {std::pair{3, 4}, std::pair{2, 3}, std::pair{2, 2}, std::pair{1, 1}}) {
            const std::string name = std::string(c.name) + " (v" + std::to_string(fwd) + "," + std::to_string(bwd) + ")";
            bool repeats = false;
            ok &= compare(name, emulate(c.d, in, dout, dlast, fwd, bwd, c.dlast, repeats), want, 1e-4);
            std::printf("%-46s repeats bit for bit with blocks reversed: %s\n", "", repeats ? "yes" : "NO (FAILED)");
            ok &= repeats;
        }
        // bf16 u, delta, z: against the reference on the same bf16 values; du, ddelta, dz are
        // rounded to bf16 (at most 2^-8 of the largest: bf16 keeps 8 significant bits), the rest f32.
        Data in16 = in;
        in16.u = round_bf16(in.u), in16.delta = round_bf16(in.delta), in16.z = round_bf16(in.z);
        const std::string name = std::string(c.name) + " (v3,v4 bf16)";
        bool repeats = false;
        ok &= compare(name, emulate(c.d, in16, dout, dlast, 3, 4, c.dlast, repeats, true), reference(c.d, in16, dout, dlast), 5e-3);
        std::printf("%-46s repeats bit for bit with blocks reversed: %s\n", "", repeats ? "yes" : "NO (FAILED)");
        ok &= repeats;
    }
    std::printf("%lld blocks emulated; %s\n", g_blocks_run, ok ? "all ok" : "SOME FAILED");
    return ok ? 0 : 1;
}
