//! `cu/norm.cu` against `ops::norm::cpu::{rms_norm_forward, rms_norm_backward}`: an awkward
//! shape (37 x 130: d not a multiple of the block, a partial last warp), then a realistic
//! one (8*2048 rows of 768) for correctness and speed.

use crate::{poisoned, rel_norm, worst, Check, Res, Row, TOL};
use mamba_engine::ops::norm::cpu::{rms_norm_backward, rms_norm_forward};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch::{Gpu, RmsNormBackward, RmsNormForward};

pub fn run(c: &mut Check) -> Res<()> {
    let eps = 1e-5f32;
    let big = if c.timing { 8 * 2048 } else { 64 }; // small under compute-sanitizer
    for (rows, d) in [(37usize, 130usize), (big, 768)] {
        let n = rows * d;
        let (x, w, dy) = (c.uniform(n, -2.0, 2.0), c.uniform(d, 0.5, 1.5), c.uniform(n, -1.0, 1.0));
        let (want_y, want_rstd) = rms_norm_forward(&x, &w, rows, d, eps as f64);
        let (want_dx, want_dw) = rms_norm_backward(&x, &w, &want_rstd, &dy);
        let (gx, gw, gdy) =
            (DeviceBuffer::from_slice(&x)?, DeviceBuffer::from_slice(&w)?, DeviceBuffer::from_slice(&dy)?);

        // forward: y and rstd, element by element
        let (mut gy, mut grstd) = (poisoned(n)?, poisoned(rows)?);
        c.gpu.rms_norm_forward_f32(RmsNormForward { x: &gx, w: &gw, y: &mut gy, rstd: &mut grstd, rows, d, eps })?;
        c.gpu.stream.synchronize()?;
        let (ey, oky) = worst(&gy.as_host_vec()?, &want_y);
        let (er, okr) = worst(&grstd.as_host_vec()?, &want_rstd);
        let us = c.time(|| {
            Ok(c.gpu.rms_norm_forward_f32(RmsNormForward {
                x: &gx,
                w: &gw,
                y: &mut gy,
                rstd: &mut grstd,
                rows,
                d,
                eps,
            })?)
        })?;
        let bytes = (2 * n + d + rows) * 4; // read x (+ w), write y and rstd
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("rms_norm_fwd {rows}x{d} y"), err: ey, ok: oky, us, rate });
        c.rows.push(Row {
            kernel: format!("rms_norm_fwd {rows}x{d} rstd"),
            err: er,
            ok: okr,
            us: f64::NAN,
            rate: f64::NAN,
        });

        // backward from the CPU's rstd, so both sides see the same input
        let grs = DeviceBuffer::from_slice(&want_rstd)?;
        let (mut gdx, mut gdw) = (poisoned(n)?, poisoned(d)?);
        let mut scratch = poisoned(Gpu::rms_norm_scratch_len(rows, d))?;
        c.gpu.rms_norm_backward_f32(RmsNormBackward {
            x: &gx,
            w: &gw,
            rstd: &grs,
            dy: &gdy,
            dx: &mut gdx,
            dw: &mut gdw,
            scratch: &mut scratch,
            rows,
            d,
        })?;
        c.gpu.stream.synchronize()?;
        let (edx, okdx) = worst(&gdx.as_host_vec()?, &want_dx);
        let edw = rel_norm(&gdw.as_host_vec()?, &want_dw); // sums over rows in another order (and f32)
        let us = c.time(|| {
            Ok(c.gpu.rms_norm_backward_f32(RmsNormBackward {
                x: &gx,
                w: &gw,
                rstd: &grs,
                dy: &gdy,
                dx: &mut gdx,
                dw: &mut gdw,
                scratch: &mut scratch,
                rows,
                d,
            })?)
        })?;
        let parts = Gpu::rms_norm_parts(rows).1;
        // read x, dy (+ w, rstd), write dx; dw partials written and read once, dw written
        let bytes = (3 * n + d + rows + 2 * parts * d + d) * 4;
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("rms_norm_bwd {rows}x{d} dx"), err: edx, ok: okdx, us, rate });
        c.rows.push(Row {
            kernel: format!("rms_norm_bwd {rows}x{d} dw (norm)"),
            err: edw,
            ok: edw <= TOL,
            us: f64::NAN,
            rate: f64::NAN,
        });
    }
    Ok(())
}
