//! What a training run writes and shows around its steps: the metrics log, the progress
//! bar and the lines above it, evaluations with samples, the loss curve, the profile.

use crate::{
    args::TrainArgs,
    chart::{loss_curve_svg, YAxis},
    checkpoint,
    generate::{generate, DecodePath, Sampling},
    report::{read_metrics, write_atomic, MetricsLog},
    rundir::{RunDir, BEST, LAST},
    trainer::{Source, StepStats, Trainer},
    Error, Result,
};
use indicatif::{ProgressBar, ProgressStyle};
#[cfg(feature = "cuda")]
use mamba_engine::Device;
use mamba_engine::Rng;
use mamba_model::MambaLM;
use serde_json::{json, Value};
use std::{
    f64::consts::LN_2,
    path::{Path, PathBuf},
    time::Instant,
};

/// What a run writes and shows around its steps: `<out>/metrics.jsonl`, the progress bar and
/// the lines above it, `loss.svg`, the profile and the final line. Holds `<out>`'s lock.
pub(crate) struct Run {
    out: PathBuf,
    metrics_path: PathBuf,
    metrics: MetricsLog,
    bar: ProgressBar,
    profiler: Profiler,
    /// When the current step began ([`Run::begin_step`]), and the seconds of this run's steps so
    /// far: tokens per second count training steps only, not evaluations or checkpoints.
    step_began: Instant,
    step_secs: f64,
    best: Best,
    /// Steps `first..last` are this run's.
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Last, so that the lock outlives everything the run writes, the profile included.
    _dir: RunDir,
}

impl Run {
    /// Claim `<out>` (lock it; refuse another run's files without --overwrite, and checkpoint
    /// directories a save could not replace), then, with everything checked, delete the
    /// previous run (--overwrite), trim the metrics log to the trainer's step, print the
    /// header line and start the profiler and the clock.
    pub(crate) fn open(trainer: &Trainer) -> Result<Run> {
        let args = &trainer.args;
        let out = args.out();
        let mut dir = RunDir::claim(&out, args.resume.as_deref(), args.overwrite)?;
        let profiler = Profiler::start(args, &out)?;
        dir.clear_previous_run()?;
        let metrics_path = out.join("metrics.jsonl");
        // The log holds exactly this run's history: a fresh run starts it anew, a resumed
        // one drops whatever was logged after its checkpoint.
        let first = trainer.opt.step;
        let history = keep_metrics_up_to(&metrics_path, first)?;
        let best = Best::from_history(args, &history, &out);
        let metrics = MetricsLog::open(&metrics_path).map_err(Error::io(metrics_path.display()))?;
        let last = args.last_step(first);
        let bar = progress_bar(args, first, last);
        let gpus = args.gpus.map_or(String::new(), |n| format!(" on {n} GPUs ({} rows each)", args.batch / n.max(1)));
        let header = format!(
            "mamba: {} parameters (d_model {}, {} {} layers{}), batch {} x {}{gpus}, steps {first}..{last} of {}, out {}",
            trainer.model.num_parameters(),
            args.d_model,
            args.n_layer,
            trainer.model.layers.first().map_or("", |b| b.mixer.kind()),
            modes(trainer.model.recompute, args),
            args.batch,
            trainer.source.seq_len(args),
            args.steps(),
            out.display()
        );
        say(&bar, args.quiet, header);
        let step_began = Instant::now();
        Ok(Run { out, metrics_path, metrics, bar, profiler, step_began, step_secs: 0.0, best, first, last, _dir: dir })
    }

    /// Start the clock of a step (batch, forward, backward, update).
    pub(crate) fn begin_step(&mut self) {
        self.step_began = Instant::now();
    }

