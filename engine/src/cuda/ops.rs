//! The GPU arm of every op. Each function here is what an op in `ops/` calls when its
//! tensors live on the GPU: it allocates the output, turns layouts into kernel arguments
//! and launches the kernel twin to the CPU one the op would otherwise call (same name,
//! `_f32` suffix). Validation and autograd stay in `ops/`, shared by both devices.
//!
//! Buffers are handed to kernels as raw device slices. A slice does not keep its buffer
//! alive, so every function holds the tensors it launches on until the launch is queued;
//! after that, the single stream orders any reuse of the memory after the kernel.

use super::{err, f32_only, gpu, CudaData};
use crate::{
    cpu::{
        elementwise::{BinaryOp, UnaryOp},
        matmul::MatStrides as CpuMatStrides,
        reduce::ReduceOp,
        scan::ScanDims,
    },
    dtype::DType,
    error::{Error, Result},
    shape::Layout,
    storage::{CpuData, Storage},
    Device, Tensor,
};
use mamba_kernels::codes as kc;
use mamba_kernels::cust::memory::{AsyncCopyDestination, DeviceSlice};
use mamba_kernels::launch::{
    AdamWStep, ConvDims, ConvGrads, CrossEntropyBackward, Gpu, MatStrides, Matmul, RmsNormBackward, RmsNormForward,
    ScanBackward, ScanDims as KScanDims, ScanForward, ScanGrads, ScanInputs, Strided, SCAN_BWD_VERSION,
    SCAN_FWD_VERSION,
};

type Slice = DeviceSlice<f32>;

// ---------------------------------------------------------------- buffers and layouts

/// A fresh f32 tensor of `shape` on the GPU and the slice its kernel writes.
fn new_f32(op: &'static str, shape: &[usize]) -> Result<(Tensor, Slice)> {
    let n = crate::shape::checked_numel(op, shape)?;
    let data = CudaData::alloc(op, DType::F32, n)?;
    let slice = data.f32(op)?;
    Ok((Tensor::from_storage(Storage::cuda(data), shape), slice))
}

/// The whole f32 buffer behind `t` (strided kernels index it through `t`'s layout).
fn buffer(op: &'static str, t: &Tensor) -> Result<Slice> {
    t.read().as_cuda(op)?.f32(op)
}

/// The elements of `t`, which must be contiguous, as one slice from its offset.
fn elems(op: &'static str, t: &Tensor) -> Result<Slice> {
    if !t.is_contiguous() {
        let msg = format!("engine bug: a contiguous-only kernel got a view with strides {:?}", t.layout.strides);
        return Err(Error::Device { op, device: Device::Cuda, msg });
    }
    let s = t.read();
    let data = s.as_cuda(op)?;
    if data.dtype() != DType::F32 {
        return Err(f32_only(op, data.dtype()));
    }
    data.slice(op, t.layout.offset, t.numel())
}

/// Contiguous f32 copies (or the tensors themselves) ready for a contiguous-only kernel.
fn dense(ts: &[&Tensor]) -> Result<Vec<Tensor>> {
    ts.iter().map(|t| t.contiguous_detached()).collect()
}

/// A layout as the kernels' by-value `Strided` argument.
fn strided(op: &'static str, l: &Layout) -> Result<Strided> {
    Strided::new(&l.shape, &l.strides, l.offset).ok_or_else(|| Error::Device {
        op,
        device: Device::Cuda,
        msg: format!("layout {:?} / {:?} has more than 6 axes that do not merge", l.shape, l.strides),
    })
}

/// Host i64 values (token ids, targets) in device memory for one launch.
fn upload_i64(op: &'static str, values: &[i64]) -> Result<(CudaData, DeviceSlice<i64>)> {
    // Held as an 8-byte-element buffer; it never becomes a tensor.
    let data = CudaData::upload(op, DType::F64, values)?;
    let slice = data.slice::<i64>(op, 0, values.len())?;
    Ok((data, slice))
}

