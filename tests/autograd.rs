//! The autograd contract: accumulation, no_grad, detach, fan-out, deep graphs,
//! and which tensors end up holding a `.grad()`.

use mamba_engine::{no_grad, DType, Device, Tensor};
use mamba_tests::{assert_close, randn, vals};

fn grad_of(t: &Tensor) -> Vec<f64> {
    vals(&t.grad().expect("a gradient"))
}

#[test]
fn gradients_accumulate_across_backward_calls_until_zero_grad() {
    let x = randn(&[2, 3], 1).requires_grad();
    let xs = vals(&x);
    let once: Vec<f64> = xs.iter().map(|v| 2.0 * v).collect(); // d/dx sum(x^2)
    let loss = || x.sqr().unwrap().sum_all().unwrap();
    loss().backward().unwrap();
    assert_close("after one backward", &grad_of(&x), &once, 1e-12, 0.0);
    loss().backward().unwrap();
    let twice: Vec<f64> = once.iter().map(|v| 2.0 * v).collect();
    assert_close("after two backward calls", &grad_of(&x), &twice, 1e-12, 0.0);
    x.zero_grad();
    assert!(x.grad().is_none(), "zero_grad leaves no gradient");
    loss().backward().unwrap();
    assert_close("after zero_grad", &grad_of(&x), &once, 1e-12, 0.0);
}

#[test]
fn the_same_graph_can_be_walked_twice() {
    // backward does not consume the graph: a second walk adds the same gradient again
    let x = randn(&[4], 2).requires_grad();
    let loss = x.exp().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    loss.backward().unwrap();
    let want: Vec<f64> = vals(&x).iter().map(|v| 2.0 * v.exp()).collect();
    assert_close("exp twice", &grad_of(&x), &want, 1e-12, 1e-12);
}

#[test]
fn no_grad_records_nothing() {
    let x = randn(&[3], 3).requires_grad();
    assert!(mamba_engine::is_grad_enabled());
    {
        let _g = no_grad();
        assert!(!mamba_engine::is_grad_enabled());
        let y = x.exp().unwrap().mul(&x).unwrap().sum_all().unwrap();
        assert!(!y.is_requires_grad(), "an op under no_grad must not join the graph");
        assert!(y.backward().is_err(), "nothing to backpropagate through");
        {
            let _inner = no_grad();
        }
        assert!(!mamba_engine::is_grad_enabled(), "a nested guard restores the outer state");
    }
    assert!(mamba_engine::is_grad_enabled(), "dropping the guard re-enables recording");
    assert!(x.exp().unwrap().is_requires_grad());
    assert!(x.grad().is_none());
}

#[test]
fn no_grad_is_per_thread() {
    let _g = no_grad();
    let other = std::thread::spawn(|| {
        let x = randn(&[2], 4).requires_grad();
        x.exp().unwrap().is_requires_grad()
    });
    assert!(other.join().unwrap(), "another thread still records while this one is in no_grad");
}

#[test]
fn detach_cuts_the_graph() {
    let x = randn(&[5], 5).requires_grad();
    // y = exp(x).detach() * x: only the right factor carries a gradient, dy/dx = exp(x)
    let y = x.exp().unwrap().detach().mul(&x).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let want: Vec<f64> = vals(&x).iter().map(|v| v.exp()).collect();
    assert_close("detached product", &grad_of(&x), &want, 1e-12, 1e-12);
    let d = x.detach();
    assert!(!d.is_requires_grad());
    assert!(d.same_storage(&x), "detach shares the buffer");
    assert!(d.exp().unwrap().sum_all().unwrap().backward().is_err());
}

#[test]
fn a_tensor_used_twice_gets_the_sum_of_both_paths() {
    let x = randn(&[2, 2], 6).requires_grad();
    // x*x + exp(x) + x  =>  2x + exp(x) + 1
    let y = x.mul(&x).unwrap().add(&x.exp().unwrap()).unwrap().add(&x).unwrap();
    y.sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = vals(&x).iter().map(|v| 2.0 * v + v.exp() + 1.0).collect();
    assert_close("fan-out", &grad_of(&x), &want, 1e-12, 1e-12);

    // an intermediate consumed by two branches (a diamond): z = h * h with h = 3x
    let w = randn(&[3], 7).requires_grad();
    let h = w.mul_scalar(3.0).unwrap();
    h.mul(&h).unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = vals(&w).iter().map(|v| 18.0 * v).collect();
    assert_close("diamond", &grad_of(&w), &want, 1e-12, 1e-12);
}

#[test]
fn gradients_reach_every_leaf_with_its_own_shape() {
    let a = randn(&[2, 3], 8).requires_grad();
    let b = randn(&[3], 9).requires_grad();
    let c = randn(&[], 10).requires_grad();
    a.add(&b).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(a.grad().unwrap().shape(), &[2, 3]);
    assert_eq!(b.grad().unwrap().shape(), &[3]);
    assert_eq!(c.grad().unwrap().shape(), &[] as &[usize]);
    let cv = vals(&c)[0];
    assert_close("da", &grad_of(&a), &[cv; 6], 1e-12, 0.0);
    assert_close("db", &grad_of(&b), &[2.0 * cv; 3], 1e-12, 0.0);
    let want_c: f64 = vals(&a).iter().sum::<f64>() + 2.0 * vals(&b).iter().sum::<f64>();
    assert_close("dc", &grad_of(&c), &[want_c], 1e-12, 1e-12);
}

