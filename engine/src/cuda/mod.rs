//! The CUDA backend: one GPU (device 0), one stream, our PTX kernels (mamba-kernels).
//!
//! - [`gpu`] hands out the process-wide [`Gpu`] (context, modules, stream), created on first
//!   use and made current on whichever thread asks.
//! - `alloc.rs` is the caching allocator; [`CudaData`] is a typed view of one of its blocks,
//!   the payload of `StorageKind::Cuda`.
//! - `args.rs` turns tensors into kernel arguments (output buffers, slices, layouts, host
//!   indices) for the ops' GPU arms, which live with their ops (`ops/<op>/cuda.rs`).
//! - `nccl.rs` sums tensors across processes, one GPU each (NCCL, loaded at run time), on
//!   the same stream: data-parallel training (`mamba train --gpus N`).
//!
//! Every launch and copy goes on the one stream, in program order, so nothing needs events
//! except reading back to the host, which waits for the stream.

pub mod alloc;
pub(crate) mod args;
pub mod graph;
pub mod nccl;

use crate::{
    dtype::{bf16, DType},
    error::{Error, Result},
    shape::Layout,
    storage::{CpuData, Storage},
    Device, Tensor,
};
use mamba_kernels::cust::{
    context::{Context, CurrentContext},
    device::Device as CuDevice,
    error::CudaError,
    memory::{AsyncCopyDestination, DeviceCopy, DeviceSlice},
};
pub use mamba_kernels::launch::Gpu;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();

/// When set, every new buffer is filled with NaN before anyone writes it (the GPU check
/// turns it on so that an element a kernel forgets to write cannot pass unnoticed).
static POISON: AtomicBool = AtomicBool::new(false);

pub fn set_poison(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

thread_local! {
    /// Whether this thread has the (primary) context current.
    static CURRENT: Cell<bool> = const { Cell::new(false) };
}

/// The GPU, or the driver's error as text.
pub(crate) fn gpu_raw() -> std::result::Result<&'static Gpu, CudaError> {
    match GPU.get_or_init(|| Gpu::new().map_err(|e| e.to_string())) {
        Ok(gpu) => {
            if !CURRENT.get() {
                // The primary context: retaining it again on this thread makes it current here.
                let ctx = Context::new(CuDevice::get_device(0)?)?;
                CurrentContext::set_current(&ctx)?;
                std::mem::forget(ctx); // keep the retain for the thread's lifetime
                CURRENT.set(true);
            }
            Ok(gpu)
        }
        Err(_) => Err(CudaError::NoDevice),
    }
}

