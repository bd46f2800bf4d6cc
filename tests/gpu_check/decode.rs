//! `cu/decode.cu` against `ops::decode::cpu`, through the engine's `ops::decode` on GPU and CPU
//! tensors: one layer (`decode_in_f32`, `decode_rows_f32` for x_proj and out_proj,
//! `decode_ssm_f32`) at a small awkward size (batch 3, d_model 40: a 10-float4 row), at
//! d_model 768 (batch 1, and batch 13: two batch tiles, the second partial) and at the edges
//! (d_conv 1 and 8, d_state 72, dt_rank 80, rows past a warp's prefetch), comparing every
//! buffer the kernels write (scratch poisoned with NaN first) and the updated states; the
//! first layer, whose `decode_in_f32` gathers the embedding's rows and writes them to the
//! residual (NaN before; ids past both ends of the vocabulary), also against the same layer
//! from those rows, bit for bit; `decode_rows_f32` as the head (a vocabulary not a multiple of
//! the rows a block owns). Then whole decoders: a Mamba-1 LM's `Decoder` on the GPU, kernels
//! launched one by one and replayed as a CUDA graph, against the CPU's for 24 tokens. Timed:
//! one layer at d_model 768, batch 1 (GB/s of the weights it must read). The Mamba-2 layer of
//! the same kernels: `mamba2.rs`.

mod mamba2;

use crate::{Check, Res, Row};
use mamba_engine::{
    ops::decode::{decode_head, decode_mamba1, Dims, Embed, Mamba1Buffers, Mamba1Weights},
    DType, Device, Rng, Tensor,
};
use mamba_model::{Decoder, Launch, MambaConfig, MambaLM};

/// Decode tolerance: ‖gpu - cpu‖ / ‖cpu‖ (f32 sums in other orders; the CPU twin sums in f64).
const DECODE_TOL: f64 = 1e-5;

fn rel(gpu: &Tensor, cpu: &Tensor) -> Res<f64> {
    let (g, c) = (gpu.to_vec_f64()?, cpu.to_vec_f64()?);
    if g.len() != c.len() || g.iter().any(|v| !v.is_finite()) {
        return Ok(f64::INFINITY);
    }
    let diff = g.iter().zip(&c).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    Ok(diff / c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30))
}

fn row(c: &mut Check, kernel: String, err: f64, us: f64, rate: f64) {
    c.rows.push(Row { kernel, err, ok: err <= DECODE_TOL, us, rate });
}

/// Random layer weights (CPU, f32) of the shapes `Mamba1Weights` names, in its order.
pub(crate) fn weights(dims: Dims, rng: &mut Rng) -> Vec<Tensor> {
    let Dims { m, d, d_state: n, dt_rank: r, d_conv: k, .. } = dims;
    let u = |shape: &[usize], lo: f64, hi: f64, rng: &mut Rng| Tensor::rand_uniform(shape, lo, hi, DType::F32, rng);
    let fan = |n: usize| 1.0 / (n as f64).sqrt();
    vec![
        u(&[m], 0.5, 1.5, rng),
        u(&[2 * d, m], -fan(m), fan(m), rng),
        u(&[d, 1, k], -0.5, 0.5, rng),
        u(&[d], -0.5, 0.5, rng),
        u(&[r + 2 * n, d], -fan(d), fan(d), rng),
        u(&[d, r], -fan(r), fan(r), rng),
        u(&[d], -4.0, -1.0, rng),
        u(&[d, n], -16.0, -1.0, rng),
        u(&[d], 0.5, 1.5, rng),
        u(&[m, d], -fan(d), fan(d), rng),
    ]
}

/// The ten tensors of [`weights`], in its order, as the twins' and kernels' layer weights.
pub(crate) fn as_weights(w: &[Tensor]) -> Mamba1Weights<'_> {
    Mamba1Weights {
        norm: &w[0],
        in_proj: &w[1],
        conv_w: &w[2],
        conv_b: &w[3],
        x_proj: &w[4],
        dt_w: &w[5],
        dt_b: &w[6],
        a: &w[7],
        d_skip: &w[8],
        out_proj: &w[9],
    }
}

/// Buffers with random states and NaN scratch on `device` (the same values for each device).
fn buffers(dims: Dims, seed: u64, device: Device) -> Res<Mamba1Buffers> {
    let b = Mamba1Buffers::zeros(dims, DType::F32, device)?;
    let mut rng = Rng::new(seed);
    for t in [&b.conv_state, &b.ssm_state] {
        t.write_values(&(0..t.numel()).map(|_| rng.uniform() * 2.0 - 1.0).collect::<Vec<_>>())?;
    }
    for t in [&b.xc, &b.z, &b.xdbl, &b.y] {
        t.write_values(&vec![f64::NAN; t.numel()])?;
    }
    Ok(b)
}

