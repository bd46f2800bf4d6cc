//! `cu/decode_token.cu` against its CPU twin `ops::decode::decode_token` (embedding, the
//! decode twins for every layer, head): a few tokens of random multi-layer models, f32 and bf16
//! weights (the twin then reads the weights rounded to bf16, so both compute the same
//! function; the sums differ only in order), scratch and logits poisoned with NaN first.
//! Compared: the logits of every token, and the residual and every layer's states after the
//! last. Sizes: small and awkward (batch 3, d_model 40, a 203-row head whose last block is
//! partial), d_model 768 at batch 1 and 8, the edges (d_conv 1 and 8, d_state 72, dt_rank 80).
//! Then the same tokens again from the same states must repeat the logits bit for bit (no
//! atomics: the x_proj partials are summed in block order). Timed: a token of d_model 768 x 24
//! layers at batch 1, f32 and bf16 (GB/s of the weights it must read).

use crate::{
    decode::{as_weights, weights},
    Check, Res, Row,
};
use mamba_engine::{
    ops::decode::{decode_token, Dims, Mamba1Buffers, TokenIo, TokenKernel, TokenWeights},
    DType, Device, Rng, Tensor,
};

/// ‖gpu - cpu‖ / ‖cpu‖: f32 sums in other orders (the twin sums in f64) through a few layers.
const TOKEN_TOL: f64 = 1e-5;

/// A model's tensors on one device: per layer the ten `Mamba1Weights` in order, then the
/// embedding and norm_f.
struct Model {
    layers: Vec<Vec<Tensor>>,
    embedding: Tensor,
    norm_f: Tensor,
}

impl Model {
    fn random(dims: Dims, n_layers: usize, vocab: usize, rng: &mut Rng) -> Model {
        Model {
            layers: (0..n_layers).map(|_| weights(dims, rng)).collect(),
            embedding: Tensor::randn(&[vocab, dims.m], 0.0, 0.5, DType::F32, rng),
            norm_f: Tensor::rand_uniform(&[dims.m], 0.5, 1.5, DType::F32, rng),
        }
    }

    /// On `device`, the big weights (in_proj, x_proj, out_proj, embedding) in `big`; on the
    /// CPU with `big` bf16, their values rounded to bf16 but stored as f32 (the twin's view).
    fn to(&self, device: Device, big: DType) -> Res<Model> {
        let wide = |t: &Tensor| -> Res<Tensor> {
            let t = t.to_dtype(big)?;
            Ok(if device == Device::Cpu { t.to_dtype(DType::F32)? } else { t.to(device)? })
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.iter().enumerate().map(|(i, t)| if [1, 4, 9].contains(&i) { wide(t) } else { Ok(t.to(device)?) }).collect()
            })
            .collect::<Res<Vec<Vec<Tensor>>>>()?;
        Ok(Model { layers, embedding: wide(&self.embedding)?, norm_f: self.norm_f.to(device)? })
    }

    fn weights(&self) -> TokenWeights<'_> {
        let layers = self.layers.iter().map(|w| as_weights(w)).collect();
        TokenWeights { layers, embedding: &self.embedding, norm_f: &self.norm_f }
    }
}

/// A token's buffers on `device`: random states from `seed`, NaN scratch and logits.
struct Io {
    residual: Tensor,
    ids: Tensor,
    logits: Tensor,
    layers: Vec<Mamba1Buffers>,
}

impl Io {
    fn new(dims: Dims, n_layers: usize, vocab: usize, seed: u64, device: Device) -> Res<Io> {
        let mut rng = Rng::new(seed);
        let mut layers = Vec::new();
        for _ in 0..n_layers {
            let b = Mamba1Buffers::zeros(dims, DType::F32, device)?;
            for t in [&b.conv_state, &b.ssm_state] {
                t.write_values(&(0..t.numel()).map(|_| rng.uniform() * 2.0 - 1.0).collect::<Vec<_>>())?;
            }
            for t in [&b.xc, &b.z, &b.xdbl, &b.y] {
                t.write_values(&vec![f64::NAN; t.numel()])?;
            }
            layers.push(b);
        }
        let nan = |shape: &[usize]| Tensor::full(shape, f64::NAN, DType::F32, device);
        Ok(Io { residual: nan(&[dims.batch, dims.m])?, ids: nan(&[dims.batch])?, logits: nan(&[dims.batch, vocab])?, layers })
    }

