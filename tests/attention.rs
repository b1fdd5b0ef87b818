//! The attention-score softmax against an f64 reference of its formula, on
//! every backend: ggml's `test-backend-ops` grid for `soft_max` (mask none,
//! f32 or f16; sinks; scale 1 and 0.1; max_bias 0 and 8; rows of 16 and 1024
//! and each minus one; mask broadcast over heads and batch by {3,1} and
//! {2,3}; long rows), positional masks at every offset near the diagonal,
//! fully hidden rows, the soft-cap before the mask, special values, types,
//! layouts, threads, the backward pass and the errors.

// The reference indexes rows by key, as the formula does.
#![allow(clippy::needless_range_loop)]

use crate::common::bounds::{attention_bound, attention_grad_bound, U};
use crate::common::{Backend, Rng, Sweep};
use half::f16;
use softmax::{
    alibi_slopes, packed_strides, Alibi, AlibiBias, AttentionInputs, AttentionMask,
    AttentionSoftmax, Element, Error, Parallelism, Scores, ScoresMut,
};
use softmax_kernels::arch::Portable;

/// A test case's options, as the reference reads them.
#[derive(Clone, Debug, Default)]
struct Options {
    scale: f32,
    cap: Option<f32>,
    causal: bool,
    window: Option<usize>,
    offset: Option<i64>,
    max_bias: f32,
    distance: bool,
}

impl Options {
    fn scaled(scale: f32) -> Self {
        Self {
            scale,
            ..Default::default()
        }
    }

    fn api(&self) -> AttentionSoftmax {
        let mut a = AttentionSoftmax::new().with_scale(self.scale).unwrap();
        if let Some(c) = self.cap {
            a = a.with_soft_cap(c).unwrap();
        }
        if self.causal {
            a = a.with_causal();
        }
        if let Some(w) = self.window {
            a = a.with_window(w).unwrap();
        }
        if let Some(o) = self.offset {
            a = a.with_query_offset(o);
        }
        if self.max_bias > 0.0 {
            a = a.with_alibi(Alibi::MaxBias(self.max_bias)).unwrap();
        }
        if self.distance {
            a = a.with_alibi_bias(AlibiBias::Distance);
        }
        a
    }
}

/// A mask in f32 (the reference's view) and the type it is stored in.
#[derive(Clone, Debug)]
enum MaskKind {
    None,
    F32,
    F16,
    Keep,
}

#[derive(Clone, Debug)]
struct Case {
    dims: [usize; 4],
    opts: Options,
    x: Vec<f32>,
    /// (mask dims, values as f32 after storage rounding; −inf hides).
    mask: Option<([usize; 4], Vec<f32>)>,
    mask_kind: MaskKind,
    sinks: Option<Vec<f32>>,
    key_lens: Option<Vec<usize>>,
}

/// The f64 reference of one row, with each logit's size for the bound:
/// (y, |v| + |s·x| + |bias|, hidden).
struct RefRow {
    y: Vec<f64>,
    size: Vec<f64>,
    z: Vec<f64>,
    hidden: Vec<bool>,
}

