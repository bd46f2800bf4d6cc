//! The GPU arm of the elementwise ops: `unary_f32`, `binary_f32` and their strided versions
//! (kernels/cu/elementwise.cu): each function allocates the outputs, turns tensors into kernel
//! arguments (`cuda/args.rs`) and launches the kernel twin to the CPU one in `cpu.rs`. The op's
//! `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use crate::cuda::args::{buffer, elems, new_f32, run, strided};
use crate::{error::Result, shape::Layout, Tensor};
use mamba_kernels::codes as kc;
use super::{BinaryOp, UnaryOp};

/// Op code (`mamba_kernels::codes`) and parameters of `cu/elementwise.cu`.
fn unary_code(op: UnaryOp) -> (kc::UnaryOp, f32, f32) {
    match op {
        UnaryOp::Neg => (kc::UnaryOp::Neg, 0.0, 0.0),
        UnaryOp::Exp => (kc::UnaryOp::Exp, 0.0, 0.0),
        UnaryOp::Log => (kc::UnaryOp::Log, 0.0, 0.0),
        UnaryOp::Sqrt => (kc::UnaryOp::Sqrt, 0.0, 0.0),
        UnaryOp::Rsqrt => (kc::UnaryOp::Rsqrt, 0.0, 0.0),
        UnaryOp::Sigmoid => (kc::UnaryOp::Sigmoid, 0.0, 0.0),
        UnaryOp::Silu => (kc::UnaryOp::Silu, 0.0, 0.0),
        UnaryOp::Softplus => (kc::UnaryOp::Softplus, 0.0, 0.0),
        UnaryOp::Tanh => (kc::UnaryOp::Tanh, 0.0, 0.0),
        UnaryOp::Powf(p) => (kc::UnaryOp::Powf, p as f32, 0.0),
        UnaryOp::Affine { mul, add } => (kc::UnaryOp::Affine, mul as f32, add as f32),
    }
}

fn binary_code(op: BinaryOp) -> kc::BinaryOp {
    match op {
        BinaryOp::Add => kc::BinaryOp::Add,
        BinaryOp::Sub => kc::BinaryOp::Sub,
        BinaryOp::Mul => kc::BinaryOp::Mul,
        BinaryOp::Div => kc::BinaryOp::Div,
        BinaryOp::Eq => kc::BinaryOp::Eq,
    }
}

/// Twin of `cpu::unary`.
pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "unary";
    let (code, p0, p1) = unary_code(op);
    let (out, mut o) = new_f32(OP, x.shape())?;
    if x.is_contiguous() {
        let xs = elems(OP, x)?;
        run(OP, |g| g.unary_f32(code, p0, p1, &xs, &mut o))?;
    } else {
        let (xs, lx) = (buffer(OP, x)?, strided(OP, &x.layout)?);
        run(OP, |g| g.unary_strided_f32(code, p0, p1, &xs, lx, &mut o))?;
    }
    Ok(out)
}

/// Twin of `cpu::binary`; `la`, `lb` are already broadcast to `shape`.
pub(super) fn binary(op: BinaryOp, a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "binary";
    let code = binary_code(op);
    let (out, mut o) = new_f32(OP, shape)?;
    let (sa, sb) = (buffer(OP, a)?, buffer(OP, b)?);
    if la.is_contiguous() && lb.is_contiguous() {
        let n = out.numel();
        let (xa, xb) = (sa.index(la.offset..la.offset + n), sb.index(lb.offset..lb.offset + n));
        run(OP, |g| g.binary_f32(code, &xa, &xb, &mut o))?;
    } else {
        let (ta, tb) = (strided(OP, la)?, strided(OP, lb)?);
        run(OP, |g| g.binary_strided_f32(code, &sa, ta, &sb, tb, &mut o))?;
    }
    Ok(out)
}
