//! Data parallelism, its reduction path: every batch is split into N equal shards, one per
//! rank; each rank computes the gradient of its shard's mean loss with its own copy of the
//! weights; the gradients are summed across the ranks (an all-reduce) and divided by N, which
//! is the gradient of the whole batch's mean loss; then every rank applies the same clipping
//! and AdamW update, so the copies stay equal:
//!
//! ```text
//! g = (1/N) Σ_r ∇ L_r       L_r = the mean loss of shard r (B/N rows)
//!   = ∇ (1/N) Σ_r L_r = ∇ L  (the batch's mean loss, when every shard scores as many tokens)
//! ```
//!
//! Every data source here scores the same number of tokens per row (all of them for text, a
//! fixed count for the synthetic tasks), so the equality holds up to float rounding. MoE layers
//! route each shard on its own (the capacity is per shard), as they would on separate GPUs.
//!
//! The gradients travel in buckets: the parameters' gradients flattened and concatenated in
//! declaration order, up to [`BUCKET_BYTES`] each, the unit a communicator reduces.
//!
//! One reduction path serves both kinds of ranks. [`Ranks`] adds the buckets of the ranks
//! this process runs into a running sum (in rank order), hands each sum to a [`Collective`]
//! (the sum across processes), divides by the number of ranks and sets the gradients:
//! - `--ranks N`: N ranks simulated one after another in one process; the collective is
//!   [`Alone`] (one process: the sum is the input);
//! - `--gpus N`: one rank per process and GPU; the collective is NCCL's all-reduce
//!   (`gpus.rs`). The code runs K simulated ranks in each of N processes too (N x K ranks,
//!   `threads.rs` tests it); the flags refuse that combination for now.
//!
//! The buckets are reduced after backward, not overlapped with it: the engine's backward is
//! one call with no hook per finished gradient, and its one stream would run the all-reduce
//! after the backward kernels anyway (docs/TRAINING.md).

use crate::{optim::Param, Error, Result};
use mamba_engine::Tensor;
use std::ops::Range;

pub mod threads;

/// Largest bucket (gradient bytes reduced at once): 25 MiB, as PyTorch DDP's default.
pub const BUCKET_BYTES: usize = 25 << 20;

/// Consecutive runs of parameters, each at most `max_bytes` of f32 gradients (a larger
/// parameter is a bucket of its own).
pub fn buckets(params: &[Param], max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, p) in params.iter().enumerate() {
        let b = 4 * p.tensor.numel();
        if i > start && bytes + b > max_bytes {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < params.len() {
        out.push(start..params.len());
    }
    out
}

/// The gradients of `params[range]` as one flat tensor, and which parameters had one (a
/// parameter without one, e.g. an MoE expert that got no tokens on this rank, counts as
/// zeros; if no rank gave it a gradient, it gets none, as with one rank, and AdamW skips it).
pub fn flatten(params: &[Param], range: Range<usize>) -> Result<(Tensor, Vec<bool>)> {
    let mut had = Vec::new();
    let flat: Vec<Tensor> = params[range]
        .iter()
        .map(|p| {
            let t = &p.tensor;
            had.push(t.grad().is_some());
            let g = match t.grad() {
                Some(g) => g,
                None => Tensor::zeros(t.shape(), t.dtype(), t.device())?,
            };
            Ok(g.reshape(&[t.numel()])?)
        })
        .collect::<Result<_>>()?;
    Ok((Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)?, had))
}

/// Set the gradients of `params[range]` from the flat `bucket` ([`flatten`]'s layout), none
/// where `had` is false.
pub fn unflatten(params: &[Param], range: Range<usize>, bucket: &Tensor, had: &[bool]) -> Result<()> {
    let sizes: Vec<usize> = params[range.clone()].iter().map(|p| p.tensor.numel()).collect();
    for ((p, g), &had) in params[range].iter().zip(bucket.split(&sizes, 0)?).zip(had) {
        p.tensor.set_grad(if had { Some(g.reshape(p.tensor.shape())?.contiguous()?) } else { None })?;
    }
    Ok(())
}

