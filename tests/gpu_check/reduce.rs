//! `cu/reduce.cu` against `ops::reduce::cpu::reduce`: sum and max over the last axis, the first,
//! middle ones, all of them, of contiguous, transposed and random (narrowed, permuted) views;
//! max with many ties and with NaNs (a NaN must win); an empty reduction (0 and -inf). Then
//! the large shapes that pick each launch plan: column sums of (16384, 768) (the bias
//! gradient: one thread per output, inner range split over blocks), row sums (a block per
//! row), the sum and max of all 16 Mi elements (split, then finished), a transposed view.
//!
//! Tolerance: max is exact; a sum must be within 1e-5 of the sum of |x| over its inputs
//! (both sides accumulate in f64, so in practice they agree to an ulp of the f32 result).

use crate::copy::{describe, random_shape, random_view};
use crate::{Check, Res, Row, TOL};
use mamba_engine::{
    ops::reduce::cpu::{reduce, ReduceOp},
    shape::Layout,
};
use mamba_kernels::codes as kc;
use mamba_kernels::{cust::prelude::*, launch::Strided};

/// What values to reduce.
#[derive(Clone, Copy, PartialEq)]
enum Values {
    Uniform,
    /// Integers 0..4: max meets many ties.
    Ties,
    /// Uniform with a few NaNs.
    Nans,
}

/// The launcher's `kept` and `inner` views of `l` reduced over `axes` (as the engine builds them).
fn split(l: &Layout, axes: &[usize]) -> (Strided, Strided, usize, usize) {
    let kept_shape: Vec<usize> = (0..l.shape.len()).map(|i| if axes.contains(&i) { 1 } else { l.shape[i] }).collect();
    let kept = Strided::new(&kept_shape, &l.strides, l.offset).expect("at most 6 axes");
    let ishape: Vec<usize> = axes.iter().map(|&a| l.shape[a]).collect();
    let istrides: Vec<usize> = axes.iter().map(|&a| l.strides[a]).collect();
    let inner = Strided::new(&ishape, &istrides, 0).expect("at most 6 axes");
    let (n_out, inner_n) = (kept.numel(), inner.numel());
    (kept, inner, n_out, inner_n)
}

/// Runs one reduction on both sides and records it; returns the GPU time when `time`.
fn check(c: &mut Check, op: ReduceOp, x: &[f32], l: &Layout, axes: &[usize], label: &str, time: bool) -> Res<()> {
    let (kept, inner, n_out, inner_n) = split(l, axes);
    let code = if op == ReduceOp::Sum { kc::ReduceOp::Sum } else { kc::ReduceOp::Max };
    // a buffer of at least one element, so an empty input still has a device pointer
    let dx = DeviceBuffer::from_slice(if x.is_empty() { &[0.0f32][..] } else { x })?;
    let mut dout = crate::poisoned(n_out)?;
    c.gpu.reduce_f32(code, &dx, kept, inner, &mut dout)?;
    c.gpu.stream.synchronize()?;
    let got = dout.as_host_vec()?;
    let want = reduce(op, x, l, axes);
    let (err, ok) = match op {
        ReduceOp::Max => {
            let same = |g: f32, w: f32| g == w || (g.is_nan() && w.is_nan());
            let bad = got.iter().zip(&want).filter(|&(&g, &w)| !same(g, w)).count();
            (bad as f64, got.len() == want.len() && bad == 0)
        }
        ReduceOp::Sum => {
            let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let scale = reduce(ReduceOp::Sum, &abs, l, axes);
            let mut worst = 0.0f64;
            for ((&g, &w), &s) in got.iter().zip(&want).zip(&scale) {
                let e = (g as f64 - w as f64).abs() / (s as f64).max(f64::MIN_POSITIVE);
                worst = worst.max(if g == w {
                    0.0
                } else if e.is_finite() {
                    e
                } else {
                    f64::INFINITY
                });
            }
            (worst, got.len() == want.len() && worst <= TOL)
        }
    };
    let us = if time { c.time(|| Ok(c.gpu.reduce_f32(code, &dx, kept, inner, &mut dout)?))? } else { f64::NAN };
    let name = if op == ReduceOp::Sum { "sum" } else { "max" };
    let rate = (4 * (n_out * inner_n + n_out)) as f64 / us / 1e3;
    c.rows.push(Row { kernel: format!("reduce {name} {label} {axes:?}"), err, ok, us, rate });
    Ok(())
}

