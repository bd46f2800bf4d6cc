//! Tests of the MoE branch: the routing (top-k, capacity, load), the output against its
//! definition, the load-balancing loss, step mode, gradients and the config's checks.

use super::*;
use crate::{
    block::Mlp,
    lm::tests::{prefill_vs_parallel, step_vs_parallel},
    MambaLM,
};
use mamba_engine::{gradcheck, DType, Rng};
use serde_json::json;

/// A 2-layer model of width 16 whose layer 1 has an MoE branch of `moe_cfg`.
fn config(moe_cfg: serde_json::Value) -> MambaConfig {
    let serde_json::Value::Object(moe_cfg) = moe_cfg else { unreachable!("an object") };
    MambaConfig { moe_layer_idx: vec![1], moe_cfg, ..MambaConfig::new(16, 2) }
}

fn moe(model: &MambaLM) -> &Moe {
    match &model.layers[1].mlp.as_ref().expect("an MLP branch").mlp {
        Mlp::Moe(m) => m,
        Mlp::Gated(_) => panic!("a gated MLP where MoE was expected"),
    }
}

#[test]
fn routing_takes_the_top_k_within_the_capacity() {
    let model =
        MambaLM::new(config(json!({"num_experts": 3, "top_k": 2, "capacity_factor": 1.0})), DType::F64, 1).unwrap();
    let m = moe(&model);
    // 3 tokens x 3 experts; capacity ceil(1.0 · 3 · 2 / 3) = 2 tokens per expert
    let p = [0.5, 0.3, 0.2, 0.6, 0.1, 0.3, 0.7, 0.2, 0.1];
    let route = m.route(&p, 3, true);
    // token 0: experts 0, 1; token 1: 0, 2; token 2: 0 (full: dropped), 1
    assert_eq!(route.mask, [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(route.load, [3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0]);
    assert_eq!(route.dropped, 1.0 / 6.0);
    let free = m.route(&p, 3, false);
    assert_eq!((free.mask[6], free.dropped), (1.0, 0.0), "step mode has no capacity");
}

/// out_t = Σ_e mask_te p_te expert_e(x_t), aux = coef E Σ_e f_e mean_t p_te.
#[test]
fn output_and_aux_loss_are_their_definitions() {
    let cfg = json!({"num_experts": 4, "top_k": 2, "capacity_factor": 0.75, "aux_loss_coef": 0.1, "d_expert": 8});
    let model = MambaLM::new(config(cfg), DType::F64, 2).unwrap();
    let m = moe(&model);
    let x = Tensor::randn(&[2, 5, 16], 0.0, 1.0, DType::F64, &mut Rng::new(1));
    let (out, stats) = m.forward(&x, true).unwrap();
    let xs = x.reshape(&[10, 16]).unwrap();
    let p = xs.matmul(&m.router.transpose(0, 1).unwrap()).unwrap().log_softmax().unwrap().exp().unwrap();
    let pv = p.to_vec_f64().unwrap();
    let route = m.route(&pv, 10, true);
    assert!(route.dropped > 0.0, "capacity 0.75 drops some choices");
    let ys: Vec<Vec<f64>> = m.experts.iter().map(|e| e.forward(&xs).unwrap().to_vec_f64().unwrap()).collect();
    let got = out.to_vec_f64().unwrap();
    for t in 0..10 {
        for c in 0..16 {
            let want: f64 = (0..4).map(|e| route.mask[t * 4 + e] * pv[t * 4 + e] * ys[e][t * 16 + c]).sum();
            assert!((got[t * 16 + c] - want).abs() < 1e-12, "token {t} channel {c}");
        }
    }
    let mean_p = |e: usize| (0..10).map(|t| pv[t * 4 + e]).sum::<f64>() / 10.0;
    let aux: f64 = 0.1 * 4.0 * (0..4).map(|e| route.load[e] * mean_p(e)).sum::<f64>();
    assert!((stats.aux_loss.item().unwrap() - aux).abs() < 1e-14);
    assert!((stats.load.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

/// With room for every token, step mode (no capacity) computes what the whole sequence does.
#[test]
fn step_and_prefill_match_parallel_mode() {
    let model =
        MambaLM::new(config(json!({"num_experts": 3, "top_k": 2, "capacity_factor": 3.0})), DType::F64, 3).unwrap();
    let worst = step_vs_parallel(&model, 12);
    assert!(worst < 1e-10, "step vs parallel {worst:e}");
    let worst = prefill_vs_parallel(&model, 5, 12);
    assert!(worst < 1e-10, "prefill + step vs parallel {worst:e}");
}

/// The routing fixed, the output and the aux loss are differentiable in x and every
/// parameter (the router through the gates and P_e).
#[test]
fn gradients_check_in_f64() {
    let cfg = json!({"num_experts": 2, "top_k": 1, "capacity_factor": 1.0, "d_expert": 1});
    let model = MambaLM::new(config(cfg), DType::F64, 4).unwrap();
    let m = moe(&model);
    let x = Tensor::randn(&[1, 4, 16], 0.0, 1.0, DType::F64, &mut Rng::new(2));
    let mut inputs = vec![x, m.router.clone()];
    inputs.extend(m.experts.iter().flat_map(|e| [e.fc1.clone(), e.fc2.clone()]));
    let f = |t: &[Tensor]| {
        let experts = (0..2)
            .map(|e| GatedMlp { hidden: m.experts[e].hidden, fc1: t[2 + 2 * e].clone(), fc2: t[3 + 2 * e].clone() })
            .collect();
        let layer = Moe { cfg: m.cfg.clone(), router: t[1].clone(), experts };
        let (y, stats) =
            layer.forward(&t[0], true).map_err(|e| mamba_engine::Error::Invalid { op: "moe", msg: e.to_string() })?;
        y.sum_all()?.add(&stats.aux_loss.mul_scalar(100.0)?)
    };
    // Central differences must not flip a choice: the routing at x is far from a tie here.
    let report = gradcheck::check(f, &inputs, Default::default()).unwrap();
    assert!(report.checked > 0);
}

#[test]
fn objective_adds_the_aux_loss_and_names_are_declared() {
    let model = MambaLM::new(config(json!({"num_experts": 2, "d_expert": 8})), DType::F64, 5).unwrap();
    let ids: Vec<usize> = (0..16).map(|i| (i * 37) % 256).collect();
    let targets: Vec<i64> = ids.iter().map(|&i| ((i + 1) % 256) as i64).collect();
    let obj = model.objective(&ids, &targets, 2, 8).unwrap();
    let aux = obj.moe[0].aux_loss.item().unwrap();
    assert!(aux > 0.0);
    assert!((obj.total.item().unwrap() - obj.cross_entropy.item().unwrap() - aux).abs() < 1e-12);
    assert_eq!(model.loss(&ids, &targets, 2, 8).unwrap().item().unwrap(), obj.cross_entropy.item().unwrap());
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    for n in ["norm2.weight", "mlp.router.weight", "mlp.experts.0.fc1.weight", "mlp.experts.1.fc2.weight"] {
        assert!(names.contains(&format!("backbone.layers.1.{n}")), "{n} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("backbone.layers.0.mlp")), "layer 0 has no MLP");
    assert_eq!(model.cfg.param_count().unwrap(), model.num_parameters());
    let json = serde_json::to_string(&model.cfg).unwrap();
    assert!(json.contains(r#""moe_layer_idx":[1]"#) && MambaConfig::from_json(&json).unwrap() == model.cfg);
    assert!(!serde_json::to_string(&MambaConfig::new(16, 2)).unwrap().contains("moe"), "no MoE, no MoE keys");
}

#[test]
fn moe_cfg_errors_name_the_key() {
    let err = |cfg: serde_json::Value| config(cfg).validate().unwrap_err().to_string();
    assert!(err(json!({})).contains("moe_cfg.num_experts"));
    assert!(err(json!({"num_experts": 2, "top_k": 3})).contains("moe_cfg.top_k"));
    assert!(err(json!({"num_experts": 2, "capacity_factor": 0.0})).contains("moe_cfg.capacity_factor"));
    assert!(err(json!({"num_experts": 2, "experts": 2})).contains("moe_cfg.experts"));
    let mut out_of_range = config(json!({"num_experts": 2}));
    out_of_range.moe_layer_idx = vec![2];
    assert!(out_of_range.validate().unwrap_err().to_string().contains("moe_layer_idx"));
}

/// Top 2 of 4 experts with a capacity of one token each (so choices are dropped) and an
/// expert that no token reaches (its router row far below the others for positive inputs):
/// the gradient check of the gathered path, and the idle expert gets no gradient at all.
#[test]
fn top_two_with_drops_and_an_idle_expert_check_in_f64() {
    let cfg = json!({"num_experts": 4, "top_k": 2, "capacity_factor": 0.5, "d_expert": 2});
    let model = MambaLM::new(config(cfg), DType::F64, 6).unwrap();
    let m = moe(&model);
    let x = Tensor::rand_uniform(&[1, 4, 16], 0.1, 1.5, DType::F64, &mut Rng::new(7));
    let mut router = m.router.to_vec_f64().unwrap();
    router[3 * 16..].iter_mut().for_each(|w| *w = -5.0); // expert 3: logit < -8 for every token
    let router = Tensor::from_f64(&router, &[4, 16], DType::F64).unwrap();
    let mut inputs = vec![x, router];
    inputs.extend(m.experts[..3].iter().flat_map(|e| [e.fc1.clone(), e.fc2.clone()]));
    let layer_of = |t: &[Tensor]| {
        let mut experts: Vec<GatedMlp> = (0..3)
            .map(|e| GatedMlp { hidden: m.experts[e].hidden, fc1: t[2 + 2 * e].clone(), fc2: t[3 + 2 * e].clone() })
            .collect();
        experts.push(GatedMlp {
            hidden: m.experts[3].hidden,
            fc1: m.experts[3].fc1.clone(),
            fc2: m.experts[3].fc2.clone(),
        });
        Moe { cfg: m.cfg.clone(), router: t[1].clone(), experts }
    };
    let f = |t: &[Tensor]| {
        let (y, stats) = layer_of(t)
            .forward(&t[0], true)
            .map_err(|e| mamba_engine::Error::Invalid { op: "moe", msg: e.to_string() })?;
        assert!(stats.dropped > 0.0 && stats.load[3] == 0.0, "drops {} load {:?}", stats.dropped, stats.load);
        y.sum_all()?.add(&stats.aux_loss.mul_scalar(100.0)?)
    };
    let report = gradcheck::check(f, &inputs, Default::default()).unwrap();
    assert!(report.checked > 0);
    // the idle expert, as a leaf: no gradient reaches it
    let idle = m.experts[3].fc1.detach().requires_grad();
    let mut layer = layer_of(&inputs);
    layer.experts[3].fc1 = idle.clone();
    layer.forward(&inputs[0], true).unwrap().0.sum_all().unwrap().backward().unwrap();
    assert!(idle.grad().is_none(), "an expert without tokens does no work");
}
