//! Per-kernel GPU timing with CUDA events: the profiler behind [`Gpu::timed`](super::Gpu::timed),
//! and the [`Profile`] it hands back (a table per kernel, a Chrome trace).
//!
//! With profiling off, a launch pays one relaxed atomic load. With it on, each launch gets a
//! start event recorded on the GPU's stream before it and a stop event after it (events come
//! from a pool: `cuEventCreate` per launch would cost more than many kernels). The pairs wait
//! in a pending list and are resolved in batches (the oldest half once `MAX_PENDING` wait, and
//! all at `profile_stop`): per-kernel aggregates grow without bound in count but not in memory,
//! and at most `MAX_SPANS` individual spans are kept for the trace.
//!
//! What a span measures: from the start event to the stop event on the one stream. When the
//! GPU is busy that is the kernel's time; when the host is the bottleneck (the GPU idles
//! between launches) it also holds the host's launch overhead (a few us), since the start
//! event fires as soon as it reaches the idle GPU. Every launch must go to `Gpu::stream`: the
//! batching relies on that stream's order (a stop event done means the earlier ones are too).

use super::Cost;
use cust::error::{CudaError, CudaResult};
use cust::event::{Event, EventFlags};
use cust::stream::Stream;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Launches whose events may wait unresolved; past this the oldest half is resolved (one
/// sync on an event that is most likely done already, since the GPU queue is shorter).
const MAX_PENDING: usize = 4096;
/// Individual spans kept for the trace; later launches are counted in `dropped_spans` (but
/// still in the per-kernel table). 200k spans are ~10 MB here and ~30 MB of JSON.
pub const MAX_SPANS: usize = 200_000;

/// Per-kernel totals over the profiled launches. Costs vary per launch (shapes), so the
/// bytes and FLOPs are summed over the calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelStats {
    pub kernel: &'static str,
    pub calls: u64,
    pub total_ms: f64,
    pub min_us: f64,
    pub max_us: f64,
    /// Sum over the calls of `Cost::bytes` / `Cost::flops`.
    pub bytes: f64,
    pub flops: f64,
}

/// One launch, for the trace: microseconds from the base event recorded by `profile_start`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub kernel: &'static str,
    pub start_us: f64,
    pub dur_us: f64,
    pub cost: Cost,
}

/// What `Gpu::profile_stop` returns: plain data, formatted by [`Profile::table`] and
/// [`Profile::chrome_trace`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// One entry per kernel name, most total time first.
    pub kernels: Vec<KernelStats>,
    /// Launches in stream order, at most `MAX_SPANS`.
    pub spans: Vec<Span>,
    /// Launches timed but left out of `spans` (the cap).
    pub dropped_spans: u64,
    /// GPU time from `profile_start` to `profile_stop`, in ms (the kernels' busy time is the
    /// sum of `total_ms`; the rest is idle GPU or untimed work such as copies).
    pub wall_ms: f64,
}

/// `x / ms / 1e6`: bytes per ms -> GB/s, FLOPs per ms -> GFLOP/s; "-" where there is nothing.
fn rate(x: f64, ms: f64) -> String {
    if x > 0.0 && ms > 0.0 {
        format!("{:.1}", x / ms / 1e6)
    } else {
        "-".into()
    }
}

