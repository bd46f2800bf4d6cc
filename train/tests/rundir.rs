//! The run directory as `mamba train` uses it: one run at a time, a fresh run never
//! replaces another run unless asked, checkpoint directories checked before step 1, I/O
//! errors that name their file, `--resume .`, damaged metrics lines, and checkpoint-best.

use clap::Parser;
use mamba_train::{checkpoint, report::read_metrics, trainer::TrainArgs};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod common;
use common::{mamba_in, TINY};

/// `mamba train <TINY> --out <out> <extra>`.
fn train(out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    mamba_in(&std::env::temp_dir(), &args)
}

/// `mamba train --resume <out>/checkpoint --quiet <extra>`.
fn resume(out: &Path, extra: &[&str]) -> (bool, String) {
    let ckpt = out.join("checkpoint");
    let mut args = vec!["train", "--resume", ckpt.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    mamba_in(&std::env::temp_dir(), &args)
}

/// A fresh directory per test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("mamba-rundir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir` (relative path -> contents), directories as empty entries. The
/// lock file is left out: a run that takes the lock writes its pid there, then checks.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new(".lock") {
                continue;
            } else if path.is_dir() {
                into.insert(rel, None);
                walk(root, &path, into);
            } else {
                into.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// The steps of the training-loss records of `<out>/metrics.jsonl`.
fn loss_steps(out: &Path) -> Vec<u64> {
    let records = read_metrics(&out.join("metrics.jsonl")).unwrap();
    records.iter().filter(|r| r.get("loss").is_some()).map(|r| r["step"].as_u64().unwrap()).collect()
}

/// The `step` in the metadata of a checkpoint's training_state.safetensors.
fn checkpoint_step(dir: &Path) -> u64 {
    let bytes = fs::read(dir.join(checkpoint::STATE_FILE)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["step"].as_str().unwrap().parse().unwrap()
}

/// Hold `<out>/.lock` as a run would, with our pid in it.
fn hold_lock(out: &Path) -> fs::File {
    let mut file =
        fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(out.join(".lock")).unwrap();
    file.try_lock().expect("the lock is free once the run that held it has exited");
    file.set_len(0).unwrap();
    writeln!(file, "{}", std::process::id()).unwrap();
    file
}

#[test]
fn a_second_run_on_a_locked_directory_refuses_and_touches_nothing() {
    let scratch = Scratch::new("locked");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "2"]);
    assert!(ok, "{text}");
    let lock = hold_lock(out);
    let before = (snapshot(out), fs::read(out.join(".lock")).unwrap());
    let in_use =
        format!("is in use by another mamba run (pid {}); wait for it or choose another --out", std::process::id());
    for (ok, text) in [train(out, &["--steps", "3", "--overwrite"]), resume(out, &["--steps", "3"])] {
        assert!(!ok && text.contains(&in_use), "{text}");
        assert!(text.contains(&format!("{}", out.file_name().unwrap().to_string_lossy())), "{text}");
    }
    assert_eq!((snapshot(out), fs::read(out.join(".lock")).unwrap()), before, "a refused run changed the directory");
    drop(lock);
    let (ok, text) = resume(out, &["--steps", "3"]);
    assert!(ok, "{text}");
    assert_eq!(loss_steps(out), [1, 2, 3]);
}

