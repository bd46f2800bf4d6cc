//! The table of op cases: for every differentiable op, one or more small functions of
//! seeded random f64 inputs that exercise it, many through non-contiguous views
//! (transposed, permuted, narrowed, broadcast). Two users:
//! - `tests/ops_gradcheck.rs` checks each case's gradient against central differences;
//! - the GPU check (`tests/gpu_check/ops.rs`) runs each case on the CPU and on the GPU and
//!   compares values and gradients.

use crate::{randn_rng, scan_args, scan_inputs};
use mamba_engine::{
    error::Error,
    gradcheck::Tolerance,
    ops::scan::{selective_scan, ScanArgs},
    DType, Result, Rng, Tensor,
};
/// The default f64 tolerance: central differences with eps 1e-6 are accurate to ~1e-9.
pub const TIGHT: Tolerance = Tolerance { eps: 1e-6, atol: 1e-6, rtol: 1e-5 };
/// For functions that pass through f32: a larger step so rounding (~1e-7) stays small
/// against it, and a tolerance that admits the step's O(eps^2) truncation error.
pub const F32_PATH: Tolerance = Tolerance { eps: 1e-2, atol: 1e-3, rtol: 1e-2 };

pub struct Case {
    pub name: &'static str,
    pub tol: Tolerance,
    /// Ops this case is about: they must appear in the graph of `f`.
    pub exercises: &'static [&'static str],
    pub inputs: fn(&mut Rng) -> Vec<Tensor>,
    pub f: fn(&[Tensor]) -> Result<Tensor>,
}

/// A fixed seed per case, derived from its name (FNV-1a), so adding a case moves no other.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn pos(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::rand_uniform(shape, 0.5, 2.0, DType::F64, rng)
}

fn rn(shape: &[usize], rng: &mut Rng) -> Tensor {
    randn_rng(shape, rng)
}

/// Fail inside `f` if a view the case relies on turned out contiguous (the case would
/// then silently stop testing the strided path).
fn strided(t: Tensor) -> Result<Tensor> {
    if t.is_contiguous() {
        return Err(Error::Invalid {
            op: "test",
            msg: format!("expected a non-contiguous view, got layout {:?}", t.layout()),
        });
    }
    Ok(t)
}

/// Declares the case table as `cases()`.
macro_rules! cases {
    ($( $name:ident: tol $tol:expr, exercises [$($op:literal),*], inputs |$rng:ident| $inputs:expr, f |$x:ident| $f:expr; )*) => {
        /// Every case, in table order.
        pub fn cases() -> Vec<Case> {
            vec![$(Case { name: stringify!($name), tol: $tol, exercises: &[$($op),*], inputs: |$rng| $inputs, f: |$x| $f }),*]
        }
    };
}

