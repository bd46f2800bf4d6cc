use mamba_engine::{gradcheck::{check, Tolerance}, DType, Rng, Tensor};
#[test]
fn smoke() {
    let mut rng = Rng::new(1);
    let a = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, &mut rng);
    let b = Tensor::randn(&[4, 5], 0.0, 1.0, DType::F64, &mut rng);
    let c = Tensor::randn(&[5], 0.0, 1.0, DType::F64, &mut rng);
    let r = check(|x| x[0].matmul(&x[1])?.add(&x[2])?.silu()?.mul(&x[2])?.transpose(0,1)?.sum(&[1], false)?.softplus(), &[a, b, c], Tolerance::default()).unwrap();
    println!("{r:?}");
    let a = Tensor::randn(&[2, 3, 4], 0.0, 1.0, DType::F64, &mut rng);
    let r = check(|x| { let p = x[0].narrow(2, 1, 2)?.exp()?; let q = x[0].max(&[1], true)?; Tensor::concat(&[&p, &q.broadcast_as(&[2,3,4])?.narrow(2,0,1)?], 2)?.reshape(&[6, 3])?.tanh()?.mean(&[0], false) }, &[a], Tolerance{eps:1e-6, atol:1e-5, rtol:1e-4}).unwrap();
    println!("{r:?}");
}
