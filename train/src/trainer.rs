//! The training loop behind `mamba train`.
//!
//! [`Trainer`] holds a run's model, optimizer and data; [`Trainer::step`] is one step:
//! set the learning rate (linear warmup, cosine decay), forward the Mamba LM on a batch
//! (random text windows or a synthetic task), cross-entropy, backward, clip the gradient
//! norm, AdamW. [`train`] drives the steps and, periodically, validation (bits per byte,
//! or accuracy for tasks), a sample, a checkpoint, the metrics log and the loss curve.
//! A non-finite loss or gradient stops the run before it can touch the weights, so
//! the last checkpoint stays good.

use crate::{
    checkpoint::{self, TrainingState},
    data::{default_corpus, eval_starts, random_batch, windows, Corpus},
    generate::{generate, Sampling},
    optim::{clip_grad_norm, lr_at, AdamW},
    report::{loss_curve_svg, read_metrics, write_atomic, MetricsLog},
    tasks::{accuracy, Task},
    Error, Result,
};
use indicatif::{ProgressBar, ProgressStyle};
use mamba_engine::{no_grad, DType, Device, Rng, Tensor};
use mamba_model::{MambaConfig, MambaLM};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::{
    f64::consts::LN_2,
    path::{Path, PathBuf},
    time::Instant,
};

#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Train on this text file instead of the embedded corpus (this repository's source and docs).
    #[arg(long, conflicts_with = "task")]
    pub text: Option<PathBuf>,
    /// Train on a synthetic task instead: selective-copying or induction-heads.
    #[arg(long)]
    pub task: Option<String>,
    /// Task: sequence length before the answer.
    #[arg(long, default_value_t = 64)]
    pub task_len: usize,
    /// Task: tokens to copy (selective-copying).
    #[arg(long, default_value_t = 8)]
    pub task_tokens: usize,
    /// Task: number of data tokens.
    #[arg(long, default_value_t = 16)]
    pub task_vocab: usize,
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    /// Total optimizer steps, which the learning-rate schedule spans [default: 1000; on
    /// --resume, the checkpoint's].
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Bytes per training window (text only).
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Final learning rate as a fraction of the peak.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Where checkpoints, metrics.jsonl and loss.svg go [default: runs/default; on
    /// --resume, the run the checkpoint belongs to].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Validation windows per evaluation.
    #[arg(long, default_value_t = 64)]
    pub eval_windows: usize,
    /// Bytes to sample at each evaluation (text only; 0 disables).
    #[arg(long, default_value_t = 200)]
    pub sample_tokens: usize,
    #[arg(long, default_value_t = 200)]
    pub checkpoint_every: u64,
    /// Time steps between the scan states saved for backward.
    #[arg(long, default_value_t = 64)]
    pub scan_chunk: usize,
    /// Continue from this checkpoint directory with its saved settings (only --steps, --out,
    /// --stop-after and --quiet apply).
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Stop after this many steps of this run (a checkpoint is written; continue with --resume).
    #[arg(long)]
    #[serde(skip)]
    pub stop_after: Option<u64>,
    /// No progress bar or samples (logs still written).
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
    /// Where to train: cpu, or cuda (a build with `--features cuda`; see docs/GPU.md).
    #[arg(long, default_value = "cpu")]
    #[serde(skip, default = "cpu")]
    pub device: Device,
    /// Time every GPU kernel (CUDA events): print a per-kernel table and the memory ledger
    /// at the end and write them to <out>/profile.txt, and the kernel timeline to
    /// <out>/trace.json (open it in Perfetto). Needs --device cuda.
    #[arg(long)]
    #[serde(skip)]
    pub profile: bool,
}

fn cpu() -> Device {
    Device::Cpu
}

impl TrainArgs {
    pub fn steps(&self) -> u64 {
        self.steps.unwrap_or(1000)
    }

