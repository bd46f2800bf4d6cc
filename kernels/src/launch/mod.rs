//! Typed launchers: one file per kernel file (`cu/<name>.cu` -> `launch/<name>.rs`), each an
//! `impl Gpu` block with one Rust function per kernel, checking sizes before launching.

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
}