/// Token ids (host `usize`) as the kernels' `i64`s.
fn upload_ids(op: &'static str, ids: &[usize]) -> Result<(CudaData, DeviceSlice<i64>)> {
    upload_i64(op, &ids.iter().map(|&i| i as i64).collect::<Vec<_>>())
}

fn run(op: &'static str, launch: impl FnOnce(&Gpu) -> mamba_kernels::Result<()>) -> Result<()> {
    launch(gpu(op)?).map_err(err(op))
}

// ---------------------------------------------------------------- creation and movement

/// `n` copies of `value` (twin of `CpuData::full`).
pub fn full(dtype: DType, n: usize, value: f64) -> Result<CudaData> {
    match dtype {
        DType::F32 => {
            let data = CudaData::alloc("full", dtype, n)?;
            let mut out = data.f32("full")?;
            run("full", |g| g.fill_f32(&mut out, value as f32))?;
            Ok(data)
        }
        DType::F64 => CudaData::upload("full", dtype, &vec![value; n]),
    }
}

/// `t`'s values on `device`, detached, contiguous.
pub fn transfer(t: &Tensor, device: Device) -> Result<Tensor> {
    const OP: &str = "to";
    if device == Device::Cpu && t.dtype() == DType::F64 && !t.is_contiguous() && t.numel() > 0 {
        // No f64 copy kernel: fetch the span the view covers and gather it on the host.
        let (lo, end) = (t.layout.offset, t.layout.max_offset());
        let span: Vec<f64> = t.read().as_cuda(OP)?.download(OP, lo, end - lo)?;
        let layout = Layout { offset: 0, ..t.layout.clone() };
        return Tensor::from_cpu_data(CpuData::F64(span), &[end - lo])?.with_layout(layout).contiguous_detached();
    }
    let c = t.contiguous_detached()?;
    let (off, n) = (c.layout.offset, c.numel());
    match device {
        Device::Cuda => {
            let s = c.read();
            let data = match s.as_cpu(OP)? {
                CpuData::F32(v) => CudaData::upload(OP, DType::F32, &v[off..off + n])?,
                CpuData::F64(v) => CudaData::upload(OP, DType::F64, &v[off..off + n])?,
            };
            Ok(Tensor::from_storage(Storage::cuda(data), t.shape()))
        }
        Device::Cpu => {
            let s = c.read();
            let d = s.as_cuda(OP)?;
            let data = match d.dtype() {
                DType::F32 => CpuData::F32(d.download(OP, off, n)?),
                DType::F64 => CpuData::F64(d.download(OP, off, n)?),
            };
            Tensor::from_cpu_data(data, t.shape())
        }
    }
}

/// Overwrite contiguous `dst` with contiguous `src` (same shape and dtype), device to device.
pub fn copy_within(src: &Tensor, dst: &Tensor) -> Result<()> {
    const OP: &str = "set_data";
    // A source inside the destination's own buffer (which may overlap it) goes through a copy.
    let src = if src.same_storage(dst) { contiguous(src)? } else { src.clone() };
    // The device memory is written through the stream; the host-side lock only guards the
    // buffer's identity, so read guards suffice (and the same lock is never taken twice).
    let (ss, ds) = (src.read(), dst.read());
    let (s, d) = (ss.as_cuda(OP)?, ds.as_cuda(OP)?);
    let n = src.numel();
    let stream = &gpu(OP)?.stream;
    // SAFETY: both ranges are in bounds (checked by `slice`); the copy is ordered on the stream.
    match s.dtype() {
        DType::F32 => unsafe {
            d.slice::<f32>(OP, dst.layout.offset, n)?
                .async_copy_from(&s.slice::<f32>(OP, src.layout.offset, n)?, stream)
        },
        DType::F64 => unsafe {
            d.slice::<f64>(OP, dst.layout.offset, n)?
                .async_copy_from(&s.slice::<f64>(OP, src.layout.offset, n)?, stream)
        },
    }
    .map_err(err(OP))
}

