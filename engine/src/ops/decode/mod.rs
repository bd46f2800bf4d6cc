//! Decoding a Mamba-1 or Mamba-2 LM one token at a time in fused kernels (the math is in
//! `cpu.rs`; Mamba-2's layer, three kernels, in `mamba2.rs`):
//! [`decode_mamba1`] runs one layer (four kernels on the GPU: norm + in_proj + conv, x_proj,
//! the SSM update, out_proj + residual; x_proj inside the SSM update's for small layers), the
//! first layer starting the residual stream from the token ids ([`Embed`]) in its first
//! kernel, and [`decode_head`] makes the logits. Every call writes into buffers the
//! caller allocated once, so that a decoder can replay the same launches token after token
//! (and capture them in a CUDA graph). Not differentiable: it records no graph.
//!
//! The generic step (`Mamba1::step`, `Mamba2::step` in the model) does the same math in ~25-30
//! tensor ops a layer; the model's tests check the two against each other and against the
//! parallel scan.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod mamba2;
mod token;

pub use cpu::{Dims, SsdDims};
pub use mamba2::{decode_mamba2, Mamba2Buffers, Mamba2Weights};
pub use token::{decode_token, TokenIo, TokenKernel, TokenWeights};

use crate::{
    dtype::{DType, Elem, Scalar},
    error::{invalid, Error, Result},
    storage::Storage,
    Device, Tensor,
};
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

const OP: &str = "decode";

/// One Mamba-1 layer's weights, as the model holds them (any shape with the right number of
/// elements, contiguous): the block's norm and the mixer's parameters, with A = -exp(A_log)
/// computed once by the caller.
pub struct Mamba1Weights<'a> {
    pub norm: &'a Tensor,     // (M)
    pub in_proj: &'a Tensor,  // (2D, M)
    pub conv_w: &'a Tensor,   // (D, 1, K)
    pub conv_b: &'a Tensor,   // (D)
    pub x_proj: &'a Tensor,   // (R + 2N, D)
    pub dt_w: &'a Tensor,     // (D, R)
    pub dt_b: &'a Tensor,     // (D)
    pub a: &'a Tensor,        // (D, N)
    pub d_skip: &'a Tensor,   // (D)
    pub out_proj: &'a Tensor, // (M, D)
}

/// One layer's recurrent state and the scratch its kernels pass along, each a buffer of its own.
pub struct Mamba1Buffers {
    /// The last K conv inputs, oldest first: (B, D, K), as `Mamba1State::conv`.
    pub conv_state: Tensor,
    /// (B, D, N), as `Mamba1State::ssm`.
    pub ssm_state: Tensor,
    pub xc: Tensor,    // (B, D)
    pub z: Tensor,     // (B, D)
    pub xdbl: Tensor,  // (B, R + 2N): x_proj's output
    pub y: Tensor,     // (B, D)
}

impl Mamba1Buffers {
    /// The recurrent state: [conv_state, ssm_state] (what a generic step's state loads into).
    pub fn states(&self) -> [&Tensor; 2] {
        [&self.conv_state, &self.ssm_state]
    }

    /// Zeroed buffers for `dims`.
    pub fn zeros(dims: Dims, dtype: DType, device: Device) -> Result<Mamba1Buffers> {
        let Dims { batch, d, d_state: n, d_conv: k, .. } = dims;
        let z = |shape: &[usize]| Tensor::zeros(shape, dtype, device);
        Ok(Mamba1Buffers {
            conv_state: z(&[batch, d, k])?,
            ssm_state: z(&[batch, d, n])?,
            xc: z(&[batch, d])?,
            z: z(&[batch, d])?,
            xdbl: z(&[batch, dims.xdim()])?,
            y: z(&[batch, d])?,
        })
    }
}

/// The token ids (B, stored as floats) and the embedding (V, M) whose rows they pick, for the
/// first layer: on the GPU its first kernel gathers them rather than a launch of their own.
#[derive(Clone, Copy)]
pub struct Embed<'a> {
    pub embedding: &'a Tensor,
    pub ids: &'a Tensor,
}

