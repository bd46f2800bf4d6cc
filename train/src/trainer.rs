//! The training loop behind `mamba train`.
//!
//! [`Trainer`] holds a run's model, optimizer and data; [`Trainer::step`] is one step:
//! set the learning rate (linear warmup, cosine decay), forward the Mamba LM on a batch
//! (random text windows or a synthetic task), cross-entropy, backward, clip the gradient
//! norm, AdamW. [`train`] drives the steps and, periodically, validation (bits per byte,
//! or accuracy for tasks), a sample, a checkpoint, the metrics log and the loss curve.
//! A non-finite loss or gradient stops the run before it can touch the weights, so
//! the last checkpoint stays good.

pub use crate::args::TrainArgs;
use crate::{
    checkpoint::{self, TrainingState},
    data::{default_corpus, random_batch, Corpus},
    eval,
    optim::{clip_grad_norm, lr_at, AdamW},
    parallel,
    run::Run,
    rundir,
    tasks::Task,
    Error, Result,
};
use mamba_engine::{DType, Rng, Tensor};
use mamba_model::{MambaLM, Objective};
use std::path::{Path, PathBuf};

/// What a run did, for callers and tests.
pub struct TrainSummary {
    /// Training loss (nats) of every step of this run, in order.
    pub losses: Vec<f64>,
    /// Last validation result: bits per byte (text) or accuracy (task).
    pub last_eval: Option<f64>,
    pub final_step: u64,
}

/// Where batches come from.
pub(crate) enum Source {
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

