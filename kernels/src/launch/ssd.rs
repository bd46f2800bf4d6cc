//! Launchers of `cu/ssd.cu`: the SSD scan of Mamba-2, forward (4 kernels) and backward (8).

use super::{Cost, Gpu};
use crate::error::{check_len, ensure, to_i32, Result};
use cust::memory::{DeviceCopy, DevicePointer};
use cust::prelude::*;

/// Threads per block of every SSD kernel (`SSD_THREADS` in ssd.cu).
const SSD_THREADS: u32 = 256;
/// Rows and columns of a tile (`SSD_T`).
const SSD_T: usize = 64;
/// Longest chunk the kernels take: one thread per step in the prefix sums (`SSD_MAX_CHUNK`).
pub const SSD_MAX_CHUNK: usize = 256;

/// The sizes of an SSD scan: `heads` of `headdim` channels, `groups` of B and C (dividing
/// `heads`), `state` values per channel, `chunk` steps per chunk; and the precision of its
/// products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdDims {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub headdim: usize,
    pub groups: usize,
    pub state: usize,
    pub chunk: usize,
    /// Make the tile products in one tf32 pass (the `_tf32` kernels: ~1e-3 relative, as
    /// PyTorch's allow_tf32 and the reference's Triton kernels), not at f32 accuracy (3xTF32).
    pub tf32: bool,
}

/// The name of a tile kernel of cu/ssd.cu in the dims' precision: `NAME_tf32` or `NAME_f32`.
macro_rules! tile_kernel {
    ($d:expr, $name:literal) => {
        if $d.tf32 {
            concat!($name, "_tf32")
        } else {
            concat!($name, "_f32")
        }
    };
}

impl SsdDims {
    pub fn n_chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Elements of x (and z, out, dx, ...): b L h p.
    fn blhp(&self) -> usize {
        self.batch * self.len * self.heads * self.headdim
    }

    /// Elements of B (and C): b L g n.
    fn blgn(&self) -> usize {
        self.batch * self.len * self.groups * self.state
    }

    /// Elements of a (b, h, p, n) state.
    fn bhpn(&self) -> usize {
        self.batch * self.heads * self.headdim * self.state
    }

    /// Elements of C B^T per chunk and group (the scratch `cb`): b nc g Q Q.
    pub fn cb_len(&self) -> usize {
        self.batch * self.n_chunks() * self.groups * self.chunk * self.chunk
    }

    /// Elements of cb the output kernels read: each head its group's causal half.
    fn cb_reads(&self) -> usize {
        self.heads / self.groups * self.cb_len() / 2
    }

    /// Elements of the chunk states: b nc h p n.
    fn states(&self) -> usize {
        self.bhpn() * self.n_chunks()
    }

    /// The kernels' `int` sizes, or an error unless each fits, `1 <= chunk <= 256`, the
    /// groups divide the heads, and the heads and the batch fit a grid's y and z.
    fn ints(&self, kernel: &'static str) -> Result<[i32; 8]> {
        let d = *self;
        ensure((1..=SSD_MAX_CHUNK).contains(&d.chunk), kernel, || {
            format!("chunk = {} not in 1..={SSD_MAX_CHUNK}", d.chunk)
        })?;
        ensure(d.groups > 0 && d.heads.is_multiple_of(d.groups), kernel, || {
            format!("groups = {} must divide heads = {}", d.groups, d.heads)
        })?;
        ensure(d.heads <= 65535 && d.batch <= 65535, kernel, || "heads and batch must be at most 65535".into())?;
        // the tile kernels index a chunk's rows and a state with 32-bit offsets
        let widest = (d.chunk * d.heads.max(1) * d.headdim).max(d.chunk * d.groups * d.state).max(d.headdim * d.state);
        to_i32(kernel, "chunk x heads x headdim (or chunk x groups x state)", widest)?;
        Ok([
            to_i32(kernel, "batch", d.batch)?,
            to_i32(kernel, "len", d.len)?,
            to_i32(kernel, "heads", d.heads)?,
            to_i32(kernel, "headdim", d.headdim)?,
            to_i32(kernel, "groups", d.groups)?,
            to_i32(kernel, "state", d.state)?,
            to_i32(kernel, "chunk", d.chunk)?,
            to_i32(kernel, "n_chunks", d.n_chunks())?,
        ])
    }

