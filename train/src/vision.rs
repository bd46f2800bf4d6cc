//! `mamba vision train` and `mamba vision classify`: Vision Mamba (`model/src/vision.rs`) on an
//! image set (`images.rs`). Training: AdamW with warmup and cosine decay, gradient clipping,
//! each step's loss, gradient norm and images/s and the held-out top-1 accuracy every
//! `--eval-every` steps in `<out>/metrics.jsonl`, and a checkpoint (`<out>/checkpoint`,
//! written atomically) at each evaluation. Classification: the predicted class of each image
//! of one or more files.

use crate::args::Layer;
use crate::{
    checkpoint::{self, TrainingState, CONFIG_FILE, MODEL_FILE, STATE_FILE},
    images::{read_images, ImageSet},
    optim::{clip_grad_norm, lr_at, AdamW},
    report::MetricsLog,
    rundir::RunDir,
    Error, Result,
};
use mamba_engine::{no_grad, DType, Device, Rng, Tensor};
use mamba_model::{io::write_safetensors, Mamba2Config, MambaConfig, SsmConfig, VisionConfig, VisionMamba};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The settings of `mamba vision train`.
#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
pub struct VisionArgs {
    /// The training images: MNIST IDX (*-images-idx3-ubyte, its labels file beside it), a
    /// CIFAR-10 batch (*.bin) or a CSV file of pixels and a label per line (*.csv).
    #[arg(long, required_unless_present = "resume")]
    pub images: Option<PathBuf>,
    /// Continue the run of this checkpoint (e.g. runs/vision/checkpoint) in its directory, with
    /// its settings; only --steps, --device and --quiet are taken from the command line.
    #[arg(long, conflicts_with = "images")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Held-out images to measure on [default: every 10th image of --images, left out of training].
    #[arg(long)]
    pub test_images: Option<PathBuf>,
    /// Side of the square patches; it must divide the images' height and width.
    #[arg(long, default_value_t = 2)]
    pub patch: usize,
    #[arg(long, default_value_t = 64)]
    pub d_model: usize,
    /// Bidirectional Mamba blocks.
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 16)]
    pub d_state: usize,
    /// The blocks' mixer, made bidirectional: mamba1 (the selective scan) or mamba2 (SSD).
    #[arg(long, value_enum, default_value_t = Layer::Mamba1)]
    #[serde(default)]
    pub layer: Layer,
    /// Mamba-2: channels per head; it must divide 2 x --d-model.
    #[arg(long, default_value_t = 32)]
    #[serde(default = "default_headdim")]
    pub headdim: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Total optimizer steps [default: 1000; on --resume, the checkpoint's].
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Where to run: cpu, or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    #[serde(skip, default = "crate::args::cpu")]
    pub device: Device,
    #[arg(long, default_value = "runs/vision")]
    pub out: PathBuf,
    /// Replace another run's files in --out.
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub quiet: bool,
}

fn default_headdim() -> usize {
    32
}

/// The settings of `mamba vision classify`.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// A checkpoint directory written by `mamba vision train` (e.g. runs/vision/checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Image files in a format of --images: each image's class is printed, one a line.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Train as `args` say (or continue the run `args.resume`); returns the final line (the
/// held-out accuracy and the checkpoint).
pub fn train(args: &VisionArgs) -> Result<String> {
    crate::args::check_device(args.device)?;
    let (mut args, resumed) = match &args.resume {
        Some(dir) => (resumed_args(args, dir)?, Some(dir.as_path())),
        None => (args.clone(), None),
    };
    args.steps.get_or_insert(1000);
    let args = &args;
    let (train, test) = split(args)?;
    let (model, mut opt, mut rng) = match resumed {
        None => {
            let model = VisionMamba::new(config(args, &train)?, DType::F32, args.seed)?.to(args.device)?;
            let opt = optimizer(&model, args)?;
            (model, opt, Rng::new(args.seed ^ 0x1ba6e))
        }
        Some(dir) => {
            let model = load(dir)?.to(args.device)?;
            let mut opt = optimizer(&model, args)?;
            let state = checkpoint::load_training_state(dir, &mut opt)?;
            (model, opt, Rng::new(state.rng_state))
        }
    };
    let mut dir = RunDir::claim(&args.out, resumed, args.overwrite)?;
    dir.clear_previous_run()?;
    let metrics_path = args.out.join("metrics.jsonl");
    crate::run::keep_metrics_up_to(&metrics_path, opt.step)?;
    let mut metrics = MetricsLog::open(&metrics_path).map_err(Error::io(metrics_path.display()))?;
    let say = |line: String| {
        if !args.quiet {
            println!("{line}")
        }
    };
    say(format!(
        "mamba vision: {} parameters, {} training and {} held-out images of {}x{}x{} in {} classes, out {}",
        model.parameters().iter().map(|p| p.tensor.numel()).sum::<usize>(),
        train.len(),
        test.len(),
        train.channels,
        train.height,
        train.width,
        train.classes,
        args.out.display()
    ));
    let (mut accuracy, steps) = (0.0, args.steps.unwrap_or(1000));
    if opt.step >= steps {
        return Err(Error::Settings(format!(
            "the run is at step {} and --steps is {steps}: pass a larger --steps",
            opt.step
        )));
    }
    for step in opt.step + 1..=steps {
        opt.lr = lr_at(step - 1, args.warmup, steps, args.lr, args.lr * 0.1);
        let (loss, grad_norm, images_per_s) = train_step(&model, &mut opt, &train, &mut rng, args, step)?;
        let mut record = serde_json::json!({
            "step": step, "loss": loss, "lr": opt.lr, "grad_norm": grad_norm, "images_per_s": images_per_s
        });
        if step % args.eval_every.max(1) == 0 || step == steps {
            accuracy = evaluate(&model, &test, args.batch, args.device)?;
            record["val_accuracy"] = accuracy.into();
            save(&args.out.join("checkpoint"), &model, &opt, args, &rng)?;
            say(format!("step {step:>6} | loss {loss:.4} | val_accuracy {accuracy:.4}"));
        }
        metrics.write(&record).map_err(Error::io(metrics_path.display()))?;
    }
    Ok(format!(
        "done: step {steps} | held-out accuracy {accuracy:.4} | checkpoint {}",
        args.out.join("checkpoint").display()
    ))
}

