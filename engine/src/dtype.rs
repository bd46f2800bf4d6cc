//! Element types. Training runs in `f32`; `f64` exists so that gradient checks and
//! reference comparisons can run the very same kernels at higher precision; `bf16`
//! (bfloat16: f32's exponent, 8 bits of mantissa) is mostly a storage type: tensors can
//! hold it, move between devices and convert to and from it, `matmul` multiplies it (f32
//! sums), and ops without a bf16 kernel refuse it by name (see `dispatch.rs`).
//!
//! Two traits split the element types by what a kernel does with them:
//! - [`Scalar`]: any element a buffer can hold (f32, f64, bf16): enough to copy, move and
//!   convert values;
//! - [`Elem`]: a [`Scalar`] with float arithmetic (f32, f64): what compute kernels need.

use std::fmt;

pub use half::bf16;

/// The element type of a tensor, known at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    /// bfloat16; conversions round to nearest, ties to even.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::BF16 => 2,
        }
    }

    /// Every dtype, for tests and error messages.
    pub const ALL: [DType; 3] = [DType::F32, DType::F64, DType::BF16];
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
        })
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<DType, String> {
        DType::ALL
            .into_iter()
            .find(|d| d.to_string() == s)
            .ok_or_else(|| format!("unknown dtype '{s}': use f32, f64 or bf16"))
    }
}

/// An element a buffer can hold: its run-time tag and exact-as-possible conversions
/// through `f64` (every f32 and bf16 value is an f64 value; the way back rounds to nearest
/// even). Data-movement kernels (copy, cast, concat) are generic over it.
pub trait Scalar: Copy + Default + Send + Sync + fmt::Debug + PartialEq + 'static {
    const DTYPE: DType;
    /// `v` rounded to this type (to nearest, ties to even).
    fn cast(v: f64) -> Self;
    /// This value as an `f64` (exact).
    fn as_f64(self) -> f64;
    /// This type's buffer inside a `CpuData`, if that is its dtype.
    fn slice(data: &crate::storage::CpuData) -> Option<&[Self]>;
    /// Mutable access to the same (for in-place updates).
    fn slice_mut(data: &mut crate::storage::CpuData) -> Option<&mut [Self]>;
    /// Wrap a buffer of this type.
    fn wrap(v: Vec<Self>) -> crate::storage::CpuData;
}

