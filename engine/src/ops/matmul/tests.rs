//! The bf16 products on the CPU against f64 products of the same bf16 values.
//!
//! Tolerance, per element: a sum of `t` products of bf16 values (each exact in f32) accumulated
//! in f32 is within `t u sum|a b|` of the exact sum (u = 2^-24, the classic bound for any order
//! of summation); rounding that once to bf16 adds at most 2^-8 of the value (bf16 keeps 8 significant
//! bits). So an f32 result must be within `t u sum|a b|` of the f64 product, a bf16 one within
//! `2^-8 |exact| + 1.01 t u sum|a b|`. Sums accumulated in bf16 instead would err by up to
//! 2^-8 of the running sum per addition and fail the f32 results by orders of magnitude.

use crate::{autograd::ops_in_graph, precision, DType, Rng, Tensor};

const U: f64 = 1.0 / (1u64 << 24) as f64;
/// bf16's unit roundoff: 8 significant bits, so rounding moves a value by at most 2^-8 of it.
const U_BF16: f64 = 1.0 / 256.0;

/// Standard normal values rounded to bf16, as a bf16 tensor and as f64 (exactly those values).
fn bf16_values(shape: &[usize], rng: &mut Rng) -> (Tensor, Vec<f64>) {
    let t = Tensor::randn(shape, 0.0, 1.0, DType::F32, rng).to_dtype(DType::BF16).unwrap();
    let v = t.to_vec_f64().unwrap();
    (t, v)
}

/// `(exact, sum|a b|)` of `a (za, m, k) @ b (zb, k, n)` row-major, the batch `nb` with a
/// `za` or `zb` of 1 broadcast, then summed over the batch when `sum_batch`.
#[allow(clippy::too_many_arguments)]
fn reference(
    a: &[f64],
    za: usize,
    b: &[f64],
    zb: usize,
    nb: usize,
    m: usize,
    k: usize,
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut exact, mut mag) = (vec![0.0; nb * m * n], vec![0.0; nb * m * n]);
    for z in 0..nb {
        let (ao, bo) = (if za == 1 { 0 } else { z * m * k }, if zb == 1 { 0 } else { z * k * n });
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = a[ao + i * k + p] * b[bo + p * n + j];
                    exact[(z * m + i) * n + j] += x;
                    mag[(z * m + i) * n + j] += x.abs();
                }
            }
        }
    }
    (exact, mag)
}

/// Sums over the batch axis: `(nb, rows, cols)` -> `(rows, cols)`.
fn sum_batch(v: &[f64], nb: usize) -> Vec<f64> {
    let per = v.len() / nb;
    (0..per).map(|i| (0..nb).map(|z| v[z * per + i]).sum()).collect()
}

/// Every element of `got` within the tolerance of the module's doc for `terms` f32 additions.
fn assert_close(what: &str, got: &Tensor, exact: &[f64], mag: &[f64], terms: usize) {
    let bf16_out = got.dtype() == DType::BF16;
    let got = got.to_vec_f64().unwrap();
    assert_eq!(got.len(), exact.len(), "{what}: length");
    let mut worst = 0.0f64;
    for i in 0..got.len() {
        let sums = terms as f64 * U * mag[i];
        let tol = if bf16_out { U_BF16 * exact[i].abs() + 1.01 * sums } else { sums };
        let err = (got[i] - exact[i]).abs();
        assert!(err <= tol, "{what}: element {i}: {} vs exact {} (tolerance {tol:e})", got[i], exact[i]);
        worst = worst.max(err / tol.max(f64::MIN_POSITIVE));
    }
    println!("{what}: worst error / tolerance {worst:.3}");
}

/// Forward of both ops: bf16 `matmul` (bf16 result) and `matmul_bf16` (f32 result), on a
/// long k, a batch with a broadcast and transposed rhs, and a transposed lhs.
#[test]
fn bf16_products_match_f64_products_of_the_same_values() {
    let mut rng = Rng::new(11);
    // (za, zb, nb, m, k, n, transpose the stored a, transpose the stored b)
    for (za, zb, nb, m, k, n, ta, tb) in
        [(1, 1, 1, 5, 700, 7, false, false), (3, 1, 3, 17, 64, 9, false, true), (2, 2, 2, 6, 40, 33, true, false)]
    {
        let (a, av) = bf16_values(&[za, m, k], &mut rng);
        let (b, bv) = bf16_values(&[zb, k, n], &mut rng);
        let (exact, mag) = reference(&av, za, &bv, zb, nb, m, k, n);
        // The same values through transposed views where asked.
        let view = |t: &Tensor, transposed: bool| {
            if transposed {
                t.transpose(1, 2).unwrap().contiguous().unwrap().transpose(1, 2).unwrap()
            } else {
                t.clone()
            }
        };
        let (a, b) = (view(&a, ta), view(&b, tb));
        let c = a.matmul(&b).unwrap();
        assert_eq!((c.dtype(), c.shape()), (DType::BF16, &[nb, m, n][..]));
        assert_close(&format!("matmul bf16 {nb}x{m}x{k}x{n}"), &c, &exact, &mag, k);
        let (a32, b32) = (a.to_dtype(DType::F32).unwrap(), b.to_dtype(DType::F32).unwrap());
        let c = a32.matmul_bf16(&b32).unwrap();
        assert_eq!(c.dtype(), DType::F32);
        assert_close(&format!("matmul_bf16 {nb}x{m}x{k}x{n}"), &c, &exact, &mag, k);
    }
}

