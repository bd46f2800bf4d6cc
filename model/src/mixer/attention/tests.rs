//! Tests of the attention mixer: against attention written out element by element (grouped
//! heads, rotary, causal), step and prefill against the parallel mode in a hybrid LM, an f64
//! gradient check of the whole mixer, the declarations and the config's checks.

use super::*;
use crate::{
    lm::tests::{assert_every_parameter_gets_a_gradient, prefill_vs_parallel, step_vs_parallel},
    MambaLM, Mixer,
};
use mamba_engine::{gradcheck, Rng};
use serde_json::json;

/// A hybrid LM of width 32 whose layer 1 is attention with `attn_cfg`.
fn hybrid(attn_cfg: serde_json::Value, n_layer: usize) -> MambaConfig {
    hybrid_of(32, attn_cfg, n_layer)
}

fn hybrid_of(d_model: usize, attn_cfg: serde_json::Value, n_layer: usize) -> MambaConfig {
    let serde_json::Value::Object(attn_cfg) = attn_cfg else { unreachable!("an object") };
    MambaConfig { attn_layer_idx: vec![1], attn_cfg, ..MambaConfig::new(d_model, n_layer) }
}

/// Every option on: 4 query heads over 2 key/value heads of 8, rotary on 4 channels, a conv,
/// the gated MLP, a scale of its own.
fn full() -> serde_json::Value {
    json!({"num_heads": 4, "num_heads_kv": 2, "head_dim": 8, "causal": true, "rotary_emb_dim": 4,
           "d_conv": 3, "mlp_dim": 200, "softmax_scale": 0.3})
}

fn attention(model: &MambaLM) -> &Attention {
    match &model.layers[1].mixer {
        Mixer::Attention(m) => m,
        other => panic!("a {} mixer where attention was expected", other.kind()),
    }
}