    /// Log a step to the metrics (with this step's tokens per second) and the progress bar;
    /// returns the mean tokens per second of this run's steps so far.
    pub(crate) fn log_step(&mut self, trainer: &Trainer, stats: &StepStats) -> Result<f64> {
        let args = &trainer.args;
        let StepStats { step, loss, grad_norm, lr, .. } = *stats;
        let tokens = (args.batch * trainer.source.seq_len(args)) as f64;
        let secs = self.step_began.elapsed().as_secs_f64();
        self.step_secs += secs;
        let (tokens_per_s, mean) = (tokens / secs, tokens * (step - self.first) as f64 / self.step_secs);
        let mut record =
            json!({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s});
        if !stats.expert_load.is_empty() {
            // MoE: the load-balancing loss (not in "loss") and each MoE layer's load per expert
            record["aux_loss"] = json!(stats.aux_loss);
            record["expert_load"] = json!(stats.expert_load);
        }
        self.metrics.write(&record).map_err(Error::io(self.metrics_path.display()))?;
        self.bar.set_position(step);
        self.bar.set_message(format!("loss {loss:.3} | {mean:.0} tok/s"));
        Ok(mean)
    }

    /// Validate, log and show the result (with a sample, for text), redraw loss.svg; returns
    /// the validation value and whether it is the best so far (then the caller saves
    /// checkpoint-best).
    pub(crate) fn evaluate(&mut self, trainer: &Trainer, stats: &StepStats, tokens_per_s: f64) -> Result<(f64, bool)> {
        let (args, StepStats { step, loss, .. }) = (&trainer.args, stats);
        let (step, loss) = (*step, *loss);
        let (name, value) = trainer.evaluate()?;
        self.metrics.write(&json!({"step": step, name: value})).map_err(Error::io(self.metrics_path.display()))?;
        let line = format!("step {step:>6} | loss {loss:.4} | {name} {value:.4} | {tokens_per_s:.0} tok/s");
        say(&self.bar, args.quiet, line);
        if let (Source::Text(c), false, true) = (&trainer.source, args.quiet, args.sample_tokens > 0) {
            // seeded by the 0-based index of the step, as always
            say(&self.bar, args.quiet, format!("  sample: {}", sample(&trainer.model, &c.val, args, step - 1)?));
        }
        write_loss_curve(args, &self.metrics_path)?;
        Ok((value, self.best.offer(step, value)))
    }

    /// Clear the bar, write the profile, and say where everything went if a step ran.
    pub(crate) fn finish(self, final_step: u64) -> Result<()> {
        self.bar.finish_and_clear();
        self.profiler.finish()?;
        if final_step > self.first {
            let best = match self.best.at {
                Some((step, value)) => {
                    format!(" | best {} {value:.4} at step {step} ({})", self.best.key, self.out.join(BEST).display())
                }
                None => String::new(),
            };
            println!(
                "done: step {final_step} | checkpoint {}{best} | metrics {} | curve {}",
                self.out.join(LAST).display(),
                self.metrics_path.display(),
                self.out.join("loss.svg").display()
            );
        }
        Ok(())
    }
}

/// The best validation result of a run: the metric, which way is better, and its step
/// and value so far.
struct Best {
    key: &'static str,
    higher: bool,
    at: Option<(u64, f64)>,
}

impl Best {
    /// The best of the kept log (a resumed run's history), if `<out>/checkpoint-best` holds
    /// it: a run from before checkpoint-best existed starts afresh, so the first evaluation
    /// writes one.
    fn from_history(args: &TrainArgs, history: &[Value], out: &Path) -> Best {
        let (key, higher) = if args.task.is_some() { ("val_accuracy", true) } else { ("val_bpb", false) };
        let mut best = Best { key, higher, at: None };
        if checkpoint::exists(&out.join(BEST)) {
            for record in history {
                if let (Some(step), Some(value)) = (record["step"].as_u64(), record[key].as_f64()) {
                    best.offer(step, value);
                }
            }
        }
        best
    }

