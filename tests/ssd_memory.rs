//! The memory claim of the fused SSD scan (Mamba-2), measured with the ledger at b=2, L=512,
//! 8 heads of 16 channels, 2 groups, d_state 16, chunk 64: the fused op keeps for backward
//! exactly its inputs and the states entering each chunk `(b, n_chunks, h, p, n)`; the same
//! scan composed from plain ops keeps every step's state. Run with `--nocapture` to see the
//! numbers.

use mamba_engine::{
    ledger::{human, saved_in_graph},
    ops::ssd::{ssd, ssd_args, ssd_composed, ssd_inputs, SsdShape},
    DType, Rng, Tensor,
};
use mamba_tests::max_diff_over_scale;

const SHAPE: SsdShape = (2, 512, 8, 16, 2, 16);
const CHUNK: usize = 64;

fn inputs(shape: SsdShape) -> Vec<Tensor> {
    ssd_inputs(shape, DType::F32, &mut Rng::new(11)).into_iter().map(|t| t.requires_grad()).collect()
}

#[test]
fn fused_ssd_saves_inputs_and_chunk_states_only_composed_saves_every_state() {
    let (b, l, h, p, _, n) = SHAPE;
    let x = inputs(SHAPE);
    let input_bytes: usize = x.iter().map(|t| t.numel() * 4).sum();
    let chunk_state_bytes = b * l.div_ceil(CHUNK) * h * p * n * 4;
    let all_states_bytes = b * l * h * p * n * 4;

    let fused = ssd(&ssd_args(&x, (true, true), CHUNK)).unwrap();
    // Both outputs in one graph, as a prefill that keeps the last state would have it.
    let both = fused.out.sum_all().unwrap().add(&fused.last_state.sum_all().unwrap()).unwrap();
    let fused_saved = saved_in_graph(&fused.out);
    // The outputs are views of the op's one output buffer (narrow, reshape): they save nothing.
    for (op, saved) in &fused_saved.per_op {
        assert!(*op == "ssd" || saved.bytes == 0, "{op} saved {} bytes", saved.bytes);
    }
    assert_eq!(
        fused_saved.total_bytes,
        input_bytes + chunk_state_bytes,
        "fused SSD saved {} != inputs {} + chunk states {}",
        fused_saved.total_bytes,
        input_bytes,
        chunk_state_bytes
    );
    // The reductions on top save nothing more than the one ssd node.
    assert_eq!(saved_in_graph(&both).per_op["ssd"].bytes, input_bytes + chunk_state_bytes);

    let composed = ssd_composed(&ssd_args(&x, (true, true), CHUNK)).unwrap();
    let composed_saved = saved_in_graph(&composed.out);
    assert!(
        composed_saved.total_bytes >= all_states_bytes,
        "composed SSD saved only {} < b*L*h*p*n floats = {}",
        composed_saved.total_bytes,
        all_states_bytes
    );

    // Both compute the same thing (f32, different summation orders).
    for (a, b) in [(&fused.out, &composed.out), (&fused.last_state, &composed.last_state)] {
        let worst = max_diff_over_scale(a, b);
        assert!(worst < 1e-5, "fused vs composed relative error {worst:e}");
    }

    println!("SSD, b={b} L={l} h={h} p={p} n={n} chunk={CHUNK}, f32, bytes saved for backward:");
    println!(
        "  fused:    {:>12} ({}) = inputs {} + chunk states {}",
        fused_saved.total_bytes,
        human(fused_saved.total_bytes),
        human(input_bytes),
        human(chunk_state_bytes)
    );
    println!(
        "  composed: {:>12} ({})  (b*L*h*p*n floats alone = {})",
        composed_saved.total_bytes,
        human(composed_saved.total_bytes),
        human(all_states_bytes)
    );
    println!("  ratio composed/fused: {:.1}x", composed_saved.total_bytes as f64 / fused_saved.total_bytes as f64);
}

/// The gradients too, of out and of last_state: the fused backward (recomputing each chunk
/// from its saved entry state) equals the composed backward to 1e-5 relative in f32 over
/// several chunks. (L is 192 here: the composed backward pads every one-step slice's
/// gradient to full length, O(L^2).)
#[test]
fn fused_and_composed_gradients_agree_over_many_chunks() {
    let shape = (2, 192, 4, 8, 2, 16);
    let x = inputs(shape);
    let mut rng = Rng::new(5);
    let w = Tensor::rand_uniform(&[2, 192, 4, 8], -1.0, 1.0, DType::F32, &mut rng);
    let w_last = Tensor::rand_uniform(&[2, 4, 8, 16], -1.0, 1.0, DType::F32, &mut rng);
    let mut grads = Vec::new();
    for fused in [true, false] {
        x.iter().for_each(|t| t.zero_grad());
        let args = ssd_args(&x, (true, true), 48);
        let o = if fused { ssd(&args) } else { ssd_composed(&args) }.unwrap();
        let loss = o.out.mul(&w).unwrap().sum_all().unwrap();
        loss.add(&o.last_state.mul(&w_last).unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
        grads.push(x.iter().map(|t| t.grad().unwrap().to_vec_f64().unwrap()).collect::<Vec<_>>());
    }
    let names = ["x", "dt", "A", "B", "C", "D", "dt_bias", "z", "initial_state"];
    for (i, name) in names.iter().enumerate() {
        let (a, b) = (&grads[0][i], &grads[1][i]);
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs())) / scale;
        assert!(worst < 1e-5, "gradient of {name}: relative error {worst:e}");
    }
}
