//! `cu/scan.cu` against `ops::scan::cpu::selective_scan_forward` and `selective_scan_backward`:
//! two awkward shapes (B 2, D 5, L 37, N 4, chunk 8 — a partial last chunk, a partial block,
//! idle state lanes — once with z, delta_bias and softplus, once with none of them), one
//! more for the backward's windows (B 1, D 9, L 100, N 16, chunk 40: windows of 16, 16, 8 per
//! chunk, a block with one live channel), then the Mamba-sized one (B 8, D 1536, L 2048,
//! N 16, chunk 64) for correctness and speed; then the first and third shapes again with an
//! initial state and a `dlast` (the gradient of `last_state`), fresh random values: the
//! forward starts from `init`, the backward from `dlast` and writes `dinit` (NaN-poisoned
//! like every output). Errors are relative norms: 2048-step f32 recurrences with another exp.
//! Forward against TOL; backward against BWD_TOL = 1e-4, since its gradients are long sums
//! (dA, dD, dbias over B x L terms, dBm, dCm over D, dh over the whole sequence) taken in
//! another order.
//!
//! The backward runs on the CPU's chunk_states (one row per gradient for the selected
//! version, `SCAN_BWD_VERSION`, the worst gradient for the others) and on the GPU forward's
//! (one row, the worst gradient); every version is checked and timed (with its reduce
//! kernel), and forward + backward together at the big size (the reference Mamba kernels:
//! 3.367 ms). The backward is deterministic (no float atomics): for every version and shape a
//! second run into fresh NaN-poisoned buffers (the workspace of partial sums too) must give
//! every gradient bit for bit (row `... bwd vN repeats bit for bit`).
//! The forward runs in every version (`SCAN_FWD_VERSION` the default launcher, v1 the
//! baseline). A sixth shape, chunk 256 (the longest), gives backward v4 its largest shared
//! memory (over the default 48 KB).
//!
//! bf16 inputs (`check_bf16`, every shape): u, delta, z are rounded to bf16 on the host and the
//! CPU twin runs on those values in f32; forward v3 and backward v4 on bf16 must match it to
//! TOL / BWD_TOL, except du, ddelta, dz, which the kernel rounds to bf16: BF16_TOL (bf16 keeps
//! 8 significant bits, so a rounding errs by at most 2^-8 of the value, 0.39%).

use crate::{poisoned, rel_norm, Check, Res, Row, TOL};
use mamba_engine::dtype::{bf16, bf16_from_f32};
use mamba_engine::ops::scan::cpu::{
    selective_scan_backward, selective_scan_forward, ScanDims, ScanForward, ScanGrads, ScanInputs,
};
use mamba_kernels::cust::prelude::*;
use mamba_kernels::launch as kl;

/// Tolerance of the backward's gradients (relative norm), see above.
const BWD_TOL: f64 = 1e-4;
/// Tolerance of the gradients the bf16 kernels round to bf16 (relative norm), see above.
const BF16_TOL: f64 = 4e-3;

/// One case's values on the host: the scan's inputs, `dout`, and (with `state`) `init` and
/// `dlast`.
struct HostInputs {
    v: [Vec<f32>; 9], // u, delta, A, Bm, Cm, D, z, bias, dout
    init: Option<Vec<f32>>,
    dlast: Option<Vec<f32>>,
    extras: bool,
}

