//! NCCL through the engine (`engine/src/cuda/nccl.rs`) on one GPU: the library loads, a
//! communicator of one rank forms, and its all-reduce (a sum over one rank) leaves f32 and
//! f64 tensors unchanged bit for bit, queued on the engine's stream; views and host tensors
//! are refused. Skipped, saying why, where NCCL is not found (MAMBA_NCCL_LIB names it).

use crate::{Check, Res, Row};
use mamba_engine::{cuda::nccl, DType, Device, Tensor};

pub fn run(c: &mut Check) -> Res<()> {
    let (path, (major, minor, patch)) = match nccl::library() {
        Ok(found) => found,
        Err(e) => {
            println!("nccl: skipped: {e}");
            return Ok(());
        }
    };
    println!("nccl: {major}.{minor}.{patch} from {path}");
    let comm = nccl::Comm::join(1, 0, &nccl::unique_id()?)?;
    for (dtype, n) in [(DType::F32, (1 << 22) + 3), (DType::F64, 1001)] {
        let values: Vec<f64> = c.uniform(n, -2.0, 2.0).into_iter().map(f64::from).collect();
        let t = Tensor::from_f64(&values, &[n], dtype)?.to(Device::Cuda)?;
        comm.all_reduce_sum(&t)?;
        let back = t.to_vec_f64()?;
        let changed = back.iter().zip(&values).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let us = c.time(|| Ok(comm.all_reduce_sum(&t)?))?;
        let unchanged = t.to_vec_f64()? == values;
        c.rows.push(Row {
            kernel: format!("nccl all-reduce 1 rank {dtype}"),
            err: changed as f64,
            ok: changed == 0 && back.len() == n && unchanged,
            us,
            rate: (n * dtype.size()) as f64 / us / 1e3,
        });
    }
    let t = Tensor::zeros(&[4, 6], DType::F32, Device::Cuda)?;
    let refused = [t.transpose(0, 1)?, Tensor::zeros(&[3], DType::F32, Device::Cpu)?, t.to_dtype(DType::BF16)?]
        .iter()
        .filter(|v| comm.all_reduce_sum(v).is_err())
        .count();
    c.rows.push(Row {
        kernel: "nccl refuses views, host, bf16".into(),
        err: 0.0,
        ok: refused == 3,
        us: f64::NAN,
        rate: f64::NAN,
    });
    comm.async_error()?;
    drop(comm);
    Ok(())
}
