//! Every engine op on the GPU against the same op on the CPU, forward and backward, through
//! the engine itself (dispatch, layouts, allocator, autograd), not just the kernels.
//!
//! It runs every unit's case table (`ops::cases()`, which the f64 gradient checks use, many on
//! transposed, narrowed and broadcast views): inputs are drawn fresh from this run's seed and
//! rounded to f32; each case runs on the CPU and on the GPU (with every new GPU buffer
//! filled with NaN first, so an element a kernel forgets to write shows up), then backward
//! from the same random output gradient. The output and the gradient of every input must
//! agree to `OPS_TOL` in relative norm (f32 on both sides, different summation orders).
//! Every name in `ops::names()` must appear in some case's GPU graph, or the check fails.

use crate::{rel_norm, Check, Res, Row};
use mamba_engine::{
    autograd::ops_in_graph,
    cuda,
    ops::{cases, names},
    DType, Device, Rng, Tensor,
};
use std::collections::BTreeSet;

/// ‖gpu - cpu‖ / ‖cpu‖ bound for outputs and gradients.
pub const OPS_TOL: f64 = 1e-4;

/// What one case gives on one device: the output, the gradient of each input (empty if
/// none reached it) and the ops in the graph.
struct Outcome {
    out: Vec<f32>,
    grads: Vec<Vec<f32>>,
    ops: Vec<&'static str>,
}

/// One case on one device.
fn run_case(
    f: fn(&[Tensor]) -> mamba_engine::Result<Tensor>,
    inputs: &[Tensor],
    seed: &Tensor,
    device: Device,
) -> mamba_engine::Result<Outcome> {
    let leaves: Vec<Tensor> =
        inputs.iter().map(|t| Ok(t.to(device)?.requires_grad())).collect::<mamba_engine::Result<_>>()?;
    let y = f(&leaves)?;
    let ops = ops_in_graph(&y);
    y.backward_with(&seed.to_dtype(y.dtype())?.to(device)?)?;
    let grads = leaves
        .iter()
        .map(|l| match l.grad() {
            Some(g) => Ok(g.to_dtype(DType::F32)?.to_vec::<f32>()?),
            None => Ok(vec![]),
        })
        .collect::<mamba_engine::Result<_>>()?;
    Ok(Outcome { out: y.to_dtype(DType::F32)?.to_vec::<f32>()?, grads, ops })
}

pub fn run(c: &mut Check) -> Res<()> {
    cuda::set_poison(true);
    let mut covered = BTreeSet::new();
    for case in cases() {
        let mut rng = Rng::new(c.rng.next_u64());
        let inputs: Vec<Tensor> =
            (case.inputs)(&mut rng).iter().map(|t| t.to_dtype(DType::F32)).collect::<mamba_engine::Result<_>>()?;
        let out_shape = {
            let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
            (case.f)(&leaves)?.shape().to_vec()
        };
        let seed = Tensor::randn(&out_shape, 0.0, 1.0, DType::F32, &mut rng);
        let cpu = run_case(case.f, &inputs, &seed, Device::Cpu)?;
        let name = format!("op {}", case.name);
        match run_case(case.f, &inputs, &seed, Device::Cuda) {
            Ok(gpu) => {
                covered.extend(gpu.ops.iter().copied());
                let mut worst = rel_norm(&gpu.out, &cpu.out);
                for (g, w) in gpu.grads.iter().zip(&cpu.grads) {
                    worst = worst.max(rel_norm(g, w));
                }
                c.rows.push(Row { kernel: name, err: worst, ok: worst <= OPS_TOL, us: f64::NAN, rate: f64::NAN });
            }
            Err(e) => {
                println!("{name}: {e}");
                c.rows.push(Row { kernel: name, err: f64::INFINITY, ok: false, us: f64::NAN, rate: f64::NAN });
            }
        }
    }
    cuda::set_poison(false);
    let missing: Vec<_> = names().iter().filter(|op| !covered.contains(*op)).collect();
    if !missing.is_empty() {
        println!("ops never run on the GPU by a passing case: {missing:?}");
    }
    c.rows.push(Row {
        kernel: format!("op registry ({} ops on the GPU)", covered.len()),
        err: missing.len() as f64,
        ok: missing.is_empty(),
        us: f64::NAN,
        rate: f64::NAN,
    });
    Ok(())
}
