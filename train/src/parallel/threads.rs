//! Processes simulated by threads of one process: a [`Collective`] whose sum meets the
//! other threads at a barrier and adds their values in rank order (in f64), so every thread
//! gets the same bits. It runs the reduction path of `--gpus N` (one rank per process, each
//! with its own model, shard and optimizer) on the CPU, where tests can check it.

use super::Collective;
use crate::{Error, Result};
use mamba_engine::Tensor;
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    slots: Mutex<Vec<Option<Vec<f64>>>>,
    barrier: Barrier,
}

/// One thread's member of a group of `n` (see [`Threads::group`]).
pub struct Threads {
    rank: usize,
    n: usize,
    shared: Arc<Shared>,
}

impl Threads {
    /// The `n` members of one group, rank 0 first; give each to its own thread.
    pub fn group(n: usize) -> Vec<Threads> {
        let shared = Arc::new(Shared { slots: Mutex::new(vec![None; n]), barrier: Barrier::new(n) });
        (0..n).map(|rank| Threads { rank, n, shared: shared.clone() }).collect()
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }

    fn processes(&self) -> usize {
        self.n
    }

    fn sum(&mut self, t: Tensor) -> Result<Tensor> {
        let mut values = t.to_vec_f64()?;
        self.sum_host(&mut values)?;
        Ok(Tensor::from_f64(&values, t.shape(), t.dtype())?.to(t.device())?)
    }

    fn sum_host(&mut self, values: &mut [f64]) -> Result<()> {
        let lock = || self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        lock()[self.rank] = Some(values.to_vec());
        self.shared.barrier.wait(); // every slot written
        let summed = {
            let slots = lock();
            let all: Vec<&Vec<f64>> = slots.iter().flatten().filter(|s| s.len() == values.len()).collect();
            (all.len() == self.n)
                .then(|| (0..values.len()).map(|i| all.iter().map(|s| s[i]).sum::<f64>()))
                .map(|sums| sums.collect::<Vec<f64>>())
        };
        self.shared.barrier.wait(); // every thread has read: the next call may write again
        let summed = summed.ok_or_else(|| {
            Error::Settings(format!("rank {}: the threads summed vectors of different lengths", self.rank))
        })?;
        values.copy_from_slice(&summed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamW;
    use crate::parallel::{Alone, Ranks};
    use mamba_engine::{DType, Device};

    fn params() -> Vec<crate::optim::Param> {
        let named = [3, 2]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (format!("p{i}"), Tensor::zeros(&[n], DType::F32, Device::Cpu).unwrap().requires_grad(), true)
            })
            .collect();
        AdamW::new(named, 1e-3, 0.0).unwrap().params
    }

    /// Rank r's gradients: p0 = (r, 2r, 1), p1 only on rank 3.
    fn give(p: &[crate::optim::Param], r: usize) {
        let r = r as f32;
        p[0].tensor.set_grad(Some(Tensor::from_vec(vec![r, 2.0 * r, 1.0], &[3]).unwrap())).unwrap();
        if r == 3.0 {
            p[1].tensor.set_grad(Some(Tensor::from_vec(vec![8.0f32, 4.0], &[2]).unwrap())).unwrap();
        }
    }

    fn grads(p: &[crate::optim::Param]) -> Vec<Option<Vec<f64>>> {
        p.iter().map(|p| p.tensor.grad().map(|g| g.to_vec_f64().unwrap())).collect()
    }

    /// 4 ranks as 2 threads x 2 simulated ranks give what 4 simulated ranks in one process
    /// give: the same gradients (and "had" flags) and value means, on every thread.
    #[test]
    fn threads_reduce_as_one_process_does() {
        let p = params();
        let mut one = Ranks::new(4, &p).unwrap();
        for r in 0..4 {
            give(&p, r);
            one.add_rank(&p, &Tensor::from_vec(vec![r as f32], &[1]).unwrap(), &[r as f64]).unwrap();
        }
        let (values, host) = one.finish(&p, &mut Alone).unwrap();
        let want = (grads(&p), values.to_vec_f64().unwrap(), host);
        assert_eq!(want.0, [Some(vec![1.5, 3.0, 1.0]), Some(vec![2.0, 1.0])]);
        let got: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = Threads::group(2)
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || {
                        let p = params();
                        let mut ranks = Ranks::new(4, &p).unwrap();
                        for r in 2 * c.rank()..2 * c.rank() + 2 {
                            give(&p, r);
                            let v = Tensor::from_vec(vec![r as f32], &[1]).unwrap();
                            ranks.add_rank(&p, &v, &[r as f64]).unwrap();
                        }
                        let (values, host) = ranks.finish(&p, &mut c).unwrap();
                        (grads(&p), values.to_vec_f64().unwrap(), host)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got, [want.clone(), want]);
    }
}
