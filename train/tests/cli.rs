//! The `mamba` binary as a user runs it.

mod common;
use common::mamba;

#[test]
fn every_subcommand_has_help() {
    for cmd in [vec!["--help"], vec!["train", "--help"], vec!["generate", "--help"]] {
        let (ok, text) = mamba(&cmd);
        assert!(ok && text.contains("Usage"), "{cmd:?}: {text}");
    }
    let (_, text) = mamba(&["train", "--help"]);
    for flag in ["--text", "--task", "--steps", "--batch", "--seq-len", "--lr", "--out", "--seed", "--resume"] {
        assert!(text.contains(flag), "train --help lacks {flag}");
    }
}

#[test]
fn train_then_generate_streams_bytes() {
    let dir = std::env::temp_dir().join(format!("mamba-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let (ok, text) = mamba(&[
        "train",
        "--d-model",
        "16",
        "--n-layer",
        "1",
        "--batch",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "3",
        "--eval-every",
        "3",
        "--eval-windows",
        "1",
        "--sample-tokens",
        "8",
        "--out",
        out,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("val_bpb") && text.contains("sample:"), "{text}");
    let ckpt = dir.join("checkpoint");
    let (ok, text) = mamba(&["generate", "--checkpoint", ckpt.to_str().unwrap(), "--prompt", "fn ", "--tokens", "20"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("fn ") && text.len() >= 3 + 20, "{text:?}");
    let (ok, text) = mamba(&["generate", "--checkpoint", "/nonexistent/ckpt"]);
    assert!(!ok && text.contains("/nonexistent/ckpt"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Without `--features cuda`, `--device cuda` is refused up front by every subcommand, naming
/// the flag and how to build, before a checkpoint is read or a run folder made.
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_says_how_to_build() {
    let out = common::scratch("no-cuda");
    let out = out.to_str().unwrap();
    for args in [
        &["train", "--device", "cuda", "--out", out][..],
        &["eval", "--device", "cuda", "--checkpoint", "/nonexistent"],
        &["generate", "--device", "cuda", "--checkpoint", "/nonexistent"],
    ] {
        let (ok, text) = mamba(args);
        assert!(
            !ok && text.contains("--device cuda: this build has no CUDA backend") && text.contains("--features cuda"),
            "{args:?}: {text}"
        );
    }
    assert!(!std::path::Path::new(out).exists());
}

/// `--recompute` changes what is kept for backward, not the numbers: the same losses and
/// gradient norms, step for step.
#[test]
fn recompute_trains_to_the_same_losses() {
    let steps = |tag: &str, extra: &[&str]| -> Vec<String> {
        let out = common::scratch(tag);
        let mut args = vec!["train", "--steps", "3", "--eval-every", "1000", "--out", out.to_str().unwrap()];
        args.extend_from_slice(common::TINY);
        args.extend_from_slice(extra);
        let (ok, text) = mamba(&args);
        assert!(ok, "{text}");
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        // each step's line without its timing
        metrics
            .lines()
            .filter(|l| l.contains("\"loss\""))
            .map(|l| l.split(",\"tokens_per_s\"").next().unwrap().into())
            .collect()
    };
    let plain = steps("recompute-off", &[]);
    assert_eq!(plain.len(), 3, "{plain:?}");
    assert_eq!(plain, steps("recompute-on", &["--recompute"]));
}
