//! With the `cuda` feature: write `codes.cuh` (the op codes of `src/codes.rs` as C++ enums)
//! to OUT_DIR, compile every `cu/*.cu` to PTX for sm_90 (Hopper) with nvcc (`-I OUT_DIR`, so
//! the kernels include that header), and generate `ptx.rs`, which embeds each PTX as a `&str`
//! constant named after its file. nvcc comes from $NVCC or the project-local `.cuda/` that
//! kernels/tools/setup-cuda.sh makes. Anything missing is an `error:` on stderr and exit
//! status 1 (see [`fail`]), never a panic.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

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
    let mut missing = Vec::new();
    if !nvcc.is_file() {
        let from = if env::var_os("NVCC").is_some() { "$NVCC" } else { "the default; $NVCC is not set" };
        missing.push(format!("nvcc 13.0 (the pinned CUDA compiler): no file at {} ({from})", nvcc.display()));
    }
    if !cuda_lib_dir_exists() {
        missing.push(
            "the CUDA driver's link library: none of $CUDA_LIBRARY_PATH, /opt/cuda, /usr/local/cuda, \
             /usr/local/cuda-* has lib64/libcuda.so or lib64/stubs/libcuda.so"
                .into(),
        );
    }
    if !missing.is_empty() {
        fail(&format!(
            "cannot build the `cuda` feature; missing:\n  - {}\n\
             Run\n\n    source <(bash kernels/tools/setup-cuda.sh)\n\n\
             (it installs the pinned nvcc and a link stub for the driver into the git-ignored \
             .cuda/ and exports NVCC and CUDA_LIBRARY_PATH), then build again. Or set \
             NVCC=/path/to/nvcc of CUDA 13.0 (newer ones emit PTX that driver 580 rejects). \
             For the CPU only, build without `--features cuda`. docs/GPU.md says more.",
            missing.join("\n  - ")
        ));
    }
    write(&out.join("codes.cuh"), &codes::cuda_header());
    let mut sources: Vec<PathBuf> = fs::read_dir(manifest.join("cu"))
        .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", manifest.join("cu").display())))
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
            .unwrap_or_else(|e| {
                fail(&format!("cannot run {}: {e} (set NVCC, or run kernels/tools/setup-cuda.sh)", nvcc.display()))
            });
        if !status.success() {
            fail(&format!("nvcc failed on {} (its messages are above)", src.display()));
        }
        consts += &format!(
            "/// PTX of `kernels/cu/{stem}.cu`.\npub const {}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"));\n",
            stem.to_uppercase()
        );
        all += &format!("(\"{stem}\", {}), ", stem.to_uppercase());
    }
    consts += &all;
    consts += "];\n";
    write(&out.join("ptx.rs"), &consts);
}

/// Stop the build with `error: mamba-kernels: <msg>` on stderr and exit status 1: cargo
/// shows it under "--- stderr" of "failed to run custom build command", with no backtrace.
fn fail(msg: &str) -> ! {
    eprintln!("error: mamba-kernels: {msg}");
    std::process::exit(1)
}

fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
}

/// Whether cust's build script (find_cuda_helper 0.2) will find a CUDA installation: a
/// `lib64` folder under one of $CUDA_LIBRARY_PATH, /opt/cuda, /usr/local/cuda,
/// /usr/local/cuda-*. Without one it panics ("Could not find a cuda installation").
fn cuda_lib_dir_exists() -> bool {
    println!("cargo:rerun-if-env-changed=CUDA_LIBRARY_PATH");
    let mut bases: Vec<PathBuf> =
        env::var("CUDA_LIBRARY_PATH").unwrap_or_default().split(':').map(PathBuf::from).collect();
    bases.extend(["/opt/cuda", "/usr/local/cuda"].map(PathBuf::from));
    if let Ok(dir) = fs::read_dir("/usr/local") {
        bases.extend(dir.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cuda-")).map(|e| e.path()));
    }
    // Where cust's build script tells the linker to look: <base>/lib64 and <base>/lib64/stubs.
    let lib = |dir: PathBuf| dir.join("libcuda.so").is_file();
    bases.iter().filter(|b| !b.as_os_str().is_empty()).any(|b| lib(b.join("lib64")) || lib(b.join("lib64/stubs")))
}
