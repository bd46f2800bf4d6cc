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
//! missing; a save that fails (a full disk) removes its `<dir>.tmp`, and the next save deletes
//! one a crash left. Because saving deletes directories, it refuses to replace one that holds
//! anything but checkpoint files ([`check_replaceable`] asks the same before a run starts).
//! Weights or moments holding a NaN or an infinity are refused on loading.

use crate::{optim::AdamW, Error, Result};
use mamba_engine::{no_grad, DType, Tensor};
use mamba_model::error::describe;
use mamba_model::{
    io::{read_safetensors, write_safetensors, Loaded},
    lm::declared_shapes,
    MambaConfig, MambaLM,
};
use safetensors::SafeTensors;
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
/// A save that fails removes its partial `<dir>.tmp` (best effort), so a full disk leaves
/// only the previous checkpoint behind.
pub fn save(dir: &Path, model: &MambaLM, opt: &AdamW, state: &TrainingState) -> Result<()> {
    // Check and serialise everything first (save_files checks the directories before it
    // writes): a failure here leaves the disk untouched.
    if state.step != opt.step {
        let what = format!("TrainingState.step is {} but the optimizer has taken {} steps", state.step, opt.step);
        return fail(&dir.join(STATE_FILE), what);
    }
    let config = serde_json::to_string_pretty(&model.cfg).map_err(|e| error(&dir.join(CONFIG_FILE), e.to_string()))?;
    let weights = model_bytes(model).map_err(|e| error(&dir.join(MODEL_FILE), e.to_string()))?;
    let training = state_bytes(opt, state).map_err(|e| error(&dir.join(STATE_FILE), e.to_string()))?;
    save_files(dir, &[(CONFIG_FILE, config.as_bytes()), (MODEL_FILE, &weights), (STATE_FILE, &training)])
}

/// Write `files` (name, bytes) as the checkpoint `dir`, replacing any there atomically (steps
/// 1 to 4 of the module docs); a failure removes the partial `<dir>.tmp`.
pub(crate) fn save_files(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let (tmp, old) = (sibling(dir, "tmp")?, sibling(dir, "old")?);
    check_replaceable(dir)?;
    let replaced = replace(dir, &tmp, &old, files);
    if replaced.is_err() {
        let _ = fs::remove_dir_all(&tmp); // best effort: <dir> or <dir>.old is still complete
    }
    replaced
}

/// Steps 1 to 4 of the module docs: `files` into `tmp`, then `tmp` in place of `dir`.
fn replace(dir: &Path, tmp: &Path, old: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    // 1. The complete checkpoint in <dir>.tmp, durable before anything else changes.
    remove_if_exists(tmp)?;
    fs::create_dir_all(tmp).map_err(|e| error(tmp, format!("cannot create directory: {e}")))?;
    for (name, bytes) in files {
        write_synced(&tmp.join(name), bytes)?;
    }
    sync_dir(tmp)?;
    // 2. Keep the previous checkpoint as <dir>.old. Both can only exist together after a
    // crash between steps 3 and 4, and then <dir> is complete: the stale <dir>.old goes.
    if dir.exists() {
        remove_if_exists(old)?;
        rename(dir, old)?;
    }
    // 3. and 4. If <dir> was missing, <dir>.old (if any) is the last complete checkpoint:
    // it is only removed once the new one is in place.
    rename(tmp, dir)?;
    sync_dir(parent(dir))?;
    remove_if_exists(old)?;
    sync_dir(parent(dir))
}

/// Whether [`save`] may replace `dir`, `<dir>.tmp` and `<dir>.old`: each is missing or a
/// directory of checkpoint files only. A run checks this before its first step, so that a
/// stray file is refused at once rather than at the first save.
pub fn check_replaceable(dir: &Path) -> Result<()> {
    for path in [dir.to_path_buf(), sibling(dir, "tmp")?, sibling(dir, "old")?] {
        ensure_replaceable(&path)?;
    }
    Ok(())
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
pub(crate) fn state_bytes(opt: &AdamW, state: &TrainingState) -> mamba_model::Result<Vec<u8>> {
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
                "holds `{}`, which is not part of a checkpoint; refusing to replace it (move that file away, \
                 or choose another directory)",
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
    // The count comes from the modules' declarations, allocating nothing: absurd sizes, or a
    // layer not built yet, are refused here.
    let count = cfg.param_count().map_err(|e| error(&config_path, e.to_string()))?;
    let path = dir.join(MODEL_FILE);
    let (tensors, _) = read_tensors(&path)?;
    if let Some(mismatch) = size_mismatch(&cfg, count, &tensors) {
        return fail(&path, format!("does not match {CONFIG_FILE}: {mismatch}"));
    }
    ensure_finite(&path, tensors.iter().filter_map(|(name, t)| Some((name.as_str(), t.tensor()?))), "parameter")?;
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
    let TrainingState { step, rng_state, train_args } = state_metadata(&path, &metadata)?;

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
            ensure_finite(&path, std::iter::once((key.as_str(), t)), "moment")?;
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

/// Whether `dir` (or `<dir>.old`, left by an interrupted save) holds a checkpoint to load.
pub fn exists(dir: &Path) -> bool {
    resolve(dir).is_ok()
}

/// Refuse `what`s (parameters, moments) holding a NaN or an infinity, by name: such weights
/// would load, then generate garbage or stop a resumed run at its first step.
pub(crate) fn ensure_finite<'a>(
    path: &Path,
    tensors: impl Iterator<Item = (&'a str, &'a Tensor)>,
    what: &str,
) -> Result<()> {
    for (name, t) in tensors {
        let values = t.to_vec_f64().map_err(|e| error(path, format!("{what} `{name}`: {e}")))?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            let why = format!(
                "{what} `{name}` holds {bad}: these weights are broken (a run that diverged?); use another checkpoint"
            );
            return fail(path, why);
        }
    }
    Ok(())
}

