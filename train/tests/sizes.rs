//! Sizes too large for the machine, bad sampling settings and failed writes, as the `mamba`
//! binary reports them: an error naming the flag, at once and before anything is allocated.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX: &str = "18446744073709551615";

mod common;
use common::{run, scratch, text};

/// Train the tiny model of every test into `out`; returns its checkpoint.
fn tiny_checkpoint(out: &Path) -> PathBuf {
    let flags = ["--d-model", "16", "--n-layer", "1", "--batch", "2", "--seq-len", "16", "--steps", "3"];
    let quiet = ["--eval-windows", "1", "--sample-tokens", "0", "--quiet", "--out", out.to_str().unwrap()];
    let done = run(&[&["train"][..], &flags, &quiet].concat());
    assert!(done.status.success(), "{}", text(&done));
    out.join("checkpoint")
}

/// `mamba train` with `flags` fails at once with exit status 1 (not a panic's 101 or an
/// abort), an error containing `expect`, and nothing written.
fn refused(tag: &str, flags: &[&str], expect: &str) {
    let out = scratch(tag);
    let started = Instant::now();
    let done = run(&[&["train", "--quiet", "--out", out.to_str().unwrap()][..], flags].concat());
    let (msg, secs) = (text(&done), started.elapsed().as_secs_f64());
    assert_eq!(done.status.code(), Some(1), "{flags:?}: {msg}");
    assert!(msg.starts_with("error: ") && msg.contains(expect), "{flags:?}: expected {expect:?} in {msg}");
    assert!(!out.exists(), "{flags:?} wrote {}", out.display());
    assert!(secs < 5.0, "{flags:?} took {secs:.1} s to fail");
}

#[test]
fn sizes_that_overflow_are_errors_naming_the_flag() {
    let task = |name: &'static str, flag: &'static str| vec!["--task", name, flag, MAX];
    for (tag, flags, expect) in [
        ("seq", vec!["--seq-len", MAX], "--batch 16 x --seq-len 18446744073709551615: the activations' size overflows"),
        ("batch", vec!["--batch", MAX], "lower --batch or --seq-len"),
        ("dmodel", vec!["--d-model", MAX], "--d-model 18446744073709551615 x --n-layer 4: the model's size overflows"),
        ("tasklen", task("selective-copying", "--task-len"), "seq_len = 18446744073709551615 (--task-len)"),
        ("windows", task("induction-heads", "--eval-windows"), "--eval-windows 18446744073709551615 asks a task"),
        ("samples", vec!["--sample-tokens", MAX], "--sample-tokens 18446744073709551615 is more than the 65536"),
    ] {
        refused(tag, &flags, expect);
    }
}

#[test]
fn sizes_too_large_for_the_memory_are_errors_naming_the_flag() {
    let big = "1000000000000";
    for (tag, flags, expect) in [
        ("batch", vec!["--batch", big], "for activations (and "),
        ("tasklen", vec!["--task", "induction-heads", "--task-len", big], "(--task-len) is more than the 1048576"),
        ("vocab", vec!["--task", "selective-copying", "--task-vocab", "100000000"], "(--task-vocab) is more than"),
        ("dmodel", vec!["--d-model", "1000000"], "to train (weights, gradients and two AdamW moments)"),
        ("layers", vec!["--n-layer", "1000000"], "of memory is available: lower --d-model or --n-layer"),
        // refused before step 1, so no run dies at its first evaluation
        ("samples", vec!["--sample-tokens", big], "lower it, or 0 for no samples"),
    ] {
        refused(tag, &flags, expect);
    }
    refused("batch-msg", &["--batch", big], "--batch 1000000000000 x --seq-len 128 needs about ");
    refused("batch-fix", &["--batch", big], "of memory is available: lower --batch or --seq-len");
}

/// Settings saved in a checkpoint go through the same checks on --resume.
#[test]
fn a_tampered_training_state_is_checked_on_resume() {
    let out = scratch("resume");
    let ckpt = tiny_checkpoint(&out);
    let path = ckpt.join("training_state.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut args: serde_json::Value = serde_json::from_str(&meta["train_args"]).unwrap();
    args["batch"] = 1_000_000_000_000u64.into();
    meta.insert("train_args".into(), args.to_string());
    let tensors: Vec<_> = mamba_model::io::read_safetensors(&bytes)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.tensor().unwrap().clone()))
        .collect();
    let meta: Vec<(&str, String)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    std::fs::write(&path, mamba_model::io::write_safetensors(&tensors, &meta).unwrap()).unwrap();
    let started = Instant::now();
    let done = run(&["train", "--resume", ckpt.to_str().unwrap(), "--steps", "6", "--quiet"]);
    let msg = text(&done);
    assert_eq!(done.status.code(), Some(1), "{msg}");
    assert!(msg.contains("--batch 1000000000000 x --seq-len 16 needs about"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn generate_checks_its_settings_before_loading() {
    for (flag, expect) in [
        ("--temperature=nan", "--temperature must be a finite number >= 0 (0 = greedy), got NaN"),
        ("--temperature=-0.5", "--temperature must be a finite number >= 0 (0 = greedy), got -0.5"),
        ("--prompt=", "--prompt must not be empty"),
        ("--top-p=0", "--top-p must be in (0, 1] (1 keeps every token), got 0"),
        ("--batch=0", "--batch must be at least 1"),
    ] {
        let done = run(&["generate", "--checkpoint", "/nonexistent/ckpt", flag]);
        assert_eq!((done.status.code(), text(&done)), (Some(1), format!("error: {expect}\n")), "{flag}");
    }
}

#[test]
fn generate_clamps_top_k_and_zero_temperature_is_greedy() {
    let out = scratch("topk");
    let ckpt = tiny_checkpoint(&out);
    let gen = |extra: &[&str]| {
        let flags = ["generate", "--checkpoint", ckpt.to_str().unwrap(), "--prompt", "ab", "--tokens", "12"];
        let done = run(&[&flags[..], extra].concat());
        assert!(done.status.success(), "{extra:?}: {}", text(&done));
        done.stdout
    };
    assert_eq!(gen(&["--top-k", "100000"]).len(), 2 + 12 + 1);
    let greedy = gen(&["--temperature", "0", "--seed", "1"]);
    assert_eq!(greedy, gen(&["--temperature", "0", "--seed", "2"]));
    let _ = std::fs::remove_dir_all(out);
}

/// `mamba generate | head -c 10`: the first write after the reader has gone ends the
/// generation quietly, with status 0, however many tokens were asked for.
#[test]
fn generate_stops_quietly_when_the_reader_goes() {
    let out = scratch("pipe");
    let ckpt = tiny_checkpoint(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["generate", "--checkpoint", ckpt.to_str().unwrap(), "--tokens", MAX])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // and the pipe closes here
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("generate kept running for 10 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
    let _ = std::fs::remove_dir_all(out);
}

/// Any other failed write is an error naming stdout and the reason, at the first byte.
#[cfg(target_os = "linux")]
#[test]
fn generate_reports_a_full_device_naming_stdout() {
    let out = scratch("full");
    let ckpt = tiny_checkpoint(&out);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let done = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["generate", "--checkpoint", ckpt.to_str().unwrap(), "--tokens", MAX])
        .stdout(full)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{msg}");
    assert!(msg.starts_with("error: cannot write to stdout: No space left on device"), "{msg}");
    let _ = std::fs::remove_dir_all(out);
}
