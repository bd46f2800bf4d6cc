//! Bad input gives a typed `Error` that names the op and what it was given — never a panic.
//!
//! Every call goes through `refuse`, which catches a panic and turns it into a test
//! failure that says so, and fails if the call succeeded.

use mamba_engine::{
    ops::scan::{selective_scan, ScanArgs},
    DType, Device, Error, Tensor,
};
use mamba_tests::{error_op, randn};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run `f`, which must return an error; return it.
fn refuse<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> mamba_engine::Result<T>) -> Error {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{what}: panicked instead of returning an error"),
        Ok(Ok(v)) => panic!("{what}: succeeded with {v:?}, expected an error"),
        Ok(Err(e)) => e,
    }
}

/// The error names `op`, and its message contains `op` and every fragment.
fn assert_names(e: &Error, op: &str, fragments: &[&str]) {
    assert_eq!(error_op(e), op, "wrong op in {e:?}");
    let msg = e.to_string();
    assert!(msg.contains(op), "message lacks the op name {op:?}: {msg}");
    for f in fragments {
        assert!(msg.contains(f), "message lacks {f:?}: {msg}");
    }
}

fn f64s(shape: &[usize]) -> Tensor {
    randn(shape, 7)
}

#[test]
fn add_with_incompatible_shapes_names_op_and_both_shapes() {
    let e = refuse("add", || f64s(&[2, 3]).add(&f64s(&[4])));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_names(&e, "add", &["[2, 3]", "[4]"]);
    // the same for the other binary ops, and with the larger operand on the right
    for (op, r) in [
        ("sub", f64s(&[3]).sub(&f64s(&[2, 2]))),
        ("mul", f64s(&[2, 3, 4]).mul(&f64s(&[2, 4]))),
        ("div", f64s(&[5, 1]).div(&f64s(&[2, 3]))),
    ] {
        let e = r.expect_err(op);
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
        assert_names(&e, op, &[]);
    }
}

#[test]
fn matmul_inner_dimension_mismatch() {
    let e = refuse("matmul", || f64s(&[2, 3]).matmul(&f64s(&[4, 5])));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_names(&e, "matmul", &["[2, 3]", "[4, 5]"]);
}

#[test]
fn matmul_batch_mismatch_names_both_operand_shapes() {
    // batch axes (2) and (3) do not broadcast; the message should show the operands
    let e = refuse("matmul batch", || f64s(&[2, 3, 4]).matmul(&f64s(&[3, 4, 5])));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_names(&e, "matmul", &["[2, 3, 4]", "[3, 4, 5]"]);
}

#[test]
fn matmul_rank_below_two() {
    let e = refuse("matmul rank 1 lhs", || f64s(&[3]).matmul(&f64s(&[3, 2])));
    assert_names(&e, "matmul", &["[3]"]);
    let e = refuse("matmul rank 1 rhs", || f64s(&[2, 3]).matmul(&f64s(&[3])));
    assert_names(&e, "matmul", &["[3]"]);
    let e = refuse("matmul scalar", || f64s(&[]).matmul(&f64s(&[])));
    assert_names(&e, "matmul", &[]);
}

#[test]
fn reshape_with_wrong_element_count() {
    let e = refuse("reshape", || f64s(&[2, 3]).reshape(&[4, 2]));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_names(&e, "reshape", &["[2, 3]", "[4, 2]"]);
    // also through a non-contiguous input (which would take the copy path)
    let e = refuse("reshape of transposed", || f64s(&[2, 3]).transpose(0, 1)?.reshape(&[7]));
    assert_names(&e, "reshape", &[]);
}

#[test]
fn permute_with_a_bad_permutation() {
    let x = f64s(&[2, 3, 4]);
    for perm in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3], &[2, 1, 0, 3]] {
        let e = refuse("permute", || x.permute(perm));
        assert!(matches!(e, Error::Rank { .. }), "{e:?}");
        assert_names(&e, "permute", &["[2, 3, 4]"]);
    }
    let e = refuse("transpose axis", || x.transpose(0, 3));
    assert!(matches!(e, Error::Rank { .. }), "{e:?}");
}

#[test]
fn narrow_out_of_range() {
    let x = f64s(&[2, 5]);
    let e = refuse("narrow end", || x.narrow(1, 3, 3));
    assert!(matches!(e, Error::Index { op: "narrow", size: 5, .. }), "{e:?}");
    let e = refuse("narrow start", || x.narrow(0, 3, 0));
    assert_names(&e, "narrow", &[]);
    // start + len overflowing usize must not panic either
    let e = refuse("narrow overflow", || x.narrow(1, usize::MAX, 2));
    assert_names(&e, "narrow", &[]);
    let e = refuse("narrow axis", || x.narrow(2, 0, 1));
    assert!(matches!(e, Error::Rank { .. }), "{e:?}");
    let e = refuse("split sizes", || x.split(&[2, 2], 1));
    assert_names(&e, "split", &["[2, 5]"]);
}

