//! The settings of `mamba train`: every flag, its default and its help text, and the checks
//! that refuse settings which cannot train before anything is allocated.

use crate::{Error, Result};
use clap::{parser::ValueSource, ArgMatches, FromArgMatches};
use mamba_engine::Device;
use mamba_model::{Arch, Mamba2Config, MambaConfig, SsmConfig, SsmKind};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeSet, path::PathBuf};

#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
// `--lr -1` reaches validate(), which says what --lr must be, instead of clap's "unexpected argument".
#[command(allow_negative_numbers = true)]
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
    /// Model width (the residual stream; the Mamba blocks work at 2x this).
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    /// Number of Mamba blocks [default with --task: 2].
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    /// Width of a gated MLP after every block's mixer, with its own norm (the reference's
    /// d_intermediate, rounded up to a multiple of 128 as there); 0: none. Blocks with an MoE
    /// branch (--moe-every) have their experts instead.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub d_intermediate: usize,
    /// The blocks' mixer: mamba1 (the selective scan) or mamba2 (the SSD scan).
    #[arg(long, value_enum, default_value_t = Layer::Mamba1)]
    #[serde(default)]
    pub layer: Layer,
    /// The block around the SSM (mamba1 only): mamba, no-gate (the SSM between the two
    /// projections) or h3; with --ssm, the Mamba paper's Table 1 ablations.
    #[arg(long, value_enum, default_value_t = ArchFlag::Mamba)]
    #[serde(default)]
    pub arch: ArchFlag,
    /// The SSM inside the block (mamba1 only): s6 (selective) or s4 (time-invariant, S4D-real).
    #[arg(long, value_enum, default_value_t = SsmFlag::S6)]
    #[serde(default)]
    pub ssm: SsmFlag,
    /// Make every K-th layer attention (the reference `MHA`, causal, no position embedding: the
    /// SSM layers carry position): layers i with i mod K = K/2, the middle of each group of K as
    /// in Jamba (1 in 8 there). 0: none.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub attn_every: usize,
    /// Heads of the attention layers; they must divide --d-model [default: --d-model / 64, at
    /// least 1].
    #[arg(long)]
    #[serde(default)]
    pub attn_heads: Option<usize>,
    /// Give every K-th block a mixture-of-experts MLP branch (layers i with i mod K = K - 1:
    /// every block with 1, as MoE-Mamba; every other with 2, as Jamba). 0: none.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub moe_every: usize,
    /// MoE: experts per MoE layer.
    #[arg(long, default_value_t = 4)]
    #[serde(default = "four")]
    pub experts: usize,
    /// MoE: experts each token goes to (1: Switch).
    #[arg(long, default_value_t = 1)]
    #[serde(default = "one")]
    pub top_k: usize,
    /// MoE: hidden width of each expert's gated MLP [default: 4 x --d-model].
    #[arg(long)]
    #[serde(default)]
    pub d_expert: Option<usize>,
    /// A small hybrid that fits the default CPU run, as defaults for the flags not given:
    /// jamba-tiny (4 layers: attention at layer 2, MoE at 1 and 3 with 4 experts, top 2) or
    /// moe-mamba-tiny (an MoE branch of 4 experts, top 1, in every block).
    #[arg(long, value_enum)]
    #[serde(default)]
    pub preset: Option<Preset>,
    /// State size N: per channel with mamba1, per head with mamba2 [default: 16 with mamba1,
    /// 128 with mamba2, the reference defaults].
    #[arg(long)]
    pub d_state: Option<usize>,
    /// Mamba-2: channels per head; it must divide d_inner = 2 x --d-model.
    #[arg(long, default_value_t = 64)]
    #[serde(default = "default_headdim")]
    pub headdim: usize,
    /// Mamba-2: groups of heads sharing one B and one C; it must divide the heads.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "one")]
    pub ngroups: usize,
    /// Mamba-2: time steps per chunk of the SSD scan.
    #[arg(long, default_value_t = 256)]
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Total optimizer steps [default: 1000; on --resume, the checkpoint's].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Steps the cosine decay of the learning rate spans; past them it stays at its final value
    /// [default: --steps of the run's start, so that raising --steps on --resume continues at the
    /// final learning rate].
    #[arg(long)]
    pub decay_steps: Option<u64>,
    /// Sequences per optimizer step [default with --task: 64].
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Bytes per training window (text only).
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate [default with --task: 2e-3].
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Final learning rate as a fraction of the peak (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    /// Steps of linear warmup from 0 to the peak learning rate.
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// AdamW weight decay, on matrices and the embedding only.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Seed of the initial weights and of the data stream.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Where checkpoints, metrics.jsonl and loss.svg go [default: runs/default, runs/FILE-STEM
    /// with --text, runs/TASK with --task; on --resume, the run the checkpoint
    /// belongs to].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run already in --out (its checkpoints, metrics.jsonl, loss.svg), deleted
    /// just before the first step; without it, a fresh run refuses a directory holding a run.
    #[arg(long)]
    #[serde(skip)]
    pub overwrite: bool,
    /// Steps between evaluations (validation, a sample, the loss curve).
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Validation windows per evaluation.
    #[arg(long, default_value_t = 64)]
    pub eval_windows: usize,
    /// Bytes to sample at each evaluation (text only; 0 disables).
    #[arg(long, default_value_t = 200)]
    pub sample_tokens: usize,
    /// Steps between checkpoints (one is also written at the end).
    #[arg(long, default_value_t = 200)]
    pub checkpoint_every: u64,
    /// Mamba-1: time steps between the scan states saved for backward.
    #[arg(long, default_value_t = 64)]
    pub scan_chunk: usize,
    /// Keep only each mixer's in_proj output for backward and recompute the rest of the mixer
    /// there (less memory, one more pass of the mixer's inside; the same numbers).
    #[arg(long)]
    #[serde(default)]
    pub recompute: bool,
    /// Make the f32 products of the GPU's tensor-core kernels (the linear layers' f32 GEMM and
    /// the Mamba-2 SSD scan) in one tf32 pass (~1e-3 relative, the reference's and PyTorch allow_tf32's precision)
    /// instead of at f32 accuracy (three passes); faster (docs/SSD.md). No effect on the CPU.
    #[arg(long)]
    #[serde(default)]
    pub tf32: bool,
    /// The precision of the model's linear layers (every projection and the LM head): fp32, or
    /// bf16 (operands rounded to bf16, products summed in f32, f32 results: the GPU's bf16
    /// tensor-core GEMM; the CPU makes the same roundings). Weights, gradients, AdamW moments
    /// and every other op stay f32 (docs/TRAINING.md).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    #[serde(default)]
    pub precision: Precision,
    /// Truncated backprop through time, for Mamba-1 LMs on text: each batch row reads its own
    /// contiguous stream of the text, consecutive steps continue each row's stream, and each
    /// layer's final conv window and SSM state (detached) start the next step's same rows
    /// (train/src/carry.rs). Validation is unchanged (windows from zero states).
    #[arg(long)]
    #[serde(default)]
    pub carry_state: bool,
    /// Data-parallel ranks: each batch is split into N shards (N must divide --batch) whose
    /// gradients are all-reduced, which gives the whole batch's gradient (train/src/parallel.rs).
    /// The ranks run one after another on the one device (the same numbers as N = 1, up to
    /// rounding, with 1/N of the activations in memory at once); --gpus puts them on GPUs.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "one")]
    pub ranks: usize,
    /// Data-parallel training on N GPUs of this host: one process per GPU, each with batch / N
    /// rows of every batch, gradients summed with NCCL (needs --device cuda and NCCL;
    /// docs/TRAINING.md). Rank 0, this process, alone writes and shows anything.
    #[arg(long)]
    #[serde(skip)]
    pub gpus: Option<usize>,
    /// Continue from this checkpoint directory with its saved settings. The schedule, evaluation
    /// and checkpoint flags given with it apply; the model, data and seed flags are fixed by
    /// the checkpoint (a differing one is ignored with a warning). See docs/TRAINING.md.
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
    /// at the end and write them to `<out>/profile.txt`, and the kernel timeline to
    /// `<out>/trace.json` (open it in Perfetto). Needs --device cuda.
    #[arg(long)]
    #[serde(skip)]
    pub profile: bool,
    /// This process's rank with --gpus: 0 for the process the user started, set from
    /// MAMBA_RANK in the processes it starts (`gpus.rs`); never a flag.
    #[arg(skip)]
    #[serde(skip)]
    pub rank: usize,
    /// The flags given on the command line (clap ids, e.g. `lr`), filled by
    /// [`TrainArgs::from_matches`]: what `--resume` applies and what the task defaults leave alone.
    #[arg(skip)]
    #[serde(skip)]
    pub given: BTreeSet<String>,
}

pub(crate) fn cpu() -> Device {
    Device::Cpu
}

/// The mixer of `mamba train`'s blocks (`--layer`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Mamba-1: the selective scan (checkpoints from before the flag are this).
    #[default]
    Mamba1,
    /// Mamba-2: the SSD scan.
    Mamba2,
}