impl HostInputs {
    /// Fresh random values for `dims`; z, bias and softplus with `extras`, init and dlast with
    /// `state`.
    fn draw(c: &mut Check, dims: ScanDims, extras: bool, state: bool) -> HostInputs {
        let ScanDims { batch, dim, len, state: n, .. } = dims;
        let (bdl, bnl) = (batch * dim * len, batch * n * len);
        let u = c.uniform(bdl, -1.0, 1.0);
        // dt must stay positive: raw delta through softplus, or small positive values without it
        let delta = if extras { c.uniform(bdl, -4.0, 0.5) } else { c.uniform(bdl, 0.001, 0.1) };
        let a = c.uniform(dim * n, -4.0, -0.1);
        let (bm, cm) = (c.uniform(bnl, -1.0, 1.0), c.uniform(bnl, -1.0, 1.0));
        let d_skip = c.uniform(dim, -1.0, 1.0);
        let z = c.uniform(bdl, -3.0, 3.0);
        let bias = c.uniform(dim, -1.0, 1.0);
        let dout = c.uniform(bdl, -1.0, 1.0);
        let init = state.then(|| c.uniform(batch * dim * n, -2.0, 2.0));
        let dlast = state.then(|| c.uniform(batch * dim * n, -1.0, 1.0));
        HostInputs { v: [u, delta, a, bm, cm, d_skip, z, bias, dout], init, dlast, extras }
    }

    /// The inputs as the CPU twin takes them.
    fn cpu(&self) -> ScanInputs<'_, f32> {
        let v = &self.v;
        ScanInputs {
            u: &v[0],
            delta: &v[1],
            a: &v[2],
            bm: &v[3],
            cm: &v[4],
            d_skip: &v[5],
            z: self.extras.then_some(&v[6][..]),
            delta_bias: self.extras.then_some(&v[7][..]),
            softplus: self.extras,
            init: self.init.as_deref(),
        }
    }
}

/// The scan's inputs on the GPU; `z`, `bias` are passed only with `extras`, `init` and
/// `dlast` only when given.
struct GpuInputs {
    v: Vec<DeviceBuffer<f32>>, // u, delta, A, Bm, Cm, D, z, bias, dout
    init: Option<DeviceBuffer<f32>>,
    dlast: Option<DeviceBuffer<f32>>,
    extras: bool,
}

impl GpuInputs {
    fn upload(h: &HostInputs) -> Res<GpuInputs> {
        let up = |v: &Vec<f32>| DeviceBuffer::from_slice(v);
        let v = h.v.iter().map(up).collect::<Result<_, _>>()?;
        let (init, dlast) = (h.init.as_ref().map(up).transpose()?, h.dlast.as_ref().map(up).transpose()?);
        Ok(GpuInputs { v, init, dlast, extras: h.extras })
    }

    /// The GPU inputs as the launchers take them.
    fn inputs(&self) -> kl::ScanInputs<'_> {
        let v = &self.v;
        kl::ScanInputs {
            u: &v[0],
            delta: &v[1],
            a: &v[2],
            bm: &v[3],
            cm: &v[4],
            d_skip: &v[5],
            z: self.extras.then_some(&*v[6]),
            delta_bias: self.extras.then_some(&*v[7]),
            softplus: self.extras,
            init: self.init.as_deref(),
        }
    }
}

/// The backward's outputs on the GPU and its workspace (room for any version), NaN-poisoned: a
/// partial sum the reduce reads but no block wrote shows as a NaN gradient.
struct GpuGrads {
    du: DeviceBuffer<f32>,
    ddelta: DeviceBuffer<f32>,
    da: DeviceBuffer<f32>,
    dbm: DeviceBuffer<f32>,
    dcm: DeviceBuffer<f32>,
    dd: DeviceBuffer<f32>,
    dz: DeviceBuffer<f32>,
    dbias: DeviceBuffer<f32>,
    dinit: DeviceBuffer<f32>,
    ws: DeviceBuffer<f32>,
}

impl GpuGrads {
    fn poisoned(dims: ScanDims) -> Res<GpuGrads> {
        let ScanDims { batch, dim, len, state, .. } = dims;
        let (bdl, bnl) = (batch * dim * len, batch * state * len);
        let mut ws = 0;
        for version in 1..=kl::SCAN_BWD_VERSIONS {
            ws = ws.max(kl::Gpu::selective_scan_backward_workspace(version, kernel_dims(dims))?);
        }
        Ok(GpuGrads {
            du: poisoned(bdl)?,
            ddelta: poisoned(bdl)?,
            da: poisoned(dim * state)?,
            dbm: poisoned(bnl)?,
            dcm: poisoned(bnl)?,
            dd: poisoned(dim)?,
            dz: poisoned(bdl)?,
            dbias: poisoned(dim)?,
            dinit: poisoned(batch * dim * state)?,
            ws: poisoned(ws)?,
        })
    }

