//! Sizes checked before anything is allocated, so that a setting too large for the machine is
//! an error naming the flag to lower, not a `capacity overflow` panic or an allocation abort
//! minutes into a run.
//!
//! Every size is counted in checked arithmetic (an overflow is an error of its own), then the
//! estimate of [`model_bytes`] + [`activation_bytes`] is compared with the memory a new
//! allocation can get: `MemAvailable` of /proc/meminfo on the CPU (the comparison is skipped
//! where it cannot be read), the GPU's free memory with `--device cuda`. Either way an estimate
//! beyond what a 64-bit process can address is refused.

use crate::{args::TrainArgs, eval, tasks::Task, Error, Result};
use mamba_engine::Device;
use mamba_model::{MambaConfig, SsmConfig};

/// The most bytes `--sample-tokens` may ask for: a sample is printed at every evaluation.
pub const MAX_SAMPLE_TOKENS: usize = 1 << 16;

/// Bytes per value: training and evaluation compute in f32.
const F32: usize = 4;

/// Bytes of the model's weights times `copies`: 4 to train (weights, gradients and AdamW's two
/// moments), 1 to evaluate or sample. `None` if the size overflows.
pub fn model_bytes(cfg: &MambaConfig, copies: usize) -> Option<usize> {
    cfg.param_count().ok()?.checked_mul(copies)?.checked_mul(F32)
}

/// Bytes of the activations a training step on `rows` sequences of `len` tokens keeps for its
/// backward, in f32 (`None` if the size overflows): [`mamba1_activations`] or
/// [`mamba2_activations`] by the model's mixer, or [`recompute_activations`] with
/// `--recompute`, in values, times 4 bytes. An evaluation keeps less (no graph), so this
/// bounds it too.
pub fn activation_bytes(
    cfg: &MambaConfig,
    rows: usize,
    len: usize,
    scan_chunk: usize,
    recompute: bool,
) -> Option<usize> {
    // the SSM formulas below count every layer as an SSM mixer: give them the others' count
    let ssm = MambaConfig { n_layer: cfg.n_layer.checked_sub(cfg.attn_layer_idx.len())?, ..cfg.clone() };
    let values = match &cfg.ssm_cfg {
        _ if recompute => recompute_activations(&ssm, rows, len),
        SsmConfig::Mamba1(_) => mamba1_activations(&ssm, rows, len, scan_chunk),
        SsmConfig::Mamba2(_) => mamba2_activations(&ssm, rows, len),
    };
    sum(&[values, beyond_the_ssm(cfg, rows, len)])?.checked_mul(F32)
}

/// What the layers that are not the plain SSM mixer keep, approximately: each attention layer
/// its norm's input and output and about ATTENTION_VALUES values per channel of its heads and
/// token (in_proj's output, q, k and v as the op takes them, the output and its layout copy;
/// the fused op keeps no (len, len) scores); on top of the SSM estimate, each S4 ablation layer its scan over d_inner · N channels,
/// five values per channel and token; each MoE layer, which sends a token to its top k
/// experts, per token its norm's input and output and the router's probabilities (2d + 2E + 1)
/// and per choice 7H + 3d + 1 (H = d_expert: the gathered row, the expert's gated MLP inside,
/// its output and gate, the row gathered back).
/// Values an attention layer keeps per channel of its heads and token (see `beyond_the_ssm`).
const ATTENTION_VALUES: usize = 5;

