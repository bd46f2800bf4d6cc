//! Flat buffers that tensors view. A `Storage` knows its device and size, and
//! tells the memory ledger when it is born and when it dies.

use crate::{
    dtype::{DType, Elem},
    error::Result,
    ledger, Device,
};

/// A CPU buffer of one element type.
#[derive(Clone, Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Bind `$v` to the typed vector/slice of a `CpuData` and wrap the (same-typed) `Vec` that
/// `$body` returns back into a `CpuData`. The body is written once, compiled per dtype.
#[macro_export]
#[doc(hidden)]
macro_rules! map_cpu {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::storage::CpuData::F32($v) => $crate::storage::CpuData::F32($body),
            $crate::storage::CpuData::F64($v) => $crate::storage::CpuData::F64($body),
        }
    };
}

/// Like `map_cpu!` for two buffers of the same dtype; a dtype mismatch is an error.
#[macro_export]
#[doc(hidden)]
macro_rules! zip_cpu {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            ($crate::storage::CpuData::F32($x), $crate::storage::CpuData::F32($y)) => {
                Ok($crate::storage::CpuData::F32($body))
            }
            ($crate::storage::CpuData::F64($x), $crate::storage::CpuData::F64($y)) => {
                Ok($crate::storage::CpuData::F64($body))
            }
            (a, b) => Err($crate::Error::DTypeMismatch { op: $op, lhs: a.dtype(), rhs: b.dtype() }),
        }
    };
}

impl CpuData {
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `n` copies of `value`.
    pub fn full(dtype: DType, n: usize, value: f64) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(vec![value as f32; n]),
            DType::F64 => CpuData::F64(vec![value; n]),
        }
    }

    /// Convert `f64` values into a buffer of `dtype`.
    pub fn from_f64(dtype: DType, values: impl Iterator<Item = f64>) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(values.map(|v| v as f32).collect()),
            DType::F64 => CpuData::F64(values.collect()),
        }
    }

    /// Element `i` widened to `f64`.
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            CpuData::F32(v) => v[i] as f64,
            CpuData::F64(v) => v[i],
        }
    }
}

/// Typed access to a `CpuData` from generic code.
pub trait CpuElem: Elem {
    fn slice(data: &CpuData) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> CpuData;
}

impl CpuElem for f32 {
    fn slice(data: &CpuData) -> Option<&[f32]> {
        match data {
            CpuData::F32(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f32>) -> CpuData {
        CpuData::F32(v)
    }
}

impl CpuElem for f64 {
    fn slice(data: &CpuData) -> Option<&[f64]> {
        match data {
            CpuData::F64(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f64>) -> CpuData {
        CpuData::F64(v)
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
