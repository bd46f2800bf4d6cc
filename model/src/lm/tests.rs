//! Tests of the language model: step vs parallel mode, initialisation, the declarations
//! (names, order, decay, count), the MLP branch, and refusals before allocating.

use super::*;
use crate::{mixer::Mixer, SsmConfig};
use mamba_engine::Rng;

fn mamba1(block: &Block) -> &crate::mixer::Mamba1 {
    match &block.mixer {
        Mixer::Mamba1(m) => m,
        other => panic!("a {} mixer where a Mamba1 was expected", other.kind()),
    }
}

/// max |step - parallel| / max |parallel| over `len` tokens of 2 random sequences.
pub(crate) fn step_vs_parallel(model: &MambaLM, len: usize) -> f64 {
    let mut rng = Rng::new(3);
    let ids: Vec<usize> = (0..2 * len).map(|_| rng.below(256)).collect();
    let parallel = model.forward(&ids, 2, len).unwrap().to_vec_f64().unwrap(); // (2, len, V)
    let v = model.cfg.padded_vocab();
    let mut state = model.new_state(2).unwrap();
    let mut worst: f64 = 0.0;
    let scale = parallel.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for t in 0..len {
        let step = model.step(&[ids[t], ids[len + t]], &mut state).unwrap().to_vec_f64().unwrap(); // (2, V)
        for b in 0..2 {
            for j in 0..v {
                worst = worst.max((step[b * v + j] - parallel[(b * len + t) * v + j]).abs() / scale);
            }
        }
    }
    worst
}

/// max |prefill + step - parallel| / max |parallel|: 2 random sequences of `len` tokens, the
/// first `prompt` of them through [`MambaLM::prefill`], the rest stepped from its state.
pub(crate) fn prefill_vs_parallel(model: &MambaLM, prompt: usize, len: usize) -> f64 {
    let step = |state: &mut InferenceState, ids: [usize; 2]| model.step(&ids, state).unwrap().to_vec_f64().unwrap();
    stepped_vs_parallel(model, prompt, len, |state| state, step)
}

/// max |stepped - parallel| / max |parallel| over 2 random sequences of `len` tokens: the
/// first `prompt` of them through [`MambaLM::prefill`] (its logits compared too), whose state
/// `start` turns into a stepper `S`, then each later token through `step` (logits (2, V)).
pub(crate) fn stepped_vs_parallel<S>(
    model: &MambaLM,
    prompt: usize,
    len: usize,
    start: impl FnOnce(InferenceState) -> S,
    mut step: impl FnMut(&mut S, [usize; 2]) -> Vec<f64>,
) -> f64 {
    let mut rng = Rng::new(4);
    let ids: Vec<usize> = (0..2 * len).map(|_| rng.below(256)).collect();
    let parallel = model.forward(&ids, 2, len).unwrap().to_vec_f64().unwrap(); // (2, len, V)
    let v = model.cfg.padded_vocab();
    let scale = parallel.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let heads: Vec<usize> = [&ids[..prompt], &ids[len..len + prompt]].concat();
    let (logits, state) = model.prefill(&heads, 2, prompt).unwrap();
    let (mut got, mut stepper) = (logits.to_vec_f64().unwrap(), start(state));
    let mut worst: f64 = 0.0;
    for t in prompt - 1..len {
        if t >= prompt {
            got = step(&mut stepper, [ids[t], ids[len + t]]);
        }
        for b in 0..2 {
            for j in 0..v {
                worst = worst.max((got[b * v + j] - parallel[(b * len + t) * v + j]).abs() / scale);
            }
        }
    }
    worst
}

/// A prompt through the parallel scan (prefill), then step mode: what the parallel scan
/// computes for the whole sequence, for prompts shorter than the conv window, of one chunk
/// of the scan's saved states, and of several.
#[test]
fn prefill_then_step_matches_parallel_mode() {
    let model = MambaLM::new(MambaConfig::new(32, 2), DType::F32, 7).unwrap();
    for prompt in [1, 2, 64, 200] {
        let worst = prefill_vs_parallel(&model, prompt, 300);
        assert!(worst < 1e-4, "prefill {prompt} + step vs parallel: max error {worst:e} of the largest logit");
    }
    assert!(model.prefill(&[], 1, 0).is_err(), "an empty prompt is refused");
}

/// Recurrent generation must compute exactly what the parallel scan computes.
#[test]
fn step_mode_matches_parallel_mode_over_512_tokens() {
    let model = MambaLM::new(MambaConfig::new(32, 2), DType::F32, 7).unwrap();
    let worst = step_vs_parallel(&model, 512);
    assert!(worst < 1e-4, "step vs parallel: max error {worst:e} relative to the largest logit");
}

