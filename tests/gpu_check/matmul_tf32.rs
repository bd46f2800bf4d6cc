//! `cu/matmul_tf32.cu` (3xTF32 and one tf32 pass) against its CPU twin, the f32 operands'
//! product in f64 (`ops::matmul::cpu::matmul::<f64>`):
//! - a sweep of ragged shapes (m, n, k in {1, 7, 33, 130, 260}) in each of the four layouts,
//!   each with a random batch (1-3), broadcast operand, view offset (0 or 4 elements), leading-
//!   dimension and batch-stride padding filled with NaN (an over-read shows), C at offset 0, 1
//!   or 2 of a NaN-poisoned buffer whose neighbours must stay NaN;
//! - split-K with the workspace the launcher asks for (NaN-poisoned), k == 0;
//! - timing (skipped under GPU_CHECK_NO_TIMING): 4096^3 and 8192^3 in each layout, and the d_model
//!   768 Mamba LM's products at 16384 tokens, beside matmul.cu's f32 kernel on the same operands
//!   (cuBLAS f32: kernels/tools/cublas_ref.py).
//!
//! Tolerance per element: |gpu - twin| <= tol * sum_k |a_ik b_kj|, tol 1e-5 for 3xTF32 (as the
//! f32 kernels' check; the dropped lo*lo term is 2^-22 relative) and 2e-3 for one pass (each
//! operand rounded to 10 mantissa bits, 2^-11 relative, twice). Error column: the worst ratio.

use crate::{poisoned, Check, Res, Row};
use mamba_engine::ops::matmul::cpu::{matmul, MatStrides as CpuStrides};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::{MatStrides, Matmul, MatmulTf32, Tf32Mode, MATMUL_TF32_VERSIONS};

const MODES: [(Tf32Mode, &str, f64); 2] = [(Tf32Mode::Split3, "3xtf32", 1e-5), (Tf32Mode::OnePass, "tf32", 2e-3)];
const LAYOUTS: [(bool, bool, &str); 4] =
    [(false, false, "nn"), (false, true, "nt"), (true, false, "tn"), (true, true, "tt")];

/// One stored operand of logical shape (nb, rows, cols), the view at `off`.
struct Operand {
    data: Vec<f32>,
    off: usize,
    s: CpuStrides,
}

impl Operand {
    /// Uniform values in [-1, 1); ld the contiguous extent rounded up to 4 (+4 when `pad`),
    /// batch stride the matrix (+4 when `pad`) or 0 when broadcast; NaN around the values.
    fn random(c: &mut Check, (nb, rows, cols): (usize, usize, usize), col_major: bool, bcast: bool, pad: bool) -> Self {
        let (outer, inner) = if col_major { (cols, rows) } else { (rows, cols) };
        let off = 4 * c.rng.below(2);
        let ld = inner.next_multiple_of(4) + if pad { 4 } else { 0 };
        let batch = if bcast { 0 } else { outer * ld + if pad { 4 } else { 0 } };
        let stored = if bcast { 1 } else { nb };
        let mut data = vec![f32::NAN; off + (stored - 1) * batch + outer * ld + 4];
        for z in 0..stored {
            let values = c.uniform(outer * inner, -1.0, 1.0);
            for (x, row) in values.chunks(inner.max(1)).enumerate() {
                let at = off + z * batch + x * ld;
                data[at..at + inner].copy_from_slice(row);
            }
        }
        let (row, col) = if col_major { (1, ld) } else { (ld, 1) };
        Operand { data, off, s: CpuStrides { batch, row, col } }
    }

    fn get(&self, z: usize, r: usize, col: usize) -> f64 {
        self.data[self.off + z * self.s.batch + r * self.s.row + col * self.s.col] as f64
    }

    fn gpu(&self) -> MatStrides {
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
    da: DeviceBuffer<f32>,
    db: DeviceBuffer<f32>,
}

impl Case {
    fn new(nb: usize, (m, n, k): (usize, usize, usize), a: Operand, b: Operand) -> Res<Case> {
        let (da, db) = (DeviceBuffer::from_slice(&a.data)?, DeviceBuffer::from_slice(&b.data)?);
        Ok(Case { nb, m, n, k, a, b, da, db })
    }

    /// The twin on rows `rows` of every C[z]: (sum_k a b, sum_k |a b|), each (nb, rows, n).
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
        // NaN padding never enters: the twin reads only what the strides reach.
        let b64: Vec<f64> = self.b.data[self.b.off..].iter().map(|&v| v as f64).collect();
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
        let (mut want, mut mag) = (vec![0f64; self.nb * r * n], vec![0f64; self.nb * r * n]);
        matmul(self.nb, r, n, k, &a64, sa, &b64, self.b.s, &mut want);
        matmul(self.nb, r, n, k, &abs(&a64), sa, &abs(&b64), self.b.s, &mut mag);
        (want, mag)
    }

