//! `ssm_cfg`: which mixer the layers use (`"layer"`) and that mixer's own keys, with the
//! defaults of the reference constructors (`Mamba` in `mamba_ssm/modules/mamba_simple.py`,
//! `Mamba2` in `mamba_ssm/modules/mamba2.py`).
//!
//! ```text
//! "ssm_cfg": {}                                            Mamba-1, every default (mamba-130m)
//! "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 4}       Mamba-1
//! "ssm_cfg": {"layer": "Mamba2", "headdim": 16, "ngroups": 2, ..}          Mamba-2
//! ```
//!
//! `"layer"` absent means "Mamba1", as in the reference's `create_block`. When written, a
//! Mamba-1 `ssm_cfg` has no `"layer"` (the reference writes back the `ssm_cfg` it was given,
//! and the published Mamba-1 checkpoints have none); a Mamba-2 one has `"layer": "Mamba2"`.
//! The main sizes are always written; every other key only where it differs from its default.

use super::keys::{key_error, Fields};
use crate::{Error, Result};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

/// The mixer of every (non-attention) layer, with its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum SsmConfig {
    Mamba1(Mamba1Config),
    Mamba2(Mamba2Config),
}

/// How the reference initialises `dt_proj.weight`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtInit {
    /// U(-s, s) with s = dt_rank^-0.5 · dt_scale (the default).
    Random,
    /// s everywhere.
    Constant,
}

/// The block around the SSM: the architectures of the Mamba paper's Table 1 (selective
/// copying). Not a reference key: written only when not `mamba`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// The Mamba block: conv, SiLU, SSM, gated by silu(z) (the default).
    #[default]
    Mamba,
    /// The SSM alone between the two linear projections: no conv, no gate.
    NoGate,
    /// H3: q, k, v projections; a shift SSM (a short causal conv) on k; the SSM over k·v;
    /// gated by q.
    H3,
}

/// The sequence layer inside the block. Not a reference key: written only when not `s6`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SsmKind {
    /// Selective: Δ, B and C computed from the input at every position (the default).
    #[default]
    S6,
    /// Time-invariant (S4D-real): Δ per channel, B and C per channel and state, all
    /// parameters.
    S4,
}

/// The keys of the reference `Mamba` (Mamba-1) constructor, with its defaults, and the
/// project's `arch` and `ssm` (the paper's ablations).
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba1Config {
    /// N, the state size per channel (16).
    pub d_state: usize,
    /// Width of the causal depthwise convolution (4).
    pub d_conv: usize,
    /// d_inner = expand · d_model (2).
    pub expand: usize,
    /// Rank of the delta projection; `"auto"` (the default, or 0) is ceil(d_model / 16),
    /// resolved when read.
    pub dt_rank: usize,
    /// softplus(dt_proj.bias) starts log-uniform in [dt_min, dt_max] (0.001, 0.1), floored at
    /// dt_init_floor (1e-4).
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// dt_proj.weight's init ("random") and scale (1.0).
    pub dt_init: DtInit,
    pub dt_scale: f64,
    /// A bias on the convolution (true) and on in_proj/out_proj (false); only the defaults
    /// are implemented.
    pub conv_bias: bool,
    pub bias: bool,
    /// The reference's choice of fused CUDA kernels (true); no effect here.
    pub use_fast_path: bool,
    /// The block around the SSM (`mamba`) and the SSM itself (`s6`): the Mamba paper's
    /// Table 1 ablations (`mixer/ablation.rs`). The defaults are the reference Mamba block.
    pub arch: Arch,
    pub ssm: SsmKind,
    /// Vision Mamba's bidirectional block (`mixer/bimamba.rs`): a second branch reads the
    /// sequence backwards (false). Not a reference key: written only when true.
    pub bidirectional: bool,
}