// ---------------------------------------------------------------- elementwise, copies, reductions

/// Op code (`mamba_kernels::codes`) and parameters of `cu/elementwise.cu`.
fn unary_code(op: UnaryOp) -> (kc::UnaryOp, f32, f32) {
    match op {
        UnaryOp::Neg => (kc::UnaryOp::Neg, 0.0, 0.0),
        UnaryOp::Exp => (kc::UnaryOp::Exp, 0.0, 0.0),
        UnaryOp::Log => (kc::UnaryOp::Log, 0.0, 0.0),
        UnaryOp::Sqrt => (kc::UnaryOp::Sqrt, 0.0, 0.0),
        UnaryOp::Rsqrt => (kc::UnaryOp::Rsqrt, 0.0, 0.0),
        UnaryOp::Sigmoid => (kc::UnaryOp::Sigmoid, 0.0, 0.0),
        UnaryOp::Silu => (kc::UnaryOp::Silu, 0.0, 0.0),
        UnaryOp::Softplus => (kc::UnaryOp::Softplus, 0.0, 0.0),
        UnaryOp::Tanh => (kc::UnaryOp::Tanh, 0.0, 0.0),
        UnaryOp::Powf(p) => (kc::UnaryOp::Powf, p as f32, 0.0),
        UnaryOp::Affine { mul, add } => (kc::UnaryOp::Affine, mul as f32, add as f32),
    }
}

fn binary_code(op: BinaryOp) -> kc::BinaryOp {
    match op {
        BinaryOp::Add => kc::BinaryOp::Add,
        BinaryOp::Sub => kc::BinaryOp::Sub,
        BinaryOp::Mul => kc::BinaryOp::Mul,
        BinaryOp::Div => kc::BinaryOp::Div,
        BinaryOp::Eq => kc::BinaryOp::Eq,
    }
}

/// Twin of `cpu::elementwise::unary`.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "unary";
    let (code, p0, p1) = unary_code(op);
    let (out, mut o) = new_f32(OP, x.shape())?;
    if x.is_contiguous() {
        let xs = elems(OP, x)?;
        run(OP, |g| g.unary_f32(code, p0, p1, &xs, &mut o))?;
    } else {
        let (xs, lx) = (buffer(OP, x)?, strided(OP, &x.layout)?);
        run(OP, |g| g.unary_strided_f32(code, p0, p1, &xs, lx, &mut o))?;
    }
    Ok(out)
}

/// Twin of `cpu::elementwise::binary`; `la`, `lb` are already broadcast to `shape`.
pub fn binary(op: BinaryOp, a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "binary";
    let code = binary_code(op);
    let (out, mut o) = new_f32(OP, shape)?;
    let (sa, sb) = (buffer(OP, a)?, buffer(OP, b)?);
    if la.is_contiguous() && lb.is_contiguous() {
        let n = out.numel();
        let (xa, xb) = (sa.index(la.offset..la.offset + n), sb.index(lb.offset..lb.offset + n));
        run(OP, |g| g.binary_f32(code, &xa, &xb, &mut o))?;
    } else {
        let (ta, tb) = (strided(OP, la)?, strided(OP, lb)?);
        run(OP, |g| g.binary_strided_f32(code, &sa, ta, &sb, tb, &mut o))?;
    }
    Ok(out)
}

/// Twin of `cpu::copy::copy_strided`: the view `x` in a fresh row-major buffer.
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "copy";
    let (out, mut o) = new_f32(OP, x.shape())?;
    let (xs, lx) = (buffer(OP, x)?, strided(OP, &x.layout)?);
    run(OP, |g| g.copy_strided_f32(&xs, lx, &mut o))?;
    Ok(out)
}

