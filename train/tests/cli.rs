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
    generate_options(&ckpt, &dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// `--prompt-file`, `--stop` and `--top-p` on the checkpoint of the test above.
fn generate_options(ckpt: &std::path::Path, dir: &std::path::Path) {
    let ckpt = ckpt.to_str().unwrap();
    let gen = |more: &[&str]| common::run(&[&["generate", "--checkpoint", ckpt][..], more].concat());
    let prompt = dir.join("prompt.txt");
    std::fs::write(&prompt, b"ab\xffc").unwrap(); // any bytes, not only UTF-8
    let out = gen(&["--prompt-file", prompt.to_str().unwrap(), "--tokens", "5"]);
    assert!(out.status.success() && out.stdout.starts_with(b"ab\xffc"), "{:?}", common::text(&out));

    // Greedy, the same bytes each time: stopping at the first printable byte after the first
    // ends right after it.
    let full = gen(&["--prompt", "x", "--temperature", "0", "--tokens", "200"]).stdout;
    let generated = &full[1..full.len() - 1]; // without the prompt and the final newline
    let k = 1 + generated[1..].iter().position(|b| b.is_ascii_graphic()).expect("a printable byte in 200");
    let stop = (generated[k] as char).to_string();
    let cut = gen(&["--prompt", "x", "--temperature", "0", "--tokens", "200", "--stop", &stop]).stdout;
    let first = 1 + generated.iter().position(|&b| b == generated[k]).unwrap();
    assert_eq!(cut, [&full[..1 + first], b"\n"].concat(), "--stop {stop:?}");

    let (ok, text) = mamba(&["generate", "--checkpoint", ckpt, "--top-p", "0.5", "--tokens", "5"]);
    assert!(ok, "{text}");

    // --batch: greedy rows are the single greedy sample, each whole after its header.
    let rows = gen(&["--prompt", "x", "--temperature", "0", "--tokens", "200", "--batch", "3", "--timing"]);
    let one = String::from_utf8_lossy(&full).into_owned();
    let want: String = (1..=3).map(|i| format!("--- sample {i} of 3 ---\n{one}")).collect();
    assert_eq!(String::from_utf8_lossy(&rows.stdout), want);
    assert!(String::from_utf8_lossy(&rows.stderr).contains("batch 3"), "{}", common::text(&rows));
    for (flags, want) in [
        (vec!["--top-p", "0"], "--top-p must be in (0, 1]"),
        (vec!["--stop", ""], "--stop must not be empty"),
        (vec!["--batch", "0"], "--batch must be at least 1"),
        (vec!["--prompt", "a", "--prompt-file", "/x"], "cannot be used with"),
        (vec!["--prompt-file", "/nonexistent/prompt"], "cannot read --prompt-file /nonexistent/prompt"),
    ] {
        let (ok, text) = mamba(&[&["generate", "--checkpoint", ckpt][..], &flags].concat());
        assert!(!ok && text.contains(want), "{flags:?}: {text}");
    }
    std::fs::write(&prompt, b"").unwrap();
    let (ok, text) = mamba(&["generate", "--checkpoint", ckpt, "--prompt-file", prompt.to_str().unwrap()]);
    assert!(!ok && text.contains("--prompt-file is an empty file"), "{text}");
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