    pub fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from("runs/default"))
    }

    /// Refuse settings that cannot train, each with the flag to change.
    fn validate(&self) -> Result<()> {
        let positive = [
            ("--steps", self.steps() as usize),
            ("--batch", self.batch),
            ("--seq-len", self.seq_len),
            ("--d-model", self.d_model),
            ("--n-layer", self.n_layer),
            ("--eval-every", self.eval_every as usize),
            ("--eval-windows", self.eval_windows),
            ("--checkpoint-every", self.checkpoint_every as usize),
            ("--scan-chunk", self.scan_chunk),
            ("--stop-after", self.stop_after.map_or(1, |n| n as usize)),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Settings(format!("{flag} must be at least 1")));
        }
        let rates = [("--lr", self.lr), ("--min-lr-frac", self.min_lr_frac), ("--weight-decay", self.weight_decay)];
        if let Some((flag, v)) = rates.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
            return Err(Error::Settings(format!("{flag} must be a finite number >= 0, got {v}")));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            let clip = self.grad_clip;
            return Err(Error::Settings(format!("--grad-clip must be a finite number > 0, got {clip}")));
        }
        if self.profile && self.device != Device::Cuda {
            return Err(Error::Settings("--profile times GPU kernels: add --device cuda".into()));
        }
        Ok(())
    }
}

/// What a run did, for callers and tests.
pub struct TrainSummary {
    /// Training loss (nats) of every step of this run, in order.
    pub losses: Vec<f64>,
    /// Last validation result: bits per byte (text) or accuracy (task).
    pub last_eval: Option<f64>,
    pub final_step: u64,
}

/// Where batches come from.
enum Source {
    Text(Corpus),
    Task(Task),
}

impl Source {
    fn new(args: &TrainArgs) -> Result<Source> {
        if let Some(name) = &args.task {
            return Ok(Source::Task(Task::from_name(name, args.task_len, args.task_tokens, args.task_vocab)?));
        }
        let bytes = match &args.text {
            Some(path) => std::fs::read(path).map_err(Error::io(format!("cannot read --text {}", path.display())))?,
            None => default_corpus().to_vec(),
        };
        Ok(Source::Text(Corpus::split(&bytes, 0.1, args.seq_len)?))
    }

    fn vocab(&self) -> usize {
        match self {
            Source::Text(_) => 256,
            Source::Task(t) => t.vocab_size(),
        }
    }

    fn seq_len(&self, args: &TrainArgs) -> usize {
        match self {
            Source::Text(_) => args.seq_len,
            Source::Task(t) => t.len(),
        }
    }

    fn batch(&self, args: &TrainArgs, rng: &mut Rng) -> (Vec<usize>, Vec<i64>) {
        match self {
            Source::Text(c) => random_batch(&c.train, args.batch, args.seq_len, rng),
            Source::Task(t) => t.batch(args.batch, rng),
        }
    }

    /// (metric name, value): validation bits per byte, or task accuracy on a fixed set.
    fn evaluate(&self, model: &MambaLM, args: &TrainArgs) -> Result<(&'static str, f64)> {
        let _guard = no_grad();
        match self {
            Source::Text(c) => {
                let starts = eval_starts(&c.val, args.eval_windows, args.seq_len);
                let (ids, targets) = windows(&c.val, &starts, args.seq_len);
                let loss = model.loss(&ids, &targets, starts.len(), args.seq_len)?.item()?;
                Ok(("val_bpb", loss / LN_2))
            }
            Source::Task(t) => {
                let mut rng = Rng::new(0xe7a1); // the same evaluation set every time
                let (ids, targets) = t.batch(args.eval_windows.max(1) * 4, &mut rng);
                let logits = model.forward(&ids, ids.len() / t.len(), t.len())?;
                Ok(("val_accuracy", accuracy(&logits, &targets)?))
            }
        }
    }
}

/// One batch: `rows` sequences of `len` token ids, row-major, and each position's
/// next-token target (-100 where a task scores nothing).
pub struct Batch {
    pub ids: Vec<usize>,
    pub targets: Vec<i64>,
    pub rows: usize,
    pub len: usize,
}

