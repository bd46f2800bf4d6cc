//! Flip: reverse the order of the entries along one axis.
//!
//! ```text
//! x (.., n, ..)  ->  y (.., n, ..)        y[.., i, ..] = x[.., n - 1 - i, ..]
//! backward:  dx = flip(dy)                (a flip is its own inverse)
//! ```
//!
//! Bidirectional Mamba layers (Vision Mamba) run a second scan over the flipped sequence
//! and flip its output back. A copy, not a view: strides are unsigned here, and the scan
//! wants contiguous inputs anyway. Data movement only, so every storage dtype works on
//! the CPU; the GPU kernel moves f32.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run_copy, CopyKernel, CpuIn},
    dtype::Scalar,
    shape::axis,
    Result, Tensor,
};

impl Tensor {
    /// The entries of axis `dim` (negative counts from the end) in reverse order.
    pub fn flip(&self, dim: isize) -> Result<Tensor> {
        let d = axis("flip", self.shape(), dim)?;
        let out = run_copy(&Flip { dim: d }, &[&self.contiguous_detached()?])?;
        Ok(record("flip", out, &[self], &[], move |g, _, _| Ok(vec![Some(g.flip(d as isize)?)])))
    }
}

/// `[x]`, contiguous -> `x` reversed along `dim`.
struct Flip {
    dim: usize,
}

impl Flip {
    /// The contiguous shape as (outer, n, inner): axes before `dim`, `dim`, axes after.
    fn dims(&self, shape: &[usize]) -> (usize, usize, usize) {
        let (outer, rest) = shape.split_at(self.dim);
        (outer.iter().product(), rest[0], rest[1..].iter().product())
    }
}

impl CopyKernel for Flip {
    const NAME: &'static str = "flip";
    type Out = Tensor;
    #[cfg(feature = "cuda")]
    const CUDA_DTYPES: &'static [crate::DType] = &[crate::DType::F32];

    fn cpu<T: Scalar>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let shape = &x[0].layout.shape;
        Tensor::from_vec(cpu::flip(x[0].elems(), self.dims(shape)), shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::flip(x[0], self.dims(x[0].shape()))
    }
}

/// The differentiable ops this unit records.
pub const OPS: &[&str] = &["flip"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    flip_middle_axis: tol TIGHT, exercises ["flip"],
        // times x itself, so each gradient entry depends on where its value went
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].flip(1)?.mul(&x[0]);
    flip_last_axis_of_transposed: tol TIGHT, exercises ["flip", "permute"],
        inputs |r| vec![rn(&[5, 3], r), rn(&[3, 5], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.flip(-1)?.mul(&x[1]);
    flip_first_axis_twice: tol TIGHT, exercises ["flip"],
        inputs |r| vec![rn(&[4, 2], r), rn(&[4, 2], r)],
        f |x| x[0].flip(0)?.mul(&x[1])?.flip(0);
}

#[cfg(test)]
mod tests {
    use crate::{dtype::bf16, DType, Device, Error, Tensor};

    #[test]
    fn reverses_one_axis() {
        let x = Tensor::arange(6, DType::F64, Device::Cpu).unwrap().reshape(&[2, 3]).unwrap();
        assert_eq!(x.flip(1).unwrap().to_vec_f64().unwrap(), [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
        assert_eq!(x.flip(-2).unwrap().to_vec_f64().unwrap(), [3.0, 4.0, 5.0, 0.0, 1.0, 2.0]);
        let twice = x.flip(0).unwrap().flip(0).unwrap();
        assert_eq!(twice.to_vec_f64().unwrap(), x.to_vec_f64().unwrap());
    }

    #[test]
    fn moves_bf16_and_refuses_a_missing_axis() {
        let x = Tensor::from_vec(vec![bf16::from_f32(1.5), bf16::from_f32(-2.0)], &[2]).unwrap();
        assert_eq!(x.flip(0).unwrap().to_vec::<bf16>().unwrap(), [bf16::from_f32(-2.0), bf16::from_f32(1.5)]);
        assert!(matches!(x.flip(1), Err(Error::Rank { op: "flip", .. })));
        let empty = Tensor::zeros(&[0, 3], DType::F32, Device::Cpu).unwrap();
        assert_eq!(empty.flip(0).unwrap().shape(), &[0, 3]);
    }
}
