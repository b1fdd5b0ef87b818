//! The attention table's variants, for the report: the fused attention-score
//! softmax (`AttentionSoftmax`) as LLM inference calls it, each beside the
//! plain softmax of the same rows (`softmax_rows`) it is measured against.
//!
//! Buffers per variant: scores uniform in ±SCORE_RANGE, so the scaled logits
//! span ±LOGIT_RANGE like the other tables'; the variant's f16 mask
//! (broadcast over heads) and sinks; one output buffer both calls write.
//!
//! `check` compares every row of the variant with the crate's scalar ISA on
//! one thread: a row depends on its head, query position and mask row, so
//! the reference is one whole call, made once per variant, and once it is
//! there every row is as cheap to compare as a few.

use crate::training::{row_error, scalar_softmax, uniform};
use crate::workload::{splitmix64 as mix, uniform_f32, LOGIT_RANGE};
use rayon::prelude::*;
use softmax::half::f16;
use softmax::{
    packed_strides, Alibi, AttentionInputs, AttentionMask, AttentionSoftmax, Isa, Parallelism,
    Rows, RowsMut, Scores, ScoresMut, Softmax,
};

/// As the training table's: probabilities of rows up to 4096 keys are
/// ~1/keys, so errors are scaled by the row's largest |reference|.
pub const ATTENTION_TOLERANCE: f64 = 1e-5;
/// 1/√64: a head dimension of 64.
pub const SCALE: f32 = 0.125;
pub const SCORE_RANGE: f32 = LOGIT_RANGE / SCALE;
/// Gemma 2's attention soft-cap.
pub const SOFT_CAP: f32 = 50.0;
pub const ALIBI_MAX_BIAS: f32 = 8.0;
/// Padding keys of the decode variant: a batch padded to a longer neighbour.
pub const PADDING_KEYS: usize = 96;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `with_causal`: hidden keys are written 0 without an exp.
    PrefillCausal,
    /// The same causal pattern as an f16 additive mask, as engines pass it.
    PrefillMask,
    /// As `PrefillMask` under the soft-cap: a tanh per score.
    PrefillCapMask,
    /// One query over a KV cache whose last keys are padding (f16 mask).
    DecodePadMask,
    /// ALiBi slopes times an f16 distance mask, and a sink logit per head.
    AlibiSinks,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::PrefillCausal,
        Variant::PrefillMask,
        Variant::PrefillCapMask,
        Variant::DecodePadMask,
        Variant::AlibiSinks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::PrefillCausal => "prefill causal",
            Variant::PrefillMask => "prefill f16 mask",
            Variant::PrefillCapMask => "prefill cap+mask",
            Variant::DecodePadMask => "decode f16 pad mask",
            Variant::AlibiSinks => "alibi+sinks",
        }
    }

    /// (batch, heads, queries, keys) of the report: a 512-token prompt, one
    /// token against a 4096-token cache, a 64-token chunk against 1024.
    pub fn dims(self) -> [usize; 4] {
        match self {
            Variant::PrefillCausal | Variant::PrefillMask | Variant::PrefillCapMask => {
                [1, 32, 512, 512]
            }
            Variant::DecodePadMask => [1, 32, 1, 4096],
            Variant::AlibiSinks => [1, 32, 64, 1024],
        }
    }

    /// Throughput wanted as a multiple of the plain softmax's (same rows and
    /// threads). A mask costs an extra read; causal skips the exps of half
    /// the block, so it should take at most 0.6 of the time; the cap's tanh
    /// costs about an exp.
    pub fn target(self) -> Option<f64> {
        match self {
            Variant::PrefillCausal => Some(1.0 / 0.6),
            Variant::PrefillMask | Variant::DecodePadMask => Some(0.85),
            Variant::PrefillCapMask => Some(0.6),
            Variant::AlibiSinks => None,
        }
    }

    fn has_mask(self) -> bool {
        self != Variant::PrefillCausal
    }

    /// The variant's options on `isa` with `parallelism`.
    pub fn options(
        self,
        isa: Isa,
        parallelism: Parallelism,
    ) -> Result<AttentionSoftmax, softmax::Error> {
        let options = AttentionSoftmax::new()
            .with_isa(isa)?
            .with_parallelism(parallelism)
            .with_scale(SCALE)?;
        match self {
            Variant::PrefillCausal => Ok(options.with_causal()),
            Variant::PrefillMask | Variant::DecodePadMask => Ok(options),
            Variant::PrefillCapMask => options.with_soft_cap(SOFT_CAP),
            Variant::AlibiSinks => options.with_alibi(Alibi::MaxBias(ALIBI_MAX_BIAS)),
        }
    }

    /// The f16 mask of scores of `dims` (broadcast over batch and heads),
    /// and its dims. Query q sits at position p = q + keys − queries, the
    /// crate's default offset, so the causal mask hides what `with_causal` does.
    fn mask(self, [_, _, queries, keys]: [usize; 4]) -> (Vec<f16>, [usize; 4]) {
        let rows = match self {
            Variant::DecodePadMask => 1,
            _ => queries,
        };
        let value = |q: usize, j: usize| {
            let p = q + keys - queries;
            match self {
                Variant::DecodePadMask if j + PADDING_KEYS >= keys => f32::NEG_INFINITY,
                Variant::AlibiSinks => -(p.abs_diff(j) as f32),
                Variant::PrefillMask | Variant::PrefillCapMask if j > p => f32::NEG_INFINITY,
                _ => 0.0,
            }
        };
        let mask = (0..rows * keys)
            .map(|i| f16::from_f32(value(i / keys, i % keys)))
            .collect();
        (mask, [1, 1, rows, keys])
    }
}