/// Backward of bf16 `matmul`: dA = dC B^T and dB = A^T dC (summed over the broadcast batch in
/// f32), in bf16, against the f64 products of the same bf16 values.
#[test]
fn bf16_matmul_backward_matches_f64() {
    let mut rng = Rng::new(12);
    let (nb, m, k, n) = (3, 9, 24, 130);
    let (a, av) = bf16_values(&[nb, m, k], &mut rng);
    let (b, bv) = bf16_values(&[k, n], &mut rng); // broadcast over the batch
    let (dc, dcv) = bf16_values(&[nb, m, n], &mut rng);
    let (a, b) = (a.requires_grad(), b.requires_grad());
    a.matmul(&b).unwrap().backward_with(&dc).unwrap();
    let (ga, gb) = (a.grad().unwrap(), b.grad().unwrap());
    assert_eq!((ga.dtype(), gb.dtype()), (DType::BF16, DType::BF16));
    // dA (nb, m, k) = dC (nb, m, n) @ B^T (k, n)^T
    let bt: Vec<f64> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
    let (exact, mag) = reference(&dcv, nb, &bt, 1, nb, m, n, k);
    assert_close("dA", &ga, &exact, &mag, n);
    // dB (k, n) = sum_z A[z]^T (k, m) @ dC[z] (m, n)
    let at: Vec<f64> = (0..nb * k * m).map(|i| av[(i / (k * m)) * m * k + (i % m) * k + (i / m) % k]).collect();
    let (exact, mag) = reference(&at, nb, &dcv, nb, nb, k, m, n);
    assert_close("dB", &gb, &sum_batch(&exact, nb), &sum_batch(&mag, nb), nb * m + nb);
}