/// Twin of `concat`'s use of `cpu::copy::copy_into`: each piece into its slot along `dim`.
pub fn concat(tensors: &[&Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "concat";
    let (out, mut o) = new_f32(OP, shape)?;
    let full = Layout::contiguous(shape);
    let mut start = 0;
    for t in tensors {
        let len = t.shape()[dim];
        let dst = strided(OP, &full.narrow(dim, start, len))?;
        let (src, ls) = (buffer(OP, t)?, strided(OP, &t.layout)?);
        if t.numel() > 0 {
            run(OP, |g| g.copy_into_f32(&mut o, dst, &src, ls, t.numel()))?;
        }
        start += len;
    }
    Ok(out)
}

/// Twin of `cpu::copy::cast` between f32 and f64.
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    const OP: &str = "to_dtype";
    let lx = strided(OP, &x.layout)?;
    let n = x.numel();
    let s = x.read();
    let src = s.as_cuda(OP)?;
    let data = CudaData::alloc(OP, to, n)?;
    match (src.dtype(), to) {
        (DType::F32, DType::F64) => {
            let (xs, mut o) = (src.slice::<f32>(OP, 0, src.len())?, data.slice::<f64>(OP, 0, n)?);
            run(OP, |g| g.cast_f32_f64(&xs, lx, &mut o))?;
        }
        (DType::F64, DType::F32) => {
            let (xs, mut o) = (src.slice::<f64>(OP, 0, src.len())?, data.slice::<f32>(OP, 0, n)?);
            run(OP, |g| g.cast_f64_f32(&xs, lx, &mut o))?;
        }
        _ => unreachable!("to_dtype returns early when the dtype does not change"),
    }
    Ok(Tensor::from_storage(Storage::cuda(data), x.shape()))
}

/// Twin of `cpu::reduce::reduce`; the output keeps every axis (reduced ones become 1).
pub fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "reduce";
    let l = &x.layout;
    let kept = Layout { shape: out_shape.into(), strides: l.strides.clone(), offset: l.offset };
    let inner = Layout {
        shape: axes.iter().map(|&a| l.shape[a]).collect(),
        strides: axes.iter().map(|&a| l.strides[a]).collect(),
        offset: 0,
    };
    let (out, mut o) = new_f32(OP, out_shape)?;
    let (xs, lk, li) = (buffer(OP, x)?, strided(OP, &kept)?, strided(OP, &inner)?);
    let code = match op {
        ReduceOp::Sum => kc::ReduceOp::Sum,
        ReduceOp::Max => kc::ReduceOp::Max,
    };
    run(OP, |g| g.reduce_f32(code, &xs, lk, li, &mut o))?;
    Ok(out)
}

// ---------------------------------------------------------------- matmul

/// Twin of `cpu::matmul::matmul`: `(nb, m, k) @ (nb, k, n)` for operand views whose
/// strides are given; an operand that is neither row- nor column-major is copied first.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &Tensor,
    sa: CpuMatStrides,
    b: &Tensor,
    sb: CpuMatStrides,
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "matmul";
    // The kernel reads each operand row- or column-major; anything else becomes row-major.
    let operand = |t: &Tensor, s: CpuMatStrides, rows: usize, cols: usize| -> Result<(Tensor, MatStrides)> {
        if s.row == 1 || s.col == 1 {
            return Ok((t.clone(), MatStrides { batch: s.batch, row: s.row, col: s.col }));
        }
        let c = t.contiguous_detached()?;
        let batch = if s.batch == 0 { 0 } else { rows * cols };
        Ok((c, MatStrides { batch, row: cols, col: 1 }))
    };
    if m.div_ceil(128) > 65535 {
        let msg = format!("the GPU matmul takes at most {} rows, got {m}", 128 * 65535);
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    let (a, sa) = operand(a, sa, m, k)?;
    let (b, sb) = operand(b, sb, k, n)?;
    let (out, mut o) = new_f32(OP, shape)?;
    let (xa, xb) = (buffer(OP, &a)?, buffer(OP, &b)?);
    let (xa, xb) = (xa.index(a.layout.offset..), xb.index(b.layout.offset..));
    run(OP, |g| g.matmul_strided_f32(Matmul { a: &xa, sa, b: &xb, sb, c: &mut o, nb, m, n, k }))?;
    Ok(out)
}

