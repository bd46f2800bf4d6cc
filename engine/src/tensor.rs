//! The `Tensor`: a strided view onto shared storage, plus its autograd identity.
//!
//! Cloning a tensor is cheap (two `Arc`s and a layout). Ops never mutate their inputs;
//! the only in-place operation is [`Tensor::set_data`], used by optimisers on leaves.

use crate::{
    autograd::{self, Var},
    dispatch,
    dtype::DType,
    dtype::Scalar,
    error::{invalid, Error, Result},
    rng::Rng,
    shape::Layout,
    storage::{CpuData, Storage},
    Device,
};
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// An n-dimensional array (f32, f64 or bf16) on one device, with its autograd identity.
///
/// # Examples
///
/// A leaf that requires grad, a matrix product, a sum, and backward:
///
/// ```
/// use mamba_engine::Tensor;
///
/// # fn main() -> mamba_engine::Result<()> {
/// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?.requires_grad();
/// let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 2.0], &[2, 2])?;
/// let loss = a.matmul(&b)?.sum_all()?; // a @ b = [[1, 4], [3, 8]]
/// assert_eq!(loss.item()?, 16.0);
/// loss.backward()?;
/// // d loss / d a[i][k] = sum_j b[k][j]: b's row sums, for each row of a.
/// assert_eq!(a.grad().unwrap().to_vec::<f32>()?, [1.0, 2.0, 1.0, 2.0]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Arc<RwLock<Storage>>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) var: Option<Arc<Var>>,
}

// ---------------------------------------------------------------- construction

impl Tensor {
    /// A fresh contiguous tensor owning `storage`.
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>() * storage.dtype().size(), storage.bytes());
        Tensor {
            dtype: storage.dtype(),
            device: storage.device(),
            storage: Arc::new(RwLock::new(storage)),
            layout: Layout::contiguous(shape),
            var: None,
        }
    }

    /// A tensor sharing this one's storage under another layout (no autograd).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor { storage: self.storage.clone(), layout, dtype: self.dtype, device: self.device, var: None }
    }

    pub fn from_cpu_data(data: CpuData, shape: &[usize]) -> Result<Tensor> {
        let numel = crate::shape::checked_numel("from_vec", shape)?;
        if data.len() != numel {
            return invalid(
                "from_vec",
                format!("{} values cannot fill shape {shape:?} ({numel} elements)", data.len()),
            );
        }
        Ok(Tensor::from_storage(Storage::cpu(data), shape))
    }

    /// A CPU tensor from a `Vec` of f32, f64 or bf16 values in row-major order.
    pub fn from_vec<T: Scalar>(values: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_cpu_data(T::wrap(values), shape)
    }

    /// A CPU tensor of `dtype` from `f64` values.
    pub fn from_f64(values: &[f64], shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::from_cpu_data(CpuData::from_f64(dtype, values.iter().copied()), shape)
    }

    /// A tensor of `shape` filled with `value` (rounded to `dtype`), on `device`.
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        dispatch::full(shape, value, dtype, device)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype, device)
    }

    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    pub fn scalar(value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(&[], value, dtype, device)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype, self.device)
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype, self.device)
    }

    /// Normal(mean, std) samples drawn from `rng` (on the CPU; move them with `.to`).
    pub fn randn(shape: &[usize], mean: f64, std: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n: usize = shape.iter().product();
        let data = CpuData::from_f64(dtype, (0..n).map(|_| mean + std * rng.normal()));
        Tensor::from_storage(Storage::cpu(data), shape)
    }

    /// Uniform samples in [lo, hi) drawn from `rng` (on the CPU).
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n: usize = shape.iter().product();
        let data = CpuData::from_f64(dtype, (0..n).map(|_| lo + (hi - lo) * rng.uniform()));
        Tensor::from_storage(Storage::cpu(data), shape)
    }

    /// 0, 1, .., n-1.
    pub fn arange(n: usize, dtype: DType, device: Device) -> Result<Tensor> {
        let data = CpuData::from_f64(dtype, (0..n).map(|i| i as f64));
        Tensor::from_storage(Storage::cpu(data), &[n]).to(device)
    }

    /// The same values on `device` (a no-op if already there). Moving does not record a
    /// graph node, so a tensor that requires grad must be detached first, which makes the
    /// cut visible: move parameters as leaves (`p.detach().to(device)?.requires_grad()`)
    /// and inputs before building the graph, as training does.
    pub fn to(&self, device: Device) -> Result<Tensor> {
        if device == self.device {
            return Ok(self.clone());
        }
        if self.var.is_some() {
            return invalid(
                "to",
                "this tensor requires grad and gradients do not flow between devices: \
                 call .detach() first (and .requires_grad() on the result to make a leaf there)",
            );
        }
        dispatch::transfer(self, device)
    }
}

