//! The Mamba-2 layer of `cu/decode.cu` (`decode_in_f32` with the conv over xBC, `decode_ssd_f32`,
//! `decode_rows_f32` as the gated norm's out_proj) against `ops::decode::cpu`, through the
//! engine's `decode_mamba2` on GPU and CPU tensors, comparing every buffer it writes (scratch
//! poisoned with NaN first) and the updated states: at a small awkward size (batch 3, headdim
//! 12: a partial warp tile; d_state 20), at the edges (2 groups without the norm, d_state 40:
//! lanes past 32; d_conv 1 and 8), at the reference's d_model 768 (24 heads of 64, d_state 128;
//! batch 1, and 13: two batch tiles), as the first layer (from the embedding); then a Mamba-2
//! LM's `Decoder` on the GPU, launched and replayed as a CUDA graph, against the CPU's for 24
//! tokens. Timed: one layer at d_model 768, batch 1 (GB/s of the weights it must read).

use super::{rel, row, to_gpu};
use crate::{Check, Res, Row};
use mamba_engine::{
    ops::decode::{decode_mamba2, Embed, Mamba2Buffers, Mamba2Weights, SsdDims},
    DType, Device, Rng, Tensor,
};
use mamba_model::{Mamba2Config, MambaConfig, SsmConfig};

/// Random layer weights (CPU, f32) in `Mamba2Weights`' order, the gate's norm last if `gated`.
fn weights(dims: SsdDims, gated: bool, rng: &mut Rng) -> Vec<Tensor> {
    let (m, h, e, conv, k) = (dims.m, dims.heads, dims.d_inner(), dims.conv_dim(), dims.d_conv);
    let u = |shape: &[usize], lo: f64, hi: f64, rng: &mut Rng| Tensor::rand_uniform(shape, lo, hi, DType::F32, rng);
    let fan = |n: usize| 1.0 / (n as f64).sqrt();
    let mut w = vec![
        u(&[m], 0.5, 1.5, rng),
        u(&[dims.in_layout().rows, m], -fan(m), fan(m), rng),
        u(&[conv, 1, k], -0.5, 0.5, rng),
        u(&[conv], -0.5, 0.5, rng),
        u(&[h], -4.0, -1.0, rng),
        u(&[h], -16.0, -1.0, rng),
        u(&[h], 0.5, 1.5, rng),
        u(&[m, e], -fan(e), fan(e), rng),
    ];
    if gated {
        w.push(u(&[e], 0.5, 1.5, rng));
    }
    w
}

fn as_weights(w: &[Tensor]) -> Mamba2Weights<'_> {
    Mamba2Weights {
        norm: &w[0],
        in_proj: &w[1],
        conv_w: &w[2],
        conv_b: &w[3],
        dt_bias: &w[4],
        a: &w[5],
        d_skip: &w[6],
        out_proj: &w[7],
        gate_norm: w.get(8),
    }
}

/// Buffers with random states and NaN scratch on `device` (the same values for each device).
fn buffers(dims: SsdDims, seed: u64, device: Device) -> Res<Mamba2Buffers> {
    let b = Mamba2Buffers::zeros(dims, DType::F32, device)?;
    let mut rng = Rng::new(seed);
    for t in [&b.conv_state, &b.ssm_state] {
        t.write_values(&(0..t.numel()).map(|_| rng.uniform() * 2.0 - 1.0).collect::<Vec<_>>())?;
    }
    for t in [&b.xbc, &b.zdt, &b.y] {
        t.write_values(&vec![f64::NAN; t.numel()])?;
    }
    Ok(b)
}

fn written<'a>(residual: &'a Tensor, b: &'a Mamba2Buffers) -> [(&'static str, &'a Tensor); 6] {
    [
        ("residual", residual),
        ("conv_state", &b.conv_state),
        ("ssm_state", &b.ssm_state),
        ("xbc", &b.xbc),
        ("zdt", &b.zdt),
        ("y", &b.y),
    ]
}

