//! `cu/matmul_bf16.cu` (every version, f32 and bf16 C) against its CPU twin: the same product in
//! f64 from the same bf16 values (`ops::matmul::cpu::matmul::<f64>` on the widened operands).
//! - a sweep of ragged shapes (m, n, k each in {1, 7, 33, 130, 260}: partial tiles along every
//!   axis, k not a multiple of 8, both tile widths) in each of the four layouts, each case with
//!   a random batch (1-3), broadcast operand, view offset (0 or 8 elements), leading-dimension
//!   and batch-stride padding (filled with NaN: an over-read shows), C at offset 0, 1 or 2
//!   (the pair stores' aligned and scalar paths) of a NaN-poisoned buffer whose neighbours must
//!   stay NaN;
//! - split-K: few output tiles and a long k, with the workspace the launcher asks for (NaN-
//!   poisoned) and without one (no split); k == 0 writes zeros; an operand off the 16-byte grid
//!   is refused with an error, not launched;
//! - timing (skipped under GPU_CHECK_NO_TIMING): 8192^3 in each layout and version, and the
//!   d_model 768 Mamba LM's products at 16384 tokens (per Linear: forward x W^T (nt), dx = dy W
//!   (nn), dW^T = x^T dy (tn, split-K)), each checked on 32 sampled rows and printed in TFLOP/s
//!   beside the lines of kernels/tools/cublas_bf16_ref.py (cuBLAS through torch).
//!
//! - through the engine (`Tensor::matmul` on bf16 tensors, `Tensor::matmul_bf16` on f32 ones,
//!   forward and backward, see `engine` below) against the engine's CPU twin.
//!
//! Tolerance per element: |gpu - twin| <= 1e-5 * sum_k |a_ik b_kj| (the f32 sums of the
//! tensor cores and the f64 twin differ by rounding that grows with that sum), plus 2^-8 |twin|
//! for bf16 C (its rounding); the error column is max |gpu - twin| / sum_k |a_ik b_kj|. With
//! inputs uniform in [-1, 1) one wrong or missing product moves an element by about 1/k of that
//! sum (6e-5 at k = 16384, 6x the tolerance); a wrong index or slice moves many.

use crate::{poisoned, rel_norm, Check, Res, Row};
use mamba_engine::dtype::{bf16, bf16_from_f32};
use mamba_engine::ops::matmul::cpu::{matmul, MatStrides as CpuStrides};
use mamba_engine::{DType, Device, Tensor};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::matmul_bf16::{Bf16Out, MatmulBf16, MATMUL_BF16_VERSION, MATMUL_BF16_VERSIONS};
use mamba_kernels::launch::MatStrides;

/// Per-element tolerance relative to sum_k |a_ik b_kj|.
const BF_TOL: f64 = 1e-5;
/// bf16 NaN, the padding and the poison of bf16 outputs.
const NAN16: u16 = 0x7fc0;
/// Layout names: A then B, n = row-major, t = column-major (transposed storage).
const LAYOUTS: [(bool, bool, &str); 4] =
    [(false, false, "nn"), (false, true, "nt"), (true, false, "tn"), (true, true, "tt")];

/// One stored operand of logical shape (nb, rows, cols): bf16 bit patterns, the view at `off`.
struct Operand {
    data: Vec<u16>,
    off: usize,
    s: CpuStrides,
}

impl Operand {
    /// Uniform values in [-1, 1) rounded to bf16; ld the contiguous extent rounded up to 8 (+8
    /// when `pad`), batch stride the matrix (+8 when `pad`) or 0 when broadcast, the view at
    /// `off` (a multiple of 8). Everything around the values is NaN.
    #[allow(clippy::too_many_arguments)]
    fn random(
        c: &mut Check,
        nb: usize,
        rows: usize,
        cols: usize,
        col_major: bool,
        bcast: bool,
        off: usize,
        pad: bool,
    ) -> Self {
        let (outer, inner) = if col_major { (cols, rows) } else { (rows, cols) };
        let ld = inner.next_multiple_of(8) + if pad { 8 } else { 0 };
        let mat = outer * ld;
        let batch = if bcast { 0 } else { mat + if pad { 8 } else { 0 } };
        let stored = if bcast { 1 } else { nb };
        let mut data = vec![NAN16; off + (stored - 1) * batch + mat + 8];
        for z in 0..stored {
            let values = c.uniform(outer * inner, -1.0, 1.0);
            for (x, row) in values.chunks(inner.max(1)).enumerate() {
                let at = off + z * batch + x * ld;
                for (d, &v) in data[at..at + inner].iter_mut().zip(row) {
                    *d = bf16_from_f32(v).to_bits();
                }
            }
        }
        let (row, col) = if col_major { (1, ld) } else { (ld, 1) };
        Operand { data, off, s: CpuStrides { batch, row, col } }
    }

