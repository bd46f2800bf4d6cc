//! Tensors as kernel arguments: what every op's GPU arm (`ops/<op>/cuda.rs`) needs to
//! allocate outputs and hand buffers, layouts and host indices to a launcher.
//!
//! Buffers are handed to kernels as raw device slices. A slice does not keep its buffer
//! alive, so every GPU arm holds the tensors it launches on until the launch is queued;
//! after that, the single stream orders any reuse of the memory after the kernel.

use super::{err, f32_only, gpu, CudaData};
use crate::{
    dtype::DType,
    error::{Error, Result},
    shape::Layout,
    storage::Storage,
    Device, Tensor,
};
use mamba_kernels::cust::memory::DeviceSlice;
use mamba_kernels::launch::{Gpu, Strided};

/// An f32 device slice, what the kernels read and write.
pub(crate) type Slice = DeviceSlice<f32>;

/// A fresh f32 tensor of `shape` on the GPU and the slice its kernel writes.
pub(crate) fn new_f32(op: &'static str, shape: &[usize]) -> Result<(Tensor, Slice)> {
    let n = crate::shape::checked_numel(op, shape)?;
    let data = CudaData::alloc(op, DType::F32, n)?;
    let slice = data.f32(op)?;
    Ok((Tensor::from_storage(Storage::cuda(data), shape), slice))
}

/// The whole f32 buffer behind `t` (strided kernels index it through `t`'s layout).
pub(crate) fn buffer(op: &'static str, t: &Tensor) -> Result<Slice> {
    t.read().as_cuda(op)?.f32(op)
}

/// The elements of `t`, which must be contiguous, as one slice from its offset. (Ops make
/// the inputs of contiguous-only kernels contiguous before `dispatch::run`; a strided view
/// here is an engine bug, reported as such rather than read wrongly.)
pub(crate) fn elems(op: &'static str, t: &Tensor) -> Result<Slice> {
    if !t.is_contiguous() {
        let msg = format!("engine bug: a contiguous-only kernel got a view with strides {:?}", t.layout.strides);
        return Err(Error::Device { op, device: Device::Cuda, msg });
    }
    let s = t.read();
    let data = s.as_cuda(op)?;
    if data.dtype() != DType::F32 {
        return Err(f32_only(op, data.dtype()));
    }
    data.slice(op, t.layout.offset, t.numel())
}

/// A layout as the kernels' by-value `Strided` argument.
pub(crate) fn strided(op: &'static str, l: &Layout) -> Result<Strided> {
    Strided::new(&l.shape, &l.strides, l.offset).ok_or_else(|| Error::Device {
        op,
        device: Device::Cuda,
        msg: format!("layout {:?} / {:?} has more than 6 axes that do not merge", l.shape, l.strides),
    })
}

/// Host i64 values (token ids, targets) in device memory for one launch.
pub(crate) fn upload_i64(op: &'static str, values: &[i64]) -> Result<(CudaData, DeviceSlice<i64>)> {
    // Held as an 8-byte-element buffer; it never becomes a tensor.
    let data = CudaData::upload(op, DType::F64, values)?;
    let slice = data.slice::<i64>(op, 0, values.len())?;
    Ok((data, slice))
}

/// Token ids (host `usize`) as the kernels' `i64`s.
pub(crate) fn upload_ids(op: &'static str, ids: &[usize]) -> Result<(CudaData, DeviceSlice<i64>)> {
    upload_i64(op, &ids.iter().map(|&i| i as i64).collect::<Vec<_>>())
}

/// One launch on the GPU, its error turned into the engine's (naming `op`).
pub(crate) fn run(op: &'static str, launch: impl FnOnce(&Gpu) -> mamba_kernels::Result<()>) -> Result<()> {
    launch(gpu(op)?).map_err(err(op))
}