/// The GPU for `op`, or an error saying why there is none.
pub fn gpu(op: &'static str) -> Result<&'static Gpu> {
    gpu_raw().map_err(|e| {
        let why = match GPU.get() {
            Some(Err(msg)) => msg.clone(),
            _ => e.to_string(),
        };
        let msg = format!(
            "cannot start the GPU: {why}. The kernels need an NVIDIA GPU of compute capability 9.0 \
             (Hopper) and a driver for CUDA 13.0 or later (580+); use --device cpu otherwise"
        );
        Error::Device { op, device: Device::Cuda, msg }
    })
}

/// Map a driver error (`CudaError`) or a launcher's error (`mamba_kernels::Error`: a driver
/// error or a bad argument, naming the kernel) to an engine error naming `op`. A driver
/// error reads "CUDA error: ..." either way.
pub(crate) fn err<E: Into<mamba_kernels::Error>>(op: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Device { op, device: Device::Cuda, msg: e.into().to_string() }
}

/// `len` elements of `dtype` in one allocator block.
#[derive(Debug)]
pub struct CudaData {
    block: alloc::Block,
    dtype: DType,
    len: usize,
}

impl CudaData {
    /// Uninitialised device memory for `len` elements. The kernels index with 32-bit
    /// integers, so a buffer holds at most `i32::MAX` elements.
    pub fn alloc(op: &'static str, dtype: DType, len: usize) -> Result<CudaData> {
        gpu(op)?;
        if len > i32::MAX as usize {
            let msg = format!("{len} elements of {dtype} exceed the {} a GPU buffer holds", i32::MAX);
            return Err(Error::Device { op, device: Device::Cuda, msg });
        }
        let bytes = len * dtype.size();
        let block = alloc::alloc(bytes).map_err(|e| match e {
            CudaError::OutOfMemory => {
                let (reserved, cached) = allocator_bytes();
                let msg = format!(
                    "out of GPU memory allocating {} ({} already reserved, {} of it cached); \
                     try a smaller --batch or --seq-len",
                    crate::ledger::human(bytes),
                    crate::ledger::human(reserved),
                    crate::ledger::human(cached)
                );
                Error::Device { op, device: Device::Cuda, msg }
            }
            other => err(op)(other),
        })?;
        if POISON.load(Ordering::Relaxed) {
            // All-ones bits are a NaN in f32 and in f64 alike.
            // SAFETY: the whole block, in bounds by construction.
            let mut all = unsafe { DeviceSlice::from_raw_parts(block.ptr.cast::<f32>(), block.block / 4) };
            gpu(op)?.fill_f32(&mut all, f32::from_bits(u32::MAX)).map_err(err(op))?;
        }
        Ok(CudaData { block, dtype, len })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `offset..offset + len` as a typed device slice. Kernels write through the
    /// slices of outputs they were given; nothing else holds those while a launch is built.
    pub fn slice<T: DeviceCopy>(&self, op: &'static str, offset: usize, len: usize) -> Result<DeviceSlice<T>> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len && e * self.dtype.size() <= self.block.block);
        if std::mem::size_of::<T>() != self.dtype.size() || end.is_none() {
            return Err(Error::Device {
                op,
                device: Device::Cuda,
                msg: format!(
                    "engine bug: a view of {len} elements at {offset} of a {} buffer of {}",
                    self.dtype, self.len
                ),
            });
        }
        // SAFETY: in bounds of a live block (checked above), element type of the right size.
        Ok(unsafe { DeviceSlice::from_raw_parts(self.block.ptr.cast::<T>().add(offset), len) })
    }

    /// Elements `offset..offset + len` as raw bytes, whatever the dtype (for copies).
    pub fn bytes(&self, op: &'static str, offset: usize, len: usize) -> Result<DeviceSlice<u8>> {
        let size = self.dtype.size();
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() {
            let msg = format!("engine bug: {len} elements at {offset} of a {} buffer of {}", self.dtype, self.len);
            return Err(Error::Device { op, device: Device::Cuda, msg });
        }
        // SAFETY: in bounds of a live block (checked above); bytes have no alignment needs.
        Ok(unsafe { DeviceSlice::from_raw_parts(self.block.ptr.cast::<u8>().add(offset * size), len * size) })
    }

    /// The whole buffer as f32 (the dtype every kernel computes in).
    pub fn f32(&self, op: &'static str) -> Result<DeviceSlice<f32>> {
        if self.dtype != DType::F32 {
            return Err(f32_only(op, self.dtype));
        }
        self.slice(op, 0, self.len)
    }

    /// Copy host values in (on the stream, ordered after earlier kernels).
    pub fn upload<T: DeviceCopy>(op: &'static str, dtype: DType, values: &[T]) -> Result<CudaData> {
        let data = CudaData::alloc(op, dtype, values.len())?;
        if !values.is_empty() {
            let mut dst = data.slice::<T>(op, 0, values.len())?;
            // SAFETY: a pageable source is staged by the driver before this returns.
            unsafe { dst.async_copy_from(values, &gpu(op)?.stream) }.map_err(err(op))?;
        }
        Ok(data)
    }

    /// Copy `len` elements from `offset` out to the host (waits for the stream).
    pub fn download<T: DeviceCopy + Default + Clone>(
        &self,
        op: &'static str,
        offset: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            let src = self.slice::<T>(op, offset, len)?;
            let stream = &gpu(op)?.stream;
            // SAFETY: `out` outlives the copy: the stream is synchronised before returning.
            unsafe { src.async_copy_to(&mut out[..], stream) }.map_err(err(op))?;
            stream.synchronize().map_err(err(op))?;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- host <-> device

/// Host values of any dtype in a new device buffer (bf16 travels as its 16-bit patterns).
fn upload_cpu(op: &'static str, data: &CpuData, offset: usize, n: usize) -> Result<CudaData> {
    let range = offset..offset + n;
    match data {
        CpuData::F32(v) => CudaData::upload(op, DType::F32, &v[range]),
        CpuData::F64(v) => CudaData::upload(op, DType::F64, &v[range]),
        CpuData::BF16(v) => {
            CudaData::upload(op, DType::BF16, &v[range].iter().map(|b| b.to_bits()).collect::<Vec<_>>())
        }
    }
}

/// `n` elements from `offset` of a device buffer, on the host (waits for the stream).
fn download_cpu(op: &'static str, data: &CudaData, offset: usize, n: usize) -> Result<CpuData> {
    Ok(match data.dtype() {
        DType::F32 => CpuData::F32(data.download(op, offset, n)?),
        DType::F64 => CpuData::F64(data.download(op, offset, n)?),
        DType::BF16 => CpuData::BF16(data.download::<u16>(op, offset, n)?.into_iter().map(bf16::from_bits).collect()),
    })
}

/// `n` copies of `value` rounded to `dtype` (the twin of `CpuData::full`): f32 by the fill
/// kernel, other dtypes from the host.
pub(crate) fn full(dtype: DType, n: usize, value: f64) -> Result<CudaData> {
    if dtype != DType::F32 {
        return upload_cpu("full", &CpuData::full(dtype, n, value), 0, n);
    }
    let data = CudaData::alloc("full", dtype, n)?;
    let mut out = data.f32("full")?;
    gpu("full")?.fill_f32(&mut out, value as f32).map_err(err("full"))?;
    Ok(data)
}

/// `t`'s values on `device`, detached, contiguous.
pub(crate) fn transfer(t: &Tensor, device: Device) -> Result<Tensor> {
    const OP: &str = "to";
    if device == Device::Cpu && t.dtype() != DType::F32 && !t.is_contiguous() && t.numel() > 0 {
        // The GPU copies views of f32 only: fetch the span the view covers, gather on the host.
        let (lo, end) = (t.layout.offset, t.layout.max_offset());
        let span = download_cpu(OP, t.read().as_cuda(OP)?, lo, end - lo)?;
        let layout = Layout { offset: 0, ..t.layout.clone() };
        return Tensor::from_cpu_data(span, &[end - lo])?.with_layout(layout).contiguous_detached();
    }
    let c = t.contiguous_detached()?;
    let (off, n) = (c.layout.offset, c.numel());
    let s = c.read();
    match device {
        Device::Cuda => Ok(Tensor::from_storage(Storage::cuda(upload_cpu(OP, s.as_cpu(OP)?, off, n)?), t.shape())),
        Device::Cpu => Tensor::from_cpu_data(download_cpu(OP, s.as_cuda(OP)?, off, n)?, t.shape()),
    }
}

/// Overwrite contiguous `dst` with `src` (same shape and dtype), device to device.
pub(crate) fn copy_within(src: &Tensor, dst: &Tensor) -> Result<()> {
    const OP: &str = "set_data";
    let src = src.contiguous_detached()?;
    // A source inside the destination's own buffer (which may overlap it) is staged first.
    let src = if src.same_storage(dst) { duplicate(OP, &src)? } else { src };
    // The device memory is written through the stream; the host-side lock only guards the
    // buffer's identity, so read guards suffice (and the same lock is never taken twice).
    let (ss, ds) = (src.read(), dst.read());
    let (s, d) = (ss.as_cuda(OP)?, ds.as_cuda(OP)?);
    let n = src.numel();
    let (from, mut to) = (s.bytes(OP, src.layout.offset, n)?, d.bytes(OP, dst.layout.offset, n)?);
    // SAFETY: both ranges are in bounds (checked by `bytes`); the copy is ordered on the stream.
    unsafe { to.async_copy_from(&from, &gpu(OP)?.stream) }.map_err(err(OP))
}

/// Overwrite contiguous `dst` with host `values` (its dtype and size), ordered on the stream.
pub(crate) fn write_host(values: &CpuData, dst: &Tensor) -> Result<()> {
    const OP: &str = "write_values";
    let guard = dst.read(); // the lock guards the buffer's identity; the copy goes through the stream
    let mut to = guard.as_cuda(OP)?.bytes(OP, dst.layout.offset, dst.numel())?;
    let stream = &gpu(OP)?.stream;
    // SAFETY: in bounds (checked by `bytes`); a pageable source is staged before this returns.
    let copied = match values {
        CpuData::F32(v) => unsafe { to.async_copy_from(bytes_of(v), stream) },
        CpuData::F64(v) => unsafe { to.async_copy_from(bytes_of(v), stream) },
        CpuData::BF16(v) => unsafe { to.async_copy_from(bytes_of(v), stream) },
    };
    copied.map_err(err(OP))
}

/// Queue a copy between contiguous f32 `t` and page-locked `host` (its size): host to device
/// when `to_device`, else back. Both sides stay put, so the copy can be recorded in a graph.
pub(crate) fn copy_pinned(t: &Tensor, host: &mut [f32], to_device: bool) -> Result<()> {
    const OP: &str = "host link";
    let guard = t.read();
    let mut dev = guard.as_cuda(OP)?.slice::<f32>(OP, t.layout.offset, t.numel())?;
    if host.len() != dev.len() {
        return Err(Error::Device { op: OP, device: Device::Cuda, msg: "engine bug: host link size".into() });
    }
    let stream = &gpu(OP)?.stream;
    // SAFETY: in bounds (checked above and by `slice`); `host` is page-locked memory that its
    // owner (a HostLink) keeps alive and unmoved, and reads or writes only after waiting for
    // the stream, while copies are queued or recorded.
    let copied = unsafe {
        if to_device {
            dev.async_copy_from(&*host, stream)
        } else {
            dev.async_copy_to(host, stream)
        }
    };
    copied.map_err(err(OP))
}

/// A slice of plain numbers as its bytes.
fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: f32, f64 and bf16 have no padding and every byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// A copy of the contiguous `t` in a buffer of its own.
fn duplicate(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let n = t.numel();
    let data = CudaData::alloc(op, t.dtype(), n)?;
    {
        let s = t.read();
        let (from, mut to) = (s.as_cuda(op)?.bytes(op, t.layout.offset, n)?, data.bytes(op, 0, n)?);
        // SAFETY: in bounds (checked by `bytes`), distinct buffers, ordered on the stream.
        unsafe { to.async_copy_from(&from, &gpu(op)?.stream) }.map_err(err(op))?;
    }
    Ok(Tensor::from_storage(Storage::cuda(data), t.shape()))
}

/// The error for an op asked to compute in a dtype the GPU kernels do not have.
pub(crate) fn f32_only(op: &'static str, dtype: DType) -> Error {
    Error::Device {
        op,
        device: Device::Cuda,
        msg: format!("the GPU kernels compute in f32, this tensor is {dtype}; convert it with .to_dtype(F32)"),
    }
}

/// What the allocator holds: (reserved from the driver, of which cached for reuse), bytes.
pub fn allocator_bytes() -> (usize, usize) {
    (alloc::reserved(), alloc::cached())
}

/// Bytes of GPU memory a new allocation can still get: what the driver reports free plus
/// what our allocator caches for reuse (it hands those back before failing). Starts the GPU.
/// Used to refuse settings that cannot fit before allocating them.
pub fn available_bytes() -> Result<usize> {
    gpu("memory info")?;
    let (free, _total) = mamba_kernels::cust::memory::mem_get_info().map_err(err("memory info"))?;
    Ok(free.saturating_add(alloc::cached()))
}

/// Wait until every launched kernel has finished.
pub fn synchronize() -> Result<()> {
    gpu("synchronize")?.stream.synchronize().map_err(err("synchronize"))
}
