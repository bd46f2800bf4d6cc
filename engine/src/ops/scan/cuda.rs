//! The GPU arm of the selective scan: `selective_scan_forward`, `selective_scan_backward`
//! (kernels/cu/scan.cu, scan_pipelined.cuh): each function allocates the outputs, turns tensors
//! into kernel arguments (`cuda/args.rs`) and launches the kernel twin to the CPU one in
//! `cpu.rs`. The op's `Kernel` impl in `mod.rs` calls it for tensors on the GPU: all f32, or
//! u, delta, z in bf16 and the rest f32 (then du, ddelta, dz come back in bf16).

use super::{ScanConfig, ScanDims};
use crate::cuda::args::{elems, new_f32, run, Slice};
use mamba_kernels::cust::memory::{DeviceCopy, DeviceSlice};
use crate::{
    cuda::{err, CudaData},
    dtype::DType,
    error::{Error, Result},
    Device, Tensor,
};
use mamba_kernels::launch::{
    Gpu, ScanBackward, ScanDims as KScanDims, ScanElem, ScanForward, ScanGrads, ScanInputs, SCAN_BWD_VERSION,
    SCAN_FWD_VERSION,
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

/// The elements of contiguous `t` of element type `X` (f32, or bf16 as `u16`) as one slice.
fn elems_of<X: DeviceCopy>(t: &Tensor) -> Result<DeviceSlice<X>> {
    let want = if std::mem::size_of::<X>() == 4 { DType::F32 } else { DType::BF16 };
    if !t.is_contiguous() || t.dtype() != want {
        let msg = format!("engine bug: the {want} scan got a {} view with strides {:?}", t.dtype(), t.layout.strides);
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    t.read().as_cuda(OP)?.slice(OP, t.layout.offset, t.numel())
}

/// The contiguous inputs, after checking the GPU scan's limits: u, delta, z (`X`) and the rest
/// (f32), each in the op's order.
struct Slices<X: DeviceCopy> {
    acts: Vec<DeviceSlice<X>>,
    rest: Vec<Slice>,
}

fn scan_inputs<X: DeviceCopy>(c: ScanConfig, ins: &[&Tensor]) -> Result<Slices<X>> {
    scan_limits(c.dims)?;
    let (mut acts, mut rest) = (Vec::new(), Vec::new());
    for (i, t) in ins.iter().enumerate() {
        if c.is_activation(i) {
            acts.push(elems_of::<X>(t)?);
        } else {
            rest.push(elems(OP, t)?);
        }
    }
    Ok(Slices { acts, rest })
}

/// The scan's inputs as the kernels take them (`x` from the op's order `[u, delta, A, B, C,
/// D, (z), (delta_bias), (initial_state)]`).
fn scan_inputs_of<X: ScanElem>(x: &Slices<X>, c: ScanConfig) -> ScanInputs<'_, X> {
    let (u, delta, z) = (&x.acts[0], &x.acts[1], x.acts.get(2));
    let mut rest = x.rest[4..].iter();
    let delta_bias = if c.has_bias { rest.next() } else { None };
    let init = if c.has_init { rest.next() } else { None };
    let (a, bm, cm, d_skip) = (&x.rest[0], &x.rest[1], &x.rest[2], &x.rest[3]);
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
    match ins[0].dtype() {
        DType::BF16 => forward::<u16>(c, ins),
        _ => forward::<f32>(c, ins),
    }
}

fn forward<X: ScanElem>(c: ScanConfig, ins: &[&Tensor]) -> Result<(Tensor, Tensor)> {
    let dims = c.dims;
    let x = scan_inputs::<X>(c, ins)?;
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
    run(OP, |g| g.selective_scan_forward(SCAN_FWD_VERSION, args))?;
    Ok((packed, states))
}

/// A fresh tensor for the gradient of `input` (its shape and dtype) and its slice.
fn new_grad<X: DeviceCopy>(input: &Tensor) -> Result<(Tensor, DeviceSlice<X>)> {
    let n = crate::shape::checked_numel(OP, input.shape())?;
    let data = CudaData::alloc(OP, input.dtype(), n)?;
    let slice = data.slice::<X>(OP, 0, n)?;
    Ok((Tensor::from_storage(crate::storage::Storage::cuda(data), input.shape()), slice))
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
    match ins[0].dtype() {
        DType::BF16 => backward::<u16>(c, ins, [states, dout, dlast]),
        _ => backward::<f32>(c, ins, [states, dout, dlast]),
    }
}

fn backward<X: ScanElem>(c: ScanConfig, ins: &[&Tensor], [states, dout, dlast]: [&Tensor; 3]) -> Result<Vec<Tensor>> {
    let x = scan_inputs::<X>(c, ins)?;
    let (st, dy, dl) = (elems(OP, states)?, elems(OP, dout)?, elems(OP, dlast)?);
    let mut grads = Vec::new();
    let (mut acts, mut rest) = (Vec::new(), Vec::new());
    for (i, input) in ins.iter().enumerate() {
        if c.is_activation(i) {
            let (g, s) = new_grad::<X>(input)?;
            grads.push(g);
            acts.push(s);
        } else {
            let (g, s) = new_f32(OP, input.shape())?;
            grads.push(g);
            rest.push(s);
        }
    }
    let [du, ddelta, dz @ ..] = &mut acts[..] else { unreachable!("u and delta") };
    let [da, dbm, dcm, dd_skip, extra @ ..] = &mut rest[..] else { unreachable!("A, B, C and D") };
    let mut extra = extra.iter_mut();
    let dz = dz.first_mut();
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
    run(OP, |g| g.selective_scan_backward(SCAN_BWD_VERSION, args))?;
    Ok(grads)
}