/// `--precision`: what the model's linear layers multiply in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 products (checkpoints from before the flag are this).
    #[default]
    Fp32,
    /// bf16 operands, f32 sums and results (`mamba_engine::precision::set_matmul_bf16`).
    Bf16,
}

/// `--preset`: a family member's settings.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    JambaTiny,
    MoeMambaTiny,
}

fn four() -> usize {
    4
}

/// `--arch`: the block around the SSM.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchFlag {
    #[default]
    Mamba,
    NoGate,
    H3,
}

/// `--ssm`: the sequence layer inside the block.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SsmFlag {
    #[default]
    S6,
    S4,
}

// The reference defaults of the Mamba-2 flags, for checkpoints saved before the flags.
fn default_headdim() -> usize {
    Mamba2Config::default().headdim
}

fn default_chunk_size() -> usize {
    Mamba2Config::default().chunk_size
}

fn one() -> usize {
    1
}

/// The flags that only a Mamba-2 model reads (clap ids).
const MAMBA2_ONLY: [&str; 3] = ["headdim", "ngroups", "chunk_size"];

/// The flags that only a Mamba-1 model reads (clap ids).
const MAMBA1_ONLY: [&str; 2] = ["arch", "ssm"];

/// Flags a resumed run takes from its command line when given: the schedule, evaluation and
/// checkpoint settings (clap ids, which are the field names).
const RESUMABLE: [&str; 17] = [
    "steps",
    "decay_steps",
    "lr",
    "min_lr_frac",
    "warmup",
    "weight_decay",
    "grad_clip",
    "eval_every",
    "eval_windows",
    "sample_tokens",
    "checkpoint_every",
    "scan_chunk",
    "recompute",
    "tf32",
    "precision",
    "ranks",
    "out",
];

