//! The one place that matches on (device, dtype).
//!
//! An op's forward in `ops/<op>/mod.rs` validates its arguments, then hands a small struct
//! (the op's non-tensor arguments) and its input tensors to [`run`] (compute kernels) or
//! [`run_copy`] (data movement). The struct implements [`Kernel`] or [`CopyKernel`]: a CPU
//! kernel generic over the element type and, behind the `cuda` feature, a GPU kernel. A
//! missing GPU kernel is a compile error; a (device, dtype) pair an op has no kernel for is
//! [`Error::Unsupported`], which names the op, the device and the dtype.
//!
//! | kernel kind    | CPU dtypes        | GPU dtypes                          |
//! |----------------|-------------------|-------------------------------------|
//! | [`Kernel`]     | f32, f64 (bf16 where it has `cpu_bf16`: matmul) | `Kernel::CUDA_DTYPES` (f32 by default) |
//! | [`CopyKernel`] | f32, f64, bf16    | `CopyKernel::CUDA_DTYPES`           |
//!
//! Both check first that every input lives on one device with one dtype.

use crate::{
    dtype::{bf16, DType, Elem, Scalar},
    error::{Error, Result},
    shape::Layout,
    storage::{with_cpu_data, CpuData, Storage},
    Device, Tensor,
};

/// One input of a CPU kernel: the whole buffer the tensor views, and its layout.
pub(crate) struct CpuIn<'a, T> {
    pub data: &'a [T],
    pub layout: &'a Layout,
}

impl<'a, T> CpuIn<'a, T> {
    /// The elements of a contiguous input, in order (`engine bug` if it is not contiguous:
    /// the op makes inputs contiguous before a kernel that needs it).
    pub fn elems(&self) -> &'a [T] {
        debug_assert!(self.layout.is_contiguous(), "a contiguous-only kernel got strides {:?}", self.layout.strides);
        &self.data[self.layout.offset..self.layout.offset + self.layout.numel()]
    }

    /// The buffer from the view's offset on (for kernels that take explicit strides).
    pub fn at_offset(&self) -> &'a [T] {
        &self.data[self.layout.offset..]
    }
}