    /// Blocks of the per-chunk tile kernels: (chunks x row tiles x column tiles, heads, batch).
    fn tiles(&self, rows: usize, cols: usize) -> (u32, u32, u32) {
        let n = self.n_chunks() * rows.div_ceil(SSD_T) * cols.div_ceil(SSD_T);
        (n as u32, self.heads as u32, self.batch as u32)
    }

    /// Blocks of the passes over chunks: one thread per state element.
    fn per_state(&self) -> (u32, u32, u32) {
        let n = (self.headdim * self.state).div_ceil(SSD_THREADS as usize);
        (n as u32, self.heads as u32, self.batch as u32)
    }
}

/// The inputs of the scan, forward and backward: `x, z: (b, L, h, p)`, `dt: (b, L, h)`, `a,
/// d_skip, dt_bias: (h)`, `bm, cm: (b, L, g, n)`, `init: (b, h, p, n)`.
#[derive(Clone, Copy)]
pub struct SsdInputs<'a> {
    pub x: &'a DeviceSlice<f32>,
    pub dt: &'a DeviceSlice<f32>,
    pub a: &'a DeviceSlice<f32>,
    pub bm: &'a DeviceSlice<f32>,
    pub cm: &'a DeviceSlice<f32>,
    pub d_skip: &'a DeviceSlice<f32>,
    pub dt_bias: &'a DeviceSlice<f32>,
    /// The gate: `out = y * silu(z)` when given.
    pub z: Option<&'a DeviceSlice<f32>>,
    /// The state before the first step (zero without it).
    pub init: Option<&'a DeviceSlice<f32>>,
}

impl SsdInputs<'_> {
    fn check(&self, kernel: &'static str, d: SsdDims) -> Result<()> {
        for (name, buf, want) in [
            ("x", self.x, d.blhp()),
            ("dt", self.dt, d.batch * d.len * d.heads),
            ("a", self.a, d.heads),
            ("bm", self.bm, d.blgn()),
            ("cm", self.cm, d.blgn()),
            ("d_skip", self.d_skip, d.heads),
            ("dt_bias", self.dt_bias, d.heads),
        ] {
            check_len(kernel, name, buf.len(), want)?;
        }
        if let Some(z) = self.z {
            check_len(kernel, "z", z.len(), d.blhp())?;
        }
        if let Some(s) = self.init {
            check_len(kernel, "init", s.len(), d.bhpn())?;
        }
        Ok(())
    }
}

/// The arguments of [`Gpu::ssd_forward_f32`]: the inputs, the outputs `out: (b, L, h, p)`,
/// `last_state: (b, h, p, n)`, `chunk_states: (b, n_chunks, h, p, n)` (the state entering each
/// chunk, saved for backward), the scratch `decay: (b, h, n_chunks)` and `cb: (b, n_chunks, g,
/// Q, Q)` ([`SsdDims::cb_len`]), and the sizes.
pub struct SsdForward<'a> {
    pub x: SsdInputs<'a>,
    pub out: &'a mut DeviceSlice<f32>,
    pub last_state: &'a mut DeviceSlice<f32>,
    pub chunk_states: &'a mut DeviceSlice<f32>,
    pub decay: &'a mut DeviceSlice<f32>,
    pub cb: &'a mut DeviceSlice<f32>,
    pub dims: SsdDims,
}