/// What a compute kernel needs of an element: a [`Scalar`] with float arithmetic.
pub trait Elem: Scalar + num_traits::Float + std::ops::AddAssign + std::ops::MulAssign + std::iter::Sum {
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

/// `Scalar` for one type: its dtype tag, its `CpuData` variant and the two conversions.
macro_rules! scalar {
    ($t:ty, $dtype:ident, |$c:ident| $cast:expr, |$s:ident| $as_f64:expr) => {
        impl Scalar for $t {
            const DTYPE: DType = DType::$dtype;
            #[inline(always)]
            fn cast($c: f64) -> Self {
                $cast
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                let $s = self;
                $as_f64
            }
            fn slice(data: &crate::storage::CpuData) -> Option<&[Self]> {
                match data {
                    crate::storage::CpuData::$dtype(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(data: &mut crate::storage::CpuData) -> Option<&mut [Self]> {
                match data {
                    crate::storage::CpuData::$dtype(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> crate::storage::CpuData {
                crate::storage::CpuData::$dtype(v)
            }
        }
    };
}

scalar!(f32, F32, |v| v as f32, |s| s as f64);
scalar!(f64, F64, |v| v, |s| s);
scalar!(bf16, BF16, |v| bf16_from_f64(v), |s| s.to_f64());

/// `x` rounded to bf16, to nearest with ties to even: the top 16 bits of the f32 after
/// adding half an ulp of bf16 (0x7FFF) plus the kept part's lowest bit (so a tie rounds
/// toward the even one). Overflow carries into the exponent and gives inf, as it should.
/// A NaN stays a NaN (made quiet, so the truncated payload cannot turn it into an inf).
/// The CUDA twin is `__float2bfloat16_rn` (kernels/cu/copy.cu).
#[inline(always)]
pub fn bf16_from_f32(x: f32) -> bf16 {
    let b = x.to_bits();
    if x.is_nan() {
        return bf16::from_bits(((b >> 16) | 0x0040) as u16);
    }
    bf16::from_bits((b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16)
}

/// `x` rounded to bf16, to nearest with ties to even, in one rounding. Rounding to f32
/// first and then to bf16 could round twice (a value just above a bf16 tie can land on the
/// tie in f32, then go to even, the wrong way), so the f32 step rounds to *odd* instead:
/// an inexact result keeps an odd last bit, which no later rounding mistakes for a tie.
/// (`half::bf16::from_f64` drops the low 32 mantissa bits before rounding, which is not
/// correctly rounded near ties; the tests compare with an exact reference.)
#[inline]
pub fn bf16_from_f64(x: f64) -> bf16 {
    let f = x as f32; // to nearest even
    let odd = if f.is_finite() && f as f64 != x && f.to_bits() & 1 == 0 {
        // Inexact with an even last bit: the other neighbour of x (one ulp toward x) is odd.
        let toward_x = if (f as f64).abs() < x.abs() { f.to_bits() + 1 } else { f.to_bits() - 1 };
        f32::from_bits(toward_x)
    } else {
        f
    };
    bf16_from_f32(odd)
}

impl Elem for f32 {
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f32 bit pattern's top half plus edge cases below the cut, against `half`.
    #[test]
    fn bf16_from_f32_rounds_like_half() {
        let mut checked = 0;
        for hi in 0..=u16::MAX as u32 {
            for lo in [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234] {
                let x = f32::from_bits(hi << 16 | lo);
                let (ours, want) = (bf16_from_f32(x), bf16::from_f32(x));
                if x.is_nan() {
                    assert!(ours.is_nan(), "{x:e}");
                    assert_eq!(ours.to_bits() & 0x8000, want.to_bits() & 0x8000, "NaN keeps its sign");
                } else {
                    assert_eq!(ours.to_bits(), want.to_bits(), "{x:e} ({:#010x})", x.to_bits());
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 65536 * 7);
        // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
        assert_eq!(bf16_from_f32(1.0 + 2f32.powi(-8)).to_f32(), 1.0);
        assert_eq!(bf16_from_f32(1.0 + 3.0 * 2f32.powi(-8)).to_f32(), 1.0 + 2.0 * 2f32.powi(-7));
        assert_eq!(bf16_from_f32(f32::MAX).to_f32(), f32::INFINITY);
    }

    /// The bf16 value nearest to `x` (ties to the even bit pattern): the best of the three
    /// patterns around half's guess, compared exactly in f64. For finite, in-range `x`.
    fn nearest_bf16(x: f64) -> bf16 {
        let guess = bf16::from_f32(x as f32).to_bits();
        (guess.saturating_sub(1)..=guess.saturating_add(1))
            .filter(|b| b & 0x8000 == guess & 0x8000)
            .map(bf16::from_bits)
            .min_by(|a, b| {
                let (da, db) = ((a.to_f64() - x).abs(), (b.to_f64() - x).abs());
                da.total_cmp(&db).then((a.to_bits() & 1).cmp(&(b.to_bits() & 1)))
            })
            .expect("three candidates")
    }

    #[test]
    fn bf16_from_f64_is_correctly_rounded_near_ties() {
        let mut rng = crate::Rng::new(5);
        for _ in 0..200_000 {
            // A bf16 tie (odd 9th mantissa bit pattern) nudged by a few f64 ulps either way.
            let base = bf16::from_bits((rng.uniform() * 0x7F00 as f64) as u16).to_f64();
            let half_ulp = base * 2f64.powi(-8);
            let nudge = (rng.uniform() - 0.5) * 8.0 * f64::EPSILON * base;
            for x in [base + half_ulp + nudge, -(base + half_ulp + nudge), base + rng.uniform() * 2.0 * half_ulp] {
                let (ours, want) = (bf16_from_f64(x), nearest_bf16(x));
                assert_eq!(ours.to_bits(), want.to_bits(), "{x:e}: {ours} vs {want}");
            }
        }
        assert!(bf16_from_f64(f64::NAN).is_nan());
        assert_eq!(bf16_from_f64(1e300).to_f64(), f64::INFINITY);
        assert_eq!(bf16_from_f64(-0.0).to_bits(), 0x8000);
        assert_eq!(bf16_from_f64(1e-300).to_bits(), 0, "underflow to +0");
    }

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
