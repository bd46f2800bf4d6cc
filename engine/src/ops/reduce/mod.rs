//! Reductions: sum, mean and max over axes.
//! Backward of a sum broadcasts the gradient back over the reduced axes; backward of
//! a max routes it to the elements that attained the max (split evenly among ties).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    error::{invalid, Error},
    shape::axis,
    Result, Tensor,
};
pub use cpu::ReduceOp;

/// Sorted, unique, non-negative axes.
fn normalize_axes(op: &'static str, shape: &[usize], axes: &[isize]) -> Result<Vec<usize>> {
    let mut out = axes.iter().map(|&a| axis(op, shape, a)).collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The input's shape with `axes` set to 1.
fn keepdim_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
}

/// `[x]` (any strides) reduced over the sorted, unique `axes`; the result keeps every axis.
struct Reduce<'a> {
    op: ReduceOp,
    axes: &'a [usize],
}

impl Kernel for Reduce<'_> {
    const NAME: &'static str = "reduce";
    type Out = Tensor;

    fn name(&self) -> &'static str {
        match self.op {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
        }
    }

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let shape = keepdim_shape(&x[0].layout.shape, self.axes);
        Tensor::from_vec(cpu::reduce(self.op, x[0].data, x[0].layout, self.axes), &shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::reduce(self.op, x[0], self.axes, &keepdim_shape(x[0].shape(), self.axes))
    }
}

/// Reduce with the kernel; the result keeps every axis.
fn reduce_forward(op: ReduceOp, x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    run(&Reduce { op, axes }, &[x])
}

/// Drop the reduced axes unless `keepdim`.
fn finish(t: Tensor, shape: &[usize], axes: &[usize], keepdim: bool) -> Result<Tensor> {
    if keepdim {
        return Ok(t);
    }
    let squeezed: Vec<usize> = shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
    t.reshape(&squeezed)
}

impl Tensor {
    /// Sum over `axes` (negative axes count from the end).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = normalize_axes("sum", self.shape(), axes)?;
        let out = reduce_forward(ReduceOp::Sum, self, &axes)?;
        let shape = self.shape().to_vec();
        let out = record("sum", out, &[self], &[], move |g, _, _| Ok(vec![Some(g.broadcast_as(&shape)?)]));
        finish(out, self.shape(), &axes, keepdim)
    }

    /// Sum of every element, as a scalar.
    pub fn sum_all(&self) -> Result<Tensor> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&all, false)
    }

    /// Mean over `axes` = sum / (number of elements reduced).
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let norm = normalize_axes("mean", self.shape(), axes)?;
        let count: usize = norm.iter().map(|&a| self.shape()[a]).product();
        if count == 0 {
            return invalid("mean", format!("cannot average over an empty axis of shape {:?}", self.shape()));
        }
        self.sum(axes, keepdim)?.affine(1.0 / count as f64, 0.0)
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&all, false)
    }

    /// Max over `axes`.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = normalize_axes("max", self.shape(), axes)?;
        if axes.iter().any(|&a| self.shape()[a] == 0) {
            return invalid("max", format!("cannot take the max over an empty axis of shape {:?}", self.shape()));
        }
        let out = reduce_forward(ReduceOp::Max, self, &axes)?;
        let saved = out.clone();
        let axes_b: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let out = record("max", out, &[self], &[self, &saved], move |g, s, _| {
            let (x, m) = (&s[0], &s[1]);
            let mask = x.eq_mask(&m.broadcast_as(x.shape())?)?;
            let count = mask.sum(&axes_b, true)?;
            Ok(vec![Some(mask.mul(&g.div(&count)?)?)])
        });
        finish(out, self.shape(), &axes, keepdim)
    }

    /// Sum this gradient down to `shape`, undoing a broadcast from `shape` to `self.shape()`.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self.rank().checked_sub(shape.len()).ok_or_else(|| not_broadcast(self.shape(), shape))?;
        let mut axes = Vec::new();
        for (i, &d) in self.shape().iter().enumerate() {
            if i < extra {
                axes.push(i as isize);
            } else if shape[i - extra] != d {
                if shape[i - extra] != 1 {
                    return Err(not_broadcast(self.shape(), shape));
                }
                axes.push(i as isize);
            }
        }
        self.sum(&axes, true)?.reshape(shape)
    }
}

fn not_broadcast(from: &[usize], to: &[usize]) -> Error {
    Error::ShapeMismatch {
        op: "sum_to_shape",
        lhs: from.to_vec(),
        rhs: to.to_vec(),
        hint: "the target is not a broadcast source of this shape".into(),
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["sum", "max"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    sum_axes_keepdim: tol TIGHT, exercises ["sum"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].sum(&[0, 2], true);
    sum_negative_axis: tol TIGHT, exercises ["sum", "reshape"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].sum(&[-1], false);
    sum_all_of_transposed: tol TIGHT, exercises ["sum", "permute"],
        inputs |r| vec![rn(&[3, 4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.sqr()?.sum_all();
    mean_keepdim: tol TIGHT, exercises ["sum", "affine"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].mean(&[0, 2], true);
    mean_no_keepdim: tol TIGHT, exercises ["sum", "affine", "reshape"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].mean(&[1], false);
    max_keepdim: tol TIGHT, exercises ["max"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].max(&[1], true);
    max_no_keepdim: tol TIGHT, exercises ["max", "reshape"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].max(&[0, 2], false);
    max_of_strided: tol TIGHT, exercises ["max", "narrow"],
        inputs |r| vec![rn(&[3, 7], r)],
        f |x| strided(x[0].narrow(1, 2, 4)?)?.max(&[-1], false);
}