/// Flags a checkpoint fixes: the model's shape, its data and the seed. A resumed run
/// ignores a differing one, with a warning.
const FIXED: [&str; 26] = [
    "text",
    "carry_state",
    "task",
    "task_len",
    "task_tokens",
    "task_vocab",
    "d_model",
    "n_layer",
    "d_intermediate",
    "layer",
    "arch",
    "ssm",
    "attn_every",
    "attn_heads",
    "moe_every",
    "experts",
    "top_k",
    "d_expert",
    "preset",
    "d_state",
    "headdim",
    "ngroups",
    "chunk_size",
    "batch",
    "seq_len",
    "seed",
];

/// Flags of this invocation only, never saved: a resumed run always takes them from its
/// command line.
const RUN_ONLY: [&str; 7] = ["resume", "stop_after", "quiet", "device", "profile", "overwrite", "gpus"];

/// The defaults that differ with `--task`: the synthetic tasks learn within the default
/// 1000 steps with 2 blocks, batch 64 and a peak learning rate of 2e-3 (measured in
/// docs/TRAINING.md), where the text defaults stay near chance.
const TASK_DEFAULTS: (usize, usize, f64) = (2, 64, 2e-3);

impl TrainArgs {
    /// Parse `mamba train` flags (without the program and subcommand names) as the CLI does.
    pub fn parse_flags(flags: &[&str]) -> std::result::Result<TrainArgs, clap::Error> {
        use clap::Args;
        let matches = TrainArgs::augment_args(clap::Command::new("mamba-train"))
            .try_get_matches_from(std::iter::once("mamba-train").chain(flags.iter().copied()))?;
        TrainArgs::from_matches(&matches)
    }