#[test]
fn init_follows_the_reference() {
    let cfg = MambaConfig::new(64, 4);
    let m = MambaLM::new(cfg, DType::F64, 1).unwrap();
    let mixer = mamba1(&m.layers[0]);
    let a_log = mixer.a_log.to_vec_f64().unwrap();
    assert!((a_log[0] - 0.0).abs() < 1e-12 && (a_log[15] - 16f64.ln()).abs() < 1e-12);
    assert!(mixer.d.to_vec_f64().unwrap().iter().all(|&d| d == 1.0));
    // softplus(dt_proj.bias) lies in [1e-4, 0.1]
    for b in mixer.dt_proj_bias.to_vec_f64().unwrap() {
        let dt = b.exp().ln_1p();
        assert!((1e-4 - 1e-12..=0.1 + 1e-9).contains(&dt), "dt {dt}");
    }
    let bound = 1.0 / 128f64.sqrt() / 2.0; // fan-in d_inner = 128, n_layer = 4
    assert!(mixer.out_proj.to_vec_f64().unwrap().iter().all(|w| w.abs() <= bound));
    assert_eq!(m.named_parameters().len(), 2 + 10 * 4);
}

#[test]
fn names_order_and_decay_come_from_the_declarations() {
    let m = MambaLM::new(MambaConfig::new(16, 2), DType::F32, 0).unwrap();
    let layer: Vec<(&str, bool)> =
        m.parameters()[1..11].iter().map(|p| (p.name.strip_prefix("backbone.layers.0.").unwrap(), p.decay)).collect();
    let want = [
        ("norm.weight", false),
        ("mixer.in_proj.weight", true),
        ("mixer.conv1d.weight", true),
        ("mixer.conv1d.bias", false),
        ("mixer.x_proj.weight", true),
        ("mixer.dt_proj.weight", true),
        ("mixer.dt_proj.bias", false),
        ("mixer.A_log", false),
        ("mixer.D", false),
        ("mixer.out_proj.weight", true),
    ];
    assert_eq!(layer, want);
    let ends: Vec<(&str, bool)> =
        [&m.parameters()[0], m.parameters().last().unwrap()].iter().map(|p| (p.name.as_str(), p.decay)).collect();
    assert_eq!(ends, [("backbone.embedding.weight", true), ("backbone.norm_f.weight", false)]);
    // the tensors are the model's own: the same storage as the fields the forward pass reads
    assert!(m.parameters()[2].tensor.same_storage(&mamba1(&m.layers[0]).in_proj));
    let opt = m.optimizer_params();
    assert_eq!(opt.iter().filter(|(_, _, decay)| *decay).count(), 1 + 5 * 2);
}

#[test]
fn param_count_matches_the_model() {
    for (d_model, n_layer, d_intermediate) in [(16, 1, 0), (24, 3, 0), (64, 2, 0), (16, 3, 100), (32, 1, 256)] {
        let cfg = MambaConfig { d_intermediate, ..MambaConfig::new(d_model, n_layer) };
        let model = MambaLM::new(cfg, DType::F32, 0).unwrap();
        assert_eq!(model.cfg.param_count().unwrap(), model.num_parameters(), "{d_model} {n_layer} {d_intermediate}");
    }
    // The formula the count replaced, per layer (d, e = d_inner, n, r, k) plus the ends:
    // norm d + in_proj 2e·d + conv e·k + e + x_proj (r+2n)·e + dt_proj e·r + e + A_log e·n + D e + out_proj d·e
    let (d, e, n, r, k, layers, vocab) = (64, 128, 16, 4, 4, 3, 256);
    let layer = d + e * (2 * d + k + 1 + r + 2 * n + r + 1 + n + 1 + d);
    assert_eq!(MambaConfig::new(d, layers).param_count().unwrap(), layers * layer + vocab * d + d);
}

