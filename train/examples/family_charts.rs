//! The charts and the table of docs/FAMILY.md, from the runs of `kernels/tools/family.sh`
//! (unpack its family.tar.gz; each run is a folder ARM-SEED with metrics.jsonl, log.txt,
//! time.txt and, once it saved a checkpoint, config.json):
//!
//! - docs/family_moe.svg: validation bits/byte per step of Mamba (a dense MLP in every block)
//!   and MoE-Mamba (the MLPs as Switch MoE), and vanilla Mamba when the plain runs are there;
//! - docs/family_hybrid.svg: the same of Mamba and the hybrid with attention 1 layer in 8;
//! - on stdout, a markdown table: per run and per arm (the mean over its seeds) the active
//!   and total parameters, the bytes trained on, the final and best validation bits/byte, the
//!   wall time, and the step at which the arm first reaches the final validation bits/byte of
//!   Mamba's run (interpolated between evaluations; the steps saved: Mamba's steps / that
//!   step, the MoE-Mamba paper's claim is 2.2x).
//!
//! ```text
//! cargo run --release -p mamba-train --example family_charts -- RUNS [CHART_DIR]
//! ```
//!
//! CHART_DIR defaults to docs/.

use mamba_model::{mlp::hidden_width, MambaConfig, MoeConfig};
use mamba_train::{
    args::TrainArgs,
    chart::{loss_curve_svg, Series, YAxis},
};
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

/// The arms, in the order of the table and the legends: folder prefix and name.
const ARMS: [(&str, &str); 4] = [
    ("mamba", "Mamba (dense MLP)"),
    ("moe", "MoE-Mamba"),
    ("hybrid", "hybrid (attention 1 in 8)"),
    ("plain", "vanilla Mamba (no MLP)"),
];

/// One run: its folder's name and what it recorded.
struct Run {
    name: String,
    arm: &'static str,
    /// (step, validation bits/byte)
    val: Vec<(f64, f64)>,
    /// The parameters `mamba train` printed (its header line), and the active and total ones
    /// counted from the model's config.
    printed: Option<usize>,
    active: Option<usize>,
    total: Option<usize>,
    /// d_model and n_layer (config.json)
    shape: Option<(usize, usize)>,
    /// Bytes per step (batch x seq-len, from the header), the last step trained.
    tokens_per_step: Option<usize>,
    steps: u64,
    /// Wall seconds over the calls (time.txt), the median tokens/s of the steps.
    wall: Option<f64>,
    tokens_per_s: Option<f64>,
    /// The run finished (family.sh's `done`).
    done: bool,
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        return Err("usage: family_charts RUNS [CHART_DIR] (RUNS: the folder of family.sh's runs)".into());
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let charts = args.get(1).map_or_else(|| root.join("docs"), PathBuf::from);
    let runs = read_runs(&dir)?;
    if runs.is_empty() {
        return Err(format!("{}: no run folders (ARM-SEED, ARM one of mamba, moe, hybrid, plain)", dir.display()));
    }
    let arms: Vec<(&str, &str, Vec<&Run>)> = ARMS
        .iter()
        .map(|&(arm, label)| (arm, label, runs.iter().filter(|r| r.arm == arm).collect::<Vec<_>>()))
        .filter(|(_, _, rs)| !rs.is_empty())
        .collect();
    let means: BTreeMap<&str, Vec<(f64, f64)>> = arms.iter().map(|(arm, _, rs)| (*arm, mean_curve(rs))).collect();
    let title = setting(&runs);

    let chart = |file: &str, which: &[&str], what: &str| -> Result<(), String> {
        let series: Vec<Series> = arms
            .iter()
            .filter(|(arm, ..)| which.contains(arm))
            .map(|(arm, label, _)| (*label, means[arm].clone()))
            .collect();
        if series.len() < 2 {
            println!("{file}: skipped (fewer than two of the arms {which:?})");
            return Ok(());
        }
        let range = zoom(&series);
        let axis = YAxis { label: "validation bits/byte", series, range };
        write(&charts.join(file), loss_curve_svg(&format!("{what}: {title}"), &axis, None))
    };
    chart("family_moe.svg", &["mamba", "moe", "plain"], "MoE-Mamba")?;
    chart("family_hybrid.svg", &["mamba", "hybrid"], "Hybrid")?;
    print_table(&runs, &arms, &means);
    Ok(())
}

