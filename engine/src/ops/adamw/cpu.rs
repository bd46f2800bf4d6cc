//! The fused AdamW update: one pass over a parameter, its gradient and its two moments,
//! updating the parameter and the moments in place. Twin of `adamw_step_f32` in
//! kernels/cu/adamw.cu; the engine entry point is `ops::adamw::adamw_step`.
//!
//! Per element, at the 1-based step t:
//!
//! ```text
//! m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
//! p = p - lr * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)  +  wd * p )
//! ```
//!
//! computed in `T` with the same roundings, in the same order, as the tensor ops the
//! optimizer used before (`affine`, `add`, `sqrt`, `div`, `sub`), so the result is the same.

use crate::cpu::PAR_MIN;
use crate::dtype::Elem;
use rayon::prelude::*;

/// The hyperparameters of one AdamW step for one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    /// 0 for a parameter that does not decay.
    pub weight_decay: f64,
    /// 1 - b1^t at the 1-based step t.
    pub bias1: f64,
    /// 1 - b2^t.
    pub bias2: f64,
}

impl AdamWHyper {
    /// The hyperparameters of step `t` (1-based), with the bias corrections it implies.
    pub fn at_step(lr: f64, (b1, b2): (f64, f64), eps: f64, weight_decay: f64, t: u64) -> AdamWHyper {
        let (bias1, bias2) = (1.0 - b1.powf(t as f64), 1.0 - b2.powf(t as f64));
        AdamWHyper { lr, b1, b2, eps, weight_decay, bias1, bias2 }
    }
}

/// One AdamW step over equal-length slices: `p`, `m`, `v` are updated in place from `g`.
pub fn adamw_step<T: Elem>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &AdamWHyper) {
    let n = p.len();
    assert!(g.len() == n && m.len() == n && v.len() == n, "adamw_step: p, g, m, v lengths differ");
    let k = Coeffs::new(h);
    if n < PAR_MIN {
        k.apply(p, g, m, v);
    } else {
        p.par_chunks_mut(PAR_MIN)
            .zip(g.par_chunks(PAR_MIN))
            .zip(m.par_chunks_mut(PAR_MIN))
            .zip(v.par_chunks_mut(PAR_MIN))
            .for_each(|(((p, g), m), v)| k.apply(p, g, m, v));
    }
}

/// The constants as the tensor ops saw them: each computed in f64, then rounded to `T` once.
struct Coeffs<T> {
    b1: T,
    c1: T,
    b2: T,
    c2: T,
    inv1: T,
    inv2: T,
    lr: T,
    eps: T,
    wd: T,
    decay: bool,
}

impl<T: Elem> Coeffs<T> {
    fn new(h: &AdamWHyper) -> Coeffs<T> {
        Coeffs {
            b1: T::cast(h.b1),
            c1: T::cast(1.0 - h.b1),
            b2: T::cast(h.b2),
            c2: T::cast(1.0 - h.b2),
            inv1: T::cast(1.0 / h.bias1),
            inv2: T::cast(1.0 / h.bias2),
            lr: T::cast(h.lr),
            eps: T::cast(h.eps),
            wd: T::cast(h.weight_decay),
            decay: h.weight_decay != 0.0,
        }
    }

    /// The update over one chunk (the grouping of each expression is the tensor ops' order).
    #[inline]
    fn apply(&self, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]); // bounds checked once: the loop can vectorise
        for i in 0..n {
            let gi = g[i];
            let mi = m[i] * self.b1 + gi * self.c1;
            let vi = v[i] * self.b2 + gi * gi * self.c2;
            let mut update = mi * self.inv1 / ((vi * self.inv2).sqrt() + self.eps);
            if self.decay {
                update += p[i] * self.wd;
            }
            (m[i], v[i]) = (mi, vi);
            p[i] = p[i] - update * self.lr;
        }
    }
}
