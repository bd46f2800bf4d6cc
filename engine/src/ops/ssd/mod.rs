//! The SSD scan of Mamba-2 (state space duality) as one fused, differentiable op, computed
//! chunk by chunk with matrix products, and the same scan composed from plain ops, one time
//! step at a time, which the tests use as its reference.
//!
//! # The recurrence
//!
//! Shapes: `x, z, out: (b, L, h, p)`, `dt: (b, L, h)`, `A, D, dt_bias: (h)`,
//! `B, C: (b, L, g, n)`, `initial_state, last_state: (b, h, p, n)`. Head `hh` reads group
//! `hh / (h / g)` of B and C. Per batch and head, with a `(p, n)` state `S`:
//!
//! ```text
//! dt'_t = softplus(dt_t + dt_bias)           alpha_t = dt'_t A          (A < 0: a decay)
//! S_t   = exp(alpha_t) S_{t-1} + dt'_t x_t B_t^T            S_{-1} = initial_state (or 0)
//! y_t   = S_t C_t + D x_t                    out_t = y_t * silu(z_t)    (or y_t without z)
//! last_state = S_{L-1}
//! ```
//!
//! # The chunked algorithm (Mamba-2 paper, section 6)
//!
//! Time is cut into chunks of `Q` steps (the last may be shorter). Inside chunk `c`, with
//! local steps `i, j = 0..Q`, entry state `S_in` (the state before its first step) and the
//! cumulative log-decay `a_i = sum_{k <= i} alpha_k`, unrolling the recurrence gives
//!
//! ```text
//! intra:  Y = (Lmask ∘ C B^T) X'       Lmask_ij = exp(a_i - a_j) for j <= i, else 0
//!                                      C B^T: (Q, Q)   X' = dt' x: (Q, p)   Y: (Q, p)
//! inter:  Y_i += exp(a_i) S_in C_i     (the state carried in from earlier chunks)
//! state:  S_out = exp(a_Q) S_in + sum_j exp(a_Q - a_j) X'_j B_j^T      (a_Q: the last a)
//! then    y = Y + D x,  out = y * silu(z)
//! ```
//!
//! The state pass `S_in(c + 1) = S_out(c)` is the only sequential part (one step per chunk);
//! everything else is matrix products inside a chunk, which is what the GPU does well
//! (`kernels/cu/ssd.cu`). The forward saves only its inputs and the state entering each chunk,
//! `chunk_states: (b, n_chunks, h, p, n)`; backward recomputes the rest from them.
//!
//! # Backward, per chunk, newest first
//!
//! Given `dout` and `dlast` (the gradient of `last_state`), the gate first: `dy = dout *
//! silu(z)`, `dz = dout * y * silu'(z)` (y recomputed as above), `dD += sum dy x`. A reverse
//! pass over chunks carries `dS_end` (the gradient of the chunk's `S_out`; the last chunk's
//! is `dlast`):
//!
//! ```text
//! dX'_j = sum_{i >= j} Lmask_ij (C_i . B_j) dy_i + exp(a_Q - a_j) dS_end B_j          (Q, p)
//! dC_i  = sum_{j <= i} Lmask_ij (dy_i . X'_j) B_j + exp(a_i) S_in^T dy_i                 (Q, n)
//! dB_j  = sum_{i >= j} Lmask_ij (dy_i . X'_j) C_i + exp(a_Q - a_j) dS_end^T X'_j      (Q, n)
//! dx_j  = dt'_j dX'_j + D dy_j
//! dS_in = sum_i exp(a_i) dy_i C_i^T + exp(a_Q) dS_end      (the next older chunk's dS_end)
//! ```
//!
//! The decays: the gradient of the cumulative `a_i` collects, from every product it scales,
//! `da_i = C_i . dC_i - B_i . dB_i` (the row sum of the masked product as the later index,
//! minus the column sum as the earlier one; the terms with `S_in` and `dS_end` included), plus
//! at the chunk's last step `K = exp(a_Q) <dS_end, S_in> + sum_j B_j . dB^state_j` (everything
//! `S_out` depends on through `a_Q`; `dB^state` is the `dS_end` term of `dB`). Then
//! `dalpha_k = sum_{i >= k} da_i` (a reverse cumulative sum inside the chunk), and
//!
//! ```text
//! d(dt')_k = x_k . dX'_k + A dalpha_k     d(dt)_k = d(dt')_k sigmoid(dt_k + dt_bias)
//! dA += sum_k dt'_k dalpha_k             d(dt_bias) += sum_k d(dt)_k
//! d(initial_state) = the dS_in of chunk 0
//! ```
//!
//! `cpu.rs` (forward) and `cpu_backward.rs` hold these equations next to the loops; the CUDA
//! kernels in `kernels/cu/ssd.cu` are their tiled twins.