    fn view(&self) -> TokenIo<'_> {
        TokenIo { residual: &self.residual, ids: &self.ids, logits: &self.logits, layers: &self.layers }
    }

    /// Every value the token leaves: residual, then each layer's conv and SSM states.
    fn state(&self) -> Res<Vec<f64>> {
        let mut all = self.residual.to_vec_f64()?;
        for b in &self.layers {
            all.extend(b.conv_state.to_vec_f64()?);
            all.extend(b.ssm_state.to_vec_f64()?);
        }
        Ok(all)
    }
}

fn rel(gpu: &[f64], cpu: &[f64]) -> f64 {
    if gpu.len() != cpu.len() || gpu.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff = gpu.iter().zip(cpu).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    diff / cpu.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30)
}

/// Run `tokens` through the GPU kernel and the CPU twin from the same states; check logits,
/// states, and that a second GPU pass from the same states repeats the logits bit for bit.
fn against_twin(c: &mut Check, dims: Dims, n_layers: usize, vocab: usize, big: DType) -> Res<()> {
    let mut rng = Rng::new(c.rng.next_u64());
    let model = Model::random(dims, n_layers, vocab, &mut rng);
    let (cpu, gpu) = (model.to(Device::Cpu, big)?, model.to(Device::Cuda, big)?);
    let seed = rng.next_u64();
    let tokens: Vec<Vec<f64>> = (0..3).map(|_| (0..dims.batch).map(|_| rng.below(vocab) as f64).collect()).collect();
    let cpu_io = Io::new(dims, n_layers, vocab, seed, Device::Cpu)?;
    let mut want = Vec::new();
    for ids in &tokens {
        cpu_io.ids.write_values(ids)?;
        decode_token(dims, &cpu.weights(), &cpu_io.view(), 1e-5)?;
        want.extend(cpu_io.logits.to_vec_f64()?);
    }
    let mut passes = Vec::new();
    for _ in 0..2 {
        let io = Io::new(dims, n_layers, vocab, seed, Device::Cuda)?;
        let kernel = TokenKernel::new(dims, &gpu.weights(), &io.view(), 1e-5)?;
        let mut got = Vec::new();
        for ids in &tokens {
            io.ids.write_values(ids)?;
            kernel.run()?;
            got.extend(io.logits.to_vec_f64()?);
        }
        passes.push((got, io.state()?));
    }
    let name = format!("decode_token {} B{} M{} D{} N{} R{} K{} x{n_layers} V{vocab}", big, dims.batch, dims.m, dims.d, dims.d_state, dims.dt_rank, dims.d_conv);
    let err = rel(&passes[0].0, &want);
    c.rows.push(Row { kernel: format!("{name} logits (norm)"), err, ok: err <= TOKEN_TOL, us: f64::NAN, rate: f64::NAN });
    let err = rel(&passes[0].1, &cpu_io.state()?);
    c.rows.push(Row { kernel: format!("{name} states (norm)"), err, ok: err <= TOKEN_TOL, us: f64::NAN, rate: f64::NAN });
    let same = passes[0].0.iter().zip(&passes[1].0).all(|(a, b)| a.to_bits() == b.to_bits());
    let err = if same { 0.0 } else { f64::INFINITY };
    c.rows.push(Row { kernel: format!("{name} repeats bit for bit"), err, ok: same, us: f64::NAN, rate: f64::NAN });
    Ok(())
}

