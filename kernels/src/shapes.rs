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

/// The largest layer whose x_proj decode_ssm multiplies itself (`DECODE_FUSE_*` in
/// decode.cu): d_inner at most 256, dt_rank + 2 d_state at most 64.
pub const DECODE_FUSE_MAX_D: usize = 32 * 8;
pub const DECODE_FUSE_MAX_XDIM: usize = 8 * 8;

impl DecodeDims {
    /// Values of x_proj's output per token: dt_rank + 2 d_state.
    pub fn xdim(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }

    /// Whether decode_ssm computes x_proj's product itself (a small layer: one launch fewer
    /// a layer, the default model's 18 a token become 14).
    pub fn fuses_x_proj(&self) -> bool {
        self.d <= DECODE_FUSE_MAX_D && self.xdim() <= DECODE_FUSE_MAX_XDIM
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
        self.in_layout().unsupported()
    }
}

impl DecodeDims {
    /// decode_in's rows: in_proj's 2D rows, the first D (x) through the conv, z the rest.
    pub fn in_layout(&self) -> DecodeInLayout {
        let Self { batch, m, d, d_conv, .. } = *self;
        DecodeInLayout { batch, m, rows: 2 * d, conv_lo: 0, conv_n: d, d_conv }
    }
}

/// What `decode_in_f32` computes for one layer: RMSNorm, then in_proj's `rows` rows, of which
/// `[conv_lo, conv_lo + conv_n)` go through the conv (into `xc`, (B, conv_n)) and the others,
/// in order, into `rest` (B, rows - conv_n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeInLayout {
    pub batch: usize,
    pub m: usize,
    pub rows: usize,
    pub conv_lo: usize,
    pub conv_n: usize,
    pub d_conv: usize,
}

impl DecodeInLayout {
    /// Values of `rest` per batch row (a layout `unsupported` passed has conv_n <= rows).
    pub fn rest_len(&self) -> usize {
        self.rows.saturating_sub(self.conv_n)
    }

    /// Why `decode_in_f32` cannot take this layout, if it cannot: the one definition its
    /// launcher and both layer kinds' `unsupported` use.
    pub fn unsupported(&self) -> Option<String> {
        let Self { batch, m, rows, conv_lo, conv_n, d_conv } = *self;
        let ok = [batch, m, rows, conv_n, d_conv].iter().all(|&s| s > 0)
            && batch <= 65535
            && m.is_multiple_of(4)
            && m <= DECODE_MAX_ROW
            && d_conv <= DECODE_MAX_CONV
            && conv_n <= rows
            && conv_lo <= rows - conv_n
            && rows <= i32::MAX as usize / m
            && conv_n.checked_mul(d_conv).is_some_and(|v| v <= i32::MAX as usize / batch);
        (!ok).then(|| {
            format!(
                "decode_in takes d_model a multiple of 4 up to {DECODE_MAX_ROW}, d_conv up to {DECODE_MAX_CONV}, \
                 a batch up to 65535 and 32-bit offsets; got {self:?}"
            )
        })
    }
}

/// The sizes of one Mamba-2 layer and of the batch being decoded (`decode_in_f32` and
/// `decode_ssd_f32` in `cu/decode.cu`): e = heads · headdim channels, G = ngroups groups of
/// B and C of d_state each, conv over xBC (e + 2GN channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSsdDims {
    pub batch: usize,
    /// d_model
    pub m: usize,
    pub heads: usize,
    pub headdim: usize,
    pub d_state: usize,
    pub ngroups: usize,
    pub d_conv: usize,
}

impl DecodeSsdDims {
    /// e = heads · headdim (d_inner)
    pub fn d_inner(&self) -> usize {
        self.heads * self.headdim
    }

    /// The conv's channels: x, B, C = e + 2GN.
    pub fn conv_dim(&self) -> usize {
        self.d_inner() + 2 * self.ngroups * self.d_state
    }

    /// decode_in's rows: in_proj's z (e), xBC (conv_dim, through the conv), dt (heads).
    pub fn in_layout(&self) -> DecodeInLayout {
        let e = self.d_inner();
        let (batch, m, d_conv) = (self.batch, self.m, self.d_conv);
        DecodeInLayout { batch, m, rows: e + self.conv_dim() + self.heads, conv_lo: e, conv_n: self.conv_dim(), d_conv }
    }

