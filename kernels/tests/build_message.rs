//! `cargo build --features cuda` without the pinned nvcc stops with build.rs's `error:`
//! message pointing at kernels/tools/setup-cuda.sh, not with a panic. Runs cargo on this
//! crate with `NVCC=/nonexistent/nvcc` in a target folder of its own under the system temp
//! dir (kept between runs, so only the first run compiles cust's dependencies), and without
//! CUDA_LIBRARY_PATH, as on a machine where setup-cuda.sh never ran: the default of
//! `.cargo/config.toml` lets cust's own build script pass, so ours is the one that speaks.
//! Needs no CUDA.

use std::{env, path::Path, process::Command};

#[test]
fn missing_nvcc_is_an_error_naming_setup_cuda_not_a_panic() {
    let tmp = env::temp_dir().join("mamba-kernels-build-message");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["build", "-p", "mamba-kernels", "--features", "cuda"])
        .env("CARGO_TARGET_DIR", tmp.join("target"))
        .env("NVCC", "/nonexistent/nvcc")
        .env_remove("CUDA_LIBRARY_PATH")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build should fail without nvcc:\n{stderr}");
    let wants =
        ["error: mamba-kernels: cannot build the `cuda` feature", "/nonexistent/nvcc", "setup-cuda.sh", "libcuda.so"];
    for want in wants {
        assert!(stderr.contains(want), "no {want:?} in cargo's output:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "a panic in cargo's output:\n{stderr}");
}
