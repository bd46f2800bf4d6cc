//! Launchers of `cu/matmul_tf32.cu`: the batched, strided f32 product `c[z] = a[z] b[z]` on the
//! tensor cores, as 3xTF32 (f32 accuracy) or one tf32 pass. The shapes, layouts, split-K plan
//! and checks are matmul_bf16.rs's (`Config`, `layout`, `plan`, `check_extents`), with 4-byte
//! elements: operands 16-byte aligned, leading dimension and batch stride multiples of 4.
//!
//! The CPU twin is the f32 product (`ops::matmul::cpu::matmul`, checked in f64 in
//! `tests/gpu_check/matmul_tf32.rs`); the kernels also run on the CPU under
//! `kernels/tools/emu/matmul_tf32.sh`.

use super::matmul_bf16::{check_extents, layout, operand_layouts, plan, Config, VEC_C};
use super::{sms, Cost, Gpu, MatStrides};
use crate::error::{ensure, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

const THREADS: u32 = 256;
const MAX_GRID_Z: usize = 65535;

/// The kernel version [`Gpu::matmul_tf32`] runs; gpu-check times every one (H200: v2 within 1%
/// of v1 in every layout and shape, docs/PERF.md).
pub const MATMUL_TF32_VERSION: u32 = 1;
/// Versions that [`Gpu::matmul_tf32_version`] accepts: v1 (load a step's fragments, then
/// multiply), v2 (the next step's fragments loaded before this step's products).
pub const MATMUL_TF32_VERSIONS: [u32; 2] = [1, 2];

macro_rules! names {
    ($v:literal) => {
        [
            [concat!("matmul_tf32_", $v, "_nn_f32"), concat!("matmul_tf32_", $v, "_nn_tf32")],
            [concat!("matmul_tf32_", $v, "_nt_f32"), concat!("matmul_tf32_", $v, "_nt_tf32")],
            [concat!("matmul_tf32_", $v, "_tn_f32"), concat!("matmul_tf32_", $v, "_tn_tf32")],
            [concat!("matmul_tf32_", $v, "_tt_f32"), concat!("matmul_tf32_", $v, "_tt_tf32")],
        ]
    };
}
/// 128 x 128 tiles, BK 32, 3 stages; names by layout x (3xTF32, one pass).
const V1: Config = Config { bm: 128, bn: 128, bk: 32, stages: 3, per_sm: 1, elem: 4, kernels: names!("v1") };
const V2: Config = Config { bm: 128, bn: 128, bk: 32, stages: 3, per_sm: 1, elem: 4, kernels: names!("v2") };

/// How the products are made: 3xTF32 (each operand split into two tf32 parts, three tensor-core
/// products: f32 accuracy) or one tf32 pass (10 mantissa bits, PyTorch's allow_tf32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tf32Mode {
    Split3,
    OnePass,
}

/// The arguments of `c[z] = a[z] b[z]` for `z < nb`, as [`super::MatmulBf16`] with f32 operands:
/// `a[z] (m, k)` is `a[z * sa.batch + r * sa.row + p * sa.col]`, `b[z] (k, n)` likewise, `c`
/// contiguous `(nb, m, n)`. `workspace`: f32 scratch for split-K
/// ([`Gpu::matmul_tf32_workspace`]; `None` or shorter: fewer or no splits).
pub struct MatmulTf32<'a> {
    pub a: &'a DeviceSlice<f32>,
    pub sa: MatStrides,
    pub b: &'a DeviceSlice<f32>,
    pub sb: MatStrides,
    pub c: &'a mut DeviceSlice<f32>,
    pub nb: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub mode: Tf32Mode,
    pub workspace: Option<&'a mut DeviceSlice<f32>>,
}

/// `struct MatmulTf32Params` in cu/matmul_tf32.cu: 80 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulTf32Params {
    a: DevicePointer<f32>,
    b: DevicePointer<f32>,
    c: u64,
    lda: i64,
    sa: i64,
    ldb: i64,
    sb: i64,
    m: i32,
    n: i32,
    k: i32,
    flags: i32,
    splits: i32,
    kchunk: i32,
}
const _: () = assert!(std::mem::size_of::<MatmulTf32Params>() == 80);
// SAFETY: device pointers (one as its address) and integers, laid out as the C struct.
unsafe impl DeviceCopy for MatmulTf32Params {}

/// `struct MatmulTf32ReduceParams`: 32 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulTf32ReduceParams {
    w: DevicePointer<f32>,
    c: u64,
    mn: i64,
    splits: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<MatmulTf32ReduceParams>() == 32);
// SAFETY: as above.
unsafe impl DeviceCopy for MatmulTf32ReduceParams {}