/// One layer on both devices (the first, from a 203-row embedding with ids past both ends, if
/// `first`), every written buffer compared; timed at d_model >= 768, batch 1.
fn layer(c: &mut Check, dims: SsdDims, gated: bool, first: bool) -> Res<()> {
    let (batch, m, vocab) = (dims.batch, dims.m, 203);
    let mut rng = Rng::new(c.rng.next_u64());
    let cpu_w = weights(dims, gated, &mut rng);
    let gpu_w = to_gpu(&cpu_w)?;
    let r = Tensor::randn(&[batch, m], 0.0, 1.0, DType::F32, &mut rng);
    let emb = Tensor::randn(&[vocab, m], 0.0, 1.0, DType::F32, &mut rng);
    let edge = [vocab as f64 + 5.0, -3.0];
    let ids: Vec<f64> = (0..batch).map(|b| edge.get(b).copied().unwrap_or_else(|| rng.below(vocab) as f64)).collect();
    let seed = rng.next_u64();
    // a residual of its own for each device (on the CPU `to` would share r's buffer, which the
    // layer updates in place)
    let rv = if first { vec![f64::NAN; batch * m] } else { r.to_vec_f64()? };
    let start = |device| Tensor::from_f64(&rv, &[batch, m], DType::F32)?.to(device);
    let residuals = [start(Device::Cpu)?, start(Device::Cuda)?];
    let mut out = Vec::new();
    for ((device, w), r) in [(Device::Cpu, &cpu_w), (Device::Cuda, &gpu_w)].into_iter().zip(residuals) {
        let (embedding, ids) = (emb.to(device)?, Tensor::from_f64(&ids, &[batch], DType::F32)?.to(device)?);
        let embed = first.then_some(Embed { embedding: &embedding, ids: &ids });
        let bufs = buffers(dims, seed, device)?;
        decode_mamba2(dims, &r, embed, &as_weights(w), &bufs, 1e-5)?;
        out.push((r, bufs));
    }
    let [(r_cpu, b_cpu), (r_gpu, b_gpu)] = &out[..] else { unreachable!("two devices") };
    let SsdDims { heads: h, headdim: p, d_state: n, ngroups: g, d_conv: k, .. } = dims;
    let what = if first { "first layer (embedding)" } else if gated { "layer" } else { "layer, no norm" };
    let name = format!("decode mamba2 {what} B{batch} M{m} H{h}x{p} N{n} G{g} K{k}");
    for ((what, gt), (_, ct)) in written(r_gpu, b_gpu).into_iter().zip(written(r_cpu, b_cpu)) {
        row(c, format!("{name} {what} (norm)"), rel(gt, ct)?, f64::NAN, f64::NAN);
    }
    if batch == 1 && m >= 768 && !first {
        let us = c.time(|| Ok(decode_mamba2(dims, r_gpu, None, &as_weights(&gpu_w), b_gpu, 1e-5)?))?;
        let bytes: usize = gpu_w.iter().map(Tensor::numel).sum::<usize>() * 4;
        let rate = bytes as f64 / us / 1e3;
        c.rows.push(Row { kernel: format!("{name} (3 kernels, weights read)"), err: 0.0, ok: true, us, rate });
    }
    Ok(())
}

pub fn run(c: &mut Check) -> Res<()> {
    let small = SsdDims { batch: 3, m: 40, heads: 5, headdim: 12, d_state: 20, ngroups: 1, d_conv: 4 };
    let big = SsdDims { batch: 1, m: 768, heads: 24, headdim: 64, d_state: 128, ngroups: 1, d_conv: 4 };
    let edges = [
        SsdDims { batch: 2, m: 16, heads: 4, headdim: 8, d_state: 40, ngroups: 2, d_conv: 1 },
        SsdDims { batch: 2, m: 64, heads: 6, headdim: 16, d_state: 8, ngroups: 3, d_conv: 8 },
    ];
    for dims in [small, big, SsdDims { batch: 13, ..big }] {
        layer(c, dims, true, false)?;
    }
    for dims in edges {
        layer(c, dims, false, false)?;
    }
    for dims in [small, SsdDims { batch: 13, ..big }] {
        layer(c, dims, true, true)?;
    }
    // a Mamba-2 LM: d_model 64, 3 layers, heads of 16, d_state 16
    let ssm = Mamba2Config { d_state: 16, headdim: 16, chunk_size: 16, ..Default::default() };
    super::decoders(c, MambaConfig { ssm_cfg: SsmConfig::Mamba2(ssm), ..MambaConfig::new(64, 3) }, "mamba2 d64x3")
}
