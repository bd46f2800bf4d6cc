//! `cu/copy.cu` against `ops::copy::cpu::{copy_strided, copy_into, cast}` (and a fill), on random
//! views: axes permuted in memory (transposed), padded and narrowed at random starts (an
//! offset and gaps), broadcast (stride 0); ranks 0 to 4, awkward sizes (1, 37, 129, ...).
//! Copies and casts move values without arithmetic, so they must match bit for bit. Explicit
//! transposing gathers check the tiled path of `copy_strided_f32`. Then one large case each
//! for speed (16 Mi elements; the training permute, 25 Mi).
//!
//! The view helpers here (`random_shape`, `random_view`, `broadcast_view`) serve the
//! elementwise and reduce checks too.

use crate::{poisoned, Check, Res, Row};
use mamba_engine::{
    ops::copy::cpu::{cast, copy_into, copy_strided},
    shape::Layout,
};
use mamba_kernels::{cust::prelude::*, launch::Strided};

/// Axis sizes to draw from: 1 (an axis the kernels drop), small primes, 16, one past 128.
const SIZES: [usize; 8] = [1, 2, 3, 5, 16, 37, 64, 129];
/// Elements at most in a random shape (keeps the CPU side quick).
const MAX_RANDOM: usize = 1 << 18;

/// A random shape of `rank` axes from [`SIZES`], at most [`MAX_RANDOM`] elements.
pub fn random_shape(c: &mut Check, rank: usize) -> Vec<usize> {
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        let n: usize = shape.iter().product();
        let mut d = SIZES[c.rng.below(SIZES.len())];
        while n * d > MAX_RANDOM {
            d = SIZES[c.rng.below(4)];
        }
        shape.push(d);
    }
    shape
}

/// A random view of `shape` and the length of the buffer under it: the axes sit in memory in
/// a random order (a permuted view), and each is cut with `narrow` from an axis 0 to 2 longer
/// at a random start (an offset, and gaps between rows). Sometimes plain contiguous.
pub fn random_view(c: &mut Check, shape: &[usize]) -> (Layout, usize) {
    let r = shape.len();
    // memory axis j holds view axis order[j]
    let mut order: Vec<usize> = (0..r).collect();
    for j in (1..r).rev() {
        order.swap(j, c.rng.below(j + 1));
    }
    let padded: Vec<usize> = order.iter().map(|&a| shape[a] + c.rng.below(3)).collect();
    let mut base = Layout::contiguous(&padded);
    for (j, &a) in order.iter().enumerate() {
        base = base.narrow(j, c.rng.below(padded[j] - shape[a] + 1), shape[a]);
    }
    let perm: Vec<usize> = (0..r).map(|i| order.iter().position(|&a| a == i).expect("a permutation")).collect();
    (base.permute(&perm), padded.iter().product())
}

/// An operand broadcast to `shape`: a [`random_view`] of a shape with up to one leading axis
/// fewer and about a third of its axes of size 1, stretched to `shape` (stride 0 there).
pub fn broadcast_view(c: &mut Check, shape: &[usize]) -> (Layout, usize) {
    let skip = if shape.len() > 1 { c.rng.below(2) } else { 0 };
    let own: Vec<usize> = shape[skip..].iter().map(|&d| if c.rng.below(3) == 0 { 1 } else { d }).collect();
    let (l, len) = random_view(c, &own);
    (l.broadcast_as(shape), len)
}

/// The kernels' form of a layout (every test layout has at most 4 axes).
pub fn strided(l: &Layout) -> Strided {
    Strided::new(&l.shape, &l.strides, l.offset).expect("at most 6 axes")
}

/// `2x37x129` (or `scalar`) and a letter per feature of the view: T axes out of memory
/// order (transposed), N an offset or gaps (narrowed), B a broadcast axis.
pub fn describe(l: &Layout) -> String {
    let shape = l.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let mut tags = String::new();
    let moving: Vec<usize> =
        l.shape.iter().zip(&l.strides).filter(|&(&d, &s)| d > 1 && s > 0).map(|(_, &s)| s).collect();
    if moving.windows(2).any(|w| w[0] < w[1]) {
        tags.push('T');
    }
    let s = strided(l);
    if s.numel() > 0 && (l.offset > 0 || s.end() - l.offset > s.footprint()) {
        tags.push('N');
    }
    if l.shape.iter().zip(&l.strides).any(|(&d, &s)| d > 1 && s == 0) {
        tags.push('B');
    }
    match (shape.is_empty(), tags.is_empty()) {
        (true, _) => "scalar".to_string(),
        (false, true) => shape,
        (false, false) => format!("{shape} {tags}"),
    }
}