/// A compute kernel: float arithmetic on f32 or f64 on the CPU, its CUDA twin on the GPU.
pub(crate) trait Kernel {
    /// The op's name, in errors.
    const NAME: &'static str;
    /// The name errors use; a kernel that serves several ops (`unary`) names the one asked.
    fn name(&self) -> &'static str {
        Self::NAME
    }
    /// What the kernel returns: output tensors (made with `Tensor::from_vec` on the CPU).
    type Out;
    /// The dtypes the GPU kernel takes.
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [DType] = &[DType::F32];
    /// The CPU kernel, on inputs of one element type (in the order given to [`run`]).
    fn cpu<T: Elem>(&self, inputs: &[CpuIn<'_, T>]) -> Result<Self::Out>;
    /// The CPU kernel on bf16 inputs, for the few ops that have one (bf16 has no arithmetic of
    /// its own: such a kernel widens to f32, computes there and rounds its result once).
    fn cpu_bf16(&self, _inputs: &[CpuIn<'_, bf16>]) -> Result<Self::Out> {
        Err(Error::Unsupported { op: self.name(), device: Device::Cpu, dtype: DType::BF16 })
    }
    /// The GPU kernel, on the same inputs (all on the GPU, of a dtype in `CUDA_DTYPES`).
    #[cfg(feature = "cuda")]
    fn cuda(&self, inputs: &[&Tensor]) -> Result<Self::Out>;
}

/// A data-movement kernel (copy, cast, concat): no arithmetic, so any storage dtype.
pub(crate) trait CopyKernel {
    const NAME: &'static str;
    type Out;
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [DType];
    fn cpu<T: Scalar>(&self, inputs: &[CpuIn<'_, T>]) -> Result<Self::Out>;
    #[cfg(feature = "cuda")]
    fn cuda(&self, inputs: &[&Tensor]) -> Result<Self::Out>;
}

/// Run `k` on `inputs` with the kernel for their device and dtype.
pub(crate) fn run<K: Kernel>(k: &K, inputs: &[&Tensor]) -> Result<K::Out> {
    let op = k.name();
    match placement(op, inputs)? {
        (Device::Cpu, DType::F32) => with_cpu::<f32, _>(op, inputs, |x| k.cpu(x)),
        (Device::Cpu, DType::F64) => with_cpu::<f64, _>(op, inputs, |x| k.cpu(x)),
        (Device::Cpu, DType::BF16) => with_cpu::<bf16, _>(op, inputs, |x| k.cpu_bf16(x)),
        #[cfg(feature = "cuda")]
        (Device::Cuda, dtype) if K::CUDA_DTYPES.contains(&dtype) => k.cuda(inputs),
        (device, dtype) => Err(Error::Unsupported { op, device, dtype }),
    }
}

/// Run the data-movement kernel `k` on `inputs` (see [`run`]).
pub(crate) fn run_copy<K: CopyKernel>(k: &K, inputs: &[&Tensor]) -> Result<K::Out> {
    match placement(K::NAME, inputs)? {
        (Device::Cpu, DType::F32) => with_cpu::<f32, _>(K::NAME, inputs, |x| k.cpu(x)),
        (Device::Cpu, DType::F64) => with_cpu::<f64, _>(K::NAME, inputs, |x| k.cpu(x)),
        (Device::Cpu, DType::BF16) => with_cpu::<bf16, _>(K::NAME, inputs, |x| k.cpu(x)),
        #[cfg(feature = "cuda")]
        (Device::Cuda, dtype) if K::CUDA_DTYPES.contains(&dtype) => k.cuda(inputs),
        (device, dtype) => Err(Error::Unsupported { op: K::NAME, device, dtype }),
    }
}

/// The one device and dtype of `inputs`, or an error naming `op`.
fn placement(op: &'static str, inputs: &[&Tensor]) -> Result<(Device, DType)> {
    let Some(first) = inputs.first() else {
        return Err(Error::Invalid { op, msg: "engine bug: a kernel was run without inputs".into() });
    };
    for t in &inputs[1..] {
        crate::ops::check_pair(op, first, t)?;
    }
    Ok((first.device(), first.dtype()))
}

/// Borrow every input's CPU buffer as `&[T]` for the duration of `f`.
fn with_cpu<T: Scalar, R>(
    op: &'static str,
    inputs: &[&Tensor],
    f: impl FnOnce(&[CpuIn<'_, T>]) -> Result<R>,
) -> Result<R> {
    let guards: Vec<_> = inputs.iter().map(|t| t.read()).collect();
    let views = guards
        .iter()
        .zip(inputs)
        .map(|(g, t)| {
            let data = T::slice(g.as_cpu(op)?).ok_or(Error::DTypeMismatch { op, lhs: t.dtype(), rhs: T::DTYPE })?;
            Ok(CpuIn { data, layout: &t.layout })
        })
        .collect::<Result<Vec<_>>>()?;
    f(&views)
}

/// A tensor of `shape` on `device` filled with `value` (rounded to `dtype`).
pub(crate) fn full(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
    let n = crate::shape::checked_numel("full", shape)?;
    let storage = match device {
        Device::Cpu => Storage::cpu(CpuData::full(dtype, n, value)),
        #[cfg(feature = "cuda")]
        Device::Cuda => Storage::cuda(crate::cuda::full(dtype, n, value)?),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => return Err(no_cuda("full")),
    };
    Ok(Tensor::from_storage(storage, shape))
}

/// `t`'s values on `device`, contiguous and detached (the caller checked it is elsewhere).
pub(crate) fn transfer(t: &Tensor, device: Device) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    return crate::cuda::transfer(t, device);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (t, device);
        Err(no_cuda("to"))
    }
}

/// Overwrite contiguous `dst` with `src` (same shape, dtype and device), in place.
pub(crate) fn copy_within(src: &Tensor, dst: &Tensor) -> Result<()> {
    #[cfg(feature = "cuda")]
    if dst.device() == Device::Cuda {
        return crate::cuda::copy_within(src, dst);
    }
    let src = src.contiguous_detached()?;
    let values = {
        let s = src.read();
        s.as_cpu("set_data")?.slice_copy(src.layout.offset, src.numel())
    };
    let mut storage = dst.storage.write().unwrap_or_else(|e| e.into_inner());
    storage.as_cpu_mut("set_data")?.write_at(dst.layout.offset, &values)
}

/// Overwrite contiguous `dst` with host `values` of its dtype and size, in place.
pub(crate) fn write_host(values: &CpuData, dst: &Tensor) -> Result<()> {
    #[cfg(feature = "cuda")]
    if dst.device() == Device::Cuda {
        return crate::cuda::write_host(values, dst);
    }
    let mut storage = dst.storage.write().unwrap_or_else(|e| e.into_inner());
    storage.as_cpu_mut("write_values")?.write_at(dst.layout.offset, values)
}

/// The values of `t` (any device) in row-major order, widened to `f64`.
pub(crate) fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    let t = t.detach().to(Device::Cpu)?;
    let storage = t.read();
    let data = storage.as_cpu("to_vec_f64")?;
    let mut out = Vec::with_capacity(t.numel());
    with_cpu_data!(data, v => t.layout.for_each_offset(|_, o| out.push(v[o].as_f64())));
    Ok(out)
}

/// The error for asking a build without the `cuda` feature for the GPU.
#[cfg(not(feature = "cuda"))]
pub(crate) fn no_cuda(op: &'static str) -> Error {
    Error::Device {
        op,
        device: Device::Cuda,
        msg: "this build has no CUDA backend: rebuild with `--features cuda` (docs/GPU.md says how)".into(),
    }
}