pub mod cpu;
mod cpu_backward;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    error::{invalid, Error},
    DType, Result, Rng, Tensor,
};
pub use cpu::{SsdDims, SsdInputs};

const OP: &str = "ssd";

/// Arguments of the SSD scan, in the reference layout (`mamba_chunk_scan_combined`'s).
#[derive(Clone, Copy)]
pub struct SsdArgs<'a> {
    /// (b, L, h, p)
    pub x: &'a Tensor,
    /// (b, L, h), before dt_bias and softplus
    pub dt: &'a Tensor,
    /// (h), negative (Mamba-2 passes -exp(A_log))
    pub a: &'a Tensor,
    /// (b, L, g, n); g divides h
    pub b: &'a Tensor,
    /// (b, L, g, n)
    pub c: &'a Tensor,
    /// (h) skip connection
    pub d: &'a Tensor,
    /// (h) added to dt before softplus
    pub dt_bias: &'a Tensor,
    /// (b, L, h, p) gate, applied as silu(z)
    pub z: Option<&'a Tensor>,
    /// (b, h, p, n) the state before the first step (zero without it)
    pub initial_state: Option<&'a Tensor>,
    /// Time steps per chunk (the model's default is 256).
    pub chunk: usize,
}

/// The scan's results, both differentiable: `out (b, L, h, p)` and `last_state (b, h, p, n)`
/// (the state after the last step, which prefill hands to step mode).
pub struct SsdOut {
    pub out: Tensor,
    pub last_state: Tensor,
}

fn expect_shape(name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() == want {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        op: OP,
        lhs: t.shape().to_vec(),
        rhs: want.to_vec(),
        hint: format!(
            "argument `{name}` has the first shape, the others imply the second (x: (b, L, h, p), B: (b, L, g, n))"
        ),
    })
}

fn rank4(name: &str, t: &Tensor, layout: &str) -> Result<[usize; 4]> {
    match *t.shape() {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::Rank { op: OP, shape: t.shape().to_vec(), expected: format!("{name} of shape {layout}") }),
    }
}

impl SsdArgs<'_> {
    /// Check every shape against `x: (b, L, h, p)` and `B: (b, L, g, n)`.
    fn dims(&self) -> Result<SsdDims> {
        let [batch, len, heads, headdim] = rank4("x", self.x, "(b, L, h, p)")?;
        let [_, _, groups, state] = rank4("B", self.b, "(b, L, g, n)")?;
        expect_shape("dt", self.dt, &[batch, len, heads])?;
        expect_shape("A", self.a, &[heads])?;
        expect_shape("B", self.b, &[batch, len, groups, state])?;
        expect_shape("C", self.c, &[batch, len, groups, state])?;
        expect_shape("D", self.d, &[heads])?;
        expect_shape("dt_bias", self.dt_bias, &[heads])?;
        if let Some(z) = self.z {
            expect_shape("z", z, &[batch, len, heads, headdim])?;
        }
        if let Some(s) = self.initial_state {
            expect_shape("initial_state", s, &[batch, heads, headdim, state])?;
        }
        if groups == 0 || heads % groups != 0 {
            return invalid(OP, format!("the groups of B and C ({groups}) must divide the heads of x ({heads})"));
        }
        if self.chunk == 0 {
            return invalid(OP, "chunk must be at least 1 time step");
        }
        for t in self.tensors() {
            super::check_pair(OP, self.x, t)?;
        }
        // A chunk longer than the sequence is the whole sequence.
        let chunk = self.chunk.min(len.max(1));
        Ok(SsdDims { batch, len, heads, headdim, groups, state, chunk })
    }

    /// x, dt, A, B, C, D, dt_bias, then z and initial_state if present: the op's input order.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![self.x, self.dt, self.a, self.b, self.c, self.d, self.dt_bias];
        v.extend(self.z);
        v.extend(self.initial_state);
        v
    }
}

