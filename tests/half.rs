//! Half precision: f16 and bf16 rows in and out, computed in f32.
//!
//! The contract has two parts, and each has its tests:
//! 1. **Same arithmetic as f32.** A half-precision input is widened exactly and
//!    every output is the f32 result rounded once, to nearest even. So on every
//!    backend and algorithm, a call with f16/bf16 input or output gives exactly
//!    the bits of the f32 call on the widened row, rounded to the output type
//!    (`matches_the_f32_path_*`). The conversions themselves are checked against
//!    the `half` crate: every f16 and bf16 value, and f32 values around every
//!    rounding boundary, on every ISA token (`conversions_*`).
//! 2. **Accuracy in the output type.** Against the f64 reference rounded
//!    correctly to the output type, every output is within 1 ULP and at least
//!    99.9% are equal (`within_one_ulp_*`), with the special values of the
//!    narrow types (f16 overflow at 65504, f16 subnormal outputs, bf16 NaN
//!    payloads, exact ties) and the sums that half-precision accumulation gets
//!    wrong (a 4096-element f16 row; a bf16 sum stuck at 256; 2^20 elements).

use crate::common;

use common::{
    for_each_backend, reference, Backend, Guarded, Narrow, Rng, Values, ALGORITHMS, EMULATED_TARGET,
};
use softmax::half::{bf16, f16};
use softmax::{Algorithm, Isa, Parallelism, Rows, RowsMut, Softmax};
use softmax_kernels::arch::{Arch, Portable};
use softmax_kernels::Output;

fn convert<I: Narrow, O: Narrow>(x: &[I]) -> Vec<O> {
    x.iter().map(|v| O::from_f32(v.to_f64() as f32)).collect()
}

fn widen<I: Narrow>(x: &[I]) -> Vec<f32> {
    x.iter().map(|v| v.to_f64() as f32).collect()
}

/// Bits for comparison, every NaN folded to one pattern.
fn canon<T: Narrow>(y: &[T]) -> Vec<i64> {
    y.iter()
        .map(|v| if v.is_nan() { i64::MIN } else { v.ordered() })
        .collect()
}

/// The f32 results of `x` on `backend`, and what a call with `I` in and `O`
/// out must give: those results rounded to `O`.
fn expected<O: Narrow>(
    backend: Backend,
    output: Output,
    algorithm: Algorithm,
    t: f32,
    x: &[f32],
) -> (Vec<f32>, Vec<O>) {
    let mut y = vec![0.0f32; x.len()];
    backend.forward(output, algorithm, t, Some(x), &mut y);
    let rounded = convert::<f32, O>(&y);
    (y, rounded)
}

/// `got` equals `want` (the f32 path rounded to `O`), except that log-softmax
/// into f16/bf16 rounds z - ln S to odd before narrowing: where the f32 result
/// is exactly a midpoint of `O` (and was inexact), the output may be the other
/// neighbour of that midpoint.
fn assert_same<O: Narrow>(got: &[O], want: &[O], y32: &[f32], output: Output, what: &str) {
    let (g, w) = (canon(got), canon(want));
    for i in 0..g.len() {
        if g[i] == w[i] {
            continue;
        }
        let midpoint = (got[i].to_f64() + want[i].to_f64()) / 2.0;
        let tie = output == Output::LogSoftmax
            && O::NAME != "f32"
            && (g[i] - w[i]).abs() == 1
            && midpoint == y32[i] as f64;
        assert!(
            tie,
            "{what}: element {i} is {:?}, the f32 path gives {:?} (f32 {:e})",
            got[i], want[i], y32[i]
        );
    }
}

