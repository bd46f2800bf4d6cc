//! Tests of the Mamba-2 mixer: step vs parallel mode (with each option), the grouped norm,
//! the chunk size, initialisation, the declarations (names, order, shapes, decay, count),
//! gradients, and the options it refuses. The reference vectors are in tests/reference.rs.

use super::*;
use crate::{
    lm::tests::{assert_every_parameter_gets_a_gradient, prefill_vs_parallel, step_vs_parallel},
    mixer::MixerState,
    MambaLM, Mixer, SsmConfig,
};

/// A Mamba-2 LM of width `d_model`: headdim 16, 2 groups, d_state 8, chunk 16, then `edit`.
fn config(d_model: usize, n_layer: usize, edit: impl FnOnce(&mut Mamba2Config)) -> MambaConfig {
    let mut s = Mamba2Config { d_state: 8, headdim: 16, ngroups: 2, chunk_size: 16, ..Default::default() };
    edit(&mut s);
    MambaConfig { ssm_cfg: SsmConfig::Mamba2(s), ..MambaConfig::new(d_model, n_layer) }
}

fn mamba2(mixer: &Mixer) -> &Mamba2 {
    match mixer {
        Mixer::Mamba2(m) => m,
        other => panic!("a {} mixer where a Mamba2 was expected", other.kind()),
    }
}

/// Generation must compute what the parallel SSD scan computes: 512 tokens are 32 chunks.
#[test]
fn step_mode_matches_parallel_mode_over_512_tokens() {
    let model = MambaLM::new(config(32, 2, |_| {}), DType::F32, 7).unwrap();
    let worst = step_vs_parallel(&model, 512);
    println!("Mamba-2 step vs parallel over 512 tokens (f32): {worst:.2e} of the largest logit");
    assert!(worst < 1e-4, "Mamba-2 step vs parallel: max error {worst:e} relative to the largest logit");
}

/// The SSD scan's last state and the conv window continue in step mode (prefill): prompts
/// shorter than the conv window, inside one chunk, across several chunks; with each norm option.
#[test]
fn prefill_then_step_matches_parallel_mode() {
    type Edit = fn(&mut Mamba2Config);
    let edits: [Edit; 2] = [|_| {}, |s| s.rmsnorm = false];
    for edit in edits {
        let model = MambaLM::new(config(32, 2, edit), DType::F32, 7).unwrap();
        for prompt in [1, 3, 16, 50] {
            let worst = prefill_vs_parallel(&model, prompt, 80);
            assert!(worst < 1e-4, "Mamba-2 prefill {prompt} + step vs parallel: {worst:e} of the largest logit");
        }
    }
}

/// The options: one group, no norm (the gate inside the scan), the norm before the gate.
#[test]
fn every_option_steps_as_it_runs_in_parallel() {
    type Edit = fn(&mut Mamba2Config);
    let edits: [(&str, Edit); 3] = [
        ("ngroups 1, chunk 8", |s| (s.ngroups, s.chunk_size) = (1, 8)),
        ("rmsnorm false", |s| s.rmsnorm = false),
        ("norm_before_gate", |s| s.norm_before_gate = true),
    ];
    for (what, edit) in edits {
        let model = MambaLM::new(config(32, 2, edit), DType::F64, 3).unwrap();
        let worst = step_vs_parallel(&model, 40);
        assert!(worst < 1e-12, "{what}: step vs parallel {worst:e}");
    }
}

