//! The selective scan as one fused, differentiable op — and the same computation
//! composed from plain ops, which the tests use as its reference.
//!
//! The math and the recomputation scheme are in `cpu.rs` and docs/SCAN.md. The
//! fused op saves only its (contiguous) inputs and the chunk-entry states
//! `(B, D, L/chunk, N)`; the composed version stores every step's `(B, D, N)` state.
//!
//! An optional `initial_state (B, D, N)` is the state before step 0 (zero without it), and
//! both outputs are differentiable: `out` and `last_state` are views of one output buffer
//! (one autograd node, as the SSD op does it), so a loss on `last_state` reaches every input,
//! `initial_state` included. Backward starts the state gradient at `dlast` instead of 0 and
//! returns the one left after step 0 as `d(initial_state)`. This is what prefill (a prompt's
//! state into step mode) and truncated backprop through time (`mamba train --carry-state`)
//! need.
//!
//! **bf16 inputs.** With `u` in bf16, the (B, D, L) activations `u, delta, z` are read in bf16
//! (half the bytes, and half the memory the node keeps for backward) and everything else is
//! f32: A, B, C, D, the bias and the initial state are converted to f32 if given in bf16 (B and
//! C are the small (B, N, L) ones), the state and every sum stay f32, `out` and `last_state` are
//! f32, and the gradients of u, delta, z are rounded to bf16. On the GPU, forward v3 and
//! backward v4 on bf16 (kernels/cu/scan_pipelined.cuh); on the CPU the f32 kernels on the exact
//! f32 values of the bf16 inputs, their u, delta, z gradients rounded the same way.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::{DType, Elem},
    error::{invalid, Error},
    Result, Tensor,
};
pub use cpu::{ScanDims, ScanInputs};

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
    /// (B, D, N) the state before the first step (zero without it)
    pub initial_state: Option<&'a Tensor>,
    /// Time steps between saved states (backward replays at most this many).
    pub chunk: usize,
}

/// The scan's results, both differentiable: `out (B, D, L)` and `last_state (B, D, N)`
/// (the state after the last step, which prefill hands to step mode).
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
        let (z, delta_bias) = (Some(z), Some(delta_bias));
        Ok(ScanArgs { u, delta, a, b, c, d, z, delta_bias, softplus: true, initial_state: None, chunk })
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
        if let Some(init) = self.initial_state {
            expect_shape("initial_state", init, &[batch, dim, state])?;
        }
        if self.chunk == 0 {
            return invalid("selective_scan", "chunk must be at least 1 time step");
        }
        let bf16 = self.u.dtype() == DType::BF16;
        for (i, t) in self.tensors().into_iter().enumerate() {
            if bf16 && !is_activation(i, self.z.is_some()) {
                // converted to f32 by the op (an f64 one is refused: not a mixed precision)
                if t.device() != self.u.device() {
                    return Err(Error::DeviceMismatch { op: "selective_scan", lhs: self.u.device(), rhs: t.device() });
                }
                if !matches!(t.dtype(), DType::F32 | DType::BF16) {
                    return invalid(
                        "selective_scan",
                        format!(
                            "with bf16 u, delta, z the other inputs (A, B, C, D, delta_bias, initial_state) must be \
                             f32 or bf16, got {}",
                            t.dtype()
                        ),
                    );
                }
            } else {
                super::check_pair("selective_scan", self.u, t)?;
            }
        }
        // A chunk longer than the sequence is the whole sequence (and bounds the replay buffers).
        Ok(ScanDims { batch, dim, len, state, chunk: self.chunk.min(len.max(1)) })
    }

    /// u, delta, A, B, C, D, then z, delta_bias and initial_state if present: the op's
    /// input order.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![self.u, self.delta, self.a, self.b, self.c, self.d];
        v.extend(self.z);
        v.extend(self.delta_bias);
        v.extend(self.initial_state);
        v
    }
}

/// Whether input `i` of the op's order `[u, delta, A, B, C, D, (z), ...]` is one of the (B, D,
/// L) activations u, delta, z (which may be bf16; see the module's doc).
fn is_activation(i: usize, has_z: bool) -> bool {
    i < 2 || (i == 6 && has_z)
}

/// Which optional inputs are present and whether delta goes through softplus: what the
/// kernels need besides the tensors.
#[derive(Clone, Copy)]
struct ScanConfig {
    dims: ScanDims,
    has_z: bool,
    has_bias: bool,
    softplus: bool,
    has_init: bool,
}

