//! Tests of Vision Mamba: the patch embedding against the strided convolution it stands for,
//! the bidirectional mixer's symmetry under reversal and its f64 gradient check, the whole
//! model's gradients, and the settings it refuses.

use super::*;
use crate::{mixer::BiMamba, Mixer};
use mamba_engine::{gradcheck, Rng};

/// 2 channels of 4 x 6 pixels in patches of 2 (6 patches), d_model 8, 2 bidirectional layers.
fn config() -> VisionConfig {
    let mut blocks = MambaConfig::new(8, 2);
    let SsmConfig::Mamba1(c) = &mut blocks.ssm_cfg else { unreachable!("Mamba-1 by default") };
    (c.bidirectional, c.d_state) = (true, 4);
    VisionConfig { channels: 2, height: 4, width: 6, patch: 2, classes: 3, blocks }
}

/// The same with Mamba-2 blocks: 2 heads of 8, 2 groups, d_state 4, chunks of 3.
fn config2() -> VisionConfig {
    let c = crate::Mamba2Config {
        d_state: 4,
        headdim: 8,
        ngroups: 2,
        chunk_size: 3,
        bidirectional: true,
        ..Default::default()
    };
    VisionConfig { blocks: MambaConfig { ssm_cfg: SsmConfig::Mamba2(c), ..config().blocks }, ..config() }
}

fn images(b: usize, seed: u64) -> Tensor {
    Tensor::randn(&[b, 2, 4, 6], 0.0, 1.0, DType::F64, &mut Rng::new(seed))
}

#[test]
fn patch_embedding_is_a_strided_convolution() {
    let model = VisionMamba::new(config(), DType::F64, 1).unwrap();
    let img = images(2, 2);
    let got = model.embed_patches(&img).unwrap().to_vec_f64().unwrap(); // (2, 6, 8)
    let (x, w, bias) =
        (img.to_vec_f64().unwrap(), model.patch_weight.to_vec_f64().unwrap(), model.patch_bias.to_vec_f64().unwrap());
    for b in 0..2 {
        for (m, (gy, gx)) in (0..2).flat_map(|gy| (0..3).map(move |gx| (gy, gx))).enumerate() {
            for j in 0..8 {
                let mut want = bias[j];
                for c in 0..2 {
                    for u in 0..2 {
                        for v in 0..2 {
                            let pixel = x[((b * 2 + c) * 4 + gy * 2 + u) * 6 + gx * 2 + v];
                            want += w[j * 8 + c * 4 + u * 2 + v] * pixel;
                        }
                    }
                }
                let at = (b * 6 + m) * 8 + j;
                assert!((got[at] - want).abs() < 1e-12, "image {b} patch {m} channel {j}");
            }
        }
    }
}

fn bimamba(model: &VisionMamba) -> &BiMamba {
    match &model.layers[0].mixer {
        Mixer::BiMamba(m) => m,
        other => panic!("a {} mixer where BiMamba was expected", other.kind()),
    }
}

/// With the backward branch's weights equal to the forward one's, the layer commutes with
/// reversing the sequence: the backward branch is the forward one read from the other end.
#[test]
fn the_backward_branch_reads_the_sequence_reversed() {
    for cfg in [config(), config2()] {
        let model = VisionMamba::new(cfg, DType::F64, 3).unwrap();
        let m = bimamba(&model);
        let mirrored = match m {
            BiMamba::Mamba1 { forward: f, .. } => {
                let same =
                    [&f.conv_weight, &f.conv_bias, &f.x_proj, &f.dt_proj_weight, &f.dt_proj_bias, &f.a_log, &f.d];
                BiMamba::Mamba1 { forward: f.clone(), backward: same.map(Tensor::clone) }
            }
            BiMamba::Mamba2 { forward: f, .. } => {
                let same = [&f.conv_weight, &f.conv_bias, &f.dt_bias, &f.a_log, &f.d];
                BiMamba::Mamba2 { forward: f.clone(), backward: same.map(Tensor::clone) }
            }
        };
        let h = Tensor::randn(&[2, 7, 8], 0.0, 1.0, DType::F64, &mut Rng::new(4));
        let a = mirrored.forward(&h.flip(1).unwrap(), 3).unwrap().to_vec_f64().unwrap();
        let b = mirrored.forward(&h, 3).unwrap().flip(1).unwrap().to_vec_f64().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        // and with its own weights it does not (the branches are separate parameters)
        let own = m.forward(&h.flip(1).unwrap(), 3).unwrap().to_vec_f64().unwrap();
        assert!(own.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-6));
    }
}

