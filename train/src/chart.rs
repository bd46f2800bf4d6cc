//! The loss curve of a training run as a self-contained SVG line chart: x = step, a left
//! y axis for losses and an optional right one (e.g. task accuracy, 0 to 1), each with its
//! label, ticks, and a legend. No plotting library: a chart is a few dozen SVG elements.

/// Canvas size and the plot rectangle's top, bottom and left edges, in SVG user units
/// (pixels); the right edge leaves room for a right axis when there is one.
const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 350.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A series: its legend name and its (step, value) points.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// One y axis: its label and the series drawn against it.
pub struct YAxis<'a> {
    pub label: &'a str,
    pub series: Vec<Series<'a>>,
    /// A fixed range (e.g. 0 to 1 for an accuracy), or `None` to fit the data.
    pub range: Option<(f64, f64)>,
}

/// The chart: `title` on top, `left` (and `right`, if any) against a shared step axis.
/// [`line_chart_svg`] with the x axis labelled "step".
pub fn loss_curve_svg(title: &str, left: &YAxis, right: Option<&YAxis>) -> String {
    line_chart_svg(title, "step", left, right)
}

/// A line chart: `title` on top, `left` (and `right`, if any) against a shared x axis
/// labelled `x_label`.
///
/// A fitted y range covers every value from the first tenth of the steps on, so that the
/// first steps' loss (about 8 bits per byte) does not flatten the rest of the curve: earlier,
/// higher values run off the top of the plot (clipped). Ticks are "nice" values (1, 2 or 5
/// times a power of ten); NaN and infinite values (beyond ±1e300) are skipped; empty series
/// are listed in the legend as "(no data)".
pub fn line_chart_svg(title: &str, x_label: &str, left: &YAxis, right: Option<&YAxis>) -> String {
    let right_edge = if right.is_some() { W - 70.0 } else { W - 20.0 };
    let axes: Vec<&YAxis> = std::iter::once(left).chain(right).collect();
    let points: Vec<Vec<Vec<(f64, f64)>>> =
        axes.iter().map(|a| a.series.iter().map(|(_, p)| usable(p)).collect()).collect();
    let xs = Axis::enclosing(points.iter().flatten().flatten().map(|p| p.0));
    let frame = Frame { xs, right: right_edge, x_label };

    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <clipPath id=\"plot\"><rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\"/></clipPath>\n",
        right_edge - LEFT,
        BOTTOM - TOP
    );
    s +=
        &format!("<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n", W / 2.0, escape(title));
    s += &frame.step_axis();
    let mut legend = Vec::new();
    for (side, (axis, pts)) in axes.iter().zip(&points).enumerate() {
        let ys = match axis.range {
            Some((lo, hi)) => Axis::enclosing([lo, hi].into_iter()),
            None => Axis::enclosing(fitted(pts)),
        };
        s += &frame.y_axis(&ys, axis.label, side == 1);
        for ((name, _), p) in axis.series.iter().zip(pts) {
            let color = COLORS[legend.len() % COLORS.len()];
            s += &frame.polyline(&ys, p, color);
            legend.push((*name, color, p.is_empty()));
        }
    }
    s += &frame.legend(&legend);
    s += &format!(
        "<path fill=\"none\" stroke=\"black\" d=\"M{LEFT},{TOP} L{LEFT},{BOTTOM} L{right_edge},{BOTTOM}\"/>\n"
    );
    s += "</svg>";
    s
}

/// The drawable points of a series: finite, and within ±1e300 so range arithmetic cannot overflow.
fn usable(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|&(x, y)| x.is_finite() && y.is_finite() && x.abs() < 1e300 && y.abs() < 1e300)
        .collect()
}

/// The values a fitted y axis must show: those from the first tenth of the steps on (all of
/// them if that leaves none).
fn fitted(series: &[Vec<(f64, f64)>]) -> impl Iterator<Item = f64> {
    let all: Vec<(f64, f64)> = series.iter().flatten().copied().collect();
    let (first, last) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let from = first + 0.1 * (last - first);
    let late: Vec<f64> = all.iter().filter(|p| p.0 >= from).map(|p| p.1).collect();
    if late.is_empty() { all.into_iter().map(|p| p.1).collect::<Vec<_>>() } else { late }.into_iter()
}

/// The plot rectangle and the step axis shared by every series.
struct Frame<'a> {
    xs: Axis,
    right: f64,
    x_label: &'a str,
}