#[test]
fn a_leaf_the_loss_does_not_depend_on_gets_no_gradient() {
    let a = randn(&[2], 11).requires_grad();
    let b = randn(&[2], 12).requires_grad();
    a.exp().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(a.grad().is_some());
    assert!(b.grad().is_none());
}

#[test]
fn backward_with_an_explicit_seed() {
    let x = randn(&[3], 13).requires_grad();
    let y = x.mul_scalar(2.0).unwrap();
    let seed = Tensor::from_vec(vec![1.0f64, 10.0, 100.0], &[3]).unwrap();
    y.backward_with(&seed).unwrap();
    assert_close("seeded", &grad_of(&x), &[2.0, 20.0, 200.0], 0.0, 0.0);
}

/// Ops in the deep-graph tests: well past the ~15k at which a recursive walk or drop of
/// the graph exhausts a 2 MiB thread stack (measured in a debug build).
const DEPTH: usize = 100_000;

/// A chain of `DEPTH` ops on a scalar leaf `x = 0.1`: mostly `1.0001 y + 0.001`, with a
/// tanh every 1000 steps. Returns (leaf, output, d output / d x by forward mode in f64).
fn deep_chain() -> (Tensor, Tensor, f64) {
    let x = Tensor::scalar(0.1, DType::F64, Device::Cpu).unwrap().requires_grad();
    let (mut y, mut v, mut d) = (x.clone(), 0.1f64, 1.0f64);
    for i in 0..DEPTH {
        if i % 1000 == 999 {
            y = y.tanh().unwrap();
            v = v.tanh();
            d *= 1.0 - v * v;
        } else {
            y = y.affine(1.0001, 0.001).unwrap();
            v = v * 1.0001 + 0.001;
            d *= 1.0001;
        }
    }
    (x, y, d)
}

/// Run `body` on a 2 MiB thread inside a child process (this same test binary, running
/// only `test_name`), so a stack overflow — which aborts the whole process — fails this
/// one test with a message instead of killing every test in the binary.
fn in_child_process(test_name: &str, body: fn()) {
    const CHILD: &str = "MAMBA_TESTS_DEEP_GRAPH_CHILD";
    if std::env::var_os(CHILD).is_some() {
        std::thread::Builder::new().stack_size(2 << 20).spawn(body).unwrap().join().unwrap();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([test_name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{test_name} failed in its child process ({}):\n{stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "the child process did not run {test_name}:\n{stdout}");
}

#[test]
fn backward_through_a_deep_chain_does_not_overflow_the_stack() {
    in_child_process("backward_through_a_deep_chain_does_not_overflow_the_stack", || {
        let (x, y, want) = deep_chain();
        y.backward().unwrap();
        let g = x.grad().unwrap().item().unwrap();
        assert!((g - want).abs() <= 1e-9 * want.abs(), "gradient {g}, expected {want}");
        // Freeing the graph is the next test's subject; the child process exits anyway.
        std::mem::forget(y);
    });
}

#[test]
fn dropping_a_deep_graph_does_not_overflow_the_stack() {
    in_child_process("dropping_a_deep_graph_does_not_overflow_the_stack", || {
        let (x, y, _) = deep_chain();
        drop(y);
        drop(x);
    });
}

#[test]
fn intermediate_tensors_do_not_keep_grad() {
    let x = randn(&[2, 3], 14).requires_grad();
    let h = x.exp().unwrap();
    let s = h.sum(&[1], false).unwrap();
    let loss = s.sum_all().unwrap();
    loss.backward().unwrap();
    assert!(x.grad().is_some(), "the leaf holds its gradient");
    for (name, t) in [("exp output", &h), ("sum output", &s), ("loss", &loss)] {
        assert!(t.is_requires_grad(), "{name} is part of the graph");
        assert!(t.grad().is_none(), "{name} must not keep a gradient");
    }
}

#[test]
fn max_splits_the_gradient_between_tied_elements() {
    let x = Tensor::from_vec(vec![1.0f64, 3.0, 3.0, 2.0, 5.0, 0.0], &[2, 3]).unwrap().requires_grad();
    x.max(&[1], false).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grad_of(&x), vec![0.0, 0.5, 0.5, 0.0, 1.0, 0.0]);
}

#[test]
fn f32_leaves_get_f32_gradients() {
    let x = randn(&[3], 15).to_dtype(DType::F32).unwrap().requires_grad();
    x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    let want: Vec<f64> = vals(&x).iter().map(|v| 2.0 * v).collect();
    assert_close("f32 grad", &vals(&g), &want, 1e-6, 1e-6);
    // a cast inside the graph sends an f64 gradient back as f32
    let y = randn(&[3], 16).to_dtype(DType::F32).unwrap().requires_grad();
    y.to_dtype(DType::F64).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(y.grad().unwrap().dtype(), DType::F32);
}

#[test]
fn to_dtype_to_the_same_dtype_is_the_identity() {
    let x = randn(&[2, 3], 17).requires_grad();
    let y = x.to_dtype(DType::F64).unwrap();
    assert!(y.same_storage(&x), "no copy");
    y.exp().unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = vals(&x).iter().map(|v| v.exp()).collect();
    assert_close("through a no-op cast", &grad_of(&x), &want, 1e-12, 1e-12);
}
