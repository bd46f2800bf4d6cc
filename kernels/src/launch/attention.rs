//! Launchers of `cu/attention.cu`: causal grouped-query attention, forward (1 kernel) and
//! backward (3), for head_dim up to 128.

use super::{grid_for, Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block of the tile kernels (`THREADS` in attention.cu).
const THREADS: u32 = 256;
/// The largest head_dim the kernels take (the `d128` instantiation).
pub const ATTENTION_MAX_HEAD_DIM: usize = 128;

/// The sizes of one attention: `heads` query heads over `kv_heads` key/value heads, `lq`
/// queries at positions `start..start + lq`, `lk` keys, `head_dim` channels per head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub head_dim: usize,
    pub start: usize,
    pub scale: f32,
}

impl AttentionDims {
    fn q_len(&self) -> usize {
        self.batch * self.heads * self.lq * self.head_dim
    }
    fn kv_len(&self) -> usize {
        self.batch * self.kv_heads * self.lk * self.head_dim
    }
    fn rows(&self) -> usize {
        self.batch * self.heads * self.lq
    }

    /// The instantiation (`_d64` or `_d128`) and its tiles: (forward query tile, forward key
    /// tile, backward tile), as in the `ATTENTION_KERNELS` lines of attention.cu.
    fn variant(&self) -> (&'static str, usize, usize, usize) {
        if self.head_dim <= 64 {
            ("d64", 64, 32, 32)
        } else {
            ("d128", 32, 16, 16)
        }
    }

    /// Multiply-adds of one (q k^T or p v) product over the visible (i, j) pairs, times d.
    fn pair_flops(&self) -> f64 {
        let visible: usize = (0..self.lq).map(|i| (self.start + i + 1).min(self.lk)).sum();
        2.0 * (self.batch * self.heads) as f64 * visible as f64 * self.head_dim as f64
    }

    /// The kernels' sizes, or an error unless they fit, the heads divide, head_dim <= 128,
    /// the queries' positions have keys, and the grid's y fits.
    fn params(&self, kernel: &'static str) -> Result<AttentionParams> {
        let d = *self;
        ensure(d.kv_heads > 0 && d.heads.is_multiple_of(d.kv_heads), kernel, || {
            format!("kv_heads = {} must divide heads = {}", d.kv_heads, d.heads)
        })?;
        ensure(d.head_dim <= ATTENTION_MAX_HEAD_DIM, kernel, || {
            format!("head_dim = {} is more than {ATTENTION_MAX_HEAD_DIM}", d.head_dim)
        })?;
        ensure(d.start + d.lq <= d.lk, kernel, || {
            format!("queries up to {} need as many keys, got {}", d.start + d.lq, d.lk)
        })?;
        ensure(d.batch * d.heads <= 65535, kernel, || "batch x heads must be at most 65535".into())?;
        let null = DevicePointer::null();
        Ok(AttentionParams {
            q: null,
            k: null,
            v: null,
            o: null,
            lse: null,
            dout: null,
            delta: null,
            out: null,
            out_lse: null,
            dq: null,
            dk: null,
            dv: null,
            out_delta: null,
            batch: to_i32(kernel, "batch", d.batch)?,
            heads: to_i32(kernel, "heads", d.heads)?,
            kv_heads: to_i32(kernel, "kv_heads", d.kv_heads)?,
            lq: to_i32(kernel, "lq", d.lq)?,
            lk: to_i32(kernel, "lk", d.lk)?,
            d: to_i32(kernel, "head_dim", d.head_dim)?,
            start: to_i32(kernel, "start", d.start)?,
            scale: d.scale,
        })
    }
}

/// The parameter of every attention kernel (`struct AttentionParams` in cu/attention.cu).
/// Unused pointers are null.
#[repr(C)]
#[derive(Clone, Copy)]
struct AttentionParams {
    q: DevicePointer<f32>,
    k: DevicePointer<f32>,
    v: DevicePointer<f32>,
    o: DevicePointer<f32>,
    lse: DevicePointer<f32>,
    dout: DevicePointer<f32>,
    delta: DevicePointer<f32>,
    out: DevicePointer<f32>,
    out_lse: DevicePointer<f32>,
    dq: DevicePointer<f32>,
    dk: DevicePointer<f32>,
    dv: DevicePointer<f32>,
    out_delta: DevicePointer<f32>,
    batch: i32,
    heads: i32,
    kv_heads: i32,
    lq: i32,
    lk: i32,
    d: i32,
    start: i32,
    scale: f32,
}
const _: () = assert!(std::mem::size_of::<AttentionParams>() == 136);
// SAFETY: device pointers and scalars, laid out as the C struct.
unsafe impl DeviceCopy for AttentionParams {}

/// The forward's buffers: `q (b, h, lq, d)`, `k, v (b, g, lk, d)` in; `out (b, h, lq, d)`,
/// `lse (b, h, lq)` out.
pub struct AttentionForward<'a> {
    pub q: &'a DeviceSlice<f32>,
    pub k: &'a DeviceSlice<f32>,
    pub v: &'a DeviceSlice<f32>,
    pub out: &'a mut DeviceSlice<f32>,
    pub lse: &'a mut DeviceSlice<f32>,
    pub dims: AttentionDims,
}

