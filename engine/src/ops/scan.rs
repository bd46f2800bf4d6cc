//! The selective scan as one fused, differentiable op — and the same computation
//! composed from plain ops, which the tests use as its reference.
//!
//! The math and the recomputation scheme are in `cpu/scan.rs` and docs/SCAN.md. The
//! fused op saves only its (contiguous) inputs and the chunk-entry states
//! `(B, D, L/chunk, N)`; the composed version stores every step's `(B, D, N)` state.

use crate::{
    autograd::record,
    cpu::scan::{self as kernel, ScanDims, ScanInputs},
    error::{invalid, Error},
    storage::{CpuData, CpuElem},
    Result, Tensor,
};

/// Arguments of the selective scan, in the reference layout.
#[derive(Clone, Copy)]
pub struct ScanArgs<'a> {
    /// (B, D, L)
    pub u: &'a Tensor,
    /// (B, D, L), before bias and softplus
    pub delta: &'a Tensor,
    /// (D, N), negative real parts (Mamba passes -exp(A_log))
    pub a: &'a Tensor,
    /// (B, N, L)
    pub b: &'a Tensor,
    /// (B, N, L)
    pub c: &'a Tensor,
    /// (D) skip connection
    pub d: &'a Tensor,
    /// (B, D, L) gate, applied as silu(z)
    pub z: Option<&'a Tensor>,
    /// (D) added to delta
    pub delta_bias: Option<&'a Tensor>,
    pub softplus: bool,
    /// Time steps between saved states (backward replays at most this many).
    pub chunk: usize,
}

/// The scan's results: `out (B, D, L)` (differentiable) and `last_state (B, D, N)`
/// (the state after the last step, for generation; not differentiable).
pub struct ScanOut {
    pub out: Tensor,
    pub last_state: Tensor,
}

fn expect_shape(name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() == want {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        op: "selective_scan",
        lhs: t.shape().to_vec(),
        rhs: want.to_vec(),
        hint: format!("argument `{name}` has the first shape, the others imply the second (u: (B, D, L), A: (D, N))"),
    })
}

impl<'a> ScanArgs<'a> {
    /// The configuration Mamba uses, from its eight inputs in the op's order
    /// `[u, delta, A, B, C, D, z, delta_bias]`: gate on, delta bias on, softplus on.
    pub fn mamba(x: &'a [Tensor], chunk: usize) -> Result<ScanArgs<'a>> {
        let [u, delta, a, b, c, d, z, delta_bias] = x else {
            return invalid(
                "selective_scan",
                format!("ScanArgs::mamba takes 8 tensors [u, delta, A, B, C, D, z, delta_bias], got {}", x.len()),
            );
        };
        Ok(ScanArgs { u, delta, a, b, c, d, z: Some(z), delta_bias: Some(delta_bias), softplus: true, chunk })
    }
}

impl ScanArgs<'_> {
    /// Check every shape against `u: (B, D, L)` and `a: (D, N)`.
    fn dims(&self) -> Result<ScanDims> {
        let [batch, dim, len] = self.u.shape() else {
            return Err(Error::Rank {
                op: "selective_scan",
                shape: self.u.shape().to_vec(),
                expected: "u of shape (B, D, L)".into(),
            });
        };
        let (batch, dim, len) = (*batch, *dim, *len);
        let [_, state] = self.a.shape() else {
            return Err(Error::Rank {
                op: "selective_scan",
                shape: self.a.shape().to_vec(),
                expected: "A of shape (D, N)".into(),
            });
        };
        let state = *state;
        expect_shape("delta", self.delta, &[batch, dim, len])?;
        expect_shape("A", self.a, &[dim, state])?;
        expect_shape("B", self.b, &[batch, state, len])?;
        expect_shape("C", self.c, &[batch, state, len])?;
        expect_shape("D", self.d, &[dim])?;
        if let Some(z) = self.z {
            expect_shape("z", z, &[batch, dim, len])?;
        }
        if let Some(bias) = self.delta_bias {
            expect_shape("delta_bias", bias, &[dim])?;
        }
        if self.chunk == 0 {
            return invalid("selective_scan", "chunk must be at least 1 time step");
        }
        for t in self.tensors() {
            super::check_pair("selective_scan", self.u, t)?;
        }
        // A chunk longer than the sequence is the whole sequence (and bounds the replay buffers).
        Ok(ScanDims { batch, dim, len, state, chunk: self.chunk.min(len.max(1)) })
    }