    /// Why these sizes cannot take the fused kernels, if they cannot (the model then uses the
    /// generic step).
    pub fn unsupported(&self) -> Option<String> {
        let Self { batch, m, heads, headdim, d_state, ngroups, d_conv } = *self;
        if [batch, m, heads, headdim, d_state, ngroups, d_conv].contains(&0) {
            return Some("every size must be positive".into());
        }
        // each bound before any product or sum of them, which could then overflow
        // (decode_ssd_f32 keeps a head's B and C, 2 d_state floats, in shared memory)
        if d_conv > DECODE_MAX_CONV
            || batch > 65535
            || [m, heads, headdim].iter().any(|&s| s > DECODE_MAX_ROW)
            || d_state > DECODE_MAX_ROW / 2
            || self.d_inner() > DECODE_MAX_ROW
        {
            return Some(format!(
                "d_conv must be at most {DECODE_MAX_CONV}, the batch 65535, d_model and d_inner = nheads x \
                 headdim {DECODE_MAX_ROW}, d_state {}",
                DECODE_MAX_ROW / 2
            ));
        }
        if !m.is_multiple_of(4) || !self.d_inner().is_multiple_of(4) || !heads.is_multiple_of(ngroups) {
            return Some(format!(
                "d_model ({m}) and d_inner ({}) must be multiples of 4, nheads ({heads}) of ngroups ({ngroups})",
                self.d_inner()
            ));
        }
        if self.d_inner() * d_state.max(d_conv) > i32::MAX as usize / batch
            || self.conv_dim() * d_conv > i32::MAX as usize / batch
        {
            return Some("the conv or SSM state is too large for 32-bit indexing".into());
        }
        self.in_layout().unsupported()
    }
}

/// Most batch rows the one-kernel token (`cu/decode_token.cu`) takes.
pub const TOKEN_MAX_BATCH: usize = 8;
/// Threads of its blocks (`TOKEN_THREADS`).
pub const TOKEN_THREADS: usize = 512;

/// How `decode_token_*` splits one token over its blocks (one per SM), and where each part
/// of its shared memory starts (bytes): see the comment at the top of `cu/decode_token.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLayout {
    pub blocks: usize,
    /// in_proj rows a block (phase A), a multiple of 8 that divides d_inner
    pub ra: usize,
    /// SSM channels a block (phase B), a multiple of 4
    pub cb: usize,
    /// out_proj rows a block (phase C)
    pub rc: usize,
    /// head rows a block
    pub rh: usize,
    /// blocks of phase A that hold x rows: d_inner / ra
    pub gx: usize,
    pub sa: usize,
    pub sb: usize,
    pub sc: usize,
    pub act: usize,
    /// dynamic shared memory in all
    pub smem: usize,
}

