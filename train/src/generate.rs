//! Sampling bytes from a trained model in recurrent (step) mode: the prompt is fed one
//! byte at a time to build the conv and SSM states, then each new byte costs the same
//! whatever its position.

use crate::{Error, Result};
use mamba_engine::Rng;
use mamba_model::MambaLM;

/// How to pick the next token from the logits.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// 0 picks the most likely token; higher flattens the distribution.
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 keeps all).
    pub top_k: usize,
}

/// Continue `prompt` (non-empty) by `n` tokens, calling `emit` with each new token.
pub fn generate(
    model: &MambaLM,
    prompt: &[usize],
    n: usize,
    how: Sampling,
    rng: &mut Rng,
    mut emit: impl FnMut(usize),
) -> Result<Vec<usize>> {
    let mut state = model.new_state(1)?;
    let mut logits = None;
    for &t in prompt {
        logits = Some(model.step(&[t], &mut state)?);
    }
    let Some(mut logits) = logits else {
        return Err(Error::Settings("generate: the prompt must contain at least one token".into()));
    };
    let vocab = model.cfg.vocab_size;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let row = logits.to_vec_f64()?;
        let next = pick(&row[..vocab], how, rng);
        emit(next);
        out.push(next);
        logits = model.step(&[next], &mut state)?;
    }
    Ok(out)
}

/// Sample an index from `logits` with temperature and top-k.
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
    let weights: Vec<f64> = order.iter().map(|&i| ((logits[i] - logits[argmax]) / how.temperature).exp()).collect();
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
        assert_eq!(pick(&logits, Sampling { temperature: 0.0, top_k: 0 }, &mut rng), 1);
        for _ in 0..100 {
            let i = pick(&logits, Sampling { temperature: 1.0, top_k: 2 }, &mut rng);
            assert!(i == 1 || i == 3);
        }
    }
}