/// One (I, O) pair, out of place and (when I = O) in place, on one row.
fn check_pair<I: Narrow, O: Narrow>(
    backend: Backend,
    algorithm: Algorithm,
    t: f32,
    x: &[I],
    offset: usize,
    label: &str,
) {
    let x32 = widen(x);
    for output in [Output::Softmax, Output::LogSoftmax] {
        let (y32, want) = expected::<O>(backend, output, algorithm, t, &x32);
        let what = format!(
            "[{} → {} | isa {} | algorithm {} | {output:?}] len {} offset {offset} {label} t {t:e}",
            I::NAME,
            O::NAME,
            backend.name(),
            algorithm.name(),
            x.len()
        );
        let mut out = Guarded::<O>::with_values(&vec![O::default(); x.len()], offset);
        let mut inp = Guarded::<I>::with_values(x, offset);
        backend.forward(output, algorithm, t, Some(inp.values()), out.values_mut());
        out.check_guards(&what);
        assert_same(out.values(), &want, &y32, output, &what);
        if I::NAME == O::NAME {
            backend.forward::<I, I>(output, algorithm, t, None, inp.values_mut());
            inp.check_guards(&what);
            let got: Vec<O> = convert::<I, O>(inp.values());
            assert_same(&got, &want, &y32, output, &format!("{what} in place"));
        }
    }
    let lse = backend.logsumexp(algorithm, t, x);
    let lse32 = backend.logsumexp(algorithm, t, &x32);
    assert!(
        lse.to_bits() == lse32.to_bits() || (lse.is_nan() && lse32.is_nan()),
        "[{} | isa {} | algorithm {}] logsumexp {lse} differs from the f32 path {lse32}",
        I::NAME,
        backend.name(),
        algorithm.name()
    );
}

fn rows_of<I: Narrow>(values: Values, n: usize, t: f32, seed: u64) -> Vec<I> {
    let x = values.generate(&mut Rng::for_case(&[seed, n as u64, values as u64]), n, t);
    convert::<f32, I>(&x)
}

/// Every pair of element types on every backend, algorithm and short length,
/// at a few offsets and two temperatures.
fn matches_the_f32_path<I: Narrow, O: Narrow>() {
    let lengths: Vec<usize> = if EMULATED_TARGET {
        (0..=40).chain([63, 64, 65, 127, 129, 255, 1024]).collect()
    } else {
        (0..=3 * 16 * 4 + 1)
            .chain([255, 256, 257, 1021, 4096])
            .collect()
    };
    let name = format!("matches_the_f32_path {} → {}", I::NAME, O::NAME);
    for_each_backend(&name, |backend| {
        for &n in &lengths {
            for (k, values) in Values::ALL.into_iter().enumerate() {
                // Offsets and temperatures rotate with the length and range.
                let offset = [0, 1, 7, 15][(n + k) % 4];
                let t = if (n + k) % 3 == 0 { 0.7 } else { 1.0 };
                let x = rows_of::<I>(values, n, t, 11);
                for algorithm in ALGORITHMS {
                    check_pair::<I, O>(backend, algorithm, t, &x, offset, values.name());
                }
            }
        }
    });
}

#[test]
fn matches_the_f32_path_f16() {
    matches_the_f32_path::<f16, f16>();
}

#[test]
fn matches_the_f32_path_bf16() {
    matches_the_f32_path::<bf16, bf16>();
}

#[test]
fn matches_the_f32_path_mixed() {
    matches_the_f32_path::<f32, f16>();
    matches_the_f32_path::<f32, bf16>();
    matches_the_f32_path::<f16, f32>();
    matches_the_f32_path::<bf16, f32>();
    matches_the_f32_path::<f16, bf16>();
    matches_the_f32_path::<bf16, f16>();
}