    pub(crate) fn seq_len(&self, args: &TrainArgs) -> usize {
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

    /// (metric name, value): validation bits per byte, or task accuracy on a fixed set
    /// (measured as `mamba eval` measures, a training batch of rows at a time).
    fn evaluate(&self, model: &MambaLM, args: &TrainArgs) -> Result<(&'static str, f64)> {
        match self {
            Source::Text(c) => {
                let (bpb, _) = eval::bits_per_byte(model, &c.val, args.eval_windows, args.seq_len, args.batch)?;
                Ok(("val_bpb", bpb))
            }
            Source::Task(t) => {
                let examples = eval::task_examples(args.eval_windows, "--eval-windows")?;
                Ok(("val_accuracy", eval::task_accuracy(model, t, examples, args.batch)?))
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
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Updates applied so far, this one included: the 1-based number of the step.
    pub step: u64,
    /// Training loss of the batch (nats, the cross-entropy), before the update.
    pub loss: f64,
    /// The MoE layers' load-balancing losses, summed (added to `loss` for backward; 0
    /// without MoE layers), and each MoE layer's share of the choices per expert.
    pub aux_loss: f64,
    pub expert_load: Vec<Vec<f64>>,
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
    pub(crate) source: Source,
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
        let cfg = args.model_config(source.vocab());
        let mut model = MambaLM::new(cfg, DType::F32, args.seed)?.to(args.device)?;
        (model.scan_chunk, model.recompute) = (args.scan_chunk, args.recompute);
        let opt = optimizer(&model, args)?;
        let rng = Rng::new(args.seed ^ 0xda7a);
        // The decay's end is fixed at the start, so that a resume with more --steps continues
        // at the final learning rate instead of re-stretching the cosine.
        let args = TrainArgs { decay_steps: Some(args.decay_steps()), ..args.clone() };
        Ok(Trainer { args, model, opt, rng, source })
    }

    /// Model, optimizer, data RNG and settings as a checkpoint left them, with the flags of
    /// `cli` that may change on resume ([`TrainArgs::resume_onto`]); each change is reported.
    fn resume(cli: &TrainArgs, dir: &Path) -> Result<Trainer> {
        // Settings first (from the training state's header): they are checked, and the memory
        // they need estimated, before the model and its moments are loaded.
        let state = checkpoint::read_saved_state(dir)?;
        let saved: TrainArgs = serde_json::from_value(state.train_args)
            .map_err(|e| Error::checkpoint(dir, format!("the saved training settings are unreadable: {e}")))?;
        let (mut args, notes) = cli.resume_onto(saved)?;
        // <out>/checkpoint belongs to the run in <out>; canonical, so `--resume .` works too.
        let dir = rundir::canonical_checkpoint(dir);
        if !cli.given.contains("out") {
            args.out = dir.parent().map(PathBuf::from);
        }
        args.resume = Some(dir.clone());
        for note in notes {
            eprintln!("resume: {note}");
        }
        args.validate()?;
        if state.step >= args.steps() {
            let (step, steps) = (state.step, args.steps());
            let what = format!(
                "the run is at step {step} and --steps is {steps}: nothing to train. Pass a larger --steps to \
                 continue (past step {} the learning rate stays at its final value)",
                args.decay_steps()
            );
            return Err(Error::checkpoint(&dir, what));
        }
        let mut model = checkpoint::load_model(&dir)?.to(args.device)?;
        let mut opt = optimizer(&model, &args)?;
        let state = checkpoint::load_training_state(&dir, &mut opt)?;
        (model.scan_chunk, model.recompute) = (args.scan_chunk, args.recompute);
        opt.lr = args.lr;
        opt.weight_decay = args.weight_decay;
        let source = Source::new(&args)?;
        Ok(Trainer { args, model, opt, rng: Rng { state: state.rng_state }, source })
    }

    /// Forward and backward of `batch`, leaving the batch's gradient in the parameters: on one
    /// rank directly; on `--ranks N` shard by shard, each shard's gradients added into
    /// buckets and averaged (the all-reduce of `parallel.rs`). Returns the cross-entropy and
    /// the total objective (scalars on the model's device) and each MoE layer's load.
    fn gradients(&self, batch: &Batch) -> Result<(Tensor, Tensor, Vec<Vec<f64>>)> {
        let n = self.args.ranks.max(1);
        let loads = |o: &Objective| o.moe.iter().map(|layer| layer.load.clone()).collect::<Vec<_>>();
        if n == 1 {
            let objective = self.model.objective(&batch.ids, &batch.targets, batch.rows, batch.len)?;
            objective.total.backward()?;
            let load = loads(&objective);
            return Ok((objective.cross_entropy, objective.total, load));
        }
        let mut ranks = parallel::SimulatedRanks::new(n, &self.opt.params)?;
        let (mut cross_entropy, mut total, mut load): (Option<Tensor>, Option<Tensor>, Vec<Vec<f64>>) =
            (None, None, Vec::new());
        let add = |sum: Option<Tensor>, x: &Tensor| -> Result<Tensor> {
            let x = x.detach().mul_scalar(1.0 / n as f64)?;
            Ok(match sum {
                None => x,
                Some(s) => s.add(&x)?,
            })
        };
        for rank in 0..n {
            let ids = parallel::shard(&batch.ids, batch.rows, n, rank)?;
            let targets = parallel::shard(&batch.targets, batch.rows, n, rank)?;
            let objective = self.model.objective(&ids, &targets, batch.rows / n, batch.len)?;
            objective.total.backward()?;
            ranks.add_rank(&self.opt.params)?;
            cross_entropy = Some(add(cross_entropy, &objective.cross_entropy)?);
            total = Some(add(total, &objective.total)?);
            for (layer, shard_load) in loads(&objective).into_iter().enumerate() {
                match load.get_mut(layer) {
                    Some(sum) => sum.iter_mut().zip(&shard_load).for_each(|(s, l)| *s += l / n as f64),
                    None => load.push(shard_load.iter().map(|l| l / n as f64).collect()),
                }
            }
        }
        ranks.finish(&self.opt.params)?;
        let none = || Error::Settings("no rank ran".into());
        Ok((cross_entropy.ok_or_else(none)?, total.ok_or_else(none)?, load))
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
        self.opt.lr = lr_at(step, args.warmup, args.decay_steps(), args.lr, args.lr * args.min_lr_frac);
        let (cross_entropy, total, expert_load) = self.gradients(batch)?;
        let grad_norm = clip_grad_norm(&self.opt.params, args.grad_clip)?;
        // The step's one read back to the host: the losses and the gradient norm together.
        let aux = total.sub(&cross_entropy)?;
        let mut scalars = vec![cross_entropy.reshape(&[1])?, aux.reshape(&[1])?];
        scalars.extend(grad_norm.map(|n| n.reshape(&[1])).transpose()?);
        let values = Tensor::concat(&scalars.iter().collect::<Vec<_>>(), 0)?.to_vec_f64()?;
        let (loss, aux_loss, grad_norm) = (values[0], values[1], values.get(2).copied().unwrap_or(0.0));
        if !loss.is_finite() {
            return Err(self.stopped(step + 1, format!("the loss is {loss}")));
        }
        if !grad_norm.is_finite() {
            return Err(self.stopped(step + 1, format!("the gradient norm is {grad_norm}")));
        }
        self.opt.step()?;
        Ok(StepStats { step: self.opt.step, loss, aux_loss, expert_load, grad_norm, lr: self.opt.lr })
    }

    /// (metric name, value): validation bits per byte, or task accuracy on a fixed set.
    pub fn evaluate(&self) -> Result<(&'static str, f64)> {
        self.source.evaluate(&self.model, &self.args)
    }

    /// Where this run's checkpoint goes: `<out>/checkpoint`.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.args.out().join(rundir::LAST)
    }

    /// Where the checkpoint of the best validation result goes: `<out>/checkpoint-best`.
    pub fn best_checkpoint_dir(&self) -> PathBuf {
        self.args.out().join(rundir::BEST)
    }

    /// Save the model, the optimizer and the data stream's position to
    /// [`Trainer::checkpoint_dir`]; a weight that is not finite is an [`Error::Stopped`]
    /// instead, so a checkpoint is never written from broken weights.
    pub fn save_checkpoint(&self) -> Result<()> {
        self.save_to(&self.checkpoint_dir())
    }

    /// [`Trainer::save_checkpoint`] to [`Trainer::best_checkpoint_dir`] (the same format:
    /// it can be resumed or generated from).
    pub fn save_best_checkpoint(&self) -> Result<()> {
        self.save_to(&self.best_checkpoint_dir())
    }

    fn save_to(&self, dir: &Path) -> Result<()> {
        if let Some(name) = first_non_finite(&self.model)? {
            return Err(self.stopped(self.opt.step, format!("parameter {name} is not finite")));
        }
        let train_args = serde_json::to_value(&self.args).map_err(Error::json("cannot save the training settings"))?;
        let state = TrainingState { step: self.opt.step, rng_state: self.rng.state, train_args };
        checkpoint::save(dir, &self.model, &self.opt, &state)
    }

    fn stopped(&self, step: u64, why: String) -> Error {
        Error::Stopped { step, why, checkpoint: self.checkpoint_dir() }
    }
}

/// Run (or resume) training as `args` says: [`Trainer::step`] from the checkpoint's step (0
/// for a fresh run) up to --steps or --stop-after, with the metrics log, the progress bar,
/// evaluations, samples, the loss curve and checkpoints around it; `<out>/checkpoint-best`
/// is saved whenever validation improves (lower bits per byte, higher task accuracy).
pub fn train(args: &TrainArgs) -> Result<TrainSummary> {
    let mut trainer = Trainer::new(args)?;
    let mut run = Run::open(&trainer)?;
    let mut summary = TrainSummary { losses: vec![], last_eval: None, final_step: run.first };
    for _ in run.first..run.last {
        run.begin_step();
        let batch = trainer.next_batch();
        let stats = trainer.step(&batch)?;
        summary.losses.push(stats.loss);
        summary.final_step = stats.step;
        let tokens_per_s = run.log_step(&trainer, &stats)?;
        let at_end = stats.step == run.last;
        if stats.step % trainer.args.eval_every == 0 || at_end {
            let (value, best) = run.evaluate(&trainer, &stats, tokens_per_s)?;
            summary.last_eval = Some(value);
            if best {
                trainer.save_best_checkpoint()?;
            }
        }
        if stats.step % trainer.args.checkpoint_every == 0 || at_end {
            trainer.save_checkpoint()?;
        }
    }
    run.finish(summary.final_step)?;
    Ok(summary)
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

fn optimizer(model: &MambaLM, args: &TrainArgs) -> Result<AdamW> {
    AdamW::new(model.optimizer_params(), args.lr, args.weight_decay)
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

    /// The all-reduced gradient of 2 shards is the whole batch's, parameter by parameter
    /// (before clipping and AdamW, which would hide a wrong scale), and so is the loss.
    #[test]
    fn two_ranks_give_the_whole_batch_gradient() {
        let grads = |ranks: usize| {
            let mut trainer = Trainer::new(&tiny("5")).unwrap();
            trainer.args.ranks = ranks;
            let batch = trainer.next_batch();
            let (loss, _, _) = trainer.gradients(&batch).unwrap();
            let g: Vec<f64> =
                trainer.opt.params.iter().flat_map(|p| p.tensor.grad().unwrap().to_vec_f64().unwrap()).collect();
            (loss.item().unwrap(), g)
        };
        let ((loss1, g1), (loss2, g2)) = (grads(1), grads(2));
        assert!((loss1 - loss2).abs() < 1e-6 * loss1, "{loss1} vs {loss2}");
        let worst = g1.iter().zip(&g2).map(|(a, b)| (a - b).abs() / a.abs().max(1e-3)).fold(0.0, f64::max);
        assert!(worst < 1e-4, "gradients differ by {worst:e}");
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
