//! The two charts of docs/PAPER.md, drawn by the training's own chart code from the runs
//! recorded in docs/results/paper-h200.txt:
//!
//! - docs/paper_table1.svg: selective copying, validation accuracy per step of the six
//!   arch x SSM rows (the complete setting: LR 1e-3, seed 2);
//! - docs/paper_induction.svg: induction heads trained at length 256, accuracy at lengths
//!   2^6 .. 2^20, next to the paper's Mamba (1.0 at every length).
//!
//! ```text
//! cargo run -p mamba-train --example paper_charts
//! ```

use mamba_train::chart::{line_chart_svg, loss_curve_svg, Series, YAxis};
use std::{fs, path::Path};

const RESULTS: &str = "docs/results/paper-h200.txt";
/// The Table 1 runs drawn, and the steps between their evaluations.
const TABLE1_SUFFIX: &str = "-2-lr1e-3";
const EVERY: f64 = 500.0;

fn main() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = fs::read_to_string(root.join(RESULTS)).map_err(|e| format!("{RESULTS}: {e}"))?;
    let rows = table1(&text);
    let runs = extrapolation(&text);
    if rows.len() != 6 || runs.is_empty() {
        return Err(format!("{RESULTS}: expected 6 Table 1 runs and the extrapolation lines"));
    }
    let series: Vec<Series> = rows.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    let axis = YAxis { label: "validation accuracy", series, range: Some((0.0, 1.0)) };
    let title = "Selective copying (L 256, 16 tokens, d_model 64 x 2, LR 1e-3, seed 2)";
    write(&root.join("docs/paper_table1.svg"), loss_curve_svg(title, &axis, None))?;

    let paper: Vec<(f64, f64)> = (6..=20).step_by(2).map(|k| (k as f64, 1.0)).collect();
    let mut series: Vec<Series> = vec![("paper: Mamba", paper)];
    series.extend(runs.iter().map(|(n, p)| (n.as_str(), p.clone())));
    let axis = YAxis { label: "accuracy", series, range: Some((0.0, 1.0)) };
    let title = "Induction heads: trained at 2^8, evaluated at 2^6 .. 2^20";
    write(&root.join("docs/paper_induction.svg"), line_chart_svg(title, "log2(sequence length)", &axis, None))
}

/// `table1-ARCH-SSM-2-lr1e-3  a1 a2 ... | ..`: (ARCH SSM, [(step, accuracy)]).
fn table1(text: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(row) = words.next().and_then(|w| w.strip_prefix("table1-")?.strip_suffix(TABLE1_SUFFIX)) else {
            continue;
        };
        let accuracies = words.take_while(|w| *w != "|").filter_map(|w| w.parse::<f64>().ok());
        let points = accuracies.enumerate().map(|(i, a)| ((i + 1) as f64 * EVERY, a)).collect();
        let name = row.replace("no-gate", "no gate").replace("h3", "H3").replace("mamba", "Mamba");
        rows.push((name.replace("-s", " S"), points));
    }
    rows
}

/// `induction-S 2^K | accuracy A on ...`: per run, [(K, A)].
fn extrapolation(text: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut runs: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, power, "|", "accuracy", acc, ..] = words[..] else { continue };
        let (Some(k), Ok(acc)) = (power.strip_prefix("2^").and_then(|k| k.parse::<f64>().ok()), acc.parse::<f64>())
        else {
            continue;
        };
        let label = format!("ours: seed {}", name.trim_start_matches("induction-"));
        match runs.iter_mut().find(|(n, _)| *n == label) {
            Some((_, points)) => points.push((k, acc)),
            None => runs.push((label, vec![(k, acc)])),
        }
    }
    runs
}

fn write(path: &Path, svg: String) -> Result<(), String> {
    fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