/// The backward's scratch buffers: `dy: (b, L, h, p)` (exactly when there is a gate),
/// `dstates: (b, n_chunks, h, p, n)`, `decay, kdot: (b, h, n_chunks)`, `xdx, da: (b, h, L)`,
/// `cb: (b, n_chunks, g, Q, Q)`.
pub struct SsdScratch<'a> {
    pub dy: Option<&'a mut DeviceSlice<f32>>,
    pub dstates: &'a mut DeviceSlice<f32>,
    pub decay: &'a mut DeviceSlice<f32>,
    pub kdot: &'a mut DeviceSlice<f32>,
    pub xdx: &'a mut DeviceSlice<f32>,
    pub da: &'a mut DeviceSlice<f32>,
    pub cb: &'a mut DeviceSlice<f32>,
}

/// The gradients the backward writes, each with its input's layout; `dz` exactly when `z`
/// is given, `dinit` exactly when `init` is.
pub struct SsdGrads<'a> {
    pub dx: &'a mut DeviceSlice<f32>,
    pub ddt: &'a mut DeviceSlice<f32>,
    pub da: &'a mut DeviceSlice<f32>,
    pub dbm: &'a mut DeviceSlice<f32>,
    pub dcm: &'a mut DeviceSlice<f32>,
    pub dd_skip: &'a mut DeviceSlice<f32>,
    pub ddt_bias: &'a mut DeviceSlice<f32>,
    pub dz: Option<&'a mut DeviceSlice<f32>>,
    pub dinit: Option<&'a mut DeviceSlice<f32>>,
}

/// The arguments of [`Gpu::ssd_backward_f32`]: the forward's inputs and `chunk_states`, the
/// upstream gradients `dout: (b, L, h, p)` and `dlast: (b, h, p, n)`, scratch, gradients, sizes.
pub struct SsdBackward<'a> {
    pub x: SsdInputs<'a>,
    pub chunk_states: &'a DeviceSlice<f32>,
    pub dout: &'a DeviceSlice<f32>,
    pub dlast: &'a DeviceSlice<f32>,
    pub scratch: SsdScratch<'a>,
    pub grads: SsdGrads<'a>,
    pub dims: SsdDims,
}

/// The parameter of every SSD kernel (`struct SsdParams` in cu/ssd.cu). Unused pointers are null.
#[repr(C)]
#[derive(Clone, Copy)]
struct SsdParams {
    x: DevicePointer<f32>,
    dt: DevicePointer<f32>,
    a: DevicePointer<f32>,
    bm: DevicePointer<f32>,
    cm: DevicePointer<f32>,
    d_skip: DevicePointer<f32>,
    dt_bias: DevicePointer<f32>,
    z: DevicePointer<f32>,
    init: DevicePointer<f32>,
    out: DevicePointer<f32>,
    last: DevicePointer<f32>,
    states: DevicePointer<f32>,
    dout: DevicePointer<f32>,
    dlast: DevicePointer<f32>,
    dy: DevicePointer<f32>,
    dstates: DevicePointer<f32>,
    decay: DevicePointer<f32>,
    kdot: DevicePointer<f32>,
    xdx: DevicePointer<f32>,
    da_scratch: DevicePointer<f32>,
    cb: DevicePointer<f32>,
    dx: DevicePointer<f32>,
    ddt: DevicePointer<f32>,
    da: DevicePointer<f32>,
    dbm: DevicePointer<f32>,
    dcm: DevicePointer<f32>,
    dd_skip: DevicePointer<f32>,
    ddt_bias: DevicePointer<f32>,
    dz: DevicePointer<f32>,
    dinit: DevicePointer<f32>,
    sizes: [i32; 8],
}
const _: () = assert!(std::mem::size_of::<SsdParams>() == 272);
// SAFETY: device pointers and integers, laid out as the C struct.
unsafe impl DeviceCopy for SsdParams {}

fn ptr(s: &DeviceSlice<f32>) -> DevicePointer<f32> {
    s.as_device_ptr()
}