    /// The bits of every gradient buffer (unused ones stay poisoned).
    fn bits(&self) -> Res<Vec<u32>> {
        let mut all = Vec::new();
        for g in [&self.du, &self.ddelta, &self.da, &self.dbm, &self.dcm, &self.dd, &self.dz, &self.dbias, &self.dinit]
        {
            all.extend(g.as_host_vec()?.iter().map(|v| v.to_bits()));
        }
        Ok(all)
    }

    /// (name, relative-norm error) of every gradient against the CPU's.
    fn errors(&self, want: &ScanGrads<f32>) -> Res<Vec<(&'static str, f64)>> {
        let mut e = vec![
            ("du", rel_norm(&self.du.as_host_vec()?, &want.du)),
            ("ddelta", rel_norm(&self.ddelta.as_host_vec()?, &want.ddelta)),
            ("dA", rel_norm(&self.da.as_host_vec()?, &want.da)),
            ("dBm", rel_norm(&self.dbm.as_host_vec()?, &want.dbm)),
            ("dCm", rel_norm(&self.dcm.as_host_vec()?, &want.dcm)),
            ("dD", rel_norm(&self.dd.as_host_vec()?, &want.dd_skip)),
        ];
        if let Some(dz) = &want.dz {
            e.push(("dz", rel_norm(&self.dz.as_host_vec()?, dz)));
        }
        if let Some(db) = &want.ddelta_bias {
            e.push(("ddelta_bias", rel_norm(&self.dbias.as_host_vec()?, db)));
        }
        if let Some(di) = &want.dinit {
            e.push(("dinit", rel_norm(&self.dinit.as_host_vec()?, di)));
        }
        Ok(e)
    }
}

/// The engine's scan sizes as the launchers'.
fn kernel_dims(d: ScanDims) -> kl::ScanDims {
    kl::ScanDims { batch: d.batch, dim: d.dim, len: d.len, state: d.state, chunk: d.chunk }
}

fn forward(c: &Check, version: u32, g: &GpuInputs, dims: ScanDims, out: &mut [&mut DeviceBuffer<f32>; 3]) -> Res<()> {
    let [gout, glast, gchunks] = out;
    let args =
        kl::ScanForward { x: g.inputs(), out: gout, last_state: glast, chunk_states: gchunks, dims: kernel_dims(dims) };
    c.gpu.selective_scan_forward(version, args)?;
    Ok(())
}

fn backward(
    c: &Check,
    version: u32,
    g: &GpuInputs,
    states: &DeviceSlice<f32>,
    dims: ScanDims,
    o: &mut GpuGrads,
) -> Res<()> {
    let grads = kl::ScanGrads {
        du: &mut o.du,
        ddelta: &mut o.ddelta,
        da: &mut o.da,
        dbm: &mut o.dbm,
        dcm: &mut o.dcm,
        dd_skip: &mut o.dd,
        dz: g.extras.then_some(&mut *o.dz),
        ddelta_bias: g.extras.then_some(&mut *o.dbias),
        dinit: g.init.is_some().then_some(&mut *o.dinit),
    };
    let (x, dout, dlast) = (g.inputs(), &g.v[8], g.dlast.as_deref());
    let args =
        kl::ScanBackward { x, chunk_states: states, dout, dlast, grads, workspace: &mut o.ws, dims: kernel_dims(dims) };
    c.gpu.selective_scan_backward(version, args)?;
    Ok(())
}

fn row(kernel: String, err: f64, tol: f64, us: f64, rate: f64) -> Row {
    Row { kernel, err, ok: err <= tol, us, rate }
}