/// A JSON number (JSON has no NaN or infinity: those become 0).
fn json_num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "0".into()
    }
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Profile {
    /// Sum of the kernels' times, ms.
    pub fn busy_ms(&self) -> f64 {
        self.kernels.iter().map(|k| k.total_ms).sum()
    }

    /// One line per kernel, most total time first: calls, total ms, mean/min/max us, GB/s and
    /// GFLOP/s from the launchers' napkin math (`Cost`), share of the kernels' total time;
    /// then a total line and the GPU's busy share of the profiled interval.
    pub fn table(&self) -> String {
        let mut kernels: Vec<&KernelStats> = self.kernels.iter().collect();
        kernels.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(a.kernel.cmp(b.kernel)));
        let busy = self.busy_ms();
        let w = kernels.iter().map(|k| k.kernel.len()).max().unwrap_or(0).max(6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<w$} {:>9} {:>11} {:>10} {:>10} {:>10} {:>8} {:>9} {:>6}",
            "kernel", "calls", "total ms", "mean us", "min us", "max us", "GB/s", "GFLOP/s", "% GPU"
        );
        let share = |ms: f64| if busy > 0.0 { 100.0 * ms / busy } else { 0.0 };
        for k in &kernels {
            let mean = if k.calls > 0 { 1e3 * k.total_ms / k.calls as f64 } else { 0.0 };
            let _ = writeln!(
                out,
                "{:<w$} {:>9} {:>11.3} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>9} {:>5.1}%",
                k.kernel,
                k.calls,
                k.total_ms,
                mean,
                k.min_us,
                k.max_us,
                rate(k.bytes, k.total_ms),
                rate(k.flops, k.total_ms),
                share(k.total_ms)
            );
        }
        let calls: u64 = kernels.iter().map(|k| k.calls).sum();
        let bytes: f64 = kernels.iter().map(|k| k.bytes).sum();
        let flops: f64 = kernels.iter().map(|k| k.flops).sum();
        let mean = if calls > 0 { 1e3 * busy / calls as f64 } else { 0.0 };
        let _ = writeln!(
            out,
            "{:<w$} {:>9} {:>11.3} {:>10.1} {:>10} {:>10} {:>8} {:>9} {:>5.1}%",
            "total",
            calls,
            busy,
            mean,
            "",
            "",
            rate(bytes, busy),
            rate(flops, busy),
            if busy > 0.0 { 100.0 } else { 0.0 }
        );
        let busy_share = if self.wall_ms > 0.0 { 100.0 * busy / self.wall_ms } else { 0.0 };
        let _ =
            write!(out, "kernels busy {busy:.3} ms of {:.3} ms profiled on the GPU ({busy_share:.1}%)", self.wall_ms);
        if self.dropped_spans > 0 {
            let _ = write!(out, "; {} launches left out of the trace (cap {MAX_SPANS})", self.dropped_spans);
        }
        out.push('\n');
        out
    }

    /// The spans as Chrome trace JSON (chrome://tracing, ui.perfetto.dev): one complete event
    /// per launch, timestamps in us from `profile_start`, on one track named "GPU stream".
    pub fn chrome_trace(&self) -> String {
        let mut out = String::with_capacity(200 * self.spans.len() + 300);
        out.push_str("{\"traceEvents\":[\n");
        out.push_str(r#"{"name":"process_name","ph":"M","pid":0,"tid":0,"args":{"name":"GPU"}},"#);
        out.push('\n');
        out.push_str(r#"{"name":"thread_name","ph":"M","pid":0,"tid":0,"args":{"name":"GPU stream"}}"#);
        for s in &self.spans {
            let _ = write!(
                out,
                ",\n{{\"name\":{},\"cat\":\"kernel\",\"ph\":\"X\",\"ts\":{},\"dur\":{},\"pid\":0,\"tid\":0,\
                 \"args\":{{\"bytes\":{},\"flops\":{}}}}}",
                json_str(s.kernel),
                json_num(s.start_us, 3),
                json_num(s.dur_us, 3),
                json_num(s.cost.bytes, 0),
                json_num(s.cost.flops, 0)
            );
        }
        out.push_str("\n],\"displayTimeUnit\":\"ns\"}\n");
        out
    }
}

/// One launch whose events are recorded but not yet read.
struct Pending {
    kernel: &'static str,
    cost: Cost,
    start: Event,
    stop: Event,
}

/// Everything behind the profiler's lock.
#[derive(Default)]
struct State {
    /// Idle events, reused across launches and profiling sessions.
    pool: Vec<Event>,
    pending: Vec<Pending>,
    /// An event whose time after the base event is known (ms): times are read against it, not
    /// the base, because `cuEventElapsedTime`'s f32 ms loses precision far from its origin. It
    /// is the base at first, then the last stop event of each resolved batch.
    anchor: Option<(Event, f64)>,
    kernels: HashMap<&'static str, KernelStats>,
    spans: Vec<Span>,
    dropped_spans: u64,
    /// The first CUDA error met while profiling (a guard's drop cannot return it).
    error: Option<CudaError>,
}

impl State {
    fn event(&mut self) -> CudaResult<Event> {
        match self.pool.pop() {
            Some(e) => Ok(e),
            None => Event::new(EventFlags::DEFAULT),
        }
    }

    /// Adds one timed launch to the aggregates and, under the cap, to the spans.
    fn add(&mut self, kernel: &'static str, cost: Cost, start_ms: f64, dur_ms: f64) {
        let us = 1e3 * dur_ms;
        let k = self.kernels.entry(kernel).or_insert(KernelStats {
            kernel,
            calls: 0,
            total_ms: 0.0,
            min_us: f64::INFINITY,
            max_us: 0.0,
            bytes: 0.0,
            flops: 0.0,
        });
        k.calls += 1;
        k.total_ms += dur_ms;
        k.min_us = k.min_us.min(us);
        k.max_us = k.max_us.max(us);
        k.bytes += cost.bytes;
        k.flops += cost.flops;
        if self.spans.len() < MAX_SPANS {
            self.spans.push(Span { kernel, start_us: 1e3 * start_ms, dur_us: us, cost });
        } else {
            self.dropped_spans += 1;
        }
    }

    /// Reads the times of the `count` oldest pending launches and moves the anchor to the
    /// last one's stop event.
    fn resolve(&mut self, count: usize) -> CudaResult<()> {
        let batch: Vec<Pending> = self.pending.drain(..count.min(self.pending.len())).collect();
        let Some(last) = batch.last() else { return Ok(()) };
        // One stream, in order: once the last stop event is done, so are all before it.
        last.stop.synchronize()?;
        let (anchor, anchor_ms) = self.anchor.take().ok_or(CudaError::NotInitialized)?;
        let new_anchor_ms = anchor_ms + last.stop.elapsed_time_f32(&anchor)? as f64;
        for p in &batch {
            let start_ms = anchor_ms + p.start.elapsed_time_f32(&anchor)? as f64;
            let dur_ms = p.stop.elapsed_time_f32(&p.start)? as f64;
            self.add(p.kernel, p.cost, start_ms, dur_ms);
        }
        self.pool.push(anchor);
        let mut batch = batch;
        let last = batch.pop().expect("batch is not empty");
        self.pool.push(last.start);
        self.anchor = Some((last.stop, new_anchor_ms));
        for p in batch {
            self.pool.extend([p.start, p.stop]);
        }
        Ok(())
    }

    /// Back to no session, keeping the pool.
    fn reset(&mut self) {
        for p in self.pending.drain(..) {
            self.pool.extend([p.start, p.stop]);
        }
        if let Some((anchor, _)) = self.anchor.take() {
            self.pool.push(anchor);
        }
        self.kernels.clear();
        self.spans = Vec::new();
        self.dropped_spans = 0;
        self.error = None;
    }

    /// Records an end event, waits for it, resolves every pending launch.
    fn finish(&mut self, stream: &Stream) -> CudaResult<Profile> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.anchor.is_none() {
            return Ok(Profile::default()); // never started
        }
        let end = self.event()?;
        end.record(stream)?;
        end.synchronize()?;
        self.resolve(self.pending.len())?;
        let (anchor, anchor_ms) = self.anchor.as_ref().expect("checked above");
        let wall_ms = anchor_ms + end.elapsed_time_f32(anchor)? as f64;
        self.pool.push(end);
        let mut kernels: Vec<KernelStats> = self.kernels.values().copied().collect();
        kernels.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(a.kernel.cmp(b.kernel)));
        Ok(Profile { kernels, spans: std::mem::take(&mut self.spans), dropped_spans: self.dropped_spans, wall_ms })
    }
}