/// Runs `f` with every conversion token this CPU has: the portable ones and the ISA's own.
fn for_each_token(
    mut f: impl FnMut(&str, &dyn Fn(&[u16], bool) -> Vec<f32>, &dyn Fn(&[f32], bool) -> Vec<u16>),
) {
    fn widen_all<A: Arch>(arch: A, h: &[u16], bf: bool) -> Vec<f32> {
        let lanes = std::mem::size_of::<A::Halfs>() / 2;
        let mut out = Vec::with_capacity(h.len());
        for chunk in h.chunks(lanes) {
            let mut v = <A::Halfs as pulp::bytemuck::Zeroable>::zeroed();
            pulp::bytemuck::cast_slice_mut::<_, u16>(std::slice::from_mut(&mut v))[..chunk.len()]
                .copy_from_slice(chunk);
            let w = if bf {
                arch.bf16_to_f32(v)
            } else {
                arch.f16_to_f32(v)
            };
            out.extend_from_slice(
                &pulp::bytemuck::cast_slice::<_, f32>(std::slice::from_ref(&w))[..chunk.len()],
            );
        }
        out
    }
    fn narrow_all<A: Arch>(arch: A, x: &[f32], bf: bool) -> Vec<u16> {
        let lanes = std::mem::size_of::<A::Halfs>() / 2;
        let mut out = Vec::with_capacity(x.len());
        for chunk in x.chunks(lanes) {
            let mut lanes_in = vec![0.0f32; lanes];
            lanes_in[..chunk.len()].copy_from_slice(chunk);
            let v = pulp::bytemuck::cast_slice::<f32, <A::Simd as pulp::Simd>::f32s>(&lanes_in)[0];
            let h = if bf {
                arch.f32_to_bf16(v)
            } else {
                arch.f32_to_f16(v)
            };
            out.extend_from_slice(
                &pulp::bytemuck::cast_slice::<_, u16>(std::slice::from_ref(&h))[..chunk.len()],
            );
        }
        out
    }
    macro_rules! token {
        ($name:expr, $arch:expr) => {{
            let arch = $arch;
            f($name, &|h, bf| widen_all(arch, h, bf), &|x, bf| {
                narrow_all(arch, x, bf)
            });
        }};
    }
    token!("scalar", Portable(pulp::Scalar::new()));
    token!("emu128", Portable(pulp::Scalar128b));
    token!("emu512", Portable(pulp::Scalar512b));
    let mut ran = vec!["scalar", "emu128", "emu512"];
    let mut skipped: Vec<Isa> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        match softmax_kernels::arch::Avx2::try_new() {
            Some(a) => {
                token!("avx2", a);
                ran.push("avx2");
            }
            None => skipped.push(Isa::Avx2),
        }
        match softmax_kernels::arch::Avx512::try_new() {
            Some(a) => {
                token!("avx512", a);
                ran.push("avx512");
            }
            None => skipped.push(Isa::Avx512),
        }
    }
    #[cfg(target_arch = "aarch64")]
    match softmax_kernels::arch::Neon::try_new() {
        Some(a) => {
            token!("neon", a);
            ran.push("neon");
        }
        None => skipped.push(Isa::Neon),
    }
    for isa in &skipped {
        eprintln!("SKIPPED: {isa} not available on this CPU");
    }
    common::print_coverage("conversion tokens", &ran, &skipped);
}

#[test]
fn conversions_widen_every_half_value_exactly() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for_each_token(|name, widen_fn, _| {
        for (bf, ty) in [(false, "f16"), (true, "bf16")] {
            let got = widen_fn(&all, bf);
            for (&h, &g) in all.iter().zip(&got) {
                let want = if bf {
                    bf16::from_bits(h).to_f32()
                } else {
                    f16::from_bits(h).to_f32()
                };
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "[{name}] {ty} {h:#06x} widened to {g:e} ({:#010x}), expected {want:e}",
                    g.to_bits()
                );
            }
        }
    });
}

