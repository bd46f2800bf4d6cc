//! `forward_from`: a sequence in pieces, each continuing from the state the previous one ended
//! in, equals the whole sequence at once; and the states it takes and returns are
//! differentiable (an f64 gradient check through both).

use super::*;
use crate::{mixer::Mixer, MambaConfig, MambaLM};
use mamba_engine::gradcheck;

/// The Mamba-1 mixer of a 1-layer f64 model (d_model 8: d_inner 16, N 16, K 4).
fn mixer(seed: u64) -> Mamba1 {
    let model = MambaLM::new(MambaConfig::new(8, 1), DType::F64, seed).unwrap();
    match &model.layers[0].mixer {
        Mixer::Mamba1(m) => m.clone(),
        other => panic!("a {} mixer where a Mamba1 was expected", other.kind()),
    }
}

fn worst(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn pieces_continuing_from_the_state_equal_the_whole_sequence() {
    let m = mixer(3);
    let (batch, len) = (2, 23);
    let h = Tensor::rand_uniform(&[batch, len, 8], -1.0, 1.0, DType::F64, &mut Rng::new(5));
    let whole = m.forward(&h, 4, false).unwrap();
    let (_, end) = m.prefill(&h, 4).unwrap();
    for recompute in [false, true] {
        // pieces shorter than the conv window, of one step, and spanning several scan chunks
        let mut state = m.new_state(batch, DType::F64, Device::Cpu).unwrap();
        let (mut ys, mut t0) = (Vec::new(), 0);
        for piece in [2, 1, 13, 7] {
            let (y, next) = m.forward_from(&h.narrow(1, t0, piece).unwrap(), &state, 4, recompute).unwrap();
            (state, t0) = (next, t0 + piece);
            ys.push(y);
        }
        let pieces = Tensor::concat(&ys.iter().collect::<Vec<_>>(), 1).unwrap();
        assert!(worst(&pieces, &whole) < 1e-12, "recompute {recompute}: {:e}", worst(&pieces, &whole));
        assert!(worst(&state.ssm, &end.ssm) < 1e-12, "ssm state {:e}", worst(&state.ssm, &end.ssm));
        assert!(worst(&state.conv, &end.conv) == 0.0, "conv window");
    }
}

/// Gradients reach h, the conv window and the SSM state, from a loss on the output and on
/// both returned states (L 5 > K 4, chunk 2: several chunks, the last one short).
#[test]
fn gradients_flow_through_the_states_it_takes_and_returns() {
    let m = mixer(4);
    let mut rng = Rng::new(6);
    let inputs = [
        Tensor::rand_uniform(&[1, 5, 8], -1.0, 1.0, DType::F64, &mut rng),
        Tensor::rand_uniform(&[1, 16, 4], -1.0, 1.0, DType::F64, &mut rng),
        Tensor::rand_uniform(&[1, 16, 16], -1.0, 1.0, DType::F64, &mut rng),
    ];
    for recompute in [false, true] {
        let f = |x: &[Tensor]| {
            let state = Mamba1State { conv: x[1].clone(), ssm: x[2].clone() };
            let (y, next) = m.forward_from(&x[0], &state, 2, recompute).map_err(|e| match e {
                Error::Engine(e) => e,
                e => panic!("{e}"),
            })?;
            let flat = |t: &Tensor| t.reshape(&[t.numel()]);
            Tensor::concat(&[&flat(&y)?, &flat(&next.conv)?, &flat(&next.ssm)?], 0)
        };
        let r = gradcheck::check(f, &inputs, gradcheck::Tolerance::default()).unwrap();
        let op = if recompute { "checkpoint" } else { "selective_scan" }; // the checkpoint hides the scan
        assert!(r.ops.contains(&op), "{:?}", r.ops);
    }
}

#[test]
fn a_state_of_the_wrong_shape_is_refused() {
    let m = mixer(5);
    let h = Tensor::zeros(&[2, 3, 8], DType::F64, Device::Cpu).unwrap();
    let state = m.new_state(1, DType::F64, Device::Cpu).unwrap();
    let e = m.forward_from(&h, &state, 4, false).err().expect("a batch-1 state for a batch of 2").to_string();
    assert!(e.contains("conv state") && e.contains("[2, 16, 4]"), "{e}");
}