    /// Runs kernel `version` in `mode` with C at `c_off` of a poisoned buffer and a NaN
    /// workspace of `workspace`; returns C and whether its neighbours stayed NaN.
    fn run(&self, c: &Check, version: u32, mode: Tf32Mode, c_off: usize, workspace: usize) -> Res<(Vec<f32>, bool)> {
        let len = self.nb * self.m * self.n;
        let mut ws = if workspace > 0 { Some(poisoned(workspace)?) } else { None };
        let out = poisoned(c_off + len + 1)?;
        let mut view = out.index(c_off..c_off + len);
        let (a, b) = (self.da.index(self.a.off..), self.db.index(self.b.off..));
        let (nb, m, n, k) = (self.nb, self.m, self.n, self.k);
        let (sa, sb) = (self.a.gpu(), self.b.gpu());
        let workspace = ws.as_deref_mut();
        let args = MatmulTf32 { a: &a, sa, b: &b, sb, c: &mut view, nb, m, n, k, mode, workspace };
        c.gpu.matmul_tf32_version(version, args)?;
        c.gpu.stream.synchronize()?;
        let all = out.as_host_vec()?;
        let untouched = all[..c_off].iter().chain(&all[c_off + len..]).all(|v| v.is_nan());
        Ok((all[c_off..c_off + len].to_vec(), untouched))
    }

    /// (worst |got - want| / mag, all within tol) over rows `rows` of every batch.
    fn compare(&self, got: &[f32], rows: &[usize], (want, mag): &(Vec<f64>, Vec<f64>), tol: f64) -> (f64, bool) {
        let (mut worst, mut ok) = (0.0f64, true);
        for z in 0..self.nb {
            for (ri, &i) in rows.iter().enumerate() {
                for j in 0..self.n {
                    let t = (z * rows.len() + ri) * self.n + j;
                    let e = (got[(z * self.m + i) * self.n + j] as f64 - want[t]).abs();
                    ok &= e <= tol * mag[t]; // NaN fails
                    worst = worst.max(if e.is_finite() { e / mag[t].max(f64::MIN_POSITIVE) } else { f64::INFINITY });
                }
            }
        }
        (worst, ok)
    }
}

pub fn run(c: &mut Check) -> Res<()> {
    sweep(c)?;
    special(c)?;
    if c.timing {
        for s in [4096, 8192] {
            square(c, s)?;
        }
        mamba(c)?;
    }
    Ok(())
}

/// Every (m, n, k) in SIZES^3 for each layout, version and mode: one row per (layout, version, mode).
fn sweep(c: &mut Check) -> Res<()> {
    let sizes: &[usize] = if c.timing { &[1, 7, 33, 130, 260] } else { &[7, 130, 260] };
    for &(at, bt, name) in &LAYOUTS {
        let mut results = [(0.0f64, true); 2 * MATMUL_TF32_VERSIONS.len()];
        for &m in sizes {
            for &n in sizes {
                for &k in sizes {
                    let nb = 1 + c.rng.below(3);
                    let bcast = if nb > 1 { c.rng.below(3) } else { 0 }; // 0 none, 1 a, 2 b
                    let (pa, pb) = (c.rng.below(2) == 1, c.rng.below(2) == 1);
                    let a = Operand::random(c, (nb, m, k), at, bcast == 1, pa);
                    let b = Operand::random(c, (nb, k, n), bt, bcast == 2, pb);
                    let case = Case::new(nb, (m, n, k), a, b)?;
                    let all: Vec<usize> = (0..m).collect();
                    let twin = case.twin(&all);
                    for (i, r) in results.iter_mut().enumerate() {
                        let ((mode, _, tol), v) = (MODES[i % 2], MATMUL_TF32_VERSIONS[i / 2]);
                        let c_off = c.rng.below(3);
                        let (got, untouched) = case.run(c, v, mode, c_off, 0)?;
                        let (err, ok) = case.compare(&got, &all, &twin, tol);
                        *r = (r.0.max(err), r.1 && ok && untouched);
                    }
                }
            }
        }
        for (i, &(err, ok)) in results.iter().enumerate() {
            let (mode, v) = (MODES[i % 2].1, MATMUL_TF32_VERSIONS[i / 2]);
            let kernel = format!("matmul_tf32 v{v} {name} {mode} x{}", sizes.len().pow(3));
            c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
        }
    }
    Ok(())
}

