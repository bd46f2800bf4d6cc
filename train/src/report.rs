//! Progress artefacts of a training run: a JSON-lines metrics log, an SVG loss curve
//! and atomic file writes (so a crash never leaves a half-written checkpoint or chart).

use crate::{Error, Result};
use serde_json::Value;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Appends one JSON object per line to `path` (creating it); each call flushes.
///
/// Each record goes to the file in a single unbuffered write, so a crash loses at most
/// the record being written and `tail -f` shows progress live.
pub struct MetricsLog {
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending (an existing log is continued, not truncated).
    pub fn open(path: &Path) -> io::Result<MetricsLog> {
        Ok(MetricsLog { file: OpenOptions::new().create(true).append(true).open(path)? })
    }

    /// Appends `record` (which must be a JSON object) as one line.
    pub fn write(&mut self, record: &Value) -> io::Result<()> {
        if !record.is_object() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "MetricsLog::write: a record must be a JSON object",
            ));
        }
        // Compact serialisation never contains a newline, so one record is one line.
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}

/// Read back the records of a metrics file (skipping blank lines; a malformed line is
/// an error naming the file and line number, as `path:line: reason`).
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let text = fs::read_to_string(path).map_err(Error::io(path.display()))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(Error::json(format!("{}:{}", path.display(), i + 1)))?;
        records.push(record);
    }
    Ok(records)
}

/// Write `contents` to `path` atomically: write a temp file in the same directory, fsync,
/// rename. Readers see either the old file or the new one, never a partial write; the
/// rename is atomic only within one file system, hence the same directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    // Distinguishes temp files of concurrent writers in this process (the pid covers others).
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        let msg = format!("write_atomic: {} does not name a file", path.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?; // the data is on disk before the name points at it
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp); // best effort: do not leave the temp file behind
    }
    result?;
    // Persist the rename itself (the directory entry). Best effort: not every platform
    // lets a directory be opened and synced, and the new file is already in place.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ------------------------------------------------------------------ SVG chart

/// Canvas size and the plot rectangle inside it, in SVG user units (pixels).
const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 620.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 350.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A self-contained SVG line chart: x = step, one polyline per series (e.g. "train loss"
/// and "val bits/byte"), with axes, tick labels, a legend and a title; handles empty
/// series, a single point, NaN/inf values (skipped) gracefully.
///
/// Both axes are linear and shared by all series; each runs between "nice" tick values
/// (steps of 1, 2 or 5 times a power of ten) that enclose every plotted point. Values
/// beyond ±1e300 count as infinite (so the range arithmetic cannot overflow).
pub fn loss_curve_svg(title: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && x.abs() < 1e300 && y.abs() < 1e300;
    let points: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, p)| p.iter().copied().filter(usable).collect()).collect();
    let all = points.iter().flatten();
    let xs = Axis::enclosing(all.clone().map(|p| p.0));
    let ys = Axis::enclosing(all.map(|p| p.1));
    let px = |x: f64| LEFT + (x - xs.lo) / (xs.hi - xs.lo) * (RIGHT - LEFT);
    let py = |y: f64| BOTTOM - (y - ys.lo) / (ys.hi - ys.lo) * (BOTTOM - TOP); // SVG y grows downwards

    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s +=
        &format!("<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n", W / 2.0, escape(title));

    // Grid lines and tick labels, then the two axes on top.
    s += "<g stroke=\"#e0e0e0\">\n";
    for &t in &xs.ticks {
        s += &format!("<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{BOTTOM}\"/>\n", px(t));
    }
    for &t in &ys.ticks {
        s += &format!("<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{RIGHT}\" y2=\"{0:.1}\"/>\n", py(t));
    }
    s += "</g>\n<g fill=\"#333\">\n";
    for &t in &xs.ticks {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(t),
            BOTTOM + 16.0,
            xs.label(t)
        );
    }
    for &t in &ys.ticks {
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 6.0,
            py(t) + 4.0,
            ys.label(t)
        );
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n</g>\n", (LEFT + RIGHT) / 2.0, H - 12.0);
    // The axes as a path, so that every <polyline> in the chart is a data series.
    s += &format!("<path fill=\"none\" stroke=\"black\" d=\"M{LEFT},{TOP} L{LEFT},{BOTTOM} L{RIGHT},{BOTTOM}\"/>\n");

    // One polyline per series with data; a lone point also gets a dot so it is visible.
    for (i, pts) in points.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
        let color = COLORS[i % COLORS.len()];
        let coords: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            coords.join(" ")
        );
        if let [(x, y)] = pts[..] {
            s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n", px(x), py(y));
        }
    }

    // Legend in the top-right corner of the plot (where falling loss curves are not),
    // on a white box over the grid; about 7 units per character of the longest name.
    if !series.is_empty() {
        let chars = series.iter().map(|(name, _)| name.chars().count() + 10).max().unwrap_or(0);
        let width = 44.0 + 7.0 * chars as f64;
        let (lx, ly) = (RIGHT - 10.0 - width, TOP + 10.0);
        let height = 8.0 + 18.0 * series.len() as f64;
        s += &format!(
            "<g>\n<rect x=\"{lx}\" y=\"{ly}\" width=\"{width}\" height=\"{height}\" fill=\"white\" stroke=\"#ccc\"/>\n"
        );
        for (i, (name, _)) in series.iter().enumerate() {
            let y = ly + 16.0 + 18.0 * i as f64;
            let note = if points[i].is_empty() { " (no data)" } else { "" };
            let color = COLORS[i % COLORS.len()];
            s += &format!(
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"/>\
                 <text x=\"{}\" y=\"{}\">{}{note}</text>\n",
                lx + 8.0,
                lx + 28.0,
                lx + 34.0,
                y + 4.0,
                escape(name)
            );
        }
        s += "</g>\n";
    }
    s += "</svg>";
    s
}

