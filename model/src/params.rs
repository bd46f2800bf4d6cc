//! Parameters are declared once, by the module that owns them, under their reference names.
//!
//! A module's `declare` function asks a path builder ([`Vb`], after candle's `VarBuilder`)
//! for each of its parameters, in the order of the reference `state_dict`:
//!
//! ```text
//! let mut vb = vb.pp("mixer");                          // backbone.layers.3.mixer
//! let d = vb.get("D", &[d_inner], Init::Ones, Decay::No)?;
//!                                                       // -> backbone.layers.3.mixer.D
//! ```
//!
//! One declaration says everything about a parameter: its name, its shape, how its first
//! values are drawn and whether AdamW decays it ([`Spec`]). What `get` returns depends on the
//! [`Backend`] behind the builder, so the same `declare` code serves every purpose:
//!
//! | backend   | `get` returns | used for                                                  |
//! |-----------|---------------|-----------------------------------------------------------|
//! | [`Count`] | `()`          | the parameter count, in checked arithmetic, allocating no tensor (the checkpoint's size check, the memory estimate, refusing absurd sizes) |
//! | [`Shapes`]| `()`          | the names and shapes, allocating no tensor (the checkpoint's shape check) |
//! | [`Build`] | a [`Tensor`]  | a new model ([`fresh`], drawing from one RNG in declaration order) or a copy ([`from_params`], e.g. on another device) |
//!
//! A [`Build`] also records every parameter it made as a [`Param`] (name, tensor, decay), in
//! declaration order: that list is what the model's `named_parameters`, safetensors loading
//! and saving, and the optimizer's decay groups read.

use crate::{Error, Result};
use mamba_engine::{DType, Device, Rng, Tensor};
use std::fmt::Display;

/// How a parameter's first values are made (by [`fresh`]; other backends ignore it).
pub enum Init<'a> {
    /// 1 everywhere (norm weights, Mamba's D).
    Ones,
    /// N(0, std²) (the embedding).
    Normal { std: f64 },
    /// U(-bound, bound) (PyTorch's default for `nn.Linear` and `nn.Conv1d`: bound = 1/sqrt(fan_in)).
    Uniform { bound: f64 },
    /// Values the module computes, drawing from the RNG if it needs to (dt's bias, A_log).
    /// Called once, with the model's RNG, at this parameter's turn; the count never calls it.
    Values(Draw<'a>),
}

/// A module's own initial values: called with the model's RNG, returns the values row-major.
pub type Draw<'a> = Box<dyn FnOnce(&mut Rng) -> Vec<f64> + 'a>;

/// Whether AdamW's weight decay applies to a parameter. The reference decays matrices and the
/// embedding, but not norm weights, biases, A_log or D (`_no_weight_decay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    Yes,
    No,
}

/// One parameter as its module declares it.
pub struct Spec<'a> {
    /// The full reference name, e.g. `backbone.layers.0.mixer.A_log`.
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init<'a>,
    pub decay: Decay,
}

/// One parameter of a built model, as recorded by [`Build`].
#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    /// Whether AdamW decays it ([`Decay::Yes`]).
    pub decay: bool,
}

/// What stands behind a [`Vb`]: it receives every declaration, in order.
pub trait Backend {
    /// What a module holds for each parameter: a [`Tensor`], or `()` when only counting.
    type Param;
    fn declare(&mut self, spec: Spec<'_>) -> Result<Self::Param>;
}

/// The path builder: a backend and the name prefix of the module being declared.
pub struct Vb<'a, B> {
    backend: &'a mut B,
    prefix: String,
}

impl<'a, B: Backend> Vb<'a, B> {
    /// The builder at the root of the names.
    pub fn root(backend: &'a mut B) -> Vb<'a, B> {
        Vb { backend, prefix: String::new() }
    }

    /// The builder one level down: `vb.pp("layers").pp(3)` declares under `layers.3.`.
    pub fn pp(&mut self, name: impl Display) -> Vb<'_, B> {
        Vb { backend: &mut *self.backend, prefix: format!("{}{name}.", self.prefix) }
    }

    /// Declare the parameter `name` (under this builder's prefix).
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init<'_>, decay: Decay) -> Result<B::Param> {
        let name = format!("{}{name}", self.prefix);
        self.backend.declare(Spec { name, shape: shape.to_vec(), init, decay })
    }
}

/// Counts the declared parameters without allocating them. `total` is `None` once a shape's
/// size or the sum overflows.
pub struct Count {
    pub total: Option<usize>,
}

impl Count {
    pub fn new() -> Count {
        Count { total: Some(0) }
    }
}

impl Default for Count {
    fn default() -> Count {
        Count::new()
    }
}

impl Backend for Count {
    type Param = ();

    fn declare(&mut self, spec: Spec<'_>) -> Result<()> {
        let numel = spec.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        self.total = self.total.zip(numel).and_then(|(total, n)| total.checked_add(n));
        Ok(())
    }
}

/// Collects each declaration's name and shape, allocating no tensor.
#[derive(Default)]
pub struct Shapes {
    pub specs: Vec<(String, Vec<usize>)>,
}

impl Backend for Shapes {
    type Param = ();