/// The keys of the reference `Mamba2` constructor, with its defaults. The mixer
/// (`mixer/mamba2.rs`) builds the defaults and `conv_init`, `rmsnorm`, `norm_before_gate`,
/// `A_init_range` and the dt range; it refuses `d_ssm` < d_inner, `D_has_hdim`, a `dt_limit`
/// and the biases away from their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba2Config {
    /// N, the state size per head (128).
    pub d_state: usize,
    /// Width of the causal depthwise convolution over x, B and C (4).
    pub d_conv: usize,
    /// The convolution's weights start U(-conv_init, conv_init); `None` (default): PyTorch's
    /// default for `nn.Conv1d`.
    pub conv_init: Option<f64>,
    /// d_inner = expand · d_model (2).
    pub expand: usize,
    /// P, channels per head: nheads = d_ssm / headdim (64).
    pub headdim: usize,
    /// Channels that go through the SSM; `None` (default): all d_inner (the reference runs
    /// the rest through a gated MLP).
    pub d_ssm: Option<usize>,
    /// Groups of heads sharing one B and one C (1).
    pub ngroups: usize,
    /// A = -exp(A_log) starts with -A uniform in this range ([1, 16]).
    pub a_init_range: [f64; 2],
    /// D per channel instead of per head (false).
    pub d_has_hdim: bool,
    /// The gated RMSNorm before out_proj (true), normalising before the gate (false).
    pub rmsnorm: bool,
    pub norm_before_gate: bool,
    /// softplus(dt_bias) starts log-uniform in [dt_min, dt_max] (0.001, 0.1), floored at
    /// dt_init_floor (1e-4).
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// dt is clamped to this range ([0, inf]); JSON has no infinity, so an infinite upper
    /// end is written and read as `null`.
    pub dt_limit: [f64; 2],
    /// A bias on in_proj/out_proj (false) and on the convolution (true).
    pub bias: bool,
    pub conv_bias: bool,
    /// Time steps per chunk of the SSD algorithm (256).
    pub chunk_size: usize,
    /// The reference's kernel and tensor-parallel choices (true, true); no effect here.
    pub use_mem_eff_path: bool,
    pub sequence_parallel: bool,
    /// A bidirectional block (`mixer/bimamba.rs`, Vision Mamba) (false). Not a reference key:
    /// written only when true.
    pub bidirectional: bool,
}

impl Mamba1Config {
    /// The reference defaults for a model of width `d_model`.
    pub fn new(d_model: usize) -> Mamba1Config {
        Mamba1Config {
            d_state: 16,
            d_conv: 4,
            expand: 2,
            dt_rank: d_model.div_ceil(16),
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            dt_init: DtInit::Random,
            dt_scale: 1.0,
            conv_bias: true,
            bias: false,
            use_fast_path: true,
            arch: Arch::Mamba,
            ssm: SsmKind::S6,
            bidirectional: false,
        }
    }

    /// The reference Mamba block (not one of the paper's ablations).
    pub fn is_mamba(&self) -> bool {
        (self.arch, self.ssm) == (Arch::Mamba, SsmKind::S6)
    }

    fn read(f: &mut Fields, d_model: usize) -> Result<Mamba1Config> {
        let d = Mamba1Config::new(d_model);
        let dt_rank = match f.get::<Value>("dt_rank")? {
            None => 0,
            Some(Value::String(s)) if s == "auto" => 0,
            Some(v) => serde_json::from_value::<usize>(v.clone())
                .map_err(|_| key_error("ssm_cfg.dt_rank", format!("expected \"auto\" or a count, found {v}")))?,
        };
        // 0 is what this project's configs once held for "auto".
        let dt_rank = if dt_rank == 0 { d.dt_rank } else { dt_rank };
        Ok(Mamba1Config {
            d_state: f.or("d_state", d.d_state)?,
            d_conv: f.or("d_conv", d.d_conv)?,
            expand: f.or("expand", d.expand)?,
            dt_rank,
            dt_min: f.or("dt_min", d.dt_min)?,
            dt_max: f.or("dt_max", d.dt_max)?,
            dt_init_floor: f.or("dt_init_floor", d.dt_init_floor)?,
            dt_init: f.or("dt_init", d.dt_init)?,
            dt_scale: f.or("dt_scale", d.dt_scale)?,
            conv_bias: f.or("conv_bias", d.conv_bias)?,
            bias: f.or("bias", d.bias)?,
            use_fast_path: f.or("use_fast_path", d.use_fast_path)?,
            arch: f.or("arch", d.arch)?,
            ssm: f.or("ssm", d.ssm)?,
            bidirectional: f.or("bidirectional", d.bidirectional)?,
        })
    }

