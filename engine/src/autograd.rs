//! Reverse-mode automatic differentiation.
//!
//! Every tensor that requires grad carries a `Var`. A leaf (a parameter) has no
//! node; an op's output has a `Node` that remembers the op's name, the `Var`s of its
//! inputs, the tensors it saved, and a closure mapping `dL/d(out)` to `dL/d(input)` for
//! each input. Nodes point at input `Var`s, not at input tensors, so an input's buffer
//! stays alive only if the op chose to save it — which is exactly what the memory
//! ledger counts.
//!
//! `backward` orders the graph topologically and walks it from the loss, calling
//! each node's closure once all of its consumers have contributed their gradients.
//! Backward closures are written with ordinary tensor ops (under `no_grad`), so they
//! run on whatever device the tensors live on.

use crate::{
    error::{invalid, Result},
    ledger::OpSaved,
    shape::Dims,
    DType, Tensor,
};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// `grad_out, saved, needs_grad[i]` to one optional gradient per input.
pub(crate) type BackwardFn = Box<dyn Fn(&Tensor, &[Tensor], &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

pub(crate) struct Node {
    pub op: &'static str,
    pub inputs: Vec<Option<Arc<Var>>>,
    pub saved: Vec<Tensor>,
    pub backward: BackwardFn,
}

/// The autograd identity of a tensor that requires grad.
pub(crate) struct Var {
    pub id: usize,
    pub shape: Dims,
    pub node: Option<Node>,
    /// Accumulated gradient (leaves only).
    pub grad: Mutex<Option<Tensor>>,
}

/// Dropping a long chain of nodes recursively would overflow the stack (a graph can be
/// thousands of ops deep), so a dying Var takes its inputs apart iteratively.
impl Drop for Var {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else { return };
        let mut stack: Vec<Arc<Var>> = node.inputs.into_iter().flatten().collect();
        while let Some(var) = stack.pop() {
            // Only a Var we hold the last reference to dies here; others live on elsewhere.
            if let Ok(mut var) = Arc::try_unwrap(var) {
                if let Some(node) = var.node.take() {
                    stack.extend(node.inputs.into_iter().flatten());
                }
            }
        }
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Var {
    pub fn new(shape: &[usize], node: Option<Node>) -> Arc<Var> {
        Arc::new(Var { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), shape: shape.into(), node, grad: Mutex::new(None) })
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// While the returned guard lives, ops on this thread record no graph.
pub fn no_grad() -> NoGradGuard {
    NoGradGuard { prev: GRAD_ENABLED.with(|g| g.replace(false)) }
}

/// While the returned guard lives, ops on this thread record a graph again, even inside
/// `no_grad` (a checkpoint's backward re-runs its function with one).
pub(crate) fn enable_grad() -> NoGradGuard {
    NoGradGuard { prev: GRAD_ENABLED.with(|g| g.replace(true)) }
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

pub struct NoGradGuard {
    prev: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Attach a backward node to `out` if any input requires grad (and grad is enabled).
/// `saved` are the tensors the closure will receive; they are detached and counted in
/// the ledger.
pub(crate) fn record<F>(op: &'static str, out: Tensor, inputs: &[&Tensor], saved: &[&Tensor], backward: F) -> Tensor
where
    F: Fn(&Tensor, &[Tensor], &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    if !is_grad_enabled() || inputs.iter().all(|t| t.var.is_none()) {
        return out;
    }
    debug_assert!(crate::ops::names().contains(&op), "op {op} is in no unit's OPS list (ops/<unit>/mod.rs)");
    let saved: Vec<Tensor> = saved.iter().map(|t| t.detach()).collect();
    crate::ledger::on_saved(op, unique_bytes(&saved, &mut HashSet::new()));
    let node = Node { op, inputs: inputs.iter().map(|t| t.var.clone()).collect(), saved, backward: Box::new(backward) };
    let var = Var::new(out.shape(), Some(node));
    Tensor { var: Some(var), ..out }
}

/// Bytes of the buffers behind `tensors` not yet in `seen`.
fn unique_bytes(tensors: &[Tensor], seen: &mut HashSet<usize>) -> usize {
    tensors.iter().filter(|t| seen.insert(t.storage_id())).map(|t| t.storage_bytes()).sum()
}

/// Vars reachable from `root`, each after all of its inputs (post-order DFS, iterative
/// so deep graphs cannot overflow the stack).
fn topo_order(root: &Arc<Var>) -> Vec<Arc<Var>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack: Vec<(Arc<Var>, bool)> = vec![(root.clone(), false)];
    while let Some((var, expanded)) = stack.pop() {
        if expanded {
            order.push(var);
            continue;
        }
        if !visited.insert(var.id) {
            continue;
        }
        stack.push((var.clone(), true));
        if let Some(node) = &var.node {
            for input in node.inputs.iter().flatten() {
                if !visited.contains(&input.id) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

/// `prev + g`, two gradients of one tensor. bf16 ones are added in f32 and rounded once (no
/// elementwise kernel takes bf16).
fn accumulate(prev: &Tensor, g: &Tensor) -> Result<Tensor> {
    if prev.dtype() == DType::BF16 {
        return prev.to_dtype(DType::F32)?.add(&g.to_dtype(DType::F32)?)?.to_dtype(DType::BF16);
    }
    prev.add(g)
}

/// Run backward from `root` seeded with `seed` (= dL/d(root)).
pub(crate) fn backward(root: &Tensor, seed: Tensor) -> Result<()> {
    let Some(root_var) = &root.var else {
        return invalid(
            "backward",
            "this tensor does not require grad: no parameter it depends on has .requires_grad()",
        );
    };
    if seed.device() != root.device() {
        return Err(crate::Error::DeviceMismatch { op: "backward", lhs: root.device(), rhs: seed.device() });
    }
    if seed.dtype() != root.dtype() {
        return invalid(
            "backward",
            format!("seed gradient dtype {} differs from tensor dtype {}", seed.dtype(), root.dtype()),
        );
    }
    if seed.shape() != root.shape() {
        return invalid(
            "backward",
            format!("seed gradient shape {:?} differs from tensor shape {:?}", seed.shape(), root.shape()),
        );
    }
    let _guard = no_grad();
    let mut grads: HashMap<usize, Tensor> = HashMap::from([(root_var.id, seed)]);
    for var in topo_order(root_var).iter().rev() {
        let Some(grad) = grads.remove(&var.id) else { continue };
        let Some(node) = &var.node else {
            let mut slot = var.grad.lock().unwrap_or_else(|e| e.into_inner());
            let total = match slot.take() {
                Some(prev) => accumulate(&prev, &grad)?,
                None => grad.contiguous()?,
            };
            *slot = Some(total);
            continue;
        };
        let needs: Vec<bool> = node.inputs.iter().map(|i| i.is_some()).collect();
        let input_grads = (node.backward)(&grad, &node.saved, &needs)?;
        for (input, g) in node.inputs.iter().zip(input_grads) {
            let (Some(input), Some(g)) = (input, g) else { continue };
            if g.shape() != &input.shape[..] {
                return invalid(
                    node.op,
                    format!(
                        "backward produced a gradient of shape {:?} for an input of shape {:?} (engine bug)",
                        g.shape(),
                        &input.shape[..]
                    ),
                );
            }
            let total = match grads.remove(&input.id) {
                Some(prev) => accumulate(&prev, &g)?,
                None => g,
            };
            grads.insert(input.id, total);
        }
    }
    Ok(())
}

/// What the graph behind `t` keeps for backward: bytes per op name (each buffer counted
/// once per node) and the total over distinct buffers.
#[derive(Clone, Debug, Default)]
pub struct SavedReport {
    pub per_op: BTreeMap<&'static str, OpSaved>,
    pub total_bytes: usize,
}

pub fn saved_in_graph(t: &Tensor) -> SavedReport {
    let mut report = SavedReport::default();
    let Some(root) = &t.var else { return report };
    let mut seen = HashSet::new();
    for var in topo_order(root) {
        if let Some(node) = &var.node {
            let entry = report.per_op.entry(node.op).or_default();
            entry.calls += 1;
            entry.bytes += unique_bytes(&node.saved, &mut HashSet::new());
            report.total_bytes += unique_bytes(&node.saved, &mut seen);
        }
    }
    report
}

/// Names of the ops in the graph behind `t` (tests use it to prove a check exercised an op).
pub fn ops_in_graph(t: &Tensor) -> Vec<&'static str> {
    let Some(root) = &t.var else { return vec![] };
    let mut ops: Vec<_> = topo_order(root).iter().filter_map(|v| v.node.as_ref().map(|n| n.op)).collect();
    ops.sort();
    ops.dedup();
    ops
}
