//! Programmatic dependent launch (Hopper): a kernel launched this way may start while the
//! kernel before it on the stream still runs, up to its `griddepcontrol.wait`, which returns
//! once that kernel has finished and its writes are visible. The decode kernels load their
//! weights before the wait, so that a token's chain of short kernels overlaps each one's
//! launch and weight loads with the previous one's work. Graph capture records the
//! dependency as such.
//!
//! The launch needs `cuLaunchKernelEx` (CUDA 12), which cust 0.3's bindings lack: it is looked
//! up at run time through `cuGetProcAddress`, with the structs of CUDA 13's cuda.h below.
//! Setting MAMBA_NO_PDL (to anything) launches these kernels the ordinary way, to compare.

use cust::sys as cu;
use std::ffi::c_void;

/// `CUlaunchAttribute`: an id, padding to 8 bytes, a 64-byte union.
#[repr(C)]
struct LaunchAttribute {
    id: u32,
    pad: u32,
    value: [u64; 8],
}
const _: () = assert!(std::mem::size_of::<LaunchAttribute>() == 72);

/// `CUlaunchConfig`.
#[repr(C)]
struct LaunchConfig {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    stream: cu::CUstream,
    attrs: *mut LaunchAttribute,
    num_attrs: u32,
}
const _: () = assert!(std::mem::size_of::<LaunchConfig>() == 56);

/// `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`; its value is an int, nonzero.
const PROGRAMMATIC_STREAM_SERIALIZATION: u32 = 6;

type LaunchKernelEx =
    unsafe extern "C" fn(*const LaunchConfig, cu::CUfunction, *mut *mut c_void, *mut *mut c_void) -> cu::CUresult;

/// The driver's `cuLaunchKernelEx`.
pub(crate) struct LaunchEx(LaunchKernelEx);

impl LaunchEx {
    /// Look the entry point up (in the current context's driver); `None` if the driver has
    /// none or MAMBA_NO_PDL is set.
    pub(crate) fn resolve() -> Option<LaunchEx> {
        if std::env::var_os("MAMBA_NO_PDL").is_some() {
            return None;
        }
        let mut pfn: *mut c_void = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name and an out pointer; 12000 asks for the CUDA 12.0 ABI.
        let r = unsafe { cu::cuGetProcAddress(c"cuLaunchKernelEx".as_ptr(), &mut pfn, 12000, 0) };
        if r != cu::cudaError_enum::CUDA_SUCCESS || pfn.is_null() {
            return None;
        }
        // SAFETY: the driver returned cuLaunchKernelEx, whose C signature LaunchKernelEx is.
        Some(LaunchEx(unsafe { std::mem::transmute::<*mut c_void, LaunchKernelEx>(pfn) }))
    }

    /// Launch `f` on `stream`, allowed to start before the previous kernel ends.
    ///
    /// # Safety
    /// As `cuLaunchKernel`: `args` points to the kernel's parameters, each of its size.
    pub(crate) unsafe fn launch(
        &self,
        f: cu::CUfunction,
        (grid, block, shared_bytes): ([u32; 3], [u32; 3], u32),
        stream: cu::CUstream,
        args: *mut *mut c_void,
    ) -> cu::CUresult {
        let mut attr = LaunchAttribute { id: PROGRAMMATIC_STREAM_SERIALIZATION, pad: 0, value: [0; 8] };
        attr.value[0] = 1;
        let config = LaunchConfig { grid, block, shared_bytes, stream, attrs: &mut attr, num_attrs: 1 };
        // SAFETY: `config` and `attr` live through the call; the rest is the caller's.
        unsafe { (self.0)(&config, f, args, std::ptr::null_mut()) }
    }
}
