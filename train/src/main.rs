//! The `mamba` command: train byte-level Mamba models and sample from them.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mamba_engine::{Device, Rng};
use mamba_train::{
    args::check_device,
    checkpoint,
    eval::{evaluate_checkpoint, EvalRequest},
    generate::{generate, Sampling},
    trainer::{train, TrainArgs},
    Error, Result,
};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mamba", version, about = "Train and sample byte-level Mamba language models, from scratch in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process: its size does not matter
enum Command {
    /// Train a Mamba LM: on the embedded corpus by default, --text FILE, or --task NAME.
    Train(TrainArgs),
    /// Stream bytes from a checkpoint in recurrent (step) mode.
    Generate(GenerateArgs),
    /// Measure a checkpoint: bits per byte on a text (default: the validation split of the run's
    /// own data), or a task model's accuracy on the task's evaluation set.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A checkpoint directory written by `mamba train` (e.g. runs/default/checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Measure bits per byte on this whole file [default: the validation split of the text the
    /// run trained on, or of the embedded corpus]. Byte models only.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Where to run: cpu, or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Evenly spaced windows to measure (a task: 4 examples each) [default: the run's --eval-windows].
    #[arg(long)]
    windows: Option<usize>,
    /// Bytes per window [default: the run's --seq-len]. Byte models only.
    #[arg(long)]
    seq_len: Option<usize>,
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct GenerateArgs {
    /// A checkpoint directory written by `mamba train` (e.g. runs/default/checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "fn main() {")]
    prompt: String,
    /// Bytes to generate.
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// 0 = greedy; higher = more random.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely bytes (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to run: cpu, or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Print the generation speed (tokens/s, prompt included) to stderr at the end.
    #[arg(long)]
    timing: bool,
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train(_) => {
            // Re-read from the matches, to know which flags were given (see TrainArgs::given).
            let sub = matches.subcommand_matches("train").expect("the train subcommand matched");
            let args = TrainArgs::from_matches(sub).unwrap_or_else(|e| e.exit());
            train(&args).map(|_| ())
        }
        Command::Generate(args) => run_generate(&args),
        Command::Eval(args) => run_eval(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let EvalArgs { checkpoint, text, device, windows, seq_len } = args;
    check_device(device)?;
    println!("{}", evaluate_checkpoint(&EvalRequest { checkpoint, text, device, windows, seq_len })?);
    Ok(())
}

/// Sample from the checkpoint to stdout as the bytes come. Every setting is checked before the
/// model loads; the first failed write stops the generation: a closed pipe (`| head`) quietly,
/// anything else (a full disk) as an error naming stdout.
fn run_generate(args: &GenerateArgs) -> Result<()> {
    if args.prompt.is_empty() {
        return Err(Error::Settings("--prompt must not be empty".into()));
    }
    let how = Sampling { temperature: args.temperature, top_k: args.top_k };
    how.validate()?;
    check_device(args.device)?;
    let model = checkpoint::load_model(&args.checkpoint)?.to(args.device)?;
    if model.cfg.vocab_size < 256 {
        return Err(Error::Settings(format!(
            "{} holds a synthetic-task model (vocabulary {}), not a byte model",
            args.checkpoint.display(),
            model.cfg.vocab_size
        )));
    }
    let prompt: Vec<usize> = args.prompt.bytes().map(usize::from).collect();
    let mut rng = Rng::new(args.seed);
    let mut stdout = io::stdout();
    if write_out(&mut stdout, args.prompt.as_bytes())?.is_break() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    // Bytes go out as they come; a multi-byte character may arrive in pieces.
    let emitted = generate(&model, &prompt, args.tokens, how, &mut rng, |t| write_out(&mut stdout, &[t as u8]))?;
    if write_out(&mut stdout, b"\n")?.is_break() {
        return Ok(());
    }
    if args.timing {
        let steps = prompt.len() + emitted;
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{steps} steps in {secs:.2} s: {:.0} tokens/s on {}", steps as f64 / secs, args.device);
    }
    Ok(())
}

/// Write and flush `bytes`: `Break` once the reader has gone (a broken pipe; Rust ignores
/// SIGPIPE, so it arrives as this error), an error for any other failure.
fn write_out(stdout: &mut io::Stdout, bytes: &[u8]) -> Result<ControlFlow<()>> {
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(e) => Err(Error::io("cannot write to stdout")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every subcommand says what it does in `--help`.
    #[test]
    fn every_flag_has_help() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
                assert!(arg.get_help().is_some(), "mamba {} --{} has no help text", sub.get_name(), arg.get_id());
            }
        }
    }
}
