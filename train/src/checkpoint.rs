//! Checkpoints: a training run saved to disk, and loaded back for `generate` or to resume.
//!
//! A checkpoint is a directory of three files:
//!
//! ```text
//! <dir>/config.json                 the MambaConfig, pretty JSON, like the reference config.json
//! <dir>/model.safetensors           every parameter under its reference name (f32), plus
//!                                   `lm_head.weight` (the tied embedding written again), so the
//!                                   file holds exactly the reference model's state dict
//! <dir>/training_state.safetensors  AdamW moments `exp_avg.<name>` and `exp_avg_sq.<name>`
//!                                   (in the optimizer's dtype), and the header metadata
//!                                   format = "mamba-train/1", step, rng_state, train_args
//! ```
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{name: {dtype, shape, data_offsets}, .., "__metadata__": {key: string}}`), then the raw
//! little-endian tensor data. Metadata values can only be strings, so `step` and `rng_state`
//! are decimal strings (a u64 does not survive a JSON number read as f64) and `train_args`
//! is a JSON document inside the string.
//!
//! Saving never destroys the previous checkpoint:
//!
//! ```text
//! 1. write all files into <dir>.tmp, fsync each file and the directory
//! 2. rename <dir>     -> <dir>.old      (if <dir> exists)
//! 3. rename <dir>.tmp -> <dir>
//! 4. remove <dir>.old
//! ```
//!
//! A rename within one directory is atomic, so after a crash at any instant `<dir>` or
//! `<dir>.old` holds a complete checkpoint. The loaders fall back to `<dir>.old` when `<dir>` is
//! missing, and the next save deletes a stale `<dir>.tmp`. Because saving deletes directories,
//! it refuses to replace one that holds anything but checkpoint files.

use crate::{optim::AdamW, Error, Result};
use mamba_engine::{no_grad, DType, Tensor};
use mamba_model::{
    io::{read_safetensors, write_safetensors, Loaded},
    MambaConfig, MambaLM,
};
use safetensors::{SafeTensorError, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "training_state.safetensors";
/// The `format` metadata of `training_state.safetensors`; bump it when the layout changes.
pub const FORMAT: &str = "mamba-train/1";
const FILES: [&str; 3] = [CONFIG_FILE, MODEL_FILE, STATE_FILE];

/// What a resumed run needs besides the weights and the moments.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    /// Optimizer updates applied so far; must equal `AdamW::step` when saving.
    pub step: u64,
    /// `Rng::state` of the data sampler, so batches continue where they stopped.
    pub rng_state: u64,
    /// Opaque to this module (e.g. the hyperparameters), so a resume can compare them.
    pub train_args: serde_json::Value,
}

/// A checkpoint problem ([`Error::Checkpoint`]): the file (or directory) concerned and what
/// is wrong with it.
fn error(path: &Path, what: impl Into<String>) -> Error {
    Error::checkpoint(path, what)
}

fn fail<T>(path: &Path, what: impl Into<String>) -> Result<T> {
    Err(error(path, what))
}

// ---------------------------------------------------------------- saving

/// Save `model`, the moments of `opt` and `state` to the directory `dir`, replacing any
/// checkpoint there atomically (see the module docs). The parent directories are created.
pub fn save(dir: &Path, model: &MambaLM, opt: &AdamW, state: &TrainingState) -> Result<()> {
    let (tmp, old) = (sibling(dir, "tmp")?, sibling(dir, "old")?);
    // Check and serialise everything first: a failure here leaves the disk untouched.
    for path in [dir, &tmp, &old] {
        ensure_replaceable(path)?;
    }
    if state.step != opt.step {
        let what = format!("TrainingState.step is {} but the optimizer has taken {} steps", state.step, opt.step);
        return fail(&dir.join(STATE_FILE), what);
    }
    let config = serde_json::to_string_pretty(&model.cfg).map_err(|e| error(&dir.join(CONFIG_FILE), e.to_string()))?;
    let weights = model_bytes(model).map_err(|e| error(&dir.join(MODEL_FILE), e.to_string()))?;
    let training = state_bytes(opt, state).map_err(|e| error(&dir.join(STATE_FILE), e.to_string()))?;

    // 1. The complete checkpoint in <dir>.tmp, durable before anything else changes.
    remove_if_exists(&tmp)?;
    fs::create_dir_all(&tmp).map_err(|e| error(&tmp, format!("cannot create directory: {e}")))?;
    for (name, bytes) in [(CONFIG_FILE, config.as_bytes()), (MODEL_FILE, &weights), (STATE_FILE, &training)] {
        write_synced(&tmp.join(name), bytes)?;
    }
    sync_dir(&tmp)?;
    // 2. Keep the previous checkpoint as <dir>.old. Both can only exist together after a
    // crash between steps 3 and 4, and then <dir> is complete: the stale <dir>.old goes.
    if dir.exists() {
        remove_if_exists(&old)?;
        rename(dir, &old)?;
    }
    // 3. and 4. If <dir> was missing, <dir>.old (if any) is the last complete checkpoint:
    // it is only removed once the new one is in place.
    rename(&tmp, dir)?;
    sync_dir(parent(dir))?;
    remove_if_exists(&old)?;
    sync_dir(parent(dir))
}