/// f32 values around every rounding boundary of the 16-bit types: each
/// representable value, the midpoints to its neighbours and one f32 ulp either
/// side of them, plus the overflow and subnormal edges and NaNs with payloads.
fn narrowing_probes(bf: bool) -> Vec<f32> {
    let mut v = Vec::new();
    for h in 0..=u16::MAX {
        let (x, next) = if bf {
            (
                bf16::from_bits(h).to_f32(),
                bf16::from_bits(h.wrapping_add(1)).to_f32(),
            )
        } else {
            (
                f16::from_bits(h).to_f32(),
                f16::from_bits(h.wrapping_add(1)).to_f32(),
            )
        };
        if !x.is_finite() {
            continue;
        }
        v.push(x);
        if next.is_finite() && next.abs() > x.abs() && next.signum() == x.signum() {
            let mid = ((x as f64 + next as f64) / 2.0) as f32;
            let up = f32::from_bits(mid.to_bits() + 1);
            let down = f32::from_bits(mid.to_bits() - 1);
            v.extend([mid, up, down]);
        }
    }
    v.extend([
        65504.0,
        65519.996,
        65520.0,
        65536.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xff80_0001),
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0x7f81_ffff),
    ]);
    v
}

#[test]
fn conversions_round_to_nearest_even() {
    for_each_token(|name, _, narrow_fn| {
        for (bf, ty) in [(false, "f16"), (true, "bf16")] {
            let probes = narrowing_probes(bf);
            let got = narrow_fn(&probes, bf);
            for (&x, &g) in probes.iter().zip(&got) {
                let want = if bf {
                    bf16::from_f32(x).to_bits()
                } else {
                    f16::from_f32(x).to_bits()
                };
                let (g_nan, w_nan) = if bf {
                    (bf16::from_bits(g).is_nan(), bf16::from_bits(want).is_nan())
                } else {
                    (f16::from_bits(g).is_nan(), f16::from_bits(want).is_nan())
                };
                assert!(
                    g == want || (g_nan && w_nan),
                    "[{name}] {x:e} ({:#010x}) rounded to {ty} {g:#06x}, expected {want:#06x}",
                    x.to_bits()
                );
            }
        }
    });
}

/// The largest ULP distance and the share of correctly rounded outputs, per cell.
#[derive(Default)]
struct Tally {
    max_ulp: i64,
    exact: u64,
    total: u64,
}

impl Tally {
    /// Compares `got` with the exact value `want` rounded once to `O`; a
    /// softmax output of 0 where the exact value is below 2^-126 (the
    /// documented flush) counts as exact.
    fn add<O: Narrow>(&mut self, got: O, want: f64, what: &dyn Fn() -> String) {
        self.total += 1;
        let rounded = O::from_f64(want);
        if got.is_nan() || rounded.is_nan() {
            assert!(
                got.is_nan() && rounded.is_nan(),
                "{}: got {got:?}, expected {rounded:?}",
                what()
            );
            self.exact += 1;
            return;
        }
        if got.to_f64() == 0.0
            && want >= 0.0
            && want < f32::MIN_POSITIVE as f64 * (1.0 + 1.0 / 524_288.0)
        {
            self.exact += 1;
            return;
        }
        let ulp = (got.ordered() - rounded.ordered()).abs();
        assert!(
            ulp <= 1,
            "{}: got {got:?}, correctly rounded {rounded:?} (exact {want:e}): {ulp} ulp",
            what()
        );
        self.max_ulp = self.max_ulp.max(ulp);
        self.exact += (ulp == 0) as u64;
    }

    fn share(&self) -> f64 {
        self.exact as f64 / self.total.max(1) as f64
    }
}