#[test]
fn bidirectional_mixer_gradients_check_in_f64() {
    for cfg in [config(), config2()] {
        let model = VisionMamba::new(cfg, DType::F64, 5).unwrap();
        let m = bimamba(&model);
        let h = Tensor::randn(&[1, 5, 8], 0.0, 1.0, DType::F64, &mut Rng::new(6));
        let backward: Vec<Tensor> = match m {
            BiMamba::Mamba1 { backward, .. } => backward.to_vec(),
            BiMamba::Mamba2 { backward, .. } => backward.to_vec(),
        };
        let mut inputs = vec![h];
        inputs.extend(backward);
        // the input and every backward-branch parameter (the forward branch is the checked
        // Mamba-1 / Mamba-2 mixer's)
        let f = |t: &[Tensor]| {
            let layer = match m {
                BiMamba::Mamba1 { forward, .. } => {
                    BiMamba::Mamba1 { forward: forward.clone(), backward: std::array::from_fn(|i| t[1 + i].clone()) }
                }
                BiMamba::Mamba2 { forward, .. } => {
                    BiMamba::Mamba2 { forward: forward.clone(), backward: std::array::from_fn(|i| t[1 + i].clone()) }
                }
            };
            layer.forward(&t[0], 2).map_err(|e| mamba_engine::Error::Invalid { op: "bimamba", msg: e.to_string() })
        };
        let report = gradcheck::check(f, &inputs, Default::default()).unwrap();
        assert!(report.ops.contains(&"flip"), "{:?}", report.ops);
    }
}

#[test]
fn every_parameter_learns_and_names_are_vims() {
    let two = VisionMamba::new(config2(), DType::F64, 7).unwrap();
    two.loss(&images(3, 8), &[0, 2, 1]).unwrap().backward().unwrap();
    assert!(two.parameters().iter().all(|p| p.tensor.grad().is_some()), "Mamba-2 blocks: every gradient");
    assert!(two.parameters().iter().any(|p| p.name == "layers.0.mixer.dt_bias_b"));
    let model = VisionMamba::new(config(), DType::F64, 7).unwrap();
    let logits = model.forward(&images(3, 8)).unwrap();
    assert_eq!(logits.shape(), [3, 3]);
    model.loss(&images(3, 8), &[0, 2, 1]).unwrap().backward().unwrap();
    for p in model.parameters() {
        let g = p.tensor.grad().unwrap_or_else(|| panic!("{} has no gradient", p.name)).to_vec_f64().unwrap();
        assert!(g.iter().any(|v| *v != 0.0), "{}'s gradient is zero", p.name);
    }
    let names: Vec<&str> = model.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "patch_embed.proj.weight",
        "cls_token",
        "pos_embed",
        "layers.1.mixer.A_b_log",
        "layers.0.mixer.conv1d_b.weight",
        "head.bias",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(model.layers[0].mixer.new_state(1, DType::F64, mamba_engine::Device::Cpu).is_err(), "no step mode");
}

#[test]
fn bad_settings_are_refused() {
    let err = |edit: fn(&mut VisionConfig)| {
        let mut cfg = config();
        edit(&mut cfg);
        VisionMamba::new(cfg, DType::F32, 0).err().expect("refused").to_string()
    };
    assert!(err(|c| c.patch = 4).contains("must divide"));
    assert!(err(|c| c.classes = 1).contains("2+ classes"));
    assert!(err(|c| {
        let SsmConfig::Mamba1(s) = &mut c.blocks.ssm_cfg else { unreachable!() };
        s.bidirectional = false;
    })
    .contains("bidirectional"));
    let model = VisionMamba::new(config(), DType::F64, 0).unwrap();
    let wrong = Tensor::zeros(&[1, 2, 4, 4], DType::F64, mamba_engine::Device::Cpu).unwrap();
    assert!(model.forward(&wrong).unwrap_err().to_string().contains("(B, 2, 4, 6)"));
}
