//! Elementwise ops with broadcasting. For `y = f(x)`, backward is `dx = dy * f'(x)`;
//! for binary ops each gradient is summed back down to its operand's shape
//! (the adjoint of broadcasting is summation over the broadcast axes).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    shape::{broadcast_shape, Layout},
    Result, Tensor,
};
pub use cpu::{BinaryOp, UnaryOp};

/// `[x]` (any strides) -> `f(x)`, contiguous.
struct Unary(UnaryOp);

impl Kernel for Unary {
    const NAME: &'static str = "unary";
    type Out = Tensor;

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        Tensor::from_vec(cpu::unary(self.0, x[0].data, x[0].layout), &x[0].layout.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::unary(self.0, x[0])
    }
}

/// `[a, b]` read through layouts already broadcast to `shape` -> `f(a, b)` of `shape`.
struct Binary<'a> {
    name: &'static str,
    op: BinaryOp,
    la: &'a Layout,
    lb: &'a Layout,
    shape: &'a [usize],
}

impl Kernel for Binary<'_> {
    const NAME: &'static str = "binary";
    type Out = Tensor;

    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        Tensor::from_vec(cpu::binary(self.op, x[0].data, self.la, x[1].data, self.lb), self.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::binary(self.op, x[0], self.la, x[1], self.lb, self.shape)
    }
}

/// Run the unary kernel on `x`.
fn unary_forward(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    run(&Unary(op), &[x])
}

/// Run the binary kernel on `a` and `b` broadcast to one shape.
fn binary_forward(name: &'static str, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::check_pair(name, a, b)?;
    let shape = broadcast_shape(name, a.shape(), b.shape())?;
    let (la, lb) = (a.layout.broadcast_as(&shape), b.layout.broadcast_as(&shape));
    run(&Binary { name, op, la: &la, lb: &lb, shape: &shape }, &[a, b])
}

impl Tensor {
    // ------------------------------------------------------------ binary

    /// a + b (broadcasting). d/da = 1, d/db = 1.
    pub fn add(&self, b: &Tensor) -> Result<Tensor> {
        let out = binary_forward("add", BinaryOp::Add, self, b)?;
        let (sa, sb) = (self.shape().to_vec(), b.shape().to_vec());
        Ok(record("add", out, &[self, b], &[], move |g, _, _| {
            Ok(vec![Some(g.sum_to_shape(&sa)?), Some(g.sum_to_shape(&sb)?)])
        }))
    }

    /// a - b. d/da = 1, d/db = -1.
    pub fn sub(&self, b: &Tensor) -> Result<Tensor> {
        let out = binary_forward("sub", BinaryOp::Sub, self, b)?;
        let (sa, sb) = (self.shape().to_vec(), b.shape().to_vec());
        Ok(record("sub", out, &[self, b], &[], move |g, _, _| {
            Ok(vec![Some(g.sum_to_shape(&sa)?), Some(g.neg()?.sum_to_shape(&sb)?)])
        }))
    }

    /// a * b. d/da = b, d/db = a.
    pub fn mul(&self, b: &Tensor) -> Result<Tensor> {
        let out = binary_forward("mul", BinaryOp::Mul, self, b)?;
        Ok(record("mul", out, &[self, b], &[self, b], |g, s, needs| {
            let (a, b) = (&s[0], &s[1]);
            let ga = if needs[0] { Some(g.mul(b)?.sum_to_shape(a.shape())?) } else { None };
            let gb = if needs[1] { Some(g.mul(a)?.sum_to_shape(b.shape())?) } else { None };
            Ok(vec![ga, gb])
        }))
    }

    /// a / b. d/da = 1/b, d/db = -a/b^2.
    pub fn div(&self, b: &Tensor) -> Result<Tensor> {
        let out = binary_forward("div", BinaryOp::Div, self, b)?;
        Ok(record("div", out, &[self, b], &[self, b], |g, s, needs| {
            let (a, b) = (&s[0], &s[1]);
            let ga = if needs[0] { Some(g.div(b)?.sum_to_shape(a.shape())?) } else { None };
            let gb = if needs[1] { Some(g.mul(a)?.div(&b.mul(b)?)?.neg()?.sum_to_shape(b.shape())?) } else { None };
            Ok(vec![ga, gb])
        }))
    }