/// Random rows of `I` (the inputs as stored), every output in `O` against the
/// f64 reference: ≤ 1 ULP each, ≥ 99.9% correctly rounded per backend.
fn within_one_ulp<I: Narrow, O: Narrow>() {
    let lengths: &[usize] = if EMULATED_TARGET {
        &[1, 17, 100, 1000, 4099]
    } else {
        &[1, 17, 100, 1000, 4099, 32000]
    };
    let name = format!("within_one_ulp {} → {}", I::NAME, O::NAME);
    let mut table = Vec::new();
    for_each_backend(&name, |backend| {
        let mut softmax = Tally::default();
        let mut log_softmax = Tally::default();
        for &n in lengths {
            for values in [
                Values::Uniform10,
                Values::Normal1,
                Values::Normal30,
                Values::Masked30,
            ] {
                for t in [1.0f32, 0.7, 2.5] {
                    let x = rows_of::<I>(values, n, t, 29);
                    let r = reference(&widen(&x), t);
                    for algorithm in ALGORITHMS {
                        for (output, tally, exact) in [
                            (Output::Softmax, &mut softmax, &r.softmax),
                            (Output::LogSoftmax, &mut log_softmax, &r.log_softmax),
                        ] {
                            let mut y = vec![O::default(); n];
                            backend.forward(output, algorithm, t, Some(&x[..]), &mut y);
                            for (i, (&got, &want)) in y.iter().zip(exact).enumerate() {
                                tally.add(got, want, &|| {
                                    format!(
                                        "[{} → {} | isa {} | algorithm {} | {output:?}] len {n} {} t {t} element {i}",
                                        I::NAME,
                                        O::NAME,
                                        backend.name(),
                                        algorithm.name(),
                                        values.name()
                                    )
                                });
                            }
                        }
                    }
                }
            }
        }
        for (op, tally) in [("softmax", &softmax), ("log_softmax", &log_softmax)] {
            table.push(format!(
                "  {:>7} {:>12}  max {} ulp  correctly rounded {:.4}%  ({} outputs)",
                backend.name(),
                op,
                tally.max_ulp,
                100.0 * tally.share(),
                tally.total
            ));
            assert!(
                tally.share() >= 0.999,
                "[{} → {} | isa {} | {op}] only {:.4}% correctly rounded",
                I::NAME,
                O::NAME,
                backend.name(),
                100.0 * tally.share()
            );
        }
    });
    eprintln!("{name}:\n{}", table.join("\n"));
}

#[test]
fn within_one_ulp_f16() {
    within_one_ulp::<f16, f16>();
    within_one_ulp::<f32, f16>();
}

#[test]
fn within_one_ulp_bf16() {
    within_one_ulp::<bf16, bf16>();
    within_one_ulp::<f32, bf16>();
}

fn on_every_isa<I: Narrow, O: Narrow>(x: &[I], check: impl Fn(&str, Algorithm, &[O], &[O])) {
    common::for_each_isa("special values", |isa| {
        for algorithm in ALGORITHMS {
            let sm = Softmax::new()
                .with_isa(isa)
                .unwrap()
                .with_algorithm(algorithm)
                .with_parallelism(Parallelism::Serial);
            let mut soft = vec![O::default(); x.len()];
            let mut log = vec![O::default(); x.len()];
            sm.softmax(x, &mut soft).unwrap();
            sm.log_softmax(x, &mut log).unwrap();
            check(isa.name(), algorithm, &soft, &log);
        }
    });
}

fn h(x: f32) -> f16 {
    f16::from_f32(x)
}

#[test]
fn f16_infinities_and_overflow() {
    // Two +inf entries share the probability; f16 holds them as it holds any value.
    let x = [
        h(1.0),
        f16::INFINITY,
        h(-3.0),
        f16::INFINITY,
        f16::NEG_INFINITY,
    ];
    on_every_isa::<f16, f16>(&x, |isa, alg, soft, log| {
        let what = format!("[isa {isa} | algorithm {}]", alg.name());
        assert_eq!(soft, [h(0.0), h(0.5), h(0.0), h(0.5), h(0.0)], "{what}");
        let ln2 = h(-std::f32::consts::LN_2);
        let ninf = f16::NEG_INFINITY;
        assert_eq!(log, [ninf, ln2, ninf, ln2, ninf], "{what}");
    });
    // The largest f16 logits; their log-softmax (below -65504) overflows the
    // f16 range and is -inf, as the correctly rounded value is.
    let x = [f16::MAX, f16::MIN, h(0.0)];
    on_every_isa::<f16, f16>(&x, |isa, alg, soft, log| {
        let what = format!("[isa {isa} | algorithm {}]", alg.name());
        assert_eq!(soft, [h(1.0), h(0.0), h(0.0)], "{what}");
        assert_eq!(log, [h(0.0), f16::NEG_INFINITY, h(-65504.0)], "{what}");
    });
    // f32 logits beyond the f16 range: the probabilities are fine, log-probabilities
    // beyond -65504 round to -inf, and the row's logsumexp into f16 is +inf.
    let x = [1e6f32, 0.0, -7e4];
    on_every_isa::<f32, f16>(&x, |isa, alg, soft, log| {
        let what = format!("[isa {isa} | algorithm {}]", alg.name());
        assert_eq!(soft, [h(1.0), h(0.0), h(0.0)], "{what}");
        assert_eq!(
            log,
            [h(0.0), f16::NEG_INFINITY, f16::NEG_INFINITY],
            "{what}"
        );
    });
    let rows = Rows::contiguous(&x[..], 3).unwrap();
    let mut lse = [f16::ZERO];
    Softmax::new().logsumexp_rows(rows, &mut lse[..]).unwrap();
    assert_eq!(lse[0], f16::INFINITY, "logsumexp 1e6 into f16");
}