/// The sizes and which optional inputs are present: what the kernels need besides tensors.
#[derive(Clone, Copy, Debug)]
struct SsdConfig {
    dims: SsdDims,
    has_z: bool,
    has_init: bool,
}

impl SsdConfig {
    /// The first inputs `[x, dt, A, B, C, D, dt_bias, (z), (initial_state)]` as the kernels'.
    fn inputs<'a, T>(&self, x: &[CpuIn<'a, T>]) -> SsdInputs<'a, T> {
        let mut rest = x[7..].iter();
        SsdInputs {
            x: x[0].elems(),
            dt: x[1].elems(),
            a: x[2].elems(),
            bm: x[3].elems(),
            cm: x[4].elems(),
            d_skip: x[5].elems(),
            dt_bias: x[6].elems(),
            z: if self.has_z { rest.next().map(|t| t.elems()) } else { None },
            init: if self.has_init { rest.next().map(|t| t.elems()) } else { None },
        }
    }

    /// How many of the kernels' inputs are scan inputs (the rest are backward-only).
    fn n_inputs(&self) -> usize {
        7 + self.has_z as usize + self.has_init as usize
    }

    /// Elements of `out` and of `last_state`, which the forward writes into one buffer.
    fn out_sizes(&self) -> (usize, usize) {
        let d = self.dims;
        (d.batch * d.len * d.heads * d.headdim, d.batch * d.heads * d.headdim * d.state)
    }
}

/// `[x, dt, A, B, C, D, dt_bias, (z), (initial_state)]`, contiguous -> `(packed,
/// chunk_states)`, where `packed` is `out` then `last_state`, flat (one buffer, so that one
/// autograd node owns both outputs).
struct SsdForwardKernel(SsdConfig);

