//! The ops that copy values into a fresh buffer: `contiguous` (a strided view gathered in
//! row-major order), `concat` (pieces scattered into their slots of one buffer) and
//! `to_dtype` (every element converted). Data movement only, so their kernels take every
//! storage dtype, bf16 included (`dispatch::CopyKernel`).
//!
//! ```text
//! contiguous:  y[i] = x[layout(i)]                   backward: dx = dy
//! concat:      y = [x_1 | x_2 | ...] along dim       backward: dx_k = dy[slot k] (a narrow)
//! to_dtype:    y[i] = round(x[i])                    backward: dx = dy converted back
//! ```
//!
//! Conversions round to nearest, ties to even (`dtype::bf16_from_f32` and its CUDA twin).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run_copy, CopyKernel, CpuIn},
    dtype::{DType, Scalar},
    error::{invalid, Error},
    shape::{axis, Layout},
    Result, Tensor,
};

impl Tensor {
    /// The same values in a fresh row-major buffer (or `self` if already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let out = run_copy(&Contiguous, &[self])?;
        Ok(record("copy", out, &[self], &[], |g, _, _| Ok(vec![Some(g.clone())])))
    }

    /// Join tensors along `dim`; all other axes must agree. Backward slices the gradient.
    pub fn concat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let Some(first) = tensors.first() else { return invalid("concat", "needs at least one tensor") };
        let d = axis("concat", first.shape(), dim)?;
        let mut shape = first.shape().to_vec();
        shape[d] = 0;
        for t in tensors {
            super::check_pair("concat", first, t)?;
            let ok = t.rank() == first.rank() && (0..t.rank()).all(|i| i == d || t.shape()[i] == first.shape()[i]);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                    hint: format!("all axes but {d} must match"),
                });
            }
            shape[d] += t.shape()[d];
        }
        let out = run_copy(&Concat { dim: d, shape: &shape }, tensors)?;
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
        Ok(record("concat", out, tensors, &[], move |g, _, _| {
            let mut start = 0;
            let mut grads = Vec::new();
            for &n in &sizes {
                grads.push(Some(g.narrow(d as isize, start, n)?));
                start += n;
            }
            Ok(grads)
        }))
    }

    /// Convert to another dtype (rounding to nearest even). Backward converts the gradient back.
    /// The result is contiguous, except that a permutation of a contiguous tensor (a transpose,
    /// say) converted to f32 comes back in the same memory order, as PyTorch keeps a tensor's
    /// format: the kernel then reads and writes the block in order instead of gathering it
    /// (the bf16 checkpoints of `--precision bf16` are widened so, issue 11). Only to f32,
    /// which every kernel takes in any layout; bf16 views have no GPU copy kernel.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = match self.layout.memory_order() {
            Some(order) if dtype == DType::F32 && !self.is_contiguous() => {
                // the block in memory order (a contiguous view), cast, viewed back
                let mut back = vec![0; order.len()];
                for (i, &a) in order.iter().enumerate() {
                    back[a] = i;
                }
                run_copy(&Cast { to: dtype }, &[&self.detach().permute(&order)?])?.permute(&back)?
            }
            _ => run_copy(&Cast { to: dtype }, &[self])?,
        };
        // One node either way, so the gradient comes back contiguous in `self`'s dtype (no
        // GPU kernel copies a bf16 view: `--recompute`'s checkpoint needs it so).
        let from = self.dtype();
        Ok(record("to_dtype", out, &[self], &[], move |g, _, _| Ok(vec![Some(g.to_dtype(from)?)])))
    }
}

/// `[x]` (any strides) -> its values in row-major order.
struct Contiguous;

impl CopyKernel for Contiguous {
    const NAME: &'static str = "copy";
    type Out = Tensor;
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [DType] = &[DType::F32];

    fn cpu<T: Scalar>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        Tensor::from_vec(cpu::copy_strided(x[0].data, x[0].layout), &x[0].layout.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::contiguous(x[0])
    }
}

/// The pieces (any strides) joined along `dim` into a fresh tensor of `shape`.
struct Concat<'a> {
    dim: usize,
    shape: &'a [usize],
}

impl CopyKernel for Concat<'_> {
    const NAME: &'static str = "concat";
    type Out = Tensor;
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [DType] = &[DType::F32];

    fn cpu<T: Scalar>(&self, pieces: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let mut out = vec![T::default(); self.shape.iter().product()];
        let full = Layout::contiguous(self.shape);
        let mut start = 0;
        for t in pieces {
            let len = t.layout.shape[self.dim];
            cpu::copy_into(&mut out, &full.narrow(self.dim, start, len), t.data, t.layout);
            start += len;
        }
        Tensor::from_vec(out, self.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, pieces: &[&Tensor]) -> Result<Tensor> {
        cuda::concat(pieces, self.dim, self.shape)
    }
}

/// `[x]` (any strides) -> its values converted to `to`.
struct Cast {
    to: DType,
}

impl CopyKernel for Cast {
    const NAME: &'static str = "to_dtype";
    type Out = Tensor;
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [DType] = &[DType::F32, DType::F64, DType::BF16];