/// The runs in `dir`: every folder ARM-SEED with a metrics.jsonl.
fn read_runs(dir: &Path) -> Result<Vec<Run>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut runs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(&(arm, _)) = ARMS.iter().find(|(arm, _)| name.strip_prefix(arm).is_some_and(|s| s.starts_with('-')))
        else {
            continue;
        };
        let path = entry.path();
        let Ok(metrics) = fs::read_to_string(path.join("metrics.jsonl")) else { continue };
        runs.push(read_run(&path, name, arm, &metrics)?);
    }
    runs.sort_by(|a, b| (arm_index(a.arm), &a.name).cmp(&(arm_index(b.arm), &b.name)));
    Ok(runs)
}

fn arm_index(arm: &str) -> usize {
    ARMS.iter().position(|(a, _)| *a == arm).unwrap_or(ARMS.len())
}

fn read_run(path: &Path, name: String, arm: &'static str, metrics: &str) -> Result<Run, String> {
    let (mut val, mut speeds, mut steps) = (Vec::new(), Vec::new(), 0);
    for (i, line) in metrics.lines().enumerate() {
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}/metrics.jsonl:{}: {e}", path.display(), i + 1))?;
        let step = row["step"].as_u64().unwrap_or(0);
        if let Some(v) = row["val_bpb"].as_f64() {
            val.push((step as f64, v));
        }
        if let Some(t) = row["tokens_per_s"].as_f64() {
            speeds.push(t);
            steps = steps.max(step);
        }
    }
    speeds.sort_by(f64::total_cmp);
    let log = fs::read_to_string(path.join("log.txt")).unwrap_or_default();
    // "mamba: N parameters (d_model .., .. layers), batch B x L, steps ..": the first header
    let header = log.lines().find(|l| l.starts_with("mamba: ") && l.contains(" parameters ("));
    let printed = header.and_then(|h| h.split_whitespace().nth(1)?.parse().ok());
    let tokens_per_step = header.and_then(|h| {
        let batch = h.split(", batch ").nth(1)?;
        let mut words = batch.split([' ', ',']).filter(|w| !w.is_empty());
        let (b, x, l) = (words.next()?.parse::<usize>().ok()?, words.next()?, words.next()?.parse::<usize>().ok()?);
        (x == "x").then_some(b * l)
    });
    // the model: the run's config.json (copied from its checkpoint), else the flags family.sh
    // logged on the first line ("NAME: BIN train FLAGS..", text of 256 byte values)
    let cfg = match fs::read_to_string(path.join("config.json")) {
        Ok(text) => Some(MambaConfig::from_json(&text).map_err(|e| format!("{}/config.json: {e}", path.display()))?),
        Err(_) => log.lines().next().and_then(|l| l.split_once(" train ")).and_then(|(_, flags)| {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            Some(TrainArgs::parse_flags(&flags).ok()?.model_config(256))
        }),
    };
    let (active, total, shape) = match cfg {
        Some(cfg) => {
            let (a, t) = counts(&cfg).map_err(|e| format!("{}: {e}", path.display()))?;
            (Some(a), Some(t), Some((cfg.d_model, cfg.n_layer)))
        }
        None => (None, None, None),
    };
    // time.txt: "S s" per call (GNU time; a stopped call adds a line about its status)
    let wall = fs::read_to_string(path.join("time.txt"))
        .ok()
        .map(|t| t.lines().filter_map(|l| l.strip_suffix(" s")?.trim().parse::<f64>().ok()).sum::<f64>());
    Ok(Run {
        name,
        arm,
        val,
        printed,
        active,
        total,
        shape,
        tokens_per_step,
        steps,
        wall,
        tokens_per_s: speeds.get(speeds.len() / 2).copied(),
        done: path.join("done").exists(),
    })
}

/// (active, total) parameters of `cfg`: all of them, less the experts a token does not go to
/// (num_experts - top_k of each MoE layer; the router counts as active).
fn counts(cfg: &MambaConfig) -> Result<(usize, usize), String> {
    let total = cfg.param_count().map_err(|e| e.to_string())?;
    if cfg.moe_layer_idx.is_empty() {
        return Ok((total, total));
    }
    let moe = MoeConfig::read(&cfg.moe_cfg, cfg.d_model).map_err(|e| e.to_string())?;
    let hidden = hidden_width(moe.d_expert).ok_or("d_expert overflows")?;
    let expert = 3 * hidden * cfg.d_model; // fc1 (2H, d_model), fc2 (d_model, H)
    Ok((total - cfg.moe_layer_idx.len() * (moe.num_experts - moe.top_k) * expert, total))
}