impl Kernel for SsdForwardKernel {
    const NAME: &'static str = OP;
    type Out = (Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor)> {
        let d = self.0.dims;
        let f = cpu::ssd_forward(d, &self.0.inputs(x));
        let mut packed = f.out;
        packed.extend(f.last_state);
        let n = packed.len();
        Ok((
            Tensor::from_vec(packed, &[n])?,
            Tensor::from_vec(f.chunk_states, &[d.batch, d.n_chunks(), d.heads, d.headdim, d.state])?,
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        cuda::ssd_forward(self.0.dims, x, self.0.has_z, self.0.has_init)
    }
}

/// The forward's inputs, then `chunk_states`, `dout` and `dlast`, contiguous -> one
/// gradient per scan input, in input order.
struct SsdBackwardKernel(SsdConfig);

impl Kernel for SsdBackwardKernel {
    const NAME: &'static str = OP;
    type Out = Vec<Tensor>;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Vec<Tensor>> {
        let n = self.0.n_inputs();
        let (states, dout, dlast) = (x[n].elems(), x[n + 1].elems(), x[n + 2].elems());
        let g = cpu_backward::ssd_backward(self.0.dims, &self.0.inputs(x), states, dout, dlast);
        let mut grads = vec![g.dx, g.ddt, g.da, g.dbm, g.dcm, g.dd_skip, g.ddt_bias];
        grads.extend(g.dz);
        grads.extend(g.dinit);
        grads.into_iter().zip(x).map(|(g, t)| Tensor::from_vec(g, &t.layout.shape)).collect()
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (c, n) = (self.0, self.0.n_inputs());
        cuda::ssd_backward(c.dims, &x[..n], x[n], x[n + 1], x[n + 2], c.has_z, c.has_init)
    }
}

/// Run the fused SSD scan.
pub fn ssd(args: &SsdArgs) -> Result<SsdOut> {
    let dims = args.dims()?;
    let config = SsdConfig { dims, has_z: args.z.is_some(), has_init: args.initial_state.is_some() };
    let inputs: Vec<Tensor> = args.tensors().into_iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let input_refs: Vec<&Tensor> = inputs.iter().collect();
    let (packed, states) = run(&SsdForwardKernel(config), &input_refs)?;
    let (n_out, n_last) = config.out_sizes();
    let mut saved = input_refs.clone();
    saved.push(&states);
    let packed = record(OP, packed, &input_refs, &saved, move |g, s, _| {
        let g = g.contiguous()?;
        let (dout, dlast) = (g.narrow(0, 0, n_out)?, g.narrow(0, n_out, n_last)?);
        let mut ins: Vec<&Tensor> = s.iter().collect(); // inputs, then chunk_states
        ins.extend([&dout, &dlast]);
        Ok(run(&SsdBackwardKernel(config), &ins)?.into_iter().map(Some).collect())
    });
    let parts = packed.split(&[n_out, n_last], 0)?;
    let SsdDims { batch, len, heads, headdim, state, .. } = dims;
    Ok(SsdOut {
        out: parts[0].reshape(&[batch, len, heads, headdim])?,
        last_state: parts[1].reshape(&[batch, heads, headdim, state])?,
    })
}

/// The same scan written with plain engine ops, one time step at a time. It stores every
/// step's `(b, h, p, n)` state for backward, which is exactly what the fused op avoids;
/// tests compare the two.
pub fn ssd_composed(args: &SsdArgs) -> Result<SsdOut> {
    let SsdDims { batch: b, len, heads: h, headdim: p, groups: g, state: n, .. } = args.dims()?;
    let dt = args.dt.add(&args.dt_bias.reshape(&[1, 1, h])?)?.softplus()?; // (b, L, h)
    let decay = dt.mul(&args.a.reshape(&[1, 1, h])?)?.exp()?;
    // B and C per head: group hh / (h / g).
    let per_head = |m: &Tensor| m.reshape(&[b, len, g, 1, n])?.broadcast_as(&[b, len, g, h / g, n])?.reshape(&[b, len, h, n]);
    let (bh, ch) = (per_head(args.b)?, per_head(args.c)?);
    let step = |m: &Tensor, t: usize, shape: &[usize]| m.narrow(1, t, 1)?.reshape(shape);
    let mut s = match args.initial_state {
        Some(s) => s.clone(),
        None => Tensor::zeros(&[b, h, p, n], args.x.dtype(), args.x.device())?,
    };
    let mut ys = Vec::with_capacity(len);
    for t in 0..len {
        let drive = step(&dt, t, &[b, h, 1, 1])?.mul(&step(args.x, t, &[b, h, p, 1])?)?.mul(&step(&bh, t, &[b, h, 1, n])?)?;
        s = step(&decay, t, &[b, h, 1, 1])?.mul(&s)?.add(&drive)?; // (b, h, p, n)
        ys.push(s.mul(&step(&ch, t, &[b, h, 1, n])?)?.sum(&[3], false)?.reshape(&[b, 1, h, p])?);
    }
    let mut y = Tensor::concat(&ys.iter().collect::<Vec<_>>(), 1)?.add(&args.x.mul(&args.d.reshape(&[1, 1, h, 1])?)?)?;
    if let Some(z) = args.z {
        y = y.mul(&z.silu()?)?;
    }
    Ok(SsdOut { out: y, last_state: s })
}

/// Sizes of an SSD problem for tests: (batch, len, heads, headdim, groups, state).
pub type SsdShape = (usize, usize, usize, usize, usize, usize);

/// Random SSD inputs `[x, dt, A < 0, B, C, D, dt_bias, z, initial_state]` of `dtype` for tests.
pub fn ssd_inputs((b, l, h, p, g, n): SsdShape, dtype: DType, rng: &mut Rng) -> Vec<Tensor> {
    let mut r = |shape: &[usize], lo: f64, hi: f64| Tensor::rand_uniform(shape, lo, hi, dtype, rng);
    vec![
        r(&[b, l, h, p], -1.0, 1.0),
        r(&[b, l, h], -2.0, 1.0),
        r(&[h], -1.5, -0.2),
        r(&[b, l, g, n], -1.0, 1.0),
        r(&[b, l, g, n], -1.0, 1.0),
        r(&[h], -1.0, 1.0),
        r(&[h], -1.0, 0.5),
        r(&[b, l, h, p], -2.0, 2.0),
        r(&[b, h, p, n], -1.0, 1.0),
    ]
}

/// SSD arguments over [`ssd_inputs`], with the gate z and the initial state each on or off.
pub fn ssd_args(x: &[Tensor], (gate, init): (bool, bool), chunk: usize) -> SsdArgs<'_> {
    SsdArgs {
        x: &x[0],
        dt: &x[1],
        a: &x[2],
        b: &x[3],
        c: &x[4],
        d: &x[5],
        dt_bias: &x[6],
        z: gate.then(|| &x[7]),
        initial_state: init.then(|| &x[8]),
        chunk,
    }
}

/// Both outputs as one flat tensor (`out` then `last_state`), so that one gradient check
/// covers both.
pub fn ssd_both(o: SsdOut) -> Result<Tensor> {
    let (a, b) = (o.out.reshape(&[o.out.numel()])?, o.last_state.reshape(&[o.last_state.numel()])?);
    Tensor::concat(&[&a, &b], 0)
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["ssd"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    ssd_all_options: tol TIGHT, exercises ["ssd"],
        // L = 11 with chunk 4: the last chunk is short; 2 groups of 2 heads; z and an
        // initial state; the gradient of last_state too.
        inputs |r| ssd_inputs((2, 11, 4, 2, 2, 3), DType::F64, r),
        f |x| ssd_both(ssd(&ssd_args(x, (true, true), 4))?);
    ssd_headdim_one_one_group: tol TIGHT, exercises ["ssd"],
        // headdim 1, 3 heads reading one group, chunk 3 dividing L = 9, no z, no initial state
        inputs |r| ssd_inputs((1, 9, 3, 1, 1, 2), DType::F64, r)[..7].to_vec(),
        f |x| ssd_both(ssd(&ssd_args(x, (false, false), 3))?);
    ssd_long_sequence_out_only: tol TIGHT, exercises ["ssd"],
        // L = 37 with chunk 8 (5 chunks, the last of 5 steps), gradient of out only
        inputs |r| ssd_inputs((1, 37, 2, 3, 1, 4), DType::F64, r)[..8].to_vec(),
        f |x| Ok(ssd(&ssd_args(x, (true, false), 8))?.out);
    ssd_chunk_of_one_and_initial_state: tol TIGHT, exercises ["ssd"],
        inputs |r| ssd_inputs((2, 5, 2, 2, 2, 2), DType::F64, r),
        f |x| ssd_both(ssd(&ssd_args(x, (false, true), 1))?);
    ssd_one_chunk_strided_b_c: tol TIGHT, exercises ["ssd", "narrow"],
        // B and C arrive as views of one (b, L, 2g, n) tensor, as split from xBC in the block;
        // chunk 64 > L = 6 is one chunk
        inputs |r| {
            let mut v = ssd_inputs((2, 6, 4, 2, 2, 3), DType::F64, r);
            v[3] = Tensor::concat(&[&v[3], &v[4]], 2).unwrap();
            v.remove(4);
            v
        },
        f |x| {
            let (b, c) = (strided(x[3].narrow(2, 0, 2)?)?, strided(x[3].narrow(2, 2, 2)?)?);
            let a = SsdArgs { x: &x[0], dt: &x[1], a: &x[2], b: &b, c: &c, d: &x[4], dt_bias: &x[5],
                z: Some(&x[6]), initial_state: Some(&x[7]), chunk: 64 };
            ssd_both(ssd(&a)?)
        };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor, tol: f64) {
        assert_eq!(a.shape(), b.shape());
        let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max);
        assert!(worst < tol, "worst relative error {worst}");
    }

