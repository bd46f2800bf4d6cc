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
//! buckets in rank order; a multi-GPU communicator (NCCL, one rank per GPU) is not built yet
//! (issue 16).

use crate::{optim::Param, Result};
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

/// The gradients of `params[range]` as one flat tensor (zeros for a parameter without one:
/// on another rank it may have one, e.g. an MoE expert that got tokens only there).
pub fn flatten(params: &[Param], range: Range<usize>) -> Result<Tensor> {
    let flat: Vec<Tensor> = params[range]
        .iter()
        .map(|p| {
            let t = &p.tensor;
            let g = match t.grad() {
                Some(g) => g,
                None => Tensor::zeros(t.shape(), t.dtype(), t.device())?,
            };
            Ok(g.reshape(&[t.numel()])?)
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)?)
}

/// Set the gradients of `params[range]` from the flat `bucket` ([`flatten`]'s layout).
pub fn unflatten(params: &[Param], range: Range<usize>, bucket: &Tensor) -> Result<()> {
    let sizes: Vec<usize> = params[range.clone()].iter().map(|p| p.tensor.numel()).collect();
    for (p, g) in params[range].iter().zip(bucket.split(&sizes, 0)?) {
        p.tensor.set_grad(Some(g.reshape(p.tensor.shape())?.contiguous()?))?;
    }
    Ok(())
}

/// N ranks simulated on one device: [`all_reduce_mean`](SimulatedRanks::all_reduce_mean) of
/// each bucket, summed in rank order.
pub struct SimulatedRanks {
    pub n: usize,
}

impl SimulatedRanks {
    /// (1/N) Σ_r buckets[r]: every rank's copy of one bucket, reduced.
    pub fn all_reduce_mean(&self, buckets: &[Tensor]) -> Result<Tensor> {
        let mut sum = buckets[0].clone();
        for b in &buckets[1..] {
            sum = sum.add(b)?;
        }
        Ok(sum.mul_scalar(1.0 / self.n as f64)?)
    }
}

/// Rows `rank * rows/n ..` of a row-major (rows, len) batch: the shard of one rank.
pub fn shard<T: Clone>(values: &[T], rows: usize, n: usize, rank: usize) -> Vec<T> {
    let per = values.len() / rows * (rows / n);
    values[rank * per..(rank + 1) * per].to_vec()
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
        let p = params(&[2, 3]);
        p[1].tensor.set_grad(Some(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap())).unwrap();
        let flat = flatten(&p, 0..2).unwrap(); // p0 has no gradient: zeros
        assert_eq!(flat.to_vec_f64().unwrap(), [0.0, 0.0, 1.0, 2.0, 3.0]);
        let other = Tensor::from_vec(vec![2.0f32, 4.0, 1.0, 0.0, 1.0], &[5]).unwrap();
        let mean = SimulatedRanks { n: 2 }.all_reduce_mean(&[flat, other]).unwrap();
        unflatten(&p, 0..2, &mean).unwrap();
        assert_eq!(p[0].tensor.grad().unwrap().to_vec_f64().unwrap(), [1.0, 2.0]);
        assert_eq!(p[1].tensor.grad().unwrap().to_vec_f64().unwrap(), [1.0, 1.0, 2.0]);
        assert_eq!(shard(&[0, 1, 2, 3, 4, 5, 6, 7], 4, 2, 1), [4, 5, 6, 7]);
    }
}
