//! Our selective scan, SSD scan, Mamba LM and Mamba-2 LM against float64 vectors computed
//! by independent PyTorch code (tests/fixtures/reference, copied from ../shared/reference; its README
//! says what is inside).

use mamba_engine::{
    ops::scan::{selective_scan, ScanArgs},
    ops::ssd::{ssd, SsdArgs},
    DType, Tensor,
};
use mamba_model::{
    io::{read_safetensors, Loaded},
    MambaConfig, MambaLM,
};
use std::collections::BTreeMap;

fn fixture(name: &str) -> BTreeMap<String, Loaded> {
    let path = format!("{}/fixtures/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    read_safetensors(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn float(t: &BTreeMap<String, Loaded>, name: &str, dtype: DType) -> Tensor {
    t[name].tensor().unwrap_or_else(|| panic!("{name} is not a float tensor")).to_dtype(dtype).unwrap()
}

fn ints(t: &BTreeMap<String, Loaded>, name: &str) -> Vec<i64> {
    match &t[name] {
        Loaded::Int { values, .. } => values.clone(),
        Loaded::Float(_) => panic!("{name} is not an integer tensor"),
    }
}

/// max |ours - reference| / max |reference|: one number per tensor, robust to tiny entries.
fn rel_err(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.shape(), reference.shape());
    let (a, b) = (ours.to_vec_f64().unwrap(), reference.to_vec_f64().unwrap());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    diff / b.iter().map(|y| y.abs()).fold(1e-30, f64::max)
}

fn check_scan(dtype: DType, chunk: usize, tol: f64) {
    let r = fixture("selective_scan.safetensors");
    let names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"];
    let x: Vec<Tensor> = names.iter().map(|n| float(&r, n, dtype).requires_grad()).collect();
    let args = ScanArgs::mamba(&x, chunk).unwrap();
    let out = selective_scan(&args).unwrap();
    let mut errs = vec![("out", rel_err(&out.out, &float(&r, "out", dtype)))];
    errs.push(("last_state", rel_err(&out.last_state, &float(&r, "last_state", dtype))));
    out.out.backward_with(&float(&r, "dout", dtype)).unwrap();
    for (n, t) in names.iter().zip(&x) {
        errs.push((n, rel_err(&t.grad().unwrap(), &float(&r, &format!("grad.{n}"), dtype))));
    }
    for (n, e) in &errs {
        assert!(*e < tol, "{dtype} chunk {chunk}: {n} relative error {e:e} > {tol:e} (all: {errs:?})");
    }
}

#[test]
fn selective_scan_matches_reference_in_f64_for_any_chunk() {
    for chunk in [1, 5, 16, 37, 100] {
        check_scan(DType::F64, chunk, 1e-12);
    }
}

#[test]
fn selective_scan_matches_reference_in_f32() {
    check_scan(DType::F32, 16, 1e-5);
}

/// The SSD scan (Mamba-2) against the float64 recurrence: out, last_state and the gradient
/// of every input; returns the worst relative error.
fn check_ssd(dtype: DType, chunk: usize, tol: f64) -> f64 {
    let r = fixture("ssd.safetensors");
    let names = ["x", "dt", "A", "B", "C", "D", "dt_bias", "z"];
    let t: Vec<Tensor> = names.iter().map(|n| float(&r, n, dtype).requires_grad()).collect();
    let args = SsdArgs {
        x: &t[0],
        dt: &t[1],
        a: &t[2],
        b: &t[3],
        c: &t[4],
        d: &t[5],
        dt_bias: &t[6],
        z: Some(&t[7]),
        initial_state: None,
        chunk,
    };
    let o = ssd(&args).unwrap();
    let mut errs = vec![("out", rel_err(&o.out, &float(&r, "out", dtype)))];
    errs.push(("last_state", rel_err(&o.last_state, &float(&r, "last_state", dtype))));
    o.out.backward_with(&float(&r, "dout", dtype)).unwrap();
    for (n, x) in names.iter().zip(&t) {
        errs.push((n, rel_err(&x.grad().unwrap(), &float(&r, &format!("grad.{n}"), dtype))));
    }
    for (n, e) in &errs {
        assert!(*e < tol, "{dtype} chunk {chunk}: {n} relative error {e:e} > {tol:e} (all: {errs:?})");
    }
    let worst = errs.iter().map(|e| e.1).fold(0.0, f64::max);
    let each: Vec<String> = errs.iter().map(|(n, e)| format!("{n} {e:.1e}")).collect();
    println!("ssd {dtype} chunk {chunk}: worst relative error {worst:.2e} ({})", each.join(", "));
    worst
}

