//! Evaluation: bits per byte of a byte model on fixed windows of a text, or a synthetic
//! task's accuracy on its fixed evaluation set. Training's periodic validation
//! (`Source::evaluate`) and `mamba eval` ([`evaluate_checkpoint`]) both measure with
//! [`bits_per_byte`] and [`task_accuracy`], so their numbers agree.
//!
//! Both run `rows` sequences at a time and weight each part by its rows, so any number of
//! windows fits in the memory of one training batch and gives the same mean as one pass.

use crate::{
    args::TrainArgs,
    checkpoint,
    data::{default_corpus, eval_starts, windows, Corpus},
    generate::{DecodePath, Stepper},
    limits::{Available, Plan},
    optim::AdamW,
    tasks::{accuracy, argmax, Task, IGNORE},
    Error, Result,
};
use mamba_engine::{no_grad, Device, Rng};
use mamba_model::{MambaConfig, MambaLM};
use std::{
    f64::consts::LN_2,
    path::{Path, PathBuf},
};

/// Seed of a task's evaluation set: the same examples at every evaluation and in `mamba eval`.
const TASK_EVAL_SEED: u64 = 0xe7a1;

/// The most examples one evaluation of a task may take (4 per window), so that a huge
/// --eval-windows is refused up front rather than stalling every evaluation.
pub const MAX_TASK_EXAMPLES: usize = 1 << 20;

/// Examples in a task's evaluation set for `windows` (given by `flag`): 4 per window.
pub fn task_examples(windows: usize, flag: &str) -> Result<usize> {
    match windows.checked_mul(4) {
        Some(n) if (1..=MAX_TASK_EXAMPLES).contains(&n) => Ok(n),
        _ => Err(Error::Settings(format!(
            "{flag} {windows} asks a task for 4 x {windows} examples per evaluation; use 1 to {}",
            MAX_TASK_EXAMPLES / 4
        ))),
    }
}

/// Bits per byte of `model` on up to `count` evenly spaced windows of `seq_len` bytes of `data`
/// (the same windows every time), `rows` windows per forward. Returns it and the number of
/// windows used (fewer than `count` when `data` is short).
pub fn bits_per_byte(model: &MambaLM, data: &[u8], count: usize, seq_len: usize, rows: usize) -> Result<(f64, usize)> {
    let _guard = no_grad();
    let starts = eval_starts(data, count, seq_len);
    if starts.is_empty() {
        return Err(too_short(data, seq_len));
    }
    let mut nats = 0.0;
    for part in starts.chunks(rows.max(1)) {
        let (ids, targets) = windows(data, part, seq_len);
        nats += model.loss(&ids, &targets, part.len(), seq_len)?.item()? * part.len() as f64;
    }
    Ok((nats / starts.len() as f64 / LN_2, starts.len()))
}

fn too_short(data: &[u8], seq_len: usize) -> Error {
    Error::Settings(format!(
        "the text has {} bytes, too few for one window of --seq-len {seq_len} and the byte after it; \
         use a longer text or a smaller --seq-len",
        data.len()
    ))
}

/// Accuracy of `model` on the first `examples` examples of `task` from the evaluation seed,
/// `rows` per forward. Every example of a task scores as many positions as any other, so
/// weighting each part's accuracy by its rows gives the accuracy over all scored positions.
pub fn task_accuracy(model: &MambaLM, task: &Task, examples: usize, rows: usize) -> Result<f64> {
    if examples == 0 {
        return Err(Error::Settings("a task evaluation needs at least one example".into()));
    }
    let _guard = no_grad();
    let mut rng = Rng::new(TASK_EVAL_SEED);
    let (mut sum, mut left) = (0.0, examples);
    while left > 0 {
        let n = left.min(rows.max(1));
        let (ids, targets) = task.batch(n, &mut rng);
        let logits = model.forward(&ids, n, task.len())?;
        sum += accuracy(&logits, &targets)? * n as f64;
        left -= n;
    }
    Ok(sum / examples as f64)
}

