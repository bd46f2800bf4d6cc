//! Sizes the kernels and their CPU twins share, compiled with or without the `cuda` feature,
//! so that one definition says what the fused kernels take.

/// The sizes of one Mamba-1 layer and of the batch being decoded (`cu/decode.cu`,
/// `engine/src/ops/decode`): one token for each of `batch` sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeDims {
    pub batch: usize,
    /// d_model
    pub m: usize,
    /// d_inner
    pub d: usize,
    pub d_state: usize,
    pub dt_rank: usize,
    pub d_conv: usize,
}

/// decode_ssm's channels per block: d_inner must be a multiple.
pub const DECODE_SSM_CHANNELS: usize = 16;
/// The widest conv decode_in keeps in registers.
pub const DECODE_MAX_CONV: usize = 8;
/// The input rows a block stages fit in 40 KiB of shared memory (the 48 KiB a block gets
/// without opting in, less its static arrays): a row is at most this many floats.
pub const DECODE_MAX_ROW: usize = 10 * 1024;

impl DecodeDims {
    /// Values of x_proj's output per token: dt_rank + 2 d_state.
    pub fn xdim(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }

    /// Why these sizes cannot take the fused kernels, if they cannot (the model then uses
    /// the generic step).
    pub fn unsupported(&self) -> Option<String> {
        let Self { batch, m, d, d_state, dt_rank, d_conv } = *self;
        if [batch, m, d, d_state, dt_rank, d_conv].contains(&0) {
            return Some("every size must be positive".into());
        }
        if !m.is_multiple_of(4) || !d.is_multiple_of(DECODE_SSM_CHANNELS) {
            return Some(format!("d_model ({m}) must be a multiple of 4 and d_inner ({d}) of {DECODE_SSM_CHANNELS}"));
        }
        // each bound before any product or sum of them, which could then overflow
        if d_conv > DECODE_MAX_CONV
            || batch > 65535
            || [m, d, d_state, dt_rank].iter().any(|&s| s > DECODE_MAX_ROW)
            || self.xdim() > DECODE_MAX_ROW
        {
            return Some(format!(
                "d_conv must be at most {DECODE_MAX_CONV}, the batch 65535, d_model, d_inner and \
                 dt_rank + 2 d_state {DECODE_MAX_ROW}"
            ));
        }
        if d * d_conv.max(d_state) > i32::MAX as usize / batch {
            return Some("the conv or SSM state is too large for 32-bit indexing".into());
        }
        None
    }
}
