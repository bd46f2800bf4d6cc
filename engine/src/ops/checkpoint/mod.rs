//! Checkpoint: compute a function now without keeping its intermediates, and again in
//! backward ("recompute", "activation checkpointing").
//!
//! ```text
//! forward:   y = f(x_1 .. x_k)             run without a graph; the node saves only x_1 .. x_k
//! backward:  y' = f(x'_1 .. x'_k)          re-run with a graph, x'_i = x_i detached as leaves
//!            dx_i = d<dy, y'>/dx'_i        backward through that graph, seeded with dy
//! ```
//!
//! Memory for compute: a block of ops that keeps its activations for backward (a Mamba
//! block keeps the conv output, its SiLU, x_proj's output, delta, ...) keeps only its inputs
//! instead, and runs its forward a second time in backward. `f` must be deterministic and
//! must read every tensor that needs a gradient from its argument (parameters included):
//! a tensor it captures gets no gradient through the checkpoint.

use crate::{
    autograd::{enable_grad, no_grad, record},
    Result, Tensor,
};

/// `f(inputs)`, recorded as one "checkpoint" node that saves only `inputs` and recomputes
/// `f` in backward (see the module doc).
pub fn checkpoint<F>(inputs: &[&Tensor], f: F) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
{
    let owned: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let y = {
        let _off = no_grad();
        f(&owned)?
    };
    Ok(record("checkpoint", y, inputs, inputs, move |dy, saved, needs| {
        let _on = enable_grad();
        let leaves: Vec<Tensor> =
            saved.iter().zip(needs).map(|(t, &n)| if n { t.detach().requires_grad() } else { t.clone() }).collect();
        let y = f(&leaves)?;
        if y.var.is_some() {
            y.backward_with(dy)?;
        }
        Ok(leaves.iter().zip(needs).map(|(l, &n)| if n { l.grad() } else { None }).collect())
    }))
}

/// The differentiable ops this unit records.
pub const OPS: &[&str] = &["checkpoint"];

// ---------------------------------------------------------------- gradient-check cases

super::case::cases! {
    checkpoint_of_a_small_block: tol TIGHT, exercises ["checkpoint"],
        // a matmul, a nonlinearity and a second use of an input inside, an op outside
        inputs |r| vec![rn(&[3, 4], r), rn(&[4, 5], r), rn(&[3, 5], r)],
        f |x| checkpoint(&[&x[0], &x[1], &x[2]], |t| {
            t[0].matmul(&t[1])?.silu()?.mul(&t[2])?.add(&t[2])
        })?.exp();
    checkpoint_inside_a_checkpoint: tol TIGHT, exercises ["checkpoint"],
        // the inner one's backward runs inside the outer one's
        inputs |r| vec![rn(&[2, 3], r), rn(&[3, 2], r)],
        f |x| checkpoint(&[&x[0], &x[1]], |t| {
            checkpoint(&[&t[0]], |u| u[0].tanh()?.mul(&u[0]))?.matmul(&t[1])?.sigmoid()
        })?.mul(&x[0].sum_all()?);
}
