//! The element types as the tests see them: one trait over f32, f16 and
//! bf16, with what the bounds and the bit-exact checks need beyond
//! `softmax::Element`'s conversions through f32.

use softmax::half::{bf16, f16};
use softmax::Element;
use std::fmt::Debug;

/// An element type as the tests see it.
pub trait Narrow: Element + Debug + PartialEq + Default {
    /// Significand bits after the point, and the smallest normal exponent.
    const MANTISSA: i32;
    const MIN_EXP: i32;
    /// The value, exactly.
    fn to_f64(self) -> f64 {
        self.to_f32() as f64
    }
    /// The correctly rounded value of `x` (one rounding from f64).
    fn from_f64(x: f64) -> Self;
    /// Bits, ordered like the values (adjacent representable values differ by 1).
    fn ordered(self) -> i64;
    fn is_nan(self) -> bool {
        self.to_f64().is_nan()
    }
    /// The spacing of this type's values at |x| (the subnormal spacing below the normal range).
    fn ulp(x: f64) -> f64 {
        let e = if x == 0.0 || !x.is_finite() {
            Self::MIN_EXP
        } else {
            (x.abs().log2().floor() as i32).max(Self::MIN_EXP)
        };
        2f64.powi(e - Self::MANTISSA)
    }
}

impl Narrow for f32 {
    const MANTISSA: i32 = 23;
    const MIN_EXP: i32 = -126;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn ordered(self) -> i64 {
        let b = self.to_bits() as i64;
        if b & 0x8000_0000 != 0 {
            -(b & 0x7fff_ffff)
        } else {
            b
        }
    }
}

macro_rules! half_narrow {
    ($t:ty, $mantissa:literal, $min_exp:literal) => {
        impl Narrow for $t {
            const MANTISSA: i32 = $mantissa;
            const MIN_EXP: i32 = $min_exp;
            /// `half`'s own `from_f64` goes through f32 on some targets and
            /// can round twice; this settles the neighbours by their midpoints.
            fn from_f64(x: f64) -> Self {
                let c = <$t>::from_f64(x);
                let mag = c.to_bits() & 0x7fff;
                if x.is_nan() || !c.is_finite() || mag == 0 {
                    return c;
                }
                let with = |m: u16| <$t>::from_bits((c.to_bits() & 0x8000) | m);
                let (down, up) = (with(mag - 1), with(mag + 1));
                let ax = x.abs();
                let pick = |v: Self, mid: f64| ax == mid && v.to_bits().is_multiple_of(2);
                let m_up = (Narrow::to_f64(c).abs() + Narrow::to_f64(up).abs()) / 2.0;
                let m_down = (Narrow::to_f64(c).abs() + Narrow::to_f64(down).abs()) / 2.0;
                if up.is_finite() && (ax > m_up || pick(up, m_up)) {
                    up
                } else if ax < m_down || pick(down, m_down) {
                    down
                } else {
                    c
                }
            }
            fn ordered(self) -> i64 {
                let b = self.to_bits() as i64;
                if b & 0x8000 != 0 {
                    -(b & 0x7fff)
                } else {
                    b
                }
            }
        }
    };
}

half_narrow!(f16, 10, -14);
half_narrow!(bf16, 7, -126);
