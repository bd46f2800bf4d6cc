//! Launchers of `cu/matmul.cu`: the batched, strided product the engine uses for every
//! matmul (forward and both backward forms, whose operands are transposed views).

use super::{Cost, Gpu};
use crate::error::{ensure, Error, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Strides of one matmul operand, in elements; `batch` 0 broadcasts it over the batch.
/// The same fields as `ops::matmul::cpu::MatStrides` (the engine converts its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatStrides {
    pub batch: usize,
    pub row: usize,
    pub col: usize,
}

/// The kernel version [`Gpu::matmul_strided_f32`] (and so [`Gpu::matmul_f32`]) runs for m > 8; gpu-check
/// times every version. v2 (double-buffered) is expected to beat v1; switch here if the H100 says otherwise.
pub const MATMUL_VERSION: u32 = 2;
/// Versions that [`Gpu::matmul_strided_f32_version`] accepts.
pub const MATMUL_VERSIONS: [u32; 2] = [1, 2];

/// Kernel names by version and layout (A column-major, B column-major): n = row-major, t = column-major.
const KERNELS: [[&str; 4]; 2] = [
    ["matmul_v1_nn_f32", "matmul_v1_nt_f32", "matmul_v1_tn_f32", "matmul_v1_tt_f32"],
    ["matmul_v2_nn_f32", "matmul_v2_nt_f32", "matmul_v2_tn_f32", "matmul_v2_tt_f32"],
];

/// Tile of C per block (BM = BN in matmul.cu), threads per block, most blocks along y and z.
const TILE: usize = 128;
const THREADS: u32 = 256;
const MAX_GRID_YZ: usize = 65535;

/// Most rows of A the small-m kernels take (SMALL_M in matmul.cu; why 8: see there).
const SMALL_M: usize = 8;
/// Floats of A a small-m block stages in shared memory at once (32 KiB).
const SMALL_M_SHARED: usize = 8192;
/// Columns of C per `matmul_small_m_nn_f32` block (NN_COLS in matmul.cu).
const NN_COLS: usize = 16;
/// SMs of the H100: the small-m launchers size blocks so that at least two land on each.
const SMS: usize = 132;

/// How the kernel reads one operand of shape (rows, cols).
struct Layout {
    /// Column-major (element (r, c) at r + c * ld), else row-major (r * ld + c).
    col_major: bool,
    ld: usize,
    /// Every 16-byte load the kernel may issue is aligned.
    vec: bool,
}

/// The layout of an operand at `base` (a device address) with strides `s`; an error unless
/// a row or a column is contiguous. The stride of a size-1 axis is never used, so it does not count.
fn layout(name: &'static str, base: u64, nb: usize, rows: usize, cols: usize, s: MatStrides) -> Result<Layout> {
    let (col_major, ld, outer) = if s.col == 1 || cols == 1 {
        (false, s.row, rows)
    } else if s.row == 1 || rows == 1 {
        (true, s.col, cols)
    } else {
        let what = format!("operand strides {s:?} are neither row- nor column-major (copy it to contiguous first)");
        return Err(Error::bad(name, what));
    };
    // float4 loads at base + z * batch + outer * ld + 4j: all 16-byte aligned?
    let vec = base.is_multiple_of(16) && (outer == 1 || ld.is_multiple_of(4)) && (nb == 1 || s.batch.is_multiple_of(4));
    ensure(ld <= i64::MAX as usize && s.batch <= i64::MAX as usize, name, || format!("stride too large in {s:?}"))?;
    Ok(Layout { col_major, ld, vec })
}