/// model.safetensors: the reference state dict in f32, `lm_head.weight` included.
fn model_bytes(model: &MambaLM) -> mamba_model::Result<Vec<u8>> {
    let _guard = no_grad();
    let mut named = model.named_parameters();
    named.push(("lm_head.weight".to_string(), model.embedding.clone()));
    let f32s = named
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect::<mamba_model::Result<Vec<_>>>()?;
    // "format": "pt" is what PyTorch-side loaders (e.g. transformers) expect to find.
    write_safetensors(&f32s, &[("format", "pt".to_string())])
}

/// training_state.safetensors: both moments of every parameter, and the metadata.
fn state_bytes(opt: &AdamW, state: &TrainingState) -> mamba_model::Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(2 * opt.params.len());
    for p in &opt.params {
        tensors.push((format!("exp_avg.{}", p.name), p.m.clone()));
        tensors.push((format!("exp_avg_sq.{}", p.name), p.v.clone()));
    }
    let metadata = [
        ("format", FORMAT.to_string()),
        ("step", opt.step.to_string()),
        ("rng_state", state.rng_state.to_string()),
        ("train_args", state.train_args.to_string()),
    ];
    write_safetensors(&tensors, &metadata)
}

/// Write `bytes` to a new file and wait until they are on disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(|e| error(path, format!("cannot create: {e}")))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| error(path, format!("cannot write: {e}")))
}

/// Make a directory's new entries and renames durable. Only POSIX lets a directory be
/// opened and fsynced; elsewhere this is a no-op.
fn sync_dir(path: &Path) -> Result<()> {
    if cfg!(unix) {
        fs::File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| error(path, format!("cannot sync directory: {e}")))?;
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| error(from, format!("cannot rename to {}: {e}", to.display())))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => fail(path, format!("cannot remove: {e}")),
        _ => Ok(()),
    }
}

/// Saving deletes and renames directories: refuse any that holds something we did not write.
fn ensure_replaceable(path: &Path) -> Result<()> {
    let Ok(meta) = fs::metadata(path) else { return Ok(()) }; // missing: nothing to lose
    if !meta.is_dir() {
        return fail(path, "exists and is not a directory; refusing to replace it");
    }
    let entries = fs::read_dir(path).map_err(|e| error(path, format!("cannot list: {e}")))?;
    for entry in entries {
        let name = entry.map_err(|e| error(path, format!("cannot list: {e}")))?.file_name();
        if !FILES.iter().any(|f| name == *f) {
            let what = format!(
                "holds `{}`, which is not part of a checkpoint; refusing to replace it (choose a new directory)",
                name.to_string_lossy()
            );
            return fail(path, what);
        }
    }
    Ok(())
}

/// `<dir>.<suffix>`, next to `dir`.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let Some(name) = dir.file_name() else {
        return fail(dir, "a checkpoint path must end in a directory name");
    };
    let mut name = name.to_os_string();
    name.push(format!(".{suffix}"));
    Ok(dir.with_file_name(name))
}

