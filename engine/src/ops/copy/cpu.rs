//! Strided copies: gather a view into a contiguous buffer, or scatter a view's
//! values into a region of another buffer (concat). Also dtype casts.

use crate::cpu::PAR_MIN;
use crate::{
    dtype::{bf16, DType, Scalar},
    error::Result,
    shape::Layout,
    Tensor,
};
use rayon::prelude::*;

/// The elements of `layout` in row-major order, contiguous.
pub fn copy_strided<T: Scalar>(src: &[T], layout: &Layout) -> Vec<T> {
    crate::ops::elementwise::cpu::map(src, layout, |v| v)
}

/// `dst[dst_layout] = src[src_layout]` element by element (equal shapes).
pub fn copy_into<T: Scalar>(dst: &mut [T], dst_layout: &Layout, src: &[T], src_layout: &Layout) {
    debug_assert_eq!(dst_layout.shape, src_layout.shape);
    let (len, ds, ss) = (src_layout.row_len(), dst_layout.row_stride(), src_layout.row_stride());
    for r in 0..src_layout.rows() {
        let (bd, bs) = (dst_layout.row_offset(r), src_layout.row_offset(r));
        for j in 0..len {
            dst[bd + j * ds] = src[bs + j * ss];
        }
    }
}

/// Convert every element of a view to another element type (through `f64`, which holds
/// every f32 and bf16 value exactly, so each element is rounded once: to nearest even).
pub fn cast<S: Scalar, D: Scalar>(src: &[S], layout: &Layout) -> Vec<D> {
    let contiguous = copy_strided(src, layout);
    if contiguous.len() < PAR_MIN {
        contiguous.iter().map(|&v| D::cast(v.as_f64())).collect()
    } else {
        contiguous.par_iter().map(|&v| D::cast(v.as_f64())).collect()
    }
}

/// [`cast`] to the dtype `to`, as a tensor of the view's shape. The target type is a
/// second type parameter, picked here from the run-time dtype: one arm per dtype.
pub fn cast_to<S: Scalar>(src: &[S], layout: &Layout, to: DType) -> Result<Tensor> {
    match to {
        DType::F32 => Tensor::from_vec(cast::<S, f32>(src, layout), &layout.shape),
        DType::F64 => Tensor::from_vec(cast::<S, f64>(src, layout), &layout.shape),
        DType::BF16 => Tensor::from_vec(cast::<S, bf16>(src, layout), &layout.shape),
    }
}
