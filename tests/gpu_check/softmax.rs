//! `cu/softmax.cu` against `ops::softmax::cpu::{log_softmax_*, cross_entropy_*}`, at an awkward
//! shape (37 rows of 300, some targets ignored) and the LM's (8 * 2048 rows of 256), with
//! a few rows shifted by +1e4 to check the max shift. Timed at the LM's shape.

use crate::{poisoned, worst, Check, Res, Row};
use mamba_engine::ops::softmax::cpu::{
    cross_entropy_backward, cross_entropy_forward, log_softmax_backward, log_softmax_forward,
};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::CrossEntropyBackward;

const IGNORE: i64 = -100;

pub fn run(c: &mut Check) -> Res<()> {
    let lm_rows = if c.timing { 8 * 2048 } else { 64 };
    check(c, 37, 300, false)?;
    check(c, lm_rows, 256, c.timing)?;
    Ok(())
}

fn check(c: &mut Check, rows: usize, v: usize, time: bool) -> Res<()> {
    let n = rows * v;
    let shape = format!("{rows}x{v}");
    // Logits in [-8, 8); rows 1 and every 10th from 5 shifted by 1e4 (exp would overflow unshifted).
    let mut x = c.uniform(n, -8.0, 8.0);
    for r in (1..2).chain((5..rows).step_by(10)) {
        x[r * v..(r + 1) * v].iter_mut().for_each(|x| *x += 1e4);
    }
    let dy = c.uniform(n, -1.0, 1.0);
    // Row 0 and ~1 in 5 others ignored, one of them a shifted row (5 % 5 == 0 when drawn so).
    let targets: Vec<i64> =
        (0..rows).map(|r| if r == 0 || c.rng.uniform() < 0.2 { IGNORE } else { c.rng.below(v) as i64 }).collect();
    let valid = targets.iter().filter(|&&t| t != IGNORE).count().max(1);
    let scale = 1.0 / valid as f64;

    let (dxs, ddy, dt) =
        (DeviceBuffer::from_slice(&x)?, DeviceBuffer::from_slice(&dy)?, DeviceBuffer::from_slice(&targets)?);

    // log_softmax forward.
    let y = log_softmax_forward(&x, v);
    let mut dyo = poisoned(n)?;
    c.gpu.log_softmax_forward_f32(&dxs, &mut dyo, v)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = worst(&dyo.as_host_vec()?, &y);
    let us = if time { c.time(|| Ok(c.gpu.log_softmax_forward_f32(&dxs, &mut dyo, v)?))? } else { f64::NAN };
    c.rows.push(Row { kernel: format!("log_softmax_fwd {shape}"), err, ok, us, rate: (8 * n) as f64 / us / 1e3 });

    // log_softmax backward, from the CPU's y so both sides see the same input.
    let dx = log_softmax_backward(&y, &dy, v);
    let dys = DeviceBuffer::from_slice(&y)?;
    let mut ddx = poisoned(n)?;
    c.gpu.log_softmax_backward_f32(&dys, &ddy, &mut ddx, v)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = worst(&ddx.as_host_vec()?, &dx);
    let us = if time { c.time(|| Ok(c.gpu.log_softmax_backward_f32(&dys, &ddy, &mut ddx, v)?))? } else { f64::NAN };
    c.rows.push(Row { kernel: format!("log_softmax_bwd {shape}"), err, ok, us, rate: (12 * n) as f64 / us / 1e3 });

    // cross_entropy forward: per-row lse and loss (the CPU's loss is f64; compared as f32).
    let (lse, loss) = cross_entropy_forward(&x, v, &targets, IGNORE);
    let loss32: Vec<f32> = loss.iter().map(|&l| l as f32).collect();
    let (mut dlse, mut dloss) = (poisoned(rows)?, poisoned(rows)?);
    c.gpu.cross_entropy_forward_f32(&dxs, &dt, IGNORE, &mut dlse, &mut dloss, v)?;
    c.gpu.stream.synchronize()?;
    let (e1, ok1) = worst(&dlse.as_host_vec()?, &lse);
    let (e2, ok2) = worst(&dloss.as_host_vec()?, &loss32);
    let us = if time {
        c.time(|| Ok(c.gpu.cross_entropy_forward_f32(&dxs, &dt, IGNORE, &mut dlse, &mut dloss, v)?))?
    } else {
        f64::NAN
    };
    let bytes = 4 * n + 16 * rows;
    c.rows.push(Row {
        kernel: format!("cross_entropy_fwd {shape}"),
        err: e1.max(e2),
        ok: ok1 && ok2,
        us,
        rate: bytes as f64 / us / 1e3,
    });

    // cross_entropy backward, from the CPU's lse.
    let dce = cross_entropy_backward(&x, v, &lse, &targets, IGNORE, scale);
    let dlse_in = DeviceBuffer::from_slice(&lse)?;
    let mut ddce = poisoned(n)?;
    c.gpu.cross_entropy_backward_f32(CrossEntropyBackward {
        x: &dxs,
        lse: &dlse_in,
        targets: &dt,
        ignore_index: IGNORE,
        scale: scale as f32,
        dx: &mut ddce,
        v,
    })?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = worst(&ddce.as_host_vec()?, &dce);
    let us = if time {
        c.time(|| {
            Ok(c.gpu.cross_entropy_backward_f32(CrossEntropyBackward {
                x: &dxs,
                lse: &dlse_in,
                targets: &dt,
                ignore_index: IGNORE,
                scale: scale as f32,
                dx: &mut ddce,
                v,
            })?)
        })?
    } else {
        f64::NAN
    };
    let bytes = 8 * n + 12 * rows;
    c.rows.push(Row { kernel: format!("cross_entropy_bwd {shape}"), err, ok, us, rate: bytes as f64 / us / 1e3 });
    Ok(())
}