    fn cpu<T: Scalar>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        cpu::cast_to(x[0].data, x[0].layout, self.to)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::cast(x[0], self.to)
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["copy", "concat", "to_dtype"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    concat: tol TIGHT, exercises ["concat"],
        // three pieces along axis 1, one a transposed view; then along axis 0
        inputs |r| vec![rn(&[2, 3], r), rn(&[2, 1], r), rn(&[4, 2], r)],
        f |x| {
            let c = strided(x[2].transpose(0, 1)?)?;
            let row = Tensor::concat(&[&x[0], &x[1], &c], 1)?;
            Tensor::concat(&[&row, &row.exp()?], 0)
        };
    contiguous_copy: tol TIGHT, exercises ["copy"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| {
            let c = strided(x[0].permute(&[1, 2, 0])?)?.contiguous()?;
            if !c.is_contiguous() {
                return Err(Error::Invalid { op: "test", msg: "contiguous() returned a strided tensor".into() });
            }
            c.tanh()
        };
    to_dtype_keeps_a_transpose_in_memory_order: tol F32_PATH, exercises ["to_dtype", "permute"],
        // a permuted view converts block-wise and comes back as the same permutation
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| {
            let t = x[0].permute(&[2, 0, 1])?.to_dtype(DType::F32)?;
            if t.is_contiguous() || t.shape() != [4, 2, 3] {
                return Err(Error::Invalid { op: "test", msg: "the permutation was not kept".into() });
            }
            t.tanh()?.to_dtype(DType::F64)
        };
    to_dtype_round_trip: tol F32_PATH, exercises ["to_dtype"],
        inputs |r| vec![rn(&[3, 4], r)],
        f |x| x[0].to_dtype(DType::F32)?.to_dtype(DType::F64);
    to_dtype_f32_compute: tol F32_PATH, exercises ["to_dtype", "tanh", "mul", "matmul"],
        // the f32 kernels of a few ops, differentiated through the casts
        inputs |r| vec![rn(&[3, 4], r), rn(&[4, 2], r)],
        f |x| {
            let (a, b) = (x[0].to_dtype(DType::F32)?, x[1].to_dtype(DType::F32)?);
            a.tanh()?.mul(&a)?.matmul(&b)?.to_dtype(DType::F64)
        };
}


#[cfg(test)]
mod tests {
    use crate::{
        dtype::{bf16, bf16_from_f32, bf16_from_f64},
        DType, Device, Error, Rng, Tensor,
    };

    #[test]
    fn to_bf16_rounds_each_element_once_through_any_view() {
        let mut rng = Rng::new(3);
        let x = Tensor::randn(&[6, 5], 0.0, 100.0, DType::F32, &mut rng);
        let view = x.transpose(0, 1).unwrap().narrow(1, 1, 4).unwrap();
        let want: Vec<bf16> = view.to_vec::<f32>().unwrap().iter().map(|&v| bf16_from_f32(v)).collect();
        let b = view.to_dtype(DType::BF16).unwrap();
        assert_eq!((b.dtype(), b.shape()), (DType::BF16, &[5, 4][..]));
        assert_eq!(b.to_vec::<bf16>().unwrap(), want);
        // back to f32 and f64 exactly
        let back: Vec<f32> = b.to_dtype(DType::F32).unwrap().to_vec().unwrap();
        assert!(back.iter().zip(&want).all(|(a, w)| a.to_bits() == w.to_f32().to_bits()));
        let wide: Vec<f64> = b.to_dtype(DType::F64).unwrap().to_vec().unwrap();
        assert!(wide.iter().zip(&want).all(|(a, w)| *a == w.to_f64()));
        // f64 -> bf16 is rounded once (not through f32)
        let x64 = Tensor::randn(&[7], 0.0, 1.0, DType::F64, &mut rng);
        let want: Vec<bf16> = x64.to_vec::<f64>().unwrap().iter().map(|&v| bf16_from_f64(v)).collect();
        assert_eq!(x64.to_dtype(DType::BF16).unwrap().to_vec::<bf16>().unwrap(), want);
    }

    #[test]
    fn bf16_tensors_move_but_do_not_compute() {
        let v: Vec<bf16> = [1.5f32, -2.0, 0.25, 3.0, 8.0, -0.5].iter().map(|&f| bf16_from_f32(f)).collect();
        let t = Tensor::from_vec(v.clone(), &[2, 3]).unwrap();
        // data movement works
        let c = t.transpose(0, 1).unwrap().contiguous().unwrap();
        assert_eq!(c.to_vec::<bf16>().unwrap(), [v[0], v[3], v[1], v[4], v[2], v[5]]);
        let cat = Tensor::concat(&[&t, &t], 0).unwrap();
        assert_eq!(cat.to_vec::<bf16>().unwrap(), [v.clone(), v.clone()].concat());
        let dst = Tensor::zeros(&[2, 3], DType::BF16, Device::Cpu).unwrap();
        dst.set_data(&t).unwrap();
        assert_eq!(dst.to_vec::<bf16>().unwrap(), v);
        assert_eq!(Tensor::full(&[1], 1.0 + 2f64.powi(-8), DType::BF16, Device::Cpu).unwrap().item().unwrap(), 1.0);
        // compute is refused by name, device and dtype
        let err = t.exp().unwrap_err();
        assert_eq!(err, Error::Unsupported { op: "exp", device: Device::Cpu, dtype: DType::BF16 });
        assert!(err.to_string().contains("to_dtype"), "{err}");
        assert!(matches!(t.sigmoid(), Err(Error::Unsupported { op: "sigmoid", .. })));
        assert!(matches!(t.sum_all(), Err(Error::Unsupported { op: "sum", .. })));
    }
}
