//! The yardsticks of the report and the criterion benches: softmax as it is
//! first written, and copy-scale, the same bytes as softmax with no arithmetic
//! to speak of.

/// Max of a row, the plain way.
pub fn row_max(x: &[f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for &v in x {
        if v > max {
            max = v;
        }
    }
    max
}

/// Three plain loops, libm's `f32::exp`, one division per element, an f32 running sum.
pub fn naive_softmax(x: &[f32], y: &mut [f32]) {
    let max = row_max(x);
    let mut sum = 0.0f32;
    for (y, &v) in y.iter_mut().zip(x) {
        *y = (v - max).exp();
        sum += *y;
    }
    for y in y.iter_mut() {
        *y /= sum;
    }
}

pub fn naive_softmax_in_place(x: &mut [f32]) {
    let max = row_max(x);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

pub fn naive_logsumexp(x: &[f32]) -> f32 {
    let max = row_max(x);
    let mut sum = 0.0f32;
    for &v in x {
        sum += (v - max).exp();
    }
    max + sum.ln()
}

pub fn naive_log_softmax(x: &[f32], y: &mut [f32]) {
    let lse = naive_logsumexp(x);
    for (y, &v) in y.iter_mut().zip(x) {
        *y = v - lse;
    }
}

/// y = c·x (or y ← c·y when `x` is `None`) with explicit vectors on the best
/// ISA: in-cache rows measure the core's load/store rate, out-of-cache rows the
/// memory bandwidth.
struct CopyScale<'a> {
    factor: f32,
    x: Option<&'a [f32]>,
    y: &'a mut [f32],
}

impl pulp::WithSimd for CopyScale<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let factor = self.factor;
        let c = simd.splat_f32s(factor);
        let (y, y_tail) = S::as_mut_simd_f32s(self.y);
        match self.x {
            Some(x) => {
                let (x, x_tail) = S::as_simd_f32s(x);
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = simd.mul_f32s(c, x);
                }
                for (y, &x) in y_tail.iter_mut().zip(x_tail) {
                    *y = factor * x;
                }
            }
            None => {
                for y in y.iter_mut() {
                    *y = simd.mul_f32s(c, *y);
                }
                for y in y_tail {
                    *y *= factor;
                }
            }
        }
    }
}

/// y = factor · x, or y ← factor · y in place when `x` is `None`.
pub fn copy_scale(factor: f32, x: Option<&[f32]>, y: &mut [f32]) {
    pulp::Arch::new().dispatch(CopyScale { factor, x, y });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_softmax_sums_to_one() {
        let x = [1.0f32, 2.0, 3.0, -1.0];
        let mut y = [0.0f32; 4];
        naive_softmax(&x, &mut y);
        assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
