//! How far back an induction-heads model can remember (docs/PAPER.md, "What differs"): for
//! each Mamba-1 layer of a checkpoint, fed examples of `--len` positions, the memory horizon
//! of each channel d,
//!
//! ```text
//! H_d = 1 / mean_t (Δ_t,d · min_n |A_dn|)
//! ```
//!
//! the number of tokens after which its slowest state keeps e^-1 of a token it stored (the
//! state decays by exp(Δ A) each step). The trigger and answer tokens are left out of the
//! mean (where a selective model opens its gate on purpose). A model that recalls a token N
//! positions back needs channels with H_d well beyond N.
//!
//! ```text
//! cargo run --release -p mamba-train --example induction_memory -- CHECKPOINT_DIR [LEN]
//! ```

use mamba_engine::{Rng, Tensor};
use mamba_model::{block::through_blocks, Mixer};
use mamba_train::{checkpoint::load_model, tasks::Task};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: induction_memory CHECKPOINT_DIR [LEN]")?;
    let len: usize = args.get(2).map_or(Ok(4096), |s| s.parse())?;
    let model = load_model(Path::new(dir))?;
    let task = Task::from_name("induction-heads", len, 0, model.cfg.vocab_size - 1)?;
    let batch = 4;
    let (ids, _) = task.batch(batch, &mut Rng::new(1));
    let trigger = model.cfg.vocab_size - 1;
    // Positions that are neither a trigger nor the token right after one.
    let plain: Vec<bool> =
        (0..ids.len()).map(|i| ids[i] != trigger && (i % len == 0 || ids[i - 1] != trigger)).collect();
    let h = model.embedding.embedding(&ids, &[batch, len])?;
    let mix = |layer: usize, mixer: &Mixer, x: &Tensor| {
        if let Mixer::Mamba1(m) = mixer {
            report(layer, &horizons(m, x, &plain)?);
        }
        mixer.forward(x, model.scan_chunk, false)
    };
    through_blocks(&model.layers, h, mix, None)?;
    Ok(())
}

/// H_d for every channel of `m` on its input x (B, L, d_model).
fn horizons(m: &mamba_model::mixer::Mamba1, x: &Tensor, plain: &[bool]) -> mamba_model::Result<Vec<f64>> {
    let linear = |x: &Tensor, w: &Tensor| x.matmul(&w.transpose(0, 1)?);
    let d = m.dims;
    let xz = linear(x, &m.in_proj)?.transpose(1, 2)?; // (B, 2 d_inner, L)
    let conv = xz
        .narrow(1, 0, d.d_inner)?
        .conv1d_causal(&m.conv_weight.reshape(&[d.d_inner, d.d_conv])?, Some(&m.conv_bias))?;
    let dt = linear(&conv.silu()?.transpose(1, 2)?, &m.x_proj)?.narrow(2, 0, d.dt_rank)?;
    let delta = linear(&dt, &m.dt_proj_weight)?.add(&m.dt_proj_bias)?.softplus()?.to_vec_f64()?; // (B, L, d_inner)
    let a_log = m.a_log.to_vec_f64()?;
    let slowest: Vec<f64> =
        a_log.chunks(d.d_state).map(|row| row.iter().fold(f64::INFINITY, |a, v| a.min(v.exp()))).collect();
    let mut rate = vec![0.0; d.d_inner];
    let count = plain.iter().filter(|p| **p).count() as f64;
    for (pos, _) in plain.iter().enumerate().filter(|(_, p)| **p) {
        for (c, r) in rate.iter_mut().enumerate() {
            *r += delta[pos * d.d_inner + c] * slowest[c] / count;
        }
    }
    Ok(rate.iter().map(|r| 1.0 / r).collect())
}

fn report(layer: usize, h: &[f64]) {
    let mut sorted = h.to_vec();
    sorted.sort_by(f64::total_cmp);
    let beyond = |n: f64| sorted.iter().filter(|v| **v > n).count();
    println!(
        "layer {layer}: {} channels, horizon median {:.0}, max {:.0} tokens; beyond 2^8: {}, 2^12: {}, 2^16: {}, 2^20: {}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        beyond(256.0),
        beyond(4096.0),
        beyond(65536.0),
        beyond(1048576.0)
    );
}