/// The profiler a `Gpu` owns: an on/off flag read by every launch, the rest behind a lock.
#[derive(Default)]
pub(crate) struct Profiler {
    on: AtomicBool,
    state: Mutex<State>,
}

impl Profiler {
    /// The one check a launch pays when profiling is off.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent enough data for timing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the first error and stops timing (the session's result is lost anyway).
    fn fail(&self, st: &mut State, e: CudaError) {
        st.error.get_or_insert(e);
        self.on.store(false, Ordering::Relaxed);
    }

    /// A start event recorded on `stream`, or None after an error (kept for `stop`).
    #[cold]
    pub(crate) fn begin(&self, stream: &Stream) -> Option<Event> {
        let mut st = self.lock();
        let recorded = st.event().and_then(|e| e.record(stream).map(|()| e));
        recorded.map_err(|e| self.fail(&mut st, e)).ok()
    }

    /// Records the stop event of the launch that `begin` started.
    #[cold]
    pub(crate) fn end(&self, stream: &Stream, kernel: &'static str, cost: Cost, start: Event) {
        let mut st = self.lock();
        if !self.is_on() {
            st.pool.push(start); // stopped while this launch was in flight: not part of a session
            return;
        }
        let stop = match st.event().and_then(|e| e.record(stream).map(|()| e)) {
            Ok(stop) => stop,
            Err(e) => {
                st.pool.push(start);
                return self.fail(&mut st, e);
            }
        };
        st.pending.push(Pending { kernel, cost, start, stop });
        if st.pending.len() >= MAX_PENDING {
            if let Err(e) = st.resolve(MAX_PENDING / 2) {
                self.fail(&mut st, e);
            }
        }
    }