impl Case {
    fn rows(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    fn reference(&self, r: usize) -> RefRow {
        let [_, heads, queries, keys] = self.dims;
        let (b, h, q) = (r / (heads * queries), (r / queries) % heads, r % queries);
        let o = &self.opts;
        let p = q as i64 + o.offset.unwrap_or(keys as i64 - queries as i64);
        let slopes = alibi_slopes(heads, o.max_bias);
        let slope = if o.max_bias > 0.0 {
            slopes[h] as f64
        } else {
            1.0
        };
        let x = &self.x[r * keys..][..keys];
        let mut v = vec![f64::NEG_INFINITY; keys];
        let mut size = vec![0.0; keys];
        let mut hidden = vec![false; keys];
        for j in 0..keys {
            let jp = j as i64;
            let len = self.key_lens.as_ref().map(|l| l[b % l.len()]);
            let hide_pos = (o.causal && jp > p)
                || o.window.is_some_and(|w| jp <= p - w as i64)
                || len.is_some_and(|l| j >= l);
            let m = self.mask.as_ref().map(|(md, m)| {
                let [mb, mh, mq, _] = *md;
                let mq_i = if mq == 1 { 0 } else { q };
                m[(((b % mb) * mh + h % mh) * mq + mq_i) * keys + j] as f64
            });
            if hide_pos || m == Some(f64::NEG_INFINITY) {
                hidden[j] = true;
                continue;
            }
            let sx = o.scale as f64 * x[j] as f64;
            let capped = match o.cap {
                Some(c) => c as f64 * (sx / c as f64).tanh(),
                None => sx,
            };
            let bias = match (o.distance && o.max_bias > 0.0, m) {
                (true, m) => m.unwrap_or(0.0) + slope * (jp - p) as f64,
                (false, Some(m)) => slope * m,
                (false, None) => 0.0,
            };
            v[j] = capped + bias;
            size[j] = v[j].abs()
                + sx.abs()
                + bias.abs()
                + o.cap.map_or(0.0, |c| 4.0 * capped.abs().min(c as f64));
        }
        let sink = self
            .sinks
            .as_ref()
            .map_or(f64::NEG_INFINITY, |s| s[h] as f64);
        let top = v.iter().copied().fold(sink, f64::max);
        let mut y = vec![0.0; keys];
        let mut z = vec![0.0; keys];
        if top > f64::NEG_INFINITY {
            let sum: f64 = v.iter().map(|v| (v - top).exp()).sum::<f64>() + (sink - top).exp();
            for j in 0..keys {
                z[j] = v[j] - top;
                y[j] = (v[j] - top).exp() / sum;
            }
        }
        RefRow { y, size, z, hidden }
    }

    fn inputs<'a>(&'a self, mask16: &'a [f16], keep: &'a [bool]) -> AttentionInputs<'a> {
        let mut inputs = AttentionInputs::new();
        if let Some((md, m)) = &self.mask {
            let strides = packed_strides(*md);
            let mask = match self.mask_kind {
                MaskKind::F32 => AttentionMask::additive(m.as_slice(), *md, strides),
                MaskKind::F16 => AttentionMask::additive(mask16, *md, strides),
                MaskKind::Keep => AttentionMask::keep(keep, *md, strides),
                MaskKind::None => unreachable!(),
            };
            inputs = inputs.with_mask(mask.unwrap());
        }
        if let Some(s) = &self.sinks {
            inputs = inputs.with_sinks(s);
        }
        if let Some(l) = &self.key_lens {
            inputs = inputs.with_key_lens(l);
        }
        inputs
    }

    /// The case run on `backend`, out of place from `I` into `O`.
    fn run<I: Element, O: Element>(&self, backend: Backend) -> Vec<O> {
        let x: Vec<I> = self.x.iter().map(|&v| I::from_f32(v)).collect();
        let mut y = vec![O::from_f32(f32::NAN); x.len()];
        let (mask16, keep) = self.mask_storage();
        let inputs = self.inputs(&mask16, &keep);
        let xs = Scores::contiguous(&x, self.dims).unwrap();
        let ys = ScoresMut::contiguous(&mut y, self.dims).unwrap();
        let att = self.opts.api();
        let result = match backend {
            Backend::Isa(isa) => att
                .with_isa(isa)
                .unwrap()
                .with_parallelism(Parallelism::Serial)
                .softmax(xs, ys, &inputs),
            Backend::Emu128 => {
                att.softmax_with_arch(Portable(pulp::Scalar128b), Some(xs), ys, &inputs)
            }
            Backend::Emu256 => {
                att.softmax_with_arch(Portable(pulp::Scalar256b), Some(xs), ys, &inputs)
            }
            Backend::Emu512 => {
                att.softmax_with_arch(Portable(pulp::Scalar512b), Some(xs), ys, &inputs)
            }
        };
        result.unwrap_or_else(|e| panic!("{}: a valid call failed: {e}", backend.name()));
        y
    }

    fn mask_storage(&self) -> (Vec<f16>, Vec<bool>) {
        match &self.mask {
            Some((_, m)) => (
                m.iter().map(|&v| f16::from_f32(v)).collect(),
                m.iter().map(|&v| v != f32::NEG_INFINITY).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Checks every row of `y` (f32 outputs) against the reference.
    fn check(&self, sweep: &mut Sweep, backend: Backend, label: &str, y: &[f32]) {
        let keys = self.dims[3];
        for r in 0..self.rows() {
            let reference = self.reference(r);
            let row = &y[r * keys..][..keys];
            let worst = reference.size.iter().copied().fold(0.0, f64::max);
            for j in 0..keys {
                let (got, want) = (row[j] as f64, reference.y[j]);
                let ok = match reference.hidden[j] {
                    true => row[j].to_bits() == 0,
                    false => {
                        let bound = attention_bound(reference.z[j], reference.size[j], worst, want);
                        WORST.with(|w| w.set(w.get().max((got - want).abs() / bound)));
                        (got - want).abs() <= bound
                            && (row[j] == 0.0 || row[j] >= f32::MIN_POSITIVE)
                    }
                };
                if !ok {
                    sweep.fail(format!(
                        "{} {label}: row {r} key {j}: got {got:e}, want {want:e} (hidden {}) {:?}",
                        backend.name(),
                        reference.hidden[j],
                        self.opts
                    ));
                    return;
                }
            }
        }
    }
}

thread_local! {
    /// The largest error of this test's checks, in units of the bound.
    static WORST: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// Prints the largest error in units of the bound, then finishes the sweep.
fn finish(sweep: Sweep) {
    WORST.with(|w| eprintln!("max error / bound: {:.3e}", w.get()));
    sweep.finish();
}

fn mask_values(rng: &mut Rng, n: usize, hide: f64) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.chance(hide) {
            true => f32::NEG_INFINITY,
            false => f16::from_f32(rng.uniform(-4.0, 0.0)).to_f32(),
        })
        .collect()
}

/// ggml's soft_max grid: every mask type, sink, scale, max_bias, row length
/// and broadcast factor.
#[test]
fn ggml_soft_max_grid() {
    let mut sweep = Sweep::new("attention: ggml soft_max grid");
    let mut rng = Rng::for_case(&[16, 1]);
    for backend in sweep.backends() {
        for mask_kind in [MaskKind::None, MaskKind::F32, MaskKind::F16] {
            for sinks in [false, true] {
                for max_bias in [0.0f32, 8.0] {
                    if matches!(mask_kind, MaskKind::None) && max_bias > 0.0 {
                        continue;
                    }
                    for scale in [1.0f32, 0.1] {
                        for keys in [16, 15, 1024, 1023] {
                            for (queries, nr) in [(16, [1, 1]), (15, [3, 1]), (3, [2, 3])] {
                                let mask_dims = [1, 2, queries, keys];
                                let dims = [nr[1], 2 * nr[0], queries, keys];
                                let n = dims.iter().product();
                                let case = Case {
                                    dims,
                                    opts: Options {
                                        max_bias,
                                        ..Options::scaled(scale)
                                    },
                                    x: (0..n).map(|_| rng.uniform(-10.0, 10.0)).collect(),
                                    mask: (!matches!(mask_kind, MaskKind::None)).then(|| {
                                        (
                                            mask_dims,
                                            mask_values(&mut rng, mask_dims.iter().product(), 0.1),
                                        )
                                    }),
                                    mask_kind: mask_kind.clone(),
                                    sinks: sinks.then(|| {
                                        (0..dims[1]).map(|_| rng.uniform(-2.0, 6.0)).collect()
                                    }),
                                    key_lens: None,
                                };
                                let y = case.run::<f32, f32>(backend);
                                case.check(
                                    &mut sweep,
                                    backend,
                                    &format!("{mask_kind:?} sinks {sinks}"),
                                    &y,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    finish(sweep);
}

/// ggml's long rows (200001 and 643251 keys), with an f16 mask and sinks.
#[test]
fn long_rows() {
    let mut sweep = Sweep::new("attention: long rows");
    sweep.retain_backends(|b| !matches!(b, Backend::Emu128 | Backend::Emu256));
    let mut rng = Rng::for_case(&[16, 2]);
    for backend in sweep.backends() {
        for (keys, heads) in [(200_001, 3), (643_251, 1)] {
            let dims = [1, heads, 1, keys];
            let case = Case {
                dims,
                opts: Options {
                    max_bias: 8.0,
                    ..Options::scaled(0.1)
                },
                x: (0..heads * keys)
                    .map(|_| rng.uniform(-30.0, 30.0))
                    .collect(),
                mask: Some(([1, 1, 1, keys], mask_values(&mut rng, keys, 0.05))),
                mask_kind: MaskKind::F16,
                sinks: Some((0..heads).map(|_| rng.uniform(0.0, 5.0)).collect()),
                key_lens: None,
            };
            let y = case.run::<f32, f32>(backend);
            case.check(&mut sweep, backend, &format!("{keys} keys"), &y);
        }
    }
    finish(sweep);
}

/// Causal and window masks by position, at every query offset around the
/// diagonal, with key lengths, ALiBi by distance and a soft-cap: hidden keys
/// are exactly 0, the rest within the bound.
#[test]
fn positional_masks_at_every_offset() {
    let mut sweep = Sweep::new("attention: positional masks");
    let mut rng = Rng::for_case(&[16, 3]);
    let (queries, keys) = (7, 37);
    for backend in sweep.backends() {
        for offset in -9..=keys as i64 + 2 {
            for window in [None, Some(1), Some(4), Some(30)] {
                for (causal, cap, distance) in [
                    (true, None, false),
                    (true, Some(5.0), true),
                    (false, None, true),
                ] {
                    let dims = [2, 3, queries, keys];
                    let case = Case {
                        dims,
                        opts: Options {
                            causal,
                            window,
                            offset: Some(offset),
                            cap,
                            distance,
                            max_bias: if distance { 8.0 } else { 0.0 },
                            ..Options::scaled(0.5)
                        },
                        x: (0..dims.iter().product())
                            .map(|_| rng.uniform(-12.0, 12.0))
                            .collect(),
                        mask: None,
                        mask_kind: MaskKind::None,
                        sinks: None,
                        key_lens: Some(vec![keys, 20]),
                    };
                    let y = case.run::<f32, f32>(backend);
                    case.check(
                        &mut sweep,
                        backend,
                        &format!("offset {offset} window {window:?}"),
                        &y,
                    );
                }
            }
        }
    }
    finish(sweep);
}

/// Every path of pass 1: keep-masks, f16 masks with a cap, masks broadcast
/// over queries, ALiBi by distance on top of a mask, the default offset.
#[test]
fn masks_caps_and_alibi_together() {
    let mut sweep = Sweep::new("attention: masks, caps, ALiBi");
    let mut rng = Rng::for_case(&[16, 4]);
    for backend in sweep.backends() {
        for mask_kind in [MaskKind::F32, MaskKind::F16, MaskKind::Keep] {
            for (keys, mq) in [(33, 1), (33, 5), (300, 5), (2100, 1)] {
                for (cap, distance) in [(None, false), (Some(30.0), false), (Some(50.0), true)] {
                    let dims = [2, 4, 5, keys];
                    let mask_dims = [2, 2, mq, keys];
                    let mut mask = mask_values(&mut rng, mask_dims.iter().product(), 0.2);
                    if matches!(mask_kind, MaskKind::Keep) {
                        mask.iter_mut()
                            .filter(|m| m.is_finite())
                            .for_each(|m| *m = 0.0);
                    }
                    let case = Case {
                        dims,
                        opts: Options {
                            cap,
                            distance,
                            max_bias: 4.0,
                            causal: distance,
                            ..Options::scaled(0.125)
                        },
                        x: (0..dims.iter().product())
                            .map(|_| rng.uniform(-200.0, 200.0))
                            .collect(),
                        mask: Some((mask_dims, mask)),
                        mask_kind: mask_kind.clone(),
                        sinks: Some(vec![1.0, -3.0, f32::NEG_INFINITY, 20.0]),
                        key_lens: None,
                    };
                    let y = case.run::<f32, f32>(backend);
                    case.check(
                        &mut sweep,
                        backend,
                        &format!("{mask_kind:?} {keys} mq {mq} cap {cap:?}"),
                        &y,
                    );
                }
            }
        }
    }
    finish(sweep);
}

/// The soft-cap comes before the mask: a hidden key stays at exactly 0
/// however large its capped logit, where capping the masked logits would
/// give it e^(−c − max) of the mass.
#[test]
fn soft_cap_before_the_mask_leaks_nothing() {
    let mut sweep = Sweep::new("attention: cap before mask");
    for backend in sweep.backends() {
        let keys = 24;
        let x: Vec<f32> = (0..keys).map(|j| (j % 5) as f32 * 3.0).collect();
        let mask: Vec<f32> = (0..keys)
            .map(|j| if j % 3 == 0 { f32::NEG_INFINITY } else { 0.0 })
            .collect();
        let case = Case {
            dims: [1, 1, 1, keys],
            opts: Options {
                cap: Some(1.0),
                ..Options::scaled(1.0)
            },
            x,
            mask: Some(([1, 1, 1, keys], mask)),
            mask_kind: MaskKind::F32,
            sinks: None,
            key_lens: None,
        };
        let y = case.run::<f32, f32>(backend);
        for j in (0..keys).step_by(3) {
            sweep.expect(y[j].to_bits() == 0, || {
                format!("{}: key {j} got {}", backend.name(), y[j])
            });
        }
        case.check(&mut sweep, backend, "cap 1", &y);
    }
    finish(sweep);
}

/// Rows with no visible key give 0, with or without a sink, by mask or by
/// position; NaN, +inf and sink special values follow the documented rules.
#[test]
fn special_rows() {
    let mut sweep = Sweep::new("attention: special rows");
    let keys = 19;
    let nan_bits = |y: &[f32]| y.iter().all(|v| v.is_nan());
    for backend in sweep.backends() {
        let base = |x: Vec<f32>, mask: Option<Vec<f32>>, sinks: Option<Vec<f32>>| Case {
            dims: [1, 1, 1, keys],
            opts: Options::scaled(1.0),
            x,
            mask: mask.map(|m| ([1, 1, 1, keys], m)),
            mask_kind: MaskKind::F32,
            sinks,
            key_lens: None,
        };
        let ramp: Vec<f32> = (0..keys).map(|j| j as f32 * 0.25).collect();
        let all_hidden = vec![f32::NEG_INFINITY; keys];
        for sinks in [None, Some(vec![2.0])] {
            let y = base(ramp.clone(), Some(all_hidden.clone()), sinks.clone())
                .run::<f32, f32>(backend);
            sweep.expect(y.iter().all(|v| v.to_bits() == 0), || {
                format!("{}: masked row {y:?}", backend.name())
            });
            let mut nan_hidden = ramp.clone();
            nan_hidden[3] = f32::NAN;
            let mut mask = vec![0.0; keys];
            mask[3] = f32::NEG_INFINITY;
            let case = base(nan_hidden, Some(mask), sinks.clone());
            let y = case.run::<f32, f32>(backend);
            case.check(&mut sweep, backend, "NaN under a hidden key", &y);
            let mut nan_seen = ramp.clone();
            nan_seen[7] = f32::NAN;
            let y = base(nan_seen, None, sinks.clone()).run::<f32, f32>(backend);
            sweep.expect(nan_bits(&y), || {
                format!("{}: NaN row {y:?}", backend.name())
            });
            let mut infs = ramp.clone();
            infs[2] = f32::INFINITY;
            infs[11] = f32::INFINITY;
            let y = base(infs, None, sinks.clone()).run::<f32, f32>(backend);
            let ok = (0..keys).all(|j| y[j] == if j == 2 || j == 11 { 0.5 } else { 0.0 });
            sweep.expect(ok, || format!("{}: +inf shares {y:?}", backend.name()));
        }
        let y = base(ramp.clone(), None, Some(vec![f32::NAN])).run::<f32, f32>(backend);
        sweep.expect(nan_bits(&y), || {
            format!("{}: NaN sink {y:?}", backend.name())
        });
        let y = base(ramp.clone(), None, Some(vec![f32::INFINITY])).run::<f32, f32>(backend);
        sweep.expect(y.iter().all(|v| v.to_bits() == 0), || {
            format!("{}: +inf sink {y:?}", backend.name())
        });
        // A dominant sink: the row's mass goes to it.
        let case = base(ramp.clone(), None, Some(vec![40.0]));
        let y = case.run::<f32, f32>(backend);
        case.check(&mut sweep, backend, "dominant sink", &y);
    }
    finish(sweep);
}

/// f16 and bf16 in and out, in place and out of place, agree with the f32
/// path rounded (and in place equals out of place bit for bit).
#[test]
fn half_types_and_in_place() {
    let mut sweep = Sweep::new("attention: f16, bf16, in place");
    let mut rng = Rng::for_case(&[16, 5]);
    let dims = [1, 2, 3, 2500];
    let n: usize = dims.iter().product();
    let x16: Vec<f16> = (0..n)
        .map(|_| f16::from_f32(rng.uniform(-8.0, 8.0)))
        .collect();
    let mask = mask_values(&mut rng, 2 * 3 * 2500, 0.1);
    for backend in sweep.backends() {
        let case = Case {
            dims,
            opts: Options {
                cap: Some(20.0),
                causal: true,
                offset: Some(2000),
                ..Options::scaled(2.0)
            },
            x: x16.iter().map(|v| v.to_f32()).collect(),
            mask: Some(([1, 2, 3, 2500], mask.clone())),
            mask_kind: MaskKind::F16,
            sinks: Some(vec![0.5, -1.0]),
            key_lens: None,
        };
        let wide = case.run::<f16, f32>(backend);
        case.check(&mut sweep, backend, "f16 → f32", &wide);
        let narrow = case.run::<f16, f16>(backend);
        let ok = narrow.iter().zip(&wide).all(|(h, w)| {
            (h.to_f32() - f16::from_f32(*w).to_f32()).abs()
                <= f16::from_f32(*w).to_f32().abs() * 1e-3 + 1e-7
        });
        sweep.expect(ok, || {
            format!("{}: f16 out differs from f32 out rounded", backend.name())
        });
        let bf = case.run::<f32, half::bf16>(backend);
        let ok = bf
            .iter()
            .zip(&wide)
            .all(|(h, w)| (h.to_f32() - w).abs() <= w.abs() * 8e-3 + 1e-30);
        sweep.expect(ok, || format!("{}: bf16 out", backend.name()));
        if let Backend::Isa(isa) = backend {
            let (mask16, keep) = case.mask_storage();
            let inputs = case.inputs(&mask16, &keep);
            let att = case.opts.api().with_isa(isa).unwrap();
            let mut in_place = x16.clone();
            att.softmax_in_place(ScoresMut::contiguous(&mut in_place, dims).unwrap(), &inputs)
                .unwrap();
            sweep.expect(
                in_place
                    .iter()
                    .zip(&narrow)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                || format!("{isa}: in place differs from out of place"),
            );
        }
    }
    finish(sweep);
}

/// Strided layouts: scores read in (batch, query, head, keys) order, written
/// into padded rows; a pool of threads gives the serial bits.
#[test]
fn strides_and_threads() {
    let mut rng = Rng::for_case(&[16, 6]);
    let (b, h, q, k) = (2, 4, 16, 1100);
    // Read layout [b, q, h, k]: strides (batch, head, query) = (q·h·k, k, h·k).
    let x: Vec<f32> = (0..b * q * h * k).map(|_| rng.uniform(-5.0, 5.0)).collect();
    let xs = Scores::new(&x, [b, h, q, k], [q * h * k, k, h * k]).unwrap();
    let pad = 1200;
    let att = AttentionSoftmax::new()
        .with_scale(0.3)
        .unwrap()
        .with_causal()
        .with_alibi(Alibi::MaxBias(8.0))
        .unwrap()
        .with_alibi_bias(AlibiBias::Distance);
    let sinks = [0.0, 1.0, 2.0, 3.0];
    let inputs = AttentionInputs::new().with_sinks(&sinks);
    let mut serial = vec![f32::NAN; b * h * q * pad];
    let ys = ScoresMut::new(&mut serial, [b, h, q, k], [h * q * pad, q * pad, pad]).unwrap();
    att.clone()
        .with_parallelism(Parallelism::Serial)
        .softmax(xs, ys, &inputs)
        .unwrap();
    let pool = std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    let mut pooled = vec![f32::NAN; b * h * q * pad];
    let ys = ScoresMut::new(&mut pooled, [b, h, q, k], [h * q * pad, q * pad, pad]).unwrap();
    att.clone()
        .with_thread_pool(pool)
        .softmax(xs, ys, &inputs)
        .unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&serial), bits(&pooled), "threads change the bits");
    // The padding is untouched; each row agrees with a packed single-row call.
    for r in 0..b * h * q {
        assert!(
            serial[r * pad + k..(r + 1) * pad]
                .iter()
                .all(|v| v.is_nan()),
            "padding written"
        );
    }
    let (bi, hi, qi) = (1, 2, 9);
    let row: Vec<f32> = x[((bi * q + qi) * h + hi) * k..][..k].to_vec();
    let mut one = vec![0.0f32; k];
    let single = AttentionSoftmax::new()
        .with_scale(0.3)
        .unwrap()
        .with_causal()
        .with_query_offset(qi as i64 + k as i64 - q as i64)
        .with_alibi(Alibi::Slopes(vec![alibi_slopes(h, 8.0)[hi]].into()))
        .unwrap()
        .with_alibi_bias(AlibiBias::Distance);
    let one_sink = [sinks[hi]];
    single
        .softmax(
            Scores::contiguous(&row, [1, 1, 1, k]).unwrap(),
            ScoresMut::contiguous(&mut one, [1, 1, 1, k]).unwrap(),
            &AttentionInputs::new().with_sinks(&one_sink),
        )
        .unwrap();
    let at = ((bi * h + hi) * q + qi) * pad;
    assert_eq!(
        bits(&serial[at..at + k]),
        bits(&one),
        "a strided row differs from the same row alone"
    );
}

/// ggml's slopes: 8 heads at max_bias 8 take 2^-1 … 2^-8; 12 heads add
/// m1 = 2^-0.5 to the odd powers.
#[test]
fn alibi_slopes_as_ggml() {
    let eight = alibi_slopes(8, 8.0);
    for (h, s) in eight.iter().enumerate() {
        assert_eq!(*s, 2.0f32.powi(-(h as i32 + 1)), "head {h}");
    }
    let twelve = alibi_slopes(12, 8.0);
    assert_eq!(&twelve[..8], &eight[..]);
    for (i, s) in twelve[8..].iter().enumerate() {
        let want = 2.0f64.powf(-0.5 * (2 * i + 1) as f64);
        assert!(
            ((*s as f64) - want).abs() <= want * 4.0 * U,
            "head {}: {s} vs {want}",
            8 + i
        );
    }
    assert_eq!(alibi_slopes(5, 0.0), vec![1.0; 5]);
}

/// The backward pass against the f64 gradient, through the scale, the cap
/// and the sinks, on every ISA (out of place and in place).
#[test]
fn backward_through_scale_cap_and_sinks() {
    let mut rng = Rng::for_case(&[16, 7]);
    let (isas, _) = crate::common::available_isas();
    let dims = [2, 3, 4, 300];
    let n: usize = dims.iter().product();
    for isa in isas {
        for cap in [None, Some(10.0f32)] {
            let scale = 0.7f32;
            let mut att = AttentionSoftmax::new()
                .with_isa(isa)
                .unwrap()
                .with_scale(scale)
                .unwrap()
                .with_causal();
            if let Some(c) = cap {
                att = att.with_soft_cap(c).unwrap();
            }
            let x: Vec<f32> = (0..n).map(|_| rng.uniform(-20.0, 20.0)).collect();
            let sinks = [0.5f32, -2.0, 3.0];
            let inputs = AttentionInputs::new().with_sinks(&sinks);
            let mut y = vec![0.0f32; n];
            att.softmax(
                Scores::contiguous(&x, dims).unwrap(),
                ScoresMut::contiguous(&mut y, dims).unwrap(),
                &inputs,
            )
            .unwrap();
            let dy: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut dx = vec![f32::NAN; n];
            let mut dsinks = [f32::NAN; 3];
            let xs = Scores::contiguous(&x, dims).unwrap();
            att.backward(
                Scores::contiguous(&y, dims).unwrap(),
                Scores::contiguous(&dy, dims).unwrap(),
                ScoresMut::contiguous(&mut dx, dims).unwrap(),
                Some(xs),
                Some(&mut dsinks),
            )
            .unwrap();
            let keys = dims[3];
            let mut want_sinks = [0.0f64; 3];
            for r in 0..n / keys {
                let h = (r / dims[2]) % dims[1];
                let (yr, gr, xr) = (
                    &y[r * keys..][..keys],
                    &dy[r * keys..][..keys],
                    &x[r * keys..][..keys],
                );
                let dot: f64 = yr.iter().zip(gr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mass: f64 = yr.iter().map(|&a| a as f64).sum();
                want_sinks[h] -= (1.0 - mass) * dot;
                for j in 0..keys {
                    let sx = scale as f64 * xr[j] as f64;
                    let slope = match cap {
                        Some(c) => scale as f64 / (sx / c as f64).cosh().powi(2),
                        None => scale as f64,
                    };
                    let want = yr[j] as f64 * (gr[j] as f64 - dot) * slope;
                    let got = dx[r * keys + j] as f64;
                    let bound = attention_grad_bound(yr[j] as f64, gr[j] as f64, dot, slope);
                    assert!(
                        (got - want).abs() <= bound,
                        "{isa} cap {cap:?}: row {r} key {j}: {got:e} vs {want:e}"
                    );
                }
            }
            for h in 0..3 {
                let bound = 64.0 * U * (1.0 + want_sinks[h].abs());
                assert!(
                    (dsinks[h] as f64 - want_sinks[h]).abs() <= bound,
                    "{isa}: sink {h}: {} vs {}",
                    dsinks[h],
                    want_sinks[h]
                );
            }
            // In place: dx holds dy.
            let mut in_place = dy.clone();
            att.backward_in_place(
                Scores::contiguous(&y, dims).unwrap(),
                ScoresMut::contiguous(&mut in_place, dims).unwrap(),
                Some(xs),
                None,
            )
            .unwrap();
            assert!(
                in_place
                    .iter()
                    .zip(&dx)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa}: in place differs"
            );
        }
    }
}

/// Bad calls are errors that write nothing.
#[test]
fn errors_write_nothing() {
    let dims = [1, 2, 3, 8];
    let x = vec![1.0f32; 48];
    let mut y = vec![f32::NAN; 48];
    let att = AttentionSoftmax::new();
    let xs = || Scores::contiguous(&x, dims).unwrap();
    assert!(matches!(
        Scores::contiguous(&x[..47], dims),
        Err(Error::TensorTooShort { .. })
    ));
    assert!(matches!(
        Scores::new(&x, [1, 2, 3, 8], [0, usize::MAX, 8]),
        Err(Error::TensorTooShort { .. })
    ));
    assert!(matches!(
        ScoresMut::new(&mut y, dims, [48, 8, 8]),
        Err(Error::OverlappingRows { .. })
    ));
    assert!(matches!(
        ScoresMut::new(&mut y, dims, [48, 24, 4]),
        Err(Error::OverlappingRows { .. })
    ));
    assert!(matches!(
        AttentionSoftmax::new().with_soft_cap(0.0),
        Err(Error::InvalidAttentionOption { .. })
    ));
    assert!(matches!(
        AttentionSoftmax::new().with_soft_cap(f32::NAN),
        Err(Error::InvalidAttentionOption { .. })
    ));
    assert!(matches!(
        AttentionSoftmax::new().with_scale(f32::INFINITY),
        Err(Error::InvalidAttentionOption { .. })
    ));
    assert!(matches!(
        AttentionSoftmax::new().with_window(0),
        Err(Error::InvalidAttentionOption { .. })
    ));
    assert!(matches!(
        AttentionSoftmax::new().with_alibi(Alibi::MaxBias(-1.0)),
        Err(Error::InvalidAttentionOption { .. })
    ));
    let bad_sinks = [0.0f32; 3];
    let two_lens = [1usize, 2];
    let mask = vec![0.0f32; 2 * 8];
    let cases: Vec<(AttentionSoftmax, AttentionInputs<'_>)> = vec![
        (att.clone(), AttentionInputs::new().with_sinks(&bad_sinks)),
        (att.clone(), AttentionInputs::new().with_key_lens(&two_lens)),
        (
            att.clone(),
            AttentionInputs::new()
                .with_mask(AttentionMask::additive(&mask, [1, 3, 1, 8], [16, 0, 8]).unwrap()),
        ),
        (
            att.clone()
                .with_alibi(Alibi::Slopes(vec![1.0; 3].into()))
                .unwrap(),
            AttentionInputs::new(),
        ),
    ];
    let bad_mask = AttentionMask::additive(&mask, [1, 1, 2, 8], [16, 16, 8]).unwrap();
    let mut cases = cases;
    cases.push((att.clone(), AttentionInputs::new().with_mask(bad_mask)));
    for (a, inputs) in &cases {
        let ys = ScoresMut::contiguous(&mut y, dims).unwrap();
        let result = a.softmax(xs(), ys, inputs);
        assert!(result.is_err(), "accepted {inputs:?}");
        assert!(y.iter().all(|v| v.is_nan()), "an error wrote");
    }
    // The backward pass of a capped softmax without the scores.
    let capped = AttentionSoftmax::new().with_soft_cap(5.0).unwrap();
    let g = vec![0.0f32; 48];
    let result = capped.backward(
        xs(),
        Scores::contiguous(&g, dims).unwrap(),
        ScoresMut::contiguous(&mut y, dims).unwrap(),
        None,
        None,
    );
    assert_eq!(result, Err(Error::ScoresRequired));
    assert!(y.iter().all(|v| v.is_nan()), "an error wrote");
}