    /// d_inner = expand · d_model (`None` if it overflows).
    pub fn d_inner(&self, d_model: usize) -> Option<usize> {
        self.expand.checked_mul(d_model)
    }

    fn validate(&self) -> Result<()> {
        if self.d_state == 0 || self.d_conv == 0 || self.expand == 0 || self.dt_rank == 0 {
            return unsupported("ssm_cfg: d_state, d_conv, expand and dt_rank must be positive");
        }
        check_dt_range(self.dt_min, self.dt_max, self.dt_init_floor)?;
        if !(self.dt_scale.is_finite() && self.dt_scale >= 0.0) {
            return unsupported("ssm_cfg.dt_scale must be finite and not negative");
        }
        if self.bias || !self.conv_bias {
            return unsupported("ssm_cfg: only bias = false and conv_bias = true (the defaults) are implemented");
        }
        if self.bidirectional && !self.is_mamba() {
            return unsupported("ssm_cfg: bidirectional = true builds the Mamba block with S6 only (no arch or ssm)");
        }
        Ok(())
    }

    fn write<M: SerializeMap>(&self, m: &mut M) -> std::result::Result<(), M::Error> {
        let d = Mamba1Config::new(0);
        m.serialize_entry("d_state", &self.d_state)?;
        m.serialize_entry("d_conv", &self.d_conv)?;
        m.serialize_entry("expand", &self.expand)?;
        m.serialize_entry("dt_rank", &self.dt_rank)?;
        write_if_not(m, "dt_min", &self.dt_min, &d.dt_min)?;
        write_if_not(m, "dt_max", &self.dt_max, &d.dt_max)?;
        write_if_not(m, "dt_init", &self.dt_init, &d.dt_init)?;
        write_if_not(m, "dt_scale", &self.dt_scale, &d.dt_scale)?;
        write_if_not(m, "dt_init_floor", &self.dt_init_floor, &d.dt_init_floor)?;
        write_if_not(m, "conv_bias", &self.conv_bias, &d.conv_bias)?;
        write_if_not(m, "bias", &self.bias, &d.bias)?;
        write_if_not(m, "use_fast_path", &self.use_fast_path, &d.use_fast_path)?;
        write_if_not(m, "arch", &self.arch, &d.arch)?;
        write_if_not(m, "ssm", &self.ssm, &d.ssm)?;
        write_if_not(m, "bidirectional", &self.bidirectional, &d.bidirectional)
    }
}

impl Default for Mamba2Config {
    /// The reference defaults.
    fn default() -> Mamba2Config {
        Mamba2Config {
            d_state: 128,
            d_conv: 4,
            conv_init: None,
            expand: 2,
            headdim: 64,
            d_ssm: None,
            ngroups: 1,
            a_init_range: [1.0, 16.0],
            d_has_hdim: false,
            rmsnorm: true,
            norm_before_gate: false,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            dt_limit: [0.0, f64::INFINITY],
            bias: false,
            conv_bias: true,
            chunk_size: 256,
            use_mem_eff_path: true,
            sequence_parallel: true,
            bidirectional: false,
        }
    }
}