#[test]
fn f16_subnormal_outputs() {
    // Probabilities from 2^-14 (the smallest normal f16) down past 2^-24 (the
    // smallest subnormal): each within 1 ULP of the correctly rounded value,
    // the subnormal ones nonzero down to the rounding threshold.
    let mut x = vec![0.0f32];
    let mut k = 9.0f32;
    while k < 18.5 {
        x.push(-k);
        k += 0.37;
    }
    let r = reference(&x, 1.0);
    on_every_isa::<f32, f16>(&x, |isa, alg, soft, _| {
        let mut subnormal = 0;
        for (i, (&got, &want)) in soft.iter().zip(&r.softmax).enumerate() {
            let rounded = f16::from_f64(want);
            let ulp = (got.ordered() - rounded.ordered()).abs();
            assert!(
                ulp <= 1,
                "[isa {isa} | algorithm {}] element {i}: {got} vs {rounded}",
                alg.name()
            );
            if got != f16::ZERO && got.to_f32().abs() < f16::MIN_POSITIVE.to_f32() {
                subnormal += 1;
            }
        }
        assert!(
            subnormal >= 10,
            "[isa {isa}] only {subnormal} subnormal f16 outputs"
        );
    });
}

#[test]
fn bf16_nan_payloads() {
    // Every NaN pattern, signalling or quiet, either sign: the whole row is NaN
    // (never inf, never a number), and logsumexp is NaN.
    for bits in [0x7f81u16, 0x7fc0, 0x7fff, 0xff81, 0xffc1, 0x7fa5] {
        let nan = bf16::from_bits(bits);
        assert!(nan.is_nan());
        let x = [
            bf16::from_f32(1.0),
            nan,
            bf16::from_f32(-2.0),
            bf16::INFINITY,
        ];
        on_every_isa::<bf16, bf16>(&x, |isa, alg, soft, log| {
            let what = format!("[isa {isa} | algorithm {}] payload {bits:#06x}", alg.name());
            assert!(soft.iter().all(|v| v.is_nan()), "{what}: softmax {soft:?}");
            assert!(
                log.iter().all(|v| v.is_nan()),
                "{what}: log-softmax {log:?}"
            );
        });
        assert!(
            softmax::logsumexp(&x[..]).unwrap().is_nan(),
            "logsumexp, payload {bits:#06x}"
        );
    }
}

