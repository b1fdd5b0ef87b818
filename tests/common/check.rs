//! The per-row checker and the report of a sweep: every operation of one row on
//! one backend and algorithm is checked against the reference, element by
//! element; each (backend, algorithm, operation) cell keeps its largest error in
//! units of its bound, and the first failures are kept with their full context.

use super::backend::{Backend, Op, Outputs, ALGORITHMS};
use super::bounds::{
    log_softmax_bound, logsumexp_bound, softmax_bound, temperature_factor, SUM_BOUND, U,
};
use super::inputs::Guarded;
use super::oracle::{sum_f64, Reference, RowKind};
use softmax::{Algorithm, Isa};
use softmax_kernels::Output;
use std::collections::BTreeMap;
use std::fmt;

/// What a row is, beyond its values: for assertion messages.
#[derive(Clone, Copy, Debug)]
pub struct Label<'a> {
    /// The value range or the special case.
    pub values: &'a str,
    pub t: f32,
    /// Misalignment of the row, in elements past a 64-byte boundary.
    pub offset: usize,
}

/// Everything that identifies one checked result.
struct Case<'a> {
    backend: Backend,
    algorithm: Algorithm,
    op: Op,
    label: Label<'a>,
    len: usize,
}

impl fmt::Display for Case<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[isa {} | algorithm {} | op {}] len {} offset {} values {} t {:e}",
            self.backend.name(),
            self.algorithm.name(),
            self.op.name(),
            self.len,
            self.label.offset,
            self.label.values,
            self.label.t
        )
    }
}

/// One cell of the table: the largest error in units of its bound (over 1
/// fails), and how many results broke a rule instead (NaN, ±inf, exact zero,
/// subnormal), which have no ratio.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    max_ratio: f64,
    broken: u64,
    checks: u64,
}

/// The outcome of checking one result (a row, a sum, a logsumexp).
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Largest |error| / bound among the values checked against a bound.
    pub ratio: f64,
    /// Values that broke a rule (no ratio).
    pub broken: u64,
    /// Softmax only: the largest |error| over the relative part of the bound,
    /// among outputs and exact values in the normal range.
    pub normal_ratio: Option<f64>,
    /// The first failure, with its context.
    pub failure: Option<String>,
}

/// Failure messages kept per sweep: the first of each kind (algorithm,
/// operation, values, temperature), up to this many; the count covers all of them.
const KEPT_FAILURES: usize = 40;

/// The running report of one test: error table, counts, first failures.
pub struct Sweep {
    title: String,
    backends: Vec<Backend>,
    skipped: Vec<Isa>,
    cells: BTreeMap<(Backend, usize, Op), Cell>,
    failures: BTreeMap<String, String>,
    failed: u64,
    rows: u64,
}

impl Sweep {
    /// A sweep over every available backend (printing a `SKIPPED:` line for each
    /// ISA this CPU lacks).
    pub fn new(title: &str) -> Self {
        let (backends, skipped) = Backend::available();
        Sweep {
            title: title.to_string(),
            backends,
            skipped,
            cells: BTreeMap::new(),
            failures: BTreeMap::new(),
            failed: 0,
            rows: 0,
        }
    }

    /// The backends this sweep runs on.
    pub fn backends(&self) -> Vec<Backend> {
        self.backends.clone()
    }

    /// Keeps only the backends `keep` accepts (for the heaviest cases).
    pub fn retain_backends(&mut self, keep: impl Fn(Backend) -> bool) {
        self.backends.retain(|b| keep(*b));
    }

    fn record(&mut self, case: &Case<'_>, verdict: Verdict) {
        let alg = ALGORITHMS
            .iter()
            .position(|a| *a == case.algorithm)
            .unwrap();
        let cell = self.cells.entry((case.backend, alg, case.op)).or_default();
        cell.checks += 1;
        cell.max_ratio = cell.max_ratio.max(verdict.ratio);
        cell.broken += verdict.broken;
        if let Some(normal) = verdict.normal_ratio {
            let cell = self
                .cells
                .entry((case.backend, alg, Op::SoftmaxNormal))
                .or_default();
            cell.checks += 1;
            cell.max_ratio = cell.max_ratio.max(normal);
        }
        if let Some(why) = verdict.failure {
            let kind = format!(
                "{} {} {} {}",
                case.algorithm.name(),
                case.op.name(),
                case.label.values,
                case.label.t
            );
            self.fail_kind(kind, format!("{case}: {why}"));
        }
    }