// ---------------------------------------------------------------- fused layers

/// Twin of `cpu::index::embedding_forward`: rows `ids` of the `(v, d)` table `w`.
pub fn embedding_forward(w: &Tensor, ids: &[usize], shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "embedding";
    let d = w.shape()[1];
    let (out, mut o) = new_f32(OP, shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let w = dense(&[w])?.remove(0);
    let (_keep, gids) = upload_ids(OP, ids)?;
    let ws = elems(OP, &w)?;
    run(OP, |g| g.embedding_forward_f32(&ws, &gids, &mut o, ids.len(), d))?;
    Ok(out)
}

/// Twin of `cpu::index::embedding_backward`: the `(v, d)` scatter-add of `dy`'s rows.
pub fn embedding_backward(dy: &Tensor, ids: &[usize], v: usize, d: usize) -> Result<Tensor> {
    const OP: &str = "embedding";
    if v * d == 0 || ids.is_empty() {
        return Tensor::zeros(&[v, d], DType::F32, Device::Cuda);
    }
    let dy = dense(&[dy])?.remove(0);
    let (_keep, gids) = upload_ids(OP, ids)?;
    let (out, mut o) = new_f32(OP, &[v, d])?;
    let gs = elems(OP, &dy)?;
    run(OP, |g| g.embedding_backward_f32(&gs, &gids, &mut o, ids.len(), v, d))?;
    Ok(out)
}

/// Twin of `cpu::softmax::log_softmax_forward` over rows of `v` (x contiguous).
pub fn log_softmax_forward(x: &Tensor, v: usize) -> Result<Tensor> {
    const OP: &str = "log_softmax";
    let (out, mut o) = new_f32(OP, x.shape())?;
    let xs = elems(OP, x)?;
    run(OP, |g| g.log_softmax_forward_f32(&xs, &mut o, v))?;
    Ok(out)
}

/// Twin of `cpu::softmax::log_softmax_backward`.
pub fn log_softmax_backward(y: &Tensor, dy: &Tensor, v: usize) -> Result<Tensor> {
    const OP: &str = "log_softmax";
    let t = dense(&[y, dy])?;
    let (out, mut o) = new_f32(OP, y.shape())?;
    let (ys, gs) = (elems(OP, &t[0])?, elems(OP, &t[1])?);
    run(OP, |g| g.log_softmax_backward_f32(&ys, &gs, &mut o, v))?;
    Ok(out)
}

/// Twin of `cpu::softmax::cross_entropy_forward`, finished on the GPU: returns the mean loss
/// over the `n_valid` rows (a scalar tensor, never read back here) and the per-row `lse`.
pub fn cross_entropy_forward(
    x: &Tensor,
    targets: &[i64],
    ignore_index: i64,
    n_valid: usize,
    v: usize,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cross_entropy";
    let rows = targets.len();
    let (_keep, gt) = upload_i64(OP, targets)?;
    let (lse, mut l) = new_f32(OP, &[rows])?;
    let (row_loss, mut r) = new_f32(OP, &[rows])?;
    let xs = elems(OP, x)?;
    run(OP, |g| g.cross_entropy_forward_f32(&xs, &gt, ignore_index, &mut l, &mut r, v))?;
    let scale = if n_valid == 0 { 0.0 } else { 1.0 / n_valid as f64 };
    let loss = reduce(ReduceOp::Sum, &row_loss, &[0], &[1])?.affine(scale, 0.0)?.reshape(&[])?;
    Ok((loss, lse))
}

/// Twin of `cpu::softmax::cross_entropy_backward`, times the (device) scalar `dloss`.
pub fn cross_entropy_backward(
    x: &Tensor,
    lse: &Tensor,
    targets: &[i64],
    ignore_index: i64,
    n_valid: usize,
    dloss: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let v = x.shape().last().copied().unwrap_or(1);
    let (_keep, gt) = upload_i64(OP, targets)?;
    let (dx, mut o) = new_f32(OP, x.shape())?;
    let (xs, ls) = (elems(OP, x)?, elems(OP, lse)?);
    let scale = 1.0 / n_valid.max(1) as f32;
    let args = CrossEntropyBackward { x: &xs, lse: &ls, targets: &gt, ignore_index, scale, dx: &mut o, v };
    run(OP, |g| g.cross_entropy_backward_f32(args))?;
    // dloss stays on the GPU: reading it back would stall the step.
    dx.mul(&dloss.reshape(&[1])?)
}

/// Twin of `cpu::norm::rms_norm_forward`: `(y, rstd)`. Refuses rows wider than the
/// backward kernel takes, so that a model fails at its first forward, not in backward.
pub fn rms_norm_forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm";
    let d = w.numel();
    if d > mamba_kernels::launch::RMS_NORM_MAX_D {
        let max = mamba_kernels::launch::RMS_NORM_MAX_D;
        let msg = format!(
            "the GPU RMSNorm takes rows of at most {max} values (its backward keeps a row in shared memory), got {d}"
        );
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    let rows = x.numel() / d;
    let t = dense(&[x, w])?;
    let (y, mut ys) = new_f32(OP, x.shape())?;
    let (rstd, mut rs) = new_f32(OP, &[rows])?;
    let (xs, ws) = (elems(OP, &t[0])?, elems(OP, &t[1])?);
    let args = RmsNormForward { x: &xs, w: &ws, y: &mut ys, rstd: &mut rs, rows, d, eps: eps as f32 };
    run(OP, |g| g.rms_norm_forward_f32(args))?;
    Ok((y, rstd))
}

/// Twin of `cpu::norm::rms_norm_backward`: `(dx, dw)`.
pub fn rms_norm_backward(x: &Tensor, w: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm";
    let d = w.numel();
    let rows = x.numel() / d;
    let t = dense(&[x, w, rstd, dy])?;
    let (dx, mut dxs) = new_f32(OP, x.shape())?;
    let (dw, mut dws) = new_f32(OP, &[d])?;
    let scratch = CudaData::alloc(OP, DType::F32, Gpu::rms_norm_scratch_len(rows, d))?;
    let mut sc = scratch.f32(OP)?;
    let (xs, ws, rs, gs) = (elems(OP, &t[0])?, elems(OP, &t[1])?, elems(OP, &t[2])?, elems(OP, &t[3])?);
    let args =
        RmsNormBackward { x: &xs, w: &ws, rstd: &rs, dy: &gs, dx: &mut dxs, dw: &mut dws, scratch: &mut sc, rows, d };
    run(OP, |g| g.rms_norm_backward_f32(args))?;
    Ok((dx, dw))
}

/// Twin of `cpu::conv::conv1d_causal_forward` on `(b, c, l)` with a `(c, k)` kernel.
pub fn conv1d_causal_forward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "conv1d_causal";
    let (&[b, c, l], k) = (x.shape(), w.shape()[1]) else { unreachable!("shapes checked by the op") };
    let max = mamba_kernels::launch::CONV_MAX_K;
    if k > max {
        // Refused at forward so a model fails at once, not in its backward.
        let msg = format!("the GPU conv takes kernels of at most {max} taps (d_conv), got {k}");
        return Err(Error::Device { op: OP, device: Device::Cuda, msg });
    }
    let t = dense(&[x, w])?;
    let bias = bias.map(|t| t.contiguous_detached()).transpose()?;
    let (out, mut o) = new_f32(OP, x.shape())?;
    let (xs, ws) = (elems(OP, &t[0])?, elems(OP, &t[1])?);
    let bs = bias.as_ref().map(|t| elems(OP, t)).transpose()?;
    run(OP, |g| g.conv1d_causal_forward_f32(&xs, &ws, bs.as_ref(), &mut o, ConvDims { b, c, l, k }))?;
    Ok(out)
}