/// The grouped RMSNorm against its equation, on 3 rows of e = 64 in 2 groups and in 1.
#[test]
fn the_norm_normalises_each_group_on_its_own() {
    for groups in [1, 2] {
        let model = MambaLM::new(config(32, 1, |s| s.ngroups = groups), DType::F64, 1).unwrap();
        let m = mamba2(&model.layers[0].mixer);
        let mut rng = Rng::new(5);
        let v = Tensor::rand_uniform(&[3, 64], -2.0, 2.0, DType::F64, &mut rng);
        let w = Tensor::rand_uniform(&[64], 0.5, 1.5, DType::F64, &mut rng);
        let got = group_rms_norm(m.dims, &v, &w).unwrap().to_vec_f64().unwrap();
        let (v, w) = (v.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
        let size = 64 / groups;
        for (row, group) in (0..3).flat_map(|r| (0..groups).map(move |g| (r, g))) {
            let at = row * 64 + group * size;
            let ms = v[at..at + size].iter().map(|x| x * x).sum::<f64>() / size as f64;
            for j in 0..size {
                let want = v[at + j] / (ms + 1e-5).sqrt() * w[group * size + j];
                assert!((got[at + j] - want).abs() < 1e-12, "groups {groups}: {} vs {want}", got[at + j]);
            }
        }
    }
}

/// The chunk size is the config's own (not `MambaLM::scan_chunk`), and any chunk computes the
/// same function.
#[test]
fn the_chunk_size_comes_from_the_config_and_changes_only_rounding() {
    let ids: Vec<usize> = (0..2 * 37).map(|i| (i * 53 + 7) % 256).collect();
    let logits = |chunk: usize, scan_chunk: usize| {
        let mut model = MambaLM::new(config(32, 2, |s| s.chunk_size = chunk), DType::F64, 2).unwrap();
        model.scan_chunk = scan_chunk;
        model.forward(&ids, 2, 37).unwrap().to_vec_f64().unwrap()
    };
    let base = logits(16, 64);
    assert_eq!(base, logits(16, 1), "Mamba-2 must not read scan_chunk");
    for chunk in [1, 5, 37, 256] {
        let other = logits(chunk, 64);
        let worst = base.iter().zip(&other).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-12, "chunk {chunk}: {worst:e}");
    }
}

#[test]
fn init_follows_the_reference() {
    let cfg = config(64, 4, |s| s.d_state = 16);
    let model = MambaLM::new(cfg, DType::F64, 1).unwrap();
    let m = mamba2(&model.layers[0].mixer);
    assert_eq!((m.dims.d_inner, m.dims.nheads, m.dims.conv_dim(), m.dims.d_in_proj()), (128, 8, 192, 328));
    let values = |t: &Tensor| t.to_vec_f64().unwrap();
    // -A = exp(A_log) uniform in [1, 16], one per head, not all alike
    let a: Vec<f64> = values(&m.a_log).iter().map(|v| v.exp()).collect();
    assert!(a.iter().all(|a| (1.0..=16.0).contains(a)) && a.iter().any(|&x| x != a[0]), "{a:?}");
    // softplus(dt_bias) lies in [1e-4, 0.1]
    for b in values(&m.dt_bias) {
        let dt = b.exp().ln_1p();
        assert!((1e-4 - 1e-12..=0.1 + 1e-9).contains(&dt), "dt {dt}");
    }
    assert!(values(&m.d).iter().chain(&values(m.norm.as_ref().unwrap())).all(|&v| v == 1.0));
    let within = |t: &Tensor, bound: f64| values(t).iter().all(|w| w.abs() <= bound);
    assert!(within(&m.out_proj, 1.0 / 128f64.sqrt() / 2.0)); // fan-in d_inner = 128, 4 layers
    assert!(within(&m.in_proj, 1.0 / 8.0) && within(&m.conv_weight, 0.5) && within(&m.conv_bias, 0.5));
    assert!(!within(&m.conv_weight, 0.1));
    let model = MambaLM::new(config(64, 1, |s| s.conv_init = Some(0.1)), DType::F64, 1).unwrap();
    assert!(within(&mamba2(&model.layers[0].mixer).conv_weight, 0.1));
}