    /// `values` (rows, cols) row-major, stored row- or column-major without padding.
    fn from_row_major(values: &[u16], rows: usize, cols: usize, col_major: bool) -> Self {
        if !col_major {
            return Operand { data: values.to_vec(), off: 0, s: CpuStrides { batch: 0, row: cols, col: 1 } };
        }
        let mut t = vec![0u16; values.len()];
        for (r, row) in values.chunks(cols).enumerate() {
            for (cc, &v) in row.iter().enumerate() {
                t[cc * rows + r] = v;
            }
        }
        Operand { data: t, off: 0, s: CpuStrides { batch: 0, row: 1, col: rows } }
    }

    fn get(&self, z: usize, r: usize, col: usize) -> f64 {
        bf16::from_bits(self.data[self.off + z * self.s.batch + r * self.s.row + col * self.s.col]).to_f64()
    }

    fn gpu_strides(&self) -> MatStrides {
        MatStrides { batch: self.s.batch, row: self.s.row, col: self.s.col }
    }
}

/// One product and its operands on both sides.
struct Case {
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    da: DeviceBuffer<u16>,
    db: DeviceBuffer<u16>,
}

impl Case {
    fn new(nb: usize, m: usize, n: usize, k: usize, a: Operand, b: Operand) -> Res<Case> {
        let (da, db) = (DeviceBuffer::from_slice(&a.data)?, DeviceBuffer::from_slice(&b.data)?);
        Ok(Case { nb, m, n, k, a, b, da, db })
    }

    /// The CPU twin on rows `rows` of every C[z]: (sum_k a b, sum_k |a b|), each (nb, rows, n).
    fn twin(&self, rows: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let (r, k, n) = (rows.len(), self.k, self.n);
        let nba = if self.a.s.batch == 0 { 1 } else { self.nb };
        let mut a64 = vec![0f64; nba * r * k];
        for z in 0..nba {
            for (ri, &i) in rows.iter().enumerate() {
                for p in 0..k {
                    a64[(z * r + ri) * k + p] = self.a.get(z, i, p);
                }
            }
        }
        let sa = CpuStrides { batch: if nba == 1 { 0 } else { r * k }, row: k, col: 1 };
        let b64: Vec<f64> = self.b.data[self.b.off..].iter().map(|&u| bf16::from_bits(u).to_f64()).collect();
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
        let (mut want, mut mag) = (vec![0f64; self.nb * r * n], vec![0f64; self.nb * r * n]);
        matmul(self.nb, r, n, k, &a64, sa, &b64, self.b.s, &mut want);
        matmul(self.nb, r, n, k, &abs(&a64), sa, &abs(&b64), self.b.s, &mut mag);
        (want, mag)
    }

    /// Runs `version` with C at `c_off` of a poisoned buffer (f32, or bf16 when `bf16_out`) and
    /// `workspace` f32 of NaN for split-K; returns C widened to f64 and whether its neighbours
    /// stayed NaN.
    fn run(&self, c: &Check, version: u32, bf16_out: bool, c_off: usize, workspace: usize) -> Res<(Vec<f64>, bool)> {
        let len = self.nb * self.m * self.n;
        let mut ws = if workspace > 0 { Some(poisoned(workspace)?) } else { None };
        let (av, bv) = (self.da.index(self.a.off..), self.db.index(self.b.off..));
        let (sa, sb) = (self.a.gpu_strides(), self.b.gpu_strides());
        let (nb, m, n, k) = (self.nb, self.m, self.n, self.k);
        let (got, untouched) = if bf16_out {
            let out = DeviceBuffer::from_slice(&vec![NAN16; c_off + len + 1])?;
            let mut view = out.index(c_off..c_off + len);
            let workspace = ws.as_deref_mut();
            let args = MatmulBf16 { a: &av, sa, b: &bv, sb, c: Bf16Out::Bf16(&mut view), nb, m, n, k, workspace };
            c.gpu.matmul_bf16_version(version, args)?;
            c.gpu.stream.synchronize()?;
            let all = out.as_host_vec()?;
            let widened = all[c_off..c_off + len].iter().map(|&u| bf16::from_bits(u).to_f64()).collect();
            (widened, all[..c_off].iter().chain(&all[c_off + len..]).all(|&u| u == NAN16))
        } else {
            let out = poisoned(c_off + len + 1)?;
            let mut view = out.index(c_off..c_off + len);
            let workspace = ws.as_deref_mut();
            let args = MatmulBf16 { a: &av, sa, b: &bv, sb, c: Bf16Out::F32(&mut view), nb, m, n, k, workspace };
            c.gpu.matmul_bf16_version(version, args)?;
            c.gpu.stream.synchronize()?;
            let all = out.as_host_vec()?;
            let widened = all[c_off..c_off + len].iter().map(|&v| v as f64).collect();
            (widened, all[..c_off].iter().chain(&all[c_off + len..]).all(|v| v.is_nan()))
        };
        Ok((got, untouched))
    }
}

