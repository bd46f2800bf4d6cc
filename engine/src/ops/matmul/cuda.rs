//! The GPU arm of the matmul: for f32 `matmul_tf32` (kernels/cu/matmul_tf32.cu, 3xTF32 or one
//! tf32 pass on the tensor cores, see `precision`) where it reads the operands in place, else
//! `matmul_strided_f32` and its versions (kernels/cu/matmul.cu, CUDA cores), and for bf16
//! operands `matmul_bf16` (kernels/cu/matmul_bf16.cu):
//! each function allocates the outputs, turns tensors into kernel arguments (`cuda/args.rs`)
//! and launches the kernel twin to the CPU one in `cpu.rs`. The op's `Kernel` impl in `mod.rs`
//! calls it for tensors on the GPU.

use super::MatStrides as CpuMatStrides;
use crate::cuda::args::{buffer, new_f32, run};
use crate::cuda::CudaData;
use crate::{
    dtype::DType,
    error::{Error, Result},
    shape::Layout,
    storage::Storage,
    Device, Tensor,
};
use mamba_kernels::cust::memory::DeviceSlice;
use mamba_kernels::launch::matmul_bf16::{Bf16Out, MatmulBf16, MATMUL_BF16_VERSION};
use mamba_kernels::launch::{tf32_readable, MatStrides, Matmul, MatmulTf32, Tf32Mode};

/// Twin of `cpu::matmul`: `(nb, m, k) @ (nb, k, n)` for operand views whose
/// strides are given; an operand that is neither row- nor column-major is copied first.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    a: &Tensor,
    sa: CpuMatStrides,
    b: &Tensor,
    sb: CpuMatStrides,
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "matmul";
    // The kernel reads each operand row- or column-major; anything else becomes row-major.
    let operand = |t: &Tensor, s: CpuMatStrides, rows: usize, cols: usize| -> Result<(Tensor, MatStrides)> {
        if s.row == 1 || s.col == 1 {
            return Ok((t.clone(), MatStrides { batch: s.batch, row: s.row, col: s.col }));
        }
        let c = t.contiguous_detached()?;
        let batch = if s.batch == 0 { 0 } else { rows * cols };
        Ok((c, MatStrides { batch, row: cols, col: 1 }))
    };
    if m.div_ceil(128) > 65535 {
        let msg = format!("the GPU matmul takes at most {} rows, got {m}", 128 * 65535);
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    let (a, sa) = operand(a, sa, m, k)?;
    let (b, sb) = operand(b, sb, k, n)?;
    let (out, mut o) = new_f32(OP, shape)?;
    let (xa, xb) = (buffer(OP, &a)?, buffer(OP, &b)?);
    let (xa, xb) = (xa.index(a.layout.offset..), xb.index(b.layout.offset..));
    let gpu = crate::cuda::gpu(OP)?;
    let readable = |x: &DeviceSlice<f32>, s: MatStrides, rows: usize, cols: usize| {
        tf32_readable(x.as_device_ptr().as_raw(), nb, rows, cols, s)
    };
    let on_tensor_cores = crate::precision::f32_gemm_tensor_cores()
        && m > mamba_kernels::launch::Gpu::MATMUL_SMALL_M
        && k > 0
        && readable(&xa, sa, m, k)
        && readable(&xb, sb, k, n);
    if !on_tensor_cores {
        run(OP, |g| g.matmul_strided_f32(Matmul { a: &xa, sa, b: &xb, sb, c: &mut o, nb, m, n, k }))?;
        return Ok(out);
    }
    let mode = if crate::precision::tf32() { Tf32Mode::OnePass } else { Tf32Mode::Split3 };
    let room = gpu.matmul_tf32_workspace(nb, m, n, k);
    let workspace = if room > 0 && room <= i32::MAX as usize { Some(CudaData::alloc(OP, DType::F32, room)?) } else { None };
    let mut ws = workspace.as_ref().map(|w| w.f32(OP)).transpose()?;
    let args = MatmulTf32 { a: &xa, sa, b: &xb, sb, c: &mut o, nb, m, n, k, mode, workspace: ws.as_mut() };
    run(OP, |g| g.matmul_tf32(args))?;
    Ok(out)
}