/// Largest |gpu - cpu| and whether every element matches bit for bit (a NaN left by the
/// poisoning fails).
pub fn exact<T: Copy + Into<f64> + PartialEq>(gpu: &[T], cpu: &[T]) -> (f64, bool) {
    let mut worst = 0.0f64;
    let mut ok = gpu.len() == cpu.len();
    for (&g, &w) in gpu.iter().zip(cpu) {
        let (g, w): (f64, f64) = (g.into(), w.into());
        if g.to_bits() != w.to_bits() {
            ok = false;
            worst = worst.max(if (g - w).is_finite() { (g - w).abs() } else { f64::INFINITY });
        }
    }
    (worst, ok)
}

fn rate(bytes: usize, us: f64) -> f64 {
    bytes as f64 / us / 1e3
}

pub fn run(c: &mut Check) -> Res<()> {
    copy_strided_checks(c)?;
    copy_into_checks(c)?;
    cast_checks(c)?;
    fill_checks(c)
}

/// Gathers of random views (transposing ones take `copy_transpose_f32`), then the explicit
/// transpose cases and the timing.
fn copy_strided_checks(c: &mut Check) -> Res<()> {
    for case in 0..8 {
        let shape = random_shape(c, case % 5); // ranks 0..4
        let (l, len) = if case % 3 == 2 { broadcast_view(c, &shape) } else { random_view(c, &shape) };
        let x = c.uniform(len, -10.0, 10.0);
        let n = l.numel();
        let dx = DeviceBuffer::from_slice(&x)?;
        let mut dout = poisoned(n)?;
        c.gpu.copy_strided_f32(&dx, strided(&l), &mut dout)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = exact(&dout.as_host_vec()?, &copy_strided(&x, &l));
        c.rows.push(Row { kernel: format!("copy_strided {}", describe(&l)), err, ok, us: f64::NAN, rate: f64::NAN });
    }
    transpose_checks(c)
}

/// The transposing gathers that `copy_strided_f32` hands to `copy_transpose_f32` (an innermost
/// axis with input stride > 1 and another axis of stride 1): 2-D transposes with partial
/// tiles, 4-D permutes, a narrowed view with an offset, a broadcast batch axis. Each row says
/// which kernel ran (`tile` or `generic`) and fails if it is not the expected one. Then timing:
/// a contiguous copy (the copy rate), the 4096^2 transpose and the training permute
/// (B, L, D) -> (B, D, L) at batch 8 x 2048, d_inner 1536.
fn transpose_checks(c: &mut Check) -> Res<()> {
    let t2 = |r: usize, k: usize| Layout::contiguous(&[r, k]).transpose(0, 1);
    let p4 = |perm: &[usize]| Layout::contiguous(&[2, 3, 5, 7]).permute(perm);
    let narrowed = Layout::contiguous(&[100, 70]).narrow(0, 3, 61).narrow(1, 5, 50).transpose(0, 1);
    let broadcast = t2(65, 40).broadcast_as(&[3, 40, 65]);
    let cases = [
        (t2(1, 1), false), // one element: rank 0 after merging
        (t2(37, 129), true),
        (t2(129, 37), true),
        (p4(&[0, 3, 1, 2]), true),
        (p4(&[3, 1, 2, 0]), true),
        (narrowed, true),
        (broadcast, true),
    ];
    for (l, want_tile) in cases {
        let len = l.max_offset();
        let x = c.uniform(len, -10.0, 10.0);
        let tile = strided(&l).transpose_axis().is_some();
        let (err, ok, _) = gather(c, &x, &l, false)?;
        let kernel = format!("copy_strided {} {}", describe(&l), if tile { "tile" } else { "generic" });
        c.rows.push(Row { kernel, err, ok: ok && tile == want_tile, us: f64::NAN, rate: f64::NAN });
    }
    let (side, (b, l, d)) = if c.timing { (4096, (8, 2048, 1536)) } else { (64, (2, 64, 48)) };
    let square = Layout::contiguous(&[side, side]);
    let timed = [
        (format!("{side}^2 contiguous"), square.clone()),
        (format!("{side}^2 transposed"), square.transpose(0, 1)),
        (format!("{b}x{l}x{d} -> {b}x{d}x{l}"), Layout::contiguous(&[b, l, d]).permute(&[0, 2, 1])),
    ];
    for (name, l) in timed {
        let x = c.uniform(l.numel(), -1.0, 1.0);
        let (err, ok, us) = gather(c, &x, &l, true)?;
        let kernel = format!("copy_strided {name}");
        c.rows.push(Row { kernel, err, ok, us, rate: rate(8 * l.numel(), us) });
    }
    Ok(())
}

