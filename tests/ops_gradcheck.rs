//! Finite-difference gradient checks of every differentiable op.
//!
//! Each case builds seeded random f64 inputs and hands a function of them to
//! `mamba_engine::gradcheck::check`, which compares every partial derivative from
//! `backward` against a central difference. Many cases feed non-contiguous views
//! (transposed, permuted, narrowed, broadcast) into the op under test.
//!
//! The registry test runs every case and fails if some name in `ops::names()` was not
//! exercised by any of them: an op cannot join the registry without a gradient check.
//! It counts the ops of each case's own graph (`ops_in_graph` of `f`'s output), not
//! `Report.ops`, because the latter always contains the `mul` and `sum` of gradcheck's
//! random projection and would cover those two names vacuously.
//!
//! The cases live with their ops (`cases!` at the end of `engine/src/ops/<op>/mod.rs`;
//! the GPU check runs the same table). Run
//! `cargo test -p mamba-tests --test ops_gradcheck -- --nocapture` to see each case's seed,
//! derivative count and worst error ratio; every failing case is listed, by name.

use mamba_engine::{
    autograd::ops_in_graph,
    error::Error,
    gradcheck::{check, Report},
    ops::{
        case::{seed_of, Case},
        cases, names,
    },
    Result, Rng, Tensor,
};
use std::collections::BTreeSet;

/// What one case produced.
struct Outcome {
    report: Report,
    /// Ops recorded in the graph of `f` itself.
    ops: BTreeSet<&'static str>,
}

fn run(case: &Case) -> std::result::Result<Outcome, String> {
    let seed = seed_of(case.name);
    let inputs = (case.inputs)(&mut Rng::new(seed));
    let fail = |e: Error| format!("case {} (seed {seed:#x}): {e}", case.name);
    // The graph of f alone, built on leaves exactly as gradcheck builds them.
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().contiguous().map(Tensor::requires_grad))
        .collect::<Result<_>>()
        .map_err(fail)?;
    let ops: BTreeSet<&'static str> = ops_in_graph(&(case.f)(&leaves).map_err(fail)?).into_iter().collect();
    let missing: Vec<_> = case.exercises.iter().filter(|op| !ops.contains(*op)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "case {}: its graph {ops:?} lacks the ops it is meant to exercise: {missing:?}",
            case.name
        ));
    }
    let report = check(case.f, &inputs, case.tol).map_err(fail)?;
    let expected: usize = inputs.iter().map(Tensor::numel).sum();
    if report.checked != expected {
        return Err(format!(
            "case {}: checked {} derivatives, inputs have {expected} elements",
            case.name, report.checked
        ));
    }
    Ok(Outcome { report, ops })
}

#[test]
fn registry_every_op_has_a_gradient_check() {
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    let mut derivatives = 0;
    for case in cases() {
        match run(&case) {
            Ok(o) => {
                println!(
                    "{:<42} seed {:#018x} derivatives {:>4} worst {:.1e}",
                    case.name,
                    seed_of(case.name),
                    o.report.checked,
                    o.report.worst
                );
                derivatives += o.report.checked;
                covered.extend(o.ops);
            }
            Err(e) => failures.push(e),
        }
    }
    println!("{} cases, {derivatives} partial derivatives checked", cases().len());
    let missing: Vec<_> = names().iter().filter(|op| !covered.contains(*op)).collect();
    let unknown: Vec<_> = covered.iter().filter(|op| !names().contains(op)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && failures.is_empty(),
        "ops in ops::names() without a passing gradient check: {missing:?}\nops recorded but in no unit's OPS: {unknown:?}\nfailing cases:\n{}",
        failures.join("\n")
    );
}