impl Mamba2Config {
    fn read(f: &mut Fields) -> Result<Mamba2Config> {
        let d = Mamba2Config::default();
        let dt_limit = match f.get::<(f64, Option<f64>)>("dt_limit")? {
            Some((lo, hi)) => [lo, hi.unwrap_or(f64::INFINITY)],
            None => d.dt_limit,
        };
        Ok(Mamba2Config {
            d_state: f.or("d_state", d.d_state)?,
            d_conv: f.or("d_conv", d.d_conv)?,
            conv_init: f.or("conv_init", d.conv_init)?,
            expand: f.or("expand", d.expand)?,
            headdim: f.or("headdim", d.headdim)?,
            d_ssm: f.or("d_ssm", d.d_ssm)?,
            ngroups: f.or("ngroups", d.ngroups)?,
            a_init_range: f.or("A_init_range", d.a_init_range)?,
            d_has_hdim: f.or("D_has_hdim", d.d_has_hdim)?,
            rmsnorm: f.or("rmsnorm", d.rmsnorm)?,
            norm_before_gate: f.or("norm_before_gate", d.norm_before_gate)?,
            dt_min: f.or("dt_min", d.dt_min)?,
            dt_max: f.or("dt_max", d.dt_max)?,
            dt_init_floor: f.or("dt_init_floor", d.dt_init_floor)?,
            dt_limit,
            bias: f.or("bias", d.bias)?,
            conv_bias: f.or("conv_bias", d.conv_bias)?,
            chunk_size: f.or("chunk_size", d.chunk_size)?,
            use_mem_eff_path: f.or("use_mem_eff_path", d.use_mem_eff_path)?,
            sequence_parallel: f.or("sequence_parallel", d.sequence_parallel)?,
            bidirectional: f.or("bidirectional", d.bidirectional)?,
        })
    }

    /// d_inner = expand · d_model (`None` if it overflows).
    pub fn d_inner(&self, d_model: usize) -> Option<usize> {
        self.expand.checked_mul(d_model)
    }

    /// The channels that go through the SSM: `d_ssm`, or all of d_inner.
    pub fn d_ssm(&self, d_model: usize) -> Option<usize> {
        self.d_ssm.or(self.d_inner(d_model))
    }

    /// Heads: d_ssm / headdim.
    pub fn nheads(&self, d_model: usize) -> Option<usize> {
        self.d_ssm(d_model)?.checked_div(self.headdim)
    }

    /// The reference constructor's own checks.
    fn validate(&self, d_model: usize) -> Result<()> {
        let sizes = [self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups, self.chunk_size];
        if sizes.contains(&0) {
            return unsupported("ssm_cfg: d_state, d_conv, expand, headdim, ngroups and chunk_size must be positive");
        }
        let (Some(d_inner), Some(d_ssm)) = (self.d_inner(d_model), self.d_ssm(d_model)) else {
            return unsupported("ssm_cfg: expand · d_model overflows");
        };
        if d_ssm == 0 || d_ssm > d_inner || !d_ssm.is_multiple_of(self.headdim) {
            let what = format!(
                "ssm_cfg: d_ssm {d_ssm} must be a positive multiple of headdim {} and at most d_inner {d_inner}",
                self.headdim
            );
            return Err(Error::Unsupported(what));
        }
        let nheads = d_ssm / self.headdim;
        if !nheads.is_multiple_of(self.ngroups) {
            let what = format!("ssm_cfg: the {nheads} heads do not split into ngroups {} groups", self.ngroups);
            return Err(Error::Unsupported(what));
        }
        let [lo, hi] = self.a_init_range;
        if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
            return unsupported("ssm_cfg.A_init_range must be [lo, hi] with 0 < lo <= hi");
        }
        check_dt_range(self.dt_min, self.dt_max, self.dt_init_floor)?;
        let [lo, hi] = self.dt_limit;
        if !(lo >= 0.0 && hi >= lo) {
            return unsupported("ssm_cfg.dt_limit must be [lo, hi] with 0 <= lo <= hi");
        }
        Ok(())
    }

    fn write<M: SerializeMap>(&self, m: &mut M) -> std::result::Result<(), M::Error> {
        let d = Mamba2Config::default();
        m.serialize_entry("d_state", &self.d_state)?;
        m.serialize_entry("d_conv", &self.d_conv)?;
        write_if_not(m, "conv_init", &self.conv_init, &d.conv_init)?;
        m.serialize_entry("expand", &self.expand)?;
        m.serialize_entry("headdim", &self.headdim)?;
        write_if_not(m, "d_ssm", &self.d_ssm, &d.d_ssm)?;
        m.serialize_entry("ngroups", &self.ngroups)?;
        write_if_not(m, "A_init_range", &self.a_init_range, &d.a_init_range)?;
        write_if_not(m, "D_has_hdim", &self.d_has_hdim, &d.d_has_hdim)?;
        write_if_not(m, "rmsnorm", &self.rmsnorm, &d.rmsnorm)?;
        write_if_not(m, "norm_before_gate", &self.norm_before_gate, &d.norm_before_gate)?;
        write_if_not(m, "dt_min", &self.dt_min, &d.dt_min)?;
        write_if_not(m, "dt_max", &self.dt_max, &d.dt_max)?;
        write_if_not(m, "dt_init_floor", &self.dt_init_floor, &d.dt_init_floor)?;
        if self.dt_limit != d.dt_limit {
            let [lo, hi] = self.dt_limit;
            m.serialize_entry("dt_limit", &(lo, hi.is_finite().then_some(hi)))?;
        }
        write_if_not(m, "bias", &self.bias, &d.bias)?;
        write_if_not(m, "conv_bias", &self.conv_bias, &d.conv_bias)?;
        m.serialize_entry("chunk_size", &self.chunk_size)?;
        write_if_not(m, "use_mem_eff_path", &self.use_mem_eff_path, &d.use_mem_eff_path)?;
        write_if_not(m, "sequence_parallel", &self.sequence_parallel, &d.sequence_parallel)?;
        write_if_not(m, "bidirectional", &self.bidirectional, &d.bidirectional)
    }
}