#[test]
fn exact_ties_round_as_the_exact_value() {
    // Log-softmax of [0, -d] is -d - ln(1 + e^-d). At d = 50.015625, an f16
    // midpoint (between -50.0 and -50.03125), the f32 difference rounds to
    // exactly -d: the correction, 1.9e-22, is far below an f32 ulp. Rounding
    // that tie to even would give -50.0; the exact value lies beyond the
    // midpoint, and the kernel, which rounds z - ln S to odd in f32 for half
    // outputs, gives the correctly rounded -50.03125.
    on_every_isa::<f32, f16>(&[0.0, -50.015625], |isa, alg, _, log| {
        assert_eq!(
            log[1],
            h(-50.03125),
            "[isa {isa} | algorithm {}]",
            alg.name()
        );
    });
    // The same in bf16: -50.125 lies between -50.0 and -50.25, the exact value
    // just beyond it: -50.25, where round to even of the f32 tie gives -50.0.
    let b = bf16::from_f32;
    on_every_isa::<f32, bf16>(&[0.0, -50.125], |isa, alg, _, log| {
        assert_eq!(log[1], b(-50.25), "[isa {isa} | algorithm {}]", alg.name());
    });
    // And -50.375, between -50.25 and -50.5: beyond it, and even, is -50.5.
    on_every_isa::<f32, bf16>(&[0.0, -50.375], |isa, alg, _, log| {
        assert_eq!(log[1], b(-50.5), "[isa {isa} | algorithm {}]", alg.name());
    });
    // Where e^-d underflows f32 (d = 200.0625), ln S is 0 in f32 and the
    // f32 result is an exact tie: even, -200.0, one ULP from the exact side.
    on_every_isa::<f32, f16>(&[0.0, -200.0625], |isa, alg, _, log| {
        assert_eq!(log[1], h(-200.0), "[isa {isa} | algorithm {}]", alg.name());
    });
    // Into f32 there is no second rounding: -201.5 - 1e-88 is -201.5.
    on_every_isa::<f32, f32>(&[0.0, -201.5], |isa, alg, _, log| {
        assert_eq!(log[1], -201.5, "[isa {isa} | algorithm {}]", alg.name());
    });
    // Softmax probabilities that are exact ties: 2 of 3 entries at +inf give
    // 1/2 (exact), and a row of four equal logits gives exactly 0.25.
    on_every_isa::<f16, f16>(&[h(3.0); 4], |isa, alg, soft, _| {
        assert_eq!(soft, [h(0.25); 4], "[isa {isa} | algorithm {}]", alg.name());
    });
}

#[test]
fn half_precision_sums_are_not_half_precision() {
    // 4096 equal f16 logits: an f16 running sum stalls at 2048 (2048 + 1 rounds
    // back to 2048), which makes each probability 2^-11 and their sum 2.0.
    let x = vec![f16::ZERO; 4096];
    on_every_isa::<f16, f16>(&x, |isa, alg, soft, log| {
        let what = format!("[isa {isa} | algorithm {}]", alg.name());
        assert!(
            soft.iter().all(|&v| v == f16::from_f32(1.0 / 4096.0)),
            "{what}"
        );
        let sum: f64 = soft.iter().map(|v| v.to_f64()).sum();
        assert_eq!(sum, 1.0, "{what}");
        assert!(
            log.iter().all(|&v| v == f16::from_f64(-(4096f64.ln()))),
            "{what}"
        );
    });
    // A bf16 running sum stalls at 256 (256 + 1 rounds to 256).
    let x = vec![bf16::ZERO; 1000];
    on_every_isa::<bf16, bf16>(&x, |isa, alg, soft, _| {
        let what = format!("[isa {isa} | algorithm {}]", alg.name());
        assert!(
            soft.iter().all(|&v| v == bf16::from_f64(1e-3)),
            "{what}: {:?}",
            soft[0]
        );
    });
    // 2^20 elements: sums accumulate in f32 lanes flushed into f64, so the
    // logsumexp and Σ softmax of random half rows match f64.
    let n = if EMULATED_TARGET { 1 << 17 } else { 1 << 20 };
    let mut rng = Rng::new(7);
    let xf: Vec<f16> = (0..n)
        .map(|_| f16::from_f32(rng.uniform(-4.0, 4.0)))
        .collect();
    let xb: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.uniform(-4.0, 4.0)))
        .collect();
    let refs = [
        ("f16", reference(&widen(&xf), 1.0)),
        ("bf16", reference(&widen(&xb), 1.0)),
    ];
    common::for_each_isa("2^20-element half rows", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        for (ty, r) in &refs {
            let (lse, mut y) = if *ty == "f16" {
                (sm.logsumexp(&xf[..]).unwrap(), vec![0.0f32; n])
            } else {
                (sm.logsumexp(&xb[..]).unwrap(), vec![0.0f32; n])
            };
            let bound = common::bounds::logsumexp_bound(1.0, r.max, r.finite);
            assert!(
                (lse as f64 - r.logsumexp).abs() <= bound,
                "[{ty} | isa {isa}] logsumexp {lse} vs {}",
                r.logsumexp
            );
            if *ty == "f16" {
                sm.softmax(&xf[..], &mut y[..]).unwrap();
            } else {
                sm.softmax(&xb[..], &mut y[..]).unwrap();
            }
            let sum = common::oracle::sum_f64(y.iter().map(|&v| v as f64));
            assert!(
                (sum - 1.0).abs() <= common::bounds::SUM_BOUND,
                "[{ty} | isa {isa}] Σ = {sum}"
            );
        }
    });
}