/// `x` gathered through the view `l` on the GPU against `copy_strided` (bit for bit), and
/// with `time` its median time in us (NaN without).
fn gather(c: &Check, x: &[f32], l: &Layout, time: bool) -> Res<(f64, bool, f64)> {
    let dx = DeviceBuffer::from_slice(x)?;
    let lx = strided(l);
    let mut dout = poisoned(l.numel())?;
    c.gpu.copy_strided_f32(&dx, lx, &mut dout)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = exact(&dout.as_host_vec()?, &copy_strided(x, l));
    let us = if time { c.time(|| Ok(c.gpu.copy_strided_f32(&dx, lx, &mut dout)?))? } else { f64::NAN };
    Ok((err, ok, us))
}

/// Concat as the engine does it: each piece (a random view) into a narrowed view of a fresh
/// contiguous output. Then a scatter into a permuted, narrowed destination whose untouched
/// elements must keep their old values. Timing: two halves of 4096^2 joined along the rows.
fn copy_into_checks(c: &mut Check) -> Res<()> {
    for case in 0..5 {
        let mut shape = random_shape(c, 1 + case % 4);
        let dim = c.rng.below(shape.len());
        shape[dim] += 2; // room for three pieces, one possibly empty
        let full = Layout::contiguous(&shape);
        let n = full.numel();
        let cuts = {
            let (a, b) = (c.rng.below(shape[dim] + 1), c.rng.below(shape[dim] + 1));
            [0, a.min(b), a.max(b), shape[dim]]
        };
        let mut want = vec![f32::NAN; n];
        let mut dout = poisoned(n)?;
        for w in cuts.windows(2) {
            let mut piece_shape = shape.clone();
            piece_shape[dim] = w[1] - w[0];
            let (ls, len) = random_view(c, &piece_shape);
            let src = c.uniform(len, -10.0, 10.0);
            let dst = full.narrow(dim, w[0], w[1] - w[0]);
            copy_into(&mut want, &dst, &src, &ls);
            let dsrc = DeviceBuffer::from_slice(&src)?;
            c.gpu.copy_into_f32(&mut dout, strided(&dst), &dsrc, strided(&ls), ls.numel())?;
        }
        c.gpu.stream.synchronize()?;
        let (err, ok) = exact(&dout.as_host_vec()?, &want);
        let kernel = format!("copy_into concat {} d{dim}", describe(&full));
        c.rows.push(Row { kernel, err, ok, us: f64::NAN, rate: f64::NAN });
    }
    for rank in [2, 3] {
        let shape = random_shape(c, rank);
        let (ld, dlen) = random_view(c, &shape);
        let (ls, slen) = random_view(c, &shape);
        let (old, src) = (c.uniform(dlen, -10.0, 10.0), c.uniform(slen, -10.0, 10.0));
        let mut want = old.clone();
        copy_into(&mut want, &ld, &src, &ls);
        let (mut ddst, dsrc) = (DeviceBuffer::from_slice(&old)?, DeviceBuffer::from_slice(&src)?);
        c.gpu.copy_into_f32(&mut ddst, strided(&ld), &dsrc, strided(&ls), ls.numel())?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = exact(&ddst.as_host_vec()?, &want);
        c.rows.push(Row { kernel: format!("copy_into to {}", describe(&ld)), err, ok, us: f64::NAN, rate: f64::NAN });
    }
    let side = if c.timing { 4096 } else { 64 };
    let full = Layout::contiguous(&[side, side]);
    let half = Layout::contiguous(&[side, side / 2]);
    let (a, b) = (c.uniform(side * side / 2, -1.0, 1.0), c.uniform(side * side / 2, -1.0, 1.0));
    let (da, db) = (DeviceBuffer::from_slice(&a)?, DeviceBuffer::from_slice(&b)?);
    let (la, lb) = (strided(&full.narrow(1, 0, side / 2)), strided(&full.narrow(1, side / 2, side / 2)));
    let (lh, nh) = (strided(&half), half.numel());
    let mut dout = poisoned(side * side)?;
    let concat = |c: &Check, out: &mut DeviceSlice<f32>| -> Res<()> {
        c.gpu.copy_into_f32(out, la, &da, lh, nh)?;
        Ok(c.gpu.copy_into_f32(out, lb, &db, lh, nh)?)
    };
    concat(c, &mut dout)?;
    c.gpu.stream.synchronize()?;
    let mut want = vec![f32::NAN; side * side];
    copy_into(&mut want, &full.narrow(1, 0, side / 2), &a, &half);
    copy_into(&mut want, &full.narrow(1, side / 2, side / 2), &b, &half);
    let (err, ok) = exact(&dout.as_host_vec()?, &want);
    let us = c.time(|| concat(c, &mut dout))?;
    let kernel = format!("copy_into concat 2x {side}x{}", side / 2);
    c.rows.push(Row { kernel, err, ok, us, rate: rate(8 * side * side, us) });
    Ok(())
}