/// How far bf16 weights move the logits from f32's (same model, states and tokens, 2 layers at
/// d_model 768, batch 2): bounded by BF16_LOGITS (a bf16 weight is off by up to 2^-9
/// relative; the errors of a dot product of 768-1536 terms mostly cancel).
const BF16_LOGITS: f64 = 2e-2;

fn bf16_against_f32(c: &mut Check) -> Res<()> {
    let dims = Dims { batch: 2, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 };
    let (n_layers, vocab) = (2, 256);
    let mut rng = Rng::new(c.rng.next_u64());
    let model = Model::random(dims, n_layers, vocab, &mut rng);
    let seed = rng.next_u64();
    let tokens: Vec<Vec<f64>> = (0..8).map(|_| (0..dims.batch).map(|_| rng.below(vocab) as f64).collect()).collect();
    let mut logits = Vec::new();
    for big in [DType::F32, DType::BF16] {
        let gpu = model.to(Device::Cuda, big)?;
        let io = Io::new(dims, n_layers, vocab, seed, Device::Cuda)?;
        let kernel = TokenKernel::new(dims, &gpu.weights(), &io.view(), 1e-5)?;
        let mut all = Vec::new();
        for ids in &tokens {
            io.ids.write_values(ids)?;
            kernel.run()?;
            all.extend(io.logits.to_vec_f64()?);
        }
        logits.push(all);
    }
    let err = rel(&logits[1], &logits[0]);
    let kernel = "decode_token bf16 weights vs f32: logits of 8 tokens (norm, bound 2e-2)".to_string();
    c.rows.push(Row { kernel, err, ok: err <= BF16_LOGITS, us: f64::NAN, rate: f64::NAN });
    Ok(())
}

/// One token of d_model 768 x 24 layers at batch 1 (random weights), per weight type.
fn timed(c: &mut Check, big: DType) -> Res<()> {
    let dims = Dims { batch: 1, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 };
    let (n_layers, vocab) = (24, 256);
    let mut rng = Rng::new(c.rng.next_u64());
    let gpu = Model::random(dims, n_layers, vocab, &mut rng).to(Device::Cuda, big)?;
    let io = Io::new(dims, n_layers, vocab, rng.next_u64(), Device::Cuda)?;
    io.ids.write_values(&[65.0])?;
    let kernel = TokenKernel::new(dims, &gpu.weights(), &io.view(), 1e-5)?;
    let us = c.time(|| Ok(kernel.run()?))?;
    let bytes: usize = gpu.layers.iter().flatten().chain([&gpu.embedding, &gpu.norm_f]).map(|t| t.numel() * t.dtype().size()).sum();
    let rate = bytes as f64 / us / 1e3;
    let kernel = format!("decode_token {big} d768 x24 B1: one token (GB/s of weights; {:.0} tokens/s)", 1e6 / us);
    c.rows.push(Row { kernel, err: 0.0, ok: true, us, rate });
    Ok(())
}

pub fn run(c: &mut Check) -> Res<()> {
    let small = Dims { batch: 3, m: 40, d: 80, d_state: 16, dt_rank: 3, d_conv: 4 };
    let big = Dims { batch: 1, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 };
    let edges = [
        Dims { batch: 2, m: 16, d: 32, d_state: 4, dt_rank: 1, d_conv: 1 },
        Dims { batch: 3, m: 256, d: 512, d_state: 72, dt_rank: 80, d_conv: 8 },
    ];
    for dtype in [DType::F32, DType::BF16] {
        against_twin(c, small, 2, 203, dtype)?;
        against_twin(c, big, 2, 256, dtype)?;
        against_twin(c, Dims { batch: 8, ..big }, 2, 256, dtype)?;
        for dims in edges {
            against_twin(c, dims, 3, 256, dtype)?;
        }
    }
    bf16_against_f32(c)?;
    if c.timing {
        timed(c, DType::F32)?;
        timed(c, DType::BF16)?;
    }
    Ok(())
}