/// The step, data RNG state and settings in a training state's metadata, checked.
fn state_metadata(path: &Path, metadata: &HashMap<String, String>) -> Result<TrainingState> {
    let field = |key: &str| metadata.get(key).ok_or_else(|| error(path, format!("metadata field `{key}` is missing")));
    let number = |key: &str| {
        let text = field(key)?;
        let what = format!("metadata field `{key}` is `{text}`, not an unsigned integer");
        text.parse::<u64>().map_err(|_| error(path, what))
    };
    let format = field("format")?;
    if format != FORMAT {
        return fail(path, format!("has format `{format}`, this program reads `{FORMAT}`"));
    }
    let (step, rng_state) = (number("step")?, number("rng_state")?);
    let train_args = serde_json::from_str(field("train_args")?)
        .map_err(|e| error(path, format!("metadata field `train_args` is not valid JSON: {e}")))?;
    Ok(TrainingState { step, rng_state, train_args })
}

/// The training state a checkpoint saved (step, data RNG state, settings) without its moments:
/// read from the file's header alone, so that a resume checks its settings, and the memory
/// they need, before loading anything.
pub fn read_saved_state(dir: &Path) -> Result<TrainingState> {
    use std::io::Read;
    /// The header's `__metadata__`; the tensor entries are not needed here.
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let path = resolve(dir)?.join(STATE_FILE);
    let invalid = |why: &str| error(&path, format!("not a valid safetensors file: {why}"));
    let mut file = fs::File::open(&path).map_err(|e| error(&path, format!("cannot read: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| invalid("the file is shorter than the 8-byte header length (truncated)"))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(invalid("the header length is implausible (corrupt first bytes?)"));
    }
    let mut header = vec![0; len as usize];
    file.read_exact(&mut header).map_err(|_| invalid("the header runs past the end of the file (truncated?)"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| invalid(&format!("the header is not valid safetensors JSON (corrupt): {e}")))?;
    state_metadata(&path, &header.metadata)
}

/// `dir` if it exists, else `<dir>.old` left by an interrupted save.
pub(crate) fn resolve(dir: &Path) -> Result<PathBuf> {
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
pub(crate) fn read_tensors(path: &Path) -> Result<(BTreeMap<String, Loaded>, HashMap<String, String>)> {
    let bytes = fs::read(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
    // read_metadata checks the header and that the data fills the file exactly.
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| error(path, format!("not a valid safetensors file: {}", describe(&e))))?;
    let tensors = read_safetensors(&bytes).map_err(|e| error(path, e.to_string()))?;
    Ok((tensors, header.metadata().clone().unwrap_or_default()))
}

/// Before allocating the model, check that the config describes as many parameters (`count`,
/// [`MambaConfig::param_count`]) as the file holds: a corrupt config.json could otherwise ask for
/// terabytes. Returns what does not match, if anything. Mismatched shapes of equal total size
/// are then caught by `load_parameters`.
fn size_mismatch(cfg: &MambaConfig, count: usize, tensors: &BTreeMap<String, Loaded>) -> Option<String> {
    if let Some((name, Loaded::Int { dtype, .. })) = tensors.iter().find(|(_, t)| t.tensor().is_none()) {
        return Some(format!("`{name}` has dtype {dtype:?}; model weights must be F32, F64 or BF16"));
    }
    // The shapes the config declares outside the blocks (the embedding and norm_f): a wrong
    // d_model or vocabulary, said plainly.
    for (name, want) in declared_shapes(cfg, 0..0).unwrap_or_default() {
        if let Some(t) = tensors.get(&name).and_then(Loaded::tensor).filter(|t| t.shape() != want) {
            return Some(format!("`{name}` has shape {:?}, the config implies {want:?}", t.shape()));
        }
    }
    let held: usize =
        tensors.iter().filter(|(k, _)| *k != "lm_head.weight").filter_map(|(_, t)| t.tensor()).map(Tensor::numel).sum();
    (count != held).then(|| format!("the config describes {count} parameters, the file holds {held}"))
}

#[cfg(test)]
mod tests;
