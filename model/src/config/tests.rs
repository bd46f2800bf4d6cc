//! Tests of config.rs: the reference files parse with the reference defaults, what is written
//! reads back, and every bad key or value is an error naming the key.

use super::*;

/// tests/fixtures/reference/mamba_lm.config.json (from ../shared/reference).
const MAMBA1_LM: &str = include_str!("../../../tests/fixtures/reference/mamba_lm.config.json");

/// ../shared/reference/mamba2_lm.config.json, verbatim.
const MAMBA2_LM: &str = r#"{
 "d_model": 64,
 "d_intermediate": 0,
 "n_layer": 2,
 "vocab_size": 256,
 "ssm_cfg": {
  "layer": "Mamba2",
  "d_state": 16,
  "d_conv": 4,
  "expand": 2,
  "headdim": 16,
  "ngroups": 2,
  "chunk_size": 8
 },
 "rms_norm": true,
 "residual_in_fp32": true,
 "fused_add_norm": true,
 "pad_vocab_size_multiple": 8,
 "tie_embeddings": true
}"#;

fn mamba1(cfg: &MambaConfig) -> &Mamba1Config {
    match &cfg.ssm_cfg {
        SsmConfig::Mamba1(c) => c,
        other => panic!("not Mamba1: {other:?}"),
    }
}

fn mamba2(cfg: &MambaConfig) -> &Mamba2Config {
    match &cfg.ssm_cfg {
        SsmConfig::Mamba2(c) => c,
        other => panic!("not Mamba2: {other:?}"),
    }
}

