//! Embedding lookup: gather rows of a `(V, D)` table by token id.
//!
//! ```text
//! weight (V, D), ids (ids_shape)  ->  y (ids_shape..., D)     y[n, :] = weight[ids[n], :]
//! backward:  dweight = zeros(V, D);  dweight[ids[n], :] += dy[n, :]   for every n
//! ```
//!
//! The backward is a scatter-add: a token that occurs twice gets both gradients. The op
//! saves no tensor, only the ids themselves, as a `Vec<usize>` moved into the backward
//! closure; they are not a tensor, so the memory ledger does not count their
//! `8 * ids.len()` bytes.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{
    autograd::record,
    dispatch::{run, CpuIn, Kernel},
    dtype::Elem,
    error::{invalid, Error},
    Result, Tensor,
};

impl Tensor {
    /// Rows of this `(V, D)` table picked by `ids` (row-major, shaped `ids_shape`);
    /// returns `ids_shape + [D]`. The gradient flows to the table only.
    pub fn embedding(&self, ids: &[usize], ids_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "embedding";
        let &[v, d] = self.shape() else {
            return Err(Error::Rank { op: OP, shape: self.shape().to_vec(), expected: "rank 2: (vocab, dim)".into() });
        };
        let n = crate::shape::checked_numel("embedding", ids_shape)?;
        if ids.len() != n {
            return invalid(OP, format!("{} ids cannot fill ids_shape {ids_shape:?} ({n} elements)", ids.len()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id >= v) {
            return Err(Error::Index { op: OP, index: bad as i64, size: v, what: "token id" });
        }
        let mut shape = ids_shape.to_vec();
        shape.push(d);
        let out = run(&EmbeddingForward { ids, shape: &shape }, &[&self.contiguous_detached()?])?;
        let ids = ids.to_vec();
        Ok(record(OP, out, &[self], &[], move |g, _, _| {
            Ok(vec![Some(run(&EmbeddingBackward { ids: &ids, v, d }, &[&g.contiguous_detached()?])?)])
        }))
    }
}

/// `[table (v, d)]`, contiguous -> the rows `ids`, shaped `shape`.
struct EmbeddingForward<'a> {
    ids: &'a [usize],
    shape: &'a [usize],
}

impl Kernel for EmbeddingForward<'_> {
    const NAME: &'static str = "embedding";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        let d = x[0].layout.shape[1];
        Tensor::from_vec(cpu::embedding_forward(x[0].elems(), d, self.ids), self.shape)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::embedding_forward(x[0], self.ids, self.shape)
    }
}

/// `[dy (ids.len(), d)]`, contiguous -> the `(v, d)` scatter-add of its rows.
struct EmbeddingBackward<'a> {
    ids: &'a [usize],
    v: usize,
    d: usize,
}

impl Kernel for EmbeddingBackward<'_> {
    const NAME: &'static str = "embedding";
    type Out = Tensor;

    fn cpu<T: Elem>(&self, x: &[CpuIn<'_, T>]) -> Result<Tensor> {
        Tensor::from_vec(cpu::embedding_backward(x[0].elems(), self.ids, self.v, self.d), &[self.v, self.d])
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, x: &[&Tensor]) -> Result<Tensor> {
        cuda::embedding_backward(x[0], self.ids, self.v, self.d)
    }
}

/// The differentiable ops this unit records (autograd refuses names no unit lists).
pub const OPS: &[&str] = &["embedding"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    embedding_repeated_ids: tol TIGHT, exercises ["embedding"],
        // ids 1 and 3 repeat (their rows' gradients add up); 2 and 4 are never used
        inputs |r| vec![rn(&[5, 3], r)],
        f |x| x[0].embedding(&[1, 3, 1, 0, 3, 3], &[2, 3]);
    embedding_transposed_weight: tol TIGHT, exercises ["embedding", "permute"],
        inputs |r| vec![rn(&[3, 5], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.embedding(&[4, 4, 2], &[3]);
}

#[cfg(test)]
mod tests {
    use crate::{
        autograd::saved_in_graph,
        gradcheck::{check, Tolerance},
        DType, Device, Error, Rng, Tensor,
    };

    #[test]
    fn output_has_ids_shape_plus_d() {
        let w = Tensor::arange(12, DType::F32, Device::Cpu).unwrap().reshape(&[4, 3]).unwrap(); // row r = 3r..3r+2
        let y = w.embedding(&[3, 0, 3, 1], &[2, 2]).unwrap();
        assert_eq!(y.shape(), &[2, 2, 3]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![9., 10., 11., 0., 1., 2., 9., 10., 11., 3., 4., 5.]);
        let one = w.embedding(&[2], &[]).unwrap(); // a single id, scalar-shaped
        assert_eq!(one.shape(), &[3]);
        assert_eq!(w.embedding(&[], &[0]).unwrap().shape(), &[0, 3]);
    }

    #[test]
    fn gradcheck_with_repeated_ids() {
        let mut rng = Rng::new(31);
        let w = Tensor::randn(&[5, 3], 0.0, 1.0, DType::F64, &mut rng);
        let ids = [4, 1, 1, 0, 4, 4];
        let r = check(|xs| xs[0].embedding(&ids, &[2, 3]), &[w], Tolerance::default()).unwrap();
        assert!(r.ops.contains(&"embedding"));
        assert_eq!(r.checked, 15);
    }

    #[test]
    fn gradcheck_non_contiguous_table() {
        // the table is stored (D, V) and transposed: a non-contiguous (V, D) view
        let mut rng = Rng::new(32);
        let wt = Tensor::randn(&[3, 6], 0.0, 1.0, DType::F64, &mut rng);
        let f = |xs: &[Tensor]| {
            let w = xs[0].transpose(0, 1)?;
            assert!(!w.is_contiguous());
            w.embedding(&[5, 2, 5, 0], &[4])
        };
        check(f, &[wt], Tolerance::default()).unwrap();
    }

    #[test]
    fn backward_counts_each_occurrence_and_saves_no_tensor() {
        let w = Tensor::zeros(&[4, 2], DType::F32, Device::Cpu).unwrap().requires_grad();
        let y = w.embedding(&[1, 3, 1, 1], &[4]).unwrap();
        assert_eq!(saved_in_graph(&y).per_op["embedding"].bytes, 0);
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().to_vec::<f32>().unwrap(), vec![0., 0., 3., 3., 0., 0., 1., 1.]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let w = Tensor::zeros(&[4, 2], DType::F32, Device::Cpu).unwrap();
        let err = w.embedding(&[0, 4], &[2]).unwrap_err();
        assert_eq!(err, Error::Index { op: "embedding", index: 4, size: 4, what: "token id" });
        assert!(err.to_string().contains('4'), "{err}");
        assert!(matches!(w.embedding(&[0, 1, 2], &[2]), Err(Error::Invalid { op: "embedding", .. })));
        assert!(w.embedding(&[0], &[]).is_ok());
        let flat = Tensor::zeros(&[8], DType::F32, Device::Cpu).unwrap();
        assert!(matches!(flat.embedding(&[0], &[1]), Err(Error::Rank { op: "embedding", .. })));
        let cube = Tensor::zeros(&[2, 2, 2], DType::F32, Device::Cpu).unwrap();
        assert!(matches!(cube.embedding(&[0], &[1]), Err(Error::Rank { .. })));
    }
}
