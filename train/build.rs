//! Bundles this repository's own source and docs into one text file that the `mamba`
//! binary embeds as its default training corpus (see `data::default_corpus`).

use std::{fs, path::Path};

fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort(); // a stable order keeps the corpus (and training runs) reproducible
    for path in paths {
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "md" | "cu")) {
            if let Ok(text) = fs::read_to_string(&path) {
                out.push((path.display().to_string(), text));
            }
        }
    }
}

fn main() {
    // Read at run time, not baked in with env!(): cargo may reuse this script's binary for a
    // checkout at another path (a worktree sharing the target folder), which would then bundle
    // the other checkout's files, or none once it is gone.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("..");
    let mut files = Vec::new();
    for part in ["README.md", "docs", "engine/src", "model/src", "train/src", "kernels/src"] {
        let path = root.join(part);
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_file() {
            if let Ok(text) = fs::read_to_string(&path) {
                files.push((part.to_string(), text));
            }
        } else {
            collect(&path, &mut files);
        }
    }
    let corpus: String = files.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join("\n");
    assert!(corpus.len() > 100_000, "the embedded corpus from {} has only {} bytes", root.display(), corpus.len());
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("corpus.txt");
    fs::write(out, corpus).expect("cannot write the embedded corpus");
}
