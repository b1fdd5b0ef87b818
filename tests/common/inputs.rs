//! Test inputs: a deterministic PRNG, the value ranges of the matrix, and
//! guarded buffers that place a row at a chosen misalignment.

use super::element::Narrow;

/// SplitMix64 (Steele, Lea & Flood 2014): small, fast, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for one case, mixed from the numbers that identify it.
    pub fn for_case(parts: &[u64]) -> Self {
        let mut rng = Rng(0x5EED_0F50_F73A_3C5D);
        for &p in parts {
            rng.0 ^= p;
            rng.next_u64();
        }
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi), rounded to f32.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.unit()) as f32
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize
    }

    /// N(0, σ²) by Box–Muller, rounded to f32.
    pub fn normal(&mut self, sigma: f64) -> f32 {
        let u = 1.0 - self.unit(); // (0, 1]
        let v = self.unit();
        (sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The value ranges of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Values {
    /// Uniform in [−10, 10].
    Uniform10,
    /// N(0, 1).
    Normal1,
    /// N(0, 30²).
    Normal30,
    /// Uniform in [−3e38, 3e38]: x − max overflows f32 for many entries.
    Huge,
    /// N(0, 1) · 1e30.
    Scaled1e30,
    /// One maximum m; every other entry at z = (x − m)/t in [−87.5, −85], around
    /// the point where e^z leaves the normal f32 range.
    NearCutoff,
    /// Uniform in [−10, 10], each entry −inf with probability 0.3.
    Masked30,
    /// A random-length prefix of −inf (possibly the whole row), then uniform [−10, 10].
    MaskedPrefix,
    /// Uniform [−10, 10], then a random-length suffix of −inf (possibly the whole row).
    MaskedSuffix,
    /// Every entry equal: softmax is exactly uniform.
    Constant,
}

impl Values {
    pub const ALL: [Values; 10] = [
        Values::Uniform10,
        Values::Normal1,
        Values::Normal30,
        Values::Huge,
        Values::Scaled1e30,
        Values::NearCutoff,
        Values::Masked30,
        Values::MaskedPrefix,
        Values::MaskedSuffix,
        Values::Constant,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Values::Uniform10 => "uniform[-10,10]",
            Values::Normal1 => "N(0,1)",
            Values::Normal30 => "N(0,30)",
            Values::Huge => "uniform[-3e38,3e38]",
            Values::Scaled1e30 => "N(0,1)*1e30",
            Values::NearCutoff => "near-exp-cutoff",
            Values::Masked30 => "30%-masked",
            Values::MaskedPrefix => "masked-prefix",
            Values::MaskedSuffix => "masked-suffix",
            Values::Constant => "constant",
        }
    }

    /// A row of `n` values at temperature `t` (the cutoff range scales with t).
    pub fn generate(self, rng: &mut Rng, n: usize, t: f32) -> Vec<f32> {
        let uniform10 = |rng: &mut Rng| rng.uniform(-10.0, 10.0);
        match self {
            Values::Uniform10 => (0..n).map(|_| uniform10(rng)).collect(),
            Values::Normal1 => (0..n).map(|_| rng.normal(1.0)).collect(),
            Values::Normal30 => (0..n).map(|_| rng.normal(30.0)).collect(),
            Values::Huge => (0..n).map(|_| rng.uniform(-3e38, 3e38)).collect(),
            Values::Scaled1e30 => (0..n).map(|_| rng.normal(1.0) * 1e30).collect(),
            Values::NearCutoff => {
                let max = rng.uniform(-5.0, 5.0);
                let mut x: Vec<f32> = (0..n)
                    .map(|_| max + rng.uniform(-87.5, -85.0) * t)
                    .collect();
                if n > 0 {
                    x[rng.below(n)] = max;
                }
                x
            }
            Values::Masked30 => (0..n)
                .map(|_| {
                    let v = uniform10(rng);
                    if rng.chance(0.3) {
                        f32::NEG_INFINITY
                    } else {
                        v
                    }
                })
                .collect(),
            Values::MaskedPrefix | Values::MaskedSuffix => {
                let masked = rng.below(n + 1);
                let mut x: Vec<f32> = (0..n).map(|_| uniform10(rng)).collect();
                let range = match self {
                    Values::MaskedPrefix => 0..masked,
                    _ => n - masked..n,
                };
                x[range].fill(f32::NEG_INFINITY);
                x
            }
            Values::Constant => vec![uniform10(rng); n],
        }
    }
}

/// The bit pattern every guard element holds: a quiet NaN with a payload no
/// kernel produces.
pub const SENTINEL: f32 = f32::from_bits(0x7fd5_a5a5);

/// [`SENTINEL`] in type `T`.
pub fn sentinel<T: Narrow>() -> T {
    T::from_f32(SENTINEL)
}

/// `n` sentinels: an output buffer whose every change shows.
pub fn sentinels<T: Narrow>(n: usize) -> Vec<T> {
    vec![sentinel::<T>(); n]
}

/// Whether every element of `buf` still holds the sentinel, bit for bit (the
/// check that a failed call wrote nothing).
pub fn untouched<T: Narrow>(buf: &[T]) -> bool {
    let s = sentinel::<T>().ordered();
    buf.iter().all(|v| v.ordered() == s)
}

/// Guard elements on each side of a row.
const GUARD: usize = 64;

/// A row placed `offset` elements past a 64-byte boundary (so vector loads and
/// stores are misaligned by `offset`), with sentinel guards on both sides
/// ([`SENTINEL`], rounded to the element type).
#[derive(Clone, Debug)]
pub struct Guarded<T = f32> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Narrow> Guarded<T> {
    /// A row of `len` sentinels.
    pub fn new(len: usize, offset: usize) -> Self {
        let buf: Vec<T> = sentinels(len + offset + 2 * GUARD + 32);
        let aligned = GUARD + buf[GUARD..].as_ptr().align_offset(64);
        Guarded {
            buf,
            start: aligned + offset,
            len,
        }
    }

    /// A row holding `values`.
    pub fn with_values(values: &[T], offset: usize) -> Self {
        let mut g = Self::new(values.len(), offset);
        g.values_mut().copy_from_slice(values);
        g
    }

    pub fn values(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }

    pub fn values_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The first guard element that no longer holds the sentinel, as an index
    /// relative to the row start (negative before it).
    pub fn damaged_guard(&self) -> Option<isize> {
        let end = self.start + self.len;
        let sentinel = sentinel::<T>().ordered();
        self.buf
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < self.start || *i >= end)
            .find(|(_, v)| v.ordered() != sentinel)
            .map(|(i, _)| i as isize - self.start as isize)
    }

    /// Panics, naming `what`, if anything outside the row was written.
    pub fn check_guards(&self, what: &str) {
        if let Some(at) = self.damaged_guard() {
            panic!("{what}: wrote outside the row at {at}");
        }
    }
}
