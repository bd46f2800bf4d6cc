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
    carry::{self, Carry},
    checkpoint::{self, TrainingState},
    data::{default_corpus, random_batch, Corpus},
    eval,
    gpus::Group,
    optim::{clip_grad_norm, lr_at, AdamW},
    parallel::{self, Collective},
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
    /// The states carried from batch to batch with --carry-state (carry.rs).
    pub(crate) carry: Option<Carry>,
    /// The sum across processes of `--gpus` ([`Trainer::join`]); none in one process.
    collective: Option<Box<dyn Collective>>,
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
        set_precision(args);
        let opt = optimizer(&model, args)?;
        let rng = Rng::new(args.seed ^ 0xda7a);
        // The decay's end is fixed at the start, so that a resume with more --steps continues
        // at the final learning rate instead of re-stretching the cosine.
        let args = TrainArgs { decay_steps: Some(args.decay_steps()), ..args.clone() };
        let carry = Carry::for_run(args.carry_state, &model, &source, args.batch, args.seq_len)?;
        Ok(Trainer { args, model, opt, rng, source, carry, collective: None })
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
        // The other ranks of --gpus resume the same checkpoint: rank 0 alone says so.
        for note in notes.iter().filter(|_| cli.rank == 0) {
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
        set_precision(&args);
        opt.lr = args.lr;
        opt.weight_decay = args.weight_decay;
        let source = Source::new(&args)?;
        let carry = Carry::for_run(args.carry_state, &model, &source, args.batch, args.seq_len)?;
        Ok(Trainer { args, model, opt, rng: Rng { state: state.rng_state }, source, carry, collective: None })
    }

    /// Forward and backward of `batch`, leaving the batch's gradient in the parameters: on one
    /// rank directly; else shard by shard (`--ranks` in this process, `--gpus` across
    /// processes), each shard's gradients summed in buckets and averaged over all ranks
    /// ([`parallel::Ranks`]). Returns the cross-entropy and the total objective (means over
    /// the ranks, scalars on the model's device) and each MoE layer's load.
    fn gradients(&mut self, batch: &Batch) -> Result<(Tensor, Tensor, Vec<Vec<f64>>)> {
        let local = self.args.ranks.max(1);
        let loads = |o: &Objective| o.moe.iter().map(|layer| layer.load.clone()).collect::<Vec<_>>();
        if local == 1 && self.collective.is_none() {
            let data = (&batch.ids[..], &batch.targets[..]);
            let objective = carry::objective(self.carry.as_mut(), &self.model, 0, data, batch.rows, batch.len)?;
            objective.total.backward()?;
            let load = loads(&objective);
            return Ok((objective.cross_entropy, objective.total, load));
        }
        let mut alone = parallel::Alone;
        let collective: &mut dyn Collective = match self.collective.as_deref_mut() {
            Some(c) => c,
            None => &mut alone,
        };
        // This process runs ranks first..first + local of world, each on its own shard.
        let (world, first) = (local * collective.processes(), local * collective.rank());
        let mut ranks = parallel::Ranks::new(world, &self.opt.params)?;
        let mut experts = Vec::new();
        for rank in first..first + local {
            let ids = parallel::shard(&batch.ids, batch.rows, world, rank)?;
            let targets = parallel::shard(&batch.targets, batch.rows, world, rank)?;
            let shard = (&ids[..], &targets[..]);
            let objective =
                carry::objective(self.carry.as_mut(), &self.model, rank, shard, batch.rows / world, batch.len)?;
            objective.total.backward()?;
            let load = loads(&objective);
            experts = load.iter().map(Vec::len).collect();
            let ce = objective.cross_entropy.detach().reshape(&[1])?;
            let values = Tensor::concat(&[&ce, &objective.total.detach().reshape(&[1])?], 0)?;
            ranks.add_rank(&self.opt.params, &values, &load.concat())?;
        }
        let (values, host) = ranks.finish(&self.opt.params, collective)?;
        let means = values.split(&[1, 1], 0)?;
        let mut rest = &host[..];
        let load = experts
            .iter()
            .map(|&n| {
                let (layer, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                layer.to_vec()
            })
            .collect();
        Ok((means[0].reshape(&[])?, means[1].reshape(&[])?, load))
    }

    /// Take part in data parallelism across processes: from now on each step computes this
    /// process's shard and sums the gradients through `collective` (`mamba train --gpus`).
    pub fn join(&mut self, collective: Box<dyn Collective>) {
        self.collective = Some(collective);
    }

    /// Stop summing across processes, handing the collective back (to close it).
    pub fn leave(&mut self) -> Option<Box<dyn Collective>> {
        self.collective.take()
    }

    /// Whether every process ends with rank 0's weights, bit for bit, as it must (the same
    /// start, the same summed gradients, deterministic updates): a hash of the weights from
    /// each, gathered through the collective (a sum of one non-zero slot per process, exact).
    /// A collective step: every process calls it at the same point. Ok without a collective.
    pub fn ranks_agree(&mut self) -> Result<()> {
        let Some(collective) = self.collective.as_deref_mut() else { return Ok(()) };
        let mut hash: u32 = 0x811c_9dc5; // FNV-1a over the f32 bit patterns
        for (_, p) in self.model.named_parameters() {
            for v in p.to_vec_f64()? {
                hash = (hash ^ (v as f32).to_bits()).wrapping_mul(0x0100_0193);
            }
        }
        let mut hashes = vec![0.0; collective.processes()];
        hashes[collective.rank()] = f64::from(hash);
        collective.sum_host(&mut hashes)?;
        match hashes.iter().position(|&h| h != hashes[0]) {
            None => Ok(()),
            Some(rank) => Err(Error::Settings(format!(
                "after step {}, rank {rank}'s weights differ from rank 0's: the ranks drifted apart (the sums \
                 NCCL gave them differ?); the checkpoint is rank 0's",
                self.opt.step
            ))),
        }
    }

    /// The collective's background error, if it has met one (checked between steps).
    pub fn collective_health(&self) -> Result<()> {
        self.collective.as_ref().map_or(Ok(()), |c| c.health())
    }

    /// The next training batch (advances the data sampler's RNG; with --carry-state, each
    /// row's next window of its stream, which the step number alone decides).
    pub fn next_batch(&mut self) -> Batch {
        if let (Some(carry), Source::Text(c)) = (self.carry.as_mut(), &self.source) {
            return carry.next_batch(&c.train, self.opt.step); // each row's stream, continued
        }
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
        let grad_norm = clip_grad_norm(&self.opt.params, self.args.grad_clip)?;
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
    // --gpus: GPUs counted, NCCL loaded before the folder is claimed; the ranks start after.
    let mut group = Group::prepare(&trainer.args)?;
    let mut run = Run::open(&trainer)?;
    group.start(&mut trainer)?;
    let mut summary = TrainSummary { losses: vec![], last_eval: None, final_step: run.first };
    for _ in run.first..run.last {
        group.check(&trainer)?;
        run.begin_step();
        let batch = trainer.next_batch();
        let stats = group.watched(|| trainer.step(&batch))?;
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
    group.finish(&mut trainer)?;
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

/// The engine's precision switches for this run: `--tf32` (the process) and `--precision`
/// (the linear layers, on this thread: the one that runs the model).
fn set_precision(args: &TrainArgs) {
    mamba_engine::precision::set_tf32(args.tf32);
    mamba_engine::precision::set_matmul_bf16(args.precision == crate::args::Precision::Bf16);
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

    /// Two thread ranks from the same seed agree; one whose weight moved does not, on both.
    #[test]
    fn ranks_agree_notices_weights_that_drifted() {
        let agree = |drift: bool| -> Vec<Result<()>> {
            std::thread::scope(|s| {
                let handles: Vec<_> = parallel::threads::Threads::group(2)
                    .into_iter()
                    .map(|c| {
                        s.spawn(move || {
                            let mut trainer = Trainer::new(&tiny("5")).unwrap();
                            if drift && c.rank() == 1 {
                                let norm = &trainer.model.norm_f;
                                norm.set_data(&norm.mul_scalar(1.5).unwrap()).unwrap();
                            }
                            trainer.join(Box::new(c));
                            trainer.ranks_agree()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        assert!(agree(false).iter().all(Result::is_ok));
        for result in agree(true) {
            let msg = result.unwrap_err().to_string();
            assert!(msg.starts_with("after step 0, rank 1's weights differ from rank 0's"), "{msg}");
        }
        Trainer::new(&tiny("5")).unwrap().ranks_agree().unwrap(); // one process: nothing to compare
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