    /// u, delta, A, B, C, D, then z and delta_bias if present: the op's input order.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![self.u, self.delta, self.a, self.b, self.c, self.d];
        v.extend(self.z);
        v.extend(self.delta_bias);
        v
    }
}

/// Borrow contiguous tensors in the op's input order as kernel inputs, run `f`.
fn with_inputs<T: CpuElem, R>(
    ts: &[Tensor],
    has_z: bool,
    has_bias: bool,
    softplus: bool,
    f: impl FnOnce(&ScanInputs<T>) -> R,
) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.read()).collect();
    let slices: Vec<&[T]> = guards
        .iter()
        .zip(ts)
        .map(|(g, t)| {
            let d = g.as_cpu("selective_scan")?;
            T::slice(d).map(|s| &s[t.layout.offset..t.layout.offset + t.numel()]).ok_or(Error::DTypeMismatch {
                op: "selective_scan",
                lhs: ts[0].dtype(),
                rhs: T::DTYPE,
            })
        })
        .collect::<Result<_>>()?;
    let mut rest = slices[6..].iter();
    let inputs = ScanInputs {
        u: slices[0],
        delta: slices[1],
        a: slices[2],
        bm: slices[3],
        cm: slices[4],
        d_skip: slices[5],
        z: if has_z { rest.next().copied() } else { None },
        delta_bias: if has_bias { rest.next().copied() } else { None },
        softplus,
    };
    Ok(f(&inputs))
}

/// Run the fused selective scan.
pub fn selective_scan(args: &ScanArgs) -> Result<ScanOut> {
    let dims = args.dims()?;
    let (has_z, has_bias, softplus) = (args.z.is_some(), args.delta_bias.is_some(), args.softplus);
    let inputs: Vec<Tensor> = args.tensors().into_iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let (out, last_state, states) = scan_forward(dims, &inputs, has_z, has_bias, softplus)?;
    let input_refs: Vec<&Tensor> = inputs.iter().collect();
    let mut saved = input_refs.clone();
    saved.push(&states);
    let out = record("selective_scan", out, &input_refs, &saved, move |g, s, _| {
        let (ins, states) = s.split_at(s.len() - 1);
        let dout = g.contiguous()?;
        scan_backward(dims, ins, &states[0], &dout, has_z, has_bias, softplus)
    });
    Ok(ScanOut { out, last_state })
}

/// `(out, last_state, chunk_states)` from the forward kernel on contiguous inputs (no graph).
fn scan_forward(
    dims: ScanDims,
    inputs: &[Tensor],
    has_z: bool,
    has_bias: bool,
    softplus: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if inputs[0].device() == crate::Device::Cuda {
        return crate::cuda::ops::scan_forward(dims, inputs, has_z, has_bias, softplus);
    }
    let (out, last, states) = match inputs[0].dtype() {
        crate::DType::F32 => {
            let f =
                with_inputs::<f32, _>(inputs, has_z, has_bias, softplus, |x| kernel::selective_scan_forward(dims, x))?;
            (CpuData::F32(f.out), CpuData::F32(f.last_state), CpuData::F32(f.chunk_states))
        }
        crate::DType::F64 => {
            let f =
                with_inputs::<f64, _>(inputs, has_z, has_bias, softplus, |x| kernel::selective_scan_forward(dims, x))?;
            (CpuData::F64(f.out), CpuData::F64(f.last_state), CpuData::F64(f.chunk_states))
        }
    };
    Ok((
        Tensor::from_cpu_data(out, &[dims.batch, dims.dim, dims.len])?,
        Tensor::from_cpu_data(last, &[dims.batch, dims.dim, dims.state])?,
        Tensor::from_cpu_data(states, &[dims.batch, dims.dim, dims.n_chunks(), dims.state])?,
    ))
}