#[test]
fn names_order_shapes_and_decay_are_the_references() {
    let model = MambaLM::new(config(32, 2, |_| {}), DType::F32, 0).unwrap();
    let layer: Vec<(&str, Vec<usize>, bool)> = model.parameters()[1..10]
        .iter()
        .map(|p| (p.name.strip_prefix("backbone.layers.0.").unwrap(), p.tensor.shape().to_vec(), p.decay))
        .collect();
    // e = 64, 4 heads, 2 groups of d_state 8: in_proj 2·64 + 2·16 + 4 = 164, conv_dim 96
    let want: [(&str, &[usize], bool); 9] = [
        ("norm.weight", &[32], false),
        ("mixer.in_proj.weight", &[164, 32], true),
        ("mixer.conv1d.weight", &[96, 1, 4], true),
        ("mixer.conv1d.bias", &[96], false),
        ("mixer.dt_bias", &[4], false),
        ("mixer.A_log", &[4], false),
        ("mixer.D", &[4], false),
        ("mixer.norm.weight", &[64], false),
        ("mixer.out_proj.weight", &[32, 64], true),
    ];
    let want: Vec<(&str, Vec<usize>, bool)> = want.iter().map(|(n, s, d)| (*n, s.to_vec(), *d)).collect();
    assert_eq!(layer, want);
    assert_eq!(model.parameters().len(), 2 + 2 * 9);
    let m = mamba2(&model.layers[1].mixer);
    assert!(model.parameters()[11].tensor.same_storage(&m.in_proj));
    // the config is written as the reference writes it
    let json = serde_json::to_string(&model.cfg).unwrap();
    assert!(json.contains(r#""ssm_cfg":{"layer":"Mamba2","d_state":8,"d_conv":4,"expand":2,"headdim":16"#), "{json}");
}

#[test]
fn param_count_matches_the_model() {
    type Edit = fn(&mut Mamba2Config);
    let edits: [Edit; 4] = [|_| {}, |s| s.rmsnorm = false, |s| s.ngroups = 1, |s| s.d_state = 128];
    for edit in edits {
        for (d_model, n_layer, d_intermediate) in [(32, 1, 0), (64, 3, 0), (32, 2, 100)] {
            let cfg = MambaConfig { d_intermediate, ..config(d_model, n_layer, edit) };
            let model = MambaLM::new(cfg, DType::F32, 0).unwrap();
            assert_eq!(model.cfg.param_count().unwrap(), model.num_parameters());
        }
    }
    // per layer (d, e, H, G, N, K): norm d + in_proj (2e + 2GN + H) d + conv (e + 2GN)(K + 1)
    // + dt_bias, A_log, D 3H + norm e + out_proj d e
    let (d, e, h, g, n, k) = (64, 128, 8, 2, 8, 4);
    let layer = d + (2 * e + 2 * g * n + h) * d + (e + 2 * g * n) * (k + 1) + 3 * h + e + d * e;
    assert_eq!(config(d, 3, |_| {}).param_count().unwrap(), 3 * layer + 256 * d + d);
}

#[test]
fn gradients_reach_every_parameter() {
    let model = MambaLM::new(config(32, 2, |_| {}), DType::F64, 4).unwrap();
    assert_every_parameter_gets_a_gradient(&model, 20);
}

#[test]
fn options_that_are_not_built_are_refused_naming_the_key() {
    type Edit = fn(&mut Mamba2Config);
    let refused: [(&str, Edit); 5] = [
        ("ssm_cfg.d_ssm", |s| s.d_ssm = Some(32)),
        ("ssm_cfg.D_has_hdim", |s| s.d_has_hdim = true),
        ("ssm_cfg.dt_limit", |s| s.dt_limit = [0.0, 0.5]),
        ("ssm_cfg.bias", |s| s.bias = true),
        ("ssm_cfg.bias", |s| s.conv_bias = false),
    ];
    for (key, edit) in refused {
        let cfg = config(32, 1, edit);
        for result in [MambaLM::new(cfg.clone(), DType::F32, 0).err(), cfg.param_count().err()] {
            match result {
                Some(Error::Unsupported(msg)) => assert!(msg.starts_with(key), "{key}: {msg}"),
                other => panic!("{key}: not refused: {other:?}"),
            }
        }
    }
    // d_ssm = d_inner is the default, spelt out
    MambaLM::new(config(32, 1, |s| s.d_ssm = Some(64)), DType::F32, 0).unwrap();
}

#[test]
fn a_state_of_another_kind_is_an_error() {
    let two = MambaLM::new(config(32, 1, |_| {}), DType::F32, 0).unwrap();
    let one = MambaLM::new(MambaConfig::new(32, 1), DType::F32, 0).unwrap();
    let mut state = one.new_state(1).unwrap();
    assert!(matches!(state.layers[0], MixerState::Mamba1(_)));
    let msg = two.step(&[1], &mut state).err().unwrap().to_string();
    assert!(msg.contains("a Mamba2 mixer cannot step from a Mamba1 state"), "{msg}");
}
