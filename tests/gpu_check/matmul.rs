//! `cu/matmul.cu` (every kernel version) against `ops::matmul::cpu::matmul`:
//! - a sweep of awkward shapes (m, n, k each in {1, 7, 33, 127, 130}) for each of the four
//!   layouts (A, B row- or column-major), each with a random batch (1-3), broadcast operand
//!   (batch stride 0), start offset (0, 1 or 4 elements: views), leading-dimension padding
//!   and batch-stride padding, so both the float4 and the scalar paths and every partial tile run;
//! - k == 0 (zeros), a batch of 70,000 (more than grid z's 65,535: several launches), and
//!   n in {4, 132, 260} (C's float4 stores; C at offsets 0, 1, 4) for each layout;
//! - the Mamba shapes: x (B*L 2048, 768) @ w (768, 3072) forward (w row-major, and stored
//!   (3072, 768) as a Linear weight), dx = dy @ w^T and dw = x^T @ dy as the engine's
//!   backward builds them (transposed views), and a batched forward with w broadcast;
//! - 4096^3 for each layout and version: correctness and GFLOP/s (cuBLAS f32 ~50 TFLOP/s,
//!   kernels/tools/cublas_ref.py), plus `matmul_f32` (the contiguous wrapper).
//!
//! - small m (generation: `matmul_strided_f32` runs `matmul_small_m_{nt,nn}_f32` for
//!   m <= `Gpu::MATMUL_SMALL_M`): m in {1, 2, 3, 8, 9 (tiled)} x n in {1, 33, 3072} x k in
//!   {1, 7, 768, 1536} for each layout, with the sweep's random batch, broadcast, offsets and
//!   padding; k == 0, k past A's shared chunk, a contiguous column (n == 1), a batch of 70,000;
//!   timing of the generation shapes (1 x 768 @ 768 x 3072 and the others, B a Linear weight)
//!   in GB/s of weight bytes, against the tiled kernel (`MATMUL_VERSION`) on the same shape.
//!
//! Tolerance, per element: |gpu - cpu| <= 1e-5 * sqrt(k) * max(1, |cpu|); the error column
//! is the largest |gpu - cpu| / (sqrt(k) * max(1, |cpu|)). With inputs in [-1, 1) a sum of k
//! products is ~sqrt(k)/3 and the two f32 sums (different orders) differ by ~1.2e-7 * k / 15:
//! ~20x margin at k = 4096 where |cpu| < 1, ~400x where |cpu| ~ sqrt(k)/3; a wrong index
//! gives O(1) errors. Outputs are views into NaN-poisoned buffers with a spare element on
//! each side, which must stay NaN (no write outside C).

use crate::{poisoned, Check, Res, Row};
use mamba_engine::ops::matmul::cpu::{matmul, MatStrides as CpuStrides};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::{Gpu, MatStrides, Matmul, MATMUL_VERSION, MATMUL_VERSIONS};

/// Per-element tolerance, relative to sqrt(k) * max(1, |cpu|).
const MM_TOL: f64 = 1e-5;
/// For `Case::check` and `launch`: run `matmul_strided_f32` (the engine's entry, which picks
/// the small-m kernels for small m) instead of one tiled version.
const AUTO: u32 = 0;
/// Layout names: A then B, n = row-major, t = column-major (transposed storage).
const LAYOUTS: [(bool, bool, &str); 4] =
    [(false, false, "nn"), (false, true, "nt"), (true, false, "tn"), (true, true, "tt")];

/// How one operand of logical shape (nb, rows, cols) is stored.
#[derive(Clone, Copy)]
struct Spec {
    col_major: bool,
    broadcast: bool,
    /// Elements before the view starts.
    off: usize,
    /// Leading dimension minus the contiguous extent.
    pad: usize,
    /// Batch stride minus the matrix's storage (ignored when broadcast).
    batch_pad: usize,
}

impl Spec {
    fn plain(col_major: bool) -> Spec {
        Spec { col_major, broadcast: false, off: 0, pad: 0, batch_pad: 0 }
    }
}

