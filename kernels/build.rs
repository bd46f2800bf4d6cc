//! With the `cuda` feature: write `codes.cuh` (the op codes of `src/codes.rs` as C++ enums)
//! to OUT_DIR, compile every `cu/*.cu` to PTX for sm_90 (Hopper) with nvcc (`-I OUT_DIR`, so
//! the kernels include that header), and generate `ptx.rs`, which embeds each PTX as a `&str`
//! constant named after its file. nvcc comes from $NVCC or the project-local `.cuda/` that
//! kernels/tools/setup-cuda.sh makes.

use std::{env, fs, path::PathBuf, process::Command};

/// The op-code enums, compiled into this build script too (the one definition).
#[allow(dead_code)]
mod codes {
    include!("src/codes.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=cu"); // .cu files and their .cuh headers
    println!("cargo:rerun-if-changed=src/codes.rs");
    println!("cargo:rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let nvcc =
        env::var_os("NVCC").map(PathBuf::from).unwrap_or_else(|| manifest.join("../.cuda/pip/nvidia/cu13/bin/nvcc"));
    if !nvcc.exists() {
        panic!("nvcc not found at {}: run `bash kernels/tools/setup-cuda.sh` (or set NVCC)", nvcc.display());
    }
    fs::write(out.join("codes.cuh"), codes::cuda_header()).expect("write codes.cuh");
    let mut sources: Vec<PathBuf> = fs::read_dir(manifest.join("cu"))
        .expect("kernels/cu exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    let mut consts = String::new();
    let mut all = String::from("/// Every kernel file as (name, PTX).\npub const ALL: &[(&str, &str)] = &[");
    for src in &sources {
        let stem = src.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name");
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["-arch=sm_90", "--ptx", "-O3", "-lineinfo", "-I"])
            .arg(&out)
            .arg("-o")
            .arg(&ptx)
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
        if !status.success() {
            panic!("nvcc failed on {}", src.display());
        }
        consts += &format!(
            "/// PTX of `kernels/cu/{stem}.cu`.\npub const {}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"));\n",
            stem.to_uppercase()
        );
        all += &format!("(\"{stem}\", {}), ", stem.to_uppercase());
    }
    consts += &all;
    consts += "];\n";
    fs::write(out.join("ptx.rs"), consts).expect("write ptx.rs");
}