/// Every forward version (the selected one first) against the CPU's `want`, freshly poisoned
/// for each; the rows, and the selected version's `(out, last_state, chunk_states)` for the
/// backward.
fn check_forward(
    c: &mut Check,
    name: &str,
    g: &GpuInputs,
    dims: ScanDims,
    want: &ScanForward<f32>,
) -> Res<[DeviceBuffer<f32>; 3]> {
    let ScanDims { batch, dim, len, state, .. } = dims;
    let (bdl, bnl, nc) = (batch * dim * len, batch * state * len, dims.n_chunks());
    // read u, delta (+ z), Bm, Cm, A, D (+ bias) (+ init); write out, last_state, chunk_states
    let zb = if g.extras { bdl + dim } else { 0 };
    let ib = if g.init.is_some() { batch * dim * state } else { 0 };
    let bytes =
        (2 * bdl + zb + ib + 2 * bnl + dim * state + dim + bdl + batch * dim * state + batch * dim * nc * state) * 4;
    let mut fwd_bufs = Vec::new(); // the selected version's (out, last_state, chunk_states) stay
    let selected = kl::SCAN_FWD_VERSION;
    for version in std::iter::once(selected).chain((1..=kl::SCAN_FWD_VERSIONS).filter(|&v| v != selected)) {
        let (mut gout, mut glast, mut gchunks) =
            (poisoned(bdl)?, poisoned(batch * dim * state)?, poisoned(batch * dim * nc * state)?);
        forward(c, version, g, dims, &mut [&mut gout, &mut glast, &mut gchunks])?;
        c.gpu.stream.synchronize()?;
        let errs = [
            ("out", rel_norm(&gout.as_host_vec()?, &want.out)),
            ("last_state", rel_norm(&glast.as_host_vec()?, &want.last_state)),
            ("chunk_states", rel_norm(&gchunks.as_host_vec()?, &want.chunk_states)),
        ];
        let us = c.time(|| forward(c, version, g, dims, &mut [&mut gout, &mut glast, &mut gchunks]))?;
        let rate = bytes as f64 / us / 1e3;
        if version != selected {
            let worst = errs.iter().map(|e| e.1).fold(0.0, f64::max);
            c.rows.push(row(format!("{name} fwd v{version} worst (norm)"), worst, TOL, us, rate));
        } else {
            for (i, (what, e)) in errs.into_iter().enumerate() {
                let (us, rate) = if i == 0 { (us, rate) } else { (f64::NAN, f64::NAN) };
                c.rows.push(row(format!("{name} fwd {what} (norm)"), e, TOL, us, rate));
            }
            fwd_bufs.extend([gout, glast, gchunks]);
        }
    }
    Ok(fwd_bufs.try_into().map_err(|_| "three forward buffers")?)
}