/// One stored operand: the view starts at `data[off]` with strides `s`.
struct Operand {
    data: Vec<f32>,
    off: usize,
    s: CpuStrides,
}

impl Operand {
    /// Random values in [-1, 1) laid out as `spec` says.
    fn random(c: &mut Check, nb: usize, rows: usize, cols: usize, spec: Spec) -> Operand {
        let (outer, inner) = if spec.col_major { (cols, rows) } else { (rows, cols) };
        let ld = inner + spec.pad;
        let mat = outer * ld;
        let batch = if spec.broadcast { 0 } else { mat + spec.batch_pad };
        let stored = if spec.broadcast { 1 } else { nb };
        let len = spec.off + (stored - 1) * batch + mat;
        let (row, col) = if spec.col_major { (1, ld) } else { (ld, 1) };
        Operand { data: c.uniform(len.max(1), -1.0, 1.0), off: spec.off, s: CpuStrides { batch, row, col } }
    }

    /// `m` (rows, cols) row-major, as stored by `random` with `Spec::plain(false)`.
    fn from_row_major(data: Vec<f32>, rows: usize, cols: usize, col_major: bool) -> Operand {
        if !col_major {
            return Operand { data, off: 0, s: CpuStrides { batch: 0, row: cols, col: 1 } };
        }
        let mut t = vec![0f32; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = data[r * cols + c];
            }
        }
        Operand { data: t, off: 0, s: CpuStrides { batch: 0, row: 1, col: rows } }
    }

    fn gpu_strides(&self) -> MatStrides {
        MatStrides { batch: self.s.batch, row: self.s.row, col: self.s.col }
    }
}

/// One product: shapes and both operands.
struct Case {
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn random(c: &mut Check, nb: usize, m: usize, n: usize, k: usize, sa: Spec, sb: Spec) -> Case {
        let (a, b) = (Operand::random(c, nb, m, k, sa), Operand::random(c, nb, k, n, sb));
        Case { nb, m, n, k, a, b }
    }

    /// The CPU twin's answer, contiguous (nb, m, n).
    fn want(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.nb * self.m * self.n];
        let (a, b) = (&self.a.data[self.a.off..], &self.b.data[self.b.off..]);
        matmul(self.nb, self.m, self.n, self.k, a, self.a.s, b, self.b.s, &mut out);
        out
    }

    fn upload(&self) -> Res<(DeviceBuffer<f32>, DeviceBuffer<f32>)> {
        Ok((DeviceBuffer::from_slice(&self.a.data)?, DeviceBuffer::from_slice(&self.b.data)?))
    }

    /// Run `version` on the GPU with C a view at `c_off` of a poisoned buffer; compare with
    /// `want`: (worst scaled error, ok). The elements around the view must stay NaN.
    fn check(&self, c: &Check, version: u32, c_off: usize, want: &[f32]) -> Res<(f64, bool)> {
        let (da, db) = self.upload()?;
        let len = self.nb * self.m * self.n;
        let out = poisoned(c_off + len + 1)?;
        let mut view = out.index(c_off..c_off + len);
        let (av, bv) = (da.index(self.a.off..), db.index(self.b.off..));
        let (sa, sb) = (self.a.gpu_strides(), self.b.gpu_strides());
        let (nb, m, n, k) = (self.nb, self.m, self.n, self.k);
        launch(c.gpu, version, Matmul { a: &av, sa, b: &bv, sb, c: &mut view, nb, m, n, k })?;
        c.gpu.stream.synchronize()?;
        let got = out.as_host_vec()?;
        let (err, ok) = scaled_error(&got[c_off..c_off + len], want, self.k);
        let untouched = got[..c_off].iter().chain(&got[c_off + len..]).all(|v| v.is_nan());
        Ok((err, ok && untouched))
    }
}

