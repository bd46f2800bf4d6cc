//! Launchers of `cu/matmul_bf16.cu`: the batched, strided product `c[z] = a[z] b[z]` on the
//! tensor cores, bf16 operands, f32 sums, C in f32 or bf16. When the output tiles do not fill
//! the GPU (dW with k = tokens), k is split across blocks into f32 partials in a caller-given
//! workspace, summed in order by a second kernel (deterministic, no atomics).
//!
//! The CPU twin is the same product in f64 from the same bf16 values (`ops::matmul::cpu::matmul`
//! on the widened inputs, in `tests/gpu_check/matmul_bf16.rs`); the kernels also run on the CPU
//! under `kernels/tools/emu/matmul_bf16.sh`.

use super::{sms, Cost, Gpu, MatStrides};
use crate::error::{ensure, Error, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// The kernel version [`Gpu::matmul_bf16`] runs; gpu-check times every one.
pub const MATMUL_BF16_VERSION: u32 = 1;
/// Versions that [`Gpu::matmul_bf16_version`] accepts: v1 (BK 32, 4 stages), v2 (BK 64, 3 stages).
pub const MATMUL_BF16_VERSIONS: [u32; 2] = [1, 2];
/// Products with `n` up to this run the 128 x 128 tile (`v1n`) whatever the version.
pub const MATMUL_BF16_NARROW_N: usize = 128;

/// Threads per block, most blocks along z, most k splits.
const THREADS: u32 = 256;
const MAX_GRID_Z: usize = 65535;
const MAX_SPLITS: usize = 32;
/// The split-K model (see `plan`): FLOP/s of one SM on mma.sync, the partials' bandwidth,
/// and the fixed cost of a wave of blocks (prologue, epilogue).
const SM_FLOPS: f64 = 3.8e12;
const PARTIALS_BYTES_PER_S: f64 = 3.0e12;
const WAVE_S: f64 = 2e-6;

/// One kernel family of matmul_bf16.cu (or matmul_tf32.cu): tile (bm, bn), k slice bk, ring
/// depth, resident blocks per SM (its `__launch_bounds__`), operand element bytes, and names by
/// layout (A col-major, B col-major) x variant (bf16: C f32 / bf16; tf32: 3xTF32 / one pass).
pub(super) struct Config {
    pub(super) bm: usize,
    pub(super) bn: usize,
    pub(super) bk: usize,
    pub(super) stages: usize,
    pub(super) per_sm: usize,
    pub(super) elem: usize,
    pub(super) kernels: [[&'static str; 2]; 4],
}

impl Config {
    pub(super) fn smem(&self) -> u32 {
        (self.stages * (self.bm + self.bn) * self.bk * self.elem) as u32
    }
}

macro_rules! names {
    ($v:literal) => {
        [
            [concat!("matmul_bf16_", $v, "_nn_f32"), concat!("matmul_bf16_", $v, "_nn_bf16")],
            [concat!("matmul_bf16_", $v, "_nt_f32"), concat!("matmul_bf16_", $v, "_nt_bf16")],
            [concat!("matmul_bf16_", $v, "_tn_f32"), concat!("matmul_bf16_", $v, "_tn_bf16")],
            [concat!("matmul_bf16_", $v, "_tt_f32"), concat!("matmul_bf16_", $v, "_tt_bf16")],
        ]
    };
}
const V1: Config = Config { bm: 128, bn: 256, bk: 32, stages: 4, per_sm: 1, elem: 2, kernels: names!("v1") };
const V1N: Config = Config { bm: 128, bn: 128, bk: 32, stages: 4, per_sm: 1, elem: 2, kernels: names!("v1n") };
const V2: Config = Config { bm: 128, bn: 256, bk: 64, stages: 3, per_sm: 1, elem: 2, kernels: names!("v2") };

/// Where C goes, contiguous `(nb, m, n)`: f32, or bf16 (bit patterns, rounded to nearest even once).
pub enum Bf16Out<'a> {
    F32(&'a mut DeviceSlice<f32>),
    Bf16(&'a mut DeviceSlice<u16>),
}

impl Bf16Out<'_> {
    fn len(&self) -> usize {
        match self {
            Bf16Out::F32(c) => c.len(),
            Bf16Out::Bf16(c) => c.len(),
        }
    }
    fn elem(&self) -> usize {
        match self {
            Bf16Out::F32(_) => 4,
            Bf16Out::Bf16(_) => 2,
        }
    }
    /// The device address of element `at`.
    fn ptr(&self, at: usize) -> u64 {
        match self {
            Bf16Out::F32(c) => c.as_device_ptr().as_raw() + 4 * at as u64,
            Bf16Out::Bf16(c) => c.as_device_ptr().as_raw() + 2 * at as u64,
        }
    }
}

/// The arguments of `c[z] = a[z] b[z]` for `z < nb`: `a[z] (m, k)` is
/// `a[z * sa.batch + r * sa.row + p * sa.col]` (bf16 bit patterns), `b[z] (k, n)` likewise
/// with `sb`, `c` contiguous `(nb, m, n)`. Each operand row- or column-major, 16-byte aligned
/// at its start, its leading dimension and batch stride multiples of 8 (the kernels copy
/// 16-byte chunks). `workspace`: f32 scratch for split-K ([`Gpu::matmul_bf16_workspace`]
/// says how much helps; `None` or shorter: fewer or no splits).
pub struct MatmulBf16<'a> {
    pub a: &'a DeviceSlice<u16>,
    pub sa: MatStrides,
    pub b: &'a DeviceSlice<u16>,
    pub sb: MatStrides,
    pub c: Bf16Out<'a>,
    pub nb: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub workspace: Option<&'a mut DeviceSlice<f32>>,
}

/// The parameter of every GEMM kernel (`struct MatmulBf16Params` in cu/matmul_bf16.cu): 80 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulBf16Params {
    a: DevicePointer<u16>,
    b: DevicePointer<u16>,
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
const _: () = assert!(std::mem::size_of::<MatmulBf16Params>() == 80);
// SAFETY: device pointers (one as its address) and integers, laid out as the C struct.
unsafe impl DeviceCopy for MatmulBf16Params {}

/// The parameter of `matmul_bf16_reduce_{f32,bf16}` (`struct MatmulBf16ReduceParams`): 32 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulBf16ReduceParams {
    w: DevicePointer<f32>,
    c: u64,
    mn: i64,
    splits: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<MatmulBf16ReduceParams>() == 32);
// SAFETY: as above.
unsafe impl DeviceCopy for MatmulBf16ReduceParams {}

/// flags bit 0 (MMB_VEC_C): C's pair stores are aligned.
pub(super) const VEC_C: i32 = 1;

/// How the kernels read one operand: column-major (else row-major) with leading dimension `ld`.
pub(super) struct Layout {
    pub(super) col_major: bool,
    pub(super) ld: usize,
}

/// Both operands' layouts ([`layout`]) of a tiled tensor-core product after checking that
/// (m, n, k) fit the kernels' int indexing (a tile of slack past each extent); with k == 0
/// nothing is read and the layouts are placeholders.
pub(super) fn operand_layouts(
    name: &'static str,
    elem: usize,
    (a, sa): (u64, MatStrides),
    (b, sb): (u64, MatStrides),
    nb: usize,
    (m, n, k): (usize, usize, usize),
) -> Result<(Layout, Layout)> {
    let fits = |x: usize| x <= (i32::MAX as usize) - 512;
    ensure(fits(m) && fits(n) && fits(k) && fits(m.div_ceil(128) * n.div_ceil(128)), name, || {
        format!("(m, n, k) = ({m}, {n}, {k}) too large")
    })?;
    if k == 0 {
        return Ok((Layout { col_major: false, ld: 0 }, Layout { col_major: false, ld: 0 }));
    }
    Ok((layout(name, elem, a, nb, (m, k), sa)?, layout(name, elem, b, nb, (k, n), sb)?))
}

/// The layout of an operand `name` at device address `base` with strides `s`, of elements of
/// `elem` bytes: row-major if a row is contiguous, column-major if a column is, whichever keeps
/// every 16-byte chunk aligned; an error otherwise. The stride of a size-1 axis is never used,
/// so it does not count.
pub(super) fn layout(
    name: &'static str,
    elem: usize,
    base: u64,
    nb: usize,
    (rows, cols): (usize, usize),
    s: MatStrides,
) -> Result<Layout> {
    let per_chunk = 16 / elem;
    let batch_ok = nb == 1 || s.batch.is_multiple_of(per_chunk);
    let aligned =
        |outer: usize, ld: usize| base.is_multiple_of(16) && batch_ok && (outer == 1 || ld.is_multiple_of(per_chunk));
    let row_major = (s.col == 1 || cols == 1).then_some(Layout { col_major: false, ld: s.row });
    let col_major = (s.row == 1 || rows == 1).then_some(Layout { col_major: true, ld: s.col });
    if row_major.is_none() && col_major.is_none() {
        let what = format!("operand strides {s:?} are neither row- nor column-major (copy it to contiguous first)");
        return Err(Error::bad(name, what));
    }
    ensure(s.row.max(s.col).max(s.batch) <= i64::MAX as usize, name, || format!("stride too large in {s:?}"))?;
    let fits = |l: &Layout| aligned(if l.col_major { cols } else { rows }, l.ld);
    match (row_major, col_major) {
        (Some(l), _) if fits(&l) => Ok(l),
        (_, Some(l)) if fits(&l) => Ok(l),
        _ => Err(Error::bad(
            name,
            format!(
                "a tensor-core operand must start 16-byte aligned (this one is {} bytes past) with its \
                 leading dimension and batch stride multiples of {per_chunk} elements (strides {s:?}): the \
                 kernels copy 16-byte chunks; copy it to a contiguous buffer first",
                base % 16
            ),
        )),
    }
}

/// The kernel family for `version` and `n`: the 128-wide tile for narrow C, else the version's.
fn config(version: u32, n: usize) -> &'static Config {
    match version {
        _ if n <= MATMUL_BF16_NARROW_N => &V1N,
        1 => &V1,
        _ => &V2,
    }
}