/// Kills the child on drop, so that a failing test leaves no run behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_lock_is_held_while_the_run_lives_and_released_when_it_dies() {
    let scratch = Scratch::new("child");
    let out = &scratch.0;
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--steps", "1000000", "--eval-every", "1000000"];
    args.extend_from_slice(TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"));
    let mut child = Running(child.args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let pid = child.0.id().to_string();
    let started = Instant::now();
    while fs::read_to_string(out.join(".lock")).unwrap_or_default().trim() != pid {
        assert!(started.elapsed() < Duration::from_secs(120), "the run never took the lock");
        assert!(child.0.try_wait().unwrap().is_none(), "the run exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, text) = train(out, &["--steps", "1", "--overwrite"]);
    assert!(!ok && text.contains(&format!("in use by another mamba run (pid {pid})")), "{text}");
    child.0.kill().unwrap(); // no clean exit: the system releases the lock
    child.0.wait().unwrap();
    let (ok, text) = train(out, &["--steps", "1", "--overwrite"]);
    assert!(ok, "{text}");
}

#[test]
fn a_fresh_run_refuses_an_existing_run_unless_overwrite() {
    let scratch = Scratch::new("fresh");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "2"]);
    assert!(ok, "{text}");
    fs::write(out.join("trace.json"), "{}").unwrap(); // as an old --profile run leaves
    fs::write(out.join("notes.txt"), "mine").unwrap(); // not a run's file
    let before = snapshot(out);
    let d = out.display();
    let expected = format!(
        "error: {d} already holds a run (checkpoint/, checkpoint-best/, metrics.jsonl, loss.svg, trace.json); resume it \
         with --resume {d}/checkpoint, pass --overwrite to replace it, or choose another --out"
    );
    let (ok, text) = train(out, &["--steps", "3"]);
    assert!(!ok && text.trim() == expected, "{text}");
    // --overwrite deletes nothing until the new run is set up.
    for bad in [&["--text", "/nonexistent/corpus.txt"][..], &["--batch", "0"], &["--task", "sorting"]] {
        let (ok, text) = train(out, &[&["--steps", "3", "--overwrite"], bad].concat());
        assert!(!ok, "{bad:?}: {text}");
        assert_eq!(snapshot(out), before, "{bad:?} failed but changed the old run");
    }
    // Nor may a resumed run continue in another run's directory, or delete its own.
    let other = Scratch::new("fresh-other");
    let (ok, text) = train(&other.0, &["--steps", "1"]);
    assert!(ok, "{text}");
    let (ok, text) = resume(&other.0, &["--steps", "5", "--out", out.to_str().unwrap()]);
    assert!(!ok && text.contains("already holds a run") && !text.contains("resume it with"), "{text}");
    let (ok, text) = resume(out, &["--steps", "5", "--overwrite"]);
    assert!(!ok && text.contains("--overwrite would delete the run that --resume continues"), "{text}");
    assert_eq!(snapshot(out), before);

    let (ok, text) = train(out, &["--steps", "3", "--overwrite"]);
    assert!(ok, "{text}");
    assert!(!out.join("trace.json").exists() && out.join("notes.txt").exists());
    assert_eq!((loss_steps(out), checkpoint_step(&out.join("checkpoint"))), (vec![1, 2, 3], 3));
}

#[test]
fn default_out_is_named_after_the_data() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }
    let out = |flags: &[&str]| Cli::parse_from([&["train"], flags].concat()).args.out();
    assert_eq!(out(&[]), Path::new("runs/default"));
    assert_eq!(out(&["--text", "data/tiny-shakespeare.txt"]), Path::new("runs/tiny-shakespeare"));
    assert_eq!(out(&["--task", "induction-heads"]), Path::new("runs/induction-heads"));
    assert_eq!(out(&["--task", "induction-heads", "--out", "x"]), Path::new("x"));
}

#[test]
fn foreign_files_in_checkpoint_directories_are_refused_before_step_one() {
    let scratch = Scratch::new("foreign");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "4", "--stop-after", "2"]);
    assert!(ok, "{text}");
    for dir in ["checkpoint", "checkpoint-best.tmp"] {
        fs::create_dir_all(out.join(dir)).unwrap();
        fs::write(out.join(dir).join("notes.txt"), "mine").unwrap();
        let before = snapshot(out);
        for (ok, text) in [resume(out, &[]), train(out, &["--steps", "4", "--overwrite"])] {
            assert!(!ok && text.contains(&format!("{dir}: holds `notes.txt`")), "{text}");
            assert_eq!(snapshot(out), before, "no step may run, nothing may be deleted");
        }
        fs::remove_file(out.join(dir).join("notes.txt")).unwrap();
    }
}

/// A write that fails mid-save (a file-size limit stands in for a full disk) names the file
/// and leaves no partial `<dir>.tmp`.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_save_names_its_file_and_leaves_no_tmp() {
    let scratch = Scratch::new("full");
    let out = &scratch.0;
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--steps", "1"];
    args.extend_from_slice(TINY);
    // 20 KiB: the metrics, loss.svg and config.json fit, model.safetensors does not.
    let script = "ulimit -f 20; trap '' XFSZ; exec \"$0\" \"$@\"";
    let run = Command::new("bash").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_mamba")).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{text}");
    assert!(text.contains(".tmp/model.safetensors: cannot write: File too large"), "{text}");
    let names: Vec<_> = fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "a partial checkpoint stayed: {names:?}");
}

#[cfg(unix)]
#[test]
fn metrics_errors_name_the_file() {
    let scratch = Scratch::new("metrics");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "4", "--stop-after", "2"]);
    assert!(ok, "{text}");
    let metrics = out.join("metrics.jsonl");
    let saved = fs::read(&metrics).unwrap();
    fs::remove_file(&metrics).unwrap();
    fs::create_dir_all(metrics.join("x")).unwrap();
    let (ok, text) = resume(out, &[]);
    assert!(!ok && text.contains(&format!("{}: ", metrics.display())), "{text}");
    fs::remove_dir_all(&metrics).unwrap();

    // An unreadable log was silently replaced by an empty one; now it is an error naming it.
    use std::os::unix::fs::PermissionsExt;
    fs::write(&metrics, &saved).unwrap();
    fs::set_permissions(&metrics, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&metrics).is_ok() {
        eprintln!("skipped the permission check: running as root");
        return;
    }
    let (ok, text) = resume(out, &[]);
    assert!(!ok && text.contains(&format!("cannot read {}: ", metrics.display())), "{text}");
    fs::set_permissions(&metrics, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(fs::read(&metrics).unwrap(), saved);
}

