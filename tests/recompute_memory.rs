//! The Mamba-1 block with `recompute` (the `checkpoint` op around everything between in_proj
//! and out_proj), measured with the ledger on a 2-layer LM (d_model 64, batch 2 x 512): the
//! same loss and the same gradients, bit for bit, and for backward each block keeps only
//! in_proj's output (B, 2 d_inner, L) and out_proj's input (B, L, d_inner) of its
//! activations, where the plain block keeps the conv output, its SiLU, x_proj's output, delta
//! and the scan's saved states too. Run with `--nocapture` to see the numbers.

use mamba_engine::{
    autograd::SavedReport,
    ledger::{human, saved_in_graph},
    DType, Rng,
};
use mamba_model::{MambaConfig, MambaLM};

const D_MODEL: usize = 64;
const LAYERS: usize = 2;
const BATCH: usize = 2;
const LEN: usize = 512;

/// Loss, every gradient, and what the graph keeps for backward.
fn run(recompute: bool) -> (Vec<f32>, Vec<Vec<f32>>, SavedReport) {
    let mut model = MambaLM::new(MambaConfig::new(D_MODEL, LAYERS), DType::F32, 5).unwrap();
    model.recompute = recompute;
    let mut rng = Rng::new(9);
    let ids: Vec<usize> = (0..BATCH * LEN).map(|_| (rng.uniform() * 256.0) as usize % 256).collect();
    let targets: Vec<i64> = ids.iter().map(|&i| ((i * 7 + 3) % 256) as i64).collect();
    let loss = model.loss(&ids, &targets, BATCH, LEN).unwrap();
    let saved = saved_in_graph(&loss);
    loss.backward().unwrap();
    let grads = model.parameters().iter().map(|p| p.tensor.grad().unwrap().to_vec::<f32>().unwrap()).collect();
    (loss.to_vec::<f32>().unwrap(), grads, saved)
}

#[test]
fn recompute_keeps_less_and_computes_the_same() {
    let (loss, grads, plain) = run(false);
    let (loss_r, grads_r, kept) = run(true);
    assert_eq!(loss, loss_r, "recompute changed the loss");
    assert_eq!(grads, grads_r, "recompute changed a gradient");

    // What each checkpoint node keeps: xz and the seven inner parameters, nothing else; and no
    // op of the block's inside appears in the graph any more.
    let (di, n, r, k) = (2 * D_MODEL, 16, D_MODEL.div_ceil(16), 4); // the Mamba-1 defaults
    let params = di * k + di + (r + 2 * n) * di + di * r + di + di * n + di;
    let xz = BATCH * LEN * 2 * di;
    assert_eq!(kept.per_op["checkpoint"].calls, LAYERS);
    assert_eq!(
        kept.per_op["checkpoint"].bytes,
        LAYERS * 4 * (xz + params),
        "a checkpoint kept more than xz and its parameters"
    );
    for inside in ["selective_scan", "conv1d_causal", "silu", "softplus"] {
        assert!(!kept.per_op.contains_key(inside), "{inside} is still in the recompute graph");
    }
    let (plain, kept) = (plain.total_bytes, kept.total_bytes);

    // Of a block's activations, what recompute still keeps: xz (B, 2 d_inner, L) for the
    // checkpoint and y (B, L, d_inner) for out_proj, f32. Parameters and everything outside the
    // blocks (embedding, norms, logits) are kept by both runs alike.
    let d_inner = 2 * D_MODEL;
    let per_block_kept = 4 * BATCH * LEN * (2 * d_inner + d_inner);
    println!("Mamba-1 LM d_model {D_MODEL} x {LAYERS}, batch {BATCH} x {LEN}, f32, bytes kept for backward:");
    println!("  plain:     {plain:>10} ({})", human(plain));
    println!("  recompute: {kept:>10} ({})  (xz + y per block: {})", human(kept), human(per_block_kept));
    println!("  saved: {} per block", human((plain - kept) / LAYERS));
    assert!(
        plain - kept >= LAYERS * 4 * BATCH * LEN * (3 * d_inner),
        "recompute should drop at least the conv output, its SiLU and delta of every block: {plain} -> {kept}"
    );
}
