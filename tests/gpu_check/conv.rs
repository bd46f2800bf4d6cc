//! `cu/conv.cu` against `ops::conv::cpu::{conv1d_causal_forward, conv1d_causal_backward}`: a
//! small awkward shape (B 2, C 5, L 9, K 4: every output near the zero padding matters),
//! then the LM's (B 8, C 1536, L 2048, K 4) for correctness and speed.

use crate::{poisoned, rel_norm, worst, Check, Res, Row, TOL};
use mamba_engine::ops::conv::cpu::{conv1d_causal_backward, conv1d_causal_forward};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::{ConvDims, ConvGrads};

pub fn run(c: &mut Check) -> Res<()> {
    let big = if c.timing { (8, 1536, 2048) } else { (2, 64, 130) }; // small under compute-sanitizer
    for (b, ch, l, k) in [(2usize, 5usize, 9usize, 4usize), (big.0, big.1, big.2, 4)] {
        let n = b * ch * l;
        let dims = ConvDims { b, c: ch, l, k };
        let shape = format!("{b}x{ch}x{l} k{k}");
        let (x, w, bias, dy) =
            (c.uniform(n, -2.0, 2.0), c.uniform(ch * k, -1.0, 1.0), c.uniform(ch, -1.0, 1.0), c.uniform(n, -1.0, 1.0));
        let (gx, gw, gbias, gdy) = (
            DeviceBuffer::from_slice(&x)?,
            DeviceBuffer::from_slice(&w)?,
            DeviceBuffer::from_slice(&bias)?,
            DeviceBuffer::from_slice(&dy)?,
        );

        // forward, with and without bias, element by element
        for with_bias in [true, false] {
            let want = conv1d_causal_forward(&x, &w, with_bias.then_some(&bias[..]), b, ch, l, k);
            let gb = with_bias.then_some(&*gbias);
            let mut gy = poisoned(n)?;
            c.gpu.conv1d_causal_forward_f32(&gx, &gw, gb, &mut gy, dims)?;
            c.gpu.stream.synchronize()?;
            let (err, ok) = worst(&gy.as_host_vec()?, &want);
            let us = c.time(|| Ok(c.gpu.conv1d_causal_forward_f32(&gx, &gw, gb, &mut gy, dims)?))?;
            let bytes = (2 * n + ch * k + if with_bias { ch } else { 0 }) * 4; // read x (+ w, bias), write y
            let rate = bytes as f64 / us / 1e3;
            let name = format!("conv_fwd {shape}{}", if with_bias { " bias" } else { "" });
            c.rows.push(Row { kernel: name, err, ok, us, rate });
        }

        // backward: dx element by element, dw and db by norm (f32 sums in another order)
        let (want_dx, want_dw, want_db) = conv1d_causal_backward(&x, &w, &dy, b, ch, l, k);
        let (mut gdx, mut gdw, mut gdb) = (poisoned(n)?, poisoned(ch * k)?, poisoned(ch)?);
        c.gpu.conv1d_causal_backward_f32(
            &gx,
            &gw,
            &gdy,
            ConvGrads { dx: &mut gdx, dw: &mut gdw, db: &mut gdb },
            dims,
        )?;
        c.gpu.stream.synchronize()?;
        let (edx, okdx) = worst(&gdx.as_host_vec()?, &want_dx);
        let edw = rel_norm(&gdw.as_host_vec()?, &want_dw);
        let edb = rel_norm(&gdb.as_host_vec()?, &want_db);
        let us = c.time(|| {
            Ok(c.gpu.conv1d_causal_backward_f32(
                &gx,
                &gw,
                &gdy,
                ConvGrads { dx: &mut gdx, dw: &mut gdw, db: &mut gdb },
                dims,
            )?)
        })?;
        // dx pass: read dy, write dx; dw pass: read x and dy; (+ w, write dw, db)
        let bytes = (4 * n + 2 * ch * k + ch) * 4;
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("conv_bwd {shape} dx"), err: edx, ok: okdx, us, rate });
        for (what, err) in [("dw", edw), ("db", edb)] {
            c.rows.push(Row {
                kernel: format!("conv_bwd {shape} {what} (norm)"),
                err,
                ok: err <= TOL,
                us: f64::NAN,
                rate: f64::NAN,
            });
        }
    }
    Ok(())
}
