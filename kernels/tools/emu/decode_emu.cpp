// Runs kernels/cu/decode.cu on the CPU (cuda_emu.h; decode.sh builds and runs this): one token
// of a Mamba-1 layer (decode_in, x_proj as decode_rows or inside decode_ssm, decode_ssm,
// out_proj) and of a Mamba-2 layer (decode_in with the conv over xBC, decode_ssd, out_proj of
// the gated norm), launched as kernels/src/launch/decode.rs launches them (grids, batch tiles,
// warps per row: kept in step by hand), against an independent float64 reference written from
// the math of model/src/mixer/{mamba1,mamba2}.rs's `step`. Every buffer a kernel writes starts
// as NaN; the states start random. Checks the kernels' logic, not their speed or the GPU's
// memory model (programmatic dependent launch is a no-op here).
#include "mma_emu.h"  // cuda_emu.h and dynamic shared memory

struct float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
template <class T>
T __ldg(const T* p) {
    return *p;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

#include DECODE_CU
#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>

using V = std::vector<double>;
using F = std::vector<float>;
static std::mt19937_64 rng(7);
static V uniform(size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    V v(n);
    for (auto& x : v) x = (float)u(rng);  // values an f32 holds exactly, so both sides see the same
    return v;
}
static F f32(const V& v) { return F(v.begin(), v.end()); }
static F nans(size_t n) { return F(n, std::numeric_limits<float>::quiet_NaN()); }
static double silu(double x) { return x / (1.0 + std::exp(-x)); }
static double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))); }

// ‖got - want‖ / ‖want‖ (infinite if anything is not finite).
static double rel(const F& got, const V& want) {
    double d = 0, w = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        d += (got[i] - want[i]) * (got[i] - want[i]);
        w += want[i] * want[i];
    }
    return std::sqrt(d) / std::max(std::sqrt(w), 1e-30);
}
static int failures = 0;
static void expect(const std::string& name, const F& got, const V& want) {
    const double e = rel(got, want);
    const bool ok = e <= 1e-5;
    failures += !ok;
    std::printf("%-60s %.2e %s\n", name.c_str(), e, ok ? "ok" : "FAILED");
}

// The launchers' choices (launch/decode.rs): batch rows per block, warps per weight row.
static int batch_tile(int batch, int cols) { return std::min(std::clamp(10 * 1024 / std::max(cols, 1), 1, 8), batch); }
static int split_for(int rows, int cols, int tiles) {
    int most = 1;
    for (int s : {8, 4, 2})
        if (cols / 4 >= 32 * s) { most = s; break; }
    for (int s : {1, 2, 4, 8})
        if (s == most || (rows + 8 / s - 1) / (8 / s) * tiles >= 2 * 132) return s;
    return most;
}
static void rows_kernel(float* out, const float* x, const float* norm_w, const float* w, int batch, int rows, int cols,
                        bool accumulate) {
    const int bt = batch_tile(batch, cols), tiles = (batch + bt - 1) / bt, split = split_for(rows, cols, tiles);
    DecodeRowsParams p{out, x, norm_w, w, batch, rows, cols, bt, split, accumulate, 1e-5f, 0};
    emu_smem(4 * bt * cols);
    emu_launch(decode_rows_f32, {(unsigned)((rows + 8 / split - 1) / (8 / split)), (unsigned)tiles, 1}, 256, p);
}
// decode_in over in_proj's `rows` rows, [conv_lo, conv_lo + conv_n) through the conv; with
// `emb` (V, M) and ids, layer 0's gather.
static void in_kernel(float* xc, float* rest, float* conv, float* r, const float* norm_w, const float* in_proj,
                      const float* conv_w, const float* conv_b, const float* emb, const float* ids, int vocab, int batch,
                      int m, int rows, int conv_lo, int conv_n, int k) {
    const int bt = batch_tile(batch, m), tiles = (batch + bt - 1) / bt, split = split_for(rows, m, tiles);
    DecodeInParams p{xc,  rest, conv,     r,       norm_w, in_proj, conv_w, conv_b, emb, ids,   batch,
                     m,   rows, conv_lo,  conv_n,  k,      bt,      split,  1e-5f,  vocab};
    emu_smem(4 * bt * m);
    emu_launch(decode_in_f32, {(unsigned)((rows + 8 / split - 1) / (8 / split)), (unsigned)tiles, 1}, 256, p);
}