fn ptr_or_null(s: Option<&DeviceSlice<f32>>) -> DevicePointer<f32> {
    s.map_or(DevicePointer::null(), |s| s.as_device_ptr())
}

impl SsdParams {
    /// The inputs and sizes, every other pointer null.
    fn new(x: &SsdInputs, sizes: [i32; 8]) -> SsdParams {
        let null = DevicePointer::null();
        SsdParams {
            x: ptr(x.x),
            dt: ptr(x.dt),
            a: ptr(x.a),
            bm: ptr(x.bm),
            cm: ptr(x.cm),
            d_skip: ptr(x.d_skip),
            dt_bias: ptr(x.dt_bias),
            z: ptr_or_null(x.z),
            init: ptr_or_null(x.init),
            out: null,
            last: null,
            states: null,
            dout: null,
            dlast: null,
            dy: null,
            dstates: null,
            decay: null,
            kdot: null,
            xdx: null,
            da_scratch: null,
            cb: null,
            dx: null,
            ddt: null,
            da: null,
            dbm: null,
            dcm: null,
            dd_skip: null,
            ddt_bias: null,
            dz: null,
            dinit: null,
            sizes,
        }
    }
}

/// FLOPs of a (Q, Q) product's causal 64 x 64 tiles made over `k` and multiplied on with
/// `cols` columns, over every chunk and head (the profiler's napkin math).
fn causal_flops(d: SsdDims, k: usize, cols: usize) -> f64 {
    let t = d.chunk.div_ceil(SSD_T);
    let tiles = (t * (t + 1) / 2) as f64;
    // per causal tile pair: the (64, 64) product over k, then its product with 64 x cols
    let per_chunk = tiles * 2.0 * (SSD_T * SSD_T) as f64 * (k + cols) as f64;
    per_chunk * (d.batch * d.heads * d.n_chunks()) as f64
}

/// FLOPs of the dense per-chunk products (Q, a) x (a, b), over every chunk and head.
fn dense_flops(d: SsdDims, a: usize, b: usize) -> f64 {
    2.0 * (d.chunk * a * b * d.batch * d.heads * d.n_chunks()) as f64
}

impl Gpu {
    /// Launch `kernel` unless its grid is empty.
    fn ssd_launch(&self, kernel: &'static str, grid: (u32, u32, u32), p: SsdParams, cost: Cost) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        self.launch(kernel, grid, SSD_THREADS, 0, p, cost)
    }

    /// SSD forward — twin of `ops::ssd::cpu::ssd_forward` ([`SsdForward`] gives the layouts):
    /// each chunk's own final state, the pass over chunks, then each chunk's output.
    pub fn ssd_forward_f32(&self, args: SsdForward<'_>) -> Result<()> {
        const K: &str = "ssd_forward_f32";
        let SsdForward { x, out, last_state, chunk_states, decay, cb, dims: d } = args;
        let sizes = d.ints(K)?;
        x.check(K, d)?;
        check_len(K, "out", out.len(), d.blhp())?;
        check_len(K, "last_state", last_state.len(), d.bhpn())?;
        check_len(K, "chunk_states", chunk_states.len(), d.states())?;
        check_len(K, "decay", decay.len(), d.batch * d.heads * d.n_chunks())?;
        check_len(K, "cb", cb.len(), d.cb_len())?;
        let mut p = SsdParams::new(&x, sizes);
        p.cb = cb.as_device_ptr();
        p.out = out.as_device_ptr();
        p.last = last_state.as_device_ptr();
        p.states = chunk_states.as_device_ptr();
        p.decay = decay.as_device_ptr();
        let (blhp, blgn) = (d.blhp(), d.blgn());
        self.ssd_cb(p, d)?;
        let state_flops = dense_flops(d, d.headdim, d.state);
        let cost = Cost::f32s(blhp + blgn + d.states()).with_flops(state_flops);
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_state"), d.tiles(d.headdim, d.state), p, cost)?;
        let cost = Cost::f32s(2 * d.states() + 2 * d.bhpn()).with_flops(2.0 * d.states() as f64);
        self.ssd_launch("ssd_state_pass_f32", d.per_state(), p, cost)?;
        let zs = if x.z.is_some() { blhp } else { 0 };
        let flops = causal_flops(d, 0, d.headdim) + state_flops;
        let cost = Cost::f32s(2 * blhp + zs + blgn + d.states() + d.cb_reads()).with_flops(flops);
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_out"), d.tiles(d.chunk, d.headdim), p, cost)
    }

