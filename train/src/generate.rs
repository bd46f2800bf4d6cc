//! Sampling bytes from a trained model: the prompt goes through the parallel scans once
//! (`MambaLM::prefill`), which leaves the conv and SSM states, then recurrent (step) mode
//! makes each new byte at the same cost whatever its position: in the fused decoder
//! (`mamba_model::Decoder`, a CUDA graph on the GPU) where the model allows, else in the
//! generic `MambaLM::step`.

use crate::{Error, Result};
use mamba_engine::Rng;
use mamba_model::{Decoder, InferenceState, Launch, MambaLM};
use std::{ops::ControlFlow, str::FromStr, time::Instant};

/// How each new token runs through the model (`--decoder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodePath {
    /// The whole token in one persistent kernel (GPU), recorded as a CUDA graph.
    Token,
    /// As `Token`, with bf16 copies of in_proj, x_proj, out_proj and the embedding.
    TokenBf16,
    /// On the GPU, the fused kernels recorded once as a CUDA graph and replayed (models the
    /// fused decoder cannot run take the generic step); on the CPU, the generic step, which is
    /// faster there (its matmuls are the SIMD kernels): 511 against the fused twins' 601 us a
    /// token, default model, 2 cores (`cargo bench -p mamba-benches --bench decode`).
    #[default]
    Graph,
    /// The fused kernels, launched one by one.
    Fused,
    /// `MambaLM::step`: ~30 tensor ops a layer.
    Generic,
}

impl FromStr for DecodePath {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "token" => Ok(DecodePath::Token),
            "token-bf16" => Ok(DecodePath::TokenBf16),
            "graph" => Ok(DecodePath::Graph),
            "fused" => Ok(DecodePath::Fused),
            "generic" => Ok(DecodePath::Generic),
            _ => Err(format!("unknown decoder `{s}`: graph, token, token-bf16, fused or generic")),
        }
    }
}

/// Where generation spent its time (for `--timing`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Tokens handed out (every row's, with `--batch`).
    pub tokens: usize,
    /// Seconds in the prompt's prefill (its logits read back included).
    pub prefill_secs: f64,
    /// Seconds in the per-token steps, and how many steps (each for the whole batch).
    pub decode_secs: f64,
    pub steps: usize,
    /// What ran the steps: `token`, `token-bf16`, `graph`, `fused` or `generic`.
    pub decoder: &'static str,
}

/// The per-token step: the fused decoder, or the generic step and its state.
pub(crate) enum Stepper<'m> {
    Fused(Box<Decoder<'m>>),
    Generic(&'m MambaLM, InferenceState),
}

impl<'m> Stepper<'m> {
    /// What runs the steps (for `--timing`).
    fn name(&self) -> &'static str {
        match self {
            Stepper::Generic(..) => "generic",
            Stepper::Fused(d) => match d.launch() {
                Launch::Token => "token",
                Launch::TokenBf16 => "token-bf16",
                Launch::Graph => "graph",
                Launch::Fused => "fused",
            },
        }
    }

    /// Continue from `state` (a prefill's, or `MambaLM::new_state`'s zeros) for `batch` rows
    /// along `path`.
    pub(crate) fn new(
        model: &'m MambaLM,
        batch: usize,
        state: InferenceState,
        path: DecodePath,
    ) -> Result<Stepper<'m>> {
        let gpu = model.device() == mamba_engine::Device::Cuda;
        let launch = match path {
            DecodePath::Graph if gpu => Launch::Graph,
            DecodePath::Token => Launch::Token,
            DecodePath::TokenBf16 => Launch::TokenBf16,
            DecodePath::Fused => Launch::Fused,
            DecodePath::Graph | DecodePath::Generic => return Ok(Stepper::Generic(model, state)),
        };
        if let Some(why) = Decoder::unsupported_for(model, batch, launch) {
            if matches!(path, DecodePath::Token | DecodePath::TokenBf16) {
                return Err(Error::Settings(format!(
                    "--decoder {path:?} cannot run this model: {why}; try --decoder graph"
                )));
            }
            return Ok(Stepper::Generic(model, state));
        }
        let mut decoder = Decoder::new(model, batch, launch)?;
        decoder.load(&state)?;
        Ok(Stepper::Fused(Box::new(decoder)))
    }

    /// Logits (batch x padded vocab) after feeding `ids`.
    pub(crate) fn step(&mut self, ids: &[usize]) -> Result<Vec<f64>> {
        match self {
            Stepper::Fused(d) => Ok(d.step(ids)?),
            Stepper::Generic(model, state) => Ok(model.step(ids, state)?.to_vec_f64()?),
        }
    }
}

