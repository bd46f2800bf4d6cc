//! The memory ledger: how many bytes each device holds now and at its peak, and
//! how many bytes each op keeps alive for backward.
//!
//! Two views of "saved for backward":
//! - process-wide counters per op name (`saved_by_op`), cheap and always on, for printing;
//! - [`saved_in_graph`], which walks one loss's graph and sums what its nodes keep,
//!   counting each buffer once. It is exact and unaffected by other threads, so tests use it.

use crate::Device;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const DEVICES: usize = Device::ALL.len();
static CURRENT: [AtomicUsize; DEVICES] = [const { AtomicUsize::new(0) }; DEVICES];
static PEAK: [AtomicUsize; DEVICES] = [const { AtomicUsize::new(0) }; DEVICES];
static SAVED: Mutex<BTreeMap<&'static str, OpSaved>> = Mutex::new(BTreeMap::new());

/// Bytes allocated on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub current: usize,
    pub peak: usize,
}

/// What one op name has saved for backward since the process started (or `reset_saved`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpSaved {
    pub calls: usize,
    pub bytes: usize,
}

pub(crate) fn on_alloc(device: Device, bytes: usize) {
    let now = CURRENT[device.index()].fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK[device.index()].fetch_max(now, Ordering::Relaxed);
}

pub(crate) fn on_free(device: Device, bytes: usize) {
    CURRENT[device.index()].fetch_sub(bytes, Ordering::Relaxed);
}

pub(crate) fn on_saved(op: &'static str, bytes: usize) {
    let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = saved.entry(op).or_default();
    entry.calls += 1;
    entry.bytes += bytes;
}

pub fn memory(device: Device) -> DeviceMemory {
    DeviceMemory {
        current: CURRENT[device.index()].load(Ordering::Relaxed),
        peak: PEAK[device.index()].load(Ordering::Relaxed),
    }
}

/// Start a new peak measurement from what is allocated now.
pub fn reset_peak(device: Device) {
    PEAK[device.index()].store(CURRENT[device.index()].load(Ordering::Relaxed), Ordering::Relaxed);
}

pub fn saved_by_op() -> BTreeMap<&'static str, OpSaved> {
    SAVED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn reset_saved() {
    SAVED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

pub use crate::autograd::saved_in_graph;

/// A printable summary of every device and every op's saved bytes.
pub fn report() -> String {
    let mut s = String::from("memory ledger\n");
    for d in Device::ALL {
        let m = memory(d);
        s += &format!("  {d}: current {} peak {}\n", human(m.current), human(m.peak));
    }
    s += "  saved for backward (op: calls, bytes)\n";
    for (op, v) in saved_by_op() {
        s += &format!("    {op:<16} {:>8} {:>12}\n", v.calls, human(v.bytes));
    }
    s
}

/// Bytes as B / KiB / MiB / GiB.
pub fn human(bytes: usize) -> String {
    let b = bytes as f64;
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1048575 => format!("{:.1} KiB", b / 1024.0),
        1048576..=1073741823 => format!("{:.1} MiB", b / 1048576.0),
        _ => format!("{:.2} GiB", b / 1073741824.0),
    }
}