/// Twin of `cpu::conv::conv1d_causal_backward`: `(dx, dw, db)`.
pub fn conv1d_causal_backward(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "conv1d_causal";
    let (&[b, c, l], k) = (x.shape(), w.shape()[1]) else { unreachable!("shapes checked by the op") };
    let t = dense(&[x, w, dy])?;
    let (dx, mut dxs) = new_f32(OP, &[b, c, l])?;
    let (dw, mut dws) = new_f32(OP, &[c, k])?;
    let (db, mut dbs) = new_f32(OP, &[c])?;
    let (xs, ws, gs) = (elems(OP, &t[0])?, elems(OP, &t[1])?, elems(OP, &t[2])?);
    let grads = ConvGrads { dx: &mut dxs, dw: &mut dws, db: &mut dbs };
    run(OP, |g| g.conv1d_causal_backward_f32(&xs, &ws, &gs, grads, ConvDims { b, c, l, k }))?;
    Ok((dx, dw, db))
}

// ---------------------------------------------------------------- selective scan

/// The GPU scan keeps a channel's states in one 16-lane group and replays at most
/// `SCAN_BWD_MAX_CHUNK` steps from shared memory.
fn scan_limits(dims: ScanDims) -> Result<()> {
    use mamba_kernels::launch::{SCAN_BWD_MAX_CHUNK, SCAN_MAX_STATE};
    if !(1..=SCAN_MAX_STATE).contains(&dims.state) || dims.chunk > SCAN_BWD_MAX_CHUNK || dims.batch > 65535 {
        return Err(Error::Device {
            op: "selective_scan",
            device: Device::Cuda,
            msg: format!(
                "the GPU scan takes 1 <= d_state <= {SCAN_MAX_STATE}, chunk <= {SCAN_BWD_MAX_CHUNK} and batch \
                 <= 65535, got {}, {} and {}",
                dims.state, dims.chunk, dims.batch
            ),
        });
    }
    Ok(())
}