#[test]
fn resume_dot_from_inside_the_checkpoint_continues_its_run() {
    let scratch = Scratch::new("dot");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "4", "--stop-after", "2"]);
    assert!(ok, "{text}");
    let (ok, text) = mamba_in(&out.join("checkpoint"), &["train", "--resume", ".", "--quiet"]);
    assert!(ok, "{text}");
    let mut inside: Vec<_> =
        fs::read_dir(out.join("checkpoint")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    inside.sort();
    assert_eq!(inside, [checkpoint::CONFIG_FILE, checkpoint::MODEL_FILE, checkpoint::STATE_FILE]);
    assert_eq!(loss_steps(out), [1, 2, 3, 4]);
    assert_eq!(checkpoint_step(&out.join("checkpoint")), 4);
}

#[test]
fn damaged_metrics_lines_are_dropped_with_a_warning() {
    let scratch = Scratch::new("utf8");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "4", "--stop-after", "2", "--eval-every", "1"]);
    assert!(ok, "{text}");
    let metrics = out.join("metrics.jsonl");
    let mut bytes = fs::read(&metrics).unwrap();
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes.splice(second..second, b"{\"step\": 1, \"note\": \"\xff\xfe\"}\n{\"step\": \n".iter().copied());
    fs::write(&metrics, bytes).unwrap();
    let (ok, text) = resume(out, &[]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("warning: {}: dropped lines 2, 3 (not", metrics.display())), "{text}");
    assert_eq!(loss_steps(out), [1, 2, 3, 4]);
}

/// (step, value) of every record of `key` in `<out>/metrics.jsonl`.
fn evaluations(out: &Path, key: &str) -> Vec<(u64, f64)> {
    let records = read_metrics(&out.join("metrics.jsonl")).unwrap();
    records.iter().filter_map(|r| Some((r["step"].as_u64()?, r[key].as_f64()?))).collect()
}

#[test]
fn checkpoint_best_holds_the_best_evaluation() {
    let scratch = Scratch::new("best");
    let task = ["--task", "selective-copying", "--task-len", "12", "--task-tokens", "3", "--task-vocab", "4"];
    for (flags, key, higher) in [(&[][..], "val_bpb", false), (&task[..], "val_accuracy", true)] {
        let out = &scratch.0.join(key);
        let (ok, text) = train(out, &[flags, &["--steps", "6", "--eval-every", "2", "--lr", "1e-2"]].concat());
        assert!(ok, "{text}");
        let evals = evaluations(out, key);
        assert_eq!(evals.len(), 3, "{evals:?}");
        let best = evals.iter().copied().reduce(|a, b| if (b.1 > a.1) == higher && b.1 != a.1 { b } else { a });
        let (step, value) = best.unwrap();
        let best_dir = out.join("checkpoint-best");
        assert_eq!(checkpoint_step(&best_dir), step, "{key}: {evals:?}");
        checkpoint::load_model(&best_dir).expect("checkpoint-best loads");
        let done = format!("| best {key} {value:.4} at step {step} ({})", best_dir.display());
        assert!(text.contains(&done), "{text}");
    }
}

#[test]
fn a_resumed_run_knows_the_best_so_far() {
    let scratch = Scratch::new("best-resume");
    let out = &scratch.0;
    let (ok, text) = train(out, &["--steps", "6", "--stop-after", "2", "--eval-every", "2"]);
    assert!(ok, "{text}");
    assert_eq!(checkpoint_step(&out.join("checkpoint-best")), 2);
    // Pretend step 2 validated far better than anything to come.
    let metrics = out.join("metrics.jsonl");
    let text = fs::read_to_string(&metrics).unwrap();
    let edited: String = text
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l).unwrap().get("val_bpb") {
            Some(_) => "{\"step\":2,\"val_bpb\":0.001}\n".to_string(),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&metrics, edited).unwrap();
    let (ok, text) = resume(out, &[]);
    assert!(ok, "{text}");
    assert_eq!(evaluations(out, "val_bpb").len(), 3);
    assert_eq!(checkpoint_step(&out.join("checkpoint-best")), 2, "a worse evaluation replaced checkpoint-best");
    assert!(text.contains("| best val_bpb 0.0010 at step 2 ("), "{text}");
}
