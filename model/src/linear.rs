//! Dense layers. `Linear` stores its weight as (out, in), like the reference
//! PyTorch modules, so checkpoints map one to one: y = x W^T + b.

use mamba_engine::{DType, Result, Rng, Tensor};

pub struct Linear {
    /// (out_features, in_features)
    pub weight: Tensor,
    /// (out_features), if present
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    pub fn new(in_features: usize, out_features: usize, bias: bool, dtype: DType, rng: &mut Rng) -> Linear {
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = Tensor::rand_uniform(&[out_features, in_features], -bound, bound, dtype, rng).requires_grad();
        let bias = bias.then(|| Tensor::rand_uniform(&[out_features], -bound, bound, dtype, rng).requires_grad());
        Linear { weight, bias }
    }

    /// x (.., in) -> (.., out)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.transpose(0, 1)?)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        std::iter::once(self.weight.clone()).chain(self.bias.clone()).collect()
    }
}

/// A byte-level language model of the simplest useful kind (Bengio et al., 2003):
/// embed the previous `context` bytes, concatenate, one tanh hidden layer, logits.
/// It is the engine's demo until the Mamba model lands.
pub struct Mlp {
    pub embedding: Tensor,
    pub hidden: Linear,
    pub head: Linear,
    pub context: usize,
}

impl Mlp {
    pub fn new(vocab: usize, context: usize, d_embed: usize, d_hidden: usize, rng: &mut Rng) -> Mlp {
        Mlp {
            embedding: Tensor::randn(&[vocab, d_embed], 0.0, 0.1, DType::F32, rng).requires_grad(),
            hidden: Linear::new(context * d_embed, d_hidden, true, DType::F32, rng),
            head: Linear::new(d_hidden, vocab, true, DType::F32, rng),
            context,
        }
    }

    /// ids (batch, context) flattened row-major -> logits (batch, vocab)
    pub fn forward(&self, ids: &[usize], batch: usize) -> Result<Tensor> {
        let e = self.embedding.embedding(ids, &[batch, self.context])?; // (batch, context, d_embed)
        let h = self.hidden.forward(&e.flatten(1, 2)?)?.tanh()?; // (batch, d_hidden)
        self.head.forward(&h)
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        let mut p = vec![self.embedding.clone()];
        p.extend(self.hidden.parameters());
        p.extend(self.head.parameters());
        p
    }
}