/// Tiled kernel `version`, or `matmul_strided_f32` for `AUTO`.
fn launch(gpu: &Gpu, version: u32, args: Matmul) -> mamba_kernels::Result<()> {
    if version == AUTO {
        gpu.matmul_strided_f32(args)
    } else {
        gpu.matmul_strided_f32_version(version, args)
    }
}

/// Largest |gpu - cpu| / (sqrt(k) * max(1, |cpu|)) and whether all are within `MM_TOL` (NaN fails).
fn scaled_error(gpu: &[f32], cpu: &[f32], k: usize) -> (f64, bool) {
    let scale = (k.max(1) as f64).sqrt();
    let mut worst = 0.0f64;
    let mut ok = gpu.len() == cpu.len();
    for (&g, &w) in gpu.iter().zip(cpu) {
        let e = (g as f64 - w as f64).abs() / (scale * (w as f64).abs().max(1.0));
        let e = if e.is_finite() { e } else { f64::INFINITY };
        ok &= e <= MM_TOL;
        worst = worst.max(e);
    }
    (worst, ok)
}

/// A random storage for one operand of the sweep: offset 0/1/4, ld padding 0, 1, or up to
/// a multiple of 4 (+0 or +4: the float4 path), batch padding 0/1/4, broadcast if asked.
fn random_spec(c: &mut Check, col_major: bool, broadcast: bool, inner: usize) -> Spec {
    let to4 = inner.next_multiple_of(4) - inner;
    let pad = [0, 1, to4, to4 + 4][c.rng.below(4)];
    Spec { col_major, broadcast, off: [0, 1, 4][c.rng.below(3)], pad, batch_pad: [0, 1, 4][c.rng.below(3)] }
}

pub fn run(c: &mut Check) -> Res<()> {
    sweep(c)?;
    special(c)?;
    mamba(c)?;
    small_m(c)?;
    small_m_special(c)?;
    generation(c)?;
    if c.timing {
        big(c)?;
    }
    Ok(())
}

/// Every (m, n, k) in {1, 7, 33, 127, 130}^3 for each layout and version: one row per (version, layout).
fn sweep(c: &mut Check) -> Res<()> {
    const SIZES: [usize; 5] = [1, 7, 33, 127, 130];
    for &(at, bt, name) in &LAYOUTS {
        let mut results = vec![(0.0f64, true); MATMUL_VERSIONS.len()];
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &SIZES {
                    let nb = 1 + c.rng.below(3);
                    let bcast = if nb > 1 { c.rng.below(3) } else { 0 }; // 0 none, 1 a, 2 b
                    let sa = random_spec(c, at, bcast == 1, if at { m } else { k });
                    let sb = random_spec(c, bt, bcast == 2, if bt { k } else { n });
                    let case = Case::random(c, nb, m, n, k, sa, sb);
                    let want = case.want();
                    let c_off = [0, 1, 4][c.rng.below(3)];
                    for (r, &v) in results.iter_mut().zip(&MATMUL_VERSIONS) {
                        let (err, ok) = case.check(c, v, c_off, &want)?;
                        *r = (r.0.max(err), r.1 && ok);
                    }
                }
            }
        }
        for (&(err, ok), &v) in results.iter().zip(&MATMUL_VERSIONS) {
            let kernel = format!("matmul v{v} {name} 125 awkward");
            c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    Ok(())
}