/// Backward, every version (the selected one first), on the CPU's chunk states against the
/// CPU's gradients; then each again into fresh poisoned buffers, which must repeat its bits.
fn check_backward(
    c: &mut Check,
    name: &str,
    g: &GpuInputs,
    dims: ScanDims,
    chunk_states: &[f32],
    want_grads: &ScanGrads<f32>,
) -> Res<()> {
    let ScanDims { batch, dim, len, state, .. } = dims;
    let (bdl, bnl, nc) = (batch * dim * len, batch * state * len, dims.n_chunks());
    let cpu_states = DeviceBuffer::from_slice(chunk_states)?;
    // read u, delta, dout (+ z), Bm, Cm, chunk_states, A, D (+ bias) (+ dlast); write du, ddelta
    // (+ dz), dBm, dCm, dA, dD (+ dbias) (+ dinit): the useful bytes, not the partials'
    let zb = if g.extras { 2 * bdl + 2 * dim } else { 0 };
    let sb = if g.init.is_some() { 2 * batch * dim * state } else { 0 };
    let bytes = (5 * bdl + zb + sb + 4 * bnl + batch * dim * nc * state + 2 * dim * state + 2 * dim) * 4;
    let selected = kl::SCAN_BWD_VERSION;
    for version in std::iter::once(selected).chain((1..=kl::SCAN_BWD_VERSIONS).filter(|&v| v != selected)) {
        let mut o = GpuGrads::poisoned(dims)?;
        backward(c, version, g, &cpu_states, dims, &mut o)?;
        c.gpu.stream.synchronize()?;
        let errs = o.errors(want_grads)?;
        let mut again = GpuGrads::poisoned(dims)?;
        backward(c, version, g, &cpu_states, dims, &mut again)?;
        c.gpu.stream.synchronize()?;
        let repeats = o.bits()? == again.bits()?;
        let us = c.time(|| backward(c, version, g, &cpu_states, dims, &mut o))?;
        let rate = bytes as f64 / us / 1e3;
        if version != selected {
            let worst = errs.iter().map(|e| e.1).fold(0.0, f64::max);
            c.rows.push(row(format!("{name} bwd v{version} worst grad (norm)"), worst, BWD_TOL, us, rate));
        } else {
            for (i, (what, e)) in errs.into_iter().enumerate() {
                let (us, rate) = if i == 0 { (us, rate) } else { (f64::NAN, f64::NAN) };
                c.rows.push(row(format!("{name} bwd {what} (norm)"), e, BWD_TOL, us, rate));
            }
        }
        let err = if repeats { 0.0 } else { f64::INFINITY };
        c.rows.push(row(format!("{name} bwd v{version} repeats bit for bit"), err, 0.0, f64::NAN, f64::NAN));
    }
    Ok(())
}

/// The backward's bf16 outputs (du, ddelta, dz) and f32 ones, NaN-poisoned.
struct Bf16Grads {
    acts: [DeviceBuffer<u16>; 3], // du, ddelta, dz
    f: GpuGrads,                  // da, dbm, dcm, dd, dbias, dinit and the workspace (du, ddelta, dz unused)
}

impl Bf16Grads {
    fn poisoned(dims: ScanDims) -> Res<Bf16Grads> {
        let bdl = dims.batch * dims.dim * dims.len;
        let nan = || DeviceBuffer::from_slice(&vec![bf16::NAN.to_bits(); bdl]);
        Ok(Bf16Grads { acts: [nan()?, nan()?, nan()?], f: GpuGrads::poisoned(dims)? })
    }

    /// du, ddelta, dz widened to f32.
    fn acts(&self) -> Res<Vec<Vec<f32>>> {
        let widen = |b: &DeviceBuffer<u16>| -> Res<Vec<f32>> {
            Ok(b.as_host_vec()?.into_iter().map(|v| bf16::from_bits(v).to_f32()).collect())
        };
        self.acts.iter().map(widen).collect()
    }
}

/// u, delta, z of `h` (`v[0]`, `v[1]`, `v[6]`) rounded to bf16 in place, and their bits.
fn round_acts(h: &mut HostInputs) -> [Vec<u16>; 3] {
    [0, 1, 6].map(|i| {
        let bits: Vec<u16> = h.v[i].iter().map(|&x| bf16_from_f32(x).to_bits()).collect();
        h.v[i] = bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect();
        bits
    })
}

/// The GPU inputs with u, delta, z from `acts` (bf16).
fn inputs_bf16<'a>(g: &'a GpuInputs, acts: &'a [DeviceBuffer<u16>; 3]) -> kl::ScanInputs<'a, u16> {
    let f = g.inputs();
    kl::ScanInputs {
        u: &acts[0],
        delta: &acts[1],
        z: g.extras.then_some(&*acts[2]),
        a: f.a,
        bm: f.bm,
        cm: f.cm,
        d_skip: f.d_skip,
        delta_bias: f.delta_bias,
        softplus: f.softplus,
        init: f.init,
    }
}

