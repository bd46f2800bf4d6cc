//! The registries that must stay complete, checked from the file tree (no GPU needed):
//!
//! - every folder under `engine/src/ops/` is a unit listed in `units!` (`ops::UNITS`), and
//!   every listed unit has a folder;
//! - a unit with a GPU arm (`cuda.rs`) has a CPU twin (`cpu.rs`), its kernel file
//!   `kernels/cu/<unit>.cu` and its launcher `kernels/src/launch/<unit>.rs`, declared in
//!   `kernels/src/launch/mod.rs`;
//! - every kernel file belongs to a unit with a GPU arm (no orphan kernels): `<unit>.cu`, or a
//!   variant `<unit>_<variant>.cu` with its own launcher (e.g. matmul_bf16);
//! - every unit exports `OPS` and `cases()` (the gradient-check registry; that each name
//!   in `OPS` is exercised is `tests/ops_gradcheck.rs`'s job).

use mamba_engine::ops::UNITS;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// File or folder names under `dir` (relative to the repository), filtered and stripped.
fn names(dir: &str, keep: impl Fn(&Path) -> Option<String>) -> BTreeSet<String> {
    fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .filter_map(|e| keep(&e.expect("directory entry").path()))
        .collect()
}

#[test]
fn every_op_folder_is_a_registered_unit() {
    let folders = names("engine/src/ops", |p| p.is_dir().then(|| p.file_name().unwrap().to_string_lossy().into()));
    let listed: BTreeSet<String> = UNITS.iter().map(|s| s.to_string()).collect();
    assert_eq!(folders, listed, "folders under engine/src/ops vs the units! list in engine/src/ops/mod.rs");
    for unit in UNITS {
        assert!(root().join(format!("engine/src/ops/{unit}/mod.rs")).exists(), "{unit} has no mod.rs");
    }
}

#[test]
fn every_gpu_arm_has_its_cpu_twin_kernel_file_and_launcher_and_back() {
    let kernel_files =
        names("kernels/cu", |p| (p.extension()? == "cu").then(|| p.file_stem().unwrap().to_string_lossy().into()));
    let launch_mod = fs::read_to_string(root().join("kernels/src/launch/mod.rs")).expect("launch/mod.rs");
    let mut gpu_units = BTreeSet::new();
    for unit in UNITS {
        let dir = root().join(format!("engine/src/ops/{unit}"));
        if !dir.join("cuda.rs").exists() {
            continue;
        }
        gpu_units.insert(unit.to_string());
        assert!(dir.join("cpu.rs").exists(), "ops/{unit}/cuda.rs has no CPU twin ops/{unit}/cpu.rs");
        assert!(kernel_files.contains(*unit), "ops/{unit}/cuda.rs has no kernel file kernels/cu/{unit}.cu");
        assert!(
            root().join(format!("kernels/src/launch/{unit}.rs")).exists(),
            "kernels/cu/{unit}.cu has no launcher kernels/src/launch/{unit}.rs"
        );
        assert!(
            launch_mod.lines().any(|l| l.trim() == format!("mod {unit};")),
            "kernels/src/launch/mod.rs does not declare `mod {unit};`"
        );
    }
    // A variant file `<unit>_<variant>.cu` (another dtype of the unit's kernels, e.g.
    // matmul_bf16) belongs to its unit, whose CPU twin it is checked against; it has its own
    // launcher, declared like the unit's.
    let owner = |file: &str| gpu_units.iter().find(|u| file == *u || file.starts_with(&format!("{u}_")));
    let orphans: Vec<_> = kernel_files.iter().filter(|f| owner(f).is_none()).collect();
    assert!(
        orphans.is_empty(),
        "kernel files without an op unit's GPU arm (engine/src/ops/<name>/cuda.rs): {orphans:?}"
    );
    for variant in kernel_files.iter().filter(|f| !gpu_units.contains(*f)) {
        assert!(
            root().join(format!("kernels/src/launch/{variant}.rs")).exists(),
            "kernels/cu/{variant}.cu has no launcher kernels/src/launch/{variant}.rs"
        );
        assert!(
            launch_mod
                .lines()
                .any(|l| [format!("mod {variant};"), format!("pub mod {variant};")].contains(&l.trim().into())),
            "kernels/src/launch/mod.rs does not declare `mod {variant};`"
        );
    }
}

#[test]
fn every_unit_exports_its_ops_and_cases() {
    // `ops::names()` and `ops::cases()` are built from each unit's `OPS` and `cases()`;
    // a unit missing either does not compile. Check the gathered registry is non-trivial.
    let names = mamba_engine::ops::names();
    let unique: BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "an op name is listed by two units: {names:?}");
    let cases = mamba_engine::ops::cases();
    let case_names: BTreeSet<_> = cases.iter().map(|c| c.name).collect();
    assert_eq!(case_names.len(), cases.len(), "two gradient-check cases share a name (and so a seed)");
    assert!(names.contains(&"flip") && cases.iter().any(|c| c.exercises.contains(&"flip")));
}
