//! Tests of checkpoint.rs: round trips, atomic replacement, and every way a file can be bad.

use super::*;
use mamba_engine::Rng;
use mamba_model::{Mamba2Config, SsmConfig};
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
    AdamW::new(model.optimizer_params(), 1e-3, 0.1).unwrap()
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
    let state = TrainingState { step: 42, rng_state: u64::MAX - 12345, train_args: json!({"lr": 1e-3, "batch": 8}) };
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

    // Same embedding, different state size, or an MLP: caught by the parameter count.
    let mut cfg = model.cfg.clone();
    let SsmConfig::Mamba1(s) = &mut cfg.ssm_cfg else { unreachable!() };
    s.d_state = 8;
    write_cfg(&cfg);
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
    assert!(msg.contains("parameters"), "{msg}");
    write_cfg(&MambaConfig { d_intermediate: 16, ..model.cfg.clone() });
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
    assert!(msg.contains("parameters"), "{msg}");

    // Absurd sizes fail before anything is allocated, or read: the count needs only the config.
    let mut cfg = model.cfg.clone();
    let SsmConfig::Mamba1(s) = &mut cfg.ssm_cfg else { unreachable!() };
    s.expand = usize::MAX / 2;
    write_cfg(&cfg);
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), CONFIG_FILE);
    assert!(msg.contains("overflow"), "{msg}");

    // A Mamba-2 config over Mamba-1 weights: caught by the parameter count; a Mamba-2 option
    // that is not built: said against the config.
    let mamba2 = |s: Mamba2Config| MambaConfig { ssm_cfg: SsmConfig::Mamba2(s), ..model.cfg.clone() };
    write_cfg(&mamba2(Mamba2Config { headdim: 16, ..Default::default() }));
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
    assert!(msg.contains("parameters"), "{msg}");
    write_cfg(&mamba2(Mamba2Config { headdim: 16, d_ssm: Some(16), ..Default::default() }));
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), CONFIG_FILE);
    assert!(msg.contains("ssm_cfg.d_ssm"), "{msg}");

    // Unknown keys and wrong types are errors naming the key and the file.
    let text = serde_json::to_string(&model.cfg).unwrap();
    for (from, to, key) in [
        ("\"d_state\"", "\"d_stat\"", "`ssm_cfg.d_stat`"),
        ("\"n_layer\":1", "\"n_layer\":\"1\"", "`n_layer`"),
        ("\"ssm_cfg\":{", "\"ssm_cfg\":{\"layer\":\"Mamba3\",", "`ssm_cfg.layer`"),
    ] {
        assert!(text.contains(from), "{text}");
        fs::write(&path, text.replace(from, to)).unwrap();
        let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), CONFIG_FILE);
        assert!(msg.contains(key), "{msg}");
    }

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
        let msg = names_file(load_training_state(&scratch.ckpt(), &mut optimizer(&model)).err().unwrap(), STATE_FILE);
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
fn integer_weights_are_refused_naming_the_dtype() {
    use safetensors::{tensor::TensorView, Dtype};
    let scratch = Scratch::new("dtype");
    let (model, opt, state) = fixture(16, 1);
    save(&scratch.ckpt(), &model, &opt, &state).unwrap();
    // Every parameter as F32 bytes, except norm_f.weight as I64 of the same shape.
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = model
        .named_parameters()
        .into_iter()
        .map(|(name, t)| {
            let values = t.to_vec::<f32>().unwrap();
            match name.as_str() {
                "backbone.norm_f.weight" => {
                    (name, Dtype::I64, t.shape().to_vec(), values.iter().flat_map(|_| 1i64.to_le_bytes()).collect())
                }
                _ => (name, Dtype::F32, t.shape().to_vec(), values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            }
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(n, d, shape, b)| (n.clone(), TensorView::new(*d, shape.clone(), b).unwrap())).collect();
    fs::write(scratch.ckpt().join(MODEL_FILE), safetensors::serialize(views, &None).unwrap()).unwrap();
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
    assert!(msg.contains("`backbone.norm_f.weight` has dtype I64"), "{msg}");
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

#[test]
fn non_finite_weights_and_moments_are_refused_by_name() {
    let scratch = Scratch::new("nan");
    let (model, opt, state) = fixture(16, 1);
    save(&scratch.ckpt(), &model, &opt, &state).unwrap();
    let poison = |t: &Tensor, bad: f64| {
        let mut values = t.to_vec_f64().unwrap();
        values[3] = bad;
        Tensor::from_f64(&values, t.shape(), t.dtype()).unwrap()
    };
    let mut named = model.named_parameters();
    let name = named[1].0.clone();
    named[1].1 = poison(&named[1].1, f64::NAN);
    named.push(("lm_head.weight".into(), model.embedding.clone()));
    fs::write(scratch.ckpt().join(MODEL_FILE), write_safetensors(&named, &[]).unwrap()).unwrap();
    let msg = names_file(load_model(&scratch.ckpt()).err().unwrap(), MODEL_FILE);
    assert!(msg.contains(&format!("parameter `{name}` holds NaN")), "{msg}");

    let mut moments: Vec<(String, Tensor)> = opt
        .params
        .iter()
        .flat_map(|p| [(format!("exp_avg.{}", p.name), p.m.clone()), (format!("exp_avg_sq.{}", p.name), p.v.clone())])
        .collect();
    moments[2].1 = poison(&moments[2].1, f64::INFINITY);
    let meta =
        [("format", FORMAT.to_string()), ("step", "42".into()), ("rng_state", "7".into()), ("train_args", "{}".into())];
    fs::write(scratch.ckpt().join(STATE_FILE), write_safetensors(&moments, &meta).unwrap()).unwrap();
    let mut fresh = optimizer(&model);
    let msg = names_file(load_training_state(&scratch.ckpt(), &mut fresh).err().unwrap(), STATE_FILE);
    assert!(msg.contains(&format!("moment `{}` holds inf", moments[2].0)), "{msg}");
    assert_eq!(fresh.step, 0, "a refused state leaves the optimizer as it was");
}

#[test]
fn check_replaceable_sees_the_siblings() {
    let scratch = Scratch::new("preflight");
    check_replaceable(&scratch.ckpt()).unwrap();
    fs::create_dir_all(scratch.0.join("ckpt.old")).unwrap();
    fs::write(scratch.0.join("ckpt.old").join("notes.txt"), b"mine").unwrap();
    let msg = check_replaceable(&scratch.ckpt()).err().unwrap().to_string();
    assert!(msg.contains("ckpt.old") && msg.contains("notes.txt"), "{msg}");
}

/// A save that fails after writing <dir>.tmp (here: <dir> is a dangling symlink, which
/// the final rename cannot replace) removes <dir>.tmp and keeps <dir>.old loadable.
#[cfg(unix)]
#[test]
fn a_failed_save_removes_its_tmp() {
    let scratch = Scratch::new("failed");
    let (model, opt, state) = fixture(16, 1);
    save(&scratch.ckpt(), &model, &opt, &state).unwrap();
    fs::rename(scratch.ckpt(), scratch.0.join("ckpt.old")).unwrap(); // an interrupted save
    std::os::unix::fs::symlink(scratch.0.join("nowhere"), scratch.ckpt()).unwrap();
    assert!(exists(&scratch.ckpt()), "<dir>.old is a checkpoint");
    let e = save(&scratch.ckpt(), &model, &opt, &state).err().unwrap();
    assert!(e.to_string().contains("cannot rename"), "{e}");
    assert_eq!(scratch.entries(), ["ckpt", "ckpt.old"], "the partial ckpt.tmp stayed");
    fs::remove_file(scratch.ckpt()).unwrap();
    assert!(exists(&scratch.ckpt()) && !exists(&scratch.0.join("other")));
    assert_eq!(load_training_state(&scratch.ckpt(), &mut optimizer(&model)).unwrap(), state);
}
