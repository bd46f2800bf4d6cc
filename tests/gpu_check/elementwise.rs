//! `cu/elementwise.cu` against `ops::elementwise::cpu::{unary, binary}`: every op on contiguous
//! operands, then the strided kernels on random views (transposed, narrowed, broadcast
//! operands; ranks 0 to 4, awkward sizes; see `copy.rs`), then one large strided case each.

use crate::copy::{broadcast_view, describe, random_shape, random_view, strided};
use crate::{poisoned, worst, Check, Res, Row};
use mamba_engine::{
    ops::elementwise::cpu::{binary, unary, BinaryOp, UnaryOp},
    shape::Layout,
};
use mamba_kernels::codes as kc;
use mamba_kernels::cust::prelude::*;

pub fn run(c: &mut Check) -> Res<()> {
    let n = (1 << 20) + 3; // not a multiple of the block size
    let big = if c.timing { 1 << 24 } else { 1 << 10 };
    let unary_ops = [
        ("neg", UnaryOp::Neg, kc::UnaryOp::Neg),
        ("exp", UnaryOp::Exp, kc::UnaryOp::Exp),
        ("log", UnaryOp::Log, kc::UnaryOp::Log),
        ("sqrt", UnaryOp::Sqrt, kc::UnaryOp::Sqrt),
        ("rsqrt", UnaryOp::Rsqrt, kc::UnaryOp::Rsqrt),
        ("sigmoid", UnaryOp::Sigmoid, kc::UnaryOp::Sigmoid),
        ("silu", UnaryOp::Silu, kc::UnaryOp::Silu),
        ("softplus", UnaryOp::Softplus, kc::UnaryOp::Softplus),
        ("tanh", UnaryOp::Tanh, kc::UnaryOp::Tanh),
        ("powf", UnaryOp::Powf(2.5), kc::UnaryOp::Powf),
        ("affine", UnaryOp::Affine { mul: -1.5, add: 0.25 }, kc::UnaryOp::Affine),
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
    let binary_ops = [
        ("add", BinaryOp::Add, kc::BinaryOp::Add),
        ("sub", BinaryOp::Sub, kc::BinaryOp::Sub),
        ("mul", BinaryOp::Mul, kc::BinaryOp::Mul),
        ("div", BinaryOp::Div, kc::BinaryOp::Div),
    ];
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
    strided_checks(c)
}

/// (name, op, kernel code, p0, p1) of the unary ops the strided checks cycle through.
const STRIDED_UNARY: [(&str, UnaryOp, kc::UnaryOp, f32, f32); 5] = [
    ("neg", UnaryOp::Neg, kc::UnaryOp::Neg, 0.0, 0.0),
    ("exp", UnaryOp::Exp, kc::UnaryOp::Exp, 0.0, 0.0),
    ("silu", UnaryOp::Silu, kc::UnaryOp::Silu, 0.0, 0.0),
    ("powf", UnaryOp::Powf(2.5), kc::UnaryOp::Powf, 2.5, 0.0),
    ("affine", UnaryOp::Affine { mul: -1.5, add: 0.25 }, kc::UnaryOp::Affine, -1.5, 0.25),
];

const STRIDED_BINARY: [(&str, BinaryOp, kc::BinaryOp); 5] = [
    ("add", BinaryOp::Add, kc::BinaryOp::Add),
    ("sub", BinaryOp::Sub, kc::BinaryOp::Sub),
    ("mul", BinaryOp::Mul, kc::BinaryOp::Mul),
    ("div", BinaryOp::Div, kc::BinaryOp::Div),
    ("eq", BinaryOp::Eq, kc::BinaryOp::Eq),
];

fn strided_checks(c: &mut Check) -> Res<()> {
    for case in 0..10 {
        let (name, op, code, p0, p1) = STRIDED_UNARY[case % STRIDED_UNARY.len()];
        let shape = random_shape(c, case % 5);
        let (l, len) = if case % 4 == 3 { broadcast_view(c, &shape) } else { random_view(c, &shape) };
        let x = if matches!(op, UnaryOp::Powf(_)) { c.uniform(len, 0.01, 10.0) } else { c.uniform(len, -5.0, 5.0) };
        let dx = DeviceBuffer::from_slice(&x)?;
        let mut dout = poisoned(l.numel())?;
        c.gpu.unary_strided_f32(code, p0, p1, &dx, strided(&l), &mut dout)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = worst(&dout.as_host_vec()?, &unary(op, &x, &l));
        let kernel = format!("unary_strided {name} {}", describe(&l));
        c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
    }
    for case in 0..10 {
        let (name, op, code) = STRIDED_BINARY[case % STRIDED_BINARY.len()];
        let shape = random_shape(c, 1 + case % 4);
        // a: sometimes broadcast too; b: always broadcast (maybe with no axis of size 1)
        let (la, alen) = if case % 3 == 0 { broadcast_view(c, &shape) } else { random_view(c, &shape) };
        let (lb, blen) = broadcast_view(c, &shape);
        let (a, b) = match op {
            BinaryOp::Div => (c.uniform(alen, -10.0, 10.0), c.uniform(blen, 1.0, 10.0)),
            // small integers, so equal pairs happen
            BinaryOp::Eq => {
                let (a, b) = (c.uniform(alen, 0.0, 3.0), c.uniform(blen, 0.0, 3.0));
                (a.iter().map(|v| v.floor()).collect(), b.iter().map(|v| v.floor()).collect())
            }
            _ => (c.uniform(alen, -10.0, 10.0), c.uniform(blen, -10.0, 10.0)),
        };
        let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
        let mut dout = poisoned(la.numel())?;
        c.gpu.binary_strided_f32(code, &da, strided(&la), &db, strided(&lb), &mut dout)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = worst(&dout.as_host_vec()?, &binary(op, &a, &la, &b, &lb));
        let kernel =
            format!("binary_strided {name} {} / {}", describe(&la), describe(&lb).split(' ').nth(1).unwrap_or("-"));
        c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
    }

    // Large: a transposed 4096^2 view through silu; (16384, 1024) plus a broadcast row (a
    // bias); a transposed 4096^2 times a contiguous one.
    let (side, rows) = if c.timing { (4096, 16384) } else { (64, 64) };
    let square = Layout::contiguous(&[side, side]);
    let t = square.transpose(0, 1);
    let x = c.uniform(side * side, -5.0, 5.0);
    let dx = DeviceBuffer::from_slice(&x)?;
    let mut dout = poisoned(side * side)?;
    let lt = strided(&t);
    c.gpu.unary_strided_f32(kc::UnaryOp::Silu, 0.0, 0.0, &dx, lt, &mut dout)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = worst(&dout.as_host_vec()?, &unary(UnaryOp::Silu, &x, &t));
    let us = c.time(|| Ok(c.gpu.unary_strided_f32(kc::UnaryOp::Silu, 0.0, 0.0, &dx, lt, &mut dout)?))?;
    let rate = (8 * side * side) as f64 / us / 1e3;
    c.rows.push(Row { kernel: format!("unary_strided silu {side}^2 T"), err, ok, us, rate });

    let (la, lb) = (Layout::contiguous(&[rows, 1024]), Layout::contiguous(&[1024]).broadcast_as(&[rows, 1024]));
    let (a, b) = (c.uniform(rows * 1024, -1.0, 1.0), c.uniform(1024, -1.0, 1.0));
    let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
    let mut dout = poisoned(rows * 1024)?;
    let (sa, sb) = (strided(&la), strided(&lb));
    c.gpu.binary_strided_f32(kc::BinaryOp::Add, &da, sa, &db, sb, &mut dout)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = worst(&dout.as_host_vec()?, &binary(BinaryOp::Add, &a, &la, &b, &lb));
    let us = c.time(|| Ok(c.gpu.binary_strided_f32(kc::BinaryOp::Add, &da, sa, &db, sb, &mut dout)?))?;
    let rate = (8 * rows * 1024 + 4 * 1024) as f64 / us / 1e3;
    c.rows.push(Row { kernel: format!("binary_strided add {rows}x1024 B"), err, ok, us, rate });

    let y = c.uniform(side * side, -1.0, 1.0);
    let dy = DeviceBuffer::from_slice(&y)?;
    let mut dout = poisoned(side * side)?;
    let ls = strided(&square);
    c.gpu.binary_strided_f32(kc::BinaryOp::Mul, &dx, lt, &dy, ls, &mut dout)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = worst(&dout.as_host_vec()?, &binary(BinaryOp::Mul, &x, &t, &y, &square));
    let us = c.time(|| Ok(c.gpu.binary_strided_f32(kc::BinaryOp::Mul, &dx, lt, &dy, ls, &mut dout)?))?;
    let rate = (12 * side * side) as f64 / us / 1e3;
    c.rows.push(Row { kernel: format!("binary_strided mul {side}^2 T*C"), err, ok, us, rate });
    Ok(())
}
