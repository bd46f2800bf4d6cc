//! The memory claim of the fused selective scan, measured with the ledger at
//! B=2, D=64, L=4096, N=16: the fused op keeps only its inputs and the chunk-entry
//! states for backward; the same scan composed from plain ops keeps every state. An initial
//! state adds only itself, and a loss on `last_state` keeps nothing more.
//! Run with `--nocapture` to see the numbers recorded in docs/PERF.md.

use mamba_engine::{
    ledger::{human, saved_in_graph},
    ops::scan::{selective_scan, selective_scan_composed, ScanArgs},
    DType, Rng, Tensor,
};
use mamba_tests::max_diff_over_scale;

const B: usize = 2;
const D: usize = 64;
const L: usize = 4096;
const N: usize = 16;
const CHUNK: usize = 64;

fn inputs() -> Vec<Tensor> {
    inputs_of_len(L)
}

fn inputs_of_len(len: usize) -> Vec<Tensor> {
    let mut rng = Rng::new(11);
    let mut r =
        |shape: &[usize], lo: f64, hi: f64| Tensor::rand_uniform(shape, lo, hi, DType::F32, &mut rng).requires_grad();
    vec![
        r(&[B, D, len], -1.0, 1.0),
        r(&[B, D, len], -2.0, 1.0),
        r(&[D, N], -2.0, -0.1),
        r(&[B, N, len], -1.0, 1.0),
        r(&[B, N, len], -1.0, 1.0),
        r(&[D], -1.0, 1.0),
        r(&[B, D, len], -2.0, 2.0),
        r(&[D], -1.0, 0.5),
        r(&[B, D, N], -1.0, 1.0), // the initial state, used only where a test says so
    ]
}

fn args(x: &[Tensor]) -> ScanArgs<'_> {
    ScanArgs::mamba(&x[..8], CHUNK).unwrap()
}

/// The same with the initial state `x[8]`.
fn args_init(x: &[Tensor]) -> ScanArgs<'_> {
    ScanArgs { initial_state: Some(&x[8]), ..args(x) }
}

#[test]
fn fused_scan_saves_inputs_and_chunk_states_only_composed_saves_every_state() {
    let x = inputs();
    let input_bytes: usize = x[..8].iter().map(|t| t.numel() * 4).sum();
    let chunk_state_bytes = B * D * L.div_ceil(CHUNK) * N * 4;
    let all_states_bytes = B * D * L * N * 4;

    let fused = selective_scan(&args(&x)).unwrap();
    let fused_saved = saved_in_graph(&fused.out);
    // The outputs are views of the op's one output buffer (narrow, reshape): they save nothing.
    for (op, saved) in &fused_saved.per_op {
        assert!(*op == "selective_scan" || saved.bytes == 0, "{op} saved {} bytes", saved.bytes);
    }
    assert!(
        fused_saved.total_bytes <= input_bytes + chunk_state_bytes,
        "fused scan saved {} > inputs {} + chunk states {}",
        fused_saved.total_bytes,
        input_bytes,
        chunk_state_bytes
    );

    // With an initial state, and a loss on both outputs: the one scan node keeps the inputs,
    // the initial state and the chunk states, nothing else.
    let init_bytes = B * D * N * 4;
    let with_init = selective_scan(&args_init(&x)).unwrap();
    let both = with_init.out.sum_all().unwrap().add(&with_init.last_state.sum_all().unwrap()).unwrap();
    let both_saved = saved_in_graph(&both);
    assert_eq!(both_saved.per_op["selective_scan"].bytes, input_bytes + init_bytes + chunk_state_bytes);
    assert_eq!(both_saved.total_bytes, input_bytes + init_bytes + chunk_state_bytes, "{:?}", both_saved.per_op);

    let composed = selective_scan_composed(&args(&x)).unwrap();
    let composed_saved = saved_in_graph(&composed.out);
    assert!(
        composed_saved.total_bytes >= all_states_bytes,
        "composed scan saved only {} < B*D*L*N floats = {}",
        composed_saved.total_bytes,
        all_states_bytes
    );

    // Both compute the same thing (f32, different summation order).
    let worst = max_diff_over_scale(&fused.out, &composed.out);
    assert!(worst < 1e-5, "fused vs composed relative error {worst:e}");

    println!("selective scan, B={B} D={D} L={L} N={N} chunk={CHUNK}, f32, bytes saved for backward:");
    println!(
        "  fused:    {:>12} ({}) = inputs {} + chunk states {}",
        fused_saved.total_bytes,
        human(fused_saved.total_bytes),
        human(input_bytes),
        human(chunk_state_bytes)
    );
    println!(
        "  composed: {:>12} ({})  (B*D*L*N floats alone = {})",
        composed_saved.total_bytes,
        human(composed_saved.total_bytes),
        human(all_states_bytes)
    );
    println!("  ratio composed/fused: {:.1}x", composed_saved.total_bytes as f64 / fused_saved.total_bytes as f64);
}

/// The gradients too: fused backward (replaying chunks from the saved states) equals the
/// composed backward to 1e-5 relative in f32, over many chunks, without and with an initial
/// state and a loss on the last state. (L is 512 here: the composed backward pads every
/// one-step slice's gradient to full length, O(L^2).)
#[test]
fn fused_and_composed_gradients_agree_over_many_chunks() {
    let x = inputs_of_len(512);
    let mut rng = Rng::new(5);
    let w = Tensor::rand_uniform(&[B, D, 512], -1.0, 1.0, DType::F32, &mut rng);
    let w_last = Tensor::rand_uniform(&[B, D, N], -1.0, 1.0, DType::F32, &mut rng);
    for init in [false, true] {
        let a = if init { args_init(&x) } else { args(&x) };
        let mut grads = Vec::new();
        for fused in [true, false] {
            x.iter().for_each(|t| t.zero_grad());
            let o = if fused { selective_scan(&a) } else { selective_scan_composed(&a) }.unwrap();
            let mut loss = o.out.mul(&w).unwrap().sum_all().unwrap();
            if init {
                loss = loss.add(&o.last_state.mul(&w_last).unwrap().sum_all().unwrap()).unwrap();
            }
            loss.backward().unwrap();
            grads.push(x.iter().map(|t| t.grad().map(|g| g.to_vec_f64().unwrap())).collect::<Vec<_>>());
        }
        let names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"];
        for (i, name) in names.iter().enumerate().take(if init { 9 } else { 8 }) {
            let (a, b) = (grads[0][i].as_ref().unwrap(), grads[1][i].as_ref().unwrap());
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs())) / scale;
            assert!(worst < 1e-5, "gradient of {name} (init {init}): relative error {worst:e}");
        }
    }
}