/// The arguments of a batched strided product `c[z] = a[z] b[z]` for `z < nb`: `a[z] (m, k)`
/// is `a[z * sa.batch + r * sa.row + p * sa.col]`, `b[z] (k, n)` likewise with `sb`, and `c`
/// is contiguous `(nb, m, n)` (written). See [`Gpu::matmul_strided_f32`].
pub struct Matmul<'a> {
    pub a: &'a DeviceSlice<f32>,
    pub sa: MatStrides,
    pub b: &'a DeviceSlice<f32>,
    pub sb: MatStrides,
    pub c: &'a mut DeviceSlice<f32>,
    pub nb: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The parameter of the tiled kernels `matmul_v{1,2}_{nn,nt,tn,tt}_f32` (`struct
/// MatmulParams` in cu/matmul.cu): 72 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulParams {
    a: DevicePointer<f32>,
    b: DevicePointer<f32>,
    c: DevicePointer<f32>,
    lda: i64,
    sa: i64,
    ldb: i64,
    sb: i64,
    m: i32,
    n: i32,
    k: i32,
    flags: i32,
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 72);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for MatmulParams {}

/// The parameter of `matmul_small_m_{nt,nn}_f32` (`struct MatmulSmallMParams`): 88 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulSmallMParams {
    a: DevicePointer<f32>,
    b: DevicePointer<f32>,
    c: DevicePointer<f32>,
    a_rs: i64,
    a_cs: i64,
    sa: i64,
    ldb: i64,
    sb: i64,
    m: i32,
    n: i32,
    k: i32,
    kc: i32,
    flags: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<MatmulSmallMParams>() == 88);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for MatmulSmallMParams {}

/// Largest element index `(nb, rows, cols)` with strides `s` reads (all sizes > 0).
fn last_index(nb: usize, rows: usize, cols: usize, s: MatStrides) -> usize {
    (nb - 1) * s.batch + (rows - 1) * s.row + (cols - 1) * s.col
}

impl Gpu {
    /// `c = a b` for row-major contiguous `a (m, k)`, `b (k, n)`, `c (m, n)` — twin of
    /// `ops::matmul::cpu::matmul` with batch 1; a thin wrapper of [`Gpu::matmul_strided_f32`].
    pub fn matmul_f32(
        &self,
        a: &DeviceSlice<f32>,
        b: &DeviceSlice<f32>,
        c: &mut DeviceSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        const NAME: &str = "matmul_f32";
        ensure(a.len() == m * k && b.len() == k * n && c.len() == m * n, NAME, || {
            format!("buffer sizes {}, {}, {} do not match (m, n, k) = ({m}, {n}, {k})", a.len(), b.len(), c.len())
        })?;
        let (sa, sb) = (MatStrides { batch: 0, row: k, col: 1 }, MatStrides { batch: 0, row: n, col: 1 });
        self.matmul_strided_f32(Matmul { a, sa, b, sb, c, nb: 1, m, n, k })
    }

    /// `c[z] = a[z] b[z]` for `z < nb` ([`Matmul`]) — twin of `ops::matmul::cpu::matmul`. Each
    /// operand must be row-major (`col == 1`) or column-major (`row == 1`) with any leading
    /// dimension, any batch stride (0 = broadcast) and any start (a view). `k == 0` writes
    /// zeros. Runs [`Gpu::matmul_small_m_f32`] for `m <= Gpu::MATMUL_SMALL_M` (token-by-token
    /// generation), else kernel version [`MATMUL_VERSION`].
    pub fn matmul_strided_f32(&self, args: Matmul<'_>) -> Result<()> {
        if args.m <= SMALL_M {
            return self.matmul_small_m_f32(args);
        }
        self.matmul_strided_f32_version(MATMUL_VERSION, args)
    }

    /// Rows of A up to which [`Gpu::matmul_strided_f32`] runs [`Gpu::matmul_small_m_f32`].
    pub const MATMUL_SMALL_M: usize = SMALL_M;