fn forward_bf16(c: &Check, g: &GpuInputs, acts: &[DeviceBuffer<u16>; 3], dims: ScanDims, out: &mut [DeviceBuffer<f32>; 3]) -> Res<()> {
    let x = inputs_bf16(g, acts);
    let [gout, glast, gchunks] = out;
    let args = kl::ScanForward { x, out: gout, last_state: glast, chunk_states: gchunks, dims: kernel_dims(dims) };
    c.gpu.selective_scan_forward(kl::SCAN_FWD_VERSION, args)?;
    Ok(())
}

fn backward_bf16(
    c: &Check,
    g: &GpuInputs,
    acts: &[DeviceBuffer<u16>; 3],
    states: &DeviceSlice<f32>,
    dims: ScanDims,
    o: &mut Bf16Grads,
) -> Res<()> {
    let x = inputs_bf16(g, acts);
    let [du, ddelta, dz] = &mut o.acts;
    let grads = kl::ScanGrads {
        du,
        ddelta,
        dz: g.extras.then_some(&mut **dz),
        da: &mut o.f.da,
        dbm: &mut o.f.dbm,
        dcm: &mut o.f.dcm,
        dd_skip: &mut o.f.dd,
        ddelta_bias: g.extras.then_some(&mut *o.f.dbias),
        dinit: g.init.is_some().then_some(&mut *o.f.dinit),
    };
    let (dout, dlast) = (&g.v[8], g.dlast.as_deref());
    let args =
        kl::ScanBackward { x, chunk_states: states, dout, dlast, grads, workspace: &mut o.f.ws, dims: kernel_dims(dims) };
    c.gpu.selective_scan_backward(kl::SCAN_BWD_VERSION, args)?;
    Ok(())
}