/// Split-K with the workspace the launcher asks for (it must ask) and k == 0.
fn special(c: &mut Check) -> Res<()> {
    for &(at, bt, name) in &LAYOUTS {
        for (nb, m, n, k) in [(1, 130, 140, 5000), (2, 64, 80, 3000)] {
            let a = Operand::random(c, (nb, m, k), at, false, false);
            let b = Operand::random(c, (nb, k, n), bt, nb > 1, true);
            let case = Case::new(nb, (m, n, k), a, b)?;
            let ws = c.gpu.matmul_tf32_workspace(nb, m, n, k);
            let all: Vec<usize> = (0..m).collect();
            let twin = case.twin(&all);
            for v in MATMUL_TF32_VERSIONS {
                for &(mode, mname, tol) in &MODES {
                    let (got, untouched) = case.run(c, v, mode, 2, ws)?;
                    let (err, ok) = case.compare(&got, &all, &twin, tol);
                    let kernel = format!("matmul_tf32 v{v} {name} {nb}x{m}x{n}x{k} {mname} split-K");
                    c.rows.push(Row { kernel, err, ok: ok && untouched && ws > 0, us: f64::NAN, rate: f64::NAN });
                }
            }
        }
    }
    let a = Operand::random(c, (2, 5, 0), false, false, false);
    let b = Operand::random(c, (2, 0, 7), true, false, false);
    let zero = Case::new(2, (5, 7, 0), a, b)?;
    let (got, untouched) = zero.run(c, 1, Tf32Mode::Split3, 1, 0)?;
    let ok = untouched && got.iter().all(|&v| v == 0.0);
    c.rows.push(Row { kernel: "matmul_tf32 k=0 zeros".into(), err: 0.0, ok, us: f64::NAN, rate: f64::NAN });
    Ok(())
}

/// Times `case` (batch 1) in each version and mode and on matmul.cu's f32 kernel, each checked
/// on `rows`.
fn timed(c: &mut Check, case: &Case, rows: &[usize], what: &str) -> Res<()> {
    let twin = case.twin(rows);
    let (m, n, k) = (case.m, case.n, case.k);
    let (a, b) = (case.da.index(case.a.off..), case.db.index(case.b.off..));
    let (sa, sb) = (case.a.gpu(), case.b.gpu());
    let mut out = poisoned(m * n)?;
    let tflops = |us: f64| 2.0 * (m * n * k) as f64 / us / 1e6;
    for (v, &(mode, mname, tol)) in MATMUL_TF32_VERSIONS.iter().flat_map(|&v| MODES.iter().map(move |m| (v, m))) {
        let ws_len = c.gpu.matmul_tf32_workspace(1, m, n, k);
        let (got, untouched) = case.run(c, v, mode, 0, ws_len)?;
        let (err, ok) = case.compare(&got, rows, &twin, tol);
        let mut ws = if ws_len > 0 { Some(poisoned(ws_len)?) } else { None };
        let us = c.time(|| {
            let args =
                MatmulTf32 { a: &a, sa, b: &b, sb, c: &mut out, nb: 1, m, n, k, mode, workspace: ws.as_deref_mut() };
            Ok(c.gpu.matmul_tf32_version(v, args)?)
        })?;
        println!("matmul_tf32 v{v} {mname} {what} {m}x{n}x{k}: {us:.1} us, {:.1} TFLOP/s", tflops(us));
        let kernel = format!("matmul_tf32 v{v} {mname} {what} {m}x{n}x{k}");
        c.rows.push(Row { kernel, err, ok: ok && untouched, us, rate: tflops(us) * 1e3 });
    }
    let us = c.time(|| Ok(c.gpu.matmul_strided_f32(Matmul { a: &a, sa, b: &b, sb, c: &mut out, nb: 1, m, n, k })?))?;
    println!("matmul (f32, CUDA cores) {what} {m}x{n}x{k}: {us:.1} us, {:.1} TFLOP/s", tflops(us));
    Ok(())
}

/// `count` row indices below `m`, always including the last.
fn sample_rows(c: &mut Check, m: usize, count: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..count - 1).map(|_| c.rng.below(m)).collect();
    rows.push(m - 1);
    rows
}

/// s^3 in each layout.
fn square(c: &mut Check, s: usize) -> Res<()> {
    for &(at, bt, name) in &LAYOUTS {
        let a = Operand::random(c, (1, s, s), at, false, false);
        let b = Operand::random(c, (1, s, s), bt, false, false);
        let case = Case::new(1, (s, s, s), a, b)?;
        let rows = sample_rows(c, s, 16);
        timed(c, &case, &rows, &format!("{name} {s}^3"))?;
    }
    Ok(())
}

/// The d_model 768 Mamba LM at 16384 tokens: each Linear forward x W^T (nt), dx = dy W (nn),
/// dW^T = x^T dy (tn, split-K).
fn mamba(c: &mut Check) -> Res<()> {
    const T: usize = 16384;
    for (name, din, dout) in [("in_proj", 768, 3072), ("out_proj", 1536, 768), ("x_proj", 1536, 80)] {
        let products = [("nt fwd", (T, dout, din), false, true), ("nn dx", (T, din, dout), false, false)];
        for (what, (m, n, k), at, bt) in products {
            let a = Operand::random(c, (1, m, k), at, false, false);
            let b = Operand::random(c, (1, k, n), bt, false, false);
            let case = Case::new(1, (m, n, k), a, b)?;
            let rows = sample_rows(c, m, 16);
            timed(c, &case, &rows, &format!("{what} {name}"))?;
        }
        let a = Operand::random(c, (1, din, T), true, false, false);
        let b = Operand::random(c, (1, T, dout), false, false, false);
        let case = Case::new(1, (din, dout, T), a, b)?;
        let rows = sample_rows(c, din, 16);
        timed(c, &case, &rows, &format!("tn dW {name}"))?;
    }
    Ok(())
}