/// f32 -> f64 (exact) and f64 -> f32 (rounded to nearest; values spread over many binades
/// so rounding happens, and a few beyond f32's range become inf), on random views.
fn cast_checks(c: &mut Check) -> Res<()> {
    for case in 0..4 {
        let shape = random_shape(c, 1 + case);
        let (l, len) = if case == 3 { broadcast_view(c, &shape) } else { random_view(c, &shape) };
        let n = l.numel();
        let x = c.uniform(len, -10.0, 10.0);
        let dx = DeviceBuffer::from_slice(&x)?;
        let mut dout = DeviceBuffer::from_slice(&vec![f64::NAN; n])?;
        c.gpu.cast_f32_f64(&dx, strided(&l), &mut dout)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = exact(&dout.as_host_vec()?, &cast::<f32, f64>(&x, &l));
        c.rows.push(Row { kernel: format!("cast_f32_f64 {}", describe(&l)), err, ok, us: f64::NAN, rate: f64::NAN });

        let x64: Vec<f64> = (0..len)
            .map(|i| {
                let v = (c.rng.uniform() - 0.5) * 10f64.powi(c.rng.below(80) as i32 - 40);
                if i % 97 == 5 {
                    v * 1e300 // out of f32 range
                } else {
                    v
                }
            })
            .collect();
        let dx = DeviceBuffer::from_slice(&x64)?;
        let mut dout = poisoned(n)?;
        c.gpu.cast_f64_f32(&dx, strided(&l), &mut dout)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = exact(&dout.as_host_vec()?, &cast::<f64, f32>(&x64, &l));
        c.rows.push(Row { kernel: format!("cast_f64_f32 {}", describe(&l)), err, ok, us: f64::NAN, rate: f64::NAN });
    }
    let n = if c.timing { 1 << 24 } else { 1 << 10 };
    let l = Layout::contiguous(&[n]);
    let x = c.uniform(n, -1.0, 1.0);
    let dx = DeviceBuffer::from_slice(&x)?;
    let mut d64 = DeviceBuffer::from_slice(&vec![f64::NAN; n])?;
    c.gpu.cast_f32_f64(&dx, strided(&l), &mut d64)?;
    c.gpu.stream.synchronize()?;
    let want64 = cast::<f32, f64>(&x, &l);
    let (err, ok) = exact(&d64.as_host_vec()?, &want64);
    let us = c.time(|| Ok(c.gpu.cast_f32_f64(&dx, strided(&l), &mut d64)?))?;
    c.rows.push(Row { kernel: format!("cast_f32_f64 {n}"), err, ok, us, rate: rate(12 * n, us) });
    let mut d32 = poisoned(n)?;
    c.gpu.cast_f64_f32(&d64, strided(&l), &mut d32)?;
    c.gpu.stream.synchronize()?;
    let (err, ok) = exact(&d32.as_host_vec()?, &cast::<f64, f32>(&want64, &l));
    let us = c.time(|| Ok(c.gpu.cast_f64_f32(&d64, strided(&l), &mut d32)?))?;
    c.rows.push(Row { kernel: format!("cast_f64_f32 {n}"), err, ok, us, rate: rate(12 * n, us) });
    Ok(())
}

fn fill_checks(c: &mut Check) -> Res<()> {
    for n in [1usize, 37, (1 << 20) + 3] {
        let value = c.uniform(1, -10.0, 10.0)[0];
        let mut dout = poisoned(n)?;
        c.gpu.fill_f32(&mut dout, value)?;
        c.gpu.stream.synchronize()?;
        let (err, ok) = exact(&dout.as_host_vec()?, &vec![value; n]);
        c.rows.push(Row { kernel: format!("fill_f32 {n}"), err, ok, us: f64::NAN, rate: f64::NAN });
    }
    let n = if c.timing { 1 << 24 } else { 1 << 10 };
    let mut dout = poisoned(n)?;
    let us = c.time(|| Ok(c.gpu.fill_f32(&mut dout, 0.5)?))?;
    c.rows.push(Row { kernel: format!("fill_f32 {n} (time)"), err: 0.0, ok: true, us, rate: rate(4 * n, us) });
    Ok(())
}