/// One layer for every sequence: `residual` (B, M) += Mixer(RMSNorm(residual)), updating the
/// conv and SSM states in `bufs`; with `embed` (the first layer) `residual` is first set to
/// the embedding's rows at the ids (an id outside [0, V) is clamped).
pub fn decode_mamba1(
    dims: Dims,
    residual: &Tensor,
    embed: Option<Embed<'_>>,
    w: &Mamba1Weights<'_>,
    bufs: &Mamba1Buffers,
    eps: f64,
) -> Result<()> {
    if let Some(why) = dims.unsupported() {
        return invalid(OP, why);
    }
    let Dims { batch, m, d, d_state: n, dt_rank: r, d_conv: k } = dims;
    let written = [
        (residual, batch * m),
        (&bufs.conv_state, batch * d * k),
        (&bufs.ssm_state, batch * d * n),
        (&bufs.xc, batch * d),
        (&bufs.z, batch * d),
        (&bufs.xdbl, batch * dims.xdim()),
        (&bufs.y, batch * d),
    ];
    let mut read = vec![
        (w.norm, m),
        (w.in_proj, 2 * d * m),
        (w.conv_w, d * k),
        (w.conv_b, d),
        (w.x_proj, dims.xdim() * d),
        (w.dt_w, d * r),
        (w.dt_b, d),
        (w.a, d * n),
        (w.d_skip, d),
        (w.out_proj, m * d),
    ];
    read.extend(embed_args(embed, m, batch)?);
    check(&written, &read)?;
    match residual.device() {
        Device::Cpu => match residual.dtype() {
            DType::F32 => layer_cpu::<f32>(dims, &written, &read, eps),
            DType::F64 => layer_cpu::<f64>(dims, &written, &read, eps),
            DType::BF16 => Err(bf16_refused()),
        },
        #[cfg(feature = "cuda")]
        Device::Cuda => cuda::decode_mamba1(dims, &written, &read, eps),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(crate::dispatch::no_cuda(OP)),
    }
}

/// `embed`'s tensors and their sizes, after checking that they are rows of d_model `m` and
/// `batch` ids (none without it).
fn embed_args(embed: Option<Embed<'_>>, m: usize, batch: usize) -> Result<Vec<(&Tensor, usize)>> {
    let Some(Embed { embedding, ids }) = embed else { return Ok(vec![]) };
    let rows = embedding.numel();
    if rows == 0 || !rows.is_multiple_of(m) || ids.numel() != batch {
        let (e, i) = (embedding.shape(), ids.shape());
        let why = format!("the embedding must be rows of d_model {m} and the ids {batch}: got {e:?} and {i:?}");
        return invalid(OP, why);
    }
    Ok(vec![(embedding, rows), (ids, batch)])
}

/// What follows a Mamba-2 layer's eight weights in `read` (the same on both devices): the
/// gate's norm weight if `gated`, then the embedding and the ids if there are two more.
fn gate_and_gather<T>(more: &[T], gated: bool) -> (Option<&T>, Option<[&T; 2]>) {
    let (gate, gather) = if gated { (more.first(), more.get(1..).unwrap_or(&[])) } else { (None, more) };
    (gate, match gather {
        [embedding, ids] => Some([embedding, ids]),
        _ => None,
    })
}

/// logits (B, V) = embedding (V, M) RMSNorm(residual (B, M), norm_f).
pub fn decode_head(logits: &Tensor, residual: &Tensor, norm_f: &Tensor, embedding: &Tensor, eps: f64) -> Result<()> {
    let m = norm_f.numel();
    let (r, e) = (residual.numel(), embedding.numel());
    if m == 0 || r == 0 || e == 0 || !r.is_multiple_of(m) || !e.is_multiple_of(m) {
        let why = format!(
            "decode_head needs rows of norm_f's {m} values: residual has {}, the embedding {}",
            residual.numel(),
            embedding.numel()
        );
        return invalid(OP, why);
    }
    let (batch, vocab) = (residual.numel() / m, embedding.numel() / m);
    check(&[(logits, batch * vocab)], &[(residual, batch * m), (norm_f, m), (embedding, vocab * m)])?;
    let (mut gw, gr) = lock(&[logits], &[residual, norm_f, embedding]);
    let ts = [logits, residual, norm_f, embedding];
    match (logits.device(), logits.dtype()) {
        (Device::Cpu, DType::F32) => head_cpu::<f32>(&mut gw, &gr, ts, eps),
        (Device::Cpu, DType::F64) => head_cpu::<f64>(&mut gw, &gr, ts, eps),
        (Device::Cpu, DType::BF16) => Err(bf16_refused()),
        #[cfg(feature = "cuda")]
        (Device::Cuda, _) => cuda::decode_head(&gw[0], &gr, ts, eps),
        #[cfg(not(feature = "cuda"))]
        (Device::Cuda, _) => Err(crate::dispatch::no_cuda(OP)),
    }
}