impl ScanConfig {
    /// See [`is_activation`].
    fn is_activation(&self, i: usize) -> bool {
        is_activation(i, self.has_z)
    }

    /// The first inputs `[u, delta, A, B, C, D, (z), (delta_bias), (initial_state)]` as the
    /// kernels' inputs.
    fn inputs<'a, T>(&self, x: &[CpuIn<'a, T>]) -> ScanInputs<'a, T> {
        let mut rest = x[6..].iter();
        ScanInputs {
            u: x[0].elems(),
            delta: x[1].elems(),
            a: x[2].elems(),
            bm: x[3].elems(),
            cm: x[4].elems(),
            d_skip: x[5].elems(),
            z: if self.has_z { rest.next().map(|t| t.elems()) } else { None },
            delta_bias: if self.has_bias { rest.next().map(|t| t.elems()) } else { None },
            softplus: self.softplus,
            init: if self.has_init { rest.next().map(|t| t.elems()) } else { None },
        }
    }

    /// How many of the inputs are scan inputs (the rest are backward-only).
    fn n_inputs(&self) -> usize {
        6 + self.has_z as usize + self.has_bias as usize + self.has_init as usize
    }

    /// Elements of `out (B, D, L)` and of `last_state (B, D, N)`, which the forward writes
    /// into one buffer.
    fn out_sizes(&self) -> (usize, usize) {
        let d = self.dims;
        (d.batch * d.dim * d.len, d.batch * d.dim * d.state)
    }
}

/// `[u, delta, A, B, C, D, (z), (delta_bias), (initial_state)]`, contiguous -> `(packed,
/// chunk_states)`, where `packed` is `out` then `last_state`, flat (one buffer, so that one
/// autograd node owns both outputs).
struct ScanForwardKernel(ScanConfig);

