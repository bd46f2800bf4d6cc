use super::*;
use crate::{gradcheck, DType, Rng};

/// Random scan inputs (B, D, L, N) with a stable A < 0, then an initial state (B, D, N).
fn inputs(b: usize, d: usize, l: usize, n: usize, dtype: DType, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    let mut r = |shape: &[usize], lo: f64, hi: f64| Tensor::rand_uniform(shape, lo, hi, dtype, &mut rng);
    vec![
        r(&[b, d, l], -1.0, 1.0), // u
        r(&[b, d, l], -2.0, 1.0), // delta
        r(&[d, n], -2.0, -0.1),   // A
        r(&[b, n, l], -1.0, 1.0), // B
        r(&[b, n, l], -1.0, 1.0), // C
        r(&[d], -1.0, 1.0),       // D
        r(&[b, d, l], -2.0, 2.0), // z
        r(&[d], -1.0, 0.5),       // delta_bias
        r(&[b, d, n], -1.0, 1.0), // initial_state
    ]
}

fn args(x: &[Tensor], chunk: usize) -> ScanArgs<'_> {
    ScanArgs::mamba(&x[..8], chunk).unwrap()
}

fn close(a: &Tensor, b: &Tensor, tol: f64) {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1e-12 + y.abs().max(1.0))).fold(0.0, f64::max);
    assert!(worst < tol, "worst relative error {worst}");
}

/// Fused and composed agree on both outputs and every gradient (of `out` and of
/// `last_state`), with and without an initial state, for chunks that do and do not divide L.
#[test]
fn fused_matches_composed_forward_and_backward() {
    let x: Vec<Tensor> = inputs(2, 3, 11, 4, DType::F64, 1).into_iter().map(|t| t.requires_grad()).collect();
    let mut rng = Rng::new(9);
    let w_out = Tensor::rand_uniform(&[2, 3, 11], -1.0, 1.0, DType::F64, &mut rng);
    let w_last = Tensor::rand_uniform(&[2, 3, 4], -1.0, 1.0, DType::F64, &mut rng);
    for (init, with_last, chunk) in [(false, false, 4), (true, true, 4), (false, true, 11), (true, false, 1)] {
        let a = ScanArgs { initial_state: init.then(|| &x[8]), ..args(&x, chunk) };
        let (fused, composed) = (selective_scan(&a).unwrap(), selective_scan_composed(&a).unwrap());
        close(&fused.out, &composed.out, 1e-12);
        close(&fused.last_state, &composed.last_state, 1e-12);
        let mut grads = Vec::new();
        for o in [&fused, &composed] {
            x.iter().for_each(|t| t.zero_grad());
            let mut loss = o.out.mul(&w_out).unwrap().sum_all().unwrap();
            if with_last {
                loss = loss.add(&o.last_state.mul(&w_last).unwrap().sum_all().unwrap()).unwrap();
            }
            loss.backward().unwrap();
            grads.push(x.iter().map(|t| t.grad()).collect::<Vec<_>>());
        }
        for (i, (g1, g2)) in grads[0].iter().zip(&grads[1]).enumerate() {
            match (g1, g2) {
                (Some(a), Some(b)) => close(a, b, 1e-12),
                (None, None) => assert!(i == 8 && !init, "input {i} got no gradient"),
                _ => panic!("input {i}: a gradient on one side only (init {init}, chunk {chunk})"),
            }
        }
    }
}