impl Frame<'_> {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.xs.lo) / (self.xs.hi - self.xs.lo) * (self.right - LEFT)
    }

    /// Vertical grid lines, tick labels and the "step" label.
    fn step_axis(&self) -> String {
        let mut s = String::from("<g stroke=\"#e0e0e0\">\n");
        for &t in &self.xs.ticks {
            s += &format!("<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{BOTTOM}\"/>\n", self.px(t));
        }
        s += "</g>\n<g fill=\"#333\">\n";
        for &t in &self.xs.ticks {
            let (x, label) = (self.px(t), self.xs.label(t));
            s += &format!("<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n", BOTTOM + 16.0);
        }
        let middle = (LEFT + self.right) / 2.0;
        let label = escape(self.x_label);
        s + &format!("<text x=\"{middle}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n</g>\n", H - 12.0)
    }

    /// A y axis: grid lines (left axis only), tick labels and the rotated axis label.
    fn y_axis(&self, ys: &Axis, label: &str, on_right: bool) -> String {
        let py = |y: f64| BOTTOM - (y - ys.lo) / (ys.hi - ys.lo) * (BOTTOM - TOP);
        let mut s = String::new();
        if !on_right {
            s += "<g stroke=\"#e0e0e0\">\n";
            for &t in &ys.ticks {
                s += &format!("<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\"/>\n", py(t), self.right);
            }
            s += "</g>\n";
        }
        let (x, anchor, label_x) =
            if on_right { (self.right + 6.0, "start", self.right + 56.0) } else { (LEFT - 6.0, "end", 18.0) };
        s += "<g fill=\"#333\">\n";
        for &t in &ys.ticks {
            s += &format!("<text x=\"{x}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>\n", py(t) + 4.0, ys.label(t));
        }
        if on_right {
            s += &format!("<path fill=\"none\" stroke=\"black\" d=\"M{0},{TOP} L{0},{BOTTOM}\"/>\n", self.right);
        }
        let y = (TOP + BOTTOM) / 2.0;
        s + &format!(
            "<text x=\"{label_x}\" y=\"{y}\" text-anchor=\"middle\" transform=\"rotate(-90 {label_x} {y})\">{}</text>\n</g>\n",
            escape(label)
        )
    }

    /// A series as a polyline clipped to the plot; a lone point also gets a dot.
    fn polyline(&self, ys: &Axis, points: &[(f64, f64)], color: &str) -> String {
        let py = |y: f64| BOTTOM - (y - ys.lo) / (ys.hi - ys.lo) * (BOTTOM - TOP);
        if points.is_empty() {
            return String::new();
        }
        let coords: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), py(y))).collect();
        let mut s = format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" clip-path=\"url(#plot)\" points=\"{}\"/>\n",
            coords.join(" ")
        );
        if let [(x, y)] = points[..] {
            s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n", self.px(x), py(y));
        }
        s
    }

    /// The legend in the top-right corner of the plot (where falling loss curves are not), on a
    /// white box over the grid; about 7 units per character of the longest name.
    fn legend(&self, entries: &[(&str, &str, bool)]) -> String {
        if entries.is_empty() {
            return String::new();
        }
        let chars = entries.iter().map(|(name, ..)| name.chars().count() + 10).max().unwrap_or(0);
        let width = 44.0 + 7.0 * chars as f64;
        let (lx, ly) = (self.right - 10.0 - width, TOP + 10.0);
        let height = 8.0 + 18.0 * entries.len() as f64;
        let mut s = format!(
            "<g>\n<rect x=\"{lx}\" y=\"{ly}\" width=\"{width}\" height=\"{height}\" fill=\"white\" stroke=\"#ccc\"/>\n"
        );
        for (i, (name, color, empty)) in entries.iter().enumerate() {
            let y = ly + 16.0 + 18.0 * i as f64;
            let note = if *empty { " (no data)" } else { "" };
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
        s + "</g>\n"
    }
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

    /// A chart of `series` on one fitted axis.
    fn chart(title: &str, series: Vec<Series>) -> String {
        loss_curve_svg(title, &YAxis { label: "bits per byte", series, range: None }, None)
    }

    #[test]
    fn svg_has_one_polyline_per_nonempty_series() {
        let train: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 10.0, 5.0 / (1.0 + i as f64))).collect();
        let val = vec![(0.0, 4.0), (250.0, f64::NAN), (490.0, 1.5), (500.0, f64::INFINITY)];
        let svg = chart("loss <&> \"run\"", vec![("train loss", train), ("val bits/byte", val), ("empty", vec![])]);
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
        let none = chart("nothing", vec![]);
        assert!(none.starts_with("<svg") && none.ends_with("</svg>"));
        assert_eq!(none.matches("<polyline").count(), 0);
        let bad = chart("all bad", vec![("x", vec![(f64::NAN, 1.0), (1.0, f64::NEG_INFINITY)])]);
        assert_eq!(bad.matches("<polyline").count(), 0);
        assert!(!bad.contains("NaN") && bad.contains("x (no data)"));
        for y in [0.0, 3.0, -2e-310, 1e299] {
            let one = chart("one point", vec![("loss", vec![(7.0, y)])]);
            assert_eq!(one.matches("<polyline").count(), 1);
            assert_eq!(one.matches("<circle").count(), 1);
            assert!(!one.contains("NaN") && !one.contains("inf"), "{one}");
        }
    }

    #[test]
    fn axes_are_labelled_and_the_first_steps_do_not_set_the_range() {
        // 8 bits per byte at step 0, then 1.5 to 2.5: the axis fits the later values.
        let train: Vec<(f64, f64)> =
            (0..100).map(|i| (i as f64 * 10.0, if i < 3 { 8.0 } else { 2.5 - i as f64 / 100.0 })).collect();
        let svg = chart("mamba train: default", vec![("train", train)]);
        assert!(svg.contains(">bits per byte</text>") && svg.contains("rotate(-90"), "{svg}");
        assert!(svg.contains(">2.4</text>") && !svg.contains(">8.0</text>"), "the y ticks should fit 1.5..2.5: {svg}");
        assert!(svg.contains("clip-path=\"url(#plot)\""));
        // A right axis with a fixed range has its own label and ticks.
        let left =
            YAxis { label: "train loss (nats)", series: vec![("loss", vec![(0.0, 3.0), (10.0, 1.0)])], range: None };
        let right = YAxis { label: "val accuracy", series: vec![("acc", vec![(10.0, 0.4)])], range: Some((0.0, 1.0)) };
        let svg = loss_curve_svg("task", &left, Some(&right));
        assert!(svg.contains(">val accuracy</text>") && svg.contains(">train loss (nats)</text>"));
        assert!(
            svg.contains("text-anchor=\"start\">1.0</text>") && svg.contains("text-anchor=\"start\">0.0</text>"),
            "{svg}"
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
