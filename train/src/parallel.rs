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
//! declaration order, up to [`BUCKET_BYTES`] each, the unit a communicator reduces (so that on
//! several GPUs the first bucket can be reduced while backward still fills the next).
//! [`SimulatedRanks`] runs the ranks one after another on the one device and sums their
//! buckets in rank order (a running sum); a multi-GPU communicator (NCCL, one rank per GPU) is not built yet
//! (issue 16).

use crate::{optim::Param, Error, Result};
use mamba_engine::Tensor;
use std::ops::Range;

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

/// N ranks simulated on one device, one after another: each rank's buckets are added to a
/// running sum as it finishes (one extra copy of the gradients, not N), in rank order; the
/// mean is the all-reduce's result.
pub struct SimulatedRanks {
    n: usize,
    plan: Vec<Range<usize>>,
    sums: Vec<Option<(Tensor, Vec<bool>)>>,
}

impl SimulatedRanks {
    /// `n` ranks over `params` in buckets of at most [`BUCKET_BYTES`].
    pub fn new(n: usize, params: &[Param]) -> Result<SimulatedRanks> {
        if n == 0 {
            return Err(Error::Settings("data parallelism needs at least 1 rank".into()));
        }
        let plan = buckets(params, BUCKET_BYTES);
        Ok(SimulatedRanks { n, sums: vec![None; plan.len()], plan })
    }

    /// Add the gradients one rank left in `params`, then clear them for the next rank.
    pub fn add_rank(&mut self, params: &[Param]) -> Result<()> {
        for (sum, range) in self.sums.iter_mut().zip(&self.plan) {
            let (flat, had) = flatten(params, range.clone())?;
            *sum = Some(match sum.take() {
                None => (flat, had),
                Some((s, h)) => (s.add(&flat)?, h.iter().zip(&had).map(|(a, b)| *a || *b).collect()),
            });
        }
        params.iter().for_each(|p| p.tensor.zero_grad());
        Ok(())
    }

    /// Set every parameter's gradient to the mean over the ranks added.
    pub fn finish(self, params: &[Param]) -> Result<()> {
        let scale = 1.0 / self.n as f64;
        for (sum, range) in self.sums.into_iter().zip(self.plan) {
            if let Some((s, had)) = sum {
                unflatten(params, range, &s.mul_scalar(scale)?, &had)?;
            }
        }
        Ok(())
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
        let mut ranks = SimulatedRanks::new(2, &p).unwrap();
        p[1].tensor.set_grad(grad(vec![1.0, 2.0, 3.0])).unwrap(); // rank 0: p0, p2 have none
        assert_eq!(flatten(&p, 0..3).unwrap().0.to_vec_f64().unwrap(), [0.0, 0.0, 1.0, 2.0, 3.0, 0.0]);
        ranks.add_rank(&p).unwrap();
        assert!(p.iter().all(|p| p.tensor.grad().is_none()), "cleared for the next rank");
        p[0].tensor.set_grad(grad(vec![2.0, 4.0])).unwrap(); // rank 1: p2 none again
        p[1].tensor.set_grad(grad(vec![1.0, 0.0, 1.0])).unwrap();
        ranks.add_rank(&p).unwrap();
        ranks.finish(&p).unwrap();
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
        assert!(SimulatedRanks::new(0, &params(&[1])).is_err());
    }
}