/// The op name in the bf16 arm's errors.
const OP: &str = "matmul";

/// One bf16 operand `(nb, rows, cols)` as the bf16 kernel reads it: a tensor whose storage holds
/// it and the strides from that tensor's offset.
struct Bf16Operand {
    t: Tensor,
    s: CpuMatStrides,
}

/// Whether the bf16 kernel reads `(nb, rows, cols)` with strides `s` in place, starting at a
/// 16-byte aligned address (`aligned`): row-major (a row contiguous) or column-major, the
/// leading dimension and the batch stride multiples of 8 elements (the kernel copies 16-byte
/// chunks); as `layout` in kernels/src/launch/matmul_bf16.rs.
fn readable(s: CpuMatStrides, aligned: bool, nb: usize, rows: usize, cols: usize) -> bool {
    let fits = |outer: usize, ld: usize| {
        aligned && (nb == 1 || s.batch.is_multiple_of(8)) && (outer == 1 || ld.is_multiple_of(8))
    };
    ((s.col == 1 || cols == 1) && fits(rows, s.row)) || ((s.row == 1 || rows == 1) && fits(cols, s.col))
}

impl Bf16Operand {
    /// The view `(nb, rows, cols)` of `t` with strides `s` (one matrix if broadcast), detached.
    fn view(t: &Tensor, s: CpuMatStrides, nb: usize, rows: usize, cols: usize) -> Tensor {
        let nb = if s.batch == 0 { 1 } else { nb };
        let layout = Layout {
            shape: [nb, rows, cols][..].into(),
            strides: [s.batch, s.row, s.col][..].into(),
            offset: t.layout.offset,
        };
        t.with_layout(layout)
    }

    /// A fresh contiguous bf16 copy of `v` (no bf16 copy kernel: through f32, exactly).
    fn copy(v: &Tensor) -> Result<Tensor> {
        v.to_dtype(DType::F32)?.to_dtype(DType::BF16)
    }

    /// The operand as it is, or a contiguous copy (fresh buffers are aligned), row-major if
    /// `cols` allows, else column-major if `rows` does; `None` if neither does (the caller
    /// pads k).
    fn new(t: &Tensor, s: CpuMatStrides, nb: usize, rows: usize, cols: usize) -> Result<Option<Bf16Operand>> {
        let start = Bf16Operand { t: t.clone(), s };
        if readable(s, start.slice(OP)?.as_device_ptr().as_raw().is_multiple_of(16), nb, rows, cols) {
            return Ok(Some(start));
        }
        let bcast = s.batch == 0;
        let batch = |b: usize| if bcast { 0 } else { b };
        let view = Self::view(t, s, nb, rows, cols);
        let row_major = CpuMatStrides { batch: batch(rows * cols), row: cols, col: 1 };
        if readable(row_major, true, nb, rows, cols) {
            return Ok(Some(Bf16Operand { t: Self::copy(&view)?, s: row_major }));
        }
        let col_major = CpuMatStrides { batch: batch(rows * cols), row: 1, col: rows };
        if readable(col_major, true, nb, rows, cols) {
            return Ok(Some(Bf16Operand { t: Self::copy(&view.transpose(1, 2)?)?, s: col_major }));
        }
        Ok(None)
    }

    /// `(nb, rows, k)` (`k_last`) or `(nb, k, cols)` copied with k padded with zeros to `kp`,
    /// stored k-contiguous (leading dimension `kp`).
    fn padded(
        t: &Tensor,
        s: CpuMatStrides,
        nb: usize,
        (rows, cols): (usize, usize),
        k_last: bool,
        kp: usize,
    ) -> Result<Bf16Operand> {
        let view = Self::view(t, s, nb, rows, cols);
        let view = if k_last { view } else { view.transpose(1, 2)? };
        let (z, other, k) = (view.shape()[0], view.shape()[1], view.shape()[2]);
        let zeros = Tensor::zeros(&[z, other, kp - k], DType::F32, Device::Cuda)?;
        let t = Tensor::concat(&[&view.to_dtype(DType::F32)?, &zeros], 2)?.to_dtype(DType::BF16)?;
        let batch = if s.batch == 0 { 0 } else { other * kp };
        let s =
            if k_last { CpuMatStrides { batch, row: kp, col: 1 } } else { CpuMatStrides { batch, row: 1, col: kp } };
        Ok(Bf16Operand { t, s })
    }