/// Without an initial state and a gradient of `last_state`, the op computes exactly what it
/// did before they existed: a zero initial state and a zero `dlast` change no bit.
#[test]
fn zero_initial_state_and_zero_dlast_change_nothing() {
    let x = inputs(2, 3, 9, 4, DType::F32, 4);
    let dims = args(&x, 4).dims().unwrap();
    let v: Vec<Vec<f32>> = x.iter().map(|t| t.to_vec::<f32>().unwrap()).collect();
    let zeros = vec![0.0f32; 2 * 3 * 4];
    let ins = |init| ScanInputs {
        u: &v[0],
        delta: &v[1],
        a: &v[2],
        bm: &v[3],
        cm: &v[4],
        d_skip: &v[5],
        z: Some(&v[6]),
        delta_bias: Some(&v[7]),
        softplus: true,
        init,
    };
    let (plain, zero) =
        (cpu::selective_scan_forward(dims, &ins(None)), cpu::selective_scan_forward(dims, &ins(Some(&zeros))));
    assert_eq!(plain.out, zero.out);
    assert_eq!(plain.last_state, zero.last_state);
    let dout: Vec<f32> = v[0].iter().map(|u| 0.5 - u).collect();
    let g0 = cpu::selective_scan_backward(dims, &ins(None), &plain.chunk_states, &dout, None);
    let g1 = cpu::selective_scan_backward(dims, &ins(None), &plain.chunk_states, &dout, Some(&zeros));
    for (a, b) in [(&g0.du, &g1.du), (&g0.ddelta, &g1.ddelta), (&g0.da, &g1.da), (&g0.dbm, &g1.dbm)] {
        assert_eq!(a, b);
    }
    assert_eq!((&g0.dcm, &g0.dd_skip, &g0.dz, &g0.ddelta_bias), (&g1.dcm, &g1.dd_skip, &g1.dz, &g1.ddelta_bias));
}

#[test]
fn gradient_check_with_and_without_options() {
    let x = inputs(2, 2, 7, 3, DType::F64, 2);
    let tol = gradcheck::Tolerance::default();
    let r = gradcheck::check(|x| Ok(selective_scan(&args(x, 3))?.out), &x[..8], tol).unwrap();
    assert!(r.ops.contains(&"selective_scan"));
    let plain = |x: &[Tensor]| {
        let a = ScanArgs {
            u: &x[0],
            delta: &x[1],
            a: &x[2],
            b: &x[3],
            c: &x[4],
            d: &x[5],
            z: None,
            delta_bias: None,
            softplus: false,
            initial_state: None,
            chunk: 2,
        };
        Ok(selective_scan(&a)?.out)
    };
    gradcheck::check(plain, &x[..6], tol).unwrap();
    // An initial state and a loss on both outputs.
    let with_init = |x: &[Tensor]| scan_both(selective_scan(&ScanArgs { initial_state: Some(&x[8]), ..args(x, 3) })?);
    gradcheck::check(with_init, &x, tol).unwrap();
}

#[test]
fn bad_shapes_are_errors() {
    let x = inputs(2, 3, 5, 4, DType::F32, 3);
    let bad = ScanArgs { a: &x[5], ..args(&x, 2) };
    let err = selective_scan(&bad).err().unwrap().to_string();
    assert!(err.contains("selective_scan"), "{err}");
    let bad = ScanArgs { chunk: 0, ..args(&x, 2) };
    assert!(selective_scan(&bad).is_err());
    // An initial state of the wrong shape names the argument and the expected shape.
    let bad = ScanArgs { initial_state: Some(&x[2]), ..args(&x, 2) };
    let err = selective_scan(&bad).err().unwrap().to_string();
    assert!(err.contains("initial_state") && err.contains("[2, 3, 4]"), "{err}");
    let f64s = x[8].to_dtype(DType::F64).unwrap();
    assert!(selective_scan(&ScanArgs { initial_state: Some(&f64s), ..args(&x, 2) }).is_err());
}

/// With L = 0 the last state is the initial one, and so is its gradient.
#[test]
fn an_empty_sequence_hands_the_state_through() {
    let x: Vec<Tensor> = inputs(2, 3, 0, 4, DType::F64, 5).into_iter().map(|t| t.requires_grad()).collect();
    let o = selective_scan(&ScanArgs { initial_state: Some(&x[8]), ..args(&x, 4) }).unwrap();
    assert_eq!(o.out.shape(), [2, 3, 0]);
    assert_eq!(o.last_state.to_vec_f64().unwrap(), x[8].to_vec_f64().unwrap());
    let w = Tensor::rand_uniform(&[2, 3, 4], -1.0, 1.0, DType::F64, &mut Rng::new(6));
    o.last_state.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x[8].grad().unwrap().to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
}

