//! The accuracy table: every bound the tests enforce, in one place.
//!
//! With z_i = (x_i − max x)/t (exact, in f64) and c = 1 when t = 1, c = 3 otherwise
//! (t ≠ 1 adds the roundings of x − max, of 1/t and of the product):
//!
//! | quantity        | bound on \|computed − exact\|                          |
//! |-----------------|--------------------------------------------------------|
//! | softmax y_i     | y*_i · (c·\|z_i\| + 8) · 2⁻²⁴ + 2⁻¹²⁶                   |
//! | Σ softmax (f64) | \|Σ y_i − 1\| ≤ 8 · 2⁻²⁴                                 |
//! | log-softmax y_i | (c·\|z_i\| + 2·\|y*_i\| + 8) · 2⁻²⁴                     |
//! | logsumexp r     | (\|max x\| + t · (ln n + 4)) · 2⁻²³, n finite entries  |
//!
//! Besides the bounds: a softmax output is 0 or ≥ `f32::MIN_POSITIVE` (never
//! subnormal), and where the exact log-softmax or logsumexp lies beyond the f32
//! range the output must be the correctly rounded value (±inf).

/// 2⁻²⁴: half an f32 ulp at 1, the unit of every bound.
pub const U: f64 = 1.0 / 16_777_216.0;

/// 2⁻¹²⁶, the smallest normal f32: the absolute slack of the softmax bound.
pub const SOFTMAX_ABS: f64 = f32::MIN_POSITIVE as f64;

/// |Σ y − 1| ≤ SUM_BOUND, with the f32 outputs summed in f64.
pub const SUM_BOUND: f64 = 8.0 * U;

/// c: how many roundings the shifted, scaled argument z carries.
pub fn temperature_factor(t: f32) -> f64 {
    if t == 1.0 {
        1.0
    } else {
        3.0
    }
}

/// Bound on |y − y*| for a softmax output with exact value `y_ref` and argument `z`.
pub fn softmax_bound(t: f32, z: f64, y_ref: f64) -> f64 {
    y_ref * (temperature_factor(t) * z.abs() + 8.0) * U + SOFTMAX_ABS
}

/// Bound on |y − y*| for a log-softmax output with exact value `y_ref` and argument `z`.
pub fn log_softmax_bound(t: f32, z: f64, y_ref: f64) -> f64 {
    (temperature_factor(t) * z.abs() + 2.0 * y_ref.abs() + 8.0) * U
}

/// Bound on |r − r*| for the logsumexp of a row whose finite entries number
/// `finite` (at least 1) with maximum `max`.
pub fn logsumexp_bound(t: f32, max: f32, finite: usize) -> f64 {
    let t = t as f64;
    ((max as f64).abs() + t * ((finite as f64).ln() + 4.0)) * 2.0 * U
}

/// Bound on |y − y*| for an attention softmax output: the softmax bound at
/// t = 1, plus the error of the logits, each within `size`·U of exact, where
/// size = |v| + |s·x| + |bias| (+ 4·|c·tanh| under a soft-cap: the tanh's 3
/// steps and the rounding of s/c): twice the logit's own and twice the
/// largest of its row (`worst`), which the max carries into every output.
/// The absolute slack grows by the same factor: an output that close to
/// the smallest normal f32 may land on either side of the flush to 0.
pub fn attention_bound(z: f64, size: f64, worst: f64, y_ref: f64) -> f64 {
    let relative = (z.abs() + 8.0 + 2.0 * size + 2.0 * worst) * U;
    y_ref * relative + SOFTMAX_ABS * (1.0 + relative)
}

/// Bound on |dx − dx*| for the attention backward pass at one key, with
/// y and g the f32 inputs, dot = ⟨g, y⟩ (exact) and slope = dv/dx there
/// (s, or s·(1 − tanh²) under a cap): 16 roundings of the terms, the dot's
/// f32 lanes (|dot| + 1 with |g| ≤ 1) included.
pub fn attention_grad_bound(y: f64, g: f64, dot: f64, slope: f64) -> f64 {
    16.0 * U * y.abs() * slope.abs() * (g.abs() + dot.abs() + 1.0) + f32::MIN_POSITIVE as f64
}