/// The contiguous inputs as slices, after checking the GPU scan's limits.
fn scan_inputs(dims: ScanDims, ins: &[Tensor]) -> Result<Vec<Slice>> {
    scan_limits(dims)?;
    ins.iter().map(|t| elems("selective_scan", t)).collect()
}

/// The scan's inputs as the kernels take them: `x` in the op's order `[u, delta, A, B, C,
/// D, (z), (delta_bias)]`.
fn scan_inputs_of(x: &[Slice], has_z: bool, has_bias: bool, softplus: bool) -> ScanInputs<'_> {
    let mut rest = x[6..].iter();
    let z = if has_z { rest.next() } else { None };
    let delta_bias = if has_bias { rest.next() } else { None };
    ScanInputs { u: &x[0], delta: &x[1], a: &x[2], bm: &x[3], cm: &x[4], d_skip: &x[5], z, delta_bias, softplus }
}

/// The engine's scan sizes as the kernels'.
fn kernel_dims(d: ScanDims) -> KScanDims {
    KScanDims { batch: d.batch, dim: d.dim, len: d.len, state: d.state, chunk: d.chunk }
}

/// Twin of `cpu::scan::selective_scan_forward` on contiguous inputs in the op's order
/// `[u, delta, A, B, C, D, (z), (delta_bias)]`: `(out, last_state, chunk_states)`.
pub fn scan_forward(
    dims: ScanDims,
    ins: &[Tensor],
    has_z: bool,
    has_bias: bool,
    softplus: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "selective_scan";
    let ScanDims { batch, dim, len, state, .. } = dims;
    let x = scan_inputs(dims, ins)?;
    let (out, mut o) = new_f32(OP, &[batch, dim, len])?;
    let (last, mut ls) = new_f32(OP, &[batch, dim, state])?;
    let (states, mut ss) = new_f32(OP, &[batch, dim, dims.n_chunks(), state])?;
    let args = ScanForward {
        x: scan_inputs_of(&x, has_z, has_bias, softplus),
        out: &mut o,
        last_state: &mut ls,
        chunk_states: &mut ss,
        dims: kernel_dims(dims),
    };
    run(OP, |g| g.selective_scan_forward_f32(SCAN_FWD_VERSION, args))?;
    Ok((out, last, states))
}