    /// Records a failure found outside the element checks.
    pub fn fail(&mut self, message: String) {
        let kind = message.split(':').next().unwrap_or_default().to_string();
        self.fail_kind(kind, message);
    }

    /// Records a failure, keeping the first message of each kind.
    fn fail_kind(&mut self, kind: String, message: String) {
        self.failed += 1;
        if self.failures.len() < KEPT_FAILURES {
            self.failures.entry(kind).or_insert(message);
        }
    }

    /// Fails unless `ok`; the message is built only on failure.
    pub fn expect(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(message());
        }
    }

    /// Prints the error table and the coverage line, then fails the test if any check failed.
    pub fn finish(self) {
        if !self.cells.is_empty() {
            eprintln!("{}", self.table());
        }
        let names: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
        super::print_coverage(&self.title, &names, &self.skipped);
        let rows = match self.rows {
            0 => String::new(),
            n => format!(" over {n} checked row(s)"),
        };
        assert!(
            self.failed == 0,
            "{}: {} check(s) failed{rows}; the first of each kind ({}):\n{}",
            self.title,
            self.failed,
            self.failures.len(),
            self.failures.into_values().collect::<Vec<_>>().join("\n")
        );
    }

    /// Max error in units of the bound per (backend, algorithm) × operation.
    pub fn table(&self) -> String {
        let mut s = format!(
            "\n{} — {} row(s); max |error| / bound (> 1 fails; +N! = N results that broke a \
             rule — NaN or ±inf where a number was due, not exactly 0, subnormal — instead; '-' not run)\n",
            self.title, self.rows
        );
        s += &format!("{:<8} {:<11}", "isa", "algorithm");
        for op in Op::ALL {
            s += &format!(" {:>20}", op.name());
        }
        s.push('\n');
        for &backend in &self.backends {
            for (a, algorithm) in ALGORITHMS.iter().enumerate() {
                s += &format!("{:<8} {:<11}", backend.name(), algorithm.name());
                for op in Op::ALL {
                    let cell = match self.cells.get(&(backend, a, op)) {
                        Some(c) if op == Op::SoftmaxNormal => format!("{:.4}", c.max_ratio),
                        None => "-".to_string(),
                        Some(c) => {
                            let mut cell = if c.max_ratio > 1.0 {
                                format!("FAIL {:.3}", c.max_ratio)
                            } else {
                                format!("{:.4}", c.max_ratio)
                            };
                            if c.broken > 0 {
                                cell += &format!(" +{}!", c.broken);
                            }
                            cell
                        }
                    };
                    s += &format!(" {cell:>20}");
                }
                s.push('\n');
            }
        }
        s
    }
}

/// Runs every operation on `x` with `backend` and `algorithm`, each on a
/// guarded buffer at `label.offset`, and checks: every element against the
/// reference, the softmax sum, in place == out of place bitwise, the input left
/// unchanged, and nothing written outside the row. Returns the outputs.
pub fn check_row(
    sweep: &mut Sweep,
    backend: Backend,
    algorithm: Algorithm,
    label: Label<'_>,
    x: &[f32],
    reference: &Reference,
) -> Outputs {
    let (t, offset, len) = (label.t, label.offset, x.len());
    let case = |op| Case {
        backend,
        algorithm,
        op,
        label,
        len,
    };
    let input = Guarded::with_values(x, offset);
    let mut run = |output, op, in_place: bool| {
        let mut y = if in_place {
            Guarded::with_values(x, offset)
        } else {
            Guarded::new(len, offset)
        };
        let src = (!in_place).then(|| input.values());
        backend.forward(output, algorithm, t, src, y.values_mut());
        let case = case(op);
        if let Some(at) = y.damaged_guard() {
            sweep.fail(format!("{case}: wrote outside the row, at index {at}"));
        }
        if let Some(at) = input.damaged_guard() {
            sweep.fail(format!(
                "{case}: wrote into the input's guard, at index {at}"
            ));
        }
        if let Some(i) = (0..len).find(|&i| input.values()[i].to_bits() != x[i].to_bits()) {
            sweep.fail(format!("{case}: changed the input at index {i}"));
        }
        let y = y.values().to_vec();
        let check = match output {
            Output::Softmax => check_softmax,
            Output::LogSoftmax => check_log_softmax,
        };
        sweep.record(&case, check(x, reference, &y));
        y
    };
    let outputs = Outputs {
        softmax: run(Output::Softmax, Op::Softmax, false),
        softmax_in_place: run(Output::Softmax, Op::SoftmaxInPlace, true),
        log_softmax: run(Output::LogSoftmax, Op::LogSoftmax, false),
        log_softmax_in_place: run(Output::LogSoftmax, Op::LogSoftmaxInPlace, true),
        logsumexp: backend.logsumexp(algorithm, t, input.values()),
    };

    sweep.record(
        &case(Op::SoftmaxSum),
        check_sum(reference, &outputs.softmax),
    );
    sweep.record(
        &case(Op::LogSumExp),
        check_logsumexp(reference, outputs.logsumexp),
    );
    for (op, a, b) in [
        (
            Op::SoftmaxInPlace,
            &outputs.softmax,
            &outputs.softmax_in_place,
        ),
        (
            Op::LogSoftmaxInPlace,
            &outputs.log_softmax,
            &outputs.log_softmax_in_place,
        ),
    ] {
        if let Some(i) = first_bit_difference(a, b) {
            sweep.fail(format!(
                "{}: differs from out of place at index {i}: x = {:e}, in place {:e} ({:#010x}), \
                 out of place {:e} ({:#010x})",
                case(op),
                x[i],
                b[i],
                b[i].to_bits(),
                a[i],
                a[i].to_bits()
            ));
        }
    }
    sweep.rows += 1;
    outputs
}

