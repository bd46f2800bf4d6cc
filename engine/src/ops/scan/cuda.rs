//! The GPU arm of the selective scan: `selective_scan_forward_f32`,
//! `selective_scan_backward_f32` (kernels/cu/scan.cu): each function allocates the outputs,
//! turns tensors into kernel arguments (`cuda/args.rs`) and launches the kernel twin to the CPU
//! one in `cpu.rs`. The op's `Kernel` impl in `mod.rs` calls it for tensors on the GPU.

use super::{ScanConfig, ScanDims};
use crate::cuda::args::{elems, new_f32, run, Slice};
use crate::{
    cuda::{err, CudaData},
    dtype::DType,
    error::{Error, Result},
    Device, Tensor,
};
use mamba_kernels::launch::{
    Gpu, ScanBackward, ScanDims as KScanDims, ScanForward, ScanGrads, ScanInputs, SCAN_BWD_VERSION, SCAN_FWD_VERSION,
};

const OP: &str = "selective_scan";

/// The GPU scan keeps a channel's states in one 16-lane group and replays at most
/// `SCAN_BWD_MAX_CHUNK` steps from shared memory.
fn scan_limits(dims: ScanDims) -> Result<()> {
    use mamba_kernels::launch::{SCAN_BWD_MAX_CHUNK, SCAN_MAX_STATE};
    if !(1..=SCAN_MAX_STATE).contains(&dims.state) || dims.chunk > SCAN_BWD_MAX_CHUNK || dims.batch > 65535 {
        return Err(Error::Device {
            op: OP,
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
    ins.iter().map(|t| elems(OP, t)).collect()
}

/// The scan's inputs as the kernels take them: `x` in the op's order `[u, delta, A, B, C,
/// D, (z), (delta_bias), (initial_state)]`.
fn scan_inputs_of(x: &[Slice], c: ScanConfig) -> ScanInputs<'_> {
    let mut rest = x[6..].iter();
    let z = if c.has_z { rest.next() } else { None };
    let delta_bias = if c.has_bias { rest.next() } else { None };
    let init = if c.has_init { rest.next() } else { None };
    let (u, delta, a, bm, cm, d_skip) = (&x[0], &x[1], &x[2], &x[3], &x[4], &x[5]);
    ScanInputs { u, delta, a, bm, cm, d_skip, z, delta_bias, softplus: c.softplus, init }
}

/// The engine's scan sizes as the kernels'.
fn kernel_dims(d: ScanDims) -> KScanDims {
    KScanDims { batch: d.batch, dim: d.dim, len: d.len, state: d.state, chunk: d.chunk }
}

/// Twin of `cpu::selective_scan_forward` on contiguous inputs in the op's order
/// `[u, delta, A, B, C, D, (z), (delta_bias), (initial_state)]`: `(packed, chunk_states)`,
/// `packed` holding `out` then `last_state` (see `ScanForwardKernel`).
pub(super) fn scan_forward(c: ScanConfig, ins: &[&Tensor]) -> Result<(Tensor, Tensor)> {
    let dims = c.dims;
    let x = scan_inputs(dims, ins)?;
    let (n_out, n_last) = c.out_sizes();
    let (packed, all) = new_f32(OP, &[n_out + n_last])?;
    let (mut o, mut ls) = (all.index(..n_out), all.index(n_out..));
    let (states, mut ss) = new_f32(OP, &[dims.batch, dims.dim, dims.n_chunks(), dims.state])?;
    let args = ScanForward {
        x: scan_inputs_of(&x, c),
        out: &mut o,
        last_state: &mut ls,
        chunk_states: &mut ss,
        dims: kernel_dims(dims),
    };
    run(OP, |g| g.selective_scan_forward_f32(SCAN_FWD_VERSION, args))?;
    Ok((packed, states))
}

/// Twin of `cpu::selective_scan_backward`: one gradient per input, in input order, from
/// `dout (B, D, L)` and `dlast (B, D, N)`. The kernels' partial sums go through a workspace
/// allocated here (201 MB at B 8, D 1536, L 2048, N 16; back to the cache after the call), so
/// the gradients are the same bits on every run.
pub(super) fn scan_backward(
    c: ScanConfig,
    ins: &[&Tensor],
    states: &Tensor,
    dout: &Tensor,
    dlast: &Tensor,
) -> Result<Vec<Tensor>> {
    let x = scan_inputs(c.dims, ins)?;
    let (st, dy, dl) = (elems(OP, states)?, elems(OP, dout)?, elems(OP, dlast)?);
    let mut grads = Vec::new();
    let mut slices = Vec::new();
    for input in ins {
        let (g, s) = new_f32(OP, input.shape())?;
        grads.push(g);
        slices.push(s);
    }
    let [du, ddelta, da, dbm, dcm, dd_skip, extra @ ..] = &mut slices[..] else { unreachable!("at least six inputs") };
    let mut extra = extra.iter_mut();
    let dz = if c.has_z { extra.next() } else { None };
    let ddelta_bias = if c.has_bias { extra.next() } else { None };
    let dinit = if c.has_init { extra.next() } else { None };
    let kdims = kernel_dims(c.dims);
    let len = Gpu::selective_scan_backward_workspace(SCAN_BWD_VERSION, kdims).map_err(err(OP))?;
    let workspace = CudaData::alloc(OP, DType::F32, len)?;
    let mut ws = workspace.f32(OP)?;
    let args = ScanBackward {
        x: scan_inputs_of(&x, c),
        chunk_states: &st,
        dout: &dy,
        dlast: Some(&dl),
        grads: ScanGrads { du, ddelta, da, dbm, dcm, dd_skip, dz, ddelta_bias, dinit },
        workspace: &mut ws,
        dims: kdims,
    };
    run(OP, |g| g.selective_scan_backward_f32(SCAN_BWD_VERSION, args))?;
    Ok(grads)
}