fn beyond_the_ssm(cfg: &MambaConfig, rows: usize, len: usize) -> Option<usize> {
    let attention = match cfg.attn_layer_idx.len() {
        0 => 0,
        layers => {
            let a = mamba_model::AttnConfig::read(&cfg.attn_cfg, cfg.d_model).ok()?;
            let per_token = a.num_heads.checked_mul(a.head_dim)?.checked_mul(ATTENTION_VALUES)?;
            product(&[layers, rows, len, per_token.checked_add(cfg.d_model.checked_mul(2)?)?])?
        }
    };
    let s4 = match &cfg.ssm_cfg {
        SsmConfig::Mamba1(s) if s.ssm == mamba_model::SsmKind::S4 => {
            product(&[cfg.n_layer, rows, len, s.d_inner(cfg.d_model)?, s.d_state, 5])?
        }
        _ => 0,
    };
    let moe = match cfg.moe_layer_idx.len() {
        0 => 0,
        layers => {
            let (m, d) = (mamba_model::MoeConfig::read(&cfg.moe_cfg, cfg.d_model).ok()?, cfg.d_model);
            let per_choice = sum(&[m.d_expert.checked_mul(7), d.checked_mul(3), Some(1)])?;
            let per_token =
                sum(&[m.top_k.checked_mul(per_choice), d.checked_mul(2), m.num_experts.checked_mul(2), Some(1)])?;
            product(&[layers, rows, len, per_token])?
        }
    };
    attention.checked_add(s4)?.checked_add(moe)
}

/// The values either model keeps for backward with `--recompute`, exactly (the test measures
/// the graph with the ledger). With d = d_model, e = d_inner, V = the padded vocabulary and I
/// = in_proj's outputs per token (2e for Mamba-1; 2e + 2GN + H for Mamba-2):
///
/// ```text
/// rows·len · ( n_layer·(2d + 1 + I + e) + 2d + 2V + 2 )  (+ n_layer · rows·e·N for Mamba-1)
/// ```
///
/// Per layer and token: the residual, its norm's 1/rms and output (2d + 1); in_proj's output,
/// which the checkpoint keeps (I); the checkpoint's output, which out_proj keeps (e). Per
/// token: the final norm's input, 1/rms and output (2d + 1), the logits, their log-sum-exp
/// and their gradient (2V + 1). Mamba-1's checkpoint output is the scan's, which shares its
/// buffer with the scan's last state (rows, e, N).
pub fn recompute_activations(cfg: &MambaConfig, rows: usize, len: usize) -> Option<usize> {
    let (d, vocab) = (cfg.d_model, cfg.checked_padded_vocab()?);
    let (e, in_proj, last) = match &cfg.ssm_cfg {
        SsmConfig::Mamba1(s) => {
            let e = s.d_inner(d)?;
            (e, e.checked_mul(2)?, product(&[cfg.n_layer, rows, e, s.d_state])?)
        }
        SsmConfig::Mamba2(s) => {
            let e = s.d_inner(d)?;
            let gn = s.ngroups.checked_mul(s.d_state)?;
            (e, sum(&[e.checked_mul(2), gn.checked_mul(2), e.checked_div(s.headdim)])?, 0)
        }
    };
    let per_layer = sum(&[d.checked_mul(2), Some(1), Some(in_proj), Some(e)])?;
    let per_token = sum(&[cfg.n_layer.checked_mul(per_layer), d.checked_mul(2), vocab.checked_mul(2), Some(2)])?;
    product(&[rows, len, per_token])?.checked_add(last)
}

/// Checked sum of sizes (`None` if one of them or the sum overflows).
fn sum(xs: &[Option<usize>]) -> Option<usize> {
    xs.iter().try_fold(0usize, |acc, x| acc.checked_add((*x)?))
}

/// Checked product of sizes.
fn product(xs: &[usize]) -> Option<usize> {
    xs.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x))
}