/// The first index where `a` and `b` differ bitwise (any NaN equals any NaN).
pub fn first_bit_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits() && !(a[i].is_nan() && b[i].is_nan()))
}

/// Why one element failed.
#[derive(Clone, Copy, Debug)]
enum Why {
    ExpectedNan,
    ExpectedExactly(f32),
    NotZeroOrNormal,
    OverBound { bound: f64, ratio: f64 },
}

impl Why {
    fn explain(self, got: f64, want: f64, z: f64, t: f32) -> String {
        match self {
            Why::ExpectedNan => "the row holds a NaN: expected NaN".to_string(),
            Why::ExpectedExactly(v) => format!(
                "expected exactly {v:e} (a special-value rule, or the exact value rounds \
                 beyond the f32 range)"
            ),
            Why::NotZeroOrNormal => {
                "a softmax output must be 0 or a normal number in [2^-126, 1]".to_string()
            }
            Why::OverBound { bound, ratio } => format!(
                "|error| {:e} > bound {bound:e} ({ratio:.3}× the bound; z = {z:e}, c = {})",
                (got - want).abs(),
                temperature_factor(t)
            ),
        }
    }
}

/// |got − want| / bound, or why it is over the bound (a NaN ratio is over it).
fn within(got: f64, want: f64, bound: f64) -> Result<f64, Why> {
    let ratio = (got - want).abs() / bound;
    if ratio <= 1.0 {
        Ok(ratio)
    } else {
        Err(Why::OverBound { bound, ratio })
    }
}

/// Checks every element with `element`: the largest ratio over the row, the
/// elements that broke a rule, and a message for the first failure.
fn check_elements(
    x: &[f32],
    y: &[f32],
    r: &Reference,
    want: &[f64],
    element: impl Fn(usize) -> Result<f64, Why>,
) -> Verdict {
    assert_eq!(x.len(), y.len());
    let (mut max_ratio, mut broken, mut first) = (0.0f64, 0, None);
    for i in 0..x.len() {
        match element(i) {
            Ok(ratio) => max_ratio = max_ratio.max(ratio),
            Err(why) => {
                match why {
                    Why::OverBound { ratio, .. } if ratio.is_finite() => {
                        max_ratio = max_ratio.max(ratio)
                    }
                    _ => broken += 1,
                }
                first.get_or_insert((i, why));
            }
        }
    }
    let message = first.map(|(i, why)| {
        format!(
            "index {i}: x = {:e} ({:#010x}), got {:e} ({:#010x}), expected {:e} (f64 reference) — {}",
            x[i],
            x[i].to_bits(),
            y[i],
            y[i].to_bits(),
            want[i],
            why.explain(y[i] as f64, want[i], r.z[i], r.t)
        )
    });
    Verdict {
        ratio: max_ratio,
        broken,
        failure: message,
        normal_ratio: None,
    }
}