    /// Keep `value` if it beats the best so far (strictly; NaN never does); say whether it did.
    fn offer(&mut self, step: u64, value: f64) -> bool {
        let better = match self.at {
            _ if !value.is_finite() => false,
            None => true,
            Some((_, best)) => (self.higher && value > best) || (!self.higher && value < best),
        };
        if better {
            self.at = Some((step, value));
        }
        better
    }
}

/// Rewrite the metrics log keeping only records up to `step` (none for a fresh run), and
/// return them. A line that is not a JSON record with a step (a crash mid-write, a damaged
/// file: bad JSON or bytes that are not UTF-8) is dropped too, with a warning naming it:
/// the rest of the history is worth keeping.
pub(crate) fn keep_metrics_up_to(path: &Path, step: u64) -> Result<Vec<Value>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()))(e)),
    };
    let (mut kept, mut records, mut dropped) = (String::new(), vec![], vec![]);
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(line).ok();
        let record: Option<Value> = text.and_then(|l| serde_json::from_str(l).ok());
        match (text, record.as_ref().and_then(|r| r["step"].as_u64())) {
            (Some(text), Some(s)) if s <= step => {
                kept.push_str(text);
                kept.push('\n');
                records.extend(record);
            }
            (_, Some(_)) => {} // after the checkpoint: this run logs those steps again
            _ => dropped.push(i + 1),
        }
    }
    if !dropped.is_empty() {
        let lines: Vec<String> = dropped.iter().take(10).map(usize::to_string).collect();
        let more = if dropped.len() > 10 { format!(" and {} more", dropped.len() - 10) } else { String::new() };
        let s = if dropped.len() > 1 { "s" } else { "" };
        eprintln!(
            "warning: {}: dropped line{s} {}{more} (not a JSON record with a step: damaged?); kept the rest",
            path.display(),
            lines.join(", ")
        );
    }
    write_atomic(path, kept.as_bytes()).map_err(Error::io(path.display()))?;
    Ok(records)
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

/// The run's modes for its first line: `, recompute, tf32, bf16` (those that are on).
fn modes(recompute: bool, args: &TrainArgs) -> String {
    let bf16 = args.precision == crate::args::Precision::Bf16;
    [(recompute, ", recompute"), (args.tf32, ", tf32"), (bf16, ", bf16")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect()
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
    let how = Sampling { temperature: 0.8, top_k: 40, top_p: 1.0 };
    // --sample-tokens is capped by `limits::check_train`, so collecting them is cheap.
    let mut bytes: Vec<u8> = prompt.iter().map(|&t| t as u8).collect();
    generate(model, &prompt, args.sample_tokens, (how, DecodePath::default()), &mut rng, |t| {
        bytes.push(t as u8);
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(String::from_utf8_lossy(&bytes).replace('\n', "⏎"))
}

/// Redraw loss.svg from the whole metrics log (so resumed runs keep their history).
fn write_loss_curve(args: &TrainArgs, metrics_path: &Path) -> Result<()> {
    let records = read_metrics(metrics_path)?;
    let series = |key: &str, scale: f64| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()? * scale))).collect()
    };
    let out = args.out();
    let title =
        format!("mamba train: {}", out.file_name().map_or(out.display().to_string(), |n| n.to_string_lossy().into()));
    let svg = match args.task {
        None => {
            let series = vec![("train loss", series("loss", 1.0 / LN_2)), ("validation", series("val_bpb", 1.0))];
            loss_curve_svg(&title, &YAxis { label: "bits per byte", series, range: None }, None)
        }
        Some(_) => {
            let loss =
                YAxis { label: "train loss (nats)", series: vec![("train loss", series("loss", 1.0))], range: None };
            let series = vec![("val accuracy", series("val_accuracy", 1.0))];
            loss_curve_svg(
                &title,
                &loss,
                Some(&YAxis { label: "validation accuracy", series, range: Some((0.0, 1.0)) }),
            )
        }
    };
    let path = out.join("loss.svg");
    write_atomic(&path, svg.as_bytes()).map_err(Error::io(path.display()))
}
