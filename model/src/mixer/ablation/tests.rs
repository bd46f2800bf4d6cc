//! Tests of the ablation mixers: every arch x SSM steps as it runs in parallel (with
//! prefill), S4's scan through the selective scan against its plain recurrence and in an f64
//! gradient check, the declarations, and the config keys.

use super::*;
use crate::{
    lm::tests::{assert_every_parameter_gets_a_gradient, prefill_vs_parallel, step_vs_parallel},
    MambaLM, Mixer, SsmConfig,
};
use mamba_engine::{gradcheck, Rng};

/// The five ablations (Mamba around S6 is the Mamba1 mixer).
const ABLATIONS: [(Arch, SsmKind); 5] = [
    (Arch::NoGate, SsmKind::S4),
    (Arch::NoGate, SsmKind::S6),
    (Arch::H3, SsmKind::S4),
    (Arch::H3, SsmKind::S6),
    (Arch::Mamba, SsmKind::S4),
];

fn config(d_model: usize, n_layer: usize, (arch, ssm): (Arch, SsmKind)) -> MambaConfig {
    let mut cfg = MambaConfig::new(d_model, n_layer);
    let SsmConfig::Mamba1(c) = &mut cfg.ssm_cfg else { unreachable!("the default is Mamba1") };
    (c.arch, c.ssm, c.d_state) = (arch, ssm, 8);
    cfg
}

#[test]
fn step_and_prefill_match_parallel_mode() {
    for variant in ABLATIONS {
        let model = MambaLM::new(config(16, 2, variant), DType::F64, 3).unwrap();
        assert!(matches!(model.layers[0].mixer, Mixer::Ablation(_)), "{variant:?} builds an ablation");
        let worst = step_vs_parallel(&model, 40);
        assert!(worst < 1e-10, "{variant:?}: step vs parallel {worst:e}");
        for prompt in [1, 3, 25] {
            let worst = prefill_vs_parallel(&model, prompt, 40);
            assert!(worst < 1e-10, "{variant:?}: prefill {prompt} + step vs parallel {worst:e}");
        }
    }
}

/// S4 through the selective scan (one channel per (d, n), chunked) is the plain recurrence
/// s = exp(Δ A) s + Δ u, y = Σ_n B C s + D u, written out here element by element.
#[test]
fn s4_scan_is_the_recurrence() {
    let (batch, di, n, len) = (2, 3, 4, 11);
    let dims = Dims { d_model: 0, d_inner: di, d_state: n, dt_rank: 1, d_conv: 1 };
    let mut rng = Rng::new(5);
    let mut rand = |shape: &[usize]| Tensor::randn(shape, 0.0, 1.0, DType::F64, &mut rng);
    let u = rand(&[batch, di, len]);
    let w = [rand(&[di]), rand(&[di, n]), rand(&[di, n]), rand(&[di, n]), rand(&[di])];
    let out = s4_scan(dims, 4, &u, &w).unwrap();
    let v = |t: &Tensor| t.to_vec_f64().unwrap();
    let (uv, [dt_bias, a_log, b, c, d]) = (v(&u), w.each_ref().map(v));
    let got = v(&out.out);
    for bi in 0..batch {
        for ch in 0..di {
            let dt = dt_bias[ch].exp().ln_1p();
            let mut s = vec![0.0; n];
            for t in 0..len {
                let x = uv[(bi * di + ch) * len + t];
                let mut y = d[ch] * x;
                for (k, s) in s.iter_mut().enumerate() {
                    *s = (-dt * a_log[ch * n + k].exp()).exp() * *s + dt * x;
                    y += b[ch * n + k] * c[ch * n + k] * *s;
                }
                let at = (bi * di + ch) * len + t;
                assert!((got[at] - y).abs() < 1e-12, "({bi}, {ch}, {t}): {} vs {y}", got[at]);
            }
        }
    }
}

#[test]
fn s4_scan_gradients_check_in_f64() {
    let (batch, di, n, len) = (2, 2, 3, 7);
    let dims = Dims { d_model: 0, d_inner: di, d_state: n, dt_rank: 1, d_conv: 1 };
    let mut rng = Rng::new(6);
    let shapes: [&[usize]; 6] = [&[batch, di, len], &[di], &[di, n], &[di, n], &[di, n], &[di]];
    let inputs: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(s, 0.0, 0.5, DType::F64, &mut rng)).collect();
    let f = |t: &[Tensor]| {
        let w = [t[1].clone(), t[2].clone(), t[3].clone(), t[4].clone(), t[5].clone()];
        Ok(s4_scan(dims, 3, &t[0], &w)?.out)
    };
    // check() fails on any partial derivative off by more than atol + rtol |numeric|.
    let report = gradcheck::check(f, &inputs, Default::default()).unwrap();
    assert_eq!(report.checked, 2 * 2 * 7 + 2 + 3 * 6 + 2);
    assert!(report.ops.contains(&"selective_scan"), "{:?}", report.ops);
}

#[test]
fn every_parameter_learns_and_the_count_is_the_declaration() {
    for variant in ABLATIONS {
        let model = MambaLM::new(config(16, 2, variant), DType::F64, 1).unwrap();
        assert_every_parameter_gets_a_gradient(&model, 6);
        assert_eq!(model.cfg.param_count().unwrap(), model.num_parameters(), "{variant:?}");
    }
}

#[test]
fn names_and_shapes() {
    let names = |variant| {
        let model = MambaLM::new(config(16, 1, variant), DType::F32, 0).unwrap();
        let layer: Vec<String> = model
            .parameters()
            .iter()
            .filter_map(|p| {
                p.name.strip_prefix("backbone.layers.0.mixer.").map(|n| format!("{n}{:?}", p.tensor.shape()))
            })
            .collect();
        layer.join(" ")
    };
    // d_inner 32, N 8, dt_rank 1, K 4
    assert_eq!(
        names((Arch::H3, SsmKind::S4)),
        "in_proj.weight[96, 16] conv1d.weight[32, 1, 4] conv1d.bias[32] dt_bias[32] A_log[32, 8] B[32, 8] C[32, 8] D[32] out_proj.weight[16, 32]"
    );
    assert_eq!(
        names((Arch::NoGate, SsmKind::S6)),
        "in_proj.weight[32, 16] x_proj.weight[17, 32] dt_proj.weight[32, 1] dt_proj.bias[32] A_log[32, 8] D[32] out_proj.weight[16, 32]"
    );
}

/// `arch` and `ssm` are written only away from their defaults, read back, and a wrong value
/// is an error naming the key.
#[test]
fn config_keys_round_trip() {
    let cfg = config(16, 2, (Arch::H3, SsmKind::S4));
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains(r#""arch":"h3","ssm":"s4""#), "{json}");
    assert_eq!(MambaConfig::from_json(&json).unwrap(), cfg);
    let plain = serde_json::to_string(&MambaConfig::new(16, 2)).unwrap();
    assert!(!plain.contains("arch") && !plain.contains("\"ssm\""), "{plain}");
    let bad = json.replace(r#""arch":"h3""#, r#""arch":"hyena""#);
    let err = MambaConfig::from_json(&bad).unwrap_err().to_string();
    assert!(err.contains("ssm_cfg.arch"), "{err}");
}
