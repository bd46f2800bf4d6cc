//! Flat buffers that tensors view. A `Storage` knows its device and size, and
//! tells the memory ledger when it is born and when it dies.

use crate::{
    dtype::{bf16, DType, Scalar},
    error::Result,
    ledger, Device,
};

/// A CPU buffer of one element type.
#[derive(Clone, Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
}

/// Bind `$v` to the typed vector inside a `CpuData` (whatever its dtype) and evaluate
/// `$body`, which must give the same type for every dtype. The body is written once and
/// compiled per element type; `dispatch.rs` and this file are its only users.
macro_rules! with_cpu_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            CpuData::F32($v) => $body,
            CpuData::F64($v) => $body,
            CpuData::BF16($v) => $body,
        }
    };
}
pub(crate) use with_cpu_data;

impl CpuData {
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F64(_) => DType::F64,
            CpuData::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        with_cpu_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `n` copies of `value` (rounded to `dtype`).
    pub fn full(dtype: DType, n: usize, value: f64) -> CpuData {
        CpuData::from_f64(dtype, std::iter::repeat_n(value, n))
    }

    /// Convert `f64` values into a buffer of `dtype` (each rounded to nearest even).
    pub fn from_f64(dtype: DType, values: impl Iterator<Item = f64>) -> CpuData {
        fn collect<T: Scalar>(values: impl Iterator<Item = f64>) -> CpuData {
            T::wrap(values.map(T::cast).collect())
        }
        match dtype {
            DType::F32 => collect::<f32>(values),
            DType::F64 => collect::<f64>(values),
            DType::BF16 => collect::<bf16>(values),
        }
    }

    /// Element `i` widened to `f64` (exact).
    pub fn get_f64(&self, i: usize) -> f64 {
        with_cpu_data!(self, v => v[i].as_f64())
    }

    /// `n` elements from `offset`, copied into a buffer of the same dtype.
    pub fn slice_copy(&self, offset: usize, n: usize) -> CpuData {
        with_cpu_data!(self, v => Scalar::wrap(v[offset..offset + n].to_vec()))
    }

    /// Overwrite `n` elements from `offset` with `src`'s (same dtype), or say which differ.
    pub fn write_at(&mut self, offset: usize, src: &CpuData) -> Result<()> {
        match (self, src) {
            (CpuData::F32(d), CpuData::F32(s)) => d[offset..offset + s.len()].copy_from_slice(s),
            (CpuData::F64(d), CpuData::F64(s)) => d[offset..offset + s.len()].copy_from_slice(s),
            (CpuData::BF16(d), CpuData::BF16(s)) => d[offset..offset + s.len()].copy_from_slice(s),
            (d, s) => {
                return Err(crate::Error::DTypeMismatch { op: "set_data", lhs: d.dtype(), rhs: s.dtype() });
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum StorageKind {
    Cpu(CpuData),
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaData),
}

/// A buffer on some device, counted in the ledger for as long as it lives.
#[derive(Debug)]
pub struct Storage {
    kind: StorageKind,
    bytes: usize,
}

impl Storage {
    pub fn cpu(data: CpuData) -> Storage {
        let bytes = data.len() * data.dtype().size();
        ledger::on_alloc(Device::Cpu, bytes);
        Storage { kind: StorageKind::Cpu(data), bytes }
    }

    #[cfg(feature = "cuda")]
    pub fn cuda(data: crate::cuda::CudaData) -> Storage {
        let bytes = data.len() * data.dtype().size();
        ledger::on_alloc(Device::Cuda, bytes);
        Storage { kind: StorageKind::Cuda(data), bytes }
    }

    pub fn device(&self) -> Device {
        match self.kind {
            StorageKind::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            StorageKind::Cuda(_) => Device::Cuda,
        }
    }

    pub fn dtype(&self) -> DType {
        match &self.kind {
            StorageKind::Cpu(d) => d.dtype(),
            #[cfg(feature = "cuda")]
            StorageKind::Cuda(d) => d.dtype(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn kind(&self) -> &StorageKind {
        &self.kind
    }

    /// The CPU buffer, or an error naming `op` if the storage lives elsewhere.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn as_cpu(&self, op: &'static str) -> Result<&CpuData> {
        match &self.kind {
            StorageKind::Cpu(d) => Ok(d),
            #[cfg(feature = "cuda")]
            StorageKind::Cuda(_) => Err(not_here(op)),
        }
    }

    /// Mutable CPU buffer (in-place updates such as optimiser steps).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn as_cpu_mut(&mut self, op: &'static str) -> Result<&mut CpuData> {
        match &mut self.kind {
            StorageKind::Cpu(d) => Ok(d),
            #[cfg(feature = "cuda")]
            StorageKind::Cuda(_) => Err(not_here(op)),
        }
    }

    /// The GPU buffer, or an error naming `op` if the storage lives elsewhere.
    #[cfg(feature = "cuda")]
    pub fn as_cuda(&self, op: &'static str) -> Result<&crate::cuda::CudaData> {
        match &self.kind {
            StorageKind::Cuda(d) => Ok(d),
            StorageKind::Cpu(_) => {
                Err(crate::Error::Device { op, device: Device::Cpu, msg: "engine bug: expected a GPU buffer".into() })
            }
        }
    }
}

/// A CPU-only code path was handed a GPU buffer.
#[cfg(feature = "cuda")]
fn not_here(op: &'static str) -> crate::Error {
    crate::Error::Device {
        op,
        device: Device::Cuda,
        msg: "this path reads host memory; move the tensor with .to(Device::Cpu) first".into(),
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        ledger::on_free(self.device(), self.bytes);
    }
}