impl DecodeDims {
    /// The split of one token over `blocks` blocks with weights of `weight_bytes` (4: f32, 2:
    /// bf16) and a `vocab`-row head, or why it does not fit (then the decoder runs the
    /// four-kernel layers of `cu/decode.cu`). `max_smem`: the shared memory a block may have.
    pub fn token_layout(
        &self,
        vocab: usize,
        weight_bytes: usize,
        blocks: usize,
        max_smem: usize,
    ) -> Result<TokenLayout, String> {
        if let Some(why) = self.unsupported() {
            return Err(why);
        }
        let Self { batch: bt, m, d, d_state: n, dt_rank: r, d_conv: k } = *self;
        if bt > TOKEN_MAX_BATCH || !m.is_multiple_of(8) || !d.is_multiple_of(8) || vocab == 0 || blocks == 0 {
            return Err(format!(
                "the one-kernel token takes at most {TOKEN_MAX_BATCH} sequences and d_model, d_inner multiples of 8"
            ));
        }
        let ra = (8..=d).step_by(8).find(|&ra| d.is_multiple_of(ra) && (2 * d).div_ceil(ra) <= blocks);
        let ra = ra.ok_or_else(|| format!("d_inner {d} splits over {blocks} blocks in no multiple of 8"))?;
        let cb = d.div_ceil(blocks).next_multiple_of(4);
        let (rc, rh) = (m.div_ceil(blocks), vocab.div_ceil(blocks));
        if rh > ra || ra.max(rc) * bt > TOKEN_THREADS {
            return Err(format!("{vocab} head rows or {} rows a block for {bt} sequences are too many", ra.max(rc)));
        }
        if cb * (n + 2) > m.max(d) {
            return Err(format!("d_state {n}: phase B's states do not fit the staging buffer"));
        }
        let x = self.xdim();
        let align = |b: usize| b.next_multiple_of(16);
        let sa = 0;
        let sb = sa + align((ra * m + x * ra) * weight_bytes + 4 * (ra * k + ra + m));
        let sc = sb + align(4 * cb * (r + n + 2));
        let act = sc + align(rc * d * weight_bytes);
        let smem = act + 4 * (bt * m.max(d) + bt * x + bt * ra + ra.max(rc).max(rh) * bt);
        if smem > max_smem {
            return Err(format!("a block needs {smem} bytes of shared memory, the GPU gives {max_smem}"));
        }
        Ok(TokenLayout { blocks, ra, cb, rc, rh, gx: d / ra, sa, sb, sc, act, smem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_size_splits_over_132_blocks() {
        let dims = DecodeDims { batch: 1, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 };
        let f32 = dims.token_layout(256, 4, 132, 227 * 1024).unwrap();
        assert_eq!((f32.ra, f32.cb, f32.rc, f32.rh, f32.gx), (24, 12, 6, 2, 64));
        let bf16 = dims.token_layout(256, 2, 132, 227 * 1024).unwrap();
        assert!(bf16.smem < f32.smem && f32.smem < 140 * 1024, "{} {}", bf16.smem, f32.smem);
        // every region starts on 16 bytes and the regions do not overlap
        for l in [f32, bf16] {
            assert!([l.sb, l.sc, l.act].iter().all(|o| o % 16 == 0) && l.sa < l.sb && l.sb < l.sc && l.sc < l.act);
        }
        let default = DecodeDims { m: 128, d: 256, dt_rank: 8, ..dims };
        assert_eq!(default.token_layout(256, 4, 132, 227 * 1024).unwrap().ra, 8);
    }

    #[test]
    fn what_does_not_fit_says_why() {
        let dims = DecodeDims { batch: 9, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 };
        assert!(dims.token_layout(256, 4, 132, 227 * 1024).unwrap_err().contains("at most 8"));
        let big = DecodeDims { batch: 1, m: 4096, d: 8192, ..dims };
        assert!(big.token_layout(256, 4, 132, 227 * 1024).unwrap_err().contains("shared memory"));
        let vocab = DecodeDims { batch: 1, ..dims };
        assert!(vocab.token_layout(50_280, 4, 132, 227 * 1024).unwrap_err().contains("head rows"));
    }

    /// The Mamba-2 layer's rows and refusals: the reference's d_model 768 layer takes the
    /// kernels; sizes the kernels cannot take are refused with the reason, before any launch.
    #[test]
    fn mamba2_layouts_and_what_they_refuse() {
        let dims = DecodeSsdDims { batch: 1, m: 768, heads: 24, headdim: 64, d_state: 128, ngroups: 1, d_conv: 4 };
        assert_eq!(dims.unsupported(), None);
        let l = dims.in_layout();
        assert_eq!((l.rows, l.conv_lo, l.conv_n, l.rest_len()), (3352, 1536, 1792, 1536 + 24));
        let why = |d: DecodeSsdDims| d.unsupported().unwrap_or_default();
        assert!(why(DecodeSsdDims { ngroups: 5, ..dims }).contains("of ngroups (5)"));
        assert!(why(DecodeSsdDims { d_state: 6000, ..dims }).contains("d_state 5120"), "B and C in shared memory");
        assert!(why(DecodeSsdDims { m: 766, ..dims }).contains("multiples of 4"));
        assert!(why(DecodeSsdDims { heads: 0, ..dims }).contains("positive"));
        let huge = DecodeSsdDims { batch: 65535, m: 10240, heads: 160, ..dims };
        assert!(why(huge).contains("32-bit"));
        let m1 = DecodeDims { batch: 1, m: 768, d: 1536, d_state: 16, dt_rank: 48, d_conv: 4 }.in_layout();
        assert_eq!((m1.rows, m1.conv_lo, m1.conv_n, m1.rest_len(), m1.unsupported()), (3072, 0, 1536, 1536, None));
        assert!(DecodeInLayout { conv_lo: 2000, ..m1 }.unsupported().is_some(), "conv rows past the end");
    }
}
