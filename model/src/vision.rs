//! Vision Mamba (Vim, Zhu et al. 2024) for image classification: an image cut into p x p
//! patches becomes a sequence, a class token sits in its middle, and bidirectional Mamba
//! blocks (`mixer/bimamba.rs`) mix it; the class token's output is classified. With C
//! channels, an H x W image, M = (H/p)(W/p) patches and d = d_model:
//!
//! ```text
//! patches  = the image as M rows of C·p·p pixels, row-major over the patch grid   (B, M, Cpp)
//! x        = patches @ patch_embed.proj.weightᵀ + bias                            (B, M, d)
//!            (a p x p convolution with stride p)
//! x        = [x_0 .. x_{M/2-1}, cls_token, x_{M/2} .. x_{M-1}] + pos_embed        (B, M + 1, d)
//! h, r     = the blocks, as the LM's (block.rs), each mixer a BiMamba (Mamba-1 or -2)
//! logits   = head(RMSNorm_f(h + r)[:, M/2])                                       (B, classes)
//! ```
//!
//! Names follow Vim's: `patch_embed.proj.{weight,bias}`, `cls_token`, `pos_embed`,
//! `layers.{i}.*`, `norm_f.weight`, `head.{weight,bias}`.

use crate::{
    block::Block,
    config::{MambaConfig, SsmConfig},
    params::{self, Decay, Init, Param, Vb},
    Error, Result, RMS_EPS,
};
use mamba_engine::{DType, Tensor};

/// A Vision Mamba's shape: the images it reads and the blocks it mixes them with.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    /// C, H, W of every image.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// p: the side of a square patch; it must divide H and W.
    pub patch: usize,
    pub classes: usize,
    /// d_model, n_layer and the mixer (made bidirectional); its vocabulary is unused.
    pub blocks: MambaConfig,
}

/// The image side of a [`VisionConfig`], as `config.json` holds it under `"vision"`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageShape {
    channels: usize,
    height: usize,
    width: usize,
    patch: usize,
    classes: usize,
}

impl VisionConfig {
    /// The config as JSON: the blocks' `MambaConfig` keys, and `"vision"` with the image
    /// shape, the patch and the classes.
    pub fn to_json(&self) -> Result<String> {
        let VisionConfig { channels, height, width, patch, classes, .. } = *self;
        let mut value = serde_json::to_value(&self.blocks)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("vision".into(), serde_json::to_value(ImageShape { channels, height, width, patch, classes })?);
        }
        Ok(serde_json::to_string_pretty(&value)?)
    }

    /// Read [`VisionConfig::to_json`]'s output; errors name the key.
    pub fn from_json(text: &str) -> Result<VisionConfig> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        let shape = value.as_object_mut().and_then(|m| m.remove("vision"));
        let Some(shape) = shape else {
            return Err(Error::Config("`vision`: missing (this is not an image model's config)".into()));
        };
        let ImageShape { channels, height, width, patch, classes } =
            serde_json::from_value(shape).map_err(|e| Error::Config(format!("`vision`: {e}")))?;
        let blocks = MambaConfig::from_json(&value.to_string())?;
        let cfg = VisionConfig { channels, height, width, patch, classes, blocks };
        cfg.validate()?;
        Ok(cfg)
    }

    /// M, the patches of an image.
    pub fn patches(&self) -> usize {
        (self.height / self.patch.max(1)) * (self.width / self.patch.max(1))
    }

    fn validate(&self) -> Result<()> {
        let p = self.patch;
        if self.channels == 0 || p == 0 || self.classes < 2 || self.height == 0 || self.width == 0 {
            return Err(Error::Unsupported("an image model needs channels, a patch, a size and 2+ classes".into()));
        }
        if !self.height.is_multiple_of(p) || !self.width.is_multiple_of(p) {
            let what = format!("the patch {p} must divide the image's height {} and width {}", self.height, self.width);
            return Err(Error::Unsupported(what));
        }
        let bidirectional = match &self.blocks.ssm_cfg {
            SsmConfig::Mamba1(c) => c.bidirectional,
            SsmConfig::Mamba2(c) => c.bidirectional,
        };
        if !bidirectional {
            return Err(Error::Unsupported("Vision Mamba's blocks are bidirectional: set bidirectional".into()));
        }
        self.blocks.validate()
    }
}

/// The model: its parameters as declared.
pub struct VisionMamba {
    pub cfg: VisionConfig,
    pub patch_weight: Tensor, // (d, C p p)
    pub patch_bias: Tensor,   // (d)
    pub cls_token: Tensor,    // (1, 1, d)
    pub pos_embed: Tensor,    // (1, M + 1, d)
    pub layers: Vec<Block>,
    pub norm_f: Tensor,    // (d)
    pub head: Tensor,      // (classes, d)
    pub head_bias: Tensor, // (classes)
    /// Time steps between the states the scan saves for backward.
    pub scan_chunk: usize,
    params: Vec<Param>,
}

impl VisionMamba {
    /// A fresh model of `cfg` on the CPU, drawn from `seed`: the patch embedding and the head
    /// as `nn.Conv2d` / `nn.Linear` (the head's bias 0), the class token and the position
    /// embedding N(0, 0.02²), the blocks as the LM's.
    pub fn new(cfg: VisionConfig, dtype: DType, seed: u64) -> Result<VisionMamba> {
        cfg.validate()?;
        VisionMamba::declare(cfg, params::fresh(dtype, seed))
    }