// The reference's first half of a layer: [gather,] RMSNorm, in_proj, conv over `conv` rows.
// Returns in_proj's output (B, rows) with the conv rows replaced by silu(conv); shifts `window`.
static V ref_in(V& r, const V& norm_w, const V& in_proj, const V& conv_w, const V& conv_b, V& window, int batch,
                int m, int rows, int conv_lo, int conv_n, int k, const V* emb, const V& ids) {
    if (emb) {
        const int vocab = (int)(emb->size() / m);
        for (int b = 0; b < batch; ++b) {
            const int id = std::min(std::max((int)ids[b], 0), vocab - 1);
            std::copy(emb->begin() + (size_t)id * m, emb->begin() + (size_t)(id + 1) * m, r.begin() + (size_t)b * m);
        }
    }
    V out((size_t)batch * rows);
    for (int b = 0; b < batch; ++b) {
        double ss = 0;
        for (int i = 0; i < m; ++i) ss += r[b * m + i] * r[b * m + i];
        const double rstd = 1.0 / std::sqrt(ss / m + 1e-5);
        for (int j = 0; j < rows; ++j) {
            double v = 0;
            for (int i = 0; i < m; ++i) v += in_proj[(size_t)j * m + i] * r[b * m + i] * norm_w[i];
            v *= rstd;
            const int c = j - conv_lo;
            if (c >= 0 && c < conv_n) {
                double* w = &window[((size_t)b * conv_n + c) * k];
                std::rotate(w, w + 1, w + k);
                w[k - 1] = v;
                double s = conv_b[c];
                for (int t = 0; t < k; ++t) s += conv_w[(size_t)c * k + t] * w[t];
                v = silu(s);
            }
            out[(size_t)b * rows + j] = v;
        }
    }
    return out;
}
// r += out_proj [RMSNorm with w] y, y (B, cols).
static void ref_out(V& r, const V& out_proj, const V& y, const V* w, int batch, int m, int cols) {
    for (int b = 0; b < batch; ++b) {
        double scale = 1;
        if (w) {
            double ss = 0;
            for (int i = 0; i < cols; ++i) ss += y[b * cols + i] * y[b * cols + i];
            scale = 1.0 / std::sqrt(ss / cols + 1e-5);
        }
        for (int j = 0; j < m; ++j) {
            double v = 0;
            for (int i = 0; i < cols; ++i) v += out_proj[(size_t)j * cols + i] * y[b * cols + i] * (w ? (*w)[i] : 1.0);
            r[b * m + j] += v * scale;
        }
    }
}
static V ids_for(int batch, int vocab) {
    V ids(batch);
    for (int b = 0; b < batch; ++b) ids[b] = b == 0 ? vocab + 5 : b == 1 ? -3 : (double)(rng() % vocab);
    return ids;
}
static V column(const V& a, int batch, int width, int from, int n) {  // columns [from, from + n) of (batch, width)
    V out((size_t)batch * n);
    for (int b = 0; b < batch; ++b)
        for (int i = 0; i < n; ++i) out[(size_t)b * n + i] = a[(size_t)b * width + from + i];
    return out;
}

