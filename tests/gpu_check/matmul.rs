//! `cu/matmul.cu` against `cpu::matmul::matmul`: an awkward size (every edge path), then
//! 4096^3 for correctness and speed (compare with kernels/tools/cublas_ref.py).

use crate::{poisoned, rel_norm, Check, Res, Row, TOL};
use mamba_engine::cpu::matmul::{matmul, MatStrides};
use mamba_kernels::cust::prelude::*;

pub fn run(c: &mut Check) -> Res<()> {
    let sizes: &[(usize, usize, usize)] =
        if c.timing { &[(515, 259, 131), (4096, 4096, 4096)] } else { &[(515, 259, 131)] };
    for &(m, n, k) in sizes {
        let (a, b) = (c.uniform(m * k, -1.0, 1.0), c.uniform(k * n, -1.0, 1.0));
        let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
        let mut dc = poisoned(m * n)?;
        c.gpu.matmul_f32(&da, &db, &mut dc, m, n, k)?;
        c.gpu.stream.synchronize()?;
        let mut want = vec![0f32; m * n];
        let (sa, sb) = (MatStrides { batch: 0, row: k, col: 1 }, MatStrides { batch: 0, row: n, col: 1 });
        matmul(1, m, n, k, &a, sa, &b, sb, &mut want);
        let err = rel_norm(&dc.as_host_vec()?, &want); // the two sum in different orders
        let us = c.time(|| Ok(c.gpu.matmul_f32(&da, &db, &mut dc, m, n, k)?))?;
        let gflops = 2.0 * (m * n * k) as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("matmul_f32 {m}x{n}x{k} (norm)"), err, ok: err <= TOL, us, rate: gflops });
    }
    Ok(())
}