    /// 1.0 where a == b, else 0.0 (no gradient: a mask).
    pub fn eq_mask(&self, b: &Tensor) -> Result<Tensor> {
        binary_forward("eq_mask", BinaryOp::Eq, &self.detach(), &b.detach())
    }

    // ------------------------------------------------------------ unary

    /// -x
    pub fn neg(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Neg, self)?;
        Ok(record("neg", out, &[self], &[], |g, _, _| Ok(vec![Some(g.neg()?)])))
    }

    /// e^x; d/dx = e^x (the output is saved).
    pub fn exp(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Exp, self)?;
        let saved = out.clone();
        Ok(record("exp", out, &[self], &[&saved], |g, s, _| Ok(vec![Some(g.mul(&s[0])?)])))
    }

    /// ln x; d/dx = 1/x.
    pub fn log(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Log, self)?;
        Ok(record("log", out, &[self], &[self], |g, s, _| Ok(vec![Some(g.div(&s[0])?)])))
    }

    /// sqrt x; d/dx = 1 / (2 sqrt x).
    pub fn sqrt(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Sqrt, self)?;
        let saved = out.clone();
        Ok(record("sqrt", out, &[self], &[&saved], |g, s, _| Ok(vec![Some(g.div(&s[0])?.affine(0.5, 0.0)?)])))
    }

    /// 1/sqrt x; d/dx = -1/2 x^(-3/2) = -1/2 y^3.
    pub fn rsqrt(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Rsqrt, self)?;
        let saved = out.clone();
        Ok(record("rsqrt", out, &[self], &[&saved], |g, s, _| {
            Ok(vec![Some(g.mul(&s[0].powf(3.0)?)?.affine(-0.5, 0.0)?)])
        }))
    }

    /// x^p for a constant p; d/dx = p x^(p-1).
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Powf(p), self)?;
        Ok(record("powf", out, &[self], &[self], move |g, s, _| {
            Ok(vec![Some(g.mul(&s[0].powf(p - 1.0)?)?.affine(p, 0.0)?)])
        }))
    }

    /// s = 1/(1+e^-x); d/dx = s (1 - s).
    pub fn sigmoid(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Sigmoid, self)?;
        let saved = out.clone();
        Ok(record("sigmoid", out, &[self], &[&saved], |g, s, _| {
            let y = &s[0];
            Ok(vec![Some(g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)?)])
        }))
    }

    /// silu x = x s(x); d/dx = s (1 + x (1 - s)).
    pub fn silu(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Silu, self)?;
        Ok(record("silu", out, &[self], &[self], |g, s, _| {
            let x = &s[0];
            let sig = x.sigmoid()?;
            let d = sig.mul(&x.mul(&sig.affine(-1.0, 1.0)?)?.affine(1.0, 1.0)?)?;
            Ok(vec![Some(g.mul(&d)?)])
        }))
    }

    /// softplus x = log(1 + e^x); d/dx = sigmoid x.
    pub fn softplus(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Softplus, self)?;
        Ok(record("softplus", out, &[self], &[self], |g, s, _| Ok(vec![Some(g.mul(&s[0].sigmoid()?)?)])))
    }

    /// tanh x; d/dx = 1 - tanh^2 x.
    pub fn tanh(&self) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Tanh, self)?;
        let saved = out.clone();
        Ok(record("tanh", out, &[self], &[&saved], |g, s, _| {
            Ok(vec![Some(g.mul(&s[0].powf(2.0)?.affine(-1.0, 1.0)?)?)])
        }))
    }

    /// x * mul + add for constants; d/dx = mul. Scalar arithmetic is built on it.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        let out = unary_forward(UnaryOp::Affine { mul, add }, self)?;
        Ok(record("affine", out, &[self], &[], move |g, _, _| Ok(vec![Some(g.affine(mul, 0.0)?)])))
    }

    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, -v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0 / v, 0.0)
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.mul(self)
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "rsqrt", "powf", "sigmoid", "silu", "softplus", "tanh", "affine"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    add_broadcast: tol TIGHT, exercises ["add"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[3, 1], r), rn(&[4], r)],
        f |x| x[0].add(&x[1])?.add(&x[2]);
    sub_broadcast_both_sides: tol TIGHT, exercises ["sub"],
        // (2,3,4) - (3,1), and (4,) - (3,1) = (3,4) where both operands stretch
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[3, 1], r), rn(&[4], r)],
        f |x| x[0].sub(&x[1])?.mul(&x[2].sub(&x[1])?);
    mul_broadcast: tol TIGHT, exercises ["mul"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[3, 1], r), rn(&[4], r)],
        f |x| x[0].mul(&x[1])?.mul(&x[2]);
    div_broadcast: tol TIGHT, exercises ["div"],
        inputs |r| vec![rn(&[2, 3, 4], r), pos(&[3, 1], r), pos(&[4], r)],
        f |x| x[0].div(&x[1])?.div(&x[2]);
    binary_on_strided_views: tol TIGHT, exercises ["permute", "narrow", "add", "mul", "div"],
        // a (4,3,2) reversed to (2,3,4); b (3,6) sliced to (3,4): neither is contiguous
        inputs |r| vec![rn(&[4, 3, 2], r), pos(&[3, 6], r)],
        f |x| {
            let a = strided(x[0].permute(&[2, 1, 0])?)?;
            let b = strided(x[1].narrow(1, 1, 4)?)?;
            a.add(&b)?.mul(&a)?.div(&b)
        };
    neg: tol TIGHT, exercises ["neg"],
        inputs |r| vec![rn(&[3, 4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.neg();
    affine_scalars: tol TIGHT, exercises ["affine"],
        inputs |r| vec![rn(&[2, 5], r)],
        f |x| x[0].add_scalar(0.5)?.mul_scalar(-2.0)?.affine(3.0, 1.0)?.sub_scalar(2.0)?.div_scalar(4.0);
    exp: tol TIGHT, exercises ["exp"],
        inputs |r| vec![rn(&[3, 6], r)],
        f |x| strided(x[0].narrow(1, 1, 4)?)?.exp();
    log: tol TIGHT, exercises ["log"],
        inputs |r| vec![pos(&[3, 4], r)],
        f |x| x[0].log();
    sqrt: tol TIGHT, exercises ["sqrt"],
        inputs |r| vec![pos(&[4, 3], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.sqrt();
    rsqrt: tol TIGHT, exercises ["rsqrt"],
        inputs |r| vec![pos(&[3, 4], r)],
        f |x| x[0].rsqrt();
    powf_fractional_and_negative: tol TIGHT, exercises ["powf"],
        inputs |r| vec![pos(&[3, 4], r)],
        f |x| x[0].powf(2.5)?.add(&x[0].powf(-1.5)?);
    powf_integer_on_negative_base: tol TIGHT, exercises ["powf"],
        inputs |r| vec![rn(&[2, 5], r)],
        f |x| x[0].powf(3.0);
    sigmoid: tol TIGHT, exercises ["sigmoid"],
        inputs |r| vec![rn(&[3, 4], r).mul_scalar(2.0).unwrap()],
        f |x| x[0].sigmoid();
    silu: tol TIGHT, exercises ["silu"],
        inputs |r| vec![rn(&[4, 3], r).mul_scalar(2.0).unwrap()],
        f |x| strided(x[0].transpose(0, 1)?)?.silu();
    softplus: tol TIGHT, exercises ["softplus"],
        inputs |r| vec![rn(&[3, 4], r).mul_scalar(3.0).unwrap()],
        f |x| x[0].softplus();
    tanh: tol TIGHT, exercises ["tanh"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| strided(x[0].permute(&[2, 0, 1])?)?.tanh();
}