#[test]
fn reduction_over_a_bad_axis() {
    let x = f64s(&[2, 3]);
    let e = refuse("sum", || x.sum(&[2], false));
    assert!(matches!(e, Error::Rank { .. }), "{e:?}");
    assert_names(&e, "sum", &["[2, 3]"]);
    let e = refuse("sum negative", || x.sum(&[-3], true));
    assert_names(&e, "sum", &[]);
    let e = refuse("mean", || x.mean(&[5], false));
    assert_names(&e, "mean", &[]);
    let e = refuse("max", || x.max(&[0, 9], false));
    assert_names(&e, "max", &[]);
}

#[test]
fn concat_with_mismatched_shapes() {
    let (a, b) = (f64s(&[2, 3]), f64s(&[3, 3]));
    let e = refuse("concat", || Tensor::concat(&[&a, &b], 1));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_names(&e, "concat", &["[2, 3]", "[3, 3]"]);
    let c = f64s(&[2, 3, 1]);
    let e = refuse("concat rank", || Tensor::concat(&[&a, &c], 0));
    assert_names(&e, "concat", &[]);
    let e = refuse("concat none", || Tensor::concat(&[], 0));
    assert_names(&e, "concat", &[]);
    let e = refuse("concat dtype", || Tensor::concat(&[&a, &a.to_dtype(DType::F32)?], 0));
    assert!(matches!(e, Error::DTypeMismatch { op: "concat", .. }), "{e:?}");
}

#[test]
fn embedding_id_out_of_range() {
    let w = f64s(&[5, 3]);
    let e = refuse("embedding", || w.embedding(&[0, 5, 1], &[3]));
    assert!(matches!(e, Error::Index { op: "embedding", index: 5, size: 5, .. }), "{e:?}");
    assert_names(&e, "embedding", &["5"]);
    // ids that do not fill ids_shape
    let e = refuse("embedding ids_shape", || w.embedding(&[0, 1, 2], &[2, 2]));
    assert_names(&e, "embedding", &[]);
    // a weight that is not (V, D)
    let e = refuse("embedding weight rank", || f64s(&[5]).embedding(&[0], &[1]));
    assert_names(&e, "embedding", &["[5]"]);
}

#[test]
fn cross_entropy_target_out_of_range() {
    let logits = f64s(&[3, 4]);
    let e = refuse("cross_entropy 4", || logits.cross_entropy(&[0, 4, 1], -100));
    assert!(matches!(e, Error::Index { op: "cross_entropy", index: 4, size: 4, .. }), "{e:?}");
    // a negative target that is not the ignore index
    let e = refuse("cross_entropy -1", || logits.cross_entropy(&[0, -1, 1], -100));
    assert!(matches!(e, Error::Index { op: "cross_entropy", index: -1, .. }), "{e:?}");
}

#[test]
fn cross_entropy_wrong_number_of_targets() {
    let logits = f64s(&[3, 4]);
    let e = refuse("cross_entropy len", || logits.cross_entropy(&[0, 1], -100));
    assert_names(&e, "cross_entropy", &["[3, 4]"]);
    let e = refuse("cross_entropy len", || logits.cross_entropy(&[0, 1, 2, 3], -100));
    assert_names(&e, "cross_entropy", &[]);
}

#[test]
fn rms_norm_wrong_weight_shape() {
    let x = f64s(&[2, 3, 4]);
    let e = refuse("rms_norm weight", || x.rms_norm(&f64s(&[3]), 1e-5));
    assert_names(&e, "rms_norm", &["[2, 3, 4]", "[3]"]);
    let e = refuse("rms_norm weight rank", || x.rms_norm(&f64s(&[1, 4]), 1e-5));
    assert_names(&e, "rms_norm", &[]);
    let e = refuse("rms_norm dtype", || x.rms_norm(&f64s(&[4]).to_dtype(DType::F32)?, 1e-5));
    assert!(matches!(e, Error::DTypeMismatch { op: "rms_norm", .. }), "{e:?}");
}

#[test]
fn conv1d_causal_wrong_rank_or_shapes() {
    let w = f64s(&[3, 4]);
    let e = refuse("conv1d x rank", || f64s(&[3, 5]).conv1d_causal(&w, None));
    assert_names(&e, "conv1d_causal", &["[3, 5]"]);
    let e = refuse("conv1d w rank", || f64s(&[2, 3, 5]).conv1d_causal(&f64s(&[3, 4, 1]), None));
    assert_names(&e, "conv1d_causal", &[]);
    let e = refuse("conv1d channels", || f64s(&[2, 2, 5]).conv1d_causal(&w, None));
    assert_names(&e, "conv1d_causal", &[]);
    let e = refuse("conv1d bias", || f64s(&[2, 3, 5]).conv1d_causal(&w, Some(&f64s(&[4]))));
    assert_names(&e, "conv1d_causal", &[]);
}