impl Kernel for ScanForwardKernel {
    const NAME: &'static str = "selective_scan";
    type Out = (Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor)> {
        let d = self.0.dims;
        let f = cpu::selective_scan_forward(d, &self.0.inputs(x));
        let mut packed = f.out;
        packed.extend(f.last_state);
        let n = packed.len();
        Ok((
            Tensor::from_vec(packed, &[n])?,
            Tensor::from_vec(f.chunk_states, &[d.batch, d.dim, d.n_chunks(), d.state])?,
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        cuda::scan_forward(self.0, x)
    }
}

/// The forward's inputs, then `chunk_states`, `dout` and `dlast`, contiguous -> one
/// gradient per scan input, in input order.
struct ScanBackwardKernel(ScanConfig);

impl Kernel for ScanBackwardKernel {
    const NAME: &'static str = "selective_scan";
    type Out = Vec<Tensor>;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Vec<Tensor>> {
        let n = self.0.n_inputs();
        let (states, dout, dlast) = (x[n].elems(), x[n + 1].elems(), x[n + 2].elems());
        let g = cpu::selective_scan_backward(self.0.dims, &self.0.inputs(x), states, dout, Some(dlast));
        let mut grads = vec![g.du, g.ddelta, g.da, g.dbm, g.dcm, g.dd_skip];
        grads.extend(g.dz);
        grads.extend(g.ddelta_bias);
        grads.extend(g.dinit);
        grads.into_iter().zip(x).map(|(g, t)| Tensor::from_vec(g, &t.layout.shape)).collect()
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Vec<Tensor>> {
        let n = self.0.n_inputs();
        cuda::scan_backward(self.0, &x[..n], x[n], x[n + 1], x[n + 2])
    }
}

/// Run scan kernel `k`: through `dispatch::run` when every input has u's dtype; with bf16 u,
/// delta, z (the rest f32), on the GPU the bf16 kernels, on the CPU the f32 kernel on the
/// inputs' exact f32 values.
fn run_scan<K: Kernel>(k: &K, x: &[&Tensor]) -> Result<K::Out> {
    if x[0].dtype() != DType::BF16 {
        return run(k, x);
    }
    #[cfg(feature = "cuda")]
    if x[0].device() == crate::Device::Cuda {
        return k.cuda(x);
    }
    let wide: Vec<Tensor> = x.iter().map(|t| t.detach().to_dtype(DType::F32)).collect::<Result<_>>()?;
    run(k, &wide.iter().collect::<Vec<_>>())
}

/// Run the fused selective scan.
pub fn selective_scan(args: &ScanArgs) -> Result<ScanOut> {
    let dims = args.dims()?;
    let config = ScanConfig {
        dims,
        has_z: args.z.is_some(),
        has_bias: args.delta_bias.is_some(),
        softplus: args.softplus,
        has_init: args.initial_state.is_some(),
    };
    let bf16 = args.u.dtype() == DType::BF16;
    let inputs: Vec<Tensor> = (args.tensors().into_iter().enumerate())
        .map(|(i, t)| if bf16 && !config.is_activation(i) { t.to_dtype(DType::F32)? } else { t.clone() }.contiguous())
        .collect::<Result<_>>()?;
    let input_refs: Vec<&Tensor> = inputs.iter().collect();
    let (packed, states) = run_scan(&ScanForwardKernel(config), &input_refs)?;
    let (n_out, n_last) = config.out_sizes();
    let mut saved = input_refs.clone();
    saved.push(&states);
    let packed = record("selective_scan", packed, &input_refs, &saved, move |g, s, _| {
        let g = g.contiguous()?;
        let (dout, dlast) = (g.narrow(0, 0, n_out)?, g.narrow(0, n_out, n_last)?);
        let mut ins: Vec<&Tensor> = s.iter().collect(); // inputs, then chunk_states
        ins.extend([&dout, &dlast]);
        let grads = run_scan(&ScanBackwardKernel(config), &ins)?;
        // (the CPU's gradients of bf16 inputs come back in f32: rounded here, as the GPU's are)
        grads.into_iter().zip(s).map(|(g, x)| Ok(Some(g.to_dtype(x.dtype())?))).collect()
    });
    let parts = packed.split(&[n_out, n_last], 0)?;
    let ScanDims { batch, dim, len, state, .. } = dims;
    Ok(ScanOut { out: parts[0].reshape(&[batch, dim, len])?, last_state: parts[1].reshape(&[batch, dim, state])? })
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
    let mut h = match args.initial_state {
        Some(init) => init.unsqueeze(2)?, // h_{-1} = init
        None => Tensor::zeros(&[batch, dim, 1, state], args.u.dtype(), args.u.device())?,
    };
    let mut ys = Vec::with_capacity(len);
    for t in 0..len {
        h = decay.narrow(2, t, 1)?.mul(&h)?.add(&drive.narrow(2, t, 1)?)?; // (B, D, 1, N)
        ys.push(h.mul(&ct.narrow(2, t, 1)?)?.sum(&[3], false)?); // (B, D, 1)
    }
    let mut y = Tensor::concat(&ys.iter().collect::<Vec<_>>(), 2)?.add(&args.u.mul(&args.d.reshape(&[1, dim, 1])?)?)?;
    if let Some(z) = args.z {
        y = y.mul(&z.silu()?)?;
    }
    Ok(ScanOut { out: y, last_state: h.squeeze(2)? })
}

/// Random scan inputs `[u, delta, A < 0, B, C, D, z, delta_bias]` of `dtype` for tests.
/// Without softplus, delta and delta_bias are drawn positive: dt > 0 is the regime the
/// scan is built for (with dt < 0 and A < 0 the state grows exponentially, and so does
/// the round-off of a finite difference).
pub fn scan_inputs(
    (b, d, l, n): (usize, usize, usize, usize),
    softplus: bool,
    dtype: crate::DType,
    rng: &mut crate::Rng,
) -> Vec<Tensor> {
    let mut r = |shape: &[usize], lo: f64, hi: f64| Tensor::rand_uniform(shape, lo, hi, dtype, rng);
    let (delta, bias) = if softplus { ((-2.0, 1.0), (-1.0, 0.5)) } else { ((0.05, 1.5), (0.0, 0.5)) };
    vec![
        r(&[b, d, l], -1.0, 1.0),
        r(&[b, d, l], delta.0, delta.1),
        r(&[d, n], -2.0, -0.1),
        r(&[b, n, l], -1.0, 1.0),
        r(&[b, n, l], -1.0, 1.0),
        r(&[d], -1.0, 1.0),
        r(&[b, d, l], -2.0, 2.0),
        r(&[d], bias.0, bias.1),
    ]
}

/// Scan arguments over [`scan_inputs`], with the gate z, delta_bias and softplus each on or off.
pub fn scan_args(x: &[Tensor], (gate, bias, softplus): (bool, bool, bool), chunk: usize) -> ScanArgs<'_> {
    ScanArgs {
        u: &x[0],
        delta: &x[1],
        a: &x[2],
        b: &x[3],
        c: &x[4],
        d: &x[5],
        z: gate.then(|| &x[6]),
        delta_bias: bias.then(|| &x[7]),
        softplus,
        initial_state: None,
        chunk,
    }
}

/// A random initial state `(B, D, N)` for tests, of the size of the states the scan reaches.
pub fn scan_init((b, d, _, n): (usize, usize, usize, usize), dtype: crate::DType, rng: &mut crate::Rng) -> Tensor {
    Tensor::rand_uniform(&[b, d, n], -1.0, 1.0, dtype, rng)
}

/// Both outputs as one flat tensor (`out` then `last_state`), so that one gradient check
/// covers both.
pub fn scan_both(o: ScanOut) -> Result<Tensor> {
    let (a, b) = (o.out.reshape(&[o.out.numel()])?, o.last_state.reshape(&[o.last_state.numel()])?);
    Tensor::concat(&[&a, &b], 0)
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["selective_scan"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    selective_scan_all_options: tol TIGHT, exercises ["selective_scan"],
        // chunk 3 does not divide L = 7: the last chunk is short
        inputs |r| scan_inputs((2, 3, 7, 2), true, DType::F64, r),
        f |x| Ok(selective_scan(&scan_args(x, (true, true, true), 3))?.out);
    selective_scan_plain: tol TIGHT, exercises ["selective_scan"],
        inputs |r| scan_inputs((1, 2, 5, 3), false, DType::F64, r)[..6].to_vec(),
        f |x| Ok(selective_scan(&scan_args(x, (false, false, false), 2))?.out);
    selective_scan_one_chunk_strided_inputs: tol TIGHT, exercises ["selective_scan", "permute"],
        // u and z arrive as (B, L, D) permuted to (B, D, L), as in the Mamba block
        inputs |r| {
            let mut v = scan_inputs((2, 2, 4, 2), true, DType::F64, r);
            v[0] = v[0].permute(&[0, 2, 1]).unwrap().contiguous().unwrap();
            v[6] = v[6].permute(&[0, 2, 1]).unwrap().contiguous().unwrap();
            v
        },
        f |x| {
            let (u, z) = (strided(x[0].permute(&[0, 2, 1])?)?, strided(x[6].permute(&[0, 2, 1])?)?);
            let a = ScanArgs { u: &u, z: Some(&z), ..scan_args(x, (true, true, true), 16) };
            Ok(selective_scan(&a)?.out)
        };
    selective_scan_initial_and_last_state: tol TIGHT, exercises ["selective_scan", "permute"],
        // an initial state (arriving as a (B, N, D) view) and the gradient of last_state
        // too; chunk 3 does not divide L = 7
        inputs |r| {
            let mut v = scan_inputs((2, 3, 7, 2), true, DType::F64, r);
            v.push(Tensor::rand_uniform(&[2, 2, 3], -1.0, 1.0, DType::F64, r)); // (B, N, D), permuted in f
            v
        },
        f |x| {
            let init = strided(x[8].permute(&[0, 2, 1])?)?;
            scan_both(selective_scan(&ScanArgs { initial_state: Some(&init), ..scan_args(x, (true, true, true), 3) })?)
        };
    selective_scan_plain_last_state_only: tol TIGHT, exercises ["selective_scan"],
        // a loss on last_state alone (dout = 0), no options, L = 5 in chunks of 2
        inputs |r| scan_inputs((1, 2, 5, 3), false, DType::F64, r)[..6].to_vec(),
        f |x| Ok(selective_scan(&scan_args(x, (false, false, false), 2))?.last_state);
    selective_scan_initial_state_chunk_of_one: tol TIGHT, exercises ["selective_scan"],
        // chunk 1 (every step is a chunk), the bias without softplus, both outputs
        inputs |r| {
            let mut v = scan_inputs((2, 2, 4, 2), false, DType::F64, r)[..6].to_vec();
            v.push(Tensor::rand_uniform(&[2], 0.0, 0.5, DType::F64, r));
            v.push(scan_init((2, 2, 4, 2), DType::F64, r));
            v
        },
        f |x| {
            let (delta_bias, initial_state) = (Some(&x[6]), Some(&x[7]));
            let a = ScanArgs { delta_bias, initial_state, ..scan_args(x, (false, false, false), 1) };
            scan_both(selective_scan(&a)?)
        };
}

#[cfg(test)]
mod tests;