/// The mean over the runs of their validation curves, at the steps all of them evaluated.
fn mean_curve(runs: &[&Run]) -> Vec<(f64, f64)> {
    let Some(first) = runs.first() else { return Vec::new() };
    first
        .val
        .iter()
        .filter_map(|&(step, _)| {
            let vals: Vec<f64> = runs.iter().filter_map(|r| r.val.iter().find(|p| p.0 == step).map(|p| p.1)).collect();
            (vals.len() == runs.len()).then(|| (step, vals.iter().sum::<f64>() / vals.len() as f64))
        })
        .collect()
}

/// A y range that shows the end of training, where the arms differ by little: from just below
/// the lowest value to the highest one from a quarter of the steps on (earlier ones are clipped).
fn zoom(series: &[Series]) -> Option<(f64, f64)> {
    let last = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(0.0, f64::max);
    let late: Vec<f64> =
        series.iter().flat_map(|(_, p)| p.iter().filter(|q| q.0 >= 0.25 * last).map(|q| q.1)).collect();
    let lo = late.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = late.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo.is_finite() && hi > lo).then_some((lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
}

/// The shared setting of the titles, Mamba's: "d_model D x N, S steps x T bytes".
fn setting(runs: &[Run]) -> String {
    let base = runs.iter().find(|r| r.arm == "mamba").unwrap_or(&runs[0]);
    let shape = base.shape.map_or(String::new(), |(d, n)| format!("d_model {d} x {n}, "));
    let bytes = base.tokens_per_step.map_or(String::new(), |t| format!(" x {t} bytes"));
    format!("{shape}{} steps{bytes}", base.steps)
}

/// The step at which `curve` first comes down to `target`, interpolated linearly between the
/// evaluation before and the first one at or below it.
fn reaches(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    let i = curve.iter().position(|p| p.1 <= target)?;
    let (s, v) = curve[i];
    match i.checked_sub(1).map(|j| curve[j]) {
        Some((s0, v0)) if v0 > v => Some(s0 + (v0 - target) / (v0 - v) * (s - s0)),
        _ => Some(s),
    }
}

fn print_table(runs: &[Run], arms: &[(&str, &str, Vec<&Run>)], means: &BTreeMap<&str, Vec<(f64, f64)>>) {
    let count = |n: Option<usize>| n.map_or("?".into(), thousands);
    let bpb = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.4}"));
    let final_of = |c: &[(f64, f64)]| c.last().map(|p| p.1);
    let best_of = |c: &[(f64, f64)]| c.iter().map(|p| p.1).reduce(f64::min);
    let base_final = means.get("mamba").and_then(|c| c.last().copied());
    let saved = |curve: &[(f64, f64)], base: Option<(f64, f64)>| match base {
        Some((steps, target)) => match reaches(curve, target) {
            Some(s) => format!("{s:.0} ({:.2}x)", steps / s),
            None => "not reached".into(),
        },
        None => "-".into(),
    };

    println!("| run | active params | total params (printed) | bytes trained | final val bpb | best val bpb | wall s | tok/s (median) | step reaching Mamba's final (saved) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in runs {
        let trained = r.tokens_per_step.map_or("?".into(), |t| thousands(t * r.steps as usize));
        let printed = r.printed.map_or(String::new(), |p| format!(" ({})", thousands(p)));
        // the run against the Mamba run of its seed
        let seed = r.name.rsplit('-').next().unwrap_or("");
        let base = runs.iter().find(|b| b.arm == "mamba" && b.name.rsplit('-').next() == Some(seed));
        let base = base.and_then(|b| b.val.last().copied());
        println!(
            "| {}{} | {} | {}{printed} | {trained} | {} | {} | {} | {} | {} |",
            r.name,
            if r.done { "" } else { " (stopped)" },
            count(r.active),
            count(r.total),
            bpb(final_of(&r.val)),
            bpb(best_of(&r.val)),
            r.wall.map_or("?".into(), |w| format!("{w:.0}")),
            r.tokens_per_s.map_or("?".into(), |t| format!("{t:.0}")),
            if r.arm == "mamba" { "-".into() } else { saved(&r.val, base) },
        );
    }
    println!();
    println!("| arm (mean over seeds) | runs | active params | total params | final val bpb | best val bpb | step reaching Mamba's final (saved) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (arm, label, rs) in arms {
        let curve = &means[arm];
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            rs.len(),
            count(rs[0].active),
            count(rs[0].total),
            bpb(final_of(curve)),
            bpb(best_of(curve)),
            if *arm == "mamba" { "-".into() } else { saved(curve, base_final) },
        );
    }
}

/// 1234567 as "1,234,567".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

fn write(path: &Path, svg: String) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