/// The sum of a tensor over the processes taking part: the transport under [`Ranks`].
/// Every process must make the same calls in the same order (each is a collective).
pub trait Collective {
    /// This process's index, from 0.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn processes(&self) -> usize;
    /// The sum over the processes of `t` (flat, contiguous, on the model's device).
    fn sum(&mut self, t: Tensor) -> Result<Tensor>;
    /// `values` replaced by their sum over the processes (small host vectors).
    fn sum_host(&mut self, values: &mut [f64]) -> Result<()>;
    /// An error the transport met in the background, checked between steps.
    fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// One process: every sum is its input (the simulated ranks of `--ranks`).
pub struct Alone;

impl Collective for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn processes(&self) -> usize {
        1
    }
    fn sum(&mut self, t: Tensor) -> Result<Tensor> {
        Ok(t)
    }
    fn sum_host(&mut self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// The reduction of one step: the ranks this process runs add their gradients (and a few
/// values to average: the losses, each MoE layer's load) into running sums, one extra copy
/// of the gradients, not one per rank; [`Ranks::finish`] sums those across the processes
/// and sets every gradient to the mean over all ranks.
pub struct Ranks {
    world: usize,
    plan: Vec<Range<usize>>,
    sums: Vec<Option<Tensor>>,
    /// Per parameter, how many ranks gave it a gradient (f64: it travels with `host`).
    had: Vec<f64>,
    values: Option<Tensor>,
    host: Vec<f64>,
}

impl Ranks {
    /// A step over `world` ranks in all, with `params` in buckets of at most [`BUCKET_BYTES`].
    pub fn new(world: usize, params: &[Param]) -> Result<Ranks> {
        if world == 0 {
            return Err(Error::Settings("data parallelism needs at least 1 rank".into()));
        }
        let plan = buckets(params, BUCKET_BYTES);
        let (sums, had) = (vec![None; plan.len()], vec![0.0; params.len()]);
        Ok(Ranks { world, sums, plan, had, values: None, host: Vec::new() })
    }

    /// Add the gradients one rank left in `params` (then clear them for the next rank), its
    /// `values` (a small tensor on the model's device) and its `host` values.
    pub fn add_rank(&mut self, params: &[Param], values: &Tensor, host: &[f64]) -> Result<()> {
        for (sum, range) in self.sums.iter_mut().zip(&self.plan) {
            let (flat, had) = flatten(params, range.clone())?;
            for (count, had) in self.had[range.clone()].iter_mut().zip(had) {
                *count += f64::from(u8::from(had));
            }
            *sum = Some(match sum.take() {
                None => flat,
                Some(s) => s.add(&flat)?,
            });
        }
        params.iter().for_each(|p| p.tensor.zero_grad());
        let values = values.detach();
        self.values = Some(match self.values.take() {
            None => values,
            Some(v) => v.add(&values)?,
        });
        if self.host.is_empty() {
            self.host = host.to_vec();
        } else {
            self.host.iter_mut().zip(host).for_each(|(s, v)| *s += v);
        }
        Ok(())
    }

    /// Sum everything across the processes, set every parameter's gradient to the mean over
    /// all ranks (none where no rank gave one), and return the means of the values.
    pub fn finish(self, params: &[Param], collective: &mut dyn Collective) -> Result<(Tensor, Vec<f64>)> {
        let Some(values) = self.values else {
            return Err(Error::Settings("data parallelism: no rank ran in this process".into()));
        };
        let scale = 1.0 / self.world as f64;
        // Queue every bucket's sum first, then the flags: the one wait for the host comes last.
        let sums =
            self.sums.into_iter().map(|s| s.map(|s| collective.sum(s)).transpose()).collect::<Result<Vec<_>>>()?;
        let values = collective.sum(values)?.mul_scalar(scale)?;
        let mut host = [self.had, self.host].concat();
        collective.sum_host(&mut host)?;
        let (had, host) = host.split_at(params.len());
        for (sum, range) in sums.into_iter().zip(self.plan) {
            if let Some(s) = sum {
                let flags: Vec<bool> = had[range.clone()].iter().map(|&n| n > 0.0).collect();
                unflatten(params, range, &s.mul_scalar(scale)?, &flags)?;
            }
        }
        Ok((values, host.iter().map(|v| v * scale).collect()))
    }
}

/// Rows `rank * rows/n ..` of a row-major batch of `rows` rows: the shard of one rank.
pub fn shard<T: Clone>(values: &[T], rows: usize, n: usize, rank: usize) -> Result<Vec<T>> {
    if n == 0 || rank >= n || !rows.is_multiple_of(n) || !values.len().is_multiple_of(rows.max(1)) {
        return Err(Error::Settings(format!(
            "cannot cut {} values in {rows} rows into {n} equal shards (rank {rank}): --ranks must divide --batch",
            values.len()
        )));
    }
    let per = values.len() / rows * (rows / n);
    Ok(values[rank * per..(rank + 1) * per].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamW;
    use mamba_engine::{DType, Device};

    fn params(sizes: &[usize]) -> Vec<Param> {
        let named = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (format!("p{i}"), Tensor::zeros(&[n], DType::F32, Device::Cpu).unwrap().requires_grad(), true)
            })
            .collect();
        AdamW::new(named, 1e-3, 0.0).unwrap().params
    }

    #[test]
    fn buckets_hold_whole_parameters_up_to_the_size() {
        let p = params(&[3, 5, 2, 10, 1]); // 12, 20, 8, 40, 4 bytes
        assert_eq!(buckets(&p, 32), [0..2, 2..3, 3..4, 4..5]);
        assert_eq!(buckets(&p, 1 << 20), vec![Range { start: 0, end: 5 }]);
        assert!(buckets(&[], 32).is_empty());
    }

    #[test]
    fn flatten_unflatten_round_trip_and_the_mean() {
        let p = params(&[2, 3, 1]);
        let grad = |v: Vec<f32>| Some(Tensor::from_vec(v.clone(), &[v.len()]).unwrap());
        let mut ranks = Ranks::new(2, &p).unwrap();
        p[1].tensor.set_grad(grad(vec![1.0, 2.0, 3.0])).unwrap(); // rank 0: p0, p2 have none
        assert_eq!(flatten(&p, 0..3).unwrap().0.to_vec_f64().unwrap(), [0.0, 0.0, 1.0, 2.0, 3.0, 0.0]);
        ranks.add_rank(&p, &Tensor::from_vec(vec![2.0f32], &[1]).unwrap(), &[1.0, 0.0]).unwrap();
        assert!(p.iter().all(|p| p.tensor.grad().is_none()), "cleared for the next rank");
        p[0].tensor.set_grad(grad(vec![2.0, 4.0])).unwrap(); // rank 1: p2 none again
        p[1].tensor.set_grad(grad(vec![1.0, 0.0, 1.0])).unwrap();
        ranks.add_rank(&p, &Tensor::from_vec(vec![4.0f32], &[1]).unwrap(), &[0.0, 1.0]).unwrap();
        let (values, host) = ranks.finish(&p, &mut Alone).unwrap();
        assert_eq!((values.to_vec_f64().unwrap(), host), (vec![3.0], vec![0.5, 0.5]));
        assert_eq!(p[0].tensor.grad().unwrap().to_vec_f64().unwrap(), [1.0, 2.0]);
        assert_eq!(p[1].tensor.grad().unwrap().to_vec_f64().unwrap(), [1.0, 1.0, 2.0]);
        assert!(p[2].tensor.grad().is_none(), "no rank gave p2 a gradient");
    }

    #[test]
    fn shards_split_rows_and_refuse_what_does_not_divide() {
        assert_eq!(shard(&[0, 1, 2, 3, 4, 5, 6, 7], 4, 2, 1).unwrap(), [4, 5, 6, 7]);
        assert!(shard(&[0, 1, 2], 3, 2, 0).is_err());
        assert!(shard(&[0, 1], 2, 0, 0).is_err());
        assert!(shard(&[0, 1], 2, 2, 2).is_err());
        assert!(Ranks::new(0, &params(&[1])).is_err());
    }
}
