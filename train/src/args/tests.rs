//! Tests of `mamba train`'s flags: parsing, presets, the family config, what --resume may change.

use super::*;

#[test]
fn every_flag_is_classified_for_resume() {
    use clap::Args;
    let cmd = TrainArgs::augment_args(clap::Command::new("t"));
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let homes = [RESUMABLE.contains(&id), FIXED.contains(&id), RUN_ONLY.contains(&id)];
        assert_eq!(homes.iter().filter(|&&h| h).count(), 1, "--{id} must be in exactly one of the three lists");
    }
}

#[test]
fn given_flags_and_task_defaults() {
    let args = TrainArgs::parse_flags(&["--lr", "1e-3", "--seed", "1337"]).unwrap();
    assert_eq!(args.given, ["lr", "seed"].map(String::from).into());
    assert_eq!((args.n_layer, args.batch), (4, 16));
    let task = TrainArgs::parse_flags(&["--task", "induction-heads", "--batch", "8"]).unwrap();
    assert_eq!((task.n_layer, task.batch, task.lr), (2, 8, 2e-3));
    // Negative numbers reach validate(), which names the flag.
    let negative = TrainArgs::parse_flags(&["--lr", "-1"]).unwrap();
    let msg = negative.validate().unwrap_err().to_string();
    assert!(msg.contains("--lr must be a finite number >= 0, got -1"), "{msg}");
    let msg = TrainArgs::parse_flags(&["--min-lr-frac", "2"]).unwrap().validate().unwrap_err().to_string();
    assert!(msg.contains("--min-lr-frac"), "{msg}");
}

#[test]
fn the_layer_flags_make_the_model_config() {
    let cfg = |flags: &[&str]| TrainArgs::parse_flags(flags).unwrap().model_config(256).ssm_cfg;
    let SsmConfig::Mamba1(one) = cfg(&[]) else { panic!("the default layer is Mamba-1") };
    assert_eq!(one, mamba_model::Mamba1Config::new(128)); // as before the flags
    let SsmConfig::Mamba1(one) = cfg(&["--d-state", "8"]) else { panic!() };
    assert_eq!(one.d_state, 8);
    let SsmConfig::Mamba2(two) = cfg(&["--layer", "mamba2"]) else { panic!("--layer mamba2") };
    assert_eq!(two, Mamba2Config::default()); // the reference defaults: d_state 128, headdim 64
    let flags = ["--layer", "mamba2", "--d-state", "16", "--headdim", "32", "--ngroups", "2", "--chunk-size", "8"];
    let SsmConfig::Mamba2(two) = cfg(&flags) else { panic!() };
    assert_eq!((two.d_state, two.headdim, two.ngroups, two.chunk_size), (16, 32, 2, 8));
    let SsmConfig::Mamba1(one) = cfg(&["--arch", "no-gate", "--ssm", "s4"]) else { panic!("--arch") };
    assert_eq!((one.arch, one.ssm), (mamba_model::Arch::NoGate, mamba_model::SsmKind::S4));
    let SsmConfig::Mamba1(one) = cfg(&["--arch", "h3"]) else { panic!("--arch h3") };
    assert_eq!((one.arch, one.ssm), (mamba_model::Arch::H3, mamba_model::SsmKind::S6));
}

#[test]
fn attention_flags_make_the_hybrid_config() {
    let cfg = |flags: &[&str]| TrainArgs::parse_flags(flags).unwrap().model_config(256);
    assert!(cfg(&[]).attn_layer_idx.is_empty());
    let hybrid = cfg(&["--n-layer", "8", "--attn-every", "4", "--attn-heads", "4"]);
    assert_eq!(hybrid.attn_layer_idx, [2, 6]); // the middle of each group of 4, as Jamba
    assert_eq!(serde_json::Value::Object(hybrid.attn_cfg.clone()), serde_json::json!({"num_heads": 4, "causal": true}));
    hybrid.validate().unwrap();
    assert_eq!(cfg(&["--attn-every", "2", "--d-model", "256"]).attn_cfg["num_heads"], 4); // d_model / 64
    let refused = |flags: &[&str]| TrainArgs::parse_flags(flags).unwrap().validate().unwrap_err().to_string();
    assert!(refused(&["--attn-every", "9"]).contains("--attn-every 9 makes no layer attention with --n-layer 4"));
    assert!(refused(&["--attn-every", "2", "--attn-heads", "3"]).contains("--attn-heads 3 must divide --d-model 128"));
    assert!(refused(&["--attn-heads", "2"]).contains("--attn-heads needs --attn-every"));
}