/// With u, delta, z in bf16 (and B given in bf16 too, which the op widens), the scan computes
/// exactly what the f32 scan computes on the same values: `out` and `last_state` bit for bit,
/// the f32 inputs' gradients bit for bit, and u, delta, z's gradients as the f32 ones rounded
/// to bf16 (their dtype). The node keeps u, delta, z in bf16.
#[test]
fn bf16_inputs_compute_the_f32_scan_of_their_values() {
    let x32 = inputs(2, 3, 9, 4, DType::F32, 11);
    let low = [0, 1, 3, 6]; // u, delta, B, z in bf16
    let x16: Vec<Tensor> = (x32.iter().enumerate())
        .map(|(i, t)| if low.contains(&i) { t.to_dtype(DType::BF16).unwrap() } else { t.clone() }.requires_grad())
        .collect();
    // the f32 scan on the very same values
    let xw: Vec<Tensor> = x16.iter().map(|t| t.detach().to_dtype(DType::F32).unwrap().requires_grad()).collect();
    let mut rng = Rng::new(5);
    let w_out = Tensor::rand_uniform(&[2, 3, 9], -1.0, 1.0, DType::F32, &mut rng);
    let w_last = Tensor::rand_uniform(&[2, 3, 4], -1.0, 1.0, DType::F32, &mut rng);
    let mut outs = Vec::new();
    for x in [&x16, &xw] {
        let o = selective_scan(&ScanArgs { initial_state: Some(&x[8]), ..args(x, 4) }).unwrap();
        let loss = o.out.mul(&w_out).unwrap().sum_all().unwrap();
        loss.add(&o.last_state.mul(&w_last).unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
        assert_eq!((o.out.dtype(), o.last_state.dtype()), (DType::F32, DType::F32));
        outs.push([o.out.to_vec::<f32>().unwrap(), o.last_state.to_vec::<f32>().unwrap()]);
    }
    assert_eq!(outs[0], outs[1], "out and last_state");
    for (i, (a, b)) in x16.iter().zip(&xw).enumerate() {
        let (ga, gb) = (a.grad().unwrap(), b.grad().unwrap());
        assert_eq!(ga.dtype(), a.dtype(), "input {i}: the gradient has its input's dtype");
        let want = gb.to_dtype(a.dtype()).unwrap().to_vec_f64().unwrap();
        assert_eq!(ga.to_vec_f64().unwrap(), want, "input {i}");
    }
}

/// With bf16 u, the other inputs must be f32 or bf16: f64 ones are refused with a message
/// that says so, as is an f32 delta (u, delta, z share one dtype).
#[test]
fn bf16_scan_refuses_mixed_activations_and_f64_parameters() {
    let x = inputs(1, 2, 5, 3, DType::F32, 2);
    let u = x[0].to_dtype(DType::BF16).unwrap();
    let delta = x[1].to_dtype(DType::BF16).unwrap();
    let z = x[6].to_dtype(DType::BF16).unwrap();
    let a64 = x[2].to_dtype(DType::F64).unwrap();
    let base = ScanArgs { u: &u, delta: &delta, z: Some(&z), ..args(&x, 2) };
    let err = selective_scan(&ScanArgs { a: &a64, ..base }).err().expect("f64 A refused").to_string();
    assert!(err.contains("must be f32 or bf16"), "{err}");
    let err = selective_scan(&ScanArgs { delta: &x[1], ..base }).err().expect("f32 delta refused").to_string();
    assert!(err.contains("bf16") && err.contains("f32"), "{err}");
    assert!(selective_scan(&base).is_ok());
}
