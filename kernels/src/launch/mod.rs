//! Typed launchers: one file per kernel file (`cu/<name>.cu` -> `launch/<name>.rs`), each an
//! `impl Gpu` block with one Rust function per kernel, checking sizes before launching.
//!
//! Every launch is bracketed by [`Gpu::timed`]: with profiling on (see `profile.rs`) that
//! records a CUDA event before and after the kernel, and the profile table turns the
//! launcher's napkin math ([`Cost`]: bytes moved, FLOPs) into GB/s and GFLOP/s.

mod adamw;
mod conv;
mod copy;
mod elementwise;
mod index;
mod matmul;
mod norm;
mod profile;
mod reduce;
mod scan;
mod softmax;

use crate::ptx;
pub use conv::CONV_MAX_K;
pub use copy::{Strided, MAX_RANK};
use cust::error::CudaResult;
use cust::prelude::*;
pub use matmul::{MatStrides, MATMUL_VERSION, MATMUL_VERSIONS};
pub use norm::MAX_D_BACKWARD as RMS_NORM_MAX_D;
use profile::Profiler;
pub use profile::{KernelStats, Profile, Span, MAX_SPANS};
pub use scan::{SCAN_BWD_MAX_CHUNK, SCAN_BWD_VERSION, SCAN_FWD_VERSION, SCAN_MAX_STATE};
use std::collections::HashMap;

/// Threads per block for the 1-D elementwise kernels.
pub(crate) const BLOCK: u32 = 256;

/// The napkin math of one launch: bytes it must move to and from global memory (each byte
/// once: re-reads that hit L1/L2 are not counted, so GB/s compares with the copy rate), and
/// FLOPs (an exp, rsqrt or division counts as one).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub bytes: f64,
    pub flops: f64,
}

impl Cost {
    /// A memory-bound kernel over `elems` f32 values read or written in total.
    pub fn f32s(elems: usize) -> Cost {
        Cost { bytes: 4.0 * elems as f64, flops: 0.0 }
    }
    pub fn with_flops(self, flops: f64) -> Cost {
        Cost { flops, ..self }
    }
}

/// A CUDA context on device 0 with every kernel module loaded and one stream.
pub struct Gpu {
    pub stream: Stream,
    /// Every kernel's handle by name, looked up once (names are unique across files). A
    /// launch-bound step launches hundreds of kernels and should not pay a lookup for each.
    functions: HashMap<&'static str, (&'static str, Function<'static>)>,
    /// Holds CUDA events, so it drops before the context.
    profiler: Profiler,
    _context: Context,
}

/// The kernels a PTX module declares (`.entry <name>(` lines).
fn entries(ptx: &'static str) -> impl Iterator<Item = &'static str> {
    ptx.lines().filter_map(|line| line.split(".entry ").nth(1)).filter_map(|rest| rest.split('(').next())
}

/// Blocks for `n` elements with a grid-stride loop: enough to fill the GPU, no more.
pub(crate) fn grid_for(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 132 * 16) as u32
}

impl Gpu {
    /// Start the context, load every module and resolve every kernel it declares. The
    /// modules are leaked: they live as long as the process, like the one `Gpu` the engine
    /// keeps, so the kernel handles can be `'static`.
    pub fn new() -> CudaResult<Gpu> {
        let context = cust::quick_init()?;
        let mut functions = HashMap::new();
        for &(file, src) in ptx::ALL {
            let module: &'static Module = Box::leak(Box::new(Module::from_ptx(src, &[])?));
            for kernel in entries(src) {
                if functions.insert(kernel, (file, module.get_function(kernel)?)).is_some() {
                    return Err(cust::error::CudaError::InvalidValue); // two files define one kernel name
                }
            }
        }
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
        Ok(Gpu { stream, functions, profiler: Profiler::default(), _context: context })
    }

    /// Kernel `kernel` of the file `cu/<file>.cu`.
    pub(crate) fn function(&self, file: &str, kernel: &str) -> CudaResult<&Function<'static>> {
        match self.functions.get(kernel) {
            Some((f, function)) if *f == file => Ok(function),
            _ => Err(cust::error::CudaError::NotFound),
        }
    }

    /// Brackets the launch that follows, until the guard drops, for the profiler: with
    /// profiling on, a start event now and a stop event at the drop, both on `self.stream`.
    /// With it off this is one relaxed atomic load. Bind the guard (`let _timed = ...`) right
    /// before the one launch it times, and drop it right after (a block or `drop`).
    #[inline]
    pub fn timed(&self, kernel: &'static str, cost: Cost) -> Timed<'_> {
        if !self.profiler.is_on() {
            return Timed { active: None };
        }
        Timed { active: self.profiler.begin(&self.stream).map(|start| (self, kernel, cost, start)) }
    }

    /// Starts a profiling session (dropping any unfinished one): records the base event on
    /// `self.stream`, from which trace timestamps count, and turns timing on for every launch.
    pub fn profile_start(&self) -> CudaResult<()> {
        self.profiler.start(&self.stream)
    }

    /// Ends the session: turns timing off, synchronizes the stream, reads every event and
    /// returns the per-kernel table and spans (empty if no session was started). A CUDA error
    /// met while timing a launch is returned here. The profiler is then clear for a new start.
    pub fn profile_stop(&self) -> CudaResult<Profile> {
        self.profiler.stop(&self.stream)
    }

    /// Whether a profiling session is on.
    pub fn profiling(&self) -> bool {
        self.profiler.is_on()
    }
}

/// Guard returned by [`Gpu::timed`]; records the stop event when dropped (nothing when
/// profiling was off at its creation).
#[must_use = "the guard times the launch until it drops: bind it with `let _timed = ...`"]
pub struct Timed<'a> {
    active: Option<(&'a Gpu, &'static str, Cost, Event)>,
}

impl Drop for Timed<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some((gpu, kernel, cost, start)) = self.active.take() {
            gpu.profiler.end(&gpu.stream, kernel, cost, start);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_are_read_from_ptx() {
        let ptx = ".version 9.0\n.visible .entry unary_f32(\n\t.param .u64 a\n)\n.visible .entry fill_f32(\n";
        assert_eq!(super::entries(ptx).collect::<Vec<_>>(), ["unary_f32", "fill_f32"]);
    }
}
