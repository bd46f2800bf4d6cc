//! `cu/elementwise.cu` against `cpu::elementwise::{unary, binary}`.

use crate::{poisoned, worst, Check, Res, Row};
use mamba_engine::{
    cpu::elementwise::{binary, unary, BinaryOp, UnaryOp},
    shape::Layout,
};
use mamba_kernels::cust::prelude::*;

pub fn run(c: &mut Check) -> Res<()> {
    let n = (1 << 20) + 3; // not a multiple of the block size
    let big = if c.timing { 1 << 24 } else { 1 << 10 };
    let unary_ops = [
        ("neg", UnaryOp::Neg, 0),
        ("exp", UnaryOp::Exp, 1),
        ("log", UnaryOp::Log, 2),
        ("sqrt", UnaryOp::Sqrt, 3),
        ("rsqrt", UnaryOp::Rsqrt, 4),
        ("sigmoid", UnaryOp::Sigmoid, 5),
        ("silu", UnaryOp::Silu, 6),
        ("softplus", UnaryOp::Softplus, 7),
        ("tanh", UnaryOp::Tanh, 8),
        ("powf", UnaryOp::Powf(2.5), 9),
        ("affine", UnaryOp::Affine { mul: -1.5, add: 0.25 }, 10),
    ];
    for (name, op, code) in unary_ops {
        let positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Powf(_));
        let x = if positive { c.uniform(n, 0.01, 10.0) } else { c.uniform(n, -10.0, 10.0) };
        let (p0, p1) = match op {
            UnaryOp::Powf(p) => (p as f32, 0.0),
            UnaryOp::Affine { mul, add } => (mul as f32, add as f32),
            _ => (0.0, 0.0),
        };
        let dx = DeviceBuffer::from_slice(&x)?;
        let mut dout = poisoned(n)?;
        c.gpu.unary_f32(code, p0, p1, &dx, &mut dout)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = worst(&dout.as_host_vec()?, &unary(op, &x, &Layout::contiguous(&[n])));
        let bx = DeviceBuffer::from_slice(&vec![0.5f32; big])?;
        let mut bout = DeviceBuffer::from_slice(&vec![0f32; big])?;
        let us = c.time(|| Ok(c.gpu.unary_f32(code, p0, p1, &bx, &mut bout)?))?;
        c.rows.push(Row { kernel: format!("unary_f32 {name}"), err, ok, us, rate: (8 * big) as f64 / us / 1e3 });
    }
    let binary_ops =
        [("add", BinaryOp::Add, 0), ("sub", BinaryOp::Sub, 1), ("mul", BinaryOp::Mul, 2), ("div", BinaryOp::Div, 3)];
    for (name, op, code) in binary_ops {
        let (a, b) = (c.uniform(n, -10.0, 10.0), c.uniform(n, 1.0, 10.0));
        let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
        let mut dout = poisoned(n)?;
        c.gpu.binary_f32(code, &da, &db, &mut dout)?;
        c.gpu.stream.synchronize()?;
        let l = Layout::contiguous(&[n]);
        let (err, ok) = worst(&dout.as_host_vec()?, &binary(op, &a, &l, &b, &l));
        let (ba, bb) = (DeviceBuffer::from_slice(&vec![0.5f32; big])?, DeviceBuffer::from_slice(&vec![2f32; big])?);
        let mut bout = DeviceBuffer::from_slice(&vec![0f32; big])?;
        let us = c.time(|| Ok(c.gpu.binary_f32(code, &ba, &bb, &mut bout)?))?;
        c.rows.push(Row { kernel: format!("binary_f32 {name}"), err, ok, us, rate: (12 * big) as f64 / us / 1e3 });
    }
    Ok(())
}
