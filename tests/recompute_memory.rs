//! `recompute` (the `checkpoint` op around everything between in_proj and out_proj of each
//! mixer), measured with the ledger on 2-layer Mamba-1 and Mamba-2 LMs (d_model 64, batch
//! 2 x 512): the same loss and the same gradients, bit for bit, and each block's checkpoint
//! keeps only in_proj's output and the mixer's inner parameters; no op of the inside (conv,
//! SiLU, the scan) is left in the graph. With bf16 linear layers the graph keeps less again, and
//! less still with the Mamba-1 scan on bf16 inputs (`precision::set_scan_bf16`), whose loss and
//! gradients follow the f32 scan's. Run with `--nocapture` to see the numbers.

use mamba_engine::{
    autograd::SavedReport,
    ledger::{human, saved_in_graph},
    precision, DType, Rng,
};
use mamba_model::{Mamba2Config, MambaConfig, MambaLM, SsmConfig};

const D_MODEL: usize = 64;
const LAYERS: usize = 2;
const BATCH: usize = 2;
const LEN: usize = 512;

fn configs() -> [(&'static str, MambaConfig); 2] {
    let m2 = Mamba2Config { d_state: 16, headdim: 16, chunk_size: 64, ..Default::default() };
    [
        ("Mamba-1", MambaConfig::new(D_MODEL, LAYERS)),
        ("Mamba-2", MambaConfig { ssm_cfg: SsmConfig::Mamba2(m2), ..MambaConfig::new(D_MODEL, LAYERS) }),
    ]
}

/// Loss, every gradient, what the graph keeps for backward, and the bytes each checkpoint
/// should keep (in_proj's output and the mixer's parameters other than in/out_proj).
fn run(cfg: &MambaConfig, recompute: bool) -> (Vec<f32>, Vec<Vec<f32>>, SavedReport, usize) {
    let mut model = MambaLM::new(cfg.clone(), DType::F32, 5).unwrap();
    model.recompute = recompute;
    let mut rng = Rng::new(9);
    let ids: Vec<usize> = (0..BATCH * LEN).map(|_| (rng.uniform() * 256.0) as usize % 256).collect();
    let targets: Vec<i64> = ids.iter().map(|&i| ((i * 7 + 3) % 256) as i64).collect();
    let loss = model.loss(&ids, &targets, BATCH, LEN).unwrap();
    let saved = saved_in_graph(&loss);
    loss.backward().unwrap();
    let grads = model.parameters().iter().map(|p| p.tensor.grad().unwrap().to_vec::<f32>().unwrap()).collect();
    let mut per_checkpoint = 0;
    for p in model.parameters().iter().filter(|p| p.name.contains(".mixer.")) {
        if p.name.ends_with("in_proj.weight") {
            per_checkpoint += 4 * BATCH * LEN * p.tensor.shape()[0];
        } else if !p.name.ends_with("out_proj.weight") {
            per_checkpoint += 4 * p.tensor.numel();
        }
    }
    (loss.to_vec::<f32>().unwrap(), grads, saved, per_checkpoint)
}

#[test]
fn recompute_keeps_less_and_computes_the_same() {
    for (name, cfg) in configs() {
        let (loss, grads, plain, _) = run(&cfg, false);
        let (loss_r, grads_r, kept, expected) = run(&cfg, true);
        assert_eq!(loss, loss_r, "{name}: recompute changed the loss");
        assert_eq!(grads, grads_r, "{name}: recompute changed a gradient");
        let checkpoints = &kept.per_op["checkpoint"];
        assert_eq!(checkpoints.calls, LAYERS, "{name}");
        assert_eq!(
            checkpoints.bytes, expected,
            "{name}: the checkpoints kept more than in_proj's output and parameters"
        );
        for inside in ["selective_scan", "ssd", "conv1d_causal", "silu"] {
            assert!(!kept.per_op.contains_key(inside), "{name}: {inside} is still in the recompute graph");
        }
        let (plain, kept) = (plain.total_bytes, kept.total_bytes);
        println!("{name} LM d_model {D_MODEL} x {LAYERS}, batch {BATCH} x {LEN}, f32, bytes kept for backward:");
        println!("  plain {plain:>10} ({}), recompute {kept:>10} ({})", human(plain), human(kept));
        assert!(kept < plain, "{name}: recompute kept {kept} >= {plain}");
    }
}

/// Under `--precision bf16` each linear layer keeps the bf16 roundings of its input and weight
/// (2 bytes an element) instead of the f32 input, and with recompute each checkpoint keeps
/// in_proj's output in bf16 (`kept`): less is kept for backward, with or without recompute, and
/// recompute still computes the same loss and gradients bit for bit.
#[test]
fn bf16_linear_layers_keep_less() {
    for (name, cfg) in configs() {
        precision::set_matmul_bf16(true);
        let (plain, recomputed) = (run(&cfg, false), run(&cfg, true));
        precision::set_matmul_bf16(false);
        assert_eq!(plain.0, recomputed.0, "{name}: under bf16, recompute changed the loss");
        assert_eq!(plain.1, recomputed.1, "{name}: under bf16, recompute changed a gradient");
        for (recompute, bf16) in [(false, &plain), (true, &recomputed)] {
            let f32_bytes = run(&cfg, recompute).2.total_bytes;
            let bf16_bytes = bf16.2.total_bytes;
            println!(
                "{name}, recompute {recompute}: kept for backward fp32 {} bf16 {}",
                human(f32_bytes),
                human(bf16_bytes)
            );
            assert!(bf16_bytes < f32_bytes, "{name}, recompute {recompute}: bf16 kept {bf16_bytes} >= {f32_bytes}");
        }
    }
}

/// The Mamba-1 scans on bf16 u, delta, z (`precision::set_scan_bf16`, with bf16 linear layers):
/// the graph keeps less than with the f32 scan, and the loss and gradients follow it (the
/// inputs move by at most 2^-8 of themselves; the state and sums stay f32).
#[test]
fn bf16_scan_keeps_less_and_follows_the_f32_scan() {
    let cfg = MambaConfig::new(D_MODEL, LAYERS);
    precision::set_matmul_bf16(true);
    let f32_scan = run(&cfg, false);
    precision::set_scan_bf16(true);
    let (bf16_scan, recomputed) = (run(&cfg, false), run(&cfg, true));
    precision::set_scan_bf16(false);
    precision::set_matmul_bf16(false);
    assert_eq!(bf16_scan.0, recomputed.0, "with the bf16 scan, recompute changed the loss");
    assert_eq!(bf16_scan.1, recomputed.1, "with the bf16 scan, recompute changed a gradient");
    let (a, b) = (f32_scan.0[0] as f64, bf16_scan.0[0] as f64);
    assert!((a - b).abs() <= 1e-3 * a.abs(), "loss {b} with the bf16 scan, {a} without");
    for (i, (g, h)) in f32_scan.1.iter().zip(&bf16_scan.1).enumerate() {
        let diff: f64 = g.iter().zip(h).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(diff <= 2e-2 * norm.max(1e-12), "parameter {i}: gradient {diff} apart of {norm}");
    }
    let (kept, kept16) = (f32_scan.2.total_bytes, bf16_scan.2.total_bytes);
    println!(
        "Mamba-1, bf16 linear layers: kept for backward with the f32 scan {}, bf16 scan {}",
        human(kept),
        human(kept16)
    );
    assert!(kept16 < kept, "the bf16 scan kept {kept16} >= {kept}");
}