/// As [`task_accuracy`], but token by token in step mode (the fused decoder on the GPU), `rows`
/// examples at a time: the model's memory does not grow with the task's length (only the
/// examples' own tokens do), so a model can be scored on examples far longer than those it
/// trained on (length extrapolation, `mamba eval --task-len`). The same examples and the same
/// argmax as `task_accuracy`.
pub fn task_accuracy_streaming(model: &MambaLM, task: &Task, examples: usize, rows: usize) -> Result<f64> {
    if examples == 0 {
        return Err(Error::Settings("a task evaluation needs at least one example".into()));
    }
    let _guard = no_grad();
    let mut rng = Rng::new(TASK_EVAL_SEED);
    let (len, v) = (task.len(), model.cfg.padded_vocab());
    let (mut scored, mut correct, mut left) = (0usize, 0usize, examples);
    while left > 0 {
        let n = left.min(rows.max(1));
        let (ids, targets) = task.batch(n, &mut rng);
        let mut stepper = Stepper::new(model, n, model.new_state(n)?, DecodePath::Graph)?;
        for t in 0..len {
            let column: Vec<usize> = (0..n).map(|b| ids[b * len + t]).collect();
            let logits = stepper.step(&column)?; // (n, padded vocab) at position t
            for (b, row) in logits.chunks_exact(v).enumerate() {
                let target = targets[b * len + t];
                if target != IGNORE {
                    scored += 1;
                    correct += usize::from(argmax(row) as i64 == target);
                }
            }
        }
        left -= n;
    }
    if scored == 0 {
        return Err(Error::Settings(format!("the {} examples score no position", task.name())));
    }
    Ok(correct as f64 / scored as f64)
}

/// What `mamba eval` measures.
pub struct EvalRequest {
    /// A checkpoint directory written by `mamba train`.
    pub checkpoint: PathBuf,
    /// A byte model's text; `None` is the validation split of the run's own data.
    pub text: Option<PathBuf>,
    pub device: Device,
    /// Windows (a task: 4 examples each) [default: the run's --eval-windows].
    pub windows: Option<usize>,
    /// Bytes per window [default: the run's --seq-len]; byte models only.
    pub seq_len: Option<usize>,
    /// A task model's examples at this length instead of its training length, scored token by
    /// token (`task_accuracy_streaming`); tasks only.
    pub task_len: Option<usize>,
}

/// `mamba eval`: the one line that reports bits per byte (byte models) or accuracy (tasks).
pub fn evaluate_checkpoint(req: &EvalRequest) -> Result<String> {
    for (flag, value) in [("--windows", req.windows), ("--seq-len", req.seq_len), ("--task-len", req.task_len)] {
        if value == Some(0) {
            return Err(Error::Settings(format!("{flag} must be at least 1")));
        }
    }
    let dir = &req.checkpoint;
    let model = checkpoint::load_model(dir)?;
    let args = training_settings(dir, &model)?;
    let available = Available::on(req.device)?;
    match &args.task {
        Some(name) => evaluate_task(req, &args, name, model, available),
        None => evaluate_text(req, &args, model, available),
    }
}

/// The run's settings, from the checkpoint's training state (read through the optimizer
/// loader, so the whole state is checked as `--resume` checks it).
fn training_settings(dir: &Path, model: &MambaLM) -> Result<TrainArgs> {
    let mut opt = AdamW::new(model.optimizer_params(), 0.0, 0.0)?;
    let state = checkpoint::load_training_state(dir, &mut opt)?;
    serde_json::from_value(state.train_args)
        .map_err(|e| Error::checkpoint(dir, format!("the saved training settings are unreadable: {e}")))
}