/// How many ways to split k, and the k extent of each split (a multiple of `bk`): the count
/// that minimises a model of the time, waves x slices per split x time per slice, plus the
/// partials' round trip through memory, with at most `room` f32 of workspace. Most shapes
/// fill the GPU and get 1.
pub(super) fn plan(cfg: &Config, nb: usize, m: usize, n: usize, k: usize, room: usize) -> (usize, usize) {
    let kt = k.div_ceil(cfg.bk);
    if kt <= 1 {
        return (1, k);
    }
    let tiles = m.div_ceil(cfg.bm) * n.div_ceil(cfg.bn) * nb;
    let slots = sms() * cfg.per_sm;
    let slice_s = (2 * cfg.bm * cfg.bn * cfg.bk * cfg.per_sm) as f64 / SM_FLOPS;
    let partials = (nb * m * n) as f64 * 4.0;
    let mut best = (f64::INFINITY, 1, k);
    for s in 1..=MAX_SPLITS.min(kt) {
        let kchunk = kt.div_ceil(s) * cfg.bk;
        let splits = k.div_ceil(kchunk);
        if splits > 1 && (splits.saturating_mul(nb * m * n) > room || splits * nb > MAX_GRID_Z) {
            break;
        }
        let waves = (tiles * splits).div_ceil(slots) as f64;
        let extra = if splits > 1 { (splits + 1) as f64 * partials / PARTIALS_BYTES_PER_S } else { 0.0 };
        let t = waves * ((kchunk / cfg.bk) as f64 * slice_s + WAVE_S) + extra;
        if t < best.0 * 0.97 {
            best = (t, splits, if splits > 1 { kchunk } else { k });
        }
    }
    (best.1, best.2)
}

