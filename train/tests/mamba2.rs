//! `mamba train --layer mamba2` as a user runs it: a tiny Mamba-2 byte model trains, its
//! checkpoint says what it is, `--resume` continues it bit for bit, `mamba eval` and
//! `mamba generate` read it, and the Mamba-2 flags' errors name the flag.

mod common;
use common::{mamba, scratch};
use std::path::Path;

/// A tiny Mamba-2: d_inner 64 in 4 heads of 16, 2 groups of d_state 8, chunks of 8 over
/// windows of 24 bytes (3 chunks), 2 layers.
#[rustfmt::skip]
const TINY_MAMBA2: &[&str] = &[
    "--layer", "mamba2", "--d-model", "32", "--n-layer", "2", "--headdim", "16", "--ngroups", "2", "--d-state", "8",
    "--chunk-size", "8", "--batch", "2", "--seq-len", "24", "--warmup", "1", "--eval-every", "2", "--eval-windows",
    "2", "--sample-tokens", "0", "--quiet",
];

/// `mamba train` with the tiny Mamba-2 and `extra` flags into `out`.
fn train(out: &Path, extra: &[&str]) {
    let (ok, text) = mamba(&[&["train"][..], TINY_MAMBA2, extra, &["--out", out.to_str().unwrap()]].concat());
    assert!(ok, "{text}");
}

/// (step, loss bits) of every step record of a run's metrics.
fn losses(out: &Path) -> Vec<(u64, u64)> {
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?.to_bits())))
        .collect()
}

#[test]
fn a_mamba2_model_trains_resumes_evaluates_and_generates() {
    let (straight, resumed) = (scratch("m2-straight"), scratch("m2-resumed"));
    train(&straight, &["--steps", "5"]);
    train(&resumed, &["--steps", "5", "--stop-after", "3"]);
    let ckpt = resumed.join("checkpoint");
    let config = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&config).unwrap();
    let ssm = &cfg["ssm_cfg"];
    assert_eq!(ssm["layer"], "Mamba2", "{config}");
    let sizes = ["d_state", "headdim", "ngroups", "chunk_size"].map(|k| ssm[k].as_u64());
    assert_eq!(sizes, [Some(8), Some(16), Some(2), Some(8)], "{config}");

    // --resume continues the run: the same losses as the straight run, bit for bit; a model
    // flag that differs is ignored with a warning.
    let (ok, text) = mamba(&["train", "--resume", ckpt.to_str().unwrap(), "--headdim", "32", "--quiet"]);
    assert!(ok, "{text}");
    assert!(text.contains("warning: --headdim 32 ignored") && text.contains("(--headdim 16)"), "{text}");
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(losses(&straight).iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);

    let ckpt = ckpt.to_str().unwrap();
    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt]);
    assert!(ok && line.starts_with("bits per byte ") && line.contains("(2 windows of 24 bytes)"), "{line}");
    let (ok, text) = mamba(&["generate", "--checkpoint", ckpt, "--prompt", "fn ", "--tokens", "20"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("fn ") && text.len() >= 3 + 20, "{text:?}");
    for dir in [straight, resumed] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn mamba2_flag_errors_name_the_flag_and_make_nothing() {
    let dir = scratch("m2-flags");
    let out = dir.to_str().unwrap();
    for (flags, expected) in [
        (&["--layer", "mamba2", "--headdim", "48"][..], "--headdim 48 must divide d_inner = 2 x --d-model = 256"),
        (&["--layer", "mamba2", "--headdim", "32", "--ngroups", "3"], "--ngroups 3 must divide the 8 heads"),
        (&["--layer", "mamba2", "--chunk-size", "0"], "--chunk-size must be at least 1"),
        (&["--ngroups", "2"], "--ngroups is a Mamba-2 setting: add --layer mamba2"),
        (&["--layer", "mamba3"], "--layer"),
    ] {
        let (ok, text) = mamba(&[&["train"][..], flags, &["--out", out]].concat());
        assert!(!ok && text.contains(expected), "{flags:?}: {text}");
    }
    assert!(!dir.exists(), "a refused run must not create its --out");
}