/// (max |got - want| / mag, all within tolerance) over C's rows `rows` of every batch; `got`
/// is the whole (nb, m, n), `want` and `mag` (nb, rows.len(), n) from `Case::twin`.
fn compare(case: &Case, got: &[f64], rows: &[usize], want: &[f64], mag: &[f64], bf16_out: bool) -> (f64, bool) {
    let (mut worst, mut ok) = (0.0f64, true);
    for z in 0..case.nb {
        for (ri, &i) in rows.iter().enumerate() {
            for j in 0..case.n {
                let g = got[(z * case.m + i) * case.n + j];
                let t = (z * rows.len() + ri) * case.n + j;
                let e = (g - want[t]).abs();
                let tol = BF_TOL * mag[t] + if bf16_out { want[t].abs() / 256.0 } else { 0.0 };
                ok &= e <= tol; // NaN fails
                worst = worst.max(if e.is_finite() { e / mag[t].max(f64::MIN_POSITIVE) } else { f64::INFINITY });
            }
        }
    }
    (worst, ok)
}

/// Checks `case` in `version` against the twin on `rows` (all when None): (error, ok).
fn check(c: &Check, case: &Case, version: u32, bf16_out: bool, c_off: usize, workspace: usize) -> Res<(f64, bool)> {
    let all: Vec<usize> = (0..case.m).collect();
    let (want, mag) = case.twin(&all);
    let (got, untouched) = case.run(c, version, bf16_out, c_off, workspace)?;
    let (err, ok) = compare(case, &got, &all, &want, &mag, bf16_out);
    Ok((err, ok && untouched))
}

pub fn run(c: &mut Check) -> Res<()> {
    sweep(c)?;
    special(c)?;
    engine(c)?;
    if c.timing {
        big(c)?;
        mamba(c)?;
    }
    Ok(())
}

/// A random case of the sweep: batch 1-3, maybe a broadcast operand, random offsets and padding.
fn random_case(c: &mut Check, (m, n, k): (usize, usize, usize), at: bool, bt: bool) -> Res<Case> {
    let nb = 1 + c.rng.below(3);
    let bcast = if nb > 1 { c.rng.below(3) } else { 0 }; // 0 none, 1 a, 2 b
    let (oa, pa, ob, pb) = (8 * c.rng.below(2), c.rng.below(2) == 1, 8 * c.rng.below(2), c.rng.below(2) == 1);
    let a = Operand::random(c, nb, m, k, at, bcast == 1, oa, pa);
    let b = Operand::random(c, nb, k, n, bt, bcast == 2, ob, pb);
    Case::new(nb, m, n, k, a, b)
}