/// Backward of `matmul_bf16` on f32 operands (a linear layer, x (nb, m, k) @ W^T with W (n, k)):
/// f32 gradients, dX = bf16(dY) bf16(W) and dW = sum over tokens of bf16(dY)^T bf16(x),
/// summed in f32 and never rounded to bf16.
#[test]
fn matmul_bf16_backward_gives_f32_sums_of_rounded_values() {
    let mut rng = Rng::new(13);
    let (nb, m, k, n) = (2, 40, 16, 24);
    let x = Tensor::randn(&[nb, m, k], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
    let w = Tensor::randn(&[n, k], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
    let dy = Tensor::randn(&[nb, m, n], 0.0, 1.0, DType::F32, &mut rng);
    let y = x.matmul_bf16(&w.transpose(0, 1).unwrap()).unwrap();
    assert!(ops_in_graph(&y).contains(&"matmul_bf16"));
    y.backward_with(&dy).unwrap();
    let (gx, gw) = (x.grad().unwrap(), w.grad().unwrap());
    assert_eq!((gx.dtype(), gw.dtype()), (DType::F32, DType::F32));
    let r = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap();
    let (xv, wv, dyv) = (r(&x), r(&w), r(&dy));
    // dX (nb, m, k) = dY (nb, m, n) @ W (n, k)
    let (exact, mag) = reference(&dyv, nb, &wv, 1, nb, m, n, k);
    assert_close("dX", &gx, &exact, &mag, n);
    // dW (n, k) = sum over nb x m tokens of dY^T x: as one (n, nb m) @ (nb m, k) product
    let dyt: Vec<f64> = (0..n * nb * m).map(|i| dyv[(i % (nb * m)) * n + i / (nb * m)]).collect();
    let (exact, mag) = reference(&dyt, 1, &xv, 1, 1, n, nb * m, k);
    assert_close("dW", &gw, &exact, &mag, nb * m);
    // f32 and not rounded: some element of dW is not a bf16 value
    let gwv = gw.to_vec_f64().unwrap();
    assert!(gwv.iter().any(|&v| (v as f32).to_bits() & 0xffff != 0), "dW looks rounded to bf16");
}

/// A bf16 tensor used twice gets the sum of its two gradients (added in f32, rounded once).
#[test]
fn bf16_gradients_accumulate() {
    let mut rng = Rng::new(14);
    let (a, _) = bf16_values(&[4, 8], &mut rng);
    let (b, _) = bf16_values(&[8, 3], &mut rng);
    let a = a.requires_grad();
    let out = Tensor::concat(&[&a.matmul(&b).unwrap(), &a.matmul(&b).unwrap()], 0).unwrap();
    let (seed, _) = bf16_values(&[8, 3], &mut rng);
    out.backward_with(&seed).unwrap();
    let got = a.grad().unwrap().to_vec_f64().unwrap();
    let halves = |i: usize| seed.narrow(0, 4 * i, 4).unwrap().matmul(&b.transpose(0, 1).unwrap()).unwrap();
    let (g0, g1) = (halves(0).to_vec_f64().unwrap(), halves(1).to_vec_f64().unwrap());
    for ((g, x), y) in got.iter().zip(&g0).zip(&g1) {
        assert!((g - (x + y)).abs() <= U_BF16 * (x + y).abs(), "{g} vs {x} + {y}");
    }
}

/// Mixed dtypes are an error naming both, not a panic; f64 ignores the switch; under the
/// switch, f32 products of the model run `matmul_bf16`, and give its values.
#[test]
fn autocast_switch_and_errors() {
    let mut rng = Rng::new(15);
    let (a, _) = bf16_values(&[2, 8], &mut rng);
    let f = Tensor::randn(&[8, 3], 0.0, 1.0, DType::F32, &mut rng);
    let msg = a.matmul(&f).unwrap_err().to_string();
    assert!(msg.contains("bf16") && msg.contains("f32"), "{msg}");
    let f64s = Tensor::randn(&[3, 8], 0.0, 1.0, DType::F64, &mut rng).requires_grad();
    let f32s = Tensor::randn(&[3, 8], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
    precision::set_matmul_bf16(true);
    let y64 = f64s.matmul_autocast(&f64s.transpose(0, 1).unwrap()).unwrap();
    let y32 = f32s.matmul_autocast(&f32s.transpose(0, 1).unwrap()).unwrap();
    precision::set_matmul_bf16(false);
    let has = |y: &Tensor, op: &str| ops_in_graph(y).contains(&op);
    assert!(has(&y64, "matmul") && !has(&y64, "matmul_bf16") && has(&y32, "matmul_bf16") && !has(&y32, "matmul"));
    let want = f32s.matmul_bf16(&f32s.transpose(0, 1).unwrap()).unwrap();
    assert_eq!(y32.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    let plain = f32s.matmul_autocast(&f32s.transpose(0, 1).unwrap()).unwrap();
    assert!(has(&plain, "matmul") && !has(&plain, "matmul_bf16"));
}

/// `matmul_bf16` keeps for backward the bf16 roundings of its f32 operands (2 bytes an element),
/// not the operands, and its gradients are what rounding them again in backward would give.
#[test]
fn matmul_bf16_keeps_the_bf16_operands() {
    let mut rng = Rng::new(13);
    let a = Tensor::randn(&[2, 5, 12], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
    let w = Tensor::randn(&[7, 12], 0.0, 1.0, DType::F32, &mut rng).requires_grad();
    let y = a.matmul_bf16(&w.transpose(0, 1).unwrap()).unwrap();
    let saved = crate::ledger::saved_in_graph(&y);
    assert_eq!(saved.per_op["matmul_bf16"].bytes, 2 * (2 * 5 * 12 + 7 * 12));
    let dy = Tensor::randn(&[2, 5, 7], 0.0, 1.0, DType::F32, &mut rng);
    y.backward_with(&dy).unwrap();
    // dA = bf16(dY) bf16(W), dW^T = sum over the batch of bf16(A)^T bf16(dY): f32 sums, exact
    // here up to f32 rounding of k = 7 and 10 terms.
    let r = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F64).unwrap();
    let (a64, w64, dy64) = (r(&a.detach()), r(&w.detach()), r(&dy));
    let ga = dy64.matmul(&w64).unwrap().to_vec::<f64>().unwrap();
    let gw = dy64.transpose(1, 2).unwrap().matmul(&a64).unwrap().sum(&[0], false).unwrap().to_vec::<f64>().unwrap();
    for (got, want) in [(a.grad().unwrap(), ga), (w.grad().unwrap(), gw)] {
        assert_eq!(got.dtype(), DType::F32);
        for (g, e) in got.to_vec::<f32>().unwrap().iter().zip(&want) {
            assert!((*g as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()), "{g} vs {e}");
        }
    }
}