impl Gpu {
    /// `c[z] = a[z] b[z]` ([`MatmulBf16`]) with kernel version [`MATMUL_BF16_VERSION`].
    pub fn matmul_bf16(&self, args: MatmulBf16<'_>) -> Result<()> {
        self.matmul_bf16_version(MATMUL_BF16_VERSION, args)
    }

    /// The f32 elements of workspace with which [`Gpu::matmul_bf16_version`] would split k for
    /// these sizes (0: it would not split).
    pub fn matmul_bf16_workspace(&self, version: u32, nb: usize, m: usize, n: usize, k: usize) -> usize {
        let (splits, _) = plan(config(version, n), nb, m, n, k, usize::MAX);
        if splits > 1 {
            splits * nb * m * n
        } else {
            0
        }
    }

    /// [`Gpu::matmul_bf16`] with kernel version `version` (one of [`MATMUL_BF16_VERSIONS`]);
    /// `n <= MATMUL_BF16_NARROW_N` runs the narrow tile of v1 for either. `k == 0` writes zeros.
    pub fn matmul_bf16_version(&self, version: u32, args: MatmulBf16<'_>) -> Result<()> {
        const NAME: &str = "matmul_bf16";
        ensure(MATMUL_BF16_VERSIONS.contains(&version), NAME, || format!("no kernel version {version}"))?;
        check_operands(NAME, &args)?;
        let MatmulBf16 { a, sa, b, sb, c, nb, m, n, k, mut workspace } = args;
        if nb == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let (la, lb) = operand_layouts(
            NAME,
            2,
            (a.as_device_ptr().as_raw(), sa),
            (b.as_device_ptr().as_raw(), sb),
            nb,
            (m, n, k),
        )?;
        let cfg = config(version, n);
        let room = workspace.as_ref().map_or(0, |w| w.len());
        // Splits only when the whole batch fits one launch (plan checks), so one workspace does.
        let (splits, kchunk) = plan(cfg, nb, m, n, k, room);
        let (out_bf16, esize) = (matches!(c, Bf16Out::Bf16(_)), c.elem());
        let kernel = cfg.kernels[2 * la.col_major as usize + lb.col_major as usize][(out_bf16 && splits == 1) as usize];
        self.raise_smem_limit(kernel, cfg.smem())?;
        let grid_x = (m.div_ceil(cfg.bm) * n.div_ceil(cfg.bn)) as u32;
        let per_launch = MAX_GRID_Z / splits;
        for z0 in (0..nb).step_by(per_launch) {
            let chunk = per_launch.min(nb - z0);
            let reads = |s: MatStrides, elems: usize| if s.batch == 0 { elems } else { chunk * elems };
            // C, or the f32 partials (the reduce's bytes are its own row in the profile).
            let out = if splits > 1 { 4 * splits } else { esize };
            let bytes = 2 * (reads(sa, m * k) + reads(sb, k * n)) + out * chunk * m * n;
            let cost = Cost { bytes: bytes as f64, flops: 2.0 * (chunk * m * n * k) as f64 };
            // In bounds: z0 * batch <= the last index read (k == 0 reads nothing).
            let (a, b) =
                if k > 0 { (a.index(z0 * sa.batch..), b.index(z0 * sb.batch..)) } else { (a.index(..), b.index(..)) };
            let c_at = c.ptr(z0 * m * n);
            let target = match (&mut workspace, splits) {
                (Some(w), s) if s > 1 => w.as_device_ptr().as_raw(),
                _ => c_at,
            };
            let pair = if splits > 1 { 8 } else { 2 * esize as u64 };
            let vec_c = target.is_multiple_of(pair) && n.is_multiple_of(2);
            let params = MatmulBf16Params {
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
                flags: if vec_c { VEC_C } else { 0 },
                splits: splits as i32,
                kchunk: kchunk as i32,
            };
            self.launch(kernel, (grid_x, 1, (chunk * splits) as u32), THREADS, cfg.smem(), params, cost)?;
            if splits > 1 {
                self.splitk_reduce(target, c_at, out_bf16, splits, chunk, m * n)?;
            }
        }
        Ok(())
    }