/// Softmax: the special rules exactly, else the bound; never subnormal.
pub fn check_softmax(x: &[f32], r: &Reference, y: &[f32]) -> Verdict {
    let normal = f32::MIN_POSITIVE as f64;
    let normal_ratio = (0..y.len())
        .filter(|&i| r.kind == RowKind::Finite && y[i] as f64 >= normal && r.softmax[i] >= normal)
        .map(|i| {
            let relative = r.softmax[i] * (temperature_factor(r.t) * r.z[i].abs() + 8.0) * U;
            (y[i] as f64 - r.softmax[i]).abs() / relative
        })
        .fold(0.0, f64::max);
    let verdict = check_elements(x, y, r, &r.softmax, |i| {
        let (xi, yi, want) = (x[i], y[i], r.softmax[i]);
        if r.kind == RowKind::Nan {
            return if yi.is_nan() {
                Ok(0.0)
            } else {
                Err(Why::ExpectedNan)
            };
        }
        if want == 0.0 && (xi == f32::NEG_INFINITY || r.kind != RowKind::Finite) {
            return if yi == 0.0 {
                Ok(0.0)
            } else {
                Err(Why::ExpectedExactly(0.0))
            };
        }
        if !(yi == 0.0 || (f32::MIN_POSITIVE..=1.0).contains(&yi)) {
            return Err(Why::NotZeroOrNormal);
        }
        within(yi as f64, want, softmax_bound(r.t, r.z[i], want))
    });
    Verdict {
        normal_ratio: Some(normal_ratio),
        ..verdict
    }
}

/// Log-softmax: the special rules exactly, the correctly rounded ±inf beyond the
/// f32 range, else the bound.
pub fn check_log_softmax(x: &[f32], r: &Reference, y: &[f32]) -> Verdict {
    check_elements(x, y, r, &r.log_softmax, |i| {
        let (yi, want) = (y[i], r.log_softmax[i]);
        if r.kind == RowKind::Nan {
            return if yi.is_nan() {
                Ok(0.0)
            } else {
                Err(Why::ExpectedNan)
            };
        }
        let rounded = want as f32;
        if rounded.is_infinite() {
            return if yi == rounded {
                Ok(0.0)
            } else {
                Err(Why::ExpectedExactly(rounded))
            };
        }
        within(yi as f64, want, log_softmax_bound(r.t, r.z[i], want))
    })
}

/// |Σ y − 1| ≤ 8·2⁻²⁴ for rows that hold mass (finite max or +inf entries).
pub fn check_sum(r: &Reference, y: &[f32]) -> Verdict {
    if !matches!(r.kind, RowKind::Finite | RowKind::PosInf(_)) {
        return Verdict::default();
    }
    let sum = sum_f64(y.iter().map(|&v| v as f64));
    let ratio = (sum - 1.0).abs() / SUM_BOUND;
    let message = (ratio.is_nan() || ratio > 1.0).then(|| {
        format!(
            "Σ y = {sum:.17} (f64 sum of the f32 outputs): |Σ y − 1| = {:e} > {SUM_BOUND:e} \
             ({ratio:.3}× the bound)",
            (sum - 1.0).abs()
        )
    });
    Verdict {
        ratio: if ratio.is_finite() { ratio } else { 0.0 },
        broken: !ratio.is_finite() as u64,
        failure: message,
        normal_ratio: None,
    }
}

/// Logsumexp: NaN, ±inf by the rules (and beyond the f32 range), else the bound.
pub fn check_logsumexp(r: &Reference, got: f32) -> Verdict {
    let want = r.logsumexp;
    let verdict = if r.kind == RowKind::Nan {
        if got.is_nan() {
            Ok(0.0)
        } else {
            Err(Why::ExpectedNan)
        }
    } else if (want as f32).is_infinite() {
        if got == want as f32 {
            Ok(0.0)
        } else {
            Err(Why::ExpectedExactly(want as f32))
        }
    } else {
        within(got as f64, want, logsumexp_bound(r.t, r.max, r.finite))
    };
    match verdict {
        Ok(ratio) => Verdict {
            ratio,
            ..Verdict::default()
        },
        Err(why) => {
            let (ratio, broken) = match why {
                Why::OverBound { ratio, .. } if ratio.is_finite() => (ratio, 0),
                _ => (0.0, 1),
            };
            let detail = match why {
                Why::OverBound { bound, ratio } => format!(
                    "|error| {:e} > bound {bound:e} ({ratio:.3}× the bound; max {:e}, {} \
                     finite entries)",
                    (got as f64 - want).abs(),
                    r.max,
                    r.finite
                ),
                other => other.explain(got as f64, want, 0.0, r.t),
            };
            Verdict {
                ratio,
                broken,
                failure: Some(format!(
                    "got {got:e} ({:#010x}), expected {want:e} — {detail}",
                    got.to_bits()
                )),
                normal_ratio: None,
            }
        }
    }
}
