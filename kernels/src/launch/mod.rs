//! Typed launchers: one file per kernel file (`cu/<name>.cu` -> `launch/<name>.rs`), each an
//! `impl Gpu` block with one Rust function per kernel, checking sizes before launching and
//! returning [`Error::BadArgument`](crate::Error) (never panicking) when they do not fit.
//!
//! Every kernel takes one parameter struct by value (`struct <Kernel>Params` in its .cu),
//! declared in the launcher file as a `#[repr(C)]` twin with the same fields and a size
//! assertion on both sides. Every launch goes through `Gpu::launch`, the one place that
//! holds the `unsafe` of a kernel launch, and is bracketed by [`Gpu::timed`]: with profiling
//! on (see `profile.rs`) that records a CUDA event before and after the kernel, and the
//! profile table turns the launcher's napkin math ([`Cost`]: bytes moved, FLOPs) into GB/s
//! and GFLOP/s.

mod adamw;
mod attention;
mod conv;
mod copy;
mod decode;
mod decode_token;
mod elementwise;
mod embedding;
mod flip;
mod matmul;
pub mod matmul_bf16;
pub mod matmul_tf32;
mod norm;
mod pdl;
mod profile;
mod reduce;
mod scan;
mod softmax;
mod ssd;

use crate::error::{Error, Result};
use crate::ptx;
pub use adamw::AdamWStep;
pub use attention::{AttentionBackward, AttentionDims, AttentionForward, ATTENTION_MAX_HEAD_DIM};
pub use conv::{ConvDims, ConvGrads, CONV_MAX_K};
pub use copy::{Strided, MAX_RANK};
use cust::error::{CudaError, CudaResult};
use cust::function::{BlockSize, GridSize};
use cust::memory::DeviceCopy;
use cust::prelude::*;
pub use decode::{DecodeDims, DecodeEmbed, DecodeIn, DecodeInLayout, DecodeRows, DecodeSsd, DecodeSsdDims, DecodeSsm};
pub use decode_token::{TokenBuffers, TokenLayer, TokenLayout, TokenPlan};
pub use matmul::{MatStrides, Matmul, MATMUL_VERSION, MATMUL_VERSIONS};
pub use matmul_tf32::{tf32_readable, MatmulTf32, Tf32Mode, MATMUL_TF32_VERSION, MATMUL_TF32_VERSIONS};
pub use norm::{RmsNormBackward, RmsNormForward, MAX_D_BACKWARD as RMS_NORM_MAX_D};
use profile::Profiler;
pub use profile::{KernelStats, Profile, Span, MAX_SPANS};
pub use scan::{
    ScanBackward, ScanDims, ScanElem, ScanForward, ScanGrads, ScanInputs, SCAN_BWD_MAX_CHUNK, SCAN_BWD_VERSION,
    SCAN_BWD_VERSIONS, SCAN_FWD_VERSION, SCAN_FWD_VERSIONS, SCAN_MAX_STATE,
};
pub use softmax::CrossEntropyBackward;
pub use ssd::{SsdBackward, SsdDims, SsdForward, SsdGrads, SsdInputs, SsdScratch, SSD_MAX_CHUNK};
use std::collections::HashMap;
use std::ffi::c_void;

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
    /// Every kernel's handle by name, looked up once (names are unique across files), with
    /// the bytes of its one parameter (from the PTX). A launch-bound step launches hundreds
    /// of kernels and should not pay a driver lookup for each.
    functions: HashMap<&'static str, (Function<'static>, Option<usize>)>,
    /// Holds CUDA events, so it drops before the context.
    profiler: Profiler,
    /// `cuLaunchKernelEx`, for launches that may overlap the kernel before (`pdl.rs`).
    launch_ex: Option<pdl::LaunchEx>,
    _context: Context,
}

/// The kernels a PTX module declares (`.entry <name>(` lines), each with the size in bytes
/// of its parameter if it takes exactly one struct (`.param .align 8 .b8 <name>_param_0[48]`).
fn entries(ptx: &'static str) -> Vec<(&'static str, Option<usize>)> {
    let mut out = Vec::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.split(".entry ").nth(1).and_then(|rest| rest.split('(').next()) else { continue };
        // The parameter list runs to the line that closes it.
        let params: Vec<&str> =
            lines.by_ref().take_while(|l| l.trim() != ")").filter(|l| l.contains(".param")).collect();
        let bytes = match params[..] {
            [p] => p.split('[').nth(1).and_then(|n| n.trim_end_matches([']', ',']).parse().ok()),
            _ => None,
        };
        out.push((name, bytes));
    }
    out
}