/// What one [`Trainer::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Updates applied so far, this one included: the 1-based number of the step.
    pub step: u64,
    /// Training loss of the batch (nats), before the update.
    pub loss: f64,
    /// Global gradient norm before clipping (0 if no parameter has a gradient).
    pub grad_norm: f64,
    /// Learning rate of the update.
    pub lr: f64,
}

/// A training run's state: the model, its optimizer, the data and the data sampler's RNG.
/// [`Trainer::step`] is one optimizer step on one batch; [`train`] drives it and writes the
/// logs, evaluations and checkpoints around it.
pub struct Trainer {
    /// The run's settings (a resumed run's come from its checkpoint).
    pub args: TrainArgs,
    pub model: MambaLM,
    pub opt: AdamW,
    /// The data sampler's RNG, saved in checkpoints so a resumed run continues the same stream.
    pub rng: Rng,
    source: Source,
}

impl Trainer {
    /// A fresh run as `args` says or, with `--resume`, the run its checkpoint left.
    pub fn new(args: &TrainArgs) -> Result<Trainer> {
        match &args.resume {
            None => Trainer::start(args),
            Some(dir) => Trainer::resume(args, dir),
        }
    }

    /// A fresh model, optimizer and data stream from `args`.
    fn start(args: &TrainArgs) -> Result<Trainer> {
        args.validate()?;
        let source = Source::new(args)?;
        let mut cfg = MambaConfig::new(args.d_model, args.n_layer);
        cfg.vocab_size = source.vocab();
        let mut model = MambaLM::new(cfg, DType::F32, args.seed)?.to(args.device)?;
        model.scan_chunk = args.scan_chunk;
        let opt = optimizer(&model, args)?;
        Ok(Trainer { args: args.clone(), model, opt, rng: Rng::new(args.seed ^ 0xda7a), source })
    }

    /// Model, optimizer, data RNG and settings as a checkpoint left them; of `cli`, only
    /// --steps, --out, --stop-after, --quiet, --device and --profile apply.
    fn resume(cli: &TrainArgs, dir: &Path) -> Result<Trainer> {
        let mut model = checkpoint::load_model(dir)?.to(cli.device)?;
        let mut opt = optimizer(&model, cli)?;
        let state = checkpoint::load_training_state(dir, &mut opt)?;
        let mut args: TrainArgs = serde_json::from_value(state.train_args)
            .map_err(|e| Error::checkpoint(dir, format!("the saved training settings are unreadable: {e}")))?;
        if cli.steps.is_some() {
            args.steps = cli.steps;
        }
        // <out>/checkpoint belongs to the run in <out>
        args.out = cli.out.clone().or_else(|| dir.parent().map(PathBuf::from));
        args.stop_after = cli.stop_after;
        args.quiet = cli.quiet;
        (args.device, args.profile) = (cli.device, cli.profile);
        model.scan_chunk = args.scan_chunk;
        opt.lr = args.lr;
        opt.weight_decay = args.weight_decay;
        args.validate()?;
        let source = Source::new(&args)?;
        Ok(Trainer { args, model, opt, rng: Rng { state: state.rng_state }, source })
    }

    /// The next training batch (advances the data sampler's RNG).
    pub fn next_batch(&mut self) -> Batch {
        let (ids, targets) = self.source.batch(&self.args, &mut self.rng);
        Batch { ids, targets, rows: self.args.batch, len: self.source.seq_len(&self.args) }
    }

