//! Elementwise kernels: `out[i] = f(x[i])` and `out[i] = f(a[i], b[i])` over strided
//! inputs (broadcast operands arrive as stride-0 layouts of the output's shape).

use crate::cpu::PAR_MIN;
use crate::{
    dtype::{Elem, Scalar},
    shape::Layout,
};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Sigmoid,
    Silu,
    /// log(1 + e^x), computed stably.
    Softplus,
    Tanh,
    /// x^p
    Powf(f64),
    /// x * mul + add
    Affine {
        mul: f64,
        add: f64,
    },
}

impl UnaryOp {
    /// The op's name (the `Tensor` method that runs it).
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Affine { .. } => "affine",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// 1 where a == b, else 0 (a mask; not differentiable).
    Eq,
}

/// sigmoid(x) = 1 / (1 + e^-x). No branch is needed for stability: for very negative x,
/// e^-x is huge (or inf in f64; `exp_fast` clamps in f32) and the quotient goes to 0, never
/// NaN. Branch-free, it vectorises.
#[inline(always)]
pub fn sigmoid<T: Elem>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_fast())
}

/// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|): never overflows.
#[inline(always)]
pub fn softplus<T: Elem>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

pub fn unary<T: Elem>(op: UnaryOp, x: &[T], layout: &Layout) -> Vec<T> {
    match op {
        UnaryOp::Neg => map(x, layout, |v| -v),
        UnaryOp::Exp => map(x, layout, |v| v.exp()),
        UnaryOp::Log => map(x, layout, |v| v.ln()),
        UnaryOp::Sqrt => map(x, layout, |v| v.sqrt()),
        UnaryOp::Rsqrt => map(x, layout, |v| v.sqrt().recip()),
        UnaryOp::Sigmoid => map(x, layout, sigmoid),
        UnaryOp::Silu => map(x, layout, |v| v * sigmoid(v)),
        UnaryOp::Softplus => map(x, layout, softplus),
        UnaryOp::Tanh => map(x, layout, |v| v.tanh()),
        UnaryOp::Powf(p) => {
            let p = T::cast(p);
            map(x, layout, move |v| v.powf(p))
        }
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (T::cast(mul), T::cast(add));
            map(x, layout, move |v| v * m + a)
        }
    }
}

pub fn binary<T: Elem>(op: BinaryOp, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    match op {
        BinaryOp::Add => zip(a, la, b, lb, |x, y| x + y),
        BinaryOp::Sub => zip(a, la, b, lb, |x, y| x - y),
        BinaryOp::Mul => zip(a, la, b, lb, |x, y| x * y),
        BinaryOp::Div => zip(a, la, b, lb, |x, y| x / y),
        BinaryOp::Eq => zip(a, la, b, lb, |x, y| if x == y { T::one() } else { T::zero() }),
    }
}

/// `out[i] = f(x[i])` in row-major order of `layout`.
pub fn map<T: Scalar, F: Fn(T) -> T + Sync + Send>(x: &[T], layout: &Layout, f: F) -> Vec<T> {
    let n = layout.numel();
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    if layout.is_contiguous() {
        let src = &x[layout.offset..layout.offset + n];
        let kernel = |(o, s): (&mut [T], &[T])| o.iter_mut().zip(s).for_each(|(o, &s)| *o = f(s));
        if n < PAR_MIN {
            kernel((&mut out, src));
        } else {
            out.par_chunks_mut(PAR_MIN).zip(src.par_chunks(PAR_MIN)).for_each(kernel);
        }
        return out;
    }
    let (len, stride) = (layout.row_len(), layout.row_stride());
    let row = |(r, o): (usize, &mut [T])| {
        let base = layout.row_offset(r);
        o.iter_mut().enumerate().for_each(|(j, o)| *o = f(x[base + j * stride]));
    };
    if n < PAR_MIN {
        out.chunks_mut(len).enumerate().for_each(row);
    } else {
        out.par_chunks_mut(len).enumerate().for_each(row);
    }
    out
}

/// `out[i] = f(a[i], b[i])`; `la` and `lb` have the output's shape.
pub fn zip<T: Elem, F: Fn(T, T) -> T + Sync + Send>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Vec<T> {
    debug_assert_eq!(la.shape, lb.shape);
    let n = la.numel();
    let mut out = vec![T::zero(); n];
    if n == 0 {
        return out;
    }
    if la.is_contiguous() && lb.is_contiguous() {
        let (sa, sb) = (&a[la.offset..la.offset + n], &b[lb.offset..lb.offset + n]);
        let kernel = |((o, x), y): ((&mut [T], &[T]), &[T])| {
            for i in 0..o.len() {
                o[i] = f(x[i], y[i]);
            }
        };
        if n < PAR_MIN {
            kernel(((&mut out, sa), sb));
        } else {
            out.par_chunks_mut(PAR_MIN).zip(sa.par_chunks(PAR_MIN)).zip(sb.par_chunks(PAR_MIN)).for_each(kernel);
        }
        return out;
    }
    let len = la.row_len();
    let (sa, sb) = (la.row_stride(), lb.row_stride());
    let row = |(r, o): (usize, &mut [T])| {
        let (ba, bb) = (la.row_offset(r), lb.row_offset(r));
        o.iter_mut().enumerate().for_each(|(j, o)| *o = f(a[ba + j * sa], b[bb + j * sb]));
    };
    if n < PAR_MIN {
        out.chunks_mut(len).enumerate().for_each(row);
    } else {
        out.par_chunks_mut(len).enumerate().for_each(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_functions_do_not_overflow() {
        for x in [-1000.0f32, -30.0, 0.0, 30.0, 1000.0] {
            assert!(softplus(x).is_finite() && sigmoid(x).is_finite(), "x={x}");
        }
        assert!((softplus(0.0f64) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(softplus(1000.0f64), 1000.0);
    }

    #[test]
    fn strided_and_contiguous_paths_agree() {
        let x: Vec<f64> = (0..6).map(|i| i as f64).collect();
        let l = Layout::contiguous(&[2, 3]);
        let t = l.transpose(0, 1);
        assert_eq!(unary(UnaryOp::Neg, &x, &t), vec![-0.0, -3.0, -1.0, -4.0, -2.0, -5.0]);
        let row = Layout::contiguous(&[3]).broadcast_as(&[2, 3]);
        assert_eq!(binary(BinaryOp::Add, &x, &l, &x, &row), vec![0.0, 2.0, 4.0, 3.0, 5.0, 7.0]);
    }
}