/// SMs of device 0, read once (132 on the H100 / H200 if the driver cannot say).
pub(crate) fn sms() -> usize {
    static SMS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SMS.get_or_init(|| {
        let count = cust::device::Device::get_device(0)
            .and_then(|d| d.get_attribute(cust::device::DeviceAttribute::MultiprocessorCount));
        count.ok().and_then(|c| usize::try_from(c).ok()).filter(|&c| c > 0).unwrap_or(132)
    })
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
        for &(_file, src) in ptx::ALL {
            let module: &'static Module = Box::leak(Box::new(Module::from_ptx(src, &[])?));
            for (kernel, bytes) in entries(src) {
                if functions.insert(kernel, (module.get_function(kernel)?, bytes)).is_some() {
                    return Err(CudaError::InvalidValue); // two files define one kernel name
                }
            }
        }
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
        let launch_ex = pdl::LaunchEx::resolve();
        Ok(Gpu { stream, functions, profiler: Profiler::default(), launch_ex, _context: context })
    }

    /// Launches `kernel` on `self.stream` with `params`, its parameter struct, timed for the
    /// profiler under the kernel's name with napkin math `cost`. Fails if no kernel has that
    /// name or if its parameter is not `size_of::<P>()` bytes (a launcher out of step with
    /// its .cu), and with the driver's error if the launch is refused.
    ///
    /// The caller must pass the kernel's own parameter struct (`P` mirrors the .cu's struct
    /// field for field) and have checked every buffer it points to against the sizes in it.
    pub(crate) fn launch<P: DeviceCopy>(
        &self,
        kernel: &'static str,
        grid: impl Into<GridSize>,
        block: impl Into<BlockSize>,
        shared_bytes: u32,
        params: P,
        cost: Cost,
    ) -> Result<()> {
        self.launch_as(kernel, (grid.into(), block.into(), shared_bytes), params, cost, false)
    }

    /// As [`launch`](Self::launch), but the kernel may start before the previous kernel on the
    /// stream ends (programmatic dependent launch, `pdl.rs`), where the driver allows: the
    /// kernel must execute `griddepcontrol.wait` before it reads anything an earlier kernel
    /// wrote, and write nothing before it.
    pub(crate) fn launch_dependent<P: DeviceCopy>(
        &self,
        kernel: &'static str,
        grid: impl Into<GridSize>,
        block: impl Into<BlockSize>,
        shared_bytes: u32,
        params: P,
        cost: Cost,
    ) -> Result<()> {
        self.launch_as(kernel, (grid.into(), block.into(), shared_bytes), params, cost, true)
    }

    fn launch_as<P: DeviceCopy>(
        &self,
        kernel: &'static str,
        (grid, block, shared_bytes): (GridSize, BlockSize, u32),
        params: P,
        cost: Cost,
        dependent: bool,
    ) -> Result<()> {
        let (function, bytes) = self.functions.get(kernel).ok_or(CudaError::NotFound)?;
        let size = std::mem::size_of::<P>();
        if *bytes != Some(size) {
            let what = format!("the kernel's parameter is {bytes:?} bytes, the launcher passes {size}");
            return Err(Error::bad(kernel, what));
        }
        let _timed = self.timed(kernel, cost);
        let args = [&params as *const P as *mut c_void];
        // SAFETY (both arms): the kernel takes exactly one parameter of `size` bytes (checked
        // above from its PTX), and `P` is its `#[repr(C)]` twin (same fields, sizes asserted on
        // both sides), so the driver copies `params` into a parameter of the right layout;
        // `args` and `params` outlive this call, which is all the driver needs (it copies them
        // before returning). The device pointers in `params` come from `DeviceSlice`s the
        // launcher checked against the sizes in `params`, so the kernel stays in bounds; the
        // slices' owners keep the memory alive until the work queued on the one stream ends.
        match (&self.launch_ex, dependent) {
            (Some(ex), true) => {
                let dims = ([grid.x, grid.y, grid.z], [block.x, block.y, block.z], shared_bytes);
                let args = args.as_ptr() as *mut *mut c_void;
                let r = unsafe { ex.launch(function.to_raw(), dims, self.stream.as_inner(), args) };
                if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
                    return Err(Error::bad(kernel, format!("cuLaunchKernelEx failed: {r:?}")));
                }
            }
            _ => unsafe { self.stream.launch(function, grid, block, shared_bytes, &args) }?,
        }
        Ok(())
    }

    /// Lets `kernel` take `bytes` of dynamic shared memory (the default limit is 48 KB); the
    /// driver is asked again only for more than it already allows.
    pub(crate) fn raise_smem_limit(&self, kernel: &'static str, bytes: u32) -> Result<()> {
        static RAISED: std::sync::Mutex<Vec<(usize, u32)>> = std::sync::Mutex::new(Vec::new());
        let (function, _) = self.functions.get(kernel).ok_or(CudaError::NotFound)?;
        let raw = function.to_raw();
        let mut raised = RAISED.lock().unwrap_or_else(|e| e.into_inner());
        if raised.iter().any(|&(f, b)| f == raw as usize && b >= bytes) {
            return Ok(());
        }
        let attr = cust::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        // SAFETY: `raw` is a live function handle of this context (the module is never
        // unloaded) and the attribute takes a byte count; a value the device cannot give is an
        // error code, not undefined behaviour.
        let r = unsafe { cust::sys::cuFuncSetAttribute(raw, attr, bytes as i32) };
        if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
            return Err(Error::bad(kernel, format!("cannot allow {bytes} bytes of dynamic shared memory: {r:?}")));
        }
        raised.retain(|&(f, _)| f != raw as usize);
        raised.push((raw as usize, bytes));
        Ok(())
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
        let ptx = ".version 9.0\n.visible .entry unary_f32(\n\t.param .align 8 .b8 unary_f32_param_0[40]\n)\n{\n}\n\
                   .visible .entry fill_f32(\n\t.param .u64 a,\n\t.param .u32 b\n)\n";
        assert_eq!(super::entries(ptx), [("unary_f32", Some(40)), ("fill_f32", None)]);
    }

    /// Every kernel nvcc built takes exactly one parameter struct (so `Gpu::launch` can
    /// check its size against the launcher's struct).
    #[test]
    fn every_kernel_takes_one_struct() {
        for &(file, src) in crate::ptx::ALL {
            for (kernel, bytes) in super::entries(src) {
                assert!(bytes.is_some_and(|b| b > 0), "{file}: {kernel} does not take one parameter struct");
            }
        }
    }
}
