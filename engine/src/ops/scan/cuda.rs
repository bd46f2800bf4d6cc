//! The GPU arm of the selective scan: `selective_scan_forward_f32`,
//! `selective_scan_backward_f32` (kernels/cu/scan.cu): each function allocates the outputs,
//! turns tensors into kernel arguments (`cuda/args.rs`) and launches the kernel twin to the CPU
//! one in `cpu.rs`. The op's `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use crate::cuda::args::{elems, new_f32, run, Slice};
use crate::{error::{Error, Result}, Device, Tensor};
use mamba_kernels::launch::{ScanBackward, ScanForward, ScanGrads, ScanInputs, SCAN_BWD_VERSION, SCAN_FWD_VERSION, ScanDims as KScanDims};
use super::ScanDims;

/// The GPU scan keeps a channel's states in one 16-lane group and replays at most
/// `SCAN_BWD_MAX_CHUNK` steps from shared memory.
fn scan_limits(dims: ScanDims) -> Result<()> {
    use mamba_kernels::launch::{SCAN_BWD_MAX_CHUNK, SCAN_MAX_STATE};
    if !(1..=SCAN_MAX_STATE).contains(&dims.state) || dims.chunk > SCAN_BWD_MAX_CHUNK || dims.batch > 65535 {
        return Err(Error::Device {
            op: "selective_scan",
            device: Device::Cuda,
            msg: format!(
                "the GPU scan takes 1 <= d_state <= {SCAN_MAX_STATE}, chunk <= {SCAN_BWD_MAX_CHUNK} and batch \
                 <= 65535, got {}, {} and {}",
                dims.state, dims.chunk, dims.batch
            ),
        });
    }
    Ok(())
}

/// The contiguous inputs as slices, after checking the GPU scan's limits.
fn scan_inputs(dims: ScanDims, ins: &[&Tensor]) -> Result<Vec<Slice>> {
    scan_limits(dims)?;
    ins.iter().map(|t| elems("selective_scan", t)).collect()
}

/// The scan's inputs as the kernels take them: `x` in the op's order `[u, delta, A, B, C,
/// D, (z), (delta_bias)]`.
fn scan_inputs_of(x: &[Slice], has_z: bool, has_bias: bool, softplus: bool) -> ScanInputs<'_> {
    let mut rest = x[6..].iter();
    let z = if has_z { rest.next() } else { None };
    let delta_bias = if has_bias { rest.next() } else { None };
    ScanInputs { u: &x[0], delta: &x[1], a: &x[2], bm: &x[3], cm: &x[4], d_skip: &x[5], z, delta_bias, softplus }
}

/// The engine's scan sizes as the kernels'.
fn kernel_dims(d: ScanDims) -> KScanDims {
    KScanDims { batch: d.batch, dim: d.dim, len: d.len, state: d.state, chunk: d.chunk }
}

/// Twin of `cpu::selective_scan_forward` on contiguous inputs in the op's order
/// `[u, delta, A, B, C, D, (z), (delta_bias)]`: `(out, last_state, chunk_states)`.
pub(super) fn scan_forward(
    dims: ScanDims,
    ins: &[&Tensor],
    has_z: bool,
    has_bias: bool,
    softplus: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "selective_scan";
    let ScanDims { batch, dim, len, state, .. } = dims;
    let x = scan_inputs(dims, ins)?;
    let (out, mut o) = new_f32(OP, &[batch, dim, len])?;
    let (last, mut ls) = new_f32(OP, &[batch, dim, state])?;
    let (states, mut ss) = new_f32(OP, &[batch, dim, dims.n_chunks(), state])?;
    let args = ScanForward {
        x: scan_inputs_of(&x, has_z, has_bias, softplus),
        out: &mut o,
        last_state: &mut ls,
        chunk_states: &mut ss,
        dims: kernel_dims(dims),
    };
    run(OP, |g| g.selective_scan_forward_f32(SCAN_FWD_VERSION, args))?;
    Ok((out, last, states))
}

/// Twin of `cpu::selective_scan_backward`: one gradient per input, in input order.
pub(super) fn scan_backward(
    dims: ScanDims,
    ins: &[&Tensor],
    states: &Tensor,
    dout: &Tensor,
    has_z: bool,
    has_bias: bool,
    softplus: bool,
) -> Result<Vec<Tensor>> {
    const OP: &str = "selective_scan";
    let x = scan_inputs(dims, ins)?;
    let (st, dy) = (elems(OP, states)?, elems(OP, dout)?);
    let mut grads = Vec::new();
    let mut slices = Vec::new();
    for input in ins {
        let (g, s) = new_f32(OP, input.shape())?;
        grads.push(g);
        slices.push(s);
    }
    let [du, ddelta, da, dbm, dcm, dd_skip, extra @ ..] = &mut slices[..] else { unreachable!("at least six inputs") };
    let mut extra = extra.iter_mut();
    let dz = if has_z { extra.next() } else { None };
    let ddelta_bias = if has_bias { extra.next() } else { None };
    let args = ScanBackward {
        x: scan_inputs_of(&x, has_z, has_bias, softplus),
        chunk_states: &st,
        dout: &dy,
        grads: ScanGrads { du, ddelta, da, dbm, dcm, dd_skip, dz, ddelta_bias },
        dims: kernel_dims(dims),
    };
    run(OP, |g| g.selective_scan_backward_f32(SCAN_BWD_VERSION, args))?;
    Ok(grads)
}
