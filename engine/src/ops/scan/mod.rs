//! The selective scan as one fused, differentiable op — and the same computation
//! composed from plain ops, which the tests use as its reference.
//!
//! The math and the recomputation scheme are in `cpu.rs` and docs/SCAN.md. The
//! fused op saves only its (contiguous) inputs and the chunk-entry states
//! `(B, D, L/chunk, N)`; the composed version stores every step's `(B, D, N)` state.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
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

/// Which optional inputs are present and whether delta goes through softplus: what the
/// kernels need besides the tensors.
#[derive(Clone, Copy)]
struct ScanConfig {
    dims: ScanDims,
    has_z: bool,
    has_bias: bool,
    softplus: bool,
}

impl ScanConfig {
    /// The first inputs `[u, delta, A, B, C, D, (z), (delta_bias)]` as the kernels' inputs.
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
        }
    }

    /// How many of the inputs are scan inputs (the rest are backward-only).
    fn n_inputs(&self) -> usize {
        6 + self.has_z as usize + self.has_bias as usize
    }
}

/// `[u, delta, A, B, C, D, (z), (delta_bias)]`, contiguous -> `(out, last_state, chunk_states)`.
struct ScanForwardKernel(ScanConfig);

impl Kernel for ScanForwardKernel {
    const NAME: &'static str = "selective_scan";
    type Out = (Tensor, Tensor, Tensor);

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<(Tensor, Tensor, Tensor)> {
        let d = self.0.dims;
        let f = cpu::selective_scan_forward(d, &self.0.inputs(x));
        Ok((
            Tensor::from_vec(f.out, &[d.batch, d.dim, d.len])?,
            Tensor::from_vec(f.last_state, &[d.batch, d.dim, d.state])?,
            Tensor::from_vec(f.chunk_states, &[d.batch, d.dim, d.n_chunks(), d.state])?,
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        let c = self.0;
        cuda::scan_forward(c.dims, x, c.has_z, c.has_bias, c.softplus)
    }
}

/// The forward's inputs, then `chunk_states` and `dout`, contiguous -> one gradient per
/// scan input, in input order.
struct ScanBackwardKernel(ScanConfig);

impl Kernel for ScanBackwardKernel {
    const NAME: &'static str = "selective_scan";
    type Out = Vec<Tensor>;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Vec<Tensor>> {
        let n = self.0.n_inputs();
        let g = cpu::selective_scan_backward(self.0.dims, &self.0.inputs(x), x[n].elems(), x[n + 1].elems());
        let mut grads = vec![g.du, g.ddelta, g.da, g.dbm, g.dcm, g.dd_skip];
        grads.extend(g.dz);
        grads.extend(g.ddelta_bias);
        grads.into_iter().zip(x).map(|(g, t)| Tensor::from_vec(g, &t.layout.shape)).collect()
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (c, n) = (self.0, self.0.n_inputs());
        cuda::scan_backward(c.dims, &x[..n], x[n], x[n + 1], c.has_z, c.has_bias, c.softplus)
    }
}

/// Run the fused selective scan.
pub fn selective_scan(args: &ScanArgs) -> Result<ScanOut> {
    let dims = args.dims()?;
    let config =
        ScanConfig { dims, has_z: args.z.is_some(), has_bias: args.delta_bias.is_some(), softplus: args.softplus };
    let inputs: Vec<Tensor> = args.tensors().into_iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let input_refs: Vec<&Tensor> = inputs.iter().collect();
    let (out, last_state, states) = run(&ScanForwardKernel(config), &input_refs)?;
    let mut saved = input_refs.clone();
    saved.push(&states);
    let out = record("selective_scan", out, &input_refs, &saved, move |g, s, _| {
        let dout = g.contiguous()?;
        let mut ins: Vec<&Tensor> = s.iter().collect(); // inputs, then chunk_states
        ins.push(&dout);
        Ok(run(&ScanBackwardKernel(config), &ins)?.into_iter().map(Some).collect())
    });
    Ok(ScanOut { out, last_state })
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
        chunk,
    }
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