/// Whether the tf32 kernels can read an operand at device address `base` with strides `s` in
/// place (else the caller runs matmul.cu or copies it first).
pub fn tf32_readable(base: u64, nb: usize, rows: usize, cols: usize, s: MatStrides) -> bool {
    layout("matmul_tf32", 4, base, nb, (rows, cols), s).is_ok()
}

impl Gpu {
    /// The f32 elements of workspace with which [`Gpu::matmul_tf32`] would split k for these
    /// sizes (0: it would not split).
    pub fn matmul_tf32_workspace(&self, nb: usize, m: usize, n: usize, k: usize) -> usize {
        let (splits, _) = plan(&V1, nb, m, n, k, usize::MAX);
        if splits > 1 {
            splits * nb * m * n
        } else {
            0
        }
    }

    /// `c[z] = a[z] b[z]` ([`MatmulTf32`]) with kernel version [`MATMUL_TF32_VERSION`].
    pub fn matmul_tf32(&self, args: MatmulTf32<'_>) -> Result<()> {
        self.matmul_tf32_version(MATMUL_TF32_VERSION, args)
    }

    /// [`Gpu::matmul_tf32`] with kernel version `version` (one of [`MATMUL_TF32_VERSIONS`]);
    /// `k == 0` writes zeros.
    pub fn matmul_tf32_version(&self, version: u32, args: MatmulTf32<'_>) -> Result<()> {
        const NAME: &str = "matmul_tf32";
        ensure(MATMUL_TF32_VERSIONS.contains(&version), NAME, || format!("no kernel version {version}"))?;
        let MatmulTf32 { a, sa, b, sb, c, nb, m, n, k, mode, mut workspace } = args;
        check_extents(NAME, [a.len(), b.len(), c.len()], [sa, sb], [nb, m, n, k])?;
        if nb == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let (la, lb) = operand_layouts(
            NAME,
            4,
            (a.as_device_ptr().as_raw(), sa),
            (b.as_device_ptr().as_raw(), sb),
            nb,
            (m, n, k),
        )?;
        let cfg = if version == 1 { &V1 } else { &V2 };
        let room = workspace.as_ref().map_or(0, |w| w.len());
        let (splits, kchunk) = plan(cfg, nb, m, n, k, room);
        let kernel =
            cfg.kernels[2 * la.col_major as usize + lb.col_major as usize][(mode == Tf32Mode::OnePass) as usize];
        self.raise_smem_limit(kernel, cfg.smem())?;
        let grid_x = (m.div_ceil(cfg.bm) * n.div_ceil(cfg.bn)) as u32;
        let per_launch = MAX_GRID_Z / splits;
        for z0 in (0..nb).step_by(per_launch) {
            let chunk = per_launch.min(nb - z0);
            let reads = |s: MatStrides, elems: usize| if s.batch == 0 { elems } else { chunk * elems };
            let bytes = 4 * (reads(sa, m * k) + reads(sb, k * n)) + 4 * splits * chunk * m * n;
            // FLOPs of the f32 product (not the three passes), so rates compare with matmul.cu's.
            let cost = Cost { bytes: bytes as f64, flops: 2.0 * (chunk * m * n * k) as f64 };
            let (a, b) =
                if k > 0 { (a.index(z0 * sa.batch..), b.index(z0 * sb.batch..)) } else { (a.index(..), b.index(..)) };
            let c_at = c.as_device_ptr().as_raw() + 4 * (z0 * m * n) as u64;
            let target = match (&mut workspace, splits) {
                (Some(w), s) if s > 1 => w.as_device_ptr().as_raw(),
                _ => c_at,
            };
            let params = MatmulTf32Params {
                a: a.as_device_ptr(),
                b: b.as_device_ptr(),
                c: target,
                lda: la.ld as i64,
                sa: sa.batch as i64,
                ldb: lb.ld as i64,
                sb: sb.batch as i64,
                m: m as i32,
                n: n as i32,
                k: k as i32,
                flags: if target.is_multiple_of(8) && n.is_multiple_of(2) { VEC_C } else { 0 },
                splits: splits as i32,
                kchunk: kchunk as i32,
            };
            self.launch(kernel, (grid_x, 1, (chunk * splits) as u32), THREADS, cfg.smem(), params, cost)?;
            if splits > 1 {
                let cost = Cost {
                    bytes: (4 * (splits + 1) * chunk * m * n) as f64,
                    flops: ((splits - 1) * chunk * m * n) as f64,
                };
                let blocks = (m * n).div_ceil(THREADS as usize).min((8 * sms()).div_ceil(chunk)).max(1) as u32;
                let params = MatmulTf32ReduceParams {
                    w: DevicePointer::from_raw(target),
                    c: c_at,
                    mn: (m * n) as i64,
                    splits: splits as i32,
                    pad: 0,
                };
                self.launch("matmul_tf32_reduce", (blocks, chunk as u32, 1), THREADS, 0, params, cost)?;
            }
        }
        Ok(())
    }
}