#[test]
fn moe_flags_and_presets_make_the_family_config() {
    let cfg = |flags: &[&str]| TrainArgs::parse_flags(flags).unwrap().model_config(256);
    let moe = cfg(&["--moe-every", "2", "--experts", "8", "--top-k", "2", "--d-expert", "64"]);
    assert_eq!(moe.moe_layer_idx, [1, 3]);
    let want = serde_json::json!({"num_experts": 8, "top_k": 2, "d_expert": 64});
    assert_eq!(serde_json::Value::Object(moe.moe_cfg.clone()), want);
    moe.validate().unwrap();
    let jamba = cfg(&["--preset", "jamba-tiny"]);
    assert_eq!((jamba.n_layer, &jamba.attn_layer_idx[..], &jamba.moe_layer_idx[..]), (4, &[2][..], &[1, 3][..]));
    assert_eq!(jamba.moe_cfg["top_k"], 2);
    let moe_mamba = cfg(&["--preset", "moe-mamba-tiny", "--n-layer", "2"]); // a flag given wins
    assert_eq!((moe_mamba.moe_layer_idx, moe_mamba.attn_layer_idx.len()), (vec![0, 1], 0));
    let refused = |flags: &[&str]| TrainArgs::parse_flags(flags).unwrap().validate().unwrap_err().to_string();
    assert!(refused(&["--moe-every", "5"]).contains("--moe-every 5 makes no layer MoE with --n-layer 4"));
    assert!(refused(&["--moe-every", "1", "--top-k", "5"]).contains("--top-k 5 must be 1 to --experts 4"));
    assert!(refused(&["--top-k", "2"]).contains("--top-k needs --moe-every"));
}

#[test]
fn layer_flag_errors_name_the_flag() {
    let msg = |flags: &[&str]| match TrainArgs::parse_flags(flags).unwrap().validate() {
        Err(e) => e.to_string(),
        Ok(()) => panic!("{flags:?} was accepted"),
    };
    let m2 = ["--layer", "mamba2"];
    for (flags, words) in [
        (&["--headdim", "48"][..], "--headdim 48 must divide d_inner = 2 x --d-model = 256"),
        (&["--headdim", "32", "--ngroups", "3"], "--ngroups 3 must divide the 8 heads"),
        (&["--headdim", "0"], "--headdim must be at least 1"),
        (&["--ngroups", "0"], "--ngroups must be at least 1"),
        (&["--chunk-size", "0"], "--chunk-size must be at least 1"),
        (&["--d-state", "0"], "--d-state must be at least 1"),
    ] {
        let text = msg(&[&m2[..], flags].concat());
        assert!(text.contains(words), "{flags:?}: {text}");
    }
    for flag in ["--headdim", "--ngroups", "--chunk-size"] {
        let text = msg(&[flag, "1"]);
        assert!(text.contains(&format!("{flag} is a Mamba-2 setting: add --layer mamba2")), "{text}");
    }
    assert!(TrainArgs::parse_flags(&["--layer", "mamba3"]).is_err());
    for flag in ["--arch", "--ssm"] {
        let value = if flag == "--arch" { "h3" } else { "s4" };
        let text = msg(&[&m2[..], &[flag, value]].concat());
        assert!(text.contains(&format!("{flag} sets an ablation of the Mamba-1 block")), "{text}");
    }
}

/// Checkpoints saved before the layer flags are Mamba-1 runs with the defaults.
#[test]
fn settings_saved_before_the_layer_flags_read_as_mamba1() {
    let mut saved = serde_json::to_value(TrainArgs::parse_flags(&[]).unwrap()).unwrap();
    let fields = saved.as_object_mut().unwrap();
    for id in ["layer", "d_state", "headdim", "ngroups", "chunk_size"] {
        assert!(fields.remove(id).is_some(), "{id} is saved");
    }
    let old: TrainArgs = serde_json::from_value(saved).unwrap();
    assert_eq!((old.layer, old.d_state, old.headdim, old.ngroups, old.chunk_size), (Layer::Mamba1, None, 64, 1, 256));
    let cli = TrainArgs::parse_flags(&["--layer", "mamba2", "--headdim", "32"]).unwrap();
    let (args, notes) = cli.resume_onto(old).unwrap();
    assert_eq!((args.layer, args.headdim), (Layer::Mamba1, 64));
    assert!(notes.iter().any(|n| n.contains("warning: --layer mamba2 ignored")), "{notes:?}");
}

