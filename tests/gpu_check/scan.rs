//! `cu/scan.cu` against `cpu::scan::selective_scan_forward`: two awkward shapes (B 2, D 5,
//! L 37, N 4, chunk 8 — a partial last chunk and a partial block — once with z, delta_bias
//! and softplus, once with none of them), then the Mamba-sized one (B 8, D 1536, L 2048,
//! N 16, chunk 64) for correctness (relative norm: 2048-step f32 recurrences with another
//! exp) and speed.

use crate::{poisoned, rel_norm, Check, Res, Row, TOL};
use mamba_engine::cpu::scan::{selective_scan_forward, ScanDims, ScanInputs};
use mamba_kernels::cust::prelude::*;

pub fn run(c: &mut Check) -> Res<()> {
    let big = if c.timing { (8, 1536, 2048, 16, 64) } else { (1, 64, 256, 16, 64) }; // small under compute-sanitizer
    for (batch, dim, len, state, chunk, extras) in
        [(2, 5, 37, 4, 8, true), (2, 5, 37, 4, 8, false), (big.0, big.1, big.2, big.3, big.4, true)]
    {
        let dims = ScanDims { batch, dim, len, state, chunk };
        let (bdl, bnl, nc) = (batch * dim * len, batch * state * len, dims.n_chunks());
        let u = c.uniform(bdl, -1.0, 1.0);
        // dt must stay positive: raw delta through softplus, or small positive values without it
        let delta = if extras { c.uniform(bdl, -4.0, 0.5) } else { c.uniform(bdl, 0.001, 0.1) };
        let a = c.uniform(dim * state, -4.0, -0.1);
        let (bm, cm) = (c.uniform(bnl, -1.0, 1.0), c.uniform(bnl, -1.0, 1.0));
        let d_skip = c.uniform(dim, -1.0, 1.0);
        let z = c.uniform(bdl, -3.0, 3.0);
        let bias = c.uniform(dim, -1.0, 1.0);
        let inputs = ScanInputs {
            u: &u,
            delta: &delta,
            a: &a,
            bm: &bm,
            cm: &cm,
            d_skip: &d_skip,
            z: extras.then_some(&z[..]),
            delta_bias: extras.then_some(&bias[..]),
            softplus: extras,
        };
        let want = selective_scan_forward(dims, &inputs);

        let up = |v: &[f32]| DeviceBuffer::from_slice(v);
        let (gu, gdelta, ga, gbm, gcm, gd) = (up(&u)?, up(&delta)?, up(&a)?, up(&bm)?, up(&cm)?, up(&d_skip)?);
        let (gz, gbias) = (up(&z)?, up(&bias)?);
        let (gz, gbias) = (extras.then_some(&*gz), extras.then_some(&*gbias));
        let (mut gout, mut glast, mut gchunks) =
            (poisoned(bdl)?, poisoned(batch * dim * state)?, poisoned(batch * dim * nc * state)?);
        let launch = |gout: &mut DeviceBuffer<f32>, glast: &mut DeviceBuffer<f32>, gchunks: &mut DeviceBuffer<f32>| {
            c.gpu.selective_scan_forward_f32(
                &gu, &gdelta, &ga, &gbm, &gcm, &gd, gz, gbias, extras, gout, glast, gchunks, batch, dim, len, state,
                chunk,
            )
        };
        launch(&mut gout, &mut glast, &mut gchunks)?;
        c.gpu.stream.synchronize()?;
        let eo = rel_norm(&gout.as_host_vec()?, &want.out);
        let el = rel_norm(&glast.as_host_vec()?, &want.last_state);
        let ec = rel_norm(&gchunks.as_host_vec()?, &want.chunk_states);
        let us = c.time(|| Ok(launch(&mut gout, &mut glast, &mut gchunks)?))?;
        // read u, delta (+ z), Bm, Cm, A, D (+ bias); write out, last_state, chunk_states
        let zb = if extras { bdl + dim } else { 0 };
        let bytes =
            (2 * bdl + zb + 2 * bnl + dim * state + dim + bdl + batch * dim * state + batch * dim * nc * state) * 4;
        let rate = bytes as f64 / us / 1e3;
        let name = format!("scan_fwd {batch}x{dim}x{len}x{state}/{chunk}{}", if extras { " z,bias,sp" } else { "" });
        c.rows.push(Row { kernel: format!("{name} out (norm)"), err: eo, ok: eo <= TOL, us, rate });
        for (what, e) in [("last_state", el), ("chunk_states", ec)] {
            c.rows.push(Row {
                kernel: format!("{name} {what} (norm)"),
                err: e,
                ok: e <= TOL,
                us: f64::NAN,
                rate: f64::NAN,
            });
        }
    }
    Ok(())
}
