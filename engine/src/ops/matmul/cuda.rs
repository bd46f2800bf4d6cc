//! The GPU arm of the matmul: `matmul_strided_f32` and its versions (kernels/cu/matmul.cu):
//! each function allocates the outputs, turns tensors into kernel arguments (`cuda/args.rs`)
//! and launches the kernel twin to the CPU one in `cpu.rs`. The op's `Kernel` impl in `mod.rs`
//! calls it for tensors on the GPU.

use crate::cuda::args::{buffer, new_f32, run};
use crate::{error::{Error, Result}, Device, Tensor};
use mamba_kernels::launch::{MatStrides, Matmul};
use super::MatStrides as CpuMatStrides;

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
    run(OP, |g| g.matmul_strided_f32(Matmul { a: &xa, sa, b: &xb, sb, c: &mut o, nb, m, n, k }))?;
    Ok(out)
}