    /// Every parameter declared, in order, made by `build`.
    fn declare<F: FnMut(params::Spec<'_>) -> Result<Tensor>>(
        cfg: VisionConfig,
        mut build: params::Build<F>,
    ) -> Result<VisionMamba> {
        let (d, m, cpp) = (cfg.blocks.d_model, cfg.patches(), cfg.channels * cfg.patch * cfg.patch);
        let mut vb = Vb::root(&mut build);
        let fan = |n: usize| Init::Uniform { bound: 1.0 / (n as f64).sqrt() };
        let mut embed = vb.pp("patch_embed.proj");
        let patch_weight = embed.get("weight", &[d, cpp], fan(cpp), Decay::Yes)?;
        let patch_bias = embed.get("bias", &[d], fan(cpp), Decay::No)?;
        let cls_token = vb.get("cls_token", &[1, 1, d], Init::Normal { std: 0.02 }, Decay::No)?;
        let pos_embed = vb.get("pos_embed", &[1, m + 1, d], Init::Normal { std: 0.02 }, Decay::No)?;
        let mut blocks = vb.pp("layers");
        let layers = (0..cfg.blocks.n_layer)
            .map(|i| Block::declare(&cfg.blocks, i, &mut blocks.pp(i)))
            .collect::<Result<_>>()?;
        let norm_f = vb.get("norm_f.weight", &[d], Init::Ones, Decay::No)?;
        let head = vb.get("head.weight", &[cfg.classes, d], fan(d), Decay::Yes)?;
        let classes = cfg.classes;
        let head_bias =
            vb.get("head.bias", &[classes], Init::Values(Box::new(move |_| vec![0.0; classes])), Decay::No)?;
        let params = build.params;
        Ok(VisionMamba {
            cfg,
            patch_weight,
            patch_bias,
            cls_token,
            pos_embed,
            layers,
            norm_f,
            head,
            head_bias,
            scan_chunk: 64,
            params,
        })
    }

    /// Every parameter in declaration order, with its name and decay flag.
    pub fn parameters(&self) -> &[Param] {
        &self.params
    }

    /// Set every parameter from `tensors` (by name; shapes must match; none may be left
    /// over), e.g. from a checkpoint's `model.safetensors`.
    pub fn load_parameters(&self, tensors: &std::collections::BTreeMap<String, crate::io::Loaded>) -> Result<()> {
        for p in &self.params {
            let t = tensors
                .get(&p.name)
                .and_then(crate::io::Loaded::tensor)
                .ok_or_else(|| Error::Weights(format!("missing float tensor `{}`", p.name)))?;
            if t.shape() != p.tensor.shape() {
                let (got, want) = (t.shape(), p.tensor.shape());
                return Err(Error::Weights(format!("`{}` has shape {got:?}, the model expects {want:?}", p.name)));
            }
            p.tensor.set_data(&t.to_dtype(p.tensor.dtype())?.to(p.tensor.device())?)?;
        }
        if let Some(extra) = tensors.keys().find(|k| !self.params.iter().any(|p| &p.name == *k)) {
            return Err(Error::Weights(format!("unexpected tensor `{extra}`: it does not belong to this model")));
        }
        Ok(())
    }

    /// The same model with its parameters (as fresh leaves) on `device`.
    pub fn to(&self, device: mamba_engine::Device) -> Result<VisionMamba> {
        let moved = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().to(device)?.requires_grad()) };
        let model = VisionMamba::declare(self.cfg.clone(), params::from_params(&self.params, moved))?;
        Ok(VisionMamba { scan_chunk: self.scan_chunk, ..model })
    }

    /// images (B, C, H, W) -> logits (B, classes).
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let VisionConfig { channels: c, height, width, .. } = self.cfg;
        let want = [images.dim(0)?, c, height, width];
        if images.shape() != want {
            let what = format!("images of shape {:?}, the model reads (B, {c}, {height}, {width})", images.shape());
            return Err(Error::Unsupported(what));
        }
        let (b, m, half) = (want[0], self.cfg.patches(), self.cfg.patches() / 2);
        let x = self.embed_patches(images)?; // (B, M, d)
        let d = x.dim(2)?;
        let cls = self.cls_token.broadcast_as(&[b, 1, d])?;
        let x = Tensor::concat(&[&x.narrow(1, 0, half)?, &cls, &x.narrow(1, half, m - half)?], 1)?;
        let mix = |_, mixer: &crate::Mixer, x: &Tensor| mixer.forward(x, self.scan_chunk, false);
        let r = crate::block::through_blocks(&self.layers, x.add(&self.pos_embed)?, mix, Some(&mut Vec::new()))?;
        let token = r.narrow(1, half, 1)?.reshape(&[b, d])?.rms_norm(&self.norm_f, RMS_EPS)?;
        Ok(token.matmul_autocast(&self.head.transpose(0, 1)?)?.add(&self.head_bias)?)
    }

    /// The patch embedding: images (B, C, H, W) -> (B, M, d), patch m = (row, column) of the
    /// grid in row-major order, its pixels in (channel, row, column) order.
    fn embed_patches(&self, images: &Tensor) -> Result<Tensor> {
        let VisionConfig { channels: c, height, width, patch: p, .. } = self.cfg;
        let (b, m) = (images.dim(0)?, self.cfg.patches());
        // (B, C, H/p, p, W/p, p) -> (B, H/p, W/p, C, p, p): one row of C·p·p pixels per patch
        let grid = images.reshape(&[b, c, height / p, p, width / p, p])?;
        let patches = grid.transpose(1, 2)?.transpose(2, 4)?.transpose(3, 4)?.reshape(&[b, m, c * p * p])?;
        Ok(patches.matmul_autocast(&self.patch_weight.transpose(0, 1)?)?.add(&self.patch_bias)?)
    }

    /// Mean cross-entropy of the classes of `images` against `labels`.
    pub fn loss(&self, images: &Tensor, labels: &[usize]) -> Result<Tensor> {
        let targets: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        Ok(self.forward(images)?.cross_entropy(&targets, -100)?)
    }
}

#[cfg(test)]
mod tests;
