//! The counter-based random source behind every sampler.
//!
//! ```text
//! stream(seed, row, step) = mix(mix(mix(seed + 1·γ) ^ mix(row + 2·γ)) ^ mix(step + 3·γ))
//! bits(stream, c)         = mix(stream + (c + 1)·γ)          (SplitMix64 at counter c)
//! uniform                 = ((bits >> 11) + ½) · 2⁻⁵³         in (0, 1), never 0 or 1
//!                           (the top cell, which would round to 1, is 1 − 2⁻⁵³)
//! ```
//! `mix` is SplitMix64's output function (Stafford's "Mix13" finaliser, a
//! bijection of u64 with full avalanche) and γ = 0x9E3779B97F4A7C15, the
//! golden-ratio increment. A draw is a pure function of (seed, row, step,
//! counter): no state is carried between calls, rows or threads, so a batch
//! gives the same tokens whatever the thread count or ISA. Counter `c` = token
//! index for per-token noise (Gumbel-max, Gumbel-softmax); [`INVERSE_CDF`] for
//! the one uniform of an inverse-CDF draw.

/// SplitMix64's increment: 2⁶⁴ / φ, odd.
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The counter of an inverse-CDF draw's uniform (apart from every token index).
pub const INVERSE_CDF: u64 = u64::MAX - 1;

/// SplitMix64's output function.
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One stream of random bits, keyed by (seed, row, step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream(u64);

impl Stream {
    #[inline(always)]
    pub fn new(seed: u64, row: u64, step: u64) -> Self {
        let s = mix(seed.wrapping_add(GAMMA));
        let s = mix(s ^ mix(row.wrapping_add(GAMMA.wrapping_mul(2))));
        Self(mix(s ^ mix(step.wrapping_add(GAMMA.wrapping_mul(3)))))
    }

    /// 64 random bits at counter `c`.
    #[inline(always)]
    pub fn bits(self, c: u64) -> u64 {
        mix(self.0.wrapping_add(c.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// A uniform in (0, 1) at counter `c`: 53 random bits, centred in their cell.
    #[inline(always)]
    pub fn uniform(self, c: u64) -> f64 {
        uniform_of(self.bits(c))
    }

    /// A standard Gumbel variate −ln(−ln u) at counter `c`.
    #[inline(always)]
    pub fn gumbel(self, c: u64) -> f64 {
        gumbel_of(self.bits(c))
    }
}

/// The uniform in (0, 1) that 64 random bits stand for. The top cell's centre,
/// 1 − 2⁻⁵⁴, would round to 1; it takes the largest f64 below 1 instead.
#[inline(always)]
pub fn uniform_of(bits: u64) -> f64 {
    let u = ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    u.min(1.0 - f64::EPSILON / 2.0)
}

/// The Gumbel variate that 64 random bits stand for.
#[inline(always)]
pub fn gumbel_of(bits: u64) -> f64 {
    -(-uniform_of(bits).ln()).ln()
}

/// A bound on the top 53 bits below which a Gumbel variate is at most `c`:
/// for any bits with `bits >> 11` below it, `gumbel_of(bits) ≤ c`. The bound
/// is lowered by a margin that covers the roundings of the two logarithms.
#[inline(always)]
pub fn gumbel_at_most(c: f64) -> u64 {
    // G ≤ c  ⇔  u ≤ exp(−exp(−c)).
    let u = (-(-c).exp()).exp();
    let cells = u * (1u64 << 53) as f64 * (1.0 - 1e-9) - 2.0;
    if cells > 0.0 {
        cells as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_open() {
        assert!(uniform_of(0) > 0.0);
        assert!(uniform_of(u64::MAX) < 1.0);
    }

    #[test]
    fn gumbel_bound_holds_near_the_cut() {
        for c in [-3.0, -0.5, 0.0, 0.7, 2.0, 9.0, 30.0] {
            let cut = gumbel_at_most(c);
            for bits in [cut.saturating_sub(1), cut.saturating_sub(1000)] {
                assert!(gumbel_of(bits << 11) <= c, "c = {c}");
            }
        }
    }

    #[test]
    fn streams_differ_by_each_key() {
        let base = Stream::new(1, 2, 3).bits(0);
        assert_ne!(base, Stream::new(2, 2, 3).bits(0));
        assert_ne!(base, Stream::new(1, 3, 3).bits(0));
        assert_ne!(base, Stream::new(1, 2, 4).bits(0));
        assert_ne!(base, Stream::new(1, 2, 3).bits(1));
    }
}
