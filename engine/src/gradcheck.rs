//! Gradient checking by central finite differences, evaluated in f64.
//!
//! For inputs `x` and a function `f`, let `L(x) = sum(f(x) * w)` with a fixed random
//! projection `w` (so every output element matters, with a different weight). The
//! analytic gradient from `backward` must match
//!
//! ```text
//! dL/dx_i ≈ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)
//! ```
//!
//! for every element `i` of every input, within `atol + rtol * |numeric|`. Everything
//! runs in f64, where the central difference is accurate to about eps^2.

use crate::{autograd, error::invalid, DType, Result, Rng, Tensor};

/// Tolerances for [`check`].
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { eps: 1e-6, atol: 1e-6, rtol: 1e-5 }
    }
}

/// What a passing check saw.
#[derive(Clone, Debug)]
pub struct Report {
    /// Largest |analytic - numeric| / (atol + rtol |numeric|); below 1 passes.
    pub worst: f64,
    /// Number of partial derivatives compared.
    pub checked: usize,
    /// Ops recorded in the graph of `f` (proves which ops the check exercised).
    pub ops: Vec<&'static str>,
}

/// Check the gradient of `f` at `inputs` (converted to f64 leaves).
///
/// # Examples
///
/// ```
/// use mamba_engine::{gradcheck, DType, Rng, Tensor};
///
/// # fn main() -> mamba_engine::Result<()> {
/// let x = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F32, &mut Rng::new(0));
/// let report = gradcheck::check(|x| x[0].silu()?.sum(&[1], false), &[x], Default::default())?;
/// assert_eq!(report.checked, 12); // one partial derivative per element of x
/// assert!(report.worst < 1.0);
/// # Ok(())
/// # }
/// ```
pub fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], tol: Tolerance) -> Result<Report> {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| Ok(t.to_dtype(DType::F64)?.detach().contiguous()?.requires_grad()))
        .collect::<Result<_>>()?;
    let out = f(&leaves)?;
    let mut rng = Rng::new(0x5eed);
    let w = Tensor::randn(out.shape(), 0.0, 1.0, DType::F64, &mut rng);
    let loss = out.mul(&w)?.sum_all()?;
    loss.backward()?;
    let ops = autograd::ops_in_graph(&loss);

    let _guard = autograd::no_grad();
    let eval = |xs: &[Tensor]| -> Result<f64> { f(xs)?.mul(&w)?.sum_all()?.item() };
    let mut report = Report { worst: 0.0, checked: 0, ops };
    for (k, leaf) in leaves.iter().enumerate() {
        let analytic = match leaf.grad() {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; leaf.numel()], // the output does not depend on this input
        };
        let base = leaf.to_vec_f64()?;
        let mut xs: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
        for i in 0..base.len() {
            let mut shifted = base.clone();
            shifted[i] = base[i] + tol.eps;
            xs[k] = Tensor::from_f64(&shifted, leaf.shape(), DType::F64)?;
            let plus = eval(&xs)?;
            shifted[i] = base[i] - tol.eps;
            xs[k] = Tensor::from_f64(&shifted, leaf.shape(), DType::F64)?;
            let minus = eval(&xs)?;
            let numeric = (plus - minus) / (2.0 * tol.eps);
            let ratio = (analytic[i] - numeric).abs() / (tol.atol + tol.rtol * numeric.abs());
            if ratio.is_nan() || ratio > 1.0 {
                return invalid(
                    "gradcheck",
                    format!(
                        "input {k} element {i}: analytic {} vs numeric {numeric} (ops {:?})",
                        analytic[i], report.ops
                    ),
                );
            }
            report.worst = report.worst.max(ratio);
            report.checked += 1;
        }
    }
    Ok(report)
}