/// Gradients for each input (in `ScanArgs::tensors` order) from the backward kernel.
fn scan_backward(
    dims: ScanDims,
    ins: &[Tensor],
    states: &Tensor,
    dout: &Tensor,
    has_z: bool,
    has_bias: bool,
    softplus: bool,
) -> Result<Vec<Option<Tensor>>> {
    fn run<T: CpuElem>(
        dims: ScanDims,
        ins: &[Tensor],
        states: &Tensor,
        dout: &Tensor,
        z: bool,
        bias: bool,
        sp: bool,
    ) -> Result<Vec<Vec<T>>> {
        let (sg, dg) = (states.read(), dout.read());
        let slice = |g: &crate::storage::Storage, t: &Tensor| -> Result<Vec<T>> {
            let d = g.as_cpu("selective_scan")?;
            let s = T::slice(d).ok_or(Error::DTypeMismatch { op: "selective_scan", lhs: t.dtype(), rhs: T::DTYPE })?;
            Ok(s[t.layout.offset..t.layout.offset + t.numel()].to_vec())
        };
        let (st, dy) = (slice(&sg, states)?, slice(&dg, dout)?);
        with_inputs::<T, _>(ins, z, bias, sp, |x| {
            let g = kernel::selective_scan_backward(dims, x, &st, &dy);
            let mut v = vec![g.du, g.ddelta, g.da, g.dbm, g.dcm, g.dd_skip];
            v.extend(g.dz);
            v.extend(g.ddelta_bias);
            v
        })
    }
    #[cfg(feature = "cuda")]
    if dout.device() == crate::Device::Cuda {
        let grads = crate::cuda::ops::scan_backward(dims, ins, states, dout, has_z, has_bias, softplus)?;
        return Ok(grads.into_iter().map(Some).collect());
    }
    let grads: Vec<CpuData> = match dout.dtype() {
        crate::DType::F32 => {
            run::<f32>(dims, ins, states, dout, has_z, has_bias, softplus)?.into_iter().map(CpuData::F32).collect()
        }
        crate::DType::F64 => {
            run::<f64>(dims, ins, states, dout, has_z, has_bias, softplus)?.into_iter().map(CpuData::F64).collect()
        }
    };
    grads.into_iter().zip(ins).map(|(g, t)| Ok(Some(Tensor::from_cpu_data(g, t.shape())?))).collect()
}