    /// The second pass of split-K: `c[z] = sum_s w[z splits + s]` for `z < nb` over `mn` elements.
    fn splitk_reduce(&self, w: u64, c: u64, out_bf16: bool, splits: usize, nb: usize, mn: usize) -> Result<()> {
        let kernel = if out_bf16 { "matmul_bf16_reduce_bf16" } else { "matmul_bf16_reduce_f32" };
        let bytes = (4 * splits + if out_bf16 { 2 } else { 4 }) * nb * mn;
        let cost = Cost { bytes: bytes as f64, flops: ((splits - 1) * nb * mn) as f64 };
        // About 8 blocks per SM in all, at most one element per thread.
        let blocks = mn.div_ceil(THREADS as usize).min((8 * sms()).div_ceil(nb)).max(1) as u32;
        let params =
            MatmulBf16ReduceParams { w: DevicePointer::from_raw(w), c, mn: mn as i64, splits: splits as i32, pad: 0 };
        self.launch(kernel, (blocks, nb as u32, 1), THREADS, 0, params, cost)
    }
}

/// Fails unless `c` holds `(nb, m, n)` and, when `k > 0`, `a` and `b` hold every element
/// their strides reach.
fn check_operands(name: &'static str, x: &MatmulBf16) -> Result<()> {
    let MatmulBf16 { a, sa, b, sb, ref c, nb, m, n, k, .. } = *x;
    check_extents(name, [a.len(), b.len(), c.len()], [sa, sb], [nb, m, n, k])
}