impl SsmConfig {
    /// Read `ssm_cfg` (a JSON object) of a model of width `d_model`.
    pub(crate) fn read(value: Value, d_model: usize) -> Result<SsmConfig> {
        let mut probe = Fields::new(value, "ssm_cfg", "ssm_cfg.", "")?;
        let layer: String = probe.or("layer", "Mamba1".to_string())?;
        let (cfg, f) = match layer.as_str() {
            "Mamba1" => {
                let mut f = probe.rename("a Mamba1 layer's ssm_cfg");
                (SsmConfig::Mamba1(Mamba1Config::read(&mut f, d_model)?), f)
            }
            "Mamba2" => {
                let mut f = probe.rename("a Mamba2 layer's ssm_cfg");
                (SsmConfig::Mamba2(Mamba2Config::read(&mut f)?), f)
            }
            other => {
                let what = format!("`{other}` is not a layer of this project (\"Mamba1\", the default, or \"Mamba2\")");
                return Err(key_error("ssm_cfg.layer", what));
            }
        };
        f.finish()?;
        Ok(cfg)
    }

    /// The reference name of the layer: "Mamba1" or "Mamba2".
    pub fn layer(&self) -> &'static str {
        match self {
            SsmConfig::Mamba1(_) => "Mamba1",
            SsmConfig::Mamba2(_) => "Mamba2",
        }
    }

    pub(crate) fn validate(&self, d_model: usize) -> Result<()> {
        match self {
            SsmConfig::Mamba1(c) => c.validate(),
            SsmConfig::Mamba2(c) => c.validate(d_model),
        }
    }
}

impl Serialize for SsmConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            SsmConfig::Mamba1(c) => c.write(&mut m)?,
            SsmConfig::Mamba2(c) => {
                m.serialize_entry("layer", "Mamba2")?;
                c.write(&mut m)?
            }
        }
        m.end()
    }
}

fn unsupported(msg: &str) -> Result<()> {
    Err(Error::Unsupported(msg.into()))
}

/// dt's initial range, as both reference constructors draw it.
fn check_dt_range(dt_min: f64, dt_max: f64, floor: f64) -> Result<()> {
    if !(dt_min > 0.0 && dt_max >= dt_min && dt_max.is_finite() && floor.is_finite() && floor >= 0.0) {
        return unsupported("ssm_cfg: dt_min, dt_max and dt_init_floor must satisfy 0 < dt_min <= dt_max, 0 <= floor");
    }
    Ok(())
}

/// Write `key` only where `value` differs from the reference default.
fn write_if_not<M: SerializeMap, T: Serialize + PartialEq>(
    m: &mut M,
    key: &'static str,
    value: &T,
    default: &T,
) -> std::result::Result<(), M::Error> {
    if value != default {
        m.serialize_entry(key, value)?;
    }
    Ok(())
}