#[test]
fn batches_match_rows() {
    // A strided f16 batch into a strided bf16 batch and in place, on the
    // thread pool: each row as computed alone, and the padding untouched.
    let (rows, cols, stride) = (67, 517, 530);
    let mut rng = Rng::new(3);
    let data: Vec<f16> = (0..rows * stride)
        .map(|_| f16::from_f32(rng.normal(3.0)))
        .collect();
    for isa in common::available_isas().0 {
        let sm = Softmax::new().with_isa(isa).unwrap();
        let pad = bf16::from_f32(-7.0);
        let mut out = vec![pad; rows * stride];
        sm.log_softmax_rows(
            Rows::new(&data, rows, cols, stride).unwrap(),
            RowsMut::new(&mut out, rows, cols, stride).unwrap(),
        )
        .unwrap();
        let mut in_place = data.clone();
        sm.softmax_rows_in_place(RowsMut::new(&mut in_place, rows, cols, stride).unwrap())
            .unwrap();
        let mut lse = vec![bf16::ZERO; rows];
        sm.logsumexp_rows(Rows::new(&data, rows, cols, stride).unwrap(), &mut lse[..])
            .unwrap();
        for r in 0..rows {
            let (row, span) = (
                &data[r * stride..r * stride + cols],
                r * stride..r * stride + cols,
            );
            let mut want = vec![bf16::ZERO; cols];
            sm.log_softmax(row, &mut want).unwrap();
            assert_eq!(
                &out[span.clone()],
                &want[..],
                "[isa {isa}] log-softmax row {r}"
            );
            let mut want = row.to_vec();
            sm.softmax_in_place(&mut want).unwrap();
            assert_eq!(
                &in_place[span],
                &want[..],
                "[isa {isa}] softmax in place row {r}"
            );
            // Rounded once from f64 into bf16; `logsumexp` rounds into f32.
            let single = bf16::from_f32(sm.logsumexp(row).unwrap());
            let ulps = (lse[r].ordered() - single.ordered()).abs();
            assert!(ulps <= 1, "[isa {isa}] logsumexp row {r}");
            if r + 1 < rows {
                let gap = r * stride + cols..(r + 1) * stride;
                assert!(
                    out[gap.clone()].iter().all(|&v| v == pad),
                    "[isa {isa}] padding after row {r}"
                );
                assert_eq!(
                    &in_place[gap.clone()],
                    &data[gap],
                    "[isa {isa}] padding after row {r}"
                );
            }
        }
    }
}

#[test]
fn errors_leave_half_buffers_untouched() {
    let x = [f16::from_f32(1.0); 10];
    let mut y = [bf16::from_f32(5.0); 9];
    let err = softmax::softmax(&x[..], &mut y[..]).unwrap_err();
    assert!(
        matches!(
            err,
            softmax::Error::LengthMismatch {
                input: 10,
                output: 9
            }
        ),
        "{err}"
    );
    assert!(y.iter().all(|&v| v == bf16::from_f32(5.0)));
}