/// [`check_operands`] from the lengths of a, b, c, their strides and (nb, m, n, k).
pub(super) fn check_extents(
    name: &'static str,
    [a, b, c]: [usize; 3],
    [sa, sb]: [MatStrides; 2],
    [nb, m, n, k]: [usize; 4],
) -> Result<()> {
    let need = nb * m * n;
    ensure(c >= need, name, || format!("c holds {c} elements, (nb, m, n) needs {need}"))?;
    if k > 0 && nb > 0 && m > 0 && n > 0 {
        let last =
            |rows: usize, cols: usize, s: MatStrides| (nb - 1) * s.batch + (rows - 1) * s.row + (cols - 1) * s.col;
        ensure(a > last(m, k, sa), name, || format!("a too short for (nb, m, k) with strides {sa:?}"))?;
        ensure(b > last(k, n, sb), name, || format!("b too short for (nb, k, n) with strides {sb:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split-K goes to the products whose tiles do not fill the GPU (dW, k = 16384 tokens), not
    /// to those that do, and never past the workspace.
    #[test]
    fn plan_splits_only_what_does_not_fill_the_gpu() {
        let t = 16384;
        for (m, n, k) in [(8192, 8192, 8192), (t, 3072, 768), (t, 768, 1536), (t, 1536, 48)] {
            assert_eq!(plan(config(1, n), 1, m, n, k, usize::MAX).0, 1, "{m}x{n}x{k}");
        }
        for (m, n) in [(768, 3072), (1536, 768), (1536, 80), (48, 1536)] {
            let (splits, kchunk) = plan(config(1, n), 1, m, n, t, usize::MAX);
            println!("dW {m}x{n}x{t}: {splits} splits of {kchunk}");
            assert!(splits > 1 && kchunk % 32 == 0 && (splits - 1) * kchunk < t && splits * kchunk >= t);
            assert!(plan(config(1, n), 1, m, n, t, splits * m * n - 1).0 < splits, "a short workspace splits less");
        }
    }
}
