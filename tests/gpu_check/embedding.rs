//! `cu/embedding.cu` against `ops::embedding::cpu::{embedding_forward, embedding_backward}`: a small
//! shape (n 37, v 11, d 13: ids repeat, some rows unused, d not a multiple of the block),
//! then the LM's (n 16384, v 256, d 768) for correctness and speed.

use crate::{poisoned, worst, Check, Res, Row};
use mamba_engine::ops::embedding::cpu::{embedding_backward, embedding_forward};
use mamba_kernels::cust::prelude::*;

pub fn run(c: &mut Check) -> Res<()> {
    let big = if c.timing { 16384 } else { 300 }; // small under compute-sanitizer
    for (n, v, d) in [(37usize, 11usize, 13usize), (big, 256, 768)] {
        let shape = format!("n{n} v{v} d{d}");
        // ids from the first v - 2 rows only: 37 ids over 9 rows repeat, and two rows of dw stay zero
        let ids: Vec<usize> = (0..n).map(|_| c.rng.below(v - 2)).collect();
        let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let (w, dy) = (c.uniform(v * d, -1.0, 1.0), c.uniform(n * d, -1.0, 1.0));
        let (gw, gids, gdy) =
            (DeviceBuffer::from_slice(&w)?, DeviceBuffer::from_slice(&ids64)?, DeviceBuffer::from_slice(&dy)?);

        // forward: a gather, exact
        let want_y = embedding_forward(&w, d, &ids);
        let mut gy = poisoned(n * d)?;
        c.gpu.embedding_forward_f32(&gw, &gids, &mut gy, n, d)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = worst(&gy.as_host_vec()?, &want_y);
        let us = c.time(|| Ok(c.gpu.embedding_forward_f32(&gw, &gids, &mut gy, n, d)?))?;
        let bytes = 2 * n * d * 4 + n * 8; // read the gathered rows and ids, write y
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("embedding_fwd {shape}"), err, ok, us, rate });

        // backward: same summation order as the CPU twin, element by element
        let want_dw = embedding_backward(&dy, &ids, v, d);
        let mut gdw = poisoned(v * d)?;
        c.gpu.embedding_backward_f32(&gdy, &gids, &mut gdw, n, v, d)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = worst(&gdw.as_host_vec()?, &want_dw);
        let us = c.time(|| Ok(c.gpu.embedding_backward_f32(&gdy, &gids, &mut gdw, n, v, d)?))?;
        let bytes = n * d * 4 + v * d * 4 + n * 8; // read dy and ids (once per DRAM), write dw
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("embedding_bwd {shape}"), err, ok, us, rate });
    }
    Ok(())
}