fn parent(dir: &Path) -> &Path {
    dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

// ---------------------------------------------------------------- loading

/// Load the config and the weights (for `generate`): `MambaLM::new(cfg, DType::F32, 0)`,
/// then every parameter from model.safetensors. If `dir` is missing but `<dir>.old` exists
/// (a save was interrupted), that checkpoint is loaded instead.
pub fn load_model(dir: &Path) -> Result<MambaLM> {
    let dir = resolve(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let cfg = read_config(&config_path)?;
    let path = dir.join(MODEL_FILE);
    let (tensors, _) = read_tensors(&path)?;
    if let Some(mismatch) = size_mismatch(&cfg, &tensors) {
        return fail(&path, format!("does not match {CONFIG_FILE}: {mismatch}"));
    }
    let model = MambaLM::new(cfg, DType::F32, 0).map_err(|e| error(&config_path, e.to_string()))?;
    model.load_parameters(&tensors, "").map_err(|e| error(&path, format!("does not match {CONFIG_FILE}: {e}")))?;
    Ok(model)
}

/// Load the moments and the step of `opt` (whose parameters must match the file by name and
/// shape) and return the rest of the training state. Nothing in `opt` changes unless the
/// whole file is valid. Falls back to `<dir>.old` like [`load_model`].
pub fn load_training_state(dir: &Path, opt: &mut AdamW) -> Result<TrainingState> {
    let path = resolve(dir)?.join(STATE_FILE);
    let (tensors, metadata) = read_tensors(&path)?;
    let error = |what: String| error(&path, what);
    let field = |key: &str| metadata.get(key).ok_or_else(|| error(format!("metadata field `{key}` is missing")));
    let number = |key: &str| {
        let text = field(key)?;
        text.parse::<u64>().map_err(|_| error(format!("metadata field `{key}` is `{text}`, not an unsigned integer")))
    };
    let format = field("format")?;
    if format != FORMAT {
        return Err(error(format!("has format `{format}`, this program reads `{FORMAT}`")));
    }
    let step = number("step")?;
    let rng_state = number("rng_state")?;
    let train_args = serde_json::from_str(field("train_args")?)
        .map_err(|e| error(format!("metadata field `train_args` is not valid JSON: {e}")))?;

    // Validate every moment before touching the optimizer.
    let mut moments = Vec::with_capacity(opt.params.len());
    for p in &opt.params {
        let moment = |kind: &str| {
            let key = format!("{kind}.{}", p.name);
            let t = tensors.get(&key).and_then(Loaded::tensor).ok_or_else(|| {
                error(format!("missing float tensor `{key}` (does the checkpoint match this model?)"))
            })?;
            if t.shape() != p.tensor.shape() {
                let (got, want) = (t.shape(), p.tensor.shape());
                return Err(error(format!("`{key}` has shape {got:?}, the optimizer's parameter has shape {want:?}")));
            }
            // The step updates the moments in place, so each must be a contiguous buffer of its
            // own. A loaded tensor is: `read_safetensors` gives every tensor its own, and once
            // `tensors` drops, the moment is its only holder (whether or not the conversions
            // below copy it). `.contiguous()` would copy a strided view, were one ever loaded.
            t.to_dtype(p.m.dtype())
                .and_then(|t| t.to(p.m.device()))
                .and_then(|t| t.contiguous())
                .map_err(|e| error(format!("`{key}`: {e}")))
        };
        moments.push((moment("exp_avg")?, moment("exp_avg_sq")?));
    }
    let known = |key: &str| {
        let name = key.strip_prefix("exp_avg.").or_else(|| key.strip_prefix("exp_avg_sq."));
        name.is_some_and(|name| opt.params.iter().any(|p| p.name == name))
    };
    if let Some(key) = tensors.keys().find(|k| !known(k)) {
        return Err(error(format!("unexpected tensor `{key}`: the optimizer has no such parameter")));
    }
    for (p, (m, v)) in opt.params.iter_mut().zip(moments) {
        (p.m, p.v) = (m, v);
    }
    opt.step = step;
    Ok(TrainingState { step, rng_state, train_args })
}

/// `dir` if it exists, else `<dir>.old` left by an interrupted save.
fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    if dir.exists() {
        return fail(dir, "is not a directory");
    }
    let old = sibling(dir, "old")?;
    if old.is_dir() {
        return Ok(old);
    }
    fail(dir, format!("no checkpoint here (neither this directory nor {} exists)", old.display()))
}

fn read_config(path: &Path) -> Result<MambaConfig> {
    let text = fs::read_to_string(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
    MambaConfig::from_json(&text).map_err(|e| error(path, e.to_string()))
}

/// The tensors of a safetensors file and its `__metadata__` strings.
fn read_tensors(path: &Path) -> Result<(BTreeMap<String, Loaded>, HashMap<String, String>)> {
    let bytes = fs::read(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
    // read_metadata checks the header and that the data fills the file exactly.
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| error(path, format!("not a valid safetensors file: {}", describe(&e))))?;
    let tensors = read_safetensors(&bytes).map_err(|e| error(path, e.to_string()))?;
    Ok((tensors, header.metadata().clone().unwrap_or_default()))
}

/// The safetensors errors in words.
fn describe(e: &SafeTensorError) -> String {
    let why = match e {
        SafeTensorError::HeaderTooSmall => "the file is shorter than the 8-byte header length (truncated)",
        SafeTensorError::InvalidHeaderLength => "the header runs past the end of the file (truncated?)",
        SafeTensorError::HeaderTooLarge => "the header length is implausible (corrupt first bytes?)",
        SafeTensorError::InvalidHeader | SafeTensorError::InvalidHeaderStart => {
            "the header is not UTF-8 JSON (corrupt)"
        }
        SafeTensorError::InvalidHeaderDeserialization => "the header is not valid safetensors JSON (corrupt)",
        SafeTensorError::MetadataIncompleteBuffer => "the tensor data does not fill the file exactly (truncated?)",
        _ => "",
    };
    if why.is_empty() {
        e.to_string()
    } else {
        format!("{why} [{e}]")
    }
}

/// Before allocating the model, check that the config describes as many parameters as the file
/// holds: a corrupt config.json could otherwise ask for terabytes. Returns what does not match,
/// if anything. Mismatched shapes of equal total size are then caught by `load_parameters`.
fn size_mismatch(cfg: &MambaConfig, tensors: &BTreeMap<String, Loaded>) -> Option<String> {
    let overflow = Some("the config's sizes overflow".to_string());
    let key = "backbone.embedding.weight";
    if let Some(t) = tensors.get(key).and_then(Loaded::tensor) {
        let Some(vocab) = cfg.checked_padded_vocab() else { return overflow };
        let want = [vocab, cfg.d_model];
        if t.shape() != want {
            return Some(format!(
                "`{key}` has shape {:?}, the config implies {want:?} (padded vocab, d_model)",
                t.shape()
            ));
        }
    }
    let held: usize =
        tensors.iter().filter(|(k, _)| *k != "lm_head.weight").filter_map(|(_, t)| t.tensor()).map(Tensor::numel).sum();
    match cfg.param_count() {
        Some(n) if n == held => None,
        Some(n) => Some(format!("the config describes {n} parameters, the file holds {held}")),
        None => overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamba_engine::Rng;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("mamba-checkpoint-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
        fn ckpt(&self) -> PathBuf {
            self.0.join("ckpt")
        }
        /// Names in the scratch directory, sorted.
        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> =
                fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn optimizer(model: &MambaLM) -> AdamW {
        let params = model.named_parameters().into_iter().map(|(n, t)| (n.clone(), t, MambaLM::decays(&n))).collect();
        AdamW::new(params, 1e-3, 0.1).unwrap()
    }

    /// A small model, an optimizer with random moments after 42 steps, and a state.
    fn fixture(d_model: usize, seed: u64) -> (MambaLM, AdamW, TrainingState) {
        let model = MambaLM::new(MambaConfig::new(d_model, 1), DType::F32, seed).unwrap();
        let mut opt = optimizer(&model);
        let mut rng = Rng::new(seed + 100);
        for p in &mut opt.params {
            p.m = Tensor::randn(p.tensor.shape(), 0.0, 1e-3, DType::F32, &mut rng);
            p.v = Tensor::rand_uniform(p.tensor.shape(), 0.0, 1e-6, DType::F32, &mut rng);
        }
        opt.step = 42;
        let state =
            TrainingState { step: 42, rng_state: u64::MAX - 12345, train_args: json!({"lr": 1e-3, "batch": 8}) };
        (model, opt, state)
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
    }

    /// The error's message, checked to name `file`.
    fn names_file(e: Error, file: &str) -> String {
        let msg = e.to_string();
        let Error::Checkpoint { path, .. } = &e else { panic!("not a checkpoint error: {msg}") };
        assert!(path.ends_with(file) && msg.contains(file), "error should name {file}: {msg}");
        msg
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let scratch = Scratch::new("roundtrip");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();

        let loaded = load_model(&scratch.ckpt()).unwrap();
        assert_eq!(loaded.cfg, model.cfg);
        for ((name, a), (_, b)) in model.named_parameters().iter().zip(loaded.named_parameters()) {
            assert_eq!(bits(a), bits(&b), "{name}");
        }
        let (other, _, _) = fixture(16, 2); // different weights and zero moments
        let mut opt2 = optimizer(&other);
        assert_eq!(load_training_state(&scratch.ckpt(), &mut opt2).unwrap(), state);
        assert_eq!(opt2.step, 42);
        for (p, q) in opt.params.iter().zip(&opt2.params) {
            assert_eq!((bits(&p.m), bits(&p.v)), (bits(&q.m), bits(&q.v)), "{}", p.name);
        }
        // model.safetensors is the reference state dict: named parameters + the tied head.
        let (tensors, meta) = read_tensors(&scratch.ckpt().join(MODEL_FILE)).unwrap();
        assert_eq!(tensors.len(), model.named_parameters().len() + 1);
        assert_eq!(bits(tensors["lm_head.weight"].tensor().unwrap()), bits(&model.embedding));
        assert_eq!(meta["format"], "pt");
    }

    #[test]
    fn truncated_model_file_is_an_error_naming_it() {
        let scratch = Scratch::new("truncated");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        let path = scratch.ckpt().join(MODEL_FILE);
        let bytes = fs::read(&path).unwrap();
        for len in [bytes.len() - 7, 100, 5, 0] {
            fs::write(&path, &bytes[..len]).unwrap();
            let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
            assert!(msg.contains("not a valid safetensors file"), "{msg}");
        }
    }

    #[test]
    fn corrupted_header_is_an_error_naming_it() {
        let scratch = Scratch::new("header");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        for (file, offset, byte) in [(MODEL_FILE, 8, b'#'), (MODEL_FILE, 7, 0xff), (STATE_FILE, 20, b'"')] {
            let path = scratch.ckpt().join(file);
            let mut bytes = fs::read(&path).unwrap();
            let saved = bytes[offset];
            bytes[offset] = byte;
            fs::write(&path, &bytes).unwrap();
            let e = match file {
                MODEL_FILE => load_model(&scratch.ckpt()).err().unwrap(),
                _ => load_training_state(&scratch.ckpt(), &mut optimizer(&model)).err().unwrap(),
            };
            let msg = names_file(e, file);
            assert!(msg.contains("corrupt"), "{msg}");
            bytes[offset] = saved;
            fs::write(&path, &bytes).unwrap();
        }
    }

    #[test]
    fn config_that_does_not_match_the_weights_is_an_error() {
        let scratch = Scratch::new("config");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        let path = scratch.ckpt().join(CONFIG_FILE);
        let write_cfg = |cfg: &MambaConfig| fs::write(&path, serde_json::to_string_pretty(cfg).unwrap()).unwrap();

        let mut cfg = model.cfg.clone();
        cfg.d_model = 32;
        write_cfg(&cfg);
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
        assert!(msg.contains(CONFIG_FILE) && msg.contains("[256, 16]"), "{msg}");

        // Same embedding, different state size: caught by the parameter count.
        let mut cfg = model.cfg.clone();
        cfg.ssm_cfg.d_state = 8;
        write_cfg(&cfg);
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
        assert!(msg.contains("parameters"), "{msg}");

        // Absurd sizes fail before anything is allocated.
        let mut cfg = model.cfg.clone();
        cfg.ssm_cfg.expand = usize::MAX / 2;
        write_cfg(&cfg);
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
        assert!(msg.contains("overflow"), "{msg}");

        let mut cfg = model.cfg.clone();
        cfg.rms_norm = false;
        write_cfg(&cfg);
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), CONFIG_FILE);
        assert!(msg.contains("rms_norm"), "{msg}");

        fs::write(&path, "{\"d_model\": 16,").unwrap();
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), CONFIG_FILE);
        assert!(msg.contains("invalid config") && msg.contains("line"), "{msg}");
    }

    #[test]
    fn missing_files_are_errors_naming_them() {
        let scratch = Scratch::new("missing");
        let (model, opt, state) = fixture(16, 1);
        let msg = load_model(&scratch.ckpt()).err().unwrap().to_string();
        assert!(msg.contains("no checkpoint here"), "{msg}");
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        for file in FILES {
            fs::rename(scratch.ckpt().join(file), scratch.0.join(file)).unwrap();
            let e = match file {
                STATE_FILE => load_training_state(&scratch.ckpt(), &mut optimizer(&model)).err().unwrap(),
                _ => load_model(&scratch.ckpt()).err().unwrap(),
            };
            assert!(names_file(e, file).contains("cannot read"));
            fs::rename(scratch.0.join(file), scratch.ckpt().join(file)).unwrap();
        }
    }

    #[test]
    fn mismatched_optimizer_is_refused_and_left_untouched() {
        let scratch = Scratch::new("optim");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        let (big, _, _) = fixture(32, 1);
        let mut wrong = optimizer(&big);
        let msg = names_file(load_training_state(&scratch.ckpt(), &mut wrong).err().unwrap(), STATE_FILE);
        assert!(msg.contains("has shape"), "{msg}");
        assert_eq!(wrong.step, 0);
        assert!(wrong.params.iter().all(|p| p.m.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0)));

        let mut fewer = optimizer(&model);
        fewer.params.pop();
        let msg = names_file(load_training_state(&scratch.ckpt(), &mut fewer).err().unwrap(), STATE_FILE);
        assert!(msg.contains("unexpected tensor"), "{msg}");
    }

    #[test]
    fn bad_metadata_is_an_error_naming_the_field() {
        let scratch = Scratch::new("metadata");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        let path = scratch.ckpt().join(STATE_FILE);
        let good = [("format", FORMAT), ("step", "42"), ("rng_state", "7"), ("train_args", "{}")];
        for (key, bad) in
            [("format", Some("mamba-train/0")), ("step", Some("-1")), ("rng_state", None), ("train_args", Some("{"))]
        {
            let meta: Vec<(&str, String)> = good
                .iter()
                .filter_map(|&(k, v)| match k == key {
                    true => bad.map(|b| (k, b.to_string())),
                    false => Some((k, v.to_string())),
                })
                .collect();
            let tensors: Vec<(String, Tensor)> = opt
                .params
                .iter()
                .flat_map(|p| {
                    [(format!("exp_avg.{}", p.name), p.m.clone()), (format!("exp_avg_sq.{}", p.name), p.v.clone())]
                })
                .collect();
            fs::write(&path, write_safetensors(&tensors, &meta).unwrap()).unwrap();
            let msg =
                names_file(load_training_state(&scratch.ckpt(), &mut optimizer(&model)).err().unwrap(), STATE_FILE);
            assert!(msg.contains(&format!("`{key}`")) || msg.contains("format"), "{msg}");
        }
    }

    #[test]
    fn untied_head_is_refused() {
        let scratch = Scratch::new("untied");
        let (model, opt, state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        let mut named = model.named_parameters();
        named.push(("lm_head.weight".into(), model.embedding.affine(2.0, 0.0).unwrap()));
        fs::write(scratch.ckpt().join(MODEL_FILE), write_safetensors(&named, &[]).unwrap()).unwrap();
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
        assert!(msg.contains("lm_head.weight"), "{msg}");
    }

    #[test]
    fn saving_twice_replaces_atomically() {
        let scratch = Scratch::new("twice");
        let (model, mut opt, mut state) = fixture(16, 1);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        (opt.step, state.step) = (43, 43);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        assert_eq!(scratch.entries(), ["ckpt"]);
        assert_eq!(load_training_state(&scratch.ckpt(), &mut optimizer(&model)).unwrap().step, 43);
    }

    #[test]
    fn stale_tmp_is_removed_and_old_is_a_fallback() {
        let scratch = Scratch::new("crash");
        let (model, opt, state) = fixture(16, 1);
        // A crash while writing: a partial <dir>.tmp.
        let tmp = scratch.0.join("ckpt.tmp");
        fs::create_dir_all(&tmp).unwrap();
        fs::write(tmp.join(MODEL_FILE), b"partial").unwrap();
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        assert_eq!(scratch.entries(), ["ckpt"]);
        // A crash between the two renames: only <dir>.old is left, and it loads.
        fs::rename(scratch.ckpt(), scratch.0.join("ckpt.old")).unwrap();
        assert_eq!(bits(&load_model(&scratch.ckpt()).unwrap().embedding), bits(&model.embedding));
        assert_eq!(load_training_state(&scratch.ckpt(), &mut optimizer(&model)).unwrap(), state);
        save(&scratch.ckpt(), &model, &opt, &state).unwrap();
        assert_eq!(scratch.entries(), ["ckpt"]);
    }

    #[test]
    fn foreign_directory_and_step_mismatch_are_refused() {
        let scratch = Scratch::new("foreign");
        let (model, opt, mut state) = fixture(16, 1);
        fs::create_dir_all(scratch.ckpt()).unwrap();
        fs::write(scratch.ckpt().join("notes.txt"), b"mine").unwrap();
        let msg = save(&scratch.ckpt(), &model, &opt, &state).err().unwrap().to_string();
        assert!(msg.contains("notes.txt"), "{msg}");
        assert!(scratch.ckpt().join("notes.txt").exists());
        assert_eq!(scratch.entries(), ["ckpt"]);

        state.step = 41;
        let e = save(&scratch.0.join("other"), &model, &opt, &state).err().unwrap();
        assert!(names_file(e, STATE_FILE).contains("42 steps"));
    }
}