    fn declare(&mut self, spec: Spec<'_>) -> Result<()> {
        self.specs.push((spec.name, spec.shape));
        Ok(())
    }
}

/// Makes a tensor for every declaration and records it as a [`Param`].
pub struct Build<F> {
    make: F,
    /// Every parameter made so far, in declaration order.
    pub params: Vec<Param>,
}

impl<F: FnMut(Spec<'_>) -> Result<Tensor>> Backend for Build<F> {
    type Param = Tensor;

    fn declare(&mut self, spec: Spec<'_>) -> Result<Tensor> {
        let (name, shape, decay) = (spec.name.clone(), spec.shape.clone(), spec.decay == Decay::Yes);
        let tensor = (self.make)(spec)?;
        if tensor.shape() != shape {
            let what = format!("declared with shape {shape:?}, made with shape {:?}", tensor.shape());
            return Err(Error::Tensor { name, what });
        }
        self.params.push(Param { name, tensor: tensor.clone(), decay });
        Ok(tensor)
    }
}

/// A fresh parameter on the CPU, drawn as `spec.init` says, as a leaf that wants gradients.
fn initial(spec: Spec<'_>, dtype: DType, rng: &mut Rng) -> Result<Tensor> {
    let shape = &spec.shape;
    let tensor = match spec.init {
        Init::Ones => Tensor::ones(shape, dtype, Device::Cpu)?,
        Init::Normal { std } => Tensor::randn(shape, 0.0, std, dtype, rng),
        Init::Uniform { bound } => Tensor::rand_uniform(shape, -bound, bound, dtype, rng),
        Init::Values(values) => Tensor::from_f64(&values(rng), shape, dtype)?,
    };
    Ok(tensor.requires_grad())
}

/// A builder of fresh parameters: each is drawn from `Rng::new(seed)` in declaration order.
pub fn fresh(dtype: DType, seed: u64) -> Build<impl FnMut(Spec<'_>) -> Result<Tensor>> {
    let mut rng = Rng::new(seed);
    Build { make: move |spec: Spec<'_>| initial(spec, dtype, &mut rng), params: Vec::new() }
}

/// A builder that gives each declaration the next of `params` passed through `f` (which must
/// keep its shape): the same model again, e.g. on another device. The names must match.
pub fn from_params<'a>(
    params: &'a [Param],
    f: impl Fn(&Tensor) -> Result<Tensor> + 'a,
) -> Build<impl FnMut(Spec<'_>) -> Result<Tensor> + 'a> {
    let mut old = params.iter();
    let make = move |spec: Spec<'_>| match old.next() {
        Some(p) if p.name == spec.name => f(&p.tensor),
        other => Err(Error::Weights(format!(
            "declared `{}` where the model has `{}`",
            spec.name,
            other.map_or("nothing", |p| p.name.as_str())
        ))),
    };
    Build { make, params: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy module: a weight and a bias under `lin.`.
    fn declare<B: Backend>(vb: &mut Vb<'_, B>, rows: usize) -> Result<(B::Param, B::Param)> {
        let mut lin = vb.pp("lin");
        let w = lin.get("weight", &[rows, 3], Init::Uniform { bound: 0.5 }, Decay::Yes)?;
        let b = lin.get("bias", &[rows], Init::Values(Box::new(|_| vec![7.0; rows])), Decay::No)?;
        Ok((w, b))
    }

    #[test]
    fn one_declaration_counts_builds_and_copies() {
        let mut count = Count::new();
        declare(&mut Vb::root(&mut count).pp("net"), 2).unwrap();
        assert_eq!(count.total, Some(8));

        let mut build = fresh(DType::F64, 1);
        let (w, b) = declare(&mut Vb::root(&mut build).pp("net"), 2).unwrap();
        let names: Vec<(&str, bool)> = build.params.iter().map(|p| (p.name.as_str(), p.decay)).collect();
        assert_eq!(names, [("net.lin.weight", true), ("net.lin.bias", false)]);
        assert_eq!((w.shape(), b.to_vec_f64().unwrap()), (&[2, 3][..], vec![7.0, 7.0]));
        assert!(w.to_vec_f64().unwrap().iter().all(|v| v.abs() <= 0.5) && w.is_requires_grad());
        // the same draws as calling the RNG directly, in declaration order
        let want = Tensor::rand_uniform(&[2, 3], -0.5, 0.5, DType::F64, &mut Rng::new(1));
        assert_eq!(w.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());

        let mut copy = from_params(&build.params, |t| Ok(t.affine(2.0, 0.0)?));
        let (_, b2) = declare(&mut Vb::root(&mut copy).pp("net"), 2).unwrap();
        assert_eq!(b2.to_vec_f64().unwrap(), [14.0, 14.0]);
        let mut wrong = from_params(&build.params, |t| Ok(t.clone()));
        assert!(declare(&mut Vb::root(&mut wrong).pp("other"), 2).is_err());
    }

    #[test]
    fn the_count_overflows_to_none() {
        let mut count = Count::new();
        declare(&mut Vb::root(&mut count), usize::MAX / 2).unwrap();
        assert_eq!(count.total, None);
    }
}