fn evaluate_task(
    req: &EvalRequest,
    args: &TrainArgs,
    name: &str,
    model: MambaLM,
    available: Available,
) -> Result<String> {
    let dir = req.checkpoint.display();
    if req.text.is_some() || req.seq_len.is_some() {
        return Err(Error::Settings(format!(
            "{dir} holds a model of the {name} task: --text and --seq-len apply to byte models (the task sets \
             its own length; --task-len changes it)"
        )));
    }
    let task = Task::from_name(name, req.task_len.unwrap_or(args.task_len), args.task_tokens, args.task_vocab)?;
    if model.cfg.vocab_size != task.vocab_size() {
        let what = format!("the model's vocabulary {} does not match its {name} settings", model.cfg.vocab_size);
        return Err(Error::checkpoint(&req.checkpoint, what));
    }
    let examples = task_examples(req.windows.unwrap_or(args.eval_windows), "--windows")?;
    if let Some(len) = req.task_len {
        // Step mode: the state is the same size at any length; the examples' tokens (16 bytes
        // a position with their targets) are held up to ~1 GiB at a time (64 rows at 2^20).
        let rows = examples.min((1 << 26) / len).max(1);
        let model = on_device(model, req.device, args)?;
        let acc = task_accuracy_streaming(&model, &task, examples, rows)?;
        return Ok(format!("accuracy {acc:.3} on {name} at length {len}, token by token ({examples} examples)"));
    }
    let describe = |rows: usize| format!("examples of {} positions, {rows} at a time", task.len());
    let rows = rows_that_fit(&model.cfg, args, examples, task.len(), available, &describe, "")?;
    let model = on_device(model, req.device, args)?;
    let acc = task_accuracy(&model, &task, examples, rows)?;
    Ok(format!("accuracy {acc:.3} on {name} ({examples} examples)"))
}

fn evaluate_text(req: &EvalRequest, args: &TrainArgs, model: MambaLM, available: Available) -> Result<String> {
    if req.task_len.is_some() {
        let what = "holds a byte model: --task-len applies to task models (use --seq-len)".to_string();
        return Err(Error::checkpoint(&req.checkpoint, what));
    }
    if model.cfg.vocab_size < 256 {
        let what = format!("holds a model of vocabulary {}, not a byte model", model.cfg.vocab_size);
        return Err(Error::checkpoint(&req.checkpoint, what));
    }
    let seq_len = req.seq_len.unwrap_or(args.seq_len);
    let count = req.windows.unwrap_or(args.eval_windows);
    let (data, label) = match (&req.text, &args.text) {
        (Some(path), _) => (read(path, format!("cannot read --text {}", path.display()))?, path.display().to_string()),
        (None, Some(path)) => {
            let context = format!(
                "cannot read {}, the text the run trained on (pass --text FILE to evaluate on another)",
                path.display()
            );
            let val = Corpus::split(&read(path, context)?, 0.1, seq_len)?.val;
            (val, format!("the validation split of {}", path.display()))
        }
        (None, None) => {
            let val = Corpus::split(default_corpus(), 0.1, seq_len)?.val;
            (val, "the validation split of the embedded corpus".to_string())
        }
    };
    if eval_starts(&data, 1, seq_len).is_empty() {
        return Err(too_short(&data, seq_len)); // before the sizes: the plainer problem
    }
    let describe = |rows: usize| format!("windows of --seq-len {seq_len}, {rows} at a time");
    let want = count.min(data.len());
    let rows = rows_that_fit(&model.cfg, args, want, seq_len, available, &describe, "lower --seq-len")?;
    let model = on_device(model, req.device, args)?;
    let (bpb, used) = bits_per_byte(&model, &data, count, seq_len, rows)?;
    Ok(format!("bits per byte {bpb:.3} on {label} ({used} windows of {seq_len} bytes)"))
}

fn read(path: &Path, context: String) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(context))
}

fn on_device(model: MambaLM, device: Device, args: &TrainArgs) -> Result<MambaLM> {
    let mut model = if device == Device::Cpu { model } else { model.to(device)? };
    model.scan_chunk = args.scan_chunk;
    Ok(model)
}