/// The values a Mamba-1 model keeps for backward. With d = d_model, e = d_inner, n = d_state,
/// r = dt_rank, V = the padded vocabulary, c = --scan-chunk:
///
/// ```text
/// rows·len · ( n_layer·(3d + 10e + 2r + 4n) + 2d + 2V )  +  n_layer · rows·e·n · (⌈len / c⌉ + 1)
/// ```
///
/// Per layer and token: the residual, its norm and out_proj's output (3d); in_proj's x and z
/// (2e); the conv's output, its silu, x transposed to rows, delta, the scan's contiguous copies
/// of delta and z, its output and that transposed back (8e); x_proj's output and its dt part
/// (2r + 2n) and the scan's contiguous B and C (2n). Per token: the embedding and the final
/// norm (2d), the logits and their gradient (2V). And the states the scan saves every c steps,
/// (rows, e, n) each, and its last state, which shares its output's buffer.
pub fn mamba1_activations(cfg: &MambaConfig, rows: usize, len: usize, scan_chunk: usize) -> Option<usize> {
    let SsmConfig::Mamba1(s) = &cfg.ssm_cfg else { return None };
    let (d, n, r) = (cfg.d_model, s.d_state, s.dt_rank);
    let e = s.expand.checked_mul(d)?;
    let per_layer = sum(&[d.checked_mul(3), e.checked_mul(10), r.checked_mul(2), n.checked_mul(4)])?;
    let per_token = ends_per_token(cfg, per_layer)?;
    let saves = len.div_ceil(scan_chunk.max(1)).checked_add(1)?;
    let states = product(&[cfg.n_layer, rows, e, n, saves])?;
    product(&[rows, len, per_token])?.checked_add(states)
}

/// Per token: `n_layer · per_layer` and the model's ends, the embedding and the final norm
/// (2d), the logits and their gradient (2V).
fn ends_per_token(cfg: &MambaConfig, per_layer: usize) -> Option<usize> {
    let (d, vocab) = (cfg.d_model, cfg.checked_padded_vocab()?);
    sum(&[cfg.n_layer.checked_mul(per_layer), d.checked_mul(2), vocab.checked_mul(2)])
}

/// The values a Mamba-2 model keeps for backward (`mixer/mamba2.rs`), exactly (the test
/// measures the graph with the ledger). With d = d_model, e = d_inner, N = d_state,
/// G = ngroups, H = heads, Q = chunk_size, V = the padded vocabulary and `[G > 1]` = 1 with more
/// than one group, else 0:
///
/// ```text
///   rows·len · ( n_layer·(2d + 1 + 8e + 6GN + 2H + G + [G > 1]·e) + 2d + 2V + 2 )
/// + n_layer · rows·e·N · (⌈len / Q⌉ + 1)
/// + n_layer · (2H + [G > 1]·e/G)
/// ```
///
/// Per layer and token: the residual, its norm's 1/rms and output (2d + 1); in_proj's output z, xBC, dt
/// (2e + 2GN + H), kept whole by the views of it that the conv and silu(z) save; the conv's
/// output, which its SiLU saves (e + 2GN); the SSD op's contiguous inputs x, B, C and dt
/// (e + 2GN + H); its output y (e); silu(z) and the gated y · silu(z) (2e); the norm's 1/rms
/// per group (G) and its output, which out_proj saves (e); with more than one group also the
/// output of the unit-weight norm that the weight multiplies (e). Per sequence and layer: the
/// SSD op's chunk states (⌈len/Q⌉, H, P, N) and its last state (H, P, N), H·P = e, which shares
/// y's buffer. Per layer: A = -exp(A_log) and exp's output (2H), and the unit weight (e/G) with
/// more than one group. Per token: the final norm's input, 1/rms and output (2d + 1), the
/// logits, their log-sum-exp and their gradient (2V + 1; the gradient is the one term outside
/// the graph).
pub fn mamba2_activations(cfg: &MambaConfig, rows: usize, len: usize) -> Option<usize> {
    let SsmConfig::Mamba2(s) = &cfg.ssm_cfg else { return None };
    let (d, n, g) = (cfg.d_model, s.d_state, s.ngroups);
    let e = s.d_inner(d)?;
    let heads = e.checked_div(s.headdim)?;
    let gn = g.checked_mul(n)?;
    let grouped = if g > 1 { e } else { 0 };
    let terms =
        [d.checked_mul(2), Some(1), e.checked_mul(8), gn.checked_mul(6), heads.checked_mul(2), Some(g), Some(grouped)];
    let per_layer = sum(&terms)?;
    let vocab = cfg.checked_padded_vocab()?;
    let per_token = sum(&[cfg.n_layer.checked_mul(per_layer), d.checked_mul(2), vocab.checked_mul(2), Some(2)])?;
    let states = product(&[cfg.n_layer, rows, e, n, len.div_ceil(s.chunk_size.max(1)).checked_add(1)?])?;
    let constants = product(&[cfg.n_layer, sum(&[heads.checked_mul(2), grouped.checked_div(g)])?])?;
    sum(&[product(&[rows, len, per_token]), Some(states), Some(constants)])
}