    /// C B^T of every chunk and group into `p.cb` (its causal tiles).
    fn ssd_cb(&self, p: SsdParams, d: SsdDims) -> Result<()> {
        let t = d.chunk.div_ceil(SSD_T);
        let grid = ((d.n_chunks() * t * t) as u32, d.groups as u32, d.batch as u32);
        let flops = causal_flops(d, d.state, 0) * (d.groups as f64 / d.heads as f64);
        let cost = Cost::f32s(2 * d.blgn() + d.cb_len() / 2).with_flops(flops);
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_cb"), grid, p, cost)
    }

    /// SSD backward — twin of `ops::ssd::cpu_backward::ssd_backward` ([`SsdBackward`]). All
    /// gradients are overwritten; the accumulated ones (dA, dB, dC, dD, d(dt_bias)) and the
    /// accumulated scratch are zeroed here on the stream first, and are sums of atomics, so
    /// their last bits vary from run to run.
    pub fn ssd_backward_f32(&self, args: SsdBackward<'_>) -> Result<()> {
        const K: &str = "ssd_backward_f32";
        let SsdBackward { x, chunk_states, dout, dlast, scratch: s, grads: g, dims: d } = args;
        let sizes = d.ints(K)?;
        x.check(K, d)?;
        check_backward(K, &x, &s, &g, d)?;
        check_len(K, "chunk_states", chunk_states.len(), d.states())?;
        check_len(K, "dout", dout.len(), d.blhp())?;
        check_len(K, "dlast", dlast.len(), d.bhpn())?;
        for buf in [&mut *s.kdot, &mut *s.xdx, &mut *s.da, &mut *g.da, &mut *g.dbm, &mut *g.dcm, &mut *g.dd_skip] {
            // SAFETY: an asynchronous memset of a buffer we hold `&mut` to, ordered on the one
            // stream before the kernels that accumulate into it; nothing reads it on the host.
            unsafe { buf.set_zero_async(&self.stream)? };
        }
        // SAFETY: as above.
        unsafe { g.ddt_bias.set_zero_async(&self.stream)? };
        let mut p = SsdParams::new(&x, sizes);
        p.states = chunk_states.as_device_ptr();
        p.dout = dout.as_device_ptr();
        p.dlast = dlast.as_device_ptr();
        p.dy = ptr_or_null(s.dy.as_deref());
        p.dstates = s.dstates.as_device_ptr();
        p.decay = s.decay.as_device_ptr();
        p.kdot = s.kdot.as_device_ptr();
        p.xdx = s.xdx.as_device_ptr();
        p.da_scratch = s.da.as_device_ptr();
        p.cb = s.cb.as_device_ptr();
        p.dx = g.dx.as_device_ptr();
        p.ddt = g.ddt.as_device_ptr();
        p.da = g.da.as_device_ptr();
        p.dbm = g.dbm.as_device_ptr();
        p.dcm = g.dcm.as_device_ptr();
        p.dd_skip = g.dd_skip.as_device_ptr();
        p.ddt_bias = g.ddt_bias.as_device_ptr();
        p.dz = ptr_or_null(g.dz.as_deref());
        p.dinit = ptr_or_null(g.dinit.as_deref());
        self.ssd_backward_launches(p, d, x.z.is_some())
    }