/// Everything a layer writes: the residual, then `bufs`'s states and scratch.
fn written<'a>(residual: &'a Tensor, bufs: &'a Mamba1Buffers) -> [(&'static str, &'a Tensor); 7] {
    [
        ("residual", residual),
        ("conv_state", &bufs.conv_state),
        ("ssm_state", &bufs.ssm_state),
        ("xc", &bufs.xc),
        ("z", &bufs.z),
        ("xdbl", &bufs.xdbl),
        ("y", &bufs.y),
    ]
}

fn to_gpu(w: &[Tensor]) -> Res<Vec<Tensor>> {
    Ok(w.iter().map(|t| t.to(Device::Cuda)).collect::<mamba_engine::Result<Vec<_>>>()?)
}

fn layer(c: &mut Check, dims: Dims) -> Res<()> {
    let mut rng = Rng::new(c.rng.next_u64());
    let cpu_w = weights(dims, &mut rng);
    let gpu_w = to_gpu(&cpu_w)?;
    let r = Tensor::randn(&[dims.batch, dims.m], 0.0, 1.0, DType::F32, &mut rng);
    let (r_cpu, r_gpu) = (r.to(Device::Cpu)?, r.to(Device::Cuda)?);
    let seed = rng.next_u64();
    let (b_cpu, b_gpu) = (buffers(dims, seed, Device::Cpu)?, buffers(dims, seed, Device::Cuda)?);
    decode_mamba1(dims, &r_cpu, None, &as_weights(&cpu_w), &b_cpu, 1e-5)?;
    decode_mamba1(dims, &r_gpu, None, &as_weights(&gpu_w), &b_gpu, 1e-5)?;
    let name = format!("decode layer B{} M{} D{}", dims.batch, dims.m, dims.d);
    for ((what, g), (_, w)) in written(&r_gpu, &b_gpu).into_iter().zip(written(&r_cpu, &b_cpu)) {
        row(c, format!("{name} {what} (norm)"), rel(g, w)?, f64::NAN, f64::NAN);
    }
    if dims.batch == 1 && dims.m >= 768 {
        // after the comparisons: each timed call moves the states on
        let us = c.time(|| Ok(decode_mamba1(dims, &r_gpu, None, &as_weights(&gpu_w), &b_gpu, 1e-5)?))?;
        let bytes: usize = gpu_w.iter().map(Tensor::numel).sum::<usize>() * 4;
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("{name} (4 kernels, weights read)"), err: 0.0, ok: true, us, rate });
    }
    Ok(())
}

/// The first layer of a token, from the embedding (vocabulary 203): against the CPU twin, and
/// against the same layer on the GPU started from the rows the ids pick, which it must match
/// bit for bit (elements whose bits differ). The ids: one past the end and, from batch 2, one
/// below 0 (clamped to rows V - 1 and 0), the rest random.
fn first_layer(c: &mut Check, dims: Dims) -> Res<()> {
    let (batch, m, vocab) = (dims.batch, dims.m, 203);
    let mut rng = Rng::new(c.rng.next_u64());
    let cpu_w = weights(dims, &mut rng);
    let gpu_w = to_gpu(&cpu_w)?;
    let emb = Tensor::randn(&[vocab, m], 0.0, 1.0, DType::F32, &mut rng);
    let edge = [vocab as f64 + 5.0, -3.0];
    let ids: Vec<f64> = (0..batch).map(|b| edge.get(b).copied().unwrap_or_else(|| rng.below(vocab) as f64)).collect();
    let seed = rng.next_u64();
    let mut out = Vec::new();
    for (device, w) in [(Device::Cpu, &cpu_w), (Device::Cuda, &gpu_w)] {
        let (embedding, ids) = (emb.to(device)?, Tensor::from_f64(&ids, &[batch], DType::F32)?.to(device)?);
        let r = Tensor::full(&[batch, m], f64::NAN, DType::F32, device)?;
        let bufs = buffers(dims, seed, device)?;
        decode_mamba1(dims, &r, Some(Embed { embedding: &embedding, ids: &ids }), &as_weights(w), &bufs, 1e-5)?;
        out.push((r, bufs));
    }
    // the rows the ids pick, clamped as the kernel does
    let (rows, row_of) = (emb.to_vec_f64()?, |id: f64| (id.max(0.0) as usize).min(vocab - 1));
    let start: Vec<f64> = ids.iter().flat_map(|&id| rows[row_of(id) * m..][..m].to_vec()).collect();
    let r_apart = Tensor::from_f64(&start, &[batch, m], DType::F32)?.to(Device::Cuda)?;
    let b_apart = buffers(dims, seed, Device::Cuda)?;
    decode_mamba1(dims, &r_apart, None, &as_weights(&gpu_w), &b_apart, 1e-5)?;
    let name = format!("decode first layer (embedding) B{batch} M{m} D{}", dims.d);
    let [(r_cpu, b_cpu), (r_gpu, b_gpu)] = &out[..] else { unreachable!("two devices") };
    for ((what, g), (_, w)) in written(r_gpu, b_gpu).into_iter().zip(written(r_cpu, b_cpu)) {
        row(c, format!("{name} {what} (norm)"), rel(g, w)?, f64::NAN, f64::NAN);
    }
    let mut differ = 0;
    for ((_, a), (_, b)) in written(r_gpu, b_gpu).into_iter().zip(written(&r_apart, &b_apart)) {
        differ += a.to_vec_f64()?.iter().zip(b.to_vec_f64()?).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    }
    let kernel = format!("{name} = from the rows (bits differing)");
    c.rows.push(Row { kernel, err: differ as f64, ok: differ == 0, us: f64::NAN, rate: f64::NAN });
    Ok(())
}