    /// Fused and composed agree on both outputs and on every gradient (of out and of
    /// last_state), for chunks that do and do not divide L, with and without the options.
    #[test]
    fn fused_matches_composed_forward_and_backward() {
        let shape = (2, 13, 4, 3, 2, 5);
        let x: Vec<Tensor> =
            ssd_inputs(shape, DType::F64, &mut Rng::new(1)).into_iter().map(|t| t.requires_grad()).collect();
        let mut rng = Rng::new(9);
        let w_out = Tensor::rand_uniform(&[2, 13, 4, 3], -1.0, 1.0, DType::F64, &mut rng);
        let w_last = Tensor::rand_uniform(&[2, 4, 3, 5], -1.0, 1.0, DType::F64, &mut rng);
        for (options, chunk) in [((true, true), 4), ((false, false), 13), ((true, false), 1), ((false, true), 5)] {
            let fused = ssd(&ssd_args(&x, options, chunk)).unwrap();
            let composed = ssd_composed(&ssd_args(&x, options, chunk)).unwrap();
            close(&fused.out, &composed.out, 1e-12);
            close(&fused.last_state, &composed.last_state, 1e-12);
            let mut grads = Vec::new();
            for o in [&fused, &composed] {
                x.iter().for_each(|t| t.zero_grad());
                let loss = o.out.mul(&w_out).unwrap().sum_all().unwrap();
                let loss = loss.add(&o.last_state.mul(&w_last).unwrap().sum_all().unwrap()).unwrap();
                loss.backward().unwrap();
                grads.push(x.iter().map(|t| t.grad()).collect::<Vec<_>>());
            }
            for (i, (g1, g2)) in grads[0].iter().zip(&grads[1]).enumerate() {
                match (g1, g2) {
                    (Some(a), Some(b)) => close(a, b, 1e-11),
                    (None, None) => {}
                    _ => panic!("input {i}: a gradient on one side only ({options:?}, chunk {chunk})"),
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = ssd_inputs((2, 5, 4, 3, 2, 2), DType::F32, &mut Rng::new(3));
        let msg = |a: &SsdArgs| ssd(a).err().expect("an error").to_string();
        let e = msg(&SsdArgs { a: &x[5].reshape(&[4, 1]).unwrap(), ..ssd_args(&x, (true, true), 2) });
        assert!(e.contains("ssd") && e.contains("`A`"), "{e}");
        let b3 = ssd_inputs((2, 5, 4, 3, 3, 2), DType::F32, &mut Rng::new(4));
        let e = msg(&SsdArgs { b: &b3[3], c: &b3[4], ..ssd_args(&x, (true, true), 2) });
        assert!(e.contains("must divide"), "{e}");
        let e = msg(&SsdArgs { chunk: 0, ..ssd_args(&x, (true, true), 2) });
        assert!(e.contains("chunk"), "{e}");
        let e = msg(&SsdArgs { x: &x[1], ..ssd_args(&x, (false, false), 2) });
        assert!(e.contains("(b, L, h, p)"), "{e}");
        let e = msg(&SsdArgs { initial_state: Some(&x[0]), ..ssd_args(&x, (false, false), 2) });
        assert!(e.contains("initial_state"), "{e}");
        let f64s = x[6].to_dtype(DType::F64).unwrap();
        assert!(ssd(&SsdArgs { dt_bias: &f64s, ..ssd_args(&x, (false, false), 2) }).is_err());
    }
}
