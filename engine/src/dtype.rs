//! Element types. Training runs in `f32`; `f64` exists so that gradient checks and
//! reference comparisons can run the very same kernels at higher precision.

use std::fmt;

/// The element type of a tensor, known at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// What a CPU kernel needs of an element: float arithmetic, thread safety, and
/// conversions from and to `f64` (`cast`, `as_f64`) for constants and checks.
pub trait Elem:
    num_traits::Float
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + Default
    + Send
    + Sync
    + fmt::Debug
    + 'static
{
    const DTYPE: DType;
    fn cast(v: f64) -> Self;
    fn as_f64(self) -> f64;
    /// e^x for hot loops: exact `exp` in f64; in f32 an inlinable polynomial that
    /// LLVM can vectorise, within 2 ulp of `expf` (see [`exp_f32`]).
    fn exp_fast(self) -> Self;
}

/// e^x in f32 without a libm call (Cephes `expf`): write x = n ln2 + r with |r| <= ln2/2,
/// so e^x = 2^n e^r; e^r is a degree-6 polynomial, 2^n goes straight into the exponent bits.
/// Inputs are clamped to [-87, 88], where the result is a normal f32. Rounding uses the
/// 1.5 * 2^23 trick (adding it leaves round(v) in the low mantissa bits) rather than a
/// float-to-int cast, so the whole function vectorises and a NaN stays a NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER; // round(x / ln 2)
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let n_int = t.to_bits().wrapping_sub(SHIFTER.to_bits()); // n as a two's-complement integer
    er * f32::from_bits(n_int.wrapping_add(127) << 23)
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn cast(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
}

impl Elem for f64 {
    const DTYPE: DType = DType::F64;
    #[inline(always)]
    fn cast(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp_of_expf() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (fast, exact) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((fast - exact).abs() / exact);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(1000.0).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