/// k == 0 writes zeros; a batch larger than grid z allows (broadcast B, odd everything);
/// n a multiple of 4.
fn special(c: &mut Check) -> Res<()> {
    let zero = Case::random(c, 2, 5, 6, 0, Spec::plain(false), Spec::plain(true));
    let big_batch = Case::random(
        c,
        70_000,
        3,
        5,
        2,
        Spec { off: 1, batch_pad: 1, ..Spec::plain(true) },
        Spec { broadcast: true, off: 3, ..Spec::plain(false) },
    );
    for (case, what) in [(zero, "k=0"), (big_batch, "nb=70000 (2 launches)")] {
        let want = case.want();
        for &v in &MATMUL_VERSIONS {
            let (err, ok) = case.check(c, v, 1, &want)?;
            c.rows.push(Row { kernel: format!("matmul v{v} {what}"), err, ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    // n a multiple of 4 (none of the sweep's is): C's float4 stores, with C aligned (offset
    // 0 or 4) and not (1); partial tiles in m and k.
    for &(at, bt, name) in &LAYOUTS {
        let mut results = vec![(0.0f64, true); MATMUL_VERSIONS.len()];
        for n in [4, 132, 260] {
            for c_off in [0, 1, 4] {
                let nb = 1 + c.rng.below(3);
                let bcast = if nb > 1 { c.rng.below(3) } else { 0 };
                let (m, k) = (130, 35);
                let sa = random_spec(c, at, bcast == 1, if at { m } else { k });
                let sb = random_spec(c, bt, bcast == 2, if bt { k } else { n });
                let case = Case::random(c, nb, m, n, k, sa, sb);
                let want = case.want();
                for (r, &v) in results.iter_mut().zip(&MATMUL_VERSIONS) {
                    let (err, ok) = case.check(c, v, c_off, &want)?;
                    *r = (r.0.max(err), r.1 && ok);
                }
            }
        }
        for (&(err, ok), &v) in results.iter().zip(&MATMUL_VERSIONS) {
            let kernel = format!("matmul v{v} {name} n%4=0 x9");
            c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    Ok(())
}

/// The Mamba shapes (d_model 768, d_inner * 2 = 3072, B*L = 2048), forward and backward as
/// the engine builds them; smaller under compute-sanitizer.
fn mamba(c: &mut Check) -> Res<()> {
    let (t, d, e, bsz) = if c.timing { (2048, 768, 3072, 8) } else { (130, 96, 200, 2) };
    let (row, col) = (Spec::plain(false), Spec::plain(true));
    let cases = [
        // x (t, d) @ w (d, e), both row-major.
        ("fwd x@w", Case::random(c, 1, t, e, d, row, row)),
        // x @ w^T with w a Linear weight (e, d): B column-major, ld d.
        ("fwd x@wT", Case::random(c, 1, t, e, d, row, col)),
        // dx = dy (t, e) @ w^T, w (d, e) row-major: B column-major, ld e.
        ("bwd dy@wT", Case::random(c, 1, t, d, e, row, col)),
        // dw = x^T (d, t) @ dy (t, e), x (t, d) row-major: A column-major, ld d.
        ("bwd xT@dy", Case::random(c, 1, d, e, t, col, row)),
        // batched x (bsz, t/bsz, d) @ w (d, e) broadcast over the batch.
        ("fwd batched, w bcast", Case::random(c, bsz, t / bsz, e, d, row, Spec { broadcast: true, ..row })),
        // its dw before the batch sum: x[z]^T @ dy[z], A column-major per batch.
        ("bwd batched xT@dy", Case::random(c, bsz, d, e, t / bsz, col, row)),
    ];
    for (what, case) in &cases {
        let want = case.want();
        let (da, db) = case.upload()?;
        let (av, bv) = (da.index(case.a.off..), db.index(case.b.off..));
        let (sa, sb) = (case.a.gpu_strides(), case.b.gpu_strides());
        let (nb, m, n, k) = (case.nb, case.m, case.n, case.k);
        for &v in &MATMUL_VERSIONS {
            let (err, ok) = case.check(c, v, 0, &want)?;
            let mut out = poisoned(nb * m * n)?;
            let us = c.time(|| {
                Ok(c.gpu.matmul_strided_f32_version(v, Matmul { a: &av, sa, b: &bv, sb, c: &mut out, nb, m, n, k })?)
            })?;
            let rate = 2.0 * (nb * m * n * k) as f64 / us / 1e3;
            let kernel = format!("matmul v{v} {what} {nb}x{m}x{n}x{k}");
            c.rows.push(Row { kernel, err, ok, us, rate });
        }
    }
    Ok(())
}

/// 4096^3, same numbers in every layout (operands stored transposed where the layout says):
/// one CPU answer, every version and layout checked and timed; then `matmul_f32`.
fn big(c: &mut Check) -> Res<()> {
    let s = 4096;
    let (a, b) = (c.uniform(s * s, -1.0, 1.0), c.uniform(s * s, -1.0, 1.0));
    let mut want = vec![0f32; s * s];
    let contiguous = CpuStrides { batch: 0, row: s, col: 1 };
    matmul(1, s, s, s, &a, contiguous, &b, contiguous, &mut want);
    let mut out = poisoned(s * s)?;
    for &(at, bt, name) in &LAYOUTS {
        let (oa, ob) = (Operand::from_row_major(a.clone(), s, s, at), Operand::from_row_major(b.clone(), s, s, bt));
        let (da, db) = (DeviceBuffer::from_slice(&oa.data)?, DeviceBuffer::from_slice(&ob.data)?);
        let (sa, sb) = (oa.gpu_strides(), ob.gpu_strides());
        for &v in &MATMUL_VERSIONS {
            out.copy_from(&vec![f32::NAN; s * s])?;
            c.gpu.matmul_strided_f32_version(
                v,
                Matmul { a: &da, sa, b: &db, sb, c: &mut out, nb: 1, m: s, n: s, k: s },
            )?;
            c.gpu.stream.synchronize()?;
            let (err, ok) = scaled_error(&out.as_host_vec()?, &want, s);
            let us = c.time(|| {
                Ok(c.gpu.matmul_strided_f32_version(
                    v,
                    Matmul { a: &da, sa, b: &db, sb, c: &mut out, nb: 1, m: s, n: s, k: s },
                )?)
            })?;
            let rate = 2.0 * (s * s * s) as f64 / us / 1e3;
            c.rows.push(Row { kernel: format!("matmul v{v} {name} {s}^3"), err, ok, us, rate });
        }
    }
    // The contiguous wrapper (runs MATMUL_VERSION nn): the number compared across commits.
    let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
    out.copy_from(&vec![f32::NAN; s * s])?;
    c.gpu.matmul_f32(&da, &db, &mut out, s, s, s)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = scaled_error(&out.as_host_vec()?, &want, s);
    let us = c.time(|| Ok(c.gpu.matmul_f32(&da, &db, &mut out, s, s, s)?))?;
    let rate = 2.0 * (s * s * s) as f64 / us / 1e3;
    c.rows.push(Row { kernel: format!("matmul_f32 {s}^3 (v{MATMUL_VERSION})"), err, ok, us, rate });
    Ok(())
}

/// Small m through `matmul_strided_f32`: m in {1, 2, 3, 8, MATMUL_SMALL_M + 1} x n x k for each
/// layout (B column-major runs the nt kernel, row-major the nn one; A any), each case with a
/// random batch (1-3), broadcast operand, offsets and padding as in `sweep`. One row per
/// (layout, m). Under compute-sanitizer n 3072 becomes 300.
fn small_m(c: &mut Check) -> Res<()> {
    let ms = [1, 2, 3, 8, Gpu::MATMUL_SMALL_M + 1];
    let ns = [1, 33, if c.timing { 3072 } else { 300 }];
    const KS: [usize; 4] = [1, 7, 768, 1536];
    for &(at, bt, name) in &LAYOUTS {
        for m in ms {
            let (mut worst, mut all_ok) = (0.0f64, true);
            for n in ns {
                for k in KS {
                    let nb = 1 + c.rng.below(3);
                    let bcast = if nb > 1 { c.rng.below(3) } else { 0 }; // 0 none, 1 a, 2 b
                    let sa = random_spec(c, at, bcast == 1, if at { m } else { k });
                    let sb = random_spec(c, bt, bcast == 2, if bt { k } else { n });
                    let case = Case::random(c, nb, m, n, k, sa, sb);
                    let c_off = [0, 1, 4][c.rng.below(3)];
                    let (err, ok) = case.check(c, AUTO, c_off, &case.want())?;
                    (worst, all_ok) = (worst.max(err), all_ok && ok);
                }
            }
            let path = if m <= Gpu::MATMUL_SMALL_M { "small-m" } else { "tiled" };
            let kernel = format!("matmul {path} {name} m={m} x12");
            c.rows.push(Row { kernel, err: worst, ok: all_ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    Ok(())
}

/// Small-m edges, for B column- (nt) and row-major (nn): k == 0 (zeros); k past A's shared
/// chunk (8192 floats / m: several chunks, unaligned ends); n == 1 (nt: a contiguous column,
/// which the launcher sends to nt; nn: row stride 2); a batch of 70,000 (two launches on grid y).
fn small_m_special(c: &mut Check) -> Res<()> {
    for (bt, name) in [(true, "nt"), (false, "nn")] {
        let odd = |col_major| Spec { off: 1, pad: 1, batch_pad: 1, ..Spec::plain(col_major) };
        let cases = [
            ("k=0", Case::random(c, 2, 3, 33, 0, Spec::plain(false), Spec::plain(bt))),
            ("m=1 k=9001", Case::random(c, 1, 1, 33, 9001, odd(false), odd(bt))),
            ("m=5 k=3000", Case::random(c, 2, 5, 40, 3000, Spec::plain(true), Spec::plain(bt))),
            ("n=1", Case::random(c, 3, 2, 1, 700, odd(false), odd(bt))),
            (
                "nb=70000",
                Case::random(c, 70_000, 1, 5, 3, odd(false), Spec { broadcast: true, off: 3, ..Spec::plain(bt) }),
            ),
        ];
        for (what, case) in cases {
            let (err, ok) = case.check(c, AUTO, 1, &case.want())?;
            let kernel = format!("matmul small-m {name} {what}");
            c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    Ok(())
}

/// The generation shapes (d_model 768, d_inner 1536, batch 1): in_proj x (1, 768) @ W^T
/// (768, 3072), out_proj (1, 1536) @ (1536, 768), the tied head (1, 768) @ (768, 256) with B
/// a Linear weight (column-major), then in_proj with W row-major (nn) and with m = 8 (the
/// threshold). Each on the small-m path and the tiled MATMUL_VERSION; rate in GB/s of B's
/// bytes (the floor: B read once at ~2.9 TB/s on the H100).
fn generation(c: &mut Check) -> Res<()> {
    if !c.timing {
        return Ok(());
    }
    let (row, col) = (Spec::plain(false), Spec::plain(true));
    let cases = [
        ("nt in_proj", Case::random(c, 1, 1, 3072, 768, row, col)),
        ("nt out_proj", Case::random(c, 1, 1, 768, 1536, row, col)),
        ("nt head", Case::random(c, 1, 1, 256, 768, row, col)),
        ("nn in_proj", Case::random(c, 1, 1, 3072, 768, row, row)),
        ("nt in_proj", Case::random(c, 1, 8, 3072, 768, row, col)),
    ];
    for (what, case) in &cases {
        let want = case.want();
        let (da, db) = case.upload()?;
        let (av, bv) = (da.index(case.a.off..), db.index(case.b.off..));
        let (sa, sb) = (case.a.gpu_strides(), case.b.gpu_strides());
        let (nb, m, n, k) = (case.nb, case.m, case.n, case.k);
        let mut out = poisoned(nb * m * n)?;
        for (v, path) in [(AUTO, "small-m".to_string()), (MATMUL_VERSION, format!("tiled v{MATMUL_VERSION}"))] {
            let (err, ok) = case.check(c, v, 0, &want)?;
            let us = c.time(|| Ok(launch(c.gpu, v, Matmul { a: &av, sa, b: &bv, sb, c: &mut out, nb, m, n, k })?))?;
            let rate = 4.0 * (k * n) as f64 / us / 1e3;
            let kernel = format!("matmul {path} {what} {m}x{k}@{k}x{n} (GB/s of B)");
            c.rows.push(Row { kernel, err, ok, us, rate });
        }
    }
    Ok(())
}
