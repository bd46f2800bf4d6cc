//! The `mamba` command: train byte-level Mamba models and sample from them.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mamba_engine::{Device, Rng};
use mamba_train::{
    checkpoint,
    generate::{generate, Sampling},
    trainer::{train, TrainArgs},
    Error, Result,
};
use std::io::Write;
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
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run_generate(args: &GenerateArgs) -> Result<()> {
    let model = checkpoint::load_model(&args.checkpoint)?.to(args.device)?;
    if args.prompt.is_empty() {
        return Err(Error::Settings("--prompt must not be empty".into()));
    }
    if model.cfg.vocab_size < 256 {
        return Err(Error::Settings(format!(
            "{} holds a synthetic-task model (vocabulary {}), not a byte model",
            args.checkpoint.display(),
            model.cfg.vocab_size
        )));
    }
    let prompt: Vec<usize> = args.prompt.bytes().map(usize::from).collect();
    let mut rng = Rng::new(args.seed);
    let how = Sampling { temperature: args.temperature, top_k: args.top_k };
    let mut stdout = std::io::stdout();
    write!(stdout, "{}", args.prompt)?;
    let started = std::time::Instant::now();
    generate(&model, &prompt, args.tokens, how, &mut rng, |t| {
        // Bytes go out as they come; a multi-byte character may arrive in pieces.
        let _ = stdout.write_all(&[t as u8]);
        let _ = stdout.flush();
    })?;
    writeln!(stdout)?;
    if args.timing {
        let steps = prompt.len() + args.tokens;
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{steps} steps in {secs:.2} s: {:.0} tokens/s on {}", steps as f64 / secs, args.device);
    }
    Ok(())
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
