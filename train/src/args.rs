//! The settings of `mamba train`: every flag, its default and its help text, and the checks
//! that refuse settings which cannot train before anything is allocated.

use crate::{Error, Result};
use mamba_engine::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    pub(crate) fn validate(&self) -> Result<()> {
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
        // Sizes last: they assume the checks above (e.g. no zero --scan-chunk).
        crate::limits::check_train(self)
    }
}
