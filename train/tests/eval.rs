//! `mamba eval` as a user runs it: bits per byte of a byte model on a file or on its run's
//! validation split, a task model's accuracy, and clear errors.

mod common;
use common::mamba;
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = common::scratch(tag);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Train the tiny model with `extra` flags into `out`; returns its checkpoint.
fn train(out: &Path, extra: &[&str]) -> PathBuf {
    let flags = ["train", "--d-model", "16", "--n-layer", "1", "--batch", "2", "--steps", "3", "--quiet"];
    let tail = ["--eval-windows", "3", "--sample-tokens", "0", "--out", out.to_str().unwrap()];
    let (ok, text) = mamba(&[&flags[..], extra, &tail].concat());
    assert!(ok, "{text}");
    out.join("checkpoint")
}

/// The last value of `key` in the run's metrics log.
fn last_metric(out: &Path, key: &str) -> f64 {
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let mut values = log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[key].as_f64());
    values.next_back().unwrap_or_else(|| panic!("no {key} in {log}"))
}

/// The number after `prefix` at the start of `line`.
fn value_after(line: &str, prefix: &str) -> f64 {
    let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn eval_reports_bits_per_byte_on_a_file_and_on_the_run_s_validation_split() {
    let dir = scratch("text");
    let corpus = dir.join("corpus.txt");
    let words = "the quick brown fox jumps over the lazy dog while mamba selects what to remember. ";
    std::fs::write(&corpus, words.repeat(200)).unwrap();
    let ckpt = train(&dir.join("run"), &["--text", corpus.to_str().unwrap(), "--seq-len", "16"]);
    let ckpt = ckpt.to_str().unwrap();

    // The default is what training measured last: the same windows of the same split.
    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt]);
    assert!(ok, "{line}");
    let expect = format!(" on the validation split of {} (3 windows of 16 bytes)\n", corpus.display());
    assert!(line.ends_with(&expect), "{line}");
    let bpb = value_after(&line, "bits per byte ");
    assert!((bpb - last_metric(&dir.join("run"), "val_bpb")).abs() < 6e-4, "{line}");

    let other = dir.join("other.txt");
    std::fs::write(&other, "fn main() { println!(\"hello\"); }\n".repeat(20)).unwrap();
    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt, "--text", other.to_str().unwrap(), "--windows", "5"]);
    assert!(ok, "{line}");
    assert!(line.ends_with(&format!(" on {} (5 windows of 16 bytes)\n", other.display())), "{line}");
    let on_other = value_after(&line, "bits per byte ");
    assert!(on_other > 0.5 && on_other < 16.0 && on_other != bpb, "{line}");

    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt, "--text", other.to_str().unwrap(), "--seq-len", "8"]);
    assert!(ok && line.ends_with("(3 windows of 8 bytes)\n"), "{line}");

    std::fs::remove_file(&corpus).unwrap();
    let (ok, text) = mamba(&["eval", "--checkpoint", ckpt]);
    assert!(!ok && text.contains("the text the run trained on (pass --text FILE to evaluate on another)"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eval_of_a_task_checkpoint_reports_its_accuracy() {
    let dir = scratch("task");
    let task = ["--task", "induction-heads", "--task-len", "8", "--task-vocab", "4"];
    let ckpt = train(&dir, &task);
    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt.to_str().unwrap()]);
    assert!(ok && line.ends_with(" on induction-heads (12 examples)\n"), "{line}");
    let accuracy = value_after(&line, "accuracy ");
    assert!((accuracy - last_metric(&dir, "val_accuracy")).abs() < 6e-4, "{line}");
    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--windows", "10"]);
    assert!(ok && line.ends_with(" on induction-heads (40 examples)\n"), "{line}");
    let (ok, text) = mamba(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--text", "/etc/hostname"]);
    assert!(
        !ok && text.contains("holds a model of the induction-heads task: --text and --seq-len apply to byte models"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eval_defaults_to_the_embedded_corpus_and_its_errors_say_what_is_wrong() {
    let dir = scratch("errors");
    let ckpt = train(&dir, &["--seq-len", "16"]);
    let ckpt = ckpt.to_str().unwrap();
    let (ok, line) = mamba(&["eval", "--checkpoint", ckpt]);
    assert!(
        ok && line.ends_with(" on the validation split of the embedded corpus (3 windows of 16 bytes)\n"),
        "{line}"
    );
    let (ok, text) = mamba(&["eval", "--checkpoint", ckpt, "--text", "/nonexistent/file.txt"]);
    assert!(!ok && text.starts_with("error: cannot read --text /nonexistent/file.txt: No such file"), "{text}");
    let (ok, text) = mamba(&["eval", "--checkpoint", "/nonexistent/ckpt"]);
    assert!(!ok && text.contains("/nonexistent/ckpt") && text.contains("no checkpoint here"), "{text}");
    let short = dir.join("short.txt");
    std::fs::write(&short, "tiny").unwrap();
    let (ok, text) = mamba(&["eval", "--checkpoint", ckpt, "--text", short.to_str().unwrap()]);
    assert!(!ok && text.contains("the text has 4 bytes, too few for one window of --seq-len 16"), "{text}");
    for text_flag in [&[][..], &["--text", short.to_str().unwrap()]] {
        let (ok, text) =
            mamba(&[&["eval", "--checkpoint", ckpt, "--seq-len", "18446744073709551615"][..], text_flag].concat());
        assert!(
            !ok && text.starts_with("error: the text has ") && text.contains("--seq-len 18446744073709551615"),
            "{text}"
        );
    }
    let (ok, text) = mamba(&["eval", "--checkpoint", ckpt, "--windows", "0"]);
    assert!(!ok && text.contains("--windows must be at least 1"), "{text}");
    let (ok, text) = mamba(&["eval", "--help"]);
    assert!(ok && text.contains("--checkpoint") && text.contains("--windows"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