cases! {
    // ------------------------------------------------------------ binary, broadcasting
    add_broadcast: tol TIGHT, exercises ["add"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[3, 1], r), rn(&[4], r)],
        f |x| x[0].add(&x[1])?.add(&x[2]);
    sub_broadcast_both_sides: tol TIGHT, exercises ["sub"],
        // (2,3,4) - (3,1), and (4,) - (3,1) = (3,4) where both operands stretch
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[3, 1], r), rn(&[4], r)],
        f |x| x[0].sub(&x[1])?.mul(&x[2].sub(&x[1])?);
    mul_broadcast: tol TIGHT, exercises ["mul"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[3, 1], r), rn(&[4], r)],
        f |x| x[0].mul(&x[1])?.mul(&x[2]);
    div_broadcast: tol TIGHT, exercises ["div"],
        inputs |r| vec![rn(&[2, 3, 4], r), pos(&[3, 1], r), pos(&[4], r)],
        f |x| x[0].div(&x[1])?.div(&x[2]);
    binary_on_strided_views: tol TIGHT, exercises ["permute", "narrow", "add", "mul", "div"],
        // a (4,3,2) reversed to (2,3,4); b (3,6) sliced to (3,4): neither is contiguous
        inputs |r| vec![rn(&[4, 3, 2], r), pos(&[3, 6], r)],
        f |x| {
            let a = strided(x[0].permute(&[2, 1, 0])?)?;
            let b = strided(x[1].narrow(1, 1, 4)?)?;
            a.add(&b)?.mul(&a)?.div(&b)
        };

    // ------------------------------------------------------------ unary
    neg: tol TIGHT, exercises ["neg"],
        inputs |r| vec![rn(&[3, 4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.neg();
    affine_scalars: tol TIGHT, exercises ["affine"],
        inputs |r| vec![rn(&[2, 5], r)],
        f |x| x[0].add_scalar(0.5)?.mul_scalar(-2.0)?.affine(3.0, 1.0)?.sub_scalar(2.0)?.div_scalar(4.0);
    exp: tol TIGHT, exercises ["exp"],
        inputs |r| vec![rn(&[3, 6], r)],
        f |x| strided(x[0].narrow(1, 1, 4)?)?.exp();
    log: tol TIGHT, exercises ["log"],
        inputs |r| vec![pos(&[3, 4], r)],
        f |x| x[0].log();
    sqrt: tol TIGHT, exercises ["sqrt"],
        inputs |r| vec![pos(&[4, 3], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.sqrt();
    rsqrt: tol TIGHT, exercises ["rsqrt"],
        inputs |r| vec![pos(&[3, 4], r)],
        f |x| x[0].rsqrt();
    powf_fractional_and_negative: tol TIGHT, exercises ["powf"],
        inputs |r| vec![pos(&[3, 4], r)],
        f |x| x[0].powf(2.5)?.add(&x[0].powf(-1.5)?);
    powf_integer_on_negative_base: tol TIGHT, exercises ["powf"],
        inputs |r| vec![rn(&[2, 5], r)],
        f |x| x[0].powf(3.0);
    sigmoid: tol TIGHT, exercises ["sigmoid"],
        inputs |r| vec![rn(&[3, 4], r).mul_scalar(2.0).unwrap()],
        f |x| x[0].sigmoid();
    silu: tol TIGHT, exercises ["silu"],
        inputs |r| vec![rn(&[4, 3], r).mul_scalar(2.0).unwrap()],
        f |x| strided(x[0].transpose(0, 1)?)?.silu();
    softplus: tol TIGHT, exercises ["softplus"],
        inputs |r| vec![rn(&[3, 4], r).mul_scalar(3.0).unwrap()],
        f |x| x[0].softplus();
    tanh: tol TIGHT, exercises ["tanh"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| strided(x[0].permute(&[2, 0, 1])?)?.tanh();

    // ------------------------------------------------------------ matmul
    matmul_2d: tol TIGHT, exercises ["matmul"],
        inputs |r| vec![rn(&[3, 4], r), rn(&[4, 5], r)],
        f |x| x[0].matmul(&x[1]);
    matmul_batched_broadcast_transposed_rhs: tol TIGHT, exercises ["matmul", "permute"],
        // (2,1,3,4) @ (3,5,4)^T: batch (2,1) with (3,) broadcasts to (2,3)
        inputs |r| vec![rn(&[2, 1, 3, 4], r), rn(&[3, 5, 4], r)],
        f |x| x[0].matmul(&strided(x[1].transpose(-1, -2)?)?);
    matmul_transposed_lhs: tol TIGHT, exercises ["matmul", "permute"],
        inputs |r| vec![rn(&[4, 3], r), rn(&[4, 2], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.matmul(&x[1]);
    matmul_broadcast_operand: tol TIGHT, exercises ["matmul", "broadcast"],
        // a stride-0 batch axis: the gradient of `a` is summed over the batch
        inputs |r| vec![rn(&[3, 4], r), rn(&[2, 4, 5], r)],
        f |x| strided(x[0].broadcast_as(&[2, 3, 4])?)?.matmul(&x[1]);
    matmul_permuted_batch: tol TIGHT, exercises ["matmul", "permute"],
        // batch axes whose strides do not collapse into one
        inputs |r| vec![rn(&[3, 2, 4, 5], r), rn(&[5, 2], r)],
        f |x| strided(x[0].permute(&[1, 0, 2, 3])?)?.matmul(&x[1]);

    // ------------------------------------------------------------ reductions
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

    // ------------------------------------------------------------ shape
    reshape: tol TIGHT, exercises ["reshape"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| x[0].reshape(&[4, 6])?.tanh();
    reshape_of_transposed: tol TIGHT, exercises ["reshape", "copy"],
        inputs |r| vec![rn(&[3, 4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.reshape(&[2, 6])?.sqr()?.tanh();
    permute: tol TIGHT, exercises ["permute"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[4, 2, 3], r)],
        f |x| x[0].permute(&[2, 0, 1])?.mul(&x[1]);
    transpose: tol TIGHT, exercises ["permute"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[4, 3, 2], r)],
        f |x| x[0].transpose(0, 2)?.mul(&x[1]);
    narrow: tol TIGHT, exercises ["narrow"],
        inputs |r| vec![rn(&[2, 5, 3], r)],
        f |x| x[0].narrow(1, 1, 3)?.exp();
    concat: tol TIGHT, exercises ["concat"],
        // three pieces along axis 1, one a transposed view; then along axis 0
        inputs |r| vec![rn(&[2, 3], r), rn(&[2, 1], r), rn(&[4, 2], r)],
        f |x| {
            let c = strided(x[2].transpose(0, 1)?)?;
            let row = Tensor::concat(&[&x[0], &x[1], &c], 1)?;
            Tensor::concat(&[&row, &row.exp()?], 0)
        };
    split: tol TIGHT, exercises ["narrow"],
        inputs |r| vec![rn(&[2, 6], r)],
        f |x| {
            let p = x[0].split(&[1, 3, 2], 1)?;
            p[1].mul(&p[0])?.add(&p[2].sum(&[1], true)?)
        };
    broadcast_as: tol TIGHT, exercises ["broadcast"],
        inputs |r| vec![rn(&[3, 1], r), rn(&[4], r), rn(&[2, 3, 4], r)],
        f |x| x[0].broadcast_as(&[2, 3, 4])?.mul(&x[2])?.add(&x[1].broadcast_as(&[2, 3, 4])?);
    contiguous_copy: tol TIGHT, exercises ["copy"],
        inputs |r| vec![rn(&[2, 3, 4], r)],
        f |x| {
            let c = strided(x[0].permute(&[1, 2, 0])?)?.contiguous()?;
            if !c.is_contiguous() {
                return Err(Error::Invalid { op: "test", msg: "contiguous() returned a strided tensor".into() });
            }
            c.tanh()
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

    // ------------------------------------------------------------ fused layers
    embedding_repeated_ids: tol TIGHT, exercises ["embedding"],
        // ids 1 and 3 repeat (their rows' gradients add up); 2 and 4 are never used
        inputs |r| vec![rn(&[5, 3], r)],
        f |x| x[0].embedding(&[1, 3, 1, 0, 3, 3], &[2, 3]);
    embedding_transposed_weight: tol TIGHT, exercises ["embedding", "permute"],
        inputs |r| vec![rn(&[3, 5], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.embedding(&[4, 4, 2], &[3]);
    log_softmax: tol TIGHT, exercises ["log_softmax"],
        inputs |r| vec![rn(&[2, 3, 5], r).mul_scalar(2.0).unwrap()],
        f |x| x[0].log_softmax();
    log_softmax_of_transposed: tol TIGHT, exercises ["log_softmax", "permute"],
        inputs |r| vec![rn(&[5, 3], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.log_softmax();
    cross_entropy_with_ignored_row: tol TIGHT, exercises ["cross_entropy"],
        inputs |r| vec![rn(&[4, 5], r)],
        f |x| x[0].cross_entropy(&[1, -100, 4, 0], -100);
    cross_entropy_of_transposed: tol TIGHT, exercises ["cross_entropy", "permute"],
        inputs |r| vec![rn(&[5, 3], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.cross_entropy(&[2, 0, 2], -1);
    rms_norm: tol TIGHT, exercises ["rms_norm"],
        inputs |r| vec![rn(&[2, 3, 4], r), rn(&[4], r)],
        f |x| x[0].rms_norm(&x[1], 1e-5);
    rms_norm_of_transposed: tol TIGHT, exercises ["rms_norm", "permute"],
        inputs |r| vec![rn(&[4, 3], r), rn(&[4], r)],
        f |x| strided(x[0].transpose(0, 1)?)?.rms_norm(&x[1], 1e-5);
    conv1d_causal_with_bias: tol TIGHT, exercises ["conv1d_causal"],
        inputs |r| vec![rn(&[2, 3, 5], r), rn(&[3, 4], r), rn(&[3], r)],
        f |x| x[0].conv1d_causal(&x[1], Some(&x[2]));
    conv1d_causal_without_bias: tol TIGHT, exercises ["conv1d_causal"],
        inputs |r| vec![rn(&[2, 3, 5], r), rn(&[3, 4], r)],
        f |x| x[0].conv1d_causal(&x[1], None);
    conv1d_causal_kernel_longer_than_input: tol TIGHT, exercises ["conv1d_causal"],
        inputs |r| vec![rn(&[1, 2, 3], r), rn(&[2, 4], r), rn(&[2], r)],
        f |x| x[0].conv1d_causal(&x[1], Some(&x[2]));
    conv1d_causal_of_permuted: tol TIGHT, exercises ["conv1d_causal", "permute"],
        // Mamba's layout: (B, L, C) permuted to (B, C, L)
        inputs |r| vec![rn(&[2, 6, 3], r), rn(&[3, 4], r), rn(&[3], r)],
        f |x| strided(x[0].permute(&[0, 2, 1])?)?.conv1d_causal(&x[1], Some(&x[2]));

    // ------------------------------------------------------------ Mamba
    selective_scan_all_options: tol TIGHT, exercises ["selective_scan"],
        // chunk 3 does not divide L = 7: the last chunk is short
        inputs |r| scan_inputs((2, 3, 7, 2), true, DType::F64, r),
        f |x| Ok(selective_scan(&scan_args(x, (true, true, true), 3))?.out);
    selective_scan_plain: tol TIGHT, exercises ["selective_scan"],
        inputs |r| scan_inputs((1, 2, 5, 3), false, DType::F64, r)[..6].to_vec(),
        f |x| Ok(selective_scan(&scan_args(x, (false, false, false), 2))?.out);
    selective_scan_one_chunk_strided_inputs: tol TIGHT, exercises ["selective_scan", "permute"],
        // u and z arrive as (B, L, D) permuted to (B, D, L), as in the Mamba block
        inputs |r| {
            let mut v = scan_inputs((2, 2, 4, 2), true, DType::F64, r);
            v[0] = v[0].permute(&[0, 2, 1]).unwrap().contiguous().unwrap();
            v[6] = v[6].permute(&[0, 2, 1]).unwrap().contiguous().unwrap();
            v
        },
        f |x| {
            let (u, z) = (strided(x[0].permute(&[0, 2, 1])?)?, strided(x[6].permute(&[0, 2, 1])?)?);
            let a = ScanArgs { u: &u, z: Some(&z), ..scan_args(x, (true, true, true), 16) };
            Ok(selective_scan(&a)?.out)
        };
}
