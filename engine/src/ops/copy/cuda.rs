//! The GPU arm of the copies: `copy_strided_f32` (and its tiled transpose), `copy_into_f32` and
//! the casts (kernels/cu/copy.cu): each function allocates the outputs, turns tensors into
//! kernel arguments (`cuda/args.rs`) and launches the kernel twin to the CPU one in `cpu.rs`.
//! The op's `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use crate::cuda::args::{buffer, new_f32, run, strided};
use crate::{cuda::CudaData, dtype::DType, error::Result, shape::Layout, storage::Storage, Tensor};

/// Twin of `cpu::copy_strided`: the view `x` in a fresh row-major buffer.
pub(super) fn contiguous(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "copy";
    let (out, mut o) = new_f32(OP, x.shape())?;
    let (xs, lx) = (buffer(OP, x)?, strided(OP, &x.layout)?);
    run(OP, |g| g.copy_strided_f32(&xs, lx, &mut o))?;
    Ok(out)
}

/// Twin of `concat`'s use of `cpu::copy_into`: each piece into its slot along `dim`.
pub(super) fn concat(tensors: &[&Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "concat";
    let (out, mut o) = new_f32(OP, shape)?;
    let full = Layout::contiguous(shape);
    let mut start = 0;
    for t in tensors {
        let len = t.shape()[dim];
        let dst = strided(OP, &full.narrow(dim, start, len))?;
        let (src, ls) = (buffer(OP, t)?, strided(OP, &t.layout)?);
        if t.numel() > 0 {
            run(OP, |g| g.copy_into_f32(&mut o, dst, &src, ls, t.numel()))?;
        }
        start += len;
    }
    Ok(out)
}

/// Twin of `cpu::cast` between any two of f32, f64 and bf16 (bf16 as its 16-bit pattern).
pub(super) fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    const OP: &str = "to_dtype";
    let lx = strided(OP, &x.layout)?;
    let n = x.numel();
    let s = x.read();
    let src = s.as_cuda(OP)?;
    let data = CudaData::alloc(OP, to, n)?;
    let all = src.len();
    match (src.dtype(), to) {
        (DType::F32, DType::F64) => {
            let (xs, mut o) = (src.slice::<f32>(OP, 0, all)?, data.slice::<f64>(OP, 0, n)?);
            run(OP, |g| g.cast_f32_f64(&xs, lx, &mut o))?;
        }
        (DType::F64, DType::F32) => {
            let (xs, mut o) = (src.slice::<f64>(OP, 0, all)?, data.slice::<f32>(OP, 0, n)?);
            run(OP, |g| g.cast_f64_f32(&xs, lx, &mut o))?;
        }
        (DType::F32, DType::BF16) => {
            let (xs, mut o) = (src.slice::<f32>(OP, 0, all)?, data.slice::<u16>(OP, 0, n)?);
            run(OP, |g| g.cast_f32_bf16(&xs, lx, &mut o))?;
        }
        (DType::BF16, DType::F32) => {
            let (xs, mut o) = (src.slice::<u16>(OP, 0, all)?, data.slice::<f32>(OP, 0, n)?);
            run(OP, |g| g.cast_bf16_f32(&xs, lx, &mut o))?;
        }
        (DType::F64, DType::BF16) => {
            let (xs, mut o) = (src.slice::<f64>(OP, 0, all)?, data.slice::<u16>(OP, 0, n)?);
            run(OP, |g| g.cast_f64_bf16(&xs, lx, &mut o))?;
        }
        (DType::BF16, DType::F64) => {
            let (xs, mut o) = (src.slice::<u16>(OP, 0, all)?, data.slice::<f64>(OP, 0, n)?);
            run(OP, |g| g.cast_bf16_f64(&xs, lx, &mut o))?;
        }
        (from, to) => unreachable!("to_dtype returns early for {from} -> {to}: the dtype does not change"),
    }
    Ok(Tensor::from_storage(Storage::cuda(data), x.shape()))
}