/// How to pick the next token from the logits.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// 0 picks the most likely token; higher flattens the distribution.
    pub temperature: f64,
    /// Keep only the k most likely tokens (0, or more than the vocabulary, keeps all).
    pub top_k: usize,
    /// Then keep only the most likely tokens whose probabilities add up to at least p
    /// ("nucleus" sampling; 1 keeps all).
    pub top_p: f64,
}

impl Sampling {
    /// Refuse a temperature that is NaN, infinite or negative (which would otherwise sample
    /// greedily or from garbage without a word), 0 is greedy; and a top-p outside (0, 1].
    /// Any top-k is fine.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(Error::Settings(format!("--temperature must be a finite number >= 0 (0 = greedy), got {t}")));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::Settings(format!("--top-p must be in (0, 1] (1 keeps every token), got {p}")));
        }
        Ok(())
    }
}

/// Continue `prompt` (non-empty) by up to `n` tokens, handing each to `emit` as soon as it is
/// sampled. `emit` may stop the generation (`Break`, e.g. the reader went away) or fail it;
/// nothing is kept here, so `n` may be as large as the caller likes.
pub fn generate(
    model: &MambaLM,
    prompt: &[usize],
    n: usize,
    (how, path): (Sampling, DecodePath),
    rng: &mut Rng,
    mut emit: impl FnMut(usize) -> Result<ControlFlow<()>>,
) -> Result<Stats> {
    how.validate()?;
    if prompt.is_empty() {
        return Err(Error::Settings("generate: the prompt must contain at least one token".into()));
    }
    let started = Instant::now();
    let (logits, state) = model.prefill(prompt, 1, prompt.len())?;
    let mut row = logits.to_vec_f64()?;
    let mut stats = Stats { prefill_secs: started.elapsed().as_secs_f64(), ..Stats::default() };
    let mut stepper = Stepper::new(model, 1, state, path)?;
    stats.decoder = stepper.name();
    let vocab = model.cfg.vocab_size;
    let started = Instant::now();
    for done in 0..n {
        let next = pick(&row[..vocab], how, rng);
        stats.tokens = done + 1;
        if emit(next)?.is_break() {
            break;
        }
        if done + 1 < n {
            row = stepper.step(&[next])?;
            stats.steps += 1;
        }
    }
    stats.decode_secs = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// `rows` continuations of `prompt` at once: one prefill of the prompt repeated `rows` times,
/// then one batched step per token. Each row gets up to `n` tokens and ends early once
/// `done(its tokens)` holds; the call ends when every row has. Rows sample in order from `rng`.
pub fn generate_rows(
    model: &MambaLM,
    prompt: &[usize],
    (n, rows): (usize, usize),
    (how, path): (Sampling, DecodePath),
    rng: &mut Rng,
    done: impl Fn(&[usize]) -> bool,
) -> Result<(Vec<Vec<usize>>, Stats)> {
    how.validate()?;
    if prompt.is_empty() || rows == 0 {
        return Err(Error::Settings("generate: the prompt and the batch must not be empty".into()));
    }
    let started = Instant::now();
    let ids: Vec<usize> = (0..rows).flat_map(|_| prompt.iter().copied()).collect();
    let (logits, state) = model.prefill(&ids, rows, prompt.len())?;
    let mut all = logits.to_vec_f64()?; // (rows, padded vocab)
    let mut stats = Stats { prefill_secs: started.elapsed().as_secs_f64(), ..Stats::default() };
    let mut stepper = Stepper::new(model, rows, state, path)?;
    stats.decoder = stepper.name();
    let (vocab, width) = (model.cfg.vocab_size, model.cfg.padded_vocab());
    let mut out = vec![Vec::new(); rows];
    let mut live = vec![true; rows];
    let started = Instant::now();
    for step in 0..n {
        for (r, (row, live)) in out.iter_mut().zip(&mut live).enumerate().filter(|(_, (_, live))| **live) {
            row.push(pick(&all[r * width..r * width + vocab], how, rng));
            *live = !done(row);
        }
        if step + 1 == n || !live.iter().any(|&l| l) {
            break;
        }
        // a finished row steps on with its last token; what it makes is not kept
        let next: Vec<usize> = out.iter().map(|row| *row.last().expect("every row has a token")).collect();
        all = stepper.step(&next)?;
        stats.steps += 1;
    }
    stats.decode_secs = started.elapsed().as_secs_f64();
    stats.tokens = out.iter().map(Vec::len).sum();
    Ok((out, stats))
}

/// Sample an index from `logits` with temperature, top-k and top-p ([`Sampling::validate`] it
/// first: a temperature that is NaN or not positive picks the most likely index).
pub fn pick(logits: &[f64], how: Sampling, rng: &mut Rng) -> usize {
    let argmax = logits.iter().enumerate().fold(0, |best, (i, &v)| if v > logits[best] { i } else { best });
    if how.temperature <= 0.0 {
        return argmax;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if how.top_k > 0 {
        order.truncate(how.top_k);
    }
    let mut weights: Vec<f64> = order.iter().map(|&i| ((logits[i] - logits[argmax]) / how.temperature).exp()).collect();
    if how.top_p < 1.0 {
        // the shortest most-likely prefix holding at least top_p of the (top-k) mass
        let total: f64 = weights.iter().sum();
        let mut mass = 0.0;
        let keep = weights
            .iter()
            .take_while(|&&w| {
                let before = mass; // keep a token while the more likely ones hold less than top_p
                mass += w;
                before < how.top_p * total
            })
            .count();
        weights.truncate(keep.max(1));
    }
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        u -= w;
        if u <= 0.0 {
            return i;
        }
    }
    order[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_k() {
        let mut rng = Rng::new(1);
        let logits = [0.0, 3.0, 1.0, 2.0];
        assert_eq!(pick(&logits, Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 }, &mut rng), 1);
        for _ in 0..100 {
            let i = pick(&logits, Sampling { temperature: 1.0, top_k: 2, top_p: 1.0 }, &mut rng);
            assert!(i == 1 || i == 3);
        }
        // A top-k beyond the vocabulary keeps every token.
        let seen: std::collections::BTreeSet<usize> =
            (0..200).map(|_| pick(&logits, Sampling { temperature: 5.0, top_k: 1000, top_p: 1.0 }, &mut rng)).collect();
        assert_eq!(seen.len(), 4);
    }

    /// Top-p keeps the shortest most-likely set holding at least p of the probability: with
    /// probabilities 0.5, 0.3, 0.15, 0.05, p 0.79 keeps the first two, p 0.81 three, p 0.5 one.
    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        let logits: Vec<f64> = [0.5f64, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut rng = Rng::new(2);
        for (p, want) in [(0.79, 2), (0.81, 3), (0.5, 1), (1.0, 4), (1e-9, 1)] {
            let how = Sampling { temperature: 1.0, top_k: 0, top_p: p };
            let seen: std::collections::BTreeSet<usize> = (0..400).map(|_| pick(&logits, how, &mut rng)).collect();
            assert_eq!(seen, (0..want).collect(), "top-p {p}");
        }
        for p in [0.0, -0.1, 1.5, f64::NAN] {
            let msg = Sampling { temperature: 1.0, top_k: 0, top_p: p }.validate().unwrap_err().to_string();
            assert!(msg.starts_with("--top-p must be in (0, 1]"), "{msg}");
        }
    }

    /// Batched rows are the single-row generation, row by row: greedy, every row equals what
    /// `generate` makes alone, for Mamba-1 and Mamba-2 along every decoder path; `done` ends a
    /// row early and the call once all rows are done.
    #[test]
    fn rows_generate_as_one_row_does() {
        use mamba_model::{Mamba2Config, MambaConfig, SsmConfig};
        let ssm = Mamba2Config { d_state: 8, headdim: 8, chunk_size: 16, ..Default::default() };
        let mamba2 = MambaConfig { ssm_cfg: SsmConfig::Mamba2(ssm), ..MambaConfig::new(16, 2) };
        for cfg in [MambaConfig::new(16, 2), mamba2] {
            rows_as_one_row(&MambaLM::new(cfg, mamba_engine::DType::F32, 1).unwrap());
        }
    }

    fn rows_as_one_row(model: &MambaLM) {
        let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 };
        let mut alone = vec![];
        generate(model, &[5, 6, 7], 12, (greedy, DecodePath::Generic), &mut Rng::new(1), |t| {
            alone.push(t);
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        for path in [DecodePath::Generic, DecodePath::Fused, DecodePath::Graph] {
            let greedy = (greedy, path);
            let (rows, stats) = generate_rows(model, &[5, 6, 7], (12, 3), greedy, &mut Rng::new(1), |_| false).unwrap();
            assert_eq!(rows, vec![alone.clone(); 3], "{path:?}");
            let want = if path == DecodePath::Fused { "fused" } else { "generic" };
            assert_eq!((stats.tokens, stats.steps, stats.decoder), (36, 11, want), "on the CPU");
            let short = generate_rows(model, &[5, 6, 7], (12, 2), greedy, &mut Rng::new(1), |r| r.len() == 4).unwrap();
            assert_eq!(short.0, vec![alone[..4].to_vec(); 2]);
        }
        let sampled = (Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 }, DecodePath::Graph);
        let (rows, _) = generate_rows(model, &[5], (30, 4), sampled, &mut Rng::new(2), |_| false).unwrap();
        assert!(rows.iter().all(|r| r.len() == 30 && r.iter().all(|&t| t < 256)));
        assert!(rows.windows(2).any(|w| w[0] != w[1]), "sampled rows should differ");
        let greedy = (greedy, DecodePath::Graph);
        assert!(generate_rows(model, &[5], (3, 0), greedy, &mut Rng::new(1), |_| false).is_err());
    }

    #[test]
    fn bad_temperatures_are_refused() {
        for t in [f64::NAN, -0.5, f64::INFINITY] {
            let msg = Sampling { temperature: t, top_k: 40, top_p: 1.0 }.validate().unwrap_err().to_string();
            assert!(msg.starts_with("--temperature must be a finite number >= 0") && msg.contains(&t.to_string()));
        }
        for t in [0.0, 0.8, 100.0] {
            Sampling { temperature: t, top_k: usize::MAX, top_p: 1.0 }.validate().unwrap();
        }
    }

    /// Tokens stream out one by one, `emit` can stop the generation, and its error stops it too.
    #[test]
    fn emit_streams_and_can_stop() {
        let model = MambaLM::new(mamba_model::MambaConfig::new(16, 1), mamba_engine::DType::F32, 1).unwrap();
        let how = (Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 }, DecodePath::Graph);
        let mut seen = vec![];
        let stop_at_3 = |t| {
            seen.push(t);
            Ok(if seen.len() == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        };
        assert_eq!(generate(&model, &[1, 2], usize::MAX, how, &mut Rng::new(1), stop_at_3).unwrap().tokens, 3);
        assert!(seen.len() == 3 && seen.iter().all(|&t| t < 256));
        let fail = |_| Err(Error::Settings("reader gone".into()));
        let e = generate(&model, &[1], 5, how, &mut Rng::new(1), fail).unwrap_err();
        assert_eq!(e.to_string(), "reader gone");
        let go_on = |_| Ok(ControlFlow::Continue(()));
        let fused = (how.0, DecodePath::Fused);
        let stats = generate(&model, &[1], 5, fused, &mut Rng::new(1), go_on).unwrap();
        assert_eq!((stats.tokens, stats.steps, stats.decoder), (5, 4, "fused"));
        let bad = (Sampling { temperature: f64::NAN, top_k: 0, top_p: 1.0 }, DecodePath::Graph);
        assert!(generate(&model, &[1], 5, bad, &mut Rng::new(1), go_on).is_err());
        assert!(generate(&model, &[], 5, how, &mut Rng::new(1), go_on).is_err());
    }
}