fn head(c: &mut Check) -> Res<()> {
    let (batch, m, vocab) = (5, 96, 203); // 203 rows: the last block's are partly past the end
    let mut rng = Rng::new(c.rng.next_u64());
    let emb = Tensor::randn(&[vocab, m], 0.0, 0.5, DType::F32, &mut rng);
    let norm = Tensor::rand_uniform(&[m], 0.5, 1.5, DType::F32, &mut rng);
    let r = Tensor::randn(&[batch, m], 0.0, 1.0, DType::F32, &mut rng);
    let mut out = Vec::new();
    for device in [Device::Cpu, Device::Cuda] {
        let logits = Tensor::full(&[batch, vocab], f64::NAN, DType::F32, device)?;
        decode_head(&logits, &r.to(device)?, &norm.to(device)?, &emb.to(device)?, 1e-5)?;
        out.push(logits);
    }
    row(c, format!("decode_head B{batch} V{vocab} (norm)"), rel(&out[1], &out[0])?, f64::NAN, f64::NAN);
    Ok(())
}

/// The LM of `cfg` decoded on the GPU (fused, then graph) against the CPU, 24 tokens of batch 2;
/// rows named `decoder {name} B2 24 tokens {launch}`.
pub(crate) fn decoders(c: &mut Check, cfg: MambaConfig, name: &str) -> Res<()> {
    let model = MambaLM::new(cfg, DType::F32, c.rng.next_u64())?;
    let gpu_model = model.to(Device::Cuda)?;
    let mut rng = Rng::new(c.rng.next_u64());
    let tokens: Vec<[usize; 2]> = (0..24).map(|_| [rng.below(256), rng.below(256)]).collect();
    let run = |m: &MambaLM, launch: Launch| -> Res<Vec<f64>> {
        let mut d = Decoder::new(m, 2, launch)?;
        let mut all = Vec::new();
        for ids in &tokens {
            all.extend(d.step(ids)?);
        }
        Ok(all)
    };
    let want = run(&model, Launch::Fused)?;
    for launch in [Launch::Fused, Launch::Graph] {
        let got = run(&gpu_model, launch)?;
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let err = if got.iter().all(|v| v.is_finite()) { diff / want.iter().map(|v| v * v).sum::<f64>().sqrt() } else { f64::INFINITY };
        row(c, format!("decoder {name} B2 24 tokens {launch:?} (norm)"), err, f64::NAN, f64::NAN);
    }
    Ok(())
}

pub fn run(c: &mut Check) -> Res<()> {
    let small = Dims { batch: 3, m: 40, d: 80, d_state: 16, dt_rank: 3, d_conv: 4 };
    let big = Dims { batch: 1, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 };
    // d_conv 1 and 8; d_state and dt_rank past the 64 kept in registers; rows wider than a
    // warp's prefetch (in_proj 1152 and out_proj 2304 columns: the loop after it)
    let edges = [
        Dims { batch: 2, m: 16, d: 32, d_state: 4, dt_rank: 1, d_conv: 1 },
        Dims { batch: 3, m: 1152, d: 2304, d_state: 72, dt_rank: 80, d_conv: 8 },
    ];
    // the default model's layer: the largest whose x_proj decode_ssm multiplies itself
    let default = Dims { batch: 1, m: 128, d: 256, d_state: 16, dt_rank: 8, d_conv: 4 };
    for dims in [small, default, big, Dims { batch: 13, ..big }].into_iter().chain(edges) {
        layer(c, dims)?;
    }
    for dims in [small, default, Dims { batch: 13, ..big }] {
        first_layer(c, dims)?;
    }
    head(c)?;
    decoders(c, MambaConfig::new(64, 3), "d64x3")?;
    mamba2::run(c)
}