/// How much memory a new allocation can get.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Available {
    /// `MemAvailable` of /proc/meminfo, bytes.
    Cpu(usize),
    /// The GPU's free memory (and what our allocator caches), bytes.
    Gpu(usize),
    /// Not known: only what a 64-bit process can address at all is checked.
    Unknown,
}

impl Available {
    /// What `device` offers now. With `--device cuda` this starts the GPU.
    pub fn on(device: Device) -> Result<Available> {
        match device {
            Device::Cpu => Ok(mem_available().map_or(Available::Unknown, Available::Cpu)),
            #[cfg(feature = "cuda")]
            Device::Cuda => Ok(Available::Gpu(mamba_engine::cuda::available_bytes()?)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Ok(Available::Unknown), // the model's move to the GPU says why not
        }
    }

    fn bytes(self) -> usize {
        match self {
            Available::Cpu(b) | Available::Gpu(b) => b.min(isize::MAX as usize),
            Available::Unknown => isize::MAX as usize,
        }
    }

    fn describe(self) -> String {
        match self {
            Available::Cpu(b) => format!("{} of memory is available", human(b)),
            Available::Gpu(b) => format!("{} of GPU memory is free", human(b)),
            Available::Unknown => format!("a process can address at most {}", human(isize::MAX as usize)),
        }
    }
}

/// `MemAvailable` from /proc/meminfo (Linux), bytes.
fn mem_available() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    line.trim().strip_suffix("kB")?.trim().parse::<usize>().ok()?.checked_mul(1024)
}

/// Bytes in decimal units, e.g. "120 TB", "1.5 GB".
pub fn human(bytes: usize) -> String {
    const UNITS: [&str; 7] = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        (value, unit) = (value / 1000.0, unit + 1);
    }
    match (unit, value < 10.0) {
        (0, _) => format!("{bytes} bytes"),
        (_, true) => format!("{value:.1} {}", UNITS[unit]),
        (_, false) => format!("{value:.0} {}", UNITS[unit]),
    }
}

/// A model and a batch to size, with the words the errors use.
pub(crate) struct Plan<'a> {
    /// The model, its `vocab_size` set.
    pub cfg: &'a MambaConfig,
    /// Copies of the weights: 4 to train, 1 to evaluate (see [`model_bytes`]).
    pub copies: usize,
    pub rows: usize,
    pub len: usize,
    pub scan_chunk: usize,
    /// `--recompute`: the mixers keep only in_proj's output ([`recompute_activations`]).
    pub recompute: bool,
    /// E.g. "--d-model 128 x --n-layer 4", and what to do when the model is the problem.
    pub model: String,
    pub model_fix: &'a str,
    /// E.g. "--batch 16 x --seq-len 128", and what to do when the activations are the problem.
    pub batch: String,
    pub batch_fix: &'a str,
}

impl Plan<'_> {
    /// Refuse the plan if a size overflows or the estimate exceeds `available`. A model that
    /// does not fit on its own is the model's fault; otherwise the larger part is blamed.
    pub(crate) fn check(&self, available: Available) -> Result<()> {
        let refuse = |msg: String| Err(Error::Settings(msg));
        let Some(model) = model_bytes(self.cfg, self.copies) else {
            return refuse(format!("{}: the model's size overflows; {}", self.model, self.model_fix));
        };
        if model > available.bytes() {
            return refuse(self.model_too_big(model, None, available));
        }
        let Some(acts) = activation_bytes(self.cfg, self.rows, self.len, self.scan_chunk, self.recompute) else {
            return refuse(format!("{}: the activations' size overflows; {}", self.batch, self.batch_fix));
        };
        if model.saturating_add(acts) <= available.bytes() {
            return Ok(());
        }
        if acts < model {
            return refuse(self.model_too_big(model, Some(acts), available));
        }
        let (a, m, avail) = (human(acts), human(model), available.describe());
        refuse(format!(
            "{} needs about {a} for activations (and {m} for the model), but {avail}: {}",
            self.batch, self.batch_fix
        ))
    }

    fn model_too_big(&self, model: usize, acts: Option<usize>, available: Available) -> String {
        let params = self.cfg.param_count().unwrap_or(0);
        let what =
            if self.copies > 1 { "to train (weights, gradients and two AdamW moments)" } else { "for its weights" };
        let acts = acts.map(|a| format!(" (and {} for activations)", human(a))).unwrap_or_default();
        format!(
            "{} makes a model of {params} parameters that needs about {} {what}{acts}, but {}: {}",
            self.model,
            human(model),
            available.describe(),
            self.model_fix
        )
    }
}