    /// [`Gpu::matmul_strided_f32`] for `m <= Gpu::MATMUL_SMALL_M`: the GEMV-style kernels
    /// `matmul_small_m_{nt,nn}_f32`, which read B once with all SMs busy (the tiled kernels
    /// launch only ceil(n / 128) blocks for such m). B column-major (a Linear weight as W^T)
    /// runs `nt`, row-major `nn`; A may have any strides (it is staged in shared memory).
    pub fn matmul_small_m_f32(&self, args: Matmul<'_>) -> Result<()> {
        const NAME: &str = "matmul_small_m_f32";
        check_operands(NAME, &args)?;
        let Matmul { a, sa, b, sb, c, nb, m, n, k } = args;
        ensure(m <= SMALL_M, NAME, || format!("m = {m} is more than {SMALL_M} rows"))?;
        if nb == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        // The kernels index with int; k walks in chunks of up to SMALL_M_SHARED past k.
        let fits = |x: usize| x <= (i32::MAX as usize) - 2 * SMALL_M_SHARED;
        ensure(fits(n) && fits(k), NAME, || format!("(n, k) = ({n}, {k}) too large"))?;
        ensure(sa.row.max(sa.col) <= i64::MAX as usize && sa.batch <= i64::MAX as usize, NAME, || {
            format!("a stride of {sa:?} too large")
        })?;
        let b_base = b.as_device_ptr().as_raw();
        let lb = layout(NAME, b_base, nb, k, n, sb)?;
        // One column (n == 1) stored contiguously is a column-major B whatever its col stride.
        let column = n == 1 && sb.row == 1 && !lb.col_major;
        let (nt, ldb, vec_b) = if column {
            (true, 0, b_base.is_multiple_of(16) && (nb == 1 || sb.batch.is_multiple_of(4)))
        } else {
            (lb.col_major, lb.ld, lb.vec)
        };
        // A's chunk: a multiple of 4 columns, m * kc * 4 <= 32 KiB of dynamic shared memory.
        let kc = (SMALL_M_SHARED / m / 4 * 4).min(k.next_multiple_of(4)).max(4);
        let shared = (4 * m * kc) as u32;
        // nt: a warp per column, fewer warps per block for small n (more SMs pulling B);
        // nn: NN_COLS columns per block, more row groups (512 threads) for small n.
        let (kernel, per_block, threads) = if nt {
            let warps = if n >= 8 * 2 * SMS {
                8
            } else if n >= 4 * 2 * SMS {
                4
            } else {
                2
            };
            ("matmul_small_m_nt_f32", warps, 32 * warps as u32)
        } else {
            ("matmul_small_m_nn_f32", NN_COLS, if n.div_ceil(NN_COLS) >= 2 * SMS { 256 } else { 512 })
        };
        for z0 in (0..nb).step_by(MAX_GRID_YZ) {
            let chunk = MAX_GRID_YZ.min(nb - z0);
            // Bytes: each operand read once (a broadcast one once in all), C written once.
            let reads = |s: MatStrides, elems| if s.batch == 0 { elems } else { chunk * elems };
            let bytes = 4 * (reads(sa, m * k) + reads(sb, k * n) + chunk * m * n);
            let cost = Cost { bytes: bytes as f64, flops: 2.0 * (chunk * m * n * k) as f64 };
            let (a, b) =
                if k > 0 { (a.index(z0 * sa.batch..), b.index(z0 * sb.batch..)) } else { (a.index(..), b.index(..)) };
            let cz = c.index(z0 * m * n..);
            let grid = (n.div_ceil(per_block) as u32, chunk as u32, 1);
            let params = MatmulSmallMParams {
                a: a.as_device_ptr(),
                b: b.as_device_ptr(),
                c: cz.as_device_ptr(),
                a_rs: sa.row as i64,
                a_cs: sa.col as i64,
                sa: sa.batch as i64,
                ldb: ldb as i64,
                sb: sb.batch as i64,
                m: m as i32,
                n: n as i32,
                k: k as i32,
                kc: kc as i32,
                flags: (vec_b as i32) << 1,
                pad: 0,
            };
            self.launch(kernel, grid, threads, shared, params, cost)?;
        }
        Ok(())
    }

