//! The GPU arm of the SSD scan: `ssd_forward_f32`, `ssd_backward_f32` (kernels/cu/ssd.cu, the
//! tiled twins of `cpu.rs` and `cpu_backward.rs`). Each function allocates the outputs and the
//! kernels' scratch, turns tensors into kernel arguments (`cuda/args.rs`) and launches.

use super::SsdDims;
use crate::cuda::args::{elems, new_f32, run, Slice};
use crate::{
    error::{Error, Result},
    Device, Tensor,
};
use mamba_kernels::launch::{
    SsdBackward, SsdDims as KSsdDims, SsdForward, SsdGrads, SsdInputs, SsdScratch, SSD_MAX_CHUNK,
};

const OP: &str = "ssd";

/// The contiguous inputs as slices, after checking the GPU kernels' limits.
fn slices(d: SsdDims, ins: &[&Tensor]) -> Result<Vec<Slice>> {
    if d.chunk > SSD_MAX_CHUNK || d.heads > 65535 || d.batch > 65535 {
        return Err(Error::Device {
            op: OP,
            device: Device::Cuda,
            msg: format!(
                "the GPU SSD takes chunk <= {SSD_MAX_CHUNK}, heads and batch <= 65535, got {}, {} and {}",
                d.chunk, d.heads, d.batch
            ),
        });
    }
    ins.iter().map(|t| elems(OP, t)).collect()
}

/// The scan's inputs as the kernels take them: `x` in the op's order `[x, dt, A, B, C, D,
/// dt_bias, (z), (initial_state)]`.
fn inputs_of(x: &[Slice], has_z: bool, has_init: bool) -> SsdInputs<'_> {
    let mut rest = x[7..].iter();
    let z = if has_z { rest.next() } else { None };
    let init = if has_init { rest.next() } else { None };
    SsdInputs { x: &x[0], dt: &x[1], a: &x[2], bm: &x[3], cm: &x[4], d_skip: &x[5], dt_bias: &x[6], z, init }
}

/// The kernels' sizes, and their products' precision from `precision::tf32`.
fn kernel_dims(d: SsdDims) -> KSsdDims {
    let SsdDims { batch, len, heads, headdim, groups, state, chunk } = d;
    KSsdDims { batch, len, heads, headdim, groups, state, chunk, tf32: crate::precision::tf32() }
}

/// Twin of `cpu::ssd_forward`: `(packed, chunk_states)`, `packed` holding `out` then
/// `last_state` (see `SsdForwardKernel`).
pub(super) fn ssd_forward(d: SsdDims, ins: &[&Tensor], has_z: bool, has_init: bool) -> Result<(Tensor, Tensor)> {
    let x = slices(d, ins)?;
    let n_out = d.batch * d.len * d.heads * d.headdim;
    let n_last = d.batch * d.heads * d.headdim * d.state;
    let (packed, all) = new_f32(OP, &[n_out + n_last])?;
    let (mut out, mut last) = (all.index(..n_out), all.index(n_out..));
    let (states, mut ss) = new_f32(OP, &[d.batch, d.n_chunks(), d.heads, d.headdim, d.state])?;
    let (_decay, mut decay) = new_f32(OP, &[d.batch * d.heads * d.n_chunks()])?;
    let (_cb, mut cb) = new_f32(OP, &[kernel_dims(d).cb_len()])?;
    let args = SsdForward {
        x: inputs_of(&x, has_z, has_init),
        out: &mut out,
        last_state: &mut last,
        chunk_states: &mut ss,
        decay: &mut decay,
        cb: &mut cb,
        dims: kernel_dims(d),
    };
    run(OP, |g| g.ssd_forward_f32(args))?;
    Ok((packed, states))
}

/// Twin of `cpu_backward::ssd_backward`: one gradient per input, in input order.
pub(super) fn ssd_backward(
    d: SsdDims,
    ins: &[&Tensor],
    states: &Tensor,
    dout: &Tensor,
    dlast: &Tensor,
    has_z: bool,
    has_init: bool,
) -> Result<Vec<Tensor>> {
    let x = slices(d, ins)?;
    let (st, dy_up, dl) = (elems(OP, states)?, elems(OP, dout)?, elems(OP, dlast)?);
    let (mut grads, mut g) = (Vec::new(), Vec::new());
    for input in ins {
        let (t, s) = new_f32(OP, input.shape())?;
        grads.push(t);
        g.push(s);
    }
    let [dx, ddt, da, dbm, dcm, dd_skip, ddt_bias, extra @ ..] = &mut g[..] else {
        unreachable!("at least seven inputs")
    };
    let mut extra = extra.iter_mut();
    let dz = if has_z { extra.next() } else { None };
    let dinit = if has_init { extra.next() } else { None };
    // Scratch, back to the allocator once the kernels are queued (the one stream orders reuse).
    let (bhc, bhl) = (d.batch * d.heads * d.n_chunks(), d.batch * d.heads * d.len);
    let (_ds, mut ds) = new_f32(OP, &[states.numel()])?;
    let (_dec, mut dec) = new_f32(OP, &[bhc])?;
    let (_kd, mut kd) = new_f32(OP, &[bhc])?;
    let (_xd, mut xd) = new_f32(OP, &[bhl])?;
    let (_sa, mut sa) = new_f32(OP, &[bhl])?;
    let (_cb, mut cb) = new_f32(OP, &[kernel_dims(d).cb_len()])?;
    let mut dy = if has_z { Some(new_f32(OP, &[dout.numel()])?) } else { None };
    let args = SsdBackward {
        x: inputs_of(&x, has_z, has_init),
        chunk_states: &st,
        dout: &dy_up,
        dlast: &dl,
        scratch: SsdScratch {
            dy: dy.as_mut().map(|(_, s)| s),
            dstates: &mut ds,
            decay: &mut dec,
            kdot: &mut kd,
            xdx: &mut xd,
            da: &mut sa,
            cb: &mut cb,
        },
        grads: SsdGrads { dx, ddt, da, dbm, dcm, dd_skip, ddt_bias, dz, dinit },
        dims: kernel_dims(d),
    };
    run(OP, |g| g.ssd_backward_f32(args))?;
    Ok(grads)
}