fn bf16_refused() -> Error {
    Error::Unsupported { op: OP, device: Device::Cpu, dtype: DType::BF16 }
}

/// Every tensor on one device with one dtype, contiguous and of its expected size; every
/// written one a buffer of its own (no other tensor here shares it).
fn check(written: &[(&Tensor, usize)], read: &[(&Tensor, usize)]) -> Result<()> {
    let first = written[0].0;
    for (i, &(t, want)) in written.iter().chain(read).enumerate() {
        super::check_pair(OP, first, t)?;
        if t.numel() != want || !t.is_contiguous() {
            let why = format!("argument {i} has shape {:?} (contiguous: {}), expected {want} contiguous elements", t.shape(), t.is_contiguous());
            return invalid(OP, why);
        }
        let others = written.iter().chain(read).enumerate().filter(|&(j, _)| j != i);
        if i < written.len() && others.clone().any(|(_, (o, _))| o.same_storage(t)) {
            return invalid(OP, format!("written argument {i} shares its buffer with another argument"));
        }
    }
    Ok(())
}

type Guards<'a> = (Vec<RwLockWriteGuard<'a, Storage>>, Vec<RwLockReadGuard<'a, Storage>>);

/// Write locks on `written`, read locks on `read` (distinct buffers: `check` saw to it).
fn lock<'a>(written: &[&'a Tensor], read: &[&'a Tensor]) -> Guards<'a> {
    let w = written.iter().map(|t| t.storage.write().unwrap_or_else(|e| e.into_inner())).collect();
    (w, read.iter().map(|t| t.read()).collect())
}

/// The elements of contiguous `t` in its locked CPU storage.
fn elems<'a, T: Scalar>(s: &'a Storage, t: &Tensor) -> Result<&'a [T]> {
    let data = T::slice(s.as_cpu(OP)?).ok_or(Error::DTypeMismatch { op: OP, lhs: t.dtype(), rhs: T::DTYPE })?;
    Ok(&data[t.layout.offset..t.layout.offset + t.numel()])
}

fn elems_mut<'a, T: Scalar>(s: &'a mut Storage, t: &Tensor) -> Result<&'a mut [T]> {
    let data = T::slice_mut(s.as_cpu_mut(OP)?).ok_or(Error::DTypeMismatch { op: OP, lhs: t.dtype(), rhs: T::DTYPE })?;
    Ok(&mut data[t.layout.offset..t.layout.offset + t.numel()])
}

/// `f` on the CPU elements of `written` (mutable) and `read`, locked for the call (the sizes are
/// the ones `check` saw).
fn with_elems<T: Scalar, R>(
    written: &[(&Tensor, usize)],
    read: &[(&Tensor, usize)],
    f: impl FnOnce(&mut [&mut [T]], &[&[T]]) -> R,
) -> Result<R> {
    let wt: Vec<&Tensor> = written.iter().map(|p| p.0).collect();
    let rt: Vec<&Tensor> = read.iter().map(|p| p.0).collect();
    let (mut gw, gr) = lock(&wt, &rt);
    let mut ws = Vec::with_capacity(wt.len());
    for (g, t) in gw.iter_mut().zip(&wt) {
        ws.push(elems_mut::<T>(g, t)?);
    }
    let rs = gr.iter().zip(&rt).map(|(g, t)| elems::<T>(g, t)).collect::<Result<Vec<_>>>()?;
    Ok(f(&mut ws, &rs))
}

