//! bf16 on the GPU: storage and conversions, against the CPU twins in `engine/src/dtype.rs`.
//!
//! - Conversions: f32 -> bf16 and f64 -> bf16 on the GPU (`cast_f32_bf16`, `cast_f64_bf16`)
//!   must give the very bit patterns of `dtype::bf16_from_f32` / `bf16_from_f64` on the CPU,
//!   on random values, exact ties and values a few ulps from a tie, special values (±0, ±inf,
//!   NaN, subnormals, the f32 extremes), through a transposed view; the way back (bf16 ->
//!   f32, f64) must be exact. The f32 -> bf16 cast is timed at 16 Mi elements.
//! - Storage: bf16 to the GPU and back is bit-identical (also a strided view and `set_data`),
//!   `full` rounds like the CPU, and a compute op on bf16 GPU tensors is
//!   `Error::Unsupported` naming the op, the device and the dtype.

use crate::{Check, Res, Row};
use mamba_engine::{
    dtype::{bf16, bf16_from_f32, bf16_from_f64},
    DType, Device, Error, Tensor,
};

/// f32 values that probe the rounding: random magnitudes over the whole exponent range,
/// exact bf16 ties (low half 0x8000, even and odd kept part), a few ulps around them, and
/// the special values.
fn probe_f32(c: &mut Check, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n + 64);
    for _ in 0..n {
        let hi = (c.rng.uniform() * 65536.0) as u32 & 0xffff;
        let lo = match (c.rng.uniform() * 4.0) as u32 {
            0 => 0x8000,
            1 => 0x8000 + (c.rng.uniform() * 8.0) as u32 - 4,
            _ => (c.rng.uniform() * 65536.0) as u32 & 0xffff,
        };
        v.push(f32::from_bits(hi << 16 | lo));
    }
    v.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MAX, f32::MIN]);
    v.extend([f32::MIN_POSITIVE, f32::from_bits(1), f32::from_bits(0x8000_8000), 1.0 + 2f32.powi(-8)]);
    v
}

/// Bit patterns that differ between two bf16 vectors (NaNs compare by NaN-ness and sign).
fn mismatches(gpu: &[bf16], cpu: &[bf16]) -> usize {
    let same = |g: &bf16, c: &bf16| {
        if c.is_nan() {
            g.is_nan() && g.to_bits() & 0x8000 == c.to_bits() & 0x8000
        } else {
            g.to_bits() == c.to_bits()
        }
    };
    gpu.len().abs_diff(cpu.len()) + gpu.iter().zip(cpu).filter(|(g, c)| !same(g, c)).count()
}

fn row(c: &mut Check, name: &str, bad: usize, us: f64, rate: f64) {
    if bad > 0 {
        println!("{name}: {bad} elements differ from the CPU twin");
    }
    c.rows.push(Row { kernel: name.into(), err: bad as f64, ok: bad == 0, us, rate });
}

pub fn run(c: &mut Check) -> Res<()> {
    conversions(c)?;
    storage(c)?;
    refusal(c)
}