/// The same scan written with plain engine ops, one time step at a time. It stores
/// every intermediate for backward (at least B*D*L*N values), which is exactly what
/// the fused op avoids; tests compare the two.
pub fn selective_scan_composed(args: &ScanArgs) -> Result<ScanOut> {
    let ScanDims { batch, dim, len, state, .. } = args.dims()?;
    let mut dt = args.delta.clone();
    if let Some(bias) = args.delta_bias {
        dt = dt.add(&bias.reshape(&[1, dim, 1])?)?;
    }
    if args.softplus {
        dt = dt.softplus()?;
    }
    let dt = dt.unsqueeze(3)?; // (B, D, L, 1)
    let decay = dt.mul(&args.a.reshape(&[1, dim, 1, state])?)?.exp()?; // (B, D, L, N)
    let bt = args.b.transpose(1, 2)?.unsqueeze(1)?; // (B, 1, L, N)
    let drive = dt.mul(&bt)?.mul(&args.u.unsqueeze(3)?)?; // (B, D, L, N)
    let ct = args.c.transpose(1, 2)?.unsqueeze(1)?; // (B, 1, L, N)
    let mut h = Tensor::zeros(&[batch, dim, 1, state], args.u.dtype(), args.u.device())?;
    let mut ys = Vec::with_capacity(len);
    for t in 0..len {
        h = decay.narrow(2, t, 1)?.mul(&h)?.add(&drive.narrow(2, t, 1)?)?; // (B, D, 1, N)
        ys.push(h.mul(&ct.narrow(2, t, 1)?)?.sum(&[3], false)?); // (B, D, 1)
    }
    let mut y = Tensor::concat(&ys.iter().collect::<Vec<_>>(), 2)?.add(&args.u.mul(&args.d.reshape(&[1, dim, 1])?)?)?;
    if let Some(z) = args.z {
        y = y.mul(&z.silu()?)?;
    }
    Ok(ScanOut { out: y, last_state: h.squeeze(2)?.detach() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{gradcheck, DType, Rng};

    /// Random scan inputs (B, D, L, N) with a stable A < 0.
    fn inputs(b: usize, d: usize, l: usize, n: usize, dtype: DType, seed: u64) -> Vec<Tensor> {
        let mut rng = Rng::new(seed);
        let mut r = |shape: &[usize], lo: f64, hi: f64| Tensor::rand_uniform(shape, lo, hi, dtype, &mut rng);
        vec![
            r(&[b, d, l], -1.0, 1.0), // u
            r(&[b, d, l], -2.0, 1.0), // delta
            r(&[d, n], -2.0, -0.1),   // A
            r(&[b, n, l], -1.0, 1.0), // B
            r(&[b, n, l], -1.0, 1.0), // C
            r(&[d], -1.0, 1.0),       // D
            r(&[b, d, l], -2.0, 2.0), // z
            r(&[d], -1.0, 0.5),       // delta_bias
        ]
    }

    fn args(x: &[Tensor], chunk: usize) -> ScanArgs<'_> {
        ScanArgs::mamba(x, chunk).unwrap()
    }

    #[test]
    fn fused_matches_composed_forward_and_backward() {
        let x: Vec<Tensor> = inputs(2, 3, 11, 4, DType::F64, 1).into_iter().map(|t| t.requires_grad()).collect();
        let fused = selective_scan(&args(&x, 4)).unwrap();
        let composed = selective_scan_composed(&args(&x, 4)).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1e-12 + y.abs().max(1.0))).fold(0.0, f64::max);
            assert!(worst < 1e-12, "worst relative error {worst}");
        };
        close(&fused.out, &composed.out);
        close(&fused.last_state, &composed.last_state);
        let w = Tensor::rand_uniform(&[2, 3, 11], -1.0, 1.0, DType::F64, &mut Rng::new(9));
        let mut grads = Vec::new();
        for out in [&fused.out, &composed.out] {
            x.iter().for_each(|t| t.zero_grad());
            out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            grads.push(x.iter().map(|t| t.grad().unwrap()).collect::<Vec<_>>());
        }
        for (g1, g2) in grads[0].iter().zip(&grads[1]) {
            close(g1, g2);
        }
    }

    #[test]
    fn gradient_check_with_and_without_options() {
        let x = inputs(2, 2, 7, 3, DType::F64, 2);
        let tol = gradcheck::Tolerance::default();
        let r = gradcheck::check(|x| Ok(selective_scan(&args(x, 3))?.out), &x, tol).unwrap();
        assert!(r.ops.contains(&"selective_scan"));
        let plain = |x: &[Tensor]| {
            let a = ScanArgs {
                u: &x[0],
                delta: &x[1],
                a: &x[2],
                b: &x[3],
                c: &x[4],
                d: &x[5],
                z: None,
                delta_bias: None,
                softplus: false,
                chunk: 2,
            };
            Ok(selective_scan(&a)?.out)
        };
        gradcheck::check(plain, &x[..6], tol).unwrap();
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = inputs(2, 3, 5, 4, DType::F32, 3);
        let bad = ScanArgs { a: &x[5], ..args(&x, 2) };
        let err = selective_scan(&bad).err().unwrap().to_string();
        assert!(err.contains("selective_scan"), "{err}");
        let bad = ScanArgs { chunk: 0, ..args(&x, 2) };
        assert!(selective_scan(&bad).is_err());
    }
}