// ---------------------------------------------------------------- inspection

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }
    pub fn rank(&self) -> usize {
        self.layout.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Size of axis `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[crate::shape::axis("dim", self.shape(), dim)?])
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Storage> {
        self.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.storage) as *const () as usize
    }

    pub(crate) fn storage_bytes(&self) -> usize {
        self.read().bytes()
    }

    /// True if both tensors view the same buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The values in row-major order as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Scalar>(&self) -> Result<Vec<T>> {
        let t = self.detach().to(Device::Cpu)?.contiguous_detached()?;
        let storage = t.read();
        let data = storage.as_cpu("to_vec")?;
        let Some(all) = T::slice(data) else {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype, rhs: T::DTYPE });
        };
        Ok(all[t.layout.offset..t.layout.offset + t.numel()].to_vec())
    }

    /// The values in row-major order, widened to `f64` whatever the dtype.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        dispatch::to_f64s(self)
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return invalid("item", format!("needs exactly one element, the tensor has shape {:?}", self.shape()));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// A contiguous copy without autograd (shares the buffer if already contiguous).
    pub(crate) fn contiguous_detached(&self) -> Result<Tensor> {
        let _g = autograd::no_grad();
        self.contiguous()
    }
}

// ---------------------------------------------------------------- autograd

impl Tensor {
    /// Make this tensor a leaf that accumulates gradients (a parameter).
    pub fn requires_grad(self) -> Tensor {
        Tensor { var: Some(Var::new(self.shape(), None)), ..self }
    }

    pub fn is_requires_grad(&self) -> bool {
        self.var.is_some()
    }

    /// The same values cut off from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor { var: None, ..self.clone() }
    }

    /// The accumulated gradient of a leaf, if backward reached it.
    pub fn grad(&self) -> Option<Tensor> {
        let var = self.var.as_ref()?;
        let slot = var.grad.lock().unwrap_or_else(|e| e.into_inner());
        slot.clone()
    }

    /// Replace a leaf's accumulated gradient (e.g. after clipping). `None` clears it.
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        let Some(var) = &self.var else { return invalid("set_grad", "this tensor does not require grad") };
        if let Some(g) = &grad {
            if g.device != self.device {
                return Err(Error::DeviceMismatch { op: "set_grad", lhs: self.device, rhs: g.device });
            }
            if g.shape() != self.shape() || g.dtype != self.dtype {
                return invalid(
                    "set_grad",
                    format!(
                        "gradient {:?} {} does not fit tensor {:?} {}",
                        g.shape(),
                        g.dtype,
                        self.shape(),
                        self.dtype
                    ),
                );
            }
        }
        *var.grad.lock().unwrap_or_else(|e| e.into_inner()) = grad.map(|g| g.detach());
        Ok(())
    }

    pub fn zero_grad(&self) {
        if let Some(var) = &self.var {
            *var.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Backpropagate from this tensor, seeded with ones (normally a scalar loss).
    /// Gradients accumulate into the leaves' `.grad()` until zeroed.
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self, self.ones_like()?)
    }

    /// Backpropagate with an explicit `dL/d(self)`.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        autograd::backward(self, grad.clone())
    }

    /// Overwrite this tensor's values in place with those of `src` (same shape and dtype).
    /// For optimiser updates on contiguous leaves; the graph is not involved.
    pub fn set_data(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "set_data",
                lhs: self.shape().to_vec(),
                rhs: src.shape().to_vec(),
                hint: "shapes must be equal".into(),
            });
        }
        if src.dtype != self.dtype {
            return Err(Error::DTypeMismatch { op: "set_data", lhs: self.dtype, rhs: src.dtype });
        }
        if !self.is_contiguous() {
            return invalid("set_data", "the destination must be contiguous");
        }
        if src.device != self.device {
            return Err(Error::DeviceMismatch { op: "set_data", lhs: self.device, rhs: src.device });
        }
        dispatch::copy_within(src, self)
    }

    /// Overwrite this contiguous tensor's values with `values` from the host (rounded to its
    /// dtype), in place: one copy, no new buffer (how a decoder feeds the next token ids into
    /// the buffer its recorded launches read).
    pub fn write_values(&self, values: &[f64]) -> Result<()> {
        if values.len() != self.numel() || !self.is_contiguous() {
            let why = format!(
                "{} values for a tensor of {} elements (contiguous: {})",
                values.len(),
                self.numel(),
                self.is_contiguous()
            );
            return invalid("write_values", why);
        }
        dispatch::write_host(&crate::storage::CpuData::from_f64(self.dtype, values.iter().copied()), self)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {}, {}", self.shape(), self.dtype, self.device)?;
        if self.var.is_some() {
            write!(f, ", requires_grad")?;
        }
        if self.numel() <= 16 {
            if let Ok(v) = self.to_vec_f64() {
                write!(f, ", {v:?}")?;
            }
        }
        write!(f, ")")
    }
}