fn conversions(c: &mut Check) -> Res<()> {
    let n = if c.timing { 1 << 20 } else { 1 << 12 };
    let x = probe_f32(c, n);
    let len = x.len();
    // f32 -> bf16 through a transposed view (2, len/2)^T, then back to f32.
    let rows = len / 2;
    let x = &x[..2 * rows];
    let host = Tensor::from_vec(x.to_vec(), &[2, rows])?.transpose(0, 1)?;
    let want: Vec<bf16> = host.to_vec::<f32>()?.iter().map(|&v| bf16_from_f32(v)).collect();
    let gpu = host.detach().to(Device::Cuda)?;
    let got = gpu.to_dtype(DType::BF16)?;
    row(c, "cast_f32_bf16 (transposed)", mismatches(&got.to_vec::<bf16>()?, &want), f64::NAN, f64::NAN);
    let back: Vec<f32> = got.to_dtype(DType::F32)?.to_vec()?;
    let bad = back.iter().zip(&want).filter(|(b, w)| b.to_bits() != w.to_f32().to_bits() && !w.is_nan()).count();
    row(c, "cast_bf16_f32 exact", bad, f64::NAN, f64::NAN);

    // f64 -> bf16: values a few f64 ulps from a bf16 tie, where rounding twice would fail.
    let mut near = Vec::with_capacity(x.len());
    for &v in x {
        // The midpoint between a bf16 value and its neighbour away from zero, nudged.
        let (b, next) = (bf16_from_f32(v), bf16::from_bits(bf16_from_f32(v).to_bits().wrapping_add(1)));
        if b.is_finite() && next.is_finite() {
            let tie = (b.to_f64() + next.to_f64()) / 2.0;
            near.push(tie + (c.rng.uniform() - 0.5) * 8.0 * f64::EPSILON * tie.abs());
        }
    }
    let want: Vec<bf16> = near.iter().map(|&v| bf16_from_f64(v)).collect();
    let got = Tensor::from_vec(near.clone(), &[near.len()])?.to(Device::Cuda)?.to_dtype(DType::BF16)?;
    row(c, "cast_f64_bf16 near ties", mismatches(&got.to_vec::<bf16>()?, &want), f64::NAN, f64::NAN);
    let back: Vec<f64> = got.to_dtype(DType::F64)?.to_vec()?;
    let bad = back.iter().zip(&want).filter(|(b, w)| b.to_bits() != w.to_f64().to_bits() && !w.is_nan()).count();
    row(c, "cast_bf16_f64 exact", bad, f64::NAN, f64::NAN);

    // Throughput of the f32 -> bf16 cast at 16 Mi contiguous elements (reads 4n, writes 2n).
    if c.timing {
        let big = Tensor::rand_uniform(&[1 << 24], -1e3, 1e3, DType::F32, &mut c.rng).to(Device::Cuda)?;
        let us = c.time(|| {
            big.to_dtype(DType::BF16)?;
            Ok(())
        })?;
        let rate = 6.0 * (1u64 << 24) as f64 / (us * 1e3);
        row(c, "cast_f32_bf16 16Mi (GB/s)", 0, us, rate);
    }
    Ok(())
}

fn storage(c: &mut Check) -> Res<()> {
    let vals: Vec<bf16> = (0..3 * 5).map(|_| bf16_from_f32((c.rng.normal() * 100.0) as f32)).collect();
    let t = Tensor::from_vec(vals.clone(), &[3, 5])?;
    let round_trip = t.to(Device::Cuda)?.to(Device::Cpu)?.to_vec::<bf16>()?;
    row(c, "bf16 to gpu and back", mismatches(&round_trip, &vals), f64::NAN, f64::NAN);
    // A strided bf16 view on the GPU comes back through a host gather.
    let view = t.to(Device::Cuda)?.narrow(1, 1, 3)?.transpose(0, 1)?;
    let want = t.narrow(1, 1, 3)?.transpose(0, 1)?.to_vec::<bf16>()?;
    row(c, "bf16 strided view to cpu", mismatches(&view.to_vec::<bf16>()?, &want), f64::NAN, f64::NAN);
    // set_data between bf16 GPU tensors, and full() rounding like the CPU.
    let dst = Tensor::zeros(&[3, 5], DType::BF16, Device::Cuda)?;
    dst.set_data(&t.to(Device::Cuda)?)?;
    row(c, "bf16 set_data on gpu", mismatches(&dst.to_vec::<bf16>()?, &vals), f64::NAN, f64::NAN);
    let full = Tensor::full(&[4], 1.0 + 3.0 * 2f64.powi(-9), DType::BF16, Device::Cuda)?.to_vec::<bf16>()?;
    let want = Tensor::full(&[4], 1.0 + 3.0 * 2f64.powi(-9), DType::BF16, Device::Cpu)?.to_vec::<bf16>()?;
    row(c, "bf16 full on gpu", mismatches(&full, &want), f64::NAN, f64::NAN);
    Ok(())
}

/// An op without a bf16 kernel refuses bf16 GPU tensors by name, before touching them.
fn refusal(c: &mut Check) -> Res<()> {
    let x = Tensor::ones(&[4], DType::BF16, Device::Cuda)?;
    let got = x.exp();
    let ok = matches!(&got, Err(Error::Unsupported { op: "exp", device: Device::Cuda, dtype: DType::BF16 }));
    if !ok {
        println!("exp on bf16 GPU tensors: expected Error::Unsupported, got {got:?}");
    }
    c.rows.push(Row { kernel: "exp on bf16 refused".into(), err: 0.0, ok, us: f64::NAN, rate: f64::NAN });
    Ok(())
}