    /// The settings clap parsed, with [`TrainArgs::given`] filled in and, for a task, the task
    /// defaults of the flags not given.
    pub fn from_matches(matches: &ArgMatches) -> std::result::Result<TrainArgs, clap::Error> {
        use clap::Args;
        let mut args = TrainArgs::from_arg_matches(matches)?;
        // The ids include clap's group of these flags, which is not a flag.
        let flags = TrainArgs::augment_args(clap::Command::new("mamba-train"));
        let flag = |id: &str| flags.get_arguments().any(|a| a.get_id() == id);
        let given =
            |id: &&clap::Id| flag(id.as_str()) && matches.value_source(id.as_str()) == Some(ValueSource::CommandLine);
        args.given = matches.ids().filter(given).map(|id| id.to_string()).collect();
        args.apply_preset();
        if args.task.is_some() {
            let (n_layer, batch, lr) = TASK_DEFAULTS;
            let default = |id: &str| !args.given.contains(id);
            if default("n_layer") {
                args.n_layer = n_layer;
            }
            if default("batch") {
                args.batch = batch;
            }
            if default("lr") {
                args.lr = lr;
            }
        }
        Ok(args)
    }

    /// The settings of a run resumed from a checkpoint that saved `saved`: those, with this
    /// command line's `RUN_ONLY` flags and the `RESUMABLE` flags it gives. Returns them and
    /// a line for the user per change, and a warning per ignored `FIXED` flag that differs.
    pub fn resume_onto(&self, mut saved: TrainArgs) -> Result<(TrainArgs, Vec<String>)> {
        saved.decay_steps = Some(saved.decay_steps()); // checkpoints older than the flag
        let (mut merged, cli) = (serde_json::to_value(&saved)?, serde_json::to_value(self)?);
        let mut notes = Vec::new();
        for id in &self.given {
            let (old, new) = (merged[id.as_str()].clone(), &cli[id.as_str()]);
            let flag = format!("--{}", id.replace('_', "-"));
            if old == *new || RUN_ONLY.contains(&id.as_str()) {
                continue;
            }
            if RESUMABLE.contains(&id.as_str()) {
                notes.push(format!("{flag} {} (was {})", shown(new), shown(&old)));
                merged[id.as_str()] = new.clone();
            } else if FIXED.contains(&id.as_str()) {
                let why = "the checkpoint fixes the model, its data and the seed";
                notes.push(format!("warning: {flag} {} ignored: {why} ({flag} {})", shown(new), shown(&old)));
            } else {
                return Err(Error::Settings(format!("{flag}: args.rs does not say whether --resume may change it")));
            }
        }
        let mut args: TrainArgs = serde_json::from_value(merged)?;
        (args.resume, args.stop_after, args.quiet) = (self.resume.clone(), self.stop_after, self.quiet);
        (args.device, args.profile, args.given) = (self.device, self.profile, self.given.clone());
        (args.overwrite, args.gpus, args.rank) = (self.overwrite, self.gpus, self.rank);
        Ok((args, notes))
    }

    pub fn steps(&self) -> u64 {
        self.steps.unwrap_or(1000)
    }

    /// The step where the cosine decay ends ([`TrainArgs::decay_steps`], else `--steps`).
    pub fn decay_steps(&self) -> u64 {
        self.decay_steps.unwrap_or(self.steps())
    }