/// Twin of `cpu::scan::selective_scan_backward`: one gradient per input, in input order.
pub fn scan_backward(
    dims: ScanDims,
    ins: &[Tensor],
    states: &Tensor,
    dout: &Tensor,
    has_z: bool,
    has_bias: bool,
    softplus: bool,
) -> Result<Vec<Tensor>> {
    const OP: &str = "selective_scan";
    let x = scan_inputs(dims, ins)?;
    let t = dense(&[states, dout])?;
    let (st, dy) = (elems(OP, &t[0])?, elems(OP, &t[1])?);
    let mut grads = Vec::new();
    let mut slices = Vec::new();
    for input in ins {
        let (g, s) = new_f32(OP, input.shape())?;
        grads.push(g);
        slices.push(s);
    }
    let [du, ddelta, da, dbm, dcm, dd_skip, extra @ ..] = &mut slices[..] else { unreachable!("at least six inputs") };
    let mut extra = extra.iter_mut();
    let dz = if has_z { extra.next() } else { None };
    let ddelta_bias = if has_bias { extra.next() } else { None };
    let args = ScanBackward {
        x: scan_inputs_of(&x, has_z, has_bias, softplus),
        chunk_states: &st,
        dout: &dy,
        grads: ScanGrads { du, ddelta, da, dbm, dcm, dd_skip, dz, ddelta_bias },
        dims: kernel_dims(dims),
    };
    run(OP, |g| g.selective_scan_backward_f32(SCAN_BWD_VERSION, args))?;
    Ok(grads)
}

// ---------------------------------------------------------------- optimizer

/// Twin of `cpu::adamw::adamw_step` through `ops::adamw::adamw_step`, which has checked that
/// the four tensors agree, that `param`, `m`, `v` are contiguous and that no two share a
/// buffer. Updates `param`, `m` and `v` in place (one launch) from the contiguous `grad`.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &crate::cpu::adamw::AdamWHyper,
) -> Result<()> {
    const OP: &str = "adamw_step";
    // The written buffers stay locked for writing until the launch is queued (distinct
    // buffers, checked by the op, so no lock is taken twice).
    fn write(t: &Tensor) -> std::sync::RwLockWriteGuard<'_, Storage> {
        t.storage.write().unwrap_or_else(|e| e.into_inner())
    }
    let slice = |s: &Storage, t: &Tensor| -> Result<Slice> {
        let data = s.as_cuda(OP)?;
        if data.dtype() != DType::F32 {
            return Err(f32_only(OP, data.dtype()));
        }
        data.slice(OP, t.layout.offset, t.numel())
    };
    let (lp, lm, lv) = (write(param), write(m), write(v));
    let (mut ps, mut ms, mut vs) = (slice(&lp, param)?, slice(&lm, m)?, slice(&lv, v)?);
    let gs = elems(OP, grad)?;
    let f = |x: f64| x as f32;
    let (lr, eps, wd) = (f(h.lr), f(h.eps), f(h.weight_decay));
    let step = AdamWStep { lr, b1: h.b1, b2: h.b2, eps, wd, bias1: f(h.bias1), bias2: f(h.bias2) };
    run(OP, |g| g.adamw_step_f32(&mut ps, &gs, &mut ms, &mut vs, step))
}