#[test]
fn resume_applies_schedule_flags_and_keeps_the_model() {
    let saved = TrainArgs::parse_flags(&["--steps", "100"]).unwrap();
    let cli = TrainArgs::parse_flags(&["--steps", "300", "--lr", "1e-3", "--d-model", "64", "--quiet"]).unwrap();
    let (args, notes) = cli.resume_onto(saved).unwrap();
    assert_eq!((args.steps(), args.decay_steps(), args.lr, args.d_model), (300, 100, 1e-3, 128));
    assert!(args.quiet);
    let notes = notes.join("\n");
    assert!(notes.contains("--steps 300 (was 100)") && notes.contains("--lr 0.001 (was 0.003)"), "{notes}");
    assert!(notes.contains("warning: --d-model 64 ignored") && notes.contains("(--d-model 128)"), "{notes}");
    // A flag equal to the saved value is no news; --decay-steps re-stretches on request.
    let saved = TrainArgs::parse_flags(&["--steps", "100"]).unwrap();
    let cli = TrainArgs::parse_flags(&["--d-model", "128", "--decay-steps", "300"]).unwrap();
    let (args, notes) = cli.resume_onto(saved).unwrap();
    assert_eq!((args.decay_steps(), notes.len()), (300, 1), "{notes:?}");
}

/// --d-intermediate gives every block without MoE a gated MLP of that width (rounded up to
/// 128), under the reference names, and a block with MoE keeps its experts.
#[test]
fn d_intermediate_adds_gated_mlps() {
    let cfg = TrainArgs::parse_flags(&["--d-intermediate", "100", "--moe-every", "2", "--experts", "2"])
        .unwrap()
        .model_config(256);
    assert_eq!(cfg.d_intermediate, 100);
    let model = mamba_model::MambaLM::new(cfg, mamba_engine::DType::F32, 0).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<usize>> =
        model.named_parameters().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    assert_eq!(shapes["backbone.layers.0.mlp.fc1.weight"], [256, 128]); // 2 x 128 (value and gate)
    assert_eq!(shapes["backbone.layers.0.norm2.weight"], [128]);
    assert!(shapes.contains_key("backbone.layers.1.mlp.experts.0.fc1.weight"));
    assert!(!shapes.contains_key("backbone.layers.1.mlp.fc1.weight"));
}

/// --gpus: on the GPU only, not with --ranks, dividing --batch (checked before the device is
/// started, so these hold on any build); never saved, so a resume may change it.
#[test]
fn gpus_flag_is_checked_and_not_saved() {
    let refused = |flags: &[&str]| TrainArgs::parse_flags(flags).unwrap().validate().unwrap_err().to_string();
    assert_eq!(refused(&["--gpus", "2"]), "--gpus 2 trains on 2 GPUs: add --device cuda");
    assert_eq!(refused(&["--gpus", "0", "--device", "cuda"]), "--gpus must be at least 1");
    let msg = refused(&["--gpus", "2", "--ranks", "2", "--device", "cuda"]);
    assert!(msg.starts_with("--gpus 2 with --ranks 2: use one") && msg.contains("add --ranks 1"), "{msg}");
    let msg = refused(&["--gpus", "3", "--device", "cuda"]);
    assert_eq!(msg, "--gpus 3 must divide --batch 16: each GPU takes batch / N rows");
    assert!(TrainArgs::parse_flags(&["--gpus", "x"]).is_err());
    let saved = TrainArgs::parse_flags(&["--gpus", "4", "--device", "cuda"]).unwrap();
    assert!(serde_json::to_value(&saved).unwrap().get("gpus").is_none(), "--gpus is not saved");
    let cli = TrainArgs::parse_flags(&["--gpus", "2", "--device", "cuda"]).unwrap();
    let (args, notes) = cli.resume_onto(TrainArgs::parse_flags(&[]).unwrap()).unwrap();
    assert_eq!((args.gpus, args.device, notes.len()), (Some(2), Device::Cuda, 0), "{notes:?}");
    assert_eq!((args.last_step(0), TrainArgs { stop_after: Some(5), ..args }.last_step(998)), (1000, 1000));
}