    /// The backward's kernels in order (see the header of cu/ssd.cu).
    fn ssd_backward_launches(&self, p: SsdParams, d: SsdDims, gate: bool) -> Result<()> {
        let (blhp, blgn, states) = (d.blhp(), d.blgn(), d.states());
        let state_flops = dense_flops(d, d.headdim, d.state);
        let y_flops = causal_flops(d, 0, d.headdim) + state_flops;
        let cb_reads = d.cb_reads();
        self.ssd_cb(p, d)?;
        if gate {
            let cost = Cost::f32s(5 * blhp + blgn + states + cb_reads).with_flops(y_flops);
            self.ssd_launch(tile_kernel!(d, "ssd_chunk_gate_grad"), d.tiles(d.chunk, d.headdim), p, cost)?;
        }
        let cost = Cost::f32s(blhp + blgn + states).with_flops(state_flops);
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_dstate"), d.tiles(d.headdim, d.state), p, cost)?;
        let cost = Cost::f32s(3 * states + 2 * d.bhpn()).with_flops(4.0 * states as f64);
        self.ssd_launch("ssd_dstate_pass_f32", d.per_state(), p, cost)?;
        let cost = Cost::f32s(3 * blhp + blgn + states + cb_reads).with_flops(y_flops);
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_dx"), d.tiles(d.chunk, d.headdim), p, cost)?;
        let bc_flops = causal_flops(d, d.headdim, d.state) + state_flops;
        let cost = Cost::f32s(2 * blhp + 3 * blgn + states).with_flops(bc_flops);
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_dc"), d.tiles(d.chunk, d.state), p, cost)?;
        self.ssd_launch(tile_kernel!(d, "ssd_chunk_db"), d.tiles(d.chunk, d.state), p, cost)?;
        let per = d.batch * d.heads * d.len;
        let cost = Cost::f32s(5 * per).with_flops(10.0 * per as f64);
        self.ssd_launch("ssd_chunk_finish_f32", (d.n_chunks() as u32, d.heads as u32, d.batch as u32), p, cost)
    }
}

/// Fails unless every scratch buffer and gradient has its length, and the optional ones are
/// given exactly when their inputs are.
fn check_backward(kernel: &'static str, x: &SsdInputs, s: &SsdScratch, g: &SsdGrads, d: SsdDims) -> Result<()> {
    ensure(x.z.is_some() == g.dz.is_some(), kernel, || "dz must be given exactly when z is".into())?;
    ensure(x.z.is_some() == s.dy.is_some(), kernel, || "dy (scratch) must be given exactly when z is".into())?;
    ensure(x.init.is_some() == g.dinit.is_some(), kernel, || "dinit must be given exactly when init is".into())?;
    let (bhc, bhl) = (d.batch * d.heads * d.n_chunks(), d.batch * d.heads * d.len);
    for (name, got, want) in [
        ("dstates", s.dstates.len(), d.states()),
        ("decay", s.decay.len(), bhc),
        ("kdot", s.kdot.len(), bhc),
        ("xdx", s.xdx.len(), bhl),
        ("da (scratch)", s.da.len(), bhl),
        ("cb", s.cb.len(), d.cb_len()),
        ("dx", g.dx.len(), d.blhp()),
        ("ddt", g.ddt.len(), d.batch * d.len * d.heads),
        ("da", g.da.len(), d.heads),
        ("dbm", g.dbm.len(), d.blgn()),
        ("dcm", g.dcm.len(), d.blgn()),
        ("dd_skip", g.dd_skip.len(), d.heads),
        ("ddt_bias", g.ddt_bias.len(), d.heads),
    ] {
        check_len(kernel, name, got, want)?;
    }
    if let Some(dy) = &s.dy {
        check_len(kernel, "dy", dy.len(), d.blhp())?;
    }
    if let Some(dz) = &g.dz {
        check_len(kernel, "dz", dz.len(), d.blhp())?;
    }
    if let Some(di) = &g.dinit {
        check_len(kernel, "dinit", di.len(), d.bhpn())?;
    }
    Ok(())
}