/// Everything `mamba train` will allocate by size, checked from `args` alone (called by
/// [`TrainArgs::validate`], before the data or the model exist).
pub(crate) fn check_train(args: &TrainArgs) -> Result<()> {
    check_train_on(args, Available::on(args.device)?)
}

fn check_train_on(args: &TrainArgs, available: Available) -> Result<()> {
    if args.sample_tokens > MAX_SAMPLE_TOKENS {
        return Err(Error::Settings(format!(
            "--sample-tokens {} is more than the {MAX_SAMPLE_TOKENS} allowed (a sample is printed at every \
             evaluation): lower it, or 0 for no samples",
            args.sample_tokens
        )));
    }
    let (len, len_flag, vocab) = match &args.task {
        Some(name) => {
            let task = Task::from_name(name, args.task_len, args.task_tokens, args.task_vocab)?;
            eval::task_examples(args.eval_windows, "--eval-windows")?;
            (task.len(), format!("--task-len {}", args.task_len), task.vocab_size())
        }
        None => (args.seq_len, format!("--seq-len {}", args.seq_len), 256),
    };
    let cfg = args.model_config(vocab);
    let len_name = len_flag.split(' ').next().unwrap_or_default();
    let batch_fix = format!("lower --batch or {len_name}, or raise --ranks");
    let ranks = args.ranks.max(1);
    Plan {
        cfg: &cfg,
        // weights, gradients, AdamW's two moments; with ranks, the running sum of the
        // gradients and one rank's flattened bucket
        copies: if ranks > 1 { 6 } else { 4 },
        // the ranks run one after another: one shard's activations at a time
        rows: args.batch / ranks,
        len,
        scan_chunk: args.scan_chunk,
        recompute: args.recompute,
        model: format!("--d-model {} x --n-layer {}", args.d_model, args.n_layer),
        model_fix: "lower --d-model or --n-layer",
        batch: match ranks {
            1 => format!("--batch {} x {len_flag}", args.batch),
            _ => format!("--batch {} / --ranks {ranks} x {len_flag}", args.batch),
        },
        batch_fix: &batch_fix,
    }
    .check(available)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> TrainArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: TrainArgs,
        }
        Cli::parse_from([&["train"][..], flags].concat()).args
    }

    const GB: usize = 1_000_000_000;

    fn refused(flags: &[&str], available: Available) -> String {
        check_train_on(&args(flags), available).unwrap_err().to_string()
    }

    #[test]
    fn the_default_run_fits_in_a_gigabyte_and_its_estimate_is_plausible() {
        check_train_on(&args(&[]), Available::Cpu(GB)).unwrap();
        let cfg = MambaConfig::new(128, 4);
        // 16 x 128 tokens x (4 x 3024 + 256 + 512) floats, plus 4 x 16 x 256 x 16 x (2 saved + 1 last) states
        assert_eq!(activation_bytes(&cfg, 16, 128, 64, false), Some(4 * (2048 * 12864 + 786_432)));
        assert_eq!(model_bytes(&cfg, 4), Some(16 * cfg.param_count().unwrap()));
        // a chunk longer than the sequence saves one state per layer, as the scan does (and the last)
        assert_eq!(activation_bytes(&cfg, 1, 8, 64, false), Some(4 * (8 * 12864 + 4 * 256 * 16 * 2)));
    }

    /// What one loss's graph over a model of `cfg` keeps for backward, as the estimate counts
    /// it: the ledger's bytes with the parameters set aside (A_log and conv1d.bias are the
    /// parameters no op saves) and the logits' gradient added (the one term outside the graph).
    fn kept_by_the_graph(cfg: &MambaConfig, rows: usize, len: usize) -> usize {
        use mamba_engine::{ledger::saved_in_graph, DType};
        let model = mamba_model::MambaLM::new(cfg.clone(), DType::F32, 0).unwrap();
        let ids: Vec<usize> = (0..rows * len).map(|i| i * 7 % 256).collect();
        let targets: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let graph = saved_in_graph(&model.loss(&ids, &targets, rows, len).unwrap()).total_bytes;
        let unsaved: usize = model
            .parameters()
            .iter()
            .filter(|p| p.name.ends_with("A_log") || p.name.ends_with("conv1d.bias"))
            .map(|p| p.tensor.numel())
            .sum();
        graph - 4 * (model.num_parameters() - unsaved) + 4 * rows * len * 256
    }

    /// The approximate terms for attention and MoE layers, around Mamba-2 mixers (whose
    /// estimate is exact, below): within 10% of what the graph keeps.
    #[test]
    fn the_family_estimates_are_near_what_the_graph_keeps() {
        let mamba2 =
            ["--layer", "mamba2", "--d-model", "64", "--headdim", "16", "--d-state", "8", "--chunk-size", "16"];
        let family: [&[&str]; 3] = [
            &["--n-layer", "4", "--attn-every", "2", "--attn-heads", "2"],
            &["--n-layer", "4", "--moe-every", "2", "--experts", "4", "--top-k", "2", "--d-expert", "64"],
            &["--n-layer", "4", "--preset", "jamba-tiny", "--attn-heads", "4"],
        ];
        for flags in family {
            let cfg = args(&[&mamba2[..], flags].concat()).model_config(256);
            let kept = kept_by_the_graph(&cfg, 2, 64) as f64;
            let estimate = activation_bytes(&cfg, 2, 64, 64, false).unwrap() as f64;
            assert!((estimate / kept - 1.0).abs() < 0.1, "{flags:?}: estimate {estimate} vs graph {kept}");
        }
    }

    /// The Mamba-2 estimate is exactly what one loss's graph keeps.
    #[test]
    fn the_mamba2_estimate_is_what_the_graph_keeps() {
        let tiny = ["--layer", "mamba2", "--d-model", "32", "--headdim", "16", "--d-state", "8", "--chunk-size", "8"];
        for more in [&[][..], &["--ngroups", "2"], &["--n-layer", "1", "--ngroups", "4"]] {
            let cfg = args(&[&tiny[..], more].concat()).model_config(256);
            assert_eq!(activation_bytes(&cfg, 2, 21, 64, false), Some(kept_by_the_graph(&cfg, 2, 21)), "{more:?}");
        }
    }

    /// With --recompute, both mixers: the estimate against the ledger's count, as above (every
    /// parameter is saved by some op then: the checkpoints keep the mixers' inner ones).
    #[test]
    fn the_recompute_estimate_is_what_the_graph_keeps() {
        use mamba_engine::{ledger::saved_in_graph, DType};
        use mamba_model::MambaLM;
        let mamba2 = ["--layer", "mamba2", "--d-model", "32", "--headdim", "16", "--d-state", "8", "--chunk-size", "8"];
        for flags in [&["--d-model", "32", "--n-layer", "2"][..], &mamba2, &[&mamba2[..], &["--ngroups", "2"]].concat()]
        {
            let cfg = args(flags).model_config(256);
            let mut model = MambaLM::new(cfg.clone(), DType::F32, 0).unwrap();
            model.recompute = true;
            let (rows, len) = (2, 21);
            let ids: Vec<usize> = (0..rows * len).map(|i| i * 7 % 256).collect();
            let targets: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            let graph = saved_in_graph(&model.loss(&ids, &targets, rows, len).unwrap()).total_bytes;
            let logits_grad = rows * len * 256;
            let want = graph - 4 * model.num_parameters() + 4 * logits_grad;
            assert_eq!(activation_bytes(&cfg, rows, len, 64, true), Some(want), "{flags:?}");
        }
    }

    /// The ranks run one after another, so a batch that fits only a shard at a time is
    /// accepted with enough of them.
    #[test]
    fn ranks_count_one_shard_of_activations() {
        let big = ["--batch", "4096"];
        let msg = refused(&big, Available::Cpu(GB));
        assert!(msg.starts_with("--batch 4096 x --seq-len 128 needs about "), "{msg}");
        check_train_on(&args(&[&big[..], &["--ranks", "64"]].concat()), Available::Cpu(GB)).unwrap();
        let msg = refused(&[&big[..], &["--ranks", "2"]].concat(), Available::Cpu(GB));
        assert!(msg.starts_with("--batch 4096 / --ranks 2 x --seq-len 128 needs about "), "{msg}");
    }

    #[test]
    fn too_large_for_the_memory_names_the_flag_to_lower() {
        let msg = refused(&["--batch", "1000000000000"], Available::Cpu(22 * GB));
        assert!(msg.starts_with("--batch 1000000000000 x --seq-len 128 needs about "), "{msg}");
        assert!(
            msg.contains(" EB for activations")
                && msg.ends_with("22 GB of memory is available: lower --batch or --seq-len, or raise --ranks"),
            "{msg}"
        );
        let msg = refused(&["--d-model", "1000000"], Available::Gpu(80 * GB));
        assert!(msg.starts_with("--d-model 1000000 x --n-layer 4 makes a model of "), "{msg}");
        assert!(
            msg.contains("TB to train (weights,")
                && msg.ends_with("80 GB of GPU memory is free: lower --d-model or --n-layer"),
            "{msg}"
        );
        let msg = refused(&["--task", "induction-heads", "--task-len", "1000000"], Available::Cpu(GB));
        assert!(
            msg.contains("--task-len 1000000") && msg.ends_with("lower --batch or --task-len, or raise --ranks"),
            "{msg}"
        );
        // an unknown amount still refuses what no process can address
        let msg = refused(&["--n-layer", "6000000000000"], Available::Unknown);
        assert!(msg.ends_with("a process can address at most 9.2 EB: lower --d-model or --n-layer"), "{msg}");
        check_train_on(&args(&["--n-layer", "1000000"]), Available::Unknown).unwrap();
    }

    #[test]
    fn overflows_and_caps_are_errors() {
        let max = usize::MAX.to_string();
        for (flag, expect) in [
            ("--d-model", "the model's size overflows; lower --d-model or --n-layer"),
            ("--batch", "the activations' size overflows; lower --batch or --seq-len"),
            ("--seq-len", "the activations' size overflows; lower --batch or --seq-len"),
            ("--sample-tokens", "is more than the 65536 allowed"),
        ] {
            let msg = refused(&[flag, &max], Available::Unknown);
            assert!(msg.contains(&format!("{flag} {max}")) && msg.contains(expect), "{flag}: {msg}");
        }
        let task = ["--task", "selective-copying"];
        let msg = refused(&[&task[..], &["--eval-windows", &max]].concat(), Available::Unknown);
        assert!(msg.contains("--eval-windows"), "{msg}");
        let msg = refused(&[&task[..], &["--task-vocab", "100000000"]].concat(), Available::Unknown);
        assert!(msg.contains("(--task-vocab)"), "{msg}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(999), "999 bytes");
        assert_eq!(human(1_500_000_000), "1.5 GB");
        assert_eq!(human(22 * GB), "22 GB");
        assert_eq!(human(120_000_000_000_000), "120 TB");
        assert_eq!(human(usize::MAX), "18 EB");
        assert!(mem_available().is_none_or(|b| b > 0));
    }
}
