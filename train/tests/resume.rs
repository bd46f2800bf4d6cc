//! What `--resume` changes and what it keeps, the flags' own messages, and the run's
//! metrics and chart, as a user sees them through the binary.

mod common;
use common::{mamba, scratch, TINY};
use std::path::Path;

/// A tiny run of `steps` steps (warmup 1, evaluation every 2) into `dir`.
fn tiny_run(dir: &Path, steps: &str) {
    let run = ["train", "--warmup", "1", "--steps", steps, "--eval-every", "2", "--out", dir.to_str().unwrap()];
    let (ok, text) = mamba(&[&run[..], TINY].concat());
    assert!(ok, "{text}");
}

/// (step, lr) of every step record of a run's metrics.
fn learning_rates(dir: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r["lr"].as_f64()?)))
        .collect()
}

#[test]
fn resume_applies_the_schedule_flags_continues_at_the_final_rate_and_warns_about_the_model() {
    let dir = scratch("apply");
    tiny_run(&dir, "4");
    let ckpt = dir.join("checkpoint");
    let ckpt = ckpt.to_str().unwrap();

    // A finished run has nothing to do at its own --steps: an error that says so.
    let (ok, text) = mamba(&["train", "--resume", ckpt, "--quiet"]);
    assert!(!ok && text.contains("is at step 4 and --steps is 4: nothing to train"), "{text}");

    let (ok, text) = mamba(&["train", "--resume", ckpt, "--steps", "8", "--lr", "1e-3", "--d-model", "32", "--quiet"]);
    assert!(ok, "{text}");
    assert!(text.contains("resume: --lr 0.001 (was 0.003)") && text.contains("resume: --steps 8 (was 4)"), "{text}");
    assert!(text.contains("warning: --d-model 32 ignored") && text.contains("(--d-model 16)"), "{text}");
    // Past the decay's end (step 4) the new peak's final rate holds: no jump back up.
    let lrs = learning_rates(&dir);
    assert_eq!(lrs.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    for &(step, lr) in &lrs[4..] {
        assert!((lr - 1e-4).abs() < 1e-12, "step {step}: lr {lr}, expected the final 1e-3 * 0.1");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn negative_numbers_get_the_flags_own_message() {
    let dir = scratch("negative");
    let out = dir.to_str().unwrap();
    for (flag, value, expected) in [
        ("--lr", "-1", "--lr must be a finite number >= 0, got -1"),
        ("--weight-decay", "-0.5", "--weight-decay must be a finite number >= 0, got -0.5"),
        ("--grad-clip", "-2", "--grad-clip must be a finite number > 0, got -2"),
        ("--min-lr-frac", "1.5", "--min-lr-frac is a fraction of --lr between 0 and 1, got 1.5"),
        ("--batch", "-1", "--batch"),
    ] {
        let (ok, text) = mamba(&["train", flag, value, "--out", out]);
        assert!(!ok && text.contains(expected), "{flag} {value}: {text}");
    }
    assert!(!dir.exists(), "a refused run must not create its --out");
}

#[test]
fn metrics_have_per_step_speed_and_the_chart_names_the_run() {
    let dir = scratch("chart");
    tiny_run(&dir, "2");
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["loss"].is_f64())
        .collect();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|r| r["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0)), "{text}");
    let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(svg.contains(&format!("mamba train: {name}")) && svg.contains(">bits per byte</text>"), "{svg}");
    let _ = std::fs::remove_dir_all(dir);
}