fn values(c: &mut Check, n: usize, v: Values) -> Vec<f32> {
    match v {
        Values::Uniform => c.uniform(n, -1.0, 1.0),
        Values::Ties => c.uniform(n, 0.0, 4.0).iter().map(|v| v.floor()).collect(),
        Values::Nans => {
            let mut x = c.uniform(n, -1.0, 1.0);
            for _ in 0..(n / 50).max(1) {
                let i = c.rng.below(n);
                x[i] = f32::NAN;
            }
            x
        }
    }
}

pub fn run(c: &mut Check) -> Res<()> {
    // Fixed shapes, each contiguous and transposed (last two axes swapped in memory).
    let cases: [(&[usize], &[&[usize]]); 3] = [
        (&[37, 129], &[&[1], &[0], &[0, 1]]),
        (&[5, 37, 16, 3], &[&[3], &[0], &[1, 2], &[0, 3], &[0, 1, 2, 3]]),
        (&[1, 129], &[&[0], &[1]]),
    ];
    for (shape, axes_list) in cases {
        let n: usize = shape.iter().product();
        let r = shape.len();
        let mut swapped = shape.to_vec();
        swapped.swap(r - 2, r - 1);
        for (tag, l) in [("C", Layout::contiguous(shape)), ("T", Layout::contiguous(&swapped).transpose(r - 2, r - 1))]
        {
            for &axes in axes_list {
                let label = format!("{} {tag}", describe(&Layout::contiguous(shape)));
                let x = values(c, n, Values::Uniform);
                check(c, ReduceOp::Sum, &x, &l, axes, &label, false)?;
                let x = values(c, n, Values::Ties);
                check(c, ReduceOp::Max, &x, &l, axes, &format!("{label} ties"), false)?;
            }
        }
    }
    // Random views and axis sets, ranks 1 to 4; NaNs in some.
    for case in 0..8 {
        let shape = random_shape(c, 1 + case % 4);
        let (l, len) = random_view(c, &shape);
        let axes: Vec<usize> = loop {
            let a: Vec<usize> = (0..shape.len()).filter(|_| c.rng.below(2) == 0).collect();
            if !a.is_empty() {
                break a;
            }
        };
        let label = describe(&l);
        let x = values(c, len, Values::Uniform);
        check(c, ReduceOp::Sum, &x, &l, &axes, &label, false)?;
        let v = if case % 2 == 0 { Values::Nans } else { Values::Ties };
        let x = values(c, len, v);
        let label = if v == Values::Nans { format!("{label} nan") } else { format!("{label} ties") };
        check(c, ReduceOp::Max, &x, &l, &axes, &label, false)?;
    }
    // Empty reductions: 0 and -inf per output.
    let l = Layout::contiguous(&[5, 0]);
    check(c, ReduceOp::Sum, &[], &l, &[1], "5x0", false)?;
    check(c, ReduceOp::Max, &[], &l, &[1], "5x0", false)?;

    // Large: each launch plan once, timed.
    let (rows, side) = if c.timing { (16384, 4096) } else { (64, 64) };
    let wide = Layout::contiguous(&[rows, 768]);
    let x = values(c, rows * 768, Values::Uniform);
    check(c, ReduceOp::Sum, &x, &wide, &[0], &format!("{rows}x768"), true)?;
    check(c, ReduceOp::Sum, &x, &wide, &[1], &format!("{rows}x768"), true)?;
    let square = Layout::contiguous(&[side, side]);
    let x = values(c, side * side, Values::Uniform);
    check(c, ReduceOp::Sum, &x, &square, &[0, 1], &format!("{side}^2"), true)?;
    check(c, ReduceOp::Max, &x, &square, &[0, 1], &format!("{side}^2"), true)?;
    check(c, ReduceOp::Sum, &x, &square.transpose(0, 1), &[1], &format!("{side}^2 T"), true)?;
    check(c, ReduceOp::Max, &x, &square.transpose(0, 1), &[0], &format!("{side}^2 T"), true)?;
    Ok(())
}