    /// The step a run from step `first` ends at: `--steps`, or sooner with `--stop-after`.
    pub fn last_step(&self, first: u64) -> u64 {
        self.stop_after.map_or(self.steps(), |n| first.saturating_add(n).min(self.steps()))
    }

    /// --out, or a folder of runs/ named after the data, so that runs on different data do
    /// not meet: `default` (the embedded corpus), the --text file's stem, or the --task name.
    pub fn out(&self) -> PathBuf {
        if let Some(out) = &self.out {
            return out.clone();
        }
        let name = match (&self.task, &self.text) {
            (Some(task), _) => task.into(),
            (None, Some(text)) => text.file_stem().map_or_else(|| "default".into(), |stem| stem.to_os_string()),
            (None, None) => "default".into(),
        };
        PathBuf::from("runs").join::<std::ffi::OsString>(name)
    }

    /// Refuse settings that cannot train, each with the flag to change.
    pub(crate) fn validate(&self) -> Result<()> {
        let positive = [
            ("--steps", self.steps() as usize),
            ("--decay-steps", self.decay_steps() as usize),
            ("--batch", self.batch),
            ("--seq-len", self.seq_len),
            ("--d-model", self.d_model),
            ("--n-layer", self.n_layer),
            ("--eval-every", self.eval_every as usize),
            ("--eval-windows", self.eval_windows),
            ("--checkpoint-every", self.checkpoint_every as usize),
            ("--scan-chunk", self.scan_chunk),
            ("--stop-after", self.stop_after.map_or(1, |n| n as usize)),
            ("--d-state", self.d_state.unwrap_or(1)),
            ("--headdim", self.headdim),
            ("--ngroups", self.ngroups),
            ("--chunk-size", self.chunk_size),
            ("--ranks", self.ranks),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Settings(format!("{flag} must be at least 1")));
        }
        let rates = [("--lr", self.lr), ("--min-lr-frac", self.min_lr_frac), ("--weight-decay", self.weight_decay)];
        if let Some((flag, v)) = rates.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
            return Err(Error::Settings(format!("{flag} must be a finite number >= 0, got {v}")));
        }
        if self.min_lr_frac > 1.0 {
            let frac = self.min_lr_frac;
            return Err(Error::Settings(format!("--min-lr-frac is a fraction of --lr between 0 and 1, got {frac}")));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            let clip = self.grad_clip;
            return Err(Error::Settings(format!("--grad-clip must be a finite number > 0, got {clip}")));
        }
        if !self.batch.is_multiple_of(self.ranks.max(1)) {
            let (b, n) = (self.batch, self.ranks);
            return Err(Error::Settings(format!(
                "--ranks {n} must divide --batch {b}: each rank takes batch / ranks rows"
            )));
        }
        self.check_gpus()?;
        check_device(self.device)?;
        if self.profile && self.device != Device::Cuda {
            return Err(Error::Settings("--profile times GPU kernels: add --device cuda".into()));
        }
        self.check_layer()?;
        self.check_attention()?;
        self.check_moe()?;
        // Sizes last: they assume the checks above (e.g. no zero --scan-chunk).
        crate::limits::check_train(self)
    }
}

impl TrainArgs {
    /// The model these flags describe, for data of `vocab_size` tokens: `--layer`'s mixer
    /// with the reference defaults and the sizes given (`--d-state`; Mamba-2's `--headdim`,
    /// `--ngroups`, `--chunk-size`).
    pub fn model_config(&self, vocab_size: usize) -> MambaConfig {
        let mut cfg = MambaConfig::new(self.d_model, self.n_layer);
        (cfg.vocab_size, cfg.d_intermediate) = (vocab_size, self.d_intermediate);
        (cfg.attn_layer_idx, cfg.attn_cfg) = self.attention_layers();
        (cfg.moe_layer_idx, cfg.moe_cfg) = self.moe_layers();
        match self.layer {
            Layer::Mamba1 => {
                if let SsmConfig::Mamba1(s) = &mut cfg.ssm_cfg {
                    s.d_state = self.d_state.unwrap_or(s.d_state);
                    s.arch = match self.arch {
                        ArchFlag::Mamba => Arch::Mamba,
                        ArchFlag::NoGate => Arch::NoGate,
                        ArchFlag::H3 => Arch::H3,
                    };
                    s.ssm = match self.ssm {
                        SsmFlag::S6 => SsmKind::S6,
                        SsmFlag::S4 => SsmKind::S4,
                    };
                }
            }
            Layer::Mamba2 => {
                let d = Mamba2Config::default();
                cfg.ssm_cfg = SsmConfig::Mamba2(Mamba2Config {
                    d_state: self.d_state.unwrap_or(d.d_state),
                    headdim: self.headdim,
                    ngroups: self.ngroups,
                    chunk_size: self.chunk_size,
                    ..d
                });
            }
        }
        cfg
    }