/// One linear axis: its range and tick values.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Distance between ticks; decides how many decimals a label needs.
    step: f64,
}

impl Axis {
    /// The smallest nice range containing `values` (0..1 when there are none; a single
    /// value is widened by 10% of itself, or by 1 around zero, so the range is not empty).
    fn enclosing(values: impl Iterator<Item = f64>) -> Axis {
        let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo <= 0.0 {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        if hi - lo <= 0.0 {
            (lo, hi) = (lo - 1.0, hi + 1.0); // pad underflowed: the value is nearly zero
        }
        // About 5 ticks at a step of 1, 2 or 5 times a power of ten.
        let raw = (hi - lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = mag * [1.0, 2.0, 5.0].into_iter().find(|&m| raw / mag <= m * 1.5).unwrap_or(10.0);
        if !(step > 0.0 && step.is_finite()) {
            // Spans near the limits of f64: keep the raw range, ticks at its ends only.
            return Axis { lo, hi, ticks: vec![lo, hi], step: hi - lo };
        }
        let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let n = ((hi - lo) / step).round() as usize;
        let ticks = (0..=n.min(20)).map(|i| lo + i as f64 * step).collect();
        Axis { lo, hi, ticks, step }
    }

    /// A tick value with just enough decimals for the step (and no "-0").
    fn label(&self, v: f64) -> String {
        let v = if v.abs() < self.step * 1e-9 { 0.0 } else { v };
        if self.step >= 1e6 || self.step < 1e-4 {
            return format!("{v:.2e}"); // keeps very large or small labels short
        }
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Escape the characters that are special in SVG text and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    /// A fresh directory per test (tests run in parallel).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mamba-train-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn metrics_round_trip_and_append() {
        let dir = scratch("metrics");
        let path = dir.join("metrics.jsonl");
        let records = [json!({"step": 1, "loss": 2.5}), json!({"step": 2, "loss": 2.25, "note": "a\nb"})];
        let mut log = MetricsLog::open(&path).unwrap();
        for r in &records {
            log.write(r).unwrap();
        }
        assert!(log.write(&json!([1, 2])).is_err(), "only objects are records");
        drop(log);
        // Reopening continues the file; blank lines are skipped on reading.
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\n  \n").unwrap();
        MetricsLog::open(&path).unwrap().write(&json!({"step": 3})).unwrap();
        let back = read_metrics(&path).unwrap();
        assert_eq!(back, vec![records[0].clone(), records[1].clone(), json!({"step": 3})]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_metrics_name_file_and_line() {
        let dir = scratch("malformed");
        let path = dir.join("m.jsonl");
        fs::write(&path, "{\"step\": 1}\n\n{\"step\": 2,\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("m.jsonl:3:"), "{err}");
        let err = read_metrics(&dir.join("missing.jsonl")).unwrap_err().to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn svg_has_one_polyline_per_nonempty_series() {
        let train: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 10.0, 5.0 / (1.0 + i as f64))).collect();
        let val = vec![(0.0, 4.0), (250.0, f64::NAN), (490.0, 1.5), (500.0, f64::INFINITY)];
        let svg =
            loss_curve_svg("loss <&> \"run\"", &[("train loss", train), ("val bits/byte", val), ("empty", vec![])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("train loss") && svg.contains("val bits/byte") && svg.contains("empty (no data)"));
        assert!(svg.contains("loss &lt;&amp;&gt; &quot;run&quot;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
        // The x axis covers 0..=500 with nice ticks.
        assert!(svg.contains(">0</text>") && svg.contains(">500</text>"));
    }

    #[test]
    fn svg_degenerate_inputs() {
        let none = loss_curve_svg("nothing", &[]);
        assert!(none.starts_with("<svg") && none.ends_with("</svg>"));
        assert_eq!(none.matches("<polyline").count(), 0);
        let bad = loss_curve_svg("all bad", &[("x", vec![(f64::NAN, 1.0), (1.0, f64::NEG_INFINITY)])]);
        assert_eq!(bad.matches("<polyline").count(), 0);
        assert!(!bad.contains("NaN") && bad.contains("x (no data)"));
        for y in [0.0, 3.0, -2e-310, 1e299] {
            let one = loss_curve_svg("one point", &[("loss", vec![(7.0, y)])]);
            assert_eq!(one.matches("<polyline").count(), 1);
            assert_eq!(one.matches("<circle").count(), 1);
            assert!(!one.contains("NaN") && !one.contains("inf"), "{one}");
        }
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = scratch("atomic");
        let path = dir.join("model.safetensors");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("model.safetensors")]);
        // No file name, or a directory that does not exist: errors, not panics.
        assert!(write_atomic(Path::new("/"), b"x").is_err());
        assert!(write_atomic(&dir.join("no/such/dir/f"), b"x").is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