#[test]
fn published_configs_load_with_reference_defaults() {
    // The shape of state-spaces/mamba-130m's config.json: no layer, so Mamba-1.
    let text = r#"{"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": true,
                   "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8}"#;
    let cfg = MambaConfig::from_json(text).unwrap();
    let s = mamba1(&cfg);
    assert_eq!((s.d_state, s.d_conv, s.expand, s.dt_rank), (16, 4, 2, 48));
    assert_eq!((s.dt_min, s.dt_max, s.dt_init, s.dt_init_floor), (0.001, 0.1, DtInit::Random, 1e-4));
    assert_eq!((cfg.padded_vocab(), cfg.d_intermediate, cfg.attn_layer_idx.len()), (50280, 0, 0));
    // state-spaces/mamba2-130m's
    let text = r#"{"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
                   "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": true,
                   "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 16,
                   "tie_embeddings": true}"#;
    let cfg = MambaConfig::from_json(text).unwrap();
    assert_eq!(mamba2(&cfg), &Mamba2Config::default());
    let s = mamba2(&cfg);
    assert_eq!((s.d_state, s.d_conv, s.expand, s.headdim, s.ngroups, s.chunk_size), (128, 4, 2, 64, 1, 256));
    assert_eq!((s.nheads(768), s.dt_limit), (Some(24), [0.0, f64::INFINITY]));
    assert!(MambaConfig::from_json(r#"{"d_model": 0, "n_layer": 1, "vocab_size": 8, "ssm_cfg": {}}"#).is_err());
}

#[test]
fn the_reference_vectors_configs_parse() {
    let cfg = MambaConfig::from_json(MAMBA1_LM).unwrap();
    assert_eq!((cfg.d_model, cfg.n_layer, mamba1(&cfg).dt_rank), (64, 2, 4));
    let cfg = MambaConfig::from_json(MAMBA2_LM).unwrap();
    let s = mamba2(&cfg);
    assert_eq!((s.d_state, s.headdim, s.ngroups, s.chunk_size, s.nheads(64)), (16, 16, 2, 8, Some(8)));
    // what we write reads back as the same configuration, with the layer named
    let written = serde_json::to_string_pretty(&cfg).unwrap();
    assert!(written.contains(r#""layer": "Mamba2""#), "{written}");
    assert_eq!(MambaConfig::from_json(&written).unwrap(), cfg);
}

#[test]
fn mamba1_configs_are_written_as_before_plus_the_reference_keys() {
    let cfg = MambaConfig::new(64, 2);
    let written = serde_json::to_string(&cfg).unwrap();
    assert_eq!(
        written,
        r#"{"d_model":64,"d_intermediate":0,"n_layer":2,"vocab_size":256,"ssm_cfg":{"d_state":16,"d_conv":4,"expand":2,"dt_rank":4},"attn_layer_idx":[],"attn_cfg":{},"rms_norm":true,"residual_in_fp32":true,"fused_add_norm":true,"pad_vocab_size_multiple":8,"tie_embeddings":true}"#
    );
    assert_eq!(MambaConfig::from_json(&written).unwrap(), cfg);
    // A checkpoint written before the family: no layer, no d_intermediate, no attention keys.
    let old = r#"{"d_model": 64, "n_layer": 2, "vocab_size": 256,
                  "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 4},
                  "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
                  "pad_vocab_size_multiple": 8, "tie_embeddings": true}"#;
    assert_eq!(MambaConfig::from_json(old).unwrap(), cfg);
    // dt_rank: "auto", 0 (older files) and absent all mean ceil(d_model / 16)
    for rank in [r#""auto""#, "0"] {
        let text = format!(r#"{{"d_model": 64, "n_layer": 2, "vocab_size": 256, "ssm_cfg": {{"dt_rank": {rank}}}}}"#);
        assert_eq!(mamba1(&MambaConfig::from_json(&text).unwrap()).dt_rank, 4);
    }
}

#[test]
fn settings_away_from_the_defaults_round_trip() {
    let mut cfg = MambaConfig { d_intermediate: 100, attn_layer_idx: vec![1], ..MambaConfig::new(32, 3) };
    cfg.attn_cfg.insert("num_heads".into(), 4.into());
    cfg.attn_cfg.insert("causal".into(), true.into());
    let SsmConfig::Mamba1(s) = &mut cfg.ssm_cfg else { unreachable!() };
    (s.dt_min, s.dt_init, s.dt_scale, s.use_fast_path) = (0.01, DtInit::Constant, 0.5, false);
    let written = serde_json::to_string(&cfg).unwrap();
    assert!(written.contains(r#""dt_init":"constant""#) && !written.contains("dt_max"), "{written}");
    assert_eq!(MambaConfig::from_json(&written).unwrap(), cfg);

    let mut s =
        Mamba2Config { d_ssm: Some(64), conv_init: Some(0.1), dt_limit: [0.001, f64::INFINITY], ..Default::default() };
    s.a_init_range = [2.0, 4.0];
    let cfg = MambaConfig { ssm_cfg: SsmConfig::Mamba2(s), ..MambaConfig::new(64, 2) };
    let written = serde_json::to_string(&cfg).unwrap();
    assert!(written.contains(r#""dt_limit":[0.001,null]"#) && written.contains(r#""A_init_range":[2.0,4.0]"#));
    assert_eq!(MambaConfig::from_json(&written).unwrap(), cfg);
}

/// The message of `text`'s error, checked to name `key` in backquotes.
fn names_key(text: &str, key: &str) -> String {
    let msg = match MambaConfig::from_json(text) {
        Err(e) => e.to_string(),
        Ok(cfg) => panic!("{text} was accepted: {cfg:?}"),
    };
    assert!(msg.contains(&format!("`{key}`")), "the error should name `{key}`: {msg}");
    msg
}

#[test]
fn unknown_keys_wrong_types_and_unknown_layers_name_the_key() {
    let cfg = |top: &str, ssm: &str| {
        format!(r#"{{"d_model": 64, "n_layer": 2, "vocab_size": 256, "ssm_cfg": {{{ssm}}}{top}}}"#)
    };
    // misspelt keys, at the top and in ssm_cfg; a misspelt required key is reported as unknown
    let msg = names_key(&cfg(r#", "d_intermediat": 0"#, ""), "d_intermediat");
    assert!(msg.contains("unknown key") && msg.contains("d_intermediate"), "{msg}");
    names_key(r#"{"d_modle": 64, "n_layer": 2, "vocab_size": 256}"#, "d_modle");
    names_key(r#"{"n_layer": 2, "vocab_size": 256}"#, "d_model");
    let msg = names_key(&cfg("", r#""d_stat": 16"#), "ssm_cfg.d_stat");
    assert!(msg.contains("a Mamba1 layer's ssm_cfg has the keys") && msg.contains("dt_rank"), "{msg}");
    // another layer's key: headdim is Mamba-2's, dt_rank Mamba-1's
    names_key(&cfg("", r#""headdim": 16"#), "ssm_cfg.headdim");
    names_key(&cfg("", r#""layer": "Mamba2", "dt_rank": 4"#), "ssm_cfg.dt_rank");
    names_key(&cfg(r#", "attn_cfg": {"num_head": 4}"#, ""), "attn_cfg.num_head");
    // wrong types
    let msg = names_key(&cfg("", r#""d_state": "16""#), "ssm_cfg.d_state");
    assert!(msg.contains("invalid type"), "{msg}");
    names_key(&cfg(r#", "rms_norm": "yes""#, ""), "rms_norm");
    names_key(r#"{"d_model": 64, "n_layer": 2.5, "vocab_size": 256}"#, "n_layer");
    names_key(&cfg("", r#""dt_rank": "full""#), "ssm_cfg.dt_rank");
    names_key(&cfg("", r#""layer": "Mamba2", "dt_limit": [0, "inf"]"#), "ssm_cfg.dt_limit");
    names_key(r#"{"d_model": 64, "n_layer": 2, "vocab_size": 256, "ssm_cfg": []}"#, "ssm_cfg");
    names_key(&cfg(r#", "attn_layer_idx": [5]"#, ""), "attn_layer_idx");
    // a layer that is not Mamba1 or Mamba2
    let msg = names_key(&cfg("", r#""layer": "Mamba3""#), "ssm_cfg.layer");
    assert!(msg.contains("Mamba3"), "{msg}");
    // and JSON that is not JSON still says where
    let msg = MambaConfig::from_json(r#"{"d_model": 64,"#).err().unwrap().to_string();
    assert!(msg.contains("invalid config") && msg.contains("line"), "{msg}");
}

#[test]
fn mamba2_settings_are_checked_as_the_reference_does() {
    let with = |ssm: &str| {
        let text =
            format!(r#"{{"d_model": 64, "n_layer": 2, "vocab_size": 256, "ssm_cfg": {{"layer": "Mamba2", {ssm}}}}}"#);
        MambaConfig::from_json(&text).err().map(|e| e.to_string())
    };
    assert_eq!(with(r#""headdim": 16"#), None);
    for (bad, words) in [
        (r#""headdim": 48"#, "multiple of headdim"), // d_inner 128 is not a multiple of 48
        (r#""headdim": 16, "ngroups": 3"#, "ngroups"), // 8 heads in 3 groups
        (r#""headdim": 16, "d_ssm": 256"#, "at most d_inner"),
        (r#""headdim": 16, "A_init_range": [0, 16]"#, "A_init_range"),
        (r#""headdim": 16, "chunk_size": 0"#, "chunk_size"),
    ] {
        let msg = with(bad).unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(msg.contains(words), "{bad}: {msg}");
    }
}