/// Every (m, n, k) in SIZES^3 for each layout, version and C dtype: one row per (version,
/// layout, dtype). Fewer sizes under compute-sanitizer.
fn sweep(c: &mut Check) -> Res<()> {
    let sizes: &[usize] = if c.timing { &[1, 7, 33, 130, 260] } else { &[7, 130, 260] };
    for &(at, bt, name) in &LAYOUTS {
        let mut results = vec![(0.0f64, true); 2 * MATMUL_BF16_VERSIONS.len()];
        for &m in sizes {
            for &n in sizes {
                for &k in sizes {
                    let case = random_case(c, (m, n, k), at, bt)?;
                    let all: Vec<usize> = (0..m).collect();
                    let (want, mag) = case.twin(&all);
                    for (i, r) in results.iter_mut().enumerate() {
                        let (v, bf) = (MATMUL_BF16_VERSIONS[i / 2], i % 2 == 1);
                        let c_off = c.rng.below(3);
                        let (got, untouched) = case.run(c, v, bf, c_off, 0)?;
                        let (err, ok) = compare(&case, &got, &all, &want, &mag, bf);
                        *r = (r.0.max(err), r.1 && ok && untouched);
                    }
                }
            }
        }
        for (i, &(err, ok)) in results.iter().enumerate() {
            let (v, out) = (MATMUL_BF16_VERSIONS[i / 2], if i % 2 == 1 { "bf16" } else { "f32" });
            let kernel = format!("matmul_bf16 v{v} {name} {out} x{}", sizes.len().pow(3));
            c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    Ok(())
}

/// Split-K with and without workspace, k == 0, and the alignment error.
fn special(c: &mut Check) -> Res<()> {
    // (m, n, k, nb): one tile of 128 x 256 (v1), a narrow one, a batch of two.
    let shapes = [(130, 300, 3000, 1), (64, 80, 5000, 2), (200, 40, 1030, 1)];
    for &(at, bt, name) in &LAYOUTS {
        for &(m, n, k, nb) in &shapes {
            let a = Operand::random(c, nb, m, k, at, false, 0, false);
            let b = Operand::random(c, nb, k, n, bt, nb > 1, 8, true);
            let case = Case::new(nb, m, n, k, a, b)?;
            for v in MATMUL_BF16_VERSIONS {
                let ws = c.gpu.matmul_bf16_workspace(v, nb, m, n, k);
                for (bf, out) in [(false, "f32"), (true, "bf16")] {
                    for workspace in [ws, 0] {
                        let (err, ok) = check(c, &case, v, bf, 2, workspace)?;
                        let split = if workspace > 0 { "split-K" } else { "no workspace" };
                        let kernel = format!("matmul_bf16 v{v} {name} {nb}x{m}x{n}x{k} {out} {split}");
                        c.rows.push(Row { kernel, err, ok: ok && ws > 0, us: f64::NAN, rate: f64::NAN });
                    }
                }
            }
        }
    }
    let zero = Case::new(2, 5, 7, 0, Operand::random(c, 2, 5, 0, false, false, 0, false), {
        Operand::random(c, 2, 0, 7, true, false, 0, false)
    })?;
    let (err, ok) = check(c, &zero, MATMUL_BF16_VERSION, false, 1, 0)?;
    c.rows.push(Row { kernel: "matmul_bf16 k=0 zeros".into(), err, ok, us: f64::NAN, rate: f64::NAN });
    refusal(c)
}

/// An A that starts 2 bytes off the 16-byte grid, and one whose ld is 12: errors, no launch.
fn refusal(c: &mut Check) -> Res<()> {
    let a = Operand::random(c, 1, 33, 40, false, false, 0, false);
    let b = Operand::random(c, 1, 40, 20, false, false, 0, false);
    let case = Case::new(1, 33, 20, 40, a, b)?;
    let mut out = poisoned(33 * 20)?;
    let (sa, sb) = (case.a.gpu_strides(), case.b.gpu_strides());
    let (av, bv) = (case.da.index(1..), case.db.index(..));
    let off_grid =
        MatmulBf16 { a: &av, sa, b: &bv, sb, c: Bf16Out::F32(&mut out), nb: 1, m: 33, n: 20, k: 40, workspace: None };
    let first = c.gpu.matmul_bf16(off_grid);
    let sa12 = MatStrides { batch: 0, row: 12, col: 1 };
    let bad_ld = MatmulBf16 {
        a: &case.da,
        sa: sa12,
        b: &bv,
        sb,
        c: Bf16Out::F32(&mut out),
        nb: 1,
        m: 33,
        n: 20,
        k: 12,
        workspace: None,
    };
    let second = c.gpu.matmul_bf16(bad_ld);
    let refused = |r: &mamba_kernels::Result<()>| matches!(r, Err(e) if e.to_string().contains("16-byte aligned"));
    let ok = refused(&first) && refused(&second);
    if !ok {
        println!("matmul_bf16 refusal: got {first:?} and {second:?}");
    }
    c.rows.push(Row { kernel: "matmul_bf16 refuses misaligned".into(), err: 0.0, ok, us: f64::NAN, rate: f64::NAN });
    Ok(())
}

/// Checks `case` (batch 1) in `version` on 32 sampled rows against `twin` of those rows, times
/// it with the workspace it asks for, prints and records the row.
fn timed(
    c: &mut Check,
    case: &Case,
    rows: &[usize],
    twin: &(Vec<f64>, Vec<f64>),
    version: u32,
    bf: bool,
    what: &str,
) -> Res<()> {
    let ws_len = c.gpu.matmul_bf16_workspace(version, 1, case.m, case.n, case.k);
    let (got, untouched) = case.run(c, version, bf, 0, ws_len)?;
    let (err, ok) = compare(case, &got, rows, &twin.0, &twin.1, bf);
    let (m, n, k) = (case.m, case.n, case.k);
    let (av, bv) = (case.da.index(case.a.off..), case.db.index(case.b.off..));
    let (sa, sb) = (case.a.gpu_strides(), case.b.gpu_strides());
    let mut ws = if ws_len > 0 { Some(poisoned(ws_len)?) } else { None };
    let mut of = if bf { None } else { Some(poisoned(m * n)?) };
    let mut ob = if bf { Some(DeviceBuffer::from_slice(&vec![NAN16; m * n])?) } else { None };
    let us = c.time(|| {
        let out = match (of.as_deref_mut(), ob.as_deref_mut()) {
            (Some(o), _) => Bf16Out::F32(o),
            (_, Some(o)) => Bf16Out::Bf16(o),
            _ => return Err("no output buffer".into()),
        };
        let args = MatmulBf16 { a: &av, sa, b: &bv, sb, c: out, nb: 1, m, n, k, workspace: ws.as_deref_mut() };
        Ok(c.gpu.matmul_bf16_version(version, args)?)
    })?;
    let tflops = 2.0 * (m * n * k) as f64 / us / 1e6;
    let out = if bf { "bf16" } else { "f32" };
    let split = if ws_len > 0 { " split-K" } else { "" };
    println!("matmul_bf16 v{version} {what} {m}x{n}x{k} {out}{split}: {us:.1} us, {tflops:.1} TFLOP/s");
    let kernel = format!("matmul_bf16 v{version} {what} {m}x{n}x{k} {out}");
    c.rows.push(Row { kernel, err, ok: ok && untouched, us, rate: tflops * 1e3 });
    Ok(())
}

/// `count` distinct-enough row indices below `m`, always including the last.
fn sample_rows(c: &mut Check, m: usize, count: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..count - 1).map(|_| c.rng.below(m)).collect();
    rows.push(m - 1);
    rows
}

/// 8192^3, the same numbers stored in every layout; each version, f32 and bf16 C.
fn big(c: &mut Check) -> Res<()> {
    let s = 8192;
    let bits = |v: Vec<f32>| v.into_iter().map(|x| bf16_from_f32(x).to_bits()).collect::<Vec<u16>>();
    let (a, b) = (bits(c.uniform(s * s, -1.0, 1.0)), bits(c.uniform(s * s, -1.0, 1.0)));
    let rows = sample_rows(c, s, 32);
    let plain =
        Case::new(1, s, s, s, Operand::from_row_major(&a, s, s, false), Operand::from_row_major(&b, s, s, false))?;
    let twin = plain.twin(&rows);
    drop(plain);
    for &(at, bt, name) in &LAYOUTS {
        let case = Case::new(1, s, s, s, Operand::from_row_major(&a, s, s, at), Operand::from_row_major(&b, s, s, bt))?;
        for v in MATMUL_BF16_VERSIONS {
            for bf in [false, true] {
                timed(c, &case, &rows, &twin, v, bf, &format!("{name} 8192^3"))?;
            }
        }
    }
    Ok(())
}

/// The d_model 768 Mamba LM at batch 8 x 2048 = 16384 tokens: each Linear (in -> out, weight
/// stored (out, in)) forward x W^T (nt), dx = dy W (nn), dW^T = x^T dy (tn, as the engine
/// builds it: k = tokens, split-K). Forward and dx also with bf16 C (activations).
fn mamba(c: &mut Check) -> Res<()> {
    const T: usize = 16384;
    let linears = [("in_proj", 768, 3072), ("out_proj", 1536, 768), ("x_proj", 1536, 80), ("dt_proj", 48, 1536)];
    for (name, din, dout) in linears {
        let x = Operand::random(c, 1, T, din, false, false, 0, false);
        let w = Operand::random(c, 1, dout, din, false, false, 0, false);
        let dy = Operand::random(c, 1, T, dout, false, false, 0, false);
        // The same buffers seen as the transposed operands each product reads.
        let w_t = Operand { data: w.data.clone(), off: 0, s: CpuStrides { batch: 0, row: 1, col: din } };
        let x_t = Operand { data: x.data.clone(), off: 0, s: CpuStrides { batch: 0, row: 1, col: din } };
        let products = [
            ("nt fwd", Case::new(1, T, dout, din, Operand { data: x.data.clone(), ..x }, w_t)?, true),
            ("nn dx", Case::new(1, T, din, dout, dy, Operand { data: w.data.clone(), ..w })?, true),
        ];
        for (what, case, with_bf16) in &products {
            let rows = sample_rows(c, case.m, 32);
            let twin = case.twin(&rows);
            for v in MATMUL_BF16_VERSIONS {
                for bf in if *with_bf16 { vec![false, true] } else { vec![false] } {
                    timed(c, case, &rows, &twin, v, bf, &format!("{what} {name}"))?;
                }
            }
        }
        let dy = Operand::random(c, 1, T, dout, false, false, 0, false);
        let dw = Case::new(1, din, dout, T, x_t, dy)?;
        let rows = sample_rows(c, din, 32);
        let twin = dw.twin(&rows);
        for v in MATMUL_BF16_VERSIONS {
            timed(c, &dw, &rows, &twin, v, false, &format!("tn dW {name}"))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- through the engine

/// One engine-level case: `a (.., m, k) @ b (.., k, n)`, each stored transposed (`ta`, `tb`:
/// a column-major view) or with 3 extra leading columns narrowed away (`narrow`: a view whose
/// offset and leading dimension are off the kernel's 8-element grid, so it must be copied).
/// `bf16_io`: bf16 leaves through `matmul` (bf16 result and gradients); else f32 leaves through
/// `matmul_bf16` (f32 result and gradients).
struct EngineCase {
    name: &'static str,
    a: &'static [usize],
    b: &'static [usize],
    ta: bool,
    tb: bool,
    narrow: bool,
    bf16_io: bool,
}

/// An [`EngineCase`] from its fields in order.
const fn ec(
    name: &'static str,
    a: &'static [usize],
    b: &'static [usize],
    ta: bool,
    tb: bool,
    narrow: bool,
    bf16_io: bool,
) -> EngineCase {
    EngineCase { name, a, b, ta, tb, narrow, bf16_io }
}

/// (name, a, b, ta, tb, narrow, bf16_io). In place (x W^T as the model's linear layers, in
/// nt layout; its dX and dW with split-K), padded (k = 13 with m, n odd), copied (n = 9
/// row-major; a narrowed view), broadcast batch axes (the bf16 gradient summed over them in
/// f32), and k = 0.
const ENGINE_CASES: &[EngineCase] = &[
    ec("linear", &[2, 64, 96], &[96, 136], false, true, false, false),
    ec("linear dW split-K", &[1, 4096, 64], &[64, 40], false, true, false, false),
    ec("padded k", &[3, 5, 13], &[13, 7], false, true, false, false),
    ec("bf16 padded k", &[3, 5, 13], &[13, 7], false, false, false, true),
    ec("bf16 n 9 copied", &[10, 24], &[24, 9], false, false, false, true),
    ec("bf16 narrowed lhs", &[2, 17, 40], &[40, 33], false, false, true, true),
    ec("bf16 broadcast", &[4, 33, 40], &[40, 72], true, true, false, true),
    ec("bf16 k 0", &[4, 0], &[0, 8], false, false, false, true),
];

/// ‖gpu - cpu‖ / ‖cpu‖ bounds. f32 results: the same bf16 products summed in f32 in other
/// orders (as `ops::OPS_TOL`). bf16 results: those sums rounded once to bf16, where an f32
/// difference next to a rounding boundary moves an element by one bf16 ulp (2^-8 relative at
/// most); a wrong or missing product moves many elements by far more.
const ENGINE_TOL_F32: f64 = 1e-4;
const ENGINE_TOL_BF16: f64 = 4e-3;

/// The operand stored as `shape` (the last two axes swapped when `transposed`; 3 more columns
/// when `narrow`) from `values`, viewed back as `shape` on `device`, a leaf.
fn engine_leaf(values: &Tensor, transposed: bool, narrow: bool, device: Device) -> mamba_engine::Result<Tensor> {
    let t = values.to(device)?;
    let r = t.rank();
    let t = if narrow { t.narrow(r as isize - 1, 3, t.shape()[r - 1] - 3)? } else { t };
    let t = if transposed { t.transpose(-1, -2)? } else { t };
    Ok(t.requires_grad())
}

/// The case on one device: the output and both gradients, as f32.
fn engine_run(
    case: &EngineCase,
    stored: &[Tensor; 2],
    seed: &Tensor,
    device: Device,
) -> mamba_engine::Result<[Vec<f32>; 3]> {
    let a = engine_leaf(&stored[0], case.ta, case.narrow, device)?;
    let b = engine_leaf(&stored[1], case.tb, false, device)?;
    let y = if case.bf16_io { a.matmul(&b)? } else { a.matmul_bf16(&b)? };
    y.backward_with(&seed.to_dtype(y.dtype())?.to(device)?)?;
    let f32s = |t: Option<Tensor>| -> mamba_engine::Result<Vec<f32>> {
        t.map_or(Ok(vec![]), |t| t.detach().to_dtype(DType::F32)?.to(Device::Cpu)?.to_vec::<f32>())
    };
    Ok([f32s(Some(y))?, f32s(a.grad())?, f32s(b.grad())?])
}

/// Fresh random operands for `case`: stored shapes (see [`engine_leaf`]), bf16 or f32.
fn engine_inputs(c: &mut Check, case: &EngineCase) -> mamba_engine::Result<([Tensor; 2], Tensor)> {
    let stored = |shape: &[usize], transposed: bool, narrow: bool| {
        let mut s = shape.to_vec();
        let r = s.len();
        if transposed {
            s.swap(r - 2, r - 1);
        }
        if narrow {
            s[r - 1] += 3;
        }
        s
    };
    let dtype = if case.bf16_io { DType::BF16 } else { DType::F32 };
    let mut draw = |shape: Vec<usize>| Tensor::randn(&shape, 0.0, 1.0, DType::F32, &mut c.rng).to_dtype(dtype);
    let a = draw(stored(case.a, case.ta, case.narrow))?;
    let b = draw(stored(case.b, case.tb, false))?;
    let (ra, rb) = (case.a.len(), case.b.len());
    let batch = if ra > rb { &case.a[..ra - 2] } else { &case.b[..rb - 2] };
    let out = [batch, &[case.a[ra - 2], case.b[rb - 1]]].concat();
    Ok(([a, b], draw(out)?))
}

/// Every [`ENGINE_CASES`] on the CPU and the GPU (new GPU buffers NaN-poisoned): one row each,
/// the worst relative-norm difference of the output and the two gradients.
fn engine(c: &mut Check) -> Res<()> {
    mamba_engine::cuda::set_poison(true);
    for case in ENGINE_CASES {
        let (stored, seed) = engine_inputs(c, case)?;
        let name = format!("engine bf16 {}: {:?} @ {:?}", case.name, case.a, case.b);
        let tol = if case.bf16_io { ENGINE_TOL_BF16 } else { ENGINE_TOL_F32 };
        let cpu = engine_run(case, &stored, &seed, Device::Cpu)?;
        let err = match engine_run(case, &stored, &seed, Device::Cuda) {
            Ok(gpu) => gpu.iter().zip(&cpu).map(|(g, w)| rel_norm_or_empty(g, w)).fold(0.0, f64::max),
            Err(e) => {
                println!("{name}: {e}");
                f64::INFINITY
            }
        };
        c.rows.push(Row { kernel: name, err, ok: err <= tol, us: f64::NAN, rate: f64::NAN });
    }
    mamba_engine::cuda::set_poison(false);
    Ok(())
}

/// [`rel_norm`], with two empty results (k = 0 gradients) agreeing.
fn rel_norm_or_empty(gpu: &[f32], cpu: &[f32]) -> f64 {
    if gpu.is_empty() && cpu.is_empty() {
        return 0.0;
    }
    if cpu.iter().all(|&v| v == 0.0) {
        return if gpu.len() == cpu.len() && gpu.iter().all(|&v| v == 0.0) { 0.0 } else { f64::INFINITY };
    }
    rel_norm(gpu, cpu)
}