    /// One optimizer step on `batch`: the learning rate of this step (linear warmup, cosine
    /// decay), forward, cross-entropy, backward, gradient-norm clipping, AdamW. A loss or
    /// gradient norm that is not finite is an [`Error::Stopped`] before the weights change.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats> {
        let (args, step) = (&self.args, self.opt.step);
        self.opt.lr = lr_at(step, args.warmup, args.steps(), args.lr, args.lr * args.min_lr_frac);
        let loss = self.model.loss(&batch.ids, &batch.targets, batch.rows, batch.len)?;
        loss.backward()?;
        let grad_norm = clip_grad_norm(&self.opt.params, args.grad_clip)?;
        // The step's one read back to the host: the loss and the gradient norm together.
        let mut scalars = vec![loss.reshape(&[1])?];
        scalars.extend(grad_norm.map(|n| n.reshape(&[1])).transpose()?);
        let values = Tensor::concat(&scalars.iter().collect::<Vec<_>>(), 0)?.to_vec_f64()?;
        let (loss, grad_norm) = (values[0], values.get(1).copied().unwrap_or(0.0));
        if !loss.is_finite() {
            return Err(self.stopped(step + 1, format!("the loss is {loss}")));
        }
        if !grad_norm.is_finite() {
            return Err(self.stopped(step + 1, format!("the gradient norm is {grad_norm}")));
        }
        self.opt.step()?;
        Ok(StepStats { step: self.opt.step, loss, grad_norm, lr: self.opt.lr })
    }

    /// (metric name, value): validation bits per byte, or task accuracy on a fixed set.
    pub fn evaluate(&self) -> Result<(&'static str, f64)> {
        self.source.evaluate(&self.model, &self.args)
    }

    /// Where this run's checkpoint goes: `<out>/checkpoint`.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.args.out().join("checkpoint")
    }

    /// Save the model, the optimizer and the data stream's position to
    /// [`Trainer::checkpoint_dir`]; a weight that is not finite is an [`Error::Stopped`]
    /// instead, so a checkpoint is never written from broken weights.
    pub fn save_checkpoint(&self) -> Result<()> {
        if let Some(name) = first_non_finite(&self.model)? {
            return Err(self.stopped(self.opt.step, format!("parameter {name} is not finite")));
        }
        let train_args = serde_json::to_value(&self.args)?;
        let state = TrainingState { step: self.opt.step, rng_state: self.rng.state, train_args };
        checkpoint::save(&self.checkpoint_dir(), &self.model, &self.opt, &state)
    }

    fn stopped(&self, step: u64, why: String) -> Error {
        Error::Stopped { step, why, checkpoint: self.checkpoint_dir() }
    }
}

/// Run (or resume) training as `args` says: [`Trainer::step`] from the checkpoint's step (0
/// for a fresh run) up to --steps or --stop-after, with the metrics log, the progress bar,
/// evaluations, samples, the loss curve and checkpoints around it.
pub fn train(args: &TrainArgs) -> Result<TrainSummary> {
    let mut trainer = Trainer::new(args)?;
    let mut run = Run::open(&trainer)?;
    let mut summary = TrainSummary { losses: vec![], last_eval: None, final_step: run.first };
    for _ in run.first..run.last {
        let batch = trainer.next_batch();
        let stats = trainer.step(&batch)?;
        summary.losses.push(stats.loss);
        summary.final_step = stats.step;
        let tokens_per_s = run.log_step(&trainer, &stats)?;
        let at_end = stats.step == run.last;
        if stats.step % trainer.args.eval_every == 0 || at_end {
            summary.last_eval = Some(run.evaluate(&trainer, &stats, tokens_per_s)?);
        }
        if stats.step % trainer.args.checkpoint_every == 0 || at_end {
            trainer.save_checkpoint()?;
        }
    }
    run.finish(summary.final_step)?;
    Ok(summary)
}

/// What a run writes and shows around its steps: `<out>/metrics.jsonl`, the progress bar and
/// the lines above it, `loss.svg`, the profile and the final line.
struct Run {
    out: PathBuf,
    metrics_path: PathBuf,
    metrics: MetricsLog,
    bar: ProgressBar,
    profiler: Profiler,
    started: Instant,
    /// Steps `first..last` are this run's.
    first: u64,
    last: u64,
}