#[test]
fn ssd_matches_reference_in_f64_for_any_chunk() {
    // L = 37: chunk 1 (every step), 5, 8 and 16 (a short last chunk), 37 and 64 (one chunk)
    for chunk in [1, 5, 8, 16, 37, 64] {
        check_ssd(DType::F64, chunk, 1e-9);
    }
}

#[test]
fn ssd_matches_reference_in_f32() {
    for chunk in [8, 16] {
        check_ssd(DType::F32, chunk, 1e-5);
    }
}

/// The LM of fixture `name` (`<name>.safetensors` + `<name>.config.json`) against its
/// reference: logits, loss and the gradient of every parameter. Returns the worst relative
/// error of the logits and loss, and of the gradients.
fn check_lm(name: &str, dtype: DType, tol_logits: f64, tol_grads: f64) -> (f64, f64) {
    let r = fixture(&format!("{name}.safetensors"));
    let cfg_path = format!("{}/fixtures/reference/{name}.config.json", env!("CARGO_MANIFEST_DIR"));
    let cfg = MambaConfig::from_json(&std::fs::read_to_string(cfg_path).unwrap()).unwrap();
    let model = MambaLM::new(cfg, dtype, 0).unwrap();
    model.load_parameters(&r, "param.").unwrap();
    let ids: Vec<usize> = ints(&r, "input_ids").iter().map(|&i| i as usize).collect();
    let targets = ints(&r, "target_ids");
    let logits = model.forward(&ids, 2, 32).unwrap();
    let e_logits = rel_err(&logits, &float(&r, "logits", dtype));
    assert!(e_logits < tol_logits, "{name} {dtype}: logits relative error {e_logits:e}");
    let loss = logits.cross_entropy(&targets, -100).unwrap();
    let e_loss = rel_err(&loss.reshape(&[1]).unwrap(), &float(&r, "loss", dtype));
    assert!(e_loss < tol_logits, "{name} {dtype}: loss relative error {e_loss:e}");
    loss.backward().unwrap();
    let mut worst_grad: f64 = 0.0;
    for (param, p) in model.named_parameters() {
        let e = rel_err(&p.grad().unwrap(), &float(&r, &format!("grad.{param}"), dtype));
        assert!(e < tol_grads, "{name} {dtype}: gradient of {param}: relative error {e:e}");
        worst_grad = worst_grad.max(e);
    }
    let errs = (e_logits.max(e_loss), worst_grad);
    println!("{name} {dtype}: logits and loss {:.2e}, gradients {:.2e} (worst relative errors)", errs.0, errs.1);
    errs
}

#[test]
fn mamba_lm_matches_reference_logits_loss_and_every_gradient_f64() {
    // The reference stored logits and loss as f32 and its gradients agree with ours to
    // ~5e-7 in every parameter alike (f32 rounding inside the reference), hence 2e-6.
    check_lm("mamba_lm", DType::F64, 1e-6, 2e-6);
}

#[test]
fn mamba_lm_matches_reference_in_f32() {
    check_lm("mamba_lm", DType::F32, 1e-5, 1e-5);
}

/// The 2-layer Mamba-2 LM (8 heads of 16 in 2 groups, d_state 16, chunk 8 over 32 tokens):
/// its vectors are float64 throughout, so f64 agrees to rounding (measured ~5e-15).
#[test]
fn mamba2_lm_matches_reference_logits_loss_and_every_gradient_f64() {
    check_lm("mamba2_lm", DType::F64, 1e-12, 1e-12);
}

#[test]
fn mamba2_lm_matches_reference_in_f32() {
    check_lm("mamba2_lm", DType::F32, 1e-5, 1e-5);
}