    /// The bf16 buffer from the operand's offset on.
    fn slice(&self, op: &'static str) -> Result<DeviceSlice<u16>> {
        let s = self.t.read();
        let data = s.as_cuda(op)?;
        data.slice::<u16>(op, self.t.layout.offset, data.len() - self.t.layout.offset)
    }

    fn strides(&self) -> MatStrides {
        MatStrides { batch: self.s.batch, row: self.s.row, col: self.s.col }
    }
}

/// Twin of `Matmul::cpu_bf16`: bf16 `(nb, m, k) @ (nb, k, n)` (`dims`) on the tensor cores
/// (kernels/cu/matmul_bf16.cu), f32 sums, C of dtype `out` (f32, or bf16 rounded once).
/// An operand the kernel cannot read in place is copied to contiguous in an orientation it can;
/// when that fails for either operand (k and its other extent both not multiples of 8), both
/// are copied with k zero-padded to a multiple of 8 (zeros add nothing to the sums). Split-K
/// gets the workspace the launcher asks for (from the caching allocator).
pub(super) fn matmul_bf16(
    a: &Tensor,
    sa: CpuMatStrides,
    b: &Tensor,
    sb: CpuMatStrides,
    [nb, m, n, k]: [usize; 4],
    shape: &[usize],
    out: DType,
) -> Result<Tensor> {
    let len = nb * m * n;
    let data = CudaData::alloc(OP, out, len)?;
    let (mut c32, mut c16) = match out {
        DType::BF16 => (None, Some(data.slice::<u16>(OP, 0, len)?)),
        _ => (Some(data.slice::<f32>(OP, 0, len)?), None),
    };
    let c = Tensor::from_storage(Storage::cuda(data), shape);
    if len == 0 {
        return Ok(c);
    }
    let (a, b) = (a.detach(), b.detach());
    let as_is = |t: &Tensor, s| Bf16Operand { t: t.clone(), s };
    let (oa, ob, k) = if k == 0 {
        (as_is(&a, sa), as_is(&b, sb), 0) // the kernel writes zeros and reads nothing
    } else {
        match (Bf16Operand::new(&a, sa, nb, m, k)?, Bf16Operand::new(&b, sb, nb, k, n)?) {
            (Some(oa), Some(ob)) => (oa, ob, k),
            _ => {
                let kp = k.next_multiple_of(8);
                let pa = Bf16Operand::padded(&a, sa, nb, (m, k), true, kp)?;
                (pa, Bf16Operand::padded(&b, sb, nb, (k, n), false, kp)?, kp)
            }
        }
    };
    let gpu = crate::cuda::gpu(OP)?;
    let room = gpu.matmul_bf16_workspace(MATMUL_BF16_VERSION, nb, m, n, k);
    // Past what one buffer holds, no split (the launcher plans within the room it is given).
    let fits = room > 0 && room <= i32::MAX as usize;
    let workspace = if fits { Some(CudaData::alloc(OP, DType::F32, room)?) } else { None };
    let mut ws = workspace.as_ref().map(|w| w.f32(OP)).transpose()?;
    let (xa, xb) = (oa.slice(OP)?, ob.slice(OP)?);
    let c_out = match (c32.as_mut(), c16.as_mut()) {
        (Some(c), _) => Bf16Out::F32(c),
        (_, Some(c)) => Bf16Out::Bf16(c),
        _ => unreachable!("one output slice"),
    };
    let args = MatmulBf16 {
        a: &xa,
        sa: oa.strides(),
        b: &xb,
        sb: ob.strides(),
        c: c_out,
        nb,
        m,
        n,
        k,
        workspace: ws.as_mut(),
    };
    run(OP, |g| g.matmul_bf16(args))?;
    Ok(c)
}
