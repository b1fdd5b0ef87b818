//! The f64 reference: softmax, log-softmax and logsumexp of an f32 row,
//! computed in f64 from the f32 inputs with the exact temperature, and the
//! special-value rules of the specification.

/// Which rule a row follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A NaN anywhere: every output NaN, logsumexp NaN.
    Nan,
    /// `k` entries of +inf (and no NaN): 1/k on each, exactly 0 elsewhere;
    /// log-softmax −ln k and −inf; logsumexp +inf.
    PosInf(usize),
    /// Empty, or only −inf: softmax 0, log-softmax −inf, logsumexp −inf.
    Masked,
    /// A finite maximum: the formula.
    Finite,
}

/// Exact (f64) results for one row at one temperature.
#[derive(Clone, Debug)]
pub struct Reference {
    pub kind: RowKind,
    pub t: f32,
    /// The row's maximum (finite for `Finite` rows).
    pub max: f32,
    /// Entries that are not −inf (the n of the logsumexp bound).
    pub finite: usize,
    /// z_i = (x_i − max)/t; 0 on the +inf entries of a `PosInf` row, −inf on
    /// entries whose output is exactly 0.
    pub z: Vec<f64>,
    pub softmax: Vec<f64>,
    pub log_softmax: Vec<f64>,
    /// t · ln Σ exp(x/t).
    pub logsumexp: f64,
}

/// Sum with Neumaier compensation, so the reference itself is not the error source.
pub fn sum_f64(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        comp += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + comp
}

/// The exact results for `x` at temperature `t` (> 0).
pub fn reference(x: &[f32], t: f32) -> Reference {
    let n = x.len();
    let finite = x.iter().filter(|v| **v != f32::NEG_INFINITY).count();
    let special = |kind, z: Vec<f64>, softmax, log_softmax, logsumexp| Reference {
        kind,
        t,
        max: f32::NAN,
        finite,
        z,
        softmax,
        log_softmax,
        logsumexp,
    };
    if x.iter().any(|v| v.is_nan()) {
        let nan = vec![f64::NAN; n];
        return special(RowKind::Nan, nan.clone(), nan.clone(), nan, f64::NAN);
    }
    let infs = x.iter().filter(|v| **v == f32::INFINITY).count();
    if infs > 0 {
        let k = infs as f64;
        let pick = |on: f64, off: f64| -> Vec<f64> {
            x.iter()
                .map(|&v| if v == f32::INFINITY { on } else { off })
                .collect()
        };
        return special(
            RowKind::PosInf(infs),
            pick(0.0, f64::NEG_INFINITY),
            pick(1.0 / k, 0.0),
            pick(-k.ln(), f64::NEG_INFINITY),
            f64::INFINITY,
        );
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return special(
            RowKind::Masked,
            vec![f64::NEG_INFINITY; n],
            vec![0.0; n],
            vec![f64::NEG_INFINITY; n],
            f64::NEG_INFINITY,
        );
    }
    let t64 = t as f64;
    let z: Vec<f64> = x.iter().map(|&v| (v as f64 - max as f64) / t64).collect();
    let sum = sum_f64(z.iter().map(|z| z.exp()));
    let ln_sum = sum.ln();
    Reference {
        kind: RowKind::Finite,
        t,
        max,
        finite,
        softmax: z.iter().map(|z| z.exp() / sum).collect(),
        log_softmax: z.iter().map(|z| z - ln_sum).collect(),
        logsumexp: max as f64 + t64 * ln_sum,
        z,
    }
}