/// One optimizer step on a batch drawn from `train`: the loss, the gradient norm, and the
/// images per second from drawing the batch through the update (wall time).
fn train_step(
    model: &VisionMamba,
    opt: &mut AdamW,
    train: &ImageSet,
    rng: &mut Rng,
    args: &VisionArgs,
    step: u64,
) -> Result<(f64, f64, f64)> {
    let started = Instant::now();
    let rows: Vec<usize> = (0..args.batch).map(|_| rng.below(train.len())).collect();
    let (x, y) = batch(train, &rows, args.device)?;
    let loss = model.loss(&x, &y)?;
    loss.backward()?;
    let norm = clip_grad_norm(&opt.params, args.grad_clip)?;
    let (loss, grad_norm) = (loss.item()?, norm.map(|n| n.item()).transpose()?.unwrap_or(0.0));
    if !(loss.is_finite() && grad_norm.is_finite()) {
        let what = format!("step {step}: the loss is {loss} and the gradient norm {grad_norm}");
        return Err(Error::Settings(format!(
            "{what}; stopped before the update (the checkpoint keeps the last evaluation's weights): lower --lr"
        )));
    }
    opt.step()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((loss, grad_norm, rows.len() as f64 / seconds.max(1e-9)))
}

/// The settings saved with the checkpoint `dir`, with --steps, --device and --quiet from
/// `given`, and --out the checkpoint's directory.
fn resumed_args(given: &VisionArgs, dir: &Path) -> Result<VisionArgs> {
    let state = checkpoint::read_saved_state(dir)?;
    let mut args: VisionArgs = serde_json::from_value(state.train_args).map_err(|e| Error::Checkpoint {
        path: dir.join(STATE_FILE),
        what: format!("its settings are not a vision run's: {e}"),
    })?;
    let out = crate::rundir::canonical_checkpoint(dir).parent().map(Path::to_path_buf).unwrap_or_default();
    (args.out, args.device, args.quiet, args.resume) = (out, given.device, given.quiet, Some(dir.to_path_buf()));
    args.steps = given.steps.or(args.steps);
    Ok(args)
}

fn optimizer(model: &VisionMamba, args: &VisionArgs) -> Result<AdamW> {
    let params = model.parameters().iter().map(|p| (p.name.clone(), p.tensor.clone(), p.decay)).collect();
    AdamW::new(params, args.lr, args.weight_decay)
}

/// The training images and the held-out ones.
fn split(args: &VisionArgs) -> Result<(ImageSet, ImageSet)> {
    let Some(images) = &args.images else {
        return Err(Error::Settings("--images is required (the training images)".into()));
    };
    let all = read_images(images)?;
    if let Some(path) = &args.test_images {
        let test = read_images(path)?;
        if (test.channels, test.height, test.width) != (all.channels, all.height, all.width) {
            let what = "its images' shape differs from --images'";
            return Err(Error::Settings(format!("--test-images {}: {what}", path.display())));
        }
        return Ok((all, test));
    }
    let pick = |keep: fn(usize) -> bool| {
        let rows: Vec<usize> = (0..all.len()).filter(|&i| keep(i)).collect();
        let pixels = rows.iter().flat_map(|&i| all.image(i).iter().copied()).collect();
        let labels = rows.iter().map(|&i| all.labels[i]).collect();
        ImageSet { pixels, labels, ..all.clone() }
    };
    Ok((pick(|i| i % 10 != 9), pick(|i| i % 10 == 9)))
}