impl Run {
    /// Create `<out>`, trim its metrics log to the trainer's step, print the header line and
    /// start the profiler and the clock.
    fn open(trainer: &Trainer) -> Result<Run> {
        let args = &trainer.args;
        let out = args.out();
        std::fs::create_dir_all(&out).map_err(Error::io(format!("cannot create --out {}", out.display())))?;
        let metrics_path = out.join("metrics.jsonl");
        // The log holds exactly this run's history: a fresh run starts it anew, a resumed
        // one drops whatever was logged after its checkpoint.
        let first = trainer.opt.step;
        keep_metrics_up_to(&metrics_path, first)?;
        let metrics = MetricsLog::open(&metrics_path).map_err(Error::io(metrics_path.display()))?;
        let last = args.stop_after.map_or(args.steps(), |n| first.saturating_add(n).min(args.steps()));
        let bar = progress_bar(args, first, last);
        let header = format!(
            "mamba: {} parameters (d_model {}, {} layers), batch {} x {}, steps {first}..{last} of {}, out {}",
            trainer.model.num_parameters(),
            args.d_model,
            args.n_layer,
            args.batch,
            trainer.source.seq_len(args),
            args.steps(),
            out.display()
        );
        say(&bar, args.quiet, header);
        let profiler = Profiler::start(args, &out)?;
        Ok(Run { out, metrics_path, metrics, bar, profiler, started: Instant::now(), first, last })
    }

    /// Log a step to the metrics and the progress bar; returns the tokens per second so far.
    fn log_step(&mut self, trainer: &Trainer, stats: &StepStats) -> Result<f64> {
        let args = &trainer.args;
        let StepStats { step, loss, grad_norm, lr } = *stats;
        let tokens = (step - self.first) as usize * args.batch * trainer.source.seq_len(args);
        let tokens_per_s = tokens as f64 / self.started.elapsed().as_secs_f64();
        self.metrics
            .write(&json!({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s}))
            .map_err(Error::io(self.metrics_path.display()))?;
        self.bar.set_position(step);
        self.bar.set_message(format!("loss {loss:.3} | {tokens_per_s:.0} tok/s"));
        Ok(tokens_per_s)
    }

    /// Validate, log and show the result (with a sample, for text), redraw loss.svg; returns
    /// the validation value.
    fn evaluate(&mut self, trainer: &Trainer, stats: &StepStats, tokens_per_s: f64) -> Result<f64> {
        let (args, StepStats { step, loss, .. }) = (&trainer.args, *stats);
        let (name, value) = trainer.evaluate()?;
        self.metrics.write(&json!({"step": step, name: value})).map_err(Error::io(self.metrics_path.display()))?;
        let line = format!("step {step:>6} | loss {loss:.4} | {name} {value:.4} | {tokens_per_s:.0} tok/s");
        say(&self.bar, args.quiet, line);
        if let (Source::Text(c), false, true) = (&trainer.source, args.quiet, args.sample_tokens > 0) {
            // seeded by the 0-based index of the step, as always
            say(&self.bar, args.quiet, format!("  sample: {}", sample(&trainer.model, &c.val, args, step - 1)?));
        }
        write_loss_curve(args, &self.metrics_path)?;
        Ok(value)
    }

    /// Clear the bar, write the profile, and say where everything went if a step ran.
    fn finish(self, final_step: u64) -> Result<()> {
        self.bar.finish_and_clear();
        self.profiler.finish()?;
        if final_step > self.first {
            println!(
                "done: step {final_step} | checkpoint {} | metrics {} | curve {}",
                self.out.join("checkpoint").display(),
                self.metrics_path.display(),
                self.out.join("loss.svg").display()
            );
        }
        Ok(())
    }
}