/// q (B, H, L, D) etc. as nested loops: rotary by its formula, the query head h reading the
/// key/value head h / (H / G), scores over the past only.
fn attention_by_hand(m: &Attention, q: &[f64], k: &[f64], v: &[f64], (b, l): (usize, usize)) -> Vec<f64> {
    let AttnConfig { num_heads: nh, num_heads_kv: g, head_dim: d, rotary_emb_dim: r, .. } = m.cfg;
    let rotate = |x: &[f64], p: usize| -> Vec<f64> {
        let mut y = x.to_vec();
        for i in 0..r / 2 {
            let theta = p as f64 * m.cfg.rotary_emb_base.powf(-2.0 * i as f64 / r as f64);
            let (a, c) = (x[i], x[i + r / 2]);
            y[i] = a * theta.cos() - c * theta.sin();
            y[i + r / 2] = c * theta.cos() + a * theta.sin();
        }
        y
    };
    let scale = m.cfg.softmax_scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mut out = vec![0.0; b * nh * l * d];
    for bi in 0..b {
        for h in 0..nh {
            let kvh = h / (nh / g);
            fn row(t: &[f64], at: usize, d: usize) -> &[f64] {
                &t[at * d..][..d]
            }
            let at = |heads: usize, hh: usize, p: usize| (bi * heads + hh) * l + p;
            for i in 0..l {
                let qi = rotate(row(q, at(nh, h, i), d), i);
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        qi.iter().zip(rotate(row(k, at(g, kvh, j), d), j)).map(|(a, c)| a * c).sum::<f64>() * scale
                    })
                    .collect();
                let top = scores.iter().fold(f64::NEG_INFINITY, |a, s| a.max(*s));
                let z: f64 = scores.iter().map(|s| (s - top).exp()).sum();
                for (j, s) in scores.iter().enumerate() {
                    for (c, vj) in row(v, at(g, kvh, j), d).iter().enumerate() {
                        out[((bi * nh + h) * l + i) * d + c] += (s - top).exp() / z * vj;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_is_its_definition() {
    let model = MambaLM::new(hybrid(full(), 2), DType::F64, 1).unwrap();
    let m = attention(&model);
    let (b, l) = (2, 7);
    let mut rng = Rng::new(9);
    let mut rand = |heads: usize| Tensor::randn(&[b, heads, l, 8], 0.0, 1.0, DType::F64, &mut rng);
    let (q, k, v) = (rand(4), rand(2), rand(2));
    let got = m.attend(&m.rotary(&q, 0).unwrap(), &m.rotary(&k, 0).unwrap(), &v, 0).unwrap();
    let vals = |t: &Tensor| t.to_vec_f64().unwrap();
    let want = attention_by_hand(m, &vals(&q), &vals(&k), &vals(&v), (b, l));
    for (i, (g, w)) in vals(&got).iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-12, "element {i}: {g} vs {w}");
    }
}

#[test]
fn step_and_prefill_match_parallel_mode() {
    let plain = json!({"num_heads": 2, "causal": true, "qkv_proj_bias": false, "out_proj_bias": false});
    for attn_cfg in [full(), plain] {
        let model = MambaLM::new(hybrid(attn_cfg.clone(), 3), DType::F64, 4).unwrap();
        let worst = step_vs_parallel(&model, 20);
        assert!(worst < 1e-10, "{attn_cfg}: step vs parallel {worst:e}");
        for prompt in [1, 2, 9] {
            let worst = prefill_vs_parallel(&model, prompt, 20);
            assert!(worst < 1e-10, "{attn_cfg}: prefill {prompt} + step vs parallel {worst:e}");
        }
    }
}

/// The whole mixer with every option, every parameter a leaf of the check (small: d_model 8,
/// 2 query heads over 1 key/value head of 4).
#[test]
fn gradients_check_in_f64() {
    let small = json!({"num_heads": 2, "num_heads_kv": 1, "head_dim": 4, "causal": true, "rotary_emb_dim": 2,
                       "d_conv": 2, "mlp_dim": 1});
    let model = MambaLM::new(hybrid_of(8, small, 2), DType::F64, 2).unwrap();
    let m = attention(&model);
    let [w, cb] = m.conv.as_ref().unwrap();
    let params = [&m.in_proj, m.in_proj_bias.as_ref().unwrap(), w, cb, &m.out_proj, m.out_proj_bias.as_ref().unwrap()];
    let h = Tensor::randn(&[1, 5, 8], 0.0, 1.0, DType::F64, &mut Rng::new(3));
    let mut inputs = vec![h];
    inputs.extend(params.iter().map(|p| (*p).clone()));
    let f = |t: &[Tensor]| {
        let mixer = Attention {
            cfg: m.cfg.clone(),
            d_model: 8,
            in_proj: t[1].clone(),
            in_proj_bias: Some(t[2].clone()),
            conv: Some([t[3].clone(), t[4].clone()]),
            out_proj: t[5].clone(),
            out_proj_bias: Some(t[6].clone()),
        };
        mixer.forward(&t[0]).map_err(|e| mamba_engine::Error::Invalid { op: "attention", msg: e.to_string() })
    };
    let report = gradcheck::check(f, &inputs, Default::default()).unwrap();
    assert!(report.ops.contains(&"attention") && report.ops.contains(&"matmul"), "{:?}", report.ops);
}

#[test]
fn every_parameter_learns_and_the_names_are_the_references() {
    let model = MambaLM::new(hybrid(full(), 2), DType::F64, 5).unwrap();
    assert_every_parameter_gets_a_gradient(&model, 6);
    assert_eq!(model.cfg.param_count().unwrap(), model.num_parameters());
    let layer: Vec<String> = model
        .parameters()
        .iter()
        .filter_map(|p| p.name.strip_prefix("backbone.layers.1.").map(|n| format!("{n}{:?}", p.tensor.shape())))
        .collect();
    // q, k, v: 8 (4 + 2 x 2) = 64 channels; the MLP 200 -> 256 (128 after its gate)
    let want = "norm.weight[32] mixer.in_proj.weight[320, 32] mixer.in_proj.bias[320] mixer.conv1d.weight[64, 1, 3] \
                mixer.conv1d.bias[64] mixer.out_proj.weight[32, 160] mixer.out_proj.bias[32]";
    assert_eq!(layer.join(" "), want);
    let m = attention(&model);
    assert!(m.in_proj_bias.as_ref().unwrap().to_vec_f64().unwrap().iter().all(|v| *v == 0.0));
}

#[test]
fn attn_cfg_errors_name_the_key() {
    let err = |attn_cfg: serde_json::Value| {
        let cfg = hybrid(attn_cfg, 2);
        let msg = match MambaLM::new(cfg.clone(), DType::F32, 0) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{cfg:?} was built"),
        };
        assert_eq!(cfg.validate().map_err(|e| e.to_string()).unwrap_err(), msg, "validate() refuses it too");
        msg
    };
    assert!(err(json!({"num_heads": 2})).contains("attn_cfg.causal"));
    assert!(err(json!({"num_heads": 3, "causal": true})).contains("not a multiple of num_heads 3"));
    assert!(err(json!({"num_heads": 4, "num_heads_kv": 3, "causal": true})).contains("attn_cfg.num_heads_kv"));
    assert!(err(json!({"causal": true})).contains("num_heads"));
    assert!(err(json!({"num_heads": 2, "causal": true, "rotary_emb_dim": 3})).contains("rotary_emb_dim"));
    assert!(err(json!({"num_heads": 2, "causal": true, "heads": 2})).contains("attn_cfg.heads"));
}
