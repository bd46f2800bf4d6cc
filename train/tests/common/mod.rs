//! What the binary's tests share: running `mamba` and a fresh scratch path per test.
#![allow(dead_code)] // each test file uses its own part of these

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny model and quiet run of most tests: one layer of d_model 16, batch 2 x 16 bytes,
/// one validation window, no samples.
#[rustfmt::skip]
pub const TINY: &[&str] = &[
    "--d-model", "16", "--n-layer", "1", "--batch", "2", "--seq-len", "16", "--eval-windows", "1", "--sample-tokens", "0",
    "--quiet",
];

/// `mamba <args>` in the current directory.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mamba")).args(args).output().expect("the binary runs")
}

/// stdout then stderr of a finished `mamba`.
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `mamba <args>`: (success, stdout + stderr).
pub fn mamba(args: &[&str]) -> (bool, String) {
    let out = run(args);
    (out.status.success(), text(&out))
}

/// `mamba <args>` in `cwd`: (success, stdout + stderr).
pub fn mamba_in(cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mamba")).args(args).current_dir(cwd).output().expect("the binary runs");
    (out.status.success(), text(&out))
}

/// A path under the system temp dir for one test, removed if a previous run left it (and not
/// created: a test may check that nothing is).
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mamba-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