/// The first parameter holding a NaN or an infinity, if any (checked before every save,
/// so a checkpoint is never written from broken weights).
fn first_non_finite(model: &MambaLM) -> Result<Option<String>> {
    for (name, p) in model.named_parameters() {
        if p.to_vec_f64()?.iter().any(|v| !v.is_finite()) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Rewrite the metrics log keeping only records up to `step` (none for a fresh run);
/// a malformed line (a crash mid-write) is dropped too.
fn keep_metrics_up_to(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|r| r["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    write_atomic(path, kept.as_bytes()).map_err(Error::io(path.display()))
}

fn optimizer(model: &MambaLM, args: &TrainArgs) -> Result<AdamW> {
    let params = model.named_parameters().into_iter().map(|(n, t)| (n.clone(), t, MambaLM::decays(&n))).collect();
    AdamW::new(params, args.lr, args.weight_decay)
}

/// `--profile`: CUDA-event timing of every kernel launch from the first step to the last.
/// A run that stops early (a NaN, an error) still writes its profile, when this drops.
struct Profiler {
    on: bool,
    out: PathBuf,
}

impl Profiler {
    fn start(args: &TrainArgs, out: &Path) -> Result<Profiler> {
        let profiler = Profiler { on: args.profile, out: out.to_path_buf() };
        if !args.profile {
            return Ok(profiler);
        }
        #[cfg(feature = "cuda")]
        {
            mamba_engine::cuda::gpu("profile")?.profile_start().map_err(cuda_error)?;
            Ok(profiler)
        }
        #[cfg(not(feature = "cuda"))]
        Err(Error::Settings("--profile needs a build with `--features cuda` (docs/GPU.md)".into()))
    }

    fn finish(mut self) -> Result<()> {
        self.write()
    }

    /// Print the per-kernel table and the ledger; write them to <out>/profile.txt and the
    /// trace to <out>/trace.json. Only once.
    fn write(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.on, false) {
            return Ok(());
        }
        let out = &self.out;
        #[cfg(feature = "cuda")]
        {
            let profile = mamba_engine::cuda::gpu("profile")?.profile_stop().map_err(cuda_error)?;
            let (reserved, cached) = mamba_engine::cuda::allocator_bytes();
            let table = format!(
                "{}\n{}  cuda allocator: {} reserved from the driver, {} of it cached for reuse\n",
                profile.table(),
                mamba_engine::ledger::report(),
                mamba_engine::ledger::human(reserved),
                mamba_engine::ledger::human(cached)
            );
            println!("{table}");
            let (table_path, trace_path) = (out.join("profile.txt"), out.join("trace.json"));
            write_atomic(&table_path, table.as_bytes()).map_err(Error::io(table_path.display()))?;
            write_atomic(&trace_path, profile.chrome_trace().as_bytes()).map_err(Error::io(trace_path.display()))?;
            println!("profile: {} and {}", out.join("profile.txt").display(), out.join("trace.json").display());
        }
        #[cfg(not(feature = "cuda"))]
        let _ = out;
        Ok(())
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            eprintln!("profile: {e}");
        }
    }
}

/// A CUDA driver error of the profiler, as the engine reports device errors.
#[cfg(feature = "cuda")]
fn cuda_error(e: impl std::fmt::Display) -> Error {
    Error::Engine(mamba_engine::Error::Device { op: "profile", device: Device::Cuda, msg: e.to_string() })
}

/// Print a line above the progress bar, or plainly when there is no bar (not a terminal).
/// `--quiet` silences everything but errors and the final line.
fn say(bar: &ProgressBar, quiet: bool, line: String) {
    if !bar.is_hidden() {
        bar.println(line);
    } else if !quiet {
        println!("{line}");
    }
}

fn progress_bar(args: &TrainArgs, first: u64, last: u64) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(last).with_position(first);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// A short continuation of the start of the validation text (its own RNG: sampling
/// never disturbs the training data stream, so resumed runs stay bit-identical).
fn sample(model: &MambaLM, val: &[u8], args: &TrainArgs, step: u64) -> Result<String> {
    let prompt: Vec<usize> = val[..val.len().min(32)].iter().map(|&b| b as usize).collect();
    let mut rng = Rng::new(args.seed.wrapping_add(step));
    let how = Sampling { temperature: 0.8, top_k: 40 };
    let out = generate(model, &prompt, args.sample_tokens, how, &mut rng, |_| {})?;
    let bytes: Vec<u8> = prompt.iter().chain(&out).map(|&t| t as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).replace('\n', "⏎"))
}