    /// `--preset`'s settings for the flags not given.
    fn apply_preset(&mut self) {
        let Some(preset) = self.preset else { return };
        let (attn_every, moe_every, top_k) = match preset {
            Preset::JambaTiny => (4, 2, 2),
            Preset::MoeMambaTiny => (0, 1, 1),
        };
        let default = |id: &str| !self.given.contains(id);
        if default("n_layer") {
            self.n_layer = 4;
        }
        if default("attn_every") {
            self.attn_every = attn_every;
        }
        if default("moe_every") {
            self.moe_every = moe_every;
        }
        if default("top_k") {
            self.top_k = top_k;
        }
    }

    /// `--moe-every` and the expert flags as `moe_layer_idx` and `moe_cfg`.
    fn moe_layers(&self) -> (Vec<usize>, serde_json::Map<String, serde_json::Value>) {
        let k = self.moe_every;
        if k == 0 {
            return (Vec::new(), serde_json::Map::new());
        }
        let layers = (0..self.n_layer).filter(|i| i % k == k - 1).collect();
        let d_expert = self.d_expert.unwrap_or(self.d_model.saturating_mul(4));
        let cfg = serde_json::json!({"num_experts": self.experts, "top_k": self.top_k, "d_expert": d_expert});
        (layers, cfg.as_object().cloned().unwrap_or_default())
    }

    /// `--attn-every` and `--attn-heads` as the reference config's `attn_layer_idx` and
    /// `attn_cfg`.
    fn attention_layers(&self) -> (Vec<usize>, serde_json::Map<String, serde_json::Value>) {
        let k = self.attn_every;
        if k == 0 {
            return (Vec::new(), serde_json::Map::new());
        }
        let layers = (0..self.n_layer).filter(|i| i % k == k / 2).collect();
        let heads = self.attn_heads.unwrap_or((self.d_model / 64).max(1));
        let cfg = serde_json::json!({"num_heads": heads, "causal": true});
        (layers, cfg.as_object().cloned().unwrap_or_default())
    }

    /// `--gpus N` can run: on the GPU, without --ranks, N dividing --batch. (Whether this host
    /// has N GPUs is checked by rank 0 alone: the others see one each.)
    fn check_gpus(&self) -> Result<()> {
        let Some(n) = self.gpus else { return Ok(()) };
        let refuse = |msg: String| Err(Error::Settings(msg));
        if n == 0 {
            return refuse("--gpus must be at least 1".into());
        }
        if self.device != Device::Cuda {
            return refuse(format!("--gpus {n} trains on {n} GPUs: add --device cuda"));
        }
        if self.ranks > 1 {
            return refuse(format!(
                "--gpus {n} with --ranks {}: use one (--ranks runs ranks one after another on one device; a run \
                 saved with --ranks keeps it on --resume: add --ranks 1)",
                self.ranks
            ));
        }
        if !self.batch.is_multiple_of(n) {
            return refuse(format!("--gpus {n} must divide --batch {}: each GPU takes batch / N rows", self.batch));
        }
        Ok(())
    }