#[test]
fn the_mlp_branch_has_reference_names_shapes_and_gradients() {
    let cfg = MambaConfig { d_intermediate: 40, ..MambaConfig::new(16, 2) };
    let model = MambaLM::new(cfg, DType::F64, 5).unwrap();
    let shapes: BTreeMap<String, Vec<usize>> =
        model.named_parameters().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    // 40 rounds up to 128, as the reference GatedMLP's multiple_of
    for i in 0..2 {
        let p = |name: &str| shapes[&format!("backbone.layers.{i}.{name}")].clone();
        assert_eq!(
            (p("norm2.weight"), p("mlp.fc1.weight"), p("mlp.fc2.weight")),
            (vec![16], vec![256, 16], vec![16, 128])
        );
    }
    assert_eq!(shapes.len(), 2 + 2 * 13);
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    let at = |name: &str| names.iter().position(|n| n == name).unwrap();
    assert!(at("backbone.layers.0.mixer.out_proj.weight") < at("backbone.layers.0.norm2.weight"));
    assert!(at("backbone.layers.0.norm2.weight") < at("backbone.layers.0.mlp.fc1.weight"));
    assert!(at("backbone.layers.0.mlp.fc2.weight") < at("backbone.layers.1.norm.weight"));
    // with two residual branches per block, out_proj and fc2 start scaled by 1/sqrt(2 n_layer)
    let fc2 = gated(&model.layers[0]).fc2.to_vec_f64().unwrap();
    assert!(fc2.iter().all(|w| w.abs() <= 1.0 / 128f64.sqrt() / 2.0));
    let out_proj = mamba1(&model.layers[0]).out_proj.to_vec_f64().unwrap();
    assert!(out_proj.iter().all(|w| w.abs() <= 1.0 / 32f64.sqrt() / 2.0));

    let ids: Vec<usize> = (0..2 * 8).map(|i| (i * 37) % 256).collect();
    assert_eq!(model.forward(&ids, 2, 8).unwrap().shape(), [2, 8, 256]);
    assert_every_parameter_gets_a_gradient(&model, 8);
}

/// The gated MLP of a block's MLP branch.
fn gated(block: &crate::block::Block) -> &crate::mlp::GatedMlp {
    match &block.mlp.as_ref().expect("an MLP branch").mlp {
        crate::block::Mlp::Gated(m) => m,
        crate::block::Mlp::Moe(_) => panic!("an MoE branch where a gated MLP was expected"),
    }
}

/// One loss over 2 sequences of `len` tokens gives every parameter a nonzero gradient.
pub(crate) fn assert_every_parameter_gets_a_gradient(model: &MambaLM, len: usize) {
    let ids: Vec<usize> = (0..2 * len).map(|i| (i * 37) % 256).collect();
    let targets: Vec<i64> = ids.iter().map(|&i| ((i + 1) % 256) as i64).collect();
    model.loss(&ids, &targets, 2, len).unwrap().backward().unwrap();
    for (name, p) in model.named_parameters() {
        let g = p.grad().unwrap_or_else(|| panic!("{name} has no gradient")).to_vec_f64().unwrap();
        assert!(g.iter().any(|v| *v != 0.0), "{name}'s gradient is zero");
    }
}

/// The MLP as its equations say, on one row: fc2 (y · silu(gate)) with [y, gate] = fc1 x.
#[test]
fn the_mlp_computes_the_gated_product() {
    let cfg = MambaConfig { d_intermediate: 128, ..MambaConfig::new(8, 1) };
    let model = MambaLM::new(cfg, DType::F64, 2).unwrap();
    let mlp = gated(&model.layers[0]);
    let x: Vec<f64> = (0..8).map(|i| (i as f64 - 3.5) / 4.0).collect();
    let out = mlp.forward(&Tensor::from_f64(&x, &[1, 8], DType::F64).unwrap()).unwrap().to_vec_f64().unwrap();
    let (fc1, fc2) = (mlp.fc1.to_vec_f64().unwrap(), mlp.fc2.to_vec_f64().unwrap());
    let row = |w: &[f64], j: usize, n: usize, v: &[f64]| (0..n).map(|i| w[j * n + i] * v[i]).sum::<f64>();
    let hidden: Vec<f64> = (0..128)
        .map(|j| {
            let (y, gate) = (row(&fc1, j, 8, &x), row(&fc1, 128 + j, 8, &x));
            y * gate / (1.0 + (-gate).exp())
        })
        .collect();
    for (j, o) in out.iter().enumerate() {
        assert!((o - row(&fc2, j, 128, &hidden)).abs() < 1e-12);
    }
}

#[test]
fn step_mode_matches_parallel_mode_with_an_mlp() {
    let cfg = MambaConfig { d_intermediate: 64, ..MambaConfig::new(16, 2) };
    let worst = step_vs_parallel(&MambaLM::new(cfg, DType::F32, 4).unwrap(), 64);
    assert!(worst < 1e-4, "step vs parallel with an MLP: {worst:e}");
}

#[test]
fn moving_the_model_keeps_names_values_and_decay() {
    let cfg = MambaConfig { d_intermediate: 8, ..MambaConfig::new(16, 2) };
    let model = MambaLM::new(cfg, DType::F32, 9).unwrap();
    let copy = model.to(Device::Cpu).unwrap();
    for (a, b) in model.parameters().iter().zip(copy.parameters()) {
        assert_eq!((&a.name, a.decay), (&b.name, b.decay));
        assert_eq!(a.tensor.to_vec_f64().unwrap(), b.tensor.to_vec_f64().unwrap());
    }
    assert_eq!(copy.parameters().len(), model.parameters().len());
}