// One Mamba-1 layer (M, D, N, R, K); `first`: from a 37-row embedding.
static void mamba1(int batch, int m, int d, int n, int r_, int k, bool first) {
    const int xdim = r_ + 2 * n, vocab = 37;
    const double fm = 1 / std::sqrt((double)m), fd = 1 / std::sqrt((double)d);
    V norm_w = uniform(m, 0.5, 1.5), in_proj = uniform((size_t)2 * d * m, -fm, fm), conv_w = uniform((size_t)d * k, -.5, .5),
      conv_b = uniform(d, -.5, .5), x_proj = uniform((size_t)xdim * d, -fd, fd),
      dt_w = uniform((size_t)d * r_, -1 / std::sqrt((double)r_), 1 / std::sqrt((double)r_)), dt_b = uniform(d, -4, -1),
      a = uniform((size_t)d * n, -16, -1), d_skip = uniform(d, .5, 1.5), out_proj = uniform((size_t)m * d, -fd, fd);
    V r = uniform((size_t)batch * m, -1, 1), window = uniform((size_t)batch * d * k, -1, 1),
      state = uniform((size_t)batch * d * n, -1, 1), emb = uniform((size_t)vocab * m, -1, 1), ids = ids_for(batch, vocab);
    // the kernels
    F fr = first ? nans(r.size()) : f32(r), fwin = f32(window), fstate = f32(state), fxc = nans((size_t)batch * d),
      fz = nans((size_t)batch * d), fxdbl = nans((size_t)batch * xdim), fy = nans((size_t)batch * d);
    F w_norm = f32(norm_w), w_in = f32(in_proj), w_cw = f32(conv_w), w_cb = f32(conv_b), w_x = f32(x_proj),
      w_dt = f32(dt_w), w_dtb = f32(dt_b), w_a = f32(a), w_d = f32(d_skip), w_out = f32(out_proj), femb = f32(emb),
      fids = f32(ids);
    in_kernel(fxc.data(), fz.data(), fwin.data(), fr.data(), w_norm.data(), w_in.data(), w_cw.data(), w_cb.data(),
              first ? femb.data() : nullptr, first ? fids.data() : nullptr, vocab, batch, m, 2 * d, 0, d, k);
    const bool fused = d <= 256 && xdim <= 64;  // DecodeDims::fuses_x_proj
    if (!fused) rows_kernel(fxdbl.data(), fxc.data(), nullptr, w_x.data(), batch, xdim, d, false);
    DecodeSsmParams sp{fy.data(), fstate.data(), fxdbl.data(), fxc.data(), fz.data(), w_dt.data(), w_dtb.data(),
                       w_a.data(), w_d.data(), fused ? w_x.data() : nullptr, batch, d, n, r_};
    emu_smem(4 * (xdim + (fused ? 256 : 0)));
    emu_launch(fused ? decode_ssm_xproj_f32 : decode_ssm_f32, {(unsigned)(d / 16), (unsigned)batch, 1}, 256, sp);
    rows_kernel(fr.data(), fy.data(), nullptr, w_out.data(), batch, m, d, true);
    // the reference
    V xz = ref_in(r, norm_w, in_proj, conv_w, conv_b, window, batch, m, 2 * d, 0, d, k, first ? &emb : nullptr, ids);
    V xc = column(xz, batch, 2 * d, 0, d), z = column(xz, batch, 2 * d, d, d), xdbl((size_t)batch * xdim),
      y((size_t)batch * d);
    for (int b = 0; b < batch; ++b) {
        for (int j = 0; j < xdim; ++j)
            for (int c = 0; c < d; ++c) xdbl[(size_t)b * xdim + j] += x_proj[(size_t)j * d + c] * xc[(size_t)b * d + c];
        const double* xd = &xdbl[(size_t)b * xdim];
        for (int c = 0; c < d; ++c) {
            double dt = dt_b[c];
            for (int q = 0; q < r_; ++q) dt += dt_w[(size_t)c * r_ + q] * xd[q];
            dt = softplus(dt);
            const double x = xc[(size_t)b * d + c];
            double acc = 0;
            for (int q = 0; q < n; ++q) {
                double& s = state[((size_t)b * d + c) * n + q];
                s = std::exp(dt * a[(size_t)c * n + q]) * s + dt * xd[r_ + q] * x;
                acc += xd[r_ + n + q] * s;
            }
            y[(size_t)b * d + c] = (acc + d_skip[c] * x) * silu(z[(size_t)b * d + c]);
        }
    }
    ref_out(r, out_proj, y, nullptr, batch, m, d);
    char name[96];
    std::snprintf(name, sizeof name, "mamba1%s B%d M%d D%d N%d R%d K%d%s", first ? " first" : "", batch, m, d, n, r_, k,
                  fused ? " (x_proj fused)" : "");
    for (auto [what, got, want] : {std::tuple{"residual", &fr, &r}, {"conv_state", &fwin, &window},
                                   {"ssm_state", &fstate, &state}, {"xc", &fxc, &xc}, {"z", &fz, &z},
                                   {"xdbl", &fxdbl, &xdbl}, {"y", &fy, &y}})
        expect(std::string(name) + " " + what, *got, *want);
}