    /// Drops any earlier session, records the base event on `stream`, turns timing on.
    pub(crate) fn start(&self, stream: &Stream) -> CudaResult<()> {
        let mut st = self.lock();
        self.on.store(false, Ordering::Relaxed);
        st.reset();
        let base = st.event()?;
        base.record(stream)?;
        st.anchor = Some((base, 0.0));
        self.on.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Turns timing off, waits for the stream, returns the session's profile and clears it.
    pub(crate) fn stop(&self, stream: &Stream) -> CudaResult<Profile> {
        let mut st = self.lock();
        self.on.store(false, Ordering::Relaxed);
        let profile = st.finish(stream);
        st.reset();
        profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(kernel: &'static str, calls: u64, total_ms: f64, bytes: f64, flops: f64) -> KernelStats {
        KernelStats { kernel, calls, total_ms, min_us: 1.0, max_us: 2.0, bytes, flops }
    }

    #[test]
    fn table_sorts_by_total_time_and_adds_a_total() {
        let p = Profile {
            kernels: vec![stats("small", 10, 1.0, 3e6, 0.0), stats("matmul_f32", 4, 3.0, 3e6, 3e9)],
            spans: Vec::new(),
            dropped_spans: 5,
            wall_ms: 8.0,
        };
        let t = p.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        let cols = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            cols(0),
            ["kernel", "calls", "total", "ms", "mean", "us", "min", "us", "max", "us", "GB/s", "GFLOP/s", "%", "GPU"]
        );
        // matmul: 4 calls, 3 ms -> 750 us mean, 3e6 B / 3 ms = 1 GB/s, 3e9 FLOP / 3 ms = 1000 GFLOP/s, 75%
        assert_eq!(cols(1), ["matmul_f32", "4", "3.000", "750.0", "1.0", "2.0", "1.0", "1000.0", "75.0%"]);
        assert_eq!(cols(2), ["small", "10", "1.000", "100.0", "1.0", "2.0", "3.0", "-", "25.0%"]);
        // 14 calls, 4 ms -> 285.7 us mean; 6e6 B / 4 ms = 1.5 GB/s; 3e9 / 4 ms = 750 GFLOP/s
        assert_eq!(cols(3), ["total", "14", "4.000", "285.7", "1.5", "750.0", "100.0%"]);
        assert!(lines[4].contains("busy 4.000 ms of 8.000 ms") && lines[4].contains("(50.0%)"), "{t}");
        assert!(lines[4].contains("5 launches left out"), "{t}");
    }

    #[test]
    fn empty_profile_formats() {
        let p = Profile::default();
        assert!(p.table().contains("total"));
        assert_eq!(
            p.chrome_trace(),
            "{\"traceEvents\":[\n\
             {\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"GPU\"}},\n\
             {\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"GPU stream\"}}\n\
             ],\"displayTimeUnit\":\"ns\"}\n"
        );
    }

    #[test]
    fn trace_has_one_complete_event_per_span() {
        let span =
            |kernel, start_us, dur_us, bytes, flops| Span { kernel, start_us, dur_us, cost: Cost { bytes, flops } };
        let p = Profile {
            kernels: Vec::new(),
            spans: vec![span("unary_f32", 1.5, 63.25, 134217728.0, 0.0), span("we\"ird\\\n", 70.0, f64::NAN, 1.0, 2.0)],
            dropped_spans: 0,
            wall_ms: 0.1,
        };
        let t = p.chrome_trace();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert_eq!(
            lines[3],
            r#"{"name":"unary_f32","cat":"kernel","ph":"X","ts":1.500,"dur":63.250,"pid":0,"tid":0,"args":{"bytes":134217728,"flops":0}},"#
        );
        assert_eq!(
            lines[4],
            r#"{"name":"we\"ird\\\n","cat":"kernel","ph":"X","ts":70.000,"dur":0,"pid":0,"tid":0,"args":{"bytes":1,"flops":2}}"#
        );
        assert_eq!(lines[5], r#"],"displayTimeUnit":"ns"}"#);
    }

    #[test]
    fn gpu_stays_send_and_sync() {
        // The engine keeps one Gpu in a static; the profiler must not take that away.
        fn check<T: Send + Sync>() {}
        check::<super::super::Gpu>();
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json_str("a\"b\\c\u{1}d\té"), r#""a\"b\\c\u0001d\té""#);
    }

    #[test]
    fn aggregates_keep_min_max_and_cap_the_spans() {
        let mut st = State::default();
        let cost = Cost { bytes: 10.0, flops: 1.0 };
        for i in 0..MAX_SPANS + 3 {
            st.add(if i % 2 == 0 { "a" } else { "b" }, cost, i as f64 * 0.01, 0.001 * (1 + i % 5) as f64);
        }
        assert_eq!(st.spans.len(), MAX_SPANS);
        assert_eq!(st.dropped_spans, 3);
        let a = st.kernels["a"];
        assert_eq!(a.calls as usize + st.kernels["b"].calls as usize, MAX_SPANS + 3);
        assert_eq!((a.min_us, a.max_us), (1.0, 5.0));
        assert_eq!(a.bytes, 10.0 * a.calls as f64);
        assert_eq!(st.spans[1].kernel, "b");
        assert!((st.spans[1].start_us - 10.0).abs() < 1e-9 && (st.spans[1].dur_us - 2.0).abs() < 1e-9);
    }
}