#[test]
fn an_attention_layer_without_settings_is_refused_with_a_reason() {
    let cfg = MambaConfig { attn_layer_idx: vec![1], ..MambaConfig::new(16, 2) };
    let msg = MambaLM::new(cfg, DType::F32, 0).err().unwrap().to_string();
    assert!(msg.contains("`attn_cfg.num_heads`: missing"), "{msg}");
}

#[test]
fn overflowing_sizes_are_refused_before_allocating() {
    let mut huge_vocab = MambaConfig::new(16, 1);
    huge_vocab.vocab_size = usize::MAX - 2; // padding it to a multiple of 8 overflows
    let mut huge_expand = MambaConfig::new(16, 1);
    let SsmConfig::Mamba1(s) = &mut huge_expand.ssm_cfg else { unreachable!() };
    s.expand = usize::MAX / 2;
    // 2^61 parameters do not overflow a count, but 2^63 bytes of f32 exceed the address space
    let mut huge_layers = MambaConfig::new(16, 1);
    huge_layers.n_layer = 1 << 50;
    let huge_mlp = MambaConfig { d_intermediate: usize::MAX - 5, ..MambaConfig::new(16, 1) };
    for cfg in [
        MambaConfig::new(usize::MAX, 4),
        MambaConfig::new(1 << 40, 1 << 40),
        huge_vocab,
        huge_expand,
        huge_layers,
        huge_mlp,
    ] {
        match MambaLM::new(cfg, DType::F32, 0) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("overflow"), "{msg}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("an absurd configuration was built"),
        }
    }
}

/// A text in two pieces, the second continuing from the state the first ended in, has the
/// whole text's objective (the cross-entropy as a weighted mean of the pieces'), with an MLP
/// branch, and the gradient reaches every parameter through the returned state; a model with
/// a layer that is not Mamba-1 is refused.
#[test]
fn objective_from_a_state_continues_the_text() {
    let cfg = MambaConfig { d_intermediate: 16, ..MambaConfig::new(16, 2) };
    let model = MambaLM::new(cfg, DType::F64, 3).unwrap();
    let (batch, len, cut) = (2, 19, 7);
    let mut rng = Rng::new(8);
    let ids: Vec<usize> = (0..batch * (len + 1)).map(|_| rng.below(256)).collect();
    let rows = |from: usize, to: usize| -> (Vec<usize>, Vec<i64>) {
        let row = |b: usize| &ids[b * (len + 1)..(b + 1) * (len + 1)];
        let x = (0..batch).flat_map(|b| row(b)[from..to].to_vec()).collect();
        let t = (0..batch).flat_map(|b| row(b)[from + 1..to + 1].iter().map(|&i| i as i64).collect::<Vec<_>>());
        (x, t.collect())
    };
    let (x, t) = rows(0, len);
    let whole = model.objective(&x, &t, batch, len).unwrap().cross_entropy.item().unwrap();
    let state = model.new_state(batch).unwrap();
    let (x1, t1) = rows(0, cut);
    let (first, state) = model.objective_from(&x1, &t1, (batch, cut), &state).unwrap();
    let (x2, t2) = rows(cut, len);
    let (second, end) = model.objective_from(&x2, &t2, (batch, len - cut), &state).unwrap();
    let (a, b) = (first.cross_entropy.item().unwrap(), second.cross_entropy.item().unwrap());
    let pieces = (a * cut as f64 + b * (len - cut) as f64) / len as f64;
    assert!((pieces - whole).abs() < 1e-12 * whole, "{pieces} vs {whole}");
    // The second piece's loss plus a term on the final SSM state: gradients for every parameter.
    let MixerState::Mamba1(s) = &end.layers[1] else { panic!("a Mamba1 state") };
    second.total.add(&s.ssm.sum_all().unwrap()).unwrap().backward().unwrap();
    assert!(model.named_parameters().iter().all(|(_, p)| p.grad().is_some()));

    let mamba2 = MambaConfig { ssm_cfg: SsmConfig::Mamba2(Default::default()), ..MambaConfig::new(64, 1) };
    let m2 = MambaLM::new(mamba2, DType::F32, 0).unwrap();
    let e = m2.objective_from(&[1, 2], &[2, 3], (1, 2), &m2.new_state(1).unwrap()).err().unwrap().to_string();
    assert!(e.contains("Mamba1 layers only") && e.contains("Mamba2"), "{e}");
}