// One Mamba-2 layer: H heads of P, N, G groups, K; `gated`: the norm (G must be 1), else none.
static void mamba2(int batch, int m, int h, int p, int n, int g, int k, bool gated, bool first) {
    const int e = h * p, conv_dim = e + 2 * g * n, rows = e + conv_dim + h, vocab = 37;
    const double fm = 1 / std::sqrt((double)m), fe = 1 / std::sqrt((double)e);
    V norm_w = uniform(m, 0.5, 1.5), in_proj = uniform((size_t)rows * m, -fm, fm),
      conv_w = uniform((size_t)conv_dim * k, -.5, .5), conv_b = uniform(conv_dim, -.5, .5), dt_bias = uniform(h, -4, -1),
      a = uniform(h, -16, -1), d_skip = uniform(h, .5, 1.5), out_proj = uniform((size_t)m * e, -fe, fe),
      gate_w = uniform(e, .5, 1.5);
    V r = uniform((size_t)batch * m, -1, 1), window = uniform((size_t)batch * conv_dim * k, -1, 1),
      state = uniform((size_t)batch * e * n, -1, 1), emb = uniform((size_t)vocab * m, -1, 1), ids = ids_for(batch, vocab);
    F fr = first ? nans(r.size()) : f32(r), fwin = f32(window), fstate = f32(state), fxbc = nans((size_t)batch * conv_dim),
      fzdt = nans((size_t)batch * (e + h)), fy = nans((size_t)batch * e);
    F w_norm = f32(norm_w), w_in = f32(in_proj), w_cw = f32(conv_w), w_cb = f32(conv_b), w_dtb = f32(dt_bias),
      w_a = f32(a), w_d = f32(d_skip), w_out = f32(out_proj), w_gate = f32(gate_w), femb = f32(emb), fids = f32(ids);
    in_kernel(fxbc.data(), fzdt.data(), fwin.data(), fr.data(), w_norm.data(), w_in.data(), w_cw.data(), w_cb.data(),
              first ? femb.data() : nullptr, first ? fids.data() : nullptr, vocab, batch, m, rows, e, conv_dim, k);
    DecodeSsdParams sp{fy.data(), fstate.data(), fxbc.data(), fzdt.data(), w_dtb.data(), w_a.data(), w_d.data(),
                       batch, h, p, n, g, 0};
    emu_smem(8 * n);
    emu_launch(decode_ssd_f32, {(unsigned)(h * ((p + 7) / 8)), (unsigned)batch, 1}, 256, sp);
    rows_kernel(fr.data(), fy.data(), gated ? w_gate.data() : nullptr, w_out.data(), batch, m, e, true);
    // the reference: z, xBC, dt = split(in_proj u); per head the SSD recurrence, then the gate
    V proj = ref_in(r, norm_w, in_proj, conv_w, conv_b, window, batch, m, rows, e, conv_dim, k, first ? &emb : nullptr, ids);
    V xbc = column(proj, batch, rows, e, conv_dim), zdt((size_t)batch * (e + h)), y((size_t)batch * e);
    for (int b = 0; b < batch; ++b) {
        for (int i = 0; i < e; ++i) zdt[(size_t)b * (e + h) + i] = proj[(size_t)b * rows + i];
        for (int i = 0; i < h; ++i) zdt[(size_t)b * (e + h) + e + i] = proj[(size_t)b * rows + e + conv_dim + i];
        const double* xr = &xbc[(size_t)b * conv_dim];
        for (int hh = 0; hh < h; ++hh) {
            const int gi = hh / (h / g);
            const double dt = softplus(zdt[(size_t)b * (e + h) + e + hh] + dt_bias[hh]), da = std::exp(dt * a[hh]);
            for (int c = hh * p; c < (hh + 1) * p; ++c) {
                double acc = 0;
                for (int q = 0; q < n; ++q) {
                    double& s = state[((size_t)b * e + c) * n + q];
                    s = da * s + dt * xr[c] * xr[e + gi * n + q];
                    acc += xr[e + g * n + gi * n + q] * s;
                }
                y[(size_t)b * e + c] = (acc + d_skip[hh] * xr[c]) * silu(zdt[(size_t)b * (e + h) + c]);
            }
        }
    }
    ref_out(r, out_proj, y, gated ? &gate_w : nullptr, batch, m, e);
    char name[96];
    std::snprintf(name, sizeof name, "mamba2%s B%d M%d H%dx%d N%d G%d K%d%s", first ? " first" : "", batch, m, h, p, n, g,
                  k, gated ? " (norm)" : "");
    for (auto [what, got, want] : {std::tuple{"residual", &fr, &r}, {"conv_state", &fwin, &window},
                                   {"ssm_state", &fstate, &state}, {"xbc", &fxbc, &xbc}, {"zdt", &fzdt, &zdt},
                                   {"y", &fy, &y}})
        expect(std::string(name) + " " + what, *got, *want);
}

int main() {
    mamba1(3, 40, 80, 16, 3, 4, false);   // awkward: a 10-float4 row, a partial batch tile of x_proj rows
    mamba1(1, 128, 256, 16, 8, 4, true);  // the default model's layer: x_proj inside decode_ssm; the gather
    mamba1(2, 16, 32, 4, 1, 1, false);    // d_conv 1
    mamba1(9, 40, 320, 72, 20, 8, true);  // two batch tiles, d_state past 64, d_conv 8, ids past both ends
    mamba2(3, 40, 5, 12, 20, 1, 4, true, false);  // headdim 12: a warp tile past the head's channels
    mamba2(2, 16, 4, 8, 40, 2, 1, false, false);  // 2 groups, no norm, d_state past a warp, d_conv 1
    mamba2(2, 64, 6, 16, 8, 3, 8, false, true);   // 3 groups, d_conv 8, the gather
    mamba2(9, 64, 4, 16, 16, 1, 4, true, true);   // two batch tiles
    std::printf("%s: %d failed\n", failures ? "FAILED" : "all passed", failures);
    return failures ? 1 : 0;
}