/// The buffers of one variant; `want` is the scalar ISA's output.
pub struct Attention {
    pub variant: Variant,
    pub dims: [usize; 4],
    x: Vec<f32>,
    mask: Vec<f16>,
    mask_dims: [usize; 4],
    sinks: Vec<f32>,
    out: Vec<f32>,
    want: Vec<f32>,
}

/// The mask and sinks a call of `variant` takes.
fn inputs<'a>(
    variant: Variant,
    (mask, mask_dims): (&'a [f16], [usize; 4]),
    sinks: &'a [f32],
) -> Result<AttentionInputs<'a>, softmax::Error> {
    let mut inputs = AttentionInputs::new();
    if variant.has_mask() {
        let mask = AttentionMask::additive(mask, mask_dims, packed_strides(mask_dims))?;
        inputs = inputs.with_mask(mask);
    }
    if variant == Variant::AlibiSinks {
        inputs = inputs.with_sinks(sinks);
    }
    Ok(inputs)
}

impl Attention {
    /// The report's dims of `variant`.
    pub fn new(variant: Variant) -> Self {
        Self::with_dims(variant, variant.dims())
    }

    /// Every buffer written before it is timed, so page faults are not.
    pub fn with_dims(variant: Variant, dims: [usize; 4]) -> Self {
        let [batch, heads, queries, keys] = dims;
        let (mask, mask_dims) = variant.mask(dims);
        let sinks = (0..heads)
            .map(|h| uniform_f32(mix(4 ^ mix(h as u64)), LOGIT_RANGE))
            .collect();
        let elements = batch * heads * queries * keys;
        let mut work = Self {
            variant,
            dims,
            x: uniform(batch * heads * queries, keys, 5, SCORE_RANGE),
            mask,
            mask_dims,
            sinks,
            out: vec![f32::NAN; elements],
            want: Vec::new(),
        };
        let scalar = variant.options(Isa::Scalar, Parallelism::Serial);
        work.call(&scalar.expect("the scalar ISA is always available"))
            .unwrap_or_else(|e| panic!("{} refused a valid call: {e}", variant.name()));
        work.want = work.out.clone();
        work
    }

    pub fn rows(&self) -> usize {
        self.dims[..3].iter().product()
    }

    pub fn keys(&self) -> usize {
        self.dims[3]
    }

    /// One call of the variant on every row.
    pub fn call(&mut self, attention: &AttentionSoftmax) -> Result<(), softmax::Error> {
        let inputs = inputs(self.variant, (&self.mask, self.mask_dims), &self.sinks)?;
        let x = Scores::contiguous(&self.x, self.dims)?;
        attention.softmax(x, ScoresMut::contiguous(&mut self.out, self.dims)?, &inputs)
    }

    /// One call of the plain softmax on the same rows, into the same output.
    pub fn call_softmax(&mut self, softmax: &Softmax) -> Result<(), softmax::Error> {
        let keys = self.keys();
        let x = Rows::contiguous(&self.x, keys)?;
        softmax.softmax_rows(x, RowsMut::contiguous(&mut self.out, keys)?)
    }

    /// Runs the variant and the plain softmax once each over an output
    /// poisoned with NaN, and compares every row of the variant and the first
    /// two and last two rows of the softmax with the scalar ISA. Returns the
    /// larger error (see ATTENTION_TOLERANCE), infinite if anything is NaN.
    pub fn check(&mut self, attention: &AttentionSoftmax, softmax: &Softmax) -> f64 {
        let name = self.variant.name();
        let refused = |e: softmax::Error| panic!("{name} refused a valid call: {e}");
        let keys = self.keys();
        self.out.fill(f32::NAN);
        self.call(attention).unwrap_or_else(refused);
        let worst = (self.out.par_chunks(keys))
            .zip(self.want.par_chunks(keys))
            .map(|(got, want)| row_error(got, want))
            .reduce(|| 0.0, f64::max);
        self.out.fill(f32::NAN);
        self.call_softmax(softmax).unwrap_or_else(refused);
        let rows = self.rows();
        let mut check_rows = vec![0, 1.min(rows - 1), rows.saturating_sub(2), rows - 1];
        check_rows.dedup();
        let scalar = scalar_softmax();
        check_rows.into_iter().fold(worst, |worst, r| {
            let x = &self.x[r * keys..(r + 1) * keys];
            let mut want = vec![0.0f32; keys];
            let want_rows = RowsMut::contiguous(&mut want, keys).expect("one row");
            let rows = Rows::contiguous(x, keys).expect("one row");
            scalar.softmax_rows(rows, want_rows).unwrap();
            worst.max(row_error(&self.out[r * keys..(r + 1) * keys], &want))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_variants_agree_with_the_scalar_isa() {
        // Rows of 37 and 133 keys: masked tails on every ISA; 3 heads: sinks
        // and slopes per head; more than 96 keys for the padding.
        for variant in Variant::ALL {
            let dims = match variant {
                Variant::DecodePadMask => [1, 3, 1, 133],
                _ => [2, 3, 5, 37],
            };
            let mut work = Attention::with_dims(variant, dims);
            for isa in Isa::available() {
                let attention = variant.options(isa, Parallelism::Auto).unwrap();
                let softmax = Softmax::new().with_isa(isa).unwrap();
                let error = work.check(&attention, &softmax);
                assert!(
                    error <= ATTENTION_TOLERANCE,
                    "{} on {isa}: {error:e}",
                    variant.name()
                );
            }
        }
    }
}