/// Redraw loss.svg from the whole metrics log (so resumed runs keep their history).
fn write_loss_curve(args: &TrainArgs, metrics_path: &Path) -> Result<()> {
    let records = read_metrics(metrics_path)?;
    let series = |key: &str, scale: f64| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()? * scale))).collect()
    };
    let svg = match args.task {
        None => loss_curve_svg(
            "mamba train",
            &[("train loss (bits/byte)", series("loss", 1.0 / LN_2)), ("val bits/byte", series("val_bpb", 1.0))],
        ),
        Some(_) => loss_curve_svg(
            "mamba train",
            &[("train loss (nats)", series("loss", 1.0)), ("val accuracy", series("val_accuracy", 1.0))],
        ),
    };
    let path = args.out().join("loss.svg");
    write_atomic(&path, svg.as_bytes()).map_err(Error::io(path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A one-layer d_model 16 model on the embedded corpus, parsed as `mamba train` would.
    fn tiny(seed: &str) -> TrainArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: TrainArgs,
        }
        let flags = ["--d-model", "16", "--n-layer", "1", "--batch", "2", "--seq-len", "16", "--warmup", "1"];
        Cli::parse_from([&["train", "--quiet", "--seed", seed][..], &flags].concat()).args
    }

    fn weights(model: &MambaLM) -> Vec<u64> {
        model.named_parameters().iter().flat_map(|(_, p)| p.to_vec_f64().unwrap()).map(f64::to_bits).collect()
    }

    /// Two steps from `seed`, checking that each changes the weights.
    fn two_steps(seed: &str) -> Vec<StepStats> {
        let mut trainer = Trainer::new(&tiny(seed)).unwrap();
        (0..2)
            .map(|_| {
                let before = weights(&trainer.model);
                let batch = trainer.next_batch();
                let stats = trainer.step(&batch).unwrap();
                assert_ne!(weights(&trainer.model), before, "step {} left the weights as they were", stats.step);
                stats
            })
            .collect()
    }

    #[test]
    fn steps_train_and_repeat_bit_for_bit_from_a_seed() {
        let (a, b, other) = (two_steps("5"), two_steps("5"), two_steps("6"));
        assert_eq!(a.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
        for s in &a {
            assert!(s.loss.is_finite() && s.grad_norm.is_finite() && s.grad_norm > 0.0 && s.lr > 0.0, "{s:?}");
        }
        let bits = |stats: &[StepStats]| stats.iter().map(|s| (s.loss.to_bits(), s.grad_norm.to_bits())).collect();
        let (a_bits, b_bits): (Vec<_>, Vec<_>) = (bits(&a), bits(&b));
        assert_eq!(a_bits, b_bits, "same seed, different steps:\n {a:?}\n {b:?}");
        assert_ne!(a[0].loss, other[0].loss);
    }

    #[test]
    fn a_non_finite_loss_stops_before_the_update() {
        let mut trainer = Trainer::new(&tiny("5")).unwrap();
        let norm = &trainer.model.norm_f;
        norm.set_data(&Tensor::from_f64(&vec![f64::NAN; norm.numel()], norm.shape(), norm.dtype()).unwrap()).unwrap();
        let before = weights(&trainer.model);
        let batch = trainer.next_batch();
        match trainer.step(&batch) {
            Err(Error::Stopped { step: 1, why, checkpoint }) => {
                assert!(why.contains("loss is NaN") && checkpoint.ends_with("checkpoint"), "{why}");
            }
            other => panic!("a NaN weight should stop the step: {:?}", other.map(|s| s.loss)),
        }
        assert_eq!((trainer.opt.step, weights(&trainer.model)), (0, before));
    }
}