/// The most rows per forward, up to the run's --batch and `want`, whose activations fit next
/// to the weights (halving until they do); an error naming what to lower if one row does not.
fn rows_that_fit(
    cfg: &MambaConfig,
    args: &TrainArgs,
    want: usize,
    len: usize,
    available: Available,
    describe: &dyn Fn(usize) -> String,
    fix: &str,
) -> Result<usize> {
    let more_memory = "evaluate on a machine (or --device) with more memory";
    let batch_fix = if fix.is_empty() { more_memory.to_string() } else { format!("{fix}, or {more_memory}") };
    let mut rows = want.min(args.batch).max(1);
    loop {
        let plan = Plan {
            cfg,
            copies: 1,
            rows,
            len,
            scan_chunk: args.scan_chunk,
            recompute: false, // no graph: the plain estimate bounds an evaluation
            model: format!("the checkpoint's model (d_model {}, {} layers)", cfg.d_model, cfg.n_layer),
            model_fix: more_memory,
            batch: describe(rows),
            batch_fix: &batch_fix,
        };
        match plan.check(available) {
            Err(_) if rows > 1 => rows /= 2,
            result => return result.map(|()| rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamba_engine::DType;

    /// Token by token, the accuracy is the parallel pass's: same examples, same argmax (an
    /// f64 model, so that step and parallel logits cannot order two classes differently).
    #[test]
    fn streaming_accuracy_is_the_parallel_one() {
        for task in [Task::from_name("selective-copying", 24, 4, 8), Task::from_name("induction-heads", 20, 0, 6)] {
            let task = task.unwrap();
            let cfg = MambaConfig { vocab_size: task.vocab_size(), ..MambaConfig::new(16, 2) };
            let model = MambaLM::new(cfg, DType::F64, 5).unwrap();
            let parallel = task_accuracy(&model, &task, 12, 5).unwrap();
            let streamed = task_accuracy_streaming(&model, &task, 12, 5).unwrap();
            assert_eq!(parallel, streamed, "{}", task.name());
        }
        let task = Task::from_name("induction-heads", 20, 0, 6).unwrap();
        let model = MambaLM::new(MambaConfig { vocab_size: 6, ..MambaConfig::new(16, 1) }, DType::F32, 5).unwrap();
        assert!(task_accuracy_streaming(&model, &task, 0, 5).is_err());
    }

    #[test]
    fn parts_give_the_mean_of_one_pass() {
        let model = MambaLM::new(MambaConfig::new(16, 1), DType::F32, 3).unwrap();
        let text: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 97) as u8 + 32).collect();
        let (one, n) = bits_per_byte(&model, &text, 10, 16, 10).unwrap();
        let (parts, m) = bits_per_byte(&model, &text, 10, 16, 3).unwrap();
        assert_eq!((n, m), (10, 10));
        assert!(one > 1.0 && (one - parts).abs() < 1e-6, "{one} vs {parts}");
        assert!(bits_per_byte(&model, &text[..16], 10, 16, 3).unwrap_err().to_string().contains("16 bytes"));

        let task = Task::from_name("induction-heads", 12, 0, 4).unwrap();
        let model =
            MambaLM::new(MambaConfig { vocab_size: task.vocab_size(), ..MambaConfig::new(16, 1) }, DType::F32, 3)
                .unwrap();
        let one = task_accuracy(&model, &task, 40, 40).unwrap();
        assert!((one - task_accuracy(&model, &task, 40, 7).unwrap()).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&one));
        assert!(task_accuracy(&model, &task, 0, 7).is_err());
    }

    #[test]
    fn evaluation_rows_halve_until_they_fit() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: TrainArgs,
        }
        let args = <Cli as clap::Parser>::parse_from(["train", "--batch", "64"]).args;
        let cfg = MambaConfig::new(128, 4);
        let describe = |rows: usize| format!("windows of --seq-len 128, {rows} at a time");
        let fit =
            |mb: usize| rows_that_fit(&cfg, &args, 1000, 128, Available::Cpu(mb << 20), &describe, "lower --seq-len");
        assert_eq!(fit(4096).unwrap(), 64);
        let rows = fit(40).unwrap();
        assert!((2..64).contains(&rows) && rows.is_power_of_two(), "{rows}");
        assert_eq!(rows_that_fit(&cfg, &args, 3, 128, Available::Unknown, &describe, "").unwrap(), 3);
        let msg = fit(3).unwrap_err().to_string();
        assert!(msg.starts_with("windows of --seq-len 128, 1 at a time needs about "), "{msg}");
        assert!(msg.ends_with("lower --seq-len, or evaluate on a machine (or --device) with more memory"), "{msg}");
    }

    #[test]
    fn task_examples_are_checked() {
        assert_eq!(task_examples(64, "--eval-windows").unwrap(), 256);
        for windows in [0, MAX_TASK_EXAMPLES, usize::MAX] {
            let msg = task_examples(windows, "--windows").unwrap_err().to_string();
            assert!(msg.starts_with(&format!("--windows {windows} asks")), "{msg}");
        }
    }
}