#[test]
fn from_vec_with_wrong_length() {
    let e = refuse("from_vec", || Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2]));
    assert!(matches!(e, Error::Invalid { op: "from_vec", .. }), "{e:?}");
    assert_names(&e, "from_vec", &["[2, 2]"]);
    let e = refuse("from_f64", || Tensor::from_f64(&[1.0; 5], &[2, 3], DType::F64));
    assert_names(&e, "from_vec", &[]);
}

#[test]
fn item_on_a_non_scalar() {
    let e = refuse("item", || f64s(&[2]).item());
    assert!(matches!(e, Error::Invalid { op: "item", .. }), "{e:?}");
    assert_names(&e, "item", &["[2]"]);
    // one element of any rank is fine
    assert_eq!(Tensor::full(&[1, 1], 2.5, DType::F32, Device::Cpu).unwrap().item().unwrap(), 2.5);
}

#[test]
fn dtype_mismatch_f32_and_f64() {
    let (a, b) = (f64s(&[2, 3]), f64s(&[2, 3]).to_dtype(DType::F32).unwrap());
    let e = refuse("add", || a.add(&b));
    assert_eq!(e, Error::DTypeMismatch { op: "add", lhs: DType::F64, rhs: DType::F32 });
    let e = refuse("matmul", || b.matmul(&a.transpose(0, 1)?));
    assert!(matches!(e, Error::DTypeMismatch { op: "matmul", .. }), "{e:?}");
    let e = refuse("to_vec", || a.to_vec::<f32>());
    assert!(matches!(e, Error::DTypeMismatch { .. }), "{e:?}");
    let e = refuse("set_data", || a.set_data(&b));
    assert!(matches!(e, Error::DTypeMismatch { op: "set_data", .. }), "{e:?}");
}

#[test]
fn backward_on_a_tensor_that_does_not_require_grad() {
    let e = refuse("backward", || f64s(&[]).exp()?.backward());
    assert!(matches!(e, Error::Invalid { op: "backward", .. }), "{e:?}");
    // a seed of the wrong shape
    let x = f64s(&[2, 3]).requires_grad();
    let e = refuse("backward_with", || x.exp()?.backward_with(&f64s(&[3, 2])));
    assert_names(&e, "backward", &["[3, 2]", "[2, 3]"]);
}

#[test]
fn broadcast_as_a_smaller_shape() {
    let e = refuse("broadcast_as", || f64s(&[2, 3]).broadcast_as(&[3]));
    assert_names(&e, "broadcast", &["[2, 3]"]);
    let e = refuse("broadcast_as", || f64s(&[2, 3]).broadcast_as(&[4, 3]));
    assert_names(&e, "broadcast", &[]);
}

#[test]
fn selective_scan_with_inconsistent_shapes() {
    // u (B, D, L) = (1, 2, 3), A (D, N) = (2, 4)
    let (u, a, bc, d) = (f64s(&[1, 2, 3]), f64s(&[2, 4]), f64s(&[1, 4, 3]), f64s(&[2]));
    let ok = ScanArgs {
        u: &u,
        delta: &u,
        a: &a,
        b: &bc,
        c: &bc,
        d: &d,
        z: None,
        delta_bias: None,
        softplus: true,
        initial_state: None,
        chunk: 2,
    };
    assert!(selective_scan(&ok).is_ok(), "the consistent arguments are accepted");
    let c_bad = f64s(&[1, 3, 3]);
    let e = refuse("scan C", || selective_scan(&ScanArgs { c: &c_bad, ..ok }).map(|o| o.out));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_names(&e, "selective_scan", &["[1, 3, 3]", "[1, 4, 3]"]);
    let u_rank = f64s(&[2, 3]);
    let e = refuse("scan u rank", || selective_scan(&ScanArgs { u: &u_rank, ..ok }).map(|o| o.out));
    assert_names(&e, "selective_scan", &["[2, 3]"]);
    let e = refuse("scan chunk", || selective_scan(&ScanArgs { chunk: 0, ..ok }).map(|o| o.out));
    assert_names(&e, "selective_scan", &[]);
    let d32 = d.to_dtype(DType::F32).unwrap();
    let e = refuse("scan dtype", || selective_scan(&ScanArgs { d: &d32, ..ok }).map(|o| o.out));
    assert!(matches!(e, Error::DTypeMismatch { op: "selective_scan", .. }), "{e:?}");
}

#[test]
fn moving_to_the_gpu_says_what_is_wrong() {
    let leaf = Tensor::zeros(&[2, 3], DType::F32, Device::Cpu).unwrap().requires_grad();
    // Gradients do not cross devices: a tensor that requires grad is refused, on any build.
    let e = refuse("to() of a leaf", || leaf.to(Device::Cuda));
    assert_names(&e, "to", &["detach()"]);
    if !Device::Cuda.is_compiled() {
        let e = refuse("to(Cuda) without the feature", || leaf.detach().to(Device::Cuda));
        assert_names(&e, "to", &["--features cuda"]);
        let e = refuse("zeros on Cuda without the feature", || Tensor::zeros(&[2], DType::F32, Device::Cuda));
        assert_names(&e, "full", &["--features cuda"]);
    }
}