    /// The attention flags make at least one attention layer of whole heads.
    fn check_attention(&self) -> Result<()> {
        let refuse = |msg: String| Err(Error::Settings(msg));
        let (k, n) = (self.attn_every, self.n_layer);
        if k == 0 {
            return match self.attn_heads {
                Some(_) if self.resume.is_none() => {
                    refuse("--attn-heads needs --attn-every K (which layers are attention)".into())
                }
                _ => Ok(()),
            };
        }
        if k / 2 >= n {
            return refuse(format!("--attn-every {k} makes no layer attention with --n-layer {n} (layer i is attention when i mod {k} = {}): lower it", k / 2));
        }
        let heads = self.attn_heads.unwrap_or((self.d_model / 64).max(1));
        if heads == 0 || !self.d_model.is_multiple_of(heads) {
            return refuse(format!("--attn-heads {heads} must divide --d-model {}", self.d_model));
        }
        Ok(())
    }

    /// The MoE flags make at least one MoE layer of a valid shape.
    fn check_moe(&self) -> Result<()> {
        let refuse = |msg: String| Err(Error::Settings(msg));
        let (k, n, e) = (self.moe_every, self.n_layer, self.experts);
        let fresh = self.resume.is_none();
        if k == 0 {
            let given = ["experts", "top_k", "d_expert"].into_iter().find(|id| fresh && self.given.contains(*id));
            return match given {
                Some(id) => {
                    refuse(format!("--{} needs --moe-every K (which blocks have experts)", id.replace('_', "-")))
                }
                None => Ok(()),
            };
        }
        if k > n {
            return refuse(format!("--moe-every {k} makes no layer MoE with --n-layer {n}: lower it"));
        }
        if e == 0 || self.top_k == 0 || self.top_k > e {
            return refuse(format!("--top-k {} must be 1 to --experts {e} (and --experts at least 1)", self.top_k));
        }
        if self.d_expert == Some(0) {
            return refuse("--d-expert must be at least 1".into());
        }
        Ok(())
    }

    /// The Mamba-2 flags fit `--d-model` (the reference's checks, in the flags' words), and
    /// are not given to a fresh Mamba-1 run, which would ignore them.
    fn check_layer(&self) -> Result<()> {
        let refuse = |msg: String| Err(Error::Settings(msg));
        if self.layer == Layer::Mamba1 {
            let given = MAMBA2_ONLY.iter().find(|id| self.resume.is_none() && self.given.contains(**id));
            return match given {
                Some(id) => refuse(format!("--{} is a Mamba-2 setting: add --layer mamba2", id.replace('_', "-"))),
                None => Ok(()),
            };
        }
        if let Some(id) = MAMBA1_ONLY.iter().find(|id| self.resume.is_none() && self.given.contains(**id)) {
            return refuse(format!("--{id} sets an ablation of the Mamba-1 block (the Mamba paper's Table 1): it works with --layer mamba1 only"));
        }
        let (d_model, headdim, ngroups) = (self.d_model, self.headdim, self.ngroups);
        let Some(d_inner) = d_model.checked_mul(2) else {
            return refuse(format!("--d-model {d_model} overflows d_inner = 2 x --d-model: lower it"));
        };
        if !d_inner.is_multiple_of(headdim) {
            return refuse(format!(
                "--headdim {headdim} must divide d_inner = 2 x --d-model = {d_inner} (the heads are d_inner / --headdim)"
            ));
        }
        let heads = d_inner / headdim;
        if !heads.is_multiple_of(ngroups) {
            return refuse(format!(
                "--ngroups {ngroups} must divide the {heads} heads (2 x --d-model {d_model} / --headdim {headdim})"
            ));
        }
        Ok(())
    }
}

/// `--device` can be used: an error naming the flag, with the engine's reason (a build
/// without `--features cuda`, no GPU or driver) and what to do, before anything is loaded.
pub fn check_device(device: Device) -> Result<()> {
    device.ready().map_err(|e| match e {
        mamba_engine::Error::Device { msg, .. } => Error::Settings(format!("--device {device}: {msg}")),
        other => Error::Engine(other),
    })
}

/// A saved setting as a user would type it: numbers and paths without JSON quotes.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "(none)".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests;
