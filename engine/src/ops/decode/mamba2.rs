//! One Mamba-2 layer of a token in fused kernels: [`decode_mamba2`] runs `decode_in` (norm,
//! in_proj, the conv over xBC), `decode_ssd` (every head's state update, the skip and the gate)
//! and `decode_rows` (out_proj of the gated norm into the residual): three launches on the GPU
//! where the generic step (`Mamba2::step` in the model) takes ~25 ops. The math is in `cpu.rs`.

use super::{bf16_refused, check, cpu, embed_args, gate_and_gather, invalid, with_elems, Embed, SsdDims, OP};
use crate::{dtype::Elem, error::Result, DType, Device, Tensor};

/// One Mamba-2 layer's weights as the model holds them (any shape with the right number of
/// elements, contiguous), with A = -exp(A_log) computed once by the caller; e = d_inner, H heads.
pub struct Mamba2Weights<'a> {
    pub norm: &'a Tensor,    // (M) the block's
    pub in_proj: &'a Tensor, // (2e + 2GN + H, M): z, xBC, dt
    pub conv_w: &'a Tensor,  // (e + 2GN, 1, K)
    pub conv_b: &'a Tensor,  // (e + 2GN)
    pub dt_bias: &'a Tensor, // (H)
    pub a: &'a Tensor,       // (H)
    pub d_skip: &'a Tensor,  // (H)
    /// The gated RMSNorm's weight (e), over one group, normalising y · silu(z); `None`: no norm.
    pub gate_norm: Option<&'a Tensor>,
    pub out_proj: &'a Tensor, // (M, e)
}

/// One Mamba-2 layer's recurrent state and scratch, each a buffer of its own.
pub struct Mamba2Buffers {
    /// The last K conv inputs, oldest first: (B, e + 2GN, K), as `Mamba2State::conv`.
    pub conv_state: Tensor,
    /// (B, H, P, N), as `Mamba2State::ssm`.
    pub ssm_state: Tensor,
    pub xbc: Tensor, // (B, e + 2GN) silu(conv): x, B, C
    pub zdt: Tensor, // (B, e + H) z, dt before its bias
    pub y: Tensor,   // (B, e)
}

impl Mamba2Buffers {
    /// The recurrent state: [conv_state, ssm_state] (what a generic step's state loads into).
    pub fn states(&self) -> [&Tensor; 2] {
        [&self.conv_state, &self.ssm_state]
    }

    /// Zeroed buffers for `dims`.
    pub fn zeros(dims: SsdDims, dtype: DType, device: Device) -> Result<Mamba2Buffers> {
        let (b, e, conv) = (dims.batch, dims.d_inner(), dims.conv_dim());
        let z = |shape: &[usize]| Tensor::zeros(shape, dtype, device);
        Ok(Mamba2Buffers {
            conv_state: z(&[b, conv, dims.d_conv])?,
            ssm_state: z(&[b, dims.heads, dims.headdim, dims.d_state])?,
            xbc: z(&[b, conv])?,
            zdt: z(&[b, e + dims.heads])?,
            y: z(&[b, e])?,
        })
    }
}

/// One layer for every sequence: `residual` (B, M) += Mixer(RMSNorm(residual)), updating the
/// conv and SSM states in `bufs`; with `embed` (the first layer) `residual` is first set to the
/// embedding's rows at the ids (an id outside [0, V) is clamped). `eps` is both norms'.
pub fn decode_mamba2(
    dims: SsdDims,
    residual: &Tensor,
    embed: Option<Embed<'_>>,
    w: &Mamba2Weights<'_>,
    bufs: &Mamba2Buffers,
    eps: f64,
) -> Result<()> {
    if let Some(why) = dims.unsupported() {
        return invalid(OP, why);
    }
    let SsdDims { batch, m, heads, d_state: n, d_conv: k, .. } = dims;
    let (e, conv) = (dims.d_inner(), dims.conv_dim());
    let written = [
        (residual, batch * m),
        (&bufs.conv_state, batch * conv * k),
        (&bufs.ssm_state, batch * e * n),
        (&bufs.xbc, batch * conv),
        (&bufs.zdt, batch * (e + heads)),
        (&bufs.y, batch * e),
    ];
    let mut read = vec![
        (w.norm, m),
        (w.in_proj, dims.in_layout().rows * m),
        (w.conv_w, conv * k),
        (w.conv_b, conv),
        (w.dt_bias, heads),
        (w.a, heads),
        (w.d_skip, heads),
        (w.out_proj, m * e),
    ];
    read.extend(w.gate_norm.map(|g| (g, e)));
    let gated = w.gate_norm.is_some();
    read.extend(embed_args(embed, m, batch)?);
    check(&written, &read)?;
    match residual.device() {
        Device::Cpu => match residual.dtype() {
            DType::F32 => layer_cpu::<f32>(dims, &written, &read, gated, eps),
            DType::F64 => layer_cpu::<f64>(dims, &written, &read, gated, eps),
            DType::BF16 => Err(bf16_refused()),
        },
        #[cfg(feature = "cuda")]
        Device::Cuda => super::cuda::decode_mamba2(dims, &written, &read, gated, eps),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(crate::dispatch::no_cuda(OP)),
    }
}

/// `written` and `read` in the order of [`decode_mamba2`]: read has the eight weights, the gate's
/// norm if `gated`, then the embedding and the ids for the first layer.
fn layer_cpu<T: Elem>(
    dims: SsdDims,
    written: &[(&Tensor, usize); 6],
    read: &[(&Tensor, usize)],
    gated: bool,
    eps: f64,
) -> Result<()> {
    with_elems::<T, _>(written, read, |ws, rs| {
        let [residual, conv_state, ssm_state, xbc, zdt, y] = ws else { unreachable!("six buffers") };
        let [norm_w, in_proj, conv_w, conv_b, dt_bias, a, d_skip, out_proj, ref more @ ..] = rs[..] else {
            unreachable!("eight weights")
        };
        let (gate_norm, gather) = gate_and_gather(more, gated);
        let gather = gather.map(|[&embedding, &ids]| cpu::Embed { embedding, ids });
        let (out, w) = (cpu::InOut { xc: xbc, rest: zdt, conv_state }, cpu::InWeights { norm_w, in_proj, conv_w, conv_b });
        cpu::decode_in(dims.in_layout(), out, residual, gather, w, eps);
        cpu::decode_ssd(dims, cpu::SsmOut { y, ssm_state }, xbc, zdt, cpu::SsdWeights { dt_bias, a, d_skip });
        cpu::decode_rows(residual, y, gate_norm.copied(), out_proj, dims.batch, true, eps);
    })
}