fn head_cpu<T: Elem>(
    gw: &mut [RwLockWriteGuard<'_, Storage>],
    gr: &[RwLockReadGuard<'_, Storage>],
    [logits, residual, norm_f, embedding]: [&Tensor; 4],
    eps: f64,
) -> Result<()> {
    let (r, nf, emb): (&[T], &[T], &[T]) = (elems(&gr[0], residual)?, elems(&gr[1], norm_f)?, elems(&gr[2], embedding)?);
    let batch = residual.numel() / norm_f.numel();
    cpu::decode_rows(elems_mut(&mut gw[0], logits)?, r, Some(nf), emb, batch, false, eps);
    Ok(())
}

/// `written` and `read` in the order of [`decode_mamba1`]: read has the ten weights, then the
/// embedding and the ids for the first layer.
fn layer_cpu<T: Elem>(dims: Dims, written: &[(&Tensor, usize); 7], read: &[(&Tensor, usize)], eps: f64) -> Result<()> {
    with_elems::<T, _>(written, read, |ws, rs| {
        let [residual, conv_state, ssm_state, xc, z, xdbl, y] = ws else { unreachable!("seven buffers") };
        let [norm_w, in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, a, d_skip, out_proj, ref gather @ ..] = rs[..] else {
            unreachable!("ten weights")
        };
        let gather = match *gather {
            [embedding, ids] => Some(cpu::Embed { embedding, ids }),
            _ => None,
        };
        let batch = dims.batch;
        let (out, w) = (cpu::InOut { xc, rest: z, conv_state }, cpu::InWeights { norm_w, in_proj, conv_w, conv_b });
        cpu::decode_in(dims.in_layout(), out, residual, gather, w, eps);
        cpu::decode_rows(xdbl, xc, None, x_proj, batch, false, eps);
        let out = cpu::SsmOut { y, ssm_state };
        cpu::decode_ssm(dims, out, xdbl, xc, z, cpu::SsmWeights { dt_w, dt_b, a, d_skip });
        cpu::decode_rows(residual, y, None, out_proj, batch, true, eps);
    })
}

/// Not differentiable: no op names, no gradient-check cases (the model's tests check it
/// against the generic step and the parallel scan; the GPU check against these twins).
pub const OPS: &[&str] = &[];

super::case::cases! {}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Dims {
        Dims { batch: 2, m: 8, d: 16, d_state: 4, dt_rank: 2, d_conv: 3 }
    }

    fn weights(dims: Dims) -> Vec<Tensor> {
        let Dims { m, d, d_state: n, dt_rank: r, d_conv: k, .. } = dims;
        let shapes: [&[usize]; 10] =
            [&[m], &[2 * d, m], &[d, 1, k], &[d], &[r + 2 * n, d], &[d, r], &[d], &[d, n], &[d], &[m, d]];
        shapes.iter().map(|s| Tensor::full(s, 0.1, DType::F64, Device::Cpu).unwrap()).collect()
    }

    fn view(w: &[Tensor]) -> Mamba1Weights<'_> {
        let [norm, in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, a, d_skip, out_proj] = w else { unreachable!() };
        Mamba1Weights { norm, in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, a, d_skip, out_proj }
    }

    /// Bad arguments are errors that say what was wrong, never panics.
    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let dims = dims();
        let w = weights(dims);
        let bufs = Mamba1Buffers::zeros(dims, DType::F64, Device::Cpu).unwrap();
        let r = Tensor::zeros(&[2, 8], DType::F64, Device::Cpu).unwrap();
        decode_mamba1(dims, &r, None, &view(&w), &bufs, 1e-5).unwrap();
        let err = |e: Error| e.to_string();
        // a weight of the wrong size, the residual shared with a state, unsupported sizes
        let mut short = weights(dims);
        short[1] = Tensor::zeros(&[3], DType::F64, Device::Cpu).unwrap();
        assert!(err(decode_mamba1(dims, &r, None, &view(&short), &bufs, 1e-5).unwrap_err()).contains("argument 8"));
        let inside_xc = bufs.xc.reshape(&[32]).unwrap().narrow(0, 0, 16).unwrap().reshape(&[2, 8]).unwrap();
        let e = decode_mamba1(dims, &inside_xc, None, &view(&w), &bufs, 1e-5).unwrap_err();
        assert!(err(e).contains("written argument 0 shares its buffer"));
        let e = decode_mamba1(Dims { d: 2, ..dims }, &r, None, &view(&w), &bufs, 1e-5).unwrap_err();
        assert!(err(e).contains("d_inner (2) of 16"));
        // the first layer's embedding: empty, not rows of d_model, too few ids, ids of another dtype
        let zeros = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, Device::Cpu).unwrap();
        let (emb, ids) = (zeros(&[4, 8], DType::F64), zeros(&[2], DType::F64));
        let empty = zeros(&[0, 8], DType::F64);
        for (embedding, ids, want) in [
            (&empty, &ids, "rows of d_model 8 and the ids 2: got [0, 8] and [2]"),
            (&zeros(&[3, 5], DType::F64), &ids, "got [3, 5]"),
            (&emb, &zeros(&[3], DType::F64), "got [4, 8] and [3]"),
        ] {
            let e = decode_mamba1(dims, &r, Some(Embed { embedding, ids }), &view(&w), &bufs, 1e-5).unwrap_err();
            assert!(err(e).contains(want), "{want}");
        }
        let f32_ids = Some(Embed { embedding: &emb, ids: &zeros(&[2], DType::F32) });
        let e = decode_mamba1(dims, &r, f32_ids, &view(&w), &bufs, 1e-5).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { rhs: DType::F32, .. }), "{e}");
        // bf16, rows that do not divide
        let bf16 = |shape: &[usize]| zeros(shape, DType::BF16);
        let e = decode_head(&bf16(&[2, 4]), &bf16(&[2, 8]), &bf16(&[8]), &bf16(&[4, 8]), 1e-5).unwrap_err();
        assert!(matches!(e, Error::Unsupported { dtype: DType::BF16, .. }), "{e}");
        let logits = Tensor::zeros(&[2, 4], DType::F64, Device::Cpu).unwrap();
        let norm = Tensor::ones(&[3], DType::F64, Device::Cpu).unwrap();
        let emb = Tensor::zeros(&[4, 8], DType::F64, Device::Cpu).unwrap();
        assert!(err(decode_head(&logits, &r, &norm, &emb, 1e-5).unwrap_err()).contains("rows of norm_f's 3 values"));
        let (none, norm8) = (Tensor::zeros(&[2, 0], DType::F64, Device::Cpu).unwrap(), Tensor::ones(&[8], DType::F64, Device::Cpu).unwrap());
        assert!(err(decode_head(&none, &r, &norm8, &empty, 1e-5).unwrap_err()).contains("the embedding 0"));
        // sizes whose products overflow are refused, not wrapped
        let huge = Dims { d_state: usize::MAX / 2, ..dims };
        assert!(decode_mamba1(huge, &r, None, &view(&w), &bufs, 1e-5).is_err());
    }

    /// The first layer with the embedding is, bit for bit, the embedding's rows at the ids
    /// (clamped into the vocabulary) and then the layer.
    #[test]
    fn the_first_layer_starts_from_the_embedding() {
        let dims = dims();
        let mut rng = crate::Rng::new(3);
        let w: Vec<Tensor> =
            weights(dims).iter().map(|t| Tensor::randn(t.shape(), 0.0, 0.5, DType::F64, &mut rng)).collect();
        let embedding = Tensor::randn(&[5, 8], 0.0, 1.0, DType::F64, &mut rng);
        let ids = Tensor::from_f64(&[7.0, -2.0], &[2], DType::F64).unwrap(); // rows 4 and 0
        let folded = Mamba1Buffers::zeros(dims, DType::F64, Device::Cpu).unwrap();
        let apart = Mamba1Buffers::zeros(dims, DType::F64, Device::Cpu).unwrap();
        let r_folded = Tensor::full(&[2, 8], f64::NAN, DType::F64, Device::Cpu).unwrap();
        let rows = embedding.to_vec_f64().unwrap();
        let start = [&rows[32..40], &rows[..8]].concat();
        let r_apart = Tensor::zeros(&[2, 8], DType::F64, Device::Cpu).unwrap();
        let embed = Some(Embed { embedding: &embedding, ids: &ids });
        let bits = |t: &Tensor| t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for _ in 0..2 {
            // the second token: the states have moved on, the residual is set again
            decode_mamba1(dims, &r_folded, embed, &view(&w), &folded, 1e-5).unwrap();
            r_apart.write_values(&start).unwrap();
            decode_mamba1(dims, &r_apart, None, &view(&w), &apart, 1e-5).unwrap();
            assert_eq!(bits(&r_folded), bits(&r_apart));
            for (a, b) in [(&folded.conv_state, &apart.conv_state), (&folded.ssm_state, &apart.ssm_state)] {
                assert_eq!(bits(a), bits(b));
            }
            assert_eq!(bits(&folded.y), bits(&apart.y));
        }
    }
}