/// Forward v3 and backward v4 on bf16 u, delta, z against the CPU twin on the same values (see
/// the module's doc); then both timed together.
fn check_bf16(c: &mut Check, name: &str, mut h: HostInputs, dims: ScanDims) -> Res<()> {
    let bits = round_acts(&mut h);
    let want = selective_scan_forward(dims, &h.cpu());
    let want_grads = selective_scan_backward(dims, &h.cpu(), &want.chunk_states, &h.v[8], h.dlast.as_deref());
    let g = GpuInputs::upload(&h)?;
    let acts = bits.each_ref().map(|b| DeviceBuffer::from_slice(b));
    let [a0, a1, a2] = acts;
    let acts = [a0?, a1?, a2?];
    let ScanDims { batch, dim, len, state, .. } = dims;
    let mut out = [poisoned(batch * dim * len)?, poisoned(batch * dim * state)?, poisoned(batch * dim * dims.n_chunks() * state)?];
    forward_bf16(c, &g, &acts, dims, &mut out)?;
    c.gpu.stream.synchronize()?;
    let fwd_err = [
        rel_norm(&out[0].as_host_vec()?, &want.out),
        rel_norm(&out[1].as_host_vec()?, &want.last_state),
        rel_norm(&out[2].as_host_vec()?, &want.chunk_states),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let us = c.time(|| forward_bf16(c, &g, &acts, dims, &mut out))?;
    c.rows.push(row(format!("{name} bf16 fwd v3 worst (norm)"), fwd_err, TOL, us, f64::NAN));

    // backward on the CPU's chunk states, twice (the bits must repeat)
    let cpu_states = DeviceBuffer::from_slice(&want.chunk_states)?;
    let mut o = Bf16Grads::poisoned(dims)?;
    backward_bf16(c, &g, &acts, &cpu_states, dims, &mut o)?;
    let mut again = Bf16Grads::poisoned(dims)?;
    backward_bf16(c, &g, &acts, &cpu_states, dims, &mut again)?;
    c.gpu.stream.synchronize()?;
    let got = o.acts()?;
    let mut act_err = rel_norm(&got[0], &want_grads.du).max(rel_norm(&got[1], &want_grads.ddelta));
    if let Some(dz) = &want_grads.dz {
        act_err = act_err.max(rel_norm(&got[2], dz));
    }
    let rest = o.f.errors(&want_grads)?;
    let f32_err = rest.iter().filter(|e| !matches!(e.0, "du" | "ddelta" | "dz")).map(|e| e.1).fold(0.0, f64::max);
    let act_bits = |g: &Bf16Grads| -> Res<Vec<Vec<u16>>> { Ok(g.acts.iter().map(|b| b.as_host_vec()).collect::<Result<_, _>>()?) };
    let repeats = o.f.bits()? == again.f.bits()? && act_bits(&o)? == act_bits(&again)?; // (bits: a NaN left unwritten repeats)
    let us = c.time(|| backward_bf16(c, &g, &acts, &cpu_states, dims, &mut o))?;
    c.rows.push(row(format!("{name} bf16 bwd v4 du,ddelta,dz (norm)"), act_err, BF16_TOL, us, f64::NAN));
    c.rows.push(row(format!("{name} bf16 bwd v4 f32 grads (norm)"), f32_err, BWD_TOL, f64::NAN, f64::NAN));
    let err = if repeats { 0.0 } else { f64::INFINITY };
    c.rows.push(row(format!("{name} bf16 bwd v4 repeats bit for bit"), err, 0.0, f64::NAN, f64::NAN));

    let us = c.time(|| {
        forward_bf16(c, &g, &acts, dims, &mut out)?;
        let [_, _, chunks] = &out;
        backward_bf16(c, &g, &acts, chunks, dims, &mut o)
    })?;
    c.rows.push(row(format!("{name} bf16 fwd+bwd (time)"), 0.0, 0.0, us, f64::NAN));
    Ok(())
}

pub fn run(c: &mut Check) -> Res<()> {
    let big = if c.timing { (8, 1536, 2048, 16, 64) } else { (1, 64, 256, 16, 64) }; // small under compute-sanitizer
    for (batch, dim, len, state, chunk, extras, with_state) in [
        (2, 5, 37, 4, 8, true, false),
        (2, 5, 37, 4, 8, false, false),
        (1, 9, 100, 16, 40, true, false),
        (big.0, big.1, big.2, big.3, big.4, true, false),
        (2, 5, 37, 4, 8, true, true),
        (1, 9, 100, 16, 40, false, true),
        (2, 21, 300, 16, 256, true, true),
    ] {
        let dims = ScanDims { batch, dim, len, state, chunk };
        let h = HostInputs::draw(c, dims, extras, with_state);
        let want = selective_scan_forward(dims, &h.cpu());
        let want_grads = selective_scan_backward(dims, &h.cpu(), &want.chunk_states, &h.v[8], h.dlast.as_deref());
        let g = GpuInputs::upload(&h)?;
        let name = format!(
            "scan {batch}x{dim}x{len}x{state}/{chunk}{}{}",
            if extras { " z,bias,sp" } else { "" },
            if with_state { " init,dlast" } else { "" }
        );
        let [mut gout, mut glast, mut gchunks] = check_forward(c, &name, &g, dims, &want)?;
        check_backward(c, &name, &g, dims, &want.chunk_states, &want_grads)?;

        // Backward on the GPU forward's chunk states; then forward + backward timed together.
        let mut o = GpuGrads::poisoned(dims)?;
        backward(c, kl::SCAN_BWD_VERSION, &g, &gchunks, dims, &mut o)?;
        c.gpu.stream.synchronize()?;
        let worst = o.errors(&want_grads)?.iter().map(|e| e.1).fold(0.0, f64::max);
        let us = c.time(|| {
            forward(c, kl::SCAN_FWD_VERSION, &g, dims, &mut [&mut gout, &mut glast, &mut gchunks])?;
            backward(c, kl::SCAN_BWD_VERSION, &g, &gchunks, dims, &mut o)
        })?;
        c.rows.push(row(format!("{name} fwd+bwd, gpu states: worst grad (norm)"), worst, BWD_TOL, us, f64::NAN));
        let h16 = HostInputs::draw(c, dims, extras, with_state);
        check_bf16(c, &name, h16, dims)?;
    }
    Ok(())
}