    /// [`Gpu::matmul_strided_f32`] with kernel version `version` (one of [`MATMUL_VERSIONS`]).
    pub fn matmul_strided_f32_version(&self, version: u32, args: Matmul<'_>) -> Result<()> {
        const NAME: &str = "matmul_strided_f32";
        ensure(MATMUL_VERSIONS.contains(&version), NAME, || format!("no kernel version {version}"))?;
        check_operands(NAME, &args)?;
        let Matmul { a, sa, b, sb, c, nb, m, n, k } = args;
        if nb == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        // The kernels index with int (plus a tile of slack) and put row tiles on grid y.
        let fits = |x: usize| x <= (i32::MAX as usize) - 2 * TILE;
        ensure(fits(m) && fits(n) && fits(k) && m.div_ceil(TILE) <= MAX_GRID_YZ, NAME, || {
            format!("(m, n, k) = ({m}, {n}, {k}) too large")
        })?;
        let la = layout(NAME, a.as_device_ptr().as_raw(), nb, m, k, sa)?;
        let lb = layout(NAME, b.as_device_ptr().as_raw(), nb, k, n, sb)?;
        let vec_c = c.as_device_ptr().as_raw().is_multiple_of(16) && n.is_multiple_of(4);
        let flags = la.vec as i32 | (lb.vec as i32) << 1 | (vec_c as i32) << 2;
        let kernel = KERNELS[version as usize - 1][2 * la.col_major as usize + lb.col_major as usize];
        // Grid z is at most 65535: a larger batch is several launches on offset views.
        for z0 in (0..nb).step_by(MAX_GRID_YZ) {
            let chunk = MAX_GRID_YZ.min(nb - z0);
            // Bytes: each operand read once (a broadcast one once in all), C written once.
            let reads = |s: MatStrides, elems| if s.batch == 0 { elems } else { chunk * elems };
            let bytes = 4 * (reads(sa, m * k) + reads(sb, k * n) + chunk * m * n);
            let cost = Cost { bytes: bytes as f64, flops: 2.0 * (chunk * m * n * k) as f64 };
            // In bounds: z0 * batch <= the last index read (or 0 when k == 0 reads nothing).
            let (a, b) =
                if k > 0 { (a.index(z0 * sa.batch..), b.index(z0 * sb.batch..)) } else { (a.index(..), b.index(..)) };
            let cz = c.index(z0 * m * n..);
            let grid = (n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, chunk as u32);
            let params = MatmulParams {
                a: a.as_device_ptr(),
                b: b.as_device_ptr(),
                c: cz.as_device_ptr(),
                lda: la.ld as i64,
                sa: sa.batch as i64,
                ldb: lb.ld as i64,
                sb: sb.batch as i64,
                m: m as i32,
                n: n as i32,
                k: k as i32,
                flags,
            };
            self.launch(kernel, grid, THREADS, 0, params, cost)?;
        }
        Ok(())
    }
}

/// Fails unless `c` holds `(nb, m, n)` and, when `k > 0`, `a` and `b` hold every element
/// their strides reach.
fn check_operands(name: &'static str, x: &Matmul) -> Result<()> {
    let Matmul { a, sa, b, sb, ref c, nb, m, n, k } = *x;
    ensure(c.len() >= nb * m * n, name, || format!("c holds {} elements, (nb, m, n) needs {}", c.len(), nb * m * n))?;
    if k > 0 && nb > 0 && m > 0 && n > 0 {
        ensure(a.len() > last_index(nb, m, k, sa), name, || format!("a too short for (nb, m, k) with strides {sa:?}"))?;
        ensure(b.len() > last_index(nb, k, n, sb), name, || format!("b too short for (nb, k, n) with strides {sb:?}"))?;
    }
    Ok(())
}