/// The model the flags describe, for `images`.
fn config(args: &VisionArgs, images: &ImageSet) -> Result<VisionConfig> {
    let mut blocks = MambaConfig::new(args.d_model, args.n_layer);
    blocks.vocab_size = images.classes;
    match args.layer {
        Layer::Mamba1 => {
            if let SsmConfig::Mamba1(c) = &mut blocks.ssm_cfg {
                (c.bidirectional, c.d_state) = (true, args.d_state);
            }
        }
        Layer::Mamba2 => {
            let (d_state, headdim) = (args.d_state, args.headdim);
            blocks.ssm_cfg =
                SsmConfig::Mamba2(Mamba2Config { d_state, headdim, bidirectional: true, ..Default::default() });
        }
    }
    let (channels, height, width) = (images.channels, images.height, images.width);
    let cfg = VisionConfig { channels, height, width, patch: args.patch, classes: images.classes, blocks };
    VisionMamba::new(cfg.clone(), DType::F32, 0)
        .map_err(|e| Error::Settings(format!("--patch, --d-model, ..: {e}")))?;
    Ok(cfg)
}

/// Images `rows` of `set` as a (B, C, H, W) tensor on `device`, and their labels.
fn batch(set: &ImageSet, rows: &[usize], device: Device) -> Result<(Tensor, Vec<usize>)> {
    let pixels: Vec<f64> = rows.iter().flat_map(|&i| set.image(i).iter().map(|&p| p as f64)).collect();
    let shape = [rows.len(), set.channels, set.height, set.width];
    let x = Tensor::from_f64(&pixels, &shape, DType::F32)?.to(device)?;
    Ok((x, rows.iter().map(|&i| set.labels[i]).collect()))
}

/// The predicted class of every image of `set`.
fn predict(model: &VisionMamba, set: &ImageSet, batch_size: usize, device: Device) -> Result<Vec<usize>> {
    let _guard = no_grad();
    let mut out = Vec::with_capacity(set.len());
    let all: Vec<usize> = (0..set.len()).collect();
    for rows in all.chunks(batch_size.max(1)) {
        let (x, _) = batch(set, rows, device)?;
        let logits = model.forward(&x)?.to_vec_f64()?;
        let classes = model.cfg.classes;
        out.extend(
            logits.chunks(classes).map(|row| (0..classes).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0)),
        );
    }
    Ok(out)
}

fn evaluate(model: &VisionMamba, set: &ImageSet, batch_size: usize, device: Device) -> Result<f64> {
    let predicted = predict(model, set, batch_size, device)?;
    let right = predicted.iter().zip(&set.labels).filter(|(p, l)| p == l).count();
    Ok(right as f64 / set.len().max(1) as f64)
}

/// The checkpoint: config.json (the blocks' keys and "vision"), model.safetensors (every
/// parameter, f32), training_state.safetensors (the AdamW moments, the step, the settings).
fn save(dir: &Path, model: &VisionMamba, opt: &AdamW, args: &VisionArgs, rng: &Rng) -> Result<()> {
    let config = model.cfg.to_json()?;
    let named = model
        .parameters()
        .iter()
        .map(|p| Ok((p.name.clone(), p.tensor.to_dtype(DType::F32)?)))
        .collect::<Result<Vec<_>>>()?;
    let weights = write_safetensors(&named, &[("format", "pt".to_string())])?;
    let state = TrainingState { step: opt.step, rng_state: rng.state, train_args: serde_json::to_value(args)? };
    let training = checkpoint::state_bytes(opt, &state)?;
    checkpoint::save_files(dir, &[(CONFIG_FILE, config.as_bytes()), (MODEL_FILE, &weights), (STATE_FILE, &training)])
}

/// A model saved by `mamba vision train`.
pub fn load(dir: &Path) -> Result<VisionMamba> {
    let dir = checkpoint::resolve(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&config_path).map_err(Error::io(format!("cannot read {}", config_path.display())))?;
    let cfg =
        VisionConfig::from_json(&text).map_err(|e| Error::Checkpoint { path: config_path, what: e.to_string() })?;
    let path = dir.join(MODEL_FILE);
    let (tensors, _) = checkpoint::read_tensors(&path)?;
    checkpoint::ensure_finite(&path, tensors.iter().filter_map(|(n, t)| Some((n.as_str(), t.tensor()?))), "parameter")?;
    let model = VisionMamba::new(cfg, DType::F32, 0)?;
    model.load_parameters(&tensors).map_err(|e| Error::Checkpoint { path, what: e.to_string() })?;
    Ok(model)
}

/// Each image's predicted class, a line per image: `FILE[i]: class`.
pub fn classify(args: &ClassifyArgs) -> Result<String> {
    crate::args::check_device(args.device)?;
    let model = load(&args.checkpoint)?.to(args.device)?;
    let mut lines = Vec::new();
    for path in &args.images {
        let set = read_images(path)?;
        let VisionConfig { channels, height, width, .. } = model.cfg;
        if (set.channels, set.height, set.width) != (channels, height, width) {
            let what = format!(
                "images of {}x{}x{}; the model reads {channels}x{height}x{width}",
                set.channels, set.height, set.width
            );
            return Err(Error::Settings(format!("{}: {what}", path.display())));
        }
        for (i, class) in predict(&model, &set, 256, args.device)?.into_iter().enumerate() {
            lines.push(format!("{}[{i}]: {class}", path.display()));
        }
    }
    Ok(lines.join("\n"))
}