/// The backward's buffers: the forward's inputs and outputs, `dout`, a `delta (b, h, lq)`
/// scratch, and the gradients (overwritten).
pub struct AttentionBackward<'a> {
    pub q: &'a DeviceSlice<f32>,
    pub k: &'a DeviceSlice<f32>,
    pub v: &'a DeviceSlice<f32>,
    pub o: &'a DeviceSlice<f32>,
    pub lse: &'a DeviceSlice<f32>,
    pub dout: &'a DeviceSlice<f32>,
    pub delta: &'a mut DeviceSlice<f32>,
    pub dq: &'a mut DeviceSlice<f32>,
    pub dk: &'a mut DeviceSlice<f32>,
    pub dv: &'a mut DeviceSlice<f32>,
    pub dims: AttentionDims,
}

impl Gpu {
    /// Attention forward — twin of `ops::attention::cpu::attention_forward`.
    pub fn attention_forward_f32(&self, a: AttentionForward<'_>) -> Result<()> {
        const K: &str = "attention_forward_f32";
        let d = a.dims;
        let mut p = d.params(K)?;
        for (name, len, want) in
            [("q", a.q.len(), d.q_len()), ("k", a.k.len(), d.kv_len()), ("v", a.v.len(), d.kv_len())]
        {
            check_len(K, name, len, want)?;
        }
        check_len(K, "out", a.out.len(), d.q_len())?;
        check_len(K, "lse", a.lse.len(), d.rows())?;
        if d.rows() == 0 || d.head_dim == 0 {
            return Ok(());
        }
        (p.q, p.k, p.v) = (a.q.as_device_ptr(), a.k.as_device_ptr(), a.v.as_device_ptr());
        (p.out, p.out_lse) = (a.out.as_device_ptr(), a.lse.as_device_ptr());
        let (variant, bm, _, _) = d.variant();
        let kernel = if variant == "d64" { "attention_forward_f32_d64" } else { "attention_forward_f32_d128" };
        let cost = Cost::f32s(2 * d.q_len() + 2 * d.kv_len() + d.rows()).with_flops(2.0 * d.pair_flops());
        let grid = (d.lq.div_ceil(bm) as u32, (d.batch * d.heads) as u32);
        self.launch(kernel, grid, THREADS, 0, p, cost)
    }

    /// Attention backward — twin of `ops::attention::cpu::attention_backward`: delta, then dk
    /// and dv, then dq, each element written by one block (no atomics: bit-for-bit repeatable).
    pub fn attention_backward_f32(&self, a: AttentionBackward<'_>) -> Result<()> {
        const K: &str = "attention_backward_f32";
        let d = a.dims;
        let mut p = d.params(K)?;
        for (name, len, want) in [
            ("q", a.q.len(), d.q_len()),
            ("k", a.k.len(), d.kv_len()),
            ("v", a.v.len(), d.kv_len()),
            ("o", a.o.len(), d.q_len()),
            ("lse", a.lse.len(), d.rows()),
            ("dout", a.dout.len(), d.q_len()),
            ("delta", a.delta.len(), d.rows()),
            ("dq", a.dq.len(), d.q_len()),
            ("dk", a.dk.len(), d.kv_len()),
            ("dv", a.dv.len(), d.kv_len()),
        ] {
            check_len(K, name, len, want)?;
        }
        if d.kv_len() == 0 {
            return Ok(());
        }
        if d.rows() == 0 || d.head_dim == 0 {
            // no query sees any key: the key and value gradients are zero
            // SAFETY: asynchronous memsets of buffers we hold `&mut` to, on the one stream.
            unsafe {
                a.dk.set_zero_async(&self.stream)?;
                a.dv.set_zero_async(&self.stream)?;
            }
            return Ok(());
        }
        (p.q, p.k, p.v, p.o, p.lse, p.dout) = (
            a.q.as_device_ptr(),
            a.k.as_device_ptr(),
            a.v.as_device_ptr(),
            a.o.as_device_ptr(),
            a.lse.as_device_ptr(),
            a.dout.as_device_ptr(),
        );
        (p.delta, p.out_delta) = (a.delta.as_device_ptr(), a.delta.as_device_ptr());
        (p.dq, p.dk, p.dv) = (a.dq.as_device_ptr(), a.dk.as_device_ptr(), a.dv.as_device_ptr());
        // one warp per row
        let cost = Cost::f32s(2 * d.q_len() + d.rows()).with_flops(2.0 * d.q_len() as f64);
        self.launch("attention_delta_f32", grid_for(d.rows() * 32), THREADS, 0, p, cost)?;
        let (variant, _, _, bt) = d.variant();
        let [dkv, dq] = if variant == "d64" {
            ["attention_backward_dkv_f32_d64", "attention_backward_dq_f32_d64"]
        } else {
            ["attention_backward_dkv_f32_d128", "attention_backward_dq_f32_d128"]
        };
        let flops = d.pair_flops();
        let cost = Cost::f32s(2 * d.q_len() + 4 * d.kv_len() + 2 * d.rows()).with_flops(4.0 * flops);
        self.launch(dkv, (d.lk.div_ceil(bt) as u32, (d.batch * d.kv_heads) as u32), THREADS, 0, p, cost)?;
        let cost = Cost::f32s(3 * d.q_len() + 2 * d.kv_len() + 2 * d.rows()).with_flops(3.0 * flops);
        self.launch(dq, (d.lq.div_ceil(bt) as u32, (d.batch * d.heads) as u32), THREADS, 0, p, cost)
    }
}
